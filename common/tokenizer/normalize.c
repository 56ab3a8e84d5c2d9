/* Normalizers: Sequence, Prepend, Replace (String or Regex pattern), NFC/NFD/NFKC/NFKD,
 * Lowercase, Strip. SentencePiece-style tokenizers use Prepend("▁") + Replace(" " -> "▁") so
 * the whole text becomes one "▁"-joined word; BERT-style ones NFD + Lowercase + Strip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

static int oom(kv_err *err) { return kv_err_set(err, KV_ENOMEM, "out of memory"); }

/* Takes ownership of re (freed on failure). */
static int add_step(kv_tokenizer *tok, tok_norm_step st, const char *to, size_t to_len, kv_err *err)
{
    /* Normalized text must stay valid UTF-8: the regexes and added-token matching rely on it. */
    if (to && kv_utf8_invalid_at(to, to_len) != to_len) {
        pcre2_code_free(st.re);
        return kv_err_set(err, KV_EFORMAT, "normalizer: string is not valid UTF-8");
    }
    tok_norm_step *steps = realloc(tok->norm, (tok->n_norm + 1) * sizeof *steps);
    if (!steps || (to && !(st.to = tok_strndup(to, to_len)))) {
        if (steps)
            tok->norm = steps;
        pcre2_code_free(st.re);
        return oom(err);
    }
    st.to_len = to_len;
    tok->norm = steps;
    steps[tok->n_norm++] = st;
    return 0;
}

static int load_one(kv_tokenizer *tok, const json_value *v, const char *where, int depth, kv_err *err)
{
    const char *type;
    int rc = tok_json_type(v, &type, where, err);
    if (rc)
        return rc;
    char sub[96];
    if (!strcmp(type, "Sequence")) {
        const json_value *list = json_get(v, "normalizers");
        if (!list || list->type != JSON_ARRAY)
            return kv_err_set(err, KV_EFORMAT, "%s.normalizers: expected an array", where);
        if (depth > 4)
            return kv_err_set(err, KV_EFORMAT, "%s: Sequence nested too deep", where);
        for (size_t i = 0; i < list->u.arr.n; i++) {
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
            if ((rc = load_one(tok, &list->u.arr.items[i], sub, depth + 1, err)))
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *s;
        size_t n;
        if ((rc = tok_json_string(v, "prepend", &s, &n, where, err)))
            return rc;
        return add_step(tok, (tok_norm_step){.kind = TOK_NORM_PREPEND}, s, n, err);
    }
    if (!strcmp(type, "Replace")) {
        const char *to;
        size_t to_len;
        pcre2_code *re;
        if ((rc = tok_json_string(v, "content", &to, &to_len, where, err)) ||
            (rc = tok_json_pattern(v, &re, where, err)))
            return rc;
        return add_step(tok, (tok_norm_step){.kind = TOK_NORM_REPLACE, .re = re}, to, to_len, err);
    }
    static const struct { const char *name; tok_unicode_form form; } forms[] = {
        {"NFC", TOK_NFC}, {"NFD", TOK_NFD}, {"NFKC", TOK_NFKC}, {"NFKD", TOK_NFKD}};
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++)
        if (!strcmp(type, forms[i].name))
            return add_step(tok, (tok_norm_step){.kind = TOK_NORM_UNICODE, .form = forms[i].form}, NULL, 0, err);
    if (!strcmp(type, "Lowercase"))
        return add_step(tok, (tok_norm_step){.kind = TOK_NORM_LOWERCASE}, NULL, 0, err);
    if (!strcmp(type, "Strip")) {
        tok_norm_step st = {.kind = TOK_NORM_STRIP};
        if ((rc = tok_json_opt_bool(v, "strip_left", 1, &st.strip_left, where, err)) ||
            (rc = tok_json_opt_bool(v, "strip_right", 1, &st.strip_right, where, err)))
            return rc;
        return add_step(tok, st, NULL, 0, err);
    }
    return kv_err_set(err, KV_EUNSUPPORTED, "%s: normalizer type '%s' is not supported", where, type);
}

int tok_normalizer_load(kv_tokenizer *tok, const json_value *v, kv_err *err)
{
    if (!v || v->type == JSON_NULL)
        return 0;
    return load_one(tok, v, "normalizer", 0, err);
}

void tok_normalizer_free(kv_tokenizer *tok)
{
    for (size_t i = 0; i < tok->n_norm; i++) {
        pcre2_code_free(tok->norm[i].re);
        free(tok->norm[i].to);
    }
    free(tok->norm);
    tok->norm = NULL;
    tok->n_norm = 0;
}

/* Rust's trim_start / trim_end: White_Space characters. */
static int strip(const tok_norm_step *st, const char *s, size_t n, tok_buf *out)
{
    size_t a = 0, z = n;
    while (st->strip_left && a < z) {
        uint32_t cp;
        size_t k = kv_utf8_next(s + a, z - a, &cp);
        if (!tok_is_space(cp))
            break;
        a += k;
    }
    while (st->strip_right && z > a) {
        size_t k = z - 1;
        while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        uint32_t cp;
        kv_utf8_next(s + k, z - k, &cp);
        if (!tok_is_space(cp))
            break;
        z = k;
    }
    return tok_buf_put(out, s + a, z - a);
}

static int apply(const tok_norm_step *st, pcre2_match_data *md, tok_spans *matches, const tok_buf *in,
                 tok_buf *out, kv_err *err)
{
    out->len = 0;
    int rc = 0;
    switch (st->kind) {
    case TOK_NORM_PREPEND:
        rc = tok_buf_put(out, st->to, st->to_len) || tok_buf_put(out, in->p, in->len);
        break;
    case TOK_NORM_REPLACE:
        return tok_regex_replace(st->re, md, in->p, in->len, st->to, st->to_len, out, matches, err);
    case TOK_NORM_UNICODE:
        rc = tok_unicode_normalize(st->form, in->p, in->len, out);
        break;
    case TOK_NORM_LOWERCASE:
        rc = tok_lowercase(in->p, in->len, out);
        break;
    case TOK_NORM_STRIP:
        rc = strip(st, in->p, in->len, out);
        break;
    }
    return rc ? oom(err) : 0;
}

int tok_normalize(const kv_tokenizer *tok, const char *s, size_t n, tok_buf *out, kv_err *err)
{
    out->len = 0;
    if (tok_buf_put(out, s, n))
        return oom(err);
    tok_buf tmp = {0};
    tok_spans matches = {0};
    pcre2_match_data *md = NULL;
    int rc = 0;
    for (size_t k = 0; k < tok->n_norm && !rc; k++) {
        const tok_norm_step *st = &tok->norm[k];
        if (out->len == 0)
            break; /* HF: every normalizer leaves an empty string empty */
        if (st->re && !md && !(md = pcre2_match_data_create(1, NULL))) {
            rc = oom(err);
            break;
        }
        if ((rc = apply(st, md, &matches, out, &tmp, err)))
            break;
        tok_buf swap = *out;
        *out = tmp;
        tmp = swap;
    }
    free(tmp.p);
    free(matches.p);
    pcre2_match_data_free(md);
    return rc;
}
