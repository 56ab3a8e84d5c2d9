/* kv-bench-cuda: how close the CUDA kernels come to the machine. Prints one table: device
 * copy bandwidth (the ceiling for memory-bound kernels), cuBLAS bf16 GEMM throughput (the
 * ceiling for compute-bound ones), prefill attention (TFLOP/s, causal FLOPs) and split-KV
 * decode attention (GB/s of K/V read, and that as a share of the copy bandwidth).
 * Times are the median of 5 timed runs of several back-to-back launches (CUDA events).
 * Exits 77 with a message when there is no GPU. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernels.h"

#define CK(call)                                                                                          \
    do {                                                                                                  \
        cudaError_t e_ = (call);                                                                          \
        if (e_ != cudaSuccess) {                                                                          \
            fprintf(stderr, "kv-bench-cuda: %s failed: %s (line %d)\n", #call, cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                                                      \
        }                                                                                                 \
    } while (0)

#define KV(call)                                                                              \
    do {                                                                                      \
        if ((call) != 0) {                                                                    \
            fprintf(stderr, "kv-bench-cuda: %s failed: %s\n", #call, b->err.msg);             \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

typedef struct bench {
    kv_err err;
    cudaStream_t stream;
    cudaEvent_t t0, t1;
    int sms;
    double copy_gbs;
} bench;

typedef void (*run_fn)(bench *b, void *ctx);

static int cmp_double(const void *a, const void *c)
{
    double x = *(const double *)a, y = *(const double *)c;
    return x < y ? -1 : x > y;
}

/* Median over 5 timed runs of `iters` back-to-back calls, in ms per call. */
static double time_ms(bench *b, run_fn fn, void *ctx, int iters)
{
    fn(b, ctx); /* warm-up: first-launch costs, caches */
    CK(cudaStreamSynchronize(b->stream));
    double t[5];
    for (int rep = 0; rep < 5; rep++) {
        CK(cudaEventRecord(b->t0, b->stream));
        for (int i = 0; i < iters; i++) fn(b, ctx);
        CK(cudaEventRecord(b->t1, b->stream));
        CK(cudaEventSynchronize(b->t1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, b->t0, b->t1));
        t[rep] = ms / iters;
    }
    qsort(t, 5, sizeof *t, cmp_double);
    return t[2];
}

static void *dalloc(size_t bytes, int byte_value)
{
    void *p = NULL;
    CK(cudaMalloc(&p, bytes));
    /* 0x3C3C as bf16 is ~0.011: finite values, the content does not change the timing. */
    CK(cudaMemset(p, byte_value, bytes));
    return p;
}

/* ---- copy ---- */

typedef struct copy_ctx { void *dst, *src; size_t bytes; } copy_ctx;
static void run_copy(bench *b, void *ctx)
{
    copy_ctx *c = ctx;
    CK(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, b->stream));
}

static void bench_copy(bench *b)
{
    copy_ctx c = {NULL, NULL, (size_t)1 << 30};
    c.src = dalloc(c.bytes, 0x3C);
    c.dst = dalloc(c.bytes, 0);
    double ms = time_ms(b, run_copy, &c, 5);
    b->copy_gbs = 2.0 * (double)c.bytes / (ms * 1e-3) / 1e9;
    printf("%-44s %10.3f ms %10.0f GB/s (read+write)\n", "copy D2D 1 GiB", ms, b->copy_gbs);
    CK(cudaFree(c.src));
    CK(cudaFree(c.dst));
}

/* ---- GEMM ---- */

typedef struct gemm_ctx { void *blas, *y, *x, *w; int m, n, k; kv_cuda_dtype dt; } gemm_ctx;
static void run_gemm(bench *b, void *ctx)
{
    gemm_ctx *g = ctx;
    KV(kv_cuda_gemm(g->blas, g->y, g->x, g->w, g->m, g->n, g->k, g->dt, b->stream, &b->err));
}

