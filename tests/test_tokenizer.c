/* Tokenizer tests. A synthetic SentencePiece-style tokenizer (written to a temp dir) covers
 * BPE, byte fallback, added tokens, streaming decode and malformed files without any model
 * data; the real Llama-2 / Llama-3 / stories260K tokenizers from the shared model dir are
 * checked against reference ids when present. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_file.h"
#include "kv_test.h"
#include "tokenizer.h"

static char tmp_dir[256];

static const char *write_tmp(const char *name, const char *content)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    kv_err err;
    if (kv_file_write_all(path, content, strlen(content), &err)) {
        fprintf(stderr, "cannot write %s: %s\n", path, err.msg);
        exit(1);
    }
    return path;
}

static void remove_tmp(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    remove(path);
}

/* Encodes text; returns the number of ids (or -1 on error) and copies up to cap of them. */
static long encode(const kv_tokenizer *tok, const char *text, int32_t *out, size_t cap)
{
    int32_t *ids;
    size_t n;
    kv_err err;
    if (kv_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err)) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        return -1;
    }
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = ids[i];
    free(ids);
    return (long)n;
}

static int ids_equal(const int32_t *a, long na, const int32_t *b, long nb)
{
    return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

#define CHECK_IDS(tok, text, ...)                                                            \
    do {                                                                                     \
        const int32_t exp_[] = {__VA_ARGS__};                                                \
        int32_t got_[256];                                                                   \
        long n_ = encode(tok, text, got_, 256);                                              \
        CHECK_MSG(ids_equal(got_, n_, exp_, (long)(sizeof exp_ / sizeof *exp_)),             \
                  "encode(\"%s\"): got %ld ids, first %d", text, n_, n_ > 0 ? got_[0] : -1); \
    } while (0)

static char *decode(const kv_tokenizer *tok, const int32_t *ids, size_t n)
{
    char *s;
    kv_err err;
    if (kv_tokenizer_decode(tok, ids, n, &s, &err)) {
        fprintf(stderr, "decode failed: %s\n", err.msg);
        return NULL;
    }
    return s;
}

/* encode -> decode must give the text back. */
static void check_round_trip(const kv_tokenizer *tok, const char *text)
{
    int32_t *ids;
    size_t n;
    kv_err err;
    int rc = kv_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err);
    CHECK_MSG(rc == 0, "encode(\"%s\"): %s", text, err.msg);
    if (rc)
        return;
    char *back = decode(tok, ids, n);
    CHECK_MSG(back && !strcmp(back, text), "round trip of \"%s\" gave \"%s\"", text, back ? back : "(null)");
    free(back);
    free(ids);
}

/* Streams ids through a detok primed with the first k; the continuation must be exactly the
 * tail of the whole decode. */
static void check_stream_priming(const kv_tokenizer *tok, const int32_t *ids, size_t n, size_t k)
{
    char *all = decode(tok, ids, n), *head = decode(tok, ids, k);
    kv_detok d;
    kv_detok_init(&d, tok);
    char piece[1024], cont[65536];
    size_t len = 0;
    kv_err err;
    for (size_t i = 0; i < k; i++)
        CHECK(kv_detok_push(&d, ids[i], piece, sizeof piece, &err) >= 0);
    if (d.n_pending) { /* the prompt ends inside a character: its decode shows U+FFFD there */
        free(all);
        free(head);
        return;
    }
    for (size_t i = k; i < n; i++) {
        int w = kv_detok_push(&d, ids[i], piece, sizeof piece, &err);
        CHECK(w >= 0);
        if (w > 0 && len + (size_t)w < sizeof cont) {
            memcpy(cont + len, piece, (size_t)w);
            len += (size_t)w;
        }
    }
    int w = kv_detok_flush(&d, piece, sizeof piece);
    CHECK(w >= 0);
    if (w > 0 && len + (size_t)w < sizeof cont) {
        memcpy(cont + len, piece, (size_t)w);
        len += (size_t)w;
    }
    cont[len] = '\0';
    CHECK(all && head);
    if (all && head) {
        size_t hl = strlen(head);
        CHECK_MSG(strlen(all) >= hl && !strcmp(all + hl, cont), "primed at %zu: got \"%s\", want \"%s\"", k, cont,
                  strlen(all) >= hl ? all + hl : "?");
    }
    free(all);
    free(head);
}

