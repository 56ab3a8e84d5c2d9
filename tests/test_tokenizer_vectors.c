/* Checks the C tokenizer against vectors made with HF tokenizers (tests/data/tokenizer/
 * make_vectors.py):  test_tokenizer_vectors TOKENIZER_JSON VECTORS_FILE
 * A path starting with "models:" is relative to the shared model dir (skipped, exit 77, when
 * that or the file is absent). The vectors' first line {"meta": ...} gives the BOS/EOS the
 * tokenizer must report; every other line {"text", "ids", "ids_special", "decoded"} must give
 * exactly those ids from kv_tokenizer_encode / kv_tokenizer_encode_special(add_special = 1),
 * and "decoded" from kv_tokenizer_decode(ids) and from streaming the ids through kv_detok. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kv_file.h"
#include "kv_test.h"
#include "tokenizer.h"

static int reported; /* failures printed in detail so far (the rest only counted) */

static const char *resolve(const char *arg, char *buf, size_t cap)
{
    if (strncmp(arg, "models:", 7))
        return arg;
    const char *models = kv_test_models_dir();
    if (!models)
        KV_TEST_SKIP("shared model dir not found (set KVSERVE_TEST_MODELS): %s skipped", arg);
    snprintf(buf, cap, "%s/%s", models, arg + 7);
    FILE *f = fopen(buf, "r");
    if (!f)
        KV_TEST_SKIP("%s not found: skipped", buf);
    fclose(f);
    return buf;
}

