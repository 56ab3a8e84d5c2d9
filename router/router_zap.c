#include "router_zap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"

#define MAX_BINDINGS 65536 /* worker ids the router ever saw: bounded like every table */

static const router_binding *find(const router_security *s, const char *id)
{
    for (size_t i = 0; i < s->n_bind; i++)
        if (!strcmp(s->bind[i].id, id))
            return &s->bind[i];
    return NULL;
}

/* The ZAP decision, in the router's thread. */
static int decide(void *ctx, const kv_zap_peer *p, char *why, size_t cap)
{
    router_security *s = ctx;
    if (!strcmp(p->domain, ROUTER_ZAP_DOMAIN_CLIENT)) {
        if (kv_curve_allow_has(&s->clients, p->key))
            return 1;
        snprintf(why, cap, "client key not in --client-keys");
        return 0;
    }
    if (!strcmp(p->domain, ROUTER_ZAP_DOMAIN_CONTROL)) {
        /* The id it claims is not in a ZAP request (libzmq sends the server's own routing
         * id): the control socket's lack of ROUTER_HANDOVER and the Register check keep
         * bound ids. */
        if (kv_curve_allow_has(&s->workers, p->key))
            return 1;
        snprintf(why, cap, "worker key not in --worker-keys");
        return 0;
    }
    snprintf(why, cap, "unknown ZAP domain");
    return 0;
}

int router_security_open(router_security *s, void *zctx, const char *key_file, const char *worker_keys,
                         const char *client_keys, kv_err *err)
{
    memset(s, 0, sizeof *s);
    if (!key_file) {
        fprintf(stderr, "kv-router: WARNING: INSECURE: no --key, so CURVE is off: any process that reaches the "
                        "client or control port is trusted\n");
        KV_WARN("router", "event=insecure msg=\"CURVE is off (no --key): every socket is unauthenticated\"");
        return KV_OK;
    }
    if (!worker_keys || !client_keys)
        return kv_err_set(err, KV_EINVAL, "--key needs --worker-keys and --client-keys (the allowlists)");
    int rc;
    if ((rc = kv_curve_key_load(key_file, &s->key, err)) ||
        (rc = kv_curve_allow_load(worker_keys, &s->workers, err)) ||
        (rc = kv_curve_allow_load(client_keys, &s->clients, err)) ||
        (rc = kv_zap_open(&s->zap, zctx, decide, s, "router", err))) {
        router_security_close(s);
        return rc;
    }
    s->on = 1;
    KV_INFO("router", "event=curve_on worker_keys=%zu client_keys=%zu", s->workers.n, s->clients.n);
    return KV_OK;
}

void router_security_close(router_security *s)
{
    kv_zap_close(&s->zap);
    kv_curve_allow_free(&s->workers);
    kv_curve_allow_free(&s->clients);
    for (size_t i = 0; i < s->n_bind; i++)
        free(s->bind[i].id);
    free(s->bind);
    memset(s, 0, sizeof *s);
}

int router_security_apply(router_security *s, void *sock, const char *domain, kv_err *err)
{
    return s->on ? kv_curve_apply_server(sock, &s->key, domain, err) : KV_OK;
}

int router_security_register_ok(router_security *s, const char *id, const char *key, char *msg, size_t cap)
{
    if (!s->on)
        return 1;
    if (!key || !kv_curve_z85_valid(key)) {
        snprintf(msg, cap, "the connection has no CURVE key");
        return 0;
    }
    const router_binding *b = find(s, id);
    if (b) {
        if (!strcmp(b->key, key))
            return 1;
        char pre[9];
        snprintf(msg, cap, "worker id is bound to another key (%s...)", kv_zap_key_prefix(b->key, pre));
        return 0;
    }
    if (s->n_bind >= MAX_BINDINGS) {
        snprintf(msg, cap, "too many worker ids");
        return 0;
    }
    if (s->n_bind == s->cap_bind) {
        size_t c = s->cap_bind ? s->cap_bind * 2 : 16;
        router_binding *nb = realloc(s->bind, c * sizeof *nb);
        if (!nb) {
            snprintf(msg, cap, "router out of memory");
            return 0;
        }
        s->bind = nb;
        s->cap_bind = c;
    }
    char *copy = strdup(id);
    if (!copy) {
        snprintf(msg, cap, "router out of memory");
        return 0;
    }
    s->bind[s->n_bind].id = copy;
    snprintf(s->bind[s->n_bind].key, KV_CURVE_Z85, "%s", key);
    s->n_bind++;
    return 1;
}
