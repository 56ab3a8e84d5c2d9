/* Greedy argmax, top-k and temperature / top-k / top-p sampling on the device. One block
 * per row; a row whose candidates exceed KV_CUDA_TOPK_MAX is left to the host. Top-k finds
 * the k-th largest logit exactly with a 4-pass radix select over order-preserving 32-bit
 * keys (block-wide histograms), gathers the candidates and sorts them (bitonic, in shared
 * memory) by value, ties by lowest id like the CPU sampler. Sampling uses the row's draw u
 * from the host's seeded stream (common/engine/sampler.c), so a request's tokens do not
 * depend on which device, or which batch, picked them. */
#include <limits.h>

#include "cuda_common.cuh"

#define SMP_THREADS 512
#define SMP_WARPS (SMP_THREADS / 32)

typedef struct smp_smem {
    uint32_t hist[256];
    uint32_t cand_key[KV_CUDA_TOPK_MAX];
    int32_t cand_id[KV_CUDA_TOPK_MAX];
    float cand_p[KV_CUDA_TOPK_MAX];
    float red_f[32];
    double red_d[SMP_WARPS];
    int32_t red_i[32];
    int32_t warp_cnt[SMP_WARPS];
    uint32_t sel_digit, sel_need;
    int32_t n_gt, n_eq, pick;
    float best_v;
    int32_t best_i;
} smp_smem;

/* Larger float -> larger key. NaN maps to 0 (never ranks above a number) and -0 to +0 so
 * that equal floats have equal keys. */
__device__ __forceinline__ uint32_t ord_key(float f)
{
    if (isnan(f))
        return 0u;
    uint32_t u = __float_as_uint(f);
    if (u == 0x80000000u)
        u = 0u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Largest value of the row and its lowest index (NaN never wins; an all -inf row gives 0),
 * into sm->best_v / sm->best_i for every thread. */
template <typename T> __device__ void block_argmax(const T *x, int vocab, smp_smem *sm)
{
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = kv_ld(x + i);
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
    __syncthreads(); /* earlier readers of red_* are done */
    if (lane == 0) {
        sm->red_f[wid] = bv;
        sm->red_i[wid] = bi;
    }
    __syncthreads();
    if (wid == 0) {
        bv = lane < SMP_WARPS ? sm->red_f[lane] : -INFINITY;
        bi = lane < SMP_WARPS ? sm->red_i[lane] : INT_MAX;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            int oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0) {
            sm->best_v = bv;
            sm->best_i = bi == INT_MAX ? 0 : bi;
        }
    }
    __syncthreads();
}

/* Prefix sums over the block in thread order: this thread's range [*start, *end) of the
 * running sum, and the sum of all. Each start is bit for bit the previous thread's end (and
 * the last end the total), so the ranges tile [0, total) with no gap or overlap for a draw
 * to fall in. In double, like every running sum of the sampler: float sums in another
 * order than the CPU's would move the draw across token boundaries far more often than
 * rounding of the probabilities themselves does. */
__device__ void block_scan(double v, double *start, double *end, double *total, smp_smem *sm)
{
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    double incl = v;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        double t = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off)
            incl += t;
    }
    double excl = __shfl_up_sync(0xffffffffu, incl, 1);
    if (lane == 0)
        excl = 0.0;
    __syncthreads();
    if (lane == 31)
        sm->red_d[wid] = incl;
    __syncthreads();
    double before = 0.0, all = 0.0;
    for (int w = 0; w < SMP_WARPS; w++) {
        double t = sm->red_d[w];
        if (w < wid)
            before += t;
        all += t;
    }
    *start = before + excl;
    *end = before + incl;
    *total = all;
}

__device__ double block_sum_d(double v, smp_smem *sm)
{
    double start, end, total;
    block_scan(v, &start, &end, &total, sm);
    return total;
}

/* The k largest of the row into sm->cand_key/cand_id[0..k), sorted by value descending,
 * ties by id ascending. 1 <= k <= min(vocab, KV_CUDA_TOPK_MAX). */
