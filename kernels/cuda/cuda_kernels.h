/* CUDA kernels: the GPU twins of kernels/cpu (same math, same row-major layouts, same
 * paged KV layout), plus device-only pieces (split-KV decode, sampling, conversion).
 *
 * Every launch function takes device pointers and a cudaStream_t passed as `void *`
 * (NULL = the legacy default stream) so C callers need no CUDA headers. It checks its
 * arguments, enqueues work and returns 0 or a negative kv_code with the reason in err.
 * Launches are asynchronous: a fault inside a kernel surfaces at the next synchronising
 * call on that stream, not here. Activations, weights and the KV pool share one dtype per
 * call; every reduction accumulates in fp32; RoPE frequencies are always f32. */
#ifndef KV_CUDA_KERNELS_H
#define KV_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "kv_type.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kv_cuda_dtype {
    KV_CUDA_F32 = 0, /* exactness mode: matches the CPU kernels to ~1e-6 */
    KV_CUDA_BF16 = 1,
    KV_CUDA_F16 = 2,
} kv_cuda_dtype;

/* Bytes per element; 0 for an unknown dtype. */
size_t kv_cuda_dtype_size(kv_cuda_dtype dt);
const char *kv_cuda_dtype_name(kv_cuda_dtype dt);

/* ---- Devices ---------------------------------------------------------------------- */

/* Number of usable GPUs. No driver (error 35), no device (100) or a stub libcuda are not
 * errors: *n = 0, KV_OK, and err->msg says why (err->code stays KV_OK). */
int kv_cuda_device_count(int *n, kv_err *err);
/* Any output pointer may be NULL. */
int kv_cuda_device_info(int dev, char *name, size_t cap, size_t *mem_bytes, int *sm_major, int *sm_minor,
                        kv_err *err);
int kv_cuda_device_sm_count(int dev, int *n, kv_err *err);
/* The device's 16-byte UUID: tells two processes whether they hold the same GPU. */
int kv_cuda_device_uuid(int dev, unsigned char uuid[16], kv_err *err);

/* ---- KV transfer checks -------------------------------------------------------------- */

/* out[i] = kc_block_hash of the block_bytes bytes at base + blocks[i] * block_bytes, for
 * i < n. out (n uint32) and blocks (n int32) are device arrays; block_bytes a multiple of 16. */
int kv_cuda_block_hash(uint32_t *out, const void *base, size_t block_bytes, const int32_t *blocks, int n,
                       void *stream, kv_err *err);

/* ---- Elementwise, norms, RoPE (twins of elementwise.c / rope.c) ------------------- */

/* out[i] = table[tokens[i]]; a token outside [0, vocab) gives a NaN row, never a stray read. */
int kv_cuda_embed(void *out, const void *table, const int32_t *tokens, int n, int dim, int vocab, kv_cuda_dtype dt,
                  void *stream, kv_err *err);
/* out[r] = weight * x[r] / sqrt(mean(x[r]^2) + eps). One block per row. */
int kv_cuda_rmsnorm(void *out, const void *x, const void *weight, int rows, int dim, float eps, kv_cuda_dtype dt,
                    void *stream, kv_err *err);
/* x += y (stored in dt), then out = rmsnorm(x): the residual add and the next norm in one
 * pass. out may alias y (the engine's x += xb; xb = norm(x)), never x. */
int kv_cuda_add_rmsnorm(void *out, void *x, const void *y, const void *weight, int rows, int dim, float eps,
                        kv_cuda_dtype dt, void *stream, kv_err *err);
/* SwiGLU of the fused gate/up projection (twin of kc_swiglu_rows): gu[rows][2 ff], each
 * row's gate then its up; out[rows][ff]. */
int kv_cuda_swiglu_rows(void *out, const void *gu, int rows, int ff, kv_cuda_dtype dt, void *stream, kv_err *err);
/* The fused Q/K/V projection's rows split into q, k, v with HF rotate-half RoPE on q and k,
 * one pass (twin of kc_qkv_rope): qkv[n_tokens][(n_heads + 2 n_kv_heads) * head_dim]; pos
 * (device, int32) per token, inv_freq (device, f32) [head_dim/2] from kc_rope_inv_freq.
 * head_dim even, <= 512. */
int kv_cuda_qkv_rope(void *q, void *k, void *v, const void *qkv, int n_tokens, int n_heads, int n_kv_heads,
                     int head_dim, const int32_t *pos, const float *inv_freq, kv_cuda_dtype dt, void *stream,
                     kv_err *err);

/* ---- Paged KV cache ----------------------------------------------------------------- */

/* One layer of a device KV pool, the layout of kc_paged_kv with offsets counted in
 * elements of dtype: K rows of block b at pool + b*block_stride, V rows at + v_offset,
 * block_size rows of n_kv_heads*head_dim values per block. */
