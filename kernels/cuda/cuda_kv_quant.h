/* Quantized KV blocks on the GPU (cuda_kv_quant.cu): the twins of kernels/cpu/kv_quant.c's
 * kq_quantize_block and kq_attend_one, over the same bytes (common/kvcache/kv_layout.h).
 *
 * Promises: a block quantized here holds exactly the bytes the CPU writes for the same rows
 * (codes, f16 scales and zero points bit for bit: same formula, same ties-to-even rounding,
 * same f32 operations in the same order per group); decode attention equals kq_attend_one
 * over the same sequence up to f32 summation order. Launches as in cuda_kernels.h: device
 * pointers, a stream as void *, argument errors as KV_EINVAL / KV_EUNSUPPORTED in err. */
#ifndef KV_CUDA_KV_QUANT_H
#define KV_CUDA_KV_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "cuda_kernels.h"
#include "kv_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kq_format and kq_regions (kernels/cpu/kv_quant.h) in one struct: one layer of one block,
 * its six regions at byte offsets from the layer's base. */
typedef struct kv_cuda_kvq_format {
    int bits;           /* 8, 4 or 2 */
    int block_size;     /* tokens per block, a multiple of 8 / bits */
    int n_kv_heads;
    int head_dim;       /* <= KV_CUDA_KVQ_MAX_HEAD_DIM */
    int group;          /* channels per value group (and key group, per-token keys) */
    int keys_per_token; /* 0: keys grouped per channel over the block's tokens */
    size_t k_codes, k_scales, k_zeros;
    size_t v_codes, v_scales, v_zeros;
} kv_cuda_kvq_format;

#define KV_CUDA_KVQ_MAX_HEAD_DIM 256

/* KV_EINVAL naming the first rule f breaks (kq_format_check's, plus even offsets of the
 * f16 regions); KV_EUNSUPPORTED for a head_dim beyond KV_CUDA_KVQ_MAX_HEAD_DIM. */
int kv_cuda_kvq_format_check(const kv_cuda_kvq_format *f, kv_err *err);
/* Bytes from a layer's base that its regions reach (the end of the furthest one). */
size_t kv_cuda_kvq_layer_extent(const kv_cuda_kvq_format *f);

/* Seals one layer of one block: k, v are block_size rows of n_kv_heads * head_dim f32
 * values, `stride` floats apart (>= n_kv_heads * head_dim), quantized into base's regions. */
int kv_cuda_kvq_quantize_block(void *base, const kv_cuda_kvq_format *f, const float *k, const float *v,
                               size_t stride, void *stream, kv_err *err);

/* The quantized blocks of one layer: block b's layer base at base + b * block_bytes. */
typedef struct kv_cuda_kvq_pool {
    const void *base;
    size_t block_bytes; /* even, >= kv_cuda_kvq_layer_extent(&f) */
    kv_cuda_kvq_format f;
} kv_cuda_kvq_pool;

/* Decode attention over sequences whose sealed blocks are codes and whose newest blocks
 * are f32 rows (the twin of kq_attend_one with the engine's window rule,
 * common/engine/engine_kvq.c): sequence s's query sits at position len - 1 (len =
 * seq_lens[s] >= 1) and attends to positions 0 .. len - 1; logical blocks below
 * ws = max(0, (len - 1) / block_size - residual_blocks + 1) are read as codes from
 * qpool block q_tables[s * table_stride + b], positions from ws * block_size on as f32
 * rows of `fp` (dtype f32, the same block_size and heads) through
 * fp_tables[s * table_stride + b]. q, out: [n_seqs][n_heads][head_dim] f32. n_splits
 * and the workspace as for kv_cuda_attention_decode (kv_cuda_decode_splits,
 * kv_cuda_decode_workspace_bytes): any n_splits gives the same result up to rounding. */
int kv_cuda_kvq_attention_decode(float *out, const float *q, const kv_cuda_kvq_pool *qpool,
                                 const int32_t *q_tables, const kv_cuda_paged_kv *fp, const int32_t *fp_tables,
                                 int table_stride, const int32_t *seq_lens, int residual_blocks, int n_seqs,
                                 int n_heads, int n_splits, void *workspace, size_t workspace_bytes, void *stream,
                                 kv_err *err);

#ifdef __cplusplus
}
#endif

#endif
