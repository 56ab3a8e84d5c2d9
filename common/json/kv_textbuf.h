/* A growable text buffer: the one JSON writer (config.json, safetensors headers, tokenizer.json,
 * status replies, chat-template tojson).
 * Allocation failure is sticky: appends after it do nothing and kv_textbuf_failed() says so,
 * so a writer can build a whole document and check once. */
#ifndef KV_TEXTBUF_H
#define KV_TEXTBUF_H

#include <stddef.h>

typedef struct kv_textbuf {
    char *data;     /* NUL-terminated once anything was appended */
    size_t len, cap;
    int failed;     /* an allocation failed: the contents are incomplete */
} kv_textbuf;

void kv_textbuf_init(kv_textbuf *b);
void kv_textbuf_free(kv_textbuf *b);
void kv_textbuf_append(kv_textbuf *b, const char *s, size_t len);
void kv_textbuf_puts(kv_textbuf *b, const char *s);
void kv_textbuf_printf(kv_textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0..len) as a quoted JSON string escaped exactly as Python's
 * json.dumps(ensure_ascii=False) does (\" \\ \n \r \t \b \f, other control bytes as \u00xx);
 * other UTF-8 passes through unchanged. */
void kv_textbuf_json_string(kv_textbuf *b, const char *s, size_t len);
static inline int kv_textbuf_failed(const kv_textbuf *b) { return b->failed; }

#endif
