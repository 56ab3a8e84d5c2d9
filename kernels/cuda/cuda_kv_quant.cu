/* Quantized KV blocks on the GPU (cuda_kv_quant.h); CPU twins: kq_quantize_block
 * (kernels/cpu/kv_quant.c) and kq_attend_one (kernels/cpu/kv_quant_attention.c) with the
 * window rule of common/engine/engine_kvq.c.
 *
 * Quantize: grid (groups / 128, 2): y = 0 the key groups, y = 1 the value groups; one
 * thread per group does exactly what group_params / group_codes do, in the same order
 * (min and max found front to back, so which of -0 and +0 is "the" minimum, and with it the
 * sign of a zero point, is the CPU's), then packs its codes a byte at a time. Sealing a
 * block is rare next to attention, so one thread per group costs nothing that matters and
 * buys bit-identical codes without a tie-breaking reduction. Rounding: rintf (ties to
 * even) like kq_round, IEEE division (no fast math in this library), halves by
 * __float2half_rn (ties to even, subnormals kept) like F16C.
 *
 * Decode attention: grid (split, query head, sequence), 128 threads. A CTA walks its piece
 * of the sequence 128 tokens a step: each thread scores one token (dequantizing its key
 * inside the dot product: per channel, s += (q[c] S[c]) (code[c][t] - Z[c]); per token,
 * s += S[g] sum_c q[c] (code[t][c] - Z[g]); an f32 row of the residual window as is), the
 * CTA updates its online softmax state (max, sum) by two block reductions, and then each
 * thread accumulates one or two output channels over the step's tokens, reading values as
 * codes (per token groups) or f32 rows. One split writes the output; several write a
 * normalised partial and its log-sum-exp, merged by kvq_combine_kernel as in
 * cuda_attention_decode.cu. Query heads of a GQA group each read their K/V (through L2);
 * speed is unmeasured: this is the correct twin first. */
#include "cuda_common.cuh"
#include "cuda_kv_quant.h"

#define KVQ_THREADS 128
#define KVQ_HALF_MAX 65504.0f
#define KVQ_HALF_MIN_SUBNORMAL 5.9604645e-8f /* 2^-24, as kv_quant.c */
#define KVQ_OUT_PER_THREAD (KV_CUDA_KVQ_MAX_HEAD_DIM / KVQ_THREADS)

__device__ __forceinline__ float kvq_half_back(float x) { return __half2float(__float2half_rn(x)); }
__device__ __forceinline__ uint16_t kvq_half_bits(float x) { return __half_as_ushort(__float2half_rn(x)); }
__device__ __forceinline__ float kvq_load_half(const uint8_t *p)
{
    return __half2float(__ushort_as_half(*(const uint16_t *)p));
}
/* Code i of a run packed from a byte boundary (little-endian within bytes). */
__device__ __forceinline__ float kvq_code(const uint8_t *run, size_t i, int bits)
{
    size_t bit = i * (size_t)bits;
    return (float)((run[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u));
}

/* ---- Quantize ---- */

/* group_params + group_codes + kq_pack of kv_quant.c for n values x[i * stride]. */
__device__ void kvq_quantize_group(const float *x, size_t stride, int n, int bits, uint8_t *dst, uint8_t *sp,
                                   uint8_t *zp)
{
    float qmax = (float)((1 << bits) - 1);
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        if (v < mn)
            mn = v;
        if (v > mx)
            mx = v;
    }
    float s, z;
    if (mx > mn) {
        s = (mx - mn) / qmax;
        if (!(s <= KVQ_HALF_MAX))
            s = KVQ_HALF_MAX;
        s = kvq_half_back(s);
        if (s == 0.0f)
            s = KVQ_HALF_MIN_SUBNORMAL;
        z = rintf(-mn / s);
    } else {
        s = kvq_half_back(fabsf(mn));
        z = s == 0.0f ? 0.0f : mn > 0 ? -1.0f : 1.0f;
    }
    if (!(z <= KVQ_HALF_MAX))
        z = KVQ_HALF_MAX;
    if (z < -KVQ_HALF_MAX)
        z = -KVQ_HALF_MAX;
    z = kvq_half_back(z);
    int per_byte = 8 / bits;
    for (int i0 = 0; i0 < n; i0 += per_byte) {
        unsigned byte = 0;
        for (int j = 0; j < per_byte; j++) {
            float r = s == 0.0f ? 0.0f : rintf(x[(size_t)(i0 + j) * stride] / s) + z;
            if (!(r >= 0.0f))
                r = 0.0f;
            if (r > qmax)
                r = qmax;
            byte |= (unsigned)r << (j * bits);
        }
        dst[i0 / per_byte] = (uint8_t)byte;
    }
    *(uint16_t *)sp = kvq_half_bits(s);
    *(uint16_t *)zp = kvq_half_bits(z);
}

