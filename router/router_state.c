/* Router life cycle (model, sockets) and one step of the event loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_log.h"
#include "kv_time.h"
#include "kv_file.h"
#include "router.h"

#define SOCKET_HWM 100000
#define MAX_MESSAGE_BYTES (64 << 20) /* a peer cannot make the router allocate more per message */
#define DRAIN_BATCH 512              /* messages per socket per step, so neither starves */
#define SHUTDOWN_LINGER_MS 200

void router_opts_default(router_opts *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "tcp://*:7100";
    o->control = "tcp://*:7101";
    o->heartbeat_ms = 500;
    o->worker_timeout_ms = 5000;
    o->reserve_deadline_ms = 2000;
    o->prefill_deadline_ms = 60000;
    o->token_deadline_ms = 30000;
    o->request_deadline_ms = 600000;
    o->queue_deadline_ms = 30000;
    o->ack_deadline_ms = 10000;
    o->route_cache = 1;
    o->route_load_tokens = 256;
    o->route_balance = 4;
    o->local_prefill_max = 32;
    o->client_timeout_ms = 10000;
}

void router_model_from_config(router_model *m, const char *name, const kv_model_config *cfg, kv_tokenizer *tok,
                              int max_prompt_tokens)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->cfg = *cfg;
    m->prompt = (kv_prompt_encoder){.tok = tok, .chat = NULL, .config_bos = cfg->bos_id};
    m->context = cfg->max_position > 0 ? (uint32_t)cfg->max_position : 0;
    m->max_prompt = m->context ? m->context - 1 : 0;
    if (max_prompt_tokens > 0 && (uint32_t)max_prompt_tokens < m->max_prompt)
        m->max_prompt = (uint32_t)max_prompt_tokens;
}

/* Basename of a directory path, ignoring trailing slashes. */
static int open_socket(router_state *st, const char *endpoint, int control, void **out, char *bound, size_t cap,
                       kv_err *err)
{
    void *s = zmq_socket(st->zctx, ZMQ_ROUTER);
    if (!s)
        return kv_err_set(err, KV_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int rc = router_security_apply(&st->sec, s, control ? ROUTER_ZAP_DOMAIN_CONTROL : ROUTER_ZAP_DOMAIN_CLIENT, err);
    if (rc) {
        zmq_close(s);
        return rc;
    }
    int hwm = SOCKET_HWM, zero = 0;
    int64_t maxmsg = MAX_MESSAGE_BYTES;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    /* A peer that connects and never finishes its handshake is dropped after 5 s, not
     * ZeroMQ's default 30 s (issue 13: no peer may hold a socket's resources for free). */
    int handshake_ms = 5000;
    zmq_setsockopt(s, ZMQ_HANDSHAKE_IVL, &handshake_ms, sizeof handshake_ms);
    if (control) {
        /* No ZMQ_ROUTER_HANDOVER: with it, any process connecting under a worker's id took
         * that worker's connection over for good (issue 13). A second connection claiming an
         * id in use is dropped instead; ZMTP heartbeats free the id of a connection whose
         * process is gone or frozen, so a restarted worker gets it back. */
        int ivl = 1000, ttl = 5000;
        zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &ttl, sizeof ttl);
    }
    if (zmq_bind(s, endpoint) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return kv_err_set(err, KV_EIO, "cannot bind %s: %s", endpoint, zmq_strerror(e));
    }
    size_t len = cap;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &len) != 0)
        snprintf(bound, cap, "%s", endpoint);
    *out = s;
    return KV_OK;
}

