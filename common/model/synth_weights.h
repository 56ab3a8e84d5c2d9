/* Private to the synthetic-model writer: the deterministic weight values.
 * A tensor's values depend only on (seed, tensor name, element index): not on the chunking,
 * the dtype, or the other tensors, so `--layers 2` reproduces layer 0 and 1 of the full
 * model and an f16 model is exactly the f32 model rounded. */
#ifndef KV_SYNTH_WEIGHTS_H
#define KV_SYNTH_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

/* SplitMix64 in counter form: value i = mix(key + (i + 1) * golden), so any element can be
 * generated independently (and the fill loop has no serial dependency). */
typedef struct kv_synth_rng {
    uint64_t key;
} kv_synth_rng;

void kv_synth_rng_init(kv_synth_rng *r, uint64_t seed, const char *tensor_name);

/* dst[k] = value of element first + k, uniform in [center - amplitude, center + amplitude).
 * first must be even (two values come from one 64-bit draw). */
void kv_synth_fill_uniform(const kv_synth_rng *r, uint64_t first, float *dst, size_t n,
                           float center, float amplitude);

#endif
