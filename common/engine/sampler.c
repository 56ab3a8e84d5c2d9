#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

struct kv_prob_index {
    float p;
    int32_t id;
};

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

static float next_uniform(kv_sampler *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) * (1.0f / 16777216.0f);
}

void kv_sampler_advance(kv_sampler *s, int n)
{
    /* Greedy sampling draws nothing; every sampled token draws exactly one number. */
    for (int i = 0; s->p.temperature > 0.0f && i < n; i++)
        next_uniform(s);
}

static int by_prob_desc(const void *a, const void *b)
{
    const struct kv_prob_index *x = a, *y = b;
    if (x->p != y->p)
        return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

int32_t kv_sampler_sample(kv_sampler *s, const float *logits)
{
    if (s->p.temperature == 0.0f)
        return kc_argmax(logits, s->vocab);
    int n = s->vocab;
    float maxl = logits[kc_argmax(logits, n)], sum = 0.0f, inv_t = 1.0f / s->p.temperature;
    for (int i = 0; i < n; i++) {
        s->cands[i].p = expf((logits[i] - maxl) * inv_t);
        s->cands[i].id = i;
        sum += s->cands[i].p;
    }
    int top_k = s->p.top_k > 0 && s->p.top_k < n ? s->p.top_k : n;
    if (top_k < n || s->p.top_p < 1.0f) {
        /* Tokens below (1-top_p)/(n-1) of the mass can never enter the nucleus: dropping them
         * first keeps the sort short (llama2.c's trick). */
        int m = n;
        if (top_k == n) {
            float cutoff = (1.0f - s->p.top_p) / (float)(n - 1) * sum;
            m = 0;
            for (int i = 0; i < n; i++)
                if (s->cands[i].p >= cutoff)
                    s->cands[m++] = s->cands[i];
        }
        qsort(s->cands, (size_t)m, sizeof *s->cands, by_prob_desc);
        n = m < top_k ? m : top_k;
        float kept = 0.0f;
        for (int i = 0; i < n; i++)
            kept += s->cands[i].p;
        if (s->p.top_p < 1.0f) {
            float cum = 0.0f;
            for (int i = 0; i < n; i++) {
                cum += s->cands[i].p;
                if (cum >= s->p.top_p * kept) {
                    n = i + 1;
                    kept = cum;
                    break;
                }
            }
        }
        sum = kept;
    }
    float r = next_uniform(s) * sum, cum = 0.0f;
    for (int i = 0; i < n; i++) {
        cum += s->cands[i].p;
        if (r < cum)
            return s->cands[i].id;
    }
    return s->cands[n - 1].id;
}
