#include "tok_utf8.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <utf8proc.h>

#include "kv_err.h"

int tok_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

int tok_is_numeric(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int tok_is_punctuation(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
               (cp >= 0x7B && cp <= 0x7E);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

int tok_unicode_normalize(tok_unicode_form form, const char *s, size_t n, tok_buf *out)
{
    out->len = 0;
    if (n == 0)
        return tok_buf_put(out, "", 0);
    if (n > (size_t)PTRDIFF_MAX / 8)
        return KV_ENOMEM;
    int opt = UTF8PROC_STABLE;
    opt |= form == TOK_NFC || form == TOK_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
    if (form == TOK_NFKC || form == TOK_NFKD)
        opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, (utf8proc_option_t)opt);
    if (len < 0) /* the input is valid UTF-8, so only memory can fail */
        return KV_ENOMEM;
    int rc = tok_buf_put(out, dst, (size_t)len);
    free(dst);
    return rc;
}

int tok_lowercase(const char *s, size_t n, tok_buf *out)
{
    out->len = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = kv_utf8_next(s + i, n - i, &cp);
        char tmp[8];
        size_t len;
        if (cp == 0x130) { /* the one unconditional multi-character lowercase mapping */
            len = kv_utf8_put(tmp, 'i');
            len += kv_utf8_put(tmp + len, 0x307);
        } else {
            len = kv_utf8_put(tmp, cp < 0x80 ? (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp)
                                             : (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
        }
        if (tok_buf_put(out, tmp, len))
            return KV_ENOMEM;
        i += k;
    }
    return tok_buf_put(out, "", 0);
}
