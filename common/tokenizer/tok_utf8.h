/* Strict UTF-8 helpers (no overlongs, no surrogates, nothing above U+10FFFF). */
#ifndef KV_TOK_UTF8_H
#define KV_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define TOK_UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* Decodes the character at s[0..n), n > 0. Returns its byte length; an invalid or truncated
 * sequence counts as one byte and yields *cp = 0xFFFD, so callers always make progress. */
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Offset of the first invalid byte, or n when all of s[0..n) is valid UTF-8. */
size_t tok_utf8_invalid_at(const char *s, size_t n);
/* Length (2..4) of the sequence a lead byte announces, or 0 if c cannot start one. */
int tok_utf8_lead_len(unsigned char c);
/* Whether c may follow lead as the second byte (excludes overlongs and surrogates). */
int tok_utf8_second_ok(unsigned char lead, unsigned char c);
/* Unicode White_Space, as Rust's char::is_whitespace (used by added-token lstrip/rstrip). */
int tok_is_space(uint32_t cp);

#endif
