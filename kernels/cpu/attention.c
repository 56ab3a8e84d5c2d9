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

/* One query head over positions [0, len): softmax(q.K^T / sqrt(d)) . V. Prefill and
 * decode share this so both paths round identically. */
static void attend_one(float *out, const float *q, const kc_paged_kv *kv, const int32_t *table, int len, int kv_head,
                       float *scores)
{
    int hd = kv->head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    size_t head_off = (size_t)kv_head * (size_t)hd;
    float maxv = -INFINITY;
    for (int t = 0; t < len; t++) {
        float s = kc_dot(q, k_row(kv, table, t) + head_off, hd) * scale;
        scores[t] = s;
        if (s > maxv)
            maxv = s;
    }
    float sum = 0.0f;
    for (int t = 0; t < len; t++) {
        scores[t] = expf(scores[t] - maxv);
        sum += scores[t];
    }
    float inv = 1.0f / sum;
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int t = 0; t < len; t++)
        kc_axpy(out, scores[t] * inv, k_row(kv, table, t) + kv->v_offset + head_off, hd);
}

/* Below this many queries per chunk the per-query loop wins; above it, attention becomes
 * GEMMs: S = Q.K^T and O = P.V per head, on K/V gathered contiguous per kv head. */
#define PREFILL_GEMM_MIN_TOKENS 32

/* Causal softmax of S rows in place: row i (position start+i) keeps columns 0..start+i. */
static void causal_softmax_rows(float *S, int n, int L, int start)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *row = S + (size_t)i * (size_t)L;
        int len = start + i + 1;
        float maxv = -INFINITY, sum = 0.0f;
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
        float inv = 1.0f / sum;
        for (int j = 0; j < len; j++)
            row[j] *= inv;
        memset(row + len, 0, (size_t)(L - len) * sizeof(float));
    }
}

/* Returns 0, or -1 when scratch memory is unavailable (the caller falls back). */
static int attention_prefill_gemm(float *out, const float *q, const kc_paged_kv *kv, const int32_t *table, int start,
                                  int n, int n_heads)
{
    int hd = kv->head_dim, n_kv = kv->n_kv_heads, group = n_heads / n_kv, L = start + n;
    int q_stride = n_heads * hd;
    float *K = malloc((size_t)L * (size_t)hd * sizeof(float));
    float *V = malloc((size_t)L * (size_t)hd * sizeof(float));
    float *S = malloc((size_t)n * (size_t)L * sizeof(float));
    if (!K || !V || !S) {
        free(K); free(V); free(S);
        return -1;
    }
    float scale = 1.0f / sqrtf((float)hd);
    for (int g = 0; g < n_kv; g++) {
        for (int t = 0; t < L; t++) {
            const float *kr = k_row(kv, table, t) + (size_t)g * (size_t)hd;
            memcpy(K + (size_t)t * (size_t)hd, kr, (size_t)hd * sizeof(float));
            memcpy(V + (size_t)t * (size_t)hd, kr + kv->v_offset, (size_t)hd * sizeof(float));
        }
        for (int h = g * group; h < (g + 1) * group; h++) {
            kv_sgemm(KV_BLAS_T, n, L, hd, scale, q + (size_t)h * (size_t)hd, q_stride, K, hd, 0.0f, S, L);
            causal_softmax_rows(S, n, L, start);
            kv_sgemm(KV_BLAS_N, n, hd, L, 1.0f, S, L, V, hd, 0.0f, out + (size_t)h * (size_t)hd, q_stride);
        }
    }
    free(K); free(V); free(S);
    return 0;
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
