/* Kernels for q4_0x8, q4_0 rows repacked 8 at a time (layout: kernels/cpu/repack.c).
 * Included by avx2.c and avx512.c after avx2_igemm.h.
 *
 * GEMV: a block column of a group is one cvtph for the 8 rows' scales and four 32-byte loads
 * for their nibbles, each split into low and high nibbles: 8 vectors, each 4 columns of the 8
 * rows, which maddubs with the token's 4 activation bytes (broadcast) into the rows' lanes.
 * The 8 int16 partial sums cannot overflow (8 x 2 x 15 x 127 = 30480); one madd and one
 * convert give the block's 8 dot products, scaled by the 8 d's in one multiply. Against q4_0
 * as stored (a row at a time: a horizontal sum and a scalar scale per row and block) that is
 * a third of the instructions per byte, and one sequential stream per thread instead of four
 * rows' (kv-bench-wkernels, TinyLlama shapes, Zen 3, 2 threads: 8-10 GB/s -> 17-21 GB/s, the
 * machine's read bandwidth).
 * Each output's float work, per block in column order:
 *     acc = fma(d_w * d_a, (float)dot, acc);  accm = fma(d_w, s_a, accm)
 * then y = fma(-8, accm, acc): the same whatever the vectors and groups sharing the call
 * (batch-invariant), though not q4_0's own GEMV rounding.
 * Prefill: the int8 GEMM of avx2_igemm.h, whose panel is this layout's block column unpacked
 * (no transpose): the same d, m and bytes as q4_0's panel, so the same bits as q4_0's. */
#ifndef KV_CPU_AVX2_Q4_0X8_H
#define KV_CPU_AVX2_Q4_0X8_H

#include "avx2_igemm.h"

#define X8_BLOCK (IG_ROWS * 18) /* a group's block column: 8 d's, then 128 bytes of nibbles */
#define X8_TOK 4                /* vectors per GEMV tile */
#define X8_PREFETCH 1536        /* bytes ahead in a group's stream */

/* The block column at p: the 8 rows' d's, and q[j] = columns 4j..4j+3 (j < 4: low nibbles of
 * load j; j >= 4: high nibbles of load j - 4, columns 16 + 4(j - 4)..). */
KC_ALWAYS_INLINE __m256 x8_unpack(const uint8_t *p, __m256i q[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int k = 0; k < 4; k++) {
        const __m256i v = load256(p + 16 + 32 * k);
        q[k] = _mm256_and_si256(v, m4);
        q[4 + k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    return _mm256_cvtph_ps(load128(p));
}

/* y[v * ldy + 0..8) = the group at g (nb block columns) . activation rows v < NV (arb apart). */
KC_ALWAYS_INLINE void x8_tile(float *y, size_t ldy, const uint8_t *g, int nb, const uint8_t *a, size_t arb,
                              const int NV)
{
    __m256 acc[X8_TOK], accm[X8_TOK];
    for (int v = 0; v < NV; v++)
        acc[v] = accm[v] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = g + (size_t)b * X8_BLOCK;
        /* every line of the block column X8_PREFETCH ahead (144 bytes touch up to 3) */
        const uintptr_t ahead = (uintptr_t)p + X8_PREFETCH;
        _mm_prefetch((const char *)ahead, _MM_HINT_T0);
        _mm_prefetch((const char *)(ahead + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(ahead + X8_BLOCK - 1), _MM_HINT_T0);
        __m256i q[8];
        const __m256 dw = x8_unpack(p, q);
        for (int v = 0; v < NV; v++) {
            const uint8_t *ab = a + (size_t)v * arb + (size_t)b * KC_Q8_32_BYTES;
            __m256i s = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++)
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(q[j], _mm256_set1_epi32((int)kc_load_u32(
                                                                     ab + KC_Q8_32_QS + 4 * j))));
            const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(s, ones));
            acc[v] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(kc_load_f32(ab))), dot, acc[v]);
            accm[v] = _mm256_fmadd_ps(dw, _mm256_set1_ps(kc_load_f32(ab + KC_Q8_32_S)), accm[v]);
        }
    }
    for (int v = 0; v < NV; v++)
        _mm256_storeu_ps(y + (size_t)v * ldy, _mm256_fmadd_ps(_mm256_set1_ps(-8.0f), accm[v], acc[v]));
}

static void q4_0x8_gemv_rows(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,
                             size_t arb, int n_vec, int cols)
{
    const int nb = cols / 32;
    for (int r = r0; r < r1; r += IG_ROWS) {
        const uint8_t *g = (const uint8_t *)w + (size_t)r * wrb;
        int v = 0;
        for (; v + X8_TOK <= n_vec; v += X8_TOK)
            x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, (const uint8_t *)act + (size_t)v * arb, arb, X8_TOK);
        const uint8_t *a = (const uint8_t *)act + (size_t)v * arb;
        switch (n_vec - v) {
        case 1: x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, a, arb, 1); break;
        case 2: x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, a, arb, 2); break;
        case 3: x8_tile(y + (size_t)v * ldy + r, ldy, g, nb, a, arb, 3); break;
        default: break;
        }
    }
}

/* The igemm panel from a group's block columns b0 .. b0 + nb (rows always whole: nr is 8). */
static void q4_0x8_ig_pack(ig_panel *p, const uint8_t *g, size_t wrb, int nr, int b0, int nb)
{
    (void)wrb;
    (void)nr;
    for (int b = 0; b < nb; b++) {
        const __m256 d = x8_unpack(g + (size_t)(b0 + b) * X8_BLOCK, p->q[b]);
        _mm256_storeu_ps(p->d[b], d);
        _mm256_storeu_ps(p->m[b], _mm256_mul_ps(d, _mm256_set1_ps(-8.0f)));
    }
}

/* The next group's block columns b0 .. b0 + nb: one run of bytes. */
static void q4_0x8_ig_prefetch(const uint8_t *w, size_t wrb, int r_next, int r_end, int b0, int nb)
{
    if (r_next >= r_end)
        return;
    kc_panel_prefetch pf = {w + (size_t)r_next * wrb + (size_t)b0 * X8_BLOCK, 0, (size_t)nb * X8_BLOCK, 0, 0, 1};
    kc_panel_prefetch_some(&pf, INT_MAX);
}

KC_DEFINE_IGEMM_LOOP(q4_0x8)

#endif
