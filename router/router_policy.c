#include "router_policy.h"

#include <string.h>

/* Ties by id, then by routing id (ids are normally unique). */
static int worker_cmp_id(const router_worker *a, const router_worker *b)
{
    int c = strcmp(a->id, b->id);
    if (c)
        return c;
    size_t n = a->route.len < b->route.len ? a->route.len : b->route.len;
    c = memcmp(a->route.id, b->route.id, n);
    return c ? c : (a->route.len > b->route.len) - (a->route.len < b->route.len);
}

static int better(const router_worker *cand, const router_worker *best)
{
    if (!best)
        return 1;
    if (cand->active != best->active)
        return cand->active < best->active;
    return worker_cmp_id(cand, best) < 0;
}

static int decode_could_hold(const router_worker *wk, uint32_t blocks, uint32_t seq_tokens)
{
    return wk->kv_blocks_total >= blocks && (!wk->max_context || seq_tokens <= wk->max_context);
}

static int prefill_fits(const router_worker *p, uint32_t prompt_blocks, const router_worker *d)
{
    return p->role == KVSERVE__WORKER_ROLE__ROLE_PREFILL && p->kv_blocks_total >= prompt_blocks &&
           !(d && router_pair_refused(p, d));
}

/* Some prefill worker could take a request whose blocks d would hold. */
static int has_prefill_for(const router_workers *w, const router_worker *d, uint32_t prompt_blocks)
{
    for (size_t i = 0; i < w->n; i++)
        if (prefill_fits(w->list[i], prompt_blocks, d))
            return 1;
    return 0;
}

/* Every prefill worker there is has refused d (and there is one). */
static int refused_by_all(const router_workers *w, const router_worker *d)
{
    return has_prefill_for(w, NULL, 0) && !has_prefill_for(w, d, 0);
}

/* Tokens of the prompt wk would still have to compute or receive, plus its load. */
static int64_t pick_cost(const router_worker *wk, const router_pick_hint *h)
{
    uint32_t hit = wk->prefix_slot >= 0 ? h->hits[wk->prefix_slot] : 0;
    uint32_t max = h->prompt_tokens > 0 ? (h->prompt_tokens - 1) / h->block_size : 0;
    if (hit > max)
        hit = max;
    return (int64_t)h->prompt_tokens - (int64_t)hit * h->block_size + (int64_t)h->load_tokens * wk->active;
}

/* Among the eligible workers (pred), the cheapest within the balance guard; ties by load. */
static router_worker *pick_by_cost(const router_workers *w, int (*eligible)(const router_worker *, const void *),
                                   const void *ctx, const router_pick_hint *h)
{
    uint32_t least = UINT32_MAX;
    for (size_t i = 0; i < w->n; i++)
        if (eligible(w->list[i], ctx) && w->list[i]->active < least)
            least = w->list[i]->active;
    router_worker *best = NULL;
    int64_t best_cost = 0;
    for (size_t i = 0; i < w->n; i++) {
        router_worker *wk = w->list[i];
        if (!eligible(wk, ctx) || (int64_t)wk->active > (int64_t)least + h->balance)
            continue;
        int64_t c = pick_cost(wk, h);
        if (!best || c < best_cost || (c == best_cost && better(wk, best))) {
            best = wk;
            best_cost = c;
        }
    }
    return best;
}

typedef struct decode_need {
    const router_workers *w;
    uint32_t blocks, seq_tokens;
} decode_need;

static int decode_eligible(const router_worker *wk, const void *ctx)
{
    const decode_need *n = ctx;
    return wk->role == KVSERVE__WORKER_ROLE__ROLE_DECODE && decode_could_hold(wk, n->blocks, n->seq_tokens) &&
           !refused_by_all(n->w, wk) && router_worker_available(wk) >= (int64_t)n->blocks;
}

typedef struct prefill_need {
    uint32_t prompt_blocks;
    const router_worker *d;
} prefill_need;

static int prefill_eligible(const router_worker *wk, const void *ctx)
{
    const prefill_need *n = ctx;
    return prefill_fits(wk, n->prompt_blocks, n->d);
}

router_worker *router_pick_decode_by(const router_workers *w, uint32_t blocks, uint32_t seq_tokens,
                                     const router_pick_hint *hint)
{
    if (!hint)
        return router_pick_decode(w, blocks, seq_tokens);
    decode_need n = {w, blocks, seq_tokens};
    return pick_by_cost(w, decode_eligible, &n, hint);
}

router_worker *router_pick_prefill_by(const router_workers *w, uint32_t prompt_blocks, const router_worker *d,
                                      const router_pick_hint *hint)
{
    if (!hint)
        return router_pick_prefill(w, prompt_blocks, d);
    prefill_need n = {prompt_blocks, d};
    return pick_by_cost(w, prefill_eligible, &n, hint);
}

router_worker *router_pick_decode(const router_workers *w, uint32_t blocks, uint32_t seq_tokens)
{
    router_worker *best = NULL;
    for (size_t i = 0; i < w->n; i++) {
        router_worker *wk = w->list[i];
        if (wk->role != KVSERVE__WORKER_ROLE__ROLE_DECODE || !decode_could_hold(wk, blocks, seq_tokens) ||
            refused_by_all(w, wk))
            continue;
        if (router_worker_available(wk) >= (int64_t)blocks && better(wk, best))
            best = wk;
    }
    return best;
}

router_worker *router_pick_prefill(const router_workers *w, uint32_t prompt_blocks, const router_worker *d)
{
    router_worker *best = NULL;
    for (size_t i = 0; i < w->n; i++) {
        router_worker *wk = w->list[i];
        if (prefill_fits(wk, prompt_blocks, d) && better(wk, best))
            best = wk;
    }
    return best;
}

int router_no_pair(const router_workers *w, uint32_t blocks, uint32_t seq_tokens, uint32_t prompt_blocks)
{
    int decode_fits = 0, prefill_could = has_prefill_for(w, NULL, prompt_blocks);
    for (size_t i = 0; i < w->n; i++) {
        const router_worker *d = w->list[i];
        if (d->role != KVSERVE__WORKER_ROLE__ROLE_DECODE || !decode_could_hold(d, blocks, seq_tokens))
            continue;
        decode_fits = 1;
        if (has_prefill_for(w, d, prompt_blocks))
            return 0;
    }
    return decode_fits && prefill_could;
}

int router_never_fits_decode(const router_workers *w, uint32_t blocks, uint32_t seq_tokens)
{
    int any = 0;
    for (size_t i = 0; i < w->n; i++) {
        const router_worker *wk = w->list[i];
        if (wk->role != KVSERVE__WORKER_ROLE__ROLE_DECODE)
            continue;
        any = 1;
        if (decode_could_hold(wk, blocks, seq_tokens))
            return 0;
    }
    return any;
}

int router_never_fits_prefill(const router_workers *w, uint32_t prompt_blocks)
{
    int any = 0;
    for (size_t i = 0; i < w->n; i++) {
        const router_worker *wk = w->list[i];
        if (wk->role != KVSERVE__WORKER_ROLE__ROLE_PREFILL)
            continue;
        any = 1;
        if (wk->kv_blocks_total >= prompt_blocks)
            return 0;
    }
    return any;
}

