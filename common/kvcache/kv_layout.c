#include "kv_layout.h"

#include <string.h>

/* Sizes are computed in uint64 against this bound, so nothing below wraps. */
#define KV_LAYOUT_MAX_BYTES ((uint64_t)1 << 40)

static uint64_t align16(uint64_t x) { return (x + 15) & ~(uint64_t)15; }

static int check_share(kv_layout *l, const kv_layout_params *p, kv_err *err)
{
    l->n_slots = 0;
    for (int i = 0; i < p->n_layers; i++) {
        int s = p->share ? p->share[i] : i;
        if (s < 0 || s > i)
            return kv_err_set(err, KV_EINVAL, "layer %d shares the K/V of layer %d: it must be an earlier layer or itself", i, s);
        if (s == i) {
            l->owner_of_slot[l->n_slots] = (int16_t)i;
            l->slot_of[i] = (int16_t)l->n_slots++;
        } else if (!kv_layout_is_owner(l, s)) {
            return kv_err_set(err, KV_EINVAL, "layer %d shares the K/V of layer %d, which itself shares another's", i, s);
        } else {
            l->slot_of[i] = l->slot_of[s];
        }
    }
    return KV_OK;
}

static const int dtype_bits[] = {[KV_CACHE_F32] = 32, [KV_CACHE_F16] = 16, [KV_CACHE_BF16] = 16,
                                 [KV_CACHE_INT8] = 8, [KV_CACHE_INT4] = 4, [KV_CACHE_INT2] = 2};

/* The quantized regions of a slot. */
static int quantized_slot(kv_layout *l, const kv_layout_params *p, kv_err *err)
{
    int per_byte = 8 / l->bits;
    int group = p->group > 0 ? p->group : p->head_dim < KV_LAYOUT_DEFAULT_GROUP ? p->head_dim : KV_LAYOUT_DEFAULT_GROUP;
    if (group > p->head_dim || p->head_dim % group)
        return kv_err_set(err, KV_EINVAL, "KV group of %d channels must divide head_dim %d", group, p->head_dim);
    if (group % per_byte)
        return kv_err_set(err, KV_EINVAL,
                          "KV group of %d channels: %s packs %d codes per byte, so it must be a multiple of %d", group,
                          kv_cache_dtype_name(l->dtype), per_byte, per_byte);
    if (p->block_size % per_byte)
        return kv_err_set(err, KV_EINVAL,
                          "block size %d: %s packs %d codes per byte, so it must be a multiple of %d", p->block_size,
                          kv_cache_dtype_name(l->dtype), per_byte, per_byte);
    l->group = group;
    uint64_t values = (uint64_t)p->n_kv_heads * (uint64_t)p->head_dim * (uint64_t)p->block_size;
    uint64_t codes = values * (uint64_t)l->bits / 8;
    uint64_t v_groups = (uint64_t)p->n_kv_heads * (uint64_t)p->block_size * (uint64_t)(p->head_dim / group);
    uint64_t k_groups = p->key_mode == KV_KEYS_PER_TOKEN ? v_groups : (uint64_t)p->n_kv_heads * (uint64_t)p->head_dim;
    uint64_t off = 0;
    l->k = (size_t)off;
    off = align16(off + codes);
    l->k_scales = (size_t)off;
    off = align16(off + 2 * k_groups);
    l->k_zeros = (size_t)off;
    off = align16(off + 2 * k_groups);
    l->v = (size_t)off;
    off = align16(off + codes);
    l->v_scales = (size_t)off;
    off = align16(off + 2 * v_groups);
    l->v_zeros = (size_t)off;
    off = align16(off + 2 * v_groups);
    l->k_bytes = l->v_bytes = (size_t)codes;
    l->k_param_bytes = (size_t)(2 * k_groups);
    l->v_param_bytes = (size_t)(2 * v_groups);
    l->slot_bytes = (size_t)off;
    int rb = p->residual > 0 ? (p->residual + p->block_size - 1) / p->block_size : 1;
    l->residual_blocks = rb;
    return KV_OK;
}

int kv_layout_init(kv_layout *l, const kv_layout_params *p, kv_err *err)
{
    memset(l, 0, sizeof *l);
    if (p->n_layers <= 0 || p->n_layers > KV_LAYOUT_MAX_LAYERS)
        return kv_err_set(err, KV_EINVAL, "%d layers: a KV layout has 1 .. %d", p->n_layers, KV_LAYOUT_MAX_LAYERS);
    if (p->n_kv_heads <= 0 || p->head_dim <= 0 || p->block_size <= 0)
        return kv_err_set(err, KV_EINVAL, "KV block of %d heads x head_dim %d x %d tokens", p->n_kv_heads,
                          p->head_dim, p->block_size);
    if ((unsigned)p->dtype > KV_CACHE_INT2)
        return kv_err_set(err, KV_EINVAL, "unknown KV dtype %d", (int)p->dtype);
    if (p->key_mode != KV_KEYS_PER_CHANNEL && p->key_mode != KV_KEYS_PER_TOKEN)
        return kv_err_set(err, KV_EINVAL, "unknown key grouping %d", (int)p->key_mode);
    /* One block's values, all layers, bounded before any product below is formed. */
    uint64_t values = (uint64_t)p->n_layers * (uint64_t)p->n_kv_heads * (uint64_t)p->head_dim * (uint64_t)p->block_size;
    if ((uint64_t)p->n_kv_heads * (uint64_t)p->head_dim > ((uint64_t)1 << 24) ||
        p->block_size > (1 << 16) || values * 2 * 4 > KV_LAYOUT_MAX_BYTES)
        return kv_err_set(err, KV_ERANGE, "KV block of %d layers x %d heads x head_dim %d x %d tokens is too large",
                          p->n_layers, p->n_kv_heads, p->head_dim, p->block_size);
    l->n_layers = p->n_layers;
    l->n_kv_heads = p->n_kv_heads;
    l->head_dim = p->head_dim;
    l->block_size = p->block_size;
    l->dtype = p->dtype;
    l->key_mode = p->key_mode;
    int rc = check_share(l, p, err);
    if (rc)
        return rc;
    uint64_t rows = (uint64_t)p->block_size * (uint64_t)p->n_kv_heads * (uint64_t)p->head_dim;
    l->fp_block_bytes = (size_t)(rows * 2 * 4 * (uint64_t)l->n_slots);
    if (p->dtype <= KV_CACHE_BF16) {
        l->elem_bytes = dtype_bits[p->dtype] / 8;
        l->k = 0;
        l->k_bytes = l->v_bytes = (size_t)(rows * (uint64_t)l->elem_bytes);
        l->v = l->k_bytes;
        l->slot_bytes = 2 * l->k_bytes;
    } else {
        l->bits = dtype_bits[p->dtype];
        if ((rc = quantized_slot(l, p, err)))
            return rc;
    }
    l->block_bytes = l->slot_bytes * (size_t)l->n_slots;
    return KV_OK;
}

double kv_layout_bytes_per_token(const kv_layout *l) { return (double)l->block_bytes / (double)l->block_size; }
