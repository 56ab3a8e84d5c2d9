/* Weight kernels (kernels/cpu/wkernels.h), every type under every ISA this CPU runs, against
 * an independent reference: the weight row through kv_type's bit-exact to_f32, the activation
 * as its quantized blocks say (d * q), the dot in double. Error is relative to sum |w_i a_i|
 * (the dot's own rounding scale): f32/f16/bf16 1e-5, block formats 1e-4; NaN never passes.
 * Also: batch and row-split invariance (bit for bit), vec_dot == gemv_rows, no write outside
 * the rows asked for, the activation quantizers, the prefill GEMM, the dispatcher; and the
 * decode attention's per-pair entry (the engine's one-region decode) against the whole. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "kv_test.h"
#include "wkernels.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static float rnd_unit(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; } /* [-1, 1) */

/* A finite half of magnitude about 2^-14 .. 2^-3 (scales as real files have), random sign
 * unless positive. */
static uint16_t rnd_half_scale(int positive)
{
    uint16_t exp = (uint16_t)(1 + rnd() % 12), mant = (uint16_t)(rnd() & 0x3ff);
    uint16_t sign = positive ? 0 : (uint16_t)((rnd() & 1) << 15);
    return (uint16_t)(sign | exp << 10 | mant);
}

static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* n_blocks random blocks of type t with sane scale fields. */
static void fill_weights(kv_type t, uint8_t *w, size_t n_elems)
{
    const struct kv_type_traits *tr = kv_type_traits(t);
    size_t nb = n_elems / tr->block_elems, bb = tr->block_bytes;
    for (size_t i = 0; i < nb * bb; i++)
        w[i] = (uint8_t)rnd();
    for (size_t i = 0; i < nb; i++) {
        uint8_t *b = w + i * bb;
        switch (t) {
        case KV_TYPE_F32: {
            float f = rnd_unit();
            memcpy(b, &f, 4);
            break;
        }
        case KV_TYPE_F16: put_u16(b, (uint16_t)((rnd() & 0x8000) | (uint16_t)(8 + rnd() % 8) << 10 | (rnd() & 0x3ff))); break;
        case KV_TYPE_BF16: put_u16(b, (uint16_t)((rnd() & 0x8000) | (uint16_t)(118 + rnd() % 10) << 7 | (rnd() & 0x7f))); break;
        case KV_TYPE_Q8_0:
        case KV_TYPE_Q4_0:
        case KV_TYPE_Q5_0: put_u16(b, rnd_half_scale(0)); break;
        case KV_TYPE_Q4_1:
        case KV_TYPE_Q5_1:
            put_u16(b, rnd_half_scale(1));
            put_u16(b + 2, rnd_half_scale(0));
            break;
        case KV_TYPE_Q4_K:
        case KV_TYPE_Q5_K:
            put_u16(b, rnd_half_scale(1));
            put_u16(b + 2, rnd_half_scale(1));
            break;
        case KV_TYPE_Q6_K: put_u16(b + 208, rnd_half_scale(0)); break;
        default: break;
        }
    }
}

static void fill_acts(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = rnd_unit() * (i % 97 == 5 ? 8.0f : 1.0f); /* outliers: blocks differ in scale */
}

/* The activation row the kernel sees, as floats: x itself, or d * q per block. */
static void act_to_f32(kc_act act, const uint8_t *a, const float *x, int cols, double *out)
{
    int be = act == KC_ACT_Q8_32 ? 32 : 256, bb = act == KC_ACT_Q8_32 ? KC_Q8_32_BYTES : KC_Q8_K_BYTES;
    int qs_at = act == KC_ACT_Q8_32 ? 8 : 36;
    if (act == KC_ACT_F32) {
        for (int i = 0; i < cols; i++)
            out[i] = x[i];
        return;
    }
    for (int b = 0; b < cols / be; b++) {
        float d;
        memcpy(&d, a + (size_t)b * bb, 4);
        for (int j = 0; j < be; j++)
            out[b * be + j] = (double)d * (int8_t)a[(size_t)b * bb + qs_at + j];
    }
}

/* The reference: sum of w[i] * a[i] in double, and sum |w[i] * a[i]| (the dot's rounding
 * scale) into *scale. */
static double ref_dot(const float *w, const double *a, int cols, double *scale)
{
    double ref = 0;
    *scale = 0;
    for (int i = 0; i < cols; i++) {
        const double p = (double)w[i] * a[i];
        ref += p;
        *scale += fabs(p);
    }
    return ref;
}

typedef struct case_stats {
    double max_err;
    int fails;
} case_stats;

static double tolerance(kv_type t) { return t == KV_TYPE_F32 || t == KV_TYPE_F16 || t == KV_TYPE_BF16 ? 1e-5 : 1e-4; }

