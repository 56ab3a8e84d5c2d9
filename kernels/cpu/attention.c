#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "kv_blas.h"
#include "simd.h"

static inline const float *k_row(const kc_paged_kv *kv, const int32_t *table, int pos)
{
    return kv->pool + (size_t)table[pos / kv->block_size] * kv->block_stride +
           (size_t)(pos % kv->block_size) * (size_t)(kv->n_kv_heads * kv->head_dim);
}

void kc_kv_write(const kc_paged_kv *kv, const int32_t *block_table, int start, int n, const float *k, const float *v)
{
    size_t row = (size_t)kv->n_kv_heads * (size_t)kv->head_dim;
    for (int i = 0; i < n; i++) {
        float *kd = (float *)k_row(kv, block_table, start + i);
        memcpy(kd, k + (size_t)i * row, row * sizeof(float));
        memcpy(kd + kv->v_offset, v + (size_t)i * row, row * sizeof(float));
    }
}

/* Row of len scores -> softmax in place (kc_exp8 eight at a time). */
static void softmax_row(float *row, int len)
{
    float maxv = -INFINITY, sum;
    for (int j = 0; j < len; j++)
        if (row[j] > maxv)
            maxv = row[j];
    const __m256 vmax = _mm256_set1_ps(maxv);
    __m256 vsum = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= len; t += 8) {
        const __m256 e = kc_exp8(_mm256_sub_ps(_mm256_loadu_ps(row + t), vmax));
        _mm256_storeu_ps(row + t, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    sum = kc_hsum256(vsum);
    for (; t < len; t++) {
        row[t] = expf(row[t] - maxv);
        sum += row[t];
    }
    const __m256 vinv = _mm256_set1_ps(1.0f / sum);
    t = 0;
    for (; t + 8 <= len; t += 8)
        _mm256_storeu_ps(row + t, _mm256_mul_ps(_mm256_loadu_ps(row + t), vinv));
    for (; t < len; t++)
        row[t] *= 1.0f / sum;
}

/* Lane j of the result = the sum of a_j's 8 lanes. */
static inline __m256 hsum8x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7)
{
    const __m256 t0 = _mm256_hadd_ps(a0, a1), t1 = _mm256_hadd_ps(a2, a3);
    const __m256 t2 = _mm256_hadd_ps(a4, a5), t3 = _mm256_hadd_ps(a6, a7);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* scores[t .. t+8) = q . K[t .. t+8) (head_dim hd, a multiple of 8) times scale: eight keys
 * at once, their sums reduced together (a lone dot's reduction cost as much as its FMAs). */
static void dot8_keys(float *scores, const float *q, const kc_paged_kv *kv, const int32_t *table, int t,
                      size_t head_off, int hd, float scale)
{
    const float *k0 = k_row(kv, table, t) + head_off, *k1 = k_row(kv, table, t + 1) + head_off;
    const float *k2 = k_row(kv, table, t + 2) + head_off, *k3 = k_row(kv, table, t + 3) + head_off;
    const float *k4 = k_row(kv, table, t + 4) + head_off, *k5 = k_row(kv, table, t + 5) + head_off;
    const float *k6 = k_row(kv, table, t + 6) + head_off, *k7 = k_row(kv, table, t + 7) + head_off;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int d = 0; d < hd; d += 8) {
        const __m256 qv = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
        a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k4 + d), a4);
        a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k5 + d), a5);
        a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k6 + d), a6);
        a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k7 + d), a7);
    }
    _mm256_storeu_ps(scores + t, _mm256_mul_ps(hsum8x8(a0, a1, a2, a3, a4, a5, a6, a7), _mm256_set1_ps(scale)));
}

