/* kv_model_load: find each tensor (safetensors by HF name, GGUF by llama.cpp's), check its
 * shape against the config, then place it: in place when it is kept as stored, else into a
 * buffer of the target type (rows converted one at a time, or copied in HF order). */
#include "model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gguf.h"
#include "json.h"
#include "kv_file.h"
#include "model_gguf.h"
#include "safetensors.h"
#include "weight_quant.h"

#define MAX_SHARDS 256

struct kv_model_files {
    kv_st_file *shards[MAX_SHARDS];
    char *shard_names[MAX_SHARDS];
    int n_shards;
    json_doc *index;    /* model.safetensors.index.json, when sharded */
    kv_gguf *gguf;      /* the GGUF, when loaded from one */
    void **owned;       /* converted / reordered / realigned tensors */
    size_t n_owned, cap_owned;
    float *row;         /* one row of f32, for conversions */
    size_t row_cap;
};

/* A tensor as its file holds it. */
typedef struct src_tensor {
    const char *name;
    const void *data;
    kv_type type;
    int64_t rows, cols;  /* rows = 1 for a vector */
    int permute_heads;   /* GGUF Q/K: rows in llama.cpp's order over this many heads */
} src_tensor;

typedef struct loader {
    kv_model *m;
    const char *path;
    const kv_model_load_options *o;
} loader;

void kv_model_load_options_default(kv_model_load_options *o)
{
    o->weights_type = -1;
    o->types_like = NULL;
    o->layout_only = 0;
}

int kv_model_path_is_gguf(const char *path)
{
    size_t n = strlen(path);
    return n > 5 && !strcasecmp(path + n - 5, ".gguf");
}

int kv_weights_type_parse(const char *s, int *type, kv_err *err)
{
    for (int t = 0; t < KV_TYPE_COUNT; t++)
        if (kv_quantize_supported((kv_type)t) && !strcmp(s, kv_type_name((kv_type)t))) {
            *type = t;
            return KV_OK;
        }
    return kv_err_set(err, KV_EINVAL, "weights dtype must be one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1; "
                      "got '%.32s'", s);
}

static int keep_owned(kv_model_files *fs, void *buf, kv_err *err)
{
    if (fs->n_owned == fs->cap_owned) {
        size_t cap = fs->cap_owned ? fs->cap_owned * 2 : 64;
        void **p = realloc(fs->owned, cap * sizeof *p);
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

static kv_type st_type(kv_dtype dt) { return dt == KV_DTYPE_F16 ? KV_TYPE_F16 : dt == KV_DTYPE_BF16 ? KV_TYPE_BF16 : KV_TYPE_F32; }

/* ---- finding tensors ---- */

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

/* A safetensors tensor by HF name (the index's weight_map, else the single model.safetensors),
 * shape checked: [rows, cols], or [cols] when rows is 0. */
static int find_st(loader *ld, const char *name, int64_t rows, int64_t cols, src_tensor *out, kv_err *err)
{
    kv_model_files *fs = ld->m->files;
    const char *dir = ld->path, *shard = "model.safetensors";
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
    const kv_st_tensor *t = kv_st_find(f, name);
    if (!t)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\" is missing", kv_st_path(f), name);
    int want_ndim = rows ? 2 : 1;
    if (t->ndim != want_ndim || (rows && t->shape[0] != rows) || t->shape[want_ndim - 1] != cols) {
        char got[96] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        if (rows)
            return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\" has shape [%s], config.json implies [%lld, %lld]",
                              kv_st_path(f), name, got, (long long)rows, (long long)cols);
        return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\" has shape [%s], config.json implies [%lld]",
                          kv_st_path(f), name, got, (long long)cols);
    }
    *out = (src_tensor){name, t->data, st_type(t->dtype), rows ? rows : 1, cols, 0};
    return KV_OK;
}