template <typename T> __device__ void select_topk(const T *x, int vocab, int k, smp_smem *sm)
{
    /* Radix select, 8 bits a pass from the top: after the passes `prefix` is the k-th largest
     * key and `need` how many elements equal to it belong in the top k. */
    uint32_t prefix = 0u, mask = 0u, need = (uint32_t)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            sm->hist[i] = 0u;
        __syncthreads();
        /* Logits share their top bits (sign, exponent), so most lanes of a warp hit the same
         * bin: one atomic per group of equal digits instead of 32 colliding ones. */
        int lane = threadIdx.x & 31;
        for (int base = 0; base < vocab; base += blockDim.x) {
            int i = base + threadIdx.x;
            uint32_t digit = 256u; /* no bin: past the end or outside the prefix */
            if (i < vocab) {
                uint32_t key = ord_key(kv_ld(x + i));
                if ((key & mask) == prefix)
                    digit = (key >> shift) & 255u;
            }
            unsigned peers = __match_any_sync(0xffffffffu, digit);
            if (digit < 256u && lane == __ffs(peers) - 1)
                atomicAdd(&sm->hist[digit], (uint32_t)__popc(peers));
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            /* Lane L owns digits 255-8L down to 248-8L: a warp scan from the top finds the
             * digit where the count from above first reaches `need`. */
            uint32_t c[8], tot = 0u;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                c[j] = sm->hist[255 - lane * 8 - j];
                tot += c[j];
            }
            uint32_t incl = tot;
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
                uint32_t t = __shfl_up_sync(0xffffffffu, incl, off);
                if (lane >= off)
                    incl += t;
            }
            unsigned ball = __ballot_sync(0xffffffffu, incl >= need);
            if (lane == __ffs(ball) - 1) {
                uint32_t cum = incl - tot;
                for (int j = 0; j < 8; j++) {
                    if (cum + c[j] >= need) {
                        sm->sel_digit = (uint32_t)(255 - lane * 8 - j);
                        sm->sel_need = need - cum;
                        break;
                    }
                    cum += c[j];
                }
            }
        }
        __syncthreads();
        prefix |= sm->sel_digit << shift;
        mask |= 255u << shift;
        need = sm->sel_need;
    }
    uint32_t thr = prefix;
    uint32_t eq_total = sm->hist[thr & 255u]; /* last pass: elements equal to thr */
    int n_gt = k - (int)need;
    bool take_all_eq = eq_total == need;
    if (threadIdx.x == 0) {
        sm->n_gt = 0;
        sm->n_eq = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        uint32_t key = ord_key(kv_ld(x + i));
        if (key > thr) {
            int p = atomicAdd(&sm->n_gt, 1);
            sm->cand_key[p] = key;
            sm->cand_id[p] = i;
        } else if (key == thr && take_all_eq) {
            int p = n_gt + atomicAdd(&sm->n_eq, 1);
            sm->cand_key[p] = key;
            sm->cand_id[p] = i;
        }
    }
    if (!take_all_eq) {
        /* More ties than room: the lowest ids win, so walk the row in index order. */
        int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
        int taken = 0;
        for (int base = 0; base < vocab && taken < (int)need; base += blockDim.x) {
            int i = base + threadIdx.x;
            bool f = i < vocab && ord_key(kv_ld(x + i)) == thr;
            unsigned ball = __ballot_sync(0xffffffffu, f);
            if (lane == 0)
                sm->warp_cnt[wid] = __popc(ball);
            __syncthreads();
            int before = taken, total = 0;
            for (int w = 0; w < SMP_WARPS; w++) {
                if (w < wid)
                    before += sm->warp_cnt[w];
                total += sm->warp_cnt[w];
            }
            before += __popc(ball & ((1u << lane) - 1u));
            if (f && before < (int)need) {
                sm->cand_key[n_gt + before] = thr;
                sm->cand_id[n_gt + before] = i;
            }
            taken += total;
            __syncthreads();
        }
    }
    __syncthreads();

    int P = 1;
    while (P < k)
        P <<= 1;
    for (int i = k + threadIdx.x; i < P; i += blockDim.x) {
        sm->cand_key[i] = 0u;
        sm->cand_id[i] = INT_MAX;
    }
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < P / 2; t += blockDim.x) {
                int i = 2 * t - (t & (stride - 1)), j = i + stride;
                uint32_t ki = sm->cand_key[i], kj = sm->cand_key[j];
                int32_t ii = sm->cand_id[i], ij = sm->cand_id[j];
                bool i_first = ki > kj || (ki == kj && ii < ij);
                bool up = (i & size) == 0;
                if (i_first != up) {
                    sm->cand_key[i] = kj;
                    sm->cand_key[j] = ki;
                    sm->cand_id[i] = ij;
                    sm->cand_id[j] = ii;
                }
            }
            __syncthreads();
        }
    }
}

