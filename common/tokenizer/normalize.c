/* Normalizers: Sequence, Prepend, Replace (String pattern). SentencePiece-style tokenizers
 * use Prepend("▁") + Replace(" " -> "▁") so the whole text becomes one "▁"-joined word. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

static int add_step(kv_tokenizer *tok, tok_norm_kind kind, const char *from, size_t from_len,
                    const char *to, size_t to_len, kv_err *err)
{
    /* Normalized text must stay valid UTF-8: the regexes and added-token matching rely on it. */
    if ((from && kv_utf8_invalid_at(from, from_len) != from_len) || kv_utf8_invalid_at(to, to_len) != to_len)
        return kv_err_set(err, KV_EFORMAT, "normalizer: string is not valid UTF-8");
    tok_norm_step *steps = realloc(tok->norm, (tok->n_norm + 1) * sizeof *steps);
    if (!steps)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    tok->norm = steps;
    tok_norm_step *s = &steps[tok->n_norm];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->from = from ? tok_strndup(from, from_len) : NULL;
    s->to = tok_strndup(to, to_len);
    if ((from && !s->from) || !s->to) {
        free(s->from);
        free(s->to);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    s->from_len = from_len;
    s->to_len = to_len;
    tok->n_norm++;
    return 0;
}

/* Replace/decoder patterns are {"String": "..."} or {"Regex": "..."}; only String is literal. */
static int string_pattern(const json_value *obj, const char **s, size_t *len, const char *where,
                          kv_err *err)
{
    const json_value *p = json_get(obj, "pattern");
    if (!p || p->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s.pattern: expected an object", where);
    if (json_get(p, "Regex"))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: Regex patterns are not supported", where);
    int rc = tok_json_string(p, "String", s, len, where, err);
    if (rc)
        return rc;
    if (*len == 0)
        return kv_err_set(err, KV_EFORMAT, "%s.pattern: empty String pattern", where);
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
        return add_step(tok, TOK_NORM_PREPEND, NULL, 0, s, n, err);
    }
    if (!strcmp(type, "Replace")) {
        const char *from, *to;
        size_t from_len, to_len;
        if ((rc = string_pattern(v, &from, &from_len, where, err)) ||
            (rc = tok_json_string(v, "content", &to, &to_len, where, err)))
            return rc;
        return add_step(tok, TOK_NORM_REPLACE, from, from_len, to, to_len, err);
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
        free(tok->norm[i].from);
        free(tok->norm[i].to);
    }
    free(tok->norm);
    tok->norm = NULL;
    tok->n_norm = 0;
}

static int replace_all(const tok_norm_step *st, const char *s, size_t n, tok_buf *out)
{
    size_t i = 0, last = 0;
    while (i + st->from_len <= n) {
        if (s[i] == st->from[0] && !memcmp(s + i, st->from, st->from_len)) {
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

int tok_normalize(const kv_tokenizer *tok, const char *s, size_t n, tok_buf *out)
{
    out->len = 0;
    if (tok_buf_put(out, s, n))
        return KV_ENOMEM;
    tok_buf tmp = {0};
    for (size_t k = 0; k < tok->n_norm; k++) {
        const tok_norm_step *st = &tok->norm[k];
        if (out->len == 0)
            break; /* HF: every supported normalizer leaves an empty string empty */
        tmp.len = 0;
        int rc = st->kind == TOK_NORM_PREPEND
                     ? (tok_buf_put(&tmp, st->to, st->to_len) || tok_buf_put(&tmp, out->p, out->len))
                     : replace_all(st, out->p, out->len, &tmp);
        if (rc) {
            free(tmp.p);
            return KV_ENOMEM;
        }
        tok_buf swap = *out;
        *out = tmp;
        tmp = swap;
    }
    free(tmp.p);
    return 0;
}
