#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_time.h"
#include "kv_wire_logprobs.h"
#include "prefill.h"
#include "worker_proto.h"

#define COMP "kv-prefill"

static uint32_t ack_deadline_ms(const prefill_task *t)
{
    return t->t->ack_deadline_ms ? t->t->ack_deadline_ms : PREFILL_DEFAULT_ACK_DEADLINE_MS;
}

static void send_done(prefill_worker *pw, const prefill_task *t, int ok, Kvserve__ErrorCode code, const char *msg)
{
    Kvserve__PrefillDone d;
    Kvserve__Error e;
    kvserve__prefill_done__init(&d);
    d.request_id = (char *)t->id;
    d.ok = ok ? 1 : 0;
    if (!ok) {
        worker_error_init(&e, code, t->id, msg);
        d.error = &e;
    }
    d.first_token = ok ? t->first_token : 0;
    d.prefill_ms = t->prefill_s * 1e3;
    d.transfer_ms = t->t_first_send > 0 ? (kv_now_s() - t->t_first_send) * 1e3 : 0;
    d.kv_bytes = t->kv_bytes;
    d.transport = (Kvserve__KvTransport)t->transport;
    d.kv_chunks = t->chunk_seq;
    d.cached_tokens = (uint32_t)t->cached_tokens;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_PREFILL_DONE;
    env.prefill_done = &d;
    worker_send(pw->ctl->sock, NULL, &env, 200, COMP, "PrefillDone");
}

/* A task that ends without the decode worker's ok leaves an NCCL pair in an unknown state
 * (sends that nobody receives, a receiver that gave up): both sides start afresh. */
static void drop_transport_state(prefill_worker *pw, prefill_task *t, const char *why)
{
    if (t->peer && t->peer->state == PEER_READY && t->peer->transport == KV_TRANSPORT_NCCL && t->sent_blocks)
        kv_sender_reset(&pw->sender, t->peer, why);
}

/* Ends the current task: PrefillDone to the router, the blocks back to the pool. Only now,
 * after the decode worker's verdict (or the deadline), may the blocks be reused. */
static void finish(prefill_worker *pw, int ok, Kvserve__ErrorCode code, const char *msg)
{
    prefill_task *t = pw->cur;
    if (!ok)
        drop_transport_state(pw, t, msg);
    double transfer_ms = t->t_first_send > 0 ? (kv_now_s() - t->t_first_send) * 1e3 : 0;
    if (ok)
        KV_INFO(COMP, "msg=\"task done\" request=%s prompt_tokens=%zu first_token=%d prefill_ms=%.2f transfer_ms=%.2f "
                      "kv_bytes=%llu chunks=%u decode=%s transport=%s",
                t->id, t->t->n_prompt_tokens, t->first_token, t->prefill_s * 1e3, transfer_ms,
                (unsigned long long)t->kv_bytes, t->chunk_seq, t->t->decode_worker_id,
                kv_transport_name(t->transport));
    else
        KV_WARN(COMP, "msg=\"task failed\" request=%s error=%s reason=\"%s\" prefill_ms=%.2f transfer_ms=%.2f",
                t->id, worker_error_name(code), msg, t->prefill_s * 1e3, transfer_ms);
    if (ok)
        prefill_prefix_store(pw, t); /* after D's ack: the blocks' K/V are what it verified */
    send_done(pw, t, ok, code, msg);
    pw->cur = NULL;
    prefill_task_retire(pw, t);
}

static void start_next(prefill_worker *pw)
{
    prefill_task *t = prefill_queue_pop(pw);
    pw->cur = t;
    Kvserve__ErrorCode code;
    kv_err err;
    if (prefill_task_validate(pw, t, &code, &err)) {
        finish(pw, 0, code, err.msg);
        return;
    }
    if (!(t->peer = kv_sender_peer_for(&pw->sender, t->t->decode_kv_endpoint, t->t->decode_worker_id, &err))) {
        finish(pw, 0, err.code == KV_ENOMEM ? KVSERVE__ERROR_CODE__INTERNAL : KVSERVE__ERROR_CODE__INVALID_ARGUMENT,
               err.msg);
        return;
    }
    t->state = PT_PREFILLING;
    t->t_start = kv_now_s();
    if (prefill_prefix_lookup(pw, t, &err)) {
        finish(pw, 0, KVSERVE__ERROR_CODE__INTERNAL, err.msg);
        return;
    }
    t->sent_blocks = (int)t->t->decode_cached_blocks; /* D holds those: never shipped */
    KV_INFO(COMP,
            "msg=\"task start\" request=%s prompt_tokens=%zu cached_tokens=%d decode_cached_blocks=%u decode=%s "
            "endpoint=%s queued_ms=%.2f",
            t->id, t->t->n_prompt_tokens, t->cached_tokens, t->t->decode_cached_blocks, t->t->decode_worker_id,
            t->t->decode_kv_endpoint, (t->t_start - t->t_queued) * 1e3);
}

