/* The request flow: FIFO scheduling, state changes with their deadlines, token delivery,
 * completion and failure (with Abort to the workers that still hold the request). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_wire_logprobs.h"
#include "router.h"

const char *router_log_id(const char *id, char *buf, size_t cap)
{
    size_t i = 0;
    for (; id[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)id[i];
        buf[i] = c <= ' ' || c == '"' || c == '=' || c == 0x7f ? '_' : (char)c;
    }
    buf[i] = '\0';
    return i ? buf : "-";
}

const char *router_code_name(int code)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&kvserve__error_code__descriptor, code);
    return v ? v->name : "?";
}

void router_note_deadline(router_state *st, double when)
{
    if (when > 0 && (st->next_check == 0 || when < st->next_check))
        st->next_check = when;
}

void router_enter(router_state *st, router_req *r, router_req_state state)
{
    router_req_enter(r, state, &st->dl, st->now);
    router_note_deadline(st, router_req_next_deadline(r));
}

/* The decode worker no longer holds the request's blocks (it finished or failed it). */
static void release_decode(router_req *r, int blocks_freed)
{
    router_worker *d = r->decode;
    if (!d)
        return;
    if (r->state == RQ_RESERVING && d->promised >= r->blocks)
        d->promised -= r->blocks;
    if (blocks_freed && r->n_block_ids)
        d->free_est += (int64_t)r->n_block_ids;
    if (d->active)
        d->active--;
    r->decode = NULL;
}

static void release_prefill(router_req *r)
{
    if (r->prefill && r->prefill->active)
        r->prefill->active--;
    r->prefill = NULL;
}

static const char *finish_name(int finish)
{
    switch (finish) {
    case KVSERVE__FINISH_REASON__FINISH_EOS: return "eos";
    case KVSERVE__FINISH_REASON__FINISH_LENGTH: return "length";
    case KVSERVE__FINISH_REASON__FINISH_CONTEXT: return "context";
    case KVSERVE__FINISH_REASON__FINISH_CANCELLED: return "cancelled";
    case KVSERVE__FINISH_REASON__FINISH_ERROR: return "error";
    case KVSERVE__FINISH_REASON__FINISH_STOP: return "stop";
    default: return "none";
    }
}

/* The metrics of an ended request (router_metrics.h), from its final timings t. */
static void count_finished(router_state *st, const router_req *r, int finish, int code, const Kvserve__Timings *t)
{
    router_end_kind kind = ROUTER_END_ERROR;
    if (!code && (finish == KVSERVE__FINISH_REASON__FINISH_EOS || finish == KVSERVE__FINISH_REASON__FINISH_STOP))
        kind = ROUTER_END_STOP;
    else if (!code && (finish == KVSERVE__FINISH_REASON__FINISH_LENGTH ||
                       finish == KVSERVE__FINISH_REASON__FINISH_CONTEXT))
        kind = ROUTER_END_LENGTH;
    else if (!code && finish == KVSERVE__FINISH_REASON__FINISH_CANCELLED)
        kind = r->stop_matched ? ROUTER_END_STOP : ROUTER_END_ABORT;
    double queue_s = t->queue_ms * 1e-3, prefill_s = -1, decode_s = -1;
    if (r->t_first_token > 0) {
        prefill_s = t->ttft_ms * 1e-3 - queue_s;
        if (prefill_s < 0)
            prefill_s = 0; /* re-planned after its first token: dispatched again since */
        decode_s = r->t_last_token - r->t_first_token;
    }
    router_metrics_finished(&st->metrics, kind, code ? code : KVSERVE__ERROR_CODE__INTERNAL, t->total_ms * 1e-3,
                            queue_s, prefill_s, decode_s);
}