/* One (isa, type, rows, cols, n_vec) case. */
static void run_case(const kc_isa *isa, kv_type t, int rows, int cols, int n_vec, case_stats *st)
{
    const kc_wkernel *k = &isa->k[t];
    size_t wrb = (size_t)kv_type_bytes(t, (uint64_t)cols), arb = kc_act_row_bytes(k->act, cols);
    CHECK_MSG(wrb && arb, "%s %s cols %d", isa->name, kv_type_name(t), cols);
    if (!wrb || !arb)
        return;
    uint8_t *w = malloc(wrb * (size_t)rows), *act = malloc(arb * (size_t)n_vec);
    float *x = malloc(sizeof(float) * (size_t)cols * (size_t)n_vec), *wf = malloc(sizeof(float) * (size_t)cols);
    double *af = malloc(sizeof(double) * (size_t)cols * (size_t)n_vec);
    size_t ldy = (size_t)rows + 3;
    float *y = malloc(sizeof(float) * ldy * (size_t)n_vec), *y2 = malloc(sizeof(float) * ldy * (size_t)n_vec);
    fill_weights(t, w, (size_t)rows * (size_t)cols);
    fill_acts(x, cols * n_vec);
    if (n_vec > 2)
        memset(x + cols, 0, sizeof(float) * (size_t)cols); /* an all-zero vector: d = 0 */
    for (int v = 0; v < n_vec; v++) {
        k->quantize_act(act + (size_t)v * arb, x + (size_t)v * cols, cols);
        act_to_f32(k->act, act + (size_t)v * arb, x + (size_t)v * cols, cols, af + (size_t)v * cols);
    }
    const float sentinel = -12345.5f;
    for (size_t i = 0; i < ldy * (size_t)n_vec; i++)
        y[i] = y2[i] = sentinel;
    k->gemv_rows(y, ldy, w, wrb, 0, rows, act, arb, n_vec, cols);
    /* the same rows split in two ranges, one vector at a time */
    int split = rows / 2 + 1;
    for (int v = 0; v < n_vec; v++) {
        k->gemv_rows(y2 + (size_t)v * ldy, ldy, w, wrb, 0, split < rows ? split : rows, act + (size_t)v * arb, arb, 1, cols);
        if (split < rows)
            k->gemv_rows(y2 + (size_t)v * ldy, ldy, w, wrb, split, rows, act + (size_t)v * arb, arb, 1, cols);
    }
    for (int r = 0; r < rows; r++) {
        kv_type_traits(t)->to_f32(w + (size_t)r * wrb, wf, (size_t)cols);
        for (int v = 0; v < n_vec; v++) {
            double scale, ref = ref_dot(wf, af + (size_t)v * cols, cols, &scale);
            float got = y[(size_t)v * ldy + (size_t)r];
            double err = fabs((double)got - ref) / (scale > 0 ? scale : DBL_MIN);
            if (got == 0.0f && ref == 0.0)
                err = 0;
            if (err > st->max_err || isnan(err))
                st->max_err = err;
            if (!(err <= tolerance(t)) && st->fails++ < 3)
                fprintf(stderr, "  %s %s %dx%d n_vec %d: y[%d][%d] = %.9g, reference %.9g (rel err %.3g)\n", isa->name,
                        kv_type_name(t), rows, cols, n_vec, v, r, (double)got, ref, err);
            float again = y2[(size_t)v * ldy + (size_t)r];
            CHECK_MSG(!memcmp(&got, &again, sizeof got), "%s %s %dx%d: y[%d][%d] %.9g batched, %.9g alone", isa->name,
                      kv_type_name(t), rows, cols, v, r, (double)got, (double)again);
            if (r == rows - 1 && v == n_vec - 1) {
                float dot = k->vec_dot(w + (size_t)r * wrb, act + (size_t)v * arb, cols);
                CHECK_MSG(!memcmp(&got, &dot, sizeof got), "%s %s: vec_dot %.9g, gemv %.9g", isa->name,
                          kv_type_name(t), (double)dot, (double)got);
            }
        }
        for (int v = 0; v < n_vec; v++)
            for (size_t c = (size_t)rows; c < ldy; c++)
                CHECK(y[(size_t)v * ldy + c] == sentinel && y2[(size_t)v * ldy + c] == sentinel);
    }
    free(w);
    free(act);
    free(x);
    free(wf);
    free(af);
    free(y);
    free(y2);
}

