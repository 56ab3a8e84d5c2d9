/* kv_cuda_block_hash: the KV transfer checksum (twin of kc_block_hash). Each CTA sums the
 * terms of one slice of one block with 16-byte loads, then adds its partial sum into the
 * block's output with an integer atomic: addition mod 2^32 is order-free, so the result
 * is the CPU's bit for bit. A final one-thread-per-block pass applies the outer fmix32. */
#include "cuda_common.cuh"

#define BH_THREADS 256
#define BH_SLICE_BYTES ((size_t)256 << 10) /* per CTA: a 2 MiB Llama-3-8B bf16 block takes 8 */

__device__ __forceinline__ uint32_t bh_fmix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

__device__ __forceinline__ uint32_t bh_term(uint32_t w, size_t i)
{
    return bh_fmix32(w ^ ((uint32_t)i * 0x9E3779B9u));
}

__global__ void __launch_bounds__(BH_THREADS)
    block_hash_partial(uint32_t *out, const unsigned char *base, size_t block_bytes, const int32_t *blocks)
{
    const uint4 *src = (const uint4 *)(base + (size_t)blocks[blockIdx.y] * block_bytes);
    size_t n_vec = block_bytes / 16;
    size_t slice_vec = BH_SLICE_BYTES / 16;
    size_t lo = (size_t)blockIdx.x * slice_vec, hi = lo + slice_vec < n_vec ? lo + slice_vec : n_vec;
    uint32_t sum = 0;
    for (size_t v = lo + threadIdx.x; v < hi; v += BH_THREADS) {
        uint4 w = src[v];
        size_t i = v * 4;
        sum += bh_term(w.x, i) + bh_term(w.y, i + 1) + bh_term(w.z, i + 2) + bh_term(w.w, i + 3);
    }
    for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __shared__ uint32_t warp_sums[BH_THREADS / 32];
    if ((threadIdx.x & 31) == 0)
        warp_sums[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        uint32_t s = 0;
        for (int w = 0; w < BH_THREADS / 32; w++)
            s += warp_sums[w];
        atomicAdd(out + blockIdx.y, s);
    }
}

__global__ void block_hash_finish(uint32_t *out, int n, uint32_t n_words)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = bh_fmix32(out[i] + n_words);
}

extern "C" int kv_cuda_block_hash(uint32_t *out, const void *base, size_t block_bytes, const int32_t *blocks, int n,
                                  void *stream, kv_err *err)
{
    if (n < 0 || !base || !out || !blocks || block_bytes == 0 || block_bytes % 16)
        return kv_err_set(err, KV_EINVAL, "cuda block_hash: bad arguments (n %d, block_bytes %zu: a multiple of 16)",
                          n, block_bytes);
    if (n == 0)
        return KV_OK;
    if (n > 65535)
        return kv_err_set(err, KV_EINVAL, "cuda block_hash: %d blocks in one call (at most 65535)", n);
    KV_CUDA_CHECK(cudaMemsetAsync(out, 0, (size_t)n * sizeof *out, KV_STREAM(stream)));
    unsigned slices = (unsigned)((block_bytes + BH_SLICE_BYTES - 1) / BH_SLICE_BYTES);
    block_hash_partial<<<dim3(slices, (unsigned)n), BH_THREADS, 0, KV_STREAM(stream)>>>(
        out, (const unsigned char *)base, block_bytes, blocks);
    KV_CUDA_CHECK_LAUNCH("block_hash_partial");
    block_hash_finish<<<(n + 255) / 256, 256, 0, KV_STREAM(stream)>>>(out, n, (uint32_t)(block_bytes / 4));
    KV_CUDA_CHECK_LAUNCH("block_hash_finish");
    return KV_OK;
}
