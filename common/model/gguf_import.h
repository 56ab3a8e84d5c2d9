/* Converts a llama-family GGUF (general.architecture "llama") into a HuggingFace model
 * directory the rest of kvserve loads:
 *   config.json            LlamaForCausalLM hyper-parameters from the llama.* metadata
 *   model.safetensors      every tensor under its HF name, dequantized (kv_type traits) to
 *                          f32, bf16 or f16, with llama.cpp's Q/K row permutation undone
 *   tokenizer.json         built from tokenizer.ggml.* (byte-level BPE for "gpt2", SentencePiece
 *                          BPE with byte fallback for "llama"), as HF writes that family's file
 *   tokenizer_config.json  chat template, special token strings, add_bos/add_eos
 *
 * All or nothing: everything is built in a temporary sibling of DIR and renamed to DIR at
 * the end; on any failure the temporary directory is removed and DIR is as it was. A
 * non-empty DIR is refused unless force (then it is replaced, if it holds only files). */
#ifndef KV_GGUF_IMPORT_H
#define KV_GGUF_IMPORT_H

#include <stdio.h>

#include "kv_err.h"
#include "safetensors.h" /* kv_dtype */

typedef struct kv_gguf_import_options {
    const char *gguf_path;
    const char *out_dir;   /* its parent must exist */
    kv_dtype dtype;        /* of the written weights: KV_DTYPE_F32 / BF16 / F16 */
    int force;             /* replace a non-empty out_dir */
    FILE *progress;        /* progress and the summary line; NULL: silent */
} kv_gguf_import_options;

/* Returns 0; KV_EINVAL for bad options; KV_ESTATE when out_dir is not empty and force is
 * off; KV_EFORMAT / KV_EUNSUPPORTED for a file it cannot convert (the message names the file,
 * key or tensor); KV_EIO for the file system. */
int kv_gguf_import(const kv_gguf_import_options *opt, kv_err *err);

#endif
