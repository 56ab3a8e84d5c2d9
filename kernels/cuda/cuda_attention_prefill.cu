/* Causal prefill attention over the paged pool (twin of kc_attention_prefill).
 *
 * Tensor-core path (bf16/f16, head_dim 64 or 128): FlashAttention-2 style. A CTA of 4 warps
 * owns 64 query rows of one head (16 per warp, Q kept in registers as mma A fragments) and
 * walks the keys in tiles of 64 read through the block table with cp.async into a double
 * buffer. S = Q.K^T and O += P.V run on mma.sync m16n8k16 with fp32 accumulators; the online
 * softmax works on the accumulator registers directly (the S accumulator layout is the A
 * operand layout of P.V, so P never touches shared memory).
 *
 * Plain path (f32, and any other even head_dim <= 256): the same online softmax on CUDA
 * cores with fp32 FMAs and expf, 16 query rows per CTA, keys in tiles of 32 (one per lane). */
#include <limits.h>

#include "cuda_common.cuh"

/* ---- Tensor-core path ---- */

#define MMA_BR 64 /* query rows per CTA: 4 warps x 16 */
#define MMA_BC 64 /* keys per tile */
#define MMA_THREADS 128
/* Row padding in elements: rows then start 16 B apart modulo 128 B, so the 8 row addresses
 * of each ldmatrix phase fall in distinct banks. */
#define MMA_PAD 8

static size_t mma_smem_bytes(int hd) { return (size_t)(MMA_BR + 4 * MMA_BC) * (size_t)(hd + MMA_PAD) * 2; }

/* Tile `tile` of K and V (keys tile*64 ..) into shared memory; keys >= key_end are zero-filled
 * because a masked score still multiplies its V row (0 * NaN garbage would poison O). */
template <typename T, int HD>
__device__ __forceinline__ void mma_load_kv(T *ks, T *vs, const kv_cuda_paged_kv &kv, const int32_t *table, int kh,
                                            int tile, int key_end)
{
    const int CPR = HD / 8, STRIDE = HD + MMA_PAD;
    const T *pool = (const T *)kv.pool;
    size_t row_elems = (size_t)kv.n_kv_heads * HD;
    for (int c = threadIdx.x; c < MMA_BC * CPR; c += MMA_THREADS) {
        int r = c / CPR, col = (c % CPR) * 8, pos = tile * MMA_BC + r;
        const T *src = pool;
        int bytes = 0;
        if (pos < key_end) {
            src = pool + (size_t)table[pos / kv.block_size] * kv.block_stride +
                  (size_t)(pos % kv.block_size) * row_elems + (size_t)kh * HD + col;
            bytes = 16;
        }
        kv_cp_async16(ks + r * STRIDE + col, src, bytes);
        kv_cp_async16(vs + r * STRIDE + col, bytes ? src + kv.v_offset : pool, bytes);
    }
}

