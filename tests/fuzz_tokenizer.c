/* Fuzz target of the tokenizer (common/tokenizer) with the real stories260K tokenizer.json
 * (SentencePiece style: Prepend("▁") + Replace(" " -> "▁") normalizer, no pre-tokenizer, byte
 * fallback for every byte; decoder Replace("▁" -> " "), ByteFallback, Fuse, Strip one leading
 * " "; added tokens <unk> <s> </s>, all special, matched on the raw text). Every input is both
 * a text to encode and, two bytes an id, a sequence of ids to decode. Checked:
 *   - encode refuses invalid UTF-8 (KV_EINVAL, a message, no ids) and accepts all else, with
 *     ids in [0, n_ids);
 *   - special tokens are matched first and split the text: encode(A <s> B) is encode(A), the
 *     id of <s>, encode(B) (leftmost match first);
 *   - a text holding neither a special token nor "▁" (U+2581, which decodes as a space)
 *     comes back byte for byte from decoding its ids: nothing else is normalized, and the
 *     leading "▁" the normalizer adds is the space Strip removes;
 *   - decoding any ids: out-of-range ids make kv_tokenizer_decode fail with KV_ERANGE and
 *     kv_detok_push refuse them; the streaming decoder's pushes then flush give the bytes of
 *     kv_tokenizer_decode (which returns a C string: compared up to its NUL), as valid UTF-8;
 *     special tokens emit nothing; a refused push (id out of range, buffer too small) leaves
 *     the stream as it was; the text streamed up to a point where no character is pending is
 *     the decode of the ids so far (what priming a stream with a prompt relies on).
 * The same input also goes through the synthetic tokenizers of tests/data/tokenizer/synthetic
 * (every normalizer, pre-tokenizer, post-processor and decoder kind; these need no shared
 * data): encode accepts exactly the valid UTF-8 with ids in range, encode with special tokens
 * is the post-processor's fixed prefix and suffix around encode's ids, and decoding any ids
 * (the input's and random ones) streams as it decodes whole. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_fuzz_target.h"
#include "kv_test.h"
#include "kv_utf8.h"
#include "tok_utf8.h"
#include "tokenizer.h"

#define N_SPECIAL 3
static const char *const special[N_SPECIAL] = {"<unk>", "<s>", "</s>"};
static int32_t special_id[N_SPECIAL];
/* Loaded on the first input and kept for the process: loading costs far more than an input,
 * a fuzz target has no teardown hook, and LeakSanitizer does not report what stays reachable. */
static const kv_tokenizer *tok; /* stories260K, NULL without the shared model dir */
static int32_t n_ids;
static int loaded;

static const char *const synthetic_names[] = {
    "llama3", "gpt2", "split-behaviors", "split-empty-mergedwithnext", "split-invert-contiguous",
    "punctuation-mergedwithprevious", "whitespace", "digits-contiguous", "norm-nfkd", "norm-lowercase",
    "norm-replace", "norm-strip-right", "metaspace-first", "metaspace-always", "metaspace-legacy", "bertish", "llama2"};
#define N_SYNTHETIC (sizeof synthetic_names / sizeof *synthetic_names)
static const kv_tokenizer *synthetic[N_SYNTHETIC];
static int32_t *synthetic_frame[N_SYNTHETIC]; /* encode_special("") : prefix then suffix */
static size_t synthetic_frame_len[N_SYNTHETIC];

static void load_synthetic(void)
{
    for (size_t k = 0; k < N_SYNTHETIC; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/synthetic/%s/tokenizer.json", KV_TOKENIZER_DATA_DIR, synthetic_names[k]);
        kv_tokenizer *t = NULL;
        kv_err err = {0};
        KV_FUZZ_REQUIRE(kv_tokenizer_load(path, &t, &err) == 0, "%s", err.msg);
        synthetic[k] = t;
        KV_FUZZ_REQUIRE(kv_tokenizer_encode_special(t, "", 0, 1, &synthetic_frame[k], &synthetic_frame_len[k], &err) == 0,
                        "%s", err.msg);
    }
}

static void load(void)
{
    loaded = 1;
    load_synthetic();
    const char *dir = kv_test_models_dir();
    if (!dir)
        return; /* the stories260K checks need the shared model dir */
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/tokenizer.json", dir);
    kv_tokenizer *t = NULL;
    kv_err err = {0};
    int rc = kv_tokenizer_load(path, &t, &err);
    if (rc == KV_ENOTFOUND)
        return;
    KV_FUZZ_REQUIRE(rc == 0, "%s", err.msg);
    tok = t;
    n_ids = kv_tokenizer_n_ids(tok);
    for (int k = 0; k < N_SPECIAL; k++) {
        special_id[k] = kv_tokenizer_token_id(tok, special[k]);
        KV_FUZZ_REQUIRE(kv_tokenizer_is_special(tok, special_id[k]), "%s is not a special token", special[k]);
    }
}

