/* Routes, API keys and Content-Length (fe_http.h). */
#include "fe_http.h"

#include <string.h>
#include <strings.h>

typedef struct route_entry {
    const char *path;
    const char *method;
    fe_route route;
    int has_body;
} route_entry;

static const route_entry routes[] = {
    {"/v1/chat/completions", "POST", FE_ROUTE_CHAT, 1},
    {"/v1/completions", "POST", FE_ROUTE_COMPLETIONS, 1},
    {"/v1/models", "GET", FE_ROUTE_MODELS, 0},
    {"/health", "GET", FE_ROUTE_HEALTH, 0},
    {"/metrics", "GET", FE_ROUTE_METRICS, 0},
    {"/tokenize", "POST", FE_ROUTE_TOKENIZE, 1},
    {"/detokenize", "POST", FE_ROUTE_DETOKENIZE, 1},
};

fe_route_match fe_http_route(const char *method, const char *url)
{
    fe_route_match m = {FE_ROUTE_NONE, 0, "", 0};
    if (!method || !url)
        return m;
    size_t len = strcspn(url, "?#");
    if (len > 1 && url[len - 1] == '/')
        len--;
    const char *want = !strcmp(method, "HEAD") ? "GET" : method;
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (strlen(routes[i].path) != len || memcmp(routes[i].path, url, len))
            continue;
        m.route = routes[i].route;
        m.allow = routes[i].method;
        m.method_ok = !strcmp(want, routes[i].method);
        m.has_body = routes[i].has_body;
        return m;
    }
    return m;
}

const char *fe_route_name(fe_route r)
{
    switch (r) {
    case FE_ROUTE_CHAT: return "chat";
    case FE_ROUTE_COMPLETIONS: return "completions";
    case FE_ROUTE_MODELS: return "models";
    case FE_ROUTE_HEALTH: return "health";
    case FE_ROUTE_METRICS: return "metrics";
    case FE_ROUTE_TOKENIZE: return "tokenize";
    case FE_ROUTE_DETOKENIZE: return "detokenize";
    default: return "unknown";
    }
}

int fe_route_needs_auth(fe_route r, int metrics_auth)
{
    if (r == FE_ROUTE_HEALTH)
        return 0;
    if (r == FE_ROUTE_METRICS)
        return metrics_auth;
    return 1;
}

int fe_keys_add_list(fe_keys *k, const char *list)
{
    while (list && *list) {
        size_t n = strcspn(list, ",");
        /* surrounding blanks are not part of a key: "a, b" is two keys */
        const char *s = list;
        size_t len = n;
        while (len && (*s == ' ' || *s == '\t'))
            s++, len--;
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len) {
            if (len > FE_MAX_API_KEY_BYTES || k->n >= FE_MAX_API_KEYS)
                return -1;
            memcpy(k->key[k->n], s, len);
            k->key[k->n][len] = '\0';
            k->len[k->n++] = len;
        }
        list += n;
        if (*list == ',')
            list++;
    }
    return 0;
}

int fe_ct_equal(const char *candidate, size_t candidate_len, const char *secret, size_t secret_len)
{
    /* A length mismatch is folded into diff, so the loop always runs secret_len times. */
    volatile unsigned char diff = (unsigned char)(candidate_len != secret_len);
    for (size_t i = 0; i < secret_len; i++) {
        unsigned char c = i < candidate_len ? (unsigned char)candidate[i] : 0;
        diff |= (unsigned char)(c ^ (unsigned char)secret[i]);
    }
    return diff == 0;
}

int fe_keys_check(const fe_keys *k, const char *authorization)
{
    if (!authorization)
        return 0;
    static const char bearer[] = "Bearer ";
    if (strncasecmp(authorization, bearer, sizeof bearer - 1))
        return 0;
    const char *cand = authorization + sizeof bearer - 1;
    while (*cand == ' ')
        cand++;
    size_t len = strlen(cand);
    int ok = 0;
    for (int i = 0; i < k->n; i++) /* no early exit: every key costs the same */
        ok |= fe_ct_equal(cand, len, k->key[i], k->len[i]);
    return ok;
}

int fe_http_content_length(const char *value, uint64_t *out)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    uint64_t v = 0;
    const char *p = value;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (p == value)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p)
        return -1;
    *out = v;
    return 0;
}
