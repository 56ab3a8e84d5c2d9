/* Decode attention over quantized KV blocks (kq_attend_one in kv_quant.h), AVX2/FMA.
 *
 * Codes are unpacked 32 at a time into bytes, widened to floats in registers and used at
 * once; nothing of the context is ever held at full precision beyond those 32 values.
 *   keys per channel: a block's scores are built channel by channel, 8 tokens a vector:
 *     s[t] += (q[c] * S[c]) * (code[c][t] - Z[c]);
 *   keys per token:   s[t] = sum over groups g of S[t][g] * sum_c q[c] * (code[t][c] - Z[t][g]);
 *   values:           out[c] += (p[t] * S[t][g]) * (code[t][c] - Z[t][g]).
 * The residual window's full-precision tokens are read as attention.c reads them. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kv_quant.h"
#include "simd.h"

#define RUN 32

static inline float load_half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

/* 16 codes packed from a byte boundary into out[0..16), one per byte. */
static inline void unpack16(const uint8_t *p, int bits, uint8_t *out)
{
    if (bits == 8) {
        memcpy(out, p, 16);
    } else if (bits == 4) { /* 8 bytes: low nibble first */
        __m128i v = _mm_loadl_epi64((const __m128i *)p), m = _mm_set1_epi8(0x0F);
        __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi8(lo, hi));
    } else { /* 4 bytes: bits 0-1 first */
        uint32_t w;
        memcpy(&w, p, sizeof w);
        __m128i v = _mm_cvtsi32_si128((int)w), m = _mm_set1_epi8(0x03);
        __m128i a0 = _mm_and_si128(v, m), a1 = _mm_and_si128(_mm_srli_epi16(v, 2), m);
        __m128i a2 = _mm_and_si128(_mm_srli_epi16(v, 4), m), a3 = _mm_and_si128(_mm_srli_epi16(v, 6), m);
        _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi16(_mm_unpacklo_epi8(a0, a1), _mm_unpacklo_epi8(a2, a3)));
    }
}

/* n (<= RUN) codes packed from a byte boundary into out[0..n), one per byte. */
static inline void unpack_run(const uint8_t *p, int n, int bits, uint8_t *out)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        unpack16(p + (size_t)i * (size_t)bits / 8, bits, out + i);
    if (i < n)
        kq_unpack(p + (size_t)i * (size_t)bits / 8, n - i, bits, out + i);
}

static inline __m256 codes8_ps(const uint8_t *c)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c)));
}

/* acc[i] += w * (codes[i] - z) for i < n. */
static inline void fma_codes(float *acc, const uint8_t *codes, int n, float w, float z)
{
    __m256 vw = _mm256_set1_ps(w), vz = _mm256_set1_ps(z);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(acc + i,
                         _mm256_fmadd_ps(vw, _mm256_sub_ps(codes8_ps(codes + i), vz), _mm256_loadu_ps(acc + i)));
    for (; i < n; i++)
        acc[i] += w * ((float)codes[i] - z);
}

/* sum_i q[i] * (codes[i] - z) for i < n. */
static inline float dot_codes(const float *q, const uint8_t *codes, int n, float z)
{
    __m256 vz = _mm256_set1_ps(z), s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_sub_ps(codes8_ps(codes + i), vz), s);
    float r = kc_hsum256(s);
    for (; i < n; i++)
        r += q[i] * ((float)codes[i] - z);
    return r;
}

/* Unscaled scores q . k'[t] of a block's tokens, keys grouped per channel. */
static void scores_per_channel(float *s, const float *q, const kq_format *f, const kq_regions *r, int h,
                               const uint8_t *b)
{
    int hd = f->head_dim, bs = f->block_size, bits = f->bits;
    size_t row_bytes = (size_t)bs * (size_t)bits / 8;
    const uint8_t *codes = b + r->k_codes + (size_t)h * (size_t)hd * row_bytes;
    const uint8_t *sp = b + r->k_scales + 2 * (size_t)h * (size_t)hd, *zp = b + r->k_zeros + 2 * (size_t)h * (size_t)hd;
    uint8_t run[RUN];
    for (int t0 = 0; t0 < bs; t0 += RUN) {
        int n = bs - t0 < RUN ? bs - t0 : RUN;
        float acc[RUN] = {0};
        for (int c = 0; c < hd; c++) {
            unpack_run(codes + (size_t)c * row_bytes + (size_t)t0 * (size_t)bits / 8, n, bits, run);
            fma_codes(acc, run, n, q[c] * load_half(sp + 2 * (size_t)c), load_half(zp + 2 * (size_t)c));
        }
        memcpy(s + t0, acc, (size_t)n * sizeof(float));
    }
}

