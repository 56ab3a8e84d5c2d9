/* Loading a HF tokenizer.json (BPE model) and tokenizer_config.json beside it; the id/string
 * lookups. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_file.h"
#include "tok_internal.h"

static int oom(kv_err *err) { return kv_err_set(err, KV_ENOMEM, "out of memory"); }

static int vocab_id(const json_member *m, int32_t *out, kv_err *err)
{
    const json_value *v = &m->value;
    if (v->type != JSON_NUMBER || v->u.number < 0 || v->u.number >= TOK_MAX_ID ||
        v->u.number != (double)(int32_t)v->u.number)
        return kv_err_set(err, KV_EFORMAT, "model.vocab[\"%.64s\"]: id must be an integer in [0, %d)", m->key,
                          TOK_MAX_ID);
    *out = (int32_t)v->u.number;
    return 0;
}

/* Sizes everything from the JSON first, so the string pool is allocated once and the
 * hash maps can keep pointers into it. */
static int size_tables(kv_tokenizer *tok, const json_value *vocab, const json_value *added, size_t *pool_size,
                       kv_err *err)
{
    int32_t max_id = -1;
    size_t bytes = 0;
    for (size_t i = 0; i < vocab->u.obj.n; i++) {
        int32_t id = 0;
        int rc = vocab_id(&vocab->u.obj.members[i], &id, err);
        if (rc)
            return rc;
        if (id > max_id)
            max_id = id;
        bytes += vocab->u.obj.members[i].key_len + 1;
    }
    if (added && added->type == JSON_ARRAY) {
        for (size_t i = 0; i < added->u.arr.n; i++) {
            const json_value *a = &added->u.arr.items[i];
            int64_t id;
            if (json_get_int(a, "id", &id) && id > max_id && id < TOK_MAX_ID)
                max_id = (int32_t)id;
            const json_value *c = json_get(a, "content");
            if (c && c->type == JSON_STRING)
                bytes += c->u.str.len + 1;
        }
    }
    if (max_id < 0)
        return kv_err_set(err, KV_EFORMAT, "model.vocab: empty");
    tok->n_ids = max_id + 1;
    *pool_size = bytes;
    return 0;
}

static int load_vocab(kv_tokenizer *tok, const json_value *vocab, char **pool_at, kv_err *err)
{
    if (tok_str_map_init(&tok->vocab, vocab->u.obj.n))
        return oom(err);
    for (size_t i = 0; i < vocab->u.obj.n; i++) {
        const json_member *m = &vocab->u.obj.members[i];
        int32_t id = 0;
        int rc = vocab_id(m, &id, err);
        if (rc)
            return rc;
        char *copy = *pool_at;
        memcpy(copy, m->key, m->key_len);
        copy[m->key_len] = '\0';
        *pool_at += m->key_len + 1;
        rc = tok_str_map_put(&tok->vocab, copy, m->key_len, id);
        if (rc == 1)
            return kv_err_set(err, KV_EFORMAT, "model.vocab: duplicate token \"%.64s\"", m->key);
        if (rc)
            return oom(err);
        if (tok->id_str[id])
            return kv_err_set(err, KV_EFORMAT, "model.vocab: id %d used by both \"%.64s\" and \"%.64s\"", id,
                              tok->id_str[id], m->key);
        tok->id_str[id] = copy;
        tok->id_len[id] = (uint32_t)m->key_len;
        tok->id_flags[id] |= TOK_ID_VOCAB;
    }
    return 0;
}

/* One merge: "a b" (split at the first space) or ["a", "b"]. */
static int merge_pair(const json_value *m, size_t i, const char **a, size_t *a_len, const char **b,
                      size_t *b_len, kv_err *err)
{
    if (m->type == JSON_STRING) {
        const char *sp = memchr(m->u.str.s, ' ', m->u.str.len);
        if (!sp)
            return kv_err_set(err, KV_EFORMAT, "model.merges[%zu]: \"%.64s\" is not \"left right\"", i, m->u.str.s);
        *a = m->u.str.s;
        *a_len = (size_t)(sp - m->u.str.s);
        *b = sp + 1;
        *b_len = m->u.str.len - *a_len - 1;
        return 0;
    }
    if (m->type == JSON_ARRAY && m->u.arr.n == 2 && m->u.arr.items[0].type == JSON_STRING &&
        m->u.arr.items[1].type == JSON_STRING) {
        *a = m->u.arr.items[0].u.str.s;
        *a_len = m->u.arr.items[0].u.str.len;
        *b = m->u.arr.items[1].u.str.s;
        *b_len = m->u.arr.items[1].u.str.len;
        return 0;
    }
    return kv_err_set(err, KV_EFORMAT, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], got %s", i,
                      json_type_name(m->type));
}

