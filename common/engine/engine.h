/* The forward pass over a paged KV cache, with two distinct paths:
 *   prefill — a chunk of prompt tokens of one sequence at once (GEMM), writing their K/V;
 *   decode  — one new token for each of a batch of sequences of different lengths (GEMV),
 *             attention reading K/V from the blocks.
 * K/V of a cached token is never recomputed. */
#ifndef KV_ENGINE_H
#define KV_ENGINE_H

#include <stdint.h>

#include "kv_err.h"
#include "kv_layout.h"
#include "kv_pool.h"
#include "model.h"
#include "sampler.h"

typedef enum { KV_PRECISION_F32 = 0, KV_PRECISION_BF16 } kv_precision;

typedef struct kv_engine_options {
    int device;          /* -1 = CPU (default); N >= 0 = cuda:N */
    kv_precision precision; /* weights, activations and KV: f32 (CPU; the GPU's exactness mode) or bf16 (GPU) */
    int block_size;      /* tokens per KV block (default 16) */
    int32_t n_blocks;    /* pool size in blocks; 0 = from kv_bytes */
    size_t kv_bytes;     /* pool size in bytes when n_blocks is 0; 0 = room for 4 full contexts */
    int prefill_chunk;   /* max tokens per prefill forward (default 512); never changes results */
    int max_batch;       /* GPU: decode rows given buffers at creation (0 = 64). A larger batch
                          * reallocates them later, and cudaFree waits for the whole device
                          * (NCCL receives waiting on a peer included) */
    int n_threads;       /* 0 = all cores */
    /* What sealed KV blocks hold (kv_layout.h). The CPU engine: f32 (default) or
     * int8/int4/int2, whose newest kv_residual tokens (rounded up to whole blocks; 0 = one
     * block) stay f32 in staging blocks beside the pool; a block is quantized once, when its
     * last token is written. */
    kv_cache_dtype kv_dtype;
    int kv_residual;
    int kv_group;        /* channels per value group; 0 = 32 (or head_dim when smaller) */
    kv_key_mode kv_keys; /* keys per channel (default) or per token */
} kv_engine_options;

/* An engine is used by one thread at a time. device >= 0 runs the CUDA backend (CUDA builds):
 * weights uploaded once, KV pool in GPU memory, logits returned to the host as f32 (or
 * tokens picked on the device: kv_engine_decode_sample);
 * its decode steps run as CUDA graphs unless KVSERVE_CUDA_GRAPHS=0 is set at creation. */
typedef struct kv_engine kv_engine;

void kv_engine_options_default(kv_engine_options *o);
int kv_engine_create(const kv_model *model, const kv_engine_options *o, kv_engine **out, kv_err *err);
void kv_engine_free(kv_engine *e);
/* Block bookkeeping (free list, refcounts). Its data pointer is host memory only on the
 * CPU: use the block functions below to move KV bytes. */
kv_pool *kv_engine_pool(kv_engine *e);
const kv_model *kv_engine_model(const kv_engine *e);
int kv_engine_device(const kv_engine *e);              /* -1 = CPU */
const char *kv_engine_kv_dtype(const kv_engine *e);    /* "f32" | "bf16" | "int8" ...: what a block holds */
/* The layout of this engine's blocks (kv_layout.h): what a block holds and ships. */
const kv_layout *kv_engine_kv_layout(const kv_engine *e);
size_t kv_engine_block_bytes(const kv_engine *e);      /* one block, all layers, K and V */
/* The instruction set whose weight kernels the CPU engine runs ("scalar", "avx2", "avx512":
 * kernels/cpu/wkernels.h); NULL for a GPU engine. */
const char *kv_engine_cpu_isa(const kv_engine *e);
/* The kernel layouts the CPU engine repacked matrices into at load ("q4_0x8"; "" for none,
 * NULL for a GPU engine): weights served as stored otherwise. */
