/* Portable sgemm for builds without OpenBLAS (see kv_blas.h): blocked loops, OpenMP over row
 * blocks. Correctness first: it serves the CPU twins and the CPU engine as references on
 * the GPU machine; speed is whatever the compiler makes of it. */
#include "kv_blas.h"

#ifndef KV_HAVE_CBLAS
#include <stddef.h>
#include <string.h>

#define ROWS_PER_BLOCK 16
#define COLS_PER_BLOCK 64
#define K_PER_BLOCK 256

/* One row of c times alpha, accumulated over the k-block [k0, k1) (b transposed: dot products). */
static void row_nt(float *c, const float *a, const float *b, int ldb, int n0, int n1, int k0, int k1, float alpha)
{
    for (int j = n0; j < n1; j++) {
        const float *bj = b + (size_t)j * (size_t)ldb;
        /* Four partial sums: independent chains the CPU can overlap. */
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        int p = k0;
        for (; p + 4 <= k1; p += 4) {
            s0 += a[p] * bj[p];
            s1 += a[p + 1] * bj[p + 1];
            s2 += a[p + 2] * bj[p + 2];
            s3 += a[p + 3] * bj[p + 3];
        }
        for (; p < k1; p++)
            s0 += a[p] * bj[p];
        c[j] += alpha * ((s0 + s1) + (s2 + s3));
    }
}

/* b as stored: c[j] += alpha * a[p] * b[p][j], a streaming update the compiler vectorises. */
static void row_nn(float *c, const float *a, const float *b, int ldb, int n0, int n1, int k0, int k1, float alpha)
{
    for (int p = k0; p < k1; p++) {
        float ap = alpha * a[p];
        const float *bp = b + (size_t)p * (size_t)ldb;
        for (int j = n0; j < n1; j++)
            c[j] += ap * bp[j];
    }
}

void kv_sgemm(kv_blas_trans tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
              float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
#pragma omp parallel for schedule(dynamic, 1)
    for (int i0 = 0; i0 < m; i0 += ROWS_PER_BLOCK) {
        int i1 = i0 + ROWS_PER_BLOCK < m ? i0 + ROWS_PER_BLOCK : m;
        for (int i = i0; i < i1; i++) {
            float *ci = c + (size_t)i * (size_t)ldc;
            if (beta == 0.0f) /* BLAS semantics: c is not read, NaN garbage included */
                memset(ci, 0, (size_t)n * sizeof(float));
            else if (beta != 1.0f)
                for (int j = 0; j < n; j++)
                    ci[j] *= beta;
        }
        /* Blocks of columns and depth keep a tile of b in cache across the block's rows. */
        for (int n0 = 0; n0 < n; n0 += COLS_PER_BLOCK) {
            int n1 = n0 + COLS_PER_BLOCK < n ? n0 + COLS_PER_BLOCK : n;
            for (int k0 = 0; k0 < k; k0 += K_PER_BLOCK) {
                int k1 = k0 + K_PER_BLOCK < k ? k0 + K_PER_BLOCK : k;
                for (int i = i0; i < i1; i++) {
                    const float *ai = a + (size_t)i * (size_t)lda;
                    float *ci = c + (size_t)i * (size_t)ldc;
                    if (tb == KV_BLAS_T)
                        row_nt(ci, ai, b, ldb, n0, n1, k0, k1, alpha);
                    else
                        row_nn(ci, ai, b, ldb, n0, n1, k0, k1, alpha);
                }
            }
        }
    }
}
#endif
