/* Private to the GGUF importer (gguf_import.c, gguf_hfconfig.c, gguf_tokenizer.c,
 * gguf_merges.c): the llama hyper-parameters read once, and the JSON documents built from
 * them. Each builder appends a whole document to a kv_textbuf, which the caller checks. */
#ifndef KV_GGUF_IMPORT_INTERNAL_H
#define KV_GGUF_IMPORT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "kv_err.h"
#include "kv_textbuf.h"
#include "safetensors.h"

/* From the llama.* and tokenizer.ggml.* metadata and the tensor shapes, validated. */
typedef struct gguf_llama {
    int hidden, intermediate, layers, heads, kv_heads, head_dim;
    int head_dim_given;    /* llama.attention.key_length was in the file */
    int vocab;             /* rows of token_embd.weight */
    int context;           /* llama.context_length */
    float rms_eps, rope_theta;
    int rope_linear;       /* llama.rope.scaling.type "linear" */
    float rope_factor;
    int tied;              /* no output.weight: lm_head is the embedding */
    int64_t bos, eos, unk, pad; /* token ids, -1 when absent */
} gguf_llama;

int gguf_llama_read(const kv_gguf *g, gguf_llama *hp, kv_err *err);

/* HF's torch_dtype name of a safetensors dtype ("float32", "bfloat16", "float16"). */
const char *gguf_torch_dtype(kv_dtype dtype);

void gguf_config_json(const gguf_llama *hp, kv_dtype dtype, kv_textbuf *out);
/* The GGUF row holding HF row r of a Q/K projection of `rows` rows over `heads` heads (0: no
 * permutation), undoing llama.cpp's interleaved-RoPE order (also used by the direct loader). */
uint64_t gguf_source_row(uint64_t r, uint64_t rows, int heads);
int gguf_tokenizer_config_json(const kv_gguf *g, const gguf_llama *hp, kv_textbuf *out, kv_err *err);
int gguf_tokenizer_json(const kv_gguf *g, kv_textbuf *out, kv_err *err);

/* A float that reads back as a JSON float (always a '.' or an exponent), shortest form that
 * round-trips through float. */
void gguf_json_float(kv_textbuf *b, float v);

/* ---- SentencePiece merges (gguf_merges.c) ---- */

/* A vocabulary: tokens[i] is id i. Lookups find the last id of a token spelled twice (as a
 * Python dict built from the list would). */
typedef struct gguf_vocab gguf_vocab;

int gguf_vocab_build(const kv_gguf_str *tokens, size_t n, gguf_vocab **out, kv_err *err);
void gguf_vocab_free(gguf_vocab *v);
/* Id of s[0..len), or -1. */
int64_t gguf_vocab_find(const gguf_vocab *v, const char *s, size_t len);
/* Whether id i is the id its spelling maps to (false for all but the last of duplicates). */
int gguf_vocab_is_canonical(const gguf_vocab *v, size_t i);

typedef struct gguf_merge {
    uint32_t token;           /* the merged token's id */
    uint32_t split;           /* byte length of the left piece */
} gguf_merge;

/* The merges a SentencePiece vocabulary implies, in HF transformers' order
 * (tokenization_utils_base.generate_merges with scores): every split of every token into two
 * vocabulary tokens, best score first, then longer left piece, longer right piece, and
 * vocabulary order. *out is malloc'd. */
int gguf_spm_merges(const kv_gguf_str *tokens, const float *scores, size_t n, const gguf_vocab *v,
                    gguf_merge **out, size_t *n_out, kv_err *err);

#endif
