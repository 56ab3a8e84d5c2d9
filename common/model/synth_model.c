#include "synth_model.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "dtype_convert.h"
#include "kv_file.h"
#include "kv_time.h"
#include "model_shapes.h"
#include "safetensors_write.h"
#include "kv_textbuf.h"
#include "synth_tokenizer.h"
#include "synth_weights.h"

#define KV_PATH_CAP 4096
#define KV_CHUNK_ELEMS ((size_t)1 << 20) /* 4 MiB of f32 per generate/convert/write step */
#define KV_MAX_SHARDS 99999               /* the 5-digit HF shard names */

/* The shape after overrides, with the derived values config.json needs. */
typedef struct synth_dims {
    const kv_model_shape *shape;
    int hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
    int bos, eos;
    int cla_share; /* 1: every layer has its own K/V */
} synth_dims;

/* One tensor to generate: values uniform in center +- amplitude. */
typedef struct synth_tensor {
    char name[96];
    kv_st_tensor_desc desc;
    float center, amplitude;
    int shard;
} synth_tensor;

typedef struct synth_plan {
    synth_dims d;
    synth_tensor *t;
    size_t n;
    int n_shards;
    uint64_t n_params, data_bytes;
} synth_plan;

/* Files this run created under their final names, removed again if the run fails. */
typedef struct created_files {
    char (*paths)[KV_PATH_CAP];
    int n, cap;
} created_files;

static int resolve_dims(const kv_synth_options *opt, synth_dims *d, kv_err *err)
{
    const kv_model_shape *s = kv_model_shape_find(opt->shape);
    if (!s) {
        char names[256];
        kv_model_shape_names(names, sizeof names);
        return kv_err_set(err, KV_EINVAL, "unknown shape '%s' (valid: %s)",
                          opt->shape ? opt->shape : "", names);
    }
    if (opt->dtype != KV_DTYPE_F32 && opt->dtype != KV_DTYPE_F16 && opt->dtype != KV_DTYPE_BF16)
        return kv_err_set(err, KV_EINVAL, "unknown dtype %d (valid: f32, f16, bf16)", (int)opt->dtype);
    if (!opt->out_dir || !opt->out_dir[0])
        return kv_err_set(err, KV_EINVAL, "no output directory given");
    if (opt->n_layers < 0 || opt->n_layers > KV_SYNTH_MAX_LAYERS)
        return kv_err_set(err, KV_EINVAL, "layers %d out of range (1..%d)", opt->n_layers,
                          KV_SYNTH_MAX_LAYERS);
    if (opt->vocab_size < 0 || opt->vocab_size > KV_SYNTH_MAX_VOCAB)
        return kv_err_set(err, KV_EINVAL, "vocab %d out of range (%d..%d)", opt->vocab_size,
                          KV_SYNTH_MIN_VOCAB, KV_SYNTH_MAX_VOCAB);
    d->shape = s;
    d->cla_share = opt->cla_share > 1 ? opt->cla_share : 1;
    d->hidden = s->hidden_size;
    d->intermediate = s->intermediate_size;
    d->layers = opt->n_layers > 0 ? opt->n_layers : s->n_layers;
    d->heads = s->n_heads;
    d->kv_heads = s->n_kv_heads;
    d->head_dim = s->hidden_size / s->n_heads;
    d->vocab = opt->vocab_size > 0 ? opt->vocab_size : s->vocab_size;
    if (d->vocab < KV_SYNTH_MIN_VOCAB)
        return kv_err_set(err, KV_EINVAL,
                          "vocab %d is too small: the byte-level tokenizer needs at least %d ids "
                          "(256 bytes + 2 specials)", d->vocab, KV_SYNTH_MIN_VOCAB);
    /* The real ids when they fit, else the synthetic tokenizer's specials (last two ids). */
    int fits = s->bos_id >= 0 && s->bos_id < d->vocab && s->eos_id >= 0 && s->eos_id < d->vocab;
    d->bos = fits ? s->bos_id : d->vocab - 2;
    d->eos = fits ? s->eos_id : d->vocab - 1;
    if (opt->cla_share < 0 || d->cla_share > d->layers)
        return kv_err_set(err, KV_EINVAL, "CLA share factor %d out of range (1..%d layers)", opt->cla_share,
                          d->layers);
    return KV_OK;
}

