/* Stop sequences (router_stop.h). */
#include "router_stop.h"

#include "kv_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int router_stop_check(char *const *seq, size_t n, size_t *max_len, char *msg, size_t cap)
{
    *max_len = 0;
    if (n > ROUTER_STOP_MAX)
        return snprintf(msg, cap, "at most %d stop sequences, got %zu", ROUTER_STOP_MAX, n), KV_EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t l = seq[i] ? strlen(seq[i]) : 0;
        if (l == 0 || l > ROUTER_STOP_MAX_BYTES)
            return snprintf(msg, cap, "stop sequence %zu: must be 1 to %d bytes", i, ROUTER_STOP_MAX_BYTES),
                   KV_EINVAL;
        if (l > *max_len)
            *max_len = l;
    }
    return 0;
}

int router_stop_init(router_stop *s, char *const *seq, size_t n, char *msg, size_t cap)
{
    memset(s, 0, sizeof *s);
    int rc = router_stop_check(seq, n, &s->max_len, msg, cap);
    if (rc || !n)
        return rc;
    s->seq = calloc(n, sizeof *s->seq);
    s->tail = malloc(s->max_len);
    if (!s->seq || !s->tail)
        goto oom;
    for (; s->n < n; s->n++)
        if (!(s->seq[s->n] = strdup(seq[s->n])))
            goto oom;
    return 0;
oom:
    router_stop_free(s);
    return snprintf(msg, cap, "router out of memory"), KV_ENOMEM;
}

int router_stop_scan(router_stop *s, const char *text, size_t len)
{
    if (!s->n || !len)
        return 0;
    size_t n = s->tail_len + len;
    char *buf = malloc(n);
    if (!buf)
        return 0;
    memcpy(buf, s->tail, s->tail_len);
    memcpy(buf + s->tail_len, text, len);
    int hit = 0;
    for (size_t i = 0; i < s->n && !hit; i++)
        hit = memmem(buf, n, s->seq[i], strlen(s->seq[i])) != NULL;
    s->tail_len = n < s->max_len - 1 ? n : s->max_len - 1;
    memcpy(s->tail, buf + n - s->tail_len, s->tail_len);
    free(buf);
    return hit;
}

void router_stop_free(router_stop *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->seq[i]);
    free(s->seq);
    free(s->tail);
    memset(s, 0, sizeof *s);
}