static void test_kernels(const kc_isa *isa)
{
    static const int rows_list[] = {1, 2, 3, 5, 7, 13};
    for (int t = 0; t < KV_TYPE_COUNT; t++) {
        const kc_wkernel *k = &isa->k[t];
        CHECK_MSG(k->gemv_rows && k->vec_dot && k->quantize_act, "%s %s has no kernels", isa->name,
                  kv_type_name((kv_type)t));
        if (!k->gemv_rows)
            continue;
        int be = (int)kv_type_traits((kv_type)t)->block_elems;
        int blk = be > 1 ? be : (k->act == KC_ACT_F32 ? 1 : 32);
        int cols_list[] = {blk * 1 * (be > 1 ? 1 : 32), blk * 3 * (be > 1 ? 1 : 32), be > 1 ? blk * 5 : 37,
                           be > 1 ? blk * 2 : 301};
        case_stats st = {0, 0};
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++)
                for (int nv = 1; nv <= 11; nv += (nv < 8 ? 1 : 3))
                    run_case(isa, (kv_type)t, rows_list[ri], cols_list[ci], nv, &st);
        /* the GEMM order (> 8 vectors over row tiles) with more rows than a tile */
        run_case(isa, (kv_type)t, 37, cols_list[1], 19, &st);
        fprintf(stderr, "%-6s %-5s max rel err %.3g\n", isa->name, kv_type_name((kv_type)t), st.max_err);
        CHECK_MSG(st.fails == 0, "%s %s: %d values outside %.0e", isa->name, kv_type_name((kv_type)t), st.fails,
                  tolerance((kv_type)t));
    }
}

/* Non-finite activations give NaN, never a finite number. */
static void test_nonfinite(const kc_isa *isa)
{
    const kv_type types[] = {KV_TYPE_F32, KV_TYPE_Q8_0, KV_TYPE_Q4_1, KV_TYPE_Q4_K, KV_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        kv_type t = types[i];
        const kc_wkernel *k = &isa->k[t];
        int cols = 512;
        size_t wrb = (size_t)kv_type_bytes(t, (uint64_t)cols);
        uint8_t *w = malloc(wrb), *act = malloc(kc_act_row_bytes(k->act, cols));
        float x[512];
        fill_weights(t, w, (size_t)cols);
        fill_acts(x, cols);
        x[300] = NAN;
        k->quantize_act(act, x, cols);
        CHECK_MSG(isnan(k->vec_dot(w, act, cols)), "%s %s: NaN input", isa->name, kv_type_name(t));
        x[300] = INFINITY;
        k->quantize_act(act, x, cols);
        float y = k->vec_dot(w, act, cols);
        CHECK_MSG(!isfinite(y), "%s %s: inf input gave %g", isa->name, kv_type_name(t), (double)y);
        free(w);
        free(act);
    }
}

static void test_quantize_act(void)
{
    CHECK_EQ_INT(kc_act_row_bytes(KC_ACT_F32, 7), 28);
    CHECK_EQ_INT(kc_act_row_bytes(KC_ACT_Q8_32, 64), 2 * KC_Q8_32_BYTES);
    CHECK_EQ_INT(kc_act_row_bytes(KC_ACT_Q8_32, 33), 0);
    CHECK_EQ_INT(kc_act_row_bytes(KC_ACT_Q8_K, 512), 2 * KC_Q8_K_BYTES);
    CHECK_EQ_INT(kc_act_row_bytes(KC_ACT_Q8_K, 0), 0);
    const kc_isa *s = kc_isa_by_name("scalar");
    float x[256];
    fill_acts(x, 256);
    x[17] = 2.5f; /* amax = 2.5 unless an outlier is larger */
    uint8_t a[KC_Q8_K_BYTES], b[KC_Q8_32_BYTES * 8];
    s->k[KV_TYPE_Q4_K].quantize_act(a, x, 256);
    s->k[KV_TYPE_Q4_0].quantize_act(b, x, 256);
    float d;
    memcpy(&d, a, 4);
    int maxq = 0;
    for (int g = 0; g < 16; g++) {
        int16_t bs, sum = 0;
        memcpy(&bs, a + 4 + 2 * g, 2);
        for (int j = 0; j < 16; j++) {
            int8_t q = (int8_t)a[36 + 16 * g + j];
            sum = (int16_t)(sum + q);
            maxq = abs(q) > maxq ? abs(q) : maxq;
            CHECK(fabsf(q * d - x[16 * g + j]) <= d * 0.5f * (1 + 1e-6f));
        }
        CHECK_EQ_INT(bs, sum);
    }
    CHECK_EQ_INT(maxq, 127);
    for (int blk = 0; blk < 8; blk++) {
        float db, sb;
        memcpy(&db, b + blk * KC_Q8_32_BYTES, 4);
        memcpy(&sb, b + blk * KC_Q8_32_BYTES + 4, 4);
        int sum = 0;
        for (int j = 0; j < 32; j++)
            sum += (int8_t)b[blk * KC_Q8_32_BYTES + 8 + j];
        CHECK(sb == db * (float)sum);
    }
}

