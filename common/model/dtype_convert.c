#include "dtype_convert.h"

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#define KV_CONVERT_SIMD 1
#endif

/* The vector loops handle 8 floats at a time; the scalar inline versions finish the tail
 * and define the semantics (the tests compare both on every half value). */

void kv_f32_to_bf16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
#ifdef KV_CONVERT_SIMD
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i quiet = _mm256_set1_epi32(0x00400000);
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(bias, odd));
        __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(u, quiet), is_nan);
        r = _mm256_srli_epi32(r, 16);
        /* packus works per 128-bit lane: pack both halves, then fix the lane order. */
        __m256i packed = _mm256_packus_epi32(r, r);
        packed = _mm256_permute4x64_epi64(packed, 0x08);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_castsi256_si128(packed));
    }
#endif
    for (; i < n; i++)
        dst[i] = kv_f32_to_bf16_1(src[i]);
}

void kv_bf16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
#ifdef KV_CONVERT_SIMD
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_si256((__m256i *)(dst + i), u);
    }
#endif
    for (; i < n; i++)
        dst[i] = kv_bf16_to_f32_1(src[i]);
}

void kv_f32_to_f16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
#ifdef KV_CONVERT_SIMD
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
#endif
    for (; i < n; i++)
        dst[i] = kv_f32_to_f16_1(src[i]);
}

void kv_f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    size_t i = 0;
#ifdef KV_CONVERT_SIMD
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++)
        dst[i] = kv_f16_to_f32_1(src[i]);
}
