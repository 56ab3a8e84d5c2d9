#include "kv_wire_logprobs.h"

#include <string.h>

void kv_wire_logprobs_to_proto(const kc_logprobs *lp, Kvserve__TokenLogprobs *m)
{
    kvserve__token_logprobs__init(m);
    m->logprob = lp->logprob;
    m->n_top_ids = m->n_top_logprobs = (size_t)(lp->n_top > 0 ? lp->n_top : 0);
    m->top_ids = (int32_t *)lp->top_ids;
    m->top_logprobs = (float *)lp->top_logprobs;
}

void kv_wire_logprobs_to_protos(const kc_logprobs *lp, size_t n, Kvserve__TokenLogprobs *msgs,
                                Kvserve__TokenLogprobs **ptrs)
{
    for (size_t i = 0; i < n; i++) {
        kv_wire_logprobs_to_proto(&lp[i], &msgs[i]);
        ptrs[i] = &msgs[i];
    }
}

int kv_wire_logprobs_from_proto(const Kvserve__TokenLogprobs *m, int vocab, int max_top, kc_logprobs *lp,
                                kv_err *err)
{
    if (!m)
        return kv_err_set(err, KV_EINVAL, "missing logprobs");
    if (max_top > KC_LOGPROBS_TOP_MAX)
        max_top = KC_LOGPROBS_TOP_MAX;
    if (m->n_top_ids != m->n_top_logprobs)
        return kv_err_set(err, KV_EINVAL, "logprobs: %zu top ids but %zu top logprobs", m->n_top_ids,
                          m->n_top_logprobs);
    if (m->n_top_ids > (size_t)(max_top > 0 ? max_top : 0))
        return kv_err_set(err, KV_EINVAL, "logprobs: %zu top alternatives, at most %d asked", m->n_top_ids, max_top);
    for (size_t i = 0; i < m->n_top_ids; i++)
        if (m->top_ids[i] < 0 || m->top_ids[i] >= vocab)
            return kv_err_set(err, KV_EINVAL, "logprobs: top id %d outside the vocabulary (%d)", m->top_ids[i], vocab);
    memset(lp, 0, sizeof *lp);
    lp->logprob = m->logprob;
    lp->n_top = (int32_t)m->n_top_ids;
    if (m->n_top_ids) {
        memcpy(lp->top_ids, m->top_ids, m->n_top_ids * sizeof *lp->top_ids);
        memcpy(lp->top_logprobs, m->top_logprobs, m->n_top_ids * sizeof *lp->top_logprobs);
    }
    return KV_OK;
}