/* The ISA's dequantizers give kv_type_traits' values bit for bit (NaN for NaN). */
static void test_to_f32(const kc_isa *isa)
{
    for (int t = 0; t < KV_TYPE_COUNT; t++) {
        const struct kv_type_traits *tr = kv_type_traits((kv_type)t);
        const size_t n = tr->block_elems > 1 ? 4 * tr->block_elems : 77;
        uint8_t *w = malloc(kv_type_bytes((kv_type)t, n));
        float *got = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
        fill_weights((kv_type)t, w, n);
        isa->k[t].to_f32(w, got, n);
        tr->to_f32(w, want, n);
        CHECK_MSG(!memcmp(got, want, sizeof(float) * n), "%s to_f32 %s differs from the reference", isa->name,
                  tr->name);
        free(w);
        free(got);
        free(want);
    }
}

/* Prefill GEMM against a double-precision dot of the dequantized rows (1e-5 of the sum of
 * |products| for every type, the f32 activations' own rounding), over odd shapes: a row range
 * that starts off a panel and ends in a partial one, token counts that leave partial register
 * tiles and span two token passes, columns that leave a partial panel (and, for f32/f16/bf16,
 * one that is not a multiple of 8). Then chunk invariance: the tokens computed alone equal
 * the same tokens computed among others, bit for bit. */
static void test_wgemm(const kc_isa *isa)
{
    const kv_type types[] = {KV_TYPE_F32, KV_TYPE_F16, KV_TYPE_BF16, KV_TYPE_Q8_0, KV_TYPE_Q4_0,
                             KV_TYPE_Q4_1, KV_TYPE_Q5_1, KV_TYPE_Q4_K, KV_TYPE_Q6_K};
    const int rows = 2 * KC_WGEMM_NR + 5, r0 = 3;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        kv_type t = types[i];
        const size_t be = kv_type_traits(t)->block_elems;
        const int cols = be == 1 ? KC_WGEMM_KB + 45 : be == 32 ? KC_WGEMM_KB + 96 : 2 * KC_WGEMM_KB;
        const int n_tok = i % 2 ? 151 : 9; /* 151: two token passes and a 1-row tile */
        size_t wrb = (size_t)kv_type_bytes(t, (uint64_t)cols), ldy = (size_t)rows + 1;
        uint8_t *w = malloc(wrb * rows);
        float *x = malloc(sizeof(float) * n_tok * cols), *y = malloc(sizeof(float) * ldy * n_tok);
        float *y1 = malloc(sizeof(float) * ldy * n_tok), *scratch = malloc(sizeof(float) * KC_WGEMM_SCRATCH_FLOATS);
        float *wf = malloc(sizeof(float) * cols);
        fill_weights(t, w, (size_t)rows * cols);
        fill_acts(x, n_tok * cols);
        for (size_t j = 0; j < ldy * n_tok; j++)
            y[j] = y1[j] = -1.0f;
        kc_wgemm_rows(isa, y, ldy, w, t, wrb, r0, rows, x, n_tok, cols, scratch);
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            kv_type_traits(t)->to_f32(w + (size_t)r * wrb, wf, cols);
            for (int tk = 0; tk < n_tok; tk++) {
                double ref = 0, scale = 0;
                for (int c = 0; c < cols; c++) {
                    ref += (double)wf[c] * x[tk * cols + c];
                    scale += fabs((double)wf[c] * x[tk * cols + c]);
                }
                float got = y[(size_t)tk * ldy + r];
                if (r < r0 ? got != -1.0f : !(fabs(got - ref) <= 1e-5 * scale))
                    bad++;
            }
        }
        for (int tk = 0; tk < n_tok; tk++)
            bad += y[(size_t)tk * ldy + rows] != -1.0f; /* the column past the last row: untouched */
        CHECK_MSG(bad == 0, "%s wgemm %s %d x %d x %d: %d wrong", isa->name, kv_type_name(t), n_tok, rows - r0, cols,
                  bad);
        /* tokens [2, n_tok) alone, rows [r0 + 5, rows): the same bits */
        kc_wgemm_rows(isa, y1 + 2 * ldy, ldy, w, t, wrb, r0 + 5, rows, x + 2 * cols, n_tok - 2, cols, scratch);
        bad = 0;
        for (int tk = 2; tk < n_tok; tk++)
            for (int r = r0 + 5; r < rows; r++)
                bad += memcmp(&y[(size_t)tk * ldy + r], &y1[(size_t)tk * ldy + r], sizeof(float)) != 0;
        CHECK_MSG(bad == 0, "%s wgemm %s: %d outputs depend on their chunk mates", isa->name, kv_type_name(t), bad);
        free(w);
        free(x);
        free(y);
        free(y1);
        free(scratch);
        free(wf);
    }
}

