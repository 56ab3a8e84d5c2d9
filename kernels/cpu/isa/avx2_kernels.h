/* The AVX2 kernels (ggml's AVX2 vec_dot structure: maddubs of unsigned weight bytes by
 * signed activation bytes, madd into int32 lanes, one float FMA per block; weight-only work,
 * nibble unpacking and scales, once per block in *_unpack before the block meets up to 8
 * vectors). Included by avx2.c (-mavx2 -mfma -mf16c) and by avx512.c, which compiles the
 * same kernels with AVX-512 registers and, with AVX512-VNNI, one vpdpbusd in dot_us8. */
#ifndef KV_CPU_AVX2_KERNELS_H
#define KV_CPU_AVX2_KERNELS_H

#include <immintrin.h>

#include "gemv_driver.h"
#include "isa_internal.h"
#include "simd.h"

#define KC_ACC __m256
#define kc_acc_zero() _mm256_setzero_ps()
#define kc_acc_hsum(a) hsum8(a)

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* out[j] lane i = in[i] lane j: an 8 x 8 transpose of 32-bit lanes (the prefill GEMM's panel
 * packing, and the int8 GEMM's row interleave, which moves 4-byte groups as floats). */
KC_ALWAYS_INLINE void kc_transpose8x8(const __m256 in[8], __m256 out[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(in[i], in[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(in[i], in[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int j = 0; j < 4; j++) {
        out[j] = _mm256_permute2f128_ps(s[j], s[j + 4], 0x20);
        out[j + 4] = _mm256_permute2f128_ps(s[j], s[j + 4], 0x31);
    }
}

static inline float half(const uint8_t *p) { return _cvtsh_ss(kc_load_u16(p)); }

static inline __m256i load256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
static inline __m128i load128(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)(const void *)p); }

/* 32 nibbles -> 32 bytes: the 16 low nibbles first, then the 16 high ones (ggml's order); one
 * broadcast load and one variable shift. */
static inline __m256i nibbles_32(const uint8_t *p)
{
    const __m256i b = _mm256_broadcastsi128_si256(load128(p));
    return _mm256_and_si256(_mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 32 bytes of 0x00 / 0xFF. */
static inline __m256i bytes_from_bits_32(const uint8_t *p)
{
    const uint32_t x32 = kc_load_u32(p);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* int32 lanes of sum(u8 * s8) over groups of 4 bytes. */
static inline __m256i dot_us8(__m256i u, __m256i s)
{
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

static inline float no_tail(const uint8_t *w, const uint8_t *a, int from, int cols) { return 0.0f; }

/* ---- f32 / f16 / bf16 weights, f32 activations: 8 elements per "block" ---- */

typedef struct { __m256 w; } f32_wblk, f16_wblk, bf16_wblk;

KC_ALWAYS_INLINE __m256 fdot(const f32_wblk *u, const uint8_t *a, __m256 acc)
{
    return _mm256_fmadd_ps(u->w, _mm256_loadu_ps((const float *)(const void *)a), acc);
}
#define f32_dot fdot
#define f16_dot fdot
#define bf16_dot fdot

KC_ALWAYS_INLINE void f32_unpack(f32_wblk *u, const uint8_t *p) { u->w = _mm256_loadu_ps((const float *)(const void *)p); }
KC_ALWAYS_INLINE void f16_unpack(f16_wblk *u, const uint8_t *p) { u->w = kc_halves8_to_f32(p, 0); }
KC_ALWAYS_INLINE void bf16_unpack(bf16_wblk *u, const uint8_t *p) { u->w = kc_halves8_to_f32(p, 1); }

static inline float f32_tail(const uint8_t *w, const uint8_t *a, int from, int cols)
{
    float s = 0.0f;
    for (int i = from; i < cols; i++)
        s += kc_load_f32(w + 4 * i) * kc_load_f32(a + 4 * i);
    return s;
}
static inline float f16_tail(const uint8_t *w, const uint8_t *a, int from, int cols)
{
    float s = 0.0f;
    for (int i = from; i < cols; i++)
        s += half(w + 2 * i) * kc_load_f32(a + 4 * i);
    return s;
}
static inline float bf16_tail(const uint8_t *w, const uint8_t *a, int from, int cols)
{
    float s = 0.0f;
    for (int i = from; i < cols; i++)
        s += kc_bf16_to_f32(kc_load_u16(w + 2 * i)) * kc_load_f32(a + 4 * i);
    return s;
}

KC_DEFINE_GEMV(f32, 8, 32, 32)
KC_DEFINE_GEMV(f16, 8, 16, 32)
KC_DEFINE_GEMV(bf16, 8, 16, 32)

/* ---- the 32-blocks: q8_0 (signed q), q4_1 / q5_1 (unsigned q and a min m), q4_0 / q5_0
 * (unsigned q with the min -8 d / -16 d: the integer dot then needs no sign trick) ----
 * Their own drivers, not KC_DEFINE_GEMV: the float work of a block (its fp16 scales and the
 * activation's d, s) is done for several (row, vector) pairs in one vector, not per pair with
 * scalar conversions. q8_0 (KC_DEFINE_GEMV_Q8_0): a pair vector's lanes (2k, 2k+1) hold
 * (d_w * d_a, 0) of pair k, and d_w * d_a is broadcast from its lane into the pair's FMA over
 * the block's 8 integer lanes. The formats with a min (KC_DEFINE_GEMV_Q32_LANES): one lane
 * per pair, as their repacked layouts. Every lane sees the same operations in the same order
 * whichever pairs share its vector, so each y[v][r] is the same for any grouping of rows and
 * vectors (batch-invariant, as wkernels.h promises). */

/* A block's weight bytes as signed q (q8_0) or unsigned q (the others), and |q| for q8_0's
 * sign trick (maddubs wants an unsigned operand). */
typedef struct { __m256i q, aq; } q32_w;

KC_ALWAYS_INLINE q32_w q8_0_w(const uint8_t *p)
{
    const __m256i q = load256(p + 2);
    return (q32_w){q, _mm256_sign_epi8(q, q)};
}
KC_ALWAYS_INLINE q32_w q4_0_w(const uint8_t *p) { return (q32_w){nibbles_32(p + 2), _mm256_setzero_si256()}; }
KC_ALWAYS_INLINE q32_w q5_0_w(const uint8_t *p)
{
    const __m256i hi = _mm256_and_si256(bytes_from_bits_32(p + 2), _mm256_set1_epi8(0x10));
    return (q32_w){_mm256_or_si256(nibbles_32(p + 6), hi), _mm256_setzero_si256()};
}
KC_ALWAYS_INLINE q32_w q4_1_w(const uint8_t *p) { return (q32_w){nibbles_32(p + 4), _mm256_setzero_si256()}; }
KC_ALWAYS_INLINE q32_w q5_1_w(const uint8_t *p)
{
    const __m256i hi = _mm256_and_si256(bytes_from_bits_32(p + 4), _mm256_set1_epi8(0x10));
    return (q32_w){_mm256_or_si256(nibbles_32(p + 8), hi), _mm256_setzero_si256()};
}

/* A q8_0 block's integer dot with an activation block's qs (the sign trick), as floats. */
KC_ALWAYS_INLINE __m256 q8_0_idot(q32_w u, const uint8_t *a)
{
    return _mm256_cvtepi32_ps(dot_us8(u.aq, _mm256_sign_epi8(load256(a + KC_Q8_32_QS), u.q)));
}

static inline double q32_load_pair(const uint8_t *a) /* an activation block's (d, s), bits only */
{
    double v;
    memcpy(&v, a, sizeof v);
    return v;
}

/* Rows [0, R) of w against vectors [0, NV) of a: (R, NV) in (R1,1), (2,2), (1,1..8). Pair
 * k = v * R + r sits in pair vector k / 4, lanes 2 (k % 4) and 2 (k % 4) + 1. */
#define KC_DEFINE_GEMV_Q8_0(R1)                                                                                     \
    KC_ALWAYS_INLINE void q8_0_tile(float *y, size_t ldy, const uint8_t *w, size_t wrb, const uint8_t *a,           \
                                    size_t arb, int cols, const int R, const int NV)                                \
    {                                                                                                               \
        const int NP = (R * NV + 3) / 4; /* pair vectors */                                                         \
        __m256 acc[4][8];                                                                                           \
        for (int r = 0; r < R; r++)                                                                                 \
            for (int v = 0; v < NV; v++)                                                                            \
                acc[r][v] = _mm256_setzero_ps();                                                                    \
        const int nb = cols / 32;                                                                                   \
        for (int b = 0; b < nb; b++) {                                                                              \
            const uint8_t *wb = w + (size_t)b * 34, *ab = a + (size_t)b * KC_Q8_32_BYTES;                           \
            KC_PREFETCH_ROWS(wb, wrb, R, (size_t)b * 34, 34);                                                       \
            __m256 prod[2];                                                                                         \
            for (int g = 0; g < NP; g++) {                                                                          \
                int rk[4], vk[4];                                                                                   \
                for (int i = 0; i < 4; i++) {                                                                       \
                    int k = 4 * g + i < R * NV ? 4 * g + i : 4 * g; /* unused lanes repeat lane 0 */                \
                    rk[i] = k % R;                                                                                  \
                    vk[i] = k / R;                                                                                  \
                }                                                                                                   \
                /* each pair's fp16 d as the low half of 32 bits: (d, 0) after cvtph */                            \
                const __m256 dm = _mm256_cvtph_ps(                                                                  \
                    _mm_setr_epi32(kc_load_u16(wb + (size_t)rk[0] * wrb), kc_load_u16(wb + (size_t)rk[1] * wrb),    \
                                   kc_load_u16(wb + (size_t)rk[2] * wrb), kc_load_u16(wb + (size_t)rk[3] * wrb)));  \
                const __m256 ds =                                                                                   \
                    NV == 1 ? _mm256_castpd_ps(_mm256_set1_pd(q32_load_pair(ab)))                                   \
                            : _mm256_castpd_ps(_mm256_setr_pd(                                                      \
                                  q32_load_pair(ab + (size_t)vk[0] * arb), q32_load_pair(ab + (size_t)vk[1] * arb), \
                                  q32_load_pair(ab + (size_t)vk[2] * arb), q32_load_pair(ab + (size_t)vk[3] * arb))); \
                prod[g] = _mm256_mul_ps(dm, ds);                                                                    \
            }                                                                                                       \
            for (int r = 0; r < R; r++) {                                                                           \
                const q32_w u = q8_0_w(wb + (size_t)r * wrb);                                                       \
                for (int v = 0; v < NV; v++) {                                                                      \
                    const int k = v * R + r;                                                                        \
                    const __m256 d = _mm256_permutevar8x32_ps(prod[k / 4], _mm256_set1_epi32(2 * (k % 4)));         \
                    acc[r][v] = _mm256_fmadd_ps(d, q8_0_idot(u, ab + (size_t)v * arb), acc[r][v]);                  \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
        for (int r = 0; r < R; r++)                                                                                 \
            for (int v = 0; v < NV; v++)                                                                            \
                y[(size_t)v * ldy + (size_t)r] = hsum8(acc[r][v]);                                                  \
    }                                                                                                               \
    /* KC_DEFINE_GEMV's row and vector grouping, over this tile */                                                  \
    KC_DEFINE_GEMV_LOOPS(q8_0, R1)

/* q8_0 decodes one row at a time: its lone-vector GEMV streamed 20-40 % more bytes per second
 * than 4 rows at a time on SmolLM2's shapes (kv-bench-wkernels, Zen 3, 1 and 2 threads;
 * the same at TinyLlama's), the 4-bit formats did not. */
KC_DEFINE_GEMV_Q8_0(1)

/* Exact int32 totals of 8 pairs' 8-lane block dots: pair k's in lane k. */
KC_ALWAYS_INLINE __m256i pair_totals(const __m256i d[8])
{
    const __m256i t01 = _mm256_hadd_epi32(d[0], d[1]), t23 = _mm256_hadd_epi32(d[2], d[3]);
    const __m256i t45 = _mm256_hadd_epi32(d[4], d[5]), t67 = _mm256_hadd_epi32(d[6], d[7]);
    const __m256i u0 = _mm256_hadd_epi32(t01, t23), u1 = _mm256_hadd_epi32(t45, t67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

/* The formats with a min (q4_0 / q5_0: MIN * d; q4_1 / q5_1: their m) round as their repacked
 * layouts do (avx2_x8.h), so that a matrix gives the same bits repacked or as stored (the
 * engine repacks only what it maps from the file): per (row, vector) pair, one float lane,
 * and per block in column order
 *     acc = fma(d_w * d_a, (float)exact_dot, acc);  accm = fma(mn_w, s_a, accm)
 * (mn = d for q4_0 / q5_0, m for q4_1 / q5_1), then y = fma(f, accm, acc), f = MIN or 1. The
 * block's integer dot is summed exactly first (pair_totals), so the lanes' grouping of the
 * columns does not show. Pair k = v * R + r is lane k. */
#define KC_DEFINE_GEMV_Q32_LANES(FMT, WB, MIN)                                                                      \
    KC_ALWAYS_INLINE void FMT##_tile(float *y, size_t ldy, const uint8_t *w, size_t wrb, const uint8_t *a,          \
                                     size_t arb, int cols, const int R, const int NV)                               \
    {                                                                                                               \
        int rk[8], vk[8];                                                                                           \
        for (int k = 0; k < 8; k++) { /* unused lanes repeat pair 0 */                                             \
            rk[k] = k < R * NV ? k % R : 0;                                                                         \
            vk[k] = k < R * NV ? k / R : 0;                                                                         \
        }                                                                                                           \
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();                                               \
        const int nb = cols / 32;                                                                                   \
        for (int b = 0; b < nb; b++) {                                                                              \
            const uint8_t *wb = w + (size_t)b * (WB), *ab = a + (size_t)b * KC_Q8_32_BYTES;                         \
            KC_PREFETCH_ROWS(wb, wrb, R, (size_t)b * (WB), (WB));                                                    \
            __m256i dots[8];                                                                                        \
            for (int k = 0; k < 8; k++)                                                                             \
                dots[k] = _mm256_setzero_si256();                                                                   \
            for (int r = 0; r < R; r++) {                                                                           \
                const q32_w u = FMT##_w(wb + (size_t)r * wrb);                                                      \
                for (int v = 0; v < NV; v++)                                                                        \
                    dots[v * R + r] = dot_us8(u.q, load256(ab + (size_t)v * arb + KC_Q8_32_QS));                    \
            }                                                                                                       \
            const __m256 tot = _mm256_cvtepi32_ps(pair_totals(dots));                                               \
            short dh[8], mh[8];                                                                                     \
            float da[8], sa[8];                                                                                     \
            for (int k = 0; k < 8; k++) {                                                                           \
                dh[k] = (short)kc_load_u16(wb + (size_t)rk[k] * wrb);                                               \
                mh[k] = (short)kc_load_u16(wb + (size_t)rk[k] * wrb + 2);                                           \
                da[k] = kc_load_f32(ab + (size_t)vk[k] * arb);                                                      \
                sa[k] = kc_load_f32(ab + (size_t)vk[k] * arb + KC_Q8_32_S);                                         \
            }                                                                                                       \
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)dh));                 \
            const __m256 mn = (MIN) == 1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)mh)) : dw; \
            acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_loadu_ps(da)), tot, acc);                                \
            accm = _mm256_fmadd_ps(mn, _mm256_loadu_ps(sa), accm);                                                  \
        }                                                                                                           \
        float out[8];                                                                                               \
        _mm256_storeu_ps(out, _mm256_fmadd_ps(_mm256_set1_ps((MIN) == 1 ? 1.0f : (float)(MIN)), accm, acc));       \
        for (int k = 0; k < R * NV; k++)                                                                            \
            y[(size_t)vk[k] * ldy + (size_t)rk[k]] = out[k];                                                        \
    }                                                                                                               \
    KC_DEFINE_GEMV_LOOPS(FMT, 4)

KC_DEFINE_GEMV_Q32_LANES(q4_0, 18, -8)
KC_DEFINE_GEMV_Q32_LANES(q5_0, 22, -16)
KC_DEFINE_GEMV_Q32_LANES(q4_1, 20, 1)
KC_DEFINE_GEMV_Q32_LANES(q5_1, 24, 1)

/* ---- q4_k / q5_k: 8 sub-blocks of 32 with 6-bit scales and mins ---- */

typedef struct {
    __m256i q[8];   /* sub-block j's 32 values (0..15, or 0..31 for q5_k) */
    __m256i scales; /* 8 scales as int16, both 128-bit halves */
    __m128i mins;   /* 8 mins as int16 */
    float d, dmin;
} q4_k_wblk, q5_k_wblk;

/* ggml's 12-byte scale packing to 8 scale bytes then 8 min bytes, widened to int16. */
static inline __m256i k4_scales_mins(const uint8_t *p)
{
    const uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
    uint32_t u[4];
    memcpy(u, p, 12);
    u[3] = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
    const uint32_t mins_lo = u[1] & kmask1;
    u[1] = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
    u[2] = mins_lo;
    u[0] &= kmask1;
    return _mm256_cvtepu8_epi16(_mm_set_epi32((int)u[3], (int)u[2], (int)u[1], (int)u[0]));
}

KC_ALWAYS_INLINE void k4_unpack_common(q4_k_wblk *u, const uint8_t *p)
{
    u->d = half(p);
    u->dmin = half(p + 2);
    const __m256i sm = k4_scales_mins(p + 4);
    const __m128i sc = _mm256_castsi256_si128(sm);
    u->scales = _mm256_insertf128_si256(_mm256_castsi128_si256(sc), sc, 1);
    u->mins = _mm256_extracti128_si256(sm, 1);
}

KC_ALWAYS_INLINE void q4_k_unpack(q4_k_wblk *u, const uint8_t *p)
{
    k4_unpack_common(u, p);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int j = 0; j < 4; j++) {
        const __m256i bits = load256(p + 16 + 32 * j);
        u->q[2 * j] = _mm256_and_si256(bits, m4);
        u->q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
    }
}

KC_ALWAYS_INLINE void q5_k_unpack(q5_k_wblk *u, const uint8_t *p)
{
    k4_unpack_common(u, p);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const __m256i hbits = load256(p + 16);
    for (int j = 0; j < 4; j++) {
        const __m256i bits = load256(p + 48 + 32 * j);
        const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4);
        const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4);
        u->q[2 * j] = _mm256_or_si256(_mm256_and_si256(bits, m4), h0);
        u->q[2 * j + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h1);
    }
}

