/* The CPU backend: the forward over a host KV pool, activations in f32, weights in the format
 * they are stored in (kv_weight), multiplied by the weight kernels of the best instruction
 * set this CPU runs (kernels/cpu/wkernels.h, picked once at creation). The reference the CUDA
 * backend mirrors op for op.
 *
 * Threads: decode over an f32 KV cache runs the whole forward in one OpenMP parallel region,
 * attention included (split over (sequence, head) pairs); prefill and a quantized KV cache
 * take one region per layer, from the MLP of layer l-1 to the K/V stores of layer l, with
 * attention between regions (its kernels open their own). Never one region per matmul.
 * Inside a region a row-local step (residual add + RMSNorm + quantizing the result) is an
 * `omp for` over rows; a matmul gives each thread a slice of the weight's rows (kc_split_rows), cut
 * so that what follows needs no other thread's output: Q/K slices are whole heads (RoPE and
 * the K/V store per thread), gate/up slices whole blocks of the down projection's activation
 * format (SwiGLU and its quantization per thread). Matmuls sharing an input (q/k/v, gate/up)
 * share its one quantized copy. In decode, the matmuls whose output waits for a barrier anyway
 * (wo, down, the LM head) share chunks of rows out dynamically instead (matmul_shared). That
 * leaves five barriers per layer (after wo, the MLP norm, gate/up, down and the attention
 * norm) besides the region's fork and join.
 * Every barrier is a spin-then-sleep wait in libgomp: on a machine whose cores are shared
 * with other busy processes, GOMP_SPINCOUNT=10000 (or OMP_WAIT_POLICY=passive) keeps a
 * descheduled partner from costing a spinning thread its time slice.
 *
 * Matmuls: decode (and prefill chunks of a few rows) take the GEMV kernels, the rows as the
 * kernel's vectors (activations quantized as the weight format wants): batch-invariant, so a
 * sequence's tokens never depend on its batch mates. Prefill chunks take the format's int8
 * GEMM where its kernels have one (q4_0: activations quantized as for the GEMV, as llama.cpp
 * does), else kc_wgemm_rows (weights dequantized a panel at a time into a register-tiled
 * GEMM, f32 activations). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu_kernels.h"
#include "engine_internal.h"
#include "engine_kvq.h"
#include "kv_blas.h"
#include "wkernels.h"

/* Up to this many rows a matmul streams the weights once through the GEMV kernels; above
 * it (prefill only), the GEMM kernels' blocking wins. */
#define GEMV_MAX_ROWS 4
/* Rows of y a thread's slice is a multiple of, so neighbours never share a cache line. */
#define SLICE_ALIGN 16
#define N_ACT 3 /* kc_act formats */
#define N_LAYER_MATRICES 7
enum { ACT_NORMED = 0, ACT_MIXED = 1 };

/* Activations for up to cap_rows rows (prefill tokens or decode sequences). */
typedef struct scratch {
    int cap_rows;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2;
    /* Quantized copies of matmul inputs, per format (not F32), in two sets: ACT_NORMED for
     * the normed residual stream (q/k/v, gate/up, LM head), ACT_MIXED for the attention
     * output (wo) and the SwiGLU output (down), which is quantized while gate/up still read
     * the normed stream's copy. */
    unsigned char *act[2][N_ACT];
    int32_t *pos;
    const int32_t **tables;
    int32_t *lens;
} scratch;

typedef struct cpu_engine {
    float *inv_freq;
    const kc_isa *isa;
    kc_quantize_act_fn quantize[N_ACT]; /* per activation format */
    int max_cols;                       /* widest matmul input */
    int n_tiles;                        /* threads with a kc_wgemm_rows scratch */
    float *tiles;                       /* n_tiles x KC_WGEMM_SCRATCH_FLOATS floats */
    kvq *kvq;                           /* quantized KV (engine_kvq.h); NULL: f32 blocks */
    /* The model's matrices as this engine streams them (engine_weights): where the model
     * holds them, or in the arena, copied or repacked into a layout of the ISA's kernels. */
    kv_layer_weights *layers;
    kv_weight lm_head;
    unsigned char *arena;
    char layouts[32]; /* the layouts in the arena, named: kv_engine_cpu_layouts */
    float *scores;                      /* f32-KV decode: score_threads x max_position floats */
    int score_threads;
    scratch s;
} cpu_engine;

/* Where a forward's new K/V go and what its queries attend to. */
typedef struct attn_target {
    kv_seq *prefill_seq;     /* prefill: one sequence, rows are consecutive positions */
    kv_seq *const *seqs;     /* decode: one sequence per row */
    const kvq_rows *qrows;   /* the same rows, for a quantized KV cache */
} attn_target;

/* One matmul input as each weight format wants it: f32 rows, or quantized copies. */
typedef struct act_view {
    const void *data[N_ACT];
    size_t row_bytes[N_ACT];
} act_view;

/* What one forward's regions share. */
typedef struct pass {
    kv_engine *e;
    int rows;
    int gemm;                /* matmuls over rows take igemm_rows or kc_wgemm_rows */
    const attn_target *t;
} pass;

static cpu_engine *cpu(kv_engine *e) { return e->backend; }

