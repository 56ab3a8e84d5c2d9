/* What engine.c (the public API: argument checks, block reservation, chunking) shares with
 * its backends: engine_cpu.c and, in CUDA builds, engine_cuda*.c. A backend computes; it
 * never reserves blocks or moves a sequence's n_tokens (engine.c does, identically for all). */
#ifndef KV_ENGINE_INTERNAL_H
#define KV_ENGINE_INTERNAL_H

#include "engine.h"

typedef enum { KV_LOGITS_NONE = 0, KV_LOGITS_LAST, KV_LOGITS_ALL } kv_logits_want;

/* One sequence's sampling in a decode step: its settings and its draw (sampler.h). */
typedef struct kv_sample_row {
    kc_sample_params p;
    float u;
} kv_sample_row;

typedef struct kv_engine_ops {
    /* One chunk: `rows` tokens at positions seq->n_tokens.. (blocks already reserved).
     * logits: vocab floats of the last row (LAST) or rows x vocab (ALL). */
    int (*prefill)(kv_engine *e, kv_seq *seq, const int32_t *tokens, int rows, float *logits, kv_logits_want want,
                   kv_err *err);
    /* One token per sequence at position seqs[i]->n_tokens (blocks reserved); n x vocab logits. */
    int (*decode)(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, float *logits, kv_err *err);
    /* The same step, then next[i] = kc_sample of row i's logits with rows[i], picked where
     * the logits are (NULL: engine.c runs decode and samples on the host); and for rows
     * with lp_top[i] >= 0 (lp_top may be NULL) lp[i] = kc_logprobs_row for next[i]. */
    int (*decode_sample)(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, const kv_sample_row *rows,
                         const int *lp_top, kc_logprobs *lp, int32_t *next, kv_err *err);
    /* Waits for queued work; a fault in it is reported here (NULL: nothing is asynchronous). */
    int (*sync)(kv_engine *e, kv_err *err);
    int (*blocks_read)(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err);
    int (*blocks_write)(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err);
    /* Frees the backend's state (not the pool's bookkeeping, which engine.c destroys after). */
    void (*destroy)(kv_engine *e);
} kv_engine_ops;

struct kv_engine {
    const kv_engine_ops *ops;
    const kv_model *model;
    kv_pool pool;            /* host memory (CPU) or bookkeeping over a device allocation (CUDA) */
    kv_layout layout;        /* what a block holds (engine.c fills it from the options) */
    char kv_dtype_name[32];  /* the dtype ("f32", "int4"), plus ":token-keys" / ":gN" off the defaults
                              * and ":claF" with cross-layer sharing, so workers whose blocks
                              * differ never compare equal */
    int device;              /* -1 = CPU */
    kv_precision precision;
    int prefill_chunk;
    void *backend;           /* the backend's own state */
    /* kv_engine_decode_sample's scratch, for scratch_rows sequences. */
    int scratch_rows;
    kv_sample_row *sample_rows;
    float *step_logits;      /* host logits (backends without decode_sample) */
    uint64_t host_picks;     /* decode_sample rows the device left to the host */
};

/* Pool size in blocks from the options: n_blocks, else kv_bytes / block_bytes, else room
 * for 4 full contexts. */
int32_t kv_engine_pool_blocks(const kv_model_config *c, const kv_engine_options *o, size_t block_bytes);

/* Each fills e->pool, e->ops and e->backend (e->model, device, precision, prefill_chunk
 * are set); on failure leaves nothing allocated behind. */
int kv_engine_cpu_init(kv_engine *e, const kv_engine_options *o, kv_err *err);
#ifdef KV_HAVE_CUDA_ENGINE
int kv_engine_cuda_init(kv_engine *e, const kv_engine_options *o, kv_err *err);
/* KV_OK when cuda:index exists and can run this build's kernels; else the reason in why
 * (no driver / no device, index out of range, GPU too old). *n_devices: devices seen. */
int kv_engine_cuda_probe(int index, int *n_devices, kv_err *why);
#endif

#endif
