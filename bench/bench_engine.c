/* kv-bench-engine: CPU engine speed against this machine's measured floors.
 * The model is a directory or a .gguf file, its weights served as stored (or converted by
 * --weights-dtype); the header names the weight formats and the kernels' instruction set,
 * and resident memory (VmRSS / VmHWM) is reported against the weights' bytes.
 *   decode  tok/s vs the memory-bandwidth floor: bytes a decode step must read (weights +
 *           the KV cache so far) over the measured copy bandwidth;
 *   prefill tok/s vs the measured sgemm peak: 2 x matmul params FLOPs per token (+ attention);
 *   generation with and without KV cache (the classic experiment).
 * --decode-only runs just the warm-up and the decode (no floors, no prefill): what a profiler
 * (perf record) should see.
 * A benchmark, not a test: prints a table, asserts nothing. */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "engine.h"
#include "kv_type.h"
#include "generate.h"
#include "kv_blas.h"
#include "kv_time.h"
#include "model.h"

typedef struct floors {
    double copy_gbs; /* STREAM-copy convention: (read + written bytes) / s */
    double read_gbs; /* read-only streaming (what a GEMV does) */
    double sgemm_gflops;
} floors;

static double best_of(int reps, double (*fn)(void *), void *ctx)
{
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t = fn(ctx);
        if (t < best) best = t;
    }
    return best;
}

typedef struct membuf { float *a, *b; size_t n; volatile float sink; } membuf;

static double time_copy(void *p)
{
    membuf *m = p;
    double t0 = kv_now_s();
#pragma omp parallel for schedule(static)
    for (int c = 0; c < 64; c++) {
        size_t lo = m->n * (size_t)c / 64, hi = m->n * (size_t)(c + 1) / 64;
        memcpy(m->b + lo, m->a + lo, (hi - lo) * sizeof(float));
    }
    return kv_now_s() - t0;
}

static double time_read(void *p)
{
    membuf *m = p;
    double t0 = kv_now_s();
    float total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t i = 0; i < m->n; i += 16) total += m->a[i] + m->a[i + 8];
    m->sink = total;
    /* one float in 8 is touched, but whole cache lines stream in: count every byte. */
    return kv_now_s() - t0;
}

typedef struct gemmbuf { float *a, *b, *c; int n; } gemmbuf;
static double time_sgemm(void *p)
{
    gemmbuf *g = p;
    double t0 = kv_now_s();
    kv_sgemm(KV_BLAS_T, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n, 0.0f, g->c, g->n);
    return kv_now_s() - t0;
}

/* n floats on transparent huge pages where the kernel gives them, as the CPU engine's weights
 * are (engine_cpu.c's arena): the floor is the best this machine streams, not what 4 KiB
 * pages' TLB misses leave of it. */
static float *huge_floats(size_t n)
{
    const size_t huge = (size_t)2 << 20, bytes = (n * sizeof(float) + huge - 1) / huge * huge;
    float *p = aligned_alloc(huge, bytes);
    if (p)
        (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint */
    return p;
}

/* This machine's memory bandwidth drifts with its neighbours' load (a VM), so every phase
 * is bracketed by floor measurements and compared with their mean. */
static void measure_bandwidth(floors *f)
{
    membuf m = {.n = (size_t)1 << 27}; /* 512 MiB per buffer: far beyond any cache */
    m.a = huge_floats(m.n);
    m.b = huge_floats(m.n);
    /* Unique random contents: pages of identical bytes could be merged by the host and read
     * from one physical page, inflating the bandwidth like a cache would. */
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < m.n; i++) {
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        m.a[i] = (float)(r >> 40);
        m.b[i] = (float)(r & 0xffff);
    }
    f->copy_gbs = 2.0 * (double)m.n * sizeof(float) / best_of(3, time_copy, &m) / 1e9;
    f->read_gbs = (double)m.n * sizeof(float) / best_of(3, time_read, &m) / 1e9;
    free(m.a);
    free(m.b);
}

static void measure_sgemm(floors *f)
{
    gemmbuf g = {.n = 2048};
    size_t nn = (size_t)g.n * (size_t)g.n;
    g.a = malloc(nn * sizeof(float));
    g.b = malloc(nn * sizeof(float));
    g.c = malloc(nn * sizeof(float));
    for (size_t i = 0; i < nn; i++) g.a[i] = g.b[i] = (float)(i % 7) * 0.01f;
    f->sgemm_gflops = 2.0 * g.n * (double)g.n * g.n / best_of(5, time_sgemm, &g) / 1e9;
    free(g.a); free(g.b); free(g.c);
}

static floors mean_floors(floors a, floors b)
{
    floors m = {(a.copy_gbs + b.copy_gbs) / 2, (a.read_gbs + b.read_gbs) / 2, (a.sgemm_gflops + b.sgemm_gflops) / 2};
    return m;
}

typedef struct run_result { double prefill_s, decode_s, ttft_s, total_s; int n_gen; } run_result;