/* The int8 prefill GEMM (igemm_rows, where an ISA has one) against dequantized weights times
 * the quantized activations, in double (1e-4 of sum |products|), over odd shapes: rows [3, 29)
 * (the last 8-row panel partial), 11 and 151 tokens (partial tiles; two token passes),
 * columns leaving a partial panel; plus an all-zero and a non-finite token. Then chunk
 * invariance: tokens and rows computed alone, the same bits. */
static void test_igemm(const kc_isa *isa)
{
    for (int tc = 0; tc < 2 * KV_TYPE_COUNT; tc++) {
        const int t = tc / 2;
        const kc_wkernel *k = &isa->k[t];
        if (!k->igemm_rows)
            continue;
        const int rows = 29, r0 = 3, cols = KC_WGEMM_KB + 96, n_tok = tc % 2 ? 151 : 11;
        size_t wrb = (size_t)kv_type_bytes((kv_type)t, (uint64_t)cols), arb = kc_act_row_bytes(k->act, cols);
        size_t ldy = (size_t)rows + 1;
        uint8_t *w = malloc(wrb * rows), *act = malloc(arb * n_tok);
        float *x = malloc(sizeof(float) * n_tok * cols), *wf = malloc(sizeof(float) * cols);
        float *y = malloc(sizeof(float) * ldy * n_tok), *y1 = malloc(sizeof(float) * ldy * n_tok);
        double *af = malloc(sizeof(double) * cols);
        fill_weights((kv_type)t, w, (size_t)rows * cols);
        fill_acts(x, n_tok * cols);
        memset(x + cols, 0, sizeof(float) * cols); /* token 1: all zero, d = 0 */
        x[2 * cols + 40] = NAN;                    /* token 2: its second block NaN */
        for (int tk = 0; tk < n_tok; tk++)
            k->quantize_act(act + (size_t)tk * arb, x + (size_t)tk * cols, cols);
        for (size_t j = 0; j < ldy * n_tok; j++)
            y[j] = y1[j] = -1.0f;
        k->igemm_rows(y, ldy, w, wrb, r0, rows, act, arb, n_tok, cols);
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            kv_type_traits((kv_type)t)->to_f32(w + (size_t)r * wrb, wf, cols);
            for (int tk = 0; tk < n_tok; tk++) {
                const float got = y[(size_t)tk * ldy + r];
                if (r < r0) {
                    bad += got != -1.0f;
                    continue;
                }
                if (tk == 2) {
                    bad += !isnan(got);
                    continue;
                }
                act_to_f32(k->act, act + (size_t)tk * arb, NULL, cols, af);
                double scale, ref = ref_dot(wf, af, cols, &scale);
                if (!(fabs(got - ref) <= 1e-4 * scale) && bad++ < 3)
                    fprintf(stderr, "  %s igemm %s: y[%d][%d] = %.9g, reference %.9g\n", isa->name,
                            kv_type_name((kv_type)t), tk, r, (double)got, ref);
            }
        }
        for (int tk = 0; tk < n_tok; tk++)
            bad += y[(size_t)tk * ldy + rows] != -1.0f;
        CHECK_MSG(bad == 0, "%s igemm %s %d x %d x %d: %d wrong", isa->name, kv_type_name((kv_type)t), n_tok,
                  rows - r0, cols, bad);
        k->igemm_rows(y1 + 3 * ldy, ldy, w, wrb, r0 + 5, rows, act + 3 * arb, arb, n_tok - 3, cols);
        bad = 0;
        for (int tk = 3; tk < n_tok; tk++)
            for (int r = r0 + 5; r < rows; r++)
                bad += memcmp(&y[(size_t)tk * ldy + r], &y1[(size_t)tk * ldy + r], sizeof(float)) != 0;
        CHECK_MSG(bad == 0, "%s igemm %s: %d outputs depend on their chunk mates", isa->name,
                  kv_type_name((kv_type)t), bad);
        free(w);
        free(act);
        free(x);
        free(wf);
        free(y);
        free(y1);
        free(af);
    }
}

/* A repacked layout (kc_repack_type) against its stored type st, where the ISA has kernels
 * for it: its GEMV against the stored rows' reference (1e-4 of sum |products|, NaN for a
 * non-finite vector), batch- and group-split-invariant bit for bit, no write past its rows,
 * and the stored type's GEMV bits; its prefill the stored type's bits (the int8 GEMM where it
 * has one, and kc_wgemm_rows over group_to_f32), over 11 and 151 tokens. */
