#include "generate.h"

#include <stdlib.h>
#include <string.h>

#include "kv_time.h"

const char *kv_finish_reason_name(kv_finish_reason r)
{
    static const char *names[] = {"eos", "length", "context_full", "cancelled"};
    return (unsigned)r < 4 ? names[r] : "?";
}

/* The prompt's logprobs (positions 1..n-1) with the prefill, and the last logits. */
static int prefill_scored(kv_engine *e, kv_seq *seq, const int32_t *tokens, int n, const kv_gen_params *p,
                          void *ctx, float *logits, kv_err *err)
{
    int32_t *targets = malloc((size_t)n * sizeof *targets);
    kc_logprobs *lp = malloc((size_t)n * sizeof *lp);
    int rc;
    if (!targets || !lp) {
        rc = kv_err_set(err, KV_ENOMEM, "out of memory (prompt logprobs of %d tokens)", n);
    } else {
        for (int i = 0; i < n; i++)
            targets[i] = i + 1 < n ? tokens[i + 1] : -1;
        rc = kv_engine_prefill_logprobs(e, seq, tokens, n, targets, p->logprobs - 1, lp, logits, err);
        if (!rc && p->on_logprobs)
            p->on_logprobs(ctx, lp, n - 1, 1);
    }
    free(targets);
    free(lp);
    return rc;
}

/* Baseline step: a fresh sequence and a full prefill of every token so far. */
static int recompute_logits(kv_engine *e, const int32_t *tokens, int n, float *logits, kv_err *err)
{
    kv_seq tmp = {0};
    int rc = kv_engine_prefill(e, &tmp, tokens, n, logits, 0, err);
    kv_seq_release(&tmp, kv_engine_pool(e));
    return rc;
}

int kv_generate(kv_engine *e, const int32_t *prompt, int n_prompt, const kv_gen_params *p, kv_token_fn on_token,
                void *ctx, kv_gen_stats *stats, kv_err *err)
{
    const kv_model_config *c = &kv_engine_model(e)->cfg;
    memset(stats, 0, sizeof *stats);
    stats->n_prompt = n_prompt;
    if (n_prompt <= 0)
        return kv_err_set(err, KV_EINVAL, "empty prompt");
    if (n_prompt >= c->max_position)
        return kv_err_set(err, KV_EFULL, "prompt of %d tokens leaves no room in the context length %d", n_prompt,
                          c->max_position);
    if (p->max_tokens < 0)
        return kv_err_set(err, KV_EINVAL, "max tokens must be >= 0");
    if (p->logprobs < 0 || p->logprobs > KC_LOGPROBS_TOP_MAX + 1)
        return kv_err_set(err, KV_EINVAL, "logprobs must be in [0, %d], got %d", KC_LOGPROBS_TOP_MAX + 1, p->logprobs);
    int lp_top = p->logprobs - 1; /* -1: none */
    kv_sampler sampler;
    int rc = kv_sampler_init(&sampler, &p->sampling, c->vocab_size, err);
    if (rc)
        return rc;
    int cap = n_prompt + p->max_tokens;
    int32_t *tokens = malloc((size_t)cap * sizeof *tokens);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (!tokens || !logits) {
        free(tokens); free(logits); kv_sampler_free(&sampler);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    memcpy(tokens, prompt, (size_t)n_prompt * sizeof *tokens);
    kv_seq seq = {0};
    double t0 = kv_now_s(), t_first = t0;
    int n = n_prompt;
    stats->finish = KV_FINISH_LENGTH;
    if (p->logprobs && p->prompt_logprobs)
        rc = prefill_scored(e, &seq, tokens, n, p, ctx, logits, err);
    else if (p->no_kv_cache)
        rc = recompute_logits(e, tokens, n, logits, err);
    else
        rc = kv_engine_prefill(e, &seq, tokens, n, logits, 0, err);
    if (!rc && p->logprobs && p->prompt_logprobs && p->no_kv_cache)
        kv_seq_release(&seq, kv_engine_pool(e)); /* the baseline keeps no cache */
    stats->prefill_s = kv_now_s() - t0;
    int32_t next = rc ? 0 : kv_sampler_sample(&sampler, logits);
    kc_logprobs lp;
    if (!rc && lp_top >= 0)
        kc_logprobs_row(logits, c->vocab_size, next, lp_top, &lp);
    while (!rc && n < cap) {
        if (lp_top >= 0 && p->on_logprobs)
            p->on_logprobs(ctx, &lp, 1, 0);
        tokens[n++] = next;
        stats->n_generated++;
        if (stats->n_generated == 1) {
            t_first = kv_now_s();
            stats->ttft_s = t_first - t0;
        }
        if (on_token && on_token(ctx, next)) {
            stats->finish = KV_FINISH_CANCELLED;
            break;
        }
        if (!p->ignore_eos && kv_model_config_is_eos(c, next)) {
            stats->finish = KV_FINISH_EOS;
            break;
        }
        if (n == cap)
            break;
        if (n >= c->max_position) {
            stats->finish = KV_FINISH_CONTEXT;
            break;
        }
        if (p->no_kv_cache) {
            if (!(rc = recompute_logits(e, tokens, n, logits, err))) {
                next = kv_sampler_sample(&sampler, logits);
                if (lp_top >= 0)
                    kc_logprobs_row(logits, c->vocab_size, next, lp_top, &lp);
            }
        } else {
            kv_seq *one = &seq;
            kv_sampler *s = &sampler;
            rc = kv_engine_decode_sample_lp(e, &one, &next, 1, &s, lp_top >= 0 ? &lp_top : NULL, &lp, &next, err);
        }
    }
    if (stats->n_generated > 0)
        stats->decode_s = kv_now_s() - t_first;
    kv_seq_release(&seq, kv_engine_pool(e));
    kv_sampler_free(&sampler);
    free(tokens);
    free(logits);
    return rc;
}
