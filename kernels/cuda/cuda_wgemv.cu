/* Decode projections on weights kept in ggml's 32-element block formats (q8_0, q4_0, q4_1),
 * f32 activations, f32 out: y[m][n] = x[m][k] . W[n][k]^T with W dequantized in registers.
 * CPU twin: kernels/cpu/isa/scalar.c's unpack_q8_0 / unpack_q4_0 / unpack_q4_1 (the same
 * block layouts and nibble order). Unlike the CPU kernels the activations are not quantized
 * to int8 first (the GPU has the FLOPs to spare): the result is dequantize-then-f32, which
 * is what the CPU kernels approximate, and what the test compares against.
 *
 * Memory-bound like cuda_gemv.cu: one warp per output row, each lane one 32-element block
 * at a time (the warp covers 32 consecutive blocks, so its loads of the row are contiguous),
 * the block's d (and m) once, its 32 weights against each of the m activation rows (read
 * through L1: every warp reads them), fp32 accumulation, one warp reduction per output.
 * Blocks are 2-byte aligned at best (34 / 18 / 20 bytes), so weights are read 16 bits at a
 * time through the read-only path. */
#include "cuda_common.cuh"

#define WGEMV_WARPS 8

__device__ __forceinline__ float half_at(const uint8_t *p)
{
    return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short *>(p))));
}

/* The block's 32 weights as integers (q8_0: signed bytes; q4: 16 low nibbles then 16 high,
 * minus 8 for q4_0, as ggml stores them). */
template <int T> __device__ __forceinline__ void unpack(const uint8_t *qs, float q[32])
{
    const unsigned short *p = reinterpret_cast<const unsigned short *>(qs);
    if (T == KV_TYPE_Q8_0) {
#pragma unroll
        for (int j = 0; j < 16; j++) {
            unsigned short u = __ldg(p + j);
            q[2 * j] = (float)(int8_t)(u & 0xFF);
            q[2 * j + 1] = (float)(int8_t)(u >> 8);
        }
    } else {
        const float off = T == KV_TYPE_Q4_0 ? 8.0f : 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            unsigned short u = __ldg(p + j);
            q[2 * j] = (float)(u & 0x0F) - off;
            q[2 * j + 1] = (float)((u >> 8) & 0x0F) - off;
            q[2 * j + 16] = (float)((u >> 4) & 0x0F) - off;
            q[2 * j + 17] = (float)(u >> 12) - off;
        }
    }
}

template <int T> struct wfmt;
template <> struct wfmt<KV_TYPE_Q8_0> { static constexpr int bytes = 34, qs = 2; };
template <> struct wfmt<KV_TYPE_Q4_0> { static constexpr int bytes = 18, qs = 2; };
template <> struct wfmt<KV_TYPE_Q4_1> { static constexpr int bytes = 20, qs = 4; };

template <int T, int M>
__global__ void __launch_bounds__(WGEMV_WARPS * 32) wgemv_kernel(float *y, const float *x, const uint8_t *w, int n, int k)
{
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * WGEMV_WARPS + (threadIdx.x >> 5);
    if (row >= n)
        return; /* the whole warp: no shuffle below is left half-attended */
    const int nb = k / 32;
    const uint8_t *wr = w + (size_t)row * (size_t)nb * wfmt<T>::bytes;
    float acc[M];
#pragma unroll
    for (int v = 0; v < M; v++)
        acc[v] = 0.0f;
    for (int b = lane; b < nb; b += 32) {
        const uint8_t *blk = wr + (size_t)b * wfmt<T>::bytes;
        const float d = half_at(blk), mn = T == KV_TYPE_Q4_1 ? half_at(blk + 2) : 0.0f;
        float q[32];
        unpack<T>(blk + wfmt<T>::qs, q);
#pragma unroll
        for (int v = 0; v < M; v++) {
            const float4 *xv = reinterpret_cast<const float4 *>(x + (size_t)v * (size_t)k + (size_t)b * 32);
            float s = 0.0f, sx = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float4 a = __ldg(xv + j);
                s = fmaf(q[4 * j], a.x, s);
                s = fmaf(q[4 * j + 1], a.y, s);
                s = fmaf(q[4 * j + 2], a.z, s);
                s = fmaf(q[4 * j + 3], a.w, s);
                if (T == KV_TYPE_Q4_1)
                    sx += (a.x + a.y) + (a.z + a.w);
            }
            acc[v] = fmaf(d, s, acc[v]);
            if (T == KV_TYPE_Q4_1)
                acc[v] = fmaf(mn, sx, acc[v]);
        }
    }
#pragma unroll
    for (int v = 0; v < M; v++) {
        const float s = kv_warp_sum(acc[v]);
        if (lane == 0)
            y[(size_t)v * (size_t)n + row] = s;
    }
}

template <int T> static void launch(int m, float *y, const float *x, const uint8_t *w, int n, int k, cudaStream_t s)
{
    dim3 grid((unsigned)((n + WGEMV_WARPS - 1) / WGEMV_WARPS)), block(WGEMV_WARPS * 32);
    switch (m) {
    case 1: wgemv_kernel<T, 1><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 2: wgemv_kernel<T, 2><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 3: wgemv_kernel<T, 3><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 4: wgemv_kernel<T, 4><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 5: wgemv_kernel<T, 5><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 6: wgemv_kernel<T, 6><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    case 7: wgemv_kernel<T, 7><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    default: wgemv_kernel<T, 8><<<grid, block, 0, s>>>(y, x, w, n, k); break;
    }
}

extern "C" int kv_cuda_wgemv(float *y, const float *x, const void *w, kv_type wt, int m, int n, int k, void *stream,
                             kv_err *err)
{
    if (wt != KV_TYPE_Q8_0 && wt != KV_TYPE_Q4_0 && wt != KV_TYPE_Q4_1)
        return kv_err_set(err, KV_EUNSUPPORTED, "cuda wgemv: no kernel for weight type %d (q8_0, q4_0, q4_1 only)",
                          (int)wt);
    if (!y || !x || !w || m < 1 || m > KV_CUDA_WGEMV_MAX_ROWS || n < 1 || k < 32 || k % 32 ||
        (uintptr_t)x % 16 || (uintptr_t)w % 2)
        return kv_err_set(err, KV_EINVAL,
                          "cuda wgemv: m=%d n=%d k=%d does not fit (1 <= m <= %d, n >= 1, k a positive multiple of "
                          "32, x 16-byte and w 2-byte aligned)",
                          m, n, k, KV_CUDA_WGEMV_MAX_ROWS);
    cudaStream_t s = KV_STREAM(stream);
    const uint8_t *wb = static_cast<const uint8_t *>(w);
    if (wt == KV_TYPE_Q8_0)
        launch<KV_TYPE_Q8_0>(m, y, x, wb, n, k, s);
    else if (wt == KV_TYPE_Q4_0)
        launch<KV_TYPE_Q4_0>(m, y, x, wb, n, k, s);
    else
        launch<KV_TYPE_Q4_1>(m, y, x, wb, n, k, s);
    KV_CUDA_CHECK_LAUNCH("wgemv_kernel");
    return KV_OK;
}
