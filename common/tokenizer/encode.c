/* The encode pipeline, as HF's TokenizerImpl::encode: split on non-normalized added tokens ->
 * normalize each remaining piece -> split on normalized added tokens -> pre-tokenize -> BPE
 * each pre-token -> with special tokens, the post-processor's ids around the text's. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "tok_utf8.h"

typedef struct {
    tok_buf norm;
    tok_pre_scratch pre;
    tok_bpe_scratch bpe;
    tok_ids ids;
} enc_ctx;

static int oom(kv_err *err) { return kv_err_set(err, KV_ENOMEM, "out of memory"); }

/* at_start: s begins the input text. */
static int encode_model(const kv_tokenizer *tok, enc_ctx *c, const char *s, size_t n, int at_start, kv_err *err)
{
    const tok_buf *text;
    const tok_spans *pieces;
    int rc = tok_pretokenize(tok, &c->pre, s, n, at_start, &text, &pieces, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < pieces->len; i++)
        if (tok_bpe_word(tok, &c->bpe, text->p + pieces->p[i].off, pieces->p[i].len, &c->ids))
            return oom(err);
    return 0;
}

static int encode_normalized(const kv_tokenizer *tok, enc_ctx *c, const char *s, size_t n, int at_start,
                             kv_err *err)
{
    int rc;
    if (tok->n_norm) {
        if ((rc = tok_normalize(tok, s, n, &c->norm, err)))
            return rc;
        s = c->norm.p;
        n = c->norm.len;
    }
    size_t pos = 0, start, end;
    int32_t id;
    while (tok_added_find(tok, &tok->match_normalized, s, n, pos, &start, &end, &id)) {
        if (start > pos && (rc = encode_model(tok, c, s + pos, start - pos, at_start && pos == 0, err)))
            return rc;
        if (tok_ids_push(&c->ids, id))
            return oom(err);
        pos = end;
    }
    return pos < n ? encode_model(tok, c, s + pos, n - pos, at_start && pos == 0, err) : 0;
}

/* The post-processor's ids around the text's ids[0..n) (malloc'd, replacing *ids). */
static int post_process(const kv_tokenizer *tok, tok_ids *ids, kv_err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < tok->n_post; i++) {
        size_t add = tok->post[i] == TOK_POST_SEQUENCE ? ids->len : 1;
        if (add > SIZE_MAX / sizeof(int32_t) - total)
            return oom(err);
        total += add;
    }
    tok_ids out = {0};
    if (tok_grow((void **)&out.p, &out.cap, total ? total : 1, sizeof *out.p))
        return oom(err);
    for (size_t i = 0; i < tok->n_post; i++) {
        if (tok->post[i] != TOK_POST_SEQUENCE) {
            out.p[out.len++] = tok->post[i];
        } else if (ids->len) {
            memcpy(out.p + out.len, ids->p, ids->len * sizeof *ids->p);
            out.len += ids->len;
        }
    }
    free(ids->p);
    *ids = out;
    return 0;
}

int kv_tokenizer_encode(const kv_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                        size_t *n_ids, kv_err *err)
{
    return kv_tokenizer_encode_special(tok, text, len, 0, ids, n_ids, err);
}

int kv_tokenizer_encode_special(const kv_tokenizer *tok, const char *text, size_t len, int add_special,
                                int32_t **ids, size_t *n_ids, kv_err *err)
{
    if (!tok || !ids || !n_ids || (len && !text))
        return kv_err_set(err, KV_EINVAL, "kv_tokenizer_encode: null argument");
    *ids = NULL;
    *n_ids = 0;
    size_t bad = kv_utf8_invalid_at(text, len);
    if (bad != len)
        return kv_err_set(err, KV_EINVAL, "text to encode is not valid UTF-8 (byte %zu)", bad);
    enc_ctx c = {0};
    size_t pos = 0, start, end;
    int32_t id;
    int rc = 0;
    while (!rc && tok_added_find(tok, &tok->match_raw, text, len, pos, &start, &end, &id)) {
        if (start > pos)
            rc = encode_normalized(tok, &c, text + pos, start - pos, pos == 0, err);
        if (!rc && tok_ids_push(&c.ids, id))
            rc = oom(err);
        pos = end;
    }
    if (!rc && pos < len)
        rc = encode_normalized(tok, &c, text + pos, len - pos, pos == 0, err);
    if (!rc && add_special && tok->post)
        rc = post_process(tok, &c.ids, err);
    free(c.norm.p);
    tok_pre_scratch_free(&c.pre);
    tok_bpe_scratch_free(&c.bpe);
    if (rc) {
        free(c.ids.p);
        return rc;
    }
    /* Callers may free() the result even when it holds no ids. */
    if (!c.ids.p && !(c.ids.p = malloc(sizeof *c.ids.p)))
        return oom(err);
    *ids = c.ids.p;
    *n_ids = c.ids.len;
    return 0;
}