/* Ships blocks [sent_blocks, upto) of the current task. */
static int ship(prefill_worker *pw, prefill_task *t, int upto, int last)
{
    int bs = pw->we->pool->shape.block_size;
    kv_chunk_desc c = {
        .request_id = t->id,
        .seq = t->chunk_seq,
        .first_block = (uint32_t)t->sent_blocks,
        .src = t->seq.blocks + t->sent_blocks,
        .dst = t->t->decode_block_ids + t->sent_blocks,
        .n_blocks = upto - t->sent_blocks,
        .n_tokens = (uint32_t)(upto * bs < t->done ? upto * bs : t->done), /* covered by blocks [0, upto) */
        .last = last,
        .first_token = t->first_token,
    };
    /* The logprobs ride on the last chunk (to D, which streams the first token). */
    Kvserve__TokenLogprobs first_m, *prompt_m = NULL, **prompt_p = NULL;
    size_t n_prompt_lp = t->prompt_lp && t->t->n_prompt_tokens > 1 ? t->t->n_prompt_tokens - 1 : 0;
    if (last && t->lp_top >= 0) {
        kv_wire_logprobs_to_proto(&t->first_lp, &first_m);
        c.first_logprobs = &first_m;
        if (n_prompt_lp) {
            prompt_m = malloc(n_prompt_lp * sizeof *prompt_m);
            prompt_p = malloc(n_prompt_lp * sizeof *prompt_p);
            if (!prompt_m || !prompt_p) {
                free(prompt_m), free(prompt_p);
                finish(pw, 0, KVSERVE__ERROR_CODE__INTERNAL, "out of memory (prompt logprobs)");
                return -1;
            }
            kv_wire_logprobs_to_protos(t->prompt_lp, n_prompt_lp, prompt_m, prompt_p);
            c.prompt_logprobs = prompt_p;
            c.n_prompt_logprobs = n_prompt_lp;
        }
    }
    uint32_t ack_ms = ack_deadline_ms(t);
    int timeout = ack_ms < PREFILL_SEND_TIMEOUT_MS ? (int)ack_ms : PREFILL_SEND_TIMEOUT_MS;
    if (t->t_first_send <= 0)
        t->t_first_send = kv_now_s();
    kv_err err;
    kv_send_hold hold = {&t->frames_in_flight, NULL};
    t->transport = t->peer->transport;
    int rc = kv_sender_send(&pw->sender, t->peer, pw->we->engine, &c, timeout, &hold, &t->kv_bytes, &err);
    free(prompt_m);
    free(prompt_p);
    prefill_task_hold_op(t, hold.op);
    if (rc) {
        char msg[1200];
        snprintf(msg, sizeof msg, "cannot send KV to decode worker %s at %s over %s: %s", t->t->decode_worker_id,
                 t->peer->endpoint, kv_transport_name(t->peer->transport), err.msg);
        t->sent_blocks = upto; /* some of it may have left: the pair's state is unknown */
        finish(pw, 0, KVSERVE__ERROR_CODE__WORKER_FAILED, msg);
        return -1;
    }
    KV_DEBUG(COMP, "msg=\"kv chunk sent\" request=%s seq=%u first_block=%u blocks=%d n_tokens=%u last=%d", t->id,
             c.seq, c.first_block, c.n_blocks, c.n_tokens, last);
    t->sent_blocks = upto;
    t->last_sent = last;
    t->chunk_seq++;
    return 0;
}

/* Ships what is computed and not yet sent: sealed blocks, and once the prompt is done the
 * rest with the first token; then the task waits for the KvAck. Over zmq in KvChunks of
 * at most --kv-message-kib: ZeroMQ hands a multipart message over only once all of it has
 * arrived, so one message per prefill chunk (128 blocks of 2 MiB for Llama-3-8B at chunk
 * 2048) would leave the decode worker idle until the last byte, then checksum and store
 * everything after the wire is done; pieces overlap the three. Measured on stories110m
 * blocks (1.1 MiB) over loopback: 2 / 4 / 8 MiB pieces cut the transfer of a 256-token
 * prompt from 21 ms to 13 / 12 / 13 ms. */
static void ship_pending(prefill_worker *pw, prefill_task *t)
{
    int all = t->done == (int)t->t->n_prompt_tokens;
    int bs = pw->we->pool->shape.block_size;
    int upto = all ? (t->done + bs - 1) / bs : t->done / bs;
    int piece = upto - t->sent_blocks;
    if (t->peer->transport == KV_TRANSPORT_ZMQ) {
        piece = (int)(((size_t)pw->f->kv_message_kib << 10) / pw->we->block_bytes);
        if (piece < 1)
            piece = 1;
    }
    while (upto > t->sent_blocks) {
        int to = upto - t->sent_blocks > piece ? t->sent_blocks + piece : upto;
        if (ship(pw, t, to, all && to == upto))
            return;
    }
    if (all && !t->last_sent && ship(pw, t, upto, 1))
        return;
    if (t->last_sent) {
        t->state = PT_WAIT_ACK;
        t->ack_deadline = kv_now_s() + ack_deadline_ms(t) * 1e-3;
    }
}

