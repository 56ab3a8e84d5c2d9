/* The CPU backend: float32 forward over a host KV pool (kernels/cpu). The reference the
 * CUDA backend mirrors op for op. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "engine_internal.h"
#include "kv_blas.h"

/* Activations for up to cap_rows rows (prefill tokens or decode sequences). */
typedef struct scratch {
    int cap_rows;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
    int32_t *pos;
    const int32_t **tables;
    int32_t *lens;
} scratch;

typedef struct cpu_engine {
    float *inv_freq;
    scratch s;
} cpu_engine;

/* Where a forward's new K/V go and what its queries attend to. */
typedef struct attn_target {
    kv_seq *prefill_seq;     /* prefill: one sequence, rows are consecutive positions */
    kv_seq *const *seqs;     /* decode: one sequence per row */
} attn_target;

static cpu_engine *cpu(kv_engine *e) { return e->backend; }

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
    scratch *s = &cpu(e)->s;
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
    cpu_engine *ce = cpu(e);
    scratch *s = &ce->s;
    int h = c->hidden_size, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int ff = c->intermediate_size;
    for (int l = 0; l < c->n_layers; l++) {
        const kv_layer_weights *w = &m->layers[l];
        kc_rmsnorm(s->xb, s->x, w->attn_norm, rows, h, c->rms_eps);
        matmul(s->q, s->xb, w->wq, rows, q_dim, h);
        matmul(s->k, s->xb, w->wk, rows, kv_dim, h);
        matmul(s->v, s->xb, w->wv, rows, kv_dim, h);
        kc_rope(s->q, rows, c->n_heads, c->head_dim, s->pos, ce->inv_freq);
        kc_rope(s->k, rows, c->n_kv_heads, c->head_dim, s->pos, ce->inv_freq);
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
    scratch *s = &cpu(e)->s;
    float *x = s->x + (size_t)first * (size_t)c->hidden_size;
    kc_rmsnorm(s->xb, x, e->model->final_norm, n, c->hidden_size, c->rms_eps);
    matmul(logits, s->xb, e->model->lm_head, n, c->vocab_size, c->hidden_size);
}

static int cpu_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int rows, float *logits, kv_logits_want want,
                       kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    scratch *s = &cpu(e)->s;
    int rc = scratch_ensure(s, c, rows, err);
    if (rc)
        return rc;
    kc_embed(s->x, e->model->embed, tokens, rows, c->hidden_size);
    for (int i = 0; i < rows; i++)
        s->pos[i] = seq->n_tokens + i;
    attn_target t = {.prefill_seq = seq};
    run_layers(e, rows, &t);
    if (want == KV_LOGITS_ALL)
        compute_logits(e, 0, rows, logits, kc_matmul);
    else if (want == KV_LOGITS_LAST)
        compute_logits(e, rows - 1, 1, logits, kc_matmul);
    return KV_OK;
}

static int cpu_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, float *logits, kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    scratch *s = &cpu(e)->s;
    int rc = scratch_ensure(s, c, n, err);
    if (rc)
        return rc;
    kc_embed(s->x, e->model->embed, tokens, n, c->hidden_size);
    for (int i = 0; i < n; i++)
        s->pos[i] = seqs[i]->n_tokens;
    attn_target t = {.seqs = seqs};
    run_layers(e, n, &t);
    compute_logits(e, 0, n, logits, kc_matmul_gemv);
    return KV_OK;
}

/* Host pool: whole blocks are contiguous bytes. */
static int cpu_blocks_read(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err)
{
    size_t bb = kv_pool_nbytes_per_block(&e->pool);
    for (int i = 0; i < n; i++)
        memcpy((char *)dst + (size_t)i * bb, kv_pool_block_addr(&e->pool, blocks[i]), bb);
    return KV_OK;
}

static int cpu_blocks_write(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err)
{
    size_t bb = kv_pool_nbytes_per_block(&e->pool);
    for (int i = 0; i < n; i++)
        memcpy(kv_pool_block_addr(&e->pool, blocks[i]), (const char *)src + (size_t)i * bb, bb);
    return KV_OK;
}

static void cpu_destroy(kv_engine *e)
{
    cpu_engine *ce = cpu(e);
    if (!ce)
        return;
    scratch_free(&ce->s);
    free(ce->inv_freq);
    free(ce);
    e->backend = NULL;
}

static const kv_engine_ops cpu_ops = {
    .prefill = cpu_prefill,
    .decode = cpu_decode,
    .sync = NULL,
    .blocks_read = cpu_blocks_read,
    .blocks_write = cpu_blocks_write,
    .destroy = cpu_destroy,
};

int kv_engine_cpu_init(kv_engine *e, const kv_engine_options *o, kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    if (o->precision != KV_PRECISION_F32)
        return kv_err_set(err, KV_EUNSUPPORTED, "engine: the CPU engine computes in f32 only");
    kv_pool_shape shape = {c->n_layers, c->n_kv_heads, c->head_dim, o->block_size};
    int32_t n_blocks = kv_engine_pool_blocks(c, o, kv_pool_block_bytes(&shape));
    cpu_engine *ce = calloc(1, sizeof *ce);
    if (!ce)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    int rc = kv_pool_init(&e->pool, &shape, n_blocks, err);
    ce->inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    if (!rc && !ce->inv_freq)
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    if (rc) {
        kv_pool_destroy(&e->pool);
        free(ce->inv_freq);
        free(ce);
        return rc;
    }
    kc_rope_params rp = {c->head_dim, c->rope_theta, c->rope_scaling, c->rope_factor, c->rope_low_freq_factor,
                         c->rope_high_freq_factor, c->rope_original_max_position};
    kc_rope_inv_freq(ce->inv_freq, &rp);
    if (o->n_threads > 0) {
        omp_set_num_threads(o->n_threads);
        kv_blas_set_threads(o->n_threads);
    }
    e->backend = ce;
    e->ops = &cpu_ops;
    return KV_OK;
}
