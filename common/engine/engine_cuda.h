/* The CUDA backend's private state and the helpers its files share:
 *   engine_cuda.c          set-up (device, weights, KV pool, buffers), block copies, teardown;
 *   engine_cuda_forward.c  the forward pass (the op order of engine_cpu.c), prefill, decode;
 *   engine_cuda_graph.c    CUDA graphs of the decode step per (batch bucket, split count);
 *   engine_cuda_gemv.c     which projections run on the own GEMV kernel (measured at start).
 * Everything runs on one stream; the engine is used by one thread at a time. Weights,
 * activations and the KV pool share one dtype: f32 (the exactness mode: true fp32 GEMMs,
 * no TF32) or bf16; logits always come back as f32. */
#ifndef KV_ENGINE_CUDA_H
#define KV_ENGINE_CUDA_H

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "engine_internal.h"

#define CU_GRAPH_BUCKETS 7        /* decode graphs for batches of 1, 2, 4, ..., 64 rows */
#define CU_GRAPH_MAX_ROWS 64
#define CU_SPLIT_CLASSES 7        /* decode attention cut in 1, 2, 4, ..., 64 pieces */
#define CU_BLAS_WS_BYTES ((size_t)32 << 20)

/* wqkv is [wq; wk; wv] and w_gu [w_gate; w_up], back to back in memory, so that each is
 * one GEMM: at decode's few rows a projection is a weight read, and three or two small
 * ones leave more of the bandwidth unused than one large one. */
typedef struct cu_layer {
    void *attn_norm, *wqkv, *wo, *mlp_norm, *w_gu, *w_down;
} cu_layer;

/* A layer's projections, for the choice of GEMM kernel (engine_cuda_gemv.c). */
typedef enum { CU_PROJ_QKV = 0, CU_PROJ_O, CU_PROJ_GU, CU_PROJ_DOWN, CU_PROJ_COUNT } cu_proj;

typedef struct cu_engine {
    int device, n_sms;
    kv_cuda_dtype dt;
    size_t es;                    /* bytes per weight / activation / KV value */
    cudaStream_t stream;
    void *blas, *blas_ws;
    /* Weights: one allocation. */
    void *w_mem;
    size_t w_bytes;
    void *embed, *final_norm, *lm_head;
    cu_layer *layers;
    float *inv_freq;              /* RoPE frequencies, f32, from kc_rope_inv_freq */
    void *kv_mem;                 /* the KV pool's memory (e->pool keeps the bookkeeping) */
    /* Activations for cap_rows rows, one allocation. */
    int cap_rows;
    void *a_mem;
    void *x, *xb, *q, *k, *v, *att, *hb;
    void *gu;                     /* fused projections' output: [q|k|v] rows, then [gate|up] rows */
    /* Logits (f32) for logit_rows rows; decode attention workspace for dec_rows rows. */
    float *logits;
    int logit_rows;
    int dec_rows;
    void *attn_ws;
    size_t attn_ws_bytes;
    /* Per-call inputs: device block [tokens | positions | lengths][cap_rows] + block tables
     * [dec_rows][table_stride], uploaded from its pinned host twin. The graphs read them
     * in place, so they live at fixed addresses until a capacity change. */
    int32_t *d_in, *h_in;
    int table_stride;             /* blocks of a full context */
    cudaEvent_t in_read;          /* the last upload from h_in is done */
    /* Device sampling for dec_rows rows: [params | picked ids], device and pinned host. */
    void *d_smp, *h_smp;
    /* Logprobs of decode rows that ask (kv_cuda_logprobs), for lp_rows rows, device and
     * pinned host: [rows][kv_cuda_logprob_row] then [rows] int32 top counts. Allocated at
     * the first step that asks: nothing when no request wants logprobs. */
    void *d_lp, *h_lp;
    int lp_rows;
    /* A row the device leaves to the host (KV_CUDA_SAMPLE_ON_HOST): its logits and
     * kc_sample's scratch, vocab entries each, allocated at the first such row. */
    float *host_row;
    kc_prob_id *host_cands;
    /* Per projection: steps of up to this many rows use kv_cuda_gemv, more use cuBLAS. */
    int gemv_rows[CU_PROJ_COUNT];
    /* Decode graphs, [bucket][split class]; NULL = not captured yet. */
    int graphs_on;
    cudaGraphExec_t graphs[CU_GRAPH_BUCKETS][CU_SPLIT_CLASSES];
} cu_engine;

