/* Fuzz target of the JSON parser (common/json), which reads every tokenizer.json, config.json
 * and safetensors header the service loads. json_parse must never crash or read past its
 * input; a refusal returns NULL with a message that names a byte offset inside the input;
 * what it accepts must be a tree the rest of the code can walk blindly: each string
 * NUL-terminated at its length and valid UTF-8 (RFC 8259), no NaN, no value
 * nested deeper than the parser's limit, and json_get and the typed getters agreeing with the
 * members (the first one, for a duplicated key). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kv_fuzz_target.h"

/* json.c's JSON_MAX_DEPTH (private): the root is at depth 0, and a value deeper than this is
 * refused. Checked at both sides of the boundary, so a change there shows up here. */
#define MAX_DEPTH 256
/* json_get scans linearly: past this many members an object's lookups are checked on a
 * sample, so that a few KB of "":0 pairs stay a few milliseconds. */
#define MAX_LOOKUPS 256

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), written apart from
 * kv_utf8.c, which json_parse uses: an oracle of its own. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || len > n - i)
            return 0;
        if (len > 1) {
            unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
            if (s[i + 1] < lo || s[i + 1] > hi)
                return 0;
            for (size_t k = 2; k < len; k++)
                if ((s[i + k] & 0xC0) != 0x80)
                    return 0;
        }
        i += len;
    }
    return 1;
}

static void check_error(const kv_err *err, size_t size)
{
    KV_FUZZ_REQUIRE(err->code < 0 && err->msg[0], "a refused document left no error (code %d)", err->code);
    if (err->code == KV_ENOMEM)
        return;
    const char *at = strstr(err->msg, "byte ");
    KV_FUZZ_REQUIRE(at && at[5] >= '0' && at[5] <= '9', "no byte offset in \"%s\"", err->msg);
    KV_FUZZ_REQUIRE(strtoull(at + 5, NULL, 10) <= size, "\"%s\" points past the %zu-byte input", err->msg, size);
}

static void check_string(const char *s, size_t len, const char *what)
{
    KV_FUZZ_REQUIRE(s, "a %s without bytes", what);
    KV_FUZZ_REQUIRE(s[len] == '\0', "a %s of %zu bytes is not NUL-terminated there", what, len);
    KV_FUZZ_REQUIRE(utf8_valid((const unsigned char *)s, len), "a %s is not UTF-8", what);
}

/* json_get takes a C string, so a key holding U+0000 is looked up as its prefix: the answer
 * must be the first member whose whole key is that prefix, or NULL. */
static void check_lookup(const json_value *obj, const json_member *m)
{
    size_t kl = strlen(m->key);
    const json_value *want = NULL;
    for (size_t j = 0; j < obj->u.obj.n && !want; j++)
        if (obj->u.obj.members[j].key_len == kl && !memcmp(obj->u.obj.members[j].key, m->key, kl))
            want = &obj->u.obj.members[j].value;
    const json_value *got = json_get(obj, m->key);
    KV_FUZZ_REQUIRE(got == want, "json_get(\"%s\") is not the first member with that key", m->key);
    double d;
    int64_t i;
    int b, is_num = got && got->type == JSON_NUMBER, is_bool = got && got->type == JSON_BOOL;
    int ok = json_get_number(obj, m->key, &d);
    KV_FUZZ_REQUIRE(ok == is_num && (!ok || !memcmp(&d, &got->u.number, sizeof d)), "json_get_number(\"%s\")", m->key);
    ok = json_get_int(obj, m->key, &i);
    KV_FUZZ_REQUIRE(!ok || (is_num && (double)i == got->u.number), "json_get_int(\"%s\") gave %lld", m->key,
                    (long long)i);
    KV_FUZZ_REQUIRE(ok || !is_num || fabs(got->u.number) > 1e15 || got->u.number != floor(got->u.number),
                    "json_get_int(\"%s\") refused the integer %.17g", m->key, got->u.number);
    ok = json_get_bool(obj, m->key, &b);
    KV_FUZZ_REQUIRE(ok == is_bool && (!ok || b == got->u.boolean), "json_get_bool(\"%s\")", m->key);
    const char *s = json_get_string(obj, m->key);
    KV_FUZZ_REQUIRE(s == (got && got->type == JSON_STRING ? got->u.str.s : NULL), "json_get_string(\"%s\")", m->key);
}

