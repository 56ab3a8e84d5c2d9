/* Paged decode attention split over the KV length (Flash-Decoding); twin of
 * kc_attention_decode.
 *
 * Grid (split, kv head x head chunk, sequence). A CTA owns every query head that shares one
 * kv head (up to GMAX of them), so each K/V row is read from memory once for the whole GQA
 * group, and one contiguous piece of the sequence's keys. Inside, a "lane group" of LPK
 * lanes covers one key row with 16-byte loads (head_dim 64/128) and keeps its own online
 * softmax state (max, sum, output slice) over the keys it visits: no shared memory or
 * barriers in the main loop. At the end the lane groups merge by shuffles, the 4 warps
 * through shared memory, and the CTA writes either the final output (one split) or a
 * normalised partial output plus its log-sum-exp, which a small second kernel combines. */
#include "cuda_common.cuh"

#define DEC_THREADS 128
#define DEC_WARPS 4
#define DEC_SPLIT_ALIGN 16 /* split boundaries on multiples of 16 keys (block starts for block size 16) */
#define DEC_MIN_SPLIT_KEYS 256

/* f32 keeps the CPU's expf; bf16/f16 outputs cannot see the difference of the fast one. */
__device__ __forceinline__ float dec_exp(float x, const float *) { return expf(x); }
__device__ __forceinline__ float dec_exp(float x, const void *) { return __expf(x); }

/* Lane `li` of a lane group loads dims (j*LPK + li)*VEC .. +VEC-1, j < NV, of one row. */
template <typename T, int VEC, int LPK, int NV>
__device__ __forceinline__ void dec_load_row(float *f, const T *row, bool valid, int hd, int li)
{
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int d0 = (j * LPK + li) * VEC;
        if constexpr (VEC * sizeof(T) == 16) {
            if (valid && d0 < hd) {
                kv_ld16(row + d0, f + j * VEC);
            } else {
#pragma unroll
                for (int e = 0; e < VEC; e++)
                    f[j * VEC + e] = 0.0f;
            }
        } else {
#pragma unroll
            for (int e = 0; e < VEC; e++)
                f[j * VEC + e] = valid && d0 + e < hd ? kv_ld(row + d0 + e) : 0.0f;
        }
    }
}

template <typename T, int VEC, int LPK, int NV, int GMAX>
__global__ void __launch_bounds__(DEC_THREADS)
    decode_split_kernel(T *out, float *part_o, float *part_lse, const T *q, kv_cuda_paged_kv kv, const int32_t *tables,
                        int table_stride, const int32_t *seq_lens, int n_heads, int group, int n_splits, float scale)
{
    const int KPW = 32 / LPK;      /* keys per warp per step (one per lane group) */
    const int DPL = NV * VEC;      /* dims per lane */
    const int HDMAX = LPK * DPL;
    const int U = GMAX >= 8 ? 1 : 2; /* steps scored per softmax update; 1 keeps GMAX 8 out of spills */
    __shared__ float sm_m[DEC_WARPS][GMAX], sm_l[DEC_WARPS][GMAX];
    __shared__ float sm_o[DEC_WARPS][GMAX][HDMAX];
    const T *tag = 0;

    int hd = kv.head_dim;
    int split = blockIdx.x, seq = blockIdx.z;
    int hchunks = (group + GMAX - 1) / GMAX;
    int kh = blockIdx.y / hchunks;
    int h0 = kh * group + (int)(blockIdx.y - kh * hchunks) * GMAX;
    int nh = min(GMAX, (kh + 1) * group - h0);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, sub = lane / LPK, li = lane % LPK;

    /* Pieces are cut per sequence, so any n_splits is correct for any length. */
    int len = seq_lens[seq];
    int chunk = (len + n_splits - 1) / n_splits;
    chunk = (chunk + DEC_SPLIT_ALIGN - 1) / DEC_SPLIT_ALIGN * DEC_SPLIT_ALIGN;
    int kbeg = split * chunk, kend = min(len, kbeg + chunk);

    float qr[GMAX][DPL];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        const T *qh = q + ((size_t)seq * n_heads + h0 + g) * hd;
#pragma unroll
        for (int j = 0; j < NV; j++)
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                int d = (j * LPK + li) * VEC + e;
                qr[g][j * VEC + e] = g < nh && d < hd ? kv_ld(qh + d) : 0.0f;
            }
    }
    float m[GMAX], l[GMAX], acc[GMAX][DPL];
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++)
            acc[g][i] = 0.0f;
    }

    const int32_t *table = tables + (size_t)seq * (size_t)table_stride;
    const T *pool = (const T *)kv.pool;
    size_t row_elems = (size_t)kv.n_kv_heads * hd, head_off = (size_t)kh * hd;

    /* kb depends only on the warp: every lane runs the same iterations (shuffles inside). */
    for (int kb = kbeg + warp * KPW * U; kb < kend; kb += DEC_WARPS * KPW * U) {
        float kf[U][DPL], vf[U][DPL];
        bool valid[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int key = kb + u * KPW + sub;
            valid[u] = key < kend;
            const T *kr = pool;
            if (valid[u])
                kr = pool + (size_t)table[key / kv.block_size] * kv.block_stride +
                     (size_t)(key % kv.block_size) * row_elems + head_off;
            dec_load_row<T, VEC, LPK, NV>(kf[u], kr, valid[u], hd, li);
            dec_load_row<T, VEC, LPK, NV>(vf[u], kr + kv.v_offset, valid[u], hd, li);
        }
        float sc[U][GMAX];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int g = 0; g < GMAX; g++) {
                float part = 0.0f;
#pragma unroll
                for (int i = 0; i < DPL; i++)
                    part = fmaf(qr[g][i], kf[u][i], part);
#pragma unroll
                for (int off = LPK / 2; off > 0; off >>= 1) /* stays inside the lane group */
                    part += __shfl_xor_sync(0xffffffffu, part, off);
                sc[u][g] = valid[u] ? part * scale : -INFINITY;
            }
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            float mx = sc[0][g];
#pragma unroll
            for (int u = 1; u < U; u++)
                mx = fmaxf(mx, sc[u][g]);
            float m_new = fmaxf(m[g], mx);
            if (m_new == -INFINITY) /* no visible key for this lane group yet */
                continue;
            float alpha = dec_exp(m[g] - m_new, tag);
            l[g] *= alpha;