/* decode() returns a C string: equal to bytes[0..n) up to their first NUL, and ending there. */
static int same_text(const char *cstr, const char *bytes, size_t n)
{
    const char *nul = memchr(bytes, 0, n);
    size_t k = nul ? (size_t)(nul - bytes) : n;
    return strlen(cstr) == k && !memcmp(cstr, bytes, k);
}

static int same_state(const kv_detok *a, const kv_detok *b)
{
    return a->at_start == b->at_start && a->n_pending == b->n_pending && !memcmp(a->pending, b->pending, sizeof a->pending);
}

/* Streams ids[0..n) (all in range) through a kv_detok into a malloc'd buffer (*len bytes).
 * Each push first gets a buffer of 1-8 bytes and, now and then, an id out of range before
 * it: both may be refused, and then must leave the stream as it was. *at_k / *pending_k:
 * the bytes streamed, and whether a character was pending, before ids[k]. */
static char *stream(const kv_tokenizer *t, const int32_t *ids, size_t n, const uint8_t *data, size_t size, size_t k,
                    size_t *len, size_t *at_k, int *pending_k)
{
    static const int32_t bad[] = {-1, INT32_MIN, INT32_MAX, 0};
    char piece[4096];
    size_t l = 0, cap = 256;
    char *s = malloc(cap);
    kv_detok d;
    kv_detok_init(&d, t);
    kv_err err;
    for (size_t i = 0;; i++) {
        if (i == k) {
            *at_k = l;
            *pending_k = d.n_pending;
        }
        int w;
        if (i == n) {
            w = kv_detok_flush(&d, piece, sizeof piece);
            KV_FUZZ_REQUIRE(w >= 0 && piece[w] == '\0', "flush: %d", w);
        } else {
            uint8_t b = size ? data[i % size] : 0;
            kv_detok before = d;
            int32_t id = bad[b % 4] ? bad[b % 4] : kv_tokenizer_n_ids(t);
            KV_FUZZ_REQUIRE(!(b & 0x80) || (kv_detok_push(&d, id, piece, sizeof piece, &err) == KV_ERANGE &&
                                            same_state(&d, &before)),
                            "id %d was not refused cleanly", id);
            size_t small = 1 + b % 8;
            w = kv_detok_push(&d, ids[i], piece, small, &err);
            if (w < 0) {
                KV_FUZZ_REQUIRE(w == KV_ERANGE && same_state(&d, &before), "push into %zu bytes: %s", small, err.msg);
                w = kv_detok_push(&d, ids[i], piece, sizeof piece, &err);
                KV_FUZZ_REQUIRE(w >= 0, "push of %d: %s", ids[i], err.msg);
            } else {
                KV_FUZZ_REQUIRE((size_t)w < small, "%d bytes and a NUL written into %zu", w, small);
            }
            KV_FUZZ_REQUIRE(piece[w] == '\0', "push output not NUL-terminated");
            KV_FUZZ_REQUIRE(w == 0 || !kv_tokenizer_is_special(t, ids[i]), "special id %d gave text", ids[i]);
        }
        if (s && l + (size_t)w > cap)
            s = realloc(s, cap = 2 * (l + (size_t)w));
        KV_FUZZ_REQUIRE(s, "out of memory");
        memcpy(s + l, piece, (size_t)w);
        l += (size_t)w;
        if (i == n)
            break;
    }
    *len = l;
    KV_FUZZ_REQUIRE(kv_utf8_invalid_at(s, l) == l, "streamed text is not UTF-8");
    return s;
}

/* Decoding ids[0..n) (all in range): stream and kv_tokenizer_decode agree, also at a
 * priming point k. Returns the streamed bytes (malloc'd, *len). */
static char *check_decode(const kv_tokenizer *t, const int32_t *ids, size_t n, const uint8_t *data, size_t size,
                          size_t *len)
{
    size_t k = size ? data[size - 1] % (n + 1) : 0, at_k = 0;
    int pending_k = 0;
    char *s = stream(t, ids, n, data, size, k, len, &at_k, &pending_k), *whole = NULL;
    kv_err err = {0};
    KV_FUZZ_REQUIRE(kv_tokenizer_decode(t, ids, n, &whole, &err) == 0, "decode: %s", err.msg);
    KV_FUZZ_REQUIRE(same_text(whole, s, *len), "decode gave \"%s\", the stream %zu bytes", whole, *len);
    free(whole);
    if (!pending_k) {
        KV_FUZZ_REQUIRE(kv_tokenizer_decode(t, ids, k, &whole, &err) == 0, "decode: %s", err.msg);
        KV_FUZZ_REQUIRE(same_text(whole, s, at_k), "decode of the first %zu ids is not the stream so far", k);
        free(whole);
    }
    return s;
}

