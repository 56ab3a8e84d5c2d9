/* Decoding. Every supported decoder step before a Fuse (or ByteLevel, which fuses too) acts on
 * one token at a time, so each id's decoded bytes are computed once at load (twice where a
 * Metaspace step treats the first token apart); decoding is then concatenation plus
 * UTF-8 assembly (bytes of an unfinished character wait for the rest; invalid sequences
 * become U+FFFD, one per maximal invalid subpart as in Rust's from_utf8_lossy) plus
 * the SentencePiece leading-space strip on the first character of the stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

/* ---- loading ---------------------------------------------------------------------- */

typedef enum { DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_BYTE_LEVEL, DEC_STRIP, DEC_METASPACE } dec_kind;

typedef struct {
    dec_kind kind;
    pcre2_code *re;        /* Replace: its pattern (owned by the plan) */
    const char *to;        /* Replace content (points into the JSON doc, which outlives loading) */
    size_t to_len;
    const char *ch;        /* Strip's character, Metaspace's replacement */
    size_t ch_len, start, stop;
    int drop_first;        /* Metaspace: the first token loses its replacement characters */
} dec_step;

typedef struct {
    dec_step steps[16];
    size_t n;
    int fused; /* a Fuse or ByteLevel was seen: later steps see the whole text */
    int has_first; /* a step decodes the first token differently */
} dec_plan;

static void plan_free(dec_plan *plan)
{
    for (size_t i = 0; i < plan->n; i++)
        pcre2_code_free(plan->steps[i].re);
}

static int one_char(const json_value *v, const char *key, const char **ch, size_t *len, const char *where,
                    kv_err *err)
{
    int rc = tok_json_string(v, key, ch, len, where, err);
    if (rc)
        return rc;
    uint32_t cp;
    if (*len == 0 || kv_utf8_invalid_at(*ch, *len) != *len || kv_utf8_next(*ch, *len, &cp) != *len)
        return kv_err_set(err, KV_EFORMAT, "%s.%s: expected one character", where, key);
    return 0;
}