#pragma unroll
            for (int i = 0; i < DPL; i++)
                acc[g][i] *= alpha;
#pragma unroll
            for (int u = 0; u < U; u++) {
                float p = dec_exp(sc[u][g] - m_new, tag);
                l[g] += p;
#pragma unroll
                for (int i = 0; i < DPL; i++)
                    acc[g][i] = fmaf(p, vf[u][i], acc[g][i]);
            }
            m[g] = m_new;
        }
    }

    /* Merge the warp's lane groups (xor over the lane-group bits). */
#pragma unroll
    for (int off = LPK; off < 32; off <<= 1) {
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            float mo = __shfl_xor_sync(0xffffffffu, m[g], off), lo = __shfl_xor_sync(0xffffffffu, l[g], off);
            float mn = fmaxf(m[g], mo);
            float a = mn == -INFINITY ? 0.0f : dec_exp(m[g] - mn, tag);
            float b = mn == -INFINITY ? 0.0f : dec_exp(mo - mn, tag);
            l[g] = l[g] * a + lo * b;
#pragma unroll
            for (int i = 0; i < DPL; i++)
                acc[g][i] = acc[g][i] * a + __shfl_xor_sync(0xffffffffu, acc[g][i], off) * b;
            m[g] = mn;
        }
    }
    if (sub == 0) {
#pragma unroll
        for (int g = 0; g < GMAX; g++) {
            if (li == 0) {
                sm_m[warp][g] = m[g];
                sm_l[warp][g] = l[g];
            }
#pragma unroll
            for (int j = 0; j < NV; j++)
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    int d = (j * LPK + li) * VEC + e;
                    if (d < HDMAX)
                        sm_o[warp][g][d] = acc[g][j * VEC + e];
                }
        }
    }
    __syncthreads();

    /* Merge the warps; every CTA writes, an empty piece as (0, -inf). */
    for (int idx = threadIdx.x; idx < nh * hd; idx += DEC_THREADS) {
        int g = idx / hd, d = idx - g * hd;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
            mx = fmaxf(mx, sm_m[w][g]);
        float lsum = 0.0f, osum = 0.0f;
        if (mx != -INFINITY) {
#pragma unroll
            for (int w = 0; w < DEC_WARPS; w++) {
                float f = dec_exp(sm_m[w][g] - mx, tag);
                lsum += sm_l[w][g] * f;
                osum += sm_o[w][g][d] * f;
            }
        }
        float val = lsum > 0.0f ? osum / lsum : 0.0f;
        size_t hi = (size_t)seq * n_heads + h0 + g;
        if (n_splits == 1) {
            kv_st(out + hi * hd + d, val);
        } else {
            part_o[(hi * n_splits + split) * hd + d] = val;
            if (d == 0)
                part_lse[hi * n_splits + split] = lsum > 0.0f ? mx + logf(lsum) : -INFINITY;
        }
    }
}

