/* Prompts to token ids, exactly as HF transformers makes them, for every path that takes
 * text (kvctl generate --local, the router):
 *   - text: tokenizer(text) with its special tokens: what the tokenizer's post_processor or
 *     tokenizer_config.json adds (SmolLM2: nothing; Llama-2: BOS). config.json's
 *     bos_token_id is prepended only when the tokenizer says nothing about specials at all.
 *   - chat: apply_chat_template(messages, add_generation_prompt, tokenize=True): the
 *     template writes any BOS itself, so its text is encoded without special tokens.
 * An encoder is immutable once loaded: encode from any number of threads. */
#ifndef KV_PROMPT_H
#define KV_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "json.h"
#include "kv_err.h"
#include "tokenizer.h"

typedef struct kv_prompt_encoder {
    kv_tokenizer *tok;
    kv_chat_template *chat; /* NULL: the model has no chat template (chat prompts refused) */
    int32_t config_bos;     /* config.json's bos_token_id, -1 when absent */
} kv_prompt_encoder;

/* Loads DIR/tokenizer.json (+ tokenizer_config.json) and the chat template, if any; for a
 * GGUF file (a path ending in .gguf), the same files as `kvctl model import` would write them
 * from its metadata. config_bos: config.json's bos_token_id or -1. */
int kv_prompt_encoder_load(const char *model_dir, int32_t config_bos, kv_prompt_encoder *pe, kv_err *err);
void kv_prompt_encoder_free(kv_prompt_encoder *pe);

/* On success *ids is malloc'd (caller frees) with *n_ids >= 1; a prompt that encodes to no
 * token is KV_EINVAL. */
int kv_prompt_encode_text(const kv_prompt_encoder *pe, const char *text, size_t len, int32_t **ids,
                          size_t *n_ids, kv_err *err);
/* messages: a JSON array of chat messages. The template's own errors (raise_exception) come
 * back as KV_EINVAL with its message. */
int kv_prompt_encode_chat(const kv_prompt_encoder *pe, const json_value *messages, int add_generation_prompt,
                          int32_t **ids, size_t *n_ids, kv_err *err);
/* The same from JSON text (as GenerateRequest.chat_messages carries it). */
int kv_prompt_encode_chat_json(const kv_prompt_encoder *pe, const char *messages_json, size_t len,
                               int add_generation_prompt, int32_t **ids, size_t *n_ids, kv_err *err);

#endif