/* A GGUF tensor by llama.cpp's name, shape checked ([cols, rows] in GGUF order). */
static int find_gguf(loader *ld, const char *name, int64_t rows, int64_t cols, int permute_heads, src_tensor *out,
                     kv_err *err)
{
    const kv_gguf_tensor *t = kv_gguf_find_tensor(ld->m->files->gguf, name);
    if (!t)
        return kv_err_set(err, KV_EFORMAT, "%s: missing tensor '%s'", ld->path, name);
    int n_dims = rows ? 2 : 1;
    if (t->n_dims != n_dims || t->ne[0] != (uint64_t)cols || (rows && t->ne[1] != (uint64_t)rows))
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' has shape [%llu, %llu] (GGUF order), expected [%lld, %lld]",
                          ld->path, name, (unsigned long long)t->ne[0],
                          (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 0), (long long)cols, (long long)rows);
    if (t->type < 0)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: tensor '%s' has type %s (%u), which kvserve cannot compute with",
                          ld->path, name, t->type_name, t->ggml_type);
    *out = (src_tensor){t->name, t->data, (kv_type)t->type, rows ? rows : 1, cols, permute_heads};
    return KV_OK;
}

/* ---- placing tensors ---- */

static kv_type target_type(const src_tensor *s, int want)
{
    if (want < 0 || want == (int)s->type)
        return s->type;
    if (kv_type_bytes((kv_type)want, (uint64_t)s->cols) == 0) /* rows are not whole blocks of it */
        return s->type == KV_TYPE_F16 || s->type == KV_TYPE_BF16 ? s->type : KV_TYPE_F16;
    return (kv_type)want;
}

/* Drops the mapped pages of a tensor that was copied out (they would stay resident). */
static void release_pages(const void *data, size_t bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    uintptr_t lo = ((uintptr_t)data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)data + bytes) & ~((uintptr_t)page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Asks for transparent huge pages in the whole 2 MiB pages inside a converted tensor's buffer,
 * before it is written (decode streams it every token: fewer TLB misses; the buffer's ends
 * stay on small pages, so nothing is allocated past it). */
static void hint_huge_pages(void *buf, size_t bytes)
{
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)buf + huge - 1) & ~(huge - 1), hi = ((uintptr_t)buf + bytes) & ~(huge - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* a hint: without THP, small pages */
}

