/* Logprobs: kc_logprobs_row against a direct long-double log-softmax (rel. err < 1e-6 on
 * f32 logits: wide, shifted, tied, NaN and -inf rows; the top list against a full sort),
 * then the engine's two paths on stories260K (when the shared models are there): prompt
 * logprobs of kv_engine_prefill_logprobs at several chunk sizes and the decode step's
 * (kv_engine_decode_sample_lp) against the same reference on kv_engine_prefill's logits. */
#include "cpu_kernels.h"
#include "engine.h"
#include "kv_test.h"

static double worst_rel; /* largest relative error seen by close() */

static int close_rel(double got, double want, double tol)
{
    double rel = fabs(got - want) / (fabs(want) > 1e-30 ? fabs(want) : 1e-30);
    if (!(rel <= worst_rel))
        worst_rel = rel;
    return rel < tol;
}

/* The reference: log(p_i) with p_i = exp(x_i - max) / sum_j exp(x_j - max) in long double. */
static long double ref_logprob(const float *x, int n, int i)
{
    long double m = -INFINITY, s = 0;
    for (int j = 0; j < n; j++)
        if (x[j] > m)
            m = x[j];
    for (int j = 0; j < n; j++)
        if (x[j] == x[j])
            s += expl((long double)x[j] - m);
    return logl(expl((long double)x[i] - m) / s);
}

typedef struct vid { float v; int id; } vid;
static int by_v_desc(const void *a, const void *b)
{
    const vid *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? 1 : -1;
    return x->id - y->id;
}

/* Every field of one row against the reference. */
static void check_row(const char *name, const float *x, int n, int token, int n_top)
{
    kc_logprobs lp;
    kc_logprobs_row(x, n, token, n_top, &lp);
    CHECK_MSG(close_rel(lp.logprob, (double)ref_logprob(x, n, token), 1e-6), "%s: token %d logprob %.9g, ref %.9Lg",
              name, token, (double)lp.logprob, ref_logprob(x, n, token));
    vid *all = malloc((size_t)n * sizeof *all);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (x[i] == x[i])
            all[m++] = (vid){x[i], i};
    qsort(all, (size_t)m, sizeof *all, by_v_desc);
    int want = n_top < m ? n_top : m;
    if (want > KC_LOGPROBS_TOP_MAX)
        want = KC_LOGPROBS_TOP_MAX;
    CHECK_MSG(lp.n_top == want, "%s: n_top %d, want %d", name, lp.n_top, want);
    for (int k = 0; k < lp.n_top && k < want; k++) {
        CHECK_MSG(lp.top_ids[k] == all[k].id, "%s: top %d is id %d, want %d", name, k, lp.top_ids[k], all[k].id);
        double r = (double)ref_logprob(x, n, all[k].id);
        CHECK_MSG(isinf(r) ? lp.top_logprobs[k] == (float)r : close_rel(lp.top_logprobs[k], r, 1e-6),
                  "%s: top %d logprob %.9g, ref %.9g", name, k, (double)lp.top_logprobs[k], r);
    }
    free(all);
}

