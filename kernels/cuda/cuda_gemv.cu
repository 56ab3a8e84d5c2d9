/* Small-batch projection for decode (twin of kc_matmul_gemv): y[m][n] = x[m][k] . w[n][k]^T
 * for 1 <= m <= KV_CUDA_GEMV_MAX_ROWS with 16-bit weights. At decode's few rows a
 * projection reads each weight once and does 2m FLOPs per weight: it is memory bound, and
 * what matters is keeping enough 16-byte loads in flight. Each warp owns output rows (the
 * grid covers n, 8 warps a block); each lane streams its share of the weight row in 16-byte
 * vectors, GEMV_UNROLL of them issued before the first is used, with the streaming cache
 * hint (read once); x's m rows, read by every warp, come through L1. Products accumulate in
 * fp32 per lane, then one warp reduction per output. */
#include "cuda_common.cuh"

#define GEMV_WARPS 8
#define GEMV_UNROLL 4

template <typename T> __device__ __forceinline__ float2 pair_to_f2(uint32_t u);
template <> __device__ __forceinline__ float2 pair_to_f2<__nv_bfloat16>(uint32_t u)
{
    __nv_bfloat162 h;
    memcpy(&h, &u, sizeof h);
    return __bfloat1622float2(h);
}
template <> __device__ __forceinline__ float2 pair_to_f2<__half>(uint32_t u)
{
    __half2 h;
    memcpy(&h, &u, sizeof h);
    return __half22float2(h);
}

/* acc + the dot product of two vectors of 8 elements. */
template <typename T> __device__ __forceinline__ float dot8(float acc, uint4 a, uint4 b)
{
    const uint32_t av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 fa = pair_to_f2<T>(av[j]), fb = pair_to_f2<T>(bv[j]);
        acc = fmaf(fa.x, fb.x, acc);
        acc = fmaf(fa.y, fb.y, acc);
    }
    return acc;
}

template <typename T, int M>
__global__ void __launch_bounds__(GEMV_WARPS * 32) gemv_kernel(T *y, const T *x, const T *w, int n, int k)
{
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= n)
        return; /* the whole warp: no shuffle below is left half-attended */
    int nv = k >> 3;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)row * (size_t)k);
    const uint4 *xr = reinterpret_cast<const uint4 *>(x);
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++)
        acc[m] = 0.0f;
    for (int base = lane; base < nv; base += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int i = base + u * 32;
            wv[u] = i < nv ? __ldcs(wr + i) : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int i = base + u * 32;
            if (i < nv) {
#pragma unroll
                for (int m = 0; m < M; m++)
                    acc[m] = dot8<T>(acc[m], wv[u], __ldg(xr + (size_t)m * (size_t)nv + i));
            }
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        float s = kv_warp_sum(acc[m]);
        if (lane == 0)
            kv_st(y + (size_t)m * (size_t)n + row, s);
    }
}

extern "C" int kv_cuda_gemv_fits(const void *x, const void *w, int m, int k, kv_cuda_dtype dt)
{
    return (dt == KV_CUDA_BF16 || dt == KV_CUDA_F16) && m >= 1 && m <= KV_CUDA_GEMV_MAX_ROWS && k > 0 &&
           k % 8 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0;
}

template <typename T>
static void launch(int m, T *y, const T *x, const T *w, int n, int k, cudaStream_t s)
{
    dim3 grid((unsigned)((n + GEMV_WARPS - 1) / GEMV_WARPS)), block(GEMV_WARPS * 32);
    switch (m) {
    case 1: gemv_kernel<T, 1><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 2: gemv_kernel<T, 2><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 3: gemv_kernel<T, 3><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    default: gemv_kernel<T, 4><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    }
}

extern "C" int kv_cuda_gemv(void *y, const void *x, const void *w, int m, int n, int k, kv_cuda_dtype dt,
                            void *stream, kv_err *err)
{
    if (n <= 0 || !kv_cuda_gemv_fits(x, w, m, k, dt))
        return kv_err_set(err, KV_EINVAL,
                          "cuda gemv: %s m=%d n=%d k=%d does not fit (bf16/f16, 1 <= m <= %d, k %% 8 == 0, "
                          "16-byte aligned x and w)",
                          kv_cuda_dtype_name(dt), m, n, k, KV_CUDA_GEMV_MAX_ROWS);
    cudaStream_t s = KV_STREAM(stream);
    if (dt == KV_CUDA_BF16)
        launch<__nv_bfloat16>(m, (__nv_bfloat16 *)y, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)w, n, k, s);
    else
        launch<__half>(m, (__half *)y, (const __half *)x, (const __half *)w, n, k, s);
    KV_CUDA_CHECK_LAUNCH("gemv_kernel");
    return KV_OK;
}
