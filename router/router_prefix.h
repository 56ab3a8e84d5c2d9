/* The router's exact index of who holds which KV block (DESIGN.md: "the router routes by an
 * exact index of who holds what"), fed by the workers' heartbeats (Heartbeat.cache_stored /
 * cache_evicted / cache_reset), and the cache-aware pick policy built on it:
 *   cost(worker) = tokens it would compute (prefill) or receive (decode) for the request
 *                  + load_tokens x its active requests,
 * lowest cost wins, ties by the load policy (fewest active, then id); a balance guard skips a
 * worker more than `balance` requests busier than the least busy one, so one hot prefix
 * cannot pile every request onto the worker that holds it. Workers take one of 64 slots
 * (beyond 64 a worker is routed by load only). Pure bookkeeping: no sockets. */
#ifndef ROUTER_PREFIX_H
#define ROUTER_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "kv_prefix.h"

#define ROUTER_PREFIX_SLOTS 64

typedef struct router_prefix_entry {
    kv_block_hash hash;
    uint64_t holders; /* bit s: the worker in slot s holds it */
} router_prefix_entry;

typedef struct router_prefix {
    router_prefix_entry *table; /* open addressing; holders == 0 = empty */
    uint32_t mask;
    size_t n;
    uint64_t slots_used;
    size_t per_slot[ROUTER_PREFIX_SLOTS]; /* hashes each slot holds */
} router_prefix;

int router_prefix_init(router_prefix *x);
void router_prefix_free(router_prefix *x);
/* A slot for a new worker, or -1 when all 64 are taken; released with everything it held. */
int router_prefix_slot_take(router_prefix *x);
void router_prefix_slot_release(router_prefix *x, int slot);
/* Heartbeat events of the worker in slot: reset (forget all it held) first, then the hashes
 * it stored and evicted. Returns KV_OK, or KV_ENOMEM (the index then under-reports). */
int router_prefix_apply(router_prefix *x, int slot, int reset, const kv_block_hash *stored, size_t n_stored,
                        const kv_block_hash *evicted, size_t n_evicted);
/* hits[s] = how many leading hashes of chain[0..n) the worker in slot s holds, every slot. */
void router_prefix_hits(const router_prefix *x, const kv_block_hash *chain, uint32_t n,
                        uint32_t hits[ROUTER_PREFIX_SLOTS]);

#endif
