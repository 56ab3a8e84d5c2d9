/* Added tokens (special or not): loaded from "added_tokens", matched in the text before
 * anything else (leftmost, then longest), each mapping straight to its id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

int tok_added_load(kv_tokenizer *tok, const json_value *arr, char **pool_at, kv_err *err)
{
    if (!arr || arr->type == JSON_NULL)
        return 0;
    if (arr->type != JSON_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "added_tokens: expected an array, got %s", json_type_name(arr->type));
    size_t n = arr->u.arr.n;
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added || tok_str_map_init(&tok->added_map, n))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_value *v = &arr->u.arr.items[i];
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (v->type != JSON_OBJECT)
            return kv_err_set(err, KV_EFORMAT, "%s: expected an object, got %s", where, json_type_name(v->type));
        int64_t id;
        const char *content;
        size_t len;
        int special, lstrip, rstrip, single_word, normalized, rc;
        if (!json_get_int(v, "id", &id) || id < 0 || id >= TOK_MAX_ID)
            return kv_err_set(err, KV_EFORMAT, "%s.id: expected an integer in [0, %d)", where, TOK_MAX_ID);
        /* Flag defaults are HF AddedToken's. */
        if ((rc = tok_json_string(v, "content", &content, &len, where, err)) ||
            (rc = tok_json_opt_bool(v, "special", 0, &special, where, err)) ||
            (rc = tok_json_opt_bool(v, "lstrip", 0, &lstrip, where, err)) ||
            (rc = tok_json_opt_bool(v, "rstrip", 0, &rstrip, where, err)) ||
            (rc = tok_json_opt_bool(v, "single_word", 0, &single_word, where, err)) ||
            (rc = tok_json_opt_bool(v, "normalized", !special, &normalized, where, err)))
            return rc;
        if (len == 0)
            return kv_err_set(err, KV_EFORMAT, "%s.content: empty", where);
        if (kv_utf8_invalid_at(content, len) != len)
            return kv_err_set(err, KV_EFORMAT, "%s.content: not valid UTF-8", where);
        if ((int32_t)id >= tok->n_ids)
            return kv_err_set(err, KV_EFORMAT, "%s.id: %lld out of range", where, (long long)id);
        char *copy = *pool_at;
        memcpy(copy, content, len);
        copy[len] = '\0';
        *pool_at += len + 1;
        rc = tok_str_map_put(&tok->added_map, copy, len, (int32_t)id);
        if (rc == 1)
            return kv_err_set(err, KV_EFORMAT, "%s: duplicate added token \"%.64s\"", where, content);
        if (rc)
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        if (tok->id_flags[id] & TOK_ID_ADDED)
            return kv_err_set(err, KV_EFORMAT, "%s: id %lld used by two added tokens", where, (long long)id);
        tok_added *a = &tok->added[tok->n_added++];
        a->content = copy;
        a->len = len;
        a->id = (int32_t)id;
        a->special = (unsigned char)special;
        a->lstrip = (unsigned char)lstrip;
        a->rstrip = (unsigned char)rstrip;
        a->single_word = (unsigned char)single_word;
        a->normalized = (unsigned char)normalized;
        /* An added token's content is what its id decodes to, even over a vocab entry. */
        tok->id_str[id] = copy;
        tok->id_len[id] = (uint32_t)len;
        tok->id_flags[id] |= TOK_ID_ADDED | (special ? TOK_ID_SPECIAL : 0);
    }
    return 0;
}

void tok_added_free(kv_tokenizer *tok)
{
    for (size_t i = 0; i < tok->n_added; i++)
        free(tok->added[i].match);
    free(tok->added);
    tok->added = NULL;
    tok->n_added = 0;
    free(tok->match_raw.order);
    free(tok->match_normalized.order);
    tok->match_raw.order = tok->match_normalized.order = NULL;
    tok_str_map_free(&tok->added_map);
    pcre2_code_free(tok->word_re);
    tok->word_re = NULL;
}

static void sort_group(const tok_added *added, uint32_t *order, size_t n)
{
    /* Insertion sort by length descending: groups are small (added tokens are few). */
    for (size_t i = 1; i < n; i++) {
        uint32_t x = order[i];
        size_t j = i;
        while (j > 0 && added[order[j - 1]].match_len < added[x].match_len) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = x;
    }
}