/* ids from a JSON array of integers into a malloc'd array (*n). */
static int32_t *json_ids(const json_value *arr, size_t *n)
{
    *n = 0;
    if (!arr || arr->type != JSON_ARRAY)
        return NULL;
    int32_t *ids = malloc((arr->u.arr.n ? arr->u.arr.n : 1) * sizeof *ids);
    if (!ids)
        return NULL;
    for (size_t i = 0; i < arr->u.arr.n; i++)
        ids[i] = (int32_t)arr->u.arr.items[i].u.number;
    *n = arr->u.arr.n;
    return ids;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static int check_ids(int line, const char *what, const json_value *v, const int32_t *got, size_t n_got)
{
    size_t n_want;
    int32_t *want = json_ids(json_get(v, what), &n_want);
    int ok = want && n_want == n_got && (!n_got || !memcmp(want, got, n_got * sizeof *got));
    CHECK_MSG(ok, "line %d: %s differ for \"%.60s\"", line, what, json_get_string(v, "text"));
    if (!ok && reported++ < 10) {
        print_ids("want", want, n_want);
        print_ids("got ", got, n_got);
    }
    free(want);
    return ok;
}

/* Streams ids through a kv_detok into out (cap bytes); returns the length or -1. */
static long stream_decode(const kv_tokenizer *tok, const int32_t *ids, size_t n, char *out, size_t cap)
{
    kv_detok d;
    kv_detok_init(&d, tok);
    size_t len = 0;
    char piece[1024];
    kv_err err;
    for (size_t i = 0; i <= n; i++) {
        int w = i < n ? kv_detok_push(&d, ids[i], piece, sizeof piece, &err) : kv_detok_flush(&d, piece, sizeof piece);
        if (w < 0 || len + (size_t)w >= cap)
            return -1;
        memcpy(out + len, piece, (size_t)w);
        len += (size_t)w;
    }
    out[len] = '\0';
    return (long)len;
}

static void check_vector(const kv_tokenizer *tok, int line, const json_value *v, int *passed)
{
    const json_value *text = json_get(v, "text"), *decoded = json_get(v, "decoded");
    if (!text || text->type != JSON_STRING || !decoded || decoded->type != JSON_STRING) {
        CHECK_MSG(0, "line %d: no text or decoded", line);
        return;
    }
    int32_t *ids = NULL, *ids_sp = NULL;
    size_t n = 0, n_sp = 0;
    kv_err err = {0};
    int ok = 1, rc = kv_tokenizer_encode(tok, text->u.str.s, text->u.str.len, &ids, &n, &err);
    CHECK_MSG(rc == 0, "line %d: encode: %s", line, err.msg);
    ok &= rc == 0 && check_ids(line, "ids", v, ids, n);
    rc = kv_tokenizer_encode_special(tok, text->u.str.s, text->u.str.len, 1, &ids_sp, &n_sp, &err);
    CHECK_MSG(rc == 0, "line %d: encode_special: %s", line, err.msg);
    ok &= rc == 0 && check_ids(line, "ids_special", v, ids_sp, n_sp);
    free(ids_sp);

    /* Decode HF's ids, not ours: a decode check that does not depend on encode. */
    size_t n_want;
    int32_t *want = json_ids(json_get(v, "ids"), &n_want);
    char *s = NULL;
    rc = want ? kv_tokenizer_decode(tok, want, n_want, &s, &err) : KV_EFORMAT;
    int dec_ok = rc == 0 && strlen(s) == decoded->u.str.len && !memcmp(s, decoded->u.str.s, decoded->u.str.len);
    CHECK_MSG(dec_ok, "line %d: decode gave \"%.80s\", want \"%.80s\"", line, s ? s : err.msg, decoded->u.str.s);
    size_t cap = 3 * (decoded->u.str.len + 16) + 64 * n_want;
    char *streamed = malloc(cap);
    long len = streamed ? stream_decode(tok, want, n_want, streamed, cap) : -1;
    int stream_ok = len >= 0 && (size_t)len == decoded->u.str.len && !memcmp(streamed, decoded->u.str.s, (size_t)len);
    CHECK_MSG(stream_ok, "line %d: streamed decode gave \"%.80s\"", line, len >= 0 ? streamed : "(error)");
    free(streamed);
    free(s);
    free(want);
    free(ids);
    *passed += ok && dec_ok && stream_ok;
}

static void check_meta(const kv_tokenizer *tok, const json_value *m)
{
    int64_t want;
    if (json_get_int(m, "n_ids", &want))
        CHECK_EQ_INT(kv_tokenizer_n_ids(tok), want);
    if (json_get_int(m, "bos_id", &want))
        CHECK_EQ_INT(kv_tokenizer_bos_id(tok), want);
    int adds;
    if (json_get_bool(m, "adds_bos", &adds))
        CHECK_EQ_INT(kv_tokenizer_adds_bos(tok), adds);
    const char *names[2] = {"bos_token", "eos_token"};
    const char *got[2] = {kv_tokenizer_bos_token(tok), kv_tokenizer_eos_token(tok)};
    for (int k = 0; k < 2; k++) {
        const char *w = json_get_string(m, names[k]);
        CHECK_MSG(w ? got[k] && !strcmp(w, got[k]) : !got[k], "%s: got \"%s\", want \"%s\"", names[k],
                  got[k] ? got[k] : "(none)", w ? w : "(none)");
    }
    size_t n_eos;
    int32_t *eos = json_ids(json_get(m, "eos_ids"), &n_eos), got_eos[8];
    size_t n_got = kv_tokenizer_eos_ids(tok, got_eos, 8);
    CHECK_MSG(eos && n_got == n_eos && (!n_eos || !memcmp(eos, got_eos, n_eos * sizeof *eos)), "eos ids differ");
    free(eos);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s TOKENIZER_JSON VECTORS_FILE\n", argv[0]);
        return 2;
    }
    char tok_buf[4096], vec_buf[4096];
    const char *tok_path = resolve(argv[1], tok_buf, sizeof tok_buf);
    const char *vec_path = resolve(argv[2], vec_buf, sizeof vec_buf);
    kv_tokenizer *tok = NULL;
    kv_err err = {0};
    int rc = kv_tokenizer_load(tok_path, &tok, &err);
    if (rc == KV_ENOTFOUND)
        KV_TEST_SKIP("%s", err.msg);
    CHECK_MSG(rc == 0, "%s", err.msg);
    char *text;
    size_t len;
    if (rc || kv_file_read_all(vec_path, &text, &len, &err)) {
        CHECK_MSG(rc, "%s", err.msg);
        kv_tokenizer_free(tok);
        return kv_test_result();
    }
    int line = 0, total = 0, passed = 0;
    for (char *p = text, *eol; p < text + len; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(text + len - p));
        if (!eol)
            eol = text + len;
        line++;
        if (eol == p)
            continue;
        json_doc *doc = json_parse(p, (size_t)(eol - p), &err);
        CHECK_MSG(doc, "%s line %d: %s", vec_path, line, err.msg);
        if (!doc)
            continue;
        const json_value *v = json_root(doc), *meta = json_get(v, "meta");
        if (meta) {
            check_meta(tok, meta);
        } else {
            total++;
            check_vector(tok, line, v, &passed);
        }
        json_doc_free(doc);
    }
    fprintf(stderr, "%s: %d/%d vectors passed\n", vec_path, passed, total);
    CHECK(total > 0);
    free(text);
    kv_tokenizer_free(tok);
    return kv_test_result();
}