static int run_generate(kv_engine *e, int prompt_len, int n_gen, int no_kv, run_result *r)
{
    const kv_model_config *c = &kv_engine_model(e)->cfg;
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)prompt_len);
    for (int i = 0; i < prompt_len; i++) prompt[i] = (int32_t)((i * 7919 + 13) % c->vocab_size);
    kv_gen_params p = {.max_tokens = n_gen, .no_kv_cache = no_kv, .ignore_eos = 1};
    kv_sampling_default(&p.sampling);
    kv_gen_stats st;
    kv_err err;
    double t0 = kv_now_s();
    int rc = kv_generate(e, prompt, prompt_len, &p, NULL, NULL, &st, &err);
    r->total_s = kv_now_s() - t0;
    free(prompt);
    if (rc) {
        fprintf(stderr, "kv-bench-engine: %s\n", err.msg);
        return rc;
    }
    r->prefill_s = st.prefill_s;
    r->decode_s = st.decode_s;
    r->ttft_s = st.ttft_s;
    r->n_gen = st.n_generated;
    return 0;
}

/* VmRSS and VmHWM of this process in MiB (-1 when /proc cannot say). */
static void resident_mib(double *rss, double *hwm)
{
    *rss = *hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long kb;
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            *rss = kb / 1024.0;
        else if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            *hwm = kb / 1024.0;
    }
    fclose(f);
}