/* out[64] = sum over t < len of p[t] * V[t], the output held in registers. */
static void weigh_values64(float *out, const float *p, const kc_paged_kv *kv, const int32_t *table, int len,
                           size_t v_off)
{
    __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
    for (int t = 0; t < len; t++) {
        const float *v = k_row(kv, table, t) + v_off;
        const __m256 w = _mm256_set1_ps(p[t]);
        o0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), o0);
        o1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8), o1);
        o2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 16), o2);
        o3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 24), o3);
        o4 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 32), o4);
        o5 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 40), o5);
        o6 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 48), o6);
        o7 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 56), o7);
    }
    _mm256_storeu_ps(out, o0);
    _mm256_storeu_ps(out + 8, o1);
    _mm256_storeu_ps(out + 16, o2);
    _mm256_storeu_ps(out + 24, o3);
    _mm256_storeu_ps(out + 32, o4);
    _mm256_storeu_ps(out + 40, o5);
    _mm256_storeu_ps(out + 48, o6);
    _mm256_storeu_ps(out + 56, o7);
}

/* One query head over positions [0, len): softmax(q.K^T / sqrt(d)) . V. Prefill and
 * decode share this so both paths round identically. */
static void attend_one(float *out, const float *q, const kc_paged_kv *kv, const int32_t *table, int len, int kv_head,
                       float *scores)
{
    int hd = kv->head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    size_t head_off = (size_t)kv_head * (size_t)hd;
    int t = 0;
    if (hd % 8 == 0)
        for (; t + 8 <= len; t += 8)
            dot8_keys(scores, q, kv, table, t, head_off, hd, scale);
    for (; t < len; t++)
        scores[t] = kc_dot(q, k_row(kv, table, t) + head_off, hd) * scale;
    softmax_row(scores, len);
    if (hd == 64) {
        weigh_values64(out, scores, kv, table, len, kv->v_offset + head_off);
        return;
    }
    memset(out, 0, (size_t)hd * sizeof(float));
    for (t = 0; t < len; t++)
        kc_axpy(out, scores[t], k_row(kv, table, t) + kv->v_offset + head_off, hd);
}

/* Below this many queries per chunk the per-query loop wins; above it, attention becomes
 * GEMMs: S = Q.K^T and O = P.V per (head, block of queries), on K/V gathered contiguous per
 * kv head. */
#define PREFILL_GEMM_MIN_TOKENS 32
/* Queries per work unit: units of (head, query block) are shared out dynamically in one
 * parallel region, each multiplied by single-threaded sgemm (one fork per layer instead of
 * three per head, and the causal triangle balanced). */
#define PREFILL_QUERY_BLOCK 32

/* Returns 0, or -1 when scratch memory is unavailable (the caller falls back). */
static int attention_prefill_gemm(float *out, const float *q, const kc_paged_kv *kv, const int32_t *table, int start,
                                  int n, int n_heads)
{
    const int hd = kv->head_dim, n_kv = kv->n_kv_heads, group = n_heads / n_kv, L = start + n;
    const int q_stride = n_heads * hd, n_qb = (n + PREFILL_QUERY_BLOCK - 1) / PREFILL_QUERY_BLOCK;
    const size_t kv_floats = (size_t)L * (size_t)hd;
    float *K = malloc((size_t)n_kv * kv_floats * sizeof(float));
    float *V = malloc((size_t)n_kv * kv_floats * sizeof(float));
    int failed = !K || !V;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel if (!failed)
    {
        float *S = failed ? NULL : malloc((size_t)PREFILL_QUERY_BLOCK * (size_t)L * sizeof(float));
        if (!failed) {
#pragma omp for schedule(static)
            for (int t = 0; t < L; t++) {
                const float *kr = k_row(kv, table, t);
                for (int g = 0; g < n_kv; g++) {
                    memcpy(K + (size_t)g * kv_floats + (size_t)t * (size_t)hd, kr + (size_t)g * (size_t)hd,
                           (size_t)hd * sizeof(float));
                    memcpy(V + (size_t)g * kv_floats + (size_t)t * (size_t)hd,
                           kr + kv->v_offset + (size_t)g * (size_t)hd, (size_t)hd * sizeof(float));
                }
            }
        }
        /* later query blocks see more keys: dynamic, heaviest first */
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < n_heads * n_qb; u++) {
            const int b = n_qb - 1 - u / n_heads, h = u % n_heads, g = h / group;
            const int i0 = b * PREFILL_QUERY_BLOCK, m = n - i0 < PREFILL_QUERY_BLOCK ? n - i0 : PREFILL_QUERY_BLOCK;
            const int Lb = start + i0 + m; /* the block's last query sees keys [0, Lb) */
            float *o = out + (size_t)i0 * (size_t)q_stride + (size_t)h * (size_t)hd;
            if (!S) {
                for (int i = 0; i < m; i++)
                    for (int d = 0; d < hd; d++)
                        o[(size_t)i * (size_t)q_stride + (size_t)d] = NAN; /* no scratch: poison, never garbage */
                continue;
            }
            kv_sgemm(KV_BLAS_T, m, Lb, hd, scale, q + (size_t)i0 * (size_t)q_stride + (size_t)h * (size_t)hd, q_stride,
                     K + (size_t)g * kv_floats, hd, 0.0f, S, Lb);
            for (int i = 0; i < m; i++) {
                float *row = S + (size_t)i * (size_t)Lb;
                const int len = start + i0 + i + 1;
                softmax_row(row, len);
                memset(row + len, 0, (size_t)(Lb - len) * sizeof(float));
            }
            kv_sgemm(KV_BLAS_N, m, hd, Lb, 1.0f, S, Lb, V + (size_t)g * kv_floats, hd, 0.0f, o, q_stride);
        }
        free(S);
    }
    free(K);
    free(V);
    return failed ? -1 : 0;
}

