#include "kv_wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kv_wire_envelope_init(Kvserve__Envelope *env)
{
    kvserve__envelope__init(env);
    env->version = KV_WIRE_VERSION;
}

static int zmq_fail(kv_err *err, const char *what)
{
    int e = zmq_errno();
    if (e == EAGAIN)
        return kv_err_set(err, KV_ETIMEOUT, "%s: timed out", what);
    return kv_err_set(err, KV_EIO, "%s: %s", what, zmq_strerror(e));
}

static int send_frame(void *sock, const void *data, size_t len, int more, kv_err *err)
{
    if (zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0)
        return zmq_fail(err, "zmq send");
    return KV_OK;
}

int kv_wire_send(void *sock, const kv_wire_route *route, const Kvserve__Envelope *env, const kv_wire_payload *payloads,
                 size_t n_payloads, int timeout_ms, kv_err *err)
{
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    size_t len = kvserve__envelope__get_packed_size(env);
    unsigned char stackbuf[4096];
    unsigned char *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!buf)
        return kv_err_set(err, KV_ENOMEM, "out of memory packing a %zu-byte message", len);
    kvserve__envelope__pack(env, buf);
    int rc = KV_OK;
    if (route && route->len)
        rc = send_frame(sock, route->id, route->len, 1, err);
    if (!rc)
        rc = send_frame(sock, buf, len, n_payloads > 0, err);
    size_t handed = 0; /* frames given to ZeroMQ, which then calls their `released` itself */
    for (size_t i = 0; !rc && i < n_payloads; i++) {
        int more = i + 1 < n_payloads;
        handed = i + 1;
        if (!payloads[i].zero_copy) {
            rc = send_frame(sock, payloads[i].data, payloads[i].len, more, err);
            continue;
        }
        zmq_msg_t m;
        zmq_msg_init_data(&m, (void *)payloads[i].data, payloads[i].len, payloads[i].released, payloads[i].hint);
        if (zmq_msg_send(&m, sock, more ? ZMQ_SNDMORE : 0) < 0) {
            zmq_msg_close(&m);
            rc = zmq_fail(err, "zmq send");
        }
    }
    /* After a failure the frames never handed over are released here: the contract is
     * exactly one `released` per zero-copy frame, whatever happened. */
    for (size_t i = handed; rc && i < n_payloads; i++)
        if (payloads[i].zero_copy && payloads[i].released)
            payloads[i].released((void *)payloads[i].data, payloads[i].hint);
    if (buf != stackbuf)
        free(buf);
    return rc;
}

/* Drains the remaining frames of a half-read multipart message. */
static void drain(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        zmq_msg_close(&m);
    }
}

static int has_more(void *sock)
{
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    return more;
}

int kv_wire_decode(const void *data, size_t len, Kvserve__Envelope **out, kv_err *err)
{
    *out = kvserve__envelope__unpack(NULL, len, data);
    if (!*out)
        return kv_err_set(err, KV_EFORMAT, "malformed message: not a kvserve envelope");
    if ((*out)->version != KV_WIRE_VERSION) {
        unsigned v = (*out)->version;
        kvserve__envelope__free_unpacked(*out, NULL);
        *out = NULL;
        return kv_err_set(err, KV_EUNSUPPORTED, "protocol version mismatch: peer speaks %u, this process %u", v,
                          (unsigned)KV_WIRE_VERSION);
    }
    return KV_OK;
}

int kv_wire_recv(void *sock, int with_route, int timeout_ms, kv_wire_msg *out, kv_err *err)
{
    memset(out, 0, sizeof *out);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    zmq_msg_t frame;
    zmq_msg_init(&frame);
    if (zmq_msg_recv(&frame, sock, 0) < 0) {
        zmq_msg_close(&frame);
        return zmq_fail(err, "zmq recv");
    }
    /* Once the first frame is in, the rest of the message is already queued. */
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &zero, sizeof zero);
    if (with_route) {
        size_t n = zmq_msg_size(&frame);
        out->route.len = n > KV_WIRE_MAX_ROUTE ? KV_WIRE_MAX_ROUTE : n;
        memcpy(out->route.id, zmq_msg_data(&frame), out->route.len);
        zmq_msg_close(&frame);
        zmq_msg_init(&frame);
        if (!has_more(sock) || zmq_msg_recv(&frame, sock, 0) < 0) {
            zmq_msg_close(&frame);
            return kv_err_set(err, KV_EFORMAT, "message without an envelope frame");
        }
    }
    const char *peer = zmq_msg_gets(&frame, "Peer-Address");
    snprintf(out->route.peer, sizeof out->route.peer, "%s", peer ? peer : "");
    const char *user = zmq_msg_gets(&frame, "User-Id");
    snprintf(out->route.user, sizeof out->route.user, "%s", user ? user : "");
    int rc = kv_wire_decode(zmq_msg_data(&frame), zmq_msg_size(&frame), &out->env, err);
    zmq_msg_close(&frame);
    if (rc) {
        drain(sock);
        return rc;
    }
    size_t cap = 0;
    while (has_more(sock)) {
        if (out->n_payloads == cap) {
            cap = cap ? cap * 2 : 8;
            zmq_msg_t *p = realloc(out->payloads, cap * sizeof *p);
            if (!p) {
                drain(sock);
                kv_wire_msg_close(out);
                return kv_err_set(err, KV_ENOMEM, "out of memory receiving payload frames");
            }
            out->payloads = p;
        }
        zmq_msg_init(&out->payloads[out->n_payloads]);
        if (zmq_msg_recv(&out->payloads[out->n_payloads], sock, 0) < 0) {
            zmq_msg_close(&out->payloads[out->n_payloads]);
            kv_wire_msg_close(out);
            return kv_err_set(err, KV_EFORMAT, "truncated multipart message");
        }
        out->n_payloads++;
    }
    return KV_OK;
}

void kv_wire_msg_close(kv_wire_msg *m)
{
    if (m->env)
        kvserve__envelope__free_unpacked(m->env, NULL);
    for (size_t i = 0; i < m->n_payloads; i++)
        zmq_msg_close(&m->payloads[i]);
    free(m->payloads);
    m->env = NULL;
    m->payloads = NULL;
    m->n_payloads = 0;
}

int kv_wire_send_error(void *sock, const kv_wire_route *route, Kvserve__ErrorCode code, const char *request_id,
                       const char *message, kv_err *err)
{
    Kvserve__Envelope env;
    Kvserve__Error e;
    kv_wire_envelope_init(&env);
    kvserve__error__init(&e);
    e.code = code;
    e.message = (char *)message;
    e.request_id = (char *)(request_id ? request_id : "");
    env.body_case = KVSERVE__ENVELOPE__BODY_ERROR;
    env.error = &e;
    return kv_wire_send(sock, route, &env, NULL, 0, 1000, err);
}

uint32_t kv_crc32c(const void *data, size_t len)
{
    /* The SSE4.2 CRC32 instruction (x86-64-v2 and later, which we build for): several
     * GB/s, so checksumming KV blocks costs far less than moving them. */
    const unsigned char *p = data;
    uint64_t crc = 0xFFFFFFFFu;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        crc = __builtin_ia32_crc32di(crc, v);
    }
    uint32_t c = (uint32_t)crc;
    for (; i < len; i++)
        c = __builtin_ia32_crc32qi(c, p[i]);
    return c ^ 0xFFFFFFFFu;
}
