/* HuggingFace tokenizer.json (BPE model): SentencePiece-style (Llama-2: Prepend/Replace
 * normalizer, byte fallback) and byte-level (GPT-2 / Llama-3: regex Split pre-tokenizer,
 * ByteLevel, ignore_merges), added/special tokens, streaming-safe decoding. */
#ifndef KV_TOKENIZER_H
#define KV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

typedef struct kv_tokenizer kv_tokenizer;

int kv_tokenizer_load(const char *path, kv_tokenizer **out, kv_err *err);
void kv_tokenizer_free(kv_tokenizer *tok);

/* Number of ids (vocab + added tokens): max id + 1. */
int32_t kv_tokenizer_n_ids(const kv_tokenizer *tok);
/* Id of a token string (vocab or added), or -1. */
int32_t kv_tokenizer_token_id(const kv_tokenizer *tok, const char *token);
int kv_tokenizer_is_special(const kv_tokenizer *tok, int32_t id);

/* Encodes text (no BOS/EOS added). Added tokens in the text are matched first.
 * On success *ids is malloc'd (caller frees) and *n_ids set. */
int kv_tokenizer_encode(const kv_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                        size_t *n_ids, kv_err *err);

/* Streaming decoder: push ids one at a time, get the text they complete. Bytes of an
 * unfinished UTF-8 character are held back until the character is complete; invalid
 * sequences become U+FFFD. Special tokens produce no text. The leading-space strip of
 * SentencePiece decoders applies only to the first text of the stream, so priming the
 * decoder with the prompt's ids (discarding their text) gives the continuation exactly
 * as it appears in the full decoded text. */
typedef struct kv_detok {
    const kv_tokenizer *tok;
    int at_start;             /* no text emitted yet */
    unsigned char pending[8]; /* incomplete UTF-8 bytes */
    int n_pending;
} kv_detok;

void kv_detok_init(kv_detok *d, const kv_tokenizer *tok);
/* Appends the completed text of id to out (NUL-terminated, cap bytes); returns bytes written
 * (excluding NUL) or a negative kv_code when id is out of range or out is too small. */
int kv_detok_push(kv_detok *d, int32_t id, char *out, size_t cap, kv_err *err);
/* Flushes held-back bytes (as U+FFFD) at the end of a stream. */
int kv_detok_flush(kv_detok *d, char *out, size_t cap);

/* Whole-sequence decode into a malloc'd string (caller frees). */
int kv_tokenizer_decode(const kv_tokenizer *tok, const int32_t *ids, size_t n, char **out, kv_err *err);

#endif
