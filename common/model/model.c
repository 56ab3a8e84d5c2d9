#include "model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype_convert.h"
#include "json.h"
#include "kv_file.h"

#define MAX_SHARDS 256

struct kv_model_files {
    kv_st_file *shards[MAX_SHARDS];
    char *shard_names[MAX_SHARDS];
    int n_shards;
    json_doc *index;    /* model.safetensors.index.json, when sharded */
    float **owned;      /* converted / realigned tensors */
    size_t n_owned, cap_owned;
};

static int open_shard(kv_model_files *fs, const char *dir, const char *name, kv_st_file **out, kv_err *err)
{
    for (int i = 0; i < fs->n_shards; i++)
        if (!strcmp(fs->shard_names[i], name)) {
            *out = fs->shards[i];
            return KV_OK;
        }
    if (fs->n_shards == MAX_SHARDS)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: more than %d shards", dir, MAX_SHARDS);
    if (strchr(name, '/'))
        return kv_err_set(err, KV_EFORMAT, "%s: shard name \"%s\" must be a plain file name", dir, name);
    char path[4096];
    int rc = kv_path_join(path, sizeof path, dir, name, err);
    if (rc || (rc = kv_st_open(path, out, err)))
        return rc;
    fs->shard_names[fs->n_shards] = strdup(name);
    fs->shards[fs->n_shards++] = *out;
    return fs->shard_names[fs->n_shards - 1] ? KV_OK : kv_err_set(err, KV_ENOMEM, "out of memory");
}

/* Which file holds a tensor: the index's weight_map, else the single model.safetensors. */
static int find_tensor(kv_model_files *fs, const char *dir, const char *name, const kv_st_tensor **out,
                       kv_err *err)
{
    const char *shard = "model.safetensors";
    if (fs->index) {
        shard = json_get_string(json_get(json_root(fs->index), "weight_map"), name);
        if (!shard)
            return kv_err_set(err, KV_EFORMAT, "%s/model.safetensors.index.json: tensor \"%s\" missing from weight_map",
                              dir, name);
    }
    kv_st_file *f;
    int rc = open_shard(fs, dir, shard, &f, err);
    if (rc)
        return rc;
    *out = kv_st_find(f, name);
    if (!*out)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\" is missing", kv_st_path(f), name);
    return KV_OK;
}

static int keep_owned(kv_model_files *fs, float *buf, kv_err *err)
{
    if (fs->n_owned == fs->cap_owned) {
        size_t cap = fs->cap_owned ? fs->cap_owned * 2 : 64;
        float **p = realloc(fs->owned, cap * sizeof *p);
        if (!p) {
            free(buf);
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        }
        fs->owned = p;
        fs->cap_owned = cap;
    }
    fs->owned[fs->n_owned++] = buf;
    return KV_OK;
}

/* Resolves a tensor, checks its shape, and returns f32 data (mapped in place when possible). */
static int load_f32(kv_model *m, const char *dir, const char *name, int64_t rows, int64_t cols,
                    const float **out, kv_err *err)
{
    const kv_st_tensor *t;
    int rc = find_tensor(m->files, dir, name, &t, err);
    if (rc)
        return rc;
    int want_ndim = cols ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char got[96] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (cols)
            return kv_err_set(err, KV_EFORMAT, "%s/%s: tensor \"%s\" has shape [%s], config.json implies [%lld, %lld]",
                              dir, "safetensors", name, got, (long long)rows, (long long)cols);
        return kv_err_set(err, KV_EFORMAT, "%s/%s: tensor \"%s\" has shape [%s], config.json implies [%lld]", dir,
                          "safetensors", name, got, (long long)rows);
    }
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    if (t->dtype == KV_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
    } else {
        float *buf = malloc(n * sizeof(float));
        if (!buf)
            return kv_err_set(err, KV_ENOMEM, "tensor \"%s\": out of memory for %zu floats", name, n);
        if (t->dtype == KV_DTYPE_F32)
            memcpy(buf, t->data, n * sizeof(float));
        else if (t->dtype == KV_DTYPE_BF16)
            kv_bf16_to_f32(buf, t->data, n);
        else
            kv_f16_to_f32(buf, t->data, n);
        if ((rc = keep_owned(m->files, buf, err)))
            return rc;
        *out = buf;
    }
    m->checkpoint_dtype = t->dtype;
    m->weight_bytes += n * sizeof(float);
    return KV_OK;
}

