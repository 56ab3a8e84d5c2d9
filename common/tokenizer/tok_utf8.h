/* The Unicode character classes and transforms the tokenizer needs, with Rust's (HF
 * tokenizers') definitions; tables from libutf8proc. Its UTF-8 helpers are kv_utf8.h's. */
#ifndef KV_TOK_UTF8_H
#define KV_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "kv_utf8.h"
#include "tok_vec.h"

/* Unicode White_Space, as Rust's char::is_whitespace. */
int tok_is_space(uint32_t cp);
/* Rust's char::is_numeric: general category Nd, Nl or No. */
int tok_is_numeric(uint32_t cp);
/* HF's is_punc: char::is_ascii_punctuation, or general category P*. */
int tok_is_punctuation(uint32_t cp);

typedef enum { TOK_NFC, TOK_NFD, TOK_NFKC, TOK_NFKD } tok_unicode_form;
/* out = s[0..n) (valid UTF-8) in the normal form (replaced, not appended). 0 or KV_ENOMEM. */
int tok_unicode_normalize(tok_unicode_form form, const char *s, size_t n, tok_buf *out);
/* out = s[0..n) lowercased one character at a time (Rust's char::to_lowercase: no final-sigma
 * rule; U+0130 becomes "i\u0307"). 0 or KV_ENOMEM. */
int tok_lowercase(const char *s, size_t n, tok_buf *out);

#endif
