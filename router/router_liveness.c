/* Client liveness table (router_liveness.h): a hash map from routing id to the time last
 * heard, scanned for silent clients at most every SCAN_INTERVAL_S. */
#include "router_liveness.h"

#include <stdlib.h>
#include <string.h>

#define SCAN_INTERVAL_S 0.1

typedef struct router_client_seen {
    double last;
} router_client_seen;

void router_liveness_init(router_liveness *l)
{
    memset(l, 0, sizeof *l);
    router_map_init(&l->by_route);
}

void router_liveness_free(router_liveness *l)
{
    size_t pos = 0;
    const void *key;
    size_t len;
    void *val;
    while (router_map_next(&l->by_route, &pos, &key, &len, &val))
        free(val);
    router_map_free(&l->by_route);
    memset(l, 0, sizeof *l);
}

int router_liveness_heard(router_liveness *l, const kv_wire_route *route, double now)
{
    if (!route->len)
        return 0;
    router_client_seen *s = router_map_get(&l->by_route, route->id, route->len);
    if (s) {
        s->last = now;
        return 0;
    }
    if (router_map_count(&l->by_route) < ROUTER_LIVENESS_MAX && (s = malloc(sizeof *s)) != NULL) {
        s->last = now;
        if (router_map_put(&l->by_route, route->id, route->len, s) == 0) {
            l->overflow_reported = 0;
            return 0;
        }
        free(s);
    }
    if (l->overflow_reported)
        return 0;
    l->overflow_reported = 1;
    return 1;
}

size_t router_liveness_silent(router_liveness *l, double now, double timeout_s, kv_wire_route *out, size_t max)
{
    if (now < l->next_scan || max == 0)
        return 0;
    size_t n = 0, pos = 0;
    const void *key;
    size_t len;
    void *val;
    /* Collected first, removed after: the map must not change while it is iterated. */
    while (n < max && router_map_next(&l->by_route, &pos, &key, &len, &val)) {
        const router_client_seen *s = val;
        if (now - s->last <= timeout_s)
            continue;
        memset(&out[n], 0, sizeof out[n]);
        memcpy(out[n].id, key, len < sizeof out[n].id ? len : sizeof out[n].id);
        out[n].len = len < sizeof out[n].id ? len : sizeof out[n].id;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        free(router_map_del(&l->by_route, out[i].id, out[i].len));
    if (n < max)
        l->next_scan = now + SCAN_INTERVAL_S;
    return n;
}
