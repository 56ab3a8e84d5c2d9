#include "kv_sender.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_log.h"
#include "kv_time.h"
#include "worker_loop.h"

void kv_sender_init(kv_sender *s, void *zctx, const char *worker_id, const worker_transport *xfer)
{
    memset(s, 0, sizeof *s);
    s->zctx = zctx;
    s->worker_id = worker_id;
    s->xfer = xfer;
}

/* NCCL aborted first, so the lane's sends end; then the lane, then the socket. */
static void peer_free(kv_peer *p)
{
    kv_nccl_comm_abort(p->comm);
    kv_gpu_lane_destroy(p->lane);
    zmq_close(p->sock);
    free(p);
}

void kv_sender_close(kv_sender *s)
{
    for (int i = 0; i < s->n; i++)
        peer_free(s->peers[i]);
    free(s->peers);
    s->peers = NULL;
    s->n = s->cap = 0;
}

void kv_sender_abort_gpu(kv_sender *s)
{
    for (int i = 0; i < s->n; i++) {
        kv_nccl_comm_abort(s->peers[i]->comm);
        s->peers[i]->comm = NULL;
        s->peers[i]->state = PEER_NEW;
    }
}

void kv_sender_fault_point(const kv_sender *s, const kv_chunk_desc *c)
{
    if (!s->fault_exit_mid_transfer || c->last)
        return;
    KV_WARN("kv-prefill", "msg=\"fault injection: exiting mid-transfer\" request=%s seq=%u", c->request_id, c->seq);
    struct timespec flush = {0, 200 * 1000 * 1000}; /* ZeroMQ's I/O thread sends what was queued */
    nanosleep(&flush, NULL);
    _exit(3);
}

void kv_sender_chunk_msg(const kv_sender *s, const kv_peer *peer, const kv_chunk_desc *c, uint32_t *sums,
                         Kvserve__KvChunk *kc)
{
    size_t n = (size_t)c->n_blocks;
    kvserve__kv_chunk__init(kc);
    kc->request_id = (char *)c->request_id;
    kc->prefill_worker_id = (char *)s->worker_id;
    kc->first_block = c->first_block;
    kc->n_block_ids = n;
    kc->block_ids = (int32_t *)c->dst;
    kc->n_checksums = n;
    kc->checksums = sums;
    kc->n_tokens = c->n_tokens;
    kc->last = c->last ? 1 : 0;
    kc->first_token = c->last ? c->first_token : 0;
    if (c->last) {
        kc->first_logprobs = c->first_logprobs;
        kc->n_prompt_logprobs = c->n_prompt_logprobs;
        kc->prompt_logprobs = c->prompt_logprobs;
    }
    kc->seq = c->seq;
    kc->transport = (Kvserve__KvTransport)peer->transport;
    if (peer->transport != KV_TRANSPORT_ZMQ)
        kc->session = peer->session;
    if (peer->transport == KV_TRANSPORT_CUDA_IPC) {
        kc->n_src_block_ids = n;
        kc->src_block_ids = (int32_t *)c->src;
    }
}

int kv_sender_chunk_send(const kv_peer *peer, const Kvserve__KvChunk *kc, const kv_wire_payload *frames,
                         size_t n_frames, int timeout_ms, kv_err *err)
{
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_CHUNK;
    env.kv_chunk = (Kvserve__KvChunk *)kc;
    return kv_wire_send(peer->sock, NULL, &env, frames, n_frames, timeout_ms, err);
}

int kv_sender_close_idle(kv_sender *s, double now, double idle_s, kv_peer *const *busy, int n_busy, int gpu_quiet)
{
    int closed = 0;
    for (int i = 0; i < s->n;) {
        kv_peer *p = s->peers[i];
        int held = 0;
        for (int k = 0; k < n_busy && !held; k++)
            held = busy[k] == p;
        if (held || now - p->last_used < idle_s || (!gpu_quiet && (p->lane || p->comm))) {
            i++;
            continue;
        }
        KV_INFO("kv-prefill", "msg=\"closed an idle decode worker connection\" endpoint=%s idle_s=%.0f transport=%s",
                p->endpoint, now - p->last_used, kv_transport_name(p->transport));
        peer_free(p);
        s->peers[i] = s->peers[--s->n];
        closed++;
    }
    return closed;
}

