/* The worker endpoint: Register, Heartbeat, ReserveReply, PrefillDone, TokenEvent, Error in;
 * RegisterAck, ReserveRequest, PrefillTask, Abort, Error out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_transport.h"
#include "router.h"

static const char *str(const char *s) { return s ? s : ""; }

static void send_env(router_state *st, const kv_wire_route *to, const Kvserve__Envelope *env, const char *what)
{
    kv_err err;
    /* ROUTER without ROUTER_MANDATORY never blocks; a vanished worker's messages are dropped. */
    if (kv_wire_send(st->control, to, env, NULL, 0, 0, &err))
        KV_WARN("router", "event=send_failed to=worker msg=%s error=\"%s\"", what, err.msg);
}

static void send_error(router_state *st, const kv_wire_route *to, int code, const char *request_id, const char *msg)
{
    kv_err err;
    if (kv_wire_send_error(st->control, to, code, request_id, msg, &err))
        KV_WARN("router", "event=send_failed to=worker msg=error error=\"%s\"", err.msg);
}

static void fill_sampling(Kvserve__SamplingParams *sp, const kv_sampling_params *s)
{
    kvserve__sampling_params__init(sp);
    sp->temperature = s->temperature;
    sp->top_k = (uint32_t)s->top_k;
    sp->top_p = s->top_p;
    sp->seed = s->seed;
}

void router_send_reserve(router_state *st, router_req *r)
{
    Kvserve__Envelope env;
    Kvserve__ReserveRequest rq;
    Kvserve__SamplingParams sp;
    kv_wire_envelope_init(&env);
    kvserve__reserve_request__init(&rq);
    fill_sampling(&sp, &r->sampling);
    rq.request_id = r->wire_id;
    rq.prompt_tokens = r->n_prompt;
    rq.max_tokens = r->max_tokens;
    rq.sampling = &sp;
    rq.ignore_eos = r->ignore_eos;
    rq.sampling_offset = r->index_base;
    rq.logprobs = r->logprobs;
    /* The prompt itself, for the decode worker's prefix cache; prompt logprobs need every
     * position computed by a prefill worker, so no local prefill then. */
    rq.n_prompt_token_ids = r->n_prompt;
    rq.prompt_token_ids = r->prompt;
    rq.local_prefill_max = r->prompt_logprobs ? 0 : (uint32_t)st->opt.local_prefill_max;
    /* The KV must arrive within the router's own reserve + prefill stages: the router's
     * deadlines fire first, and D's own one cleans up should the router be gone. */
    rq.transfer_deadline_ms = (uint32_t)(st->opt.reserve_deadline_ms + st->opt.prefill_deadline_ms);
    env.body_case = KVSERVE__ENVELOPE__BODY_RESERVE;
    env.reserve = &rq;
    send_env(st, &r->decode->route, &env, "reserve");
}

void router_send_prefill(router_state *st, router_req *r)
{
    Kvserve__Envelope env;
    Kvserve__PrefillTask t;
    Kvserve__SamplingParams sp;
    kv_wire_envelope_init(&env);
    kvserve__prefill_task__init(&t);
    fill_sampling(&sp, &r->sampling);
    t.request_id = r->wire_id;
    t.n_prompt_tokens = r->n_prompt;
    t.prompt_tokens = r->prompt;
    t.sampling = &sp;
    t.sampling_offset = r->index_base;
    t.logprobs = r->logprobs;
    t.prompt_logprobs = r->prompt_logprobs; /* until received: a re-plan after that does not ask */
    t.decode_worker_id = r->decode->id;
    t.decode_kv_endpoint = r->decode->kv_endpoint;
    t.n_decode_block_ids = r->n_block_ids;
    t.decode_block_ids = r->block_ids;
    t.decode_cached_blocks = r->decode_cached_blocks;
    int ack = st->opt.ack_deadline_ms < st->opt.prefill_deadline_ms ? st->opt.ack_deadline_ms
                                                                      : st->opt.prefill_deadline_ms;
    t.ack_deadline_ms = (uint32_t)ack;
    env.body_case = KVSERVE__ENVELOPE__BODY_PREFILL;
    env.prefill = &t;
    send_env(st, &r->prefill->route, &env, "prefill");
}