/* ---- synthetic SentencePiece-style tokenizer ------------------------------------------ */

/* ids: <unk> 0, <s> 1, </s> 2, <0x00>.. <0xFF> 3..258, ▁ 259, a 260, b 261, ▁a 262, ab 263,
 * ▁ab 264, é 265; added: <x> 300 (not special). */
static const char *write_spm(void)
{
    static char json[16384];
    size_t n = 0;
    n += (size_t)snprintf(json + n, sizeof json - n,
                          "{\"version\":\"1.0\",\"added_tokens\":["
                          "{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false},"
                          "{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
                          "{\"id\":2,\"content\":\"</s>\",\"special\":true,\"normalized\":false},"
                          "{\"id\":300,\"content\":\"<x>\",\"special\":false,\"normalized\":false}],"
                          "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
                          "{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                          "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
                          "\"pre_tokenizer\":null,"
                          "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
                          "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":\" \"},"
                          "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                          "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
                          "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
                          "\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{"
                          "\"<unk>\":0,\"<s>\":1,\"</s>\":2,");
    for (int b = 0; b < 256; b++)
        n += (size_t)snprintf(json + n, sizeof json - n, "\"<0x%02X>\":%d,", b, 3 + b);
    snprintf(json + n, sizeof json - n,
             "\"\\u2581\":259,\"a\":260,\"b\":261,\"\\u2581a\":262,\"ab\":263,\"\\u2581ab\":264,"
             "\"\\u00e9\":265},"
             "\"merges\":[[\"\\u2581\",\"a\"],\"a b\",[\"\\u2581a\",\"b\"]]}}");
    return write_tmp("spm.json", json);
}

