/* Pre-tokenizers, loading: Sequence, Split, ByteLevel, Digits, Punctuation, Whitespace,
 * WhitespaceSplit, Metaspace, each reduced to one of four kinds of step (tok_pre_step): a
 * regex split, a character-class split, ByteLevel, Metaspace. Applying them: pre_split.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

/* The pattern ByteLevel applies when use_regex is true (GPT-2's). */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* HF's Whitespace pre-tokenizer keeps the matches of this and drops the rest. */
static const char whitespace_pattern[] = "\\w+|[^\\w\\s]+";

/* Takes ownership of st.re (freed on failure). */
static int add_step(kv_tokenizer *tok, tok_pre_step st, kv_err *err)
{
    tok_pre_step *steps = realloc(tok->pre, (tok->n_pre + 1) * sizeof *steps);
    if (!steps) {
        pcre2_code_free(st.re);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    tok->pre = steps;
    steps[tok->n_pre++] = st;
    return 0;
}

static int load_behavior(const json_value *v, tok_split_behavior def, tok_split_behavior *out, const char *where,
                         kv_err *err)
{
    static const struct { const char *name; tok_split_behavior b; } names[] = {
        {"Removed", TOK_SPLIT_REMOVED},
        {"Isolated", TOK_SPLIT_ISOLATED},
        {"MergedWithPrevious", TOK_SPLIT_MERGED_WITH_PREVIOUS},
        {"MergedWithNext", TOK_SPLIT_MERGED_WITH_NEXT},
        {"Contiguous", TOK_SPLIT_CONTIGUOUS}};
    const json_value *b = json_get(v, "behavior");
    if (!b || b->type == JSON_NULL) {
        *out = def;
        return 0;
    }
    if (b->type == JSON_STRING)
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            if (!strcmp(b->u.str.s, names[i].name)) {
                *out = names[i].b;
                return 0;
            }
    return kv_err_set(err, KV_EFORMAT, "%s.behavior: expected Removed, Isolated, MergedWithPrevious, MergedWithNext "
                      "or Contiguous", where);
}

static int load_split(kv_tokenizer *tok, const json_value *v, const char *where, kv_err *err)
{
    tok_pre_step st = {.kind = TOK_PRE_SPLIT};
    int rc;
    if ((rc = load_behavior(v, TOK_SPLIT_ISOLATED, &st.behavior, where, err)) ||
        (rc = tok_json_opt_bool(v, "invert", 0, &st.invert, where, err)) ||
        (rc = tok_json_pattern(v, &st.re, where, err)))
        return rc;
    return add_step(tok, st, err);
}

static int load_byte_level(kv_tokenizer *tok, const json_value *v, const char *where, kv_err *err)
{
    tok_pre_step st = {.kind = TOK_PRE_BYTE_LEVEL};
    int rc, use_regex;
    /* Defaults are HF's ByteLevel::default(). trim_offsets changes offsets only. */
    if ((rc = tok_json_opt_bool(v, "add_prefix_space", 1, &st.add_prefix_space, where, err)) ||
        (rc = tok_json_opt_bool(v, "use_regex", 1, &use_regex, where, err)))
        return rc;
    if (use_regex && (rc = tok_regex_compile(gpt2_pattern, sizeof gpt2_pattern - 1, 0, &st.re, where, err)))
        return rc;
    return add_step(tok, st, err);
}

static int load_metaspace(kv_tokenizer *tok, const json_value *v, const char *where, kv_err *err)
{
    tok_pre_step st = {.kind = TOK_PRE_METASPACE, .prepend = TOK_PREPEND_ALWAYS};
    const char *rep;
    size_t len;
    int rc = tok_json_string(v, "replacement", &rep, &len, where, err);
    if (rc)
        return rc;
    if (len == 0 || kv_utf8_invalid_at(rep, len) != len || kv_utf8_next(rep, len, &st.replacement_cp) != len)
        return kv_err_set(err, KV_EFORMAT, "%s.replacement: expected one character", where);
    memcpy(st.replacement, rep, len);
    st.replacement_len = len;
    if ((rc = tok_json_opt_bool(v, "split", 1, &st.split, where, err)))
        return rc;
    const json_value *scheme = json_get(v, "prepend_scheme");
    if (scheme && scheme->type != JSON_NULL) {
        if (scheme->type != JSON_STRING || (strcmp(scheme->u.str.s, "always") && strcmp(scheme->u.str.s, "first") &&
                                            strcmp(scheme->u.str.s, "never")))
            return kv_err_set(err, KV_EFORMAT, "%s.prepend_scheme: expected \"always\", \"first\" or \"never\"", where);
        st.prepend = !strcmp(scheme->u.str.s, "always") ? TOK_PREPEND_ALWAYS
                     : !strcmp(scheme->u.str.s, "first") ? TOK_PREPEND_FIRST
                                                         : TOK_PREPEND_NEVER;
    }
    /* Files older than prepend_scheme have add_prefix_space; HF refuses the two disagreeing. */
    const json_value *legacy = json_get(v, "add_prefix_space");
    if (legacy && legacy->type != JSON_NULL) {
        if (legacy->type != JSON_BOOL)
            return kv_err_set(err, KV_EFORMAT, "%s.add_prefix_space: expected a bool", where);
        if (!legacy->u.boolean && (!scheme || scheme->type == JSON_NULL))
            st.prepend = TOK_PREPEND_NEVER;
        else if (!legacy->u.boolean != (st.prepend == TOK_PREPEND_NEVER))
            return kv_err_set(err, KV_EFORMAT, "%s: add_prefix_space does not match prepend_scheme", where);
    }
    return add_step(tok, st, err);
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
    if (!strcmp(type, "Metaspace"))
        return load_metaspace(tok, v, where, err);
    if (!strcmp(type, "Digits")) {
        /* individual_digits: each digit alone; else runs of digits together. */
        tok_pre_step st = {.kind = TOK_PRE_CHARS, .chars = TOK_CHARS_NUMERIC};
        int individual;
        if ((rc = tok_json_opt_bool(v, "individual_digits", 0, &individual, where, err)))
            return rc;
        st.behavior = individual ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS;
        return add_step(tok, st, err);
    }
    if (!strcmp(type, "Punctuation")) {
        tok_pre_step st = {.kind = TOK_PRE_CHARS, .chars = TOK_CHARS_PUNCTUATION};
        if ((rc = load_behavior(v, TOK_SPLIT_ISOLATED, &st.behavior, where, err)))
            return rc;
        return add_step(tok, st, err);
    }
    if (!strcmp(type, "WhitespaceSplit"))
        return add_step(tok, (tok_pre_step){.kind = TOK_PRE_CHARS, .chars = TOK_CHARS_SPACE,
                                            .behavior = TOK_SPLIT_REMOVED}, err);
    if (!strcmp(type, "Whitespace")) {
        tok_pre_step st = {.kind = TOK_PRE_SPLIT, .behavior = TOK_SPLIT_REMOVED, .invert = 1};
        if ((rc = tok_regex_compile(whitespace_pattern, sizeof whitespace_pattern - 1, 0, &st.re, where, err)))
            return rc;
        return add_step(tok, st, err);
    }
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
