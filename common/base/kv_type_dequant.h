/* Private to kv_type.c: the row dequantizers its traits table points to (kv_type_dequant.c),
 * each ggml's dequantize_row_* for one block layout. */
#ifndef KV_TYPE_DEQUANT_H
#define KV_TYPE_DEQUANT_H

#include <stddef.h>

void kv_dequant_f32(const void *blocks, float *out, size_t n);
void kv_dequant_f16(const void *blocks, float *out, size_t n);
void kv_dequant_bf16(const void *blocks, float *out, size_t n);
void kv_dequant_q8_0(const void *blocks, float *out, size_t n);
void kv_dequant_q4_0(const void *blocks, float *out, size_t n);
void kv_dequant_q4_1(const void *blocks, float *out, size_t n);
void kv_dequant_q5_0(const void *blocks, float *out, size_t n);
void kv_dequant_q5_1(const void *blocks, float *out, size_t n);
void kv_dequant_q4_k(const void *blocks, float *out, size_t n);
void kv_dequant_q5_k(const void *blocks, float *out, size_t n);
void kv_dequant_q6_k(const void *blocks, float *out, size_t n);

#endif