static void walk(const json_value *v, int depth)
{
    KV_FUZZ_REQUIRE(depth <= MAX_DEPTH, "a value at depth %d was accepted", depth);
    KV_FUZZ_REQUIRE(strcmp(json_type_name(v->type), "?"), "a value of type %d", (int)v->type);
    if (v->type != JSON_OBJECT)
        KV_FUZZ_REQUIRE(!json_get(v, ""), "json_get on a %s found a member", json_type_name(v->type));
    switch (v->type) {
    case JSON_NULL:
    case JSON_BOOL: break;
    case JSON_NUMBER: /* the grammar has no NaN: only overflow (inf) can leave the reals */
        KV_FUZZ_REQUIRE(!isnan(v->u.number), "a number parsed to NaN");
        break;
    case JSON_STRING:
        check_string(v->u.str.s, v->u.str.len, "string");
        break;
    case JSON_ARRAY:
        KV_FUZZ_REQUIRE(!v->u.arr.n || v->u.arr.items, "%zu items at NULL", v->u.arr.n);
        for (size_t i = 0; i < v->u.arr.n; i++)
            walk(&v->u.arr.items[i], depth + 1);
        break;
    case JSON_OBJECT: {
        size_t n = v->u.obj.n, step = n > MAX_LOOKUPS ? n / MAX_LOOKUPS + 1 : 1;
        KV_FUZZ_REQUIRE(!n || v->u.obj.members, "%zu members at NULL", n);
        for (size_t i = 0; i < n; i++) {
            const json_member *m = &v->u.obj.members[i];
            check_string(m->key, m->key_len, "key");
            walk(&m->value, depth + 1);
            if (i % step == 0)
                check_lookup(v, m);
        }
        break;
    }
    }
}

