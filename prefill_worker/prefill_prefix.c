/* The prefill side of the prefix cache: a task starts from the blocks of its longest cached
 * prompt prefix and computes only the rest; after the decode worker's acknowledgement (the
 * explicit "safe" point, DESIGN.md) its sealed prompt blocks are indexed for the next task. */
#include <stdlib.h>

#include "kv_log.h"
#include "prefill.h"

int prefill_prefix_lookup(prefill_worker *pw, prefill_task *t, kv_err *err)
{
    kv_pool *pool = pw->we->pool;
    int bs = pool->shape.block_size;
    int32_t n = (int32_t)t->t->n_prompt_tokens, cap = (n + bs - 1) / bs;
    if (!pool->prefix || t->prompt_lp) /* prompt logprobs need every position computed */
        return KV_OK;
    int32_t *blocks = malloc((size_t)cap * sizeof *blocks);
    if (!blocks)
        return kv_err_set(err, KV_ENOMEM, "out of memory (prefix lookup)");
    int32_t hit = worker_prefix_lookup(pw->we, t->t->prompt_tokens, n, blocks, cap);
    t->seq.blocks = blocks;
    t->seq.cap_blocks = cap;
    t->seq.n_blocks = hit;
    t->seq.n_tokens = hit * bs;
    t->done = hit * bs;
    t->cached_tokens = hit * bs;
    return KV_OK;
}

void prefill_prefix_store(prefill_worker *pw, const prefill_task *t)
{
    int32_t n = t->seq.n_tokens;
    if (n > (int32_t)t->t->n_prompt_tokens)
        return;
    int32_t added = worker_prefix_store(pw->we, t->t->prompt_tokens, n, t->seq.blocks, t->seq.n_blocks);
    KV_DEBUG("kv-prefill", "msg=\"blocks cached\" request=%s tokens=%d new_blocks=%d cached_total=%d", t->id, n, added,
             kv_pool_n_cached(pw->we->pool));
}
