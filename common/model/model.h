/* A loaded Llama-family model: validated config + weights in the format they are stored in
 * (kv_weight), never expanded unless asked:
 *   - an HF directory (config.json + model.safetensors or an indexed set of shards): f32, f16
 *     and bf16 tensors used in place from the mapping (an f32 tensor not 4-byte aligned in
 *     its file is copied);
 *   - a GGUF file (a path ending in ".gguf"): config from its llama.* metadata (the
 *     config.json `kvctl model import` writes), tensors used in place in their block format
 *     from the mapping; only the Q and K projections are copied, their rows put back in HF
 *     order (llama.cpp permutes them for its interleaved RoPE; blocks never cross rows).
 * Norm vectors are always f32. kv_model_load_opts converts matrices at load when asked
 * (--weights-dtype): every matrix to one type, or each to the type the same matrix has in
 * another model (types_like). */
#ifndef KV_MODEL_H
#define KV_MODEL_H

#include <stddef.h>

#include "kv_err.h"
#include "kv_type.h"
#include "model_config.h"
#include "weight.h"

typedef struct kv_layer_weights {
    const float *attn_norm; /* [hidden] */
    kv_weight wq;           /* [n_heads*head_dim, hidden] */
    kv_weight wk;           /* [n_kv_heads*head_dim, hidden]; empty (NULL, 0 rows) in a layer that
                             * shares an earlier layer's K/V (cfg.cla_share: a checkpoint holding
                             * k_proj/v_proj there is refused) */
    kv_weight wv;           /* [n_kv_heads*head_dim, hidden]; empty where wk is */
    kv_weight wo;           /* [hidden, n_heads*head_dim] */
    const float *mlp_norm;  /* [hidden] */
    kv_weight w_gate;       /* [intermediate, hidden] */
    kv_weight w_up;         /* [intermediate, hidden] */
    kv_weight w_down;       /* [hidden, intermediate] */
} kv_layer_weights;

typedef struct kv_model_files kv_model_files;

typedef struct kv_model {
    kv_model_config cfg;
    kv_weight embed;         /* [vocab, hidden]: rows gathered, not streamed */
    const float *final_norm; /* [hidden] */
    kv_weight lm_head;       /* [vocab, hidden]; lm_head.data == embed.data when tied */
    kv_layer_weights *layers;
    size_t weight_bytes;     /* bytes a full forward streams, in their formats (embedding excluded) */
    size_t type_bytes[KV_TYPE_COUNT]; /* resident weight bytes by type, each tensor once */
    char weight_types[64];   /* the formats present, most bytes first: "q4_1+q8_0+f32" */
    kv_model_files *files;   /* mappings and converted buffers (private) */
} kv_model;

typedef struct kv_model_load_options {
    int weights_type;            /* -1: as stored; else a kv_type every matrix is converted to.
                                  * A matrix whose rows are not whole blocks of it becomes f16
                                  * (llama.cpp's fallback), or stays f16/bf16 when stored so. */
    const kv_model *types_like;  /* NULL, or a model of the same shapes: each matrix converted to
                                  * the type the same matrix has there (norms stay f32) */
    int layout_only;             /* 1: shapes, types and byte counts only (kvctl capacity): nothing
                                  * converted or copied, so the weights must not be computed with */
} kv_model_load_options;

void kv_model_load_options_default(kv_model_load_options *o);
/* Loads PATH (a model directory or a .gguf file), weights as stored. Errors name the file
 * and tensor at fault. */
int kv_model_load(const char *path, kv_model **out, kv_err *err);
int kv_model_load_opts(const char *path, const kv_model_load_options *o, kv_model **out, kv_err *err);
void kv_model_free(kv_model *m);
/* 1 when w's bytes are the model's file, mapped (0: a buffer the model owns, converted or
 * reordered at load). */
int kv_model_weight_mapped(const kv_model *m, const kv_weight *w);
/* The caller holds its own copy of w (the CPU engine's weight arena) and will not read w's
 * bytes soon: their pages, when mapped from the model's file, go back to the OS (read from
 * the file again if touched), so resident memory counts the copy only. Memory the model
 * owns is left as it is. */
void kv_model_release_weight(const kv_model *m, const kv_weight *w);

/* 1 when path names a GGUF file (ends in ".gguf") rather than a model directory. */
int kv_model_path_is_gguf(const char *path);
/* --weights-dtype: "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1" (the types
 * with a quantizer) into *type; anything else is KV_EINVAL naming the choices. */
int kv_weights_type_parse(const char *s, int *type, kv_err *err);

#endif
