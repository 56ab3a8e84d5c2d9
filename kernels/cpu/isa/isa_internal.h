/* Private to kernels/cpu/isa: the per-ISA tables dispatch.c chooses from, the portable
 * activation quantizers every table shares, and byte-level loads that need no alignment
 * (GGUF data and packed activation blocks are not aligned for their fields). */
#ifndef KV_CPU_ISA_INTERNAL_H
#define KV_CPU_ISA_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "wkernels.h"

extern const kc_isa kc_isa_scalar;
extern const kc_isa kc_isa_avx2;
extern const kc_isa kc_isa_avx512;

void kc_quantize_f32(void *act_row, const float *x, int cols);
void kc_quantize_q8_32(void *act_row, const float *x, int cols);
void kc_quantize_q8_k(void *act_row, const float *x, int cols);

/* The activation format each weight type's dot product takes, with its quantizer (as
 * llama.cpp's vec_dot pairs them): one list for every ISA's table, which only adds its own
 * dot, gemv and dequantizer (KC_ISA_ENTRY). */
#define KC_ACT_OF_F32 KC_ACT_F32, kc_quantize_f32
#define KC_ACT_OF_F16 KC_ACT_F32, kc_quantize_f32
#define KC_ACT_OF_BF16 KC_ACT_F32, kc_quantize_f32
#define KC_ACT_OF_Q8_0 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ACT_OF_Q4_0 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ACT_OF_Q4_1 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ACT_OF_Q5_0 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ACT_OF_Q5_1 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ACT_OF_Q4_K KC_ACT_Q8_K, kc_quantize_q8_k
#define KC_ACT_OF_Q5_K KC_ACT_Q8_K, kc_quantize_q8_k
#define KC_ACT_OF_Q6_K KC_ACT_Q8_K, kc_quantize_q8_k
#define KC_ACT_OF_Q4_0_X8 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ACT_OF_Q4_1_X8 KC_ACT_Q8_32, kc_quantize_q8_32
#define KC_ISA_ENTRY_(ACT_AND_QUANT, DOT, GEMV, TO_F32, IGEMM) {ACT_AND_QUANT, DOT, GEMV, TO_F32, IGEMM, NULL}
#define KC_ISA_ENTRY(TYPE, DOT, GEMV, TO_F32)                                                                       \
    [KV_TYPE_##TYPE] = KC_ISA_ENTRY_(KC_ACT_OF_##TYPE, DOT, GEMV, TO_F32, NULL)
/* ... with an int8 prefill GEMM (kc_wkernel.igemm_rows) */
#define KC_ISA_ENTRY_IG(TYPE, DOT, GEMV, TO_F32, IGEMM)                                                             \
    [KV_TYPE_##TYPE] = KC_ISA_ENTRY_(KC_ACT_OF_##TYPE, DOT, GEMV, TO_F32, IGEMM)
/* ... for a repacked layout (no vec_dot, no to_f32: its rows are interleaved) */
#define KC_ISA_ENTRY_LAYOUT(TYPE, GEMV, IGEMM, GROUP_TO_F32)                                                        \
    [KV_TYPE_##TYPE] = {KC_ACT_OF_##TYPE, NULL, GEMV, NULL, IGEMM, GROUP_TO_F32}

/* Activation block field offsets (see kc_act in wkernels.h). */
#define KC_Q8_32_S 4
#define KC_Q8_32_QS 8
#define KC_Q8_K_BSUMS 4
#define KC_Q8_K_QS 36

static inline float kc_load_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}

static inline uint16_t kc_load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t kc_load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float kc_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE half to float, exact (as kv_type_dequant.c's). */
static inline float kc_half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f)
        return kc_f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return kc_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

static inline float kc_load_half(const uint8_t *p) { return kc_half_to_f32(kc_load_u16(p)); }

static inline float kc_bf16_to_f32(uint16_t h) { return kc_f32_from_bits((uint32_t)h << 16); }

/* The 6-bit scale and min of sub-block j of a q4_k / q5_k super-block (ggml's get_scale_min_k4). */
static inline void kc_scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

#endif