void kc_attention_prefill(float *out, const float *q, const kc_paged_kv *kv, const int32_t *block_table, int start,
                          int n, int n_heads)
{
    if (n >= PREFILL_GEMM_MIN_TOKENS && attention_prefill_gemm(out, q, kv, block_table, start, n, n_heads) == 0)
        return;
    int hd = kv->head_dim, group = n_heads / kv->n_kv_heads;
#pragma omp parallel
    {
        float *scores = malloc((size_t)(start + n) * sizeof(float));
        /* Later tokens attend to more positions: dynamic scheduling balances the triangle. */
#pragma omp for schedule(dynamic, 4)
        for (int p = 0; p < n * n_heads; p++) {
            int i = p / n_heads, h = p % n_heads;
            size_t off = ((size_t)i * (size_t)n_heads + (size_t)h) * (size_t)hd;
            if (scores)
                attend_one(out + off, q + off, kv, block_table, start + i + 1, h / group, scores);
            else
                for (int d = 0; d < hd; d++) out[off + (size_t)d] = NAN; /* allocation failed: poison, never garbage */
        }
        free(scores);
    }
}

void kc_attention_decode_pairs(float *out, const float *q, const kc_paged_kv *kv, const int32_t *const *block_tables,
                               const int32_t *seq_lens, int n_heads, int pair_begin, int pair_end, float *scores)
{
    int hd = kv->head_dim, group = n_heads / kv->n_kv_heads;
    for (int p = pair_begin; p < pair_end; p++) {
        int s = p / n_heads, h = p % n_heads;
        size_t off = ((size_t)s * (size_t)n_heads + (size_t)h) * (size_t)hd;
        attend_one(out + off, q + off, kv, block_tables[s], seq_lens[s], h / group, scores);
    }
}

void kc_attention_decode(float *out, const float *q, const kc_paged_kv *kv, const int32_t *const *block_tables,
                         const int32_t *seq_lens, int n_seqs, int n_heads)
{
    int hd = kv->head_dim, group = n_heads / kv->n_kv_heads;
    int max_len = 0;
    for (int s = 0; s < n_seqs; s++)
        if (seq_lens[s] > max_len)
            max_len = seq_lens[s];
#pragma omp parallel
    {
        float *scores = malloc((size_t)(max_len > 0 ? max_len : 1) * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int p = 0; p < n_seqs * n_heads; p++) {
            int s = p / n_heads, h = p % n_heads;
            size_t off = ((size_t)s * (size_t)n_heads + (size_t)h) * (size_t)hd;
            if (scores)
                attend_one(out + off, q + off, kv, block_tables[s], seq_lens[s], h / group, scores);
            else
                for (int d = 0; d < hd; d++) out[off + (size_t)d] = NAN;
        }
        free(scores);
    }
}