__global__ void __launch_bounds__(KVQ_THREADS)
    kvq_quantize_kernel(uint8_t *b, kv_cuda_kvq_format f, const float *k, const float *v, size_t stride)
{
    int hd = f.head_dim, bs = f.block_size, G = f.group, bits = f.bits, ng = hd / G;
    size_t gi = (size_t)blockIdx.x * KVQ_THREADS + threadIdx.x;
    bool keys = blockIdx.y == 0;
    if (keys && !f.keys_per_token) { /* gi = head * hd + channel: a channel over the block's tokens */
        if (gi >= (size_t)f.n_kv_heads * hd)
            return;
        kvq_quantize_group(k + gi, stride, bs, bits, b + f.k_codes + gi * (size_t)bs * bits / 8,
                           b + f.k_scales + 2 * gi, b + f.k_zeros + 2 * gi);
        return;
    }
    /* gi = (head * bs + token) * ng + g: g-th group of one token's head */
    if (gi >= (size_t)f.n_kv_heads * bs * ng)
        return;
    size_t ht = gi / ng, g = gi - ht * ng;
    size_t h = ht / bs, t = ht - h * bs;
    size_t code_off = (ht * hd + g * G) * bits / 8;
    size_t src = t * stride + h * hd + g * G;
    if (keys)
        kvq_quantize_group(k + src, 1, G, bits, b + f.k_codes + code_off, b + f.k_scales + 2 * gi,
                           b + f.k_zeros + 2 * gi);
    else
        kvq_quantize_group(v + src, 1, G, bits, b + f.v_codes + code_off, b + f.v_scales + 2 * gi,
                           b + f.v_zeros + 2 * gi);
}

/* ---- Decode attention ---- */

typedef struct kvq_dec_args {
    float *out, *part_o, *part_lse;
    const float *q;
    kv_cuda_kvq_pool qp;
    const int32_t *q_tables;
    kv_cuda_paged_kv fp;
    const int32_t *fp_tables;
    int table_stride;
    const int32_t *seq_lens;
    int residual_blocks, n_heads, n_splits;
    float scale;
} kvq_dec_args;

