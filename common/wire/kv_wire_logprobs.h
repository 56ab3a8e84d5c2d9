/* One token's log-probabilities between their C form (kc_logprobs, kernels/cpu) and the
 * wire's TokenLogprobs. Only the struct is shared: nothing here computes. */
#ifndef KV_WIRE_LOGPROBS_H
#define KV_WIRE_LOGPROBS_H

#include "cpu_kernels.h"
#include "kv_err.h"
#include "kvserve.pb-c.h"

/* Largest GenerateRequest.logprobs: the token and KC_LOGPROBS_TOP_MAX alternatives. */
#define KV_WIRE_LOGPROBS_MAX (KC_LOGPROBS_TOP_MAX + 1)

/* m describes lp: its arrays point into lp, which must outlive m. */
void kv_wire_logprobs_to_proto(const kc_logprobs *lp, Kvserve__TokenLogprobs *m);
/* Messages for n entries of lp: msgs[n] and ptrs[n] caller-provided (ptrs[i] = &msgs[i]),
 * for a repeated field. */
void kv_wire_logprobs_to_protos(const kc_logprobs *lp, size_t n, Kvserve__TokenLogprobs *msgs,
                                Kvserve__TokenLogprobs **ptrs);
/* Checks m (top_ids and top_logprobs of one length, at most max_top <= KC_LOGPROBS_TOP_MAX,
 * ids in [0, vocab)) and copies it into lp: KV_OK, or KV_EINVAL with the reason. */
int kv_wire_logprobs_from_proto(const Kvserve__TokenLogprobs *m, int vocab, int max_top, kc_logprobs *lp,
                                kv_err *err);

#endif