static int load_merges(kv_tokenizer *tok, const json_value *merges, kv_err *err)
{
    size_t n = merges->u.arr.n;
    if (n > UINT32_MAX)
        return kv_err_set(err, KV_EFORMAT, "model.merges: too many");
    if (tok_merge_map_init(&tok->merges, n))
        return oom(err);
    tok_buf joined = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *a = NULL, *b = NULL;
        size_t a_len = 0, b_len = 0;
        if ((rc = merge_pair(&merges->u.arr.items[i], i, &a, &a_len, &b, &b_len, err)))
            break;
        int32_t left = tok_str_map_get(&tok->vocab, a, a_len);
        int32_t right = tok_str_map_get(&tok->vocab, b, b_len);
        joined.len = 0;
        if (tok_buf_put(&joined, a, a_len) || tok_buf_put(&joined, b, b_len)) {
            rc = oom(err);
            break;
        }
        int32_t merged = tok_str_map_get(&tok->vocab, joined.p, joined.len);
        if (left < 0 || right < 0 || merged < 0) {
            const char *missing = left < 0 ? a : right < 0 ? b : joined.p;
            int missing_len = (int)(left < 0 ? a_len : right < 0 ? b_len : joined.len);
            rc = kv_err_set(err, KV_EFORMAT, "model.merges[%zu]: token \"%.*s\" is not in the vocab", i,
                            missing_len < 64 ? missing_len : 64, missing);
            break;
        }
        if (tok_merge_map_put(&tok->merges, left, right, (uint32_t)i, merged))
            rc = oom(err);
    }
    free(joined.p);
    return rc;
}

static int load_model_options(kv_tokenizer *tok, const json_value *model, kv_err *err)
{
    int rc;
    if ((rc = tok_json_opt_bool(model, "fuse_unk", 0, &tok->fuse_unk, "model", err)) ||
        (rc = tok_json_opt_bool(model, "byte_fallback", 0, &tok->byte_fallback, "model", err)) ||
        (rc = tok_json_opt_bool(model, "ignore_merges", 0, &tok->ignore_merges, "model", err)))
        return rc;
    const json_value *v = json_get(model, "dropout");
    if (v && v->type != JSON_NULL)
        return kv_err_set(err, KV_EUNSUPPORTED, "model.dropout: BPE dropout is not supported");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_get(model, affixes[i]);
        if (v && v->type != JSON_NULL && !(v->type == JSON_STRING && v->u.str.len == 0))
            return kv_err_set(err, KV_EUNSUPPORTED, "model.%s is not supported", affixes[i]);
    }
    tok->unk_id = -1;
    v = json_get(model, "unk_token");
    if (v && v->type != JSON_NULL) {
        if (v->type != JSON_STRING)
            return kv_err_set(err, KV_EFORMAT, "model.unk_token: expected a string, got %s", json_type_name(v->type));
        tok->unk_id = tok_str_map_get(&tok->vocab, v->u.str.s, v->u.str.len);
        if (tok->unk_id < 0)
            return kv_err_set(err, KV_EFORMAT, "model.unk_token \"%.64s\" is not in the vocab", v->u.str.s);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->byte_ids[b] = tok_str_map_get(&tok->vocab, name, 6);
    }
    return 0;
}