/* Offsets of token t's codes (bytes) and of its first group's parameters (index). */
static inline size_t token_codes(const kq_format *f, int h, int t)
{
    return ((size_t)h * (size_t)f->block_size + (size_t)t) * (size_t)f->head_dim * (size_t)f->bits / 8;
}
static inline size_t token_groups(const kq_format *f, int h, int t)
{
    return ((size_t)h * (size_t)f->block_size + (size_t)t) * (size_t)(f->head_dim / f->group);
}

/* Unscaled scores of a block's tokens, keys grouped per token like values. */
static void scores_per_token(float *s, const float *q, const kq_format *f, const kq_regions *r, int h,
                             const uint8_t *b)
{
    int G = f->group, ng = f->head_dim / G, bits = f->bits;
    uint8_t run[RUN];
    for (int t = 0; t < f->block_size; t++) {
        const uint8_t *codes = b + r->k_codes + token_codes(f, h, t);
        size_t gi = token_groups(f, h, t);
        float acc = 0.0f;
        for (int g = 0; g < ng; g++) {
            float part = 0.0f, z = load_half(b + r->k_zeros + 2 * (gi + (size_t)g));
            for (int c0 = 0; c0 < G; c0 += RUN) {
                int n = G - c0 < RUN ? G - c0 : RUN;
                int c = g * G + c0;
                unpack_run(codes + (size_t)c * (size_t)bits / 8, n, bits, run);
                part += dot_codes(q + c, run, n, z);
            }
            acc += load_half(b + r->k_scales + 2 * (gi + (size_t)g)) * part;
        }
        s[t] = acc;
    }
}

/* out += sum over the block's tokens of p[t] * v'[t]. */
static void accumulate_values(float *out, const float *p, const kq_format *f, const kq_regions *r, int h,
                              const uint8_t *b)
{
    int G = f->group, ng = f->head_dim / G, bits = f->bits;
    uint8_t run[RUN];
    for (int t = 0; t < f->block_size; t++) {
        const uint8_t *codes = b + r->v_codes + token_codes(f, h, t);
        size_t gi = token_groups(f, h, t);
        for (int g = 0; g < ng; g++) {
            float w = p[t] * load_half(b + r->v_scales + 2 * (gi + (size_t)g));
            float z = load_half(b + r->v_zeros + 2 * (gi + (size_t)g));
            for (int c0 = 0; c0 < G; c0 += RUN) {
                int n = G - c0 < RUN ? G - c0 : RUN;
                int c = g * G + c0;
                unpack_run(codes + (size_t)c * (size_t)bits / 8, n, bits, run);
                fma_codes(out + c, run, n, w, z);
            }
        }
    }
}

static inline const float *fp_row(const kc_paged_kv *kv, const int32_t *table, int pos)
{
    return kv->pool + (size_t)table[pos / kv->block_size] * kv->block_stride +
           (size_t)(pos % kv->block_size) * (size_t)(kv->n_kv_heads * kv->head_dim);
}

void kq_attend_one(float *out, const float *q, const kq_format *f, const kq_regions *r, int kv_head,
                   const void *const *blocks, int n_qblocks, const kc_paged_kv *fp, const int32_t *fp_table,
                   int fp_start, int n_fp, float *scores)
{
    int hd = f->head_dim, bs = f->block_size;
    int n_q = n_qblocks * bs, len = n_q + n_fp;
    float scale = 1.0f / sqrtf((float)hd);
    size_t head_off = (size_t)kv_head * (size_t)hd;
    for (int i = 0; i < n_qblocks; i++) {
        if (f->keys_per_token)
            scores_per_token(scores + (size_t)i * (size_t)bs, q, f, r, kv_head, blocks[i]);
        else
            scores_per_channel(scores + (size_t)i * (size_t)bs, q, f, r, kv_head, blocks[i]);
    }
    float maxv = -INFINITY;
    for (int t = 0; t < n_q; t++) {
        scores[t] *= scale;
        if (scores[t] > maxv)
            maxv = scores[t];
    }
    for (int t = 0; t < n_fp; t++) {
        float s = kc_dot(q, fp_row(fp, fp_table, fp_start + t) + head_off, hd) * scale;
        scores[n_q + t] = s;
        if (s > maxv)
            maxv = s;
    }
    float sum = 0.0f;
    for (int t = 0; t < len; t++) {
        scores[t] = expf(scores[t] - maxv);
        sum += scores[t];
    }
    float inv = 1.0f / sum;
    for (int t = 0; t < len; t++)
        scores[t] *= inv;
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int i = 0; i < n_qblocks; i++)
        accumulate_values(out, scores + (size_t)i * (size_t)bs, f, r, kv_head, blocks[i]);
    for (int t = 0; t < n_fp; t++)
        kc_axpy(out, scores[n_q + t], fp_row(fp, fp_table, fp_start + t) + fp->v_offset + head_off, hd);
}