void router_send_abort(router_state *st, const kv_wire_route *to, const char *wire_id, int reason)
{
    Kvserve__Envelope env;
    Kvserve__Abort a;
    kv_wire_envelope_init(&env);
    kvserve__abort__init(&a);
    a.request_id = (char *)wire_id;
    a.reason = reason;
    env.body_case = KVSERVE__ENVELOPE__BODY_ABORT;
    env.abort = &a;
    send_env(st, to, &env, "abort");
}

static void send_ack(router_state *st, const kv_wire_route *to, int code, const char *msg)
{
    Kvserve__Envelope env;
    Kvserve__RegisterAck ack;
    Kvserve__Error e;
    kv_wire_envelope_init(&env);
    kvserve__register_ack__init(&ack);
    ack.accepted = code == KVSERVE__ERROR_CODE__ERROR_NONE;
    ack.heartbeat_interval_ms = (uint32_t)st->opt.heartbeat_ms;
    if (!ack.accepted) {
        kvserve__error__init(&e);
        e.code = code;
        e.message = (char *)msg;
        ack.error = &e;
    }
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER_ACK;
    env.register_ack = &ack;
    send_env(st, to, &env, "register_ack");
}

static void on_register(router_state *st, const kv_wire_route *route, const Kvserve__Register *reg)
{
    char why[160];
    if (!router_security_register_ok(&st->sec, str(reg->worker_id), route->user, why, sizeof why)) {
        char idbuf[160], pre[9];
        KV_WARN("router", "event=worker_refused worker=%s key=%s reason=\"%s\"",
                router_log_id(str(reg->worker_id), idbuf, sizeof idbuf), kv_zap_key_prefix(route->user, pre), why);
        send_ack(st, route, KVSERVE__ERROR_CODE__INVALID_ARGUMENT, why);
        return;
    }
    router_worker *old = router_workers_find(&st->workers, route);
    if (old && old->pid == reg->pid && old->role == (int)reg->role) {
        /* The same process again (a retry after a lost or late ack): keep its state. */
        send_ack(st, route, KVSERVE__ERROR_CODE__ERROR_NONE, NULL);
        KV_INFO("router", "event=worker_register worker=%s role=%s repeat=1", old->id, router_role_name(old->role));
        return;
    }
    if (old)
        router_worker_gone(st, old, "re-registered as a new process");
    router_model_shape shape = {.n_layers = (uint32_t)st->model.cfg.n_layers,
                                .n_kv_heads = (uint32_t)st->model.cfg.n_kv_heads,
                                .head_dim = (uint32_t)st->model.cfg.head_dim,
                                .fingerprint = st->model.fingerprint};
    char msg[512];
    int code = router_workers_check_register(&st->workers, &shape, reg, msg, sizeof msg);
    if (code) {
        KV_WARN("router", "event=worker_refused worker=%s role=%s code=%s reason=\"%s\"", str(reg->worker_id),
                router_role_name(reg->role), router_code_name(code), msg);
        send_ack(st, route, code, msg);
        return;
    }
    router_worker *wk = router_workers_add(&st->workers, route, reg, st->now);
    if (!wk) {
        send_ack(st, route, KVSERVE__ERROR_CODE__INTERNAL, "router out of memory");
        return;
    }
    wk->prefix_slot = router_prefix_slot_take(&st->prefix);
    send_ack(st, route, KVSERVE__ERROR_CODE__ERROR_NONE, NULL);
    router_adopt_held(st, wk, reg);
    KV_INFO("router", "event=worker_register worker=%s role=%s device=\"%s\" kv_endpoint=%s kv_blocks=%u pid=%u",
            wk->id, router_role_name(wk->role), wk->device, wk->kv_endpoint[0] ? wk->kv_endpoint : "-",
            wk->kv_blocks_total, wk->pid);
}

/* The worker's prefix-cache events into the router's index; a hash that is not 16 bytes is
 * skipped (the index is a routing hint: the workers' own lookups decide what is reused). */
