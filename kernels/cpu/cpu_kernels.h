/* CPU compute kernels (float32). These are the reference twins the CUDA kernels are
 * tested against, and the CPU backend's hot loops (OpenMP threads + AVX2/FMA).
 * Matrices are row-major; a weight w[n][k] is a HF Linear weight [out, in]. */
#ifndef KV_CPU_KERNELS_H
#define KV_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* y[m][n] = x[m][k] . w[n][k]^T. Small m (decode) streams w once through a threaded
 * GEMV; large m (prefill) goes to OpenBLAS sgemm. */
void kc_matmul(float *y, const float *x, const float *w, int m, int n, int k);
/* The GEMV path alone, for any m: batch-invariant (row i's result does not depend on m or
 * on the other rows), which is what decode uses. */
void kc_matmul_gemv(float *y, const float *x, const float *w, int m, int n, int k);

void kc_rmsnorm(float *out, const float *x, const float *weight, int rows, int dim, float eps);
void kc_embed(float *out, const float *table, const int32_t *tokens, int n, int dim);
/* out[i] = silu(gate[i]) * up[i] */
void kc_swiglu(float *out, const float *gate, const float *up, size_t n);
/* kc_swiglu on the fused gate/up projection: gu[rows][2 ff] holds each row's gate then its
 * up; out[rows][ff] (twin of kv_cuda_swiglu_rows). */
void kc_swiglu_rows(float *out, const float *gu, int rows, int ff);
void kc_add(float *x, const float *y, size_t n);

/* RoPE frequencies for head_dim (with rope scaling already applied by the caller's
 * config): inv_freq[head_dim/2]. */
typedef struct kc_rope_params {
    int head_dim;
    float theta;
    int scaling;      /* 0 none, 1 linear, 2 llama3 (see model_config.h) */
    float factor, low_freq_factor, high_freq_factor;
    int original_max_position;
} kc_rope_params;
void kc_rope_inv_freq(float *inv_freq, const kc_rope_params *p);
/* HF rotate-half RoPE, in place, on x[n_tokens][n_heads][head_dim] at positions pos[]. */
void kc_rope(float *x, int n_tokens, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq);

/* The fused Q/K/V projection's rows qkv[n_tokens][(n_heads + 2 n_kv_heads) * head_dim]
 * (q, then k, then v) split into q, k, v with RoPE on q and k: exactly the copies followed
 * by kc_rope on q and on k (twin of kv_cuda_qkv_rope). */
void kc_qkv_rope(float *q, float *k, float *v, const float *qkv, int n_tokens, int n_heads, int n_kv_heads,
                 int head_dim, const int32_t *pos, const float *inv_freq);

/* One layer of a paged KV pool: K rows of block b at pool + b*block_stride, V rows at
 * + v_offset; each row is n_kv_heads*head_dim floats, block_size rows per block. */
typedef struct kc_paged_kv {
    float *pool;
    size_t block_stride;
    size_t v_offset;
    int block_size;
    int n_kv_heads;
    int head_dim;
} kc_paged_kv;

/* Stores K/V rows of n tokens at positions start..start+n-1 of a sequence. */
void kc_kv_write(const kc_paged_kv *kv, const int32_t *block_table, int start, int n, const float *k,
                 const float *v);

/* Causal attention for a chunk of one sequence: n queries at positions start..start+n-1,
 * each attending to positions 0..its own (cached prefix + chunk, already in the pool).
 * q, out: [n][n_heads][head_dim]. GQA: head h reads kv head h / (n_heads / n_kv_heads). */
void kc_attention_prefill(float *out, const float *q, const kc_paged_kv *kv, const int32_t *block_table,
                          int start, int n, int n_heads);

/* Decode attention: one query per sequence; sequence s attends to seq_lens[s] positions
 * through block_tables[s]. q, out: [n_seqs][n_heads][head_dim]. */
void kc_attention_decode(float *out, const float *q, const kc_paged_kv *kv, const int32_t *const *block_tables,
                         const int32_t *seq_lens, int n_seqs, int n_heads);

/* The same, for (sequence, head) pairs [pair_begin, pair_end) of n_seqs x n_heads (pair
 * s * n_heads + h), computed by the calling thread alone: for a caller that already runs a
 * parallel region and splits the pairs itself. scores: room for seq_lens[s] floats. Each
 * pair's arithmetic is kc_attention_decode's, bit for bit. */
