/* Logprobs in OpenAI's two shapes, from what libkvclient delivers (kv_client_logprobs: the
 * raw logits' log-softmax, vLLM's default), written with kv_textbuf:
 *   chat:        {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token",
 *                 "logprob", "bytes"}]}]}
 *   completions: {"tokens": [str], "token_logprobs": [num], "top_logprobs": [{str: num}],
 *                 "text_offset": [int]}; with echo the prompt's tokens come first, the
 *                 first with null logprob and top_logprobs (as OpenAI); each top dict holds
 *                 the N alternatives and the token itself (as vLLM).
 * A token's text is what the caller's fe_token_text_fn makes of its id (the model's
 * tokenizer in kv-frontend); "bytes" are that text's UTF-8 bytes; text_offset counts
 * characters of the returned text. A logprob that is not a finite number (a token of
 * probability 0) is written as -9999.0, as vLLM does. Pure: no I/O. */
#ifndef FE_LOGPROBS_H
#define FE_LOGPROBS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_client.h"
#include "kv_textbuf.h"

/* The text of token id into out (cap bytes, NUL-terminated): its length, or < 0 (then "" is used). */
typedef int (*fe_token_text_fn)(void *ctx, int32_t id, char *out, size_t cap);

typedef struct fe_token_texts {
    fe_token_text_fn fn;
    void *ctx;
} fe_token_texts;

void fe_render_chat_logprobs(kv_textbuf *b, const int32_t *ids, const kv_client_logprobs *lp, size_t n,
                             const fe_token_texts *tt);

/* prompt_ids[n_prompt] with prompt_lp[n_prompt - 1] (positions 1..; NULL: no prompt part),
 * then ids[n] with lp[n]. *offset: characters of returned text before the first token;
 * advanced past the last (a stream's chunks go on from there). */
void fe_render_completion_logprobs(kv_textbuf *b, const int32_t *prompt_ids, const kv_client_logprobs *prompt_lp,
                                   size_t n_prompt, const int32_t *ids, const kv_client_logprobs *lp, size_t n,
                                   size_t *offset, const fe_token_texts *tt);

#endif