typedef struct kv_cuda_paged_kv {
    void *pool;
    size_t block_stride;
    size_t v_offset;
    int block_size;
    int n_kv_heads;
    int head_dim;
    kv_cuda_dtype dtype;
} kv_cuda_paged_kv;

/* Stores the K/V rows of n tokens at positions start..start+n-1 of one sequence
 * (k, v: [n][n_kv_heads*head_dim]). block_table is a device array. */
int kv_cuda_kv_write(const kv_cuda_paged_kv *kv, const int32_t *block_table, int start, int n, const void *k,
                     const void *v, void *stream, kv_err *err);
/* Decode: one row per sequence; row i goes to positions[i] of the sequence whose table is
 * block_tables + i*table_stride. A negative position skips the row (batch padding). */
int kv_cuda_kv_write_decode(const kv_cuda_paged_kv *kv, const int32_t *block_tables, int table_stride,
                            const int32_t *positions, int n_seqs, const void *k, const void *v, void *stream,
                            kv_err *err);

/* ---- Attention ------------------------------------------------------------------------ */

/* Causal attention for a chunk of one sequence (twin of kc_attention_prefill): n queries at
 * positions start..start+n-1 attend to positions 0..own over the pool (the cached prefix and
 * the chunk's own K/V already written). q, out: [n][n_heads][head_dim]. head_dim even and
 * <= 256; bf16/f16 with head_dim 64 or 128 run on tensor cores, everything else on a plain
 * FMA kernel. */
int kv_cuda_attention_prefill(void *out, const void *q, const kv_cuda_paged_kv *kv, const int32_t *block_table,
                              int start, int n, int n_heads, void *stream, kv_err *err);

#define KV_CUDA_DECODE_MAX_SPLITS 64
/* How many pieces to cut each sequence's KV range into (Flash-Decoding): enough CTAs to
 * cover the GPU twice, never pieces shorter than 256 keys, at most
 * KV_CUDA_DECODE_MAX_SPLITS. max_seq_len is the longest seq_lens entry of the batch. */
int kv_cuda_decode_splits(int n_seqs, int n_heads, int n_kv_heads, int max_seq_len, int n_sms);
/* Scratch for kv_cuda_attention_decode with n_splits > 1 (0 when n_splits <= 1). */
size_t kv_cuda_decode_workspace_bytes(int n_seqs, int n_heads, int head_dim, int n_splits);
/* Decode attention (twin of kc_attention_decode): one query per sequence; sequence s
 * attends to its first seq_lens[s] positions through block_tables + s*table_stride (device
 * arrays). q, out: [n_seqs][n_heads][head_dim]. Any n_splits in 1..KV_CUDA_DECODE_MAX_SPLITS
 * gives the same result (up to rounding); workspace may be NULL when n_splits == 1. */
int kv_cuda_attention_decode(void *out, const void *q, const kv_cuda_paged_kv *kv, const int32_t *block_tables,
                             int table_stride, const int32_t *seq_lens, int n_seqs, int n_heads, int n_splits,
                             void *workspace, size_t workspace_bytes, void *stream, kv_err *err);

/* ---- Sampling ------------------------------------------------------------------------- */

/* ids[r] = index of the largest logit of row r (lowest index on ties, NaN never wins):
 * the twin of kc_argmax. */
int kv_cuda_argmax(int32_t *ids, const void *logits, int rows, int vocab, kv_cuda_dtype dt, void *stream,
                   kv_err *err);

#define KV_CUDA_TOPK_MAX 1024
/* The k largest logits of each row, largest first, ties by lowest id: vals[r][k] (f32),
 * ids[r][k]. 1 <= k <= min(vocab, KV_CUDA_TOPK_MAX). */
int kv_cuda_topk(float *vals, int32_t *ids, const void *logits, int rows, int vocab, int k, kv_cuda_dtype dt,
                 void *stream, kv_err *err);

/* Per-row sampling (a device array, one per row): the twin of kc_sample (kernels/cpu), the
 * same fields plus the row's draw u in [0, 1). Candidate lists hold at most
 * KV_CUDA_TOPK_MAX tokens: a row whose top_k is larger (and below the vocabulary), or whose
 * top-p nucleus without top-k needs more, gets KV_CUDA_SAMPLE_ON_HOST instead of an id, and
 * the caller picks it with kc_sample from the row's logits and the same u. Cutting such
 * rows (flat distributions at high temperature) to the cap would sample another
 * distribution than the CPU does. */
#define KV_CUDA_SAMPLE_ON_HOST (-1)
typedef struct kv_cuda_sample_params {
    float temperature;
    int32_t top_k;
    float top_p;
    float u;
} kv_cuda_sample_params;
int kv_cuda_sample(int32_t *ids, const void *logits, int rows, int vocab, kv_cuda_dtype dt,
                   const kv_cuda_sample_params *params, void *stream, kv_err *err);

