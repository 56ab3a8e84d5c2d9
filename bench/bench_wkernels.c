/* kv-bench-wkernels: the weight kernels (kernels/cpu/wkernels.h) at model shapes.
 *   GEMV (decode): GB/s of weight bytes read, per format, n_vec 1 and 4, 1 and 2 threads,
 *                  against the read bandwidth measured in the same run. Each shape is
 *                  replicated past the last-level cache and cycled, as a model's layers are.
 *   GEMM (prefill): GFLOP/s at 64/256/512 tokens, dequantized panels + register-tiled GEMM (kc_wgemm_rows)
 *                  against the int8 path (quantize activations, then igemm_rows where the format
 *                  has it, else gemv_rows over all tokens).
 * q4_0x8 / q4_1x8 are q4_0 / q4_1 repacked as the CPU engine serves them (kc_repack_type),
 * beside the formats as stored.
 * A benchmark, not a test: prints tables, asserts nothing.
 * Usage: kv-bench-wkernels [--quick] [--types q4_1,q8_0,...] [--no-gemm] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_time.h"
#include "wkernels.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* Random blocks; fp16 scale fields forced small and finite (what a real file has). */
static void fill(kv_type t, uint8_t *w, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd();
    const struct kv_type_traits *tr = kv_type_traits(t);
    if (t == KV_TYPE_F32) {
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            float f = (float)(rnd() % 2001) / 1000.0f - 1.0f;
            memcpy(w + i, &f, 4);
        }
        return;
    }
    for (size_t b = 0; b + tr->block_bytes <= bytes; b += tr->block_bytes) {
        uint8_t *p = w + b;
        if (t == KV_TYPE_F16 || t == KV_TYPE_BF16) {
            p[1] &= t == KV_TYPE_F16 ? 0xBB : 0xBF; /* keep exponents moderate */
            continue;
        }
        size_t at = t == KV_TYPE_Q6_K ? 208 : 0;
        p[at + 1] = 0x20 | (p[at + 1] & 0x83);
        if (t == KV_TYPE_Q4_1 || t == KV_TYPE_Q5_1 || t == KV_TYPE_Q4_K || t == KV_TYPE_Q5_K)
            p[3] = 0x20 | (p[3] & 0x83);
    }
}

typedef struct mat {
    kv_type type;
    int rows, cols, copies;
    size_t row_bytes, bytes; /* per copy */
    uint8_t *w;
} mat;

static int mat_init(mat *m, kv_type t, int rows, int cols, size_t min_total)
{
    m->type = t;
    m->rows = rows;
    m->cols = cols;
    m->row_bytes = (size_t)kv_type_bytes(t, (uint64_t)cols);
    m->bytes = m->row_bytes * (size_t)rows;
    if (!m->bytes)
        return -1;
    m->copies = (int)((min_total + m->bytes - 1) / m->bytes);
    if (m->copies < 1)
        m->copies = 1;
    m->w = malloc(m->bytes * (size_t)m->copies);
    if (!m->w)
        return -1;
    if (kc_row_group(t) == 1) {
        fill(t, m->w, m->bytes * (size_t)m->copies);
        return 0;
    }
    /* a repacked layout: its stored type's blocks, repacked as the engine does at load */
    uint8_t *stored = malloc(m->bytes);
    if (!stored)
        return -1;
    for (int c = 0; c < m->copies; c++) {
        fill(t == KV_TYPE_Q4_0_X8 ? KV_TYPE_Q4_0 : KV_TYPE_Q4_1, stored, m->bytes);
        kc_repack_rows(t, m->w + (size_t)c * m->bytes, stored, m->row_bytes, 0, rows);
    }
    free(stored);
    return 0;
}

static double read_bandwidth(int threads)
{
    size_t n = (size_t)1 << 26; /* 256 MiB of floats */
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(rnd() >> 8);
    double best = 1e30;
    volatile float sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = kv_now_s();
        float total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i += 16)
            total += a[i] + a[i + 8];
        sink = total;
        double t = kv_now_s() - t0;
        best = t < best ? t : best;
    }
    (void)sink;
    free(a);
    return (double)n * sizeof(float) / best / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* GB/s of weight bytes for y = W x over n_vec vectors with `threads` threads (one parallel
 * region per pass over all copies, rows split as the engine will split them). */