static void test_synthetic_spm(void)
{
    kv_tokenizer *tok;
    kv_err err;
    int rc = kv_tokenizer_load(write_spm(), &tok, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc)
        return;
    CHECK_EQ_INT(kv_tokenizer_n_ids(tok), 301);
    CHECK_EQ_INT(kv_tokenizer_token_id(tok, "<s>"), 1);
    CHECK_EQ_INT(kv_tokenizer_token_id(tok, "<0x41>"), 3 + 0x41);
    CHECK_EQ_INT(kv_tokenizer_token_id(tok, "nope"), -1);
    CHECK(kv_tokenizer_is_special(tok, 1) && !kv_tokenizer_is_special(tok, 300) && !kv_tokenizer_is_special(tok, 260));
    CHECK(!kv_tokenizer_is_special(tok, -1) && !kv_tokenizer_is_special(tok, 301));

    CHECK_IDS(tok, "ab ab", 264, 264);
    CHECK_IDS(tok, "ba", 259, 261, 260);
    CHECK(encode(tok, "", NULL, 0) == 0);
    CHECK_IDS(tok, " ", 259, 259);
    CHECK_IDS(tok, "c\xc3\xa9", 259, 3 + 'c', 265);
    CHECK_IDS(tok, "\xe6\x97\xa5", 259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5); /* 日 by byte fallback */
    /* Added tokens split the text; each side is normalized (gets its ▁) on its own. */
    CHECK_IDS(tok, "a<s>b<x>", 262, 1, 259, 261, 300);
    CHECK_IDS(tok, "<s>", 1);

    int32_t *ids;
    size_t n;
    CHECK(kv_tokenizer_encode(tok, "a\xff", 2, &ids, &n, &err) == KV_EINVAL);
    CHECK(kv_tokenizer_encode(tok, NULL, 0, &ids, &n, &err) == 0 && n == 0);
    free(ids);

    /* Decode: ▁ -> space, bytes fused into characters, the first space stripped, specials
     * skipped, non-special added tokens as their content. */
    const int32_t d1[] = {1, 264, 259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5, 300, 2};
    char *s = decode(tok, d1, 8);
    CHECK(s && !strcmp(s, "ab \xe6\x97\xa5<x>"));
    free(s);
    const int32_t d2[] = {3 + 0xE6, 3 + 'x', 3 + 0x97}; /* broken character, lone continuation */
    s = decode(tok, d2, 3);
    CHECK(s && !strcmp(s, "\xef\xbf\xbdx\xef\xbf\xbd"));
    free(s);
    const int32_t d3[] = {3 + 0xE6, 3 + 0x97}; /* truncated at the end */
    s = decode(tok, d3, 2);
    CHECK(s && !strcmp(s, "\xef\xbf\xbd"));
    free(s);
    const int32_t bad_id[] = {5, 301};
    CHECK(kv_tokenizer_decode(tok, bad_id, 2, &s, &err) == KV_ERANGE);

    /* Streaming: a multi-byte character appears only when its last byte arrives. */
    kv_detok d;
    kv_detok_init(&d, tok);
    char out[64];
    CHECK_EQ_INT(kv_detok_push(&d, 262, out, sizeof out, &err), 1); /* "▁a" -> "a" (strip) */
    CHECK(!strcmp(out, "a"));
    CHECK_EQ_INT(kv_detok_push(&d, 3 + 0xE6, out, sizeof out, &err), 0);
    CHECK_EQ_INT(kv_detok_push(&d, 3 + 0x97, out, sizeof out, &err), 0);
    CHECK(d.n_pending == 2);
    /* Too small a buffer fails without consuming the id. */
    CHECK(kv_detok_push(&d, 3 + 0xA5, out, 3, &err) == KV_ERANGE && d.n_pending == 2);
    CHECK_EQ_INT(kv_detok_push(&d, 3 + 0xA5, out, sizeof out, &err), 3);
    CHECK(!strcmp(out, "\xe6\x97\xa5"));
    CHECK_EQ_INT(kv_detok_push(&d, 1, out, sizeof out, &err), 0); /* special: nothing */
    CHECK_EQ_INT(kv_detok_push(&d, 259, out, sizeof out, &err), 1); /* not first: space kept */
    CHECK(!strcmp(out, " "));
    CHECK_EQ_INT(kv_detok_push(&d, 3 + 0xF0, out, sizeof out, &err), 0);
    CHECK(kv_detok_push(&d, 301, out, sizeof out, &err) == KV_ERANGE);
    CHECK(kv_detok_push(&d, -1, out, sizeof out, &err) == KV_ERANGE);
    CHECK_EQ_INT(kv_detok_flush(&d, out, sizeof out), 3);
    CHECK(!strcmp(out, "\xef\xbf\xbd"));
    CHECK_EQ_INT(kv_detok_flush(&d, out, sizeof out), 0);

    const int32_t prime[] = {264, 259, 259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5, 262, 300, 261};
    for (size_t k = 0; k <= 9; k++)
        check_stream_priming(tok, prime, 9, k);
    const int32_t lead_space[] = {1, 259, 259, 262};
    for (size_t k = 0; k <= 4; k++)
        check_stream_priming(tok, lead_space, 4, k);
    check_round_trip(tok, "ab  ba \xe6\x97\xa5 x<x>");
    check_round_trip(tok, " leading and trailing ");
    kv_tokenizer_free(tok);
    remove_tmp("spm.json");
}

/* ---- malformed files ------------------------------------------------------------------- */

static void expect_load_error(const char *json, int code, const char *needle)
{
    kv_tokenizer *tok = (kv_tokenizer *)(uintptr_t)1; /* must be reset to NULL */
    kv_err err = {0};
    int rc = kv_tokenizer_load(write_tmp("bad.json", json), &tok, &err);
    CHECK_MSG(rc == code && tok == NULL, "load of %s: rc %d (%s), want %d", json, rc, err.msg, code);
    CHECK_MSG(!needle || strstr(err.msg, needle), "error \"%s\" lacks \"%s\"", err.msg, needle);
    if (rc == 0)
        kv_tokenizer_free(tok);
}

#define MODEL_OK "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}"

