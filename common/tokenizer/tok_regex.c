/* Oniguruma semantics on PCRE2: see tok_regex.h. */
#include "tok_regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_utf8.h"

/* Oniguruma's Unicode \s is White_Space; PCRE2's also takes U+180E and misses nothing else.
 * Its \w is Alphabetic | Mark | Decimal_Number | Connector_Punctuation | Join_Control;
 * PCRE2 10.42's is L | N | '_' (so it takes No like '²' and misses combining marks). */
static const char onig_space[] = "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
                                 "\\x{202F}\\x{205F}\\x{3000}";
static const char onig_word[] = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";

/* Rewrites \s \S \w \W outside character classes and \s \w inside them (a negated class
 * cannot be spelled inside another: \S and \W stay PCRE2's there). \Q...\E is copied as is. */
static int translate(const char *p, size_t n, tok_buf *out)
{
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[++i];
            const char *body = e == 's' || e == 'S' ? onig_space : e == 'w' || e == 'W' ? onig_word : NULL;
            if (e == 'Q') {
                const char *end = NULL;
                for (size_t k = i + 1; k + 1 < n && !end; k++)
                    if (p[k] == '\\' && p[k + 1] == 'E')
                        end = p + k + 2;
                size_t stop = end ? (size_t)(end - p) : n;
                if (tok_buf_put(out, p + i - 1, stop - (i - 1)))
                    return KV_ENOMEM;
                i = stop - 1;
                continue;
            }
            int negated = e == 'S' || e == 'W';
            if (body && in_class && !negated) {
                if (tok_buf_put(out, body, strlen(body)))
                    return KV_ENOMEM;
            } else if (body && !in_class) {
                if (tok_buf_put(out, negated ? "[^" : "[", negated ? 2 : 1) || tok_buf_put(out, body, strlen(body)) ||
                    tok_buf_put(out, "]", 1))
                    return KV_ENOMEM;
            } else if (tok_buf_put(out, p + i - 1, 2)) {
                return KV_ENOMEM;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            if (tok_buf_put(out, p + i, 1))
                return KV_ENOMEM;
            /* A ']' right after '[' or '[^' is a member, not the end. */
            if (i + 1 < n && p[i + 1] == '^' && tok_buf_put(out, p + ++i, 1))
                return KV_ENOMEM;
            if (i + 1 < n && p[i + 1] == ']' && tok_buf_put(out, p + ++i, 1))
                return KV_ENOMEM;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') { /* [:alpha:] */
            const char *end = NULL;
            for (size_t k = i + 2; k + 1 < n && !end; k++)
                if (p[k] == ':' && p[k + 1] == ']')
                    end = p + k + 2;
            if (end) {
                if (tok_buf_put(out, p + i, (size_t)(end - (p + i))))
                    return KV_ENOMEM;
                i = (size_t)(end - p) - 1;
                continue;
            }
        }
        if (in_class && c == ']')
            in_class = 0;
        if (tok_buf_put(out, p + i, 1))
            return KV_ENOMEM;
    }
    return 0;
}

int tok_regex_compile(const char *pat, size_t len, int literal, pcre2_code **out, const char *where,
                      kv_err *err)
{
    tok_buf t = {0};
    if (!literal && translate(pat, len, &t)) {
        free(t.p);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = literal ? pcre2_compile((PCRE2_SPTR)(pat ? pat : ""), len, PCRE2_UTF | PCRE2_LITERAL, &code,
                                             &off, NULL)
                             : pcre2_compile((PCRE2_SPTR)(t.p ? t.p : ""), t.len, PCRE2_UTF | PCRE2_UCP, &code,
                                             &off, NULL);
    free(t.p);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return kv_err_set(err, code == PCRE2_ERROR_HEAPLIMIT || code == PCRE2_ERROR_NOMEMORY ? KV_ENOMEM : KV_EFORMAT,
                          "%s: bad regex \"%.*s\": %s", where, len < 80 ? (int)len : 80, pat ? pat : "",
                          (const char *)msg);
    }
    /* JIT is an optimisation only: when unavailable pcre2_match interprets. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return 0;
}

static int match_at(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, size_t from)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter uses the heap */
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    return rc;
}

int tok_regex_matches(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, tok_spans *out,
                      kv_err *err)
{
    out->len = 0;
    size_t from = 0;
    int have_last = 0;
    size_t last_end = 0;
    while (from <= n) {
        int rc = match_at(re, md, s ? s : "", n, from);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return kv_err_set(err, rc == PCRE2_ERROR_NOMEMORY ? KV_ENOMEM : KV_ERANGE, "regex match failed: %s",
                              (const char *)msg);
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t m0 = ov[0], m1 = ov[1];
        if (m1 < m0) /* \K can put the end before the start; Oniguruma has no \K */
            m1 = m0;
        if (m0 == m1 && have_last && last_end == m1) {
            if (from >= n)
                break;
            uint32_t cp;
            from += kv_utf8_next(s + from, n - from, &cp);
            continue;
        }
        if (tok_spans_push(out, m0, m1 - m0))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        from = m1;
        have_last = 1;
        last_end = m1;
    }
    return 0;
}

int tok_regex_replace(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, const char *to,
                      size_t to_len, tok_buf *out, tok_spans *scratch, kv_err *err)
{
    int rc = tok_regex_matches(re, md, s, n, scratch, err);
    if (rc)
        return rc;
    out->len = 0;
    size_t last = 0;
    for (size_t i = 0; i < scratch->len; i++) {
        const tok_span *m = &scratch->p[i];
        if (tok_buf_put(out, s + last, m->off - last) || tok_buf_put(out, to, to_len))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        last = m->off + m->len;
    }
    if (tok_buf_put(out, s ? s + last : "", n - last))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    return 0;
}
