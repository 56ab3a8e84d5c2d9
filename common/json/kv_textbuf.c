#include "kv_textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kv_textbuf_init(kv_textbuf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

void kv_textbuf_free(kv_textbuf *b)
{
    free(b->data);
    kv_textbuf_init(b);
}

/* Makes room for `extra` more bytes plus the NUL; returns 0 when it cannot. */
static int reserve(kv_textbuf *b, size_t extra)
{
    if (b->failed)
        return 0;
    if (extra > (size_t)-1 / 2 - b->len) {
        b->failed = 1;
        return 0;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

void kv_textbuf_append(kv_textbuf *b, const char *s, size_t len)
{
    if (!reserve(b, len))
        return;
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void kv_textbuf_puts(kv_textbuf *b, const char *s) { kv_textbuf_append(b, s, strlen(s)); }

void kv_textbuf_printf(kv_textbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        kv_textbuf_append(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kv_textbuf_json_string(kv_textbuf *b, const char *s, size_t len)
{
    kv_textbuf_append(b, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        kv_textbuf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': kv_textbuf_append(b, "\\\"", 2); break;
        case '\\': kv_textbuf_append(b, "\\\\", 2); break;
        case '\n': kv_textbuf_append(b, "\\n", 2); break;
        case '\r': kv_textbuf_append(b, "\\r", 2); break;
        case '\t': kv_textbuf_append(b, "\\t", 2); break;
        case '\b': kv_textbuf_append(b, "\\b", 2); break;
        case '\f': kv_textbuf_append(b, "\\f", 2); break;
        default: kv_textbuf_printf(b, "\\u%04x", c); break;
        }
    }
    kv_textbuf_append(b, s + run, len - run);
    kv_textbuf_append(b, "\"", 1);
}
