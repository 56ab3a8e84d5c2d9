/* Private to the synthetic-model writer: generates a byte-level BPE tokenizer.json
 * (Llama-3 format) with exactly vocab_size ids:
 *   0..255               the 256 GPT-2 byte-level tokens (byte b at id b),
 *   256..vocab_size-3    merged tokens ("Ġ"+letter, English bigrams, then word-like
 *                        extensions by one letter), one merge each, merge rank = id - 256,
 *   vocab_size-2, -1     the specials <|begin_of_text|>, <|end_of_text|> (added tokens, so
 *                        HF assigns them exactly these ids).
 * The result depends only on vocab_size. */
#ifndef KV_SYNTH_TOKENIZER_H
#define KV_SYNTH_TOKENIZER_H

#include "kv_err.h"
#include "kv_textbuf.h"

#define KV_SYNTH_MIN_VOCAB 258 /* 256 byte tokens + 2 specials */
#define KV_SYNTH_BOS_TEXT "<|begin_of_text|>"
#define KV_SYNTH_EOS_TEXT "<|end_of_text|>"

/* Appends the whole tokenizer.json to out. */
int kv_synth_tokenizer_json(int vocab_size, kv_textbuf *out, kv_err *err);

/* GPT-2's bytes_to_unicode: the code point byte b stands for in byte-level vocabularies
 * (printable bytes map to themselves, the others to U+0100 + k). */
unsigned kv_synth_byte_codepoint(unsigned char b);

#endif
