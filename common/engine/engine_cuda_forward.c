/* The CUDA forward pass: engine_cpu.c's op order exactly (norm, Q/K/V, RoPE, KV write +
 * attention, output projection, residual, norm, gate/up, SwiGLU, down, residual), with the
 * residual add and the next norm fused into one kernel (same arithmetic, one pass less),
 * Q/K/V one GEMM over the stacked weights followed by one split + RoPE kernel, gate/up one
 * GEMM followed by SwiGLU over its rows (each output element the same dot product).
 * Prefill chunks attend over the paged pool with the tensor-core kernel (bf16, head_dim
 * 64/128); decode steps use the split-KV (Flash-Decoding) kernel, through a CUDA graph per
 * batch bucket when possible (engine_cuda_graph.c). */
#include <stdlib.h>
#include <string.h>

#include "engine_cuda.h"

static void *row_at(void *base, size_t row, size_t width, size_t es) { return (char *)base + row * width * es; }

static kv_cuda_paged_kv layer_kv(const kv_engine *e, const cu_engine *c, int layer)
{
    const kv_pool *p = &e->pool;
    kv_cuda_paged_kv kv = {(char *)c->kv_mem + (size_t)layer * p->layer_floats * c->es,
                           p->block_floats,
                           p->layer_floats / 2,
                           p->shape.block_size,
                           p->shape.n_kv_heads,
                           p->shape.head_dim,
                           c->dt};
    return kv;
}

/* Stores the rows' K/V and runs their attention: the only place prefill and decode differ. */
static int attention(kv_engine *e, int layer, const cu_step *st, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    kv_cuda_paged_kv kv = layer_kv(e, c, layer);
    int32_t *tables = cu_in_tables(c, c->d_in);
    if (st->start >= 0) {
        KC_CHECK(kv_cuda_kv_write(&kv, tables, st->start, st->rows, c->k, c->v, c->stream, err));
        return kv_cuda_attention_prefill(c->att, c->q, &kv, tables, st->start, st->rows, cfg->n_heads, c->stream, err);
    }
    int32_t *pos = cu_in_pos(c, c->d_in), *lens = cu_in_lens(c, c->d_in);
    KC_CHECK(kv_cuda_kv_write_decode(&kv, tables, c->table_stride, pos, st->rows, c->k, c->v, c->stream, err));
    return kv_cuda_attention_decode(c->att, c->q, &kv, tables, c->table_stride, lens, st->rows, cfg->n_heads,
                                    st->n_splits, c->attn_ws, c->attn_ws_bytes, c->stream, err);
}

int cu_forward(kv_engine *e, const cu_step *st, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    int rows = st->rows, h = cfg->hidden_size, ff = cfg->intermediate_size;
    int q_dim = cfg->n_heads * cfg->head_dim, kv_dim = cfg->n_kv_heads * cfg->head_dim;
    kv_cuda_dtype dt = c->dt;
    void *s = c->stream, *blas = c->blas;
    float eps = cfg->rms_eps;
    int32_t *pos = cu_in_pos(c, c->d_in);
    KC_CHECK(kv_cuda_embed(c->x, c->embed, cu_in_tokens(c, c->d_in), rows, h, cfg->vocab_size, dt, s, err));
    KC_CHECK(kv_cuda_rmsnorm(c->xb, c->x, c->layers[0].attn_norm, rows, h, eps, dt, s, err));
    for (int l = 0; l < cfg->n_layers; l++) {
        const cu_layer *w = &c->layers[l];
        KC_CHECK(cu_project(c, CU_PROJ_QKV, c->gu, c->xb, w->wqkv, rows, q_dim + 2 * kv_dim, h, err));
        KC_CHECK(kv_cuda_qkv_rope(c->q, c->k, c->v, c->gu, rows, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim, pos,
                                  c->inv_freq, dt, s, err));
        KC_CHECK(attention(e, l, st, err));
        KC_CHECK(cu_project(c, CU_PROJ_O, c->xb, c->att, w->wo, rows, h, q_dim, err));
        /* x += xb; xb = norm(x): the CPU's kc_add + kc_rmsnorm. */
        KC_CHECK(kv_cuda_add_rmsnorm(c->xb, c->x, c->xb, w->mlp_norm, rows, h, eps, dt, s, err));
        KC_CHECK(cu_project(c, CU_PROJ_GU, c->gu, c->xb, w->w_gu, rows, 2 * ff, h, err));
        KC_CHECK(kv_cuda_swiglu_rows(c->hb, c->gu, rows, ff, dt, s, err));
        KC_CHECK(cu_project(c, CU_PROJ_DOWN, c->xb, c->hb, w->w_down, rows, h, ff, err));
        /* The residual, then the next layer's input norm (the final norm after the last). */
        const void *next_norm = l + 1 < cfg->n_layers ? c->layers[l + 1].attn_norm : c->final_norm;
        KC_CHECK(kv_cuda_add_rmsnorm(c->xb, c->x, c->xb, next_norm, rows, h, eps, dt, s, err));
    }
    if (st->logit_rows > 0)
        KC_CHECK(kv_cuda_gemm_out(blas, c->logits, KV_CUDA_F32, row_at(c->xb, (size_t)st->logit_first, (size_t)h, c->es),
                                  c->lm_head, st->logit_rows, cfg->vocab_size, h, dt, s, err));
    return KV_OK;
}

