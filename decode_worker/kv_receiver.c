/* The decode side of the KV transfer: a ROUTER that prefill workers' DEALERs send
 * KvChunk + block frames to (zmq), or KvHello and KvChunks without frames (GPU transports,
 * kv_links.c). Every chunk is checked (reservation, order, ids, frame count and sizes,
 * CRC-32C) before its blocks are copied into the pool; a GPU chunk's checksums are
 * compared once its copy has landed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "kv_log.h"
#include "kv_time.h"
#include "worker_loop.h"
#include "worker_proto.h"

#define COMP "kv-decode"

/* The endpoint others can reach: a wildcard bind is announced as 127.0.0.1 (or --advertise). */
static void advertised(const char *bound, const char *advertise, char *out, size_t n)
{
    const char *host = bound + 6;
    const char *colon = strrchr(bound, ':');
    if (strncmp(bound, "tcp://", 6) || !colon || colon < host) {
        snprintf(out, n, "%s", bound);
        return;
    }
    int hlen = (int)(colon - host);
    int wildcard = (hlen == 7 && !strncmp(host, "0.0.0.0", 7)) || (hlen == 1 && host[0] == '*') ||
                   (hlen == 4 && !strncmp(host, "[::]", 4));
    if (advertise)
        snprintf(out, n, "tcp://%s%s", advertise, colon);
    else if (wildcard)
        snprintf(out, n, "tcp://127.0.0.1%s", colon);
    else
        snprintf(out, n, "%s", bound);
}

#define KV_HANDSHAKE_MS 5000

int kv_receiver_bind(decode_worker *dw, kv_err *err)
{
    /* No ZMQ_ROUTER_HANDOVER: with it, any process connecting under a prefill worker's
     * routing id took that worker's connection over, and its KvChunks went nowhere. Prefill
     * workers set no routing id: this ROUTER gives each connection its own, so a restarted or
     * reconnected worker never needs to take an old one over (and a claimed one is ignored). */
    /* A frame far larger than a block is not KV: refuse it at the transport. */
    int64_t max = (int64_t)dw->we->block_bytes + (4 << 20);
    zmq_setsockopt(dw->kv_sock, ZMQ_MAXMSGSIZE, &max, sizeof max);
    /* A connection that has not finished its ZMTP (and CURVE) handshake within this long is
     * dropped: a peer that connects and says nothing, or half a greeting, would otherwise
     * hold its file descriptor for ZeroMQ's default 30 s (issue 13; tests/test_kv_badpeer.sh).
     * A real prefill worker's handshake takes milliseconds. */
    int handshake_ms = KV_HANDSHAKE_MS;
    zmq_setsockopt(dw->kv_sock, ZMQ_HANDSHAKE_IVL, &handshake_ms, sizeof handshake_ms);
    if (zmq_bind(dw->kv_sock, dw->f->kv_listen) != 0)
        return kv_err_set(err, KV_EIO, "--kv-listen %s: %s", dw->f->kv_listen, zmq_strerror(zmq_errno()));
    char bound[256];
    size_t len = sizeof bound;
    if (zmq_getsockopt(dw->kv_sock, ZMQ_LAST_ENDPOINT, bound, &len) != 0)
        return kv_err_set(err, KV_EIO, "KV endpoint: %s", zmq_strerror(zmq_errno()));
    bound[sizeof bound - 1] = '\0';
    advertised(bound, dw->f->advertise, dw->kv_endpoint, sizeof dw->kv_endpoint);
    KV_INFO(COMP, "msg=\"KV endpoint bound\" bound=%s announced=%s", bound, dw->kv_endpoint);
    return KV_OK;
}

void kv_receiver_send_ack(decode_worker *dw, const kv_wire_route *to, const char *id, int ok, uint64_t bytes,
                          Kvserve__ErrorCode code, const char *msg)
{
    if (dw->f->fault_drop_kv_ack) {
        KV_WARN(COMP, "msg=\"fault injection: KvAck dropped\" request=%s ok=%d", id, ok);
        return;
    }
    Kvserve__KvAck ack;
    Kvserve__Error e;
    kvserve__kv_ack__init(&ack);
    ack.request_id = (char *)id;
    ack.ok = ok ? 1 : 0;
    ack.bytes = bytes;
    if (!ok) {
        worker_error_init(&e, code, id, msg);
        ack.error = &e;
    }
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_ACK;
    env.kv_ack = &ack;
    worker_send(dw->kv_sock, to, &env, 0, COMP, "KvAck");
}

