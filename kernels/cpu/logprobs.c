/* kc_logprobs_row: a token's log-probability and the row's top alternatives (see
 * cpu_kernels.h). Two passes over the row: the max, then the double sum of exp(x - max);
 * the top list is an insertion into n_top slots, so a pass costs about one compare per
 * logit once the list is full. */
#include <math.h>

#include "cpu_kernels.h"

/* x ranks above the list entry (v, id): larger, or equal with a lower id. NaN never ranks. */
static int ranks_above(float x, int32_t i, float v, int32_t id)
{
    return x > v || (x == v && i < id);
}

double kc_logsumexp(const float *logits, int vocab)
{
    float maxl = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > maxl)
            maxl = logits[i];
    if (!isfinite(maxl))
        return NAN;
    double sum = 0.0;
    for (int i = 0; i < vocab; i++)
        if (logits[i] == logits[i]) /* NaN counts as -inf: exp gives 0 */
            sum += exp((double)logits[i] - (double)maxl);
    return (double)maxl + log(sum);
}

void kc_logprobs_row(const float *logits, int vocab, int32_t token, int n_top, kc_logprobs *out)
{
    if (n_top < 0)
        n_top = 0;
    if (n_top > KC_LOGPROBS_TOP_MAX)
        n_top = KC_LOGPROBS_TOP_MAX;
    if (n_top > vocab)
        n_top = vocab;
    double lse = kc_logsumexp(logits, vocab);
    out->logprob = token >= 0 && token < vocab ? (float)((double)logits[token] - lse) : NAN;
    int n = 0;
    for (int i = 0; i < vocab && n_top > 0; i++) {
        float x = logits[i];
        if (x != x)
            continue;
        if (n == n_top && !ranks_above(x, i, out->top_logprobs[n - 1], out->top_ids[n - 1]))
            continue;
        int j = n < n_top ? n++ : n - 1; /* the slot freed at the end */
        while (j > 0 && ranks_above(x, i, out->top_logprobs[j - 1], out->top_ids[j - 1])) {
            out->top_logprobs[j] = out->top_logprobs[j - 1];
            out->top_ids[j] = out->top_ids[j - 1];
            j--;
        }
        out->top_logprobs[j] = x; /* raw logits while ranking; shifted by lse below */
        out->top_ids[j] = i;
    }
    out->n_top = n;
    for (int j = 0; j < n; j++)
        out->top_logprobs[j] = (float)((double)out->top_logprobs[j] - lse);
}