void router_end(router_state *st, router_req *r, int finish, int code, const char *msg)
{
    if (code)
        finish = KVSERVE__FINISH_REASON__FINISH_ERROR;
    int abort_reason = code ? code : KVSERVE__ERROR_CODE__CANCELLED;
    router_queue_remove(&st->reqs, r);
    if (r->decode && !r->d_done)
        router_send_abort(st, &r->decode->route, r->wire_id, abort_reason);
    if (r->prefill && !r->p_done)
        router_send_abort(st, &r->prefill->route, r->wire_id, abort_reason);
    router_req_state was = r->state;
    release_decode(r, 0);
    release_prefill(r);
    r->state = RQ_DONE;
    router_client_send_output(st, r, 1, finish, code, msg);

    Kvserve__Timings t;
    router_req_timings(r, st->now, &t);
    char idbuf[160];
    const char *ename = code ? router_code_name(code) : "";
    kv_log(code ? KV_LOG_WARN : KV_LOG_INFO, "router",
           "event=request_done id=%s state=%s prompt_tokens=%u generated=%u queue_ms=%.2f prefill_ms=%.2f "
           "transfer_ms=%.2f ttft_ms=%.2f decode_ms=%.2f total_ms=%.2f kv_bytes=%llu kv_transport=%s finish=%s%s%s",
           router_log_id(r->id, idbuf, sizeof idbuf),
           finish == KVSERVE__FINISH_REASON__FINISH_EOS || finish == KVSERVE__FINISH_REASON__FINISH_LENGTH ||
                   finish == KVSERVE__FINISH_REASON__FINISH_CONTEXT || finish == KVSERVE__FINISH_REASON__FINISH_STOP
               ? "done"
               : router_req_state_name(was), /* where it failed or was cancelled */
           t.prompt_tokens,
           t.generated_tokens, t.queue_ms, t.prefill_ms, t.transfer_ms, t.ttft_ms, t.decode_ms, t.total_ms,
           (unsigned long long)t.kv_bytes, r->kv_transport[0] ? r->kv_transport : "-", finish_name(finish),
           code ? " error=" : "", ename);
    if (code)
        st->requests_failed++;
    count_finished(st, r, finish, code, &t);
    router_requests_remove(&st->reqs, r);
}

void router_maybe_complete(router_state *st, router_req *r)
{
    if (r->d_done && r->p_done && !r->orphan) /* an orphan's tokens wait for its client */
        router_end(st, r, r->d_finish, 0, NULL);
}

/* One in-order run of tokens from the decode worker. */
static int deliver_tokens(void *ctx, router_req *r, const int32_t *tokens, const kc_logprobs *lp, size_t n, int finish,
                          double decode_ms)
{
    router_state *st = ctx;
    if (n) {
        router_metrics_delivered(&st->metrics, n, r->t_first_token == 0, st->now, r->t_accept, r->t_last_token,
                                 r->n_prompt_orig);
        r->t_last_token = st->now;
    }
    if (n && r->t_first_token == 0)
        r->t_first_token = st->now;
    if (decode_ms > 0)
        r->decode_ms = decode_ms;
    size_t text_from = r->text_len;
    if (router_req_append_output(r, tokens, lp, n))
        return KV_ENOMEM;
    if (!r->stop_matched && router_stop_scan(&r->stop, r->out_text + text_from, r->text_len - text_from))
        r->stop_matched = 1; /* router_on_tokens ends it */
    if (finish != KVSERVE__FINISH_REASON__FINISH_NONE) {
        r->d_done = 1;
        r->d_finish = finish;
        r->t_d_done = st->now;
        r->dl_token = 0;
        release_decode(r, 1); /* D frees the blocks when it reports the finish */
    } else {
        r->dl_token = st->now + st->dl.token_s;
        router_note_deadline(st, r->dl_token);
    }
    /* Streaming: forward now, unless this is the end and the final reply goes out at once. */
    if (r->stream && r->n_out && !(r->d_done && r->p_done) && !r->stop_matched)
        router_client_send_output(st, r, 0, KVSERVE__FINISH_REASON__FINISH_NONE, 0, NULL);
    return 0;
}

/* A TokenEvent's logprobs: the tokens' (into *lp, malloc'd, one per token, when the
 * request asked; D must send them then), and the prompt's (kept for the next reply, the
 * first time they come). 0, or -1 with msg (the event is bad). */
