/* The forward pass over a paged KV cache, with two distinct paths:
 *   prefill — a chunk of prompt tokens of one sequence at once (GEMM), writing their K/V;
 *   decode  — one new token for each of a batch of sequences of different lengths (GEMV),
 *             attention reading K/V from the blocks.
 * K/V of a cached token is never recomputed. */
#ifndef KV_ENGINE_H
#define KV_ENGINE_H

#include <stdint.h>

#include "kv_err.h"
#include "kv_pool.h"
#include "model.h"

typedef struct kv_engine_options {
    int block_size;      /* tokens per KV block (default 16) */
    int32_t n_blocks;    /* pool size in blocks; 0 = from kv_bytes */
    size_t kv_bytes;     /* pool size in bytes when n_blocks is 0; 0 = room for 4 full contexts */
    int prefill_chunk;   /* max tokens per prefill forward (default 512); never changes results */
    int n_threads;       /* 0 = all cores */
} kv_engine_options;

typedef struct kv_engine kv_engine;

void kv_engine_options_default(kv_engine_options *o);
int kv_engine_create(const kv_model *model, const kv_engine_options *o, kv_engine **out, kv_err *err);
void kv_engine_free(kv_engine *e);
kv_pool *kv_engine_pool(kv_engine *e);
const kv_model *kv_engine_model(const kv_engine *e);

/* Runs n tokens after the seq's cached ones (in chunks of prefill_chunk), reserving blocks
 * as needed. logits (may be NULL): vocab floats for the last token, or n x vocab when
 * all_logits. KV_EFULL when the context or the pool is full (nothing is computed then). */
int kv_engine_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int n, float *logits, int all_logits,
                      kv_err *err);

/* One token for each of n_seqs sequences (each at its own length); logits: n_seqs x vocab. */
int kv_engine_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs, float *logits,
                     kv_err *err);

#endif