static void add_tensor(synth_plan *p, kv_dtype dtype, const char *name, int64_t rows, int64_t cols,
                       float center, float std)
{
    synth_tensor *t = &p->t[p->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->desc.name = t->name;
    t->desc.dtype = dtype;
    t->desc.n_dims = cols ? 2 : 1;
    t->desc.shape[0] = rows;
    t->desc.shape[1] = cols;
    t->center = center;
    t->amplitude = sqrtf(3.0f) * std; /* uniform on +-a has std a / sqrt(3) */
    p->n_params += (uint64_t)rows * (uint64_t)(cols ? cols : 1);
    p->data_bytes += kv_st_tensor_bytes(&t->desc);
}

/* HF tensor names and [out, in] shapes, in forward-pass order. Linear weights get
 * std 0.5/sqrt(in): RMSNorm feeds every projection unit-RMS inputs, so outputs have std ~0.5
 * and the residual stream grows only slowly over many layers (finite activations). */
static int build_plan(const kv_synth_options *opt, synth_plan *p, kv_err *err)
{
    const synth_dims *d = &p->d;
    size_t n_max = 2 + 9 * (size_t)d->layers + 1;
    p->t = calloc(n_max, sizeof *p->t);
    if (!p->t)
        return kv_err_set(err, KV_ENOMEM, "out of memory for %zu tensor descriptions", n_max);
    const kv_dtype dt = opt->dtype;
    const int64_t h = d->hidden, q_out = (int64_t)d->heads * d->head_dim,
                  kv_out = (int64_t)d->kv_heads * d->head_dim, ff = d->intermediate;
    const float norm_noise = 0.01f, lin_h = 0.5f / sqrtf((float)h),
                lin_q = 0.5f / sqrtf((float)q_out), lin_ff = 0.5f / sqrtf((float)ff);
    char name[96];
    add_tensor(p, dt, "model.embed_tokens.weight", d->vocab, h, 0.0f, 0.02f);
    for (int i = 0; i < d->layers; i++) {
#define LAYER_TENSOR(suffix, rows, cols, center, std)                          \
    do {                                                                       \
        snprintf(name, sizeof name, "model.layers.%d.%s", i, suffix);          \
        add_tensor(p, dt, name, rows, cols, center, std);                      \
    } while (0)
        LAYER_TENSOR("input_layernorm.weight", h, 0, 1.0f, norm_noise);
        LAYER_TENSOR("self_attn.q_proj.weight", q_out, h, 0.0f, lin_h);
        if (i % d->cla_share == 0) { /* an owner layer: the others attend with its K/V */
            LAYER_TENSOR("self_attn.k_proj.weight", kv_out, h, 0.0f, lin_h);
            LAYER_TENSOR("self_attn.v_proj.weight", kv_out, h, 0.0f, lin_h);
        }
        LAYER_TENSOR("self_attn.o_proj.weight", h, q_out, 0.0f, lin_q);
        LAYER_TENSOR("post_attention_layernorm.weight", h, 0, 1.0f, norm_noise);
        LAYER_TENSOR("mlp.gate_proj.weight", ff, h, 0.0f, lin_h);
        LAYER_TENSOR("mlp.up_proj.weight", ff, h, 0.0f, lin_h);
        LAYER_TENSOR("mlp.down_proj.weight", h, ff, 0.0f, lin_ff);
#undef LAYER_TENSOR
    }
    add_tensor(p, dt, "model.norm.weight", h, 0, 1.0f, norm_noise);
    if (!d->shape->tie_embeddings)
        add_tensor(p, dt, "lm_head.weight", d->vocab, h, 0.0f, lin_h);

    /* Shards as HF packs them: in order, a new shard when the next tensor would overflow
     * the current one (a tensor bigger than a shard gets one to itself). */
    uint64_t limit = opt->max_shard_bytes ? opt->max_shard_bytes : KV_SYNTH_DEFAULT_SHARD_BYTES;
    uint64_t in_shard = 0;
    int shard = 0;
    for (size_t k = 0; k < p->n; k++) {
        uint64_t b = kv_st_tensor_bytes(&p->t[k].desc);
        if (in_shard > 0 && in_shard + b > limit) {
            shard++;
            in_shard = 0;
        }
        p->t[k].shard = shard;
        in_shard += b;
    }
    p->n_shards = shard + 1;
    if (p->n_shards > KV_MAX_SHARDS)
        return kv_err_set(err, KV_EINVAL, "%d shards is more than HF names allow (%d)",
                          p->n_shards, KV_MAX_SHARDS);
    return KV_OK;
}

static void shard_file_name(const synth_plan *p, int shard, char *out, size_t cap)
{
    if (p->n_shards == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", shard + 1, p->n_shards);
}

/* ---- the directory ---- */

static int make_dirs(const char *dir, kv_err *err)
{
    char path[KV_PATH_CAP];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return kv_err_set(err, KV_EINVAL, "path too long: %s", dir);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return kv_err_set(err, KV_EIO, "cannot create directory %s: %s", path, strerror(errno));
        *p = c;
        if (!c)
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return kv_err_set(err, KV_EIO, "%s: not a directory", dir);
    return KV_OK;
}

static int is_shard_name(const char *name)
{
    unsigned k, n;
    int end = 0;
    return sscanf(name, "model-%5u-of-%5u.safetensors%n", &k, &n, &end) == 2 &&
           name[end] == '\0' && strlen(name) == strlen("model-00001-of-00002.safetensors");
}

static int is_model_file(const char *name)
{
    return !strcmp(name, "config.json") || !strcmp(name, "tokenizer.json") ||
           !strcmp(name, "model.safetensors") || !strcmp(name, "model.safetensors.index.json") ||
           is_shard_name(name);
}

/* Refuses to mix with (or silently clobber) an existing model; with force, deletes the old
 * model's files, config.json first so the directory stops looking like a model at once. */
static int clear_old_model(const char *dir, int force, kv_err *err)
{
    char path[KV_PATH_CAP];
    int rc = kv_path_join(path, sizeof path, dir, "config.json", err);
    if (rc)
        return rc;
    if (force && remove(path) != 0 && errno != ENOENT)
        return kv_err_set(err, KV_EIO, "cannot remove old %s: %s", path, strerror(errno));
    DIR *dh = opendir(dir);
    if (!dh)
        return kv_err_set(err, KV_EIO, "%s: %s", dir, strerror(errno));
    rc = KV_OK;
    for (struct dirent *e; rc == KV_OK && (e = readdir(dh)) != NULL;) {
        if (!is_model_file(e->d_name))
            continue;
        if (!force) {
            rc = kv_err_set(err, KV_ESTATE, "%s already holds a model (%s); pass --force to "
                                            "replace it", dir, e->d_name);
        } else if ((rc = kv_path_join(path, sizeof path, dir, e->d_name, err)) == KV_OK &&
                   remove(path) != 0 && errno != ENOENT) {
            rc = kv_err_set(err, KV_EIO, "cannot remove old %s: %s", path, strerror(errno));
        }
    }
    closedir(dh);
    return rc;
}

static int check_free_space(const char *dir, uint64_t need, kv_err *err)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0 || vfs.f_blocks == 0)
        return KV_OK; /* unknown: the writes themselves are checked */
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (avail < need)
        return kv_err_set(err, KV_EIO, "not enough disk space in %s: need %.2f GB, %.2f GB free",
                          dir, (double)need / 1e9, (double)avail / 1e9);
    return KV_OK;
}

