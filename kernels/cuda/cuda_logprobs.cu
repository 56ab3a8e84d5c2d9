/* Log-probabilities for OpenAI's `logprobs`: the twin of kc_logprobs_row
 * (kernels/cpu/logprobs.c). One block per row, three steps over the row:
 *   1. the max (NaN never wins);
 *   2. sum exp(x - max) in double (NaN adds nothing), reduced across the block:
 *      lse = max + log(sum), the token's logprob = x[token] - lse rounded to float once;
 *   3. the top n (<= 20): each thread keeps a sorted list of its own n best (value, id),
 *      then n rounds of a block-wide argmax over the threads' list heads, the winner's
 *      thread popping its head. Ties go to the lowest id, as on the CPU.
 * The double sum adds in another order than the CPU's; at float output the two agree to
 * the last bit or one ulp. */
#include <limits.h>

#include "cuda_common.cuh"

#define LP_THREADS 256
#define LP_WARPS (LP_THREADS / 32)

static_assert(KV_CUDA_LOGPROBS_TOP_MAX <= 32, "a warp holds the top list");

typedef struct lp_smem {
    float red_f[LP_WARPS];
    int32_t red_i[LP_WARPS];
    double red_d[LP_WARPS];
    float best_v;
    int32_t best_i;
    double lse;
} lp_smem;

/* (v, i) ranks above (w, j): larger, or equal with a lower id. */
__device__ __forceinline__ bool lp_above(float v, int32_t i, float w, int32_t j)
{
    return v > w || (v == w && i < j);
}

/* The block's best (v, i) into sm->best_v / best_i for every thread. */
__device__ void lp_block_best(float v, int32_t i, lp_smem *sm)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, off);
        int32_t oi = __shfl_xor_sync(0xffffffffu, i, off);
        if (lp_above(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    __syncthreads(); /* earlier readers of red_* and best_* are done */
    if (lane == 0) {
        sm->red_f[wid] = v;
        sm->red_i[wid] = i;
    }
    __syncthreads();
    if (wid == 0) {
        v = lane < LP_WARPS ? sm->red_f[lane] : -INFINITY;
        i = lane < LP_WARPS ? sm->red_i[lane] : INT_MAX;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, v, off);
            int32_t oi = __shfl_xor_sync(0xffffffffu, i, off);
            if (lp_above(ov, oi, v, i)) {
                v = ov;
                i = oi;
            }
        }
        if (lane == 0) {
            sm->best_v = v;
            sm->best_i = i;
        }
    }
    __syncthreads();
}

__device__ double lp_block_sum(double v, lp_smem *sm)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0)
        sm->red_d[wid] = v;
    __syncthreads();
    double all = 0.0;
    for (int w = 0; w < LP_WARPS; w++)
        all += sm->red_d[w];
    return all;
}

template <typename T>
__global__ void __launch_bounds__(LP_THREADS)
    logprobs_kernel(kv_cuda_logprob_row *out, const T *logits, int vocab, const int32_t *tokens, const int32_t *n_top)
{
    __shared__ lp_smem sm;
    int row = blockIdx.x;
    int want = n_top[row];
    if (want < 0)
        return; /* the whole block leaves together: no barrier is skipped by some threads only */
    if (want > KV_CUDA_LOGPROBS_TOP_MAX)
        want = KV_CUDA_LOGPROBS_TOP_MAX;
    if (want > vocab)
        want = vocab;
    const T *x = logits + (size_t)row * (size_t)vocab;

    float bv = -INFINITY;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = kv_ld(x + i);
        if (v > bv)
            bv = v;
    }
    lp_block_best(bv, 0, &sm);
    float maxl = sm.best_v;
    double sum = 0.0;
    if (isfinite(maxl))
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float v = kv_ld(x + i);
            if (v == v)
                sum += exp((double)v - (double)maxl);
        }
    sum = lp_block_sum(sum, &sm);
    double lse = isfinite(maxl) ? (double)maxl + log(sum) : (double)NAN;

    /* This thread's best `want` of its elements, best first. */
    float lv[KV_CUDA_LOGPROBS_TOP_MAX];
    int32_t li[KV_CUDA_LOGPROBS_TOP_MAX];
    int n = 0;
    for (int i = threadIdx.x; i < vocab && want > 0; i += blockDim.x) {
        float v = kv_ld(x + i);
        if (v != v)
            continue;
        if (n == want && !lp_above(v, i, lv[n - 1], li[n - 1]))
            continue;
        int j = n < want ? n++ : n - 1;
        while (j > 0 && lp_above(v, i, lv[j - 1], li[j - 1])) {
            lv[j] = lv[j - 1];
            li[j] = li[j - 1];
            j--;
        }
        lv[j] = v;
        li[j] = i;
    }
    kv_cuda_logprob_row *o = out + row;
    int head = 0, got = 0;
    for (int k = 0; k < want; k++) {
        float hv = head < n ? lv[head] : -INFINITY;
        int32_t hi = head < n ? li[head] : INT_MAX;
        lp_block_best(hv, hi, &sm);
        if (sm.best_i == INT_MAX)
            break; /* fewer numbers than asked (NaNs): every thread sees the same */
        if (head < n && hi == sm.best_i)
            head++;
        if (threadIdx.x == 0) {
            o->top_ids[k] = sm.best_i;
            o->top_logprobs[k] = (float)((double)sm.best_v - lse);
        }
        got++;
    }
    if (threadIdx.x == 0) {
        int32_t tok = tokens[row];
        o->logprob = tok >= 0 && tok < vocab ? (float)((double)kv_ld(x + tok) - lse) : NAN;
        o->n_top = got;
    }
}

extern "C" int kv_cuda_logprobs(kv_cuda_logprob_row *out, const void *logits, int rows, int vocab, kv_cuda_dtype dt,
                                const int32_t *tokens, const int32_t *n_top, void *stream, kv_err *err)
{
    if (rows < 0 || vocab <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda logprobs: bad shape rows=%d vocab=%d", rows, vocab);
    if (rows == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      logprobs_kernel<T><<<rows, LP_THREADS, 0, KV_STREAM(stream)>>>(out, (const T *)logits, vocab,
                                                                                     tokens, n_top));
    KV_CUDA_CHECK_LAUNCH("logprobs_kernel");
    return KV_OK;
}
