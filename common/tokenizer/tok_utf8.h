/* Unicode white space, as the tokenizer needs it. Its UTF-8 helpers are kv_utf8.h's. */
#ifndef KV_TOK_UTF8_H
#define KV_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "kv_utf8.h"

/* Unicode White_Space, as Rust's char::is_whitespace (used by added-token lstrip/rstrip). */
int tok_is_space(uint32_t cp);

#endif
