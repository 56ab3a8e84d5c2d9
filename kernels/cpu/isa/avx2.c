/* The AVX2 + FMA + F16C table (compiled with -mavx2 -mfma -mf16c: kernels/CMakeLists.txt),
 * the baseline every x86-64-v3 machine runs. The kernels are in avx2_kernels.h. */
#include "avx2_kernels.h"
#include "avx2_igemm.h"
#include "avx2_wgemm.h"
#include "avx2_x8.h"

const kc_isa kc_isa_avx2 = {
    "avx2",
    {
        KC_ISA_ENTRY(F32, f32_vec_dot, f32_gemv_rows, kv_dequant_f32),
        KC_ISA_ENTRY(F16, f16_vec_dot, f16_gemv_rows, f16_to_f32),
        KC_ISA_ENTRY(BF16, bf16_vec_dot, bf16_gemv_rows, bf16_to_f32),
        KC_AVX2_BLOCK_ENTRIES,
    },
    avx2_wgemm_pack,
    avx2_wgemm_micro,
};
