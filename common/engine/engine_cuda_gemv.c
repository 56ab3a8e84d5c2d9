/* Which decode projections run on kernels/cuda's own GEMV instead of cuBLAS. Decided once,
 * when the engine starts, by timing both on the model's own weights for 1, 2 and 4 rows
 * (the graph buckets it can serve), each call on the next layer's matrix so that, as in a
 * decode step, the weights come from memory and not from L2: the own kernel takes a projection up to the
 * largest row count at which it was at least as fast, so it never makes a step slower
 * than cuBLAS alone. Its output is compared with cuBLAS's on the way; a mismatch turns it
 * off for the engine (with an error in the log) rather than serve wrong tokens.
 * KVSERVE_GEMV=own uses it wherever it fits, =cublas never (both for tests and A/B runs). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype_convert.h"
#include "engine_cuda.h"
#include "kv_log.h"

static const char *const proj_names[CU_PROJ_COUNT] = {"qkv", "o", "gate_up", "down"};

/* n, k and the given layer's weights of a projection. */
static void proj_shape(const kv_engine *e, const cu_engine *c, cu_proj p, int layer, int *n, int *k, const void **w)
{
    const kv_model_config *cfg = &e->model->cfg;
    int h = cfg->hidden_size, q = cfg->n_heads * cfg->head_dim, kv = cfg->n_kv_heads * cfg->head_dim;
    int ff = cfg->intermediate_size;
    const cu_layer *l = &c->layers[layer % cfg->n_layers];
    switch (p) {
    case CU_PROJ_QKV: *n = q + 2 * kv, *k = h, *w = l->wqkv; break;
    case CU_PROJ_O: *n = h, *k = q, *w = l->wo; break;
    case CU_PROJ_GU: *n = 2 * ff, *k = h, *w = l->w_gu; break;
    default: *n = h, *k = ff, *w = l->w_down; break;
    }
}

int cu_project(cu_engine *c, cu_proj p, void *y, const void *x, const void *w, int rows, int n, int k, kv_err *err)
{
    if (rows <= c->gemv_rows[p] && kv_cuda_gemv_fits(x, w, rows, k, c->dt))
        return kv_cuda_gemv(y, x, w, rows, n, k, c->dt, c->stream, err);
    return kv_cuda_gemm(c->blas, y, x, w, rows, n, k, c->dt, c->stream, err);
}

typedef struct tune_bufs {
    void *x, *y_own, *y_ref;
    uint16_t *host_own, *host_ref; /* bf16 bits */
    cudaEvent_t t0, t1;
} tune_bufs;

/* Mean milliseconds of one call (after two warm-up calls), own kernel or cuBLAS; call i
 * reads layer i's matrix, so both end on the same one (compare() relies on it). */
static int time_one(kv_engine *e, tune_bufs *b, int own, cu_proj p, int m, float *ms, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const int reps = 5;
    void *y = own ? b->y_own : b->y_ref;
    for (int i = -2; i < reps; i++) {
        int n, k;
        const void *w;
        proj_shape(e, c, p, i + 2, &n, &k, &w);
        if (i == 0)
            CU_CHECK(cudaEventRecord(b->t0, c->stream));
        KC_CHECK(own ? kv_cuda_gemv(y, b->x, w, m, n, k, c->dt, c->stream, err)
                     : kv_cuda_gemm(c->blas, y, b->x, w, m, n, k, c->dt, c->stream, err));
    }
    CU_CHECK(cudaEventRecord(b->t1, c->stream));
    CU_CHECK(cudaEventSynchronize(b->t1));
    CU_CHECK(cudaEventElapsedTime(ms, b->t0, b->t1));
    *ms /= (float)reps;
    return KV_OK;
}

/* Largest |own - cublas| / max(1, |cublas|) over the m x n outputs (bf16 on the device).
 * Copies go on the engine's stream: it does not wait for the legacy default stream. */
static int compare(const cu_engine *c, const tune_bufs *b, size_t count, double *worst, kv_err *err)
{
    CU_CHECK(cudaMemcpyAsync(b->host_own, b->y_own, count * 2, cudaMemcpyDeviceToHost, c->stream));
    CU_CHECK(cudaMemcpyAsync(b->host_ref, b->y_ref, count * 2, cudaMemcpyDeviceToHost, c->stream));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    *worst = 0;
    for (size_t i = 0; i < count; i++) {
        double got = kv_bf16_to_f32_1(b->host_own[i]), ref = kv_bf16_to_f32_1(b->host_ref[i]);
        double d = fabs(got - ref) / fmax(1.0, fabs(ref));
        if (!(d <= *worst))
            *worst = isnan(d) ? INFINITY : d;
    }
    return KV_OK;
}

/* x: KV_CUDA_GEMV_MAX_ROWS rows of k values in [-1, 1), as the engine's dtype. */
static int fill_x(const cu_engine *c, tune_bufs *b, int k, kv_err *err)
{
    size_t n = (size_t)KV_CUDA_GEMV_MAX_ROWS * (size_t)k;
    uint16_t *h = b->host_own;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        h[i] = kv_f32_to_bf16_1((float)(s >> 40) * (2.0f / 16777216.0f) - 1.0f);
    }
    CU_CHECK(cudaMemcpyAsync(b->x, h, n * 2, cudaMemcpyHostToDevice, c->stream));
    CU_CHECK(cudaStreamSynchronize(c->stream)); /* h is rewritten by the next compare() */
    return KV_OK;
}

