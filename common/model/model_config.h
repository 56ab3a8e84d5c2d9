/* A HuggingFace Llama-family config.json, validated. */
#ifndef KV_MODEL_CONFIG_H
#define KV_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

enum kv_rope_scaling { KV_ROPE_NONE = 0, KV_ROPE_LINEAR, KV_ROPE_LLAMA3 };

#define KV_MAX_EOS 8

typedef struct kv_model_config {
    int hidden_size;
    int intermediate_size;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab_size;
    int max_position;      /* max_position_embeddings: the context length */
    float rms_eps;
    float rope_theta;
    int rope_scaling;      /* enum kv_rope_scaling */
    float rope_factor;
    float rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_position;
    int tie_embeddings;
    int bos_id;            /* -1 when absent */
    int eos_ids[KV_MAX_EOS];
    int n_eos;
    int cla_share;         /* "cla_share_factor" F (cross-layer KV sharing): layer i attends with the
                            * K/V layer i - (i mod F) computed, and only those owner layers have
                            * k_proj/v_proj; 1 (or 0, a config not parsed here) = no sharing */
} kv_model_config;

/* Reads DIR/config.json, or for a path ending in .gguf the config.json its metadata implies
 * (model_gguf.h). Errors name the file and the offending key. */
int kv_model_config_load(const char *dir, kv_model_config *cfg, kv_err *err);
/* Same from an in-memory JSON text; `origin` names it in error messages. */
int kv_model_config_parse(const char *json, size_t len, const char *origin, kv_model_config *cfg,
                          kv_err *err);
int kv_model_config_is_eos(const kv_model_config *cfg, int token);
/* CRC-32C of DIR/config.json (a GGUF: of the config text it implies) as 8 lowercase hex digits (+ NUL): processes serving one
 * cluster must agree on it. */
int kv_model_fingerprint(const char *dir, char out[9], kv_err *err);
/* The layer whose K/V `layer` attends with (itself when it is an owner). */
static inline int kv_model_config_kv_owner(const kv_model_config *cfg, int layer)
{
    return cfg->cla_share > 1 ? layer - layer % cfg->cla_share : layer;
}
/* Owner layers: those with their own K/V (and k_proj/v_proj weights). */
static inline int kv_model_config_kv_layers(const kv_model_config *cfg)
{
    return cfg->cla_share > 1 ? (cfg->n_layers + cfg->cla_share - 1) / cfg->cla_share : cfg->n_layers;
}
/* Parameters of the checkpoint (embeddings counted once when tied). */
double kv_model_config_n_params(const kv_model_config *cfg);

#endif