static void scratch_free(scratch *s)
{
    free(s->x); free(s->xb); free(s->q); free(s->k); free(s->v);
    free(s->att); free(s->hb); free(s->hb2); free(s->pos); free((void *)s->tables); free(s->lens);
    for (int set = 0; set < 2; set++)
        for (int f = 0; f < N_ACT; f++)
            free(s->act[set][f]);
    memset(s, 0, sizeof *s);
}

static int scratch_ensure(cpu_engine *ce, const kv_model_config *c, int rows, kv_err *err)
{
    scratch *s = &ce->s;
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
    /* hb2: the up projection, then the down projection's output (hidden wide). */
    size_t ff = (size_t)c->intermediate_size > h ? (size_t)c->intermediate_size : h;
    s->hb2 = malloc(r * ff * sizeof(float));
    s->pos = malloc(r * sizeof(int32_t));
    s->tables = malloc(r * sizeof(*s->tables));
    s->lens = malloc(r * sizeof(int32_t));
    int ok = s->x && s->xb && s->q && s->k && s->v && s->att && s->hb && s->hb2 && s->pos && s->tables && s->lens;
    /* A quantized row is never larger than its f32 row. */
    for (int set = 0; set < 2; set++)
        for (int f = KC_ACT_F32 + 1; ok && f < N_ACT; f++)
            ok = (s->act[set][f] = malloc(r * (size_t)ce->max_cols * sizeof(float))) != NULL;
    if (!ok) {
        scratch_free(s);
        return kv_err_set(err, KV_ENOMEM, "engine: out of memory for %d rows of activations", rows);
    }
    s->cap_rows = rows;
    return KV_OK;
}

static kc_paged_kv layer_kv(const kv_engine *e, int layer)
{
    const kv_pool *p = &e->pool;
    /* The pool holds owner layers only (pool.shape.n_layers = layout.n_slots). */
    kc_paged_kv kv = {kv_pool_k(p, 0, e->layout.slot_of[layer]), p->block_floats, p->layer_floats / 2,
                      p->shape.block_size, p->shape.n_kv_heads, p->shape.head_dim};
    return kv;
}

/* ---- steps inside a parallel region ---- */

/* Where x's rows go for the weights in ws: f32 in place, or quantized copies in the
 * scratch per activation format (fmts[0..*nf) lists those to fill). Every thread computes the
 * same view. */
static act_view view_for(const cpu_engine *ce, int set, const float *x, int cols, const kv_weight *const *ws, int n_ws,
                         int gemm, int *fmts, int *nf)
{
    act_view av;
    memset(&av, 0, sizeof av);
    av.data[KC_ACT_F32] = x;
    av.row_bytes[KC_ACT_F32] = (size_t)cols * sizeof(float);
    *nf = 0;
    for (int f = KC_ACT_F32 + 1; f < N_ACT; f++) {
        int need = 0;
        for (int i = 0; i < n_ws; i++) {
            const kc_wkernel *k = &ce->isa->k[ws[i]->type];
            need |= (int)k->act == f && (!gemm || k->igemm_rows); /* kc_wgemm_rows takes f32 rows */
        }
        if (!need)
            continue;
        av.data[f] = ce->s.act[set][f];
        av.row_bytes[f] = kc_act_row_bytes((kc_act)f, cols);
        fmts[(*nf)++] = f;
    }
    return av;
}

/* Row r of x (cols wide) into each quantized format of the view. */
static void quantize_row(const cpu_engine *ce, const act_view *av, const int *fmts, int nf, int r, const float *x_row,
                         int cols)
{
    for (int i = 0; i < nf; i++) {
        int f = fmts[i];
        ce->quantize[f]((unsigned char *)av->data[f] + (size_t)r * av->row_bytes[f], x_row, cols);
    }
}

/* n rounded up to whole row groups of w's layout (kc_row_group: a repacked layout's kernels
 * take whole groups). */
static int whole_groups(const kv_weight *w, int n)
{
    const int g = kc_row_group(w->type);
    return (n + g - 1) / g * g;
}

/* This thread's rows [*r0, *r1) of w, a multiple of align (a multiple of SLICE_ALIGN or
 * align itself when that is larger; then of whole row groups) so that what the thread does
 * next with its slice of the output (RoPE on whole heads, quantizing whole blocks) needs no
 * other thread's. */
static void slice(const kv_weight *w, int align, int *r0, int *r1)
{
    const int unit = align < SLICE_ALIGN ? (SLICE_ALIGN + align - 1) / align * align : align;
    int a = unit;
    while (a % kc_row_group(w->type)) /* the least common multiple */
        a += unit;
    kc_split_rows(w->rows, omp_get_num_threads(), omp_get_thread_num(), a, r0, r1);
}

