/* kv-bench-engine-cuda: the CUDA engine on a real-shaped model against floors measured in
 * the same run.
 *   decode   tok/s at each (batch, context), as % of the bandwidth floor: the bytes a step
 *            must read (weights + every sequence's KV) over the device-to-device copy
 *            bandwidth (cudaMemcpy D2D, bytes read + written);
 *   prefill  time for N prompt tokens, as % of the cuBLAS GEMM peak (engine dtype, 8192^3
 *            by default, random data): 2 x params x tokens + causal attention FLOPs.
 * Engine calls return only after the GPU is done (they copy logits back), so a host clock
 * around them is a full measurement; every figure is the median of repeats after a warm-up.
 * A benchmark, not a test: prints a table, asserts nothing. Exits 77 without a GPU. */
#include <cuda_runtime.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernels.h"
#include "engine.h"
#include "kv_time.h"
#include "model.h"

#define MAX_LIST 16
#define GIB ((double)(1u << 30))

#define CK(call)                                                                                         \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            fprintf(stderr, "kv-bench-engine-cuda: %s failed: %s (line %d)\n", #call, cudaGetErrorString(e_), \
                    __LINE__);                                                                           \
            exit(1);                                                                                     \
        }                                                                                                \
    } while (0)

#define KV(call, err)                                                                 \
    do {                                                                              \
        if ((call) != 0) {                                                            \
            fprintf(stderr, "kv-bench-engine-cuda: %s failed: %s\n", #call, (err).msg); \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

typedef struct opts {
    const char *model;
    const char *device;
    kv_precision precision;
    int batches[MAX_LIST], n_batches;
    int contexts[MAX_LIST], n_contexts;
    int prefills[MAX_LIST], n_prefills;
    int steps, repeats, prefill_chunk;
    int gemm_n;       /* the GEMM floor's size (n x n x n) */
    int copy_mib;     /* the copy floor's buffer */
    double kv_mib;    /* > 0: cap on the KV pool */
    int compare_graphs; /* decode at batch 1 and 8, 1k context, again without CUDA graphs */
} opts;

typedef struct floors {
    double copy_gbs;     /* D2D copy, (read + written bytes) / s */
    double gemm_tflops;  /* cuBLAS n^3 in the engine's dtype */
} floors;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* ---- floors ---------------------------------------------------------------------------- */

/* Median of 7 timed runs (CUDA events) of 4 copies of `mib` MiB, after a warm-up. */
static double measure_copy(cudaStream_t s, int mib)
{
    size_t bytes = (size_t)mib << 20;
    void *a, *b;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 0x3C, bytes));
    cudaEvent_t t0, t1;
    CK(cudaEventCreate(&t0));
    CK(cudaEventCreate(&t1));
    double ms[7];
    CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
    for (int r = 0; r < 7; r++) {
        CK(cudaEventRecord(t0, s));
        for (int i = 0; i < 4; i++)
            CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
        CK(cudaEventRecord(t1, s));
        CK(cudaEventSynchronize(t1));
        float f = 0;
        CK(cudaEventElapsedTime(&f, t0, t1));
        ms[r] = f / 4;
    }
    CK(cudaEventDestroy(t0));
    CK(cudaEventDestroy(t1));
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 2.0 * (double)bytes / (median(ms, 7) * 1e-3) / 1e9;
}

/* Device buffer of n random values in dt (uniform in [-1, 1)): never time on zeros. */
static void *random_dev(size_t n, kv_cuda_dtype dt, uint64_t seed, cudaStream_t s)
{
    float *host = malloc(n * sizeof(float));
    if (!host) {
        fprintf(stderr, "kv-bench-engine-cuda: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        host[i] = (float)((rng_next(&seed) >> 40) * (1.0 / 8388608.0)) - 1.0f;
    void *f32 = NULL, *out = NULL;
    kv_err err;
    CK(cudaMalloc(&f32, n * sizeof(float)));
    CK(cudaMemcpy(f32, host, n * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize()); /* the pageable copy's DMA, before s (non-blocking) reads it */
    CK(cudaMalloc(&out, n * kv_cuda_dtype_size(dt)));
    KV(kv_cuda_convert(out, dt, f32, KV_CUDA_F32, n, s, &err), err);
    CK(cudaStreamSynchronize(s));
    CK(cudaFree(f32));
    free(host);
    return out;
}

static double measure_gemm(kv_cuda_dtype dt, cudaStream_t s, int n)
{
    size_t nn = (size_t)n * n;
    void *x = random_dev(nn, dt, 1, s), *w = random_dev(nn, dt, 2, s), *y = NULL, *blas = NULL;
    kv_err err;
    CK(cudaMalloc(&y, nn * kv_cuda_dtype_size(dt)));
    KV(kv_cuda_blas_create(&blas, &err), err);
    cudaEvent_t t0, t1;
    CK(cudaEventCreate(&t0));
    CK(cudaEventCreate(&t1));
    KV(kv_cuda_gemm(blas, y, x, w, n, n, n, dt, s, &err), err); /* warm-up: heuristics, clocks */
    double ms[5];
    int iters = dt == KV_CUDA_F32 ? 2 : 5;
    for (int r = 0; r < 5; r++) {
        CK(cudaEventRecord(t0, s));
        for (int i = 0; i < iters; i++)
            KV(kv_cuda_gemm(blas, y, x, w, n, n, n, dt, s, &err), err);
        CK(cudaEventRecord(t1, s));
        CK(cudaEventSynchronize(t1));
        float f = 0;
        CK(cudaEventElapsedTime(&f, t0, t1));
        ms[r] = f / iters;
    }
    CK(cudaEventDestroy(t0));
    CK(cudaEventDestroy(t1));
    kv_cuda_blas_destroy(blas);
    CK(cudaFree(x));
    CK(cudaFree(w));
    CK(cudaFree(y));
    return 2.0 * (double)n * n * n / (median(ms, 5) * 1e-3) / 1e12;
}

/* ---- model arithmetic ------------------------------------------------------------------ */

typedef struct shape_info {
    double es;              /* bytes per value on the device */
    double weight_bytes;    /* what a decode step streams: every matrix but the embedding table */
    double kv_per_token;    /* K and V, all layers */
    double layer_params;    /* matmul parameters of the layers (no LM head) */
    double head_params;     /* LM head */
} shape_info;

static shape_info shape_of(const kv_model *m, kv_precision p)
{
    const kv_model_config *c = &m->cfg;
    shape_info s;
    s.es = p == KV_PRECISION_BF16 ? 2.0 : 4.0;
    /* The GPU holds f32 or bf16 copies whatever the host format: count parameters. */
    double h = c->hidden_size, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    s.kv_per_token = 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * s.es;
    s.head_params = (double)c->vocab_size * c->hidden_size;
    s.layer_params = c->n_layers * (2 * h * q + 2 * h * kv + 3 * h * c->intermediate_size + 2 * h);
    s.weight_bytes = (s.layer_params + s.head_params + h) * s.es;
    return s;
}

/* Causal attention FLOPs of a prefill of n tokens: QK^T and PV, 2 FLOPs per multiply-add. */
static double attn_flops(const kv_model_config *c, double n)
{
    return 4.0 * c->n_layers * c->n_heads * c->head_dim * n * (n + 1) / 2.0;
}

static int blocks_for(int tokens, int bs) { return (tokens + bs - 1) / bs; }

/* ---- runs ------------------------------------------------------------------------------- */

static void prompt_tokens(int32_t *t, int n, int vocab, uint64_t seed)
{
    for (int i = 0; i < n; i++)
        t[i] = (int32_t)(rng_next(&seed) % (uint64_t)vocab);
}

static void bench_prefill(kv_engine *e, const opts *o, const floors *f, const shape_info *si)
{
    const kv_model_config *c = &kv_engine_model(e)->cfg;
    float *logits = malloc(sizeof(float) * (size_t)c->vocab_size);
    for (int pi = 0; pi < o->n_prefills; pi++) {
        int n = o->prefills[pi];
        if (n > c->max_position) {
            printf("| prefill | %d tokens | skipped: context length %d | | |\n", n, c->max_position);
            continue;
        }
        int32_t *toks = malloc(sizeof(int32_t) * (size_t)n);
        prompt_tokens(toks, n, c->vocab_size, 7 + (uint64_t)n);
        double t[16];
        int reps = o->repeats < 16 ? o->repeats : 16;
        kv_err err;
        int ok = 1;
        for (int r = -1; r < reps && ok; r++) { /* r = -1: warm-up */
            kv_seq seq = {0};
            double t0 = kv_now_s();
            if (kv_engine_prefill(e, &seq, toks, n, logits, 0, &err)) {
                printf("| prefill | %d tokens | failed: %s | | |\n", n, err.msg);
                ok = 0;
            }
            double dt = kv_now_s() - t0;
            if (r >= 0)
                t[r] = dt;
            kv_seq_release(&seq, kv_engine_pool(e));
        }
        if (ok) {
            double s = median(t, reps);
            double flops = 2.0 * si->layer_params * n + 2.0 * si->head_params + attn_flops(c, n);
            double tflops = flops / s / 1e12;
            printf("| prefill | %d tokens (chunk %d) | %.2f ms, %.0f tok/s, %.1f TFLOP/s | %.1f TFLOP/s (cuBLAS GEMM) | %.0f %% |\n",
                   n, o->prefill_chunk < n ? o->prefill_chunk : n, s * 1e3, n / s, tflops, f->gemm_tflops,
                   100.0 * tflops / f->gemm_tflops);
        }
        free(toks);
    }
    free(logits);
}

/* B sequences of ctx tokens each: one real prefill, its blocks copied on the device into the
 * others' (realistic KV contents, no B-fold prefill). Returns 0, or -1 when the pool is full. */
static int make_batch(kv_engine *e, kv_seq *seqs, int b, int ctx, int extra, kv_err *err)
{
    const kv_model_config *c = &kv_engine_model(e)->cfg;
    kv_pool *pool = kv_engine_pool(e);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)ctx);
    prompt_tokens(toks, ctx, c->vocab_size, 11);
    int rc = kv_seq_reserve_tokens(&seqs[0], pool, ctx + extra, err);
    if (!rc)
        rc = kv_engine_prefill(e, &seqs[0], toks, ctx, NULL, 0, err);
    free(toks);
    size_t bb = kv_engine_block_bytes(e);
    for (int i = 1; !rc && i < b; i++) {
        if ((rc = kv_seq_reserve_tokens(&seqs[i], pool, ctx + extra, err)))
            break;
        for (int k = 0; k < blocks_for(ctx, pool->shape.block_size); k++)
            CK(cudaMemcpy(kv_engine_block_ptr(e, seqs[i].blocks[k]), kv_engine_block_ptr(e, seqs[0].blocks[k]), bb,
                          cudaMemcpyDeviceToDevice));
        seqs[i].n_tokens = ctx;
    }
    /* Device-to-device cudaMemcpy does not wait on the host, and the engine's stream does
     * not wait on the default one: finish the copies before decoding reads them. */
    CK(cudaDeviceSynchronize());
    return rc;
}

static void bench_decode_one(kv_engine *e, const opts *o, const floors *f, const shape_info *si, int b, int ctx,
                             const char *note)
{
    const kv_model_config *c = &kv_engine_model(e)->cfg;
    kv_pool *pool = kv_engine_pool(e);
    int warm = 3, steps = o->steps < 64 ? o->steps : 64;
    kv_seq *seqs = calloc((size_t)b, sizeof *seqs);
    kv_seq **ptrs = malloc(sizeof *ptrs * (size_t)b);
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)b);
    /* Greedy picks on the device, fed back as the next step's tokens: the decode worker's
     * loop (kv_engine_decode_sample), whose step returns ids, not b x vocab logits. */
    kv_sampler *samplers = calloc((size_t)b, sizeof *samplers);
    kv_sampler **sp = malloc(sizeof *sp * (size_t)b);
    kv_sampling_params greedy;
    kv_sampling_default(&greedy);
    kv_err err;
    for (int i = 0; i < b; i++) {
        ptrs[i] = &seqs[i];
        sp[i] = &samplers[i];
        kv_sampler_init(&samplers[i], &greedy, c->vocab_size, &err); /* greedy: cannot fail */
    }
    if (make_batch(e, seqs, b, ctx, warm + steps + 1, &err)) {
        printf("| decode | batch %d, context %d | failed to set up: %s | | |\n", b, ctx, err.msg);
    } else {
        double t[64];
        uint64_t seed = 99;
        int ok = 1;
        for (int i = 0; i < b; i++)
            toks[i] = (int32_t)(rng_next(&seed) % (uint64_t)c->vocab_size);
        for (int s = -warm; s < steps && ok; s++) { /* warm-up steps capture the graphs */
            double t0 = kv_now_s();
            if (kv_engine_decode_sample(e, ptrs, toks, b, sp, toks, &err)) {
                printf("| decode | batch %d, context %d | failed: %s | | |\n", b, ctx, err.msg);
                ok = 0;
            }
            if (s >= 0)
                t[s] = kv_now_s() - t0;
        }
        if (ok) {
            double step = median(t, steps);
            double mean_ctx = ctx + warm + steps / 2.0;
            double bytes = si->weight_bytes + (double)b * mean_ctx * si->kv_per_token;
            double floor_s = bytes / (f->copy_gbs * 1e9);
            printf("| decode | batch %d, context %d%s | %.3f ms/step, %.0f tok/s | %.3f ms (%.2f GB / %.0f GB/s) | %.0f %% |\n",
                   b, ctx, note, step * 1e3, b / step, floor_s * 1e3, bytes / 1e9, f->copy_gbs, 100.0 * floor_s / step);
        }
    }
    for (int i = 0; i < b; i++)
        kv_seq_release(&seqs[i], pool);
    free(seqs);
    free(ptrs);
    free(toks);
    free(samplers);
    free(sp);
}

