/* f32 rows into a stored weight type, for --weights-dtype: f32, f16, bf16 (round to nearest
 * even) and ggml's q8_0, q4_0, q4_1, q5_0, q5_1 blocks as its reference quantize_row_*_ref
 * writes them, byte for byte (the same float operations in the same order, fp16 scales
 * rounded to nearest even). The k-quants have no quantizer here: their reference searches
 * scales iteratively, and a GGUF brings them ready-made. */
#ifndef KV_WEIGHT_QUANT_H
#define KV_WEIGHT_QUANT_H

#include <stddef.h>

#include "kv_err.h"
#include "kv_type.h"

/* 1 when kv_quantize_row can write type t. */
int kv_quantize_supported(kv_type t);
/* out <- x[0..n) in type t. KV_EUNSUPPORTED for a type without a quantizer, KV_EINVAL when n
 * is not a whole number of t's blocks. */
int kv_quantize_row(kv_type t, const float *x, void *out, size_t n, kv_err *err);

#endif
