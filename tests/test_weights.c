/* Weights served in their stored format, and converted at load (--weights-dtype):
 *   quant_golden   kv_quantize_row's blocks equal gguf-py's (ggml's reference quantizers,
 *                  tests/data/weights/make_quant_golden.py) byte for byte, on awkward input;
 *   round_trip     quantize -> dequantize stays within each format's step on random rows,
 *                  and requantizing dequantized blocks gives the same blocks back (what the
 *                  GGUF-direct vs import-then-requantize comparison relies on);
 *   stories260K    every --weights-dtype loads, picks its kernels, and gives logits within
 *                  a per-format bound of the f32 model's (greedy agreement is printed; the
 *                  formats' own rounding may move a near tie). A matrix whose rows are not
 *                  whole blocks (w_down: 172 columns) falls back to f16. Decode is
 *                  batch-invariant in every format (bit-identical logits alone and batched);
 *   gguf_batch     the same for SmolLM2 served from its Q4_1 GGUF.
 * usage: test_weights GOLDEN_FILE [--only NAME] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_kernels.h"
#include "engine.h"
#include "kv_test.h"
#include "kv_type.h"
#include "model.h"
#include "weight_quant.h"

static const kv_type quant_types[] = {KV_TYPE_F32,  KV_TYPE_F16,  KV_TYPE_BF16, KV_TYPE_Q8_0,
                                      KV_TYPE_Q4_0, KV_TYPE_Q4_1, KV_TYPE_Q5_0, KV_TYPE_Q5_1};
#define N_QUANT ((int)(sizeof quant_types / sizeof *quant_types))

static size_t unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && s[0] != '\n' && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1)
            break;
        out[n++] = (unsigned char)v;
        s += 2;
    }
    return n;
}

static void quant_golden(const char *path)
{
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "quant_golden: cannot open %s", path);
    if (!f)
        return;
    static char line[65536];
    static unsigned char in_bytes[16384], want[16384], got[16384];
    static float x[4096];
    size_t n = 0;
    int types_seen = 0;
    while (fgets(line, sizeof line, f)) {
        char *sp = strchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        if (!strcmp(line, "input")) {
            size_t b = unhex(sp + 1, in_bytes, sizeof in_bytes);
            n = b / sizeof(float);
            memcpy(x, in_bytes, n * sizeof(float));
            continue;
        }
        int t;
        kv_err err;
        CHECK_MSG(kv_weights_type_parse(line, &t, &err) == KV_OK, "quant_golden: %s", err.msg);
        size_t wb = unhex(sp + 1, want, sizeof want);
        CHECK_MSG(wb == kv_type_bytes((kv_type)t, n), "quant_golden %s: %zu golden bytes for %zu elements", line, wb, n);
        memset(got, 0xAA, sizeof got);
        CHECK(kv_quantize_row((kv_type)t, x, got, n, &err) == KV_OK);
        size_t first = wb;
        for (size_t i = 0; i < wb; i++)
            if (got[i] != want[i]) {
                first = i;
                break;
            }
        CHECK_MSG(first == wb, "quant_golden %s: expected %02x got %02x at byte %zu", line, want[first], got[first],
                  first);
        types_seen++;
    }
    fclose(f);
    CHECK_EQ_INT(types_seen, N_QUANT - 1); /* every type but f32 */
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float rnd(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) / (float)(1 << 23) - 1.0f;
}

/* The largest error a format allows for an element of a block whose values span [lo, hi]. */
static float step_of(kv_type t, float lo, float hi, float x)
{
    float amax = fmaxf(fabsf(lo), fabsf(hi));
    switch (t) {
    case KV_TYPE_F32: return 0.0f;
    case KV_TYPE_F16: return fabsf(x) * 0x1p-11f + 0x1p-24f;
    case KV_TYPE_BF16: return fabsf(x) * 0x1p-8f;
    case KV_TYPE_Q8_0: return amax / 127.0f * 0.51f + amax * 0x1p-10f;
    case KV_TYPE_Q4_0: return amax / 8.0f * 1.01f + amax * 0x1p-9f;  /* +amax is clamped to code 15 */
    case KV_TYPE_Q5_0: return amax / 16.0f * 1.01f + amax * 0x1p-9f;
    case KV_TYPE_Q4_1: return (hi - lo) / 15.0f * 0.51f + amax * 0x1p-9f;
    case KV_TYPE_Q5_1: return (hi - lo) / 31.0f * 0.51f + amax * 0x1p-9f;
    default: return INFINITY;
    }
}