static void bench_gemm(bench *b, int m, int n, int k, kv_cuda_dtype dt, int iters)
{
    gemm_ctx g = {NULL, NULL, NULL, NULL, m, n, k, dt};
    size_t es = kv_cuda_dtype_size(dt);
    KV(kv_cuda_blas_create(&g.blas, &b->err));
    g.x = dalloc((size_t)m * k * es, 0x3C);
    g.w = dalloc((size_t)n * k * es, 0x3C);
    g.y = dalloc((size_t)m * n * es, 0);
    double ms = time_ms(b, run_gemm, &g, iters);
    char label[64];
    snprintf(label, sizeof label, "gemm %s %dx%dx%d (cuBLAS)", kv_cuda_dtype_name(dt), m, n, k);
    printf("%-44s %10.3f ms %10.1f TFLOP/s\n", label, ms, 2.0 * m * n * (double)k / (ms * 1e-3) / 1e12);
    CK(cudaFree(g.x));
    CK(cudaFree(g.w));
    CK(cudaFree(g.y));
    kv_cuda_blas_destroy(g.blas);
}

/* Decode's projections at batch 1..4: the own GEMV and cuBLAS on the same bytes, as GB/s of
 * weights read (the floor is the copy bandwidth above). Successive calls take successive
 * copies of the weights, 256 MB or more in all, so that no call finds its weights in L2
 * (60 MB on an H200), as a decode step, which reads 16 GB, never does. */
typedef struct gemv_ctx { void *blas, *y, *x, *w; int m, n, k, copies, next, own; } gemv_ctx;
static void run_gemv(bench *b, void *ctx)
{
    gemv_ctx *g = ctx;
    const char *w = (const char *)g->w + (size_t)g->next * (size_t)g->n * (size_t)g->k * 2;
    g->next = (g->next + 1) % g->copies;
    if (g->own)
        KV(kv_cuda_gemv(g->y, g->x, w, g->m, g->n, g->k, KV_CUDA_BF16, b->stream, &b->err));
    else
        KV(kv_cuda_gemm(g->blas, g->y, g->x, w, g->m, g->n, g->k, KV_CUDA_BF16, b->stream, &b->err));
}

static void bench_gemv(bench *b, int m, int n, int k, const char *what)
{
    size_t wbytes = (size_t)n * (size_t)k * 2;
    gemv_ctx g = {NULL, NULL, NULL, NULL, m, n, k, (int)((((size_t)256 << 20) + wbytes - 1) / wbytes), 0, 1};
    KV(kv_cuda_blas_create(&g.blas, &b->err));
    g.x = dalloc((size_t)m * k * 2, 0x3C);
    g.w = dalloc(wbytes * (size_t)g.copies, 0x3C);
    g.y = dalloc((size_t)m * n * 2, 0);
    double own = time_ms(b, run_gemv, &g, 50);
    g.own = 0;
    double ref = time_ms(b, run_gemv, &g, 50);
    double gb = (double)wbytes / 1e9;
    char label[64];
    snprintf(label, sizeof label, "gemv bf16 %dx%dx%d %s", m, n, k, what);
    printf("%-44s %10.3f ms %10.0f GB/s   (cuBLAS %.3f ms, %.0f GB/s)\n", label, own, gb / (own * 1e-3), ref,
           gb / (ref * 1e-3));
    CK(cudaFree(g.x));
    CK(cudaFree(g.w));
    CK(cudaFree(g.y));
    kv_cuda_blas_destroy(g.blas);
}

/* The block-format GEMV (kv_cuda_wgemv): GB/s of weight bytes in their format, over copies
 * as above. Bytes are 0x3C: every scale is a finite fp16 (1.06), every weight in range. */
typedef struct wgemv_ctx { float *y, *x; void *w; kv_type t; int m, n, k, copies, next; size_t wbytes; } wgemv_ctx;
static void run_wgemv(bench *b, void *ctx)
{
    wgemv_ctx *g = ctx;
    const char *w = (const char *)g->w + (size_t)g->next * g->wbytes;
    g->next = (g->next + 1) % g->copies;
    KV(kv_cuda_wgemv(g->y, g->x, w, g->t, g->m, g->n, g->k, b->stream, &b->err));
}

static void bench_wgemv(bench *b, kv_type t, int m, int n, int k, const char *what)
{
    wgemv_ctx g = {NULL, NULL, NULL, t, m, n, k, 1, 0, (size_t)n * (size_t)kv_type_bytes(t, (uint64_t)k)};
    g.copies = (int)((((size_t)256 << 20) + g.wbytes - 1) / g.wbytes);
    g.x = dalloc((size_t)m * k * 4, 0x3C);
    g.w = dalloc(g.wbytes * (size_t)g.copies, 0x3C);
    g.y = dalloc((size_t)m * n * 4, 0);
    double ms = time_ms(b, run_wgemv, &g, 50), gbs = (double)g.wbytes / 1e9 / (ms * 1e-3);
    char label[64];
    snprintf(label, sizeof label, "wgemv %s %dx%dx%d %s", kv_type_name(t), m, n, k, what);
    printf("%-44s %10.3f ms %10.0f GB/s (%3.0f%% of copy)\n", label, ms, gbs, 100.0 * gbs / b->copy_gbs);
    CK(cudaFree(g.x));
    CK(cudaFree(g.w));
    CK(cudaFree(g.y));
}

