#include "cpu_kernels.h"
#include "kv_blas.h"
#include "simd.h"

/* Below this many rows the weights dominate the traffic: read each weight row once and
 * dot it with every input row (memory-bound GEMV). Above it, sgemm's blocking wins
 * (prefill; decode always takes the batch-invariant GEMV). */
#define GEMV_MAX_ROWS 4

/* y[j..j+3] = w[j..j+3] . x: each x chunk is loaded once for four weight rows, so the
 * loop is bound by the weight stream alone. */
static void gemv_rows4(float *y, const float *x, const float *w, int k)
{
    const float *w0 = w, *w1 = w + k, *w2 = w + 2 * (size_t)k, *w3 = w + 3 * (size_t)k;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, a3);
    }
    float s0 = kc_hsum256(a0), s1 = kc_hsum256(a1), s2 = kc_hsum256(a2), s3 = kc_hsum256(a3);
    for (; i < k; i++) {
        s0 += w0[i] * x[i];
        s1 += w1[i] * x[i];
        s2 += w2[i] * x[i];
        s3 += w3[i] * x[i];
    }
    y[0] = s0;
    y[1] = s1;
    y[2] = s2;
    y[3] = s3;
}

void kc_matmul_gemv(float *y, const float *x, const float *w, int m, int n, int k)
{
    /* Each (input, output) pair is reduced by the same code whatever m is, so a sequence's
     * decode results do not depend on which other sequences share its batch: the service
     * reproduces single-process generation bit for bit. The 4 weight rows stay in cache
     * while every input row passes over them. */
    int n4 = n / 4 * 4;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n4; j += 4) {
        const float *wj = w + (size_t)j * (size_t)k;
        for (int i = 0; i < m; i++)
            gemv_rows4(y + (size_t)i * (size_t)n + (size_t)j, x + (size_t)i * (size_t)k, wj, k);
    }
    for (int j = n4; j < n; j++)
        for (int i = 0; i < m; i++)
            y[(size_t)i * (size_t)n + (size_t)j] = kc_dot(x + (size_t)i * (size_t)k, w + (size_t)j * (size_t)k, k);
}

void kc_matmul(float *y, const float *x, const float *w, int m, int n, int k)
{
    if (m <= GEMV_MAX_ROWS) {
        kc_matmul_gemv(y, x, w, m, n, k);
        return;
    }
    kv_sgemm(KV_BLAS_T, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
}