KC_ALWAYS_INLINE __m256 k4_dot(const q4_k_wblk *u, const uint8_t *a, __m256 acc)
{
    const uint8_t *q8 = a + KC_Q8_K_QS;
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 8; j++) {
        /* broadcast int16 scale j: bytes 2j, 2j+1 in every pair */
        const __m256i sc = _mm256_shuffle_epi8(u->scales, _mm256_set1_epi16((short)(((2 * j + 1) << 8) | (2 * j))));
        const __m256i p16 = _mm256_maddubs_epi16(u->q[j], load256(q8 + 32 * j));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p16));
    }
    const __m256i bsums = load256(a + KC_Q8_K_BSUMS);
    const __m128i sub_sums = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
    const __m128i mins_dot = _mm_madd_epi16(u->mins, sub_sums);
    const float da = kc_load_f32(a);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(u->d * da), _mm256_cvtepi32_ps(sumi), acc);
    const __m256 m = _mm256_cvtepi32_ps(_mm256_insertf128_si256(_mm256_setzero_si256(), mins_dot, 0));
    return _mm256_fmadd_ps(_mm256_set1_ps(-u->dmin * da), m, acc);
}
#define q4_k_dot k4_dot
#define q5_k_dot k4_dot
#define q4_k_tail no_tail
#define q5_k_tail no_tail