/* ---- attention ---- */

#define N_HEADS 32
#define N_KV 8
#define HEAD_DIM 128
#define BLOCK 16

/* A one-layer bf16 pool of n_blocks blocks and a shuffled order to hand them out in. */
static kv_cuda_paged_kv make_pool(int n_blocks, int32_t **order)
{
    size_t row = (size_t)N_KV * HEAD_DIM, stride = 2 * (size_t)BLOCK * row;
    kv_cuda_paged_kv kv = {dalloc((size_t)n_blocks * stride * 2, 0x3C), stride, stride / 2, BLOCK, N_KV, HEAD_DIM,
                           KV_CUDA_BF16};
    int32_t *o = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++) o[i] = i;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int i = n_blocks - 1; i > 0; i--) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int j = (int)(s % (uint64_t)(i + 1));
        int32_t t = o[i]; o[i] = o[j]; o[j] = t;
    }
    *order = o;
    return kv;
}

static int32_t *to_dev_i32(const int32_t *x, size_t n)
{
    int32_t *d = NULL;
    CK(cudaMalloc((void **)&d, n * sizeof(int32_t)));
    CK(cudaMemcpy(d, x, n * sizeof(int32_t), cudaMemcpyHostToDevice));
    return d;
}

typedef struct prefill_ctx { void *out, *q; kv_cuda_paged_kv kv; int32_t *table; int n; } prefill_ctx;
static void run_prefill(bench *b, void *ctx)
{
    prefill_ctx *p = ctx;
    KV(kv_cuda_attention_prefill(p->out, p->q, &p->kv, p->table, 0, p->n, N_HEADS, b->stream, &b->err));
}

static void bench_prefill(bench *b, int seq)
{
    int blocks = (seq + BLOCK - 1) / BLOCK;
    int32_t *order;
    prefill_ctx p;
    p.kv = make_pool(blocks, &order);
    p.table = to_dev_i32(order, (size_t)blocks);
    p.n = seq;
    size_t nq = (size_t)seq * N_HEADS * HEAD_DIM;
    p.q = dalloc(nq * 2, 0x3C);
    p.out = dalloc(nq * 2, 0);
    double ms = time_ms(b, run_prefill, &p, seq >= 8192 ? 3 : 10);
    /* Causal: seq*(seq+1)/2 (query, key) pairs, QK^T and PV at 2 FLOPs per MAC each. */
    double flops = 4.0 * HEAD_DIM * N_HEADS * (double)seq * (seq + 1) / 2.0;
    char label[64];
    snprintf(label, sizeof label, "prefill attn bf16 seq=%d h=%d/%d d=%d", seq, N_HEADS, N_KV, HEAD_DIM);
    printf("%-44s %10.3f ms %10.1f TFLOP/s\n", label, ms, flops / (ms * 1e-3) / 1e12);
    CK(cudaFree(p.kv.pool));
    CK(cudaFree(p.table));
    CK(cudaFree(p.q));
    CK(cudaFree(p.out));
    free(order);
}

typedef struct decode_ctx {
    void *out, *q, *ws;
    size_t ws_bytes;
    kv_cuda_paged_kv kv;
    int32_t *tables, *lens;
    int stride, batch, splits;
} decode_ctx;
static void run_decode(bench *b, void *ctx)
{
    decode_ctx *d = ctx;
    KV(kv_cuda_attention_decode(d->out, d->q, &d->kv, d->tables, d->stride, d->lens, d->batch, N_HEADS, d->splits,
                                d->ws, d->ws_bytes, b->stream, &b->err));
}

