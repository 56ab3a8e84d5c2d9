/* Decoding. Every supported decoder step except the final Strip acts on one token at a time,
 * so each id's decoded bytes are computed once at load; decoding is then concatenation plus
 * UTF-8 assembly (bytes of an unfinished character wait for the rest; invalid sequences
 * become U+FFFD, one per maximal invalid subpart as in Rust's from_utf8_lossy) plus
 * the SentencePiece leading-space strip on the first character of the stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

/* ---- loading ---------------------------------------------------------------------- */

typedef enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_BYTE_LEVEL, DEC_STRIP } dec_kind;

typedef struct {
    dec_kind kind;
    const char *from, *to; /* Replace (point into the JSON doc, which outlives loading) */
    size_t from_len, to_len;
    const char *ch;        /* Strip's character */
    size_t ch_len, start, stop;
} dec_step;

typedef struct {
    dec_step steps[16];
    size_t n;
    int fused; /* a Fuse was seen: later steps see the whole text */
} dec_plan;

static int load_strip(kv_tokenizer *tok, dec_plan *plan, const json_value *v, const char *where, kv_err *err)
{
    const char *ch;
    size_t len;
    int64_t start, stop;
    int rc = tok_json_string(v, "content", &ch, &len, where, err);
    if (rc)
        return rc;
    uint32_t cp;
    if (len == 0 || kv_utf8_next(ch, len, &cp) != len)
        return kv_err_set(err, KV_EFORMAT, "%s.content: expected one character", where);
    if (!json_get_int(v, "start", &start) || !json_get_int(v, "stop", &stop) || start < 0 || stop < 0)
        return kv_err_set(err, KV_EFORMAT, "%s: start/stop must be non-negative integers", where);
    if (plan->fused) {
        /* On the fused text: only a leading strip of one character can be streamed. */
        if (start > 1 || stop != 0)
            return kv_err_set(err, KV_EUNSUPPORTED,
                              "%s: Strip after Fuse supports only start <= 1, stop = 0", where);
        if (start == 1) {
            memcpy(tok->strip_first, ch, len);
            tok->strip_first_len = len;
        }
        return 0;
    }
    plan->steps[plan->n++] = (dec_step){.kind = DEC_STRIP, .ch = ch, .ch_len = len,
                                        .start = (size_t)start, .stop = (size_t)stop};
    return 0;
}

static int load_step(kv_tokenizer *tok, dec_plan *plan, const json_value *v, const char *where, kv_err *err)
{
    const char *type;
    int rc = tok_json_type(v, &type, where, err);
    if (rc)
        return rc;
    if (plan->n == sizeof plan->steps / sizeof *plan->steps)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: too many decoder steps", where);
    if (plan->fused && strcmp(type, "Strip") && strcmp(type, "Fuse"))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: decoder '%s' after Fuse is not supported", where, type);
    if (!strcmp(type, "Fuse")) {
        plan->fused = 1;
        return 0;
    }
    if (!strcmp(type, "Strip"))
        return load_strip(tok, plan, v, where, err);
    if (!strcmp(type, "ByteFallback")) {
        plan->steps[plan->n++] = (dec_step){.kind = DEC_BYTE_FALLBACK};
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        plan->steps[plan->n++] = (dec_step){.kind = DEC_BYTE_LEVEL};
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        const json_value *p = json_get(v, "pattern");
        dec_step st = {.kind = DEC_REPLACE};
        if (!p || p->type != JSON_OBJECT)
            return kv_err_set(err, KV_EFORMAT, "%s.pattern: expected an object", where);
        if (json_get(p, "Regex"))
            return kv_err_set(err, KV_EUNSUPPORTED, "%s: Regex patterns are not supported", where);
        if ((rc = tok_json_string(p, "String", &st.from, &st.from_len, where, err)) ||
            (rc = tok_json_string(v, "content", &st.to, &st.to_len, where, err)))
            return rc;
        if (st.from_len == 0)
            return kv_err_set(err, KV_EFORMAT, "%s.pattern: empty String pattern", where);
        plan->steps[plan->n++] = st;
        return 0;
    }
    return kv_err_set(err, KV_EUNSUPPORTED, "%s: decoder type '%s' is not supported", where, type);
}

