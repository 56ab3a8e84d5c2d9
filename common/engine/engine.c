/* The public engine API: argument checks, block reservation and prefill chunking, the same
 * for every backend, then a call through the backend's ops (engine_internal.h). */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "kv_log.h"

void kv_engine_options_default(kv_engine_options *o)
{
    memset(o, 0, sizeof *o);
    o->device = -1;
    o->precision = KV_PRECISION_F32;
    o->block_size = 16;
    o->prefill_chunk = 512;
}

int32_t kv_engine_pool_blocks(const kv_model_config *c, const kv_engine_options *o, size_t block_bytes)
{
    if (o->n_blocks > 0)
        return o->n_blocks;
    if (o->kv_bytes) {
        size_t n = o->kv_bytes / block_bytes;
        return n > INT32_MAX ? INT32_MAX : (int32_t)n;
    }
    /* Room for 4 full contexts (+ a block each for a partly filled first block). */
    size_t n = 4 * ((size_t)c->max_position + (size_t)o->block_size) / (size_t)o->block_size;
    return n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

int kv_engine_create(const kv_model *model, const kv_engine_options *o, kv_engine **out, kv_err *err)
{
    *out = NULL;
    if (o->block_size <= 0 || o->block_size > 1024 || o->prefill_chunk <= 0 || o->n_threads < 0)
        return kv_err_set(err, KV_EINVAL, "engine: block size must be 1..1024, prefill chunk > 0");
    if (o->precision != KV_PRECISION_F32 && o->precision != KV_PRECISION_BF16)
        return kv_err_set(err, KV_EINVAL, "engine: unknown precision %d", (int)o->precision);
    kv_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    e->model = model;
    e->device = o->device < 0 ? -1 : o->device;
    e->precision = o->precision;
    e->prefill_chunk = o->prefill_chunk;
    const kv_model_config *c = &model->cfg;
    int share[KV_LAYOUT_MAX_LAYERS]; /* cross-layer KV sharing: the layer each attends with */
    for (int i = 0; i < c->n_layers && i < KV_LAYOUT_MAX_LAYERS; i++)
        share[i] = kv_model_config_kv_owner(c, i);
    kv_layout_params lp = {c->n_layers, c->n_kv_heads, c->head_dim, o->block_size,
                           o->kv_dtype == KV_CACHE_F32 && o->precision == KV_PRECISION_BF16 ? KV_CACHE_BF16 : o->kv_dtype,
                           o->kv_keys, o->kv_group, o->kv_residual, share};
    int rc = kv_layout_init(&e->layout, &lp, err);
    if (!rc && e->device >= 0 && o->kv_dtype != KV_CACHE_F32)
        rc = kv_err_set(err, KV_EUNSUPPORTED, "engine: the CUDA engine keeps KV at its precision, not %s",
                        kv_cache_dtype_name(o->kv_dtype));
    if (!rc && e->device >= 0 && e->layout.n_slots != c->n_layers)
        rc = kv_err_set(err, KV_EUNSUPPORTED, "engine: the CUDA engine has no cross-layer KV sharing "
                        "(cla_share_factor %d): use the CPU", c->cla_share);
    if (rc) {
        free(e);
        return rc;
    }
    if (e->layout.bits) {
        const kv_layout *l = &e->layout;
        int def_group = l->head_dim < KV_LAYOUT_DEFAULT_GROUP ? l->head_dim : KV_LAYOUT_DEFAULT_GROUP;
        char group[16] = "";
        if (l->group != def_group)
            snprintf(group, sizeof group, ":g%d", l->group);
        snprintf(e->kv_dtype_name, sizeof e->kv_dtype_name, "%s%s%s", kv_cache_dtype_name(l->dtype),
                 l->key_mode == KV_KEYS_PER_TOKEN ? ":token-keys" : "", group);
    } else {
        snprintf(e->kv_dtype_name, sizeof e->kv_dtype_name, "%s", kv_cache_dtype_name(e->layout.dtype));
    }
    if (c->cla_share > 1) { /* a block's slots mean other layers: never equal to an unshared layout */
        size_t at = strlen(e->kv_dtype_name);
        snprintf(e->kv_dtype_name + at, sizeof e->kv_dtype_name - at, ":cla%d", c->cla_share);
    }
    if (e->device < 0) {
        rc = kv_engine_cpu_init(e, o, err);
    } else {
#ifdef KV_HAVE_CUDA_ENGINE
        rc = kv_engine_cuda_init(e, o, err);
#else
        rc = kv_err_set(err, KV_EUNSUPPORTED, "engine: cuda:%d requested, but this build has no CUDA support "
                        "(configure with -DKVSERVE_CUDA=ON)", o->device);
#endif
    }
    if (rc) {
        free(e);
        return rc;
    }
    *out = e;
    return KV_OK;
}

void kv_engine_free(kv_engine *e)
{
    if (!e)
        return;
    e->ops->destroy(e);
    kv_pool_destroy(&e->pool);
    free(e->sample_rows);
    free(e->step_logits);
    free(e);
}

kv_pool *kv_engine_pool(kv_engine *e) { return &e->pool; }
const kv_model *kv_engine_model(const kv_engine *e) { return e->model; }
int kv_engine_device(const kv_engine *e) { return e->device; }
uint64_t kv_engine_host_picks(const kv_engine *e) { return e->host_picks; }
const char *kv_engine_kv_dtype(const kv_engine *e)
{
    return e->kv_dtype_name;
}
const kv_layout *kv_engine_kv_layout(const kv_engine *e) { return &e->layout; }
size_t kv_engine_block_bytes(const kv_engine *e) { return kv_pool_nbytes_per_block(&e->pool); }
void *kv_engine_block_ptr(kv_engine *e, int32_t block)
{
    if (block < 0 || block >= e->pool.n_blocks)
        return NULL;
    return kv_pool_block_addr(&e->pool, block);
}

static int check_blocks(const kv_engine *e, const int32_t *blocks, int n, kv_err *err)
{
    if (n < 0)
        return kv_err_set(err, KV_EINVAL, "negative block count %d", n);
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= e->pool.n_blocks)
            return kv_err_set(err, KV_ERANGE, "block id %d outside the pool (%d blocks)", blocks[i], e->pool.n_blocks);
    return KV_OK;
}

