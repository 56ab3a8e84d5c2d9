/* A small JSON DOM parser (RFC 8259) for config.json, tokenizer.json and
 * safetensors headers. All nodes and strings live in one arena owned by the
 * json_doc; free it with json_doc_free. Strings are UTF-8, NUL-terminated,
 * with their byte length (they may contain NUL from \u0000). */
#ifndef KV_JSON_H
#define KV_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_type type;
    union {
        int boolean;
        double number;
        struct { const char *s; size_t len; } str;
        struct { json_value *items; size_t n; } arr;
        struct { json_member *members; size_t n; } obj;
    } u;
};

struct json_member {
    const char *key;
    size_t key_len;
    json_value value;
};

typedef struct json_doc json_doc;

/* Parses text[0..len). On error returns NULL and err says what and at which byte offset. */
json_doc *json_parse(const char *text, size_t len, kv_err *err);
void json_doc_free(json_doc *doc);
const json_value *json_root(const json_doc *doc);

/* Object member by key (linear scan; first match) or NULL. NULL-safe on obj. */
const json_value *json_get(const json_value *obj, const char *key);
const char *json_type_name(json_type t);

/* Typed getters: return 1 and store the value if key exists with the right type, else 0. */
int json_get_number(const json_value *obj, const char *key, double *out);
int json_get_int(const json_value *obj, const char *key, int64_t *out); /* integral numbers only */
int json_get_bool(const json_value *obj, const char *key, int *out);
const char *json_get_string(const json_value *obj, const char *key); /* NULL if absent/not string */

#endif