static int build_index(kv_tokenizer *tok, tok_added_index *ix, int normalized)
{
    uint32_t count[256] = {0};
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].normalized == normalized && tok->added[i].match_len)
            count[(unsigned char)tok->added[i].match[0]]++;
    ix->start[0] = 0;
    for (int b = 0; b < 256; b++)
        ix->start[b + 1] = ix->start[b] + count[b];
    ix->order = malloc((ix->start[256] ? ix->start[256] : 1) * sizeof *ix->order);
    if (!ix->order)
        return KV_ENOMEM;
    uint32_t fill[256];
    memcpy(fill, ix->start, sizeof fill);
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].normalized == normalized && tok->added[i].match_len)
            ix->order[fill[(unsigned char)tok->added[i].match[0]]++] = (uint32_t)i;
    for (int b = 0; b < 256; b++)
        sort_group(tok->added, ix->order + ix->start[b], ix->start[b + 1] - ix->start[b]);
    return 0;
}

int tok_added_index_build(kv_tokenizer *tok, kv_err *err)
{
    tok_buf norm = {0};
    for (size_t i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        /* HF matches normalized tokens against normalized text, so it normalizes them too. */
        const char *s = a->content;
        size_t n = a->len;
        if (a->normalized && tok->n_norm) {
            int rc = tok_normalize(tok, a->content, a->len, &norm, err);
            if (rc) {
                free(norm.p);
                return rc;
            }
            s = norm.p;
            n = norm.len;
        }
        if (!(a->match = tok_strndup(s, n))) {
            free(norm.p);
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        }
        a->match_len = n;
        /* HF's id_to_token, and so decoding, gives a normalized token its normalized form. */
        tok->id_str[a->id] = a->match;
        tok->id_len[a->id] = (uint32_t)n;
    }
    free(norm.p);
    if (build_index(tok, &tok->match_raw, 0) || build_index(tok, &tok->match_normalized, 1))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t i = 0; i < tok->n_added && !tok->word_re; i++) {
        if (!tok->added[i].single_word)
            continue;
        /* HF tests single_word with Rust regex's Unicode \w; spelled out here because
         * PCRE2's \w (letters, numbers, _) differs from it on marks and No/Nl numbers. */
        static const char word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
        int code;
        PCRE2_SIZE off;
        tok->word_re = pcre2_compile((PCRE2_SPTR)word, sizeof word - 1, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED,
                                     &code, &off, NULL);
        if (!tok->word_re)
            return kv_err_set(err, KV_EUNSUPPORTED, "PCRE2 lacks Unicode properties for single_word tokens");
    }
    return 0;
}

/* Whether the character at s[at] (a character boundary) is a word character. */
static int is_word_char(const kv_tokenizer *tok, const char *s, size_t n, size_t at)
{
    unsigned char c = (unsigned char)s[at];
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return 1; /* out of memory: refusing the match is the conservative answer */
    int rc = pcre2_match(tok->word_re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* HF's single_word test: the match may not touch a word character on either side. */
static int single_word_ok(const kv_tokenizer *tok, const char *s, size_t n, size_t start, size_t end)
{
    if (start > 0) {
        size_t k = start - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        if (is_word_char(tok, s, n, k))
            return 0;
    }
    return end == n || !is_word_char(tok, s, n, end);
}

/* Length of the whitespace run ending at s[end) / starting at s[start], within bounds. */
static size_t space_before(const char *s, size_t from, size_t end)
{
    size_t i = end;
    while (i > from) {
        size_t k = i - 1;
        while (k > from && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        uint32_t cp;
        if (kv_utf8_next(s + k, i - k, &cp) != i - k || !tok_is_space(cp))
            break;
        i = k;
    }
    return end - i;
}

static size_t space_after(const char *s, size_t n, size_t start)
{
    size_t i = start;
    while (i < n) {
        uint32_t cp;
        size_t k = kv_utf8_next(s + i, n - i, &cp);
        if (!tok_is_space(cp))
            break;
        i += k;
    }
    return i - start;
}

int tok_added_find(const kv_tokenizer *tok, const tok_added_index *ix, const char *s, size_t n,
                   size_t from, size_t *start, size_t *end, int32_t *id)
{
    if (!ix->order || ix->start[256] == 0)
        return 0;
    for (size_t i = from; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        for (uint32_t k = ix->start[b]; k < ix->start[b + 1]; k++) {
            const tok_added *a = &tok->added[ix->order[k]];
            if (a->match_len > n - i || memcmp(s + i, a->match, a->match_len))
                continue;
            if (a->single_word && !single_word_ok(tok, s, n, i, i + a->match_len))
                continue;
            size_t st = i, en = i + a->match_len;
            if (a->lstrip)
                st -= space_before(s, from, st);
            if (a->rstrip)
                en += space_after(s, n, en);
            *start = st;
            *end = en;
            *id = a->id;
            return 1;
        }
    }
    return 0;
}