static void test_malformed(void)
{
    kv_tokenizer *tok;
    kv_err err;
    char missing[512];
    snprintf(missing, sizeof missing, "%s/does-not-exist.json", tmp_dir);
    CHECK(kv_tokenizer_load(missing, &tok, &err) == KV_ENOTFOUND && strstr(err.msg, "does-not-exist"));

    /* A minimal valid file first, so the failures below are about what they change. */
    kv_err ok_err;
    CHECK_MSG(kv_tokenizer_load(write_tmp("ok.json", "{" MODEL_OK "}"), &tok, &ok_err) == 0, "%s", ok_err.msg);
    if (tok) {
        CHECK_IDS(tok, "abba", 2, 1, 0);
        int32_t *ids;
        size_t n;
        CHECK(kv_tokenizer_encode(tok, "c", 1, &ids, &n, &err) == 0 && n == 0); /* no unk: dropped */
        free(ids);
        kv_tokenizer_free(tok);
    }
    remove_tmp("ok.json");

    expect_load_error("", KV_EFORMAT, "JSON");
    expect_load_error("{\"model\": {", KV_EFORMAT, "JSON");
    expect_load_error("[1,2]", KV_EFORMAT, "top level");
    expect_load_error("{}", KV_EFORMAT, "model");
    expect_load_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", KV_EUNSUPPORTED, "WordPiece");
    expect_load_error("{\"model\":{\"type\":7}}", KV_EFORMAT, "model.type");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", KV_EFORMAT, "model.vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", KV_EFORMAT, "empty");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}", KV_EFORMAT, "\"a\"");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", KV_EFORMAT, "id");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1.5},\"merges\":[]}}", KV_EFORMAT, "id");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1e12},\"merges\":[]}}", KV_EFORMAT, "id");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", KV_EFORMAT,
                      "used by both");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}", KV_EFORMAT,
                      "duplicate");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", KV_EFORMAT, "merges");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a c\"]}}", KV_EFORMAT,
                      "\"c\" is not in the vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}", KV_EFORMAT,
                      "\"ab\" is not in the vocab");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}", KV_EFORMAT, "merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}", KV_EFORMAT, "merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\",1]]}}", KV_EFORMAT, "merges[0]");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}}",
                      KV_EFORMAT, "unk_token");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"byte_fallback\":1}}",
                      KV_EFORMAT, "byte_fallback");
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"dropout\":0.1}}",
                      KV_EUNSUPPORTED, "dropout");
    expect_load_error("{" MODEL_OK ",\"added_tokens\":{}}", KV_EFORMAT, "added_tokens");
    expect_load_error("{" MODEL_OK ",\"added_tokens\":[{\"id\":\"x\",\"content\":\"<s>\"}]}", KV_EFORMAT,
                      "added_tokens[0].id");
    expect_load_error("{" MODEL_OK ",\"added_tokens\":[{\"id\":3}]}", KV_EFORMAT, "content");
    expect_load_error("{" MODEL_OK ",\"added_tokens\":[{\"id\":3,\"content\":\"x\",\"special\":\"yes\"}]}", KV_EFORMAT,
                      "special");
    expect_load_error("{" MODEL_OK ",\"added_tokens\":[{\"id\":3,\"content\":\"x\"},{\"id\":4,\"content\":\"x\"}]}",
                      KV_EFORMAT, "duplicate");
    expect_load_error("{" MODEL_OK ",\"normalizer\":{\"type\":\"Precompiled\"}}", KV_EUNSUPPORTED,
                      "normalizer type 'Precompiled' is not supported");
    expect_load_error("{" MODEL_OK ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
                      "{\"type\":\"BertNormalizer\"}]}}", KV_EUNSUPPORTED, "normalizer.normalizers[1]");
    expect_load_error("{" MODEL_OK ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"(\"},"
                      "\"content\":\" \"}}", KV_EFORMAT, "regex");
    expect_load_error("{" MODEL_OK ",\"normalizer\":{\"type\":\"Strip\",\"strip_left\":1}}", KV_EFORMAT,
                      "strip_left");
    expect_load_error("{" MODEL_OK ",\"normalizer\":{\"type\":\"Prepend\"}}", KV_EFORMAT, "prepend");
    expect_load_error("{" MODEL_OK ",\"normalizer\":[]}", KV_EFORMAT, "normalizer");
    expect_load_error("{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}}", KV_EUNSUPPORTED,
                      "pre-tokenizer type 'BertPreTokenizer' is not supported");
    expect_load_error("{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                      "\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\",\"invert\":false}]}}",
                      KV_EFORMAT, "regex");
    expect_load_error("{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                      "\"behavior\":\"Dropped\",\"invert\":false}}", KV_EFORMAT, "behavior");
    expect_load_error("{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"}}",
                      KV_EFORMAT, "one character");
    expect_load_error("{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\","
                      "\"prepend_scheme\":\"sometimes\"}}", KV_EFORMAT, "prepend_scheme");
    expect_load_error("{" MODEL_OK ",\"post_processor\":{\"type\":\"Sequence\",\"processors\":["
                      "{\"type\":\"ByteLevel\"},{\"type\":\"PairOnly\"}]}}", KV_EUNSUPPORTED,
                      "post-processor type 'PairOnly' is not supported");
    expect_load_error("{" MODEL_OK ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                      "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}}],\"special_tokens\":{}}}", KV_EFORMAT,
                      "<s>");
    expect_load_error("{" MODEL_OK ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                      "{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":"
                      "{\"id\":\"<s>\",\"ids\":[3],\"tokens\":[\"<s>\"]}}}}", KV_EFORMAT, "ids[0]");
    expect_load_error("{" MODEL_OK ",\"post_processor\":{\"type\":\"BertProcessing\",\"cls\":[\"a\",0]}}",
                      KV_EFORMAT, "sep");
    expect_load_error("{" MODEL_OK ",\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":\"no\"}}",
                      KV_EFORMAT, "add_prefix_space");
    expect_load_error("{" MODEL_OK ",\"decoder\":{\"type\":\"WordPiece\"}}", KV_EUNSUPPORTED, "WordPiece");
    expect_load_error("{" MODEL_OK ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},"
                      "{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},\"content\":\"b\"}]}}",
                      KV_EUNSUPPORTED, "after Fuse or ByteLevel");
    expect_load_error("{" MODEL_OK ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},"
                      "{\"type\":\"Strip\",\"content\":\" \",\"start\":0,\"stop\":1}]}}", KV_EUNSUPPORTED, "Strip");
    expect_load_error("{" MODEL_OK ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":7}}", KV_EFORMAT, "decoders");
    remove_tmp("bad.json");

    CHECK(kv_tokenizer_load(NULL, &tok, &err) == KV_EINVAL);
    kv_tokenizer_free(NULL);
}

