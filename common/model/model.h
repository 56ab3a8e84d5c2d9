/* A loaded Llama-family model: validated config + float32 weights for the CPU
 * engine (f32 checkpoints are used in place from the mmap; f16/bf16 are converted
 * once at load). */
#ifndef KV_MODEL_H
#define KV_MODEL_H

#include <stddef.h>

#include "kv_err.h"
#include "model_config.h"
#include "safetensors.h"

typedef struct kv_layer_weights {
    const float *attn_norm; /* [hidden] */
    const float *wq;        /* [n_heads*head_dim, hidden] */
    const float *wk;        /* [n_kv_heads*head_dim, hidden] */
    const float *wv;        /* [n_kv_heads*head_dim, hidden] */
    const float *wo;        /* [hidden, n_heads*head_dim] */
    const float *mlp_norm;  /* [hidden] */
    const float *w_gate;    /* [intermediate, hidden] */
    const float *w_up;      /* [intermediate, hidden] */
    const float *w_down;    /* [hidden, intermediate] */
} kv_layer_weights;

typedef struct kv_model_files kv_model_files;

typedef struct kv_model {
    kv_model_config cfg;
    kv_dtype checkpoint_dtype;
    const float *embed;      /* [vocab, hidden] */
    const float *final_norm; /* [hidden] */
    const float *lm_head;    /* [vocab, hidden]; == embed when tied */
    kv_layer_weights *layers;
    size_t weight_bytes;     /* bytes of f32 weights a full forward touches */
    kv_model_files *files;   /* mappings and converted buffers (private) */
} kv_model;

/* Loads DIR (config.json + model.safetensors or an indexed set of shards).
 * Errors name the file and tensor at fault. */
int kv_model_load(const char *dir, kv_model **out, kv_err *err);
void kv_model_free(kv_model *m);

#endif
