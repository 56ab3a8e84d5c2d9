/* Private helpers shared by the CUDA kernel files: error conversion, dtype dispatch,
 * element loads/stores with fp32 math, warp/block reductions, PTX wrappers. */
#ifndef KV_CUDA_COMMON_CUH
#define KV_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "cuda_kernels.h"

/* Fills err from a failed CUDA runtime call; returns the kv_code (cuda_device.cu). */
int kv_cuda_error(kv_err *err, cudaError_t e, const char *call, const char *file, int line);

/* Every CUDA runtime call goes through this: a failure returns from the calling host
 * function with the call's text and cudaGetErrorString in err. */
#define KV_CUDA_CHECK(call)                                                   \
    do {                                                                      \
        cudaError_t kv_e_ = (call);                                           \
        if (kv_e_ != cudaSuccess)                                             \
            return kv_cuda_error(err, kv_e_, #call, __FILE__, __LINE__);      \
    } while (0)

/* After a <<<>>> launch: a bad configuration is reported now; a fault inside the kernel
 * only at the next synchronising call. */
#define KV_CUDA_CHECK_LAUNCH(kernel_name)                                                 \
    do {                                                                                  \
        cudaError_t kv_e_ = cudaGetLastError();                                           \
        if (kv_e_ != cudaSuccess)                                                         \
            return kv_cuda_error(err, kv_e_, "launch of " kernel_name, __FILE__, __LINE__); \
    } while (0)

#define KV_STREAM(s) ((cudaStream_t)(s))

/* Runs the statements after T with T bound to the element type of dt (float, __nv_bfloat16, __half). */
#define KV_DISPATCH_DTYPE(dt, T, ...)                                                    \
    switch (dt) {                                                                         \
    case KV_CUDA_F32: {                                                                   \
        typedef float T;                                                                  \
        __VA_ARGS__;                                                                      \
    } break;                                                                              \
    case KV_CUDA_BF16: {                                                                  \
        typedef __nv_bfloat16 T;                                                          \
        __VA_ARGS__;                                                                      \
    } break;                                                                              \
    case KV_CUDA_F16: {                                                                   \
        typedef __half T;                                                                 \
        __VA_ARGS__;                                                                      \
    } break;                                                                              \
    default:                                                                              \
        return kv_err_set(err, KV_EINVAL, "cuda: unknown dtype %d", (int)(dt));           \
    }

static inline int kv_cuda_grid_1d(size_t n, int threads)
{
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    /* Grid-stride loops cover the rest: more blocks than this buys nothing. */
    return b > 65536 ? 65536 : (int)(b ? b : 1);
}

/* ---- Element access: storage type T, math in fp32 ---- */

__device__ __forceinline__ float kv_ld(const float *p) { return *p; }
__device__ __forceinline__ float kv_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float kv_ld(const __half *p) { return __half2float(*p); }
/* Round to nearest even, like the host-side conversions in the tests. */
__device__ __forceinline__ void kv_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void kv_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void kv_st(__half *p, float v) { *p = __float2half_rn(v); }

/* Two adjacent elements (4- or 8-byte aligned) in one store. */
__device__ __forceinline__ void kv_st2(float *p, float a, float b) { *(float2 *)p = make_float2(a, b); }
__device__ __forceinline__ void kv_st2(__nv_bfloat16 *p, float a, float b)
{
    *(__nv_bfloat162 *)p = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void kv_st2(__half *p, float a, float b) { *(__half2 *)p = __floats2half2_rn(a, b); }

/* 16 bytes (4 floats or 8 halves) from a 16-byte aligned address, widened to fp32. */
__device__ __forceinline__ void kv_ld16(const float *p, float *f)
{
    float4 v = *(const float4 *)p;
    f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
}
__device__ __forceinline__ void kv_ld16(const __nv_bfloat16 *p, float *f)
{
    uint4 v = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void kv_ld16(const __half *p, float *f)
{
    uint4 v = *(const uint4 *)p;
    const __half2 *h = (const __half2 *)&v;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

/* ---- Reductions ---- */

__device__ __forceinline__ float kv_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float kv_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the total.
 * red: 32 floats of shared memory, reusable right after the call returns. */
__device__ __forceinline__ float kv_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kv_warp_sum(v);
    __syncthreads(); /* a previous call's readers are done with red */
    if (lane == 0)
        red[wid] = v;
    __syncthreads();
    return kv_warp_sum(lane < nw ? red[lane] : 0.0f);
}

__device__ __forceinline__ float kv_block_max(float v, float *red)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kv_warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[wid] = v;
    __syncthreads();
    return kv_warp_max(lane < nw ? red[lane] : -INFINITY);
}

/* ---- PTX wrappers (sm_80+) ---- */

__device__ __forceinline__ uint32_t kv_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16-byte async copy global -> shared; src_bytes 0 writes zeros (nothing is read). */
__device__ __forceinline__ void kv_cp_async16(void *smem, const void *gmem, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(kv_smem_addr(smem)), "l"(gmem),
                 "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void kv_cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* Waits until at most 1 committed group is still in flight. */
__device__ __forceinline__ void kv_cp_async_wait1(void) { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

__device__ __forceinline__ void kv_ldmatrix_x4(uint32_t *r, const void *smem)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(kv_smem_addr(smem))
                 : "memory");
}
__device__ __forceinline__ void kv_ldmatrix_x4_trans(uint32_t *r, const void *smem)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(kv_smem_addr(smem))
                 : "memory");
}

/* d += a(16x16, row) . b(16x8, col), fp32 accumulators; the element type picks the PTX. */
__device__ __forceinline__ void kv_mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1,
                                            const __nv_bfloat16 *)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void kv_mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1, const __half *)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats as one register of two 16-bit values (lower index in the low half). */
__device__ __forceinline__ uint32_t kv_pack2(float lo, float hi, const __nv_bfloat16 *)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
__device__ __forceinline__ uint32_t kv_pack2(float lo, float hi, const __half *)
{
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&v;
}

#endif
