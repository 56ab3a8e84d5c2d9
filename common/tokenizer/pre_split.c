/* Pre-tokenizers, applying: HF's PreTokenizedString over byte spans. Each step maps the list
 * of pieces to a new one: splits only rewrite spans (a piece's matches become marks, the
 * behavior folds them, empty pieces vanish); ByteLevel and Metaspace also rewrite the text. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

static int oom(kv_err *err) { return kv_err_set(err, KV_ENOMEM, "out of memory"); }

void tok_pre_scratch_free(tok_pre_scratch *sc)
{
    for (int i = 0; i < 2; i++) {
        free(sc->text[i].p);
        free(sc->spans[i].p);
    }
    free(sc->matches.p);
    free(sc->marks.p);
    pcre2_match_data_free(sc->md);
    memset(sc, 0, sizeof *sc);
}

static int char_matches(tok_char_class cls, uint32_t want, uint32_t cp)
{
    switch (cls) {
    case TOK_CHARS_NUMERIC: return tok_is_numeric(cp);
    case TOK_CHARS_PUNCTUATION: return tok_is_punctuation(cp);
    case TOK_CHARS_SPACE: return tok_is_space(cp);
    case TOK_CHARS_ONE: return cp == want;
    }
    return 0;
}

/* HF's find_matches for a character predicate: every matching character is its own match,
 * the stretches between them are non-matches. */
static int mark_chars(tok_char_class cls, uint32_t want, const char *s, size_t n, tok_marks *out)
{
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = kv_utf8_next(s + i, n - i, &cp);
        if (char_matches(cls, want, cp)) {
            if ((last < i && tok_marks_push(out, last, i, 0)) || tok_marks_push(out, i, i + k, 1))
                return KV_ENOMEM;
            last = i + k;
        }
        i += k;
    }
    return last < n ? tok_marks_push(out, last, n, 0) : 0;
}

/* The same for a regex: matches (empty ones too) and the stretches between them. */
static int mark_regex(const pcre2_code *re, tok_pre_scratch *sc, const char *s, size_t n, kv_err *err)
{
    int rc = tok_regex_matches(re, sc->md, s, n, &sc->matches, err);
    if (rc)
        return rc;
    size_t last = 0;
    for (size_t i = 0; i < sc->matches.len; i++) {
        size_t a = sc->matches.p[i].off, z = a + sc->matches.p[i].len;
        if ((last != a && tok_marks_push(&sc->marks, last, a, 0)) || tok_marks_push(&sc->marks, a, z, 1))
            return oom(err);
        last = z;
    }
    if (last != n && tok_marks_push(&sc->marks, last, n, 0))
        return oom(err);
    return 0;
}

/* Folds the marks as HF's NormalizedString::split does for the behavior, then pushes the
 * non-empty pieces (at base + offset). */
static int fold_marks(tok_split_behavior behavior, int invert, tok_marks *m, size_t base, tok_spans *out)
{
    size_t n = m->len, kept = 0;
    tok_mark *p = m->p;
    for (size_t i = 0; i < n; i++)
        p[i].is_match ^= invert;
    switch (behavior) {
    case TOK_SPLIT_ISOLATED:
        kept = n;
        break;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!p[i].is_match)
                p[kept++] = p[i];
        break;
    case TOK_SPLIT_CONTIGUOUS:
    case TOK_SPLIT_MERGED_WITH_PREVIOUS: {
        int prev = 0;
        for (size_t i = 0; i < n; i++) {
            int join = behavior == TOK_SPLIT_CONTIGUOUS ? p[i].is_match == prev : p[i].is_match && !prev;
            prev = p[i].is_match;
            if (join && kept)
                p[kept - 1].end = p[i].end;
            else
                p[kept++] = p[i];
        }
        break;
    }
    case TOK_SPLIT_MERGED_WITH_NEXT: { /* the same fold from the right */
        int prev = 0;
        size_t w = n;
        for (size_t i = n; i-- > 0;) {
            int join = p[i].is_match && !prev;
            prev = p[i].is_match;
            if (join && w < n)
                p[w].start = p[i].start;
            else
                p[--w] = p[i];
        }
        memmove(p, p + w, (n - w) * sizeof *p);
        kept = n - w;
        break;
    }
    }
    for (size_t i = 0; i < kept; i++)
        if (p[i].end > p[i].start && tok_spans_push(out, base + p[i].start, p[i].end - p[i].start))
            return KV_ENOMEM;
    return 0;
}

/* One split step over every piece. *first_at_start: whether the first piece begins the input;
 * it stays so only if the first output piece still starts where the first input piece did. */
