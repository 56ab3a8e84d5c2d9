#include "kv_prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "model_gguf.h"

static int load_dir(const char *model_dir, int32_t config_bos, kv_prompt_encoder *pe, kv_err *err);

/* A GGUF's tokenizer files go through a private temporary directory, gone again once they
 * are loaded (the tokenizer and template loaders read a model directory). */
static int load_gguf(const char *path, int32_t config_bos, kv_prompt_encoder *pe, kv_err *err)
{
    char dir[] = "/tmp/kvserve-gguf-tokenizer-XXXXXX";
    if (!mkdtemp(dir))
        return kv_err_set(err, KV_EIO, "%s: cannot create a temporary directory for its tokenizer", path);
    int rc = kv_model_gguf_write_tokenizer(path, dir, err);
    if (!rc)
        rc = load_dir(dir, config_bos, pe, err);
    char file[sizeof dir + 32];
    snprintf(file, sizeof file, "%s/tokenizer.json", dir);
    unlink(file);
    snprintf(file, sizeof file, "%s/tokenizer_config.json", dir);
    unlink(file);
    rmdir(dir);
    return rc;
}

int kv_prompt_encoder_load(const char *model_dir, int32_t config_bos, kv_prompt_encoder *pe, kv_err *err)
{
    if (kv_model_path_is_gguf(model_dir))
        return load_gguf(model_dir, config_bos, pe, err);
    return load_dir(model_dir, config_bos, pe, err);
}

static int load_dir(const char *model_dir, int32_t config_bos, kv_prompt_encoder *pe, kv_err *err)
{
    memset(pe, 0, sizeof *pe);
    pe->config_bos = config_bos;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/tokenizer.json", model_dir) >= sizeof path)
        return kv_err_set(err, KV_EINVAL, "model directory path too long");
    int rc = kv_tokenizer_load(path, &pe->tok, err);
    if (rc)
        return rc;
    rc = kv_chat_template_load(model_dir, NULL, &pe->chat, err);
    if (rc == KV_ENOTFOUND) {
        pe->chat = NULL; /* a base model: text prompts only */
        rc = 0;
    }
    if (rc)
        kv_prompt_encoder_free(pe);
    return rc;
}

void kv_prompt_encoder_free(kv_prompt_encoder *pe)
{
    kv_chat_template_free(pe->chat);
    kv_tokenizer_free(pe->tok);
    memset(pe, 0, sizeof *pe);
    pe->config_bos = -1;
}

/* Encodes with add_special; prepends config.json's BOS where the tokenizer has no word on
 * special tokens and the text does not already start with it. */
static int encode(const kv_prompt_encoder *pe, const char *text, size_t len, int add_special, int32_t **ids,
                  size_t *n_ids, kv_err *err)
{
    int32_t *raw = NULL;
    size_t n = 0;
    int rc = kv_tokenizer_encode_special(pe->tok, text, len, add_special, &raw, &n, err);
    if (rc)
        return rc;
    int bos = add_special && !kv_tokenizer_decides_specials(pe->tok) && pe->config_bos >= 0 &&
              pe->config_bos < kv_tokenizer_n_ids(pe->tok) && (n == 0 || raw[0] != pe->config_bos);
    if (n + (size_t)bos == 0) {
        free(raw);
        return kv_err_set(err, KV_EINVAL, "the prompt encodes to no tokens");
    }
    if (bos) {
        int32_t *p = realloc(raw, (n + 1) * sizeof *p);
        if (!p) {
            free(raw);
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        }
        memmove(p + 1, p, n * sizeof *p);
        p[0] = pe->config_bos;
        raw = p;
        n++;
    }
    *ids = raw;
    *n_ids = n;
    return KV_OK;
}

int kv_prompt_encode_text(const kv_prompt_encoder *pe, const char *text, size_t len, int32_t **ids,
                          size_t *n_ids, kv_err *err)
{
    return encode(pe, text, len, 1, ids, n_ids, err);
}

int kv_prompt_encode_chat(const kv_prompt_encoder *pe, const json_value *messages, int add_generation_prompt,
                          int32_t **ids, size_t *n_ids, kv_err *err)
{
    if (!pe->chat)
        return kv_err_set(err, KV_EUNSUPPORTED, "the model has no chat template (tokenizer_config.json "
                                                "chat_template): send a text prompt");
    if (!messages || messages->type != JSON_ARRAY)
        return kv_err_set(err, KV_EINVAL, "chat messages must be a JSON array");
    kv_chat_render_opts opts = {.add_generation_prompt = add_generation_prompt};
    char *text = NULL;
    size_t len = 0;
    int rc = kv_chat_template_render(pe->chat, messages, &opts, &text, &len, err);
    if (!rc)
        rc = encode(pe, text, len, 0, ids, n_ids, err);
    free(text);
    return rc;
}

int kv_prompt_encode_chat_json(const kv_prompt_encoder *pe, const char *messages_json, size_t len,
                               int add_generation_prompt, int32_t **ids, size_t *n_ids, kv_err *err)
{
    json_doc *doc = json_parse(messages_json, len, err);
    if (!doc)
        return kv_err_wrap(err, "chat messages");
    int rc = kv_prompt_encode_chat(pe, json_root(doc), add_generation_prompt, ids, n_ids, err);
    json_doc_free(doc);
    return rc;
}
