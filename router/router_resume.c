/* A router that restarted (DESIGN.md "Request life cycle"): decode workers register again
 * with the requests they run (Register.held) and clients resume their streams
 * (GenerateRequest.resume_tokens). A held request becomes an orphan: it runs on, its tokens
 * kept, until its client resumes it (the orphan is bound to that request: the client gets the
 * tokens it lacks, then the stream goes on) or the queue deadline passes (Abort, blocks
 * freed). A resume that comes before its worker registered waits (parked) a few heartbeats
 * for it, then runs afresh from prompt + the client's tokens. */
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "router.h"

#define HELD_MAX 4096
/* How long after its start the router parks resumes: a few heartbeats (a worker learns that
 * the router is new from its next heartbeat) plus the ack round trip. */
#define PARK_HEARTBEATS 4
#define PARK_EXTRA_S 1.0

static router_req *find_by_id(const router_state *st, const char *id, int orphan, int parked)
{
    for (router_req *r = st->reqs.head; r; r = r->next)
        if (r->orphan == orphan && r->parked == parked && !strcmp(r->id, id))
            return r;
    return NULL;
}

/* Whether orphan o continues r: r's client prompt opens o's attempt prompt, and the tokens
 * the client holds open o's stream. Returns o's stream (malloc'd, *n_stream tokens) or NULL. */
static int32_t *matching_stream(const router_req *r, const router_req *o, uint32_t *n_stream)
{
    uint32_t n_p = r->n_prompt_orig, n_r = r->index_base;
    if (r->logprobs || r->replans || o->n_prompt < n_p || memcmp(o->prompt, r->prompt, (size_t)n_p * sizeof *r->prompt))
        return NULL;
    uint64_t n = (uint64_t)(o->n_prompt - n_p) + o->next_index;
    if (n < n_r || n > UINT32_MAX || o->n_gen < o->next_index)
        return NULL;
    int32_t *s = malloc((size_t)(n ? n : 1) * sizeof *s);
    if (!s)
        return NULL;
    memcpy(s, o->prompt + n_p, (size_t)(o->n_prompt - n_p) * sizeof *s);
    memcpy(s + (o->n_prompt - n_p), o->gen, (size_t)o->next_index * sizeof *s);
    if (memcmp(s, r->gen, (size_t)n_r * sizeof *s)) {
        free(s);
        return NULL;
    }
    *n_stream = (uint32_t)n;
    return s;
}

/* Binds orphan o to r (a client's resume, queued or parked): r takes o's worker, blocks,
 * wire id and tokens, and o is gone. Returns 1, or 0 when o does not continue r (o is then
 * aborted and r runs afresh). */
static int bind_orphan(router_state *st, router_req *r, router_req *o)
{
    uint32_t n_stream = 0, n_r = r->index_base;
    uint32_t budget = r->max_tokens + n_r; /* the client's max_tokens */
    int32_t *stream = matching_stream(r, o, &n_stream);
    uint32_t base = o->n_prompt - r->n_prompt_orig;
    char *wire = stream && base <= budget ? strdup(o->wire_id) : NULL;
    char idbuf[160];
    if (!wire) {
        KV_WARN("router", "event=orphan_mismatch id=%s reason=\"the resumed request differs from what the worker "
                "runs\"", router_log_id(r->id, idbuf, sizeof idbuf));
        free(stream);
        router_end(st, o, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__CANCELLED,
                   "the resumed request differs from what the worker runs");
        return 0;
    }
    /* r becomes o's attempt: its prompt, and the stream so far (index base on). */
    int32_t *prompt = o->prompt;
    o->prompt = NULL;
    free(r->prompt);
    r->prompt = prompt;
    r->n_prompt = o->n_prompt;
    /* r->gen holds the client's n_r tokens; the rest join it as output below. */
    r->index_base = base;
    r->next_index = n_stream;
    r->max_tokens = budget - base;
    r->decode = o->decode;
    r->block_ids = o->block_ids;
    r->n_block_ids = o->n_block_ids;
    r->blocks = (uint32_t)o->n_block_ids;
    r->d_done = o->d_done;
    r->d_finish = o->d_finish;
    r->p_done = 1;
    r->decode_ms = o->decode_ms;
    o->decode = NULL; /* moved: ending o aborts nothing */
    o->block_ids = NULL;
    o->n_block_ids = 0;
    o->d_done = 1;
    router_requests_remove(&st->reqs, o);
    if (router_requests_set_wire(&st->reqs, r, wire)) {
        free(wire);
        free(stream);
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL, "router out of memory");
        return 1;
    }
    free(wire);
    r->parked = 0;
    router_queue_remove(&st->reqs, r);
    router_enter(st, r, RQ_DECODING);
    if (!r->d_done) {
        r->dl_token = st->now + st->dl.token_s;
        router_note_deadline(st, r->dl_token);
    }
    KV_INFO("router", "event=request_resumed id=%s worker=%s client_tokens=%u worker_tokens=%u",
            router_log_id(r->id, idbuf, sizeof idbuf), r->decode ? r->decode->id : "-", n_r, n_stream);
    /* The tokens the client lacks, then on as usual. */
    int rc = n_stream > n_r ? router_req_append_output(r, stream + n_r, NULL, n_stream - n_r) : 0;
    free(stream);
    if (rc) {
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL, "router out of memory");
        return 1;
    }
    if (r->stream && r->n_out && !r->d_done)
        router_client_send_output(st, r, 0, KVSERVE__FINISH_REASON__FINISH_NONE, 0, NULL);
    router_maybe_complete(st, r);
    return 1;
}