static void test_layout(const kc_isa *isa, kv_type layout, kv_type st)
{
    const kc_wkernel *x8 = &isa->k[layout], *sk = &isa->k[st];
    CHECK(kc_repack_type(isa, st, 36) == st); /* not whole groups */
    if (!x8->gemv_rows) {
        CHECK(kc_repack_type(isa, st, 64) == st);
        fprintf(stderr, "%-6s %s: no kernels (%s stays as stored)\n", isa->name, kv_type_name(layout),
                kv_type_name(st));
        return;
    }
    CHECK(kc_repack_type(isa, st, 64) == layout && kc_row_group(layout) == 8 && kc_row_group(st) == 1);
    CHECK(x8->act == sk->act && x8->group_to_f32 && !x8->to_f32 && !x8->vec_dot && !x8->igemm_rows == !sk->igemm_rows);
    static const int shapes[][2] = {{8, 32}, {16, 96}, {40, 288}, {24, KC_WGEMM_KB + 96}};
    case_stats stats = {0, 0};
    float *scratch = malloc(sizeof(float) * KC_WGEMM_SCRATCH_FLOATS);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int rows = shapes[si][0], cols = shapes[si][1], max_nv = 151;
        const size_t wrb = (size_t)kv_type_bytes(st, (uint64_t)cols), arb = kc_act_row_bytes(x8->act, cols);
        const size_t ldy = (size_t)rows + 3;
        uint8_t *w = malloc(wrb * rows), *wx = malloc(wrb * rows), *act = malloc(arb * max_nv);
        float *x = malloc(sizeof(float) * cols * max_nv), *wf = malloc(sizeof(float) * cols);
        float *y = malloc(sizeof(float) * ldy * max_nv), *y1 = malloc(sizeof(float) * ldy * max_nv);
        double *af = malloc(sizeof(double) * cols);
        fill_weights(st, w, (size_t)rows * cols);
        kc_repack_rows(layout, wx, w, wrb, 0, rows);
        fill_acts(x, cols * max_nv);
        memset(x + cols, 0, sizeof(float) * cols); /* vector 1: all zero, d = 0 */
        x[2 * cols + cols / 2] = NAN;              /* vector 2: one block NaN */
        for (int v = 0; v < max_nv; v++)
            x8->quantize_act(act + (size_t)v * arb, x + (size_t)v * cols, cols);
        for (int nv = 1; nv <= 11; nv += nv < 8 ? 1 : 3) {
            for (size_t i = 0; i < ldy * nv; i++)
                y[i] = y1[i] = -12345.5f;
            x8->gemv_rows(y, ldy, wx, wrb, 0, rows, act, arb, nv, cols);
            for (int v = 0; v < nv; v++) /* one vector at a time, the first group apart */
                for (int r0 = 0; r0 < rows; r0 = r0 ? rows : 8)
                    x8->gemv_rows(y1 + (size_t)v * ldy, ldy, wx, wrb, r0, r0 ? rows : 8, act + (size_t)v * arb, arb,
                                  1, cols);
            for (int r = 0; r < rows; r++) {
                kv_type_traits(st)->to_f32(w + (size_t)r * wrb, wf, (size_t)cols);
                for (int v = 0; v < nv; v++) {
                    const float got = y[(size_t)v * ldy + r];
                    CHECK_MSG(!memcmp(&got, &y1[(size_t)v * ldy + r], sizeof got),
                              "%s %s %dx%d: y[%d][%d] %.9g batched, %.9g alone", isa->name, kv_type_name(layout),
                              rows, cols, v, r, (double)got, (double)y1[(size_t)v * ldy + r]);
                    if (v == 2) {
                        CHECK_MSG(isnan(got), "%s %s: a NaN activation gave %g", isa->name, kv_type_name(layout),
                                  (double)got);
                        continue;
                    }
                    act_to_f32(x8->act, act + (size_t)v * arb, NULL, cols, af);
                    double scale, ref = ref_dot(wf, af, cols, &scale);
                    const double err = scale > 0 ? fabs(got - ref) / scale : fabs(got - ref);
                    stats.max_err = err > stats.max_err ? err : stats.max_err;
                    if (!(err <= 1e-4) && stats.fails++ < 3)
                        fprintf(stderr, "  %s %s %dx%d n_vec %d: y[%d][%d] = %.9g, reference %.9g\n", isa->name,
                                kv_type_name(layout), rows, cols, nv, v, r, (double)got, ref);
                }
            }
            for (int v = 0; v < nv; v++)
                for (size_t c = (size_t)rows; c < ldy; c++)
                    CHECK(y[(size_t)v * ldy + c] == -12345.5f && y1[(size_t)v * ldy + c] == -12345.5f);
            /* the stored rows' GEMV rounds as the layout's: the same bits */
            sk->gemv_rows(y1, ldy, w, wrb, 0, rows, act, arb, nv, cols);
            int bad = 0;
            for (int v = 0; v < nv; v++)
                for (int r = 0; r < rows; r++)
                    bad += memcmp(&y[(size_t)v * ldy + r], &y1[(size_t)v * ldy + r], sizeof(float)) != 0;
            CHECK_MSG(bad == 0, "%s %s %dx%d n_vec %d: %d outputs differ from %s's GEMV", isa->name,
                      kv_type_name(layout), rows, cols, nv, bad, kv_type_name(st));
        }
        for (int n_tok = 11; n_tok <= max_nv; n_tok += max_nv - 11) /* prefill: the stored type's bits */
            for (int path = 0; path < 2; path++) {
                if (path == 0 && !sk->igemm_rows)
                    continue;
                for (size_t i = 0; i < ldy * n_tok; i++)
                    y[i] = y1[i] = -1.0f;
                if (path == 0) {
                    sk->igemm_rows(y, ldy, w, wrb, 8, rows, act, arb, n_tok, cols);
                    x8->igemm_rows(y1, ldy, wx, wrb, 8, rows, act, arb, n_tok, cols);
                } else {
                    kc_wgemm_rows(isa, y, ldy, w, st, wrb, 8, rows, x, n_tok, cols, scratch);
                    kc_wgemm_rows(isa, y1, ldy, wx, layout, wrb, 8, rows, x, n_tok, cols, scratch);
                }
                int bad = 0;
                for (size_t i = 0; i < ldy * n_tok; i++)
                    bad += memcmp(&y[i], &y1[i], sizeof(float)) != 0;
                CHECK_MSG(bad == 0, "%s %s %s %d x %d x %d: %d outputs differ from %s's", isa->name,
                          kv_type_name(layout), path ? "wgemm" : "igemm", n_tok, rows - 8, cols, bad,
                          kv_type_name(st));
            }
        free(w);
        free(wx);
        free(act);
        free(x);
        free(wf);
        free(y);
        free(y1);
        free(af);
    }
    free(scratch);
    fprintf(stderr, "%-6s %-6s max rel err %.3g\n", isa->name, kv_type_name(layout), stats.max_err);
    CHECK_MSG(stats.fails == 0, "%s %s: %d values outside 1e-4", isa->name, kv_type_name(layout), stats.fails);
}