static void bench_decode(kv_engine *e, const opts *o, const floors *f, const shape_info *si)
{
    kv_pool *pool = kv_engine_pool(e);
    int bs = pool->shape.block_size;
    int max_pos = kv_engine_model(e)->cfg.max_position;
    for (int ci = 0; ci < o->n_contexts; ci++) {
        /* The timed steps must stay inside the context length: a context at the limit
         * (8k on Llama-3-8B) starts a few tokens short of it. */
        int ctx = o->contexts[ci], need = 3 + o->steps + 1;
        if (ctx + need > max_pos)
            ctx = max_pos - need;
        if (ctx < 1) {
            printf("| decode | context %d | skipped: the model's context length is %d | | |\n", o->contexts[ci],
                   max_pos);
            continue;
        }
        int per = blocks_for(ctx + need, bs);
        for (int bi = 0; bi < o->n_batches; bi++) {
            int b = o->batches[bi];
            if ((int64_t)b * per <= pool->n_blocks) {
                bench_decode_one(e, o, f, si, b, ctx, "");
                continue;
            }
            printf("| decode | batch %d, context %d | skipped: needs %.2f GiB of KV, the pool holds %.2f GiB | | |\n", b,
                   ctx, (double)b * per * (double)kv_engine_block_bytes(e) / GIB,
                   (double)pool->n_blocks * (double)kv_engine_block_bytes(e) / GIB);
            int fit = pool->n_blocks / per, p2 = 1;
            while (p2 * 2 <= fit)
                p2 *= 2;
            if (fit >= 1 && (bi == 0 || p2 > o->batches[bi - 1]))
                bench_decode_one(e, o, f, si, p2, ctx, " (largest power of 2 that fits)");
        }
    }
}

