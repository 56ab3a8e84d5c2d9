/* A token -> id map for GGUF vocabularies, and the merges of a SentencePiece vocabulary,
 * derived as HF transformers derives them for GGUF files (generate_merges). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_import_internal.h"

struct gguf_vocab {
    const kv_gguf_str *tokens;
    size_t n;
    uint32_t *slots;   /* open addressing: id + 1 of the last token so spelled, 0 = empty */
    size_t mask;
    uint32_t *first;   /* per id: the first id with the same spelling */
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int same(const kv_gguf_str *t, const char *s, size_t len) { return t->len == len && !memcmp(t->s, s, len); }

int gguf_vocab_build(const kv_gguf_str *tokens, size_t n, gguf_vocab **out, kv_err *err)
{
    *out = NULL;
    if (n > (size_t)INT32_MAX)
        return kv_err_set(err, KV_EFORMAT, "vocabulary of %zu tokens is too large", n);
    gguf_vocab *v = calloc(1, sizeof *v);
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    if (v) {
        v->slots = calloc(cap, sizeof *v->slots);
        v->first = malloc((n ? n : 1) * sizeof *v->first);
    }
    if (!v || !v->slots || !v->first) {
        gguf_vocab_free(v);
        return kv_err_set(err, KV_ENOMEM, "out of memory for a %zu-token vocabulary", n);
    }
    v->tokens = tokens;
    v->n = n;
    v->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        size_t at = (size_t)hash_bytes(tokens[i].s, tokens[i].len) & v->mask;
        while (v->slots[at] && !same(&tokens[v->slots[at] - 1], tokens[i].s, tokens[i].len))
            at = (at + 1) & v->mask;
        v->first[i] = v->slots[at] ? v->first[v->slots[at] - 1] : (uint32_t)i;
        v->slots[at] = (uint32_t)i + 1;
    }
    *out = v;
    return KV_OK;
}

void gguf_vocab_free(gguf_vocab *v)
{
    if (!v)
        return;
    free(v->slots);
    free(v->first);
    free(v);
}

int64_t gguf_vocab_find(const gguf_vocab *v, const char *s, size_t len)
{
    size_t at = (size_t)hash_bytes(s, len) & v->mask;
    while (v->slots[at]) {
        if (same(&v->tokens[v->slots[at] - 1], s, len))
            return (int64_t)v->slots[at] - 1;
        at = (at + 1) & v->mask;
    }
    return -1;
}

int gguf_vocab_is_canonical(const gguf_vocab *v, size_t i)
{
    return i < v->n && gguf_vocab_find(v, v->tokens[i].s, v->tokens[i].len) == (int64_t)i;
}

/* ---- SentencePiece merges ---- */

typedef struct candidate {
    float score;
    uint32_t len_l, len_r;  /* in code points, as Python's len() */
    uint32_t order;         /* the merged token's first id: Python dict order */
    gguf_merge m;
} candidate;

static int cmp_candidate(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->len_l != b->len_l)
        return a->len_l > b->len_l ? -1 : 1;
    if (a->len_r != b->len_r)
        return a->len_r > b->len_r ? -1 : 1;
    /* Python's sort is stable: equal keys keep the token order (and within a token, the
     * splits differ in len_l, so the order below never decides). */
    if (a->order != b->order)
        return a->order < b->order ? -1 : 1;
    return a->m.split < b->m.split ? -1 : a->m.split > b->m.split;
}

static uint32_t count_code_points(const char *s, size_t n)
{
    uint32_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

int gguf_spm_merges(const kv_gguf_str *tokens, const float *scores, size_t n, const gguf_vocab *v,
                    gguf_merge **out, size_t *n_out, kv_err *err)
{
    *out = NULL;
    *n_out = 0;
    size_t cap = 0, len = 0;
    candidate *c = NULL;
    for (size_t i = 0; i < n; i++) {
        if (v->first[i] != i) /* a repeated spelling: Python's dict keeps the first position */
            continue;
        int64_t last = gguf_vocab_find(v, tokens[i].s, tokens[i].len);
        float score = scores[last];                /* ... and the last value */
        if (isnan(score)) {
            free(c);
            return kv_err_set(err, KV_EFORMAT, "tokenizer.ggml.scores[%lld] is NaN", (long long)last);
        }
        const char *s = tokens[i].s;
        uint32_t total = count_code_points(s, tokens[i].len), left = 0;
        for (size_t k = 1; k < tokens[i].len; k++) {
            if (((unsigned char)s[k - 1] & 0xC0) != 0x80)
                left++;
            if (((unsigned char)s[k] & 0xC0) == 0x80) /* split only between characters */
                continue;
            int64_t l = gguf_vocab_find(v, s, k), r = gguf_vocab_find(v, s + k, tokens[i].len - k);
            if (l < 0 || r < 0)
                continue;
            if (len == cap) {
                size_t ncap = cap ? cap * 2 : 1024;
                candidate *p = realloc(c, ncap * sizeof *c);
                if (!p) {
                    free(c);
                    return kv_err_set(err, KV_ENOMEM, "out of memory deriving merges");
                }
                c = p;
                cap = ncap;
            }
            c[len++] = (candidate){score, left, total - left, (uint32_t)i, {(uint32_t)i, (uint32_t)k}};
        }
    }
    qsort(c, len, sizeof *c, cmp_candidate);
    gguf_merge *m = malloc((len ? len : 1) * sizeof *m);
    if (!m) {
        free(c);
        return kv_err_set(err, KV_ENOMEM, "out of memory deriving merges");
    }
    for (size_t i = 0; i < len; i++)
        m[i] = c[i].m;
    free(c);
    *out = m;
    *n_out = len;
    return KV_OK;
}