/* KV_OK, or the error code and message a bad chunk gets. */
/* The last chunk's logprobs, when the request asked: the first token's, and the prompt's
 * (none, or one per prompt position after the first). 0, or -1 with msg. */
static int check_logprobs(const decode_worker *dw, const decode_req *r, const Kvserve__KvChunk *c, char *msg,
                          size_t n)
{
    if (r->lp_top < 0)
        return 0;
    int vocab = dw->we->model->cfg.vocab_size;
    kc_logprobs lp;
    kv_err err;
    if (kv_wire_logprobs_from_proto(c->first_logprobs, vocab, r->lp_top, &lp, &err))
        return snprintf(msg, n, "first token: %.300s", err.msg), -1;
    if (c->n_prompt_logprobs && c->n_prompt_logprobs + 1 != r->prompt_tokens)
        return snprintf(msg, n, "%zu prompt logprobs for a prompt of %u tokens", c->n_prompt_logprobs,
                        r->prompt_tokens), -1;
    for (size_t i = 0; i < c->n_prompt_logprobs; i++)
        if (kv_wire_logprobs_from_proto(c->prompt_logprobs[i], vocab, r->lp_top, &lp, &err))
            return snprintf(msg, n, "prompt position %zu: %.300s", i + 1, err.msg), -1;
    return 0;
}

static Kvserve__ErrorCode check_chunk(const decode_worker *dw, const decode_req *r, const Kvserve__KvChunk *c,
                                      const kv_wire_msg *m, char *msg, size_t n)
{
    const Kvserve__ErrorCode bad = KVSERVE__ERROR_CODE__BAD_MESSAGE;
    size_t nb = c->n_block_ids;
    int gpu = c->transport != KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ;
    if (r->kv_complete || r->kv_last_seen)
        return snprintf(msg, n, "KV of request %s already complete", r->id), bad;
    if (c->seq != r->next_seq)
        return snprintf(msg, n, "chunk seq %u out of order (expected %u)", c->seq, r->next_seq), bad;
    if (c->seq > 0 && (int)c->transport != (int)r->transport)
        return snprintf(msg, n, "chunk over %s after chunks over %s", kv_transport_name((kv_transport)c->transport),
                        kv_transport_name(r->transport)), bad;
    if (c->n_checksums != nb || m->n_payloads != (gpu ? 0 : nb))
        return snprintf(msg, n, "%zu block ids, %zu checksums, %zu frames (%s)", nb, c->n_checksums, m->n_payloads,
                        kv_transport_name((kv_transport)c->transport)), bad;
    if (c->first_block != (uint32_t)r->blocks_received)
        return snprintf(msg, n, "first_block %u, expected %d", c->first_block, r->blocks_received), bad;
    if ((uint64_t)c->first_block + nb > (uint64_t)r->n_prompt_blocks)
        return snprintf(msg, n, "blocks %u..%zu beyond the prompt's %d blocks", c->first_block,
                        (size_t)c->first_block + nb, r->n_prompt_blocks), bad;
    for (size_t i = 0; i < nb; i++) {
        if (c->block_ids[i] != r->blocks[c->first_block + i])
            return snprintf(msg, n, "block id %d at table index %zu is not the reserved one (%d)", c->block_ids[i],
                            (size_t)c->first_block + i, r->blocks[c->first_block + i]), bad;
        if (gpu)
            continue;
        size_t sz = zmq_msg_size((zmq_msg_t *)&m->payloads[i]);
        if (sz != dw->we->block_bytes)
            return snprintf(msg, n, "frame %zu has %zu bytes, a block has %zu", i, sz, dw->we->block_bytes), bad;
    }
    if (c->n_tokens > r->prompt_tokens)
        return snprintf(msg, n, "n_tokens %u beyond the prompt's %u", c->n_tokens, r->prompt_tokens), bad;
    if (c->last) {
        if (c->first_block + nb != (size_t)r->n_prompt_blocks || c->n_tokens != r->prompt_tokens)
            return snprintf(msg, n, "last chunk leaves the KV incomplete (%zu of %d blocks, %u of %u tokens)",
                            (size_t)c->first_block + nb, r->n_prompt_blocks, c->n_tokens, r->prompt_tokens), bad;
        if (c->first_token < 0 || c->first_token >= dw->we->model->cfg.vocab_size)
            return snprintf(msg, n, "first token %d outside the vocabulary", c->first_token), bad;
        if (check_logprobs(dw, r, c, msg, n))
            return bad;
    }
    for (size_t i = 0; !gpu && i < nb; i++) {
        zmq_msg_t *f = (zmq_msg_t *)&m->payloads[i];
        if (kv_crc32c(zmq_msg_data(f), zmq_msg_size(f)) != c->checksums[i])
            return snprintf(msg, n, "checksum mismatch in block %zu (table index %zu)", i, (size_t)c->first_block + i),
                   KVSERVE__ERROR_CODE__KV_CORRUPT;
    }
    return KVSERVE__ERROR_CODE__ERROR_NONE;
}

