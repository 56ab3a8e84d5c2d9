/* The protocol's plausible messages, for the fuzz tests: sampling parameters, and envelopes
 * of every body kind whose contents a handler mostly accepts (ids of live requests, the
 * cluster's KV layout and model fingerprint) mixed with values it must refuse. */
#ifndef KV_FUZZ_ENVELOPE_H
#define KV_FUZZ_ENVELOPE_H

#include "kv_fuzz.h"
#include "kvserve.pb-c.h"

/* Greedy half the time, else temperatures up to 3 (now and then a subnormal one, whose
 * reciprocal overflows), top-k and top-p anywhere (top_p past 1). */
static inline void kv_fuzz_sampling(kv_fuzz_rng *r, Kvserve__SamplingParams *sp)
{
    kvserve__sampling_params__init(sp);
    sp->temperature = kv_fuzz_below(r, 2)    ? 0.0f
                      : kv_fuzz_below(r, 16) ? (float)kv_fuzz_below(r, 300) / 100.0f
                                             : 1e-40f;
    sp->top_k = kv_fuzz_u32(r);
    sp->top_p = (float)kv_fuzz_below(r, 120) / 100.0f;
    sp->seed = kv_fuzz_next(r);
}

/* Room for n TokenLogprobs of up to 20 alternatives each (KV_FUZZ_LP_MAX entries). */
#define KV_FUZZ_LP_MAX 16
typedef struct kv_fuzz_lp {
    Kvserve__TokenLogprobs m[KV_FUZZ_LP_MAX], *p[KV_FUZZ_LP_MAX];
    int32_t ids[KV_FUZZ_LP_MAX][20];
    float lps[KV_FUZZ_LP_MAX][20];
} kv_fuzz_lp;
/* n (<= KV_FUZZ_LP_MAX) entries with `top` alternatives (ids below vocab) each, well formed
 * unless noisy (then now and then: more alternatives, unequal lists, ids out of range,
 * NaN); returns s->p for a repeated field. */
Kvserve__TokenLogprobs **kv_fuzz_logprobs(kv_fuzz_rng *r, kv_fuzz_lp *s, size_t n, int top, int vocab, int noisy);

/* What plausible messages need to know of the cluster they go to. */
typedef struct kv_fuzz_cluster {
    uint32_t n_layers, n_kv_heads, head_dim;
    char fingerprint[9];  /* the served model's */
    char kv_endpoint[256]; /* a decode worker's */
    uint64_t block_bytes;
} kv_fuzz_cluster;

/* Every body kind a process receives. */
#define KV_FUZZ_N_KINDS 13
extern const int kv_fuzz_kinds[KV_FUZZ_N_KINDS];

/* One envelope of body `kind` (a KVSERVE__ENVELOPE__BODY_* value) with random contents,
 * packed into buf (room for KV_FUZZ_BUF); returns its length (0 if it would not fit). */
size_t kv_fuzz_envelope(kv_fuzz_rng *r, const kv_fuzz_cluster *cl, int kind, uint8_t *buf);

#endif
