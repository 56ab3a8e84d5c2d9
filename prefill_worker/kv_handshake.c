/* The prefill side of a GPU pair's handshake: KvHello with what this worker offers (and its
 * pool's IPC handle when cuda-ipc is among it), the decode worker's KvHelloReply choosing
 * one, and for nccl the communicator (KvNcclInit carries the unique id; rank 0 here).
 * Every step is polled from the loop and has a deadline. */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "kv_log.h"
#include "kv_sender.h"
#include "kv_time.h"
#include "worker_proto.h"

#define COMP "kv-prefill"
#define KV_STR_(x) #x
#define KV_STR(x) KV_STR_(x)

static uint64_t new_session(kv_sender *s)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v)
        v = ((uint64_t)getpid() << 32) ^ (uint64_t)(kv_now_s() * 1e9);
    v ^= ++s->next_session;
    return v ? v : 1;
}

/* Ends the handshake: err gets code and why (copied first: it may point into err or p).
 * KV_EUNSUPPORTED says the pair has no transport in common (the caller's NO_TRANSPORT);
 * anything else that the peer or the link failed. */
static int fail(kv_sender *s, kv_peer *p, kv_err *err, int code, const char *why_in)
{
    char why[400];
    snprintf(why, sizeof why, "%.399s", why_in);
    kv_err_set(err, code == KV_EUNSUPPORTED ? KV_EUNSUPPORTED : KV_EIO, "KV transport to %s: %s", p->endpoint, why);
    kv_sender_reset(s, p, why);
    return err->code;
}

/* The pool's IPC handle, exported the first time it is offered. */
static int ipc_handle(kv_sender *s)
{
    if (s->ipc_state == 0) {
        kv_err err;
        if (kv_gpu_ipc_export(&s->xfer->pool, s->ipc_handle, &err)) {
            KV_WARN(COMP, "msg=\"cuda-ipc left out: the KV pool cannot be exported\" err=\"%s\"", err.msg);
            s->ipc_state = -1;
        } else {
            s->ipc_state = 1;
        }
    }
    return s->ipc_state > 0;
}

static int send_hello(kv_sender *s, kv_peer *p, kv_err *err)
{
    const worker_transport *x = s->xfer;
    Kvserve__KvTransport offer[KV_TRANSPORT_COUNT];
    size_t n = 0;
    for (int i = 0; i < x->allowed.n; i++)
        if (x->allowed.t[i] != KV_TRANSPORT_CUDA_IPC || ipc_handle(s))
            offer[n++] = (Kvserve__KvTransport)x->allowed.t[i];
    if (!n)
        return kv_err_set(err, KV_EUNSUPPORTED, "no KV transport to offer (cuda-ipc export failed)");
    Kvserve__KvHello h;
    kvserve__kv_hello__init(&h);
    h.prefill_worker_id = (char *)s->worker_id;
    h.session = p->session = new_session(s);
    h.n_offer = n;
    h.offer = offer;
    h.node_id = (char *)x->node_id;
    h.device = x->device;
    h.device_uuid.len = x->device >= 0 ? KV_GPU_UUID_BYTES : 0;
    h.device_uuid.data = (uint8_t *)x->uuid;
    if (s->ipc_state > 0) {
        h.ipc_handle.len = KV_GPU_IPC_HANDLE_BYTES;
        h.ipc_handle.data = s->ipc_handle;
    }
    h.pool_bytes = (uint64_t)x->pool.n_blocks * x->pool.block_bytes;
    h.block_bytes = x->pool.block_bytes;
    h.kv_dtype = (char *)x->kv_dtype;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_HELLO;
    env.kv_hello = &h;
    return kv_wire_send(p->sock, NULL, &env, NULL, 0, KV_HELLO_TIMEOUT_MS / 2, err);
}