/* This thread's slice of y[n][w->rows] = x[n] . W^T (no barrier), rows [*r0, *r1). */
static void matmul(const cpu_engine *ce, float *y, const kv_weight *w, const act_view *av, int n, int gemm, int align,
                   int *out_r0, int *out_r1)
{
    int r0, r1;
    slice(w, align, &r0, &r1);
    if (out_r0) {
        *out_r0 = r0;
        *out_r1 = r1;
    }
    if (r0 >= r1)
        return;
    const kc_wkernel *k = &ce->isa->k[w->type];
    if (gemm && k->igemm_rows) {
        k->igemm_rows(y, (size_t)w->rows, w->data, w->row_bytes, r0, r1, av->data[k->act], av->row_bytes[k->act], n,
                      w->cols);
        return;
    }
    if (gemm) {
        int t = omp_get_thread_num();
        kc_wgemm_rows(ce->isa, y, (size_t)w->rows, w->data, w->type, w->row_bytes, r0, r1, av->data[KC_ACT_F32], n,
                      w->cols, ce->tiles + (size_t)t * KC_WGEMM_SCRATCH_FLOATS);
        return;
    }
    k->gemv_rows(y, (size_t)w->rows, w->data, w->row_bytes, r0, r1, av->data[k->act], av->row_bytes[k->act], n,
                 w->cols);
}

/* Decode's matmuls whose output nothing reads before the next barrier (wo, down, the LM
 * head) share their rows out in chunks, dynamically: on a machine whose cores are shared, a
 * thread slowed down takes fewer chunks instead of keeping the other waiting at the barrier.
 * About SHARED_CHUNKS_PER_THREAD chunks per thread, none under SHARED_CHUNK_MIN_BYTES of
 * weights (the memory streams must ramp up), whole SLICE_ALIGN rows. The GEMV's rows do not
 * depend on their grouping: the same bits as static slices. */
#define SHARED_CHUNKS_PER_THREAD 8
#define ALIGN_SHARED 0 /* prefetch_slice's align for a matmul_shared weight */
#define SHARED_CHUNK_MIN_BYTES (64 * 1024)
static int shared_chunk_rows(const kv_weight *w)
{
    int rows = w->rows / (SHARED_CHUNKS_PER_THREAD * omp_get_num_threads());
    int min_rows = (int)(SHARED_CHUNK_MIN_BYTES / (w->row_bytes ? w->row_bytes : 1));
    rows = rows > min_rows ? rows : min_rows;
    return whole_groups(w, (rows + SLICE_ALIGN - 1) / SLICE_ALIGN * SLICE_ALIGN);
}

/* All of y[n][w->rows] = x[n] . W^T before the caller's next barrier (nothing reads y
 * sooner): prefill's static slices, or decode's GEMV over chunks of rows shared out
 * dynamically. No barrier at the end (the caller's comes after its prefetch). */
static void matmul_shared(const cpu_engine *ce, float *y, const kv_weight *w, const act_view *av, int n, int gemm)
{
    if (gemm) {
        matmul(ce, y, w, av, n, 1, 1, NULL, NULL);
        return;
    }
    const kc_wkernel *k = &ce->isa->k[w->type];
    const int chunk = shared_chunk_rows(w), n_chunks = (w->rows + chunk - 1) / chunk;
#pragma omp for schedule(dynamic, 1) nowait
    for (int i = 0; i < n_chunks; i++) {
        const int r0 = i * chunk, r1 = r0 + chunk < w->rows ? r0 + chunk : w->rows;
        k->gemv_rows(y, (size_t)w->rows, w->data, w->row_bytes, r0, r1, av->data[k->act], av->row_bytes[k->act], n,
                     w->cols);
    }
}

/* Decode only: asks for the first DECODE_PREFETCH_BYTES of this thread's slice of w (as matmul
 * will cut it with align, or of its likely first chunk when align is ALIGN_SHARED) before
 * the thread waits at a barrier, so that the DRAM streams of the next matmul are under way
 * during the wait instead of starting after it. Each decode matmul of a small model is a few
 * tens of microseconds: its start-up latency and the barrier before it are a large share of
 * it. */
#define DECODE_PREFETCH_BYTES 8192
static void prefetch_slice(const kv_weight *w, int align)
{
    if (!w->data)
        return;
    int r0, r1;
    if (align == ALIGN_SHARED) { /* the chunk this thread likely takes first */
        const int chunk = shared_chunk_rows(w);
        r0 = chunk * omp_get_thread_num();
        r1 = r0 + chunk < w->rows ? r0 + chunk : w->rows;
    } else {
        slice(w, align, &r0, &r1);
    }
    size_t n = (size_t)(r1 - r0) * w->row_bytes;
    const char *b = (const char *)w->data + (size_t)r0 * w->row_bytes;
    for (size_t o = 0; o < n && o < DECODE_PREFETCH_BYTES; o += 64)
        __builtin_prefetch(b + o);
}

/* Row-local, rows [first, first+n) of x: x += add (when add), out = rmsnorm(x) . norm, and
 * out's quantized copies for the weights in ws. Ends with the `omp for`'s barrier. */
static act_view residual_norm(const pass *p, float *x, const float *add, const float *norm, float *out, int first,
                              int n, const kv_weight *const *ws, int n_ws, int gemm)
{
    const cpu_engine *ce = cpu(p->e);
    const kv_model_config *c = &p->e->model->cfg;
    int h = c->hidden_size, fmts[N_ACT], nf;
    act_view av = view_for(ce, ACT_NORMED, out, h, ws, n_ws, gemm, fmts, &nf);
#pragma omp for schedule(static)
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)(first + r) * (size_t)h, *o = out + (size_t)r * (size_t)h;
        if (add)
            kc_add(xr, add + (size_t)(first + r) * (size_t)h, (size_t)h);
        kc_rmsnorm(o, xr, norm, 1, h, c->rms_eps);
        quantize_row(ce, &av, fmts, nf, r, o, h);
    }
    return av;
}