static double gemv_gbs(const kc_isa *isa, const mat *m, int n_vec, int threads, double budget_s)
{
    const kc_wkernel *k = &isa->k[m->type];
    size_t arb = kc_act_row_bytes(k->act, m->cols);
    float *x = malloc(sizeof(float) * (size_t)m->cols * (size_t)n_vec);
    uint8_t *act = malloc(arb * (size_t)n_vec);
    float *y = malloc(sizeof(float) * (size_t)m->rows * (size_t)n_vec);
    for (int i = 0; i < m->cols * n_vec; i++)
        x[i] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    for (int v = 0; v < n_vec; v++)
        k->quantize_act(act + (size_t)v * arb, x + (size_t)v * m->cols, m->cols);
    /* Per-matrix times between barriers, median over all: the 2 cores are shared with other
     * jobs, and a thread descheduled at one barrier must not stand for the kernel's speed. */
    int max_samples = 4096, n_samples = 0;
    double *samples = malloc(sizeof(double) * (size_t)max_samples), spent = 0;
    while ((spent < budget_s || n_samples < 3 * m->copies) && n_samples + m->copies <= max_samples) {
        double t_pass = kv_now_s();
#pragma omp parallel num_threads(threads)
        {
            int r0, r1;
            kc_split_rows(m->rows, omp_get_num_threads(), omp_get_thread_num(), 16, &r0, &r1);
            double t0 = kv_now_s();
            for (int c = 0; c < m->copies; c++) {
                k->gemv_rows(y, (size_t)m->rows, m->w + (size_t)c * m->bytes, m->row_bytes, r0, r1, act, arb, n_vec,
                             m->cols);
#pragma omp barrier
#pragma omp master
                {
                    double t1 = kv_now_s();
                    samples[n_samples + c] = t1 - t0;
                    t0 = t1;
                }
            }
        }
        n_samples += m->copies;
        spent += kv_now_s() - t_pass;
    }
    qsort(samples, (size_t)n_samples, sizeof *samples, cmp_double);
    double median = samples[n_samples / 2];
    free(samples);
    free(x);
    free(act);
    free(y);
    return (double)m->bytes / median / 1e9;
}

/* Prefill GFLOP/s: path 0 = kc_wgemm_rows (f32 activations), path 1 = int8 igemm_rows (or gemv_rows) over n_tok. */
static double gemm_gflops(const kc_isa *isa, const mat *m, int n_tok, int threads, int path)
{
    const kc_wkernel *k = &isa->k[m->type];
    size_t arb = kc_act_row_bytes(k->act, m->cols);
    float *x = malloc(sizeof(float) * (size_t)m->cols * (size_t)n_tok);
    float *y = malloc(sizeof(float) * (size_t)m->rows * (size_t)n_tok);
    uint8_t *act = malloc(arb * (size_t)n_tok);
    float *tiles = malloc(sizeof(float) * KC_WGEMM_SCRATCH_FLOATS * (size_t)threads);
    for (int i = 0; i < m->cols * n_tok; i++)
        x[i] = (float)(rnd() % 2001) / 1000.0f - 1.0f;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = kv_now_s();
#pragma omp parallel num_threads(threads)
        {
            int nt = omp_get_num_threads(), me = omp_get_thread_num(), r0, r1;
            if (path == 1) {
#pragma omp for
                for (int v = 0; v < n_tok; v++)
                    k->quantize_act(act + (size_t)v * arb, x + (size_t)v * m->cols, m->cols);
            }
            kc_split_rows(m->rows, nt, me, 16, &r0, &r1);
            if (path == 0)
                kc_wgemm_rows(isa, y, (size_t)m->rows, m->w, m->type, m->row_bytes, r0, r1, x, n_tok, m->cols,
                              tiles + (size_t)me * KC_WGEMM_SCRATCH_FLOATS);
            else
                (k->igemm_rows ? k->igemm_rows : k->gemv_rows)(y, (size_t)m->rows, m->w, m->row_bytes, r0, r1, act,
                                                                arb, n_tok, m->cols);
        }
        double t = kv_now_s() - t0;
        best = t < best ? t : best;
    }
    free(x);
    free(y);
    free(act);
    free(tiles);
    return 2.0 * m->rows * (double)m->cols * n_tok / best / 1e9;
}

static void print_load(const char *when)
{
    char buf[128] = "?";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            strcpy(buf, "?\n");
        fclose(f);
    }
    printf("load average (%s): %s", when, buf);
}

