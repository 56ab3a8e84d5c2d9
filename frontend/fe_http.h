/* What kv-frontend reads from an HTTP request before its body: which route a method and
 * path name, whether an Authorization header carries one of the API keys, and whether a
 * declared body size is acceptable. Pure functions of their arguments (no I/O), so that
 * tests/fuzz_http.c can drive them with anything. */
#ifndef FE_HTTP_H
#define FE_HTTP_H

#include <stddef.h>
#include <stdint.h>

typedef enum fe_route {
    FE_ROUTE_NONE = 0, /* unknown path: 404 */
    FE_ROUTE_CHAT,     /* POST /v1/chat/completions */
    FE_ROUTE_COMPLETIONS, /* POST /v1/completions */
    FE_ROUTE_MODELS,   /* GET /v1/models */
    FE_ROUTE_HEALTH,   /* GET /health */
    FE_ROUTE_METRICS,  /* GET /metrics */
    FE_ROUTE_TOKENIZE, /* POST /tokenize */
    FE_ROUTE_DETOKENIZE, /* POST /detokenize */
} fe_route;

typedef struct fe_route_match {
    fe_route route;
    int method_ok;       /* 0: a known path with another method (405; allow names the one) */
    const char *allow;   /* "GET" or "POST" */
    int has_body;        /* the route reads a JSON body */
} fe_route_match;

/* Routes by method and path; the query string (from '?') is ignored, and so is one
 * trailing slash. HEAD is taken as GET. */
fe_route_match fe_http_route(const char *method, const char *url);
const char *fe_route_name(fe_route r); /* for logs and metrics: "chat", ..., "unknown" */

/* Whether the route needs an API key (when keys are configured at all). */
int fe_route_needs_auth(fe_route r, int metrics_auth);

/* The API keys a frontend accepts: --api-key flags and KVSERVE_API_KEY (comma-separated). */
#define FE_MAX_API_KEYS 16
#define FE_MAX_API_KEY_BYTES 256
typedef struct fe_keys {
    char key[FE_MAX_API_KEYS][FE_MAX_API_KEY_BYTES + 1];
    size_t len[FE_MAX_API_KEYS];
    int n;
} fe_keys;

/* Adds the keys of a comma-separated list (empty items skipped). -1 when a key is longer
 * than FE_MAX_API_KEY_BYTES or there would be more than FE_MAX_API_KEYS. */
int fe_keys_add_list(fe_keys *k, const char *list);

/* 1 when the Authorization header value ("Bearer KEY"; NULL = absent) names one of the keys.
 * Every key is compared in time that depends only on the keys' lengths, never on where the
 * first differing byte is. */
int fe_keys_check(const fe_keys *k, const char *authorization);

/* Constant-time equality of a candidate with a secret (time depends on secret_len only). */
int fe_ct_equal(const char *candidate, size_t candidate_len, const char *secret, size_t secret_len);

/* A Content-Length header value: 0 with *out set when it is a plain decimal number that fits;
 * -1 otherwise (a malformed length is a 400). */
int fe_http_content_length(const char *value, uint64_t *out);

#endif