template <typename T, int HD>
__global__ void __launch_bounds__(MMA_THREADS)
    prefill_mma_kernel(T *out, const T *q, kv_cuda_paged_kv kv, const int32_t *table, int start, int n, int n_heads,
                       int group, float scale_log2)
{
    const int STRIDE = HD + MMA_PAD, CPR = HD / 8, KC = HD / 16, NO = HD / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *qs = (T *)smem_raw;
    T *ks = qs + MMA_BR * STRIDE; /* [2][MMA_BC][STRIDE] */
    T *vs = ks + 2 * MMA_BC * STRIDE; /* [2][MMA_BC][STRIDE] */
    const T *tag = 0;                 /* selects the bf16 or f16 mma/pack overload */

    /* Later query tiles see more keys: start them first so the tail is short ones. */
    int q0 = (int)(gridDim.x - 1 - blockIdx.x) * MMA_BR;
    int h = blockIdx.y, kh = h / group;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int key_end = start + min(q0 + MMA_BR, n); /* keys any row of this CTA may see */
    int n_tiles = (key_end + MMA_BC - 1) / MMA_BC;
    size_t q_row = (size_t)n_heads * HD;

    for (int c = threadIdx.x; c < MMA_BR * CPR; c += MMA_THREADS) {
        int r = c / CPR, col = (c % CPR) * 8;
        bool ok = q0 + r < n;
        kv_cp_async16(qs + r * STRIDE + col, ok ? q + (size_t)(q0 + r) * q_row + (size_t)h * HD + col : q, ok ? 16 : 0);
    }
    mma_load_kv<T, HD>(ks, vs, kv, table, kh, 0, key_end);
    kv_cp_async_commit();

    uint32_t qf[KC][4];
    float o[NO][4];
#pragma unroll
    for (int i = 0; i < NO; i++)
        o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
    /* This thread's accumulator rows are row_a and row_a + 8 (mma C layout). */
    int row_a = q0 + warp * 16 + (lane >> 2);
    int qpos_a = start + row_a;

    for (int j = 0; j < n_tiles; j++) {
        int buf = j & 1;
        if (j + 1 < n_tiles)
            mma_load_kv<T, HD>(ks + (buf ^ 1) * MMA_BC * STRIDE, vs + (buf ^ 1) * MMA_BC * STRIDE, kv, table, kh, j + 1,
                               key_end);
        kv_cp_async_commit(); /* possibly empty: keeps the wait count uniform */
        kv_cp_async_wait1();  /* tile j (and Q) have landed */
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (int kc = 0; kc < KC; kc++)
                kv_ldmatrix_x4(qf[kc], qs + (warp * 16 + (lane & 15)) * STRIDE + kc * 16 + (lane >> 4) * 8);
        }
        const T *kb = ks + buf * MMA_BC * STRIDE, *vb = vs + buf * MMA_BC * STRIDE;

        /* S[16 rows][64 keys] per warp: 8 n-tiles of 8 keys. */
        float s[8][4];
#pragma unroll
        for (int i = 0; i < 8; i++)
            s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
#pragma unroll
            for (int np = 0; np < 4; np++) {
                uint32_t b[4]; /* b0,b1 of key n-tile 2np, then of 2np+1 */
                kv_ldmatrix_x4(b, kb + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * STRIDE + kc * 16 +
                                      ((lane >> 3) & 1) * 8);
                kv_mma16816(s[2 * np], qf[kc], b[0], b[1], tag);
                kv_mma16816(s[2 * np + 1], qf[kc], b[2], b[3], tag);
            }
        }

        /* Scale into the log2 domain; mask only tiles that reach past the CTA's first query. */
        int k0 = j * MMA_BC;
        bool diag = k0 + MMA_BC - 1 > start + q0;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[nt][e] * scale_log2;
                if (diag && k0 + nt * 8 + (lane & 3) * 2 + (e & 1) > qpos_a + (e >> 1) * 8)
                    x = -INFINITY;
                s[nt][e] = x;
            }
        }

        /* Online softmax per row; a row's 64 scores live in the 4 threads of a quad. */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
                mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float m_new = fmaxf(m_run[r], mx);
            float m_use = m_new == -INFINITY ? 0.0f : m_new; /* fully masked so far: keep exp2 finite */
            float alpha = exp2f(m_run[r] - m_use);
            m_run[r] = m_new;
            l_run[r] *= alpha;
#pragma unroll
            for (int i = 0; i < NO; i++) {
                o[i][2 * r] *= alpha;
                o[i][2 * r + 1] *= alpha;
            }
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
                s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
                l_run[r] += s[nt][2 * r] + s[nt][2 * r + 1];
            }
        }

        /* O += P.V: P's k16 chunk kk is S n-tiles 2kk and 2kk+1, already in A layout. */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            uint32_t a[4] = {kv_pack2(s[2 * kk][0], s[2 * kk][1], tag), kv_pack2(s[2 * kk][2], s[2 * kk][3], tag),
                             kv_pack2(s[2 * kk + 1][0], s[2 * kk + 1][1], tag),
                             kv_pack2(s[2 * kk + 1][2], s[2 * kk + 1][3], tag)};
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                uint32_t b[4]; /* b0,b1 of dim n-tile 2dp, then of 2dp+1 */
                kv_ldmatrix_x4_trans(b, vb + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * STRIDE + dp * 16 +
                                            (lane >> 4) * 8);
                kv_mma16816(o[2 * dp], a, b[0], b[1], tag);
                kv_mma16816(o[2 * dp + 1], a, b[2], b[3], tag);
            }
        }
        __syncthreads(); /* everyone is done with buf before iteration j+1 refills it */
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_run[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        int row = row_a + r * 8;
        if (row < n) {
            T *dst = out + (size_t)row * q_row + (size_t)h * HD + (lane & 3) * 2;
#pragma unroll
            for (int i = 0; i < NO; i++)
                kv_st2(dst + i * 8, o[i][2 * r] * inv, o[i][2 * r + 1] * inv);
        }
    }
}

/* ---- Plain path ---- */

