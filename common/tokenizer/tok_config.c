/* tokenizer_config.json beside tokenizer.json: the BOS/EOS tokens and, when tokenizer.json
 * has no post_processor, whether encoding with special tokens adds them (as HF transformers
 * decides: a post_processor, when there is one, alone says what is added). */
#include <stdlib.h>
#include <string.h>

#include "kv_file.h"
#include "tok_internal.h"

/* bos_token / eos_token: a string, an AddedToken object {"content": ...}, or null. */
static int config_token(kv_tokenizer *tok, const json_value *root, const char *key, char **str, int32_t *id,
                        kv_err *err)
{
    const json_value *v = json_get(root, key);
    if (v && v->type == JSON_OBJECT)
        v = json_get(v, "content");
    if (!v || v->type == JSON_NULL)
        return 0;
    if (v->type != JSON_STRING)
        return kv_err_set(err, KV_EFORMAT, "%s: expected a string or {\"content\": string}", key);
    if (kv_utf8_invalid_at(v->u.str.s, v->u.str.len) != v->u.str.len || memchr(v->u.str.s, 0, v->u.str.len))
        return kv_err_set(err, KV_EFORMAT, "%s: not valid UTF-8 text", key);
    if (!(*str = tok_strndup(v->u.str.s, v->u.str.len)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    *id = kv_tokenizer_token_id(tok, *str);
    return 0;
}

static int parse_config(kv_tokenizer *tok, const json_value *root, kv_err *err)
{
    if (root->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "top level: expected an object, got %s", json_type_name(root->type));
    int rc;
    if ((rc = tok_json_opt_bool(root, "add_bos_token", 0, &tok->cfg_add_bos, "tokenizer_config", err)) ||
        (rc = tok_json_opt_bool(root, "add_eos_token", 0, &tok->cfg_add_eos, "tokenizer_config", err)) ||
        (rc = config_token(tok, root, "bos_token", &tok->bos_token, &tok->bos_id, err)) ||
        (rc = config_token(tok, root, "eos_token", &tok->eos_token, &tok->eos_id, err)))
        return rc;
    return 0;
}

/* Without a post_processor: [BOS] sequence [EOS] as add_bos_token / add_eos_token say. */
static int default_post(kv_tokenizer *tok, kv_err *err)
{
    tok->post = malloc(3 * sizeof *tok->post);
    if (!tok->post)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    tok->n_post = 0;
    if (tok->cfg_add_bos && tok->bos_id >= 0)
        tok->post[tok->n_post++] = tok->bos_id;
    tok->post[tok->n_post++] = TOK_POST_SEQUENCE;
    if (tok->cfg_add_eos && tok->eos_id >= 0)
        tok->post[tok->n_post++] = tok->eos_id;
    return 0;
}

int tok_config_load(kv_tokenizer *tok, const char *path, kv_err *err)
{
    tok->bos_id = tok->eos_id = -1;
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    static const char name[] = "tokenizer_config.json";
    char *cfg = malloc(dir_len + sizeof name);
    if (!cfg)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    memcpy(cfg, path, dir_len);
    memcpy(cfg + dir_len, name, sizeof name);
    char *text = NULL;
    size_t len = 0;
    int rc = kv_file_read_all(cfg, &text, &len, err);
    if (rc == KV_ENOTFOUND) { /* no config: nothing but the post_processor decides */
        free(cfg);
        return tok->has_post_processor ? 0 : default_post(tok, err);
    }
    if (!rc) {
        tok->has_config = 1;
        json_doc *doc = json_parse(text, len, err);
        free(text);
        rc = doc ? parse_config(tok, json_root(doc), err) : KV_EFORMAT;
        json_doc_free(doc);
    }
    if (rc) {
        kv_err_wrap(err, "%s", cfg);
        free(cfg);
        return rc;
    }
    free(cfg);
    return tok->has_post_processor ? 0 : default_post(tok, err);
}

/* ---- accessors ----------------------------------------------------------------------- */

const char *kv_tokenizer_token_str(const kv_tokenizer *tok, int32_t id)
{
    return tok && id >= 0 && id < tok->n_ids ? tok->id_str[id] : NULL;
}

/* The token the post-processor puts first, when it puts one there (-1 otherwise). */
static int32_t post_first(const kv_tokenizer *tok)
{
    return tok->post && tok->n_post > 1 && tok->post[0] != TOK_POST_SEQUENCE ? tok->post[0] : -1;
}

int32_t kv_tokenizer_bos_id(const kv_tokenizer *tok)
{
    if (!tok)
        return -1;
    return tok->bos_token ? tok->bos_id : post_first(tok);
}

const char *kv_tokenizer_bos_token(const kv_tokenizer *tok)
{
    if (!tok)
        return NULL;
    return tok->bos_token ? tok->bos_token : kv_tokenizer_token_str(tok, post_first(tok));
}

int kv_tokenizer_adds_bos(const kv_tokenizer *tok)
{
    int32_t bos = kv_tokenizer_bos_id(tok);
    return bos >= 0 && tok->post && tok->n_post > 1 && tok->post[0] == bos;
}

const char *kv_tokenizer_eos_token(const kv_tokenizer *tok) { return tok ? tok->eos_token : NULL; }

size_t kv_tokenizer_eos_ids(const kv_tokenizer *tok, int32_t *out, size_t cap)
{
    if (!tok || tok->eos_id < 0)
        return 0;
    if (out && cap)
        out[0] = tok->eos_id;
    return 1;
}

int kv_tokenizer_decides_specials(const kv_tokenizer *tok)
{
    return tok && (tok->has_post_processor || tok->has_config);
}
