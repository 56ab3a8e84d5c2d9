/* The AVX2 pieces of the prefill GEMM (wgemm.c runs the loops): per-format dequantizers that
 * give kv_type_dequant.c's values bit for bit (the same single rounding per multiply and per
 * add: this project compiles ISO C, so no mul + add is contracted into an FMA), the 8 x 8
 * transposes that pack a panel, and the 6 x 16 register tile (12 accumulators, two panel
 * vectors, one broadcast: 15 of the 16 ymm registers). Included by avx2.c and avx512.c after
 * avx2_kernels.h. */
#ifndef KV_CPU_AVX2_WGEMM_H
#define KV_CPU_AVX2_WGEMM_H

#include "avx2_kernels.h"
#include "kv_type_dequant.h"

static void f16_to_f32(const void *blocks, float *out, size_t n)
{
    const uint8_t *p = blocks;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, kc_halves8_to_f32(p + 2 * i, 0));
    for (; i < n; i++)
        out[i] = half(p + 2 * i);
}

static void bf16_to_f32(const void *blocks, float *out, size_t n)
{
    const uint8_t *p = blocks;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, kc_halves8_to_f32(p + 2 * i, 1));
    for (; i < n; i++)
        out[i] = kc_bf16_to_f32(kc_load_u16(p + 2 * i));
}

/* 32 int8 values q of a block -> out[32] = q * d (+ m when HAS_M). */
KC_ALWAYS_INLINE void store_q32(float *out, __m256i q, __m256 d, __m256 m, const int HAS_M)
{
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int j = 0; j < 4; j++) {
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[j])), d);
        if (HAS_M)
            v = _mm256_add_ps(v, m);
        _mm256_storeu_ps(out + 8 * j, v);
    }
}

/* FMT's 32-blocks of WB bytes: (q - OFF) * d, or q * d + m (HAS_M, m the fp16 after d). */
#define KC_DEFINE_TO_F32_Q32(FMT, WB, OFF, HAS_M)                                                                   \
    static void FMT##_to_f32(const void *blocks, float *out, size_t n)                                              \
    {                                                                                                               \
        const uint8_t *b = blocks;                                                                                  \
        for (size_t i = 0; i < n / 32; i++, b += (WB), out += 32) {                                                 \
            const __m256i q = _mm256_sub_epi8(FMT##_w(b).q, _mm256_set1_epi8(OFF));                                \
            store_q32(out, q, _mm256_set1_ps(half(b)), _mm256_set1_ps(HAS_M ? half(b + 2) : 0.0f), HAS_M);        \
        }                                                                                                           \
    }

KC_DEFINE_TO_F32_Q32(q8_0, 34, 0, 0)
KC_DEFINE_TO_F32_Q32(q4_0, 18, 8, 0)
KC_DEFINE_TO_F32_Q32(q5_0, 22, 16, 0)
KC_DEFINE_TO_F32_Q32(q4_1, 20, 0, 1)
KC_DEFINE_TO_F32_Q32(q5_1, 24, 0, 1)

/* The 8 x 8 block at rows[0..8) (stride ld) transposed into panel (stride NR). */
KC_ALWAYS_INLINE void transpose8_into(float *panel, const float *rows, size_t ld)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(rows + (size_t)i * ld);
    kc_transpose8x8(r, t);
    for (int j = 0; j < 8; j++)
        _mm256_storeu_ps(panel + (size_t)j * KC_WGEMM_NR, t[j]);
}

static void avx2_wgemm_pack(float *panel, const float *rows, size_t ld, int kbp)
{
    for (int k = 0; k < kbp; k += 8)
        for (int h = 0; h < KC_WGEMM_NR; h += 8)
            transpose8_into(panel + (size_t)k * KC_WGEMM_NR + (size_t)h, rows + (size_t)h * ld + (size_t)k, ld);
}

/* y row i, 16 columns (nr of them valid) <- (y +) c0, c1. */
KC_ALWAYS_INLINE void wgemm_store(float *yi, __m256 c0, __m256 c1, int nr, int accumulate)
{
    if (nr == KC_WGEMM_NR) {
        if (accumulate) {
            c0 = _mm256_add_ps(_mm256_loadu_ps(yi), c0);
            c1 = _mm256_add_ps(_mm256_loadu_ps(yi + 8), c1);
        }
        _mm256_storeu_ps(yi, c0);
        _mm256_storeu_ps(yi + 8, c1);
        return;
    }
    float buf[KC_WGEMM_NR];
    _mm256_storeu_ps(buf, c0);
    _mm256_storeu_ps(buf + 8, c1);
    for (int r = 0; r < nr; r++)
        yi[r] = accumulate ? yi[r] + buf[r] : buf[r];
}