int kv_engine_blocks_read(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err)
{
    int rc = check_blocks(e, blocks, n, err);
    return rc ? rc : e->ops->blocks_read(e, blocks, n, dst, err);
}

int kv_engine_blocks_write(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err)
{
    int rc = check_blocks(e, blocks, n, err);
    return rc ? rc : e->ops->blocks_write(e, blocks, n, src, err);
}

/* "cuda:N" (or "cuda" = cuda:0) -> N; -1 when s is not of that form. */
static int parse_cuda_index(const char *s)
{
    if (!strcmp(s, "cuda"))
        return 0;
    if (strncmp(s, "cuda:", 5) || !s[5] || strlen(s + 5) > 4)
        return -1;
    int n = 0;
    for (const char *p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        n = n * 10 + (*p - '0');
    }
    return n;
}

int kv_engine_device_name_valid(const char *s)
{
    return !strcmp(s, "cpu") || !strcmp(s, "auto") || parse_cuda_index(s) >= 0;
}

int kv_engine_parse_device(const char *s, int *device, kv_err *err)
{
    *device = -1;
    int auto_pick = !strcmp(s, "auto");
    if (!strcmp(s, "cpu"))
        return KV_OK;
    int index = auto_pick ? 0 : parse_cuda_index(s);
    if (index < 0)
        return kv_err_set(err, KV_EINVAL, "device must be cpu, auto or cuda:N, got '%s'", s);
#ifdef KV_HAVE_CUDA_ENGINE
    int n = 0;
    kv_err why = {KV_OK, ""};
    if (kv_engine_cuda_probe(index, &n, &why) == KV_OK) {
        *device = index;
        return KV_OK;
    }
    const char *reason = why.msg;
#else
    const char *reason = "this build has no CUDA support (configure with -DKVSERVE_CUDA=ON)";
#endif
    if (auto_pick) {
        KV_WARN("engine", "msg=\"device auto: using the cpu\" reason=\"%s\"", reason);
        return KV_OK;
    }
    return kv_err_set(err, KV_EUNSUPPORTED, "device %s: %s", s, reason);
}

