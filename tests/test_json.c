#include "json.h"
#include "kv_test.h"

static json_doc *parse(const char *s, kv_err *err) { return json_parse(s, strlen(s), err); }

static void test_values(void)
{
    kv_err err;
    json_doc *d = parse(" {\"a\": 1.5e2, \"b\": [true, false, null], \"s\": \"x\\u00e9\\ud83d\\ude00\\n\", "
                        "\"n\": -0, \"o\": {}} ", &err);
    CHECK(d != NULL);
    if (!d) return;
    const json_value *r = json_root(d);
    double a;
    CHECK(json_get_number(r, "a", &a) && a == 150.0);
    const json_value *b = json_get(r, "b");
    CHECK(b && b->type == JSON_ARRAY && b->u.arr.n == 3 && b->u.arr.items[2].type == JSON_NULL);
    const char *s = json_get_string(r, "s");
    CHECK(s && !strcmp(s, "x\xc3\xa9\xf0\x9f\x98\x80\n"));
    int64_t i;
    CHECK(json_get_int(r, "n", &i) && i == 0);
    CHECK(!json_get_int(r, "a", &i) || i == 150);
    CHECK(json_get(r, "missing") == NULL);
    const json_value *o = json_get(r, "o");
    CHECK(o && o->type == JSON_OBJECT && o->u.obj.n == 0);
    json_doc_free(d);
}

static void test_errors(void)
{
    const char *bad[] = {"", "{", "[1,]", "{\"a\" 1}", "\"abc", "01", "1.", "-", "tru", "[1] x",
                         "\"\\ud800\"", "\"\\q\"", "{\"a\":1,}", "\"a\x01\"", "[\"\\u12\"]",
                         /* raw bytes that are not UTF-8: a lone continuation byte, an overlong
                          * '/', a surrogate, a truncated sequence, in a value and in a key */
                         "\"\x80\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "[\"\xe2\x96\"]", "{\"\xff\":1}"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        kv_err err = {0};
        json_doc *d = parse(bad[k], &err);
        CHECK_MSG(d == NULL && err.code == KV_EFORMAT, "input %zu '%s' accepted", k, bad[k]);
        json_doc_free(d);
    }
    kv_err ok;
    json_doc *d = parse("{\"\xe2\x96\x81\": \"\xf0\x9f\xa6\x99\"}", &ok); /* raw UTF-8 is kept as it is */
    CHECK(d && !strcmp(json_get_string(json_root(d), "\xe2\x96\x81"), "\xf0\x9f\xa6\x99"));
    json_doc_free(d);
    /* Deep nesting must be refused, not overflow the stack. */
    char deep[4000];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = '\0';
    kv_err err;
    CHECK(parse(deep, &err) == NULL && strstr(err.msg, "deep"));
}

int main(void)
{
    test_values();
    test_errors();
    return kv_test_result();
}