/* ---- main -------------------------------------------------------------------------------- */

static int parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    char *end;
    while (*s && n < cap) {
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > (1 << 20))
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kv-bench-engine-cuda --model DIR [OPTIONS]\n"
            "  --device D          cuda:N (default cuda:0)\n"
            "  --precision P       bf16 (default) or f32\n"
            "  --batches LIST      decode batch sizes (default 1,8,64)\n"
            "  --contexts LIST     decode context lengths (default 1024,8192)\n"
            "  --prefill LIST      prefill lengths (default 512,2048,8192)\n"
            "  --prefill-chunk N   engine prefill chunk (default 8192: one forward per prefill)\n"
            "  --steps N           timed decode steps per row (default 16)\n"
            "  --repeats N         timed prefills per length (default 3)\n"
            "  --gemm-size N       GEMM floor: N x N x N (default 8192)\n"
            "  --copy-mib N        copy floor: buffers of N MiB (default 1024)\n"
            "  --kv-mib N          cap the KV pool at N MiB (default: what the runs need, up to what fits)\n"
            "  --no-graph-compare  skip the decode rows without CUDA graphs (batch 1 and 8, context 1024)\n"
            "Environment: KVSERVE_CUDA_GRAPHS=0 runs decode without CUDA graphs.\n");
}

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},   {"device", required_argument, 0, 'd'},
        {"precision", required_argument, 0, 'p'}, {"batches", required_argument, 0, 'b'},
        {"contexts", required_argument, 0, 'c'}, {"prefill", required_argument, 0, 'f'},
        {"prefill-chunk", required_argument, 0, 'k'}, {"steps", required_argument, 0, 's'},
        {"repeats", required_argument, 0, 'r'}, {"gemm-size", required_argument, 0, 'g'},
        {"copy-mib", required_argument, 0, 'y'}, {"kv-mib", required_argument, 0, 'v'},
        {"no-graph-compare", no_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->device = "cuda:0";
    o->precision = KV_PRECISION_BF16;
    o->n_batches = parse_list("1,8,64", o->batches, MAX_LIST);
    o->n_contexts = parse_list("1024,8192", o->contexts, MAX_LIST);
    o->n_prefills = parse_list("512,2048,8192", o->prefills, MAX_LIST);
    o->steps = 16;
    o->repeats = 3;
    o->prefill_chunk = 8192;
    o->gemm_n = 8192;
    o->copy_mib = 1024;
    o->compare_graphs = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'm': o->model = optarg; break;
        case 'd': o->device = optarg; break;
        case 'p':
            if (!strcmp(optarg, "bf16")) o->precision = KV_PRECISION_BF16;
            else if (!strcmp(optarg, "f32")) o->precision = KV_PRECISION_F32;
            else return -1;
            break;
        case 'b': if ((o->n_batches = parse_list(optarg, o->batches, MAX_LIST)) <= 0) return -1; break;
        case 'c': if ((o->n_contexts = parse_list(optarg, o->contexts, MAX_LIST)) <= 0) return -1; break;
        case 'f': if ((o->n_prefills = parse_list(optarg, o->prefills, MAX_LIST)) < 0) return -1; break;
        case 'k': o->prefill_chunk = atoi(optarg); break;
        case 's': o->steps = atoi(optarg); break;
        case 'r': o->repeats = atoi(optarg); break;
        case 'g': o->gemm_n = atoi(optarg); break;
        case 'y': o->copy_mib = atoi(optarg); break;
        case 'v': o->kv_mib = atof(optarg); break;
        case 'n': o->compare_graphs = 0; break;
        default: return -1;
        }
    }
    if (!o->model || o->steps < 1 || o->repeats < 1 || o->prefill_chunk < 1 || o->gemm_n < 16 || o->copy_mib < 1 ||
        optind != argc)
        return -1;
    return 0;
}