int kv_receiver_fault_corrupt(decode_worker *dw, const decode_req *r, char *msg, size_t n)
{
    if (!dw->fault_corrupt_pending)
        return 0;
    dw->fault_corrupt_pending = 0;
    KV_WARN(COMP, "msg=\"fault injection: KV reported corrupt\" request=%s", r->id);
    snprintf(msg, n, "checksum mismatch (fault injection: corrupt-kv-once)");
    return 1;
}

void kv_receiver_fail(decode_worker *dw, decode_req *r, Kvserve__ErrorCode code, const char *msg)
{
    kv_receiver_send_ack(dw, &r->kv_from, r->id, 0, r->bytes, code, msg);
    int i = decode_list_find(&dw->waiting, r->id);
    if (i >= 0 && dw->waiting.v[i] == r)
        decode_list_take(&dw->waiting, i);
    decode_fail(dw, r, code, msg);
}

void kv_receiver_complete(decode_worker *dw, decode_req *r)
{
    if (!r->kv_last_seen || r->xfer_pending)
        return;
    if (dw->f->fault_drop_kv_ack) {
        r->kv_complete = 1; /* never acknowledged, never started: the reservation expires */
        KV_WARN(COMP, "msg=\"fault injection: KV complete but not acknowledged\" request=%s", r->id);
        return;
    }
    kv_receiver_send_ack(dw, &r->kv_from, r->id, 1, r->bytes, KVSERVE__ERROR_CODE__ERROR_NONE, NULL);
    int i = decode_list_find(&dw->waiting, r->id);
    if (i >= 0)
        decode_list_take(&dw->waiting, i);
    KV_INFO(COMP, "msg=\"kv received\" request=%s transport=%s blocks=%d bytes=%llu chunks=%u transfer_wait_ms=%.2f",
            r->id, kv_transport_name(r->transport), r->blocks_received, (unsigned long long)r->bytes, r->next_seq,
            (kv_now_s() - r->t_reserved) * 1e3);
    decode_start(dw, r, r->first_token);
}

/* zmq: the frames' bytes into the pool, wherever it lives (host memory, or the GPU). */
static int store_frames(decode_worker *dw, const Kvserve__KvChunk *c, const kv_wire_msg *m, char *msg, size_t n)
{
    for (size_t k = 0; k < c->n_block_ids; k++) {
        kv_err werr;
        if (kv_engine_blocks_write(dw->we->engine, &c->block_ids[k], 1, zmq_msg_data((zmq_msg_t *)&m->payloads[k]),
                                   &werr)) {
            snprintf(msg, n, "cannot store KV block %d: %.300s", c->block_ids[k], werr.msg);
            return -1;
        }
    }
    return 0;
}

/* The last chunk's logprobs (checked by check_logprobs) into r: KV_OK or KV_ENOMEM. */
static int keep_logprobs(const decode_worker *dw, decode_req *r, const Kvserve__KvChunk *c)
{
    int vocab = dw->we->model->cfg.vocab_size;
    kv_err err;
    kv_wire_logprobs_from_proto(c->first_logprobs, vocab, r->lp_top, &r->first_lp, &err);
    if (!c->n_prompt_logprobs)
        return KV_OK;
    free(r->prompt_lp);
    if (!(r->prompt_lp = malloc(c->n_prompt_logprobs * sizeof *r->prompt_lp)))
        return KV_ENOMEM;
    for (size_t i = 0; i < c->n_prompt_logprobs; i++)
        kv_wire_logprobs_from_proto(c->prompt_logprobs[i], vocab, r->lp_top, &r->prompt_lp[i], &err);
    r->n_prompt_lp = c->n_prompt_logprobs;
    return KV_OK;
}