/* ---- tokenizer_config.json --------------------------------------------------------------- */

static void test_config(void)
{
    const char *path = write_tmp("cfg.json", "{" MODEL_OK "}");
    char json_path[512];
    snprintf(json_path, sizeof json_path, "%s", path);
    kv_tokenizer *tok = NULL;
    kv_err err = {0};

    /* No config, no post_processor: nothing is added, no BOS/EOS known. */
    CHECK_MSG(kv_tokenizer_load(json_path, &tok, &err) == 0, "%s", err.msg);
    if (tok) {
        int32_t *ids, eos[2];
        size_t n;
        CHECK(kv_tokenizer_encode_special(tok, "ab", 2, 1, &ids, &n, &err) == 0 && n == 1 && ids[0] == 2);
        free(ids);
        CHECK(kv_tokenizer_bos_id(tok) == -1 && !kv_tokenizer_adds_bos(tok) && !kv_tokenizer_bos_token(tok));
        CHECK(!kv_tokenizer_decides_specials(tok));
        CHECK(kv_tokenizer_eos_ids(tok, eos, 2) == 0 && !kv_tokenizer_eos_token(tok));
        CHECK(!strcmp(kv_tokenizer_token_str(tok, 2), "ab") && !kv_tokenizer_token_str(tok, 3) &&
              !kv_tokenizer_token_str(tok, -1));
        kv_tokenizer_free(tok);
    }

    /* add_bos_token / add_eos_token decide without a post_processor; tokens as strings or
     * AddedToken objects. */
    write_tmp("tokenizer_config.json", "{\"add_bos_token\": true, \"add_eos_token\": true, \"bos_token\": "
                                       "{\"__type\": \"AddedToken\", \"content\": \"a\"}, \"eos_token\": \"b\"}");
    CHECK_MSG(kv_tokenizer_load(json_path, &tok, &err) == 0, "%s", err.msg);
    if (tok) {
        int32_t *ids, eos[2] = {-1, -1};
        size_t n;
        CHECK(kv_tokenizer_encode_special(tok, "ab", 2, 1, &ids, &n, &err) == 0 && n == 3 && ids[0] == 0 &&
              ids[1] == 2 && ids[2] == 1);
        free(ids);
        CHECK(kv_tokenizer_encode_special(tok, "ab", 2, 0, &ids, &n, &err) == 0 && n == 1);
        free(ids);
        CHECK(kv_tokenizer_bos_id(tok) == 0 && kv_tokenizer_adds_bos(tok) && !strcmp(kv_tokenizer_bos_token(tok), "a"));
        CHECK(kv_tokenizer_decides_specials(tok));
        CHECK(kv_tokenizer_eos_ids(tok, eos, 2) == 1 && eos[0] == 1 && !strcmp(kv_tokenizer_eos_token(tok), "b"));
        kv_tokenizer_free(tok);
    }

    /* A post_processor, when there is one, alone decides what is added. */
    write_tmp("cfg.json", "{" MODEL_OK ",\"post_processor\":{\"type\":\"Sequence\",\"processors\":["
                          "{\"type\":\"ByteLevel\"},{\"type\":\"TemplateProcessing\",\"single\":["
                          "{\"SpecialToken\":{\"id\":\"b\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\","
                          "\"type_id\":0}}],\"special_tokens\":{\"b\":{\"id\":\"b\",\"ids\":[1],"
                          "\"tokens\":[\"b\"]}}}]}}");
    CHECK_MSG(kv_tokenizer_load(json_path, &tok, &err) == 0, "%s", err.msg);
    if (tok) {
        int32_t *ids;
        size_t n;
        CHECK(kv_tokenizer_encode_special(tok, "a", 1, 1, &ids, &n, &err) == 0 && n == 2 && ids[0] == 1 && ids[1] == 0);
        free(ids);
        CHECK(kv_tokenizer_bos_id(tok) == 0 && !kv_tokenizer_adds_bos(tok)); /* the config's BOS is not first */
        kv_tokenizer_free(tok);
    }

    static const struct { const char *cfg, *needle; } bad[] = {
        {"{", "tokenizer_config.json"},
        {"[]", "top level"},
        {"{\"add_bos_token\": \"yes\"}", "add_bos_token"},
        {"{\"bos_token\": 7}", "bos_token"},
        {"{\"eos_token\": {\"content\": false}}", "eos_token"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_tmp("tokenizer_config.json", bad[i].cfg);
        tok = (kv_tokenizer *)(uintptr_t)1;
        int rc = kv_tokenizer_load(json_path, &tok, &err);
        CHECK_MSG(rc == KV_EFORMAT && !tok && strstr(err.msg, bad[i].needle) && strstr(err.msg, "tokenizer_config.json"),
                  "config %s: rc %d, \"%s\"", bad[i].cfg, rc, err.msg);
        if (!rc)
            kv_tokenizer_free(tok);
    }
    remove_tmp("tokenizer_config.json");
    remove_tmp("cfg.json");
}

/* ---- real tokenizers ------------------------------------------------------------------- */

static kv_tokenizer *load_model_tok(const char *models, const char *rel)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", models, rel);
    kv_tokenizer *tok = NULL;
    kv_err err;
    CHECK_MSG(kv_tokenizer_load(path, &tok, &err) == 0, "%s", err.msg);
    return tok;
}