template <typename T> __global__ void __launch_bounds__(SMP_THREADS) argmax_kernel(int32_t *ids, const T *logits, int vocab)
{
    __shared__ smp_smem sm;
    block_argmax(logits + (size_t)blockIdx.x * vocab, vocab, &sm);
    if (threadIdx.x == 0)
        ids[blockIdx.x] = sm.best_i;
}

template <typename T>
__global__ void __launch_bounds__(SMP_THREADS) topk_kernel(float *vals, int32_t *ids, const T *logits, int vocab, int k)
{
    __shared__ smp_smem sm;
    const T *x = logits + (size_t)blockIdx.x * vocab;
    select_topk(x, vocab, k, &sm);
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        int32_t id = sm.cand_id[j];
        vals[(size_t)blockIdx.x * k + j] = kv_ld(x + id);
        ids[(size_t)blockIdx.x * k + j] = id;
    }
}

/* Mirrors kc_sample: p_i = exp((x_i - max) / T); top-k keeps the k largest; top-p
 * the shortest sorted prefix reaching top_p of the kept mass; r = u * mass picks by
 * walking the cumulative sum. Sums in double; sequential sums over the sorted candidates
 * (thread 0) keep the CPU's order of additions. */
template <typename T>
__global__ void __launch_bounds__(SMP_THREADS)
    sample_kernel(int32_t *ids, const T *logits, int vocab, const kv_cuda_sample_params *params)
{
    __shared__ smp_smem sm;
    int row = blockIdx.x;
    const T *x = logits + (size_t)row * vocab;
    kv_cuda_sample_params p = params[row];

    block_argmax(x, vocab, &sm);
    int amax = sm.best_i;
    float maxl = sm.best_v;
    /* kc_sample's greedy cases: 1/t overflowing or a max of +-inf would make every weight NaN. */
    if (!(p.temperature > 0.0f) || !isfinite(1.0f / p.temperature) || vocab == 1 || !isfinite(maxl)) {
        if (threadIdx.x == 0)
            ids[row] = amax;
        return;
    }
    float inv_t = 1.0f / p.temperature;
    double u = p.u;
    int top_k = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
    bool use_top_p = p.top_p < 1.0f;
    if (top_k < vocab && top_k > KV_CUDA_TOPK_MAX) {
        if (threadIdx.x == 0)
            ids[row] = KV_CUDA_SAMPLE_ON_HOST;
        return;
    }

    if (top_k == vocab && !use_top_p) {
        /* Whole vocabulary: contiguous ranges per thread, a block scan, and the thread whose
         * range holds r walks it. */
        int per = (vocab + blockDim.x - 1) / blockDim.x;
        int b = min(vocab, (int)threadIdx.x * per), e = min(vocab, b + per);
        double mine = 0.0;
        for (int i = b; i < e; i++)
            mine += expf((kv_ld(x + i) - maxl) * inv_t);
        if (threadIdx.x == 0)
            sm.pick = amax; /* only if rounding leaves r outside every range */
        double start, end, total;
        block_scan(mine, &start, &end, &total, &sm);
        double r = u * total;
        if (mine > 0.0 && r >= start && r < end) {
            double cum = start;
            int pick = e - 1;
            for (int i = b; i < e; i++) {
                cum += expf((kv_ld(x + i) - maxl) * inv_t);
                if (r < cum) {
                    pick = i;
                    break;
                }
            }
            sm.pick = pick;
        }
        __syncthreads();
        if (threadIdx.x == 0)
            ids[row] = sm.pick;
        return;
    }

    int kc = top_k < KV_CUDA_TOPK_MAX ? top_k : KV_CUDA_TOPK_MAX;
    double kept = 0.0;
    if (top_k == vocab) {
        /* Top-p alone: the CPU first drops tokens below (1-top_p)/(n-1) of the mass and
         * measures top_p against what survives. */
        double tot = 0.0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            tot += expf((kv_ld(x + i) - maxl) * inv_t);
        tot = block_sum_d(tot, &sm);
        double cutoff = fmin((1.0 - (double)p.top_p) / (double)(vocab - 1) * tot, 1.0), mass = 0.0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float pi = expf((kv_ld(x + i) - maxl) * inv_t);
            mass += pi >= cutoff ? pi : 0.0f;
        }
        kept = block_sum_d(mass, &sm);
    }
    select_topk(x, vocab, kc, &sm);
    for (int j = threadIdx.x; j < kc; j += blockDim.x)
        sm.cand_p[j] = expf((kv_ld(x + sm.cand_id[j]) - maxl) * inv_t);
    __syncthreads();
    if (threadIdx.x != 0)
        return;
    int n = kc;
    if (top_k < vocab) {
        kept = 0.0;
        for (int j = 0; j < kc; j++)
            kept += sm.cand_p[j];
    }
    if (use_top_p) {
        double cum = 0.0, goal = (double)p.top_p * kept;
        int j = 0;
        for (; j < kc; j++) {
            cum += sm.cand_p[j];
            if (cum >= goal)
                break;
        }
        if (j == kc && kc < top_k) {
            ids[row] = KV_CUDA_SAMPLE_ON_HOST; /* the nucleus goes on past the candidates */
            return;
        }
        n = j < kc ? j + 1 : kc;
        kept = cum;
    }
    double r = u * kept, cum = 0.0;
    int pick = sm.cand_id[n - 1];
    for (int j = 0; j < n; j++) {
        cum += sm.cand_p[j];
        if (r < cum) {
            pick = sm.cand_id[j];
            break;
        }
    }
    ids[row] = pick;
}