void kv_sender_drop(kv_sender *s, kv_peer *p, const char *why)
{
    for (int i = 0; i < s->n; i++)
        if (s->peers[i] == p) {
            KV_WARN("kv-prefill", "msg=\"dropped a decode worker connection\" endpoint=%s why=\"%s\"", p->endpoint,
                    why);
            peer_free(p);
            s->peers[i] = s->peers[--s->n];
            return;
        }
}

int kv_sender_set_curve(kv_sender *s, const worker_flags *f, kv_err *err)
{
    if (!f->key_file)
        return KV_OK;
    struct stat sb;
    if (stat(f->worker_keys, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kv_err_set(err, KV_EINVAL, "--worker-keys %s: a prefill worker needs a directory of <id>.pub files",
                          f->worker_keys);
    int rc = kv_curve_key_load(f->key_file, &s->curve_key, err);
    if (rc)
        return rc;
    s->curve_dir = f->worker_keys;
    s->curve_on = 1;
    return KV_OK;
}

/* CURVE client options for a connection to decode worker decode_id. */
static int peer_curve(kv_sender *s, void *sock, const char *decode_id, kv_err *err)
{
    if (!s->curve_on)
        return KV_OK;
    if (!decode_id || !*decode_id || strchr(decode_id, '/') || decode_id[0] == '.')
        return kv_err_set(err, KV_EINVAL, "decode worker id '%s' names no key file", decode_id ? decode_id : "");
    char path[4096], pub[KV_CURVE_Z85];
    if (snprintf(path, sizeof path, "%s/%s.pub", s->curve_dir, decode_id) >= (int)sizeof path)
        return kv_err_set(err, KV_EINVAL, "key path too long");
    int rc = kv_curve_pub_load(path, pub, err);
    if (rc == KV_ENOTFOUND) {
        /* One key for every decode replica (deploy/k8s: a Secret per role). */
        snprintf(path, sizeof path, "%s/decode.pub", s->curve_dir);
        rc = kv_curve_pub_load(path, pub, err);
        if (rc == KV_ENOTFOUND)
            return kv_err_set(err, KV_ENOTFOUND, "no key for decode worker %s: neither %s/%s.pub nor %s", decode_id,
                              s->curve_dir, decode_id, path);
    }
    return rc ? rc : kv_curve_apply_client(sock, &s->curve_key, pub, err);
}

kv_peer *kv_sender_peer(kv_sender *s, const char *endpoint, kv_err *err)
{
    return kv_sender_peer_for(s, endpoint, NULL, err);
}

kv_peer *kv_sender_peer_for(kv_sender *s, const char *endpoint, const char *decode_id, kv_err *err)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->peers[i]->endpoint, endpoint)) {
            s->peers[i]->last_used = kv_now_s();
            return s->peers[i];
        }
    if (strlen(endpoint) >= sizeof s->peers[0]->endpoint) {
        kv_err_set(err, KV_EINVAL, "decode KV endpoint too long");
        return NULL;
    }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 4;
        kv_peer **p = realloc(s->peers, (size_t)cap * sizeof *p);
        if (!p) {
            kv_err_set(err, KV_ENOMEM, "out of memory");
            return NULL;
        }
        s->peers = p;
        s->cap = cap;
    }
    kv_peer *peer = calloc(1, sizeof *peer);
    if (!peer) {
        kv_err_set(err, KV_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(peer->endpoint, sizeof peer->endpoint, "%s", endpoint);
    peer->sock = zmq_socket(s->zctx, ZMQ_DEALER);
    if (!peer->sock) {
        kv_err_set(err, KV_EIO, "KV socket: %s", zmq_strerror(zmq_errno()));
        free(peer);
        return NULL;
    }
    /* IMMEDIATE: a dead or not yet connected peer makes the send wait/fail instead of
     * queueing KV that nobody will read. */
    worker_sock_defaults(peer->sock, 1);
    /* No ZMQ_ROUTING_ID: the decode worker's ROUTER names each connection itself (a new name
     * per TCP connection, reconnects included), so nobody can claim ours; KvChunk and KvHello
     * carry our worker id. */
    if (peer_curve(s, peer->sock, decode_id, err)) {
        zmq_close(peer->sock);
        free(peer);
        return NULL;
    }
    if (zmq_connect(peer->sock, endpoint) != 0) {
        kv_err_set(err, KV_EINVAL, "connect to decode KV endpoint %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(peer->sock);
        free(peer);
        return NULL;
    }
    peer->last_used = kv_now_s();
    s->peers[s->n++] = peer;
    KV_INFO("kv-prefill", "msg=\"connected to decode worker\" endpoint=%s", endpoint);
    return peer;
}

/* ZeroMQ's I/O thread is done with a frame. */
static void frame_released(void *data, void *hint)
{
    (void)data;
    atomic_fetch_sub((atomic_int *)hint, 1);
}

/* A chunk's blocks copied out of a GPU pool: freed when ZeroMQ releases its last frame. */
typedef struct kv_stage {
    atomic_int refs;          /* frames not yet released */
    atomic_int *in_flight;    /* the task's counter, decremented per frame too */
    unsigned char data[];
} kv_stage;

static void stage_released(void *data, void *hint)
{
    (void)data;
    kv_stage *st = hint;
    atomic_int *in_flight = st->in_flight; /* read before st may be freed */
    if (atomic_fetch_sub(&st->refs, 1) == 1)
        free(st);
    /* Last: once it reaches 0 the task (which owns the counter) may be freed. */
    atomic_fetch_sub(in_flight, 1);
}

int kv_sender_send(kv_sender *s, kv_peer *peer, kv_engine *e, const kv_chunk_desc *c, int timeout_ms,
                   kv_send_hold *hold, uint64_t *bytes, kv_err *err)
{
    hold->op = NULL;
    peer->last_used = kv_now_s();
    if (peer->state != PEER_READY)
        return kv_err_set(err, KV_ESTATE, "KV transport to %s not set up", peer->endpoint);
    if (peer->transport != KV_TRANSPORT_ZMQ)
        return kv_sender_send_gpu(s, peer, c, timeout_ms, hold, bytes, err);
    atomic_int *in_flight = hold->in_flight;
    size_t block_bytes = kv_engine_block_bytes(e);
    size_t n = (size_t)c->n_blocks;
    uint32_t *sums = malloc((n ? n : 1) * sizeof *sums);
    kv_wire_payload *frames = malloc((n ? n : 1) * sizeof *frames);
    int staged = n && kv_engine_device(e) >= 0; /* GPU pool: frames point into a host copy */
    kv_stage *st = staged ? malloc(sizeof *st + n * block_bytes) : NULL;
    if (!sums || !frames || (staged && !st)) {
        free(sums);
        free(frames);
        free(st);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    if (st) {
        int rc = kv_engine_blocks_read(e, c->src, c->n_blocks, st->data, err);
        if (rc) {
            free(st);
            free(sums);
            free(frames);
            return rc;
        }
        atomic_init(&st->refs, (int)n);
        st->in_flight = in_flight;
    }
    for (size_t i = 0; i < n; i++) {
        const void *data = st ? (const void *)(st->data + i * block_bytes) : kv_engine_block_ptr(e, c->src[i]);
        sums[i] = kv_crc32c(data, block_bytes);
        frames[i].data = data;
        frames[i].len = block_bytes;
        frames[i].zero_copy = 1;
        frames[i].released = st ? stage_released : frame_released;
        frames[i].hint = st ? (void *)st : (void *)in_flight;
    }
    /* Counted before sending: every frame handed to ZeroMQ is released exactly once. */
    atomic_fetch_add(in_flight, (int)n);
    Kvserve__KvChunk kc;
    kv_sender_chunk_msg(s, peer, c, sums, &kc);
    int rc = kv_sender_chunk_send(peer, &kc, frames, n, timeout_ms, err);
    if (!rc)
        kv_sender_fault_point(s, c);
    if (!rc)
        *bytes += n * block_bytes;
    free(sums);
    free(frames);
    return rc;
}