static int check_tokens(const kv_model_config *c, const int32_t *tokens, int n, kv_err *err)
{
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return kv_err_set(err, KV_ERANGE, "token id %d out of range (vocab %d)", tokens[i], c->vocab_size);
    return KV_OK;
}

int kv_engine_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int n, float *logits, int all_logits,
                      kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    if (n <= 0)
        return kv_err_set(err, KV_EINVAL, "prefill of %d tokens", n);
    if (seq->n_tokens + n > c->max_position)
        return kv_err_set(err, KV_EFULL, "context full: %d cached + %d new tokens exceed the context length %d",
                          seq->n_tokens, n, c->max_position);
    int rc = check_tokens(c, tokens, n, err);
    if (rc || (rc = kv_seq_reserve_tokens(seq, &e->pool, seq->n_tokens + n, err)))
        return rc;
    int chunk = n < e->prefill_chunk ? n : e->prefill_chunk;
    for (int done = 0; done < n; done += chunk) {
        int rows = n - done < chunk ? n - done : chunk;
        kv_logits_want want = !logits ? KV_LOGITS_NONE
                              : all_logits ? KV_LOGITS_ALL
                              : done + rows == n ? KV_LOGITS_LAST : KV_LOGITS_NONE;
        float *out = want == KV_LOGITS_ALL ? logits + (size_t)done * (size_t)c->vocab_size : logits;
        if ((rc = e->ops->prefill(e, seq, tokens + done, rows, out, want, err)))
            return rc;
        seq->n_tokens += rows;
    }
    return e->ops->sync ? e->ops->sync(e, err) : KV_OK;
}

/* Checks a decode step's inputs and reserves the block of each sequence's new token. */
static int decode_reserve(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs, kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    if (n_seqs <= 0)
        return kv_err_set(err, KV_EINVAL, "decode of %d sequences", n_seqs);
    int rc = check_tokens(c, tokens, n_seqs, err);
    for (int i = 0; !rc && i < n_seqs; i++) {
        if (seqs[i]->n_tokens + 1 > c->max_position)
            return kv_err_set(err, KV_EFULL, "context full: sequence %d is at the context length %d", i, c->max_position);
        rc = kv_seq_reserve_tokens(seqs[i], &e->pool, seqs[i]->n_tokens + 1, err);
    }
    return rc;
}

int kv_engine_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs, float *logits,
                     kv_err *err)
{
    int rc = decode_reserve(e, seqs, tokens, n_seqs, err);
    if (rc || (rc = e->ops->decode(e, seqs, tokens, n_seqs, logits, err)))
        return rc;
    for (int i = 0; i < n_seqs; i++)
        seqs[i]->n_tokens++;
    return KV_OK;
}

/* Room for n rows of step scratch (sampling rows; host logits without device sampling). */
static int scratch_reserve(kv_engine *e, int n, kv_err *err)
{
    if (n <= e->scratch_rows)
        return KV_OK;
    size_t vocab = e->ops->decode_sample ? 0 : (size_t)e->model->cfg.vocab_size;
    kv_sample_row *rows = realloc(e->sample_rows, (size_t)n * sizeof *rows);
    if (rows)
        e->sample_rows = rows;
    float *logits = vocab ? realloc(e->step_logits, (size_t)n * vocab * sizeof *logits) : NULL;
    if (logits)
        e->step_logits = logits;
    if (!rows || (vocab && !logits))
        return kv_err_set(err, KV_ENOMEM, "out of memory (decode step scratch for %d sequences)", n);
    e->scratch_rows = n;
    return KV_OK;
}

