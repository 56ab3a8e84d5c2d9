/* The AVX2 + FMA + F16C table (compiled with -mavx2 -mfma -mf16c: kernels/CMakeLists.txt),
 * the baseline every x86-64-v3 machine runs. The kernels are in avx2_kernels.h. */
#include "avx2_kernels.h"
#include "avx2_wgemm.h"

const kc_isa kc_isa_avx2 = {
    "avx2",
    {
        KC_ISA_ENTRY(F32, f32_vec_dot, f32_gemv_rows, kv_dequant_f32),
        KC_ISA_ENTRY(F16, f16_vec_dot, f16_gemv_rows, f16_to_f32),
        KC_ISA_ENTRY(BF16, bf16_vec_dot, bf16_gemv_rows, bf16_to_f32),
        KC_ISA_ENTRY(Q8_0, q8_0_vec_dot, q8_0_gemv_rows, q8_0_to_f32),
        KC_ISA_ENTRY(Q4_0, q4_0_vec_dot, q4_0_gemv_rows, q4_0_to_f32),
        KC_ISA_ENTRY(Q4_1, q4_1_vec_dot, q4_1_gemv_rows, q4_1_to_f32),
        KC_ISA_ENTRY(Q5_0, q5_0_vec_dot, q5_0_gemv_rows, q5_0_to_f32),
        KC_ISA_ENTRY(Q5_1, q5_1_vec_dot, q5_1_gemv_rows, q5_1_to_f32),
        KC_ISA_ENTRY(Q4_K, q4_k_vec_dot, q4_k_gemv_rows, kv_dequant_q4_k),
        KC_ISA_ENTRY(Q5_K, q5_k_vec_dot, q5_k_gemv_rows, kv_dequant_q5_k),
        KC_ISA_ENTRY(Q6_K, q6_k_vec_dot, q6_k_gemv_rows, kv_dequant_q6_k),
    },
    avx2_wgemm_pack,
    avx2_wgemm_micro,
};
