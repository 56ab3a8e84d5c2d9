/* The body of a generate request (POST /v1/chat/completions, /v1/completions) and of
 * /tokenize and /detokenize, validated into a struct. Strict about types (a wrong type is
 * a 400 that names the field), tolerant of unknown fields (as vLLM). Every string and array
 * it keeps is bounded and owned by the struct. Pure: no I/O, fuzzed by tests/fuzz_http.c. */
#ifndef FE_REQUEST_H
#define FE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "fe_error.h"

#define FE_MAX_STOP 4            /* stop sequences (OpenAI's limit) */
#define FE_MAX_STOP_BYTES 256    /* bytes per stop sequence */
#define FE_MAX_PROMPT_IDS 1000000 /* token ids in a prompt */
#define FE_MAX_MESSAGES 4096
#define FE_MAX_TOP_LOGPROBS 20   /* top_logprobs (chat), logprobs (completions): vLLM's limit */

typedef enum fe_kind { FE_KIND_CHAT = 1, FE_KIND_COMPLETION = 2 } fe_kind;

typedef struct fe_gen_request {
    fe_kind kind;
    char *model;               /* NULL when absent */
    char *chat_messages;       /* chat: the messages re-serialized as a JSON array of
                                  {"role", "content"(string)[, "name"]} */
    char *prompt;              /* completion: text... */
    int32_t *prompt_tokens;    /* ...or token ids */
    size_t n_prompt_tokens;
    uint32_t max_tokens;       /* 0 = absent: the caller picks the default */
    float temperature;         /* default 1 (OpenAI) */
    float top_p;               /* default 1 */
    uint32_t top_k;            /* 0 = off (-1 accepted as off, as vLLM) */
    uint64_t seed;
    int has_seed;
    char *stop[FE_MAX_STOP];
    size_t n_stop;
    int stream;
    int include_usage;         /* stream_options.include_usage */
    int ignore_eos;            /* vLLM extension */
    int logprobs;              /* 0 = none; k >= 1: each token's logprob and its k - 1 top
                                  alternatives (chat top_logprobs, completions logprobs), as
                                  the wire's GenerateRequest.logprobs */
    int echo;                  /* completions: the prompt comes back before the completion (with
                                  its logprobs, the first null, when logprobs) */
} fe_gen_request;

/* Parses and validates body[0..len) for kind. 0 on success (free with fe_gen_request_free),
 * -1 with e filled (status 400, or 404 is never set here: the model name is checked by the
 * caller, which knows what it serves). */
int fe_parse_generate(fe_kind kind, const char *body, size_t len, fe_gen_request *out, fe_error *e);
void fe_gen_request_free(fe_gen_request *r);

/* POST /tokenize: {"prompt": str, "add_special_tokens": bool = true, "model"}. */
typedef struct fe_tokenize_request {
    char *model;
    char *prompt;
    size_t prompt_len;
    int add_special_tokens;
} fe_tokenize_request;
int fe_parse_tokenize(const char *body, size_t len, fe_tokenize_request *out, fe_error *e);
void fe_tokenize_request_free(fe_tokenize_request *r);

/* POST /detokenize: {"tokens": [int], "model"}. */
typedef struct fe_detokenize_request {
    char *model;
    int32_t *tokens;
    size_t n_tokens;
} fe_detokenize_request;
int fe_parse_detokenize(const char *body, size_t len, fe_detokenize_request *out, fe_error *e);
void fe_detokenize_request_free(fe_detokenize_request *r);

#endif
