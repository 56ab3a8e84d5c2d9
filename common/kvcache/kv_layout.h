/* The one description of a KV block's bytes (CODE-SHAPE seam 2), computed once from the
 * model's shape, the KV dtype, the block size, the residual window and the layer-sharing
 * map. Engines, transports and `kvctl capacity` read offsets and sizes from it instead of
 * redoing the arithmetic.
 *
 * A block holds block_size tokens of every *owner* layer (a layer that computes its own K/V;
 * with cross-layer sharing, layer i attends with the K/V of layer share[i]). Each owner has
 * one slot of slot_bytes, slots in layer order; within a slot, at the offsets below:
 *   float dtypes (f32, f16, bf16): K rows then V rows, [block_size][n_kv_heads * head_dim]
 *     values each (the kv_pool layout of today for f32), no scales;
 *   int8/int4/int2: K codes, K scales, K zero points, V codes, V scales, V zero points,
 *     each region 16-byte aligned, in kernels/cpu/kv_quant.h's order:
 *       keys per channel: codes [head][channel][token], one f16 scale/zero per head and channel;
 *       keys per token:   codes [head][token][channel], f16 scale/zero per head, token and group;
 *       values:           codes [head][token][channel], f16 scale/zero per head, token and group.
 * Quantized blocks are sealed blocks: the newest residual_blocks blocks of a sequence (the
 * one being filled among them) stay at full precision, f32 rows as in an f32 layout, in
 * blocks of fp_block_bytes. */
#ifndef KV_LAYOUT_H
#define KV_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "kv_capacity.h"
#include "kv_err.h"

#define KV_LAYOUT_MAX_LAYERS 1024
#define KV_LAYOUT_DEFAULT_GROUP 32

typedef enum { KV_KEYS_PER_CHANNEL = 0, KV_KEYS_PER_TOKEN = 1 } kv_key_mode;

typedef struct kv_layout_params {
    int n_layers, n_kv_heads, head_dim;
    int block_size;       /* tokens per block */
    kv_cache_dtype dtype; /* what a sealed block holds */
    kv_key_mode key_mode; /* quantized dtypes */
    int group;            /* channels per value group (and per key group, per-token keys);
                           * 0 = KV_LAYOUT_DEFAULT_GROUP, or head_dim when that is smaller */
    int residual;         /* newest tokens kept at full precision, rounded up to whole
                           * blocks; <= 0 = one block (the one being filled) */
    const int *share;     /* [n_layers]: share[i] <= i, and share[share[i]] == share[i] (an
                           * owner); NULL = every layer owns its K/V */
} kv_layout_params;

typedef struct kv_layout {
    int n_layers, n_kv_heads, head_dim, block_size;
    kv_cache_dtype dtype;
    kv_key_mode key_mode;
    int group;             /* resolved (quantized dtypes; 0 for float ones) */
    int bits;              /* bits per code: 8, 4, 2; 0 for float dtypes */
    int elem_bytes;        /* bytes per value of a float dtype (4, 2); 0 when quantized */
    int n_slots;           /* owner layers */
    int16_t slot_of[KV_LAYOUT_MAX_LAYERS]; /* layer -> the slot holding the K/V it attends with */
    int16_t owner_of_slot[KV_LAYOUT_MAX_LAYERS]; /* slot -> its owner layer */
    /* Offsets within a slot; the scale/zero ones are 0 (and their sizes 0) for float dtypes. */
    size_t k, k_scales, k_zeros, v, v_scales, v_zeros;
    size_t k_bytes, v_bytes;             /* codes or rows */
    size_t k_param_bytes, v_param_bytes; /* of the scales (the zero points take as many) */
    size_t slot_bytes;
    size_t block_bytes;    /* n_slots * slot_bytes: what a block of the pool takes and ships */
    int residual_blocks;   /* 0 for float dtypes */
    size_t fp_block_bytes; /* one full-precision (f32) block of the residual window */
} kv_layout;

/* KV_EINVAL naming the first rule a parameter breaks (shape, dtype, group vs head_dim and
 * code packing, sharing map); KV_ERANGE when a size overflows. */
int kv_layout_init(kv_layout *l, const kv_layout_params *p, kv_err *err);

/* Byte offset of the slot layer `layer` attends with, within a block. */
static inline size_t kv_layout_slot_offset(const kv_layout *l, int layer)
{
    return (size_t)l->slot_of[layer] * l->slot_bytes;
}
/* 1 when layer computes and stores its own K/V (an owner). */
static inline int kv_layout_is_owner(const kv_layout *l, int layer)
{
    return l->owner_of_slot[l->slot_of[layer]] == layer;
}
/* Stored bytes per token of sealed blocks (codes + scales + zero points, owner layers only,
 * alignment included): block_bytes / block_size. The residual window is apart: at most
 * residual_blocks * fp_block_bytes per sequence. */
double kv_layout_bytes_per_token(const kv_layout *l);

#endif