static int router_take_logprobs(router_state *st, router_req *r, const Kvserve__TokenEvent *ev, kc_logprobs **lp,
                                char *msg, size_t cap)
{
    *lp = NULL;
    if (!r->logprobs)
        return 0;
    int vocab = st->model.cfg.vocab_size, top = (int)r->logprobs - 1;
    kv_err err;
    if (ev->n_logprobs != ev->n_tokens)
        return snprintf(msg, cap, "decode worker sent %zu logprobs for %zu tokens", ev->n_logprobs, ev->n_tokens), -1;
    if (ev->n_tokens && !(*lp = malloc(ev->n_tokens * sizeof **lp)))
        return snprintf(msg, cap, "out of memory"), -1;
    for (size_t i = 0; i < ev->n_tokens; i++)
        if (kv_wire_logprobs_from_proto(ev->logprobs[i], vocab, top, &(*lp)[i], &err))
            return snprintf(msg, cap, "decode worker's logprobs: %.400s", err.msg), -1;
    if (!r->prompt_logprobs || !ev->n_prompt_logprobs)
        return 0;
    /* A re-planned attempt's prompt is longer (it ends with delivered tokens): the client's
     * prompt is its first n_prompt_orig tokens. */
    size_t n = r->n_prompt_orig > 0 ? r->n_prompt_orig - 1 : 0;
    if (ev->n_prompt_logprobs < n)
        return snprintf(msg, cap, "decode worker sent %zu prompt logprobs for %zu positions", ev->n_prompt_logprobs,
                        n), -1;
    if (n && !(r->prompt_lp = malloc(n * sizeof *r->prompt_lp)))
        return snprintf(msg, cap, "out of memory"), -1;
    for (size_t i = 0; i < n; i++)
        if (kv_wire_logprobs_from_proto(ev->prompt_logprobs[i], vocab, top, &r->prompt_lp[i], &err))
            return snprintf(msg, cap, "decode worker's prompt logprobs: %.400s", err.msg), -1;
    r->n_prompt_lp = n;
    r->prompt_logprobs = 0; /* received: a re-plan does not ask again */
    return 0;
}

void router_on_tokens(router_state *st, router_req *r, const Kvserve__TokenEvent *ev)
{
    if (ev->finish_reason == KVSERVE__FINISH_REASON__FINISH_ERROR ||
        ev->finish_reason == KVSERVE__FINISH_REASON__FINISH_CANCELLED) {
        /* D dropped the request and freed its blocks. */
        int code = ev->error && ev->error->code ? (int)ev->error->code
                   : ev->finish_reason == KVSERVE__FINISH_REASON__FINISH_CANCELLED ? KVSERVE__ERROR_CODE__CANCELLED
                                                                                   : KVSERVE__ERROR_CODE__INTERNAL;
        char msg[512];
        snprintf(msg, sizeof msg, "decode worker %s: %s", r->decode ? r->decode->id : "?",
                 ev->error && ev->error->message && ev->error->message[0] ? ev->error->message : "request failed");
        r->d_done = 1;
        release_decode(r, 1);
        router_fail_request(st, r, code, msg);
        return;
    }
    if (ev->finish_reason > KVSERVE__FINISH_REASON__FINISH_ERROR) {
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL,
                   "decode worker sent an unknown finish reason");
        return;
    }
    /* A re-planned attempt numbers its tokens from 0; the client's stream goes on. */
    uint64_t index = (uint64_t)ev->index + r->index_base;
    if (index > UINT32_MAX) {
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__BAD_MESSAGE,
                   "token index out of range");
        return;
    }
    kc_logprobs *lp = NULL;
    char msg[512];
    if (router_take_logprobs(st, r, ev, &lp, msg, sizeof msg)) {
        free(lp);
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__BAD_MESSAGE, msg);
        return;
    }
    int rc = router_req_accept_tokens(r, (uint32_t)index, ev->tokens, lp, ev->n_tokens, ev->finish_reason,
                                      ev->decode_ms, deliver_tokens, st);
    free(lp);
    if (rc) {
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL,
                   rc == KV_EFULL ? "too many token events out of order" : "out of memory");
        return;
    }
    if ((r->state == RQ_PREFILLING || r->state == RQ_TRANSFERRING) && r->next_index > 0)
        router_enter(st, r, RQ_DECODING);
    if (r->stop_matched) {
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_STOP, 0, NULL);
        return;
    }
    router_maybe_complete(st, r);
}