static int split_all(const tok_pre_step *st, tok_pre_scratch *sc, const tok_buf *text, const tok_spans *in,
                     tok_spans *out, int *first_at_start, kv_err *err)
{
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        const char *s = text->p + in->p[i].off;
        size_t n = in->p[i].len;
        sc->marks.len = 0;
        int rc;
        if (st->re) { /* Split, or ByteLevel's regex */
            if ((rc = mark_regex(st->re, sc, s, n, err)))
                return rc;
        } else if (mark_chars(st->kind == TOK_PRE_METASPACE ? TOK_CHARS_ONE : st->chars, st->replacement_cp, s, n,
                              &sc->marks)) {
            return oom(err);
        }
        tok_split_behavior b = st->kind == TOK_PRE_METASPACE    ? TOK_SPLIT_MERGED_WITH_NEXT
                               : st->kind == TOK_PRE_BYTE_LEVEL ? TOK_SPLIT_ISOLATED
                                                                : st->behavior;
        if (fold_marks(b, st->kind == TOK_PRE_SPLIT && st->invert, &sc->marks, in->p[i].off, out))
            return oom(err);
    }
    if (in->len && (!out->len || out->p[0].off != in->p[0].off))
        *first_at_start = 0;
    return 0;
}

/* ByteLevel's add_prefix_space: a space before each piece that lacks one. */
static int prefix_space(const tok_buf *text, const tok_spans *in, tok_buf *out_text, tok_spans *out)
{
    out_text->len = 0;
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        const char *s = text->p + in->p[i].off;
        size_t n = in->p[i].len, off = out_text->len;
        if ((s[0] != ' ' && tok_buf_put(out_text, " ", 1)) || tok_buf_put(out_text, s, n) ||
            tok_spans_push(out, off, out_text->len - off))
            return KV_ENOMEM;
    }
    return 0;
}

static int map_bytes(const tok_byte_level *bl, const tok_buf *text, const tok_spans *in, tok_buf *out_text,
                     tok_spans *out)
{
    out_text->len = 0;
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        const unsigned char *s = (const unsigned char *)text->p + in->p[i].off;
        size_t off = out_text->len;
        for (size_t k = 0; k < in->p[i].len; k++)
            if (tok_buf_put(out_text, bl->utf8[s[k]], bl->utf8_len[s[k]]))
                return KV_ENOMEM;
        if (tok_spans_push(out, off, out_text->len - off))
            return KV_ENOMEM;
    }
    return 0;
}

/* Metaspace: spaces become the replacement, which is prepended as the scheme says. */
static int metaspace(const tok_pre_step *st, const tok_buf *text, const tok_spans *in, int first_at_start,
                     tok_buf *out_text, tok_spans *out)
{
    out_text->len = 0;
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        const char *s = text->p + in->p[i].off;
        size_t n = in->p[i].len, off = out_text->len;
        int starts = n >= st->replacement_len && !memcmp(s, st->replacement, st->replacement_len);
        int prepend = st->prepend == TOK_PREPEND_ALWAYS || (st->prepend == TOK_PREPEND_FIRST && i == 0 && first_at_start);
        if (prepend && !starts && s[0] != ' ' && tok_buf_put(out_text, st->replacement, st->replacement_len))
            return KV_ENOMEM;
        for (size_t k = 0; k < n; k++)
            if (s[k] == ' ' ? tok_buf_put(out_text, st->replacement, st->replacement_len)
                            : tok_buf_put(out_text, s + k, 1))
                return KV_ENOMEM;
        if (tok_spans_push(out, off, out_text->len - off))
            return KV_ENOMEM;
    }
    return 0;
}

int tok_pretokenize(const kv_tokenizer *tok, tok_pre_scratch *sc, const char *s, size_t n, int at_start,
                    const tok_buf **text, const tok_spans **pieces, kv_err *err)
{
    /* t / p: which of the two buffers hold the current text / spans. */
    int t = 0, p = 0, first_at_start = at_start;
    sc->text[0].len = 0;
    sc->spans[0].len = 0;
    if (tok_buf_put(&sc->text[0], s, n) || (n && tok_spans_push(&sc->spans[0], 0, n)))
        return oom(err);
    if (!sc->md && tok->n_pre && !(sc->md = pcre2_match_data_create(1, NULL)))
        return oom(err);
    for (size_t k = 0; k < tok->n_pre; k++) {
        const tok_pre_step *st = &tok->pre[k];
        int rc = 0;
        if (st->kind == TOK_PRE_BYTE_LEVEL && st->add_prefix_space) {
            if (prefix_space(&sc->text[t], &sc->spans[p], &sc->text[!t], &sc->spans[!p]))
                return oom(err);
            t = !t;
            p = !p;
        }
        if (st->kind == TOK_PRE_METASPACE) {
            if (metaspace(st, &sc->text[t], &sc->spans[p], first_at_start, &sc->text[!t], &sc->spans[!p]))
                return oom(err);
            t = !t;
            p = !p;
        }
        if (st->re || st->kind == TOK_PRE_CHARS || (st->kind == TOK_PRE_METASPACE && st->split)) {
            if ((rc = split_all(st, sc, &sc->text[t], &sc->spans[p], &sc->spans[!p], &first_at_start, err)))
                return rc;
            p = !p;
        }
        if (st->kind == TOK_PRE_BYTE_LEVEL) {
            if (map_bytes(&tok->byte_level, &sc->text[t], &sc->spans[p], &sc->text[!t], &sc->spans[!p]))
                return oom(err);
            t = !t;
            p = !p;
        }
    }
    *text = &sc->text[t];
    *pieces = &sc->spans[p];
    return 0;
}
