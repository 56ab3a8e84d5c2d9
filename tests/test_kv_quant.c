/* Quantized KV kernels (kernels/cpu/kv_quant.h) against references written here from the
 * formula: S = half((max - min) / (2^b - 1)), Z = half(round(-min / S)),
 * q = clamp(round(x / S) + Z, 0, 2^b - 1), x' = (q - Z) * S, with a software half rounding
 * (not F16C) and a plain layout walk (not the kernels' offsets); attention over quantized
 * blocks against double-precision attention over the dequantized values. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv_quant.h"
#include "kv_test.h"

/* Round a float to the nearest half (ties to even), as a float; finite, |x| <= 65504. */
static float ref_half(float xf)
{
    double x = xf, ax = fabs(x);
    if (ax == 0)
        return xf;
    if (ax < 0x1p-14) /* subnormal halves: multiples of 2^-24 */
        return (float)(rint(x * 0x1p24) * 0x1p-24);
    int e;
    frexp(ax, &e); /* ax = m * 2^e, m in [0.5, 1): 11 significant bits -> quantum 2^(e - 11) */
    return (float)(rint(ldexp(x, 11 - e)) * ldexp(1.0, e - 11));
}

typedef struct ref_group {
    float s, z;
} ref_group;

static ref_group ref_params(const float *x, size_t stride, int n, int bits)
{
    float qmax = (float)((1 << bits) - 1), mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        mn = fminf(mn, x[(size_t)i * stride]);
        mx = fmaxf(mx, x[(size_t)i * stride]);
    }
    ref_group g;
    if (mx > mn) {
        g.s = ref_half((mx - mn) / qmax);
        g.z = ref_half(rintf(-mn / g.s));
    } else {
        g.s = ref_half(fabsf(mn));
        g.z = g.s == 0 ? 0.0f : mn > 0 ? -1.0f : 1.0f;
    }
    return g;
}

static float ref_value(float x, ref_group g, int bits)
{
    float q = rintf(x / g.s) + g.z, qmax = (float)((1 << bits) - 1);
    q = q < 0 ? 0 : q > qmax ? qmax : q;
    return (q - g.z) * g.s;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) /* uniform [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Rows like real K/V: per-channel offsets and scales (outlier channels), plus noise. */
static void fill_kv(float *x, int rows, int cols, size_t stride, float offset_spread)
{
    for (int c = 0; c < cols; c++) {
        float off = offset_spread * frand(), amp = 0.1f + 2.0f * fabsf(frand());
        for (int t = 0; t < rows; t++)
            x[(size_t)t * stride + (size_t)c] = off + amp * frand();
    }
}