/* Norm, Q/K/V, RoPE and the new rows' K/V into the pool: everything before attention. add:
 * the last layer's MLP output, still to be added to the residual stream (NULL for layer 0).
 * A layer sharing an earlier layer's K/V (cross-layer sharing) computes and stores only Q. */
static void pre_attention(const pass *p, int l, const float *add)
{
    kv_engine *e = p->e;
    const kv_model_config *c = &e->model->cfg;
    cpu_engine *ce = cpu(e);
    const kv_layer_weights *w = &ce->layers[l];
    scratch *s = &ce->s;
    int hd = c->head_dim;
    size_t q_dim = (size_t)c->n_heads * (size_t)hd, kv_dim = (size_t)c->n_kv_heads * (size_t)hd;
    const kv_weight *qkv[3] = {&w->wq, &w->wk, &w->wv};
    int owner = kv_layout_is_owner(&e->layout, l);
    act_view av = residual_norm(p, s->x, add, w->attn_norm, s->xb, 0, p->rows, qkv, owner ? 3 : 1, p->gemm);
    /* Slices of whole heads: each thread ropes its own Q and K heads and stores its own
     * K and V columns, with no barrier (the region's end is the next). */
    int q0, q1, k0 = 0, k1 = 0, v0 = 0, v1 = 0;
    matmul(ce, s->q, &w->wq, &av, p->rows, p->gemm, hd, &q0, &q1);
    if (!owner) {
        for (int r = 0; r < p->rows && q1 > q0; r++)
            kc_rope(s->q + (size_t)r * q_dim + q0, 1, (q1 - q0) / hd, hd, &s->pos[r], ce->inv_freq);
        return;
    }
    matmul(ce, s->k, &w->wk, &av, p->rows, p->gemm, hd, &k0, &k1);
    matmul(ce, s->v, &w->wv, &av, p->rows, p->gemm, 1, &v0, &v1);
    kc_paged_kv kv = ce->kvq ? (kc_paged_kv){0} : layer_kv(e, l);
    for (int r = 0; r < p->rows; r++) {
        float *qr = s->q + (size_t)r * q_dim, *kr = s->k + (size_t)r * kv_dim, *vr = s->v + (size_t)r * kv_dim;
        if (q1 > q0)
            kc_rope(qr + q0, 1, (q1 - q0) / hd, hd, &s->pos[r], ce->inv_freq);
        if (k1 > k0)
            kc_rope(kr + k0, 1, (k1 - k0) / hd, hd, &s->pos[r], ce->inv_freq);
        const int32_t *table = p->t->prefill_seq ? p->t->prefill_seq->blocks : p->t->seqs[r]->blocks;
        size_t v_offset = kv.v_offset;
        float *slot = ce->kvq ? kvq_row(ce->kvq, table, s->pos[r], l, &v_offset)
                              : kv.pool + (size_t)table[s->pos[r] / kv.block_size] * kv.block_stride +
                                    (size_t)(s->pos[r] % kv.block_size) * kv_dim;
        memcpy(slot + k0, kr + k0, (size_t)(k1 - k0) * sizeof(float));
        memcpy(slot + v_offset + v0, vr + v0, (size_t)(v1 - v0) * sizeof(float));
    }
}

/* The attention output projection and the MLP; the MLP's output is left in s->xb, for the
 * next step to add to the residual stream (fused with its norm). */
static void post_attention(const pass *p, int l)
{
    kv_engine *e = p->e;
    const kv_model_config *c = &e->model->cfg;
    cpu_engine *ce = cpu(e);
    const kv_layer_weights *w = &ce->layers[l];
    scratch *s = &ce->s;
    int ff = c->intermediate_size, q_dim = c->n_heads * c->head_dim, fmts[N_ACT], nf;
    const kv_weight *wo = &w->wo;
    /* quantized before the fork (decode), or here over the rows (prefill, for an int8 GEMM) */
    act_view av = view_for(ce, ACT_MIXED, s->att, q_dim, &wo, 1, p->gemm, fmts, &nf);
    if (p->gemm && nf) {
#pragma omp for schedule(static)
        for (int r = 0; r < p->rows; r++)
            quantize_row(ce, &av, fmts, nf, r, s->att + (size_t)r * (size_t)q_dim, q_dim);
    }
    matmul_shared(ce, s->xb, wo, &av, p->rows, p->gemm);
    /* Gate and up in the same slices, whole blocks of down's activation format: each
     * thread's SwiGLU and quantization of its slice need no barrier. */
    const kv_weight *down = &w->w_down;
    act_view dv = view_for(ce, ACT_MIXED, s->hb, ff, &down, 1, p->gemm, fmts, &nf);
    int block = 1;
    for (int i = 0; i < nf; i++)
        block = fmts[i] == KC_ACT_Q8_K ? 256 : block > 32 ? block : 32;
    if (!p->gemm) {
        prefetch_slice(&w->w_gate, block);
        prefetch_slice(&w->w_up, block);
    }
#pragma omp barrier
    const kv_weight *gu[2] = {&w->w_gate, &w->w_up};
    av = residual_norm(p, s->x, s->xb, w->mlp_norm, s->xb, 0, p->rows, gu, 2, p->gemm);
    int c0, c1;
    matmul(ce, s->hb, &w->w_gate, &av, p->rows, p->gemm, block, &c0, &c1);
    matmul(ce, s->hb2, &w->w_up, &av, p->rows, p->gemm, block, NULL, NULL);
    for (int r = 0; r < p->rows && c1 > c0; r++) {
        float *hr = s->hb + (size_t)r * (size_t)ff;
        kc_swiglu(hr + c0, hr + c0, s->hb2 + (size_t)r * (size_t)ff + c0, (size_t)(c1 - c0));
        for (int i = 0; i < nf; i++) {
            int f = fmts[i];
            ce->quantize[f]((unsigned char *)dv.data[f] + (size_t)r * dv.row_bytes[f] + kc_act_row_bytes((kc_act)f, c0),
                            hr + c0, c1 - c0);
        }
    }
    if (!p->gemm)
        prefetch_slice(down, ALIGN_SHARED);
#pragma omp barrier
    matmul_shared(ce, s->hb2, down, &dv, p->rows, p->gemm);
    if (!p->gemm && l + 1 < c->n_layers) {
        const kv_layer_weights *nw = &ce->layers[l + 1];
        prefetch_slice(&nw->wq, c->head_dim);
        prefetch_slice(&nw->wk, c->head_dim);
        prefetch_slice(&nw->wv, 1);
    } else if (!p->gemm) {
        prefetch_slice(&ce->lm_head, ALIGN_SHARED);
    }
#pragma omp barrier
}

