/* Pre-tokenizers: Split (regex or literal, Isolated) and ByteLevel, alone or in a Sequence.
 * Regexes run on PCRE2 in UTF + Unicode-property mode, which covers the constructs HF's
 * patterns use ((?i:...), \p{L}, \p{N}, (?!\S)); JIT when available. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

/* The pattern ByteLevel applies when use_regex is true (GPT-2's). */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int compile(const char *pat, size_t len, uint32_t extra, pcre2_code **out, const char *where,
                   kv_err *err)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP | extra, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return kv_err_set(err, code == PCRE2_ERROR_HEAPLIMIT || code == PCRE2_ERROR_NOMEMORY ? KV_ENOMEM : KV_EFORMAT,
                          "%s: bad regex at offset %zu: %s", where, (size_t)off, (const char *)msg);
    }
    /* JIT is an optimisation only: when unavailable pcre2_match interprets. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return 0;
}

static int add_step(kv_tokenizer *tok, tok_pre_kind kind, pcre2_code *re, int add_prefix_space,
                    kv_err *err)
{
    tok_pre_step *steps = realloc(tok->pre, (tok->n_pre + 1) * sizeof *steps);
    if (!steps) {
        pcre2_code_free(re);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    tok->pre = steps;
    steps[tok->n_pre++] = (tok_pre_step){.kind = kind, .re = re, .add_prefix_space = add_prefix_space};
    return 0;
}

static int load_split(kv_tokenizer *tok, const json_value *v, const char *where, kv_err *err)
{
    const char *behavior;
    size_t len;
    int rc, invert;
    if ((rc = tok_json_string(v, "behavior", &behavior, &len, where, err)) ||
        (rc = tok_json_opt_bool(v, "invert", 0, &invert, where, err)))
        return rc;
    if (strcmp(behavior, "Isolated"))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: Split behavior '%s' is not supported (only Isolated)",
                          where, behavior);
    if (invert)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: Split with invert=true is not supported", where);
    const json_value *p = json_get(v, "pattern");
    if (!p || p->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s.pattern: expected an object", where);
    const char *pat;
    uint32_t extra = 0;
    char pwhere[112];
    snprintf(pwhere, sizeof pwhere, "%s.pattern", where);
    if (json_get(p, "Regex")) {
        rc = tok_json_string(p, "Regex", &pat, &len, pwhere, err);
    } else {
        rc = tok_json_string(p, "String", &pat, &len, pwhere, err);
        extra = PCRE2_LITERAL;
    }
    if (rc)
        return rc;
    if (len == 0)
        return kv_err_set(err, KV_EFORMAT, "%s.pattern: empty pattern", where);
    pcre2_code *re;
    if ((rc = compile(pat, len, extra, &re, where, err)))
        return rc;
    return add_step(tok, TOK_PRE_SPLIT, re, 0, err);
}

static int load_byte_level(kv_tokenizer *tok, const json_value *v, const char *where, kv_err *err)
{
    int rc, prefix, use_regex;
    /* Defaults are HF's ByteLevel::default(). */
    if ((rc = tok_json_opt_bool(v, "add_prefix_space", 1, &prefix, where, err)) ||
        (rc = tok_json_opt_bool(v, "use_regex", 1, &use_regex, where, err)))
        return rc;
    pcre2_code *re = NULL;
    if (use_regex && (rc = compile(gpt2_pattern, sizeof gpt2_pattern - 1, 0, &re, where, err)))
        return rc;
    return add_step(tok, TOK_PRE_BYTE_LEVEL, re, prefix, err);
}

static int load_one(kv_tokenizer *tok, const json_value *v, const char *where, int depth, kv_err *err)
{
    const char *type;
    int rc = tok_json_type(v, &type, where, err);
    if (rc)
        return rc;
    if (!strcmp(type, "Sequence")) {
        const json_value *list = json_get(v, "pretokenizers");
        if (!list || list->type != JSON_ARRAY)
            return kv_err_set(err, KV_EFORMAT, "%s.pretokenizers: expected an array", where);
        if (depth > 4)
            return kv_err_set(err, KV_EFORMAT, "%s: Sequence nested too deep", where);
        char sub[96];
        for (size_t i = 0; i < list->u.arr.n; i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            if ((rc = load_one(tok, &list->u.arr.items[i], sub, depth + 1, err)))
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "Split"))
        return load_split(tok, v, where, err);
    if (!strcmp(type, "ByteLevel"))
        return load_byte_level(tok, v, where, err);
    return kv_err_set(err, KV_EUNSUPPORTED, "%s: pre-tokenizer type '%s' is not supported", where, type);
}

