#include <math.h>
#include <string.h>

#include "cpu_kernels.h"
#include "simd.h"

void kc_rmsnorm(float *out, const float *x, const float *weight, int rows, int dim, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * (size_t)dim;
        float *o = out + (size_t)r * (size_t)dim;
        float ss = kc_dot(xr, xr, dim) / (float)dim + eps;
        float inv = 1.0f / sqrtf(ss);
        for (int i = 0; i < dim; i++)
            o[i] = weight[i] * (inv * xr[i]);
    }
}

void kc_embed(float *out, const float *table, const int32_t *tokens, int n, int dim)
{
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * (size_t)dim, table + (size_t)tokens[i] * (size_t)dim, (size_t)dim * sizeof(float));
}

/* silu(gate) * up, 8 lanes at a time with kc_exp8 (libm's expf, one call per element, was 5 %
 * of a SmolLM2 prefill); the tail takes expf. */
void kc_swiglu(float *out, const float *gate, const float *up, size_t n)
{
    const size_t n8 = n / 8;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t b = 0; b < n8; b++) {
        const __m256 g = _mm256_loadu_ps(gate + 8 * b);
        const __m256 e = kc_exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(out + 8 * b, _mm256_mul_ps(s, _mm256_loadu_ps(up + 8 * b)));
    }
    for (size_t i = 8 * n8; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kc_swiglu_rows(float *out, const float *gu, int rows, int ff)
{
    for (int r = 0; r < rows; r++) {
        const float *gate = gu + (size_t)r * 2 * (size_t)ff;
        kc_swiglu(out + (size_t)r * (size_t)ff, gate, gate + ff, (size_t)ff);
    }
}

void kc_add(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

int kc_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i])))
            best = i;
    return best;
}