const router_pick_hint *router_hint_for(const router_state *st, const router_req *r, uint32_t *hits,
                                        router_pick_hint *hint)
{
    if (!st->opt.route_cache || !st->workers.have_layout)
        return NULL;
    const router_layout *l = &st->workers.layout;
    uint32_t n = r->n_prompt / l->block_size;
    kv_block_hash *chain = malloc((n ? n : 1) * sizeof *chain);
    if (!chain)
        return NULL; /* by load, then */
    kv_block_hash root = kv_prefix_root_of(st->model.fingerprint, l->dtype, l->n_layers, l->n_kv_heads,
                                           l->head_dim, l->block_size, l->block_bytes);
    n = (uint32_t)kv_prefix_chain(root, r->prompt, (int32_t)r->n_prompt, (int)l->block_size, chain, (int32_t)n);
    router_prefix_hits(&st->prefix, chain, n, hits);
    free(chain);
    *hint = (router_pick_hint){.hits = hits, .prompt_tokens = r->n_prompt, .block_size = l->block_size,
                               .load_tokens = st->opt.route_load_tokens, .balance = st->opt.route_balance};
    return hint;
}

void router_schedule(router_state *st)
{
    if (!st->workers.have_layout)
        return; /* no workers: requests wait (until the queue deadline) */
    uint32_t bs = st->workers.layout.block_size;
    router_req *r;
    while ((r = st->reqs.qhead)) {
        uint32_t seq_tokens = r->n_prompt + r->max_tokens;
        uint32_t need = router_blocks_for(seq_tokens, bs);
        uint32_t pblocks = router_blocks_for(r->n_prompt, bs);
        char msg[256];
        if (router_never_fits_decode(&st->workers, need, seq_tokens)) {
            snprintf(msg, sizeof msg,
                     "the request needs %u KV blocks (%u prompt + %u new tokens): more than any decode worker holds",
                     need, r->n_prompt, r->max_tokens);
            router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__NO_CAPACITY, msg);
            continue;
        }
        if (router_never_fits_prefill(&st->workers, pblocks)) {
            snprintf(msg, sizeof msg, "the prompt needs %u KV blocks: more than any prefill worker holds", pblocks);
            router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__NO_CAPACITY, msg);
            continue;
        }
        if (router_no_pair(&st->workers, need, seq_tokens, pblocks)) {
            snprintf(msg, sizeof msg, "no prefill/decode pair can take the request: every pair that could found "
                                      "no KV transport in common at its handshake (see the workers' --kv-transport)");
            router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__NO_TRANSPORT, msg);
            continue;
        }
        uint32_t hits[ROUTER_PREFIX_SLOTS];
        router_pick_hint hint;
        const router_pick_hint *h = router_hint_for(st, r, hits, &hint);
        router_worker *d = router_pick_decode_by(&st->workers, need, seq_tokens, h);
        if (!d || !router_pick_prefill_by(&st->workers, pblocks, d, h))
            break; /* FIFO: the head waits for capacity, and so does everything behind it */
        router_queue_remove(&st->reqs, r);
        r->decode = d;
        r->blocks = need;
        d->promised += need;
        d->active++;
        router_enter(st, r, RQ_RESERVING);
        router_send_reserve(st, r);
    }
}

#define ROUTER_MAX_REPLANS 3

/* A worker of r died (dead), or the KV hand-off between two live ones failed (dead NULL):
 * run the request again from what the client already has. The prompt becomes prompt +
 * delivered tokens (re-prefilled: K/V of the delivered tokens are recomputed), the budget
 * shrinks by as many, the sampler stream continues (the workers advance by
 * sampling_offset), and the client's stream index goes on. A live worker still holding
 * the old attempt gets an Abort (abort_code) and frees its blocks. Returns 0 when the
 * request is back in the queue (or complete), else the caller fails it. */
