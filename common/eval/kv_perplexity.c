#include "kv_perplexity.h"

#include <math.h>
#include <stdlib.h>

void kv_ppl_stats_add(kv_ppl_stats *s, double nll)
{
    s->nll += nll;
    s->nll2 += nll * nll;
    s->count++;
}

double kv_ppl_stats_ppl(const kv_ppl_stats *s) { return s->count > 0 ? exp(s->nll / (double)s->count) : NAN; }

double kv_ppl_stats_stderr(const kv_ppl_stats *s)
{
    if (s->count < 2)
        return NAN;
    double mean = s->nll / (double)s->count;
    double var = s->nll2 / (double)s->count - mean * mean;
    if (!(var > 0))
        return NAN;
    return sqrt(var / (double)(s->count - 1)) * exp(mean);
}

/* One chunk from an empty cache; its scored NLLs go into st. */
static int score_chunk(kv_engine *e, int32_t *chunk, int ctx, int32_t *targets, kc_logprobs *lp, kv_ppl_stats *st,
                       kv_err *err)
{
    int first = ctx / 2;
    for (int i = 0; i < ctx; i++)
        targets[i] = i >= first && i < ctx - 1 ? chunk[i + 1] : -1;
    kv_seq seq = {0};
    int rc = kv_engine_prefill_logprobs(e, &seq, chunk, ctx, targets, 0, lp, NULL, err);
    kv_seq_release(&seq, kv_engine_pool(e));
    if (rc)
        return rc;
    for (int i = first; i < ctx - 1; i++) {
        if (!isfinite(lp[i].logprob))
            return kv_err_set(err, KV_ERANGE, "position %d: log-probability %g of token %d is not finite", i,
                              (double)lp[i].logprob, (int)targets[i]);
        kv_ppl_stats_add(st, -(double)lp[i].logprob);
    }
    return KV_OK;
}

int kv_perplexity(kv_engine *e, const int32_t *tokens, size_t n_tokens, const kv_ppl_options *o, kv_ppl_result *out,
                  kv_err *err)
{
    const kv_model_config *cfg = &kv_engine_model(e)->cfg;
    if (o->ctx < 4 || o->ctx > cfg->max_position)
        return kv_err_set(err, KV_EINVAL, "context of %d tokens: must be 4 .. %d (the model's context)", o->ctx,
                          cfg->max_position);
    if (o->max_chunks < 0)
        return kv_err_set(err, KV_EINVAL, "%d chunks asked", o->max_chunks);
    if (o->bos_id >= cfg->vocab_size)
        return kv_err_set(err, KV_EINVAL, "BOS id %d outside the vocabulary of %d", (int)o->bos_id, cfg->vocab_size);
    if (n_tokens < 2 * (size_t)o->ctx)
        return kv_err_set(err, KV_EINVAL,
                          "%zu tokens: perplexity with a context of %d needs at least %d (as llama.cpp does)",
                          n_tokens, o->ctx, 2 * o->ctx);
    size_t n_chunks_max = n_tokens / (size_t)o->ctx;
    int n_chunks = n_chunks_max > INT32_MAX ? INT32_MAX : (int)n_chunks_max;
    if (o->max_chunks > 0 && o->max_chunks < n_chunks)
        n_chunks = o->max_chunks;
    size_t used = (size_t)n_chunks * (size_t)o->ctx;
    for (size_t i = 0; i < used; i++)
        if (tokens[i] < 0 || tokens[i] >= cfg->vocab_size)
            return kv_err_set(err, KV_EINVAL, "token %zu: id %d outside the vocabulary of %d", i, (int)tokens[i],
                              cfg->vocab_size);
    int32_t *chunk = malloc((size_t)o->ctx * sizeof *chunk);
    int32_t *targets = malloc((size_t)o->ctx * sizeof *targets);
    kc_logprobs *lp = malloc((size_t)o->ctx * sizeof *lp);
    int rc = KV_OK;
    if (!chunk || !targets || !lp)
        rc = kv_err_set(err, KV_ENOMEM, "out of memory (scratch for a chunk of %d tokens)", o->ctx);
    kv_ppl_stats st = {0};
    for (int c = 0; !rc && c < n_chunks; c++) {
        for (int i = 0; i < o->ctx; i++)
            chunk[i] = tokens[(size_t)c * (size_t)o->ctx + (size_t)i];
        if (o->bos_id >= 0)
            chunk[0] = o->bos_id;
        rc = score_chunk(e, chunk, o->ctx, targets, lp, &st, err);
        if (!rc && o->on_chunk)
            o->on_chunk(o->user, c + 1, n_chunks, &st);
    }
    free(chunk);
    free(targets);
    free(lp);
    if (rc)
        return rc;
    out->ppl = kv_ppl_stats_ppl(&st);
    out->ppl_stderr = kv_ppl_stats_stderr(&st);
    out->chunks = n_chunks;
    out->tokens_scored = st.count;
    return KV_OK;
}
