/* kc_sample: one token from a row of logits given the draw u (see cpu_kernels.h). */
#include <math.h>
#include <stdlib.h>

#include "cpu_kernels.h"

static int by_prob_desc(const void *a, const void *b)
{
    const kc_prob_id *x = a, *y = b;
    if (x->p != y->p)
        return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

/* Running sums in double, as on the device: its parallel sums add in another order, and
 * float rounding of that order would decide the token near every boundary. */
int kc_sample_candidates(const float *logits, int vocab, const kc_sample_params *sp, kc_prob_id *cands,
                         double *mass)
{
    int n = vocab;
    float maxl = logits[kc_argmax(logits, n)], inv_t = 1.0f / sp->temperature;
    if (!isfinite(maxl)) { /* +-inf - itself, or all NaN: no weight would be a number */
        *mass = 0.0;
        return 0;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        cands[i].p = expf((logits[i] - maxl) * inv_t);
        cands[i].id = i;
        sum += cands[i].p;
    }
    int top_k = sp->top_k > 0 && sp->top_k < n ? sp->top_k : n;
    if (top_k < n || sp->top_p < 1.0f) {
        /* Tokens below (1-top_p)/(n-1) of the mass can never enter the nucleus: dropping them
         * first keeps the sort short (llama2.c's trick). */
        int m = n;
        if (top_k == n) {
            double cutoff = (1.0 - (double)sp->top_p) / (double)(n - 1) * sum;
            if (cutoff > 1.0)
                cutoff = 1.0; /* top_p < 1/n on a flat row: the top token (p = 1) stays */
            m = 0;
            for (int i = 0; i < n; i++)
                if (cands[i].p >= cutoff)
                    cands[m++] = cands[i];
        }
        qsort(cands, (size_t)m, sizeof *cands, by_prob_desc);
        n = m < top_k ? m : top_k;
        double kept = 0.0;
        for (int i = 0; i < n; i++)
            kept += cands[i].p;
        if (sp->top_p < 1.0f) {
            double cum = 0.0, goal = (double)sp->top_p * kept;
            for (int i = 0; i < n; i++) {
                cum += cands[i].p;
                if (cum >= goal) {
                    n = i + 1;
                    kept = cum;
                    break;
                }
            }
        }
        sum = kept;
    }
    *mass = sum;
    return n;
}

/* Parameters that make the weights exp((x - max) / t) no distribution: t <= 0, t so small
 * that 1/t overflows (a subnormal t: 0 * inf is NaN at the top token), or a single token.
 * The argmax then, as on the device; so too for a row whose max is not finite, which
 * kc_sample_candidates finds while it computes the max anyway. */
static int greedy_params(int vocab, const kc_sample_params *sp)
{
    return !(sp->temperature > 0.0f) || !isfinite(1.0f / sp->temperature) || vocab <= 1;
}

int32_t kc_sample(const float *logits, int vocab, const kc_sample_params *sp, float u, kc_prob_id *cands)
{
    if (greedy_params(vocab, sp))
        return kc_argmax(logits, vocab);
    double sum;
    int n = kc_sample_candidates(logits, vocab, sp, cands, &sum);
    if (n == 0) /* a max that is not finite, or no weight compares (NaN): nothing to draw from */
        return kc_argmax(logits, vocab);
    double r = (double)u * sum, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += cands[i].p;
        if (r < cum)
            return cands[i].id;
    }
    return cands[n - 1].id;
}

int kc_sample_fits(const float *logits, int vocab, const kc_sample_params *sp, int cap, kc_prob_id *cands)
{
    if (vocab <= cap || greedy_params(vocab, sp) || !isfinite(logits[kc_argmax(logits, vocab)]))
        return 1;
    int top_k = sp->top_k > 0 && sp->top_k < vocab ? sp->top_k : vocab;
    if (top_k < vocab)
        return top_k <= cap;
    double mass;
    return sp->top_p >= 1.0f || kc_sample_candidates(logits, vocab, sp, cands, &mass) <= cap;
}