static int load_json(kv_tokenizer *tok, const json_value *root, kv_err *err)
{
    if (root->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "top level: expected an object, got %s", json_type_name(root->type));
    const json_value *model = json_get(root, "model");
    if (!model || model->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "model: missing or not an object");
    const json_value *type = json_get(model, "type");
    if (type && type->type != JSON_STRING)
        return kv_err_set(err, KV_EFORMAT, "model.type: expected a string");
    /* Old files omit model.type; HF then recognises BPE by its merges. */
    if (!type && !json_get(model, "merges"))
        return kv_err_set(err, KV_EFORMAT, "model.type: missing");
    if (type && strcmp(type->u.str.s, "BPE"))
        return kv_err_set(err, KV_EUNSUPPORTED, "model type '%s' is not supported (only BPE)", type->u.str.s);
    const json_value *vocab = json_get(model, "vocab");
    if (!vocab || vocab->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "model.vocab: missing or not an object");
    const json_value *merges = json_get(model, "merges");
    if (!merges || merges->type != JSON_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "model.merges: missing or not an array");
    const json_value *added = json_get(root, "added_tokens");

    size_t pool_size = 0;
    int rc = size_tables(tok, vocab, added, &pool_size, err);
    if (rc)
        return rc;
    tok->pool = malloc(pool_size ? pool_size : 1);
    tok->id_str = calloc((size_t)tok->n_ids, sizeof *tok->id_str);
    tok->id_len = calloc((size_t)tok->n_ids, sizeof *tok->id_len);
    tok->id_flags = calloc((size_t)tok->n_ids, sizeof *tok->id_flags);
    if (!tok->pool || !tok->id_str || !tok->id_len || !tok->id_flags)
        return oom(err);
    char *pool_at = tok->pool;
    tok_byte_level_init(&tok->byte_level);
    if ((rc = load_vocab(tok, vocab, &pool_at, err)) || (rc = load_merges(tok, merges, err)) ||
        (rc = load_model_options(tok, model, err)) || (rc = tok_added_load(tok, added, &pool_at, err)) ||
        (rc = tok_normalizer_load(tok, json_get(root, "normalizer"), err)) ||
        (rc = tok_added_index_build(tok, err)) ||
        (rc = tok_pre_tokenizer_load(tok, json_get(root, "pre_tokenizer"), err)) ||
        (rc = tok_post_processor_load(tok, json_get(root, "post_processor"), err)) ||
        (rc = tok_decoder_load(tok, json_get(root, "decoder"), err)))
        return rc;
    return 0;
}

int kv_tokenizer_load(const char *path, kv_tokenizer **out, kv_err *err)
{
    if (!path || !out)
        return kv_err_set(err, KV_EINVAL, "kv_tokenizer_load: null argument");
    *out = NULL;
    char *text;
    size_t len;
    int rc = kv_file_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    json_doc *doc = json_parse(text, len, err);
    free(text);
    if (!doc)
        return kv_err_wrap(err, "%s", path);
    kv_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        json_doc_free(doc);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
    }
    rc = load_json(tok, json_root(doc), err);
    json_doc_free(doc);
    if (rc) {
        kv_tokenizer_free(tok);
        return kv_err_wrap(err, "%s", path);
    }
    if ((rc = tok_config_load(tok, path, err))) { /* its errors name the config's path */
        kv_tokenizer_free(tok);
        return rc;
    }
    *out = tok;
    return 0;
}

void kv_tokenizer_free(kv_tokenizer *tok)
{
    if (!tok)
        return;
    tok_added_free(tok);
    tok_normalizer_free(tok);
    tok_pre_tokenizer_free(tok);
    tok_str_map_free(&tok->vocab);
    tok_merge_map_free(&tok->merges);
    free(tok->pool);
    free(tok->id_str);
    free(tok->id_len);
    free(tok->id_flags);
    free(tok->dec_pool);
    free(tok->dec_off);
    free(tok->dec_first_pool);
    free(tok->dec_first_off);
    free(tok->post);
    free(tok->bos_token);
    free(tok->eos_token);
    free(tok);
}

int32_t kv_tokenizer_n_ids(const kv_tokenizer *tok) { return tok ? tok->n_ids : 0; }

int32_t kv_tokenizer_token_id(const kv_tokenizer *tok, const char *token)
{
    if (!tok || !token)
        return -1;
    size_t n = strlen(token);
    int32_t id = tok_str_map_get(&tok->added_map, token, n);
    return id >= 0 ? id : tok_str_map_get(&tok->vocab, token, n);
}

int kv_tokenizer_is_special(const kv_tokenizer *tok, int32_t id)
{
    return tok && id >= 0 && id < tok->n_ids && (tok->id_flags[id] & TOK_ID_SPECIAL) != 0;
}
