/* The decode side of the GPU transports. A prefill worker's KvHello opens a link (the
 * transport both allow, its pool mapped for cuda-ipc, a lane = our CUDA stream for its
 * chunks); each verified KvChunk enqueues the copy (cuda-ipc: out of its pool) or the
 * receive (nccl) straight into the reserved blocks, then a checksum pass; kv_links_poll
 * compares the checksums as the copies complete, in order. A request whose copies are under
 * way never releases its blocks before they end: an NCCL receive is aborted (and the
 * link's session dropped, so the prefill worker says hello again), a DMA copy waited for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode.h"
#include "kv_log.h"
#include "kv_time.h"
#include "worker_proto.h"

#define COMP "kv-decode"
#define COMM_READY_WAIT_MS 5000

static kv_link *find_link(decode_worker *dw, const kv_wire_route *from)
{
    for (kv_link *l = dw->links; l; l = l->next)
        if (l->route.len == from->len && !memcmp(l->route.id, from->id, from->len))
            return l;
    return NULL;
}

static kv_link *find_link_of(decode_worker *dw, const char *prefill_id)
{
    for (kv_link *l = dw->links; l; l = l->next)
        if (!strcmp(l->prefill_id, prefill_id))
            return l;
    return NULL;
}

static void pending_free(kv_pending *p)
{
    kv_gpu_op_free(p->op);
    free(p->expected);
    free(p);
}

/* Ends every chunk of the link that is under way (after an aborted receive their data is
 * garbage) and fails their requests, except `keep` (whose caller is ending it anyway). */
static void drain_link(decode_worker *dw, kv_link *l, const decode_req *keep, const char *why)
{
    kv_pending *p;
    while ((p = l->head)) {
        l->head = p->next;
        decode_req *r = p->r;
        pending_free(p);
        r->xfer_pending--;
        if (r != keep && !r->xfer_pending)
            kv_receiver_fail(dw, r, KVSERVE__ERROR_CODE__WORKER_FAILED, why);
    }
    l->tail = NULL;
}

/* Tears the link's communicator down; its session goes with it. */
static void drop_comm(decode_worker *dw, kv_link *l, const decode_req *keep, const char *why)
{
    if (!l->comm)
        return;
    KV_WARN(COMP, "msg=\"nccl communicator torn down\" prefill=%s generation=%u why=\"%s\"", l->prefill_id,
            l->generation, why);
    kv_nccl_comm_abort(l->comm);
    l->comm = NULL;
    l->comm_ready = 0;
    l->session = 0;
    drain_link(dw, l, keep, why);
}