/* Unscaled q . k' of token t (logical block b, row tb) of kv head kh. */
__device__ float kvq_score(const kvq_dec_args &a, const float *q, const int32_t *qt, const int32_t *ft, int kh,
                           int b, int tb, int ws)
{
    const kv_cuda_kvq_format &f = a.qp.f;
    int hd = f.head_dim, bs = f.block_size, bits = f.bits;
    float acc = 0.0f;
    if (b >= ws) {
        const float *row = (const float *)a.fp.pool + (size_t)ft[b] * a.fp.block_stride +
                           ((size_t)tb * a.fp.n_kv_heads + kh) * hd;
        for (int c = 0; c < hd; c++)
            acc = fmaf(q[c], row[c], acc);
        return acc;
    }
    const uint8_t *base = (const uint8_t *)a.qp.base + (size_t)qt[b] * a.qp.block_bytes;
    if (!f.keys_per_token) {
        size_t row_bytes = (size_t)bs * bits / 8;
        const uint8_t *codes = base + f.k_codes + (size_t)kh * hd * row_bytes;
        const uint8_t *sp = base + f.k_scales + 2 * (size_t)kh * hd, *zp = base + f.k_zeros + 2 * (size_t)kh * hd;
        for (int c = 0; c < hd; c++) {
            float code = kvq_code(codes + c * row_bytes, tb, bits);
            acc = fmaf(q[c] * kvq_load_half(sp + 2 * c), code - kvq_load_half(zp + 2 * c), acc);
        }
        return acc;
    }
    int G = f.group, ng = hd / G;
    size_t ht = (size_t)kh * bs + tb;
    const uint8_t *codes = base + f.k_codes + ht * hd * bits / 8;
    for (int g = 0; g < ng; g++) {
        float z = kvq_load_half(base + f.k_zeros + 2 * (ht * ng + g)), part = 0.0f;
        for (int c = g * G; c < (g + 1) * G; c++)
            part = fmaf(q[c], kvq_code(codes, c, bits) - z, part);
        acc = fmaf(kvq_load_half(base + f.k_scales + 2 * (ht * ng + g)), part, acc);
    }
    return acc;
}

/* acc += p * v'[c] of token t of kv head kh. */
__device__ __forceinline__ float kvq_value(const kvq_dec_args &a, const int32_t *qt, const int32_t *ft, int kh, int b,
                                           int tb, int ws, int c, float p, float acc)
{
    const kv_cuda_kvq_format &f = a.qp.f;
    int hd = f.head_dim;
    if (b >= ws) {
        const float *row = (const float *)a.fp.pool + (size_t)ft[b] * a.fp.block_stride + a.fp.v_offset +
                           ((size_t)tb * a.fp.n_kv_heads + kh) * hd;
        return fmaf(p, row[c], acc);
    }
    const uint8_t *base = (const uint8_t *)a.qp.base + (size_t)qt[b] * a.qp.block_bytes;
    size_t ht = (size_t)kh * f.block_size + tb, gi = ht * (hd / f.group) + c / f.group;
    float w = p * kvq_load_half(base + f.v_scales + 2 * gi);
    float code = kvq_code(base + f.v_codes, ht * hd + c, f.bits);
    return fmaf(w, code - kvq_load_half(base + f.v_zeros + 2 * gi), acc);
}

__global__ void __launch_bounds__(KVQ_THREADS) kvq_decode_kernel(kvq_dec_args a)
{
    __shared__ float sq[KV_CUDA_KVQ_MAX_HEAD_DIM];
    __shared__ float sp[KVQ_THREADS];
    __shared__ float red[32];
    const kv_cuda_kvq_format &f = a.qp.f;
    int split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z, tid = threadIdx.x;
    int hd = f.head_dim, bs = f.block_size, kh = h / (a.n_heads / f.n_kv_heads);
    int len = a.seq_lens[seq];
    int ws = len > 0 ? max(0, (len - 1) / bs - a.residual_blocks + 1) : 0;
    int chunk = len > 0 ? (len + a.n_splits - 1) / a.n_splits : 0;
    int kbeg = split * chunk, kend = min(len, kbeg + chunk);
    const int32_t *qt = a.q_tables + (size_t)seq * a.table_stride, *ft = a.fp_tables + (size_t)seq * a.table_stride;
    size_t hi = (size_t)seq * a.n_heads + h;
    for (int c = tid; c < hd; c += KVQ_THREADS)
        sq[c] = a.q[hi * hd + c];
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc[KVQ_OUT_PER_THREAD];
#pragma unroll
    for (int j = 0; j < KVQ_OUT_PER_THREAD; j++)
        acc[j] = 0.0f;
    /* t0 is the same for every thread: the reductions inside see the whole CTA. */
    for (int t0 = kbeg; t0 < kend; t0 += KVQ_THREADS) {
        int t = t0 + tid, n = min(KVQ_THREADS, kend - t0);
        float s = -INFINITY;
        if (tid < n)
            s = kvq_score(a, sq, qt, ft, kh, t / bs, t % bs, ws) * a.scale;
        float m_new = fmaxf(m, kv_block_max(s, red)); /* finite: the step has a token */
        float p = tid < n ? expf(s - m_new) : 0.0f;
        sp[tid] = p;
        float alpha = expf(m - m_new);
        l = l * alpha + kv_block_sum(p, red); /* its barriers publish sp */
        m = m_new;
#pragma unroll
        for (int j = 0; j < KVQ_OUT_PER_THREAD; j++) {
            int c = tid + j * KVQ_THREADS;
            if (c >= hd)
                break;
            float o = acc[j] * alpha;
            for (int i = 0; i < n; i++) {
                int ti = t0 + i;
                o = kvq_value(a, qt, ft, kh, ti / bs, ti % bs, ws, c, sp[i], o);
            }
            acc[j] = o;
        }
        __syncthreads(); /* sp is read before the next step rewrites it */
    }

    bool any = kend > kbeg;
#pragma unroll
    for (int j = 0; j < KVQ_OUT_PER_THREAD; j++) {
        int c = tid + j * KVQ_THREADS;
        if (c >= hd)
            break;
        float val = any ? acc[j] / l : 0.0f; /* a NaN score stays NaN */
        if (a.n_splits == 1)
            a.out[hi * hd + c] = val;
        else
            a.part_o[(hi * a.n_splits + split) * hd + c] = val;
    }
    if (a.n_splits > 1 && tid == 0)
        a.part_lse[hi * a.n_splits + split] = any ? m + logf(l) : -INFINITY;
}