/* The ISA's panel transpose and register tile equal the portable ones on random panels
 * (pack: exactly; tile: within f32 rounding, every mr and a partial nr). */
static void test_wgemm_pieces(const kc_isa *isa)
{
    enum { KBP = 40, LDX = 43, LDY = 21 };
    float rows[KC_WGEMM_NR * KC_WGEMM_KB], p1[KBP * KC_WGEMM_NR], p2[KBP * KC_WGEMM_NR];
    float x[KC_WGEMM_MR * LDX], y1[KC_WGEMM_MR * LDY], y2[KC_WGEMM_MR * LDY];
    fill_acts(rows, KC_WGEMM_NR * KC_WGEMM_KB);
    fill_acts(x, KC_WGEMM_MR * LDX);
    const kc_isa *scalar = kc_isa_by_name("scalar");
    isa->wgemm_pack(p1, rows, KC_WGEMM_KB, KBP);
    scalar->wgemm_pack(p2, rows, KC_WGEMM_KB, KBP);
    CHECK_MSG(!memcmp(p1, p2, sizeof p1), "%s wgemm_pack differs from the scalar transpose", isa->name);
    for (int mr = 1; mr <= KC_WGEMM_MR; mr++)
        for (int acc = 0; acc < 2; acc++) {
            const int nr = mr % 2 ? KC_WGEMM_NR : 11, kb = KBP - 3;
            for (int j = 0; j < KC_WGEMM_MR * LDY; j++)
                y1[j] = y2[j] = (float)j;
            isa->wgemm_micro(y1, LDY, x, LDX, p1, kb, mr, nr, acc);
            scalar->wgemm_micro(y2, LDY, x, LDX, p1, kb, mr, nr, acc);
            int bad = 0;
            for (int j = 0; j < KC_WGEMM_MR * LDY; j++) {
                const int i = j / LDY, r = j % LDY;
                if (i < mr && r < nr)
                    bad += !(fabsf(y1[j] - y2[j]) <= 1e-5f * (1.0f + fabsf(y2[j])));
                else
                    bad += y1[j] != (float)j;
            }
            CHECK_MSG(bad == 0, "%s wgemm_micro mr %d nr %d accumulate %d: %d wrong", isa->name, mr, nr, acc, bad);
        }
}