/* Whether t's name is an item of the comma-separated list (every type when list is NULL). */
static int type_listed(const char *list, kv_type t)
{
    if (!list)
        return 1;
    const char *name = kv_type_name(t);
    size_t n = strlen(name);
    for (const char *p = list; *p; p += strcspn(p, ","), p += *p == ',')
        if (strcspn(p, ",") == n && !strncmp(p, name, n))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    int quick = 0, gemm = 1;
    const char *only = NULL; /* comma-separated type names, NULL: all */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--no-gemm"))
            gemm = 0;
        else if (!strcmp(argv[i], "--types") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: kv-bench-wkernels [--quick] [--types q4_1,q8_0,...] [--no-gemm]\n");
            return 2;
        }
    }
    kv_err err = {0};
    const kc_isa *isa;
    if (kc_isa_pick(&isa, &err)) {
        fprintf(stderr, "kv-bench-wkernels: %s\n", err.msg);
        return 1;
    }
    printf("kv-bench-wkernels: ISA %s, %d threads max\n", isa->name, omp_get_max_threads());
    print_load("start");
    double bw1 = read_bandwidth(1), bw2 = read_bandwidth(2);
    printf("read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (2 threads)\n\n", bw1, bw2);

    static const struct { const char *name; int rows, cols; } shapes[] = {
        {"smol q/o", 576, 576},   {"smol up", 1536, 576},     {"smol down", 576, 1536},
        {"smol lm_head", 49152, 576}, {"tl q/o", 2048, 2048}, {"tl up", 5632, 2048},
    };
    static const kv_type types[] = {KV_TYPE_F32,  KV_TYPE_F16,  KV_TYPE_BF16, KV_TYPE_Q8_0,
                                    KV_TYPE_Q4_0, KV_TYPE_Q4_1, KV_TYPE_Q5_0, KV_TYPE_Q5_1,
                                    KV_TYPE_Q4_K, KV_TYPE_Q5_K, KV_TYPE_Q6_K, KV_TYPE_Q4_0_X8, KV_TYPE_Q4_1_X8};
    const int n_shapes = (int)(sizeof shapes / sizeof shapes[0]), n_types = (int)(sizeof types / sizeof types[0]);
    const size_t past_cache = (size_t)96 << 20; /* 3x this machine's 32 MiB L3 */
    printf("GEMV GB/s of weight bytes (%% of read bandwidth), columns: n_vec/threads\n");
    printf("%-13s %-6s %8s %15s %15s %15s %15s\n", "shape", "type", "MiB", "1/1", "1/2", "4/1", "4/2");
    for (int s = 0; s < n_shapes; s++)
        for (int ti = 0; ti < n_types; ti++) {
            mat m;
            if (!type_listed(only, types[ti]) || !isa->k[types[ti]].gemv_rows)
                continue;
            if (kv_type_bytes(types[ti], (uint64_t)shapes[s].cols) == 0)
                continue; /* k-quants need cols % 256 == 0 (SmolLM2's 576 is not: its GGUFs use q5_0/q8_0 there) */
            if (mat_init(&m, types[ti], shapes[s].rows, shapes[s].cols, past_cache))
                return 1;
            printf("%-13s %-6s %8.2f", shapes[s].name, kv_type_name(types[ti]), (double)m.bytes / (1 << 20));
            for (int nv = 1; nv <= 4; nv += 3)
                for (int th = 1; th <= 2; th++) {
                    double g = gemv_gbs(isa, &m, nv, th, quick ? 0.03 : 0.15);
                    printf("   %6.1f (%3.0f%%)", g, 100.0 * g / (th == 1 ? bw1 : bw2));
                }
            printf("\n");
            fflush(stdout);
            free(m.w);
        }

    if (!gemm) {
        print_load("end");
        return 0;
    }
    printf("\nGEMM (prefill) GFLOP/s, 2 threads: dequantized panels + f32 tile | int8 igemm_rows (else gemv_rows)\n");
    printf("%-13s %-6s %17s %17s %17s\n", "shape", "type", "64 tok", "256 tok", "512 tok");
    static const kv_type gemm_types[] = {KV_TYPE_F32, KV_TYPE_F16,  KV_TYPE_Q8_0, KV_TYPE_Q4_0,
                                         KV_TYPE_Q4_1, KV_TYPE_Q4_K, KV_TYPE_Q6_K, KV_TYPE_Q4_0_X8,
                                         KV_TYPE_Q4_1_X8};
    static const int gemm_shapes[] = {0, 1, 2, 4};
    for (size_t s = 0; s < sizeof gemm_shapes / sizeof gemm_shapes[0]; s++)
        for (size_t ti = 0; ti < sizeof gemm_types / sizeof gemm_types[0]; ti++) {
            mat m;
            int sh = gemm_shapes[s];
            if (!type_listed(only, gemm_types[ti]) || !isa->k[gemm_types[ti]].gemv_rows)
                continue;
            if (kv_type_bytes(gemm_types[ti], (uint64_t)shapes[sh].cols) == 0)
                continue;
            if (mat_init(&m, gemm_types[ti], shapes[sh].rows, shapes[sh].cols, 0))
                return 1;
            printf("%-13s %-6s", shapes[sh].name, kv_type_name(gemm_types[ti]));
            for (int n_tok = 64; n_tok <= 512; n_tok *= (n_tok == 64 ? 4 : 2))
                printf("   %6.1f | %6.1f", gemm_gflops(isa, &m, n_tok, 2, 0), gemm_gflops(isa, &m, n_tok, 2, 1));
            printf("\n");
            fflush(stdout);
            free(m.w);
        }
    print_load("end");
    return 0;
}
