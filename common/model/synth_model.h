/* Writes a synthetic HuggingFace Llama model directory: random weights in the real format
 * and the real shapes (model_shapes.h), for benchmarks and demos.
 *   DIR/config.json, DIR/tokenizer.json (byte-level BPE, synth_tokenizer.h), and
 *   DIR/model.safetensors, or model-0000K-of-0000N.safetensors + model.safetensors.index.json
 *   when the weights exceed the shard size (as HF's save_pretrained does).
 * Weights are generated and written tensor by tensor in chunks: memory use is a few MB
 * whatever the model size. Files appear under their final names only when complete, and
 * config.json (what makes a directory look like a model) is written last; on failure
 * everything this call created is removed. */
#ifndef KV_SYNTH_MODEL_H
#define KV_SYNTH_MODEL_H

#include <stdint.h>
#include <stdio.h>

#include "kv_err.h"
#include "safetensors.h" /* kv_dtype */

typedef struct kv_synth_options {
    const char *shape;          /* a kv_model_shape name (required) */
    const char *out_dir;        /* created (with parents) if missing (required) */
    kv_dtype dtype;             /* KV_DTYPE_F32 / F16 / BF16 */
    uint64_t seed;              /* same seed, same bytes */
    int n_layers;               /* > 0: overrides the shape's layer count */
    int vocab_size;             /* > 0: overrides the shape's vocabulary (>= 258) */
    int cla_share;              /* > 1: cross-layer KV sharing factor F (config.json's
                                 * "cla_share_factor"); only layers i % F == 0 get k_proj/v_proj */
    uint64_t max_shard_bytes;   /* 0: 4 GiB; weights above it are split into shards */
    int force;                  /* replace a model already in out_dir (else refuse) */
    FILE *progress;             /* progress and summary lines; NULL: silent */
} kv_synth_options;

#define KV_SYNTH_DEFAULT_SHARD_BYTES (UINT64_C(4) << 30)
#define KV_SYNTH_MAX_LAYERS 1024
#define KV_SYNTH_MAX_VOCAB (1 << 22)

/* Returns 0, KV_EINVAL for bad options (unknown shape, vocab too small, ...), or a runtime
 * error code (KV_EIO for unwritable dir / full disk, KV_ESTATE when out_dir already holds a
 * model and force is off). */
int kv_synth_model_write(const kv_synth_options *opt, kv_err *err);

#endif