static int remember(created_files *cf, const char *path, kv_err *err)
{
    if (cf->n == cf->cap) {
        int cap = cf->cap ? cf->cap * 2 : 8;
        void *p = realloc(cf->paths, (size_t)cap * sizeof *cf->paths);
        if (!p)
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        cf->paths = p;
        cf->cap = cap;
    }
    snprintf(cf->paths[cf->n++], KV_PATH_CAP, "%s", path);
    return KV_OK;
}

static void remove_created(created_files *cf)
{
    for (int i = cf->n - 1; i >= 0; i--)
        remove(cf->paths[i]);
    cf->n = 0;
}

/* Writes DIR/name atomically and records it. */
static int write_small_file(const char *dir, const char *name, const kv_textbuf *text,
                            created_files *cf, kv_err *err)
{
    char path[KV_PATH_CAP];
    int rc = kv_path_join(path, sizeof path, dir, name, err);
    if (rc == KV_OK && kv_textbuf_failed(text))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory building %s", name);
    if (rc == KV_OK)
        rc = kv_file_write_all(path, text->data, text->len, err);
    if (rc == KV_OK)
        rc = remember(cf, path, err);
    return rc;
}

/* ---- JSON files ---- */

/* A float that reads back as a JSON float (always a '.' or an exponent). */
static void json_float(kv_textbuf *b, double v)
{
    char s[32];
    snprintf(s, sizeof s, "%.9g", v);
    kv_textbuf_puts(b, s);
    if (!strpbrk(s, ".eEn"))
        kv_textbuf_puts(b, ".0");
}

