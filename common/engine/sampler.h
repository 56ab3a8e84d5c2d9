/* Next-token sampling: greedy (temperature 0), or temperature + top-k + top-p with a
 * seeded generator owned by the sampler (same seed, same tokens). */
#ifndef KV_SAMPLER_H
#define KV_SAMPLER_H

#include <stdint.h>

#include "cpu_kernels.h"
#include "kv_err.h"

typedef struct kv_sampling_params {
    float temperature; /* 0 = greedy */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
    uint64_t seed;
} kv_sampling_params;

typedef struct kv_sampler {
    kv_sampling_params p;
    uint64_t rng;
    int vocab;
    kc_prob_id *cands; /* scratch: vocab entries */
} kv_sampler;

void kv_sampling_default(kv_sampling_params *p);
int kv_sampling_validate(const kv_sampling_params *p, kv_err *err);
int kv_sampler_init(kv_sampler *s, const kv_sampling_params *p, int vocab, kv_err *err);
void kv_sampler_free(kv_sampler *s);
int32_t kv_sampler_sample(kv_sampler *s, const float *logits);
/* The two halves of kv_sampler_sample, for a device that picks the token itself
 * (kc_sample's twin): the next number of the stream (0, and no draw, when greedy) and
 * the parameters it is used with. sample(s, x) == kc_sample(x, vocab, row, draw(s)). */
float kv_sampler_draw(kv_sampler *s);
void kv_sampler_row(const kv_sampler *s, kc_sample_params *row);
/* Skips the random draws of n samples, so a sampler created elsewhere with the same seed
 * continues the same stream (the decode worker picks up after the prefill worker's token). */
void kv_sampler_advance(kv_sampler *s, int n);

#endif