/* The last layer's residual add, the final norm and the LM head for rows [first, first+n)
 * into logits[n][vocab]. */
static void logits_step(const pass *p, int first, int n, float *logits)
{
    kv_engine *e = p->e;
    scratch *s = &cpu(e)->s;
    int gemm = n > GEMV_MAX_ROWS && p->gemm;
    const kv_weight *head = &cpu(e)->lm_head;
    /* Rows outside [first, first+n) never reach the logits: their residual add is skipped. */
    act_view av = residual_norm(p, s->x, s->hb2, e->model->final_norm, s->xb, first, n, &head, 1, gemm);
    matmul_shared(cpu(e), logits, head, &av, n, gemm);
}

/* ---- the forward ---- */

/* All layers for p->rows rows whose embeddings are in s->x and positions in s->pos, then
 * the logits of rows [first, first+n_logits) (none when logits is NULL). */
static void forward(const pass *p, int first, int n_logits, float *logits)
{
    kv_engine *e = p->e;
    const kv_model_config *c = &e->model->cfg;
    scratch *s = &cpu(e)->s;
    for (int l = 0; l <= c->n_layers; l++) {
        if (l > 0 && !p->gemm) { /* the attention output as wo wants it: a few rows, not worth a barrier */
            const kv_weight *wo = &cpu(e)->layers[l - 1].wo;
            int fmts[N_ACT], nf, q_dim = c->n_heads * c->head_dim;
            act_view av = view_for(cpu(e), ACT_MIXED, s->att, q_dim, &wo, 1, 0, fmts, &nf);
            for (int r = 0; r < p->rows; r++)
                quantize_row(cpu(e), &av, fmts, nf, r, s->att + (size_t)r * (size_t)q_dim, q_dim);
        }
#pragma omp parallel
        {
            if (l > 0)
                post_attention(p, l - 1);
            if (l < c->n_layers)
                pre_attention(p, l, l > 0 ? s->hb2 : NULL);
            else if (logits)
                logits_step(p, first, n_logits, logits);
        }
        if (l == c->n_layers)
            break;
        kvq *q = cpu(e)->kvq;
        if (q) {
            kvq_seal_layer(q, &e->pool, p->t->qrows, l);
            if (p->t->prefill_seq)
                kvq_attention_prefill(q, &e->pool, s->att, s->q, p->t->prefill_seq, s->pos[0], p->rows, c->n_heads, l);
            else
                kvq_attention_decode(q, &e->pool, s->att, s->q, p->t->qrows, c->n_heads, l);
            continue;
        }
        kc_paged_kv kv = layer_kv(e, l);
        if (p->t->prefill_seq) {
            kc_attention_prefill(s->att, s->q, &kv, p->t->prefill_seq->blocks, s->pos[0], p->rows, c->n_heads);
        } else {
            for (int i = 0; i < p->rows; i++) {
                s->tables[i] = p->t->seqs[i]->blocks;
                s->lens[i] = s->pos[i] + 1;
            }
            kc_attention_decode(s->att, s->q, &kv, s->tables, s->lens, p->rows, c->n_heads);
        }
    }
    if (cpu(e)->kvq)
        kvq_finish(cpu(e)->kvq, &e->pool, p->t->qrows);
}

/* Decode over an f32 KV cache: forward()'s steps in one parallel region for all layers, the
 * attention of layer l between its pre_attention and post_attention as an `omp for` over
 * (sequence, head) pairs, each thread scoring into its own slice of ce->scores. The
 * attention output is quantized for wo head by head as it is made when wo's activation
 * blocks tile a head (else row by row after it). Same arithmetic as forward(), bit for bit;
 * per layer: the pairs' barrier instead of a region's join and a fork, twice. */