/* One block per (sequence, head): weights exp(lse_j - max) over the pieces. */
template <typename T>
__global__ void __launch_bounds__(DEC_THREADS)
    decode_combine_kernel(T *out, const float *part_o, const float *part_lse, int hd, int n_splits)
{
    __shared__ float w[KV_CUDA_DECODE_MAX_SPLITS];
    __shared__ float inv_sum;
    size_t hi = blockIdx.x;
    const float *lse = part_lse + hi * n_splits;
    if (threadIdx.x < 32) {
        int lane = threadIdx.x;
        float mx = -INFINITY;
        for (int j = lane; j < n_splits; j += 32)
            mx = fmaxf(mx, lse[j]);
        mx = kv_warp_max(mx);
        float sum = 0.0f;
        for (int j = lane; j < n_splits; j += 32) {
            float e = lse[j] == -INFINITY ? 0.0f : expf(lse[j] - mx);
            w[j] = e;
            sum += e;
        }
        sum = kv_warp_sum(sum);
        if (lane == 0)
            inv_sum = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    __syncthreads();
    const float *po = part_o + hi * n_splits * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < n_splits; j++)
            if (w[j] != 0.0f)
                acc = fmaf(w[j], po[(size_t)j * hd + d], acc);
        kv_st(out + hi * hd + d, acc * inv_sum);
    }
}

/* ---- Host side ---- */