/* Blocks of seq that fit a table row: positions past the context length are never read. */
static int table_blocks(const cu_engine *c, const kv_seq *seq)
{
    return seq->n_blocks < c->table_stride ? seq->n_blocks : c->table_stride;
}

/* h_in may be rewritten once the device has read the previous upload from it. */
static int inputs_begin(cu_engine *c, kv_err *err)
{
    CU_CHECK(cudaEventSynchronize(c->in_read));
    return KV_OK;
}

/* Uploads h_in's [tokens|pos|lens] block and the first table_rows block tables. */
static int inputs_upload(cu_engine *c, int table_rows, kv_err *err)
{
    size_t ints = 3 * (size_t)c->cap_rows + (size_t)table_rows * (size_t)c->table_stride;
    CU_CHECK(cudaMemcpyAsync(c->d_in, c->h_in, ints * sizeof(int32_t), cudaMemcpyHostToDevice, c->stream));
    CU_CHECK(cudaEventRecord(c->in_read, c->stream));
    return KV_OK;
}

int cu_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int rows, float *logits, kv_logits_want want,
               kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    CU_CHECK(cudaSetDevice(c->device));
    KC_CHECK(cu_ensure_capacity(e, rows, 0, want == KV_LOGITS_ALL ? rows : 1, err));
    KC_CHECK(inputs_begin(c, err));
    memcpy(cu_in_tokens(c, c->h_in), tokens, (size_t)rows * sizeof(int32_t));
    int32_t *pos = cu_in_pos(c, c->h_in);
    for (int i = 0; i < rows; i++)
        pos[i] = seq->n_tokens + i;
    /* One table row: the sequence's blocks up to a full context (a caller may hold more). */
    memcpy(cu_in_tables(c, c->h_in), seq->blocks, (size_t)table_blocks(c, seq) * sizeof(int32_t));
    KC_CHECK(inputs_upload(c, 1, err));
    cu_step st = {.rows = rows, .start = seq->n_tokens, .n_splits = 1, .logit_first = 0, .logit_rows = 0};
    if (want == KV_LOGITS_ALL)
        st.logit_rows = rows;
    else if (want == KV_LOGITS_LAST)
        st.logit_first = rows - 1, st.logit_rows = 1;
    KC_CHECK(cu_forward(e, &st, err));
    if (st.logit_rows) {
        size_t bytes = (size_t)st.logit_rows * (size_t)cfg->vocab_size * sizeof(float);
        CU_CHECK(cudaMemcpyAsync(logits, c->logits, bytes, cudaMemcpyDeviceToHost, c->stream));
        CU_CHECK(cudaStreamSynchronize(c->stream));
    }
    return KV_OK;
}

/* Split count for the batch, rounded up to a power of two: graphs exist per power, and the
 * plain path uses the same count, so graph and plain runs do the same arithmetic. */