int router_resume_start(router_state *st, router_req *r)
{
    if (!r->resumed || r->replans)
        return 0; /* not a resume */
    router_req *o = find_by_id(st, r->id, 1, 0);
    if (o)
        return bind_orphan(st, r, o);
    double park_until = st->started + st->opt.heartbeat_ms * 1e-3 * PARK_HEARTBEATS + PARK_EXTRA_S;
    if (st->now >= park_until)
        return 0;
    r->parked = 1;
    r->state = RQ_QUEUED;
    r->dl_stage = park_until;
    router_note_deadline(st, park_until);
    return 1;
}

int router_resume_unpark(router_state *st, router_req *r, double now)
{
    if (!r->parked || !r->dl_stage || now < r->dl_stage)
        return 0;
    r->parked = 0;
    router_enter(st, r, RQ_QUEUED);
    router_queue_push_back(&st->reqs, r);
    return 1;
}

/* One held request: checked, then an orphan (bound at once to a parked resume). */
static void adopt_one(router_state *st, router_worker *wk, const Kvserve__HeldRequest *h)
{
    const char *id = h->request_id ? h->request_id : "";
    char idbuf[160];
    int ok = id[0] && strlen(id) <= 256 && h->prompt_tokens > 0 && h->prompt_tokens < h->n_ctx_tokens &&
             h->n_ctx_tokens <= st->model.context && h->n_block_ids > 0 && h->n_block_ids <= wk->kv_blocks_total &&
             !router_requests_find_wire(&st->reqs, id);
    for (size_t i = 0; ok && i < h->n_ctx_tokens; i++)
        ok = h->ctx_tokens[i] >= 0 && h->ctx_tokens[i] < st->model.cfg.vocab_size;
    int32_t *prompt = ok ? malloc((size_t)h->prompt_tokens * sizeof *prompt) : NULL;
    router_req *o = NULL;
    if (prompt) {
        memcpy(prompt, h->ctx_tokens, (size_t)h->prompt_tokens * sizeof *prompt);
        o = router_requests_add_orphan(&st->reqs, id, prompt, (uint32_t)h->prompt_tokens, st->now);
    }
    uint32_t n_gen = (uint32_t)(h->n_ctx_tokens - h->prompt_tokens);
    if (o && (o->block_ids = malloc(h->n_block_ids * sizeof *o->block_ids)) &&
        (o->gen = malloc((size_t)n_gen * sizeof *o->gen))) {
        memcpy(o->block_ids, h->block_ids, h->n_block_ids * sizeof *o->block_ids);
        o->n_block_ids = h->n_block_ids;
        memcpy(o->gen, h->ctx_tokens + h->prompt_tokens, (size_t)n_gen * sizeof *o->gen);
        o->n_gen = o->cap_gen = o->next_index = n_gen;
    } else if (o) {
        router_requests_remove(&st->reqs, o);
        o = NULL;
    }
    /* A request the router already runs under that client id (re-planned, or resumed afresh)
     * makes this one a leftover. */
    router_req *live = o ? find_by_id(st, o->id, 0, 0) : NULL;
    if (!o || live) {
        KV_WARN("router", "event=held_refused worker=%s id=%s reason=%s", wk->id, router_log_id(id, idbuf, sizeof idbuf),
                o ? "already running" : "invalid or out of memory");
        if (o)
            router_requests_remove(&st->reqs, o);
        router_send_abort(st, &wk->route, id, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST);
        return;
    }
    o->decode = wk;
    wk->active++;
    o->p_done = 1;
    o->stream = 0;
    o->dl_total = st->now + st->dl.queue_s; /* unclaimed by then: aborted */
    o->dl_token = st->now + st->dl.token_s;
    router_note_deadline(st, o->dl_total);
    router_note_deadline(st, o->dl_token);
    KV_INFO("router", "event=request_adopted worker=%s id=%s prompt_tokens=%u generated=%u blocks=%zu", wk->id,
            router_log_id(id, idbuf, sizeof idbuf), o->n_prompt, n_gen, o->n_block_ids);
    router_req *parked = find_by_id(st, o->id, 0, 1);
    if (parked && !bind_orphan(st, parked, o)) {
        parked->parked = 0;
        router_enter(st, parked, RQ_QUEUED);
        router_queue_push_back(&st->reqs, parked);
    }
}

#define GONE_MAX 4096 /* forgotten ids kept; beyond, leftovers are refused at adoption instead */

void router_resume_note_gone(router_state *st, const char *worker_id)
{
    size_t len = strlen(worker_id);
    if (router_map_get(&st->gone_workers, worker_id, len) || router_map_count(&st->gone_workers) >= GONE_MAX)
        return;
    if (router_map_put(&st->gone_workers, worker_id, len, st))
        KV_WARN("router", "event=out_of_memory what=gone_workers");
}

int router_resume_forgot(const router_state *st, const kv_wire_route *route)
{
    return route->len && router_map_get(&st->gone_workers, route->id, route->len) != NULL;
}

void router_adopt_held(router_state *st, router_worker *wk, const Kvserve__Register *reg)
{
    if (wk->role != KVSERVE__WORKER_ROLE__ROLE_DECODE)
        return;
    int forgot = router_resume_forgot(st, &wk->route);
    for (size_t i = 0; i < reg->n_held && i < HELD_MAX; i++) {
        if (forgot) { /* this router already re-planned or failed what it ran */
            const char *id = reg->held[i]->request_id ? reg->held[i]->request_id : "";
            if (id[0])
                router_send_abort(st, &wk->route, id, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST);
        } else {
            adopt_one(st, wk, reg->held[i]);
        }
    }
}
