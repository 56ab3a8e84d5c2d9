/* kv_gguf_import: plan the HF tensors, build the JSON files, write everything into a
 * temporary sibling directory, then swap it in (gguf_import.h). */
#include "gguf_import.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype_convert.h"
#include "gguf.h"
#include "gguf_import_internal.h"
#include "kv_file.h"
#include "kv_time.h"
#include "kv_type.h"
#include "safetensors_write.h"

#define PATH_CAP 4096
#define CHUNK_ELEMS ((size_t)1 << 20)          /* f32 elements dequantized per write */
#define PROGRESS_MIN_BYTES ((uint64_t)64 << 20) /* progress lines only for outputs above this */

/* One HF tensor: where its rows come from, and whether llama.cpp's Q/K permutation (over
 * permute_heads heads) must be undone. */
typedef struct plan_tensor {
    char name[96];
    const kv_gguf_tensor *src;
    uint64_t rows, cols;
    int n_dims;
    int permute_heads;
} plan_tensor;

typedef struct plan {
    plan_tensor *t;
    size_t n;
    uint64_t out_bytes;
} plan;

/* ---- the tensor plan ---- */

static int add(plan *p, const kv_gguf *g, const char *gguf_name, const char *hf_name, uint64_t rows, uint64_t cols,
               int permute_heads, kv_err *err)
{
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, gguf_name);
    const char *path = kv_gguf_path(g);
    if (!t)
        return kv_err_set(err, KV_EFORMAT, "%s: missing tensor '%s'", path, gguf_name);
    int n_dims = rows ? 2 : 1;
    if (t->n_dims != n_dims || t->ne[0] != cols || (rows && t->ne[1] != rows))
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' has shape [%llu, %llu] (GGUF order), expected [%llu, %llu]",
                          path, gguf_name, (unsigned long long)t->ne[0],
                          (unsigned long long)(t->n_dims > 1 ? t->ne[1] : 0), (unsigned long long)cols,
                          (unsigned long long)rows);
    if (t->type < 0)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: tensor '%s' has type %s (%u), which kvserve cannot dequantize",
                          path, gguf_name, t->type_name, t->ggml_type);
    plan_tensor *pt = &p->t[p->n++];
    snprintf(pt->name, sizeof pt->name, "%s", hf_name);
    pt->src = t;
    pt->rows = rows ? rows : 1;
    pt->cols = cols;
    pt->n_dims = n_dims;
    pt->permute_heads = permute_heads;
    return KV_OK;
}

static int build_plan(const kv_gguf *g, const gguf_llama *hp, plan *p, kv_err *err)
{
    size_t cap = 3 + 9 * (size_t)hp->layers;
    p->t = calloc(cap, sizeof *p->t);
    if (!p->t)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    const uint64_t h = (uint64_t)hp->hidden, q = (uint64_t)hp->heads * (uint64_t)hp->head_dim,
                   kv = (uint64_t)hp->kv_heads * (uint64_t)hp->head_dim, ff = (uint64_t)hp->intermediate;
    int rc = add(p, g, "token_embd.weight", "model.embed_tokens.weight", (uint64_t)hp->vocab, h, 0, err);
    for (int i = 0; rc == KV_OK && i < hp->layers; i++) {
        static const struct {
            const char *gguf, *hf;
        } names[9] = {
            {"attn_norm", "input_layernorm"},       {"attn_q", "self_attn.q_proj"},
            {"attn_k", "self_attn.k_proj"},         {"attn_v", "self_attn.v_proj"},
            {"attn_output", "self_attn.o_proj"},    {"ffn_norm", "post_attention_layernorm"},
            {"ffn_gate", "mlp.gate_proj"},          {"ffn_up", "mlp.up_proj"},
            {"ffn_down", "mlp.down_proj"},
        };
        const uint64_t shape[9][2] = {{0, h}, {q, h}, {kv, h}, {kv, h}, {h, q}, {0, h}, {ff, h}, {ff, h}, {h, ff}};
        const int permute[9] = {0, hp->heads, hp->kv_heads, 0, 0, 0, 0, 0, 0};
        for (int k = 0; rc == KV_OK && k < 9; k++) {
            char gn[64], hn[96];
            snprintf(gn, sizeof gn, "blk.%d.%s.weight", i, names[k].gguf);
            snprintf(hn, sizeof hn, "model.layers.%d.%s.weight", i, names[k].hf);
            rc = add(p, g, gn, hn, shape[k][0], shape[k][1], permute[k], err);
        }
    }
    if (rc == KV_OK)
        rc = add(p, g, "output_norm.weight", "model.norm.weight", 0, h, 0, err);
    if (rc == KV_OK && !hp->tied)
        rc = add(p, g, "output.weight", "lm_head.weight", (uint64_t)hp->vocab, h, 0, err);
    /* A tensor no HF name takes (a bias, a new per-layer weight) would change the model:
     * refuse rather than drop it. */
    for (size_t i = 0; rc == KV_OK && i < kv_gguf_tensor_count(g); i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        int used = 0;
        for (size_t k = 0; k < p->n && !used; k++)
            used = p->t[k].src == t;
        if (!used)
            rc = kv_err_set(err, KV_EUNSUPPORTED, "%s: tensor '%s' has no place in a Llama model", kv_gguf_path(g),
                            t->name);
    }
    return rc;
}