int kv_engine_decode_sample(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs,
                            kv_sampler *const *samplers, int32_t *next, kv_err *err)
{
    return kv_engine_decode_sample_lp(e, seqs, tokens, n_seqs, samplers, NULL, NULL, next, err);
}

static int check_lp_top(const int *lp_top, int n, kv_err *err)
{
    for (int i = 0; lp_top && i < n; i++)
        if (lp_top[i] > KC_LOGPROBS_TOP_MAX)
            return kv_err_set(err, KV_EINVAL, "%d top logprobs asked, at most %d", lp_top[i], KC_LOGPROBS_TOP_MAX);
    return KV_OK;
}

int kv_engine_decode_sample_lp(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs,
                               kv_sampler *const *samplers, const int *lp_top, kc_logprobs *lp, int32_t *next,
                               kv_err *err)
{
    int rc = check_lp_top(lp_top, n_seqs, err);
    if (rc)
        return rc;
    rc = decode_reserve(e, seqs, tokens, n_seqs, err);
    if (rc || (rc = scratch_reserve(e, n_seqs, err)))
        return rc;
    if (e->ops->decode_sample) {
        for (int i = 0; i < n_seqs; i++) {
            kv_sampler_row(samplers[i], &e->sample_rows[i].p);
            e->sample_rows[i].u = kv_sampler_draw(samplers[i]);
        }
        rc = e->ops->decode_sample(e, seqs, tokens, n_seqs, e->sample_rows, lp_top, lp, next, err);
    } else {
        rc = e->ops->decode(e, seqs, tokens, n_seqs, e->step_logits, err);
        size_t vocab = (size_t)e->model->cfg.vocab_size;
        for (int i = 0; !rc && i < n_seqs; i++) {
            const float *row = e->step_logits + (size_t)i * vocab;
            next[i] = kv_sampler_sample(samplers[i], row);
            if (lp_top && lp_top[i] >= 0)
                kc_logprobs_row(row, (int)vocab, next[i], lp_top[i], &lp[i]);
        }
    }
    if (rc)
        return rc;
    for (int i = 0; i < n_seqs; i++)
        seqs[i]->n_tokens++;
    return KV_OK;
}

int kv_engine_prefill_logprobs(kv_engine *e, kv_seq *seq, const int32_t *tokens, int n, const int32_t *targets,
                               int top_n, kc_logprobs *lp, float *last_logits, kv_err *err)
{
    if (top_n < 0 || top_n > KC_LOGPROBS_TOP_MAX)
        return kv_err_set(err, KV_EINVAL, "%d top logprobs asked, at most %d", top_n, KC_LOGPROBS_TOP_MAX);
    if (n <= 0)
        return kv_err_set(err, KV_EINVAL, "prefill of %d tokens", n);
    size_t vocab = (size_t)e->model->cfg.vocab_size;
    int chunk = n < e->prefill_chunk ? n : e->prefill_chunk;
    float *scratch = malloc((size_t)chunk * vocab * sizeof *scratch);
    if (!scratch)
        return kv_err_set(err, KV_ENOMEM, "out of memory (logits of %d positions)", chunk);
    int rc = KV_OK;
    for (int done = 0; !rc && done < n; done += chunk) {
        int rows = n - done < chunk ? n - done : chunk;
        if ((rc = kv_engine_prefill(e, seq, tokens + done, rows, scratch, 1, err)))
            break;
        for (int i = 0; i < rows; i++)
            if (targets[done + i] >= 0)
                kc_logprobs_row(scratch + (size_t)i * vocab, (int)vocab, targets[done + i], top_n, &lp[done + i]);
        if (last_logits && done + rows == n)
            memcpy(last_logits, scratch + (size_t)(rows - 1) * vocab, vocab * sizeof *last_logits);
    }
    free(scratch);
    return rc;
}
