/* UTF-8: a code point written out (inline), and strict decoding and validation (kv_utf8.c). */
#ifndef KV_UTF8_H
#define KV_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes cp (<= 0x10FFFF) as UTF-8 into out (room for 4 bytes); returns the length. */
static inline size_t kv_utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF): kv_utf8.c. */
#define KV_UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* Decodes the character at s[0..n), n > 0. Returns its byte length; an invalid or truncated
 * sequence counts as one byte and yields *cp = 0xFFFD, so callers always make progress. */
size_t kv_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Offset of the first invalid byte, or n when all of s[0..n) is valid UTF-8. */
size_t kv_utf8_invalid_at(const char *s, size_t n);
/* Length (2..4) of the sequence a lead byte announces, or 0 if c cannot start one. */
int kv_utf8_lead_len(unsigned char c);
/* Whether c may follow lead as the second byte (excludes overlongs and surrogates). */
int kv_utf8_second_ok(unsigned char lead, unsigned char c);

#endif