static void forward_decode(const pass *p, float *logits)
{
    kv_engine *e = p->e;
    const kv_model_config *c = &e->model->cfg;
    cpu_engine *ce = cpu(e);
    scratch *s = &ce->s;
    int hd = c->head_dim, q_dim = c->n_heads * hd, n_pairs = p->rows * c->n_heads;
    for (int i = 0; i < p->rows; i++) {
        s->tables[i] = p->t->seqs[i]->blocks;
        s->lens[i] = s->pos[i] + 1;
    }
#pragma omp parallel
    {
        float *scores = ce->scores + (size_t)omp_get_thread_num() * (size_t)c->max_position;
        for (int l = 0; l < c->n_layers; l++) {
            pre_attention(p, l, l > 0 ? s->hb2 : NULL);
            prefetch_slice(&ce->layers[l].wo, ALIGN_SHARED);
#pragma omp barrier
            kc_paged_kv kv = layer_kv(e, l);
            const kv_weight *wo = &ce->layers[l].wo;
            int fmts[N_ACT], nf, per_head = 1;
            act_view av = view_for(ce, ACT_MIXED, s->att, q_dim, &wo, 1, 0, fmts, &nf);
            for (int i = 0; i < nf; i++)
                per_head &= kc_act_row_bytes((kc_act)fmts[i], hd) != 0;
#pragma omp for schedule(dynamic, 1)
            for (int pr = 0; pr < n_pairs; pr++) {
                kc_attention_decode_pairs(s->att, s->q, &kv, s->tables, s->lens, c->n_heads, pr, pr + 1, scores);
                int r = pr / c->n_heads, h = pr % c->n_heads;
                const float *head = s->att + (size_t)r * (size_t)q_dim + (size_t)h * (size_t)hd;
                for (int i = 0; per_head && i < nf; i++) {
                    int f = fmts[i];
                    ce->quantize[f]((unsigned char *)av.data[f] + (size_t)r * av.row_bytes[f] +
                                        kc_act_row_bytes((kc_act)f, h * hd),
                                    head, hd);
                }
            }
            if (!per_head) {
#pragma omp for schedule(static)
                for (int r = 0; r < p->rows; r++)
                    quantize_row(ce, &av, fmts, nf, r, s->att + (size_t)r * (size_t)q_dim, q_dim);
            }
            post_attention(p, l);
        }
        if (logits)
            logits_step(p, 0, p->rows, logits);
    }
}

/* Embedding rows of the tokens into s->x (dequantized from the table's format). */
static void embed(const kv_model *m, float *x, const int32_t *tokens, int n)
{
    const struct kv_type_traits *tr = kv_type_traits(m->embed.type);
    for (int i = 0; i < n; i++)
        tr->to_f32(kv_weight_row(&m->embed, tokens[i]), x + (size_t)i * (size_t)m->embed.cols,
                   (size_t)m->embed.cols);
}

static int cpu_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int rows, float *logits, kv_logits_want want,
                       kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    cpu_engine *ce = cpu(e);
    scratch *s = &ce->s;
    int rc = scratch_ensure(ce, c, rows, err);
    if (rc)
        return rc;
    embed(e->model, s->x, tokens, rows);
    for (int i = 0; i < rows; i++)
        s->pos[i] = seq->n_tokens + i;
    const kv_seq *one = seq;
    kvq_rows qr = {&one, 0, s->pos, rows};
    attn_target t = {.prefill_seq = seq, .qrows = &qr};
    if (ce->kvq && (rc = kvq_prepare(ce->kvq, &e->pool, &qr, err)))
        return rc;
    /* Prefill rows always take the GEMM kernels, however few: a token's K/V must not depend
     * on where a chunk (or a prefix-cache hit) starts, so that reusing cached blocks
     * gives the bits a prefill of the whole prompt gives. */
    pass p = {e, rows, 1, &t};
    if (want == KV_LOGITS_ALL)
        forward(&p, 0, rows, logits);
    else if (want == KV_LOGITS_LAST)
        forward(&p, rows - 1, 1, logits);
    else
        forward(&p, 0, 0, NULL);
    return KV_OK;
}

static int cpu_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, float *logits, kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    cpu_engine *ce = cpu(e);
    scratch *s = &ce->s;
    int rc = scratch_ensure(ce, c, n, err);
    if (rc)
        return rc;
    embed(e->model, s->x, tokens, n);
    for (int i = 0; i < n; i++)
        s->pos[i] = seqs[i]->n_tokens;
    kvq_rows qr = {(const kv_seq *const *)seqs, 1, s->pos, n};
    attn_target t = {.seqs = seqs, .qrows = &qr};
    if (ce->kvq && (rc = kvq_prepare(ce->kvq, &e->pool, &qr, err)))
        return rc;
    pass p = {e, n, 0, &t};
    if (!ce->kvq && ce->scores && omp_get_max_threads() <= ce->score_threads)
        forward_decode(&p, logits);
    else
        forward(&p, 0, n, logits);
    return KV_OK;
}

/* Host pool: whole blocks are contiguous bytes. */
static int cpu_blocks_read(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err)
{
    size_t bb = kv_pool_nbytes_per_block(&e->pool);
    for (int i = 0; i < n; i++) {
        if (cpu(e)->kvq)
            kvq_block_read(cpu(e)->kvq, &e->pool, blocks[i], (char *)dst + (size_t)i * bb);
        else
            memcpy((char *)dst + (size_t)i * bb, kv_pool_block_addr(&e->pool, blocks[i]), bb);
    }
    return KV_OK;
}

