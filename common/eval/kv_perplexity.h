/* Perplexity of a model on a token sequence, by llama.cpp's method (tools/perplexity), so
 * its numbers compare with `llama-perplexity -c CTX`:
 *   - the tokens are cut into non-overlapping chunks of ctx tokens (a tail shorter than a
 *     chunk is dropped); each chunk runs from an empty KV cache;
 *   - when bos_id >= 0 the chunk's first token is replaced by it (llama.cpp does so when the
 *     tokenizer adds BOS; the caller's tokens then start with BOS already);
 *   - only the second half is scored: positions ctx/2 .. ctx-2 predict the token after them
 *     (ctx - 1 - ctx/2 tokens per chunk);
 *   - PPL = exp(mean NLL); its standard error is llama.cpp's: PPL * sqrt(var / (N - 1)),
 *     var = mean(NLL^2) - mean(NLL)^2 over the N scored tokens. */
#ifndef KV_PERPLEXITY_H
#define KV_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "kv_err.h"

/* Running sums over scored tokens (double, as llama.cpp keeps them). */
typedef struct kv_ppl_stats {
    double nll, nll2;
    int64_t count;
} kv_ppl_stats;

void kv_ppl_stats_add(kv_ppl_stats *s, double nll);
/* exp(mean NLL); NaN when nothing was scored. */
double kv_ppl_stats_ppl(const kv_ppl_stats *s);
/* llama.cpp's "+/-": NaN when fewer than 2 tokens or the variance is not positive. */
double kv_ppl_stats_stderr(const kv_ppl_stats *s);

typedef struct kv_ppl_options {
    int ctx;         /* tokens per chunk: 4 .. the model's context */
    int max_chunks;  /* score at most this many chunks (llama.cpp's --chunks); 0 = all */
    int32_t bos_id;  /* -1: chunks keep their first token */
    /* Called after each chunk (1-based) with the sums so far; may be NULL. */
    void (*on_chunk)(void *user, int chunk, int n_chunks, const kv_ppl_stats *so_far);
    void *user;
} kv_ppl_options;

typedef struct kv_ppl_result {
    double ppl, ppl_stderr;
    int chunks;
    int64_t tokens_scored;
} kv_ppl_result;

/* Scores tokens[0..n_tokens) on e (whose pool must hold ctx tokens; e's cache is left as it
 * was). Needs n_tokens >= 2 * ctx, as llama.cpp does (else KV_EINVAL naming both); a token
 * outside the vocabulary is KV_EINVAL before anything runs. */
int kv_perplexity(kv_engine *e, const int32_t *tokens, size_t n_tokens, const kv_ppl_options *o, kv_ppl_result *out,
                  kv_err *err);

#endif