static int split_count(const cu_engine *c, const kv_model_config *cfg, int n, int max_len)
{
    int s = kv_cuda_decode_splits(n, cfg->n_heads, cfg->n_kv_heads, max_len, c->n_sms), p = 1;
    while (p < s && p < KV_CUDA_DECODE_MAX_SPLITS)
        p *= 2;
    return p;
}

/* The decode step up to its logits (c->logits, rows 0..n-1), enqueued on the stream. */
static int decode_enqueue(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, kv_err *err)
{
    cu_engine *c = cu_of(e);
    const kv_model_config *cfg = &e->model->cfg;
    CU_CHECK(cudaSetDevice(c->device));
    int bucket = c->graphs_on ? cu_bucket_of(n) : -1;
    int rows = bucket >= 0 ? 1 << bucket : n; /* a graph runs its bucket's rows; the rest are padding */
    KC_CHECK(cu_ensure_capacity(e, rows, rows, rows, err));
    KC_CHECK(inputs_begin(c, err));
    int32_t *tok = cu_in_tokens(c, c->h_in), *pos = cu_in_pos(c, c->h_in), *lens = cu_in_lens(c, c->h_in);
    int32_t *tables = cu_in_tables(c, c->h_in);
    int max_len = 1;
    for (int i = 0; i < rows; i++) {
        if (i < n) {
            tok[i] = tokens[i];
            pos[i] = seqs[i]->n_tokens;
            lens[i] = seqs[i]->n_tokens + 1;
            memcpy(tables + (size_t)i * (size_t)c->table_stride, seqs[i]->blocks,
                   (size_t)table_blocks(c, seqs[i]) * sizeof(int32_t));
            max_len = lens[i] > max_len ? lens[i] : max_len;
        } else { /* padding: a valid token, no KV write (position -1), nothing to attend to */
            tok[i] = 0;
            pos[i] = -1;
            lens[i] = 0;
        }
    }
    KC_CHECK(inputs_upload(c, rows, err));
    cu_step st = {.rows = rows, .start = -1, .n_splits = split_count(c, cfg, n, max_len), .logit_first = 0,
                  .logit_rows = rows};
    int ran = 0;
    if (bucket >= 0) {
        ran = cu_graph_run(e, &st, err);
        if (ran < 0)
            return ran;
    }
    if (!ran)
        KC_CHECK(cu_forward(e, &st, err));
    return KV_OK;
}

int cu_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, float *logits, kv_err *err)
{
    cu_engine *c = cu_of(e);
    KC_CHECK(decode_enqueue(e, seqs, tokens, n, err));
    CU_CHECK(cudaMemcpyAsync(logits, c->logits, (size_t)n * (size_t)e->model->cfg.vocab_size * sizeof(float),
                             cudaMemcpyDeviceToHost, c->stream));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    return KV_OK;
}

/* Row i's pick on the host, for a row whose candidates the device cannot hold: its logits
 * come back and kc_sample (the host sampler's own pick) takes the same draw. */
static int pick_on_host(kv_engine *e, int i, const kv_sample_row *row, int32_t *next, kv_err *err)
{
    cu_engine *c = cu_of(e);
    size_t vocab = (size_t)e->model->cfg.vocab_size;
    if (!c->host_row) {
        c->host_row = malloc(vocab * sizeof *c->host_row);
        c->host_cands = malloc(vocab * sizeof *c->host_cands);
        if (!c->host_row || !c->host_cands) {
            free(c->host_row), free(c->host_cands);
            c->host_row = NULL, c->host_cands = NULL;
            return kv_err_set(err, KV_ENOMEM, "out of memory (host sampling of one row)");
        }
    }
    CU_CHECK(cudaMemcpyAsync(c->host_row, c->logits + (size_t)i * vocab, vocab * sizeof(float),
                             cudaMemcpyDeviceToHost, c->stream));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    *next = kc_sample(c->host_row, (int)vocab, &row->p, row->u, c->host_cands);
    e->host_picks++;
    return KV_OK;
}

