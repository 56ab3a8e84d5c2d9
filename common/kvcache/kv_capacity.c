#include "kv_capacity.h"

#include <string.h>

static const struct { const char *name; double bits; int quantized; } dtypes[] = {
    [KV_CACHE_F32] = {"f32", 32, 0}, [KV_CACHE_F16] = {"f16", 16, 0}, [KV_CACHE_BF16] = {"bf16", 16, 0},
    [KV_CACHE_INT8] = {"int8", 8, 1}, [KV_CACHE_INT4] = {"int4", 4, 1}, [KV_CACHE_INT2] = {"int2", 2, 1},
};

int kv_cache_dtype_parse(const char *s, kv_cache_dtype *out)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = (kv_cache_dtype)i;
            return 0;
        }
    return -1;
}

const char *kv_cache_dtype_name(kv_cache_dtype dt) { return dtypes[dt].name; }

double kv_cache_bytes_per_token(const kv_model_config *cfg, kv_cache_dtype dt)
{
    double per_head = cfg->head_dim * dtypes[dt].bits / 8.0;
    if (dtypes[dt].quantized)
        per_head += 2 * 2; /* f16 scale + f16 zero point per group of head_dim channels */
    return 2.0 * kv_model_config_kv_layers(cfg) * cfg->n_kv_heads * per_head; /* owner layers only */
}