static int cpu_blocks_write(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err)
{
    size_t bb = kv_pool_nbytes_per_block(&e->pool);
    for (int i = 0; i < n; i++) {
        if (cpu(e)->kvq)
            kvq_block_write(cpu(e)->kvq, &e->pool, blocks[i], (const char *)src + (size_t)i * bb);
        else
            memcpy(kv_pool_block_addr(&e->pool, blocks[i]), (const char *)src + (size_t)i * bb, bb);
    }
    return KV_OK;
}

/* The engine's copy of w (in its arena, at dst): its layout under the engine's ISA
 * (kc_repack_type), else its bytes as they are; rows in parallel, whole groups of ~64 KiB. The
 * model's mapped pages of w are handed back after (for a head tied to the embedding table,
 * the table's: its rows are read from the file again as tokens need them). */
static void copy_weight(cpu_engine *ce, const kv_model *m, kv_weight *w, kv_type to, unsigned char *dst)
{
    const int group = kc_row_group(to);
    int chunk = (int)((64 << 10) / (w->row_bytes * (size_t)group));
    chunk = group * (chunk > 1 ? chunk : 1);
    const int n_chunks = (w->rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n_chunks; i++) {
        const int r0 = i * chunk, r1 = r0 + chunk < w->rows ? r0 + chunk : w->rows;
        kc_repack_rows(to, dst, w->data, w->row_bytes, r0, r1);
    }
    kv_model_release_weight(m, w);
    w->data = dst;
    if (to != w->type && !strstr(ce->layouts, kv_type_name(to)))
        snprintf(ce->layouts + strlen(ce->layouts), sizeof ce->layouts - strlen(ce->layouts), "%s%s",
                 ce->layouts[0] ? "," : "", kv_type_name(to));
    w->type = to;
}

#define ARENA_ALIGN ((size_t)2 << 20) /* a huge page */

/* The matrices a forward streams (each layer's seven, then the LM head) into ws, their count. */
static int streamed_weights(cpu_engine *ce, int n_layers, kv_weight **ws)
{
    int n = 0;
    for (int l = 0; l < n_layers; l++) {
        kv_layer_weights *w = &ce->layers[l];
        kv_weight *each[N_LAYER_MATRICES] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        memcpy(ws + n, each, sizeof each);
        n += N_LAYER_MATRICES;
    }
    ws[n++] = &ce->lm_head;
    return n;
}

/* cpu_engine.layers and .lm_head: the model's matrices as this engine streams them. Those
 * mapped from the model's file are copied into one arena of the engine's, repacked where its
 * ISA has a faster layout for them (kc_repack_type), and the mapped pages handed back, so
 * resident memory stays one copy. The arena asks for transparent huge pages: decode streams
 * every weight each token, and on 4 KiB pages that is a TLB miss per 4 KiB (f32 GEMV 5-15 %
 * faster on 2 MiB pages: SmolLM2 shapes, Zen 3). Buffers the model owns (converted, or a
 * GGUF's Q/K rows reordered) stay as they are: a repacked copy beside them would hold their
 * bytes twice. KVSERVE_WEIGHT_REPACK=0 streams everything from where the model holds it. */
