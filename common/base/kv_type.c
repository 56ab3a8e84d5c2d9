#include "kv_type.h"

#include "kv_type_dequant.h"

#define QK 32  /* elements per block of the q4_0 .. q8_0 family */
#define QK_K 256 /* elements per super-block of the k-quants */

/* Indexed by kv_type. Block byte sizes are ggml's block structs (fp16 scales first, except
 * q6_k, whose scale comes last). */
static const struct kv_type_traits type_table[KV_TYPE_LAYOUT_END] = {
    [KV_TYPE_F32] = {"f32", 1, 4, kv_dequant_f32},
    [KV_TYPE_F16] = {"f16", 1, 2, kv_dequant_f16},
    [KV_TYPE_BF16] = {"bf16", 1, 2, kv_dequant_bf16},
    [KV_TYPE_Q8_0] = {"q8_0", QK, 2 + QK, kv_dequant_q8_0},
    [KV_TYPE_Q4_0] = {"q4_0", QK, 2 + QK / 2, kv_dequant_q4_0},
    [KV_TYPE_Q4_1] = {"q4_1", QK, 2 + 2 + QK / 2, kv_dequant_q4_1},
    [KV_TYPE_Q5_0] = {"q5_0", QK, 2 + 4 + QK / 2, kv_dequant_q5_0},
    [KV_TYPE_Q5_1] = {"q5_1", QK, 2 + 2 + 4 + QK / 2, kv_dequant_q5_1},
    [KV_TYPE_Q4_K] = {"q4_k", QK_K, 2 + 2 + 12 + QK_K / 2, kv_dequant_q4_k},
    [KV_TYPE_Q5_K] = {"q5_k", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, kv_dequant_q5_k},
    [KV_TYPE_Q6_K] = {"q6_k", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, kv_dequant_q6_k},
    [KV_TYPE_Q4_0_X8] = {"q4_0x8", QK, 2 + QK / 2, NULL},
    [KV_TYPE_Q4_1_X8] = {"q4_1x8", QK, 2 + 2 + QK / 2, NULL},
};

const struct kv_type_traits *kv_type_traits(kv_type t)
{
    return (unsigned)t < KV_TYPE_LAYOUT_END ? &type_table[t] : NULL;
}

const char *kv_type_name(kv_type t)
{
    const struct kv_type_traits *tr = kv_type_traits(t);
    return tr ? tr->name : "?";
}

uint64_t kv_type_bytes(kv_type t, uint64_t n_elems)
{
    const struct kv_type_traits *tr = kv_type_traits(t);
    if (!tr || n_elems % tr->block_elems)
        return 0;
    uint64_t blocks = n_elems / tr->block_elems;
    if (blocks > UINT64_MAX / tr->block_bytes)
        return 0;
    return blocks * tr->block_bytes;
}