static int replan(router_state *st, router_req *r, const router_worker *dead, int abort_code, const char *cause)
{
    if (r->replans >= ROUTER_MAX_REPLANS || r->orphan) /* an orphan has nobody to run it for */
        return -1;
    if (r->decode && r->decode != dead && !r->d_done) {
        router_send_abort(st, &r->decode->route, r->wire_id, abort_code);
        release_decode(r, 1);
    }
    if (r->prefill && r->prefill != dead && !r->p_done) {
        router_send_abort(st, &r->prefill->route, r->wire_id, abort_code);
        release_prefill(r);
    }
    if (dead && r->decode == dead) /* its blocks died with it */
        r->decode = NULL;
    if (dead && r->prefill == dead)
        r->prefill = NULL;
    if (r->max_tokens <= r->next_index - r->index_base) {
        /* Everything was delivered; only the finish was lost. */
        r->d_done = r->p_done = 1;
        r->d_finish = KVSERVE__FINISH_REASON__FINISH_LENGTH;
        router_maybe_complete(st, r);
        return 0;
    }
    if (router_req_restart_after_delivered(r) || router_requests_rewire(&st->reqs, r))
        return -1;
    r->replans++;
    st->requests_replanned++;
    char idbuf[160];
    KV_WARN("router", "event=request_replanned id=%s cause=\"%.300s\" delivered=%u remaining=%u attempt=%d",
            router_log_id(r->id, idbuf, sizeof idbuf), cause, r->index_base, r->max_tokens, r->replans + 1);
    router_enter(st, r, RQ_QUEUED);
    router_queue_push_front(&st->reqs, r);
    return 0;
}

/* Failures of the KV hand-off that a second attempt gets past: bytes that arrived wrong, a
 * GPU session the decode worker dropped (its communicator torn down by another failure),
 * a peer the prefill worker could not reach or whose link broke, a pair with no transport
 * in common (on_prefill_done has marked it: the next attempt goes to another pair, or
 * fails at once if none is left). Not a missed deadline: that wait was already as long as
 * the router lets a stage take. */
static int transfer_retryable(int code)
{
    return code == KVSERVE__ERROR_CODE__KV_CORRUPT || code == KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN ||
           code == KVSERVE__ERROR_CODE__WORKER_FAILED || code == KVSERVE__ERROR_CODE__NO_TRANSPORT;
}

void router_fail_request(router_state *st, router_req *r, int code, const char *msg)
{
    if (transfer_retryable(code) && r->next_index == r->index_base &&
        (r->state == RQ_PREFILLING || r->state == RQ_TRANSFERRING) && replan(st, r, NULL, code, msg) == 0)
        return;
    router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, code, msg);
}

void router_worker_gone(router_state *st, router_worker *wk, const char *why)
{
    router_resume_note_gone(st, wk->id);
    char msg[512];
    snprintf(msg, sizeof msg, "%s worker %s failed: %s", router_role_name(wk->role), wk->id, why);
    /* Newest first, so that re-queued requests keep their order at the front of the FIFO. */
    router_req *r = st->reqs.tail;
    while (r) {
        router_req *prev = r->prev;
        if (r->decode == wk) {
            if (r->state == RQ_RESERVING) {
                /* No KV anywhere yet: the request goes back to the front of the queue. */
                release_decode(r, 0);
                router_enter(st, r, RQ_QUEUED);
                router_queue_push_front(&st->reqs, r);
            } else {
                if (wk->active)
                    wk->active--;
                if (replan(st, r, wk, KVSERVE__ERROR_CODE__WORKER_FAILED, msg)) {
                    r->decode = NULL; /* nothing to abort there */
                    router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__WORKER_FAILED, msg);
                }
            }
        } else if (r->prefill == wk) {
            if (r->next_index > r->index_base) {
                /* The decode worker verified the KV and is generating: P's part is over. */
                r->prefill = NULL;
                r->p_done = 1;
                router_enter(st, r, r->state);
                router_maybe_complete(st, r);
            } else if (replan(st, r, wk, KVSERVE__ERROR_CODE__WORKER_FAILED, msg)) {
                r->prefill = NULL;
                router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__WORKER_FAILED, msg);
            }
        }
        r = prev;
    }
    KV_WARN("router", "event=worker_dead worker=%s role=%s reason=\"%s\"", wk->id, router_role_name(wk->role), why);
    router_prefix_slot_release(&st->prefix, wk->prefix_slot);
    router_workers_remove(&st->workers, wk);
}

void router_expire(router_state *st, double now)
{
    st->next_check = 0;
    router_req *r = st->reqs.head;
    while (r) {
        router_req *next = r->next;
        char msg[512];
        int code = router_resume_unpark(st, r, now) ? 0 : router_req_expired(r, now, &st->dl, msg, sizeof msg);
        if (code)
            router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, code, msg);
        else
            router_note_deadline(st, router_req_next_deadline(r));
        r = next;
    }
}
