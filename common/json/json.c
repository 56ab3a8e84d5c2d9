#include "json.h"
#include "kv_utf8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 256
#define ARENA_CHUNK (1u << 20)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
} arena_chunk;

struct json_doc {
    arena_chunk *chunks;
    json_value root;
};

typedef struct {
    const char *p, *end, *start;
    json_doc *doc;
    kv_err *err;
    int failed;
} parser;

static void *arena_alloc(json_doc *doc, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = doc->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = doc->chunks;
        doc->chunks = c;
    }
    void *out = (char *)c->data + c->used;
    c->used += n;
    return out;
}

static int fail(parser *ps, int code, const char *what)
{
    if (!ps->failed) {
        ps->failed = 1;
        kv_err_set(ps->err, code, "JSON %s at byte %zu", what, (size_t)(ps->p - ps->start));
    }
    return -1;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return fail(ps, KV_EFORMAT, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return fail(ps, KV_EFORMAT, "bad hex digit in \\u escape");
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* ps->p is just past the opening quote. Decoded length never exceeds raw length. */
static int parse_string(parser *ps, const char **out, size_t *out_len)
{
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\') q++;
        q++;
    }
    if (q >= ps->end)
        return fail(ps, KV_EFORMAT, "unterminated string");
    char *buf = arena_alloc(ps->doc, (size_t)(q - ps->p) + 1);
    if (!buf)
        return fail(ps, KV_ENOMEM, "out of memory");
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20)
            return fail(ps, KV_EFORMAT, "control character in string");
        if (c != '\\') { buf[n++] = (char)c; continue; }
        if (ps->p >= ps->end)
            return fail(ps, KV_EFORMAT, "truncated escape");
        char e = *ps->p++;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(ps, &cp)) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                    ps->p += 2;
                    if (hex4(ps, &lo)) return -1;
                    if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    else return fail(ps, KV_EFORMAT, "unpaired surrogate");
                } else {
                    return fail(ps, KV_EFORMAT, "unpaired surrogate");
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(ps, KV_EFORMAT, "unpaired surrogate");
            }
            n += kv_utf8_put(buf + n, cp);
            break;
        }
        default: return fail(ps, KV_EFORMAT, "bad escape");
        }
    }
    ps->p++; /* closing quote */
    /* Escapes decode to valid UTF-8 (surrogates are paired above); raw bytes may not be. */
    if (kv_utf8_invalid_at(buf, n) != n)
        return fail(ps, KV_EFORMAT, "string is not valid UTF-8");
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

static int parse_number(parser *ps, double *out)
{
    const char *s = ps->p;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    if (ps->p >= ps->end) return fail(ps, KV_EFORMAT, "bad number");
    if (*ps->p == '0') ps->p++;
    else if (*ps->p >= '1' && *ps->p <= '9') while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    else return fail(ps, KV_EFORMAT, "bad number");
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, KV_EFORMAT, "bad number");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, KV_EFORMAT, "bad number");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    char tmp[64];
    size_t n = (size_t)(ps->p - s);
    if (n >= sizeof tmp) return fail(ps, KV_EFORMAT, "number too long");
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    return 0;
}

static int literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
        return fail(ps, KV_EFORMAT, "unexpected token");
    ps->p += n;
    return 0;
}

static int parse_value(parser *ps, json_value *v, int depth);