static int load_plan(kv_tokenizer *tok, dec_plan *plan, const json_value *v, kv_err *err)
{
    if (!v || v->type == JSON_NULL) {
        tok->dec_join_space = 1;
        return 0;
    }
    const char *type;
    int rc = tok_json_type(v, &type, "decoder", err);
    if (rc)
        return rc;
    if (strcmp(type, "Sequence"))
        return load_step(tok, plan, v, "decoder", err);
    const json_value *list = json_get(v, "decoders");
    if (!list || list->type != JSON_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "decoder.decoders: expected an array");
    for (size_t i = 0; i < list->u.arr.n; i++) {
        char where[48];
        snprintf(where, sizeof where, "decoder.decoders[%zu]", i);
        if ((rc = load_step(tok, plan, &list->u.arr.items[i], where, err)))
            return rc;
    }
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Applies one step to in, writing out (replaced). */
static int apply_step(const kv_tokenizer *tok, const dec_step *st, const tok_buf *in, tok_buf *out)
{
    const char *s = in->p;
    size_t n = in->len;
    out->len = 0;
    switch (st->kind) {
    case DEC_REPLACE: {
        size_t i = 0, last = 0;
        while (i + st->from_len <= n) {
            if (!memcmp(s + i, st->from, st->from_len)) {
                if (tok_buf_put(out, s + last, i - last) || tok_buf_put(out, st->to, st->to_len))
                    return KV_ENOMEM;
                i += st->from_len;
                last = i;
            } else {
                i++;
            }
        }
        return tok_buf_put(out, s + last, n - last);
    }
    case DEC_BYTE_FALLBACK:
        if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hex_digit(s[3]) >= 0 && hex_digit(s[4]) >= 0) {
            char b = (char)(hex_digit(s[3]) * 16 + hex_digit(s[4]));
            return tok_buf_put(out, &b, 1);
        }
        return tok_buf_put(out, s, n);
    case DEC_BYTE_LEVEL: {
        /* HF: a token with any character outside the byte table passes through unchanged. */
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t k = kv_utf8_next(s + i, n - i, &cp);
            int b = cp < 324 ? tok->byte_level.byte_of[cp] : -1;
            if (b < 0) {
                out->len = 0;
                return tok_buf_put(out, s, n);
            }
            char c = (char)b;
            if (tok_buf_put(out, &c, 1))
                return KV_ENOMEM;
            i += k;
        }
        return tok_buf_put(out, "", 0); /* allocates even for an empty token */
    }
    case DEC_STRIP: {
        size_t a = 0, z = n;
        for (size_t k = 0; k < st->start && z - a >= st->ch_len && !memcmp(s + a, st->ch, st->ch_len); k++)
            a += st->ch_len;
        for (size_t k = 0; k < st->stop && z - a >= st->ch_len && !memcmp(s + z - st->ch_len, st->ch, st->ch_len); k++)
            z -= st->ch_len;
        return tok_buf_put(out, s + a, z - a);
    }
    }
    return 0;
}

int tok_decoder_load(kv_tokenizer *tok, const json_value *v, kv_err *err)
{
    dec_plan plan = {.n = 0};
    int rc = load_plan(tok, &plan, v, err);
    if (rc)
        return rc;
    tok->dec_off = malloc(((size_t)tok->n_ids + 1) * sizeof *tok->dec_off);
    if (!tok->dec_off)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    tok_buf pool = {0}, a = {0}, b = {0};
    rc = 0;
    tok->dec_off[0] = 0;
    for (int32_t id = 0; id < tok->n_ids && !rc; id++) {
        if (tok->id_str[id] && !(tok->id_flags[id] & TOK_ID_SPECIAL)) {
            a.len = 0;
            rc = tok_buf_put(&a, tok->id_str[id], tok->id_len[id]);
            for (size_t k = 0; k < plan.n && !rc; k++) {
                rc = apply_step(tok, &plan.steps[k], &a, &b);
                tok_buf t = a;
                a = b;
                b = t;
            }
            if (!rc)
                rc = tok_buf_put(&pool, a.p, a.len);
        }
        if (!rc && pool.len > UINT32_MAX)
            rc = KV_ENOMEM;
        tok->dec_off[id + 1] = (uint32_t)pool.len;
    }
    free(a.p);
    free(b.p);
    tok->dec_pool = pool.p;
    if (rc)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    return 0;
}

/* ---- decoding ----------------------------------------------------------------------- */

typedef struct {
    char *out;
    size_t cap, len; /* len + 1 <= cap always holds while !overflow (room for the NUL) */
    int overflow;
} writer;

static void put(writer *w, const char *s, size_t n)
{
    if (w->overflow || n >= w->cap - w->len) {
        w->overflow = 1;
        return;
    }
    memcpy(w->out + w->len, s, n);
    w->len += n;
}

/* One finished character (or U+FFFD): the first one of the stream may be stripped. */
static void emit_char(kv_detok *d, writer *w, const char *s, size_t n)
{
    const kv_tokenizer *tok = d->tok;
    if (d->at_start) {
        d->at_start = 0;
        if (tok->strip_first_len == n && !memcmp(s, tok->strip_first, n))
            return;
    }
    put(w, s, n);
}

