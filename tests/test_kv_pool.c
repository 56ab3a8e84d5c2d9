/* Paged KV pool: all-or-nothing reserve, refcounts, double release, block tables. */
#include "kv_capacity.h"
#include "kv_pool.h"
#include "kv_test.h"

static void test_reserve_release(void)
{
    kv_pool p;
    kv_err err;
    kv_pool_shape s = {2, 2, 4, 16};
    CHECK(kv_pool_init(&p, &s, 8, &err) == 0);
    CHECK_EQ_INT(kv_pool_block_bytes(&s), 2 * 2 * 16 * 2 * 4 * 4);
    int32_t a[8], b[8];
    CHECK(kv_pool_reserve(&p, 5, a, &err) == 0);
    CHECK_EQ_INT(kv_pool_n_free(&p), 3);
    CHECK(kv_pool_reserve(&p, 4, b, &err) == KV_EFULL && strstr(err.msg, "need 4 blocks, 3 of 8 free"));
    CHECK_EQ_INT(kv_pool_n_free(&p), 3); /* refused reservations take nothing */
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++) CHECK(a[i] != a[j]);
    kv_pool_retain(&p, a, 2);
    kv_pool_release(&p, a, 5);
    CHECK_EQ_INT(kv_pool_n_free(&p), 6); /* a[0], a[1] still referenced */
    kv_pool_release(&p, a, 2);
    CHECK_EQ_INT(kv_pool_n_free(&p), 8);
    kv_pool_release(&p, a, 5); /* double release: ignored */
    CHECK_EQ_INT(kv_pool_n_free(&p), 8);
    int32_t bogus[2] = {-1, 99};
    kv_pool_release(&p, bogus, 2);
    CHECK_EQ_INT(kv_pool_n_free(&p), 8);
    /* K and V of a block/layer don't overlap and blocks don't overlap. */
    CHECK(kv_pool_v(&p, 0, 0) - kv_pool_k(&p, 0, 0) == 16 * 8);
    CHECK(kv_pool_k(&p, 0, 1) - kv_pool_k(&p, 0, 0) == 2 * 16 * 8);
    CHECK(kv_pool_k(&p, 1, 0) - kv_pool_k(&p, 0, 0) == (long)p.block_floats);
    kv_pool_destroy(&p);
    CHECK(kv_pool_init(&p, &s, 0, &err) == KV_EINVAL);
}

/* Bookkeeping over caller memory (the CUDA engine's device pool): same free list, other
 * element size, memory never freed or touched by the pool. */
static void test_external(void)
{
    kv_pool p;
    kv_err err;
    kv_pool_shape s = {2, 2, 4, 16};
    static uint16_t mem[8 * 2 * 2 * 16 * 2 * 4];
    CHECK(kv_pool_init_external(&p, &s, 8, 2, mem, &err) == 0);
    CHECK(p.external && p.elem_size == 2 && p.data == (float *)(void *)mem);
    CHECK_EQ_INT(kv_pool_nbytes_per_block(&p), kv_pool_block_bytes(&s) / 2);
    CHECK_EQ_INT(kv_pool_block_bytes_of(&s, 2), kv_pool_block_bytes(&s) / 2);
    CHECK((char *)kv_pool_block_addr(&p, 3) - (char *)(void *)mem == 3 * (long)(kv_pool_block_bytes(&s) / 2));
    int32_t a[8];
    CHECK(kv_pool_reserve(&p, 8, a, &err) == 0 && a[0] == 0 && a[7] == 7);
    kv_pool_release(&p, a, 8);
    CHECK_EQ_INT(kv_pool_n_free(&p), 8);
    kv_pool_destroy(&p); /* must not free mem (static storage: a free would crash) */
    CHECK(kv_pool_init_external(&p, &s, 8, 3, mem, &err) == KV_EINVAL);
    CHECK(kv_pool_init_external(&p, &s, 8, 2, NULL, &err) == KV_EINVAL);
    kv_pool_init(&p, &s, 2, &err);
    CHECK(!p.external && p.elem_size == 4 && kv_pool_nbytes_per_block(&p) == kv_pool_block_bytes(&s));
    kv_pool_destroy(&p);
}

static void test_seq(void)
{
    kv_pool p;
    kv_err err;
    kv_pool_shape s = {1, 1, 4, 4};
    CHECK(kv_pool_init(&p, &s, 10, &err) == 0);
    kv_seq a = {0}, b = {0};
    CHECK(kv_seq_reserve_tokens(&a, &p, 1, &err) == 0 && a.n_blocks == 1);
    CHECK(kv_seq_reserve_tokens(&a, &p, 4, &err) == 0 && a.n_blocks == 1);
    CHECK(kv_seq_reserve_tokens(&a, &p, 5, &err) == 0 && a.n_blocks == 2);
    CHECK(kv_seq_reserve_tokens(&a, &p, 33, &err) == 0 && a.n_blocks == 9);
    CHECK(kv_seq_reserve_tokens(&b, &p, 8, &err) == KV_EFULL && b.n_blocks == 0);
    CHECK_EQ_INT(kv_pool_n_free(&p), 1);
    kv_seq_release(&a, &p);
    CHECK(a.n_blocks == 0 && a.blocks == NULL);
    CHECK(kv_seq_reserve_tokens(&b, &p, 8, &err) == 0 && b.n_blocks == 2);
    kv_seq_release(&b, &p);
    CHECK_EQ_INT(kv_pool_n_free(&p), 10);
    kv_pool_destroy(&p);
}

static void test_capacity(void)
{
    kv_model_config c = {.n_layers = 32, .n_kv_heads = 8, .head_dim = 128};
    /* Llama-3-8B: 128 KiB per token in bf16. */
    CHECK(kv_cache_bytes_per_token(&c, KV_CACHE_BF16) == 131072.0);
    CHECK(kv_cache_bytes_per_token(&c, KV_CACHE_F32) == 262144.0);
    CHECK(kv_cache_bytes_per_token(&c, KV_CACHE_INT8) == 2.0 * 32 * 8 * (128 + 4));
    CHECK(kv_cache_bytes_per_token(&c, KV_CACHE_INT4) == 2.0 * 32 * 8 * (64 + 4));
    CHECK(kv_cache_bytes_per_token(&c, KV_CACHE_INT2) == 2.0 * 32 * 8 * (32 + 4));
    kv_cache_dtype dt;
    CHECK(kv_cache_dtype_parse("int4", &dt) == 0 && dt == KV_CACHE_INT4);
    CHECK(kv_cache_dtype_parse("fp8", &dt) == -1);
}

int main(void)
{
    test_reserve_release();
    test_seq();
    test_external();
    test_capacity();
    return kv_test_result();
}
