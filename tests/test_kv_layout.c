/* KV block layout (common/kvcache/kv_layout.h): sizes worked out by hand for SmolLM2's shape,
 * the f32 layout equal to today's kv_pool block, layer sharing, refusals, and agreement with
 * the kernels' view (kq_format sizes; a sealed slot written by kq_quantize_block stays
 * inside its slot). */
#include <stdlib.h>
#include <string.h>

#include "kv_layout.h"
#include "kv_pool.h"
#include "kv_quant.h"
#include "kv_test.h"

static kv_layout_params smollm2(kv_cache_dtype dt)
{
    return (kv_layout_params){.n_layers = 30, .n_kv_heads = 3, .head_dim = 64, .block_size = 16, .dtype = dt};
}

static void test_float_layouts(void)
{
    kv_layout l;
    kv_err err;
    kv_layout_params p = smollm2(KV_CACHE_F32);
    CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
    kv_pool_shape s = {30, 3, 64, 16};
    CHECK_EQ_INT(l.block_bytes, kv_pool_block_bytes(&s)); /* today's pool block, byte for byte */
    CHECK_EQ_INT(l.v, 16 * 3 * 64 * 4);                   /* V after K, as kv_pool_v */
    CHECK_EQ_INT(kv_layout_slot_offset(&l, 7), 7 * l.slot_bytes);
    CHECK_EQ_INT(l.residual_blocks, 0);
    CHECK(kv_layout_bytes_per_token(&l) == 2.0 * 30 * 3 * 64 * 4);
    p.dtype = KV_CACHE_F16;
    CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
    CHECK(kv_layout_bytes_per_token(&l) == 2.0 * 30 * 3 * 64 * 2);
    CHECK_EQ_INT(l.k_param_bytes, 0);
}

static void test_quantized_sizes(void)
{
    kv_layout l;
    kv_err err;
    /* int4, keys per channel, block 16, groups of 32: per slot (bytes)
     *   K codes 3*64*16/2 = 1536, K scales and zeros 3*64*2 = 384 each,
     *   V codes 1536, V scales and zeros 3*16*(64/32)*2 = 192 each: 4224. */
    kv_layout_params p = smollm2(KV_CACHE_INT4);
    CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
    CHECK_EQ_INT(l.group, 32);
    CHECK_EQ_INT(l.bits, 4);
    CHECK_EQ_INT(l.k, 0);
    CHECK_EQ_INT(l.k_scales, 1536);
    CHECK_EQ_INT(l.k_zeros, 1536 + 384);
    CHECK_EQ_INT(l.v, 1536 + 768);
    CHECK_EQ_INT(l.v_scales, 2 * 1536 + 768);
    CHECK_EQ_INT(l.v_zeros, 2 * 1536 + 768 + 192);
    CHECK_EQ_INT(l.slot_bytes, 4224);
    CHECK_EQ_INT(l.block_bytes, 30 * 4224);
    CHECK(kv_layout_bytes_per_token(&l) == 30.0 * 4224 / 16);
    CHECK_EQ_INT(l.residual_blocks, 1);
    CHECK_EQ_INT(l.fp_block_bytes, 30 * 2 * 16 * 3 * 64 * 4);
    /* int2 per-token keys: K params like V's: 3*16*2*2 = 192 each. */
    p.dtype = KV_CACHE_INT2;
    p.key_mode = KV_KEYS_PER_TOKEN;
    p.residual = 128;
    CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
    CHECK_EQ_INT(l.slot_bytes, 768 + 192 + 192 + 768 + 192 + 192);
    CHECK_EQ_INT(l.residual_blocks, 8);
    p.residual = 17;
    CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
    CHECK_EQ_INT(l.residual_blocks, 2); /* whole blocks */
    /* int8 on stories260K (head_dim 8): the default group shrinks to head_dim. */
    kv_layout_params s = {.n_layers = 5, .n_kv_heads = 4, .head_dim = 8, .block_size = 16, .dtype = KV_CACHE_INT8};
    CHECK(kv_layout_init(&l, &s, &err) == KV_OK);
    CHECK_EQ_INT(l.group, 8);
    /* Codes that do not fill whole 16-byte lines are padded: 1 head x 4 dims x 4 tokens x 2 bits = 4 bytes. */
    kv_layout_params tiny = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 4, .block_size = 4, .dtype = KV_CACHE_INT2};
    CHECK(kv_layout_init(&l, &tiny, &err) == KV_OK);
    CHECK_EQ_INT(l.k_scales, 16);
    CHECK_EQ_INT(l.k_bytes, 4);
    CHECK_EQ_INT(l.slot_bytes % 16, 0);
}