static void feed(kv_detok *d, writer *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (d->n_pending) {
            unsigned char lead = d->pending[0];
            int ok = d->n_pending == 1 ? kv_utf8_second_ok(lead, c) : (c & 0xC0) == 0x80;
            if (ok) {
                d->pending[d->n_pending++] = c;
                if (d->n_pending == kv_utf8_lead_len(lead)) {
                    emit_char(d, w, (const char *)d->pending, (size_t)d->n_pending);
                    d->n_pending = 0;
                }
                continue;
            }
            /* The held bytes can never complete: one U+FFFD, then c starts afresh. */
            emit_char(d, w, KV_UTF8_REPLACEMENT, 3);
            d->n_pending = 0;
        }
        if (c < 0x80)
            emit_char(d, w, (const char *)&c, 1);
        else if (kv_utf8_lead_len(c))
            d->pending[d->n_pending++] = c;
        else
            emit_char(d, w, KV_UTF8_REPLACEMENT, 3);
    }
}

static void push_id(kv_detok *d, writer *w, int32_t id)
{
    const kv_tokenizer *tok = d->tok;
    if (tok->id_flags[id] & TOK_ID_SPECIAL)
        return;
    if (tok->dec_join_space) {
        if (!tok->id_str[id])
            return;
        if (!d->at_start)
            feed(d, w, " ", 1);
        d->at_start = 0;
    }
    feed(d, w, tok->dec_pool + tok->dec_off[id], tok->dec_off[id + 1] - tok->dec_off[id]);
}

void kv_detok_init(kv_detok *d, const kv_tokenizer *tok)
{
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->at_start = 1;
}

int kv_detok_push(kv_detok *d, int32_t id, char *out, size_t cap, kv_err *err)
{
    if (!d || !d->tok || !out || cap == 0)
        return kv_err_set(err, KV_EINVAL, "kv_detok_push: null argument or empty buffer");
    if (id < 0 || id >= d->tok->n_ids)
        return kv_err_set(err, KV_ERANGE, "token id %d out of range [0, %d)", id, d->tok->n_ids);
    /* Work on a copy so that a too-small buffer leaves the stream unchanged. */
    kv_detok next = *d;
    writer w = {out, cap, 0, 0};
    push_id(&next, &w, id);
    if (w.overflow)
        return kv_err_set(err, KV_ERANGE, "decode buffer of %zu bytes too small for token %d", cap, id);
    out[w.len] = '\0';
    *d = next;
    return (int)w.len;
}

int kv_detok_flush(kv_detok *d, char *out, size_t cap)
{
    if (!d || !d->tok || !out || cap == 0)
        return KV_EINVAL;
    kv_detok next = *d;
    writer w = {out, cap, 0, 0};
    if (next.n_pending) {
        emit_char(&next, &w, KV_UTF8_REPLACEMENT, 3);
        next.n_pending = 0;
    }
    if (w.overflow)
        return KV_ERANGE;
    out[w.len] = '\0';
    *d = next;
    return (int)w.len;
}

int kv_tokenizer_decode(const kv_tokenizer *tok, const int32_t *ids, size_t n, char **out, kv_err *err)
{
    if (!tok || !out || (n && !ids))
        return kv_err_set(err, KV_EINVAL, "kv_tokenizer_decode: null argument");
    *out = NULL;
    /* Each input byte yields at most 3 output bytes (a U+FFFD), plus joins and the flush. */
    size_t bound = 3 + 1;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok->n_ids)
            return kv_err_set(err, KV_ERANGE, "token id %d at position %zu out of range [0, %d)", ids[i], i,
                              tok->n_ids);
        size_t len = tok->dec_off[ids[i] + 1] - tok->dec_off[ids[i]] + 1;
        if (len > (SIZE_MAX - bound) / 3)
            return kv_err_set(err, KV_ENOMEM, "decoded text too large");
        bound += 3 * len;
    }
    char *buf = malloc(bound);
    if (!buf)
        return kv_err_set(err, KV_ENOMEM, "out of memory for %zu bytes of decoded text", bound);
    kv_detok d;
    kv_detok_init(&d, tok);
    writer w = {buf, bound, 0, 0};
    for (size_t i = 0; i < n; i++)
        push_id(&d, &w, ids[i]);
    if (d.n_pending)
        emit_char(&d, &w, KV_UTF8_REPLACEMENT, 3);
    if (w.overflow) { /* cannot happen given the bound; fail cleanly rather than truncate */
        free(buf);
        return kv_err_set(err, KV_ENOMEM, "decode size bound exceeded");
    }
    buf[w.len] = '\0';
    *out = buf;
    return 0;
}