static void test_dispatch(void)
{
    int n = 0;
    const kc_isa *const *all = kc_isa_all(&n);
    CHECK(n == 3 && !strcmp(all[0]->name, "scalar") && !strcmp(all[n - 1]->name, "avx512"));
    kv_err err = {0};
    const kc_isa *isa = NULL;
    unsetenv("KVSERVE_ISA");
    CHECK(kc_isa_pick(&isa, &err) == KV_OK && isa && kc_isa_runnable(isa));
    /* the pick is the best runnable one: avx512 where the CPU has it, else the avx2 fallback */
    const kc_isa *best = kc_isa_runnable(all[2]) ? all[2] : all[1];
    CHECK_MSG(isa == best, "picked %s", isa ? isa->name : "none");
    fprintf(stderr, "picked ISA: %s (avx512 %s on this CPU)\n", isa ? isa->name : "none",
            kc_isa_runnable(all[2]) ? "runs" : "does not run");
    setenv("KVSERVE_ISA", "scalar", 1);
    CHECK(kc_isa_pick(&isa, &err) == KV_OK && isa == all[0]);
    setenv("KVSERVE_ISA", "avx2", 1);
    CHECK(kc_isa_pick(&isa, &err) == KV_OK && isa == all[1]);
    setenv("KVSERVE_ISA", "avx512", 1);
    int rc = kc_isa_pick(&isa, &err);
    if (kc_isa_runnable(all[2]))
        CHECK(rc == KV_OK && isa == all[2]);
    else
        CHECK(rc == KV_EINVAL && strstr(err.msg, "avx512") && kc_isa_by_name("avx512") == NULL);
    setenv("KVSERVE_ISA", "sse9", 1);
    CHECK(kc_isa_pick(&isa, &err) == KV_EINVAL && strstr(err.msg, "sse9"));
    unsetenv("KVSERVE_ISA");
    /* row split: every row exactly once, slices aligned */
    for (int rows = 0; rows < 70; rows += 7)
        for (int nt = 1; nt <= 5; nt++) {
            int next = 0;
            for (int t = 0; t < nt; t++) {
                int r0, r1;
                kc_split_rows(rows, nt, t, 16, &r0, &r1);
                CHECK(r0 == next && r1 >= r0 && (r0 % 16 == 0 || r0 == rows));
                next = r1;
            }
            CHECK_EQ_INT(next, rows);
        }
}

/* kc_attention_decode_pairs over any split of the (sequence, head) pairs gives
 * kc_attention_decode's bits, and touches no pair outside its range. */
static void test_attention_pairs(void)
{
    enum { N_HEADS = 6, N_KV = 2, HD = 16, BS = 4, N_BLOCKS = 9, N_SEQS = 3 };
    const int row = N_KV * HD;
    kc_paged_kv kv = {NULL, (size_t)2 * BS * row, (size_t)BS * row, BS, N_KV, HD};
    float *pool = malloc(sizeof(float) * kv.block_stride * N_BLOCKS);
    float q[N_SEQS * N_HEADS * HD], whole[N_SEQS * N_HEADS * HD], parts[N_SEQS * N_HEADS * HD];
    float scores[N_BLOCKS * BS];
    fill_acts(pool, (int)(kv.block_stride * N_BLOCKS));
    fill_acts(q, N_SEQS * N_HEADS * HD);
    kv.pool = pool;
    static const int32_t t0[] = {4, 0, 7}, t1[] = {2}, t2[] = {8, 1, 3, 5, 6};
    const int32_t *tables[N_SEQS] = {t0, t1, t2};
    const int32_t lens[N_SEQS] = {10, 1, 17};
    kc_attention_decode(whole, q, &kv, tables, lens, N_SEQS, N_HEADS);
    const int n_pairs = N_SEQS * N_HEADS;
    for (int split = 0; split <= n_pairs; split += 5) {
        for (int i = 0; i < n_pairs * HD; i++)
            parts[i] = -7.0f;
        kc_attention_decode_pairs(parts, q, &kv, tables, lens, N_HEADS, 0, split, scores);
        for (int i = split * HD; i < n_pairs * HD; i++)
            CHECK_MSG(parts[i] == -7.0f, "pairs [0, %d) wrote element %d", split, i);
        kc_attention_decode_pairs(parts, q, &kv, tables, lens, N_HEADS, split, n_pairs, scores);
        CHECK_MSG(!memcmp(parts, whole, sizeof whole), "pairs split at %d differ from kc_attention_decode", split);
    }
    free(pool);
}

int main(void)
{
    test_attention_pairs();
    test_dispatch();
    test_quantize_act();
    int n = 0;
    const kc_isa *const *all = kc_isa_all(&n);
    for (int i = 0; i < n; i++) {
        if (!kc_isa_runnable(all[i])) {
            fprintf(stderr, "%s: not run (this CPU lacks it)\n", all[i]->name);
            continue;
        }
        test_kernels(all[i]);
        test_nonfinite(all[i]);
        test_to_f32(all[i]);
        test_wgemm_pieces(all[i]);
        test_wgemm(all[i]);
        test_igemm(all[i]);
        test_layout(all[i], KV_TYPE_Q4_0_X8, KV_TYPE_Q4_0);
        test_layout(all[i], KV_TYPE_Q4_1_X8, KV_TYPE_Q4_1);
    }
    return kv_test_result();
}
