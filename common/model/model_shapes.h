/* The shapes of real Llama-family models (their config.json values), for writing synthetic
 * models of the same size: speed does not depend on the weights' values. */
#ifndef KV_MODEL_SHAPES_H
#define KV_MODEL_SHAPES_H

#include <stddef.h>

typedef struct kv_model_shape {
    const char *name;          /* "llama3-8b", ... */
    const char *description;   /* one line for --help */
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size;
    int max_position;
    double rms_eps;            /* double: config.json shows 1e-05, not float's 9.99999975e-06 */
    double rope_theta;
    int rope_llama3;           /* rope_scaling {"rope_type":"llama3", ...} below, else null */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position;
    int tie_embeddings;
    int bos_id, eos_id;        /* -1: the synthetic tokenizer's own special ids */
} kv_model_shape;

/* The shape called name, or NULL. */
const kv_model_shape *kv_model_shape_find(const char *name);
/* Table access for listing: index 0 .. kv_model_shape_count()-1. */
size_t kv_model_shape_count(void);
const kv_model_shape *kv_model_shape_at(size_t i);
/* "llama2-7b, llama3-8b, ..." into out (for error messages); truncates to cap. */
void kv_model_shape_names(char *out, size_t cap);

#endif
