/* Row dequantizers, one per block layout, written after ggml's reference dequantize_row_*
 * (ggml-quants.c) and computing in the same order, so results match it bit for bit. That
 * needs each a*b+c rounded twice, as ggml's reference does: this file is compiled with
 * -ffp-contract=off (common/CMakeLists.txt), so no compiler fuses it into one FMA.
 * Blocks are read through memcpy-sized loads: GGUF data need not be aligned for us. */
#include "kv_type_dequant.h"

#include <stdint.h>
#include <string.h>

#define QK 32
#define QK_K 256

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t load_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline uint32_t load_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* IEEE half to float, exact (every half is a float). The same conversion as dtype_convert.h's
 * kv_f16_to_f32_1, which lives above kv_base. */
static inline float half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f)
        return f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        return f32_from_bits(sign | bits);
    }
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline float load_half(const unsigned char *p) { return half_to_f32(load_u16(p)); }

void kv_dequant_f32(const void *blocks, float *out, size_t n) { memcpy(out, blocks, n * sizeof *out); }

void kv_dequant_f16(const void *blocks, float *out, size_t n)
{
    const unsigned char *p = blocks;
    for (size_t i = 0; i < n; i++)
        out[i] = load_half(p + 2 * i);
}

void kv_dequant_bf16(const void *blocks, float *out, size_t n)
{
    const unsigned char *p = blocks;
    for (size_t i = 0; i < n; i++)
        out[i] = f32_from_bits((uint32_t)load_u16(p + 2 * i) << 16);
}

/* q8_0: fp16 d, 32 x int8: x = q * d */
void kv_dequant_q8_0(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK; i++, b += 2 + QK, out += QK) {
        const float d = load_half(b);
        for (int j = 0; j < QK; j++)
            out[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* q4_0: fp16 d, 16 bytes of nibbles (low nibbles: elements 0..15, high: 16..31): (q - 8) * d */
void kv_dequant_q4_0(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK; i++, b += 2 + QK / 2, out += QK) {
        const float d = load_half(b);
        const unsigned char *qs = b + 2;
        for (int j = 0; j < QK / 2; j++) {
            out[j] = (float)((qs[j] & 0x0F) - 8) * d;
            out[j + QK / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* q4_1: fp16 d, fp16 m, nibbles: q * d + m */
void kv_dequant_q4_1(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK; i++, b += 4 + QK / 2, out += QK) {
        const float d = load_half(b), m = load_half(b + 2);
        const unsigned char *qs = b + 4;
        for (int j = 0; j < QK / 2; j++) {
            out[j] = (float)(qs[j] & 0x0F) * d + m;
            out[j + QK / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* q5_0: fp16 d, 32 fifth bits (u32, bit j for element j), nibbles: (q - 16) * d */
void kv_dequant_q5_0(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK; i++, b += 6 + QK / 2, out += QK) {
        const float d = load_half(b);
        const uint32_t qh = load_u32(b + 2);
        const unsigned char *qs = b + 6;
        for (int j = 0; j < QK / 2; j++) {
            const int x0 = (int)((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - 16;
            const int x1 = (int)((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
            out[j] = (float)x0 * d;
            out[j + QK / 2] = (float)x1 * d;
        }
    }
}

/* q5_1: fp16 d, fp16 m, fifth bits, nibbles: q * d + m */
void kv_dequant_q5_1(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK; i++, b += 8 + QK / 2, out += QK) {
        const float d = load_half(b), m = load_half(b + 2);
        const uint32_t qh = load_u32(b + 4);
        const unsigned char *qs = b + 8;
        for (int j = 0; j < QK / 2; j++) {
            const unsigned x0 = (qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10);
            const unsigned x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
            out[j] = (float)x0 * d + m;
            out[j + QK / 2] = (float)x1 * d + m;
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a q4_k / q5_k super-block, packed in 12
 * bytes: sub-blocks 0..3 in the low 6 bits of bytes 0..3 (scales) and 4..7 (mins), 4..7 split
 * between the nibbles of bytes 8..11 and the top 2 bits of bytes 0..7. */
static inline void scale_min_k4(int j, const unsigned char *q, unsigned *sc, unsigned *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* q4_k: fp16 d, fp16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; 8 sub-blocks of 32,
 * each 64 elements one byte run (low nibbles first): q * (d * sc) - dmin * m */
void kv_dequant_q4_k(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK_K; i++, b += 144) {
        const float d = load_half(b), dmin = load_half(b + 2);
        const unsigned char *scales = b + 4, *q = b + 16;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, q += 32) {
            unsigned sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *out++ = d1 * (float)(q[l] & 0x0F) - m1;
            for (int l = 0; l < 32; l++)
                *out++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* q5_k: as q4_k plus 32 bytes of fifth bits (bit 2k / 2k+1 of byte l for element l of the
 * k-th 64-element run's low / high half) */
void kv_dequant_q5_k(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK_K; i++, b += 176) {
        const float d = load_half(b), dmin = load_half(b + 2);
        const unsigned char *scales = b + 4, *qh = b + 16, *ql = b + 48;
        unsigned u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            unsigned sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *out++ = d1 * (float)((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *out++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* q6_k: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, fp16 d;
 * two halves of 128 elements: (d * scale) * (q - 32) */
void kv_dequant_q6_k(const void *blocks, float *out, size_t n)
{
    const unsigned char *b = blocks;
    for (size_t i = 0; i < n / QK_K; i++, b += 210) {
        const float d = load_half(b + 208);
        const unsigned char *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int half = 0; half < 2; half++, out += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * (float)sc[is] * (float)q1;
                out[l + 32] = d * (float)sc[is + 2] * (float)q2;
                out[l + 64] = d * (float)sc[is + 4] * (float)q3;
                out[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}
