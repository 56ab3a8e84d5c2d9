/* What the workers' fuzz targets (fuzz_decode, fuzz_prefill) share: the cluster their
 * plausible messages describe, a pool that hands out the same ids on every input, and the
 * ledger of who holds which block: after every record each block has exactly as many
 * references as holders (requests and tasks; prefix-cache hits share blocks), and a block
 * nobody holds is free or cached, never both, never twice. Ledger: kv_fuzz_ledger_open,
 * kv_fuzz_ledger_hold for each holder, kv_fuzz_ledger_close. */
#ifndef KV_FUZZ_WORKER_H
#define KV_FUZZ_WORKER_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kv_fuzz_envelope.h"
#include "kv_fuzz_target.h"
#include "kv_pool.h"
#include "worker_engine.h"

/* The cluster of a worker on we, whose decode workers listen at kv_endpoint. */
static inline void kv_fuzz_cluster_of(const worker_engine *we, const char *kv_endpoint, kv_fuzz_cluster *cl)
{
    const kv_model_config *c = &we->model->cfg;
    cl->n_layers = (uint32_t)c->n_layers, cl->n_kv_heads = (uint32_t)c->n_kv_heads;
    cl->head_dim = (uint32_t)c->head_dim, cl->block_bytes = we->block_bytes;
    memcpy(cl->fingerprint, we->fingerprint, sizeof cl->fingerprint);
    snprintf(cl->kv_endpoint, sizeof cl->kv_endpoint, "%s", kv_endpoint);
}

/* A pool whose every block is free or cached goes back to a fresh pool's free-stack order
 * (its cache flushed), so that the ids it hands out (and the ids a seed's messages name) are
 * the same on every input. */
static inline void kv_fuzz_pool_restart(kv_pool *pool)
{
    KV_FUZZ_REQUIRE(kv_pool_n_available(pool) == pool->n_blocks, "%d of %d blocks free at the start of an input",
                    kv_pool_n_available(pool), pool->n_blocks);
    kv_pool_prefix_flush(pool);
    for (int32_t i = 0; i < pool->n_blocks; i++)
        pool->free_ids[i] = pool->n_blocks - 1 - i;
}

/* Counts each block's holders; with the prefix cache a block may be shared, so a block
 * must have exactly as many references as holders, and one nobody holds must be free or
 * cached (kv_pool_check: on exactly one of the free list and the LRU, never both). */
typedef struct kv_fuzz_ledger {
    const kv_pool *pool;
    uint8_t *seen; /* holders per block: malloc'd by the caller, pool->n_blocks of them */
} kv_fuzz_ledger;

static inline void kv_fuzz_ledger_open(kv_fuzz_ledger *l) { memset(l->seen, 0, (size_t)l->pool->n_blocks); }

/* who (a request or task id) holds ids[0..n), each once. */
static inline void kv_fuzz_ledger_hold(kv_fuzz_ledger *l, const char *who, const int32_t *ids, int32_t n)
{
    const kv_pool *pool = l->pool;
    for (int32_t i = 0; i < n; i++) {
        int32_t b = ids[i];
        KV_FUZZ_REQUIRE(b >= 0 && b < pool->n_blocks && l->seen[b] < 255, "%s holds block %d (of %d)", who, b,
                        pool->n_blocks);
        l->seen[b]++;
    }
}

/* References equal holders, and the three states are consistent: none leaked. */
static inline void kv_fuzz_ledger_close(const kv_fuzz_ledger *l)
{
    const kv_pool *pool = l->pool;
    kv_err err;
    KV_FUZZ_REQUIRE(kv_pool_check(pool, &err) == 0, "pool states: %s", err.msg);
    for (int32_t b = 0; b < pool->n_blocks; b++)
        KV_FUZZ_REQUIRE(pool->refcount[b] == l->seen[b], "block %d: %d references, %d holders", b, pool->refcount[b],
                        l->seen[b]);
    KV_FUZZ_REQUIRE(pool->double_releases == 0, "%llu releases of blocks nobody held",
                    (unsigned long long)pool->double_releases);
}

#endif