/* Pool size: the largest decode row or prefill, within what the GPU has left after the
 * weights (and a margin for activations, logits and cuBLAS). */
static size_t pool_bytes(const kv_model *m, const opts *o, const shape_info *si, int bs)
{
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    const kv_model_config *c = &m->cfg;
    double weights = si->weight_bytes + (double)c->vocab_size * c->hidden_size * si->es; /* + embedding table */
    double chunk = o->prefill_chunk < c->max_position ? o->prefill_chunk : c->max_position;
    double acts = chunk * (4.0 * c->hidden_size + 2.0 * c->n_heads * c->head_dim + 2.0 * c->intermediate_size) * si->es;
    double margin = acts + 3.0 * GIB;
    double avail = (double)free_b - weights - margin;
    double want = 0;
    for (int ci = 0; ci < o->n_contexts; ci++)
        for (int bi = 0; bi < o->n_batches; bi++) {
            double need = (double)o->batches[bi] * blocks_for(o->contexts[ci] + 3 + o->steps + 1, bs) * bs *
                          si->kv_per_token;
            want = need > want ? need : want;
        }
    for (int pi = 0; pi < o->n_prefills; pi++) {
        double need = (double)blocks_for(o->prefills[pi], bs) * bs * si->kv_per_token;
        want = need > want ? need : want;
    }
    want += 64.0 * bs * si->kv_per_token;
    double use = want < avail ? want : avail;
    if (o->kv_mib > 0 && use > o->kv_mib * (1 << 20))
        use = o->kv_mib * (1 << 20);
    return use > 0 ? (size_t)use : (size_t)(si->kv_per_token * bs * 64);
}