static kv_st_tensor_desc *descriptions(const plan *p, kv_dtype dtype)
{
    kv_st_tensor_desc *d = calloc(p->n ? p->n : 1, sizeof *d);
    for (size_t i = 0; d && i < p->n; i++) {
        d[i].name = p->t[i].name;
        d[i].dtype = dtype;
        d[i].n_dims = p->t[i].n_dims;
        d[i].shape[0] = (int64_t)(p->t[i].n_dims == 2 ? p->t[i].rows : p->t[i].cols);
        d[i].shape[1] = (int64_t)p->t[i].cols;
    }
    return d;
}

/* ---- weights ---- */

/* The GGUF row holding HF row r: convert_hf_to_gguf.py stores each head's rows as
 * reshape(2, head_dim/2).swapaxes: HF row (s, i) of a head sits at row 2i + s. */
uint64_t gguf_source_row(uint64_t r, uint64_t rows, int heads)
{
    if (!heads)
        return r;
    uint64_t hd = rows / (uint64_t)heads, half = hd / 2, within = r % hd;
    return r - within + 2 * (within % half) + within / half;
}

typedef struct progress {
    FILE *out;
    double t0, last;
    uint64_t done, total;
} progress;

static void progress_note(progress *ps, size_t i, size_t n, const char *name)
{
    if (!ps->out || ps->total < PROGRESS_MIN_BYTES)
        return;
    double now = kv_now_s();
    if (now - ps->last < 1.0 && i + 1 < n)
        return;
    ps->last = now;
    fprintf(ps->out, "  tensor %zu/%zu  %.0f / %.0f MB  %s\n", i + 1, n, (double)ps->done / 1e6,
            (double)ps->total / 1e6, name);
    fflush(ps->out);
}

static int write_weights(const char *path, const plan *p, kv_dtype dtype, progress *ps, kv_err *err)
{
    kv_st_tensor_desc *descs = descriptions(p, dtype);
    if (!descs)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    size_t max_cols = CHUNK_ELEMS;
    for (size_t i = 0; i < p->n; i++)
        if (p->t[i].cols > max_cols)
            max_cols = (size_t)p->t[i].cols;
    float *f32 = malloc(max_cols * sizeof *f32);
    uint16_t *half = malloc(max_cols * sizeof *half);
    kv_st_writer *w = NULL;
    int rc = !f32 || !half ? kv_err_set(err, KV_ENOMEM, "out of memory for the conversion buffers")
                           : kv_st_writer_open(path, descs, p->n, &w, err);
    for (size_t i = 0; rc == KV_OK && i < p->n; i++) {
        const plan_tensor *t = &p->t[i];
        const struct kv_type_traits *tr = kv_type_traits((kv_type)t->src->type);
        const uint64_t row_bytes = kv_type_bytes((kv_type)t->src->type, t->cols);
        const uint64_t rows_per_chunk = t->cols >= max_cols ? 1 : max_cols / t->cols;
        for (uint64_t r0 = 0; rc == KV_OK && r0 < t->rows; r0 += rows_per_chunk) {
            uint64_t nr = t->rows - r0 < rows_per_chunk ? t->rows - r0 : rows_per_chunk;
            for (uint64_t r = 0; r < nr; r++)
                tr->to_f32((const unsigned char *)t->src->data + gguf_source_row(r0 + r, t->rows, t->permute_heads) * row_bytes,
                           f32 + r * t->cols, (size_t)t->cols);
            size_t m = (size_t)(nr * t->cols);
            const void *data = f32;
            size_t bytes = m * sizeof *f32;
            if (dtype != KV_DTYPE_F32) {
                if (dtype == KV_DTYPE_BF16)
                    kv_f32_to_bf16(half, f32, m);
                else
                    kv_f32_to_f16(half, f32, m);
                data = half;
                bytes = m * sizeof *half;
            }
            rc = kv_st_writer_write(w, data, bytes, err);
            ps->done += bytes;
        }
        if (rc)
            kv_err_wrap(err, "%s", t->name);
        else
            progress_note(ps, i, p->n, t->name);
    }
    if (rc == KV_OK)
        rc = kv_st_writer_close(w, err);
    else
        kv_st_writer_abort(w);
    free(descs);
    free(f32);
    free(half);
    return rc;
}