static const char *torch_dtype(kv_dtype dtype)
{
    return dtype == KV_DTYPE_F16 ? "float16" : dtype == KV_DTYPE_BF16 ? "bfloat16" : "float32";
}

static void config_json(const synth_dims *d, kv_dtype dtype, kv_textbuf *b)
{
    const kv_model_shape *s = d->shape;
    kv_textbuf_printf(b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n"
                         "  \"model_type\": \"llama\",\n"
                         "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                         "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                         "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
                         "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n",
                      d->hidden, d->intermediate, d->layers, d->heads, d->kv_heads, d->head_dim,
                      d->vocab, s->max_position);
    if (d->cla_share > 1)
        kv_textbuf_printf(b, "  \"cla_share_factor\": %d,\n", d->cla_share);
    kv_textbuf_puts(b, "  \"rms_norm_eps\": ");
    json_float(b, s->rms_eps);
    kv_textbuf_puts(b, ",\n  \"rope_theta\": ");
    json_float(b, s->rope_theta);
    kv_textbuf_puts(b, ",\n  \"rope_scaling\": ");
    if (s->rope_llama3) {
        kv_textbuf_puts(b, "{\"rope_type\": \"llama3\", \"factor\": ");
        json_float(b, s->rope_factor);
        kv_textbuf_puts(b, ", \"low_freq_factor\": ");
        json_float(b, s->rope_low_freq_factor);
        kv_textbuf_puts(b, ", \"high_freq_factor\": ");
        json_float(b, s->rope_high_freq_factor);
        kv_textbuf_printf(b, ", \"original_max_position_embeddings\": %d}",
                          s->rope_original_max_position);
    } else {
        kv_textbuf_puts(b, "null");
    }
    kv_textbuf_printf(b, ",\n  \"hidden_act\": \"silu\",\n  \"tie_word_embeddings\": %s,\n"
                         "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n"
                         "  \"torch_dtype\": \"%s\"\n}\n",
                      s->tie_embeddings ? "true" : "false", d->bos, d->eos, torch_dtype(dtype));
}

static void index_json(const synth_plan *p, kv_textbuf *b)
{
    kv_textbuf_printf(b, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n",
                      (unsigned long long)p->data_bytes);
    char file[64];
    for (size_t k = 0; k < p->n; k++) {
        shard_file_name(p, p->t[k].shard, file, sizeof file);
        kv_textbuf_puts(b, "    ");
        kv_textbuf_json_string(b, p->t[k].name, strlen(p->t[k].name));
        kv_textbuf_printf(b, ": \"%s\"%s\n", file, k + 1 < p->n ? "," : "");
    }
    kv_textbuf_puts(b, "  }\n}\n");
}

/* ---- weights ---- */

typedef struct progress_state {
    FILE *out;
    double t0;
    uint64_t done, total, next_report;
} progress_state;

#define KV_PROGRESS_STEP UINT64_C(1000000000) /* a line per GB, only for models above it */

static void progress_advance(progress_state *ps, uint64_t bytes, const char *tensor)
{
    ps->done += bytes;
    if (!ps->out || ps->total < KV_PROGRESS_STEP || ps->done < ps->next_report)
        return;
    while (ps->next_report <= ps->done)
        ps->next_report += KV_PROGRESS_STEP;
    double dt = kv_now_s() - ps->t0;
    fprintf(ps->out, "  %6.2f / %.2f GB (%3.0f%%)  %.2f GB/s  %s\n", (double)ps->done / 1e9,
            (double)ps->total / 1e9, 100.0 * (double)ps->done / (double)ps->total,
            dt > 0 ? (double)ps->done / 1e9 / dt : 0.0, tensor);
    fflush(ps->out);
}