static int place(loader *ld, const src_tensor *s, int want, kv_weight *dst, kv_err *err)
{
    kv_model_files *fs = ld->m->files;
    kv_type to = target_type(s, want);
    uint64_t in_row = kv_type_bytes(s->type, (uint64_t)s->cols), out_row = kv_type_bytes(to, (uint64_t)s->cols);
    if (!in_row || !out_row || (uint64_t)s->rows > SIZE_MAX / out_row || s->rows > INT32_MAX || s->cols > INT32_MAX)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\" [%lld, %lld] does not fit type %s", ld->path, s->name,
                          (long long)s->rows, (long long)s->cols, kv_type_name(to));
    *dst = (kv_weight){s->data, to, (int)s->rows, (int)s->cols, (size_t)out_row};
    if (ld->o->layout_only ||
        (to == s->type && !s->permute_heads && (to != KV_TYPE_F32 || (uintptr_t)s->data % sizeof(float) == 0)))
        return KV_OK;
    unsigned char *buf = malloc((size_t)s->rows * (size_t)out_row);
    if (!buf)
        return kv_err_set(err, KV_ENOMEM, "tensor \"%s\": out of memory for %zu bytes", s->name,
                          (size_t)s->rows * (size_t)out_row);
    int rc = keep_owned(fs, buf, err);
    if (rc)
        return rc;
    hint_huge_pages(buf, (size_t)s->rows * (size_t)out_row);
    if (to != s->type && fs->row_cap < (size_t)s->cols) {
        free(fs->row);
        fs->row_cap = 0;
        if (!(fs->row = malloc((size_t)s->cols * sizeof *fs->row)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        fs->row_cap = (size_t)s->cols;
    }
    const struct kv_type_traits *tr = kv_type_traits(s->type);
    for (int64_t r = 0; r < s->rows; r++) {
        uint64_t from = kv_model_gguf_source_row((uint64_t)r, (uint64_t)s->rows, s->permute_heads);
        const unsigned char *src = (const unsigned char *)s->data + from * in_row;
        unsigned char *out = buf + (size_t)r * (size_t)out_row;
        if (to == s->type) {
            memcpy(out, src, (size_t)in_row);
            continue;
        }
        tr->to_f32(src, fs->row, (size_t)s->cols);
        if ((rc = kv_quantize_row(to, fs->row, out, (size_t)s->cols, err)))
            return kv_err_wrap(err, "tensor \"%s\"", s->name);
    }
    if (fs->gguf)
        release_pages(s->data, (size_t)s->rows * (size_t)in_row);
    dst->data = buf;
    return KV_OK;
}

/* A norm vector, as f32. */
static int place_f32(loader *ld, const src_tensor *s, const float **dst, kv_err *err)
{
    kv_weight w;
    int rc = place(ld, s, KV_TYPE_F32, &w, err);
    *dst = w.data;
    return rc;
}

/* The type a matrix becomes: the options' type, or that of the same matrix in types_like. */
static int want_type(const loader *ld, const kv_weight *like)
{
    if (ld->o->types_like && like)
        return (int)like->type;
    return ld->o->weights_type;
}

/* ---- the tensor list ---- */

enum { N_LAYER_TENSORS = 9 };

static const struct layer_tensor {
    const char *hf, *gguf;
    size_t field;    /* offset in kv_layer_weights */
    int matrix;
} layer_tensors[N_LAYER_TENSORS] = {
    {"input_layernorm.weight", "attn_norm", offsetof(kv_layer_weights, attn_norm), 0},
    {"self_attn.q_proj.weight", "attn_q", offsetof(kv_layer_weights, wq), 1},
    {"self_attn.k_proj.weight", "attn_k", offsetof(kv_layer_weights, wk), 1},
    {"self_attn.v_proj.weight", "attn_v", offsetof(kv_layer_weights, wv), 1},
    {"self_attn.o_proj.weight", "attn_output", offsetof(kv_layer_weights, wo), 1},
    {"post_attention_layernorm.weight", "ffn_norm", offsetof(kv_layer_weights, mlp_norm), 0},
    {"mlp.gate_proj.weight", "ffn_gate", offsetof(kv_layer_weights, w_gate), 1},
    {"mlp.up_proj.weight", "ffn_up", offsetof(kv_layer_weights, w_up), 1},
    {"mlp.down_proj.weight", "ffn_down", offsetof(kv_layer_weights, w_down), 1},
};

static int find(loader *ld, const char *hf, const char *gguf, int64_t rows, int64_t cols, int permute_heads,
                src_tensor *s, kv_err *err)
{
    return ld->m->files->gguf ? find_gguf(ld, gguf, rows, cols, permute_heads, s, err)
                              : find_st(ld, hf, rows, cols, s, err);
}

/* 1 when the checkpoint holds a tensor of that name (either naming), whatever its shape. */
static int has_tensor(loader *ld, const char *hf, const char *gguf)
{
    kv_model_files *fs = ld->m->files;
    if (fs->gguf)
        return kv_gguf_find_tensor(fs->gguf, gguf) != NULL;
    if (fs->index)
        return json_get_string(json_get(json_root(fs->index), "weight_map"), hf) != NULL;
    kv_st_file *f;
    kv_err ignored;
    return open_shard(fs, ld->path, "model.safetensors", &f, &ignored) == KV_OK && kv_st_find(f, hf) != NULL;
}

/* A layer that shares another's K/V (cla_share_factor) has no K/V projections: a checkpoint
 * with them there was not trained to share (or its config is wrong), so it is refused
 * rather than run with weights silently dropped. */
static int is_kv_projection(size_t field)
{
    return field == offsetof(kv_layer_weights, wk) || field == offsetof(kv_layer_weights, wv);
}

static int load_layer(loader *ld, int i, kv_err *err)
{
    const kv_model_config *c = &ld->m->cfg;
    int64_t h = c->hidden_size, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t ff = c->intermediate_size;
    const int64_t shape[N_LAYER_TENSORS][2] = {{0, h}, {q, h}, {kv, h}, {kv, h}, {h, q}, {0, h}, {ff, h}, {ff, h}, {h, ff}};
    const int permute[N_LAYER_TENSORS] = {0, c->n_heads, c->n_kv_heads, 0, 0, 0, 0, 0, 0};
    char *layer = (char *)&ld->m->layers[i];
    const char *like = ld->o->types_like ? (const char *)&ld->o->types_like->layers[i] : NULL;
    for (int k = 0; k < N_LAYER_TENSORS; k++) {
        const struct layer_tensor *lt = &layer_tensors[k];
        char hf[128], gguf[64];
        snprintf(hf, sizeof hf, "model.layers.%d.%s", i, lt->hf);
        snprintf(gguf, sizeof gguf, "blk.%d.%s.weight", i, lt->gguf);
        if (is_kv_projection(lt->field) && kv_model_config_kv_owner(c, i) != i) {
            if (has_tensor(ld, hf, gguf))
                return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\" present, but with cla_share_factor %d layer %d "
                                  "attends with layer %d's K/V and has no K/V projection", ld->path, hf,
                                  c->cla_share, i, kv_model_config_kv_owner(c, i));
            continue; /* left empty (no data, 0 rows): the engines never read it */
        }
        src_tensor s;
        int rc = find(ld, hf, gguf, shape[k][0], shape[k][1], permute[k], &s, err);
        if (!rc)
            rc = lt->matrix ? place(ld, &s, want_type(ld, like ? (const kv_weight *)(like + lt->field) : NULL),
                                    (kv_weight *)(layer + lt->field), err)
                            : place_f32(ld, &s, (const float **)(void *)(layer + lt->field), err);
        if (rc)
            return rc;
    }
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

/* Config (and, for a GGUF, the open file). */
static int open_model(loader *ld, kv_err *err)
{
    kv_model *m = ld->m;
    if (!kv_model_path_is_gguf(ld->path)) {
        int rc = kv_model_config_load(ld->path, &m->cfg, err);
        return rc ? rc : open_index(m->files, ld->path, err);
    }
    char *text;
    size_t len;
    int rc = kv_gguf_open(ld->path, &m->files->gguf, err);
    if (rc || (rc = kv_model_gguf_config(m->files->gguf, &text, &len, err)))
        return rc;
    rc = kv_model_config_parse(text, len, ld->path, &m->cfg, err);
    free(text);
    /* Every tensor must have its place (a bias or an extra weight would change the model). */
    size_t want = 2 + (size_t)N_LAYER_TENSORS * (size_t)m->cfg.n_layers + (m->cfg.tie_embeddings ? 0 : 1) -
                  2 * (size_t)(m->cfg.n_layers - kv_model_config_kv_layers(&m->cfg));
    if (!rc && kv_gguf_tensor_count(m->files->gguf) != want)
        rc = kv_err_set(err, KV_EUNSUPPORTED, "%s: %zu tensors, a Llama model of this shape has %zu", ld->path,
                        kv_gguf_tensor_count(m->files->gguf), want);
    return rc;
}

static void count_bytes(kv_model *m)
{
    const kv_model_config *c = &m->cfg;
    size_t norm = (size_t)c->hidden_size * sizeof(float);
    m->type_bytes[m->embed.type] += kv_weight_bytes(&m->embed);
    if (m->lm_head.data != m->embed.data)
        m->type_bytes[m->lm_head.type] += kv_weight_bytes(&m->lm_head);
    m->weight_bytes = kv_weight_bytes(&m->lm_head) + norm;
    m->type_bytes[KV_TYPE_F32] += norm;
    for (int i = 0; i < c->n_layers; i++) {
        const char *layer = (const char *)&m->layers[i];
        for (int k = 0; k < N_LAYER_TENSORS; k++) {
            const struct layer_tensor *lt = &layer_tensors[k];
            const kv_weight *w = (const kv_weight *)(layer + lt->field);
            size_t b = lt->matrix ? kv_weight_bytes(w) : norm;
            m->type_bytes[lt->matrix ? w->type : KV_TYPE_F32] += b;
            m->weight_bytes += b;
        }
    }
    /* "q4_1+q8_0+f32": most bytes first. */
    int used[KV_TYPE_COUNT] = {0};
    size_t at = 0;
    m->weight_types[0] = '\0';
    for (;;) {
        int best = -1;
        for (int t = 0; t < KV_TYPE_COUNT; t++)
            if (!used[t] && m->type_bytes[t] && (best < 0 || m->type_bytes[t] > m->type_bytes[best]))
                best = t;
        if (best < 0)
            break;
        used[best] = 1;
        int n = snprintf(m->weight_types + at, sizeof m->weight_types - at, "%s%s", at ? "+" : "",
                         kv_type_name((kv_type)best));
        if (n < 0 || (size_t)n >= sizeof m->weight_types - at)
            break;
        at += (size_t)n;
    }
}

static int load(loader *ld, kv_err *err)
{
    kv_model *m = ld->m;
    int rc = open_model(ld, err);
    const kv_model_config *c = &m->cfg;
    const kv_model *like = ld->o->types_like;
    if (!rc && like &&
        (like->cfg.n_layers != c->n_layers || like->cfg.hidden_size != c->hidden_size ||
         like->cfg.vocab_size != c->vocab_size || like->cfg.intermediate_size != c->intermediate_size))
        rc = kv_err_set(err, KV_EINVAL, "%s: types_like is a model of another shape", ld->path);
    if (!rc && !(m->layers = calloc((size_t)c->n_layers, sizeof *m->layers)))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    src_tensor s;
    if (!rc && !(rc = find(ld, "model.embed_tokens.weight", "token_embd.weight", c->vocab_size, c->hidden_size, 0, &s,
                           err)))
        rc = place(ld, &s, want_type(ld, like ? &like->embed : NULL), &m->embed, err);
    for (int i = 0; !rc && i < c->n_layers; i++)
        rc = load_layer(ld, i, err);
    if (!rc && !(rc = find(ld, "model.norm.weight", "output_norm.weight", 0, c->hidden_size, 0, &s, err)))
        rc = place_f32(ld, &s, &m->final_norm, err);
    if (!rc) {
        int tied_alike = c->tie_embeddings && (!like || like->lm_head.type == like->embed.type);
        if (tied_alike)
            m->lm_head = m->embed;
        else if (c->tie_embeddings) /* tied in the file, but wanted in two types */
            rc = find(ld, "model.embed_tokens.weight", "token_embd.weight", c->vocab_size, c->hidden_size, 0, &s, err);
        else
            rc = find(ld, "lm_head.weight", "output.weight", c->vocab_size, c->hidden_size, 0, &s, err);
        if (!rc && !tied_alike)
            rc = place(ld, &s, want_type(ld, like ? &like->lm_head : NULL), &m->lm_head, err);
    }
    if (!rc)
        count_bytes(m);
    free(m->files->row);
    m->files->row = NULL;
    m->files->row_cap = 0;
    return rc;
}

int kv_model_load_opts(const char *path, const kv_model_load_options *o, kv_model **out, kv_err *err)
{
    *out = NULL;
    kv_model_load_options dflt;
    kv_model_load_options_default(&dflt);
    if (!o)
        o = &dflt;
    if (o->weights_type >= 0 && !kv_quantize_supported((kv_type)o->weights_type))
        return kv_err_set(err, KV_EINVAL, "no quantizer for weights dtype %s", kv_type_name((kv_type)o->weights_type));
    kv_model *m = calloc(1, sizeof *m);
    if (!m || !(m->files = calloc(1, sizeof *m->files))) {
        free(m);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    loader ld = {m, path, o};
    int rc = load(&ld, err);
    if (rc) {
        kv_model_free(m);
        return rc;
    }
    *out = m;
    return KV_OK;
}

int kv_model_load(const char *path, kv_model **out, kv_err *err) { return kv_model_load_opts(path, NULL, out, err); }

int kv_model_weight_mapped(const kv_model *m, const kv_weight *w)
{
    if (!m->files || !w->data)
        return 0;
    for (size_t i = 0; i < m->files->n_owned; i++)
        if (m->files->owned[i] == w->data)
            return 0;
    return 1;
}

void kv_model_release_weight(const kv_model *m, const kv_weight *w)
{
    if (kv_model_weight_mapped(m, w))
        release_pages(w->data, kv_weight_bytes(w));
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
        free(m->files->row);
        json_doc_free(m->files->index);
        kv_gguf_close(m->files->gguf);
        free(m->files);
    }
    free(m->layers);
    free(m);
}
