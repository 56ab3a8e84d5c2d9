/* The decode side of the prefix cache: a reservation reuses the leading blocks this worker
 * already holds (a shared system prompt, a conversation's earlier turns), so the prefill
 * worker ships only the rest, or nothing when the uncached tail is short enough to prefill
 * here; a request's sealed blocks, prompt and generated, are indexed when it ends well. */
#include <stdlib.h>

#include "decode.h"
#include "kv_log.h"

#define COMP "kv-decode"

void decode_prefix_store(decode_worker *dw, const decode_req *r)
{
    /* ctx_tokens has the prompt and every token generated; seq holds K/V of all but the last. */
    int32_t n = r->seq.n_tokens < r->n_ctx_tokens ? r->seq.n_tokens : r->n_ctx_tokens;
    if (!r->ctx_tokens || n <= 0)
        return;
    int32_t added = worker_prefix_store(dw->we, r->ctx_tokens, n, r->seq.blocks, r->seq.n_blocks);
    KV_DEBUG(COMP, "msg=\"blocks cached\" request=%s tokens=%d new_blocks=%d cached_total=%d", r->id, n, added,
             kv_pool_n_cached(dw->we->pool));
}

int decode_prefill_local(decode_worker *dw, decode_req *r, int32_t *first, kv_err *err)
{
    kv_pool *pool = dw->we->pool;
    int vocab = dw->we->model->cfg.vocab_size;
    int32_t done = r->cached_blocks * pool->shape.block_size;
    float *logits = malloc((size_t)vocab * sizeof *logits);
    if (!logits)
        return kv_err_set(err, KV_ENOMEM, "out of memory (logits)");
    /* A view of the reserved blocks: they cover the prompt, so nothing is reserved here. */
    kv_seq view = {r->blocks, r->n_blocks, r->n_blocks, done};
    int rc = kv_engine_prefill(dw->we->engine, &view, r->ctx_tokens + done, (int)r->prompt_tokens - done, logits, 0,
                               err);
    kv_sampler s;
    if (!rc && !(rc = kv_sampler_init(&s, &r->sp, vocab, err))) {
        /* The stream's next draw, as the prefill worker takes it (after earlier attempts'). */
        kv_sampler_advance(&s, (int)r->sampling_offset);
        *first = kv_sampler_sample(&s, logits);
        if (r->lp_top >= 0)
            kc_logprobs_row(logits, vocab, *first, r->lp_top, &r->first_lp);
        kv_sampler_free(&s);
    }
    free(logits);
    return rc;
}
