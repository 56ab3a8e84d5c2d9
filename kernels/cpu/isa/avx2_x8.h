/* Kernels for q4_0x8 and q4_1x8, q4_0 / q4_1 rows repacked 8 at a time (layout:
 * kernels/cpu/repack.c). Included by avx2.c and avx512.c after avx2_igemm.h and avx2_wgemm.h.
 *
 * GEMV: a block column of a group is one cvtph for the 8 rows' scales (and one for q4_1's
 * mins) and four 32-byte loads for their nibbles, each split into low and high nibbles: 8
 * vectors, each 4 columns of the 8 rows, which maddubs with the token's 4 activation bytes
 * (broadcast) into the rows' lanes. The 8 int16 partial sums cannot overflow (8 x 2 x 15 x
 * 127 = 30480); one madd and one convert give the block's 8 dot products, scaled by the 8 d's
 * in one multiply. Against the rows as stored (a row at a time: a horizontal sum and scalar
 * scales per row and block) that is a third of the instructions per byte, and one sequential
 * stream per thread instead of four rows' (kv-bench-wkernels, TinyLlama and SmolLM2 shapes,
 * Zen 3, 2 threads, q4_0: 48-58 % -> 84-107 % of the read bandwidth).
 * Each output's float work, per block in column order (mn = -8 d for q4_0, m for q4_1):
 *     acc = fma(d_w * d_a, (float)dot, acc);  accm = fma(mn_w / f, s_a, accm)
 * then y = fma(f, accm, acc), f = -8 (q4_0) or 1 (q4_1): the same whatever the vectors and
 * groups sharing the call (batch-invariant), though not the stored rows' GEMV rounding.
 * Prefill: q4_0x8 takes avx2_igemm.h's int8 GEMM, whose panel is this layout's block column
 * unpacked (no transpose): the same d, m and bytes as q4_0's panel, so the same bits as q4_0's.
 * q4_1x8 takes kc_wgemm_rows over group_to_f32: q4_1's values, so q4_1's bits. */
#ifndef KV_CPU_AVX2_X8_H
#define KV_CPU_AVX2_X8_H

#include "avx2_igemm.h"
#include "avx2_wgemm.h"

#define X8_TOK 4         /* vectors per GEMV tile */
#define X8_PREFETCH 1536 /* bytes ahead in a group's stream */

/* The block column at p (HEAD: 2 for q4_0's d, 4 for q4_1's d and m): the 8 rows' d's, and
 * q[j] = columns 4j..4j+3 (j < 4: low nibbles of load j; j >= 4: high nibbles of load j - 4,
 * columns 16 + 4(j - 4)..). */
KC_ALWAYS_INLINE __m256 x8_unpack(const uint8_t *p, __m256i q[8], const int HEAD)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < 4; k++) {
        const __m256i v = load256(p + 8 * HEAD + 32 * k);
        q[k] = _mm256_and_si256(v, m4);
        q[4 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    return _mm256_cvtph_ps(load128(p));
}

/* y[v * ldy + 0..8) = the group at g (nb block columns) . activation rows v < NV (arb apart). */
KC_ALWAYS_INLINE void x8_tile(float *y, size_t ldy, const uint8_t *g, int nb, const uint8_t *a, size_t arb,
                              const int HEAD, const int NV)
{
    const int column = IG_ROWS * (HEAD + 16);
    const __m256 f = _mm256_set1_ps(HEAD == 2 ? -8.0f : 1.0f);
    __m256 acc[X8_TOK], accm[X8_TOK];
    for (int v = 0; v < NV; v++)
        acc[v] = accm[v] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = g + (size_t)b * (size_t)column;
        /* every line of the block column X8_PREFETCH ahead (144 or 160 bytes touch up to 4) */
        const uintptr_t ahead = (uintptr_t)p + X8_PREFETCH;
        _mm_prefetch((const char *)ahead, _MM_HINT_T0);
        _mm_prefetch((const char *)(ahead + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(ahead + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(ahead + column - 1), _MM_HINT_T0);
        __m256i q[8];
        const __m256 dw = x8_unpack(p, q, HEAD);
        const __m256 mw = HEAD == 2 ? dw : _mm256_cvtph_ps(load128(p + 16));
        for (int v = 0; v < NV; v++) {
            const uint8_t *ab = a + (size_t)v * arb + (size_t)b * KC_Q8_32_BYTES;
            __m256i s = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++)
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(q[j], _mm256_set1_epi32((int)kc_load_u32(
                                                                     ab + KC_Q8_32_QS + 4 * j))));
            const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(s, ones));
            acc[v] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(kc_load_f32(ab))), dot, acc[v]);
            accm[v] = _mm256_fmadd_ps(mw, _mm256_set1_ps(kc_load_f32(ab + KC_Q8_32_S)), accm[v]);
        }
    }
    for (int v = 0; v < NV; v++)
        _mm256_storeu_ps(y + (size_t)v * ldy, _mm256_fmadd_ps(f, accm[v], acc[v]));
}

