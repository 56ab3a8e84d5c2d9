#include "synth_weights.h"

#define KV_GOLDEN_GAMMA 0x9e3779b97f4a7c15ull

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kv_synth_rng_init(kv_synth_rng *r, uint64_t seed, const char *tensor_name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the name, then mixed with the seed */
    for (const unsigned char *p = (const unsigned char *)tensor_name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    r->key = mix64(h ^ mix64(seed + KV_GOLDEN_GAMMA));
}

void kv_synth_fill_uniform(const kv_synth_rng *r, uint64_t first, float *dst, size_t n,
                           float center, float amplitude)
{
    /* 24 random bits per value: u in [0, 1) exactly representable, then scaled. */
    const float scale = 2.0f * amplitude * 0x1p-24f, lo = center - amplitude;
    uint64_t pair = first / 2;
    size_t k = 0;
    for (; k + 2 <= n; k += 2, pair++) {
        uint64_t z = mix64(r->key + (pair + 1) * KV_GOLDEN_GAMMA);
        dst[k] = lo + (float)(uint32_t)((z >> 8) & 0xffffff) * scale;
        dst[k + 1] = lo + (float)(uint32_t)(z >> 40) * scale;
    }
    if (k < n) {
        uint64_t z = mix64(r->key + (pair + 1) * KV_GOLDEN_GAMMA);
        dst[k] = lo + (float)(uint32_t)((z >> 8) & 0xffffff) * scale;
    }
}
