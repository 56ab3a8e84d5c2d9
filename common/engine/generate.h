/* Single-sequence generation on an engine: prefill the prompt, then decode until EOS,
 * max tokens or the context length; or, with no_kv_cache, recompute the whole sequence
 * every step (the baseline KV caching is measured against). */
#ifndef KV_GENERATE_H
#define KV_GENERATE_H

#include <stdint.h>

#include "engine.h"
#include "sampler.h"

typedef enum { KV_FINISH_EOS = 0, KV_FINISH_LENGTH, KV_FINISH_CONTEXT, KV_FINISH_CANCELLED } kv_finish_reason;

/* Log-probabilities reported by kv_generate (see kv_gen_params.logprobs): prompt = 1 for
 * the prompt's, once before the first token (n_prompt - 1 entries: positions 1.., the
 * first position has none), else one generated token's, before on_token sees it. */
typedef void (*kv_logprobs_fn)(void *ctx, const kc_logprobs *lp, int n, int prompt);

typedef struct kv_gen_params {
    int max_tokens;
    kv_sampling_params sampling;
    int no_kv_cache;
    int ignore_eos;
    /* 0 = no logprobs (no cost); k >= 1: each generated token's logprob with its k - 1 most
     * likely alternatives (k <= KC_LOGPROBS_TOP_MAX + 1), as GenerateRequest.logprobs */
    int logprobs;
    int prompt_logprobs;       /* also the prompt's (with logprobs - 1 alternatives) */
    kv_logprobs_fn on_logprobs; /* gets them (ctx as on_token) */
} kv_gen_params;

typedef struct kv_gen_stats {
    int n_prompt, n_generated;
    kv_finish_reason finish;
    double ttft_s;   /* start to first generated token */
    double prefill_s;
    double decode_s; /* everything after the first token */
} kv_gen_stats;

/* Called for every generated token; a nonzero return stops generation (cancel). */
typedef int (*kv_token_fn)(void *ctx, int32_t token);

int kv_generate(kv_engine *e, const int32_t *prompt, int n_prompt, const kv_gen_params *p, kv_token_fn on_token,
                void *ctx, kv_gen_stats *stats, kv_err *err);
const char *kv_finish_reason_name(kv_finish_reason r);

#endif
