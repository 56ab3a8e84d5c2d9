/* KV cache sizing for every KV dtype (what `kvctl capacity` prints). Quantized
 * dtypes store per-group affine parameters: an f16 scale and an f16 zero point per
 * group of head_dim channels of one token and head. */
#ifndef KV_CAPACITY_H
#define KV_CAPACITY_H

#include <stddef.h>

#include "model_config.h"

typedef enum { KV_CACHE_F32 = 0, KV_CACHE_F16, KV_CACHE_BF16, KV_CACHE_INT8, KV_CACHE_INT4, KV_CACHE_INT2 } kv_cache_dtype;

/* Parses "f32|f16|bf16|int8|int4|int2"; returns -1 when unknown. */
int kv_cache_dtype_parse(const char *s, kv_cache_dtype *out);
const char *kv_cache_dtype_name(kv_cache_dtype dt);
/* 2 x owner layers (cla_share) x kv_heads x (head_dim x bits/8 + group parameters). */
double kv_cache_bytes_per_token(const kv_model_config *cfg, kv_cache_dtype dt);

#endif