static void round_trip(void)
{
    enum { COLS = 256, ROWS = 64 };
    static float x[ROWS * COLS], y[ROWS * COLS], z[ROWS * COLS];
    static unsigned char q[ROWS * COLS * 4], q2[ROWS * COLS * 4];
    for (int i = 0; i < ROWS * COLS; i++)
        x[i] = rnd() * (1.0f + (float)(i / COLS)) * (i % 97 == 0 ? 8.0f : 1.0f);
    for (int k = 0; k < N_QUANT; k++) {
        kv_type t = quant_types[k];
        kv_err err;
        size_t n = (size_t)ROWS * COLS, bytes = (size_t)kv_type_bytes(t, n);
        CHECK(kv_quantize_row(t, x, q, n, &err) == KV_OK);
        kv_type_traits(t)->to_f32(q, y, n);
        int bad = 0;
        for (size_t b = 0; b < n; b += 32) {
            float lo = x[b], hi = x[b];
            for (int j = 1; j < 32; j++) {
                lo = fminf(lo, x[b + j]);
                hi = fmaxf(hi, x[b + j]);
            }
            for (int j = 0; j < 32; j++)
                bad += fabsf(y[b + j] - x[b + j]) > step_of(t, lo, hi, x[b + j]);
        }
        CHECK_MSG(bad == 0, "round_trip %s: %d elements beyond the format's step", kv_type_name(t), bad);
        /* Requantizing what the blocks decode to gives the blocks back. */
        CHECK(kv_quantize_row(t, y, q2, n, &err) == KV_OK);
        kv_type_traits(t)->to_f32(q2, z, n);
        CHECK_MSG(!memcmp(q, q2, bytes), "round_trip %s: requantized blocks differ", kv_type_name(t));
        /* Refusals: a partial block, a type without a quantizer. */
        if (kv_type_traits(t)->block_elems > 1)
            CHECK_EQ_INT(kv_quantize_row(t, x, q, 31, &err), KV_EINVAL);
    }
    kv_err err;
    CHECK_EQ_INT(kv_quantize_row(KV_TYPE_Q4_K, x, q, 256, &err), KV_EUNSUPPORTED);
    int t;
    CHECK_EQ_INT(kv_weights_type_parse("q4_k", &t, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_weights_type_parse("q4_1", &t, &err), KV_OK);
    CHECK_EQ_INT(t, KV_TYPE_Q4_1);
}

/* Logits of the first 8 reference positions, all rows, and 48 greedy tokens after them. */
static int run_model(const kv_model *m, const int32_t *ids, float *logits, int32_t *greedy, int n_greedy)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = 2;
    kv_engine *e;
    kv_err err;
    int rc = kv_engine_create(m, &o, &e, &err);
    CHECK_MSG(rc == 0, "engine: %s", err.msg);
    if (rc)
        return rc;
    kv_seq seq = {0};
    const int V = m->cfg.vocab_size;
    rc = kv_engine_prefill(e, &seq, ids, 8, logits, 1, &err);
    CHECK_MSG(rc == 0, "prefill: %s", err.msg);
    int32_t next = kc_argmax(logits + 7 * (size_t)V, V);
    float *row = malloc(sizeof(float) * (size_t)V);
    for (int i = 0; !rc && i < n_greedy; i++) {
        greedy[i] = next;
        rc = kv_engine_decode(e, (kv_seq *const[]){&seq}, &next, 1, row, &err);
        CHECK_MSG(rc == 0, "decode: %s", err.msg);
        next = kc_argmax(row, V);
    }
    free(row);
    kv_seq_release(&seq, kv_engine_pool(e));
    kv_engine_free(e);
    return rc;
}

/* Decode of a sequence batched with others gives the logits it gets alone, bit for bit (the
 * quantized GEMV takes the batch as its vectors; each row must still round alone). */