/* One CTA per (sequence, head): out = sum_j w_j o_j / sum_j w_j, w_j = exp(lse_j - max). */
__global__ void __launch_bounds__(KVQ_THREADS)
    kvq_combine_kernel(float *out, const float *part_o, const float *part_lse, int hd, int n_splits)
{
    size_t hi = blockIdx.x;
    const float *lse = part_lse + hi * n_splits, *po = part_o + hi * n_splits * hd;
    float mx = -INFINITY;
    for (int j = 0; j < n_splits; j++)
        mx = fmaxf(mx, lse[j]);
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float sum = 0.0f, acc = 0.0f;
        if (mx != -INFINITY)
            for (int j = 0; j < n_splits; j++) {
                if (lse[j] == -INFINITY) /* an empty piece */
                    continue;
                float w = expf(lse[j] - mx);
                sum += w;
                acc = fmaf(w, po[(size_t)j * hd + c], acc);
            }
        out[hi * hd + c] = mx == -INFINITY ? 0.0f : acc / sum;
    }
}

/* ---- Host side ---- */

extern "C" int kv_cuda_kvq_quantize_block(void *base, const kv_cuda_kvq_format *f, const float *k, const float *v,
                                          size_t stride, void *stream, kv_err *err)
{
    int rc = kv_cuda_kvq_format_check(f, err);
    if (rc)
        return rc;
    if (!base || !k || !v || ((uintptr_t)base & 1))
        return kv_err_set(err, KV_EINVAL, "cuda KV quantize: null or odd block pointer");
    if (stride < (size_t)f->n_kv_heads * f->head_dim)
        return kv_err_set(err, KV_EINVAL, "cuda KV quantize: row stride %zu below a row of %d floats", stride,
                          f->n_kv_heads * f->head_dim);
    size_t k_groups = (size_t)f->n_kv_heads * f->head_dim;
    size_t v_groups = (size_t)f->n_kv_heads * f->block_size * (f->head_dim / f->group);
    size_t most = k_groups > v_groups ? k_groups : v_groups;
    dim3 grid((unsigned)((most + KVQ_THREADS - 1) / KVQ_THREADS), 2);
    kvq_quantize_kernel<<<grid, KVQ_THREADS, 0, KV_STREAM(stream)>>>((uint8_t *)base, *f, k, v, stride);
    KV_CUDA_CHECK_LAUNCH("kvq_quantize_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_kvq_attention_decode(float *out, const float *q, const kv_cuda_kvq_pool *qpool,
                                            const int32_t *q_tables, const kv_cuda_paged_kv *fp,
                                            const int32_t *fp_tables, int table_stride, const int32_t *seq_lens,
                                            int residual_blocks, int n_seqs, int n_heads, int n_splits,
                                            void *workspace, size_t workspace_bytes, void *stream, kv_err *err)
{
    const kv_cuda_kvq_format *f = &qpool->f;
    int rc = kv_cuda_kvq_format_check(f, err);
    if (rc)
        return rc;
    if (!qpool->base || ((uintptr_t)qpool->base & 1) || (qpool->block_bytes & 1) ||
        qpool->block_bytes < kv_cuda_kvq_layer_extent(f))
        return kv_err_set(err, KV_EINVAL, "cuda KV-code attention: block of %zu bytes (odd, or below the layout's %zu)",
                          qpool->block_bytes, kv_cuda_kvq_layer_extent(f));
    if (!fp->pool || fp->dtype != KV_CUDA_F32 || fp->block_size != f->block_size || fp->n_kv_heads != f->n_kv_heads ||
        fp->head_dim != f->head_dim)
        return kv_err_set(err, KV_EINVAL, "cuda KV-code attention: the residual pool must be f32 of the same shape");
    if (n_heads <= 0 || n_heads > 65535 || n_heads % f->n_kv_heads)
        return kv_err_set(err, KV_EINVAL, "cuda KV-code attention: %d query heads over %d kv heads", n_heads,
                          f->n_kv_heads);
    if (n_seqs < 0 || n_seqs > 65535 || table_stride < 0 || residual_blocks < 1 || n_splits < 1 ||
        n_splits > KV_CUDA_DECODE_MAX_SPLITS)
        return kv_err_set(err, KV_EINVAL, "cuda KV-code attention: %d sequences, %d splits, residual %d blocks", n_seqs,
                          n_splits, residual_blocks);
    if (n_seqs == 0)
        return KV_OK;
    int hd = f->head_dim;
    size_t need = kv_cuda_decode_workspace_bytes(n_seqs, n_heads, hd, n_splits);
    if (need > 0 && (!workspace || workspace_bytes < need))
        return kv_err_set(err, KV_EINVAL, "cuda KV-code attention: %d splits need %zu bytes of workspace, got %zu",
                          n_splits, need, workspace ? workspace_bytes : (size_t)0);
    kvq_dec_args a;
    a.out = out;
    a.part_o = (float *)workspace;
    /* the layout of kv_cuda_decode_workspace_bytes: partial outputs, 256-aligned, then lse */
    a.part_lse = n_splits > 1 ? (float *)((char *)workspace +
                                          (((size_t)n_seqs * n_heads * n_splits * hd * sizeof(float) + 255) &
                                           ~(size_t)255))
                              : NULL;
    a.q = q;
    a.qp = *qpool;
    a.q_tables = q_tables;
    a.fp = *fp;
    a.fp_tables = fp_tables;
    a.table_stride = table_stride;
    a.seq_lens = seq_lens;
    a.residual_blocks = residual_blocks;
    a.n_heads = n_heads;
    a.n_splits = n_splits;
    a.scale = 1.0f / sqrtf((float)hd); /* as kq_attend_one computes it */
    dim3 grid((unsigned)n_splits, (unsigned)n_heads, (unsigned)n_seqs);
    kvq_decode_kernel<<<grid, KVQ_THREADS, 0, KV_STREAM(stream)>>>(a);
    KV_CUDA_CHECK_LAUNCH("kvq_decode_kernel");
    if (n_splits == 1)
        return KV_OK;
    kvq_combine_kernel<<<(unsigned)(n_seqs * n_heads), KVQ_THREADS, 0, KV_STREAM(stream)>>>(out, a.part_o, a.part_lse,
                                                                                              hd, n_splits);
    KV_CUDA_CHECK_LAUNCH("kvq_combine_kernel");
    return KV_OK;
}