/* The peer's handshake, moved on: 1 ready, 0 not yet, -1 failed (the task ended). */
static int peer_ready(prefill_worker *pw, prefill_task *t)
{
    kv_err err;
    int rc = kv_sender_connect(&pw->sender, t->peer, &err);
    if (rc >= 0)
        return rc;
    char msg[1200];
    snprintf(msg, sizeof msg, "decode worker %s: %s", t->t->decode_worker_id, err.msg);
    /* No transport in common is the pair's configuration, which a retry does not change. */
    finish(pw, 0, err.code == KV_EUNSUPPORTED ? KVSERVE__ERROR_CODE__NO_TRANSPORT : KVSERVE__ERROR_CODE__WORKER_FAILED,
           msg);
    return -1;
}

/* Computes the current task's next chunk: 0, or -1 when that ended the task. */
static int run_chunk(prefill_worker *pw)
{
    prefill_task *t = pw->cur;
    int total = (int)t->t->n_prompt_tokens;
    int n = total - t->done;
    if (n > pw->f->prefill_chunk)
        n = pw->f->prefill_chunk;
    int last = t->done + n == total;
    kv_err err;
    double t0 = kv_now_s();
    const int32_t *prompt = t->t->prompt_tokens;
    int rc;
    if (t->prompt_lp) {
        /* Position p's logits score prompt token p + 1; the last position's pick the first token. */
        int32_t *targets = malloc((size_t)n * sizeof *targets);
        if (!targets) {
            rc = kv_err_set(&err, KV_ENOMEM, "out of memory (prompt logprobs)");
        } else {
            for (int i = 0; i < n; i++)
                targets[i] = t->done + i + 1 < total ? prompt[t->done + i + 1] : -1;
            rc = kv_engine_prefill_logprobs(pw->we->engine, &t->seq, prompt + t->done, n, targets, t->lp_top,
                                            t->prompt_lp + t->done, last ? pw->logits : NULL, &err);
            free(targets);
        }
    } else {
        rc = kv_engine_prefill(pw->we->engine, &t->seq, prompt + t->done, n, last ? pw->logits : NULL, 0, &err);
    }
    if (!rc && last) {
        /* The first token, sampled as in one process: the stream's next draw (a re-planned
         * request skips the draws its earlier attempts made). */
        kv_sampler s;
        int vocab = pw->we->model->cfg.vocab_size;
        if (!(rc = kv_sampler_init(&s, &t->sp, vocab, &err))) {
            kv_sampler_advance(&s, (int)t->t->sampling_offset);
            t->first_token = kv_sampler_sample(&s, pw->logits);
            if (t->lp_top >= 0)
                kc_logprobs_row(pw->logits, vocab, t->first_token, t->lp_top, &t->first_lp);
        }
        kv_sampler_free(&s);
    }
    t->prefill_s += kv_now_s() - t0;
    if (rc) {
        finish(pw, 0, rc == KV_EFULL ? KVSERVE__ERROR_CODE__NO_CAPACITY : KVSERVE__ERROR_CODE__INTERNAL, err.msg);
        return -1;
    }
    t->done += n;
    return 0;
}

void prefill_step(prefill_worker *pw)
{
    if (!pw->cur) {
        if (pw->head)
            start_next(pw);
        return;
    }
    if (pw->cur->state == PT_PREFILLING) {
        prefill_task *t = pw->cur;
        /* The handshake runs while the first chunks compute; shipping waits for it. */
        int ready = peer_ready(pw, t);
        if (ready < 0)
            return;
        if (t->done < (int)t->t->n_prompt_tokens && run_chunk(pw))
            return;
        if (ready)
            ship_pending(pw, t);
    } else if (pw->cur->state == PT_WAIT_ACK && kv_now_s() >= pw->cur->ack_deadline) {
        char msg[400];
        snprintf(msg, sizeof msg, "no KvAck from decode worker %s within %u ms", pw->cur->t->decode_worker_id,
                 ack_deadline_ms(pw->cur));
        kv_peer *peer = pw->cur->peer;
        finish(pw, 0, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, msg);
        prefill_drop_stuck_peer(pw, peer, msg);
    }
}