static inline cu_engine *cu_of(kv_engine *e) { return (cu_engine *)e->backend; }

/* A failed CUDA runtime call as a kv_err (KV_ENOMEM for allocation failures, else KV_EIO). */
int cu_fail(kv_err *err, cudaError_t e, const char *call, const char *file, int line);
#define CU_CHECK(call)                                                    \
    do {                                                                  \
        cudaError_t cu_e_ = (call);                                       \
        if (cu_e_ != cudaSuccess)                                         \
            return cu_fail(err, cu_e_, #call, __FILE__, __LINE__);        \
    } while (0)
/* A kv_cuda_* launcher (its message is already in err). */
#define KC_CHECK(call)                                                    \
    do {                                                                  \
        int kc_rc_ = (call);                                              \
        if (kc_rc_)                                                       \
            return kc_rc_;                                                \
    } while (0)

/* engine_cuda.c: makes room for `rows` activation rows, dec_rows decode sequences (block
 * tables, attention workspace) and logit_rows logit rows. A reallocation drops every
 * decode graph, whose addresses it invalidates. */
int cu_ensure_capacity(kv_engine *e, int rows, int dec_rows, int logit_rows, kv_err *err);
/* Room for n rows of decode logprobs (d_lp / h_lp). */
int cu_ensure_logprobs(cu_engine *c, int n, kv_err *err);
static inline int32_t *cu_lp_top(const cu_engine *c, void *base)
{
    return (int32_t *)((kv_cuda_logprob_row *)base + c->lp_rows);
}
/* Device / pinned-host addresses of the input arrays inside d_in / h_in. */
static inline int32_t *cu_in_tokens(const cu_engine *c, int32_t *base) { (void)c; return base; }
static inline int32_t *cu_in_pos(const cu_engine *c, int32_t *base) { return base + c->cap_rows; }
static inline int32_t *cu_in_lens(const cu_engine *c, int32_t *base) { return base + 2 * (size_t)c->cap_rows; }
static inline int32_t *cu_in_tables(const cu_engine *c, int32_t *base) { return base + 3 * (size_t)c->cap_rows; }
/* The sampling parameters and the picked ids inside d_smp / h_smp. */
static inline kv_cuda_sample_params *cu_smp_params(void *base) { return (kv_cuda_sample_params *)base; }
static inline int32_t *cu_smp_ids(const cu_engine *c, void *base)
{
    return (int32_t *)(cu_smp_params(base) + c->dec_rows);
}

/* engine_cuda_forward.c */
typedef struct cu_step {
    int rows;
    int start;          /* prefill: position of row 0; -1 for a decode step */
    int n_splits;       /* decode: pieces of each sequence's keys */
    int logit_first, logit_rows; /* rows of the final hidden state to turn into logits */
} cu_step;
/* The whole forward for the inputs already in d_in: enqueued, not waited for. */
int cu_forward(kv_engine *e, const cu_step *st, kv_err *err);
int cu_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int rows, float *logits, kv_logits_want want,
               kv_err *err);
int cu_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, float *logits, kv_err *err);
int cu_decode_sample(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n, const kv_sample_row *rows,
                     const int *lp_top, kc_logprobs *lp, int32_t *next, kv_err *err);

/* engine_cuda_gemv.c */
/* Times the own GEMV against cuBLAS on the model's weights and fills gemv_rows (bf16 only;
 * KVSERVE_GEMV=own|cublas forces the choice). */
int cu_gemv_choose(kv_engine *e, kv_err *err);
/* y[rows][n] = x[rows][k] . w[n][k]^T on the engine's stream by the kernel chosen for p. */
int cu_project(cu_engine *c, cu_proj p, void *y, const void *x, const void *w, int rows, int n, int k, kv_err *err);

/* engine_cuda_graph.c */
/* Runs the decode step of `rows` rows (a bucket size) with n_splits through its graph,
 * capturing it the first time. Returns 1 when the graph ran, 0 when graphs are off or the
 * capture failed (then graphs stay off: the caller runs cu_forward), < 0 on a CUDA error. */
int cu_graph_run(kv_engine *e, const cu_step *st, kv_err *err);
void cu_graphs_clear(cu_engine *c);
/* Bucket index of n rows (smallest power of two >= n), or -1 above CU_GRAPH_MAX_ROWS. */
int cu_bucket_of(int n);

#endif
