#include "kv_file.h"
#include "worker_engine.h"

#include <stdio.h>
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
    out->n_layers = (uint32_t)s->n_layers;
    out->n_kv_heads = (uint32_t)s->n_kv_heads;
    out->head_dim = (uint32_t)s->head_dim;
    out->block_size = (uint32_t)s->block_size;
    out->dtype = (char *)kv_engine_kv_dtype(w->engine); /* static storage; protobuf-c only reads it */
    out->block_bytes = w->block_bytes;
}