/* The seed: symmetric absmax int8 of the example, rounding as the kernels round. */
static void test_seed_absmax(void)
{
    const float x[8] = {1.2f, -0.5f, -4.3f, 1.2f, -3.1f, 0.8f, 2.4f, 5.4f};
    const int want[8] = {28, -12, -101, 28, -73, 19, 56, 127};
    float amax = 0;
    for (int i = 0; i < 8; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    float scale = amax / 127.0f;
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT((int)kq_round(x[i] / scale), want[i]);
    CHECK(kq_round(2.5f) == 2.0f && kq_round(3.5f) == 4.0f && kq_round(-0.5f) == -0.0f); /* ties to even */

    /* The same values, asymmetric int8 (one group): codes and x' from the formula. */
    uint8_t q[8];
    uint16_t s, z;
    kq_quantize_group(x, 1, 8, 8, q, &s, &z);
    ref_group g = ref_params(x, 1, 8, 8);
    CHECK(kq_f16_to_f32(s) == g.s && kq_f16_to_f32(z) == g.z);
    CHECK_EQ_INT(q[2], 0);   /* the min maps to 0 ... */
    CHECK_EQ_INT(q[7], 255); /* ... and the max to 2^b - 1 */
    for (int i = 0; i < 8; i++) {
        float xd = kq_dequant_value(q[i], kq_f16_to_f32(s), kq_f16_to_f32(z));
        CHECK_MSG(xd == ref_value(x[i], g, 8), "x[%d] = %g: %g, formula %g", i, x[i], xd, ref_value(x[i], g, 8));
        CHECK(fabsf(xd - x[i]) <= 0.5f * g.s * 1.01f + 1e-6f);
    }
}

static void test_half(void)
{
    const float xs[] = {0.0f, 1.0f, -2.5f, 65504.0f, 1e-5f, 6e-8f, 0.1f, 1000.3f, 3.14159f, 2049.0f, 2051.0f};
    for (size_t i = 0; i < sizeof xs / sizeof *xs; i++)
        CHECK_MSG(kq_f16_to_f32(kq_f32_to_f16(xs[i])) == ref_half(xs[i]), "half(%g)", xs[i]);
    for (int i = 0; i < 100000; i++) {
        float x = frand() * powf(2.0f, (float)(i % 40 - 25));
        CHECK_MSG(kq_f16_to_f32(kq_f32_to_f16(x)) == ref_half(x), "half(%.9g)", x);
    }
}

static void test_group_edges(void)
{
    for (int bits = 2; bits <= 8; bits *= 2) {
        uint8_t q[16];
        uint16_t s, z;
        float c[16];
        for (int i = 0; i < 16; i++)
            c[i] = 0.75f;
        kq_quantize_group(c, 1, 16, bits, q, &s, &z); /* constant: exact */
        for (int i = 0; i < 16; i++)
            CHECK(kq_dequant_value(q[i], kq_f16_to_f32(s), kq_f16_to_f32(z)) == 0.75f);
        for (int i = 0; i < 16; i++)
            c[i] = -3.0f;
        kq_quantize_group(c, 1, 16, bits, q, &s, &z);
        CHECK(kq_dequant_value(q[0], kq_f16_to_f32(s), kq_f16_to_f32(z)) == -3.0f);
        memset(c, 0, sizeof c);
        kq_quantize_group(c, 1, 16, bits, q, &s, &z);
        CHECK(kq_dequant_value(q[5], kq_f16_to_f32(s), kq_f16_to_f32(z)) == 0.0f);
        /* All positive, far from zero: Z is a large negative integer, x' still close. */
        for (int i = 0; i < 16; i++)
            c[i] = 100.0f + (float)i;
        kq_quantize_group(c, 1, 16, bits, q, &s, &z);
        float S = kq_f16_to_f32(s);
        for (int i = 0; i < 16; i++)
            CHECK(fabsf(kq_dequant_value(q[i], S, kq_f16_to_f32(z)) - c[i]) <= S * 1.01f);
        /* Huge range: S is capped, x' finite. NaN: codes defined, nothing undefined (UBSan). */
        c[0] = -3e38f;
        c[1] = 3e38f;
        kq_quantize_group(c, 1, 16, bits, q, &s, &z);
        for (int i = 0; i < 16; i++)
            CHECK(isfinite(kq_dequant_value(q[i], kq_f16_to_f32(s), kq_f16_to_f32(z))));
        c[3] = NAN;
        kq_quantize_group(c, 1, 16, bits, q, &s, &z);
        CHECK(q[3] <= (1 << bits) - 1);
    }
}

static void test_pack(void)
{
    for (int bits = 2; bits <= 8; bits *= 2) {
        uint8_t codes[64], packed[64], back[64];
        for (int i = 0; i < 64; i++)
            codes[i] = (uint8_t)((i * 37 + 11) & ((1 << bits) - 1));
        kq_pack(codes, 64, bits, packed);
        kq_unpack(packed, 64, bits, back);
        CHECK(!memcmp(codes, back, 64));
        if (bits == 4)
            CHECK_EQ_INT(packed[0], codes[0] | codes[1] << 4); /* low nibble first */
        if (bits == 2)
            CHECK_EQ_INT(packed[0], codes[0] | codes[1] << 2 | codes[2] << 4 | codes[3] << 6);
    }
}

/* Regions laid end to end with odd gaps, so a kernel that assumes adjacency fails. */
static kq_regions regions_for(const kq_format *f, size_t *total)
{
    kq_regions r;
    size_t off = 3 * 2;
    r.v_codes = off;
    off += kq_v_code_bytes(f) + 6;
    r.k_scales = off;
    off += 2 * kq_k_groups(f) + 2;
    r.v_zeros = off;
    off += 2 * kq_v_groups(f) + 10;
    r.k_codes = off;
    off += kq_k_code_bytes(f) + 4;
    r.v_scales = off;
    off += 2 * kq_v_groups(f);
    r.k_zeros = off + 2;
    off += 2 + 2 * kq_k_groups(f);
    *total = off;
    return r;
}

/* kq_quantize_block + kq_dequantize_block against the formula applied group by group. */
static void test_block_round_trip(const kq_format *f)
{
    kv_err err;
    CHECK(kq_format_check(f, &err) == KV_OK);
    int hd = f->head_dim, bs = f->block_size, row = f->n_kv_heads * hd, G = f->group;
    size_t stride = (size_t)row + 5, bytes;
    kq_regions r = regions_for(f, &bytes);
    uint8_t *blk = malloc(bytes);
    float *k = malloc((size_t)bs * stride * sizeof(float)), *v = malloc((size_t)bs * stride * sizeof(float));
    float *kd = calloc((size_t)bs * stride, sizeof(float)), *vd = calloc((size_t)bs * stride, sizeof(float));
    fill_kv(k, bs, row, stride, 4.0f);
    fill_kv(v, bs, row, stride, 0.5f);
    kq_quantize_block(blk, f, &r, k, v, stride);
    kq_dequantize_block(blk, f, &r, kd, vd, stride);
    int bad_k = 0, bad_v = 0;
    for (int h = 0; h < f->n_kv_heads; h++) {
        if (!f->keys_per_token)
            for (int c = 0; c < hd; c++) {
                const float *col = k + h * hd + c;
                ref_group g = ref_params(col, stride, bs, f->bits);
                for (int t = 0; t < bs; t++)
                    bad_k += kd[(size_t)t * stride + (size_t)(h * hd + c)] != ref_value(col[(size_t)t * stride], g, f->bits);
            }
        for (int t = 0; t < bs; t++)
            for (int g0 = 0; g0 < hd; g0 += G) {
                size_t o = (size_t)t * stride + (size_t)(h * hd + g0);
                ref_group gv = ref_params(v + o, 1, G, f->bits), gk = ref_params(k + o, 1, G, f->bits);
                for (int c = 0; c < G; c++) {
                    bad_v += vd[o + (size_t)c] != ref_value(v[o + (size_t)c], gv, f->bits);
                    if (f->keys_per_token)
                        bad_k += kd[o + (size_t)c] != ref_value(k[o + (size_t)c], gk, f->bits);
                }
            }
    }
    CHECK_MSG(!bad_k && !bad_v, "bits %d hd %d bs %d G %d per-token keys %d: %d K and %d V values differ from the formula",
              f->bits, hd, bs, G, f->keys_per_token, bad_k, bad_v);
    free(blk); free(k); free(v); free(kd); free(vd);
}

/* Attention over n_q quantized blocks + n_fp residual tokens vs double attention over the
 * dequantized values; relative error (max |diff| / max |ref|) < 1e-5. */
static void test_attention(const kq_format *f, int n_q, int n_fp, int n_heads)
{
    int hd = f->head_dim, bs = f->block_size, n_kv = f->n_kv_heads, row = n_kv * hd;
    size_t bytes;
    kq_regions r = regions_for(f, &bytes);
    uint8_t **blocks = malloc((size_t)(n_q > 0 ? n_q : 1) * sizeof *blocks);
    int len = n_q * bs + n_fp;
    float *kall = malloc((size_t)len * (size_t)row * sizeof(float)), *vall = malloc((size_t)len * (size_t)row * sizeof(float));
    fill_kv(kall, len, row, (size_t)row, 3.0f);
    fill_kv(vall, len, row, (size_t)row, 1.0f);
    for (int b = 0; b < n_q; b++) { /* quantize, then the reference sees what the codes say */
        blocks[b] = malloc(bytes);
        float *kb = kall + (size_t)b * (size_t)bs * (size_t)row, *vb = vall + (size_t)b * (size_t)bs * (size_t)row;
        kq_quantize_block(blocks[b], f, &r, kb, vb, (size_t)row);
        kq_dequantize_block(blocks[b], f, &r, kb, vb, (size_t)row);
    }
    /* The residual tokens in an f32 paged pool of 4-token blocks, table reversed. */
    int fp_bs = 4, fp_blocks = (n_fp + fp_bs - 1) / fp_bs + 1;
    float *pool = calloc((size_t)fp_blocks * 2 * (size_t)fp_bs * (size_t)row, sizeof(float));
    int32_t *table = malloc((size_t)fp_blocks * sizeof *table);
    for (int i = 0; i < fp_blocks; i++)
        table[i] = fp_blocks - 1 - i;
    kc_paged_kv fp = {.pool = pool, .block_stride = 2 * (size_t)fp_bs * (size_t)row, .v_offset = (size_t)fp_bs * (size_t)row,
                      .block_size = fp_bs, .n_kv_heads = n_kv, .head_dim = hd};
    int fp_start = 2; /* positions in the pool's numbering */
    for (int t = 0; t < n_fp; t++) {
        int pos = fp_start + t;
        float *dst = pool + (size_t)table[pos / fp_bs] * fp.block_stride + (size_t)(pos % fp_bs) * (size_t)row;
        memcpy(dst, kall + (size_t)(n_q * bs + t) * (size_t)row, (size_t)row * sizeof(float));
        memcpy(dst + fp.v_offset, vall + (size_t)(n_q * bs + t) * (size_t)row, (size_t)row * sizeof(float));
    }
    float *q = malloc((size_t)hd * sizeof(float)), *out = malloc((size_t)hd * sizeof(float));
    float *scores = malloc((size_t)(len > 0 ? len : 1) * sizeof(float));
    double *p = malloc((size_t)len * sizeof(double)), *ref = malloc((size_t)hd * sizeof(double));
    double worst = 0;
    for (int h = 0; h < n_heads; h++) {
        int kvh = h / (n_heads / n_kv);
        for (int c = 0; c < hd; c++)
            q[c] = 1.5f * frand();
        kq_attend_one(out, q, f, &r, kvh, (const void *const *)blocks, n_q, &fp, table, fp_start, n_fp, scores);
        double mx = -INFINITY, sum = 0, amax = 0, dmax = 0;
        for (int t = 0; t < len; t++) {
            double s = 0;
            for (int c = 0; c < hd; c++)
                s += (double)q[c] * kall[(size_t)t * (size_t)row + (size_t)(kvh * hd + c)];
            p[t] = s / sqrt((double)hd);
            mx = fmax(mx, p[t]);
        }
        for (int t = 0; t < len; t++)
            sum += (p[t] = exp(p[t] - mx));
        for (int c = 0; c < hd; c++) {
            ref[c] = 0;
            for (int t = 0; t < len; t++)
                ref[c] += p[t] / sum * vall[(size_t)t * (size_t)row + (size_t)(kvh * hd + c)];
            amax = fmax(amax, fabs(ref[c]));
            dmax = fmax(dmax, fabs(ref[c] - out[c]));
        }
        worst = fmax(worst, dmax / amax);
    }
    CHECK_MSG(worst < 1e-5, "bits %d hd %d bs %d G %d per-token keys %d, %d blocks + %d residual: rel. err %.3g",
              f->bits, hd, bs, f->group, f->keys_per_token, n_q, n_fp, worst);
    for (int b = 0; b < n_q; b++)
        free(blocks[b]);
    free(blocks); free(kall); free(vall); free(pool); free(table); free(q); free(out); free(scores); free(p); free(ref);
}

static void test_refusals(void)
{
    kv_err err;
    struct {
        kq_format f;
        const char *why; /* a word the message must carry */
    } bad[] = {
        {{3, 16, 2, 64, 32, 0}, "bits"},
        {{4, 16, 2, 7, 7, 0}, "multiple of 2"},   /* odd head_dim: no even group divides it */
        {{2, 16, 2, 12, 6, 0}, "multiple of 4"},  /* int2 groups pack 4 codes a byte */
        {{4, 16, 2, 64, 48, 0}, "divide"},        /* 48 does not divide 64 */
        {{8, 16, 2, 64, 128, 0}, "divide"},       /* group > head_dim */
        {{2, 6, 2, 64, 32, 0}, "block size 6"},   /* int2 blocks: a multiple of 4 tokens */
        {{4, 16, 0, 64, 32, 0}, "heads"},
        {{8, 16, 2, 64, 0, 0}, "group of 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = 0;
        CHECK_EQ_INT(kq_format_check(&bad[i].f, &err), KV_EINVAL);
        CHECK_MSG(strstr(err.msg, bad[i].why) != NULL, "case %zu: '%s' lacks '%s'", i, err.msg, bad[i].why);
    }
    kq_format ok = {8, 16, 2, 7, 7, 0}; /* int8 packs one a byte: an odd group is fine */
    CHECK_EQ_INT(kq_format_check(&ok, &err), KV_OK);
}

int main(void)
{
    test_seed_absmax();
    test_half();
    test_group_edges();
    test_pack();
    test_refusals();
    const int bits_list[] = {8, 4, 2};
    for (int bi = 0; bi < 3; bi++)
        for (int kpt = 0; kpt <= 1; kpt++) {
            int b = bits_list[bi];
            kq_format shapes[] = {
                {b, 16, 3, 64, 32, kpt},  /* SmolLM2 */
                {b, 16, 4, 8, 8, kpt},    /* stories260K */
                {b, 64, 2, 128, 64, kpt}, /* runs of 32 within a group and within a block */
                {b, 8, 1, 96, 16, kpt},
                {b, 4 * (8 / b), 2, 40, 8, kpt},
            };
            for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
                test_block_round_trip(&shapes[s]);
                test_attention(&shapes[s], 3, 5, 2 * shapes[s].n_kv_heads);
                test_attention(&shapes[s], 1, 0, shapes[s].n_kv_heads);
                test_attention(&shapes[s], 0, 3, shapes[s].n_kv_heads);
            }
        }
    return kv_test_result();
}