static void on_chunk(decode_worker *dw, const kv_wire_msg *m)
{
    const Kvserve__KvChunk *c = m->env->kv_chunk;
    char msg[400];
    int i = decode_list_find(&dw->waiting, c->request_id);
    if (i < 0) {
        int running = decode_list_find(&dw->running, c->request_id) >= 0;
        snprintf(msg, sizeof msg, running ? "request %s is not awaiting KV" : "no reservation for request %s",
                 c->request_id);
        KV_WARN(COMP, "msg=\"KvChunk refused\" request=%s from=%s reason=\"%s\"", c->request_id, c->prefill_worker_id,
                msg);
        kv_receiver_send_ack(dw, &m->route, c->request_id, 0, 0,
                             running ? KVSERVE__ERROR_CODE__BAD_MESSAGE : KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, msg);
        return;
    }
    decode_req *r = dw->waiting.v[i];
    r->kv_from = m->route;
    Kvserve__ErrorCode code = check_chunk(dw, r, c, m, msg, sizeof msg);
    if (code == KVSERVE__ERROR_CODE__ERROR_NONE && c->transport == KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ &&
        kv_receiver_fault_corrupt(dw, r, msg, sizeof msg))
        code = KVSERVE__ERROR_CODE__KV_CORRUPT;
    if (code == KVSERVE__ERROR_CODE__ERROR_NONE) {
        if (c->transport == KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ) {
            if (store_frames(dw, c, m, msg, sizeof msg))
                code = KVSERVE__ERROR_CODE__INTERNAL;
        } else {
            kv_links_start_chunk(dw, r, &m->route, c, &code, msg, sizeof msg);
        }
    }
    if (code != KVSERVE__ERROR_CODE__ERROR_NONE) {
        kv_receiver_fail(dw, r, code, msg);
        return;
    }
    r->transport = (kv_transport)c->transport;
    r->blocks_received += (int32_t)c->n_block_ids;
    r->bytes += c->n_block_ids * dw->we->block_bytes;
    r->next_seq++;
    KV_DEBUG(COMP, "msg=\"kv chunk\" request=%s seq=%u blocks=%zu n_tokens=%u last=%d transport=%s", r->id, c->seq,
             c->n_block_ids, c->n_tokens, (int)c->last, kv_transport_name(r->transport));
    if (!c->last)
        return;
    r->kv_last_seen = 1;
    r->first_token = c->first_token;
    if (r->lp_top >= 0 && keep_logprobs(dw, r, c)) {
        kv_receiver_fail(dw, r, KVSERVE__ERROR_CODE__INTERNAL, "out of memory (prompt logprobs)");
        return;
    }
    kv_receiver_complete(dw, r);
}

void kv_receiver_on_msg(void *ctx, kv_wire_msg *m, int rc, const kv_err *err)
{
    decode_worker *dw = ctx;
    kv_err serr;
    if (rc) {
        Kvserve__ErrorCode code =
            rc == KV_EUNSUPPORTED ? KVSERVE__ERROR_CODE__VERSION_MISMATCH : KVSERVE__ERROR_CODE__BAD_MESSAGE;
        KV_WARN(COMP, "msg=\"bad message on the KV endpoint\" error=%s err=\"%s\"", worker_error_name(code), err->msg);
        if (m->route.len && kv_wire_send_error(dw->kv_sock, &m->route, code, "", err->msg, &serr))
            KV_WARN(COMP, "msg=\"error reply not sent\" err=\"%s\"", serr.msg);
        return;
    }
    switch (m->env->body_case) {
    case KVSERVE__ENVELOPE__BODY_KV_CHUNK:
        on_chunk(dw, m);
        return;
    case KVSERVE__ENVELOPE__BODY_KV_HELLO:
        kv_links_on_hello(dw, &m->route, m->env->kv_hello);
        return;
    case KVSERVE__ENVELOPE__BODY_KV_NCCL_INIT:
        kv_links_on_nccl_init(dw, &m->route, m->env->kv_nccl_init);
        return;
    default:
        break;
    }
    KV_WARN(COMP, "msg=\"unexpected message on the KV endpoint\" body=%d", (int)m->env->body_case);
    kv_wire_send_error(dw->kv_sock, &m->route, KVSERVE__ERROR_CODE__BAD_MESSAGE, "",
                       "unexpected message on a KV endpoint (expects KvChunk, KvHello or KvNcclInit)", &serr);
}