int router_state_init(router_state *st, const router_opts *o, void *zctx, kv_err *err)
{
    memset(st, 0, sizeof *st);
    st->opt = *o;
    st->dl = (router_deadlines){.queue_s = o->queue_deadline_ms * 1e-3,
                                .reserve_s = o->reserve_deadline_ms * 1e-3,
                                .prefill_s = o->prefill_deadline_ms * 1e-3,
                                .token_s = o->token_deadline_ms * 1e-3};
    router_workers_init(&st->workers);
    if (router_prefix_init(&st->prefix))
        return kv_err_set(err, KV_ENOMEM, "router: out of memory for the prefix index");
    router_requests_init(&st->reqs);
    router_map_init(&st->gone_workers);
    /* Wire ids differ from every earlier router's on these ports: workers may still run a dead
     * router's requests when a client resumes one under the same request_id. */
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    st->reqs.next_seq = (uint64_t)wall.tv_sec * 1000000u + (uint64_t)wall.tv_nsec / 1000u;
    router_liveness_init(&st->clients);
    router_metrics_init(&st->metrics);
    st->started = st->now = kv_now_s();

    kv_model_config cfg;
    char name[256];
    kv_prompt_encoder pe;
    int rc = kv_model_config_load(o->model_dir, &cfg, err);
    if (rc)
        return rc;
    if (cfg.max_position < 2)
        return kv_err_set(err, KV_EFORMAT, "%s: context length %d is too small", o->model_dir, cfg.max_position);
    if ((rc = kv_prompt_encoder_load(o->model_dir, cfg.bos_id, &pe, err)))
        return rc;
    kv_path_basename(o->model_dir, name, sizeof name);
    router_model_from_config(&st->model, name, &cfg, pe.tok, o->max_prompt_tokens);
    st->model.prompt.chat = pe.chat;
    if ((rc = kv_model_fingerprint(o->model_dir, st->model.fingerprint, err)))
        goto fail;

    st->zctx = zctx;
    if (!st->zctx) {
        st->zctx = zmq_ctx_new();
        st->own_ctx = 1;
        if (!st->zctx) {
            rc = kv_err_set(err, KV_EIO, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    if ((rc = router_security_open(&st->sec, st->zctx, o->key_file, o->worker_keys, o->client_keys, err)))
        goto fail;
    if ((rc = open_socket(st, o->listen, 0, &st->client, st->client_ep, sizeof st->client_ep, err)) ||
        (rc = open_socket(st, o->control, 1, &st->control, st->control_ep, sizeof st->control_ep, err)))
        goto fail;
    return KV_OK;
fail:
    router_state_free(st);
    return rc;
}

void router_state_free(router_state *st)
{
    st->now = kv_now_s();
    /* Handover (default): say nothing. Decode workers keep running what they hold and offer it
     * to the next router (Register.held), clients resume there: a restart loses no stream, as
     * after a kill -9 but without waiting for a heartbeat to notice. Fail: clients get an
     * error, workers an Abort (freeing blocks). */
    while (st->opt.exit_fails_requests && st->reqs.head)
        router_end(st, st->reqs.head, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL,
                   "the router is shutting down");
    int linger = SHUTDOWN_LINGER_MS;
    if (st->client) {
        zmq_setsockopt(st->client, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(st->client);
    }
    if (st->control) {
        zmq_setsockopt(st->control, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(st->control);
    }
    st->client = st->control = NULL;
    router_security_close(&st->sec);
    if (st->own_ctx && st->zctx)
        zmq_ctx_term(st->zctx);
    st->zctx = NULL;
    router_requests_free(&st->reqs);
    router_map_free(&st->gone_workers);
    router_liveness_free(&st->clients);
    router_workers_free(&st->workers);
    router_prefix_free(&st->prefix);
    kv_prompt_encoder_free(&st->model.prompt);
}

int router_write_ready_file(const router_state *st, const char *path, kv_err *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return kv_err_set(err, KV_EIO, "cannot write %s: %s", tmp, strerror(errno));
    int bad = fprintf(f, "client=%s\ncontrol=%s\n", st->client_ep, st->control_ep) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kv_err_set(err, KV_EIO, "cannot write %s: %s", path, strerror(e));
    }
    return KV_OK;
}

void router_handle(router_state *st, int control, int rc, kv_wire_msg *m, const kv_err *err)
{
    void *sock = control ? st->control : st->client;
    /* Any message from a client, even a bad one, says it is alive (--client-timeout). */
    if (!control && st->opt.client_timeout_ms > 0 && router_liveness_heard(&st->clients, &m->route, st->now))
        KV_WARN("router", "event=client_untracked clients=%zu reason=\"liveness table full: clients heard from now "
                          "on are not timed out\"", router_liveness_count(&st->clients));
    if (rc == KV_EFORMAT || rc == KV_EUNSUPPORTED) {
        KV_WARN("router", "event=bad_message endpoint=%s reason=\"%s\"", control ? "control" : "client", err->msg);
        if (m->route.len) {
            kv_err e2;
            kv_wire_send_error(sock, &m->route,
                               rc == KV_EUNSUPPORTED ? KVSERVE__ERROR_CODE__VERSION_MISMATCH
                                                     : KVSERVE__ERROR_CODE__BAD_MESSAGE,
                               "", err->msg, &e2);
        }
    } else if (control) {
        router_control_handle(st, m);
    } else {
        router_client_handle(st, m);
    }
}

static void drain(router_state *st, void *sock, int control)
{
    for (int i = 0; i < DRAIN_BATCH; i++) {
        kv_wire_msg m;
        kv_err err;
        int rc = kv_wire_recv(sock, 1, 0, &m, &err);
        if (rc == KV_ETIMEOUT)
            return;
        if (rc && rc != KV_EFORMAT && rc != KV_EUNSUPPORTED) {
            KV_WARN("router", "event=recv_failed endpoint=%s reason=\"%s\"", control ? "control" : "client", err.msg);
            kv_wire_msg_close(&m);
            return;
        }
        st->now = kv_now_s();
        router_handle(st, control, rc, &m, &err);
        kv_wire_msg_close(&m);
    }
}

int router_step(router_state *st, int max_wait_ms)
{
    double now = kv_now_s();
    int timeout = max_wait_ms;
    if (st->next_check > 0) {
        double ms = (st->next_check - now) * 1e3;
        if (ms < timeout)
            timeout = ms <= 0 ? 0 : (int)ms + 1;
    }
    zmq_pollitem_t items[3] = {{st->control, 0, ZMQ_POLLIN, 0}, {st->client, 0, ZMQ_POLLIN, 0},
                               {st->sec.zap.sock, 0, ZMQ_POLLIN, 0}};
    int rc = zmq_poll(items, st->sec.on ? 3 : 2, timeout);
    if (rc < 0 && zmq_errno() != EINTR)
        KV_WARN("router", "event=poll_failed error=\"%s\"", zmq_strerror(zmq_errno()));
    if (rc > 0) {
        /* Worker messages first: they free capacity and move requests on. */
        if (items[0].revents & ZMQ_POLLIN)
            drain(st, st->control, 1);
        if (items[1].revents & ZMQ_POLLIN)
            drain(st, st->client, 0);
        if (st->sec.on && (items[2].revents & ZMQ_POLLIN))
            kv_zap_handle(&st->sec.zap);
    }
    router_tick(st, kv_now_s());
    return rc < 0 ? -1 : 0;
}

void router_tick(router_state *st, double now)
{
    st->now = now;
    router_worker *gone[16];
    size_t n;
    while ((n = router_workers_expired(&st->workers, now, st->opt.worker_timeout_ms * 1e-3, gone, 16)) > 0)
        for (size_t i = 0; i < n; i++) {
            char why[96];
            snprintf(why, sizeof why, "no heartbeat for %.0f ms", (now - gone[i]->last_heartbeat) * 1e3);
            router_worker_gone(st, gone[i], why);
        }
    if (st->next_check > 0 && now >= st->next_check)
        router_expire(st, now);
    router_expire_clients(st, now);
    router_schedule(st);
}