/* Children are parsed into a growing heap buffer, then moved into the arena. */
static int parse_container(parser *ps, json_value *v, int depth, int is_object)
{
    size_t elem = is_object ? sizeof(json_member) : sizeof(json_value);
    size_t n = 0, cap = 8;
    char *tmp = malloc(cap * elem);
    if (!tmp) return fail(ps, KV_ENOMEM, "out of memory");
    char close = is_object ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
    } else {
        for (;;) {
            if (n == cap) {
                cap *= 2;
                char *t2 = realloc(tmp, cap * elem);
                if (!t2) { free(tmp); return fail(ps, KV_ENOMEM, "out of memory"); }
                tmp = t2;
            }
            skip_ws(ps);
            json_value *child;
            if (is_object) {
                json_member *m = (json_member *)(tmp + n * elem);
                if (ps->p >= ps->end || *ps->p != '"') { free(tmp); return fail(ps, KV_EFORMAT, "expected object key"); }
                ps->p++;
                if (parse_string(ps, &m->key, &m->key_len)) { free(tmp); return -1; }
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') { free(tmp); return fail(ps, KV_EFORMAT, "expected ':'"); }
                ps->p++;
                child = &m->value;
            } else {
                child = (json_value *)(tmp + n * elem);
            }
            if (parse_value(ps, child, depth + 1)) { free(tmp); return -1; }
            n++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == close) { ps->p++; break; }
            free(tmp);
            return fail(ps, KV_EFORMAT, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    void *dst = NULL;
    if (n) {
        dst = arena_alloc(ps->doc, n * elem);
        if (!dst) { free(tmp); return fail(ps, KV_ENOMEM, "out of memory"); }
        memcpy(dst, tmp, n * elem);
    }
    free(tmp);
    if (is_object) { v->type = JSON_OBJECT; v->u.obj.members = dst; v->u.obj.n = n; }
    else { v->type = JSON_ARRAY; v->u.arr.items = dst; v->u.arr.n = n; }
    return 0;
}

static int parse_value(parser *ps, json_value *v, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return fail(ps, KV_EFORMAT, "nesting too deep");
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps, KV_EFORMAT, "unexpected end of input");
    switch (*ps->p) {
    case '{': return parse_container(ps, v, depth, 1);
    case '[': return parse_container(ps, v, depth, 0);
    case '"':
        ps->p++;
        v->type = JSON_STRING;
        return parse_string(ps, &v->u.str.s, &v->u.str.len);
    case 't': v->type = JSON_BOOL; v->u.boolean = 1; return literal(ps, "true");
    case 'f': v->type = JSON_BOOL; v->u.boolean = 0; return literal(ps, "false");
    case 'n': v->type = JSON_NULL; return literal(ps, "null");
    default:
        v->type = JSON_NUMBER;
        return parse_number(ps, &v->u.number);
    }
}

json_doc *json_parse(const char *text, size_t len, kv_err *err)
{
    json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    parser ps = {.p = text, .end = text + len, .start = text, .doc = doc, .err = err};
    if (parse_value(&ps, &doc->root, 0) == 0) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            fail(&ps, KV_EFORMAT, "trailing characters");
    }
    if (ps.failed) {
        json_doc_free(doc);
        return NULL;
    }
    return doc;
}

void json_doc_free(json_doc *doc)
{
    if (!doc) return;
    arena_chunk *c = doc->chunks;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(doc);
}

const json_value *json_root(const json_doc *doc) { return &doc->root; }

const json_value *json_get(const json_value *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t i = 0; i < obj->u.obj.n; i++) {
        const json_member *m = &obj->u.obj.members[i];
        if (m->key_len == kl && !memcmp(m->key, key, kl)) return &m->value;
    }
    return NULL;
}

const char *json_type_name(json_type t)
{
    static const char *names[] = {"null", "bool", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? names[t] : "?";
}

int json_get_number(const json_value *obj, const char *key, double *out)
{
    const json_value *v = json_get(obj, key);
    if (!v || v->type != JSON_NUMBER) return 0;
    *out = v->u.number;
    return 1;
}

int json_get_int(const json_value *obj, const char *key, int64_t *out)
{
    double d;
    if (!json_get_number(obj, key, &d) || d != floor(d) || fabs(d) > 9.0e15) return 0;
    *out = (int64_t)d;
    return 1;
}

int json_get_bool(const json_value *obj, const char *key, int *out)
{
    const json_value *v = json_get(obj, key);
    if (!v || v->type != JSON_BOOL) return 0;
    *out = v->u.boolean;
    return 1;
}

const char *json_get_string(const json_value *obj, const char *key)
{
    const json_value *v = json_get(obj, key);
    return v && v->type == JSON_STRING ? v->u.str.s : NULL;
}