static void check_encode(const char *text, size_t size, const uint8_t *data)
{
    int32_t unset, *ids = &unset, *part = NULL; /* must be reset */
    size_t n = 1, pn = 0, at = 0, pos = 0;
    kv_err err = {0};
    int rc = kv_tokenizer_encode(tok, text, size, &ids, &n, &err);
    if (kv_utf8_invalid_at(text, size) != size) {
        KV_FUZZ_REQUIRE(rc == KV_EINVAL && err.msg[0] && !ids && !n, "invalid UTF-8 encoded: rc %d", rc);
        return;
    }
    KV_FUZZ_REQUIRE(rc == 0, "encode of %zu bytes: %s", size, err.msg);
    for (size_t i = 0; i < n; i++)
        KV_FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < n_ids, "id %d out of [0, %d)", ids[i], n_ids);
    size_t len;
    free(check_decode(tok, ids, n, data, size, &len));
    for (;;) { /* the next special token: leftmost, then longest */
        size_t start = size, slen = 0;
        int which = -1;
        for (int k = 0; k < N_SPECIAL; k++) {
            size_t kl = strlen(special[k]);
            const char *p = memmem(text + pos, size - pos, special[k], kl);
            if (p && ((size_t)(p - text) < start || ((size_t)(p - text) == start && kl > slen))) {
                start = (size_t)(p - text);
                slen = kl;
                which = k;
            }
        }
        rc = kv_tokenizer_encode(tok, text + pos, start - pos, &part, &pn, &err);
        KV_FUZZ_REQUIRE(rc == 0, "encode of a part: %s", err.msg);
        KV_FUZZ_REQUIRE(at + pn <= n && (!pn || !memcmp(ids + at, part, pn * sizeof *part)),
                        "ids of the text at byte %zu differ from those of the part alone", pos);
        if (!memmem(text + pos, start - pos, "\xe2\x96\x81", 3)) {
            char *back = check_decode(tok, part, pn, data, size, &len);
            KV_FUZZ_REQUIRE(len == start - pos && !memcmp(back, text + pos, len),
                            "the %zu bytes at %zu decode to %zu other bytes", start - pos, pos, len);
            free(back);
        }
        free(part);
        at += pn;
        if (which < 0)
            break;
        KV_FUZZ_REQUIRE(at < n && ids[at] == special_id[which], "%s at byte %zu is not its id", special[which], start);
        at++;
        pos = start + slen;
    }
    KV_FUZZ_REQUIRE(at == n, "%zu ids, %zu accounted for by the parts", n, at);
    free(ids);
}

/* One synthetic tokenizer: encode (plain and with special tokens) and decode. */
static void check_synthetic(size_t k, const uint8_t *data, size_t size)
{
    const kv_tokenizer *t = synthetic[k];
    int32_t *ids = NULL, *sp = NULL, n_t = kv_tokenizer_n_ids(t);
    size_t n = 0, n_sp = 0, len;
    kv_err err = {0};
    int rc = kv_tokenizer_encode(t, (const char *)data, size, &ids, &n, &err);
    if (kv_utf8_invalid_at((const char *)data, size) != size) {
        KV_FUZZ_REQUIRE(rc == KV_EINVAL && !ids, "%s: invalid UTF-8 encoded: rc %d", synthetic_names[k], rc);
        return;
    }
    KV_FUZZ_REQUIRE(rc == 0, "%s: encode of %zu bytes: %s", synthetic_names[k], size, err.msg);
    for (size_t i = 0; i < n; i++)
        KV_FUZZ_REQUIRE(ids[i] >= 0 && ids[i] < n_t, "%s: id %d out of range", synthetic_names[k], ids[i]);
    rc = kv_tokenizer_encode_special(t, (const char *)data, size, 1, &sp, &n_sp, &err);
    KV_FUZZ_REQUIRE(rc == 0, "%s: encode_special: %s", synthetic_names[k], err.msg);
    /* The frame (the specials around "") must split somewhere to surround the text's ids. */
    const int32_t *frame = synthetic_frame[k];
    size_t fl = synthetic_frame_len[k];
    KV_FUZZ_REQUIRE(n_sp == n + fl, "%s: %zu ids with specials, %zu without, frame %zu", synthetic_names[k], n_sp, n, fl);
    int framed = 0;
    for (size_t p = 0; p <= fl && !framed; p++)
        framed = !memcmp(sp, frame, p * sizeof *sp) && (!n || !memcmp(sp + p, ids, n * sizeof *ids)) &&
                 !memcmp(sp + p + n, frame + p, (fl - p) * sizeof *sp);
    KV_FUZZ_REQUIRE(framed, "%s: encode with specials is not the frame around encode's ids", synthetic_names[k]);
    free(check_decode(t, ids, n, data, size, &len));
    free(sp);
    free(ids);
    /* Random ids, two bytes each, all in range. */
    size_t m = size / 2;
    ids = malloc((m ? m : 1) * sizeof *ids);
    KV_FUZZ_REQUIRE(ids, "out of memory");
    for (size_t i = 0; i < m; i++)
        ids[i] = (int32_t)((data[2 * i] | (unsigned)data[2 * i + 1] << 8) % (unsigned)n_t);
    free(check_decode(t, ids, m, data, size, &len));
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loaded)
        load();
    for (size_t k = 0; k < N_SYNTHETIC; k++)
        check_synthetic(k, data, size);
    if (!tok)
        return 0;
    check_encode((const char *)data, size, data);

    /* Two bytes an id, a few out of range on both sides. */
    size_t n = size / 2, good = 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    KV_FUZZ_REQUIRE(ids, "out of memory");
    int any_bad = 0;
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)((data[2 * i] | (unsigned)data[2 * i + 1] << 8) % (unsigned)(n_ids + 4)) - 2;
        any_bad |= ids[i] < 0 || ids[i] >= n_ids;
    }
    static char unset;
    char *text = &unset; /* must be reset */
    kv_err err = {0};
    int rc = kv_tokenizer_decode(tok, ids, n, &text, &err);
    KV_FUZZ_REQUIRE(any_bad ? rc == KV_ERANGE && !text && err.msg[0] : rc == 0 && text, "decode: rc %d", rc);
    free(text);
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < n_ids)
            ids[good++] = ids[i];
    size_t len;
    free(check_decode(tok, ids, good, data, size, &len));
    free(ids);
    return 0;
}