int main(int argc, char **argv)
{
    opts o;
    if (parse_opts(argc, argv, &o)) {
        usage();
        return 2;
    }
    kv_err err;
    int device = -1;
    if (kv_engine_parse_device(o.device, &device, &err) || device < 0) {
        fprintf(stderr, "kv-bench-engine-cuda: nothing to measure: %s\n", device < 0 ? "no CUDA device" : err.msg);
        return 77;
    }
    char name[256] = "?";
    size_t mem = 0;
    int sms = 0;
    KV(kv_cuda_device_info(device, name, sizeof name, &mem, NULL, NULL, &err), err);
    KV(kv_cuda_device_sm_count(device, &sms, &err), err);
    CK(cudaSetDevice(device));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    floors f;
    kv_cuda_dtype gdt = o.precision == KV_PRECISION_BF16 ? KV_CUDA_BF16 : KV_CUDA_F32;
    f.copy_gbs = measure_copy(s, o.copy_mib);
    f.gemm_tflops = measure_gemm(gdt, s, o.gemm_n);

    double t0 = kv_now_s();
    kv_model *m = NULL;
    KV(kv_model_load(o.model, &m, &err), err);
    double t_load = kv_now_s() - t0;
    shape_info si = shape_of(m, o.precision);
    kv_engine_options eo;
    kv_engine_options_default(&eo);
    eo.device = device;
    eo.precision = o.precision;
    eo.prefill_chunk = o.prefill_chunk;
    eo.kv_bytes = pool_bytes(m, &o, &si, eo.block_size);
    t0 = kv_now_s();
    kv_engine *e = NULL;
    KV(kv_engine_create(m, &eo, &e, &err), err);
    double t_create = kv_now_s() - t0;

    const kv_model_config *c = &m->cfg;
    const char *graphs = getenv("KVSERVE_CUDA_GRAPHS");
    printf("kv-bench-engine-cuda: %s (%d SMs, %.0f GiB), model %s: %d layers, hidden %d, %d/%d heads, vocab %d, "
           "%s\n",
           name, sms, (double)mem / GIB, o.model, c->n_layers, c->hidden_size, c->n_heads, c->n_kv_heads, c->vocab_size,
           o.precision == KV_PRECISION_BF16 ? "bf16" : "f32");
    printf("load %.1f s (checkpoint -> host f32), engine create %.1f s (upload + convert); weights streamed per decode "
           "step %.2f GB; KV %.0f KiB/token; pool %d blocks (%.1f GiB); CUDA graphs %s\n",
           t_load, t_create, si.weight_bytes / 1e9, si.kv_per_token / 1024, kv_engine_pool(e)->n_blocks,
           (double)kv_engine_pool(e)->n_blocks * (double)kv_engine_block_bytes(e) / GIB,
           graphs && !strcmp(graphs, "0") ? "off" : "on");
    printf("floors: copy D2D %.0f GB/s (read+write, %d MiB), cuBLAS %s GEMM %d^3 %.1f TFLOP/s (random data)\n\n",
           f.copy_gbs, o.copy_mib, kv_cuda_dtype_name(gdt), o.gemm_n, f.gemm_tflops);
    printf("| phase | shape | measured | floor | %% of floor |\n|---|---|---|---|---|\n");
    fflush(stdout);
    bench_prefill(e, &o, &f, &si);
    fflush(stdout);
    bench_decode(e, &o, &f, &si);
    kv_engine_free(e);
    if (o.compare_graphs && !(graphs && !strcmp(graphs, "0"))) {
        /* The same weights into a second engine that launches every kernel itself: what
         * the graphs buy at small batches (the host model is loaded already). */
        setenv("KVSERVE_CUDA_GRAPHS", "0", 1);
        eo.kv_bytes = (size_t)(8.0 * blocks_for(1024 + 3 + o.steps + 1 + 16, eo.block_size) * eo.block_size *
                               si.kv_per_token);
        KV(kv_engine_create(m, &eo, &e, &err), err);
        const int bs[2] = {1, 8};
        for (int i = 0; i < 2; i++)
            if (1024 + 3 + o.steps + 1 <= c->max_position)
                bench_decode_one(e, &o, &f, &si, bs[i], 1024, " (no CUDA graphs)");
        kv_engine_free(e);
    }
    kv_model_free(m);
    CK(cudaStreamDestroy(s));
    return 0;
}