static void bench_decode(bench *b, int batch, int ctx)
{
    int per = (ctx + BLOCK - 1) / BLOCK, blocks = per * batch;
    int32_t *order;
    decode_ctx d;
    d.kv = make_pool(blocks, &order);
    d.stride = per;
    d.batch = batch;
    int32_t *lens = malloc(sizeof(int32_t) * (size_t)batch);
    for (int i = 0; i < batch; i++) lens[i] = ctx;
    d.tables = to_dev_i32(order, (size_t)blocks);
    d.lens = to_dev_i32(lens, (size_t)batch);
    d.splits = kv_cuda_decode_splits(batch, N_HEADS, N_KV, ctx, b->sms);
    d.ws_bytes = kv_cuda_decode_workspace_bytes(batch, N_HEADS, HEAD_DIM, d.splits);
    d.ws = d.ws_bytes ? dalloc(d.ws_bytes, 0) : NULL;
    size_t nq = (size_t)batch * N_HEADS * HEAD_DIM;
    d.q = dalloc(nq * 2, 0x3C);
    d.out = dalloc(nq * 2, 0);
    double ms = time_ms(b, run_decode, &d, 50);
    double bytes = (double)batch * ctx * N_KV * HEAD_DIM * 2 /* K and V */ * 2 /* bf16 */;
    double gbs = bytes / (ms * 1e-3) / 1e9;
    char label[64];
    snprintf(label, sizeof label, "decode attn bf16 batch=%d ctx=%d splits=%d", batch, ctx, d.splits);
    printf("%-44s %10.1f us %10.0f GB/s (%3.0f%% of copy)\n", label, ms * 1e3, gbs, 100.0 * gbs / b->copy_gbs);
    CK(cudaFree(d.kv.pool));
    CK(cudaFree(d.tables));
    CK(cudaFree(d.lens));
    CK(cudaFree(d.q));
    CK(cudaFree(d.out));
    if (d.ws) CK(cudaFree(d.ws));
    free(order);
    free(lens);
}

int main(void)
{
    bench bs, *b = &bs;
    memset(b, 0, sizeof *b);
    int n = 0;
    kv_cuda_device_count(&n, &b->err);
    if (n == 0) {
        fprintf(stderr, "kv-bench-cuda: no CUDA device, nothing to measure (%s)\n",
                b->err.msg[0] ? b->err.msg : "none found");
        return 77;
    }
    char name[256];
    size_t mem = 0;
    int major = 0, minor = 0;
    KV(kv_cuda_device_info(0, name, sizeof name, &mem, &major, &minor, &b->err));
    KV(kv_cuda_device_sm_count(0, &b->sms, &b->err));
    CK(cudaStreamCreate(&b->stream));
    CK(cudaEventCreate(&b->t0));
    CK(cudaEventCreate(&b->t1));
    printf("kv-bench-cuda: %s, sm_%d%d, %d SMs, %.0f GiB\n", name, major, minor, b->sms, (double)mem / (1 << 30));
    printf("%-44s %13s %15s\n", "what", "time", "rate");
    bench_copy(b);
    bench_gemm(b, 8192, 8192, 8192, KV_CUDA_BF16, 10);
    /* Llama-3-8B's decode projections (stacked Q/K/V and gate/up, as the engine runs them). */
    for (int m = 1; m <= KV_CUDA_GEMV_MAX_ROWS; m *= 2) {
        bench_gemv(b, m, 6144, 4096, "qkv");
        bench_gemv(b, m, 4096, 4096, "o");
        bench_gemv(b, m, 28672, 4096, "gate_up");
        bench_gemv(b, m, 4096, 14336, "down");
    }
    /* The same shapes with weights as a GGUF stores them (f32 activations). */
    const kv_type wtypes[] = {KV_TYPE_Q8_0, KV_TYPE_Q4_0, KV_TYPE_Q4_1};
    for (int t = 0; t < 3; t++)
        for (int m = 1; m <= 4; m *= 4) {
            bench_wgemv(b, wtypes[t], m, 6144, 4096, "qkv");
            bench_wgemv(b, wtypes[t], m, 4096, 14336, "down");
        }
    const int seqs[] = {512, 2048, 8192};
    for (int i = 0; i < 3; i++) bench_prefill(b, seqs[i]);
    const int ctxs[] = {1024, 8192}, batches[] = {1, 8, 64};
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 3; i++) bench_decode(b, batches[i], ctxs[c]);
    CK(cudaEventDestroy(b->t0));
    CK(cudaEventDestroy(b->t1));
    CK(cudaStreamDestroy(b->stream));
    return 0;
}
