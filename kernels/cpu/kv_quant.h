/* Quantized KV blocks: asymmetric group-wise affine codes of 8, 4 or 2 bits, and decode
 * attention that reads them without a full-precision copy of the context.
 *
 * A group of values x with min m and max M gets
 *     S = f16((M - m) / (2^b - 1)),  Z = f16(round(-m / S)),
 *     q = clamp(round(x / S) + Z, 0, 2^b - 1),  x' = (q - Z) * S,
 * S and Z computed from the f16-rounded S and stored as IEEE halves beside the codes. A
 * constant group (M == m) gets S = |m| and Z = -sign(m) (x' = m exactly when |m| is a half);
 * S is capped at the largest half and Z at +-65504, so every finite input gives finite x'.
 * Inputs must be finite: a NaN or inf makes its group's codes 0 and its S or Z NaN/inf
 * (never undefined behaviour).
 *
 * Codes are packed little-endian: code i of a run is in byte i*b/8 at bit (i*b) % 8.
 *
 * One layer of one block (block_size tokens, n_kv_heads heads of head_dim channels) holds:
 *   keys, per channel (KIVI): a group = one channel of one head over the block's tokens:
 *     codes [head][channel][token], params [head][channel];
 *   keys, per token (keys_per_token = 1) and values: a group = `group` channels of one
 *     token and head: codes [head][token][channel], params [head][token][channel / group].
 * Where each region lies is the caller's (kq_regions: byte offsets from the layer's base;
 * common/kvcache/kv_layout computes them); the kernels never assume regions are adjacent. */
#ifndef KV_KV_QUANT_H
#define KV_KV_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu_kernels.h"
#include "kv_err.h"

typedef struct kq_format {
    int bits;           /* 8, 4 or 2 */
    int block_size;     /* tokens per block: a multiple of 8 / bits */
    int n_kv_heads;
    int head_dim;
    int group;          /* channels per value group (and per key group when keys_per_token):
                         * divides head_dim, a multiple of 8 / bits */
    int keys_per_token; /* 0: keys grouped per channel over the block's tokens */
} kq_format;

/* Byte offsets, from one block's layer base, of its six regions (f16 arrays 2-aligned). */
typedef struct kq_regions {
    size_t k_codes, k_scales, k_zeros;
    size_t v_codes, v_scales, v_zeros;
} kq_regions;

/* KV_EINVAL naming the first violated rule (bits, sizes, group vs head_dim, packing). */
int kq_format_check(const kq_format *f, kv_err *err);
/* Sizes of one block's layer regions under f (f checked). */
size_t kq_k_code_bytes(const kq_format *f);
size_t kq_v_code_bytes(const kq_format *f);
size_t kq_k_groups(const kq_format *f); /* scales (= zero points) of keys */
size_t kq_v_groups(const kq_format *f);

/* IEEE half conversions (round to nearest even; F16C). */
uint16_t kq_f32_to_f16(float x);
float kq_f16_to_f32(uint16_t h);

/* One group: n values x[i * stride] -> codes[0..n) (one code per byte, unpacked) and its
 * scale and zero point (halves). */
void kq_quantize_group(const float *x, size_t stride, int n, int bits, uint8_t *codes, uint16_t *scale,
                       uint16_t *zero);
/* The rounding of the formula: to nearest, ties to even (numpy's round), in the current
 * (default) rounding mode. */
static inline float kq_round(float x) { return rintf(x); }
/* x' of code q under a group's halves: (q - Z) * S in f32. */
static inline float kq_dequant_value(int q, float scale, float zero) { return ((float)q - zero) * scale; }

/* Packing of n codes (n * bits a multiple of 8). */
void kq_pack(const uint8_t *codes, int n, int bits, uint8_t *packed);
void kq_unpack(const uint8_t *packed, int n, int bits, uint8_t *codes);

/* Seals a block's layer: k, v are block_size rows of n_kv_heads * head_dim floats, row
 * stride `stride` floats (the f32 pool's rows), quantized into base + regions. */
void kq_quantize_block(void *base, const kq_format *f, const kq_regions *r, const float *k, const float *v,
                       size_t stride);
/* The values a quantized layer stands for (x' of every code), into rows as above. */
void kq_dequantize_block(const void *base, const kq_format *f, const kq_regions *r, float *k, float *v,
                         size_t stride);

/* Decode attention of one query head q[head_dim] (kv head kv_head) over a sequence of
 * n_qblocks quantized blocks (blocks[i]: the layer base of the block holding tokens
 * i*block_size ..) followed by n_fp full-precision tokens at positions fp_start ..
 * fp_start + n_fp - 1 of `fp` through fp_table (the residual window; n_fp may be 0, fp
 * then unused). softmax(q.K^T / sqrt(head_dim)) . V into out[head_dim]; scores: scratch of
 * n_qblocks * block_size + n_fp floats. Dequantizes inside the dot products (AVX2). */
void kq_attend_one(float *out, const float *q, const kq_format *f, const kq_regions *r, int kv_head,
                   const void *const *blocks, int n_qblocks, const kc_paged_kv *fp, const int32_t *fp_table,
                   int fp_start, int n_fp, float *scores);

#endif