static int load_strip(kv_tokenizer *tok, dec_plan *plan, const json_value *v, const char *where, kv_err *err)
{
    const char *ch;
    size_t len;
    int64_t start, stop;
    int rc = one_char(v, "content", &ch, &len, where, err);
    if (rc)
        return rc;
    if (!json_get_int(v, "start", &start) || !json_get_int(v, "stop", &stop) || start < 0 || stop < 0 ||
        start > 1024 || stop > 1024)
        return kv_err_set(err, KV_EFORMAT, "%s: start/stop must be integers in [0, 1024]", where);
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

static int load_metaspace(dec_plan *plan, const json_value *v, const char *where, kv_err *err)
{
    dec_step st = {.kind = DEC_METASPACE, .drop_first = 1};
    int rc = one_char(v, "replacement", &st.ch, &st.ch_len, where, err);
    if (rc)
        return rc;
    const json_value *scheme = json_get(v, "prepend_scheme"), *legacy = json_get(v, "add_prefix_space");
    if (scheme && scheme->type == JSON_STRING)
        st.drop_first = strcmp(scheme->u.str.s, "never") != 0;
    else if (legacy && legacy->type == JSON_BOOL)
        st.drop_first = legacy->u.boolean;
    plan->has_first |= st.drop_first;
    plan->steps[plan->n++] = st;
    return 0;
}

static int load_step(kv_tokenizer *tok, dec_plan *plan, const json_value *v, const char *where, int depth,
                     kv_err *err)
{
    const char *type;
    int rc = tok_json_type(v, &type, where, err);
    if (rc)
        return rc;
    if (!strcmp(type, "Sequence")) {
        const json_value *list = json_get(v, "decoders");
        if (!list || list->type != JSON_ARRAY)
            return kv_err_set(err, KV_EFORMAT, "%s.decoders: expected an array", where);
        if (depth > 4)
            return kv_err_set(err, KV_EFORMAT, "%s: Sequence nested too deep", where);
        for (size_t i = 0; i < list->u.arr.n; i++) {
            char sub[96];
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", where, i);
            if ((rc = load_step(tok, plan, &list->u.arr.items[i], sub, depth + 1, err)))
                return rc;
        }
        return 0;
    }
    if (plan->n == sizeof plan->steps / sizeof *plan->steps)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: too many decoder steps", where);
    if (plan->fused && strcmp(type, "Strip") && strcmp(type, "Fuse"))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: decoder '%s' after Fuse or ByteLevel is not supported", where,
                          type);
    if (!strcmp(type, "Fuse")) {
        plan->fused = 1;
        return 0;
    }
    if (!strcmp(type, "Strip"))
        return load_strip(tok, plan, v, where, err);
    if (!strcmp(type, "Metaspace"))
        return load_metaspace(plan, v, where, err);
    if (!strcmp(type, "ByteFallback")) {
        plan->steps[plan->n++] = (dec_step){.kind = DEC_BYTE_FALLBACK};
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        /* HF's ByteLevel decoder joins all tokens into one string. */
        plan->steps[plan->n++] = (dec_step){.kind = DEC_BYTE_LEVEL};
        plan->fused = 1;
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        dec_step st = {.kind = DEC_REPLACE};
        if ((rc = tok_json_string(v, "content", &st.to, &st.to_len, where, err)) ||
            (rc = tok_json_pattern(v, &st.re, where, err)))
            return rc;
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
    return load_step(tok, plan, v, "decoder", 0, err);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

typedef struct {
    tok_buf a, b;
    tok_spans matches;
    pcre2_match_data *md;
} dec_scratch;

/* Applies one step to in, writing out (replaced). first: the token is the stream's first. */
static int apply_step(const kv_tokenizer *tok, const dec_step *st, int first, dec_scratch *sc, const tok_buf *in,
                      tok_buf *out)
{
    const char *s = in->p;
    size_t n = in->len;
    out->len = 0;
    switch (st->kind) {
    case DEC_REPLACE: {
        kv_err ignored;
        return tok_regex_replace(st->re, sc->md, s, n, st->to, st->to_len, out, &sc->matches, &ignored);
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
    case DEC_METASPACE: {
        size_t last = 0;
        for (size_t i = 0; i + st->ch_len <= n;) {
            if (memcmp(s + i, st->ch, st->ch_len)) {
                i++;
                continue;
            }
            if (tok_buf_put(out, s + last, i - last) || (!(first && st->drop_first) && tok_buf_put(out, " ", 1)))
                return KV_ENOMEM;
            i += st->ch_len;
            last = i;
        }
        return tok_buf_put(out, s + last, n - last);
    }
    }
    return 0;
}

/* The decoded bytes of every id, as the first token of a stream or not, into *pool / *off. */
static int precompute(kv_tokenizer *tok, const dec_plan *plan, int first, dec_scratch *sc, char **pool_out,
                      uint32_t **off_out)
{
    uint32_t *off = malloc(((size_t)tok->n_ids + 1) * sizeof *off);
    if (!off)
        return KV_ENOMEM;
    tok_buf pool = {0};
    int rc = 0;
    off[0] = 0;
    for (int32_t id = 0; id < tok->n_ids && !rc; id++) {
        if (tok->id_str[id] && !(tok->id_flags[id] & TOK_ID_SPECIAL)) {
            sc->a.len = 0;
            rc = tok_buf_put(&sc->a, tok->id_str[id], tok->id_len[id]);
            for (size_t k = 0; k < plan->n && !rc; k++) {
                rc = apply_step(tok, &plan->steps[k], first, sc, &sc->a, &sc->b);
                tok_buf t = sc->a;
                sc->a = sc->b;
                sc->b = t;
            }
            if (!rc)
                rc = tok_buf_put(&pool, sc->a.p, sc->a.len);
        }
        if (!rc && pool.len > UINT32_MAX)
            rc = KV_ENOMEM;
        off[id + 1] = (uint32_t)pool.len;
    }
    if (rc) {
        free(off);
        free(pool.p);
        return rc;
    }
    *pool_out = pool.p;
    *off_out = off;
    return 0;
}

int tok_decoder_load(kv_tokenizer *tok, const json_value *v, kv_err *err)
{
    dec_plan plan = {.n = 0};
    int rc = load_plan(tok, &plan, v, err);
    if (rc) {
        plan_free(&plan);
        return rc;
    }
    dec_scratch sc = {.md = pcre2_match_data_create(1, NULL)};
    rc = !sc.md ? KV_ENOMEM : precompute(tok, &plan, 0, &sc, &tok->dec_pool, &tok->dec_off);
    if (!rc && plan.has_first)
        rc = precompute(tok, &plan, 1, &sc, &tok->dec_first_pool, &tok->dec_first_off);
    free(sc.a.p);
    free(sc.b.p);
    free(sc.matches.p);
    pcre2_match_data_free(sc.md);
    plan_free(&plan);
    if (rc)
        return kv_err_set(err, rc == KV_ENOMEM ? KV_ENOMEM : KV_EFORMAT,
                          rc == KV_ENOMEM ? "out of memory" : "decoder: a Replace pattern failed on a token");
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

/* The decoded bytes of id at this point of the stream. */
static const char *id_text(const kv_tokenizer *tok, int32_t id, int first, size_t *len)
{
    if (first && tok->dec_first_pool) {
        *len = tok->dec_first_off[id + 1] - tok->dec_first_off[id];
        return tok->dec_first_pool + tok->dec_first_off[id];
    }
    *len = tok->dec_off[id + 1] - tok->dec_off[id];
    return tok->dec_pool + tok->dec_off[id];
}

static void push_id(kv_detok *d, writer *w, int32_t id)
{
    const kv_tokenizer *tok = d->tok;
    /* HF leaves special tokens and ids without a token out of the chain it decodes. */
    if ((tok->id_flags[id] & TOK_ID_SPECIAL) || !tok->id_str[id])
        return;
    if (tok->dec_join_space) {
        if (!d->at_start)
            feed(d, w, " ", 1);
        d->at_start = 0;
    }
    size_t len;
    const char *s = id_text(tok, id, d->first_token, &len);
    d->first_token = 0;
    feed(d, w, s, len);
}

void kv_detok_init(kv_detok *d, const kv_tokenizer *tok)
{
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->at_start = 1;
    d->first_token = 1;
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
        size_t later, first;
        id_text(tok, ids[i], 0, &later);
        id_text(tok, ids[i], 1, &first);
        size_t len = (later > first ? later : first) + 1;
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
