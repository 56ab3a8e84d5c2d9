#include "engine.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

/* Activations for up to cap_rows rows (prefill tokens or decode sequences). */
typedef struct scratch {
    int cap_rows;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
    int32_t *pos;
    const int32_t **tables;
    int32_t *lens;
} scratch;

struct kv_engine {
    const kv_model *model;
    kv_pool pool;
    int prefill_chunk;
    float *inv_freq;
    scratch s;
};

/* Where a forward's new K/V go and what its queries attend to. */
typedef struct attn_target {
    kv_seq *prefill_seq;     /* prefill: one sequence, rows are consecutive positions */
    kv_seq *const *seqs;     /* decode: one sequence per row */
} attn_target;

void kv_engine_options_default(kv_engine_options *o)
{
    memset(o, 0, sizeof *o);
    o->device = -1;
    o->precision = KV_PRECISION_F32;
    o->block_size = 16;
    o->prefill_chunk = 512;
}

static void scratch_free(scratch *s)
{
    free(s->x); free(s->xb); free(s->q); free(s->k); free(s->v);
    free(s->att); free(s->hb); free(s->hb2); free(s->pos); free((void *)s->tables); free(s->lens);
    memset(s, 0, sizeof *s);
}

static int scratch_ensure(scratch *s, const kv_model_config *c, int rows, kv_err *err)
{
    if (rows <= s->cap_rows)
        return KV_OK;
    scratch_free(s);
    size_t r = (size_t)rows, q_dim = (size_t)c->n_heads * (size_t)c->head_dim;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim, h = (size_t)c->hidden_size;
    size_t wide = q_dim > h ? q_dim : h;
    s->x = malloc(r * h * sizeof(float));
    s->xb = malloc(r * wide * sizeof(float));
    s->q = malloc(r * q_dim * sizeof(float));
    s->k = malloc(r * kv_dim * sizeof(float));
    s->v = malloc(r * kv_dim * sizeof(float));
    s->att = malloc(r * q_dim * sizeof(float));
    s->hb = malloc(r * (size_t)c->intermediate_size * sizeof(float));
    s->hb2 = malloc(r * (size_t)c->intermediate_size * sizeof(float));
    s->pos = malloc(r * sizeof(int32_t));
    s->tables = malloc(r * sizeof(*s->tables));
    s->lens = malloc(r * sizeof(int32_t));
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->att || !s->hb || !s->hb2 || !s->pos || !s->tables || !s->lens) {
        scratch_free(s);
        return kv_err_set(err, KV_ENOMEM, "engine: out of memory for %d rows of activations", rows);
    }
    s->cap_rows = rows;
    return KV_OK;
}

int kv_engine_create(const kv_model *model, const kv_engine_options *o, kv_engine **out, kv_err *err)
{
    *out = NULL;
    const kv_model_config *c = &model->cfg;
    if (o->block_size <= 0 || o->block_size > 1024 || o->prefill_chunk <= 0 || o->n_threads < 0)
        return kv_err_set(err, KV_EINVAL, "engine: block size must be 1..1024, prefill chunk > 0");
    if (o->device >= 0)
        return kv_err_set(err, KV_EUNSUPPORTED, "engine: cuda:%d requested, but the CUDA engine is not available yet",
                          o->device);
    if (o->precision != KV_PRECISION_F32)
        return kv_err_set(err, KV_EUNSUPPORTED, "engine: the CPU engine computes in f32 only");
    kv_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    e->model = model;
    e->prefill_chunk = o->prefill_chunk;
    kv_pool_shape shape = {c->n_layers, c->n_kv_heads, c->head_dim, o->block_size};
    int32_t n_blocks = o->n_blocks;
    if (n_blocks <= 0) {
        size_t bytes = o->kv_bytes;
        if (!bytes)
            bytes = 4 * ((size_t)c->max_position + (size_t)o->block_size) * (kv_pool_block_bytes(&shape) / (size_t)o->block_size);
        n_blocks = kv_pool_blocks_for_bytes(&shape, bytes);
    }
    int rc = kv_pool_init(&e->pool, &shape, n_blocks, err);
    e->inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    if (!rc && !e->inv_freq)
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    if (rc) {
        kv_engine_free(e);
        return rc;
    }
    kc_rope_params rp = {c->head_dim, c->rope_theta, c->rope_scaling, c->rope_factor, c->rope_low_freq_factor,
                         c->rope_high_freq_factor, c->rope_original_max_position};
    kc_rope_inv_freq(e->inv_freq, &rp);
    if (o->n_threads > 0) {
        omp_set_num_threads(o->n_threads);
        openblas_set_num_threads(o->n_threads);
    }
    *out = e;
    return KV_OK;
}

