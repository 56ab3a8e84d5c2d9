/* Part of test_engine_cuda: the CUDA engine against the CPU engine on synthetic models with
 * the head dims of real ones, which stories260K (head_dim 8) cannot reach: TinyLlama's
 * (head_dim 64, GQA 32/4, 2 layers) and Llama-3-8B's (head_dim 128, GQA 32/8, llama3 RoPE,
 * 1 layer), vocabularies cut to 2048 / 1024. Those are the shapes where bf16 prefill runs on
 * tensor cores and decode on the 16-byte-load kernels. Same tokens into every engine
 * (teacher forcing), so the errors do not compound:
 *   f32 on the GPU vs the CPU: ||got-ref|| / ||ref|| <= 1e-4 per position;
 *   bf16 vs the CPU's f32: <= 4e-2 per position and 2.5e-2 on average. A numpy model of the
 *   bf16 pipeline on the TinyLlama-shaped weights gives ~1e-2; a layout bug gives ~1. */
#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include "cuda_kernels.h"
#include "engine.h"
#include "kv_test.h"
#include "synth_model.h"

#define N_TOK 24
#define N_STEPS 4

void check_synth_models(void);
void check_device_sampling(const kv_model *m, kv_precision prec, int graphs, int steps); /* test_engine_cuda.c */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Logits of one engine: prefill of N_TOK tokens (all positions), then N_STEPS decode steps
 * of two sequences (lengths N_TOK and 13) fed the same tokens. out: (N_TOK + 2*N_STEPS) x V. */
static int run_engine(const kv_model *m, int device, kv_precision p, int chunk, const int32_t *toks, float *out)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.device = device;
    o.precision = p;
    o.prefill_chunk = chunk;
    o.n_blocks = 64;
    kv_engine *e = NULL;
    kv_err err;
    if (kv_engine_create(m, &o, &e, &err)) {
        fprintf(stderr, "synth: engine on device %d: %s\n", device, err.msg);
        return -1;
    }
    size_t V = (size_t)m->cfg.vocab_size;
    kv_seq a = {0}, b = {0};
    kv_seq *both[2] = {&a, &b};
    int rc = kv_engine_prefill(e, &a, toks, N_TOK, out, 1, &err);
    if (!rc)
        rc = kv_engine_prefill(e, &b, toks + 3, 13, NULL, 0, &err);
    for (int s = 0; !rc && s < N_STEPS; s++) {
        int32_t next[2] = {toks[(s * 5 + 1) % N_TOK], toks[(s * 7 + 2) % N_TOK]};
        rc = kv_engine_decode(e, both, next, 2, out + (N_TOK + 2 * (size_t)s) * V, &err);
    }
    if (rc)
        fprintf(stderr, "synth: device %d: %s\n", device, err.msg);
    kv_seq_release(&a, kv_engine_pool(e));
    kv_seq_release(&b, kv_engine_pool(e));
    kv_engine_free(e);
    return rc;
}

/* Worst and mean over rows of ||got - ref|| / ||ref||; NaN makes both NaN. */
static void rel_errors(const float *got, const float *ref, int rows, size_t V, double *worst, double *mean)
{
    *worst = 0;
    double sum = 0;
    for (int r = 0; r < rows; r++) {
        double dd = 0, rr = 0;
        for (size_t i = 0; i < V; i++) {
            double d = (double)got[r * V + i] - (double)ref[r * V + i];
            dd += d * d;
            rr += (double)ref[r * V + i] * ref[r * V + i];
        }
        double rel = sqrt(dd) / (rr > 0 ? sqrt(rr) : 1.0);
        if (!(rel <= *worst)) *worst = rel;
        sum += rel;
    }
    *mean = sum / rows;
}

static void check_one(const char *root, const char *shape, int layers, int vocab)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", root, shape);
    kv_synth_options so = {.shape = shape, .out_dir = dir, .dtype = KV_DTYPE_F32, .seed = 3, .n_layers = layers,
                           .vocab_size = vocab};
    kv_err err;
    int rc = kv_synth_model_write(&so, &err);
    CHECK_MSG(rc == 0, "synth %s: %s", shape, err.msg);
    kv_model *m = NULL;
    if (rc || (rc = kv_model_load(dir, &m, &err))) {
        CHECK_MSG(rc == 0, "load %s: %s", shape, err.msg);
        return;
    }
    size_t V = (size_t)m->cfg.vocab_size;
    int rows = N_TOK + 2 * N_STEPS;
    int32_t toks[N_TOK];
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < N_TOK; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        toks[i] = (int32_t)(s % V);
    }
    float *ref = malloc(sizeof(float) * (size_t)rows * V), *got = malloc(sizeof(float) * (size_t)rows * V);
    CHECK(run_engine(m, -1, KV_PRECISION_F32, 512, toks, ref) == 0);
    const struct { kv_precision p; int chunk; double worst, mean; } cases[] = {
        {KV_PRECISION_F32, 512, 1e-4, 1e-4},
        {KV_PRECISION_BF16, 512, 4e-2, 2.5e-2},
        {KV_PRECISION_BF16, 7, 4e-2, 2.5e-2}, /* chunks attending to a cached prefix */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (size_t i = 0; i < (size_t)rows * V; i++) got[i] = NAN;
        int ok = run_engine(m, 0, cases[c].p, cases[c].chunk, toks, got) == 0;
        CHECK_MSG(ok, "synth %s: engine run failed", shape);
        double worst, mean;
        rel_errors(got, ref, rows, V, &worst, &mean);
        const char *pn = cases[c].p == KV_PRECISION_BF16 ? "bf16" : "f32";
        CHECK_MSG(worst <= cases[c].worst && mean <= cases[c].mean,
                  "synth %s %s chunk %d vs cpu: relative error worst %g mean %g (limits %g, %g)", shape, pn,
                  cases[c].chunk, worst, mean, cases[c].worst, cases[c].mean);
        fprintf(stderr, "synth %s (head_dim %d, %d/%d heads) %s chunk %d vs cpu f32: relative error worst %.3g mean %.3g\n",
                shape, m->cfg.head_dim, m->cfg.n_heads, m->cfg.n_kv_heads, pn, cases[c].chunk, worst, mean);
    }
    free(ref);
    free(got);
    if (V > KV_CUDA_TOPK_MAX)
        check_device_sampling(m, KV_PRECISION_BF16, 1, 8); /* few steps: a 2048-wide model on the mock is slow */
    kv_model_free(m);
}

void check_synth_models(void)
{
    char root[] = "/tmp/kv_test_engine_cuda_XXXXXX";
    if (!mkdtemp(root)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    check_one(root, "tinyllama-1.1b", 2, 2048);
    check_one(root, "llama3-8b", 1, 1024);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