static void on_cache_events(router_state *st, router_worker *wk, const Kvserve__Heartbeat *hb)
{
    if (wk->prefix_slot < 0 || (!hb->cache_reset && !hb->n_cache_stored && !hb->n_cache_evicted))
        return;
    size_t n = hb->n_cache_stored + hb->n_cache_evicted, ns = 0, ne = 0;
    kv_block_hash *h = malloc((n ? n : 1) * sizeof *h);
    if (!h)
        return;
    for (size_t i = 0; i < hb->n_cache_stored; i++)
        if (hb->cache_stored[i].len == 16)
            h[ns++] = kv_block_hash_from_bytes(hb->cache_stored[i].data);
    for (size_t i = 0; i < hb->n_cache_evicted; i++)
        if (hb->cache_evicted[i].len == 16)
            h[ns + ne++] = kv_block_hash_from_bytes(hb->cache_evicted[i].data);
    if (router_prefix_apply(&st->prefix, wk->prefix_slot, hb->cache_reset, h, ns, h + ns, ne))
        KV_WARN("router", "event=prefix_index_full worker=%s", wk->id);
    free(h);
}

/* A message about a request this worker does not hold (from the router's view). */
static void unknown_request(router_state *st, const kv_wire_route *route, const char *what, const char *id,
                            int abort, int registered)
{
    uint32_t seen = 1;
    if (registered && id[0] && strlen(id) < sizeof st->unknown[0].id) {
        unsigned i = 0, n = sizeof st->unknown / sizeof st->unknown[0];
        while (i < n && strcmp(st->unknown[i].id, id))
            i++;
        if (i == n) {
            i = st->unknown_next++ % n;
            snprintf(st->unknown[i].id, sizeof st->unknown[i].id, "%s", id);
            st->unknown[i].count = 0;
        }
        seen = ++st->unknown[i].count;
        if (seen & (seen - 1))
            return; /* not a power of two: said already, often enough */
    }
    char idbuf[160];
    KV_WARN("router", "event=unknown_request msg=%s id=%s registered=%d seen=%u", what,
            router_log_id(id, idbuf, sizeof idbuf), registered, seen);
    send_error(st, route, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, id,
               registered ? "unknown request" : "register first");
    /* Frees orphaned blocks; not a worker's that registers next with what it runs (Register.held). */
    if (abort && (registered || router_resume_forgot(st, route)) && id[0])
        router_send_abort(st, route, id, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST);
}

