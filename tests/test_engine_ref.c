/* The engine against the shared references (llama2.c run.c on stories260K): full logits
 * within 1e-4, 251 greedy tokens identical, for every prefill chunk size, without KV
 * cache, and with sequences of different lengths decoded in one batch. */
#include "engine.h"
#include "generate.h"
#include "cpu_kernels.h"
#include "kv_test.h"

#define N_REF_POS 256
#define N_PROMPT 5
#define N_LOGIT_POS 8

static int32_t ref_tokens[N_REF_POS]; /* token_in per position */

static int load_ref_tokens(const char *dir)
{
    return kv_test_reference_tokens(dir, ref_tokens, N_REF_POS) == N_REF_POS ? 0 : -1;
}

typedef struct collect { int32_t toks[N_REF_POS]; int n; } collect;
static int on_token(void *ctx, int32_t t)
{
    collect *c = ctx;
    if (c->n < N_REF_POS) c->toks[c->n++] = t;
    return 0;
}

static void check_greedy(const kv_model *m, int chunk, int no_kv_cache)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.prefill_chunk = chunk;
    kv_engine *e;
    kv_err err;
    CHECK(kv_engine_create(m, &o, &e, &err) == 0);
    int32_t prompt[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) prompt[i] = ref_tokens[i];
    kv_gen_params p = {.max_tokens = N_REF_POS - N_PROMPT, .ignore_eos = 1, .no_kv_cache = no_kv_cache};
    kv_sampling_default(&p.sampling);
    collect c = {.n = 0};
    kv_gen_stats st;
    int rc = kv_generate(e, prompt, N_PROMPT, &p, on_token, &c, &st, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_EQ_INT(c.n, N_REF_POS - N_PROMPT);
    int first_bad = -1;
    for (int i = 0; i < c.n; i++)
        if (c.toks[i] != ref_tokens[N_PROMPT + i]) { first_bad = i; break; }
    CHECK_MSG(first_bad < 0, "chunk %d no_kv_cache %d: token %d is %d, reference %d", chunk, no_kv_cache,
              first_bad, first_bad >= 0 ? c.toks[first_bad] : 0, first_bad >= 0 ? ref_tokens[N_PROMPT + first_bad] : 0);
    CHECK_EQ_INT(kv_pool_n_free(kv_engine_pool(e)), kv_engine_pool(e)->n_blocks);
    kv_engine_free(e);
}

static void check_logits(const kv_model *m, const char *dir, int chunk)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/reference/once_upon_a_time.logits.f32", dir);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    int V = m->cfg.vocab_size;
    float *ref = malloc(sizeof(float) * N_LOGIT_POS * (size_t)V), *got = malloc(sizeof(float) * N_LOGIT_POS * (size_t)V);
    CHECK(fread(ref, sizeof(float), (size_t)N_LOGIT_POS * (size_t)V, f) == (size_t)N_LOGIT_POS * (size_t)V);
    fclose(f);
    const int32_t toks[N_LOGIT_POS] = {1, 403, 407, 261, 378, 432, 383, 286};
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.prefill_chunk = chunk;
    kv_engine *e;
    kv_err err;
    CHECK(kv_engine_create(m, &o, &e, &err) == 0);
    kv_seq seq = {0};
    CHECK(kv_engine_prefill(e, &seq, toks, N_LOGIT_POS, got, 1, &err) == 0);
    double max_diff = 0;
    for (size_t i = 0; i < (size_t)N_LOGIT_POS * (size_t)V; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= max_diff)) max_diff = d; /* NaN propagates into max_diff */
    }
    CHECK_MSG(max_diff <= 1e-4, "chunk %d: max |logit - ref| = %g", chunk, max_diff);
    fprintf(stderr, "logits chunk %d: max abs diff %.3g\n", chunk, max_diff);
    kv_seq_release(&seq, kv_engine_pool(e));
    kv_engine_free(e);
    free(ref);
    free(got);
}

/* Three sequences at different lengths decoded together must follow the reference. */
static void check_batched_decode(const kv_model *m)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    kv_engine *e;
    kv_err err;
    CHECK(kv_engine_create(m, &o, &e, &err) == 0);
    const int starts[3] = {5, 23, 61};
    kv_seq seqs[3] = {{0}};
    kv_seq *ptrs[3] = {&seqs[0], &seqs[1], &seqs[2]};
    int32_t next[3];
    int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * 3 * (size_t)V);
    for (int s = 0; s < 3; s++) {
        CHECK(kv_engine_prefill(e, &seqs[s], ref_tokens, starts[s], logits, 0, &err) == 0);
        next[s] = kc_argmax(logits, V);
    }
    /* A twin of sequence 0 decoded alone: batch invariance means bit-identical logits. */
    kv_seq solo = {0};
    kv_seq *solo_ptr = &solo;
    float *solo_logits = malloc(sizeof(float) * (size_t)V);
    CHECK(kv_engine_prefill(e, &solo, ref_tokens, starts[0], NULL, 0, &err) == 0);
    int invariant = 1;
    for (int step = 0; step < 100; step++) {
        for (int s = 0; s < 3; s++)
            CHECK_MSG(next[s] == ref_tokens[starts[s] + step], "batch seq %d step %d: %d vs %d", s, step, next[s],
                      ref_tokens[starts[s] + step]);
        int32_t solo_next = next[0];
        CHECK(kv_engine_decode(e, ptrs, next, 3, logits, &err) == 0);
        CHECK(kv_engine_decode(e, &solo_ptr, &solo_next, 1, solo_logits, &err) == 0);
        invariant &= !memcmp(solo_logits, logits, sizeof(float) * (size_t)V);
        for (int s = 0; s < 3; s++) next[s] = kc_argmax(logits + (size_t)s * (size_t)V, V);
    }
    CHECK_MSG(invariant, "decode logits of a sequence differ alone and in a batch");
    kv_seq_release(&solo, kv_engine_pool(e));
    free(solo_logits);
    for (int s = 0; s < 3; s++) kv_seq_release(&seqs[s], kv_engine_pool(e));
    CHECK_EQ_INT(kv_pool_n_free(kv_engine_pool(e)), kv_engine_pool(e)->n_blocks);
    free(logits);
    kv_engine_free(e);
}

int main(void)
{
    const char *dir = kv_test_models_dir();
    if (!dir) KV_TEST_SKIP("shared models not found (set KVSERVE_TEST_MODELS)");
    char mdir[4096];
    snprintf(mdir, sizeof mdir, "%s/stories260K", dir);
    CHECK(load_ref_tokens(dir) == 0);
    kv_model *m;
    kv_err err;
    int rc = kv_model_load(mdir, &m, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return kv_test_result();
    check_logits(m, dir, 512);
    check_logits(m, dir, 3);
    const int chunks[] = {512, 1, 7, 64};
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) check_greedy(m, chunks[i], 0);
    check_greedy(m, 512, 1);
    check_batched_decode(m);
    kv_model_free(m);
    return kv_test_result();
}
