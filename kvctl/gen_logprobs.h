/* kvctl generate --logprobs N [--prompt-logprobs]: the logprobs of a generation, however it
 * ran (in this process or through a router), gathered in one form and written as members of
 * the --json object:
 *   "token_logprobs": [num],                       one per generated token
 *   "top_logprobs": [[{"id": int, "logprob": num}]], its N most likely alternatives
 *   "prompt_logprobs": [null, num, ...],           with --prompt-logprobs: one per prompt
 *   "prompt_top_logprobs": [null, [{...}], ...]     token, the first has none (null)
 * A value that is not a finite number (a token of probability 0) is written as null. */
#ifndef KVCTL_GEN_LOGPROBS_H
#define KVCTL_GEN_LOGPROBS_H

#include <stddef.h>

#include "cpu_kernels.h"
#include "kv_client.h"
#include "kv_textbuf.h"

typedef struct gen_logprobs {
    kv_client_logprobs *tok;      /* per generated token */
    size_t n_tok, cap_tok;
    kv_client_logprobs *prompt;   /* prompt positions 1.. */
    size_t n_prompt;
    int have_prompt;
    int failed;                   /* out of memory: the output would be incomplete */
} gen_logprobs;

void gen_logprobs_free(gen_logprobs *g);
/* Appends n tokens' logprobs (from the client library, or from the engine: same fields). */
void gen_logprobs_add(gen_logprobs *g, const kv_client_logprobs *lp, size_t n);
void gen_logprobs_add_engine(gen_logprobs *g, const kc_logprobs *lp, size_t n);
void gen_logprobs_set_prompt(gen_logprobs *g, const kv_client_logprobs *lp, size_t n);
void gen_logprobs_set_prompt_engine(gen_logprobs *g, const kc_logprobs *lp, size_t n);
/* The members above, each preceded by ", ". */
void gen_logprobs_json(const gen_logprobs *g, kv_textbuf *b);

#endif