static void on_reserve_reply(router_state *st, router_worker *wk, const Kvserve__ReserveReply *rr)
{
    const char *id = str(rr->request_id);
    router_req *r = router_requests_find_wire(&st->reqs, id);
    if (!r || r->decode != wk) {
        unknown_request(st, &wk->route, "reserve_reply", id, rr->ok, 1);
        return;
    }
    if (r->state != RQ_RESERVING) {
        KV_WARN("router", "event=duplicate_reserve_reply worker=%s id=%s", wk->id, id);
        return;
    }
    if (wk->promised >= r->blocks)
        wk->promised -= r->blocks;
    else
        wk->promised = 0;
    if (!rr->ok) {
        int code = rr->error && rr->error->code ? (int)rr->error->code : KVSERVE__ERROR_CODE__NO_CAPACITY;
        if (code == KVSERVE__ERROR_CODE__NO_CAPACITY) {
            /* Full after all (our picture was stale): its free blocks are fewer than asked. */
            if (wk->free_est >= (int64_t)r->blocks)
                wk->free_est = (int64_t)r->blocks - 1;
            if (wk->active)
                wk->active--;
            r->decode = NULL;
            router_enter(st, r, RQ_QUEUED);
            router_queue_push_front(&st->reqs, r);
            return;
        }
        char msg[512];
        snprintf(msg, sizeof msg, "decode worker %s refused the reservation: %s", wk->id,
                 rr->error && rr->error->message && rr->error->message[0] ? rr->error->message : "no reason given");
        r->d_done = 1; /* it holds nothing */
        if (wk->active)
            wk->active--;
        r->decode = NULL;
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, code, msg);
        return;
    }
    int bad = rr->n_block_ids != r->blocks;
    for (size_t i = 0; !bad && i < rr->n_block_ids; i++)
        bad = rr->block_ids[i] < 0;
    if (bad) {
        char msg[256];
        snprintf(msg, sizeof msg, "decode worker %s reserved %zu blocks, expected %u valid ids", wk->id,
                 rr->n_block_ids, r->blocks);
        r->state = RQ_PREFILLING; /* blocks may be held: router_end aborts them */
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL, msg);
        return;
    }
    uint32_t bs = st->workers.layout.block_size;
    if ((uint64_t)rr->cached_blocks * bs >= r->n_prompt) {
        char msg[256];
        snprintf(msg, sizeof msg, "decode worker %s claims %u cached blocks of a %u-token prompt", wk->id,
                 rr->cached_blocks, r->n_prompt);
        r->state = RQ_PREFILLING; /* blocks are held: router_end aborts them */
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL, msg);
        return;
    }
    wk->free_est -= (int64_t)r->blocks;
    r->prefill_cached_tokens = 0; /* of this attempt, from its PrefillDone */
    r->decode_cached_blocks = rr->cached_blocks;
    r->decode_cached_tokens = rr->cached_blocks * bs;
    r->kv_bytes_saved = (uint64_t)rr->cached_blocks * st->workers.layout.block_bytes;
    r->local_prefill = rr->local_prefill ? 1 : 0;
    router_metrics_prefix(&st->metrics, 1, r->n_prompt, r->decode_cached_tokens, r->kv_bytes_saved);
    if (r->local_prefill) {
        /* D prefills the tail itself and streams the first token: no prefill stage. */
        router_metrics_prefill_computed(&st->metrics, r->n_prompt - r->decode_cached_tokens);
        r->p_done = 1;
        router_enter(st, r, RQ_PREFILLING);
        return;
    }
    r->block_ids = malloc(rr->n_block_ids * sizeof *r->block_ids);
    uint32_t hits[ROUTER_PREFIX_SLOTS];
    router_pick_hint hint;
    router_worker *p = router_pick_prefill_by(&st->workers, router_blocks_for(r->n_prompt, bs), wk,
                                              router_hint_for(st, r, hits, &hint));
    if (!r->block_ids || !p) {
        /* No prefill worker now (it died meanwhile): give the blocks back and wait in the queue. */
        free(r->block_ids);
        r->block_ids = NULL;
        router_send_abort(st, &wk->route, r->wire_id, KVSERVE__ERROR_CODE__NO_CAPACITY);
        if (wk->active)
            wk->active--;
        r->decode = NULL;
        router_enter(st, r, RQ_QUEUED);
        router_queue_push_front(&st->reqs, r);
        return;
    }
    memcpy(r->block_ids, rr->block_ids, rr->n_block_ids * sizeof *r->block_ids);
    r->n_block_ids = rr->n_block_ids;
    r->prefill = p;
    p->active++;
    router_enter(st, r, RQ_PREFILLING);
    router_send_prefill(st, r);
}

static void on_prefill_done(router_state *st, router_worker *wk, const Kvserve__PrefillDone *pd)
{
    const char *id = str(pd->request_id);
    router_req *r = router_requests_find_wire(&st->reqs, id);
    if (!r || r->prefill != wk) {
        unknown_request(st, &wk->route, "prefill_done", id, 0, 1);
        return;
    }
    r->p_done = 1; /* ok or not, P no longer holds the request */
    if (wk->active)
        wk->active--;
    r->prefill = NULL;
    if (!pd->ok) {
        int code = pd->error && pd->error->code ? (int)pd->error->code : KVSERVE__ERROR_CODE__INTERNAL;
        if (code == KVSERVE__ERROR_CODE__NO_TRANSPORT && r->decode) {
            if (router_pair_refuse(wk, r->decode))
                code = KVSERVE__ERROR_CODE__INTERNAL; /* unmarked: a retry would meet the same pair */
            KV_WARN("router", "event=kv_pair_refused prefill=%s decode=%s reason=\"%s\"", wk->id, r->decode->id,
                    pd->error && pd->error->message ? pd->error->message : "");
        }
        char msg[512];
        snprintf(msg, sizeof msg, "prefill worker %s: %s", wk->id,
                 pd->error && pd->error->message && pd->error->message[0] ? pd->error->message : "prefill failed");
        router_fail_request(st, r, code, msg);
        return;
    }
    r->prefill_ms = pd->prefill_ms;
    r->transfer_ms = pd->transfer_ms;
    r->prefill_cached_tokens = pd->cached_tokens < r->n_prompt ? pd->cached_tokens : 0;
    router_metrics_prefix(&st->metrics, 0, r->n_prompt, r->prefill_cached_tokens, 0);
    router_metrics_prefill_computed(&st->metrics, r->n_prompt - r->prefill_cached_tokens);
    r->kv_bytes = pd->kv_bytes;
    snprintf(r->kv_transport, sizeof r->kv_transport, "%s", kv_transport_name((kv_transport)pd->transport));
    router_metrics_transfer(&st->metrics, (int)pd->transport, pd->kv_bytes, pd->transfer_ms * 1e-3);
    router_enter(st, r, r->state == RQ_PREFILLING ? RQ_TRANSFERRING : r->state);
    router_maybe_complete(st, r);
}

