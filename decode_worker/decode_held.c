/* Register.held: the requests kv-decode is running, announced each time it registers, so
 * that a router that restarted adopts them (their client resumes the stream) instead of
 * their being lost; DESIGN.md "Request life cycle". Their later tokens go out as usual. */
#include <stdlib.h>
#include <string.h>

#include "decode.h"

#define HELD_MAX 4096 /* Register.held's bound (PROTOCOL.md) */

/* A request's ids as the router needs them: its prompt and every token generated, in order. */
static int holdable(const decode_req *r)
{
    return r->state == DR_RUNNING && r->ctx_tokens && r->n_generated > 0 &&
           (int64_t)r->n_ctx_tokens == (int64_t)r->prompt_tokens + r->n_generated && r->seq.n_blocks > 0;
}

void decode_held_fill(void *ctx, Kvserve__Register *reg)
{
    decode_worker *dw = ctx;
    decode_held *h = &dw->held;
    decode_held_free(h);
    reg->n_held = 0;
    reg->held = NULL;
    size_t n = 0;
    for (int i = 0; i < dw->running.n; i++)
        n += holdable(dw->running.v[i]);
    if (n > HELD_MAX)
        n = HELD_MAX;
    if (!n)
        return;
    h->m = malloc(n * sizeof *h->m);
    h->p = malloc(n * sizeof *h->p);
    if (!h->m || !h->p) { /* the router then Aborts them when their tokens come */
        decode_held_free(h);
        return;
    }
    for (int i = 0; i < dw->running.n && h->n < n; i++) {
        const decode_req *r = dw->running.v[i];
        if (!holdable(r))
            continue;
        Kvserve__HeldRequest *m = &h->m[h->n];
        kvserve__held_request__init(m);
        m->request_id = r->id;
        m->prompt_tokens = r->prompt_tokens;
        m->n_ctx_tokens = (size_t)r->n_ctx_tokens;
        m->ctx_tokens = r->ctx_tokens;
        m->n_block_ids = (size_t)r->seq.n_blocks;
        m->block_ids = r->seq.blocks;
        h->p[h->n++] = m;
    }
    reg->n_held = h->n;
    reg->held = h->p;
}

void decode_held_free(decode_held *h)
{
    free(h->m);
    free(h->p);
    memset(h, 0, sizeof *h);
}