typedef struct chunk_buffers {
    float *f32;
    uint16_t *half;
} chunk_buffers;

static int write_tensor(kv_st_writer *w, const synth_tensor *t, uint64_t seed, chunk_buffers *cb,
                        progress_state *ps, kv_err *err)
{
    kv_synth_rng rng;
    kv_synth_rng_init(&rng, seed, t->name);
    uint64_t n = (uint64_t)t->desc.shape[0] * (uint64_t)(t->desc.n_dims == 2 ? t->desc.shape[1] : 1);
    for (uint64_t first = 0; first < n; first += KV_CHUNK_ELEMS) {
        size_t m = (size_t)(n - first < KV_CHUNK_ELEMS ? n - first : KV_CHUNK_ELEMS);
        kv_synth_fill_uniform(&rng, first, cb->f32, m, t->center, t->amplitude);
        const void *data = cb->f32;
        size_t bytes = m * sizeof(float);
        if (t->desc.dtype == KV_DTYPE_F16) {
            kv_f32_to_f16(cb->half, cb->f32, m);
            data = cb->half;
            bytes = m * sizeof(uint16_t);
        } else if (t->desc.dtype == KV_DTYPE_BF16) {
            kv_f32_to_bf16(cb->half, cb->f32, m);
            data = cb->half;
            bytes = m * sizeof(uint16_t);
        }
        int rc = kv_st_writer_write(w, data, bytes, err);
        if (rc)
            return kv_err_wrap(err, "%s", t->name);
        progress_advance(ps, bytes, t->name);
    }
    return KV_OK;
}

static int write_shard(const kv_synth_options *opt, const synth_plan *p, int shard,
                       chunk_buffers *cb, progress_state *ps, created_files *cf, kv_err *err)
{
    char file[64], path[KV_PATH_CAP];
    shard_file_name(p, shard, file, sizeof file);
    int rc = kv_path_join(path, sizeof path, opt->out_dir, file, err);
    if (rc)
        return rc;
    size_t first = 0, n = 0;
    while (first < p->n && p->t[first].shard != shard)
        first++;
    while (first + n < p->n && p->t[first + n].shard == shard)
        n++;
    /* The descs are per tensor; pass the shard's slice to the writer. */
    kv_st_tensor_desc *descs = malloc(n * sizeof *descs);
    if (!descs)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    for (size_t k = 0; k < n; k++)
        descs[k] = p->t[first + k].desc;
    kv_st_writer *w = NULL;
    rc = kv_st_writer_open(path, descs, n, &w, err);
    free(descs);
    for (size_t k = 0; rc == KV_OK && k < n; k++)
        rc = write_tensor(w, &p->t[first + k], opt->seed, cb, ps, err);
    if (rc) {
        kv_st_writer_abort(w);
        return rc;
    }
    rc = kv_st_writer_close(w, err);
    if (rc == KV_OK)
        rc = remember(cf, path, err);
    return rc;
}

/* Exact size of all weight files (headers included). */
static int weight_file_bytes(const synth_plan *p, uint64_t *out, kv_err *err)
{
    kv_st_tensor_desc *descs = malloc(p->n * sizeof *descs);
    if (!descs)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    int rc = KV_OK;
    *out = 0;
    for (int s = 0; rc == KV_OK && s < p->n_shards; s++) {
        size_t n = 0;
        for (size_t k = 0; k < p->n; k++)
            if (p->t[k].shard == s)
                descs[n++] = p->t[k].desc;
        uint64_t size = 0;
        rc = kv_st_writer_file_size(descs, n, &size, err);
        *out += size;
    }
    free(descs);
    return rc;
}

/* "967.81K" / "3.91 MB": human-sized numbers for the summary line. */
static void human(char *out, size_t cap, double v, const char *const units[4], double base)
{
    int u = 0;
    while (u < 3 && v >= base) {
        v /= base;
        u++;
    }
    snprintf(out, cap, "%.2f%s", v, units[u]);
}

