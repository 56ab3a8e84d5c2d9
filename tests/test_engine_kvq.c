/* The CPU engine with a quantized KV cache (engine_kvq.h) on stories260K:
 *   window:   with a residual window of R blocks, a query in blocks 0 .. R-1 reads nothing
 *             quantized (its logits equal f32 KV's), a query past it does (they differ);
 *   residual: a window covering the whole context gives f32 KV's logits at every position;
 *   paths:    prefill in GEMV-sized chunks equals decode token by token (the same
 *             quantization, the same attention; up to the f32 engine's own rounding), and a
 *             batch of two sequences equals each alone, bit for bit;
 *   reuse:    a second run on the released blocks equals the first (no stale staging);
 *   transfer: a prompt's blocks (its last one partial) read from one sequence and written
 *             into another's give the same decode logits, bit for bit: the first decode
 *             step after a prefill reads the partial block back from its codes, as the
 *             receiver does; blocks ship kv_layout's block_bytes;
 *   quality:  mean |logit error| against f32 KV grows int8 < int4 < int2, int8 small; f16
 *             below int8, bf16 below int4 (f16 / bf16 blocks go through the same staging).
 * Skipped (77) without the shared models. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kv_test.h"

#define N_TOK 70

static const kv_model *g_model;
static int32_t g_tokens[N_TOK];
static int g_vocab;

static kv_engine *make(kv_cache_dtype dt, int residual, int chunk)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.kv_dtype = dt;
    o.kv_residual = residual;
    o.n_blocks = 64;
    o.n_threads = 1; /* a tiny model: more threads only wait on a busy runner */
    if (chunk)
        o.prefill_chunk = chunk;
    kv_engine *e = NULL;
    kv_err err;
    CHECK_MSG(kv_engine_create(g_model, &o, &e, &err) == 0, "engine %s: %s", kv_cache_dtype_name(dt), err.msg);
    return e;
}

/* All N_TOK positions' logits of one prefill (in chunks of the engine's prefill_chunk). */
static float *prefill_all(kv_engine *e)
{
    float *lg = malloc((size_t)N_TOK * (size_t)g_vocab * sizeof *lg);
    kv_seq s = {0};
    kv_err err;
    CHECK_MSG(kv_engine_prefill(e, &s, g_tokens, N_TOK, lg, 1, &err) == 0, "prefill: %s", err.msg);
    kv_seq_release(&s, kv_engine_pool(e));
    return lg;
}