int tok_pre_tokenizer_load(kv_tokenizer *tok, const json_value *v, kv_err *err)
{
    if (!v || v->type == JSON_NULL)
        return 0;
    return load_one(tok, v, "pre_tokenizer", 0, err);
}

void tok_pre_tokenizer_free(kv_tokenizer *tok)
{
    for (size_t i = 0; i < tok->n_pre; i++)
        pcre2_code_free(tok->pre[i].re);
    free(tok->pre);
    tok->pre = NULL;
    tok->n_pre = 0;
}

void tok_pre_scratch_free(tok_pre_scratch *sc)
{
    for (int i = 0; i < 2; i++) {
        free(sc->text[i].p);
        free(sc->spans[i].p);
    }
    pcre2_match_data_free(sc->md);
    memset(sc, 0, sizeof *sc);
}

static int regex_error(int rc, kv_err *err)
{
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return kv_err_set(err, rc == PCRE2_ERROR_NOMEMORY ? KV_ENOMEM : KV_ERANGE,
                      "pre-tokenizer regex failed: %s", (const char *)msg);
}

/* HF Split(Isolated): every match is a piece and so is every stretch between matches;
 * an empty match only marks a boundary. Pushes spans relative to `base`. */
static int split_piece(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, size_t base,
                       tok_spans *out, kv_err *err)
{
    size_t bad = kv_utf8_invalid_at(s, n);
    if (bad != n)
        return kv_err_set(err, KV_EINVAL, "pre-tokenizer input is not valid UTF-8 (byte %zu)", bad);
    size_t pos = 0, last = 0;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* deep backtracking: the interpreter uses the heap */
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return regex_error(rc, err);
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t m0 = ov[0], m1 = ov[1];
        if (m0 > last && tok_spans_push(out, base + last, m0 - last))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        if (m1 > m0 && tok_spans_push(out, base + m0, m1 - m0))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        if (m0 > last || m1 > m0)
            last = m1;
        if (m1 > m0) {
            pos = m1;
        } else {
            if (m0 >= n)
                break;
            uint32_t cp;
            pos = m0 + kv_utf8_next(s + m0, n - m0, &cp);
        }
    }
    if (last < n && tok_spans_push(out, base + last, n - last))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    return 0;
}

static int split_all(const pcre2_code *re, tok_pre_scratch *sc, const tok_buf *text, const tok_spans *in,
                     tok_spans *out, kv_err *err)
{
    out->len = 0;
    for (size_t i = 0; i < in->len; i++) {
        int rc = split_piece(re, sc->md, text->p + in->p[i].off, in->p[i].len, in->p[i].off, out, err);
        if (rc)
            return rc;
    }
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

int tok_pretokenize(const kv_tokenizer *tok, tok_pre_scratch *sc, const char *s, size_t n,
                    const tok_buf **text, const tok_spans **pieces, kv_err *err)
{
    /* t / p: which of the two buffers hold the current text / spans. Splits only rewrite
     * spans; prefixing and byte mapping rewrite both. */
    int t = 0, p = 0;
    sc->text[0].len = 0;
    sc->spans[0].len = 0;
    if (tok_buf_put(&sc->text[0], s, n) || (n && tok_spans_push(&sc->spans[0], 0, n)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    if (!sc->md && tok->n_pre && !(sc->md = pcre2_match_data_create(1, NULL)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t k = 0; k < tok->n_pre; k++) {
        const tok_pre_step *st = &tok->pre[k];
        int rc = 0;
        if (st->kind == TOK_PRE_BYTE_LEVEL && st->add_prefix_space) {
            if (prefix_space(&sc->text[t], &sc->spans[p], &sc->text[!t], &sc->spans[!p]))
                return kv_err_set(err, KV_ENOMEM, "out of memory");
            t = !t;
            p = !p;
        }
        if (st->re) {
            if ((rc = split_all(st->re, sc, &sc->text[t], &sc->spans[p], &sc->spans[!p], err)))
                return rc;
            p = !p;
        }
        if (st->kind == TOK_PRE_BYTE_LEVEL) {
            if (map_bytes(&tok->byte_level, &sc->text[t], &sc->spans[p], &sc->text[!t], &sc->spans[!p]))
                return kv_err_set(err, KV_ENOMEM, "out of memory");
            t = !t;
            p = !p;
        }
    }
    *text = &sc->text[t];
    *pieces = &sc->spans[p];
    return 0;
}
