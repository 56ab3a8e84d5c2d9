/* The JSON kv-frontend sends, in OpenAI's (and vLLM's) shapes, written with kv_textbuf (the
 * one JSON writer). Streaming pieces come framed as server-sent events: "data: JSON\n\n". */
#ifndef FE_RENDER_H
#define FE_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include "fe_error.h"
#include "fe_request.h"
#include "kv_textbuf.h"

/* What every body and chunk of one response repeats. */
typedef struct fe_meta {
    fe_kind kind;
    const char *id;     /* "chatcmpl-..." or "cmpl-..." */
    long long created;  /* Unix seconds */
    const char *model;
} fe_meta;

typedef struct fe_usage {
    uint32_t prompt_tokens, completion_tokens;
} fe_usage;

/* {"error": {"message", "type", "param", "code"}} (param and code null when empty). */
void fe_render_error(kv_textbuf *b, const fe_error *e);
/* The same as one SSE event, then "data: [DONE]\n\n": an error after streaming began. */
void fe_render_sse_error(kv_textbuf *b, const fe_error *e);

/* A whole (non-streamed) response; finish is "stop" or "length". logprobs: the choice's
 * "logprobs" value as JSON (fe_logprobs.h), NULL = null. */
void fe_render_response(kv_textbuf *b, const fe_meta *m, const char *text, size_t len, const char *logprobs,
                        const char *finish, const fe_usage *u);

/* One streamed chunk as an SSE event. Chat: role "assistant" when role is set, then content
 * deltas; completions: text. finish NULL = null. with_usage_null adds "usage": null (as
 * OpenAI does on every chunk when include_usage was asked). */
void fe_render_chunk(kv_textbuf *b, const fe_meta *m, int role, const char *text, size_t len, const char *logprobs,
                     const char *finish, int with_usage_null);
/* The usage-only chunk (choices: []) that ends a stream with include_usage. */
void fe_render_usage_chunk(kv_textbuf *b, const fe_meta *m, const fe_usage *u);
void fe_render_done(kv_textbuf *b); /* "data: [DONE]\n\n" */
void fe_render_keepalive(kv_textbuf *b); /* ": keep-alive\n\n" */

/* GET /v1/models. */
void fe_render_models(kv_textbuf *b, const char *model, long long created, uint32_t max_model_len);
/* POST /tokenize: {"count", "max_model_len", "tokens", "token_strs": null}. */
void fe_render_tokens(kv_textbuf *b, const int32_t *ids, size_t n, uint32_t max_model_len);
/* POST /detokenize: {"prompt": text}. */
void fe_render_detokenized(kv_textbuf *b, const char *text, size_t len);

#endif
