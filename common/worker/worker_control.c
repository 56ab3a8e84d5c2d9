#include "worker_control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_log.h"
#include "kv_time.h"
#include "worker_loop.h"
#include "worker_proto.h"
#include "kv_signal.h"
#include "kv_curve.h"

/* Control messages are small; a generous queue so a burst of token events never drops. */
#define CONTROL_SNDHWM 100000
#define CONTROL_SEND_TIMEOUT_MS 200

int worker_curve_client(void *sock, const worker_flags *f, kv_err *err)
{
    if (!f->key_file) {
        fprintf(stderr, "%s: WARNING: INSECURE: no --key, so CURVE is off on the control and KV sockets\n", f->prog);
        KV_WARN(f->prog, "msg=\"CURVE is off (no --key): control and KV sockets are unauthenticated\"");
        return KV_OK;
    }
    kv_curve_key key;
    char router_pub[KV_CURVE_Z85];
    int rc;
    if ((rc = kv_curve_key_load(f->key_file, &key, err)) || (rc = kv_curve_pub_load(f->router_key, router_pub, err)))
        return rc;
    rc = kv_curve_apply_client(sock, &key, router_pub, err);
    memset(&key, 0, sizeof key);
    return rc;
}

int worker_control_open(worker_control *wc, void *zctx, const worker_flags *f, const worker_engine *we,
                        const char *kv_endpoint, kv_err *err)
{
    memset(wc, 0, sizeof *wc);
    wc->comp = f->prog;
    wc->heartbeat_ms = WORKER_DEFAULT_HEARTBEAT_MS;
    snprintf(wc->id, sizeof wc->id, "%s", f->id);
    snprintf(wc->router, sizeof wc->router, "%s", f->router);
    snprintf(wc->model, sizeof wc->model, "%s", we->model_name);
    snprintf(wc->fingerprint, sizeof wc->fingerprint, "%s", we->fingerprint);
    snprintf(wc->kv_endpoint, sizeof wc->kv_endpoint, "%s", kv_endpoint ? kv_endpoint : "");
    snprintf(wc->device, sizeof wc->device, "%s", f->device_name);
    wc->alive_file = f->alive_file;
    worker_engine_layout(we, &wc->layout);
    kvserve__register__init(&wc->reg);
    wc->reg.worker_id = wc->id;
    wc->reg.role = f->role == KV_WORKER_DECODE ? KVSERVE__WORKER_ROLE__ROLE_DECODE : KVSERVE__WORKER_ROLE__ROLE_PREFILL;
    wc->reg.model = wc->model;
    wc->reg.model_fingerprint = wc->fingerprint;
    wc->reg.kv_endpoint = wc->kv_endpoint;
    wc->reg.device = wc->device;
    wc->reg.weights = (char *)we->model->weight_types;
    wc->reg.layout = &wc->layout;
    wc->reg.kv_blocks_total = (uint32_t)we->pool->n_blocks;
    wc->pool = we->pool;
    wc->reg.max_context = (uint32_t)we->model->cfg.max_position;
    wc->reg.pid = (uint32_t)getpid();
    for (int i = 0; i < we->xfer.allowed.n; i++)
        wc->transports[i] = (Kvserve__KvTransport)we->xfer.allowed.t[i];
    wc->reg.n_kv_transports = (size_t)we->xfer.allowed.n;
    wc->reg.kv_transports = wc->transports;

    wc->sock = zmq_socket(zctx, ZMQ_DEALER);
    if (!wc->sock)
        return kv_err_set(err, KV_EIO, "control socket: %s", zmq_strerror(zmq_errno()));
    /* IMMEDIATE: while the router is away, sends fail instead of piling up stale heartbeats. */
    worker_sock_defaults(wc->sock, 1);
    int hwm = CONTROL_SNDHWM;
    zmq_setsockopt(wc->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(wc->sock, ZMQ_ROUTING_ID, wc->id, strlen(wc->id));
    int rc = worker_curve_client(wc->sock, f, err);
    if (rc) {
        zmq_close(wc->sock);
        wc->sock = NULL;
        return rc;
    }
    if (zmq_connect(wc->sock, f->router) != 0) {
        int e = zmq_errno();
        zmq_close(wc->sock);
        wc->sock = NULL;
        return kv_err_set(err, KV_EINVAL, "--router %s: %s", f->router, zmq_strerror(e));
    }
    return KV_OK;
}

void worker_control_close(worker_control *wc)
{
    if (wc->sock)
        zmq_close(wc->sock);
    wc->sock = NULL;
}

/* --alive-file: its mtime is the last time this loop turned. A failure is not fatal (the
 * probe that reads the file fails instead, which is the point); it is logged once. */
static void touch_alive(worker_control *wc, double now)
{
    if (!wc->alive_file || now < wc->alive_next_s)
        return;
    wc->alive_next_s = now + WORKER_ALIVE_PERIOD_S;
    int fd = open(wc->alive_file, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    int ok = fd >= 0 && futimens(fd, NULL) == 0;
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (!ok && !wc->alive_failing)
        KV_WARN(wc->comp, "msg=\"cannot touch the alive file\" path=%s err=\"%s\"", wc->alive_file, strerror(e));
    else if (ok && wc->alive_failing)
        KV_INFO(wc->comp, "msg=\"alive file touched again\" path=%s", wc->alive_file);
    wc->alive_failing = !ok;
}

static int send_register(worker_control *wc, int timeout_ms)
{
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER;
    env.register_ = &wc->reg;
    if (wc->register_fill)
        wc->register_fill(wc->register_ctx, &wc->reg);
    kv_err err;
    int rc = kv_wire_send(wc->sock, NULL, &env, NULL, 0, timeout_ms, &err);
    wc->reg.n_held = 0; /* it points into the role's requests: valid for this send only */
    wc->reg.held = NULL;
    if (rc)
        KV_DEBUG(wc->comp, "msg=\"register not sent\" err=\"%s\"", err.msg);
    else
        KV_DEBUG(wc->comp, "msg=\"register sent\" worker=%s", wc->id);
    return rc;
}

/* RegisterAck: accepted, or a final refusal. */
static void on_ack(worker_control *wc, const Kvserve__RegisterAck *ack)
{
    if (!ack->accepted) {
        wc->refused = 1;
        snprintf(wc->refusal, sizeof wc->refusal, "router refused registration: %s (%s)",
                 ack->error && ack->error->message[0] ? ack->error->message : "no reason given",
                 worker_error_name(ack->error ? ack->error->code : KVSERVE__ERROR_CODE__ERROR_NONE));
        KV_ERROR(wc->comp, "msg=\"registration refused\" worker=%s reason=\"%s\"", wc->id, wc->refusal);
        return;
    }
    int was = wc->registered;
    wc->registered = 1;
    wc->register_at_s = 0;
    wc->heartbeat_ms = ack->heartbeat_interval_ms ? (int)ack->heartbeat_interval_ms : WORKER_DEFAULT_HEARTBEAT_MS;
    wc->next_heartbeat_s = kv_now_s() + wc->heartbeat_ms * 1e-3;
    if (!was && wc->pool->prefix)
        kv_prefix_reset_events(wc->pool->prefix); /* a router that just met us knows none of our blocks */
    if (!was)
        KV_INFO(wc->comp, "msg=\"worker registered\" worker=%s role=%s model=%s fingerprint=%s kv_endpoint=%s "
                          "heartbeat_ms=%d blocks=%u",
                wc->id, wc->reg.role == KVSERVE__WORKER_ROLE__ROLE_DECODE ? "decode" : "prefill", wc->model,
                wc->fingerprint, wc->kv_endpoint[0] ? wc->kv_endpoint : "-", wc->heartbeat_ms,
                wc->reg.kv_blocks_total);
}

int worker_control_register(worker_control *wc, kv_err *err)
{
    double resend_at = 0;
    while (!kv_stop_requested()) {
        double now = kv_now_s();
        touch_alive(wc, now);
        if (now >= resend_at) {
            if (!resend_at)
                KV_INFO(wc->comp, "msg=\"registering\" worker=%s router=%s", wc->id, wc->router);
            /* Not even sent (no connection yet): try again soon; sent: wait 5 s for the ack. */
            int sent = send_register(wc, 500) == KV_OK;
            resend_at = kv_now_s() + (sent ? WORKER_REGISTER_RETRY_S : 0.5);
        }
        zmq_pollitem_t it = {wc->sock, 0, ZMQ_POLLIN, 0};
        if (!worker_poll(&it, 1, worker_timeout_ms(kv_now_s(), resend_at)))
            continue;
        for (int i = 0; i < 64; i++) {
            kv_wire_msg m;
            kv_err rerr;
            int rc = kv_wire_recv(wc->sock, 0, 0, &m, &rerr);
            if (rc == KV_ETIMEOUT || rc == KV_EIO)
                break;
            if (!rc && m.env->body_case == KVSERVE__ENVELOPE__BODY_REGISTER_ACK) {
                on_ack(wc, m.env->register_ack);
            } else if (rc) {
                KV_WARN(wc->comp, "msg=\"bad control message\" err=\"%s\"", rerr.msg);
            } else {
                KV_DEBUG(wc->comp, "msg=\"ignored before registration\" body=%d", (int)m.env->body_case);
            }
            kv_wire_msg_close(&m);
            if (wc->refused)
                return kv_err_set(err, KV_ESTATE, "%s", wc->refusal);
            if (wc->registered)
                return KV_OK;
        }
    }
    return kv_err_set(err, KV_ETIMEOUT, "stopped before registration");
}

int worker_control_serve(worker_control *wc, const char *prog, int (*loop)(void *ctx), void *ctx)
{
    kv_err err;
    int rc = worker_control_register(wc, &err);
    if (rc == KV_ESTATE) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        return 1;
    }
    if (rc)
        return 0; /* stopped by a signal before registering */
    int status = loop(ctx);
    if (status)
        fprintf(stderr, "%s: %s\n", prog, wc->refusal);
    return status;
}

int worker_control_handle(worker_control *wc, const kv_wire_msg *m)
{
    const Kvserve__Envelope *env = m->env;
    if (env->body_case == KVSERVE__ENVELOPE__BODY_REGISTER_ACK) {
        on_ack(wc, env->register_ack);
        return 1;
    }
    if (env->body_case == KVSERVE__ENVELOPE__BODY_ERROR && env->error->message &&
        strstr(env->error->message, "register first")) {
        double now = kv_now_s();
        /* One Register per retry period, however many heartbeats bounce meanwhile. */
        if (wc->registered || !wc->register_at_s || now >= wc->register_at_s) {
            KV_WARN(wc->comp, "msg=\"router does not know us: re-registering\" worker=%s", wc->id);
            wc->registered = 0;
            send_register(wc, CONTROL_SEND_TIMEOUT_MS);
            wc->register_at_s = now + WORKER_REGISTER_RETRY_S;
        }
        return 1;
    }
    return 0;
}

#define CACHE_EVENTS_PER_HEARTBEAT 4096

/* The prefix cache's part of a heartbeat: each queued event's hash goes out with the index's
 * state now (stored or evicted), which is what the router must end up believing. */
typedef struct cache_report {
    uint32_t n_events;
    int reset;
    kv_prefix_event *ev;
    uint8_t *bytes;
    ProtobufCBinaryData *stored, *evicted;
} cache_report;

static void cache_report_fill(cache_report *r, kv_prefix *c, Kvserve__Heartbeat *hb)
{
    memset(r, 0, sizeof *r);
    if (!c)
        return;
    hb->kv_blocks_cached = (uint32_t)c->n_indexed;
    hb->prefix_query_tokens = c->query_tokens;
    hb->prefix_hit_tokens = c->hit_tokens;
    r->reset = kv_prefix_take_reset(c);
    hb->cache_reset = r->reset;
    uint32_t n = c->ev_n < CACHE_EVENTS_PER_HEARTBEAT ? c->ev_n : CACHE_EVENTS_PER_HEARTBEAT;
    if (!n)
        return; /* the common case: nothing indexed or evicted since the last heartbeat */
    r->ev = malloc(n * sizeof *r->ev);
    r->bytes = malloc((size_t)n * 16);
    r->stored = malloc(n * sizeof *r->stored);
    r->evicted = malloc(n * sizeof *r->evicted);
    if (!r->ev || !r->bytes || !r->stored || !r->evicted)
        return; /* next time; the events stay queued */
    r->n_events = kv_prefix_events_peek(c, r->ev, n);
    for (uint32_t i = 0; i < r->n_events; i++) {
        uint8_t *b = r->bytes + (size_t)i * 16;
        kv_block_hash_to_bytes(r->ev[i].hash, b);
        ProtobufCBinaryData d = {16, b};
        if (kv_prefix_find(c, r->ev[i].hash) >= 0)
            r->stored[hb->n_cache_stored++] = d;
        else
            r->evicted[hb->n_cache_evicted++] = d;
    }
    hb->cache_stored = r->stored;
    hb->cache_evicted = r->evicted;
}

static void cache_report_done(cache_report *r, kv_prefix *c, int sent)
{
    if (c && sent)
        kv_prefix_events_pop(c, r->n_events);
    else if (c && r->reset)
        kv_prefix_reset_events(c); /* the router never heard of the reset: ask again */
    free(r->ev);
    free(r->bytes);
    free(r->stored);
    free(r->evicted);
}

void worker_control_tick(worker_control *wc, const worker_load *load)
{
    double now = kv_now_s();
    touch_alive(wc, now);
    if (!wc->registered) {
        if (wc->register_at_s && now >= wc->register_at_s) {
            send_register(wc, CONTROL_SEND_TIMEOUT_MS);
            wc->register_at_s = now + WORKER_REGISTER_RETRY_S;
        }
        return;
    }
    if (now < wc->next_heartbeat_s)
        return;
    Kvserve__Heartbeat hb;
    kvserve__heartbeat__init(&hb);
    hb.worker_id = wc->id;
    hb.running = load->running;
    hb.queued = load->queued;
    hb.kv_blocks_free = load->blocks_free;
    hb.kv_blocks_total = load->blocks_total;
    cache_report rep;
    cache_report_fill(&rep, wc->pool->prefix, &hb);
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    kv_err err;
    int rc = kv_wire_send(wc->sock, NULL, &env, NULL, 0, 0, &err);
    if (rc)
        KV_DEBUG(wc->comp, "msg=\"heartbeat not sent\" err=\"%s\"", err.msg);
    cache_report_done(&rep, wc->pool->prefix, rc == 0);
    /* From now, not from the missed slot: a long chunk must not cause a burst. */
    wc->next_heartbeat_s = now + wc->heartbeat_ms * 1e-3;
}

double worker_control_wake(const worker_control *wc)
{
    if (!wc->registered)
        return wc->register_at_s ? wc->register_at_s : kv_now_s() + 1.0;
    return wc->next_heartbeat_s;
}