/* kc_wkernel.gemv_rows over x8_tile: rows [r0, r1) whole groups, vectors X8_TOK at a time. */
KC_ALWAYS_INLINE void x8_gemv_rows(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,
                                   size_t arb, int n_vec, int cols, const int HEAD)
{
    const int nb = cols / 32;
    for (int r = r0; r < r1; r += IG_ROWS) {
        const uint8_t *g = (const uint8_t *)w + (size_t)r * wrb;
        int v = 0;
        for (; v + X8_TOK <= n_vec; v += X8_TOK)
            x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, (const uint8_t *)act + (size_t)v * arb, arb, HEAD, X8_TOK);
        const uint8_t *a = (const uint8_t *)act + (size_t)v * arb;
        switch (n_vec - v) {
        case 1: x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, a, arb, HEAD, 1); break;
        case 2: x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, a, arb, HEAD, 2); break;
        case 3: x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, a, arb, HEAD, 3); break;
        default: break;
        }
    }
}

/* kc_wkernel.group_to_f32: rows[i * ld + 0..n) <- row i of the group at g, columns [k0,
 * k0 + n), as the stored type's to_f32 gives them ((q - 8) d, or q d + m: store_q32). */
KC_ALWAYS_INLINE void x8_group_to_f32(const void *g, size_t wrb, int k0, int n, float *rows, size_t ld,
                                      const int HEAD)
{
    const int column = IG_ROWS * (HEAD + 16);
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *p = (const uint8_t *)g + (size_t)(k0 / 32 + b) * (size_t)column;
        __m256i q[8];
        __m256 in[8], t[8];
        x8_unpack(p, q, HEAD);
        for (int j = 0; j < 8; j++)
            in[j] = _mm256_castsi256_ps(q[j]);
        kc_transpose8x8(in, t); /* lane j of row i's vector: its columns 4j..4j+3 */
        for (int i = 0; i < IG_ROWS; i++) {
            __m256i qi = _mm256_castps_si256(t[i]);
            if (HEAD == 2)
                qi = _mm256_sub_epi8(qi, _mm256_set1_epi8(8));
            store_q32(rows + (size_t)i * ld + 32 * (size_t)b, qi, _mm256_set1_ps(half(p + 2 * i)),
                      _mm256_set1_ps(HEAD == 2 ? 0.0f : half(p + 16 + 2 * i)), HEAD != 2);
        }
    }
    (void)wrb;
}

static void q4_0x8_gemv_rows(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,
                             size_t arb, int n_vec, int cols)
{
    x8_gemv_rows(y, ldy, w, wrb, r0, r1, act, arb, n_vec, cols, 2);
}

static void q4_1x8_gemv_rows(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,
                             size_t arb, int n_vec, int cols)
{
    x8_gemv_rows(y, ldy, w, wrb, r0, r1, act, arb, n_vec, cols, 4);
}

static void q4_0x8_group_to_f32(const void *g, size_t wrb, int k0, int n, float *rows, size_t ld)
{
    x8_group_to_f32(g, wrb, k0, n, rows, ld, 2);
}

static void q4_1x8_group_to_f32(const void *g, size_t wrb, int k0, int n, float *rows, size_t ld)
{
    x8_group_to_f32(g, wrb, k0, n, rows, ld, 4);
}

/* The igemm panel from a q4_0x8 group's block columns b0 .. b0 + nb (rows always whole: nr
 * is 8). */
static void q4_0x8_ig_pack(ig_panel *p, const uint8_t *g, size_t wrb, int nr, int b0, int nb)
{
    (void)wrb;
    (void)nr;
    for (int b = 0; b < nb; b++) {
        const __m256 d = x8_unpack(g + (size_t)(b0 + b) * IG_ROWS * 18, p->q[b], 2);
        _mm256_storeu_ps(p->d[b], d);
        _mm256_storeu_ps(p->m[b], _mm256_mul_ps(d, _mm256_set1_ps(-8.0f)));
    }
}

/* The next group's block columns b0 .. b0 + nb: one run of bytes. */
static void q4_0x8_ig_prefetch(const uint8_t *w, size_t wrb, int r_next, int r_end, int b0, int nb)
{
    if (r_next >= r_end)
        return;
    kc_panel_prefetch pf = {w + (size_t)r_next * wrb + (size_t)b0 * IG_ROWS * 18, 0, (size_t)nb * IG_ROWS * 18, 0, 0,
                            1};
    kc_panel_prefetch_some(&pf, INT_MAX);
}

KC_DEFINE_IGEMM_LOOP(q4_0x8)

#endif