static int engine_weights(cpu_engine *ce, const kv_model *m, kv_err *err)
{
    const int n_layers = m->cfg.n_layers;
    ce->layers = malloc((size_t)(n_layers > 0 ? n_layers : 1) * sizeof *ce->layers);
    kv_weight **ws = malloc(((size_t)N_LAYER_MATRICES * (size_t)n_layers + 1) * sizeof *ws);
    kv_type *to = malloc(((size_t)N_LAYER_MATRICES * (size_t)n_layers + 1) * sizeof *to);
    int rc = KV_OK;
    if (!ce->layers || !ws || !to) {
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(ce->layers, m->layers, (size_t)n_layers * sizeof *ce->layers);
    ce->lm_head = m->lm_head;
    const char *env = getenv("KVSERVE_WEIGHT_REPACK");
    if (env && !strcmp(env, "0"))
        goto out;
    const int n = streamed_weights(ce, n_layers, ws);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        to[i] = kc_repack_type(ce->isa, ws[i]->type, ws[i]->rows);
        if (!ws[i]->data || !kv_model_weight_mapped(m, ws[i]))
            ws[i] = NULL; /* stays where the model holds it */
        else
            total += (kv_weight_bytes(ws[i]) + 63) / 64 * 64;
    }
    if (!total)
        goto out;
    const size_t size = (total + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (!(ce->arena = aligned_alloc(ARENA_ALIGN, size))) {
        rc = kv_err_set(err, KV_ENOMEM, "engine: out of memory for %zu bytes of weights", size);
        goto out;
    }
    (void)madvise(ce->arena, size, MADV_HUGEPAGE); /* a hint: without THP, 4 KiB pages */
    size_t at = 0;
    for (int i = 0; i < n; i++)
        if (ws[i]) {
            const size_t bytes = kv_weight_bytes(ws[i]);
            copy_weight(ce, m, ws[i], to[i], ce->arena + at);
            at += (bytes + 63) / 64 * 64;
        }
out:
    free(ws);
    free(to);
    return rc;
}

static void engine_weights_free(cpu_engine *ce)
{
    free(ce->arena);
    free(ce->layers);
}

static void cpu_destroy(kv_engine *e)
{
    cpu_engine *ce = cpu(e);
    if (!ce)
        return;
    scratch_free(&ce->s);
    kvq_free(ce->kvq);
    engine_weights_free(ce);
    free(ce->inv_freq);
    free(ce->tiles);
    free(ce->scores);
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

/* Every matrix's format has kernels in the picked ISA; the widest input. */
static int check_weights(const kv_model *m, const kc_isa *isa, int *max_cols, kv_err *err)
{
    const kv_model_config *c = &m->cfg;
    *max_cols = 0;
    for (int l = -1; l < c->n_layers; l++) {
        const kv_layer_weights *w = l >= 0 ? &m->layers[l] : NULL;
        const kv_weight *ws[7];
        int n = 0;
        if (w) {
            const kv_weight *lw[7] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
            memcpy(ws, lw, sizeof lw);
            n = 7;
        } else {
            ws[n++] = &m->lm_head;
        }
        for (int i = 0; i < n; i++) {
            if (!ws[i]->data && !ws[i]->rows)
                continue; /* the K/V projections of a layer sharing another's K/V */
            if ((unsigned)ws[i]->type >= KV_TYPE_COUNT || !isa->k[ws[i]->type].gemv_rows)
                return kv_err_set(err, KV_EUNSUPPORTED, "engine: no %s kernels for %s weights", isa->name,
                                  kv_type_name(ws[i]->type));
            if (ws[i]->cols > *max_cols)
                *max_cols = ws[i]->cols;
        }
    }
    return KV_OK;
}

int kv_engine_cpu_init(kv_engine *e, const kv_engine_options *o, kv_err *err)
{
    const kv_model_config *c = &e->model->cfg;
    if (o->precision != KV_PRECISION_F32)
        return kv_err_set(err, KV_EUNSUPPORTED, "engine: the CPU engine computes in f32 only");
    const kv_layout *lay = &e->layout;
    int staged = lay->dtype != KV_CACHE_F32; /* sealed blocks in another form: engine_kvq.h */
    const kc_isa *isa;
    int max_cols;
    int rc = kc_isa_pick(&isa, err);
    if (rc || (rc = check_weights(e->model, isa, &max_cols, err)))
        return rc;
    kv_pool_shape shape = {lay->n_slots, c->n_kv_heads, c->head_dim, o->block_size}; /* owner layers only */
    int32_t n_blocks = kv_engine_pool_blocks(c, o, staged ? lay->block_bytes : kv_pool_block_bytes(&shape));
    cpu_engine *ce = calloc(1, sizeof *ce);
    if (!ce)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    ce->isa = isa;
    ce->max_cols = max_cols;
    for (int t = 0; t < KV_TYPE_COUNT; t++)
        if (isa->k[t].quantize_act && !ce->quantize[isa->k[t].act])
            ce->quantize[isa->k[t].act] = isa->k[t].quantize_act;
    if (o->n_threads > 0) {
        omp_set_num_threads(o->n_threads);
        kv_blas_set_threads(o->n_threads);
    }
    ce->n_tiles = omp_get_max_threads();
    rc = engine_weights(ce, e->model, err);
    if (!rc)
        rc = staged ? kv_pool_init_bytes(&e->pool, &shape, n_blocks, lay->block_bytes, err)
                    : kv_pool_init(&e->pool, &shape, n_blocks, err);
    if (!rc && staged)
        rc = kvq_create(&ce->kvq, lay, &e->pool, err);
    ce->inv_freq = malloc((size_t)c->head_dim / 2 * sizeof(float));
    ce->tiles = malloc((size_t)ce->n_tiles * KC_WGEMM_SCRATCH_FLOATS * sizeof(float));
    if (!staged && c->max_position > 0) {
        ce->score_threads = omp_get_max_threads();
        ce->scores = malloc((size_t)ce->score_threads * (size_t)c->max_position * sizeof(float));
    }
    if (!rc && (!ce->inv_freq || !ce->tiles || (!staged && c->max_position > 0 && !ce->scores)))
        rc = kv_err_set(err, KV_ENOMEM, "out of memory");
    if (rc) {
        kv_pool_destroy(&e->pool);
        kvq_free(ce->kvq);
        engine_weights_free(ce);
        free(ce->inv_freq);
        free(ce->tiles);
        free(ce->scores);
        free(ce);
        return rc;
    }
    kc_rope_params rp = {c->head_dim, c->rope_theta, c->rope_scaling, c->rope_factor, c->rope_low_freq_factor,
                         c->rope_high_freq_factor, c->rope_original_max_position};
    kc_rope_inv_freq(ce->inv_freq, &rp);
    e->backend = ce;
    e->ops = &cpu_ops;
    return KV_OK;
}

const char *kv_engine_cpu_isa(const kv_engine *e)
{
    return e->device < 0 && e->backend ? ((const cpu_engine *)e->backend)->isa->name : NULL;
}

const char *kv_engine_cpu_layouts(const kv_engine *e)
{
    return e->device < 0 && e->backend ? ((const cpu_engine *)e->backend)->layouts : NULL;
}