static int check_rows(int rows, int vocab, kv_err *err)
{
    if (rows < 0 || vocab <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda sampling: bad shape rows=%d vocab=%d", rows, vocab);
    return KV_OK;
}

extern "C" int kv_cuda_argmax(int32_t *ids, const void *logits, int rows, int vocab, kv_cuda_dtype dt, void *stream,
                              kv_err *err)
{
    int rc = check_rows(rows, vocab, err);
    if (rc || rows == 0)
        return rc;
    KV_DISPATCH_DTYPE(dt, T,
                      argmax_kernel<T><<<rows, SMP_THREADS, 0, KV_STREAM(stream)>>>(ids, (const T *)logits, vocab));
    KV_CUDA_CHECK_LAUNCH("argmax_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_topk(float *vals, int32_t *ids, const void *logits, int rows, int vocab, int k,
                            kv_cuda_dtype dt, void *stream, kv_err *err)
{
    int rc = check_rows(rows, vocab, err);
    if (rc)
        return rc;
    if (k < 1 || k > vocab || k > KV_CUDA_TOPK_MAX)
        return kv_err_set(err, KV_EINVAL, "cuda topk: k=%d must be in 1..min(vocab %d, %d)", k, vocab,
                          KV_CUDA_TOPK_MAX);
    if (rows == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(dt, T,
                      topk_kernel<T><<<rows, SMP_THREADS, 0, KV_STREAM(stream)>>>(vals, ids, (const T *)logits, vocab,
                                                                                   k));
    KV_CUDA_CHECK_LAUNCH("topk_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_sample(int32_t *ids, const void *logits, int rows, int vocab, kv_cuda_dtype dt,
                              const kv_cuda_sample_params *params, void *stream, kv_err *err)
{
    int rc = check_rows(rows, vocab, err);
    if (rc || rows == 0)
        return rc;
    KV_DISPATCH_DTYPE(dt, T,
                      sample_kernel<T><<<rows, SMP_THREADS, 0, KV_STREAM(stream)>>>(ids, (const T *)logits, vocab,
                                                                                     params));
    KV_CUDA_CHECK_LAUNCH("sample_kernel");
    return KV_OK;
}
