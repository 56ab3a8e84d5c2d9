/* HuggingFace tokenizer.json with a BPE model, encoding and decoding as HF tokenizers does:
 * normalizers Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD, Lowercase, Strip; pre-tokenizers
 * Sequence, Split (every behavior, invert), ByteLevel, Digits, Punctuation, Whitespace,
 * WhitespaceSplit, Metaspace; post-processors TemplateProcessing, Roberta/BertProcessing,
 * ByteLevel, Sequence; decoders ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace,
 * Sequence; added/special tokens; streaming-safe decoding. Anything else fails to load with
 * KV_EUNSUPPORTED and a message naming the component and its type.
 * BOS/EOS as HF transformers decides them, from the post_processor and tokenizer_config.json
 * beside tokenizer.json (optional; a malformed one fails the load). */
#ifndef KV_TOKENIZER_H
#define KV_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

typedef struct kv_tokenizer kv_tokenizer;

/* Loads path (a tokenizer.json) and DIR/tokenizer_config.json when present beside it. */
int kv_tokenizer_load(const char *path, kv_tokenizer **out, kv_err *err);
void kv_tokenizer_free(kv_tokenizer *tok);

/* Number of ids (vocab + added tokens): max id + 1. */
int32_t kv_tokenizer_n_ids(const kv_tokenizer *tok);
/* Id of a token string (vocab or added), or -1. */
int32_t kv_tokenizer_token_id(const kv_tokenizer *tok, const char *token);
int kv_tokenizer_is_special(const kv_tokenizer *tok, int32_t id);
/* The token string of an id (added token content, else vocab entry), or NULL for an id out of
 * range or without a token. Valid while tok lives; a token holding a NUL byte reads short. */
const char *kv_tokenizer_token_str(const kv_tokenizer *tok, int32_t id);

/* BOS: tokenizer_config.json's bos_token; without one, the token the post-processor puts
 * before the text, if any. Id -1 / NULL when there is none (or, for the id, when the
 * configured token is not in the vocabulary). */
int32_t kv_tokenizer_bos_id(const kv_tokenizer *tok);
const char *kv_tokenizer_bos_token(const kv_tokenizer *tok);
/* Whether kv_tokenizer_encode_special(add_special = 1) starts with the BOS id. */
int kv_tokenizer_adds_bos(const kv_tokenizer *tok);
/* EOS: tokenizer_config.json's eos_token (NULL when absent). The ids that end generation:
 * writes up to cap of them to out and returns how many there are (0 or 1 today). */
const char *kv_tokenizer_eos_token(const kv_tokenizer *tok);
size_t kv_tokenizer_eos_ids(const kv_tokenizer *tok, int32_t *out, size_t cap);

/* HF encode(text, add_special_tokens = add_special). Added tokens in the text are matched
 * first. With add_special, the post_processor's special tokens surround the text's ids (BOS
 * etc.); without a post_processor, tokenizer_config.json's add_bos_token / add_eos_token
 * decide. Text must be valid UTF-8 (else KV_EINVAL). On success *ids is malloc'd (caller
 * frees, even when *n_ids is 0) and *n_ids set. */
int kv_tokenizer_encode_special(const kv_tokenizer *tok, const char *text, size_t len, int add_special,
                                int32_t **ids, size_t *n_ids, kv_err *err);
/* Whether the tokenizer's files say what encoding with special tokens adds (a post_processor
 * or tokenizer_config.json): when not, kv_tokenizer_encode_special adds nothing and a caller
 * may take BOS from elsewhere (a model's config). */
int kv_tokenizer_decides_specials(const kv_tokenizer *tok);
/* kv_tokenizer_encode_special with add_special = 0: no BOS/EOS. */
int kv_tokenizer_encode(const kv_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                        size_t *n_ids, kv_err *err);

/* Streaming decoder: push ids one at a time, get the text they complete. Bytes of an
 * unfinished UTF-8 character are held back until the character is complete; invalid
 * sequences become U+FFFD. Special tokens produce no text (HF decode's skip_special_tokens). The leading-space strip of
 * SentencePiece decoders applies only to the first text of the stream, so priming the
 * decoder with the prompt's ids (discarding their text) gives the continuation exactly
 * as it appears in the full decoded text. */
typedef struct kv_detok {
    const kv_tokenizer *tok;
    int at_start;             /* no text emitted yet */
    int first_token;          /* no token decoded yet (a Metaspace decoder treats it apart) */
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