static int tune(kv_engine *e, tune_bufs *b, char *report, size_t cap, kv_err *err)
{
    cu_engine *c = cu_of(e);
    size_t used = 0;
    for (int p = 0; p < CU_PROJ_COUNT; p++) {
        int n, k;
        const void *w;
        proj_shape(e, c, (cu_proj)p, 0, &n, &k, &w);
        c->gemv_rows[p] = 0;
        if (!kv_cuda_gemv_fits(b->x, w, 1, k, c->dt)) {
            used += (size_t)snprintf(report + used, cap - used, " %s=cublas(k=%d)", proj_names[p], k);
            continue;
        }
        KC_CHECK(fill_x(c, b, k, err));
        float own_ms = 0, ref_ms = 0;
        for (int m = 1; m <= KV_CUDA_GEMV_MAX_ROWS; m *= 2) {
            KC_CHECK(time_one(e, b, 1, (cu_proj)p, m, &own_ms, err));
            KC_CHECK(time_one(e, b, 0, (cu_proj)p, m, &ref_ms, err));
            double worst = INFINITY;
            KC_CHECK(compare(c, b, (size_t)m * (size_t)n, &worst, err));
            if (!(worst < 2e-2)) {
                KV_ERROR("engine", "msg=\"own gemv disagrees with cuBLAS: decode uses cuBLAS only\" proj=%s rows=%d "
                                   "n=%d k=%d max_rel_diff=%g",
                         proj_names[p], m, n, k, worst);
                memset(c->gemv_rows, 0, sizeof c->gemv_rows);
                snprintf(report, cap, " all=cublas(own gemv disagreed)");
                return KV_OK;
            }
            if (own_ms > ref_ms)
                break;
            c->gemv_rows[p] = m;
        }
        char rows[32] = "";
        if (c->gemv_rows[p])
            snprintf(rows, sizeof rows, "rows<=%d;", c->gemv_rows[p]);
        used += (size_t)snprintf(report + used, cap - used, " %s=%s(%slast us own=%.1f cublas=%.1f)", proj_names[p],
                                 c->gemv_rows[p] ? "own" : "cublas", rows, (double)own_ms * 1e3, (double)ref_ms * 1e3);
        if (used >= cap)
            used = cap - 1;
    }
    return KV_OK;
}

int cu_gemv_choose(kv_engine *e, kv_err *err)
{
    cu_engine *c = cu_of(e);
    memset(c->gemv_rows, 0, sizeof c->gemv_rows);
    const char *mode = getenv("KVSERVE_GEMV");
    if (c->dt != KV_CUDA_BF16 || (mode && !strcmp(mode, "cublas")))
        return KV_OK;
    if (mode && !strcmp(mode, "own")) {
        for (int p = 0; p < CU_PROJ_COUNT; p++)
            c->gemv_rows[p] = KV_CUDA_GEMV_MAX_ROWS;
        KV_INFO("engine", "msg=\"decode projections on the own gemv where it fits\" reason=KVSERVE_GEMV=own");
        return KV_OK;
    }
    const kv_model_config *cfg = &e->model->cfg;
    size_t max_k = (size_t)cfg->hidden_size, max_n = 0;
    for (int p = 0; p < CU_PROJ_COUNT; p++) {
        int n, k;
        const void *w;
        proj_shape(e, c, (cu_proj)p, 0, &n, &k, &w);
        max_k = (size_t)k > max_k ? (size_t)k : max_k;
        max_n = (size_t)n > max_n ? (size_t)n : max_n;
    }
    size_t rows = KV_CUDA_GEMV_MAX_ROWS, host = (rows * (max_k > max_n ? max_k : max_n)) * 2;
    tune_bufs b = {0};
    int rc = KV_OK;
    cudaError_t ce = cudaMalloc(&b.x, rows * max_k * 2);
    if (ce == cudaSuccess)
        ce = cudaMalloc(&b.y_own, rows * max_n * 2);
    if (ce == cudaSuccess)
        ce = cudaMalloc(&b.y_ref, rows * max_n * 2);
    if (ce == cudaSuccess)
        ce = cudaEventCreate(&b.t0);
    if (ce == cudaSuccess)
        ce = cudaEventCreate(&b.t1);
    b.host_own = malloc(host);
    b.host_ref = malloc(host);
    char report[512] = "";
    if (ce != cudaSuccess)
        rc = cu_fail(err, ce, "cudaMalloc / cudaEventCreate (gemv tuning)", __FILE__, __LINE__);
    else if (!b.host_own || !b.host_ref)
        rc = kv_err_set(err, KV_ENOMEM, "out of memory (gemv tuning)");
    else
        rc = tune(e, &b, report, sizeof report, err);
    if (!rc)
        KV_INFO("engine", "msg=\"decode projections\"%s", report);
    cudaFree(b.x);
    cudaFree(b.y_own);
    cudaFree(b.y_ref);
    if (b.t0)
        cudaEventDestroy(b.t0);
    if (b.t1)
        cudaEventDestroy(b.t1);
    free(b.host_own);
    free(b.host_ref);
    return rc;
}
