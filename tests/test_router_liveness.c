/* router_liveness (router/router_liveness.h): who is silent when, forgetting, batching,
 * the scan interval and the bound on watched clients. */
#include <stdio.h>
#include <string.h>

#include "kv_test.h"
#include "router_liveness.h"

static kv_wire_route route(const char *id)
{
    kv_wire_route r;
    memset(&r, 0, sizeof r);
    r.len = strlen(id);
    memcpy(r.id, id, r.len);
    return r;
}

static int is(const kv_wire_route *r, const char *id) { return r->len == strlen(id) && !memcmp(r->id, id, r->len); }

int main(void)
{
    router_liveness l;
    kv_wire_route out[16];
    router_liveness_init(&l);
    kv_wire_route a = route("client-a"), b = route("client-b"), none = route("");
    CHECK(router_liveness_heard(&l, &a, 0.0) == 0);
    CHECK(router_liveness_heard(&l, &b, 0.5) == 0);
    CHECK(router_liveness_heard(&l, &none, 0.5) == 0); /* no routing id: nothing to watch */
    CHECK(router_liveness_count(&l) == 2);
    CHECK(router_liveness_silent(&l, 0.95, 1.0, out, 16) == 0);   /* nobody silent yet */
    CHECK(router_liveness_silent(&l, 1.02, 1.0, out, 16) == 0);   /* a is, but the next scan is at 1.05 */
    size_t n = router_liveness_silent(&l, 1.25, 1.0, out, 16);    /* a silent 1.25 s, b 0.75 s */
    CHECK(n == 1 && is(&out[0], "client-a"));
    CHECK(router_liveness_count(&l) == 1);                        /* a is forgotten */
    CHECK(router_liveness_silent(&l, 1.4, 1.0, out, 16) == 0);    /* reported once */
    CHECK(router_liveness_heard(&l, &a, 2.0) == 0);               /* back: watched again */
    CHECK(router_liveness_heard(&l, &b, 1.45) == 0);              /* any message refreshes */
    n = router_liveness_silent(&l, 2.5, 1.0, out, 16);
    CHECK_MSG(n == 1 && is(&out[0], "client-b"), "silent at 2.5: %zu", n);
    CHECK(router_liveness_silent(&l, 3.1, 1.0, out, 16) == 1 && is(&out[0], "client-a"));
    CHECK(router_liveness_count(&l) == 0);

    /* More silent clients than the caller's array: all of them, in batches, no scan pause. */
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "c%d", i);
        kv_wire_route r = route(id);
        router_liveness_heard(&l, &r, 10.0);
    }
    CHECK(router_liveness_silent(&l, 20.0, 1.0, out, 16) == 16);
    CHECK(router_liveness_silent(&l, 20.0, 1.0, out, 16) == 4);
    CHECK(router_liveness_count(&l) == 0);

    /* The bound: a full table watches nobody new, says so once, and has room again after. */
    int reported = 0;
    for (int i = 0; i < ROUTER_LIVENESS_MAX + 3; i++) {
        snprintf(id, sizeof id, "x%d", i);
        kv_wire_route r = route(id);
        reported += router_liveness_heard(&l, &r, 30.0);
    }
    CHECK(router_liveness_count(&l) == ROUTER_LIVENESS_MAX);
    CHECK_MSG(reported == 1, "overflow reported %d times", reported);
    while (router_liveness_silent(&l, 40.0, 1.0, out, 16) == 16) {
    }
    CHECK(router_liveness_count(&l) == 0);
    CHECK(router_liveness_heard(&l, &a, 41.0) == 0 && router_liveness_count(&l) == 1);
    router_liveness_free(&l);
    return kv_test_result();
}
