#include "model_gguf.h"

#include <stdlib.h>
#include <string.h>

#include "gguf_import_internal.h"
#include "kv_file.h"

int kv_model_gguf_config(const kv_gguf *g, char **text, size_t *len, kv_err *err)
{
    *text = NULL;
    *len = 0;
    gguf_llama hp;
    int rc = gguf_llama_read(g, &hp, err);
    if (rc)
        return rc;
    kv_textbuf b;
    kv_textbuf_init(&b);
    gguf_config_json(&hp, KV_DTYPE_F32, &b);
    if (kv_textbuf_failed(&b)) {
        kv_textbuf_free(&b);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    *text = malloc(b.len + 1);
    if (!*text) {
        kv_textbuf_free(&b);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    memcpy(*text, b.data, b.len);
    (*text)[b.len] = '\0';
    *len = b.len;
    kv_textbuf_free(&b);
    return KV_OK;
}

int kv_model_gguf_config_file(const char *path, char **text, size_t *len, kv_err *err)
{
    kv_gguf *g;
    int rc = kv_gguf_open(path, &g, err);
    if (rc)
        return rc;
    rc = kv_model_gguf_config(g, text, len, err);
    kv_gguf_close(g);
    return rc;
}

uint64_t kv_model_gguf_source_row(uint64_t r, uint64_t rows, int heads) { return gguf_source_row(r, rows, heads); }

static int write_doc(const char *dir, const char *name, const kv_textbuf *b, kv_err *err)
{
    char path[4096];
    int rc = kv_path_join(path, sizeof path, dir, name, err);
    if (!rc && kv_textbuf_failed(b))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory building %s", name);
    return rc ? rc : kv_file_write_all(path, b->data, b->len, err);
}

int kv_model_gguf_write_tokenizer(const char *path, const char *dir, kv_err *err)
{
    kv_gguf *g;
    int rc = kv_gguf_open(path, &g, err);
    if (rc)
        return rc;
    gguf_llama hp;
    kv_textbuf tok, cfg;
    kv_textbuf_init(&tok);
    kv_textbuf_init(&cfg);
    if (!(rc = gguf_llama_read(g, &hp, err)) && !(rc = gguf_tokenizer_json(g, &tok, err)) &&
        !(rc = gguf_tokenizer_config_json(g, &hp, &cfg, err)) && !(rc = write_doc(dir, "tokenizer.json", &tok, err)))
        rc = write_doc(dir, "tokenizer_config.json", &cfg, err);
    kv_textbuf_free(&tok);
    kv_textbuf_free(&cfg);
    kv_gguf_close(g);
    return rc;
}