static void summary(const kv_synth_options *opt, const synth_plan *p, uint64_t bytes, double secs)
{
    if (!opt->progress)
        return;
    static const char *const count_units[4] = {"", "K", "M", "B"};
    static const char *const byte_units[4] = {" B", " KB", " MB", " GB"};
    char params[32], size[32], rate[32];
    human(params, sizeof params, (double)p->n_params, count_units, 1000.0);
    human(size, sizeof size, (double)bytes, byte_units, 1000.0);
    human(rate, sizeof rate, secs > 0 ? (double)bytes / secs : 0.0, byte_units, 1000.0);
    fprintf(opt->progress,
            "wrote %s: %s %s, %s params, %s in %d weight file%s + config + tokenizer, %.2f s "
            "(%s/s)\n",
            opt->out_dir, p->d.shape->name, torch_dtype(opt->dtype), params, size, p->n_shards,
            p->n_shards == 1 ? "" : "s", secs, rate);
    fflush(opt->progress);
}

int kv_synth_model_write(const kv_synth_options *opt, kv_err *err)
{
    double t0 = kv_now_s();
    synth_plan plan = {0};
    int rc = resolve_dims(opt, &plan.d, err);
    if (rc)
        return rc;
    kv_textbuf tok, small;
    kv_textbuf_init(&tok);
    kv_textbuf_init(&small);
    created_files cf = {0};
    chunk_buffers cb = {0};
    rc = build_plan(opt, &plan, err);
    if (rc == KV_OK)
        rc = kv_synth_tokenizer_json(plan.d.vocab, &tok, err);
    if (rc == KV_OK)
        rc = make_dirs(opt->out_dir, err);
    if (rc == KV_OK)
        rc = clear_old_model(opt->out_dir, opt->force, err);
    uint64_t weight_bytes = 0, total_bytes = 0;
    if (rc == KV_OK)
        rc = weight_file_bytes(&plan, &weight_bytes, err);
    /* + config.json and the index: a few KB, counted generously. */
    if (rc == KV_OK)
        rc = check_free_space(opt->out_dir, weight_bytes + tok.len + (1u << 20), err);
    if (rc == KV_OK) {
        cb.f32 = malloc(KV_CHUNK_ELEMS * sizeof *cb.f32);
        cb.half = malloc(KV_CHUNK_ELEMS * sizeof *cb.half);
        if (!cb.f32 || !cb.half)
            rc = kv_err_set(err, KV_ENOMEM, "out of memory for the write buffers");
    }
    /* Order: weights (the long part: a crash there leaves only *.tmp files, which the next
     * run overwrites), tokenizer, index, and config.json last (see synth_model.h). */
    progress_state ps = {.out = opt->progress, .t0 = kv_now_s(), .total = plan.data_bytes,
                         .next_report = KV_PROGRESS_STEP};
    if (rc == KV_OK && opt->progress && plan.data_bytes >= KV_PROGRESS_STEP)
        fprintf(opt->progress, "writing %s %s (%.2f GB) to %s\n", plan.d.shape->name,
                torch_dtype(opt->dtype), (double)weight_bytes / 1e9, opt->out_dir);
    for (int s = 0; rc == KV_OK && s < plan.n_shards; s++)
        rc = write_shard(opt, &plan, s, &cb, &ps, &cf, err);
    if (rc == KV_OK)
        rc = write_small_file(opt->out_dir, "tokenizer.json", &tok, &cf, err);
    if (rc == KV_OK && plan.n_shards > 1) {
        index_json(&plan, &small);
        rc = write_small_file(opt->out_dir, "model.safetensors.index.json", &small, &cf, err);
        total_bytes += small.len;
        kv_textbuf_free(&small);
    }
    if (rc == KV_OK) {
        config_json(&plan.d, opt->dtype, &small);
        rc = write_small_file(opt->out_dir, "config.json", &small, &cf, err);
        total_bytes += small.len + tok.len + weight_bytes;
    }
    if (rc == KV_OK)
        summary(opt, &plan, total_bytes, kv_now_s() - t0);
    else
        remove_created(&cf);
    free(cb.f32);
    free(cb.half);
    free(cf.paths);
    free(plan.t);
    kv_textbuf_free(&tok);
    kv_textbuf_free(&small);
    return rc;
}