/* Logprobs of the rows that ask, after the pick on the same stream: each asking row's
 * kv_cuda_logprob_row (168 bytes) comes back, not its logits. Rows the device left to the
 * host (next[i] is KV_CUDA_SAMPLE_ON_HOST on the device) are done on the host in
 * pick_on_host's copy of their logits by the caller. */
_Static_assert(sizeof(kv_cuda_logprob_row) == sizeof(kc_logprobs), "kv_cuda_logprobs writes kc_logprobs rows");
static int logprobs_enqueue(kv_engine *e, int n, const int *lp_top, kv_err *err)
{
    cu_engine *c = cu_of(e);
    KC_CHECK(cu_ensure_logprobs(c, n, err));
    int32_t *ht = cu_lp_top(c, c->h_lp);
    for (int i = 0; i < n; i++)
        ht[i] = lp_top[i];
    CU_CHECK(cudaMemcpyAsync(cu_lp_top(c, c->d_lp), ht, (size_t)n * sizeof *ht, cudaMemcpyHostToDevice, c->stream));
    KC_CHECK(kv_cuda_logprobs((kv_cuda_logprob_row *)c->d_lp, c->logits, n, e->model->cfg.vocab_size, KV_CUDA_F32,
                              cu_smp_ids(c, c->d_smp), cu_lp_top(c, c->d_lp), c->stream, err));
    CU_CHECK(cudaMemcpyAsync(c->h_lp, c->d_lp, (size_t)n * sizeof(kv_cuda_logprob_row), cudaMemcpyDeviceToHost,
                             c->stream));
    return KV_OK;
}

/* The pick runs after the step on the same stream: n x 16 bytes of parameters go up and
 * n ids come back, where the plain step brings back n x vocab f32 logits (32 MiB at batch
 * 64 with a 128k vocabulary: about as long over PCIe as the step itself). */
int cu_decode_sample(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, const kv_sample_row *rows,
                     const int *lp_top, kc_logprobs *lp, int32_t *next, kv_err *err)
{
    cu_engine *c = cu_of(e);
    KC_CHECK(decode_enqueue(e, seqs, tokens, n, err));
    kv_cuda_sample_params *hp = cu_smp_params(c->h_smp);
    for (int i = 0; i < n; i++)
        hp[i] = (kv_cuda_sample_params){rows[i].p.temperature, rows[i].p.top_k, rows[i].p.top_p, rows[i].u};
    CU_CHECK(cudaMemcpyAsync(c->d_smp, c->h_smp, (size_t)n * sizeof *hp, cudaMemcpyHostToDevice, c->stream));
    KC_CHECK(kv_cuda_sample(cu_smp_ids(c, c->d_smp), c->logits, n, e->model->cfg.vocab_size, KV_CUDA_F32,
                            cu_smp_params(c->d_smp), c->stream, err));
    int want_lp = 0;
    for (int i = 0; lp_top && i < n; i++)
        want_lp |= lp_top[i] >= 0;
    if (want_lp)
        KC_CHECK(logprobs_enqueue(e, n, lp_top, err));
    CU_CHECK(cudaMemcpyAsync(cu_smp_ids(c, c->h_smp), cu_smp_ids(c, c->d_smp), (size_t)n * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, c->stream));
    CU_CHECK(cudaStreamSynchronize(c->stream));
    memcpy(next, cu_smp_ids(c, c->h_smp), (size_t)n * sizeof(int32_t));
    for (int i = 0; want_lp && i < n; i++)
        if (lp_top[i] >= 0)
            memcpy(&lp[i], (kv_cuda_logprob_row *)c->h_lp + i, sizeof lp[i]);
    for (int i = 0; i < n; i++)
        if (next[i] == KV_CUDA_SAMPLE_ON_HOST) {
            KC_CHECK(pick_on_host(e, i, &rows[i], &next[i], err));
            if (lp_top && lp_top[i] >= 0) /* c->host_row holds the row's logits */
                kc_logprobs_row(c->host_row, e->model->cfg.vocab_size, next[i], lp_top[i], &lp[i]);
        }
    return KV_OK;
}