/* Log-probabilities of row r's token tokens[r] and its n_top[r] (<= 20) most likely
 * alternatives under the full-vocabulary log-softmax of the raw logits: the twin of
 * kc_logprobs_row (kernels/cpu/logprobs.c), with the same layout (kc_logprobs). The
 * log-sum-exp accumulates in double; one block per row. Rows with n_top[r] < 0 are
 * skipped (out[r] untouched); a token outside [0, vocab) (KV_CUDA_SAMPLE_ON_HOST) gives a
 * NaN logprob. tokens, n_top and out are device arrays of rows entries. */
#define KV_CUDA_LOGPROBS_TOP_MAX 20
typedef struct kv_cuda_logprob_row {
    float logprob;
    int32_t n_top;
    int32_t top_ids[KV_CUDA_LOGPROBS_TOP_MAX];
    float top_logprobs[KV_CUDA_LOGPROBS_TOP_MAX];
} kv_cuda_logprob_row;
int kv_cuda_logprobs(kv_cuda_logprob_row *out, const void *logits, int rows, int vocab, kv_cuda_dtype dt,
                     const int32_t *tokens, const int32_t *n_top, void *stream, kv_err *err);

/* ---- GEMM (cuBLAS) ------------------------------------------------------------------ */

/* A cuBLAS handle (cublasHandle_t) behind a void pointer. */
int kv_cuda_blas_create(void **handle, kv_err *err);
void kv_cuda_blas_destroy(void *handle);
/* y[m][n] = x[m][k] . w[n][k]^T (twin of kc_matmul), fp32 accumulation. f32 runs in true
 * fp32 (TF32 off: the handle is set to CUBLAS_DEFAULT_MATH), bf16/f16 on tensor cores.
 * Runs on `stream` (the handle's stream is changed only when it differs). */
int kv_cuda_gemm(void *handle, void *y, const void *x, const void *w, int m, int n, int k, kv_cuda_dtype dt,
                 void *stream, kv_err *err);

/* kv_cuda_gemm with y stored as y_dt, which is dt or f32: the LM head turns bf16 x bf16
 * products into f32 logits without rounding them to bf16 first. */
int kv_cuda_gemm_out(void *handle, void *y, kv_cuda_dtype y_dt, const void *x, const void *w, int m, int n, int k,
                     kv_cuda_dtype dt, void *stream, kv_err *err);
/* The same product for decode's few rows, by an own memory-bound kernel (twin of
 * kc_matmul_gemv): bf16/f16 only, 1 <= m <= KV_CUDA_GEMV_MAX_ROWS, k a multiple of 8, x and w
 * 16-byte aligned (kv_cuda_gemv_fits says whether a call qualifies). Which of the two is
 * faster for a shape is measured, not assumed: the engine times both when it starts. */
#define KV_CUDA_GEMV_MAX_ROWS 4
int kv_cuda_gemv_fits(const void *x, const void *w, int m, int k, kv_cuda_dtype dt);
int kv_cuda_gemv(void *y, const void *x, const void *w, int m, int n, int k, kv_cuda_dtype dt, void *stream,
                 kv_err *err);
/* Decode's product on weights stored in a ggml block format (cuda_wgemv.cu; CPU twin
 * kernels/cpu/isa/scalar.c): y[m][n] = x[m][k] . W[n][k]^T, x and y f32, W n rows of k/32
 * blocks of q8_0, q4_0 or q4_1 (kv_type_bytes(wt, k) bytes a row, as in a GGUF file),
 * dequantized on the fly; f32 products and sums, so y is dequantize-then-f32 up to fp32
 * rounding. 1 <= m <= KV_CUDA_WGEMV_MAX_ROWS, k a multiple of 32, x 16-byte aligned.
 * KV_EUNSUPPORTED for another wt, KV_EINVAL for a shape or alignment it does not take. */
#define KV_CUDA_WGEMV_MAX_ROWS 8
int kv_cuda_wgemv(float *y, const float *x, const void *w, kv_type wt, int m, int n, int k, void *stream,
                  kv_err *err);
/* Sets the handle's stream and a caller-owned workspace for it (cuBLAS then allocates
 * nothing while running, which CUDA graph capture needs). The gemm calls above keep it as
 * long as they are given the same stream. */
int kv_cuda_blas_set_workspace(void *handle, void *stream, void *ws, size_t bytes, kv_err *err);

/* ---- Conversion --------------------------------------------------------------------- */

/* dst[i] = (dst_dt)src[i], round to nearest even (for loading f32 checkpoints as bf16). */
int kv_cuda_convert(void *dst, kv_cuda_dtype dst_dt, const void *src, kv_cuda_dtype src_dt, size_t n,
                    void *stream, kv_err *err);

#ifdef __cplusplus
}
#endif

#endif
