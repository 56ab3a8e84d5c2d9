/* The prefix cache: a third state for a pool's blocks (CODE-SHAPE seam 3).
 *   free   — on the free list, refcount 0, not indexed;
 *   held   — refcount > 0 (a request, a task, or a transfer in flight holds it), indexed or not;
 *   cached — refcount 0 but indexed by its block hash, on an LRU list: reusable by the next
 *            request whose prompt starts with the same tokens, evicted when the pool needs room.
 * A block is indexed only once it is sealed (every token slot written) and is never written
 * again: a sequence that reuses cached blocks writes into fresh blocks after them.
 *
 * Identity: a sealed block's hash is XXH3-128 of (its parent's hash, its token ids), the
 * chain starting at a root that is XXH3-128 of the model's fingerprint and the KV layout's
 * description, so equal hashes mean equal K/V (same model, layout and token history).
 *
 * Eviction takes the least recently released block; a released sequence's blocks are parked
 * last block first, so a chain is shortened from its end and never loses a parent while its
 * children stay reachable.
 *
 * Events: every indexing and eviction is queued (hash + kind) for the worker's heartbeat, so
 * that the router's index of who holds what stays exact; a queue overflow asks for a reset
 * (the router forgets the worker's hashes and gets the whole set again). */
#ifndef KV_PREFIX_H
#define KV_PREFIX_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

typedef struct kv_block_hash {
    uint64_t lo, hi;
} kv_block_hash;

static inline int kv_block_hash_eq(kv_block_hash a, kv_block_hash b) { return a.lo == b.lo && a.hi == b.hi; }

/* The chain's root for one model and KV layout (layout_desc: e.g. "f32/30x3x64/b16"). */
kv_block_hash kv_prefix_root(const char *model_fingerprint, const char *layout_desc);
/* The root for a worker of this model (kv_model_fingerprint) and KV layout (what Register's
 * KvLayout announces): workers and the router derive the same one. */
kv_block_hash kv_prefix_root_of(const char *fingerprint, const char *dtype, uint32_t n_layers, uint32_t n_kv_heads,
                                uint32_t head_dim, uint32_t block_size, uint64_t block_bytes);
/* out[i] = hash of block i of tokens[0..n_tokens) for its full blocks, at most max of them:
 * returns how many were written (min(n_tokens / block_size, max)). */
int32_t kv_prefix_chain(kv_block_hash root, const int32_t *tokens, int32_t n_tokens, int block_size,
                        kv_block_hash *out, int32_t max);
/* 16 bytes, little-endian lo then hi: how a hash travels in Heartbeat.cache_stored. */
void kv_block_hash_to_bytes(kv_block_hash h, uint8_t out[16]);
kv_block_hash kv_block_hash_from_bytes(const uint8_t in[16]);

#define KV_PREFIX_EVENTS_MAX 65536 /* queued for the router; more asks for a reset */

typedef struct kv_prefix_event {
    kv_block_hash hash;
    uint8_t stored; /* 1 indexed, 0 evicted */
} kv_prefix_event;

typedef struct kv_prefix {
    int32_t n_blocks;
    kv_block_hash *hash;       /* per block, valid where indexed */
    uint8_t *indexed;          /* per block */
    uint8_t *parked;           /* per block: on the LRU */
    int32_t *lru_prev, *lru_next; /* per block: the LRU of cached (refcount 0, indexed) blocks */
    int32_t lru_oldest, lru_newest, n_lru;
    int32_t *table;            /* open addressing (linear probing), block ids, -1 empty */
    uint32_t table_mask;
    int32_t n_indexed;
    kv_prefix_event *events;   /* ring */
    uint32_t ev_head, ev_n;
    int reset_pending;         /* the router must forget this worker's hashes and relearn them */
    uint64_t query_tokens, hit_tokens; /* cumulative lookups, in tokens */
    uint64_t evictions;
} kv_prefix;

int kv_prefix_init(kv_prefix *c, int32_t n_blocks, kv_err *err);
void kv_prefix_destroy(kv_prefix *c);

/* The block indexed under h, or -1. */
int32_t kv_prefix_find(const kv_prefix *c, kv_block_hash h);
/* Indexes block (held, sealed) under h: 1, or 0 when h already names a block (this one
 * stays unindexed and is freed at its last release). */
int kv_prefix_index(kv_prefix *c, int32_t block, kv_block_hash h);
/* Unindexes a cached block (on the LRU) and takes it off the LRU: for eviction. */
void kv_prefix_forget(kv_prefix *c, int32_t block);
/* LRU moves: a block reaching refcount 0 while indexed is parked (newest end); a lookup hit
 * on a parked block unparks it. */
void kv_prefix_park(kv_prefix *c, int32_t block);
void kv_prefix_unpark(kv_prefix *c, int32_t block);
static inline int kv_prefix_parked(const kv_prefix *c, int32_t block) { return c->parked[block]; }
/* The oldest parked block (the next to evict), or -1. */
static inline int32_t kv_prefix_oldest(const kv_prefix *c) { return c->lru_oldest; }

/* Queues every indexed hash as stored after a reset (a fresh registration with a router). */
void kv_prefix_reset_events(kv_prefix *c);
/* 1 when a reset is due (the events queued now are the whole indexed set, as stored; the
 * router must forget what it knew first), else 0. A reset that could not be delivered is
 * asked for again with kv_prefix_reset_events. */
int kv_prefix_take_reset(kv_prefix *c);
/* Copies up to max queued events, oldest first, without removing them; kv_prefix_events_pop
 * removes n once they were delivered. */
uint32_t kv_prefix_events_peek(const kv_prefix *c, kv_prefix_event *out, uint32_t max);
void kv_prefix_events_pop(kv_prefix *c, uint32_t n);

#endif
