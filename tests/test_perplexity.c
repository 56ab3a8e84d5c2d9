/* kv_perplexity (common/eval): llama.cpp's statistics on hand-computed values, then the
 * method on stories260K (skipped without the shared models): chunk count and scored tokens,
 * BOS at each chunk's start, the chunk limit, refusals. The numbers themselves are checked
 * end to end by test_perplexity.sh against the numpy reference. */
#include <math.h>
#include <stdlib.h>

#include "engine.h"
#include "kv_perplexity.h"
#include "kv_test.h"
#include "model.h"

static void test_stats(void)
{
    kv_ppl_stats s = {0};
    CHECK(isnan(kv_ppl_stats_ppl(&s)));
    kv_ppl_stats_add(&s, 1.0);
    CHECK(isnan(kv_ppl_stats_stderr(&s))); /* one token: no spread */
    kv_ppl_stats_add(&s, 2.0);
    kv_ppl_stats_add(&s, 3.0);
    kv_ppl_stats_add(&s, 4.0);
    /* mean 2.5, E[x^2] - mean^2 = 7.5 - 6.25 = 1.25, stderr = e^2.5 sqrt(1.25 / 3) */
    CHECK(fabs(kv_ppl_stats_ppl(&s) - exp(2.5)) < 1e-12);
    CHECK(fabs(kv_ppl_stats_stderr(&s) - exp(2.5) * sqrt(1.25 / 3.0)) < 1e-12);
    kv_ppl_stats same = {0};
    for (int i = 0; i < 5; i++)
        kv_ppl_stats_add(&same, 0.7);
    CHECK(isnan(kv_ppl_stats_stderr(&same))); /* llama.cpp prints no +/- for zero variance */
}

typedef struct seen {
    int calls, last_chunk, n_chunks;
    int64_t last_count;
} seen;

static void on_chunk(void *user, int chunk, int n_chunks, const kv_ppl_stats *so_far)
{
    seen *s = user;
    s->calls++;
    s->last_chunk = chunk;
    s->n_chunks = n_chunks;
    s->last_count = so_far->count;
}

static void test_method(void)
{
    const char *models = kv_test_models_dir();
    if (!models)
        KV_TEST_SKIP("shared models not found (KVSERVE_TEST_MODELS)");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/stories260K", models);
    kv_err err;
    kv_model *m = NULL;
    kv_engine *e = NULL;
    if (kv_model_load(dir, &m, &err))
        KV_TEST_SKIP("stories260K: %s", err.msg);
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = 1;
    CHECK(kv_engine_create(m, &o, &e, &err) == KV_OK);
    if (!e) {
        kv_model_free(m);
        return;
    }
    enum { N = 200 };
    int32_t toks[N], with_bos[N];
    for (int i = 0; i < N; i++)
        toks[i] = with_bos[i] = (int32_t)(3 + (i * 37) % 500);
    for (int i = 0; i < N; i += 32)
        with_bos[i] = 1;

    seen s = {0};
    kv_ppl_options po = {.ctx = 32, .bos_id = 1, .on_chunk = on_chunk, .user = &s};
    kv_ppl_result a, b;
    CHECK(kv_perplexity(e, toks, N, &po, &a, &err) == KV_OK);
    CHECK_EQ_INT(a.chunks, N / 32);                      /* the short tail is dropped */
    CHECK_EQ_INT(a.tokens_scored, (N / 32) * (32 - 1 - 16)); /* positions 16 .. 30 of each */
    CHECK_EQ_INT(s.calls, N / 32);
    CHECK_EQ_INT(s.last_count, a.tokens_scored);
    CHECK(isfinite(a.ppl) && a.ppl > 1 && isfinite(a.ppl_stderr));
    /* BOS replaces each chunk's first token: the same as tokens that had it already. */
    po.on_chunk = NULL;
    CHECK(kv_perplexity(e, with_bos, N, &po, &b, &err) == KV_OK);
    CHECK(a.ppl == b.ppl && a.ppl_stderr == b.ppl_stderr);
    po.bos_id = -1; /* ... and without it the first token is the text's */
    CHECK(kv_perplexity(e, toks, N, &po, &b, &err) == KV_OK);
    CHECK(a.ppl != b.ppl);
    /* The chunk limit scores exactly the first chunks. */
    po.bos_id = 1;
    po.max_chunks = 2;
    CHECK(kv_perplexity(e, toks, N, &po, &b, &err) == KV_OK);
    CHECK_EQ_INT(b.chunks, 2);
    CHECK_EQ_INT(b.tokens_scored, 2 * 15);
    /* The engine's cache is left as it was. */
    CHECK_EQ_INT(kv_pool_n_free(kv_engine_pool(e)), kv_engine_pool(e)->n_blocks);

    /* Refusals, before anything runs. */
    po.max_chunks = 0;
    CHECK_EQ_INT(kv_perplexity(e, toks, 63, &po, &b, &err), KV_EINVAL); /* < 2 chunks */
    CHECK(strstr(err.msg, "at least 64") != NULL);
    po.ctx = 3;
    CHECK_EQ_INT(kv_perplexity(e, toks, N, &po, &b, &err), KV_EINVAL);
    po.ctx = 1024; /* beyond stories260K's 512 */
    CHECK_EQ_INT(kv_perplexity(e, toks, N, &po, &b, &err), KV_EINVAL);
    po.ctx = 32;
    po.bos_id = 512;
    CHECK_EQ_INT(kv_perplexity(e, toks, N, &po, &b, &err), KV_EINVAL);
    po.bos_id = 1;
    toks[100] = 512;
    CHECK_EQ_INT(kv_perplexity(e, toks, N, &po, &b, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "token 100") != NULL);
    toks[100] = -1;
    CHECK_EQ_INT(kv_perplexity(e, toks, N, &po, &b, &err), KV_EINVAL);
    kv_engine_free(e);
    kv_model_free(m);
}

int main(void)
{
    test_stats();
    test_method();
    return kv_test_result();
}