static int pick_gmax(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

extern "C" int kv_cuda_decode_splits(int n_seqs, int n_heads, int n_kv_heads, int max_seq_len, int n_sms)
{
    if (n_seqs <= 0 || n_kv_heads <= 0 || n_heads < n_kv_heads || max_seq_len <= 0 || n_sms <= 0)
        return 1;
    int group = n_heads / n_kv_heads, gm = pick_gmax(group);
    long long ctas = (long long)n_seqs * n_kv_heads * ((group + gm - 1) / gm);
    long long want = (2LL * n_sms + ctas - 1) / ctas;
    long long by_len = ((long long)max_seq_len + DEC_MIN_SPLIT_KEYS - 1) / DEC_MIN_SPLIT_KEYS;
    long long s = want < by_len ? want : by_len;
    if (s > KV_CUDA_DECODE_MAX_SPLITS)
        s = KV_CUDA_DECODE_MAX_SPLITS;
    return s < 1 ? 1 : (int)s;
}

extern "C" size_t kv_cuda_decode_workspace_bytes(int n_seqs, int n_heads, int head_dim, int n_splits)
{
    if (n_splits <= 1 || n_seqs <= 0 || n_heads <= 0 || head_dim <= 0)
        return 0;
    size_t parts = (size_t)n_seqs * (size_t)n_heads * (size_t)n_splits;
    return align256(parts * (size_t)head_dim * sizeof(float)) + parts * sizeof(float);
}

typedef struct dec_args {
    void *out;
    float *part_o, *part_lse;
    const void *q;
    kv_cuda_paged_kv kv;
    const int32_t *tables;
    int table_stride;
    const int32_t *seq_lens;
    int n_seqs, n_heads, group, n_splits;
    float scale;
    cudaStream_t stream;
} dec_args;

template <typename T, int VEC, int LPK, int NV, int GMAX> static int launch_split(const dec_args *a, kv_err *err)
{
    int hchunks = (a->group + GMAX - 1) / GMAX;
    dim3 grid((unsigned)a->n_splits, (unsigned)(a->kv.n_kv_heads * hchunks), (unsigned)a->n_seqs);
    decode_split_kernel<T, VEC, LPK, NV, GMAX><<<grid, DEC_THREADS, 0, a->stream>>>(
        (T *)a->out, a->part_o, a->part_lse, (const T *)a->q, a->kv, a->tables, a->table_stride, a->seq_lens,
        a->n_heads, a->group, a->n_splits, a->scale);
    KV_CUDA_CHECK_LAUNCH("decode_split_kernel");
    return KV_OK;
}

/* 16-byte rows of head_dim HD: LPK = lanes per row. */
template <typename T, int HD> static int launch_fast(const dec_args *a, kv_err *err)
{
    const int VEC = 16 / (int)sizeof(T), LPK = HD / VEC;
    switch (pick_gmax(a->group)) {
    case 1: return launch_split<T, VEC, LPK, 1, 1>(a, err);
    case 2: return launch_split<T, VEC, LPK, 1, 2>(a, err);
    case 4: return launch_split<T, VEC, LPK, 1, 4>(a, err);
    default: return launch_split<T, VEC, LPK, 1, 8>(a, err);
    }
}

template <typename T> static int launch_all(const dec_args *a, int fast, kv_err *err)
{
    int rc;
    if (fast && a->kv.head_dim == 128)
        rc = launch_fast<T, 128>(a, err);
    else if (fast && a->kv.head_dim == 64)
        rc = launch_fast<T, 64>(a, err);
    else /* any head_dim <= 256, scalar loads, speed irrelevant */
        rc = launch_split<T, 1, 32, 8, 8>(a, err);
    if (rc || a->n_splits == 1)
        return rc;
    decode_combine_kernel<T><<<a->n_seqs * a->n_heads, DEC_THREADS, 0, a->stream>>>(
        (T *)a->out, a->part_o, a->part_lse, a->kv.head_dim, a->n_splits);
    KV_CUDA_CHECK_LAUNCH("decode_combine_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_attention_decode(void *out, const void *q, const kv_cuda_paged_kv *kv,
                                        const int32_t *block_tables, int table_stride, const int32_t *seq_lens,
                                        int n_seqs, int n_heads, int n_splits, void *workspace,
                                        size_t workspace_bytes, void *stream, kv_err *err)
{
    int hd = kv->head_dim;
    /* 65535: grid.y holds the KV heads times their query-head chunks */
    if (!kv->pool || kv->block_size <= 0 || kv->n_kv_heads <= 0 || n_heads <= 0 || n_heads > 65535 ||
        n_heads % kv->n_kv_heads)
        return kv_err_set(err, KV_EINVAL, "cuda decode attention: bad heads (%d query, %d kv) or pool", n_heads,
                          kv->n_kv_heads);
    if (hd <= 0 || hd % 2 || hd > 256)
        return kv_err_set(err, KV_EUNSUPPORTED, "cuda decode attention: head_dim %d (must be even, <= 256)", hd);
    if (n_seqs < 0 || n_seqs > 65535 || table_stride < 0 || n_splits < 1 || n_splits > KV_CUDA_DECODE_MAX_SPLITS)
        return kv_err_set(err, KV_EINVAL, "cuda decode attention: bad batch (%d sequences, %d splits)", n_seqs,
                          n_splits);
    if (n_seqs == 0)
        return KV_OK;
    size_t need = kv_cuda_decode_workspace_bytes(n_seqs, n_heads, hd, n_splits);
    if (need > 0 && (!workspace || workspace_bytes < need))
        return kv_err_set(err, KV_EINVAL, "cuda decode attention: %d splits need %zu bytes of workspace, got %zu",
                          n_splits, need, workspace ? workspace_bytes : (size_t)0);
    dec_args a;
    a.out = out;
    a.part_o = (float *)workspace;
    a.part_lse = n_splits > 1 ? (float *)((char *)workspace +
                                          align256((size_t)n_seqs * n_heads * n_splits * hd * sizeof(float)))
                              : NULL;
    a.q = q;
    a.kv = *kv;
    a.tables = block_tables;
    a.table_stride = table_stride;
    a.seq_lens = seq_lens;
    a.n_seqs = n_seqs;
    a.n_heads = n_heads;
    a.group = n_heads / kv->n_kv_heads;
    a.n_splits = n_splits;
    a.scale = 1.0f / sqrtf((float)hd); /* as the CPU computes it */
    a.stream = KV_STREAM(stream);
    size_t es = kv_cuda_dtype_size(kv->dtype);
    if (!es)
        return kv_err_set(err, KV_EINVAL, "cuda decode attention: unknown dtype %d", (int)kv->dtype);
    size_t vec = 16 / es;
    int fast = ((uintptr_t)kv->pool & 15) == 0 && kv->block_stride % vec == 0 && kv->v_offset % vec == 0;
    KV_DISPATCH_DTYPE(kv->dtype, T, return launch_all<T>(&a, fast, err));
    return KV_OK;
}