static void link_destroy(decode_worker *dw, kv_link *l, const char *why)
{
    drop_comm(dw, l, NULL, why);
    drain_link(dw, l, NULL, why);
    kv_gpu_lane_destroy(l->lane); /* its copies read the peer's pool: they end before the unmap */
    kv_gpu_ipc_close(dw->we->xfer.device, l->ipc_base);
    for (kv_link **pp = &dw->links; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    free(l);
}

static void hello_reply(decode_worker *dw, const kv_wire_route *to, uint64_t session, int ok, kv_transport t,
                        const char *why)
{
    Kvserve__KvHelloReply rep;
    Kvserve__Error e;
    kvserve__kv_hello_reply__init(&rep);
    rep.session = session;
    rep.ok = ok ? 1 : 0;
    rep.transport = (Kvserve__KvTransport)t;
    if (!ok) {
        worker_error_init(&e, KVSERVE__ERROR_CODE__NO_TRANSPORT, "", why);
        rep.error = &e;
    }
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_HELLO_REPLY;
    env.kv_hello_reply = &rep;
    worker_send(dw->kv_sock, to, &env, 0, COMP, "KvHelloReply");
}

/* The link's GPU side for transport t: KV_OK, or why not (then nothing is left behind). */
static int link_setup(decode_worker *dw, kv_link *l, kv_transport t, const Kvserve__KvHello *h, kv_err *err)
{
    const worker_transport *x = &dw->we->xfer;
    if (t == KV_TRANSPORT_CUDA_IPC) {
        if (h->ipc_handle.len != KV_GPU_IPC_HANDLE_BYTES || !h->block_bytes || h->pool_bytes % h->block_bytes ||
            h->pool_bytes / h->block_bytes > INT32_MAX)
            return kv_err_set(err, KV_EFORMAT, "KvHello's IPC handle or pool size is malformed");
        int rc = kv_gpu_ipc_open(x->device, h->ipc_handle.data, &l->ipc_base, err);
        if (rc)
            return rc;
        l->peer_blocks = (int32_t)(h->pool_bytes / h->block_bytes);
    }
    int rc = kv_gpu_lane_create(&x->pool, &l->lane, err);
    if (rc) {
        kv_gpu_ipc_close(x->device, l->ipc_base);
        l->ipc_base = NULL;
    }
    return rc;
}

void kv_links_on_hello(decode_worker *dw, const kv_wire_route *from, const Kvserve__KvHello *h)
{
    kv_link *old = find_link(dw, from);
    if (old)
        link_destroy(dw, old, "the prefill worker opened a new KV session");
    /* Each connection has its own route (kv_receiver_bind): a prefill worker that restarted
     * or reconnected says hello from a new one, and its old link (a mapped pool, a lane, a
     * communicator) would stay for good. Unauthenticated, a peer claiming its id can end its
     * link too; the worker then says hello again (KV_SESSION_UNKNOWN). */
    while ((old = find_link_of(dw, h->prefill_worker_id)))
        link_destroy(dw, old, "the prefill worker said hello on a new connection");
    kv_transport_side self, peer;
    worker_transport_side(&dw->we->xfer, &self);
    memset(&peer, 0, sizeof peer);
    for (size_t i = 0; i < h->n_offer && peer.allowed.n < KV_TRANSPORT_COUNT; i++)
        if ((unsigned)h->offer[i] < KV_TRANSPORT_COUNT &&
            !kv_transport_list_has(&peer.allowed, (kv_transport)h->offer[i]))
            peer.allowed.t[peer.allowed.n++] = (kv_transport)h->offer[i];
    peer.node_id = h->node_id;
    peer.device = h->device;
    peer.uuid = h->device_uuid.len == KV_GPU_UUID_BYTES ? h->device_uuid.data : NULL;
    peer.block_bytes = h->block_bytes;
    peer.kv_dtype = h->kv_dtype;
    kv_link *l = calloc(1, sizeof *l);
    if (!l) {
        hello_reply(dw, from, h->session, 0, KV_TRANSPORT_ZMQ, "out of memory");
        return;
    }
    l->route = *from;
    snprintf(l->prefill_id, sizeof l->prefill_id, "%s", h->prefill_worker_id);
    kv_err err;
    kv_transport t = KV_TRANSPORT_ZMQ;
    unsigned skip = 0;
    int rc;
    while ((rc = kv_transport_choose(&self, &peer, skip, &t, &err)) == KV_OK && t != KV_TRANSPORT_ZMQ) {
        kv_err serr;
        if (!link_setup(dw, l, t, h, &serr))
            break;
        KV_WARN(COMP, "msg=\"kv transport set-up failed, trying the next\" prefill=%s transport=%s err=\"%s\"",
                l->prefill_id, kv_transport_name(t), serr.msg);
        skip |= 1u << t;
    }
    if (rc) {
        KV_WARN(COMP, "msg=\"kv hello refused\" prefill=%s reason=\"%s\"", l->prefill_id, err.msg);
        hello_reply(dw, from, h->session, 0, KV_TRANSPORT_ZMQ, err.msg);
        free(l);
        return;
    }
    KV_INFO(COMP, "msg=\"kv transport chosen\" prefill=%s transport=%s prefill_device=%d", l->prefill_id,
            kv_transport_name(t), h->device);
    if (t == KV_TRANSPORT_ZMQ) {
        free(l); /* zmq chunks need no session */
    } else {
        l->session = h->session;
        l->transport = t;
        l->next = dw->links;
        dw->links = l;
    }
    hello_reply(dw, from, h->session, 1, t, NULL);
}

void kv_links_on_nccl_init(decode_worker *dw, const kv_wire_route *from, const Kvserve__KvNcclInit *ni)
{
    kv_link *l = find_link(dw, from);
    kv_err err;
    const char *why = NULL;
    if (!l || l->transport != KV_TRANSPORT_NCCL || !ni->session || ni->session != l->session)
        why = "KvNcclInit for a session this decode worker does not hold";
    else if (ni->unique_id.len != KV_NCCL_ID_BYTES)
        why = "KvNcclInit without a valid NCCL unique id";
    if (!why) {
        drop_comm(dw, l, NULL, "the prefill worker starts a new communicator");
        l->session = ni->session; /* drop_comm forgets it; this init renews it */
        l->generation = ni->generation;
        if (kv_nccl_comm_start(dw->we->xfer.nccl, l->lane, ni->unique_id.data, 1, &l->comm, &err))
            why = err.msg;
    }
    if (why) {
        KV_WARN(COMP, "msg=\"KvNcclInit refused\" reason=\"%s\"", why);
        kv_wire_send_error(dw->kv_sock, from, KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN, "", why, &err);
        return;
    }
    KV_INFO(COMP, "msg=\"nccl communicator joining\" prefill=%s generation=%u", l->prefill_id, l->generation);
}

/* Polls the link's communicator: 1 ready, 0 not yet, < 0 failed (torn down; requests with
 * chunks under way on it fail, except keep). */
static int comm_poll(decode_worker *dw, kv_link *l, const decode_req *keep)
{
    if (!l->comm)
        return -1;
    if (l->comm_ready)
        return 1;
    kv_err err;
    int rc = kv_nccl_comm_poll(l->comm, &err);
    if (rc < 0) {
        drop_comm(dw, l, keep, err.msg);
        return -1;
    }
    if (rc) {
        l->comm_ready = 1;
        KV_INFO(COMP, "msg=\"kv transport ready\" prefill=%s transport=nccl generation=%u", l->prefill_id,
                l->generation);
    }
    return rc;
}

int kv_links_start_chunk(decode_worker *dw, decode_req *r, const kv_wire_route *from, const Kvserve__KvChunk *c,
                         Kvserve__ErrorCode *code, char *msg, size_t msg_n)
{
    const Kvserve__ErrorCode bad = KVSERVE__ERROR_CODE__BAD_MESSAGE;
    kv_link *l = find_link(dw, from);
    *code = KVSERVE__ERROR_CODE__ERROR_NONE;
    if (!l || !l->session || c->session != l->session || (int)c->transport != (int)l->transport) {
        *code = KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN;
        snprintf(msg, msg_n, "a %s chunk of a KV session this decode worker does not hold (say KvHello again)",
                 kv_transport_name((kv_transport)c->transport));
        return *code;
    }
    int n = (int)c->n_block_ids;
    if (l->transport == KV_TRANSPORT_CUDA_IPC) {
        if (c->n_src_block_ids != c->n_block_ids)
            return snprintf(msg, msg_n, "%zu source ids for %d blocks", c->n_src_block_ids, n), *code = bad;
        for (int i = 0; i < n; i++)
            if (c->src_block_ids[i] < 0 || c->src_block_ids[i] >= l->peer_blocks)
                return snprintf(msg, msg_n, "source block %d outside the prefill pool of %d", c->src_block_ids[i],
                                l->peer_blocks), *code = bad;
    }
    kv_pending *p = calloc(1, sizeof *p);
    if (!p || !(p->expected = malloc((n ? (size_t)n : 1) * sizeof *p->expected))) {
        free(p);
        return snprintf(msg, msg_n, "out of memory"), *code = KVSERVE__ERROR_CODE__INTERNAL;
    }
    memcpy(p->expected, c->checksums, (size_t)n * sizeof *p->expected);
    p->n = n;
    p->r = r;
    p->first_block = c->first_block;
    kv_err err;
    int rc;
    if (l->transport == KV_TRANSPORT_CUDA_IPC) {
        rc = kv_gpu_pull(l->lane, l->ipc_base, c->src_block_ids, c->block_ids, n, &p->op, &err);
    } else {
        /* The prefill worker ships only once its side is ready: ours follows within moments. */
        double until = kv_now_s() + COMM_READY_WAIT_MS * 1e-3;
        struct timespec ms = {0, 1000000};
        while ((rc = comm_poll(dw, l, r)) == 0 && kv_now_s() < until)
            nanosleep(&ms, NULL);
        if (rc <= 0) {
            rc = kv_err_set(&err, KV_EIO, "nccl communicator not ready");
            drop_comm(dw, l, r, err.msg);
        } else if (!(rc = kv_nccl_recv(l->comm, c->block_ids, n, &err))) {
            rc = kv_gpu_mark(l->lane, c->block_ids, n, &p->op, &err);
        }
        if (rc && l->comm)
            drop_comm(dw, l, r, err.msg);
    }
    if (rc) {
        pending_free(p);
        *code = KVSERVE__ERROR_CODE__INTERNAL;
        snprintf(msg, msg_n, "KV %s of %d blocks failed: %.300s", kv_transport_name(l->transport), n, err.msg);
        return *code;
    }
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    r->xfer_pending++;
    return KV_OK;
}

/* The head chunk of a link, completed: compare its checksums. */
static void finish_head(decode_worker *dw, kv_link *l, int op_rc, const kv_err *op_err)
{
    kv_pending *p = l->head;
    l->head = p->next;
    if (!l->head)
        l->tail = NULL;
    decode_req *r = p->r;
    r->xfer_pending--;
    char msg[400] = "";
    Kvserve__ErrorCode code = KVSERVE__ERROR_CODE__ERROR_NONE;
    if (op_rc < 0) {
        code = KVSERVE__ERROR_CODE__INTERNAL;
        snprintf(msg, sizeof msg, "KV %s failed on the GPU: %.300s", kv_transport_name(l->transport), op_err->msg);
    } else if (kv_receiver_fault_corrupt(dw, r, msg, sizeof msg)) {
        code = KVSERVE__ERROR_CODE__KV_CORRUPT;
    } else {
        const uint32_t *got = kv_gpu_op_sums(p->op);
        for (int i = 0; i < p->n; i++)
            if (got[i] != p->expected[i]) {
                code = KVSERVE__ERROR_CODE__KV_CORRUPT;
                snprintf(msg, sizeof msg, "checksum mismatch in block %d (table index %u) after the %s copy",
                         r->blocks[p->first_block + (uint32_t)i], p->first_block + (uint32_t)i,
                         kv_transport_name(l->transport));
                break;
            }
    }
    pending_free(p);
    if (code != KVSERVE__ERROR_CODE__ERROR_NONE) {
        if (op_rc < 0 && l->transport == KV_TRANSPORT_NCCL)
            drop_comm(dw, l, r, msg);
        kv_links_forget(dw, r);
        kv_receiver_fail(dw, r, code, msg);
        return;
    }
    kv_receiver_complete(dw, r);
}

void kv_links_poll(decode_worker *dw)
{
    for (kv_link *l = dw->links, *next; l; l = next) {
        next = l->next;
        if (l->comm && !l->comm_ready)
            comm_poll(dw, l, NULL);
        kv_err cerr;
        if (l->head && l->comm && l->comm_ready && kv_nccl_comm_check(l->comm, &cerr)) {
            /* The prefill worker died or gave up mid-transfer: its data will not come. */
            drop_comm(dw, l, NULL, cerr.msg);
            continue;
        }
        while (l->head) {
            kv_err err;
            int rc = kv_gpu_op_poll(l->head->op, &err);
            if (rc == 0)
                break;
            finish_head(dw, l, rc, &err);
        }
    }
}

int kv_links_busy(const decode_worker *dw)
{
    for (const kv_link *l = dw->links; l; l = l->next)
        if (l->head || (l->comm && !l->comm_ready))
            return 1;
    return 0;
}

void kv_links_forget(decode_worker *dw, decode_req *r)
{
    for (kv_link *l = dw->links; l && r->xfer_pending; l = l->next) {
        int mine = 0;
        for (kv_pending *p = l->head; p; p = p->next)
            mine |= p->r == r;
        if (!mine)
            continue;
        /* A receive waits for a sender that may never come: abort it. A copy just ends. */
        if (l->transport == KV_TRANSPORT_NCCL)
            drop_comm(dw, l, r, "a request's KV receive was cancelled");
        for (kv_pending **pp = &l->head; *pp;) {
            kv_pending *p = *pp;
            if (p->r != r) {
                pp = &p->next;
                continue;
            }
            *pp = p->next;
            pending_free(p); /* waits for the copy (bounded) */
            r->xfer_pending--;
        }
        l->tail = NULL;
        for (kv_pending *p = l->head; p; p = p->next)
            l->tail = p;
    }
}

void kv_links_close_all(decode_worker *dw)
{
    while (dw->links)
        link_destroy(dw, dw->links, "shutting down");
}