static double row_diff(const float *a, const float *b)
{
    double m = 0;
    for (int i = 0; i < g_vocab; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static void check_window(const float *ref, int residual)
{
    kv_engine *e = make(KV_CACHE_INT4, residual, 0);
    float *lg = prefill_all(e);
    int rb = (residual + 15) / 16, edge = rb * 16;
    double inside = 0, outside = 0;
    for (int p = 0; p < N_TOK; p++) {
        double d = row_diff(ref + (size_t)p * (size_t)g_vocab, lg + (size_t)p * (size_t)g_vocab);
        if (p < edge)
            inside = fmax(inside, d);
        else
            outside = fmax(outside, d);
    }
    CHECK_MSG(inside < 1e-4, "window: residual %d: positions < %d differ from f32 by %g", residual, edge, inside);
    CHECK_MSG(outside > 1e-3, "window: residual %d: positions >= %d equal f32 (%g): nothing read quantized", residual,
              edge, outside);
    free(lg);
    kv_engine_free(e);
}

static void check_residual_covers(const float *ref)
{
    kv_engine *e = make(KV_CACHE_INT2, 512, 0);
    float *lg = prefill_all(e);
    double d = 0;
    for (int p = 0; p < N_TOK; p++)
        d = fmax(d, row_diff(ref + (size_t)p * (size_t)g_vocab, lg + (size_t)p * (size_t)g_vocab));
    CHECK_MSG(d < 1e-4, "residual: a window of the whole context differs from f32 by %g", d);
    free(lg);
    kv_engine_free(e);
}

/* Prefill in chunks of 4 (GEMV, as decode) vs prefill of block 0 in the same chunks then
 * decode (a prefill ending on a block boundary: no partial block read back from codes). */
static void check_paths(kv_cache_dtype dt)
{
    kv_engine *e = make(dt, 0, 4);
    float *pre = prefill_all(e);
    float *again = prefill_all(e); /* reuse: the blocks (and staging) of the first run */
    CHECK_MSG(!memcmp(pre, again, (size_t)N_TOK * (size_t)g_vocab * sizeof *pre), "reuse %s: a second run differs",
              kv_cache_dtype_name(dt));
    size_t V = (size_t)g_vocab;
    float *dec = malloc((size_t)N_TOK * V * sizeof *dec);
    kv_seq a = {0};
    kv_err err;
    CHECK(kv_engine_prefill(e, &a, g_tokens, 16, dec, 1, &err) == 0);
    kv_seq *sa = &a;
    for (int p = 16; p < N_TOK; p++)
        CHECK_MSG(kv_engine_decode(e, &sa, &g_tokens[p], 1, dec + (size_t)p * V, &err) == 0, "decode: %s", err.msg);
    double d = 0;
    for (int p = 0; p < N_TOK; p++)
        d = fmax(d, row_diff(pre + (size_t)p * V, dec + (size_t)p * V));
    /* Not bit for bit: the f32 engine's prefill and decode already differ by ~1e-5 here. */
    CHECK_MSG(d < 1e-3, "paths %s: prefill and decode logits differ by %g", kv_cache_dtype_name(dt), d);
    kv_seq_release(&a, kv_engine_pool(e));
    free(pre);
    free(again);
    free(dec);
    kv_engine_free(e);
}

/* Two sequences of different lengths in one decode batch equal each decoded alone. */
static void check_batch(void)
{
    kv_engine *e = make(KV_CACHE_INT4, 0, 0);
    size_t V = (size_t)g_vocab;
    float *both = malloc(2 * V * sizeof *both), *alone = malloc(V * sizeof *alone);
    kv_seq a = {0}, b = {0};
    kv_err err;
    CHECK(kv_engine_prefill(e, &a, g_tokens, 40, NULL, 0, &err) == 0);
    CHECK(kv_engine_prefill(e, &b, g_tokens + 5, 23, NULL, 0, &err) == 0);
    kv_seq *seqs[2] = {&a, &b};
    int32_t toks[2] = {g_tokens[40], g_tokens[28]};
    CHECK(kv_engine_decode(e, seqs, toks, 2, both, &err) == 0);
    kv_seq c = {0};
    CHECK(kv_engine_prefill(e, &c, g_tokens + 5, 23, NULL, 0, &err) == 0);
    kv_seq *one = &c;
    CHECK(kv_engine_decode(e, &one, &toks[1], 1, alone, &err) == 0);
    CHECK_MSG(!memcmp(both + V, alone, V * sizeof *alone), "batch: row 1 of a batch differs from its sequence alone");
    kv_seq_release(&a, kv_engine_pool(e));
    kv_seq_release(&b, kv_engine_pool(e));
    kv_seq_release(&c, kv_engine_pool(e));
    free(both);
    free(alone);
    kv_engine_free(e);
}

static void check_transfer(kv_cache_dtype dt)
{
    kv_engine *e = make(dt, 0, 0);
    const kv_layout *l = kv_engine_kv_layout(e);
    CHECK_EQ_INT(kv_engine_block_bytes(e), l->block_bytes);
    CHECK(!strcmp(kv_engine_kv_dtype(e), kv_cache_dtype_name(dt)));
    size_t V = (size_t)g_vocab, bb = kv_engine_block_bytes(e);
    kv_seq a = {0}, b = {0};
    kv_err err;
    CHECK(kv_engine_prefill(e, &a, g_tokens, 37, NULL, 0, &err) == 0); /* two full blocks and 5 tokens */
    unsigned char *buf = malloc(3 * bb);
    /* What a zero-copy sender reads: the pool's own bytes. */
    for (int i = 0; i < 3; i++)
        memcpy(buf + (size_t)i * bb, kv_engine_block_ptr(e, a.blocks[i]), bb);
    CHECK(kv_seq_reserve_tokens(&b, kv_engine_pool(e), 37, &err) == 0);
    CHECK(kv_engine_blocks_write(e, b.blocks, 3, buf, &err) == 0);
    b.n_tokens = 37;
    float *la = malloc(V * sizeof *la), *lb = malloc(V * sizeof *lb);
    kv_seq *sa = &a, *sb = &b;
    for (int p = 37; p < 52; p++) {
        CHECK(kv_engine_decode(e, &sa, &g_tokens[p], 1, la, &err) == 0);
        CHECK(kv_engine_decode(e, &sb, &g_tokens[p], 1, lb, &err) == 0);
        CHECK_MSG(!memcmp(la, lb, V * sizeof *la), "transfer: position %d differs after the blocks moved", p);
    }
    kv_seq_release(&a, kv_engine_pool(e));
    kv_seq_release(&b, kv_engine_pool(e));
    free(buf);
    free(la);
    free(lb);
    kv_engine_free(e);
}

static double mean_err(const float *ref, kv_cache_dtype dt)
{
    kv_engine *e = make(dt, 0, 0);
    float *lg = prefill_all(e);
    double s = 0;
    size_t n = (size_t)N_TOK * (size_t)g_vocab;
    for (size_t i = 0; i < n; i++)
        s += fabs((double)lg[i] - (double)ref[i]);
    free(lg);
    kv_engine_free(e);
    return s / (double)n;
}

int main(void)
{
    const char *dir = kv_test_models_dir();
    if (!dir) {
        fprintf(stderr, "shared models not found: skipped\n");
        return 77;
    }
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/stories260K", dir);
    kv_model *m = NULL;
    kv_err err;
    if (kv_model_load(mdir, &m, &err)) {
        fprintf(stderr, "%s: %s: skipped\n", mdir, err.msg);
        return 77;
    }
    g_model = m;
    g_vocab = m->cfg.vocab_size;
    uint64_t r = 12345;
    for (int i = 0; i < N_TOK; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        g_tokens[i] = (int32_t)((r >> 33) % (uint64_t)g_vocab);
    }
    kv_engine *f = make(KV_CACHE_F32, 0, 0);
    float *ref = prefill_all(f);
    kv_engine_free(f);
    check_window(ref, 16);
    check_window(ref, 32);
    check_residual_covers(ref);
    check_paths(KV_CACHE_F32);
    check_paths(KV_CACHE_INT8);
    check_paths(KV_CACHE_INT2);
    check_batch();
    check_transfer(KV_CACHE_INT8);
    check_transfer(KV_CACHE_INT2);
    double e8 = mean_err(ref, KV_CACHE_INT8), e4 = mean_err(ref, KV_CACHE_INT4), e2 = mean_err(ref, KV_CACHE_INT2);
    printf("mean |logit error| vs f32 KV: int8 %.3g  int4 %.3g  int2 %.3g\n", e8, e4, e2);
    CHECK_MSG(e8 < e4 && e4 < e2, "quality: errors not ordered: int8 %g int4 %g int2 %g", e8, e4, e2);
    CHECK_MSG(e8 < 0.02, "quality: int8 mean logit error %g", e8);
    /* f16 / bf16 blocks: half the bytes of f32, logits within rounding of f32 KV's. */
    double e16 = mean_err(ref, KV_CACHE_F16), eb16 = mean_err(ref, KV_CACHE_BF16);
    printf("mean |logit error| vs f32 KV: f16 %.3g  bf16 %.3g\n", e16, eb16);
    CHECK_MSG(e16 < e8 && e16 < 1e-3 && eb16 < e4, "quality: f16 %g, bf16 %g", e16, eb16);
    check_paths(KV_CACHE_BF16);
    check_transfer(KV_CACHE_F16);
    free(ref);
    kv_model_free(m);
    return kv_test_result();
}
