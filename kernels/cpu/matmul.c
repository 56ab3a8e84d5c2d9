#include <cblas.h>

#include "cpu_kernels.h"
#include "simd.h"

/* Below this many rows the weights dominate the traffic: read each weight row once and
 * dot it with every input row (memory-bound GEMV). Above it, sgemm's blocking wins. */
#define GEMV_MAX_ROWS 4

void kc_matmul_gemv(float *y, const float *x, const float *w, int m, int n, int k)
{
#pragma omp parallel for schedule(static)
    for (int j = 0; j < n; j++) {
        const float *wj = w + (size_t)j * (size_t)k;
        for (int i = 0; i < m; i++)
            y[(size_t)i * (size_t)n + (size_t)j] = kc_dot(x + (size_t)i * (size_t)k, wj, k);
    }
}

void kc_matmul(float *y, const float *x, const float *w, int m, int n, int k)
{
    if (m <= GEMV_MAX_ROWS) {
        kc_matmul_gemv(y, x, w, m, n, k);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
}