/* ---- the directory ---- */

/* Splits dir into its parent and last component ("a/b/" -> "a", "b"; "b" -> ".", "b"). */
static int split_dir(const char *dir, char *parent, char *base, kv_err *err)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 0 || n >= PATH_CAP)
        return kv_err_set(err, KV_EINVAL, "bad output directory '%s'", dir);
    size_t cut = n;
    while (cut > 0 && dir[cut - 1] != '/')
        cut--;
    if (cut == n || (n - cut == 1 && dir[cut] == '.') || (n - cut == 2 && !memcmp(dir + cut, "..", 2)))
        return kv_err_set(err, KV_EINVAL, "output directory '%s' must name a directory (not '/', '.' or '..')", dir);
    snprintf(base, PATH_CAP, "%.*s", (int)(n - cut), dir + cut);
    if (cut == 0)
        snprintf(parent, PATH_CAP, ".");
    else
        snprintf(parent, PATH_CAP, "%.*s", (int)(cut > 1 ? cut - 1 : 1), dir);
    return KV_OK;
}

/* What is in dir: -1 when absent, else its entry count; *subdirs counts directories. */
static int inspect_dir(const char *dir, long *entries, long *subdirs, kv_err *err)
{
    *entries = -1;
    *subdirs = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT)
            return KV_OK;
        return kv_err_set(err, KV_EIO, "%s: %s", dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return kv_err_set(err, KV_ESTATE, "%s exists and is not a directory", dir);
    DIR *dh = opendir(dir);
    if (!dh)
        return kv_err_set(err, KV_EIO, "%s: %s", dir, strerror(errno));
    *entries = 0;
    char path[PATH_CAP];
    for (struct dirent *e; (e = readdir(dh)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        (*entries)++;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path && lstat(path, &st) == 0 &&
            S_ISDIR(st.st_mode))
            (*subdirs)++;
    }
    closedir(dh);
    return KV_OK;
}

/* Removes dir and the files in it (never recursing: the importer writes no subdirectories). */
static void remove_flat_dir(const char *dir)
{
    DIR *dh = opendir(dir);
    if (dh) {
        char path[PATH_CAP];
        for (struct dirent *e; (e = readdir(dh)) != NULL;)
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
                unlink(path);
        closedir(dh);
    }
    rmdir(dir);
}

static int check_target(const kv_gguf_import_options *opt, long *entries, kv_err *err)
{
    long subdirs;
    int rc = inspect_dir(opt->out_dir, entries, &subdirs, err);
    if (rc)
        return rc;
    if (*entries > 0 && !opt->force)
        return kv_err_set(err, KV_ESTATE, "%s is not empty; pass --force to replace it", opt->out_dir);
    if (*entries > 0 && subdirs > 0)
        return kv_err_set(err, KV_ESTATE, "%s holds subdirectories; not replacing it even with --force", opt->out_dir);
    return KV_OK;
}

/* Puts the finished tmp directory at out_dir, replacing an old one (moved aside first, so
 * out_dir is always either the old or the new directory). */
static int swap_in(const char *tmp, const char *parent, const char *base, const kv_gguf_import_options *opt,
                   kv_err *err)
{
    long entries;
    int rc = check_target(opt, &entries, err);
    if (rc)
        return rc;
    if (entries <= 0) { /* absent, or empty (rename replaces an empty directory) */
        if (rename(tmp, opt->out_dir) != 0)
            return kv_err_set(err, KV_EIO, "cannot rename %s to %s: %s", tmp, opt->out_dir, strerror(errno));
        return KV_OK;
    }
    char old[PATH_CAP];
    if (snprintf(old, sizeof old, "%s/.%s.old-XXXXXX", parent, base) >= (int)sizeof old || !mkdtemp(old))
        return kv_err_set(err, KV_EIO, "cannot create a directory beside %s: %s", opt->out_dir, strerror(errno));
    if (rename(opt->out_dir, old) != 0) {
        rc = kv_err_set(err, KV_EIO, "cannot move the old %s aside: %s", opt->out_dir, strerror(errno));
        rmdir(old);
        return rc;
    }
    if (rename(tmp, opt->out_dir) != 0) {
        rc = kv_err_set(err, KV_EIO, "cannot rename %s to %s: %s", tmp, opt->out_dir, strerror(errno));
        rename(old, opt->out_dir);
        return rc;
    }
    remove_flat_dir(old);
    return KV_OK;
}

