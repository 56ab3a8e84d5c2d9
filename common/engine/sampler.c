#include "sampler.h"

#include <stdlib.h>
#include <string.h>

void kv_sampling_default(kv_sampling_params *p)
{
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->seed = 0;
}

int kv_sampling_validate(const kv_sampling_params *p, kv_err *err)
{
    if (!(p->temperature >= 0.0f) || p->temperature > 100.0f)
        return kv_err_set(err, KV_EINVAL, "temperature must be in [0, 100], got %g", (double)p->temperature);
    if (p->top_k < 0)
        return kv_err_set(err, KV_EINVAL, "top-k must be >= 0, got %d", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return kv_err_set(err, KV_EINVAL, "top-p must be in (0, 1], got %g", (double)p->top_p);
    return KV_OK;
}

int kv_sampler_init(kv_sampler *s, const kv_sampling_params *p, int vocab, kv_err *err)
{
    memset(s, 0, sizeof *s);
    int rc = kv_sampling_validate(p, err);
    if (rc)
        return rc;
    s->p = *p;
    s->vocab = vocab;
    /* splitmix64 of the seed: a zero seed still gives a good xorshift state. */
    uint64_t z = p->seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s->rng = (z ^ (z >> 31)) | 1;
    if (p->temperature > 0.0f && !(s->cands = malloc((size_t)vocab * sizeof *s->cands)))
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    return KV_OK;
}

void kv_sampler_free(kv_sampler *s)
{
    free(s->cands);
    s->cands = NULL;
}

float kv_sampler_draw(kv_sampler *s)
{
    if (!(s->p.temperature > 0.0f))
        return 0.0f;
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) * (1.0f / 16777216.0f);
}

void kv_sampler_advance(kv_sampler *s, int n)
{
    for (int i = 0; i < n; i++)
        kv_sampler_draw(s);
}

void kv_sampler_row(const kv_sampler *s, kc_sample_params *row)
{
    row->temperature = s->p.temperature;
    row->top_k = s->p.top_k;
    row->top_p = s->p.top_p;
}

int32_t kv_sampler_sample(kv_sampler *s, const float *logits)
{
    kc_sample_params row;
    kv_sampler_row(s, &row);
    return kc_sample(logits, s->vocab, &row, kv_sampler_draw(s), s->cands);
}