/* ---- the generator: stories-like text with what a tokenizer must survive ---- */


size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    static const char *const word[] = {"Once", "upon", "a", "time", "there", "was", "little", "Lily", "Timmy",
                                       "the", "happy", "big", "friend", "said", "\"Hi!\"", "play", ",", ".", "!",
                                       "?", "1314", "0.5e-3", "don't", "<", ">", "<0x41>", "<s", "</", "s>", "unk"};
    static const char *const spaced[] = {" Once", " upon", " a", " time", " Lily", " the", " happy", " was"};
    static const char *const space[] = {" ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "   "};
    static const char *const multi[] = {
        "\xc3\xa9", "\xc3\xb1", "\xe2\x80\x9c", "\xe2\x80\x9d", "\xe2\x80\x99", "\xe2\x80\xa6", "\xe2\x80\x94",
        "\xe2\x82\xac", "\xe2\x84\xa2", "\xe6\x97\xa5\xe6\x9c\xac", "\xe7\x8c\xab", "\xf0\x9f\xa6\x99",
        "\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab\xef\xb8\x8f", "\xc2\xa0", "\xe2\x80\x8a", "\xe2\x96\x81",
        "\xe1\x9e\x80", "\xef\xbf\xbd", "\xc3\x85ngstr\xc3\xb6m"};
    /* stray bytes, overlong, truncated, surrogate, past U+10FFFF */
    static const char *const invalid[] = {"\xff", "\xc0\x80", "\x80", "\xe6\x97", "\xed\xa0\x80",
                                          "\xf5\x80\x80\x80", "\xf4\x90\x80\x80", "\xe0\x80\xaf"};
    int allow_invalid = !kv_fuzz_below(r, 8);
    size_t len = 0;
    for (int n = (int)kv_fuzz_below(r, kv_fuzz_below(r, 8) ? 40 : 300); n > 0; n--) {
        char tmp[4];
        const char *s;
        size_t sl = 0;
        unsigned c = kv_fuzz_below(r, 100);
        if (c < 45) s = kv_fuzz_below(r, 2) ? KV_FUZZ_PICK(r, word) : KV_FUZZ_PICK(r, spaced);
        else if (c < 70) s = KV_FUZZ_PICK(r, space);
        else if (c < 85) s = KV_FUZZ_PICK(r, multi);
        else if (c < 91) s = KV_FUZZ_PICK(r, special);
        else if (c < 97 || !allow_invalid) { /* any code point but the surrogates, NUL rarely */
            uint32_t cp = kv_fuzz_below(r, 4) ? kv_fuzz_below(r, 0x3000) : kv_fuzz_below(r, 0x110000);
            if (cp >= 0xD800 && cp < 0xE000)
                cp -= 0x800;
            sl = kv_utf8_put(tmp, cp);
            s = tmp;
        } else s = KV_FUZZ_PICK(r, invalid);
        if (s != tmp)
            sl = strlen(s);
        if (sl > cap - len)
            break;
        memcpy(buf + len, s, sl);
        len += sl;
    }
    return len;
}
