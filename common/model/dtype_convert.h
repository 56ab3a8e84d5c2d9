/* float32 <-> float16 / bfloat16 conversion: round-to-nearest-even, subnormals kept, inf
 * kept, NaN stays NaN (quieted; rounding never carries a NaN into inf). Bit-exact with the
 * F16C instructions, and with PyTorch for every non-NaN value. Half values travel as uint16_t bit patterns.
 * Array versions take (dst, src, n) like memcpy and use AVX2/F16C when compiled for it. */
#ifndef KV_DTYPE_CONVERT_H
#define KV_DTYPE_CONVERT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t kv_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float kv_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float kv_bf16_to_f32_1(uint16_t h) { return kv_f32_from_bits((uint32_t)h << 16); }

static inline uint16_t kv_f32_to_bf16_1(float f)
{
    uint32_t u = kv_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)                /* NaN: truncate, force the quiet bit */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);                    /* ties go to the even mantissa */
    return (uint16_t)(u >> 16);
}

static inline float kv_f16_to_f32_1(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f)                                    /* inf / NaN (NaN quieted, as F16C does) */
        return kv_f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    if (exp == 0) {                                     /* zero or subnormal: mant * 2^-24 exactly */
        float v = (float)mant * 0x1p-24f;
        return kv_f32_from_bits(sign | kv_f32_bits(v));
    }
    return kv_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline uint16_t kv_f32_to_f16_1(float f)
{
    uint32_t u = kv_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u)                                /* NaN: keep the top payload bits, quiet */
        return sign | 0x7e00u | (uint16_t)((u >> 13) & 0x3ffu);
    if (u >= 0x477ff000u)                               /* >= 65520 rounds (to even) to inf */
        return sign | 0x7c00u;
    if (u < 0x38800000u) {
        /* Below 2^-14 the result is subnormal: adding 0.5 aligns the float's mantissa so
         * that the hardware's own round-to-nearest-even does the rounding for us. */
        float v = kv_f32_from_bits(u) + 0.5f;
        return sign | (uint16_t)(kv_f32_bits(v) - 0x3f000000u);
    }
    uint32_t odd = (u >> 13) & 1u;
    u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;   /* rebias; carry may bump the exponent */
    return sign | (uint16_t)(u >> 13);
}

void kv_f32_to_bf16(uint16_t *dst, const float *src, size_t n);
void kv_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
void kv_f32_to_f16(uint16_t *dst, const float *src, size_t n);
void kv_f16_to_f32(float *dst, const uint16_t *src, size_t n);

#endif
