/* The CPU engine's KV cache in any layout but f32 (kv_layout.h): sealed blocks in the pool
 * hold int8/int4/int2 codes with their scales and zero points, or f16/bf16 rows; the
 * residual window of each sequence (the newest layout.residual_blocks blocks, the one being
 * filled among them; for f16/bf16 just that one) is read at full precision from f32 staging
 * blocks kept here beside the pool. Attention reads sealed blocks as stored (kq_attend_one;
 * f16/bf16 rows converted as they are used), never a full-precision copy of the context.
 *
 * Promises:
 *  - new K/V rows are written to a block's staging (never straight into the pool);
 *  - a block is quantized into the pool once, when its last token's rows are written
 *    (per layer, before that layer's attention reads it);
 *  - a query at position p reads blocks 0 .. ws(p) - 1 as stored codes and positions
 *    ws(p) * block_size .. p from staging, ws(p) = max(0, p / block_size - residual_blocks + 1):
 *    exactly what decoding at p sees, in prefill as in decode (so perplexity scores what
 *    decoding would);
 *  - a block whose staging is missing when it enters a query's window (it arrived through
 *    kv_engine_blocks_write, or was shared) is staged from its stored codes (dequantized);
 *  - staging of a block leaves when the block falls out of its sequence's window.
 * Staging is keyed by pool block id and grows on demand (at most one staging block per
 * pool block); a block released by a sequence while staged keeps its staging until the
 * block is reused, or until staging runs out and blocks no sequence holds give theirs back. */
#ifndef KV_ENGINE_KVQ_H
#define KV_ENGINE_KVQ_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "kv_layout.h"
#include "kv_pool.h"

typedef struct kvq kvq;

/* l: a quantized layout (kept by pointer: it must outlive the kvq). */
int kvq_create(kvq **out, const kv_layout *l, const kv_pool *pool, kv_err *err);
void kvq_free(kvq *q);

/* A forward's rows: row r is position pos[r] of seqs[per_row ? r : 0] (prefill: one
 * sequence, per_row 0, consecutive positions; decode: one row per sequence). */
typedef struct kvq_rows {
    const kv_seq *const *seqs;
    int per_row;
    const int32_t *pos;
    int n;
} kvq_rows;

/* Before the forward: stages every block the rows write or their queries read at full
 * precision. */
int kvq_prepare(kvq *q, const kv_pool *pool, const kvq_rows *rows, kv_err *err);
/* Where token pos of a sequence (block table `table`) keeps its K row of `layer` in
 * staging; its V row is v_offset floats further. */
float *kvq_row(kvq *q, const int32_t *table, int pos, int layer, size_t *v_offset);
/* After `layer`'s rows are written: quantizes the blocks whose last token was among them. */
void kvq_seal_layer(kvq *q, kv_pool *pool, const kvq_rows *rows, int layer);
/* Attention of `layer` (as kc_attention_prefill / kc_attention_decode). */
void kvq_attention_prefill(kvq *q, const kv_pool *pool, float *out, const float *qv, const kv_seq *seq, int start,
                           int n, int n_heads, int layer);
void kvq_attention_decode(kvq *q, const kv_pool *pool, float *out, const float *qv, const kvq_rows *rows,
                          int n_heads, int layer);
/* After the forward: drops staging of blocks that left their sequence's window; after a
 * prefill, stores the quantized image of its last block when that is partial, so that the
 * pool holds what ships for every block a prompt wrote (zero-copy senders read the pool;
 * kv_engine_block_ptr). The first decode step after that prefill reads that block back from
 * those codes, as a decode worker that received it does: decoding here and behind a
 * transfer see the same values (a further prefill keeps the f32 rows). */
void kvq_finish(kvq *q, const kv_pool *pool, const kvq_rows *rows);

/* Blocks as they travel: a sealed block's stored bytes; an unsealed (partial) block is
 * quantized from its staging, unwritten rows as zeros (lossy: the receiver stages it back
 * from those codes). A written block is sealed and unstaged. */
void kvq_block_read(kvq *q, const kv_pool *pool, int32_t block, void *dst);
void kvq_block_write(kvq *q, kv_pool *pool, int32_t block, const void *src);

#endif