KC_DEFINE_GEMV(q4_k, 256, 144, KC_Q8_K_BYTES)
KC_DEFINE_GEMV(q5_k, 256, 176, KC_Q8_K_BYTES)

/* ---- q6_k: 16 sub-blocks of 16 with int8 scales, values q - 32 ---- */

typedef struct {
    __m256i q[8];  /* elements 32k..32k+31 as 0..63 */
    __m256i sc[8]; /* int16 scale of each element pair of chunk k (2k for the first 16, then 2k+1) */
    __m256i sc16;  /* the 16 scales as int16 */
    float d;
} q6_k_wblk;

KC_ALWAYS_INLINE void q6_k_unpack(q6_k_wblk *u, const uint8_t *p)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    u->d = half(p + 208);
    for (int h = 0; h < 2; h++) {
        const __m256i b1 = load256(p + 64 * h), b2 = load256(p + 64 * h + 32), hb = load256(p + 128 + 32 * h);
        const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4);
        const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4);
        const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4);
        const __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4);
        u->q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(b1, m4), h0);
        u->q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(b2, m4), h1);
        u->q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), h2);
        u->q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), h3);
    }
    const __m128i scales = load128(p + 192);
    u->sc16 = _mm256_cvtepi8_epi16(scales);
    for (int k = 0; k < 8; k++) {
        const __m128i shuf = _mm_set_epi64x((long long)(0x0101010101010101ull * (uint64_t)(2 * k + 1)),
                                            (long long)(0x0101010101010101ull * (uint64_t)(2 * k)));
        u->sc[k] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuf));
    }
}

KC_ALWAYS_INLINE __m256 q6_k_dot(const q6_k_wblk *u, const uint8_t *a, __m256 acc)
{
    const uint8_t *q8 = a + KC_Q8_K_QS;
    __m256i sumi = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        const __m256i p16 = _mm256_maddubs_epi16(u->q[k], load256(q8 + 32 * k));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(u->sc[k], p16));
    }
    /* the -32 offset: 32 * sum over 16-groups of scale * activation group sum */
    const __m256i off = _mm256_madd_epi16(u->sc16, load256(a + KC_Q8_K_BSUMS));
    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(off, 5));
    return _mm256_fmadd_ps(_mm256_set1_ps(u->d * kc_load_f32(a)), _mm256_cvtepi32_ps(sumi), acc);
}
#define q6_k_tail no_tail

KC_DEFINE_GEMV(q6_k, 256, 210, KC_Q8_K_BYTES)

#endif
