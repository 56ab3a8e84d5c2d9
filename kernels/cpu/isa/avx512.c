/* AVX-512 table (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni:
 * kernels/CMakeLists.txt; dispatch.c runs it only after cpuid says the CPU has all five).
 * f32/f16/bf16: 16 floats per FMA. The block formats: avx2_kernels.h compiled here, where
 * 32 vector registers hold the 8-vector accumulators without spilling and dot_us8 is one
 * vpdpbusd. An AVX512-BF16 dot (vdpbf16ps) would need bf16 activations, which round the
 * f32 activations: not used. */
#include "avx2_kernels.h"
#include "avx2_igemm.h"
#include "avx2_wgemm.h"
#include "avx2_x8.h"

#undef KC_ACC
#undef kc_acc_zero
#undef kc_acc_hsum
#define KC_ACC __m512
#define kc_acc_zero() _mm512_setzero_ps()
#define kc_acc_hsum(a) _mm512_reduce_add_ps(a)

typedef struct { __m512 w; } f32x16_wblk, f16x16_wblk, bf16x16_wblk;

KC_ALWAYS_INLINE __m512 fdot16(const f32x16_wblk *u, const uint8_t *a, __m512 acc)
{
    return _mm512_fmadd_ps(u->w, _mm512_loadu_ps(a), acc);
}
#define f32x16_dot fdot16
#define f16x16_dot fdot16
#define bf16x16_dot fdot16
#define f32x16_tail f32_tail
#define f16x16_tail f16_tail
#define bf16x16_tail bf16_tail

KC_ALWAYS_INLINE void f32x16_unpack(f32x16_wblk *u, const uint8_t *p) { u->w = _mm512_loadu_ps(p); }
KC_ALWAYS_INLINE void f16x16_unpack(f16x16_wblk *u, const uint8_t *p) { u->w = _mm512_cvtph_ps(load256(p)); }
KC_ALWAYS_INLINE void bf16x16_unpack(bf16x16_wblk *u, const uint8_t *p)
{
    u->w = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load256(p)), 16));
}

KC_DEFINE_GEMV(f32x16, 16, 64, 64)
KC_DEFINE_GEMV(f16x16, 16, 32, 64)
KC_DEFINE_GEMV(bf16x16, 16, 32, 64)

const kc_isa kc_isa_avx512 = {
    "avx512",
    {
        KC_ISA_ENTRY(F32, f32x16_vec_dot, f32x16_gemv_rows, kv_dequant_f32),
        KC_ISA_ENTRY(F16, f16x16_vec_dot, f16x16_gemv_rows, f16_to_f32),
        KC_ISA_ENTRY(BF16, bf16x16_vec_dot, bf16x16_gemv_rows, bf16_to_f32),
        KC_AVX2_BLOCK_ENTRIES,
    },
    avx2_wgemm_pack,
    avx2_wgemm_micro,
};
