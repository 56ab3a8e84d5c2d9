#include "kv_zap.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "kv_log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES 7 /* version, request id, domain, address, identity, mechanism, credentials */

const char *kv_zap_key_prefix(const char *z85, char out[9])
{
    snprintf(out, 9, "%.8s", z85 && *z85 ? z85 : "-");
    return out;
}

int kv_zap_open(kv_zap *z, void *zctx, kv_zap_decide decide, void *ctx, const char *comp, kv_err *err)
{
    memset(z, 0, sizeof *z);
    z->decide = decide;
    z->ctx = ctx;
    z->comp = comp;
    z->sock = zmq_socket(zctx, ZMQ_REP);
    if (!z->sock)
        return kv_err_set(err, KV_EIO, "ZAP socket: %s", zmq_strerror(zmq_errno()));
    int zero = 0;
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(z->sock, ZAP_ENDPOINT) != 0) {
        int e = zmq_errno();
        zmq_close(z->sock);
        z->sock = NULL;
        return kv_err_set(err, KV_EIO, "ZAP handler %s: %s", ZAP_ENDPOINT, zmq_strerror(e));
    }
    return KV_OK;
}

static void copy_str(char *dst, size_t cap, const zmq_msg_t *m)
{
    size_t n = zmq_msg_size(m) < cap - 1 ? zmq_msg_size(m) : cap - 1;
    memcpy(dst, zmq_msg_data((zmq_msg_t *)m), n);
    dst[n] = '\0';
    for (size_t i = 0; i < n; i++) /* log-safe */
        if ((unsigned char)dst[i] < 0x20 || dst[i] == '"' || dst[i] == 0x7f)
            dst[i] = '?';
}

static void reply(void *sock, const zmq_msg_t *request_id, const char *status, const char *text, const char *user)
{
    zmq_msg_t rid;
    zmq_msg_init_size(&rid, zmq_msg_size(request_id));
    memcpy(zmq_msg_data(&rid), zmq_msg_data((zmq_msg_t *)request_id), zmq_msg_size(request_id));
    zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_msg_send(&rid, sock, ZMQ_SNDMORE);
    zmq_send(sock, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(sock, "", 0, 0);
}

/* One request: 1 handled, 0 none waiting, -1 the context is ending. */
static int handle_one(kv_zap *z, int flags)
{
    zmq_msg_t f[ZAP_FRAMES + 1];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, z->sock, n == 0 ? flags : 0) < 0) {
            int e = zmq_errno();
            zmq_msg_close(&m);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&f[i]);
            return e == EAGAIN ? 0 : e == EINTR ? 1 : -1;
        }
        more = zmq_msg_more(&m);
        if (n < ZAP_FRAMES + 1)
            f[n++] = m;
        else
            zmq_msg_close(&m); /* more frames than the RFC has: refused below */
    }
    kv_zap_peer p;
    memset(&p, 0, sizeof p);
    char mech[16] = "", why[128] = "";
    int ok = 0;
    if (n >= 2 && n != ZAP_FRAMES) {
        snprintf(why, sizeof why, "malformed ZAP request (%d frames)", n);
    } else if (n == ZAP_FRAMES) {
        copy_str(p.domain, sizeof p.domain, &f[2]);
        copy_str(p.address, sizeof p.address, &f[3]);
        p.routing_id_len = zmq_msg_size(&f[4]) < sizeof p.routing_id ? zmq_msg_size(&f[4]) : sizeof p.routing_id;
        memcpy(p.routing_id, zmq_msg_data(&f[4]), p.routing_id_len);
        copy_str(mech, sizeof mech, &f[5]);
        if (strcmp(mech, "CURVE") || zmq_msg_size(&f[6]) != 32) {
            snprintf(why, sizeof why, "mechanism %s is not CURVE", mech);
        } else {
            zmq_z85_encode(p.key, zmq_msg_data(&f[6]), 32);
            ok = z->decide(z->ctx, &p, why, sizeof why);
        }
    }
    if (n >= 2) {
        if (!ok) {
            char pre[9];
            KV_WARN(z->comp, "event=auth_refused domain=%s peer=%s key=%s reason=\"%s\"", p.domain[0] ? p.domain : "-",
                    p.address[0] ? p.address : "-", kv_zap_key_prefix(p.key, pre), why);
        }
        reply(z->sock, &f[1], ok ? "200" : "400", ok ? "OK" : why, ok ? p.key : "");
    } else if (n == 1) {
        zmq_send(z->sock, "", 0, 0); /* a REP must answer to take the next request */
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
    return 1;
}

void kv_zap_handle(kv_zap *z)
{
    for (int i = 0; i < 256 && handle_one(z, ZMQ_DONTWAIT) == 1; i++)
        ;
}

static void *zap_thread(void *arg)
{
    kv_zap *z = arg;
    while (handle_one(z, 0) >= 0)
        ;
    zmq_close(z->sock);
    return NULL;
}

int kv_zap_thread_start(kv_zap *z, kv_err *err)
{
    if (pthread_create(&z->thread, NULL, zap_thread, z) != 0)
        return kv_err_set(err, KV_EIO, "cannot start the ZAP thread");
    z->has_thread = 1;
    return KV_OK;
}

void kv_zap_close(kv_zap *z)
{
    if (z->has_thread)
        pthread_join(z->thread, NULL);
    else if (z->sock)
        zmq_close(z->sock);
    z->sock = NULL;
    z->has_thread = 0;
}