static void test_sharing(void)
{
    kv_layout l;
    kv_err err;
    int share[6] = {0, 0, 2, 2, 4, 4}; /* CLA, factor 2 */
    kv_layout_params p = smollm2(KV_CACHE_INT8);
    p.n_layers = 6;
    p.share = share;
    CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
    CHECK_EQ_INT(l.n_slots, 3);
    CHECK_EQ_INT(kv_layout_slot_offset(&l, 3), kv_layout_slot_offset(&l, 2));
    CHECK_EQ_INT(kv_layout_slot_offset(&l, 4), 2 * l.slot_bytes);
    CHECK(kv_layout_is_owner(&l, 2) && !kv_layout_is_owner(&l, 3));
    kv_layout_params own = p;
    own.share = NULL;
    kv_layout all;
    CHECK(kv_layout_init(&all, &own, &err) == KV_OK);
    CHECK_EQ_INT(2 * l.block_bytes, all.block_bytes); /* halved at F = 2 */
    int later[6] = {0, 2, 2, 3, 4, 5};                /* layer 1 shares a later layer */
    p.share = later;
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "layer 1") != NULL);
    int chain[6] = {0, 0, 1, 3, 4, 5}; /* layer 2 shares a sharer */
    p.share = chain;
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "layer 2") != NULL);
}

static void test_refusals(void)
{
    kv_layout l;
    kv_err err;
    kv_layout_params p = smollm2(KV_CACHE_INT4);
    p.head_dim = 63; /* odd head_dim: the default group (32) does not divide it */
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "divide head_dim 63") != NULL);
    p.group = 63; /* divides, but int4 packs codes in pairs */
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "multiple of 2") != NULL);
    p = smollm2(KV_CACHE_INT2);
    p.block_size = 10;
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "block size 10") != NULL);
    p = smollm2(KV_CACHE_F32);
    p.block_size = 10; /* float blocks: any size */
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_OK);
    p.n_layers = 0;
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    p = smollm2(KV_CACHE_F32);
    p.dtype = (kv_cache_dtype)99;
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_EINVAL);
    p = smollm2(KV_CACHE_F32);
    p.n_kv_heads = 1 << 20;
    p.head_dim = 1 << 20;
    CHECK_EQ_INT(kv_layout_init(&l, &p, &err), KV_ERANGE);
}

/* The kernels agree: their format accepts the layout, their sizes match, and sealing a
 * block writes only inside its slot (guard bytes around it stay untouched). */
static void test_kernels_agree(void)
{
    const kv_cache_dtype dts[] = {KV_CACHE_INT8, KV_CACHE_INT4, KV_CACHE_INT2};
    for (int d = 0; d < 3; d++)
        for (int kpt = 0; kpt <= 1; kpt++) {
            kv_layout l;
            kv_err err;
            kv_layout_params p = smollm2(dts[d]);
            p.n_layers = 2;
            p.key_mode = kpt ? KV_KEYS_PER_TOKEN : KV_KEYS_PER_CHANNEL;
            CHECK(kv_layout_init(&l, &p, &err) == KV_OK);
            kq_format f = {l.bits, l.block_size, l.n_kv_heads, l.head_dim, l.group, kpt};
            CHECK(kq_format_check(&f, &err) == KV_OK);
            CHECK_EQ_INT(kq_k_code_bytes(&f), l.k_bytes);
            CHECK_EQ_INT(kq_v_code_bytes(&f), l.v_bytes);
            CHECK_EQ_INT(2 * kq_k_groups(&f), l.k_param_bytes);
            CHECK_EQ_INT(2 * kq_v_groups(&f), l.v_param_bytes);
            kq_regions r = {l.k, l.k_scales, l.k_zeros, l.v, l.v_scales, l.v_zeros};
            size_t row = (size_t)l.n_kv_heads * (size_t)l.head_dim;
            float *k = malloc((size_t)l.block_size * row * sizeof(float)), *v = malloc((size_t)l.block_size * row * sizeof(float));
            for (size_t i = 0; i < (size_t)l.block_size * row; i++) {
                k[i] = (float)((i * 7919) % 1000) / 100.0f - 5.0f;
                v[i] = (float)((i * 104729) % 997) / 500.0f - 1.0f;
            }
            uint8_t *buf = malloc(l.block_bytes + 64);
            memset(buf, 0xA5, l.block_bytes + 64);
            kq_quantize_block(buf + 32 + kv_layout_slot_offset(&l, 1), &f, &r, k, v, row);
            int guards = 1;
            for (size_t i = 0; i < 32 + l.slot_bytes; i++)
                guards &= buf[i] == 0xA5;
            for (size_t i = 32 + l.block_bytes; i < l.block_bytes + 64; i++)
                guards &= buf[i] == 0xA5;
            CHECK_MSG(guards, "%s keys per %s: sealing slot 1 wrote outside it", kv_cache_dtype_name(dts[d]),
                      kpt ? "token" : "channel");
            free(buf); free(k); free(v);
        }
}

int main(void)
{
    test_float_layouts();
    test_quantized_sizes();
    test_sharing();
    test_refusals();
    test_kernels_agree();
    return kv_test_result();
}