void kv_engine_free(kv_engine *e)
{
    if (!e)
        return;
    kv_pool_destroy(&e->pool);
    scratch_free(&e->s);
    free(e->inv_freq);
    free(e);
}

kv_pool *kv_engine_pool(kv_engine *e) { return &e->pool; }
const kv_model *kv_engine_model(const kv_engine *e) { return e->model; }
int kv_engine_device(const kv_engine *e) { (void)e; return -1; }
const char *kv_engine_kv_dtype(const kv_engine *e) { (void)e; return "f32"; }
size_t kv_engine_block_bytes(const kv_engine *e) { return kv_pool_block_bytes(&e->pool.shape); }
void *kv_engine_block_ptr(kv_engine *e, int32_t block) { return kv_pool_k(&e->pool, block, 0); }

static int check_blocks(const kv_engine *e, const int32_t *blocks, int n, kv_err *err)
{
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= e->pool.n_blocks)
            return kv_err_set(err, KV_ERANGE, "block id %d outside the pool (%d blocks)", blocks[i], e->pool.n_blocks);
    return KV_OK;
}

int kv_engine_blocks_read(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err)
{
    size_t bb = kv_engine_block_bytes(e);
    int rc = check_blocks(e, blocks, n, err);
    for (int i = 0; !rc && i < n; i++)
        memcpy((char *)dst + (size_t)i * bb, kv_pool_k(&e->pool, blocks[i], 0), bb);
    return rc;
}

int kv_engine_blocks_write(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err)
{
    size_t bb = kv_engine_block_bytes(e);
    int rc = check_blocks(e, blocks, n, err);
    for (int i = 0; !rc && i < n; i++)
        memcpy(kv_pool_k(&e->pool, blocks[i], 0), (const char *)src + (size_t)i * bb, bb);
    return rc;
}

int kv_engine_parse_device(const char *s, int *device, kv_err *err)
{
    if (!strcmp(s, "cpu") || !strcmp(s, "auto")) {
        /* No CUDA engine yet: auto means the CPU. */
        *device = -1;
        return KV_OK;
    }
    if (!strncmp(s, "cuda", 4))
        return kv_err_set(err, KV_EUNSUPPORTED, "device %s: the CUDA engine is not available yet (use cpu)", s);
    return kv_err_set(err, KV_EINVAL, "device must be cpu, auto or cuda:N, got '%s'", s);
}

static kc_paged_kv layer_kv(const kv_engine *e, int layer)
{
    const kv_pool *p = &e->pool;
    kc_paged_kv kv = {kv_pool_k(p, 0, layer), p->block_floats, p->layer_floats / 2, p->shape.block_size,
                      p->shape.n_kv_heads, p->shape.head_dim};
    return kv;
}

/* Stores the rows' K/V and runs their attention: the only place prefill and decode differ. */
static void attention(kv_engine *e, int layer, int rows, const attn_target *t)
{
    const kv_model_config *c = &e->model->cfg;
    scratch *s = &e->s;
    kc_paged_kv kv = layer_kv(e, layer);
    if (t->prefill_seq) {
        const int32_t *table = t->prefill_seq->blocks;
        kc_kv_write(&kv, table, s->pos[0], rows, s->k, s->v);
        kc_attention_prefill(s->att, s->q, &kv, table, s->pos[0], rows, c->n_heads);
        return;
    }
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    for (int i = 0; i < rows; i++) {
        kc_kv_write(&kv, t->seqs[i]->blocks, s->pos[i], 1, s->k + (size_t)i * kv_dim, s->v + (size_t)i * kv_dim);
        s->tables[i] = t->seqs[i]->blocks;
        s->lens[i] = s->pos[i] + 1;
    }
    kc_attention_decode(s->att, s->q, &kv, s->tables, s->lens, rows, c->n_heads);
}

