/* Element type conversion on the device, round to nearest even (f32 checkpoints loaded as
 * bf16/f16, or 16-bit activations widened for inspection). */
#include "cuda_common.cuh"

#define CVT_THREADS 256

template <typename D, typename S> __global__ void convert_kernel(D *dst, const S *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        kv_st(dst + i, kv_ld(src + i));
}

template <typename D>
static int launch_from(void *dst, const void *src, kv_cuda_dtype src_dt, size_t n, cudaStream_t s, kv_err *err)
{
    int grid = kv_cuda_grid_1d(n, CVT_THREADS);
    KV_DISPATCH_DTYPE(src_dt, S, convert_kernel<D, S><<<grid, CVT_THREADS, 0, s>>>((D *)dst, (const S *)src, n));
    KV_CUDA_CHECK_LAUNCH("convert_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_convert(void *dst, kv_cuda_dtype dst_dt, const void *src, kv_cuda_dtype src_dt, size_t n,
                               void *stream, kv_err *err)
{
    if (!kv_cuda_dtype_size(dst_dt) || !kv_cuda_dtype_size(src_dt))
        return kv_err_set(err, KV_EINVAL, "cuda convert: unknown dtype (%d -> %d)", (int)src_dt, (int)dst_dt);
    if (n == 0)
        return KV_OK;
    cudaStream_t s = KV_STREAM(stream);
    if (dst_dt == src_dt) {
        KV_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * kv_cuda_dtype_size(dst_dt), cudaMemcpyDeviceToDevice, s));
        return KV_OK;
    }
    KV_DISPATCH_DTYPE(dst_dt, D, return launch_from<D>(dst, src, src_dt, n, s, err));
    return KV_OK;
}