static uint64_t rng = 88172645463325252ull;
static double uniform(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void check_math(void)
{
    enum { V = 32000 };
    float *x = malloc(V * sizeof *x);
    /* Wide logits (a peaked row): the top token near 0, the tail near -60. */
    for (int i = 0; i < V; i++)
        x[i] = (float)(uniform() * 40.0 - 20.0);
    x[123] = 30.0f;
    check_row("wide", x, V, 123, 20);
    check_row("wide tail token", x, V, 7, 5);
    /* A flat row shifted far from 0: only the max subtraction keeps exp in range. */
    for (int i = 0; i < V; i++)
        x[i] = (float)(1000.0 + uniform());
    check_row("shifted", x, V, 31999, 20);
    for (int i = 0; i < V; i++)
        x[i] = (float)(-1000.0 + uniform() * 0.01);
    check_row("negative shifted", x, V, 0, 3);
    /* Ties: equal values rank by lowest id; NaN never ranks; -inf has logprob -inf. */
    for (int i = 0; i < V; i++)
        x[i] = (float)(i % 7);
    x[10] = NAN;
    x[11] = -INFINITY;
    check_row("ties", x, V, 6, 20);
    kc_logprobs lp;
    kc_logprobs_row(x, V, 11, 0, &lp);
    CHECK(isinf(lp.logprob) && lp.logprob < 0 && lp.n_top == 0);
    kc_logprobs_row(x, V, V, 2, &lp); /* a token outside the row */
    CHECK(isnan(lp.logprob) && lp.n_top == 2);
    /* A short row: fewer alternatives than asked; more than 20 asked is 20. */
    float small[3] = {1.0f, NAN, 2.0f};
    check_row("short", small, 3, 0, 20);
    check_row("many", x, V, 5, 50);
    /* No finite max: NaN logprobs, never a crash. */
    float bad[4] = {NAN, -INFINITY, NAN, -INFINITY};
    kc_logprobs_row(bad, 4, 1, 4, &lp);
    CHECK(isnan(lp.logprob));
    free(x);
    fprintf(stderr, "math: worst relative error %.3g\n", worst_rel);
}

/* The engine's paths on a real model against the reference on kv_engine_prefill's logits. */
static void check_engine(const char *models)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/stories260K", models);
    kv_model *m;
    kv_err err;
    if (kv_model_load(dir, &m, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    int V = m->cfg.vocab_size;
    enum { N = 40 };
    int32_t toks[N], targets[N];
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)(1 + (i * 37) % (V - 1));
    for (int i = 0; i < N; i++)
        targets[i] = i + 1 < N ? toks[i + 1] : -1;
    float *all = malloc((size_t)N * (size_t)V * sizeof *all), *last = malloc((size_t)V * sizeof *last);
    kv_engine_options o;
    kv_engine_options_default(&o);
    kv_engine *e;
    CHECK(kv_engine_create(m, &o, &e, &err) == 0);
    kv_seq ref_seq = {0};
    CHECK(kv_engine_prefill(e, &ref_seq, toks, N, all, 1, &err) == 0);
    kv_seq_release(&ref_seq, kv_engine_pool(e));
    worst_rel = 0;
    const int chunks[] = {1, 7, 64};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        kv_engine_options oc = o;
        oc.prefill_chunk = chunks[c];
        kv_engine *ec;
        CHECK(kv_engine_create(m, &oc, &ec, &err) == 0);
        kc_logprobs lp[N];
        kv_seq seq = {0};
        CHECK_MSG(kv_engine_prefill_logprobs(ec, &seq, toks, N, targets, 5, lp, last, &err) == 0, "%s", err.msg);
        for (int i = 0; i + 1 < N; i++) {
            const float *row = all + (size_t)i * (size_t)V;
            CHECK_MSG(close_rel(lp[i].logprob, (double)ref_logprob(row, V, toks[i + 1]), 1e-4),
                      "chunk %d position %d: %.9g vs %.9Lg", chunks[c], i, (double)lp[i].logprob,
                      ref_logprob(row, V, toks[i + 1]));
            CHECK(lp[i].n_top == 5 && lp[i].top_ids[0] == kc_argmax(row, V));
        }
        CHECK(kc_argmax(last, V) == kc_argmax(all + (size_t)(N - 1) * (size_t)V, V));
        /* One decode step after the prompt, greedy, with logprobs. */
        kv_sampling_params sp;
        kv_sampling_default(&sp);
        kv_sampler s;
        CHECK(kv_sampler_init(&s, &sp, V, &err) == 0);
        kv_sampler *sv = &s;
        kv_seq *sq = &seq;
        int32_t tok = kc_argmax(last, V), next = -1;
        int top = 20;
        kc_logprobs dl;
        CHECK_MSG(kv_engine_decode_sample_lp(ec, &sq, &tok, 1, &sv, &top, &dl, &next, &err) == 0, "%s", err.msg);
        /* The reference: the same step's logits from a fresh prefill of N + 1 tokens. */
        int32_t longer[N + 1];
        memcpy(longer, toks, sizeof toks);
        longer[N] = tok;
        kv_seq s2 = {0};
        float *l2 = malloc((size_t)V * sizeof *l2);
        CHECK(kv_engine_prefill(ec, &s2, longer, N + 1, l2, 0, &err) == 0);
        CHECK_EQ_INT(next, kc_argmax(l2, V));
        CHECK_MSG(close_rel(dl.logprob, (double)ref_logprob(l2, V, next), 1e-4), "decode: %.9g vs %.9Lg",
                  (double)dl.logprob, ref_logprob(l2, V, next));
        CHECK(dl.n_top == 20 && dl.top_ids[0] == next);
        /* More than 20 alternatives is refused, before anything runs. */
        int too_many = 21;
        CHECK(kv_engine_decode_sample_lp(ec, &sq, &next, 1, &sv, &too_many, &dl, &next, &err) == KV_EINVAL);
        free(l2);
        kv_seq_release(&s2, kv_engine_pool(ec));
        kv_seq_release(&seq, kv_engine_pool(ec));
        kv_sampler_free(&s);
        kv_engine_free(ec);
    }
    fprintf(stderr, "engine: worst relative error %.3g\n", worst_rel);
    free(all);
    free(last);
    kv_engine_free(e);
    kv_model_free(m);
}

int main(void)
{
    check_math();
    const char *models = kv_test_models_dir();
    if (models)
        check_engine(models);
    else
        fprintf(stderr, "no shared models: the engine part is skipped\n");
    return kv_test_result();
}
