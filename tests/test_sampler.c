/* Sampling: greedy, determinism by seed, top-k/top-p truncation, distribution, validation. */
#include "kv_test.h"
#include "sampler.h"

static kv_sampler make(float t, int k, float p, uint64_t seed, int vocab)
{
    kv_sampling_params sp = {t, k, p, seed};
    kv_sampler s;
    kv_err err;
    CHECK(kv_sampler_init(&s, &sp, vocab, &err) == 0);
    return s;
}

int main(void)
{
    float logits[6] = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f};
    kv_sampler g = make(0, 0, 1, 0, 6);
    CHECK_EQ_INT(kv_sampler_sample(&g, logits), 1); /* first of the tied maxima */
    kv_sampler_free(&g);

    /* Same seed, same tokens; another seed, another sequence. */
    kv_sampler a = make(1.0f, 0, 1, 42, 6), b = make(1.0f, 0, 1, 42, 6), c = make(1.0f, 0, 1, 43, 6);
    int same = 1, differ = 0;
    for (int i = 0; i < 200; i++) {
        int x = kv_sampler_sample(&a, logits), y = kv_sampler_sample(&b, logits), z = kv_sampler_sample(&c, logits);
        same &= x == y;
        differ |= x != z;
        CHECK(x >= 0 && x < 6);
    }
    CHECK(same && differ);
    kv_sampler_free(&a); kv_sampler_free(&b); kv_sampler_free(&c);

    /* top-k 2 keeps only tokens 1 and 4; top-p 0.3 keeps only the single most likely. */
    kv_sampler k2 = make(1.0f, 2, 1, 7, 6), p1 = make(1.0f, 0, 0.3f, 7, 6);
    int counts[6] = {0};
    for (int i = 0; i < 2000; i++) {
        counts[kv_sampler_sample(&k2, logits)]++;
        CHECK_EQ_INT(kv_sampler_sample(&p1, logits), 1);
    }
    CHECK(counts[0] == 0 && counts[2] == 0 && counts[3] == 0 && counts[5] == 0);
    CHECK(counts[1] > 800 && counts[4] > 800); /* tied: about 1000 each */
    kv_sampler_free(&k2); kv_sampler_free(&p1);

    /* Frequencies follow softmax (fixed seed, so this is deterministic, not flaky). */
    kv_sampler t1 = make(1.0f, 0, 1, 1, 6);
    int freq[6] = {0};
    const int N = 60000;
    for (int i = 0; i < N; i++) freq[kv_sampler_sample(&t1, logits)]++;
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp(logits[i]);
    for (int i = 0; i < 6; i++) {
        double expect = exp(logits[i]) / z;
        CHECK_MSG(fabs(freq[i] / (double)N - expect) < 0.01, "token %d: %.4f vs %.4f", i, freq[i] / (double)N, expect);
    }
    kv_sampler_free(&t1);

    /* top-p below 1/vocab on a flat row: the pre-sort cutoff would exceed every token's
     * weight; the top token (lowest id among the tied) must stay, never an empty set. */
    enum { FLAT = 32000 };
    float *flat = calloc(FLAT, sizeof *flat);
    kv_sampler tiny = make(1.0f, 0, 1e-6f, 5, FLAT);
    for (int i = 0; i < 20; i++) CHECK_EQ_INT(kv_sampler_sample(&tiny, flat), 0);
    kv_sampler_free(&tiny);
    free(flat);

    /* Rows whose weights exp((x - max) / t) would all be NaN get the argmax, never a read
     * before the candidates (found by fuzz_decode: a client's temperature of 1e-40 reached
     * the decode worker's sampler). t subnormal: 1/t overflows, 0 * inf at the top token. */
    float ninf[6] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    float pinf[6] = {1.0f, INFINITY, 2.0f, 0.0f, INFINITY, 3.0f};
    float nans[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
    float somenan[6] = {1.0f, NAN, 3.0f, 2.0f, NAN, 0.0f};
    kv_sampler subnormal = make(1e-40f, 0, 1, 3, 6), sub_p = make(1e-40f, 0, 0.5f, 3, 6), hot = make(2.0f, 0, 0.9f, 3, 6);
    for (int i = 0; i < 20; i++) {
        CHECK_EQ_INT(kv_sampler_sample(&subnormal, logits), 1);
        CHECK_EQ_INT(kv_sampler_sample(&sub_p, logits), 1);
        CHECK_EQ_INT(kv_sampler_sample(&hot, ninf), 0);
        CHECK_EQ_INT(kv_sampler_sample(&hot, pinf), 1);
        CHECK_EQ_INT(kv_sampler_sample(&hot, nans), 0);
        int x = kv_sampler_sample(&hot, somenan);
        CHECK(x >= 0 && x < 6);
    }
    kv_sampler_free(&subnormal); kv_sampler_free(&sub_p); kv_sampler_free(&hot);
    kc_prob_id cands[6];
    kc_sample_params sub_row = {1e-40f, 0, 0.5f};
    CHECK(kc_sample_fits(logits, 6, &sub_row, 1, cands)); /* greedy: fits any cap */

    kv_sampling_params bad[] = {{-1, 0, 1, 0}, {1, -2, 1, 0}, {1, 0, 0, 0}, {1, 0, 1.5f, 0}, {NAN, 0, 1, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kv_err err;
        CHECK(kv_sampling_validate(&bad[i], &err) == KV_EINVAL);
    }
    return kv_test_result();
}