static int write_text(const char *dir, const char *name, const kv_textbuf *text, kv_err *err)
{
    char path[PATH_CAP];
    int rc = kv_path_join(path, sizeof path, dir, name, err);
    if (rc == KV_OK && kv_textbuf_failed(text))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory building %s", name);
    if (rc == KV_OK)
        rc = kv_file_write_all(path, text->data, text->len, err);
    return rc;
}

static int check_options(const kv_gguf_import_options *opt, kv_err *err)
{
    if (!opt || !opt->gguf_path || !opt->out_dir || !opt->out_dir[0])
        return kv_err_set(err, KV_EINVAL, "a GGUF file and an output directory are required");
    if (opt->dtype != KV_DTYPE_F32 && opt->dtype != KV_DTYPE_BF16 && opt->dtype != KV_DTYPE_F16)
        return kv_err_set(err, KV_EINVAL, "unknown dtype %d (f32, bf16, f16)", (int)opt->dtype);
    return KV_OK;
}

int kv_gguf_import(const kv_gguf_import_options *opt, kv_err *err)
{
    double t0 = kv_now_s();
    int rc = check_options(opt, err);
    if (rc)
        return rc;
    char parent[PATH_CAP], base[PATH_CAP], tmp[PATH_CAP] = "", path[PATH_CAP];
    long entries;
    if ((rc = split_dir(opt->out_dir, parent, base, err)) || (rc = check_target(opt, &entries, err)))
        return rc;
    kv_gguf *g = NULL;
    gguf_llama hp;
    plan p = {0};
    kv_textbuf config, tok, tok_config;
    kv_textbuf_init(&config);
    kv_textbuf_init(&tok);
    kv_textbuf_init(&tok_config);
    /* Everything that can be refused is checked before a byte is written. */
    if ((rc = kv_gguf_open(opt->gguf_path, &g, err)) == KV_OK && (rc = gguf_llama_read(g, &hp, err)) == KV_OK &&
        (rc = build_plan(g, &hp, &p, err)) == KV_OK && (rc = gguf_tokenizer_json(g, &tok, err)) == KV_OK &&
        (rc = gguf_tokenizer_config_json(g, &hp, &tok_config, err)) == KV_OK) {
        gguf_config_json(&hp, opt->dtype, &config);
        if (snprintf(tmp, sizeof tmp, "%s/.%s.import-XXXXXX", parent, base) >= (int)sizeof tmp || !mkdtemp(tmp)) {
            rc = kv_err_set(err, KV_EIO, "cannot create a temporary directory in %s: %s", parent, strerror(errno));
            tmp[0] = '\0';
        } else if (chmod(tmp, 0755) != 0) { /* mkdtemp's 0700 would make the model private */
            rc = kv_err_set(err, KV_EIO, "%s: %s", tmp, strerror(errno));
        }
    }
    progress ps = {.out = opt->progress, .t0 = kv_now_s(), .last = kv_now_s()};
    for (size_t i = 0; rc == KV_OK && i < p.n; i++)
        ps.total += p.t[i].rows * p.t[i].cols * (opt->dtype == KV_DTYPE_F32 ? 4 : 2);
    if (rc == KV_OK && opt->progress && ps.total >= PROGRESS_MIN_BYTES)
        fprintf(opt->progress, "importing %s: %zu tensors, %.0f MB of %s\n", opt->gguf_path, p.n,
                (double)ps.total / 1e6, gguf_torch_dtype(opt->dtype));
    if (rc == KV_OK && (rc = kv_path_join(path, sizeof path, tmp, "model.safetensors", err)) == KV_OK)
        rc = write_weights(path, &p, opt->dtype, &ps, err);
    if (rc == KV_OK)
        rc = write_text(tmp, "tokenizer.json", &tok, err);
    if (rc == KV_OK)
        rc = write_text(tmp, "tokenizer_config.json", &tok_config, err);
    if (rc == KV_OK)
        rc = write_text(tmp, "config.json", &config, err);
    if (rc == KV_OK)
        rc = swap_in(tmp, parent, base, opt, err);
    if (rc && tmp[0])
        remove_flat_dir(tmp);
    if (rc == KV_OK && opt->progress) {
        fprintf(opt->progress, "imported %s -> %s: %zu tensors, %s, %.1f MB in %.2f s\n", opt->gguf_path,
                opt->out_dir, p.n, gguf_torch_dtype(opt->dtype), (double)ps.total / 1e6, kv_now_s() - t0);
        fflush(opt->progress);
    }
    free(p.t);
    kv_textbuf_free(&config);
    kv_textbuf_free(&tok);
    kv_textbuf_free(&tok_config);
    kv_gguf_close(g);
    return rc;
}