static void check_depth_limit(void)
{
    /* MAX_DEPTH + 1 nested arrays put the innermost (empty) one at depth MAX_DEPTH. */
    static char doc[2 * (MAX_DEPTH + 2)];
    for (size_t levels = MAX_DEPTH + 1; levels <= MAX_DEPTH + 2; levels++) {
        memset(doc, '[', levels);
        memset(doc + levels, ']', levels);
        kv_err err = {0};
        json_doc *d = json_parse(doc, 2 * levels, &err);
        KV_FUZZ_REQUIRE(!d == (levels > MAX_DEPTH + 1), "%zu nested arrays: %s", levels, d ? "accepted" : err.msg);
        if (d)
            walk(json_root(d), 0);
        else
            check_error(&err, 2 * levels);
        json_doc_free(d);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int checked_limit;
    if (!checked_limit) {
        checked_limit = 1;
        check_depth_limit();
        KV_FUZZ_REQUIRE(!json_get(NULL, "a"), "json_get(NULL) found a member");
    }
    kv_err err = {0};
    json_doc *doc = json_parse((const char *)data, size, &err);
    if (!doc) {
        check_error(&err, size);
        return 0;
    }
    walk(json_root(doc), 0);
    json_doc_free(doc);
    return 0;
}

/* ---- the generator: documents mostly well-formed, with what breaks parsers ---- */


/* A piece of a document is broken now and then: a parse stops at the first error, so
 * mostly valid documents reach deeper into the parser. */
static int broken(kv_fuzz_rng *r) { return !kv_fuzz_below(r, 60); }

/* A number, a literal or (always, for a key) a string. */
static void gen_scalar(kv_fuzz_rng *r, kv_fuzz_out *o, int key)
{
    /* Edges of double (overflow to inf, underflow, subnormal, 2^53 + 1) and of the parser's
     * 64-character number buffer. */
    static const char *const edge[] = {
        "-0", "0.0", "1e308", "1.7976931348623157e308", "1e309", "-1e999", "5e-324", "1e-400",
        "2.2250738585072014e-308", "9007199254740993", "9e15", "-9000000000000001", "1E+2", "1e-0", "null", "true",
        "false", "123456789012345678901234567890123456789012345678901234567890123",
        "1234567890123456789012345678901234567890123456789012345678901234"};
    static const char *const piece[] = {
        "a", "model", " ", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u2581", "\\u0000", "\\u00e9",
        "\\uFFFD", "\\ud83e\\udd99", "\\uDBFF\\uDFFF", "\\uD800\\uDC00", "\xc3\xa9", "\xe2\x96\x81", "\xf0\x9f\xa6\x99",
        "<0x0A>", "\xe6\x97\xa5"};
    /* numbers and literals the grammar refuses, unpaired surrogates, short \u, bad escapes,
     * a raw control character, bytes that are not UTF-8 */
    static const char *const bad[] = {"01", "1.", ".5", "-", "1e", "+1", "0x10", "-.0", "NaN", "nul", "True",
                                      "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\ud800x\"", "\"\\u12\"",
                                      "\"\\x\"", "\"\x01\"", "\"\xff\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\\"};
    char tmp[64];
    switch (broken(r) ? 9 : key ? 3 : kv_fuzz_below(r, 5)) {
    case 0: snprintf(tmp, sizeof tmp, "%d", kv_fuzz_i32(r)); break;
    case 1:
        snprintf(tmp, sizeof tmp, "%d.%ue%+d", (int)kv_fuzz_below(r, 2000) - 1000, kv_fuzz_u32(r),
                 (int)kv_fuzz_below(r, 700) - 350);
        break;
    case 2: kv_fuzz_out_str(o, KV_FUZZ_PICK(r, edge)); return;
    case 9: kv_fuzz_out_str(o, KV_FUZZ_PICK(r, bad)); return;
    default: /* a string: escapes, raw UTF-8, any code point but the surrogates as \u */
        kv_fuzz_out_str(o, "\"");
        for (int n = (int)kv_fuzz_below(r, 8); n > 0; n--) {
            snprintf(tmp, sizeof tmp, "\\u%04x", kv_fuzz_below(r, kv_fuzz_below(r, 2) ? 0x800 : 0xD800));
            kv_fuzz_out_str(o, kv_fuzz_below(r, 3) ? KV_FUZZ_PICK(r, piece) : tmp);
        }
        snprintf(tmp, sizeof tmp, "\"");
    }
    kv_fuzz_out_str(o, tmp);
}

static void gen_value(kv_fuzz_rng *r, kv_fuzz_out *o, int depth)
{
    /* Keys from tokenizer.json, few enough that duplicates are common. */
    static const char *const key[] = {"\"model\"", "\"type\"", "\"vocab\"", "\"merges\"", "\"added_tokens\"", "\"id\"",
                                      "\"content\"", "\"special\"", "\"String\"", "\"\"", "\"\\u2581\"", "\"a\\u0000b\""};
    static const char *const fragment[] = {
        "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]}",
        "{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
        "\"vocab\":{\"<unk>\":0,\"<0x00>\":3,\"\\u2581t\":259},\"merges\":[\"\\u2581 t\",[\"h\",\"e\"]]}",
        "[{\"id\":0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,\"special\":true}]",
        "{\"dtype\":\"F32\",\"shape\":[512,64],\"data_offsets\":[0,131072]}"};
    static const char *const ws[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    kv_fuzz_out_str(o, KV_FUZZ_PICK(r, ws));
    /* containers at the root, fewer further down and none once the buffer is nearly full */
    if (o->len + 64 > o->cap || (kv_fuzz_below(r, (unsigned)depth + 2) && (depth || !kv_fuzz_below(r, 8)))) {
        gen_scalar(r, o, 0);
    } else if (!kv_fuzz_below(r, 8)) {
        kv_fuzz_out_str(o, KV_FUZZ_PICK(r, fragment));
    } else {
        int object = (int)kv_fuzz_below(r, 2);
        kv_fuzz_out_str(o, object ? "{" : "[");
        for (int n = (int)kv_fuzz_below(r, 9), i = 0; i < n; i++) {
            kv_fuzz_out_str(o, !i || broken(r) ? "" : ",");
            if (object) {
                kv_fuzz_out_str(o, KV_FUZZ_PICK(r, ws));
                if (kv_fuzz_below(r, 3))
                    kv_fuzz_out_str(o, KV_FUZZ_PICK(r, key));
                else
                    gen_scalar(r, o, 1);
                kv_fuzz_out_str(o, KV_FUZZ_PICK(r, ws));
                kv_fuzz_out_str(o, broken(r) ? "" : ":");
            }
            gen_value(r, o, depth + 1);
        }
        kv_fuzz_out_str(o, KV_FUZZ_PICK(r, ws));
        kv_fuzz_out_str(o, broken(r) ? "" : object ? "}" : "]");
    }
    kv_fuzz_out_str(o, KV_FUZZ_PICK(r, ws));
}

size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    kv_fuzz_out o = {buf, cap, 0};
    if (!kv_fuzz_below(r, 10)) { /* around the nesting limit, arrays and objects mixed */
        int levels = MAX_DEPTH - 6 + (int)kv_fuzz_below(r, 12), objects = (int)kv_fuzz_below(r, 2);
        for (int i = 0; i < levels; i++)
            kv_fuzz_out_str(&o, objects && i % 2 ? "{\"a\":" : "[");
        gen_value(r, &o, 7);
        for (int i = levels - 1; i >= 0; i--)
            kv_fuzz_out_str(&o, objects && i % 2 ? "}" : "]");
    } else {
        gen_value(r, &o, 0);
    }
    if (broken(r))
        kv_fuzz_out_str(&o, kv_fuzz_below(r, 2) ? "," : "}");
    return o.len;
}