/* MR token rows: named accumulators, not arrays, so that they stay in registers. */
#define KC_WGEMM_ROW(I)                                                                                             \
    if (MR > (I)) {                                                                                                 \
        const __m256 a = _mm256_broadcast_ss(x + (size_t)(I) * ldx + (size_t)k);                                    \
        c##I##0 = _mm256_fmadd_ps(a, b0, c##I##0);                                                                  \
        c##I##1 = _mm256_fmadd_ps(a, b1, c##I##1);                                                                  \
    }
KC_ALWAYS_INLINE void wgemm_tile(float *y, size_t ldy, const float *x, size_t ldx, const float *panel, int kb,
                                 const int MR, int nr, int accumulate)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kb; k++) {
        const __m256 b0 = _mm256_loadu_ps(panel + (size_t)k * KC_WGEMM_NR);
        const __m256 b1 = _mm256_loadu_ps(panel + (size_t)k * KC_WGEMM_NR + 8);
        KC_WGEMM_ROW(0)
        KC_WGEMM_ROW(1)
        KC_WGEMM_ROW(2)
        KC_WGEMM_ROW(3)
        KC_WGEMM_ROW(4)
        KC_WGEMM_ROW(5)
    }
    wgemm_store(y, c00, c01, nr, accumulate);
    if (MR > 1)
        wgemm_store(y + ldy, c10, c11, nr, accumulate);
    if (MR > 2)
        wgemm_store(y + 2 * ldy, c20, c21, nr, accumulate);
    if (MR > 3)
        wgemm_store(y + 3 * ldy, c30, c31, nr, accumulate);
    if (MR > 4)
        wgemm_store(y + 4 * ldy, c40, c41, nr, accumulate);
    if (MR > 5)
        wgemm_store(y + 5 * ldy, c50, c51, nr, accumulate);
}
#undef KC_WGEMM_ROW

static void avx2_wgemm_micro(float *y, size_t ldy, const float *x, size_t ldx, const float *panel, int kb, int mr,
                             int nr, int accumulate)
{
    switch (mr) {
    case 1: wgemm_tile(y, ldy, x, ldx, panel, kb, 1, nr, accumulate); break;
    case 2: wgemm_tile(y, ldy, x, ldx, panel, kb, 2, nr, accumulate); break;
    case 3: wgemm_tile(y, ldy, x, ldx, panel, kb, 3, nr, accumulate); break;
    case 4: wgemm_tile(y, ldy, x, ldx, panel, kb, 4, nr, accumulate); break;
    case 5: wgemm_tile(y, ldy, x, ldx, panel, kb, 5, nr, accumulate); break;
    default: wgemm_tile(y, ldy, x, ldx, panel, kb, 6, nr, accumulate); break;
    }
}

/* The block formats' table entries, the same in the AVX2 and AVX-512 tables (avx512.c
 * compiles these kernels with its own flags). */
#define KC_AVX2_BLOCK_ENTRIES                                                                                       \
    KC_ISA_ENTRY(Q8_0, q8_0_vec_dot, q8_0_gemv_rows, q8_0_to_f32),                                                  \
        KC_ISA_ENTRY_IG(Q4_0, q4_0_vec_dot, q4_0_gemv_rows, q4_0_to_f32, q4_0_igemm_rows),                          \
        KC_ISA_ENTRY(Q4_1, q4_1_vec_dot, q4_1_gemv_rows, q4_1_to_f32),                                              \
        KC_ISA_ENTRY(Q5_0, q5_0_vec_dot, q5_0_gemv_rows, q5_0_to_f32),                                              \
        KC_ISA_ENTRY(Q5_1, q5_1_vec_dot, q5_1_gemv_rows, q5_1_to_f32),                                              \
        KC_ISA_ENTRY(Q4_K, q4_k_vec_dot, q4_k_gemv_rows, kv_dequant_q4_k),                                          \
        KC_ISA_ENTRY(Q5_K, q5_k_vec_dot, q5_k_gemv_rows, kv_dequant_q5_k),                                          \
        KC_ISA_ENTRY(Q6_K, q6_k_vec_dot, q6_k_gemv_rows, kv_dequant_q6_k),                                          \
        KC_ISA_ENTRY_LAYOUT(Q4_0_X8, q4_0x8_gemv_rows, q4_0x8_igemm_rows, q4_0x8_group_to_f32),                   \
        KC_ISA_ENTRY_LAYOUT(Q4_1_X8, q4_1x8_gemv_rows, NULL, q4_1x8_group_to_f32)

#endif