const char *kv_engine_cpu_layouts(const kv_engine *e);

/* Whole blocks between the pool (host or GPU memory) and host buffers of n * block_bytes:
 * what the ZeroMQ transport ships. */
int kv_engine_blocks_read(kv_engine *e, const int32_t *blocks, int n, void *dst, kv_err *err);
int kv_engine_blocks_write(kv_engine *e, const int32_t *blocks, int n, const void *src, kv_err *err);
/* Address of a block in the pool's own memory (host or device): for zero-copy sends on the
 * CPU and for GPU transports (CUDA IPC, NCCL). */
void *kv_engine_block_ptr(kv_engine *e, int32_t block);

/* 1 when s is a device name kv_engine_parse_device accepts the form of ("cpu", "auto",
 * "cuda", "cuda:N"), whether or not that device is there. */
int kv_engine_device_name_valid(const char *s);

/* Parses "cpu", "auto" (CUDA device 0 when usable, else CPU with a warning) or "cuda:N"
 * into *device; a "cuda" request on a build or machine without CUDA is an error naming why. */
int kv_engine_parse_device(const char *s, int *device, kv_err *err);

/* Runs n tokens after the seq's cached ones (in chunks of prefill_chunk), reserving blocks
 * as needed. logits (may be NULL): vocab floats for the last token, or n x vocab when
 * all_logits. KV_EFULL when the context or the pool is full (nothing is computed then). */
int kv_engine_prefill(kv_engine *e, kv_seq *seq, const int32_t *tokens, int n, float *logits, int all_logits,
                      kv_err *err);

/* One token for each of n_seqs sequences (each at its own length); logits: n_seqs x vocab. */
int kv_engine_decode(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs, float *logits,
                     kv_err *err);

/* The same step, then each sequence's next token from its sampler (one draw each when not
 * greedy), into next[n_seqs]: what kv_sampler_sample would pick from the step's logits.
 * On a GPU the pick runs on the device (kv_cuda_sample, kc_sample's twin) and only the
 * token ids come back, not n_seqs x vocab logits. next may be tokens. */
int kv_engine_decode_sample(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs,
                            kv_sampler *const *samplers, int32_t *next, kv_err *err);
/* kv_engine_decode_sample that also reports log-probabilities: for each row i with
 * lp_top[i] >= 0, lp[i] = kc_logprobs_row of the step's raw logits for next[i] with
 * lp_top[i] (<= KC_LOGPROBS_TOP_MAX) top alternatives; on a GPU computed there
 * (kv_cuda_logprobs) and only the lp rows come back. Rows with lp_top[i] < 0, or lp_top
 * NULL, cost nothing (lp may then be NULL). */
int kv_engine_decode_sample_lp(kv_engine *e, kv_seq *const *seqs, const int32_t *tokens, int n_seqs,
                               kv_sampler *const *samplers, const int *lp_top, kc_logprobs *lp, int32_t *next,
                               kv_err *err);
/* kv_engine_prefill of tokens[0..n) that also scores the positions: for each i < n with
 * targets[i] >= 0, lp[i] = kc_logprobs_row of position i's logits (which predict the
 * token after it) for targets[i], with top_n alternatives (prompt logprobs: targets[i] =
 * tokens[i + 1]). last_logits (may be NULL): vocab floats of position n - 1. Runs in
 * pieces of prefill_chunk rows with a scratch of that many rows of logits. */
int kv_engine_prefill_logprobs(kv_engine *e, kv_seq *seq, const int32_t *tokens, int n, const int32_t *targets,
                               int top_n, kc_logprobs *lp, float *last_logits, kv_err *err);
/* How many of those picks a GPU left to the host: rows whose top-k, or top-p nucleus, is
 * longer than the device's candidate list (KV_CUDA_TOPK_MAX). 0 on the CPU. */
uint64_t kv_engine_host_picks(const kv_engine *e);

#endif