static void on_token_event(router_state *st, router_worker *wk, const Kvserve__TokenEvent *ev)
{
    const char *id = str(ev->request_id);
    router_req *r = router_requests_find_wire(&st->reqs, id);
    if (r && r->d_done && !r->decode)
        return; /* a late event after the finish; the final reply waits for PrefillDone */
    if (!r || r->decode != wk) {
        unknown_request(st, &wk->route, "token_event", id,
                        ev->finish_reason == KVSERVE__FINISH_REASON__FINISH_NONE, 1);
        return;
    }
    if (r->state == RQ_RESERVING) {
        send_error(st, &wk->route, KVSERVE__ERROR_CODE__BAD_MESSAGE, id, "TokenEvent before the reservation reply");
        return;
    }
    router_on_tokens(st, r, ev);
}

static void on_worker_error(router_state *st, router_worker *wk, const Kvserve__Error *e)
{
    const char *id = str(e->request_id);
    char idbuf[160];
    KV_WARN("router", "event=worker_error worker=%s code=%s id=%s message=\"%s\"", wk ? wk->id : "(unregistered)",
            router_code_name(e->code), router_log_id(id, idbuf, sizeof idbuf), str(e->message));
    if (!wk || !id[0])
        return;
    router_req *r = router_requests_find_wire(&st->reqs, id);
    if (!r || (r->decode != wk && r->prefill != wk))
        return;
    char msg[512];
    snprintf(msg, sizeof msg, "%s worker %s: %s", router_role_name(wk->role), wk->id, str(e->message));
    router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, e->code ? (int)e->code : KVSERVE__ERROR_CODE__INTERNAL,
               msg);
}

void router_control_handle(router_state *st, kv_wire_msg *m)
{
    const Kvserve__Envelope *env = m->env;
    router_worker *wk = router_workers_find(&st->workers, &m->route);
    switch (env->body_case) {
    case KVSERVE__ENVELOPE__BODY_REGISTER:
        on_register(st, &m->route, env->register_);
        return;
    case KVSERVE__ENVELOPE__BODY_ERROR:
        on_worker_error(st, wk, env->error);
        return;
    case KVSERVE__ENVELOPE__BODY_HEARTBEAT:
        if (wk) {
            router_workers_heartbeat(wk, env->heartbeat, st->now);
            on_cache_events(st, wk, env->heartbeat);
        } else
            unknown_request(st, &m->route, "heartbeat", "", 0, 0);
        return;
    case KVSERVE__ENVELOPE__BODY_RESERVE_REPLY:
        if (wk)
            on_reserve_reply(st, wk, env->reserve_reply);
        else
            unknown_request(st, &m->route, "reserve_reply", str(env->reserve_reply->request_id),
                            env->reserve_reply->ok, 0);
        return;
    case KVSERVE__ENVELOPE__BODY_PREFILL_DONE:
        if (wk)
            on_prefill_done(st, wk, env->prefill_done);
        else
            unknown_request(st, &m->route, "prefill_done", str(env->prefill_done->request_id), 0, 0);
        return;
    case KVSERVE__ENVELOPE__BODY_TOKENS:
        if (wk)
            on_token_event(st, wk, env->tokens);
        else
            unknown_request(st, &m->route, "token_event", str(env->tokens->request_id),
                            env->tokens->finish_reason == KVSERVE__FINISH_REASON__FINISH_NONE, 0);
        return;
    default: {
        char msg[128];
        snprintf(msg, sizeof msg, "unexpected message body %d on the router's control endpoint", (int)env->body_case);
        KV_WARN("router", "event=bad_message endpoint=control reason=\"%s\"", msg);
        send_error(st, &m->route, KVSERVE__ERROR_CODE__BAD_MESSAGE, "", msg);
        return;
    }
    }
}