static void batch_invariant(const kv_model *m, const int32_t *ids, const char *what)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = 2;
    kv_engine *e;
    kv_err err;
    if (kv_engine_create(m, &o, &e, &err)) {
        CHECK_MSG(0, "%s: %s", what, err.msg);
        return;
    }
    const int V = m->cfg.vocab_size;
    kv_seq seqs[3] = {{0}}, solo = {0};
    kv_seq *ptrs[3] = {&seqs[0], &seqs[1], &seqs[2]}, *solo_ptr = &solo;
    float *batch = malloc(sizeof(float) * 3 * (size_t)V), *alone = malloc(sizeof(float) * (size_t)V);
    int ok = 1;
    for (int i = 0; i < 3; i++)
        ok &= kv_engine_prefill(e, &seqs[i], ids, 3 + 2 * i, NULL, 0, &err) == 0;
    ok &= kv_engine_prefill(e, &solo, ids, 3, NULL, 0, &err) == 0;
    int32_t next[3] = {ids[3], ids[5], ids[7]}, solo_next = ids[3];
    int same = 1;
    for (int step = 0; ok && step < 8; step++) {
        ok &= kv_engine_decode(e, ptrs, next, 3, batch, &err) == 0;
        ok &= kv_engine_decode(e, &solo_ptr, &solo_next, 1, alone, &err) == 0;
        same &= !memcmp(batch, alone, sizeof(float) * (size_t)V);
        for (int i = 0; i < 3; i++)
            next[i] = kc_argmax(batch + (size_t)i * (size_t)V, V);
        solo_next = next[0];
    }
    CHECK_MSG(ok, "%s: %s", what, err.msg);
    CHECK_MSG(same, "%s: a sequence's decode logits differ alone and in a batch", what);
    for (int i = 0; i < 3; i++)
        kv_seq_release(&seqs[i], kv_engine_pool(e));
    kv_seq_release(&solo, kv_engine_pool(e));
    free(batch);
    free(alone);
    kv_engine_free(e);
}

/* A model's mapped q4_0 / q4_1 matrices as the CPU engine repacks them (q4_0x8 / q4_1x8,
 * where the ISA has kernels for them) and served as stored (KVSERVE_WEIGHT_REPACK=0):
 * prefill reads the same values (q4_0's int8 panels, q4_1's dequantized ones), so the same
 * logits bit for bit; decode's GEMV rounds its own way, yet the same greedy tokens. */
static void repacked_as_stored(const kv_model *m, const int32_t *ids, const float *logits, const int32_t *greedy,
                               int n_greedy, const char *what)
{
    const size_t n = 8 * (size_t)m->cfg.vocab_size;
    float *stored = malloc(sizeof(float) * n);
    int32_t stored_ids[64];
    setenv("KVSERVE_WEIGHT_REPACK", "0", 1);
    int rc = run_model(m, ids, stored, stored_ids, n_greedy);
    unsetenv("KVSERVE_WEIGHT_REPACK");
    if (rc == 0) {
        CHECK_MSG(!memcmp(stored, logits, sizeof(float) * n), "%s: prefill logits differ repacked and as stored",
                  what);
        CHECK_MSG(!memcmp(stored_ids, greedy, sizeof(int32_t) * (size_t)n_greedy),
                  "%s: greedy tokens differ repacked and as stored", what);
    }
    free(stored);
}

