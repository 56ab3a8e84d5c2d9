/* Prefill on q4_0 weights in int8 (kc_wkernel.igemm_rows), as llama.cpp's repacked q4_0 GEMM
 * does it: the activations quantized to q8_0-style blocks, the weights' nibbles multiplied as
 * unsigned bytes by maddubs, 32 products per instruction where an f32 FMA does 8 (1.3-1.45x
 * the f32 GEMM's GFLOP/s in kv-bench-wkernels). The macro also takes q4_1's form (its own
 * min); q4_1 stays on the f32 GEMM, already twice llama.cpp's speed there, so that its
 * perplexity keeps matching the f32-activation reference (test_perplexity.sh).
 * Included by avx2.c and avx512.c after avx2_kernels.h.
 *
 * Layout: eight weight rows are interleaved 4 bytes at a time into a panel (per block of 32
 * columns, group j's 32 bytes hold columns 4j..4j+3 of rows 0..7), so that one maddubs of a
 * group with a token's 4 activation bytes broadcast leaves each row's products in its own
 * lanes: a block's dot product of 8 rows with one token ends in the 8 int32 lanes of one
 * vector, scaled by the rows' 8 d's in one multiply, with no horizontal sum.
 * Integer sums are exact (a group's int16 lane is at most 2 * 15 * 127, eight of them
 * 30480 < 32767), so each output's float work is, per block in column order,
 *     acc = fma(d_w * d_a, (float)dot, acc);  acc = fma(m_w, s_a, acc)
 * (m_w = -8 d_w for q4_0, exact; q4_1's own m), then y (+)= acc per KC_WGEMM_KB columns:
 * the same operations whatever the tokens and rows that share a call (batch-invariant). */
#ifndef KV_CPU_AVX2_IGEMM_H
#define KV_CPU_AVX2_IGEMM_H

#include <limits.h>

#include "avx2_kernels.h"
#include "panel_prefetch.h"

#define IG_ROWS 8                   /* weight rows per panel: the 8 lanes */
#define IG_TOK 4                    /* tokens per register tile */
#define IG_BLOCKS (KC_WGEMM_KB / 32) /* blocks per panel */
/* Token rows per pass, as kc_wgemm_rows: their panel-wide activation blocks stay in L2. */
#define IG_TOKENS 144

typedef struct ig_panel {
    __m256i q[IG_BLOCKS][8]; /* [block][group j]: rows 0..7 x columns 4j..4j+3 */
    float d[IG_BLOCKS][IG_ROWS], m[IG_BLOCKS][IG_ROWS];
} ig_panel;

/* Rows [0, nr) of w (stride wrb) from block b0, nb blocks, into p; rows past nr are zero. */
#define KC_DEFINE_IG_PACK(FMT, WB, MIN)                                                                             \
    static void FMT##_ig_pack(ig_panel *p, const uint8_t *w, size_t wrb, int nr, int b0, int nb)                    \
    {                                                                                                               \
        for (int b = 0; b < nb; b++) {                                                                              \
            __m256 r[8], t[8];                                                                                      \
            for (int i = 0; i < IG_ROWS; i++) {                                                                     \
                const uint8_t *blk = w + (size_t)i * wrb + (size_t)(b0 + b) * (WB);                                 \
                r[i] = _mm256_castsi256_ps(i < nr ? FMT##_w(blk).q : _mm256_setzero_si256());                       \
                p->d[b][i] = i < nr ? half(blk) : 0.0f;                                                             \
                p->m[b][i] = i >= nr ? 0.0f : (MIN) == 1 ? half(blk + 2) : (float)(MIN) * half(blk);               \
            }                                                                                                       \
            kc_transpose8x8(r, t); /* row i's group j -> vector j's lane i */                                       \
            for (int j = 0; j < 8; j++)                                                                             \
                p->q[b][j] = _mm256_castps_si256(t[j]);                                                             \
        }                                                                                                           \
    }

/* y[t * ldy + 0..nr) (+)= the panel's nb blocks . tokens t < NT (activation rows a, stride
 * arb, already at the panel's first block). */
KC_ALWAYS_INLINE void ig_tile(float *y, size_t ldy, const ig_panel *p, int nb, const uint8_t *a, size_t arb, int nr,
                              int accumulate, const int NT)
{
    __m256 acc[IG_TOK];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; b++) {
        const uint8_t *ab = a + (size_t)b * KC_Q8_32_BYTES;
        const __m256 d = _mm256_loadu_ps(p->d[b]), m = _mm256_loadu_ps(p->m[b]);
        for (int t = 0; t < NT; t++) {
            __m256i sum = _mm256_setzero_si256();
            for (int j = 0; j < 8; j++) {
                const __m256i x = _mm256_set1_epi32((int)kc_load_u32(ab + (size_t)t * arb + KC_Q8_32_QS + 4 * j));
                sum = _mm256_add_epi16(sum, _mm256_maddubs_epi16(_mm256_load_si256(&p->q[b][j]), x));
            }
            const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum, ones));
            const __m256 da = _mm256_set1_ps(kc_load_f32(ab + (size_t)t * arb));
            const __m256 sa = _mm256_set1_ps(kc_load_f32(ab + (size_t)t * arb + KC_Q8_32_S));
            acc[t] = _mm256_fmadd_ps(m, sa, _mm256_fmadd_ps(_mm256_mul_ps(d, da), dot, acc[t]));
        }
    }
    for (int t = 0; t < NT; t++) {
        float *yt = y + (size_t)t * ldy;
        if (nr == IG_ROWS) {
            _mm256_storeu_ps(yt, accumulate ? _mm256_add_ps(_mm256_loadu_ps(yt), acc[t]) : acc[t]);
            continue;
        }
        float v[IG_ROWS];
        _mm256_storeu_ps(v, acc[t]);
        for (int r = 0; r < nr; r++)
            yt[r] = accumulate ? yt[r] + v[r] : v[r];
    }
}