int kv_sender_connect(kv_sender *s, kv_peer *p, kv_err *err)
{
    const worker_transport *x = s->xfer;
    double now = kv_now_s();
    switch (p->state) {
    case PEER_READY:
        return 1;
    case PEER_NEW:
        if (x->allowed.n == 1 && x->allowed.t[0] == KV_TRANSPORT_ZMQ) {
            p->transport = KV_TRANSPORT_ZMQ;
            p->state = PEER_READY;
            return 1;
        }
        if (send_hello(s, p, err))
            return fail(s, p, err, err->code, err->msg);
        p->state = PEER_HELLO;
        p->deadline = now + KV_HELLO_TIMEOUT_MS * 1e-3;
        KV_DEBUG(COMP, "msg=\"kv hello sent\" endpoint=%s offer=%s", p->endpoint, x->allowed_names);
        return 0;
    case PEER_HELLO:
        if (now >= p->deadline)
            return fail(s, p, err, KV_ETIMEOUT, "no KvHelloReply within " KV_STR(KV_HELLO_TIMEOUT_MS) " ms");
        return 0;
    case PEER_NCCL_INIT: {
        kv_err cerr;
        int rc = kv_nccl_comm_poll(p->comm, &cerr);
        if (rc < 0)
            return fail(s, p, err, cerr.code, cerr.msg);
        if (rc == 0 && now >= p->deadline)
            return fail(s, p, err, KV_ETIMEOUT,
                        "NCCL communicator not ready within " KV_STR(KV_NCCL_INIT_TIMEOUT_MS) " ms");
        if (rc == 0)
            return 0;
        p->state = PEER_READY;
        KV_INFO(COMP, "msg=\"kv transport ready\" endpoint=%s transport=nccl generation=%u setup_ms=%.1f",
                p->endpoint, p->nccl_generation, (now - (p->deadline - KV_NCCL_INIT_TIMEOUT_MS * 1e-3)) * 1e3);
        return 1;
    }
    case PEER_FAILED:
    default:
        return fail(s, p, err, p->failure_code, p->failure);
    }
}

static int start_nccl(kv_sender *s, kv_peer *p, kv_err *err)
{
    unsigned char id[KV_NCCL_ID_BYTES];
    int rc = kv_nccl_unique_id(s->xfer->nccl, id, err);
    if (rc)
        return rc;
    Kvserve__KvNcclInit ni;
    kvserve__kv_nccl_init__init(&ni);
    ni.session = p->session;
    ni.generation = ++p->nccl_generation;
    ni.unique_id.len = sizeof id;
    ni.unique_id.data = id;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_NCCL_INIT;
    env.kv_nccl_init = &ni;
    if ((rc = kv_wire_send(p->sock, NULL, &env, NULL, 0, KV_HELLO_TIMEOUT_MS / 2, err)))
        return rc;
    return kv_nccl_comm_start(s->xfer->nccl, p->lane, id, 0, &p->comm, err);
}

void kv_sender_on_hello_reply(kv_sender *s, kv_peer *p, const Kvserve__KvHelloReply *r)
{
    if (p->state != PEER_HELLO || r->session != p->session) {
        KV_DEBUG(COMP, "msg=\"stale KvHelloReply ignored\" endpoint=%s", p->endpoint);
        return;
    }
    kv_err err;
    int rc = KV_OK;
    if (!r->ok) {
        rc = kv_err_set(&err, KV_EUNSUPPORTED, "the decode worker refused: %s",
                        r->error && r->error->message[0] ? r->error->message : "no reason given");
    } else if ((unsigned)r->transport >= KV_TRANSPORT_COUNT ||
               !kv_transport_list_has(&s->xfer->allowed, (kv_transport)r->transport)) {
        rc = kv_err_set(&err, KV_EFORMAT, "the decode worker chose transport %d, which was not offered",
                        (int)r->transport);
    } else {
        p->transport = (kv_transport)r->transport;
        if (p->transport != KV_TRANSPORT_ZMQ && !p->lane)
            rc = kv_gpu_lane_create(&s->xfer->pool, &p->lane, &err);
        if (!rc && p->transport == KV_TRANSPORT_NCCL)
            rc = start_nccl(s, p, &err);
    }
    if (rc) {
        snprintf(p->failure, sizeof p->failure, "%.399s", err.msg);
        p->failure_code = err.code;
        p->state = PEER_FAILED;
        return;
    }
    if (p->transport == KV_TRANSPORT_NCCL) {
        p->state = PEER_NCCL_INIT;
        p->deadline = kv_now_s() + KV_NCCL_INIT_TIMEOUT_MS * 1e-3;
    } else {
        p->state = PEER_READY;
    }
    KV_INFO(COMP, "msg=\"kv transport chosen\" endpoint=%s transport=%s", p->endpoint,
            kv_transport_name(p->transport));
}

void kv_sender_reset(kv_sender *s, kv_peer *p, const char *why)
{
    (void)s;
    if (p->state != PEER_NEW)
        KV_WARN(COMP, "msg=\"kv transport reset\" endpoint=%s transport=%s why=\"%s\"", p->endpoint,
                p->state == PEER_READY ? kv_transport_name(p->transport) : "-", why);
    kv_nccl_comm_abort(p->comm);
    p->comm = NULL;
    p->state = PEER_NEW;
    p->session = 0;
    p->failure[0] = '\0';
    p->failure_code = 0;
}

double kv_sender_wake(const kv_peer *p)
{
    switch (p->state) {
    case PEER_HELLO: return p->deadline;
    case PEER_NCCL_INIT: return kv_now_s() + 1e-3; /* NCCL progresses on its own threads: look often */
    default: return kv_now_s() + 3600.0;
    }
}