static void stories_every_dtype(const char *models)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/stories260K", models);
    int32_t ids[256];
    if (kv_test_reference_tokens(models, ids, 256) < 8) {
        fprintf(stderr, "stories260K: reference tokens missing, skipped\n");
        return;
    }
    kv_model *ref;
    kv_err err;
    int rc = kv_model_load(dir, &ref, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc)
        return;
    const int V = ref->cfg.vocab_size, N_GREEDY = 48;
    float *want = malloc(sizeof(float) * 8 * (size_t)V), *got = malloc(sizeof(float) * 8 * (size_t)V);
    int32_t want_ids[48], got_ids[48];
    run_model(ref, ids, want, want_ids, N_GREEDY);
    double scale = 0;
    for (int i = 0; i < 8 * V; i++)
        scale = fmax(scale, fabs(want[i]));
    /* Max |logit error| / max |logit| allowed per format: measured on this tiny model
     * (hidden 64: every weight matters), f16 5.8e-4, bf16 3.5e-3, q8_0 1.1e-2, q5_0 8.4e-2,
     * q5_1 8.8e-2, q4_1 0.15, q4_0 0.23, with 2-3x to spare; a broken kernel or layout
     * gives errors of order 1. */
    const double bound[] = {1e-6, 2e-3, 1e-2, 3e-2, 0.5, 0.4, 0.25, 0.25};
    for (int k = 0; k < N_QUANT; k++) {
        kv_type t = quant_types[k];
        kv_model_load_options lo;
        kv_model_load_options_default(&lo);
        lo.weights_type = (int)t;
        kv_model *m;
        rc = kv_model_load_opts(dir, &lo, &m, &err);
        CHECK_MSG(rc == 0, "stories260K %s: %s", kv_type_name(t), err.msg);
        if (rc)
            continue;
        CHECK_MSG(m->layers[0].wq.type == t && m->embed.type == t, "stories260K %s: wq is %s", kv_type_name(t),
                  kv_type_name(m->layers[0].wq.type));
        kv_type down = kv_type_traits(t)->block_elems > 1 ? KV_TYPE_F16 : t; /* 172 columns */
        CHECK_MSG(m->layers[0].w_down.type == down, "stories260K %s: w_down is %s", kv_type_name(t),
                  kv_type_name(m->layers[0].w_down.type));
        CHECK(strstr(m->weight_types, kv_type_name(t)) != NULL);
        if (run_model(m, ids, got, got_ids, N_GREEDY) == 0) {
            double maxerr = 0;
            for (int i = 0; i < 8 * V; i++)
                maxerr = fmax(maxerr, isfinite(got[i]) ? fabs(got[i] - want[i]) : INFINITY);
            int same = 0;
            while (same < N_GREEDY && got_ids[same] == want_ids[same])
                same++;
            fprintf(stderr, "stories260K %-5s (%s): max |logit - f32| / max |logit| = %.2e; greedy equals f32 for %d of %d tokens\n",
                    kv_type_name(t), m->weight_types, maxerr / scale, same, N_GREEDY);
            CHECK_MSG(maxerr / scale <= bound[k], "stories260K %s: logit error %.3e over the bound %.1e",
                      kv_type_name(t), maxerr / scale, bound[k]);
            if (t == KV_TYPE_F32)
                CHECK_MSG(same == N_GREEDY, "stories260K f32 by conversion: greedy differs at %d", same);
            batch_invariant(m, ids, kv_type_name(t));
        }
        kv_model_free(m);
    }
    free(want);
    free(got);
    kv_model_free(ref);
}

/* The same on SmolLM2 served from its GGUF: Q4_1 down projection, whose input each thread
 * quantizes in its own slice; and its mapped Q4_1 matrices repacked (q4_1x8) against the
 * same served as stored. */
static void gguf_batch_invariant(const char *models)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf", models);
    int32_t ids[256];
    if (access(path, R_OK) || kv_test_reference_tokens(models, ids, 256) < 8) {
        fprintf(stderr, "smollm2 batch invariance: model missing, skipped\n");
        return;
    }
    kv_model *m;
    kv_err err;
    int rc = kv_model_load(path, &m, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (!rc) {
        batch_invariant(m, ids, "smollm2 q4_1 gguf");
        const int n_greedy = 16;
        float *logits = malloc(sizeof(float) * 8 * (size_t)m->cfg.vocab_size);
        int32_t greedy[16];
        if (run_model(m, ids, logits, greedy, n_greedy) == 0)
            repacked_as_stored(m, ids, logits, greedy, n_greedy, "smollm2 q4_1 gguf");
        free(logits);
    }
    kv_model_free(m);
}

int main(int argc, char **argv)
{
    const char *golden = argc > 1 ? argv[1] : "tests/data/weights/quant_golden.txt";
    const char *only = argc > 3 && !strcmp(argv[2], "--only") ? argv[3] : NULL;
    if (!only || !strcmp(only, "quant_golden"))
        quant_golden(golden);
    if (!only || !strcmp(only, "round_trip"))
        round_trip();
    const char *models = kv_test_models_dir();
    if (!only || !strcmp(only, "stories260K")) {
        if (models)
            stories_every_dtype(models);
        else
            fprintf(stderr, "stories260K: shared models not found, skipped\n");
    }
    if (models && (!only || !strcmp(only, "gguf_batch")))
        gguf_batch_invariant(models);
    return kv_test_result();
}