static void ig_tiles(float *y, size_t ldy, const ig_panel *p, int nb, const uint8_t *a, size_t arb, int n_tok, int nr,
                     int accumulate)
{
    int t = 0;
    for (; t + IG_TOK <= n_tok; t += IG_TOK)
        ig_tile(y + (size_t)t * ldy, ldy, p, nb, a + (size_t)t * arb, arb, nr, accumulate, IG_TOK);
    switch (n_tok - t) {
    case 1: ig_tile(y + (size_t)t * ldy, ldy, p, nb, a + (size_t)t * arb, arb, nr, accumulate, 1); break;
    case 2: ig_tile(y + (size_t)t * ldy, ldy, p, nb, a + (size_t)t * arb, arb, nr, accumulate, 2); break;
    case 3: ig_tile(y + (size_t)t * ldy, ldy, p, nb, a + (size_t)t * arb, arb, nr, accumulate, 3); break;
    default: break;
    }
}

/* FMT##_igemm_rows, kc_wkernel.igemm_rows over FMT##_ig_pack(panel, w + r * wrb, wrb, nr, b0,
 * nb) and FMT##_ig_prefetch(w, wrb, r_next, r_end, b0, nb) (the next panel's lines). */
#define KC_DEFINE_IGEMM_LOOP(FMT)                                                                                   \
    static void FMT##_igemm_rows(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,  \
                                 size_t arb, int n_tok, int cols)                                                   \
    {                                                                                                               \
        ig_panel p __attribute__((aligned(32)));                                                                    \
        const int nb_all = cols / 32;                                                                               \
        for (int t0 = 0; t0 < n_tok; t0 += IG_TOKENS) {                                                             \
            const int nt = n_tok - t0 < IG_TOKENS ? n_tok - t0 : IG_TOKENS;                                         \
            for (int b0 = 0; b0 < nb_all; b0 += IG_BLOCKS) {                                                        \
                const int nb = nb_all - b0 < IG_BLOCKS ? nb_all - b0 : IG_BLOCKS;                                   \
                for (int r = r0; r < r1; r += IG_ROWS) {                                                            \
                    const int nr = r1 - r < IG_ROWS ? r1 - r : IG_ROWS;                                             \
                    FMT##_ig_pack(&p, (const uint8_t *)w + (size_t)r * wrb, wrb, nr, b0, nb);                       \
                    FMT##_ig_prefetch((const uint8_t *)w, wrb, r + IG_ROWS, r1, b0, nb);                            \
                    ig_tiles(y + (size_t)t0 * ldy + (size_t)r, ldy, &p, nb,                                         \
                             (const uint8_t *)act + (size_t)t0 * arb + (size_t)b0 * KC_Q8_32_BYTES, arb, nt, nr,    \
                             b0 > 0);                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }

/* ... for a stored format (rows WB bytes per block): the next panel at once, 8 rows of a few
 * lines each, not kc_wgemm_rows' 16 KiB bursts. */
#define KC_DEFINE_IGEMM(FMT, WB, MIN)                                                                               \
    KC_DEFINE_IG_PACK(FMT, WB, MIN)                                                                                 \
    static void FMT##_ig_prefetch(const uint8_t *w, size_t wrb, int r_next, int r_end, int b0, int nb)              \
    {                                                                                                               \
        kc_panel_prefetch pf = {w + (size_t)b0 * (WB), wrb, (size_t)nb * (WB), 0, r_next,                           \
                                r_end - r_next > IG_ROWS ? r_next + IG_ROWS : r_end};                               \
        kc_panel_prefetch_some(&pf, INT_MAX);                                                                       \
    }                                                                                                               \
    KC_DEFINE_IGEMM_LOOP(FMT)

KC_DEFINE_IGEMM(q4_0, 18, -8)

#endif