#define SIM_ROWS 16 /* query rows per CTA, 4 per warp */
#define SIM_KEYS 32 /* keys per tile: one per lane while scoring */
#define SIM_THREADS 128
#define SIM_MAXC 8 /* head_dim <= 32 * SIM_MAXC */

static size_t sim_smem_bytes(int hd)
{
    return (size_t)(SIM_ROWS * hd + SIM_KEYS * (hd + 1) + SIM_KEYS * hd) * sizeof(float);
}

template <typename T>
__global__ void __launch_bounds__(SIM_THREADS)
    prefill_simple_kernel(T *out, const T *q, kv_cuda_paged_kv kv, const int32_t *table, int start, int n,
                          int n_heads, int group, float scale)
{
    extern __shared__ float sm[];
    int hd = kv.head_dim;
    float *qs = sm;                      /* [SIM_ROWS][hd] */
    float *ks = qs + SIM_ROWS * hd;      /* [SIM_KEYS][hd+1]: odd stride, lane-per-key reads hit distinct banks */
    float *vs = ks + SIM_KEYS * (hd + 1); /* [SIM_KEYS][hd] */
    const T *pool = (const T *)kv.pool;

    int q0 = (int)(gridDim.x - 1 - blockIdx.x) * SIM_ROWS;
    int h = blockIdx.y, kh = h / group;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int key_end = start + min(q0 + SIM_ROWS, n);
    size_t q_row = (size_t)n_heads * hd, row_elems = (size_t)kv.n_kv_heads * hd;

    for (int e = threadIdx.x; e < SIM_ROWS * hd; e += SIM_THREADS) {
        int r = e / hd, d = e - r * hd;
        qs[e] = q0 + r < n ? kv_ld(q + (size_t)(q0 + r) * q_row + (size_t)h * hd + d) : 0.0f;
    }
    float m[4], l[4], acc[4][SIM_MAXC];
#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int c = 0; c < SIM_MAXC; c++)
            acc[rr][c] = 0.0f;
    }
    const float *qw = qs + warp * 4 * hd;

    for (int k0 = 0; k0 < key_end; k0 += SIM_KEYS) {
        __syncthreads(); /* Q stored; the previous tile consumed */
        for (int e = threadIdx.x; e < SIM_KEYS * hd; e += SIM_THREADS) {
            int r = e / hd, d = e - r * hd, pos = k0 + r;
            float kf = 0.0f, vf = 0.0f;
            if (pos < key_end) {
                const T *src = pool + (size_t)table[pos / kv.block_size] * kv.block_stride +
                               (size_t)(pos % kv.block_size) * row_elems + (size_t)kh * hd + d;
                kf = kv_ld(src);
                vf = kv_ld(src + kv.v_offset);
            }
            ks[r * (hd + 1) + d] = kf;
            vs[r * hd + d] = vf;
        }
        __syncthreads();

        int key = k0 + lane;
        float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        const float *kr = ks + lane * (hd + 1);
        for (int d = 0; d < hd; d++) {
            float kd = kr[d];
#pragma unroll
            for (int rr = 0; rr < 4; rr++)
                sc[rr] = fmaf(qw[rr * hd + d], kd, sc[rr]);
        }
#pragma unroll
        for (int rr = 0; rr < 4; rr++) {
            int qp = start + q0 + warp * 4 + rr;
            float x = key <= qp && key < key_end ? sc[rr] * scale : -INFINITY;
            float m_new = fmaxf(m[rr], kv_warp_max(x));
            if (m_new == -INFINITY) /* warp-uniform: nothing visible to this row yet */
                continue;
            float p = expf(x - m_new), alpha = expf(m[rr] - m_new);
            l[rr] = l[rr] * alpha + kv_warp_sum(p);
            m[rr] = m_new;
#pragma unroll
            for (int c = 0; c < SIM_MAXC; c++)
                acc[rr][c] *= alpha;
            for (int kk = 0; kk < SIM_KEYS; kk++) {
                float pk = __shfl_sync(0xffffffffu, p, kk);
                if (pk == 0.0f) /* warp-uniform: masked key */
                    continue;
                const float *vr = vs + kk * hd;
#pragma unroll
                for (int c = 0; c < SIM_MAXC; c++)
                    if (lane + 32 * c < hd)
                        acc[rr][c] = fmaf(pk, vr[lane + 32 * c], acc[rr][c]);
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < 4; rr++) {
        int row = q0 + warp * 4 + rr;
        if (row >= n)
            continue;
        float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
        T *dst = out + (size_t)row * q_row + (size_t)h * hd;
#pragma unroll
        for (int c = 0; c < SIM_MAXC; c++)
            if (lane + 32 * c < hd)
                kv_st(dst + lane + 32 * c, acc[rr][c] * inv);
    }
}

/* ---- Host side ---- */

template <typename T, int HD>
static int launch_mma(void *out, const void *q, const kv_cuda_paged_kv *kv, const int32_t *table, int start, int n,
                      int n_heads, int group, float scale, cudaStream_t stream, kv_err *err)
{
    size_t smem = mma_smem_bytes(HD);
    KV_CUDA_CHECK(cudaFuncSetAttribute(prefill_mma_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem));
    dim3 grid((unsigned)((n + MMA_BR - 1) / MMA_BR), (unsigned)n_heads);
    prefill_mma_kernel<T, HD><<<grid, MMA_THREADS, smem, stream>>>((T *)out, (const T *)q, *kv, table, start, n,
                                                                   n_heads, group, scale * 1.44269504088896341f);
    KV_CUDA_CHECK_LAUNCH("prefill_mma_kernel");
    return KV_OK;
}

template <typename T>
static int launch_simple(void *out, const void *q, const kv_cuda_paged_kv *kv, const int32_t *table, int start, int n,
                         int n_heads, int group, float scale, cudaStream_t stream, kv_err *err)
{
    size_t smem = sim_smem_bytes(kv->head_dim);
    if (smem > 48 * 1024)
        KV_CUDA_CHECK(cudaFuncSetAttribute(prefill_simple_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)smem));
    dim3 grid((unsigned)((n + SIM_ROWS - 1) / SIM_ROWS), (unsigned)n_heads);
    prefill_simple_kernel<T><<<grid, SIM_THREADS, smem, stream>>>((T *)out, (const T *)q, *kv, table, start, n,
                                                                  n_heads, group, scale);
    KV_CUDA_CHECK_LAUNCH("prefill_simple_kernel");
    return KV_OK;
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

extern "C" int kv_cuda_attention_prefill(void *out, const void *q, const kv_cuda_paged_kv *kv,
                                         const int32_t *block_table, int start, int n, int n_heads, void *stream,
                                         kv_err *err)
{
    int hd = kv->head_dim;
    if (!kv->pool || kv->block_size <= 0 || kv->n_kv_heads <= 0 || n_heads <= 0 || n_heads % kv->n_kv_heads)
        return kv_err_set(err, KV_EINVAL, "cuda prefill attention: bad heads (%d query, %d kv) or pool", n_heads,
                          kv->n_kv_heads);
    if (hd <= 0 || hd % 2 || hd > 32 * SIM_MAXC)
        return kv_err_set(err, KV_EUNSUPPORTED, "cuda prefill attention: head_dim %d (must be even, <= %d)", hd,
                          32 * SIM_MAXC);
    if (start < 0 || n < 0 || start > INT_MAX - n || n_heads > 65535)
        return kv_err_set(err, KV_EINVAL, "cuda prefill attention: bad chunk start=%d n=%d", start, n);
    if (n == 0)
        return KV_OK;
    int group = n_heads / kv->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd); /* as the CPU computes it */
    cudaStream_t s = KV_STREAM(stream);
    /* cp.async moves 16-byte pieces: rows and strides must keep that alignment. */
    int mma_ok = kv->dtype != KV_CUDA_F32 && (hd == 64 || hd == 128) && aligned16(kv->pool) && aligned16(q) &&
                 ((uintptr_t)out & 3) == 0 && kv->block_stride % 8 == 0 && kv->v_offset % 8 == 0;
    if (mma_ok) {
        if (kv->dtype == KV_CUDA_BF16)
            return hd == 64 ? launch_mma<__nv_bfloat16, 64>(out, q, kv, block_table, start, n, n_heads, group, scale, s, err)
                            : launch_mma<__nv_bfloat16, 128>(out, q, kv, block_table, start, n, n_heads, group, scale, s, err);
        return hd == 64 ? launch_mma<__half, 64>(out, q, kv, block_table, start, n, n_heads, group, scale, s, err)
                        : launch_mma<__half, 128>(out, q, kv, block_table, start, n, n_heads, group, scale, s, err);
    }
    KV_DISPATCH_DTYPE(kv->dtype, T,
                      return launch_simple<T>(out, q, kv, block_table, start, n, n_heads, group, scale, s, err));
    return KV_OK;
}
