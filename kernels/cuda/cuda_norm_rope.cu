/* Embedding gather, RMSNorm (plain and fused with the residual add), elementwise add,
 * SwiGLU and RoPE: twins of kernels/cpu/elementwise.c and rope.c. The float expressions
 * are written in the CPU's order (and RoPE with explicit round-to-nearest products, which
 * nvcc would otherwise fuse into FMAs) so that f32 mode matches the CPU to a few ulps. */
#include "cuda_common.cuh"

#define ROW_THREADS 256
#define ELT_THREADS 256
#define ROPE_MAX_HALF 256

template <typename T>
__global__ void __launch_bounds__(ROW_THREADS) embed_kernel(T *out, const T *table, const int32_t *tokens, int dim,
                                                            int vocab)
{
    int32_t tok = tokens[blockIdx.x];
    T *o = out + (size_t)blockIdx.x * (size_t)dim;
    if (tok < 0 || tok >= vocab) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            kv_st(o + i, NAN);
        return;
    }
    const T *src = table + (size_t)tok * (size_t)dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = src[i];
}

/* Same expression as kc_rmsnorm: w * (inv * x) with inv = 1 / sqrtf(ss / dim + eps). */
__device__ __forceinline__ float rms_inv(float ss, int dim, float eps) { return 1.0f / sqrtf(ss / (float)dim + eps); }

template <typename T>
__global__ void __launch_bounds__(ROW_THREADS) rmsnorm_kernel(T *out, const T *x, const T *w, int dim, float eps)
{
    __shared__ float red[32];
    const T *xr = x + (size_t)blockIdx.x * (size_t)dim;
    T *o = out + (size_t)blockIdx.x * (size_t)dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = kv_ld(xr + i);
        ss = fmaf(v, v, ss);
    }
    float inv = rms_inv(kv_block_sum(ss, red), dim, eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        kv_st(o + i, kv_ld(w + i) * (inv * kv_ld(xr + i)));
}

/* The norm reads x as stored (rounded to T), the value the next layer's residual sees. */
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS) add_rmsnorm_kernel(T *out, T *x, const T *y, const T *w, int dim,
                                                                  float eps)
{
    __shared__ float red[32];
    T *xr = x + (size_t)blockIdx.x * (size_t)dim;
    const T *yr = y + (size_t)blockIdx.x * (size_t)dim;
    T *o = out + (size_t)blockIdx.x * (size_t)dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        kv_st(xr + i, kv_ld(xr + i) + kv_ld(yr + i));
        float v = kv_ld(xr + i);
        ss = fmaf(v, v, ss);
    }
    float inv = rms_inv(kv_block_sum(ss, red), dim, eps);
    /* Each thread rereads only the x elements it wrote itself: no barrier needed. */
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        kv_st(o + i, kv_ld(w + i) * (inv * kv_ld(xr + i)));
}

template <typename T>
__global__ void swiglu_rows_kernel(T *out, const T *gu, int rows, int ff)
{
    size_t n = (size_t)rows * (size_t)ff;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / (size_t)ff, j = i - r * (size_t)ff;
        const T *gate = gu + r * 2 * (size_t)ff;
        float g = kv_ld(gate + j);
        kv_st(out + i, g / (1.0f + expf(-g)) * kv_ld(gate + ff + j));
    }
}

/* RoPE works per token: the angles are shared by every head, so sin/cos once per pair
 * index into shared memory (then __syncthreads), then every (head, pair) rotates. */
__device__ __forceinline__ void rope_angles(float *cs, float *sn, int32_t pos, const float *inv_freq, int half)
{
    float p = (float)pos;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float angle = p * inv_freq[i];
        cs[i] = cosf(angle);
        sn[i] = sinf(angle);
    }
}

/* Pair i of one head from src into dst; the rounding of kc_rope. */
template <typename T>
__device__ __forceinline__ void rope_pair(T *dst, const T *src, int i, int half, float c, float s)
{
    float x0 = kv_ld(src + i), x1 = kv_ld(src + i + half);
    kv_st(dst + i, __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s)));
    kv_st(dst + i + half, __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s)));
}

/* One block per token: the q heads and then the k heads lie back to back in a qkv row, so
 * one loop rotates both into their buffers; v is copied. */
