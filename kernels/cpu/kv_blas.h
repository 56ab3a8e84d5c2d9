/* The sgemm the CPU kernels use: row-major, A not transposed, B as stored or transposed.
 * OpenBLAS (OpenMP build) when the build has it (KV_HAVE_CBLAS); otherwise a portable
 * blocked loop (sgemm_fallback.c) so that a machine without OpenBLAS (the GPU box, where
 * the CPU kernels only serve as test references) still builds and computes right. */
#ifndef KV_BLAS_H
#define KV_BLAS_H

typedef enum { KV_BLAS_N = 0, KV_BLAS_T = 1 } kv_blas_trans;

#ifdef KV_HAVE_CBLAS
#include <cblas.h>

/* c[m][n] = alpha * a[m][k] . op(b) + beta * c, op(b) = b[k][n] (N) or b[n][k]^T (T). */
static inline void kv_sgemm(kv_blas_trans tb, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, tb == KV_BLAS_T ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
                ldb, beta, c, ldc);
}
static inline void kv_blas_set_threads(int n) { openblas_set_num_threads(n); }
static inline const char *kv_blas_name(void) { return "openblas"; }
#else
void kv_sgemm(kv_blas_trans tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              float beta, float *c, int ldc);
static inline void kv_blas_set_threads(int n) { (void)n; /* the fallback uses OpenMP's threads */ }
static inline const char *kv_blas_name(void) { return "fallback"; }
#endif

#endif