static int open_index(kv_model_files *fs, const char *dir, kv_err *err)
{
    char path[4096];
    char *text;
    size_t len;
    int rc = kv_path_join(path, sizeof path, dir, "model.safetensors.index.json", err);
    if (rc)
        return rc;
    rc = kv_file_read_all(path, &text, &len, err);
    if (rc == KV_ENOTFOUND)
        return KV_OK; /* single-file checkpoint */
    if (rc)
        return rc;
    fs->index = json_parse(text, len, err);
    free(text);
    if (!fs->index)
        return kv_err_wrap(err, "%s", path);
    if (!json_get(json_root(fs->index), "weight_map") ||
        json_get(json_root(fs->index), "weight_map")->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s: missing \"weight_map\" object", path);
    return KV_OK;
}

static int load_layer(kv_model *m, const char *dir, int i, kv_err *err)
{
    const kv_model_config *c = &m->cfg;
    kv_layer_weights *l = &m->layers[i];
    int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t ff = c->intermediate_size;
    struct { const char *suffix; int64_t rows, cols; const float **dst; } specs[] = {
        {"input_layernorm.weight", h, 0, &l->attn_norm},
        {"self_attn.q_proj.weight", q, h, &l->wq},
        {"self_attn.k_proj.weight", kv, h, &l->wk},
        {"self_attn.v_proj.weight", kv, h, &l->wv},
        {"self_attn.o_proj.weight", h, q, &l->wo},
        {"post_attention_layernorm.weight", h, 0, &l->mlp_norm},
        {"mlp.gate_proj.weight", ff, h, &l->w_gate},
        {"mlp.up_proj.weight", ff, h, &l->w_up},
        {"mlp.down_proj.weight", h, ff, &l->w_down},
    };
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        char name[256];
        snprintf(name, sizeof name, "model.layers.%d.%s", i, specs[k].suffix);
        int rc = load_f32(m, dir, name, specs[k].rows, specs[k].cols, specs[k].dst, err);
        if (rc)
            return rc;
    }
    return KV_OK;
}

int kv_model_load(const char *dir, kv_model **out, kv_err *err)
{
    *out = NULL;
    kv_model *m = calloc(1, sizeof *m);
    if (!m || !(m->files = calloc(1, sizeof *m->files))) {
        free(m);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    int rc = kv_model_config_load(dir, &m->cfg, err);
    if (!rc)
        rc = open_index(m->files, dir, err);
    const kv_model_config *c = &m->cfg;
    if (!rc && !(m->layers = calloc((size_t)c->n_layers, sizeof *m->layers)))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    if (!rc)
        rc = load_f32(m, dir, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, &m->embed, err);
    for (int i = 0; !rc && i < c->n_layers; i++)
        rc = load_layer(m, dir, i, err);
    if (!rc)
        rc = load_f32(m, dir, "model.norm.weight", c->hidden_size, 0, &m->final_norm, err);
    if (!rc) {
        if (c->tie_embeddings) {
            m->lm_head = m->embed;
            m->weight_bytes += (size_t)c->vocab_size * (size_t)c->hidden_size * sizeof(float);
        } else {
            rc = load_f32(m, dir, "lm_head.weight", c->vocab_size, c->hidden_size, &m->lm_head, err);
        }
    }
    if (rc) {
        kv_model_free(m);
        return rc;
    }
    /* The embedding table is gathered, not streamed: only one row per token is touched. */
    m->weight_bytes -= (size_t)c->vocab_size * (size_t)c->hidden_size * sizeof(float);
    *out = m;
    return KV_OK;
}

void kv_model_free(kv_model *m)
{
    if (!m)
        return;
    if (m->files) {
        for (int i = 0; i < m->files->n_shards; i++) {
            kv_st_close(m->files->shards[i]);
            free(m->files->shard_names[i]);
        }
        for (size_t i = 0; i < m->files->n_owned; i++)
            free(m->files->owned[i]);
        free(m->files->owned);
        json_doc_free(m->files->index);
        free(m->files);
    }
    free(m->layers);
    free(m);
}
