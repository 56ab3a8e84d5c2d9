/* The AVX2 + FMA + F16C table (compiled with -mavx2 -mfma -mf16c: kernels/CMakeLists.txt),
 * the baseline every x86-64-v3 machine runs. The kernels are in avx2_kernels.h. */
#include "avx2_kernels.h"

#define ENTRY(ACT, QUANT, NAME) {ACT, QUANT, NAME##_vec_dot, NAME##_gemv_rows}

const kc_isa kc_isa_avx2 = {
    "avx2",
    {
        [KV_TYPE_F32] = ENTRY(KC_ACT_F32, kc_quantize_f32, f32),
        [KV_TYPE_F16] = ENTRY(KC_ACT_F32, kc_quantize_f32, f16),
        [KV_TYPE_BF16] = ENTRY(KC_ACT_F32, kc_quantize_f32, bf16),
        [KV_TYPE_Q8_0] = ENTRY(KC_ACT_Q8_32, kc_quantize_q8_32, q8_0),
        [KV_TYPE_Q4_0] = ENTRY(KC_ACT_Q8_32, kc_quantize_q8_32, q4_0),
        [KV_TYPE_Q4_1] = ENTRY(KC_ACT_Q8_32, kc_quantize_q8_32, q4_1),
        [KV_TYPE_Q5_0] = ENTRY(KC_ACT_Q8_32, kc_quantize_q8_32, q5_0),
        [KV_TYPE_Q5_1] = ENTRY(KC_ACT_Q8_32, kc_quantize_q8_32, q5_1),
        [KV_TYPE_Q4_K] = ENTRY(KC_ACT_Q8_K, kc_quantize_q8_k, q4_k),
        [KV_TYPE_Q5_K] = ENTRY(KC_ACT_Q8_K, kc_quantize_q8_k, q5_k),
        [KV_TYPE_Q6_K] = ENTRY(KC_ACT_Q8_K, kc_quantize_q8_k, q6_k),
    },
};