typedef void (*matmul_fn)(float *y, const float *x, const float *w, int m, int n, int k);

/* All layers for `rows` rows whose embeddings are in s->x and positions in s->pos. */
static void run_layers(kv_engine *e, int rows, const attn_target *t)
{
    /* Decode is batch-invariant (a sequence's tokens never depend on its batch mates);
     * prefill uses sgemm for its many rows. */
    matmul_fn matmul = t->prefill_seq ? kc_matmul : kc_matmul_gemv;
    const kv_model *m = e->model;
    const kv_model_config *c = &m->cfg;
    scratch *s = &e->s;
    int h = c->hidden_size, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int ff = c->intermediate_size;
    for (int l = 0; l < c->n_layers; l++) {
        const kv_layer_weights *w = &m->layers[l];
        kc_rmsnorm(s->xb, s->x, w->attn_norm, rows, h, c->rms_eps);
        matmul(s->q, s->xb, w->wq, rows, q_dim, h);
        matmul(s->k, s->xb, w->wk, rows, kv_dim, h);
        matmul(s->v, s->xb, w->wv, rows, kv_dim, h);
        kc_rope(s->q, rows, c->n_heads, c->head_dim, s->pos, e->inv_freq);
        kc_rope(s->k, rows, c->n_kv_heads, c->head_dim, s->pos, e->inv_freq);
        attention(e, l, rows, t);
        matmul(s->xb, s->att, w->wo, rows, h, q_dim);
        kc_add(s->x, s->xb, (size_t)rows * (size_t)h);
        kc_rmsnorm(s->xb, s->x, w->mlp_norm, rows, h, c->rms_eps);
        matmul(s->hb, s->xb, w->w_gate, rows, ff, h);
        matmul(s->hb2, s->xb, w->w_up, rows, ff, h);
        kc_swiglu(s->hb, s->hb, s->hb2, (size_t)rows * (size_t)ff);
        matmul(s->xb, s->hb, w->w_down, rows, h, ff);
        kc_add(s->x, s->xb, (size_t)rows * (size_t)h);
    }
}

/* Final norm + LM head for rows [first, first+n) of s->x. */
static void compute_logits(kv_engine *e, int first, int n, float *logits, matmul_fn matmul)
{
    const kv_model_config *c = &e->model->cfg;
    float *x = e->s.x + (size_t)first * (size_t)c->hidden_size;
    kc_rmsnorm(e->s.xb, x, e->model->final_norm, n, c->hidden_size, c->rms_eps);
    matmul(logits, e->s.xb, e->model->lm_head, n, c->vocab_size, c->hidden_size);
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
    if ((rc = scratch_ensure(&e->s, c, chunk, err)))
        return rc;
    attn_target t = {.prefill_seq = seq};
    for (int done = 0; done < n; done += chunk) {
        int rows = n - done < chunk ? n - done : chunk;
        kc_embed(e->s.x, e->model->embed, tokens + done, rows, c->hidden_size);
        for (int i = 0; i < rows; i++)
            e->s.pos[i] = seq->n_tokens + i;
        run_layers(e, rows, &t);
        seq->n_tokens += rows;
        if (logits && all_logits)
            compute_logits(e, 0, rows, logits + (size_t)done * (size_t)c->vocab_size, kc_matmul);
        else if (logits && done + rows == n)
            compute_logits(e, rows - 1, 1, logits, kc_matmul);
    }
    return KV_OK;
}

int kv_engine_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs, float *logits,
                     kv_err *err)
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
    if (rc || (rc = scratch_ensure(&e->s, c, n_seqs, err)))
        return rc;
    kc_embed(e->s.x, e->model->embed, tokens, n_seqs, c->hidden_size);
    for (int i = 0; i < n_seqs; i++)
        e->s.pos[i] = seqs[i]->n_tokens;
    attn_target t = {.seqs = seqs};
    run_layers(e, n_seqs, &t);
    for (int i = 0; i < n_seqs; i++)
        seqs[i]->n_tokens++;
    compute_logits(e, 0, n_seqs, logits, kc_matmul_gemv);
    return KV_OK;
}