template <typename T>
__global__ void __launch_bounds__(ROW_THREADS) qkv_rope_kernel(T *q, T *k, T *v, const T *qkv, int n_heads,
                                                               int n_kv_heads, int head_dim, const int32_t *pos,
                                                               const float *inv_freq)
{
    __shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
    int half = head_dim / 2;
    rope_angles(cs, sn, pos[blockIdx.x], inv_freq, half);
    __syncthreads();
    size_t qd = (size_t)n_heads * (size_t)head_dim, kvd = (size_t)n_kv_heads * (size_t)head_dim;
    const T *row = qkv + (size_t)blockIdx.x * (qd + 2 * kvd);
    T *qt = q + (size_t)blockIdx.x * qd, *kt = k + (size_t)blockIdx.x * kvd;
    for (int e = threadIdx.x; e < (n_heads + n_kv_heads) * half; e += blockDim.x) {
        int h = e / half, i = e - h * half;
        T *dst = h < n_heads ? qt + (size_t)h * (size_t)head_dim : kt + (size_t)(h - n_heads) * (size_t)head_dim;
        rope_pair(dst, row + (size_t)h * (size_t)head_dim, i, half, cs[i], sn[i]);
    }
    const T *vs = row + qd + kvd;
    T *vt = v + (size_t)blockIdx.x * kvd;
    for (size_t e = threadIdx.x; e < kvd; e += blockDim.x)
        vt[e] = vs[e];
}

extern "C" int kv_cuda_embed(void *out, const void *table, const int32_t *tokens, int n, int dim, int vocab,
                             kv_cuda_dtype dt, void *stream, kv_err *err)
{
    if (n < 0 || dim <= 0 || vocab <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda embed: bad shape n=%d dim=%d vocab=%d", n, dim, vocab);
    if (n == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      embed_kernel<T><<<n, ROW_THREADS, 0, KV_STREAM(stream)>>>((T *)out, (const T *)table, tokens,
                                                                                 dim, vocab));
    KV_CUDA_CHECK_LAUNCH("embed_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_rmsnorm(void *out, const void *x, const void *weight, int rows, int dim, float eps,
                               kv_cuda_dtype dt, void *stream, kv_err *err)
{
    if (rows < 0 || dim <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda rmsnorm: bad shape rows=%d dim=%d", rows, dim);
    if (rows == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      rmsnorm_kernel<T><<<rows, ROW_THREADS, 0, KV_STREAM(stream)>>>((T *)out, (const T *)x,
                                                                                      (const T *)weight, dim, eps));
    KV_CUDA_CHECK_LAUNCH("rmsnorm_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_add_rmsnorm(void *out, void *x, const void *y, const void *weight, int rows, int dim,
                                   float eps, kv_cuda_dtype dt, void *stream, kv_err *err)
{
    if (rows < 0 || dim <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda add_rmsnorm: bad shape rows=%d dim=%d", rows, dim);
    if (out == x)
        return kv_err_set(err, KV_EINVAL, "cuda add_rmsnorm: out must not alias x");
    if (rows == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      add_rmsnorm_kernel<T><<<rows, ROW_THREADS, 0, KV_STREAM(stream)>>>(
                          (T *)out, (T *)x, (const T *)y, (const T *)weight, dim, eps));
    KV_CUDA_CHECK_LAUNCH("add_rmsnorm_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_swiglu_rows(void *out, const void *gu, int rows, int ff, kv_cuda_dtype dt, void *stream,
                                   kv_err *err)
{
    if (rows < 0 || ff <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda swiglu_rows: bad shape rows=%d ff=%d", rows, ff);
    size_t n = (size_t)rows * (size_t)ff;
    if (n == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      swiglu_rows_kernel<T><<<kv_cuda_grid_1d(n, ELT_THREADS), ELT_THREADS, 0, KV_STREAM(stream)>>>(
                          (T *)out, (const T *)gu, rows, ff));
    KV_CUDA_CHECK_LAUNCH("swiglu_rows_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_qkv_rope(void *q, void *k, void *v, const void *qkv, int n_tokens, int n_heads, int n_kv_heads,
                                int head_dim, const int32_t *pos, const float *inv_freq, kv_cuda_dtype dt,
                                void *stream, kv_err *err)
{
    if (n_tokens < 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || head_dim % 2 ||
        head_dim / 2 > ROPE_MAX_HALF)
        return kv_err_set(err, KV_EINVAL,
                          "cuda qkv_rope: bad shape tokens=%d heads=%d kv_heads=%d head_dim=%d (even, <= %d)",
                          n_tokens, n_heads, n_kv_heads, head_dim, 2 * ROPE_MAX_HALF);
    if (n_tokens == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      qkv_rope_kernel<T><<<n_tokens, ROW_THREADS, 0, KV_STREAM(stream)>>>(
                          (T *)q, (T *)k, (T *)v, (const T *)qkv, n_heads, n_kv_heads, head_dim, pos, inv_freq));
    KV_CUDA_CHECK_LAUNCH("qkv_rope_kernel");
    return KV_OK;
}