static void usage(void)
{
    fprintf(stderr, "usage: kv-bench-engine --model DIR|FILE.gguf [--weights-dtype T] [--prompt-len N] [--tokens N]\n"
                    "                       [--no-kv-tokens N] [--threads N] [--decode-only]\n"
                    "  --weights-dtype T converts the weights at load: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1\n"
                    "  --tokens N        tokens to generate with KV cache (default 1000)\n"
                    "  --no-kv-tokens N  tokens to generate without KV cache (default = --tokens; 0 skips)\n"
                    "  --decode-only     only the decode after a --prompt-len prompt, no floors (for profilers)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"prompt-len", required_argument, 0, 'p'},
                                         {"tokens", required_argument, 0, 't'}, {"no-kv-tokens", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 'j'}, {"weights-dtype", required_argument, 0, 'w'},
                                         {"decode-only", no_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    kv_model_load_options lo;
    kv_model_load_options_default(&lo);
    kv_err err;
    const char *dir = NULL;
    int prompt_len = 512, n_tok = 1000, n_nokv = -1, threads = 0, decode_only = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'p': prompt_len = atoi(optarg); break;
        case 't': n_tok = atoi(optarg); break;
        case 'n': n_nokv = atoi(optarg); break;
        case 'j': threads = atoi(optarg); break;
        case 'd': decode_only = 1; break;
        case 'w':
            if (kv_weights_type_parse(optarg, &lo.weights_type, &err)) {
                fprintf(stderr, "kv-bench-engine: %s\n", err.msg);
                return 2;
            }
            break;
        default: usage(); return 2;
        }
    }
    if (!dir || prompt_len < 1 || n_tok < 1) {
        usage();
        return 2;
    }
    if (n_nokv < 0) n_nokv = n_tok;
    kv_model *m;
    double t_load = kv_now_s();
    if (kv_model_load_opts(dir, &lo, &m, &err)) {
        fprintf(stderr, "kv-bench-engine: %s\n", err.msg);
        return 1;
    }
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = threads;
    kv_engine *e;
    if (kv_engine_create(m, &o, &e, &err)) {
        fprintf(stderr, "kv-bench-engine: %s\n", err.msg);
        return 1;
    }
    t_load = kv_now_s() - t_load;
    const kv_model_config *cfg = &m->cfg;
    /* Warm-up: page in the weights. Resident memory is read before the floor measurements,
     * whose buffers would set the high-water mark. */
    run_result warm, kv, nokv = {0}, pf;
    run_generate(e, 8, 2, 0, &warm);
    double rss_warm, hwm_warm, rss_end, hwm_end;
    resident_mib(&rss_warm, &hwm_warm);
    size_t resident_weights = 0;
    char by_type[256] = "";
    for (int t = 0; t < KV_TYPE_COUNT; t++)
        if (m->type_bytes[t]) {
            resident_weights += m->type_bytes[t];
            snprintf(by_type + strlen(by_type), sizeof by_type - strlen(by_type), "%s%s %.1f MiB", by_type[0] ? ", " : "",
                     kv_type_name((kv_type)t), (double)m->type_bytes[t] / (1 << 20));
        }
    const char *layouts = kv_engine_cpu_layouts(e);
    printf("weights: %s (%s) = %.1f MiB, loaded in %.2f s; kernels: %s%s%s\n", m->weight_types, by_type,
           (double)resident_weights / (1 << 20), t_load, kv_engine_cpu_isa(e) ? kv_engine_cpu_isa(e) : "gpu",
           layouts && layouts[0] ? ", repacked as " : "", layouts && layouts[0] ? layouts : "");
    printf("resident after warm-up: VmRSS %.1f MiB, VmHWM %.1f MiB (KV pool %.1f MiB allocated, touched as used)\n",
           rss_warm, hwm_warm,
           (double)kv_engine_pool(e)->n_blocks * (double)kv_engine_block_bytes(e) / (1 << 20));
    fflush(stdout);
    if (decode_only) {
        if (run_generate(e, prompt_len, n_tok, 0, &kv))
            return 1;
        printf("decode: %d tokens after a %d-token prompt, %.1f tok/s\n", kv.n_gen, prompt_len,
               (kv.n_gen - 1) / kv.decode_s);
        kv_engine_free(e);
        kv_model_free(m);
        return 0;
    }
    floors f1 = {0}, f2 = {0}, g1 = {0}, g2 = {0};
    measure_sgemm(&g1);
    if (run_generate(e, prompt_len, 1, 0, &pf)) return 1;
    resident_mib(&rss_end, &hwm_end);
    printf("resident after a %d-token prefill: VmRSS %.1f MiB (VmHWM %.1f MiB counts a 48 MiB sgemm probe)\n",
           prompt_len, rss_end, hwm_end);
    fflush(stdout);
    measure_sgemm(&g2);
    measure_bandwidth(&f1);
    if (run_generate(e, 16, n_tok, 0, &kv)) return 1;
    measure_bandwidth(&f2);
    if (n_nokv > 0 && run_generate(e, 16, n_nokv, 1, &nokv)) return 1;
    floors f = mean_floors(f1, f2);
    f.sgemm_gflops = (g1.sgemm_gflops + g2.sgemm_gflops) / 2;

    double kv_per_tok = 2.0 * cfg->n_layers * cfg->n_kv_heads * cfg->head_dim * sizeof(float);
    double mean_ctx = 16 + n_tok / 2.0;
    double step_bytes = (double)m->weight_bytes + kv_per_tok * mean_ctx;
    double floor_tps = f.copy_gbs * 1e9 / step_bytes;
    double decode_tps = (kv.n_gen - 1) / kv.decode_s;
    /* lm_head runs for the last token only during prefill. */
    double hd = cfg->head_dim, h = cfg->hidden_size;
    double matmul_params = (double)cfg->n_layers * (2 * h * cfg->n_heads * hd + 2 * h * cfg->n_kv_heads * hd +
                                                    3 * h * cfg->intermediate_size);
    double attn_flops = 4.0 * cfg->n_layers * cfg->n_heads * cfg->head_dim * (prompt_len + 1) / 2.0;
    double prefill_flops_tok = 2.0 * matmul_params + attn_flops;
    double prefill_tps = prompt_len / pf.prefill_s;
    double prefill_peak_tps = f.sgemm_gflops * 1e9 / prefill_flops_tok;

    printf("machine: %d threads; copy %.1f GB/s (read+write; %.1f before, %.1f after decode), read %.1f GB/s; "
           "sgemm 2048^3 %.1f GFLOP/s (%.1f before, %.1f after prefill)\n",
           omp_get_max_threads(), f.copy_gbs, f1.copy_gbs, f2.copy_gbs, f.read_gbs, f.sgemm_gflops, g1.sgemm_gflops,
           g2.sgemm_gflops);
    printf("model: %s; %.1f M matmul params; decode reads %.1f MB/token (weights %.1f MB + KV %.1f MB at mean ctx %.0f)\n",
           dir, matmul_params / 1e6 + (double)cfg->vocab_size * cfg->hidden_size / 1e6, step_bytes / 1e6,
           (double)m->weight_bytes / 1e6, kv_per_tok * mean_ctx / 1e6, mean_ctx);
    printf("\n| phase | measured | floor/peak | %% of floor |\n|---|---|---|---|\n");
    printf("| decode (KV cache, %d tok) | %.1f tok/s | %.1f tok/s (bytes / copy bw) | %.0f %% |\n", n_tok, decode_tps,
           floor_tps, 100 * decode_tps / floor_tps);
    printf("| decode vs read-only bw | %.1f tok/s | %.1f tok/s (bytes / read bw) | %.0f %% |\n", decode_tps,
           f.read_gbs * 1e9 / step_bytes, 100 * decode_tps / (f.read_gbs * 1e9 / step_bytes));
    printf("| prefill (%d tok) | %.1f tok/s (%.1f GFLOP/s) | %.1f tok/s (sgemm peak) | %.0f %% |\n", prompt_len,
           prefill_tps, prefill_tps * prefill_flops_tok / 1e9, prefill_peak_tps, 100 * prefill_tps / prefill_peak_tps);
    printf("\n| generation (16-token prompt) | tokens | total s | tok/s |\n|---|---|---|---|\n");
    printf("| with KV cache | %d | %.2f | %.1f |\n", kv.n_gen, kv.total_s, kv.n_gen / kv.total_s);
    if (n_nokv > 0)
        printf("| without KV cache | %d | %.2f | %.1f |\n", nokv.n_gen, nokv.total_s, nokv.n_gen / nokv.total_s);
    kv_engine_free(e);
    kv_model_free(m);
    return 0;
}
