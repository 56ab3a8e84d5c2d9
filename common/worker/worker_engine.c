#include "kv_file.h"
#include "worker_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"

int worker_engine_open(const worker_flags *f, worker_engine *w, kv_err *err)
{
    memset(w, 0, sizeof *w);
    kv_path_basename(f->model_dir, w->model_name, sizeof w->model_name);
    int rc = kv_model_fingerprint(f->model_dir, w->fingerprint, err);
    if (rc || (rc = kv_model_load(f->model_dir, &w->model, err)))
        return rc;
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.block_size = f->block_size;
    o.n_blocks = f->kv_blocks;
    o.n_threads = f->threads;
    o.device = f->device_index;
    o.precision = (kv_precision)f->precision_value;
    o.kv_dtype = (kv_cache_dtype)f->kv_dtype;
    o.kv_residual = f->kv_residual;
    o.kv_group = f->kv_group;
    o.kv_keys = (kv_key_mode)f->kv_keys;
    if (f->role == KV_WORKER_PREFILL)
        o.prefill_chunk = f->prefill_chunk;
    else
        o.max_batch = f->max_batch;
    if ((rc = kv_engine_create(w->model, &o, &w->engine, err))) {
        worker_engine_close(w);
        return rc;
    }
    w->pool = kv_engine_pool(w->engine);
    w->block_bytes = kv_engine_block_bytes(w->engine); /* the engine's dtype: bf16 blocks are half */
    if ((rc = worker_transport_open(f, w->engine, &w->xfer, err))) {
        worker_engine_close(w);
        return rc;
    }
    if (f->prefix_cache && (rc = kv_pool_prefix_enable(w->pool, err))) {
        worker_engine_close(w);
        return rc;
    }
    w->prefix_cache = f->prefix_cache;
    Kvserve__KvLayout lay;
    worker_engine_layout(w, &lay);
    w->prefix_root = kv_prefix_root_of(w->fingerprint, lay.dtype, lay.n_layers, lay.n_kv_heads, lay.head_dim,
                                       lay.block_size, lay.block_bytes);
    const kv_model_config *c = &w->model->cfg;
    KV_INFO(f->prog,
            "msg=\"model loaded\" model=%s fingerprint=%s layers=%d kv_heads=%d head_dim=%d vocab=%d context=%d "
            "kv_blocks=%d block_size=%d block_bytes=%zu kv_dtype=%s device=%s",
            w->model_name, w->fingerprint, c->n_layers, c->n_kv_heads, c->head_dim, c->vocab_size, c->max_position,
            w->pool->n_blocks, w->pool->shape.block_size, w->block_bytes, kv_engine_kv_dtype(w->engine),
            f->device_name);
    return KV_OK;
}

void worker_engine_close(worker_engine *w)
{
    worker_transport_close(&w->xfer);
    kv_engine_free(w->engine);
    kv_model_free(w->model);
    w->engine = NULL;
    w->model = NULL;
    w->pool = NULL;
}

void worker_engine_layout(const worker_engine *w, Kvserve__KvLayout *out)
{
    kvserve__kv_layout__init(out);
    const kv_pool_shape *s = &w->pool->shape;
    /* The model's layers: with cross-layer KV sharing the pool holds fewer (its owners), which
     * block_bytes and the dtype's ":claF" say. */
    out->n_layers = (uint32_t)w->model->cfg.n_layers;
    out->n_kv_heads = (uint32_t)s->n_kv_heads;
    out->head_dim = (uint32_t)s->head_dim;
    out->block_size = (uint32_t)s->block_size;
    out->dtype = (char *)kv_engine_kv_dtype(w->engine); /* static storage; protobuf-c only reads it */
    out->block_bytes = w->block_bytes;
}

static int32_t prefix_chain(const worker_engine *w, const int32_t *tokens, int32_t n, int32_t max,
                            kv_block_hash **out)
{
    *out = NULL;
    if (max <= 0 || !(*out = malloc((size_t)max * sizeof **out)))
        return 0;
    return kv_prefix_chain(w->prefix_root, tokens, n, w->pool->shape.block_size, *out, max);
}

int32_t worker_prefix_lookup(worker_engine *w, const int32_t *tokens, int32_t n, int32_t *blocks,
                             int32_t max_blocks)
{
    if (!w->pool->prefix || n < 2)
        return 0;
    int32_t max = (n - 1) / w->pool->shape.block_size;
    kv_block_hash *h;
    int32_t nh = prefix_chain(w, tokens, n, max < max_blocks ? max : max_blocks, &h);
    int32_t hit = kv_pool_prefix_lookup(w->pool, h, nh, blocks, n);
    free(h);
    return hit;
}

int32_t worker_prefix_store(worker_engine *w, const int32_t *tokens, int32_t n, const int32_t *blocks,
                            int32_t n_blocks)
{
    if (!w->pool->prefix)
        return 0;
    int32_t full = n / w->pool->shape.block_size;
    kv_block_hash *h;
    int32_t nh = prefix_chain(w, tokens, n, full < n_blocks ? full : n_blocks, &h);
    int32_t added = kv_pool_prefix_insert(w->pool, blocks, h, nh);
    free(h);
    return added;
}