void prefill_on_ack(prefill_worker *pw, const kv_peer *from, const Kvserve__KvAck *ack)
{
    prefill_task *t = pw->cur;
    if (!t || strcmp(t->id, ack->request_id) || t->peer != from) {
        KV_DEBUG(COMP, "msg=\"stale KvAck ignored\" request=%s", ack->request_id);
        return;
    }
    if (!ack->ok) {
        if (ack->error && ack->error->code == KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN)
            kv_sender_reset(&pw->sender, t->peer, "the decode worker does not know our session");
        char msg[1200];
        snprintf(msg, sizeof msg, "decode worker %s rejected the KV: %s", t->t->decode_worker_id,
                 ack->error && ack->error->message[0] ? ack->error->message : "no reason given");
        Kvserve__ErrorCode code = ack->error && ack->error->code ? ack->error->code : KVSERVE__ERROR_CODE__INTERNAL;
        finish(pw, 0, code, msg);
        return;
    }
    if (t->state != PT_WAIT_ACK) {
        KV_WARN(COMP, "msg=\"KvAck before the last chunk ignored\" request=%s", t->id);
        return;
    }
    if (ack->bytes != t->kv_bytes)
        KV_WARN(COMP, "msg=\"KvAck byte count differs\" request=%s sent=%llu acked=%llu", t->id,
                (unsigned long long)t->kv_bytes, (unsigned long long)ack->bytes);
    finish(pw, 1, KVSERVE__ERROR_CODE__ERROR_NONE, "");
}

void prefill_abort(prefill_worker *pw, const char *id, Kvserve__ErrorCode reason)
{
    prefill_task *t = NULL;
    if (pw->cur && !strcmp(pw->cur->id, id)) {
        t = pw->cur;
        pw->cur = NULL;
    } else {
        t = prefill_queue_remove(pw, id);
    }
    if (!t) {
        KV_DEBUG(COMP, "msg=\"abort for an unknown request ignored\" request=%s", id);
        return;
    }
    KV_INFO(COMP, "msg=\"task aborted\" request=%s reason=%s state=%d prefill_ms=%.2f", id, worker_error_name(reason),
            (int)t->state, t->prefill_s * 1e3);
    drop_transport_state(pw, t, "task aborted");
    prefill_task_retire(pw, t);
}

int prefill_has_work(const prefill_worker *pw)
{
    const prefill_task *t = pw->cur;
    if (!t)
        return pw->head != NULL;
    /* Waiting only for the handshake is not work: the loop sleeps until its deadline. */
    return t->state == PT_PREFILLING &&
           (t->done < (int)t->t->n_prompt_tokens || !t->peer || t->peer->state == PEER_READY);
}

double prefill_wake(const prefill_worker *pw)
{
    const prefill_task *t = pw->cur;
    if (t && t->state == PT_WAIT_ACK)
        return t->ack_deadline;
    double wake = kv_now_s() + 1.0;
    if (t && t->state == PT_PREFILLING && t->peer && kv_sender_wake(t->peer) < wake)
        wake = kv_sender_wake(t->peer);
    return wake;
}

void prefill_fail_all(prefill_worker *pw)
{
    if (pw->cur)
        prefill_task_retire(pw, pw->cur);
    pw->cur = NULL;
    prefill_task *t;
    while ((t = prefill_queue_pop(pw)))
        prefill_task_retire(pw, t);
}

void prefill_drop_queued(prefill_worker *pw)
{
    int n = 0;
    prefill_task *t;
    while ((t = prefill_queue_pop(pw))) {
        KV_DEBUG(COMP, "msg=\"stale task dropped\" request=%s", t->id);
        prefill_task_retire(pw, t);
        n++;
    }
    if (n)
        KV_WARN(COMP, "msg=\"the router forgot this worker: queued tasks dropped\" tasks=%d", n);
}

void prefill_on_kv(void *ctx, kv_wire_msg *m, int rc, const kv_err *err)
{
    const prefill_kv_from *from = ctx;
    prefill_worker *pw = from->pw;
    if (rc) {
        KV_WARN(COMP, "msg=\"bad message from a decode worker\" endpoint=%s err=\"%s\"", from->peer->endpoint,
                err->msg);
        return;
    }
    const Kvserve__Envelope *env = m->env;
    if (env->body_case == KVSERVE__ENVELOPE__BODY_KV_ACK)
        prefill_on_ack(pw, from->peer, env->kv_ack);
    else if (env->body_case == KVSERVE__ENVELOPE__BODY_KV_HELLO_REPLY)
        kv_sender_on_hello_reply(&pw->sender, from->peer, env->kv_hello_reply);
    else if (env->body_case == KVSERVE__ENVELOPE__BODY_ERROR)
        KV_WARN(COMP, "msg=\"decode worker error\" code=%s request=%s message=\"%s\"",
                worker_error_name(env->error->code), env->error->request_id, env->error->message);
    else
        KV_WARN(COMP, "msg=\"unexpected message from a decode worker ignored\" body=%d", (int)env->body_case);
}