void kc_attention_decode_pairs(float *out, const float *q, const kc_paged_kv *kv, const int32_t *const *block_tables,
                               const int32_t *seq_lens, int n_heads, int pair_begin, int pair_end, float *scores);

/* Index of the largest value (lowest index on ties; NaN never wins, an all-NaN row gives 0). */
int kc_argmax(const float *x, int n);

/* Next-token choice (kv_cuda_sample is its twin; common/engine/sampler.c draws u):
 * temperature 0 = the argmax (so is a temperature whose reciprocal overflows, a row whose max
 * is +-inf, and a one-token vocabulary); else p_i = exp((x_i - max) / temperature), cut to the top_k
 * most likely (0 = off), then to the shortest most-likely-first prefix whose mass reaches
 * top_p of the kept mass (1 = off), and the token where u (in [0, 1)) times the kept mass
 * falls in the cumulative sum. cands: scratch of vocab entries (unused when greedy). */
typedef struct kc_sample_params {
    float temperature;
    int top_k;
    float top_p;
} kc_sample_params;
typedef struct kc_prob_id {
    float p;
    int32_t id;
} kc_prob_id;
int32_t kc_sample(const float *logits, int vocab, const kc_sample_params *sp, float u, kc_prob_id *cands);
/* kc_sample's candidates (when it is not the argmax): returns their count n, 0 when the
 * row's max is not finite (no weight is a number: kc_sample takes the argmax); cands[0..n)
 * holds them, most likely first when top-k or top-p cut the vocabulary (else in id order),
 * and *mass their summed weight. */
int kc_sample_candidates(const float *logits, int vocab, const kc_sample_params *sp, kc_prob_id *cands,
                         double *mass);
/* 1 when the pick needs no sorted candidate list longer than cap: greedy, the whole
 * vocabulary, a top_k <= cap, or (top-p alone) a nucleus of <= cap tokens. A device with
 * room for cap candidates leaves the other rows to the host (KV_CUDA_SAMPLE_ON_HOST). */
int kc_sample_fits(const float *logits, int vocab, const kc_sample_params *sp, int cap, kc_prob_id *cands);

/* Log-probabilities under the full-vocabulary log-softmax of the raw logits (before any
 * temperature, top-k or top-p: vLLM's default "raw logprobs"), as OpenAI's `logprobs`
 * report them (kv_cuda_logprobs is its twin). The log-sum-exp accumulates in double:
 * lse = max + log(sum exp(x_i - max)); logprob_i = x_i - lse, rounded to float once.
 * A NaN logit counts as -inf (it is never a top alternative); a row with no finite
 * maximum (all -inf or NaN, or a +inf) gives NaN logprobs. */
#define KC_LOGPROBS_TOP_MAX 20
typedef struct kc_logprobs {
    float logprob;                          /* of the token (NaN when the token is outside the row) */
    int32_t n_top;                          /* top alternatives below, most likely first */
    int32_t top_ids[KC_LOGPROBS_TOP_MAX];   /* ties by lowest id, as kc_argmax */
    float top_logprobs[KC_LOGPROBS_TOP_MAX];
} kc_logprobs;
/* The row's log-sum-exp (double), +inf/NaN as above. */
double kc_logsumexp(const float *logits, int vocab);
/* token's logprob and the n_top (clamped to [0, KC_LOGPROBS_TOP_MAX] and vocab) largest. */
void kc_logprobs_row(const float *logits, int vocab, int32_t token, int n_top, kc_logprobs *out);

/* Checksum of a KV block as the GPU transports verify it (kv_cuda_block_hash is its twin):
 * the sum mod 2^32 of fmix32(w[i] ^ i * 0x9E3779B9) over the block's 32-bit little-endian
 * words w[i] (a tail of 1-3 bytes is zero-padded into a last word), then fmix32 of that
 * sum plus the word count. A sum of per-word terms is order-free, so a GPU reduces it in
 * any order and gets the same bits; fmix32 is a bijection, so a change to any one word
 * always changes the sum, and the index in each term catches moved words. */
uint32_t kc_block_hash(const void *data, size_t bytes);

#endif
