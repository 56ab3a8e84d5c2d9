/* The encode pipeline, as HF's TokenizerImpl::encode without post-processing:
 * split on non-normalized added tokens -> normalize each remaining piece -> split on
 * normalized added tokens -> pre-tokenize -> BPE each pre-token. */
#include <stdlib.h>

#include "tok_internal.h"
#include "tok_utf8.h"

typedef struct {
    tok_buf norm;
    tok_pre_scratch pre;
    tok_bpe_scratch bpe;
    tok_ids ids;
} enc_ctx;

static int oom(kv_err *err) { return kv_err_set(err, KV_ENOMEM, "out of memory"); }

static int encode_model(const kv_tokenizer *tok, enc_ctx *c, const char *s, size_t n, kv_err *err)
{
    const tok_buf *text;
    const tok_spans *pieces;
    int rc = tok_pretokenize(tok, &c->pre, s, n, &text, &pieces, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < pieces->len; i++)
        if (tok_bpe_word(tok, &c->bpe, text->p + pieces->p[i].off, pieces->p[i].len, &c->ids))
            return oom(err);
    return 0;
}

static int encode_normalized(const kv_tokenizer *tok, enc_ctx *c, const char *s, size_t n, kv_err *err)
{
    if (tok->n_norm) {
        if (tok_normalize(tok, s, n, &c->norm))
            return oom(err);
        s = c->norm.p;
        n = c->norm.len;
    }
    size_t pos = 0, start, end;
    int32_t id;
    int rc;
    while (tok_added_find(tok, &tok->match_normalized, s, n, pos, &start, &end, &id)) {
        if (start > pos && (rc = encode_model(tok, c, s + pos, start - pos, err)))
            return rc;
        if (tok_ids_push(&c->ids, id))
            return oom(err);
        pos = end;
    }
    return pos < n ? encode_model(tok, c, s + pos, n - pos, err) : 0;
}

int kv_tokenizer_encode(const kv_tokenizer *tok, const char *text, size_t len, int32_t **ids,
                        size_t *n_ids, kv_err *err)
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
            rc = encode_normalized(tok, &c, text + pos, start - pos, err);
        if (!rc && tok_ids_push(&c.ids, id))
            rc = oom(err);
        pos = end;
    }
    if (!rc && pos < len)
        rc = encode_normalized(tok, &c, text + pos, len - pos, err);
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
