/* Client liveness: when the router last heard from each client routing id (any message
 * counts: Generate, Cancel, Status, ClientHeartbeat), and which of them have been silent
 * longer than --client-timeout. The caller cancels their requests (PROTOCOL.md "Client
 * liveness"). Pure bookkeeping: no sockets; the caller passes the time.
 *
 * Bounded: at most ROUTER_LIVENESS_MAX clients are watched; a client heard while the table
 * is full is not watched (its requests end only by their deadlines, as before liveness) and
 * router_liveness_heard says so once per overflow. Entries leave the table when they go
 * silent, so the table holds the clients heard within one timeout. */
#ifndef ROUTER_LIVENESS_H
#define ROUTER_LIVENESS_H

#include <stddef.h>

#include "kv_wire.h"
#include "router_map.h"

#define ROUTER_LIVENESS_MAX 65536

typedef struct router_liveness {
    router_map by_route;    /* routing id -> router_client_seen * */
    double next_scan;       /* silent clients are looked for at most every 100 ms */
    int overflow_reported;  /* the "table full" warning was given since it last had room */
} router_liveness;

void router_liveness_init(router_liveness *l);
void router_liveness_free(router_liveness *l);
/* Notes a message from route at now. Returns 0, or 1 when the client could not be watched
 * (table full or out of memory) and that was not reported yet: the caller logs it. */
int router_liveness_heard(router_liveness *l, const kv_wire_route *route, double now);
/* Fills out (at most max) with the clients not heard from for longer than timeout_s at
 * now, forgets them, and returns how many; 0 between scans. Call again while it returns max. */
size_t router_liveness_silent(router_liveness *l, double now, double timeout_s, kv_wire_route *out, size_t max);
static inline size_t router_liveness_count(const router_liveness *l) { return router_map_count(&l->by_route); }

#endif
