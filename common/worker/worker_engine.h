/* Model + engine set-up for a worker, and what its Register announces about them. */
#ifndef KV_WORKER_ENGINE_H
#define KV_WORKER_ENGINE_H

#include "engine.h"
#include "kvserve.pb-c.h"
#include "model.h"
#include "worker_flags.h"
#include "worker_transport.h"

typedef struct worker_engine {
    kv_model *model;
    kv_engine *engine;
    kv_pool *pool;           /* the engine's pool */
    char model_name[256];    /* the model directory's basename */
    char fingerprint[9];     /* kv_model_fingerprint */
    size_t block_bytes;      /* kv_engine_block_bytes: one block as it travels */
    worker_transport xfer;   /* the KV transports this worker may use */
    int prefix_cache;        /* --prefix-cache on: the pool indexes sealed blocks */
    kv_block_hash prefix_root; /* block hash chains start here (model + KV layout) */
} worker_engine;

int worker_engine_open(const worker_flags *f, worker_engine *w, kv_err *err);
void worker_engine_close(worker_engine *w);

/* The KV layout this worker's pool has (dtype "f32" or "bf16", from the engine, as is
 * block_bytes): the router pairs only workers whose layouts match. `dtype` is static storage. */
void worker_engine_layout(const worker_engine *w, Kvserve__KvLayout *out);

/* The prefix cache (kv_prefix.h) as both workers use it. A lookup of a prompt of n tokens
 * finds at most (n - 1) / block_size leading blocks (its last token is always computed: its
 * logits give the first token) and at most max_blocks: their ids into blocks, each retained
 * for the caller. Returns the count (0 with the cache off). */
int32_t worker_prefix_lookup(worker_engine *w, const int32_t *tokens, int32_t n, int32_t *blocks,
                             int32_t max_blocks);
/* Indexes the full blocks of tokens[0..n) (their K/V in blocks[], sealed, held by the caller);
 * returns how many were newly indexed. */
int32_t worker_prefix_store(worker_engine *w, const int32_t *tokens, int32_t n, const int32_t *blocks,
                            int32_t n_blocks);

#endif
