/* The KV cache flags every tool shares (kvctl perplexity / generate / capacity, the
 * workers): --kv-dtype, --kv-residual, --kv-group, --kv-keys, into kv_engine_options. */
#ifndef KV_ENGINE_KV_FLAGS_H
#define KV_ENGINE_KV_FLAGS_H

#include "engine.h"

#define KV_ENGINE_KV_FLAGS_USAGE                                                                       \
    "  --kv-dtype T     KV cache: f32 (default) | f16 | bf16 | int8 | int4 | int2 (group-wise affine)\n" \
    "  --kv-residual N  newest tokens kept f32, rounded up to whole blocks (default: one block)\n"     \
    "  --kv-group G     channels per value group (default 32, or head_dim when smaller)\n"             \
    "  --kv-keys M      keys grouped per channel (default) or per token\n"

/* 1 when flag (without its dashes) is one of the four. */
int kv_engine_is_kv_flag(const char *flag);
/* Parses value of flag into o; KV_EINVAL naming the flag and the accepted values. */
int kv_engine_kv_flag(kv_engine_options *o, const char *flag, const char *value, kv_err *err);

#endif
