/* Regexes as HF tokenizers runs them (Oniguruma, through its SysRegex), on PCRE2 in UTF and
 * Unicode-property mode. Two things differ between the engines and are made to agree here:
 * the classes \s \S \w \W (rewritten to Oniguruma's Unicode definitions before compiling),
 * and which empty matches an iteration yields (Oniguruma's find_iter skips an empty match
 * that starts where the previous match ended). */
#ifndef KV_TOK_REGEX_H
#define KV_TOK_REGEX_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "kv_err.h"
#include "tok_vec.h"

/* Compiles pat[0..len) (a literal string when `literal`: HF escapes String patterns). JIT
 * when available. `where` names the field for the error message. */
int tok_regex_compile(const char *pat, size_t len, int literal, pcre2_code **out, const char *where,
                      kv_err *err);

/* The matches of re in s[0..n) (valid UTF-8), left to right, as Oniguruma's find_iter yields
 * them, replacing *out: each as {off = start, len = end - start}. md: match data for one
 * pair (created by the caller, reused). KV_ERANGE when the match limits are hit. */
int tok_regex_matches(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, tok_spans *out,
                      kv_err *err);

/* s[0..n) with every match of re replaced by `to` (literal: no $1 expansion), into out
 * (replaced, not appended). Returns 0 or a kv_code. */
int tok_regex_replace(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, const char *to,
                      size_t to_len, tok_buf *out, tok_spans *scratch, kv_err *err);

#endif