/* llama.cpp's test-tokenizer-0 vectors: inputs end at "\n__ggml_vocab_test__\n"; line i of
 * the .out file holds the ids (no BOS) of input i. */
static void test_llama_spm_vectors(const char *models, const kv_tokenizer *tok)
{
    char path[4096], *inp, *outp;
    size_t inp_len, out_len;
    kv_err err;
    snprintf(path, sizeof path, "%s/tokenizers/llama2/vectors/llama-spm.inp", models);
    if (kv_file_read_all(path, &inp, &inp_len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    snprintf(path, sizeof path, "%s/tokenizers/llama2/vectors/llama-spm.out", models);
    if (kv_file_read_all(path, &outp, &out_len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        free(inp);
        return;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const char *in = inp, *line = outp;
    int total = 0, passed = 0;
    for (const char *end; (end = strstr(in, sep)); in = end + sizeof sep - 1) {
        const char *eol = strchr(line, '\n');
        if (!eol) {
            CHECK_MSG(0, "llama-spm.out has fewer lines than inputs");
            break;
        }
        int32_t want[1024];
        long n_want = 0;
        for (char *p = (char *)line; p < eol && n_want < 1024;) {
            char *q;
            long v = strtol(p, &q, 10);
            if (q == p)
                break;
            want[n_want++] = (int32_t)v;
            p = q;
        }
        int32_t *ids;
        size_t n;
        total++;
        if (kv_tokenizer_encode(tok, in, (size_t)(end - in), &ids, &n, &err) == 0) {
            if (ids_equal(ids, (long)n, want, n_want))
                passed++;
            else
                fprintf(stderr, "llama-spm input %d (\"%.*s\") differs\n", total - 1, (int)(end - in), in);
            free(ids);
        } else {
            fprintf(stderr, "llama-spm input %d: %s\n", total - 1, err.msg);
        }
        line = eol + 1;
    }
    fprintf(stderr, "llama-spm vectors: %d/%d passed\n", passed, total);
    CHECK(total == 46);
    CHECK_EQ_INT(passed, total);
    free(inp);
    free(outp);
}

static const char *const round_trip_texts[] = {
    "Hello world",
    " Hello world",
    "Hello, y'all! How are you \xf0\x9f\x98\x81 ?",
    "I'm sure I'll see you, you've said they'd",
    "na\xc3\xafve caf\xc3\xa9 \xc3\x85ngstr\xc3\xb6m",
    "\xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8" "apple\xe5\xb7\xa5\xe4\xbd\x9c" "1314151\xe5\xa4\xa9\xef\xbd\x9e",
    "\xf0\x9f\xa6\x99 llama \xf0\x9f\x9a\x80\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab\xef\xb8\x8f",
    "   three leading, and  double  spaces   ",
    "\n\n\ttabs\tand\nnew\r\nlines\n\n",
    "12345 3333333 0.5e-3",
    "\xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe \xd0\xbd\xd0\xb0 \xd0\x91\xd1\x8a\xd0\xbb\xd0\xb3\xd0\xb0\xd1\x80\xd1\x81\xd0\xba\xd0\xb8",
    "",
};

static void test_stream_vs_whole(const kv_tokenizer *tok, const char *text)
{
    int32_t *ids;
    size_t n;
    kv_err err;
    if (kv_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    for (size_t k = 0; k <= n; k++)
        check_stream_priming(tok, ids, n, k);
    free(ids);
}

static void test_llama2(const char *models)
{
    kv_tokenizer *tok = load_model_tok(models, "tokenizers/llama2/tokenizer.json");
    if (!tok)
        return;
    CHECK_EQ_INT(kv_tokenizer_n_ids(tok), 32000);
    CHECK_EQ_INT(kv_tokenizer_token_id(tok, "<s>"), 1);
    CHECK(kv_tokenizer_is_special(tok, 2));
    test_llama_spm_vectors(models, tok);
    for (size_t i = 0; i < sizeof round_trip_texts / sizeof *round_trip_texts; i++)
        check_round_trip(tok, round_trip_texts[i]);
    /* Khmer and emoji go through byte fallback: stream them with every priming point. */
    test_stream_vs_whole(tok, "\xe1\x9e\x80\xe1\x9e\xb6\xe1\x9e\x93 \xf0\x9f\xa6\x99.cpp  ok");
    test_stream_vs_whole(tok, " Hello, world!");

    /* The whole text is one BPE word: a long input must stay fast (heap, not O(n^2)). */
    size_t len = 400000;
    char *big = malloc(len + 1);
    if (big) {
        static const char chunk[] = "The quick brown fox jumps over the lazy dog. \xe6\x97\xa5\xe6\x9c\xac ";
        for (size_t i = 0; i < len; i++)
            big[i] = chunk[i % (sizeof chunk - 1)];
        len -= len % (sizeof chunk - 1); /* whole chunks only: no split character */
        big[len] = '\0';
        clock_t t0 = clock();
        check_round_trip(tok, big);
        fprintf(stderr, "llama2: %zu-byte text round trip in %.2f s\n", len, (double)(clock() - t0) / CLOCKS_PER_SEC);
        free(big);
    }
    kv_tokenizer_free(tok);
}

static void test_llama3(const char *models)
{
    clock_t t0 = clock();
    kv_tokenizer *tok = load_model_tok(models, "tokenizers/llama3/tokenizer.json");
    if (!tok)
        return;
    fprintf(stderr, "llama3: loaded in %.3f s\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    CHECK_EQ_INT(kv_tokenizer_n_ids(tok), 128256);
    CHECK_EQ_INT(kv_tokenizer_token_id(tok, "<|begin_of_text|>"), 128000);
    CHECK(kv_tokenizer_is_special(tok, 128000) && kv_tokenizer_is_special(tok, 128009));
    CHECK(!kv_tokenizer_is_special(tok, 9906));
    CHECK_IDS(tok, "Hello world", 9906, 1917);
    CHECK_IDS(tok, " Hello world", 22691, 1917);
    CHECK_IDS(tok, "12345", 4513, 1774);
    CHECK_IDS(tok, "<|begin_of_text|>Hello", 128000, 9906);
    CHECK_IDS(tok, "I'm", 40, 2846);
    for (size_t i = 0; i < sizeof round_trip_texts / sizeof *round_trip_texts; i++)
        check_round_trip(tok, round_trip_texts[i]);
    /* Special tokens are matched in the text but skipped when decoding. */
    const int32_t with_special[] = {128000, 9906, 1917, 128009};
    char *s = decode(tok, with_special, 4);
    CHECK(s && !strcmp(s, "Hello world"));
    free(s);
    test_stream_vs_whole(tok, "caf\xc3\xa9 \xf0\x9f\xa6\x99\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab  x");
    kv_tokenizer_free(tok);
}

static void test_stories260k(const char *models)
{
    kv_tokenizer *tok = load_model_tok(models, "stories260K/tokenizer.json");
    if (!tok)
        return;
    CHECK_EQ_INT(kv_tokenizer_n_ids(tok), 512);
    CHECK_IDS(tok, "Once upon a time", 403, 407, 261, 378);
    const int32_t ids[] = {403, 407, 261, 378, 432, 383, 286};
    char *s = decode(tok, ids, 7);
    CHECK_MSG(s && !strcmp(s, "Once upon a time, there was"), "got \"%s\"", s ? s : "(null)");
    free(s);
    check_round_trip(tok, "Lily saw a big \xe7\x8c\xab!");
    kv_tokenizer_free(tok);
}

int main(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/kv_test_tokenizer.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_synthetic_spm();
    test_malformed();
    test_config();
    rmdir(tmp_dir);

    const char *models = kv_test_models_dir();
    if (!models) {
        if (kv_test_failures)
            return kv_test_result();
        KV_TEST_SKIP("shared model dir not found (set KVSERVE_TEST_MODELS); real-tokenizer tests skipped");
    }
    test_llama2(models);
    test_llama3(models);
    test_stories260k(models);
    return kv_test_result();
}
