#include "test_workers_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int th_init(th *h, int hb_interval_ms)
{
    memset(h, 0, sizeof *h);
    h->hb_interval_ms = hb_interval_ms;
    h->zctx = zmq_ctx_new();
    h->ctl = zmq_socket(h->zctx, ZMQ_ROUTER);
    int zero = 0, one = 1;
    zmq_setsockopt(h->ctl, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(h->ctl, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(h->ctl, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    if (zmq_bind(h->ctl, "tcp://127.0.0.1:0") != 0)
        return -1;
    size_t len = sizeof h->endpoint;
    return zmq_getsockopt(h->ctl, ZMQ_LAST_ENDPOINT, h->endpoint, &len);
}

static void reap(th_worker *w, int options)
{
    if (w->exited || w->pid <= 0)
        return;
    int st;
    pid_t p = waitpid(w->pid, &st, options);
    if (p == w->pid) {
        w->exited = 1;
        w->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    }
}

void th_close(th *h)
{
    for (int i = 0; i < h->nw; i++) {
        th_worker *w = &h->w[i];
        reap(w, WNOHANG);
        if (!w->exited && w->pid > 0) {
            kill(w->pid, SIGKILL);
            reap(w, 0);
        }
    }
    zmq_close(h->ctl);
    zmq_ctx_term(h->zctx);
}

th_worker *th_spawn(th *h, const char *bin, const char *model_dir, const char *id, const char *const *extra)
{
    if (h->nw == TH_MAX_WORKERS)
        return NULL;
    th_worker *w = &h->w[h->nw++];
    memset(w, 0, sizeof *w);
    snprintf(w->id, sizeof w->id, "%s", id);
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--model";
    argv[n++] = model_dir;
    argv[n++] = "--router";
    argv[n++] = h->endpoint;
    argv[n++] = "--id";
    argv[n++] = id;
    argv[n++] = "--threads";
    argv[n++] = "1";
    for (int i = 0; i < 8 && h->worker_args[i] && n < 63; i++)
        argv[n++] = h->worker_args[i];
    for (int i = 0; extra && extra[i] && n < 63; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    fflush(NULL);
    w->pid = fork();
    if (w->pid == 0) {
        execv(bin, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    return w->pid > 0 ? w : NULL;
}

int th_wait_exit(th *h, th_worker *w, int timeout_ms)
{
    double end = th_now() + timeout_ms * 1e-3;
    while (!w->exited && th_now() < end) {
        reap(w, WNOHANG);
        if (!w->exited)
            th_pump(h, 20);
    }
    return w->exited ? w->exit_status : -1;
}

int th_stop(th *h, th_worker *w, int timeout_ms)
{
    reap(w, WNOHANG);
    if (w->exited)
        return w->exit_status;
    kill(w->pid, SIGTERM);
    int st = th_wait_exit(h, w, timeout_ms);
    if (st < 0) {
        fprintf(stderr, "harness: %s did not exit within %d ms of SIGTERM\n", w->id, timeout_ms);
        kill(w->pid, SIGKILL);
        reap(w, 0);
        return -1;
    }
    return st;
}

/* The newest worker with that id (a restarted worker reuses its predecessor's). */
static th_worker *worker_by_route(th *h, const kv_wire_route *r)
{
    for (int i = h->nw - 1; i >= 0; i--)
        if (strlen(h->w[i].id) == r->len && !memcmp(h->w[i].id, r->id, r->len))
            return &h->w[i];
    return NULL;
}

static th_req *req_find(th *h, const char *id)
{
    for (int i = 0; i < h->nr; i++)
        if (!strcmp(h->r[i].id, id))
            return &h->r[i];
    return NULL;
}

th_req *th_req_get(th *h, const char *id)
{
    th_req *found = req_find(h, id);
    if (found)
        return found;
    if (h->nr == TH_MAX_REQS)
        return NULL;
    th_req *r = &h->r[h->nr++];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", id);
    return r;
}

/* The routing frame of a worker on the control ROUTER: its id. */
static kv_wire_route worker_route(const th_worker *w)
{
    kv_wire_route route = {.len = strlen(w->id)};
    memcpy(route.id, w->id, route.len);
    return route;
}

int th_send(th *h, th_worker *w, Kvserve__Envelope *env)
{
    kv_wire_route route = worker_route(w);
    kv_err err;
    int rc = kv_wire_send(h->ctl, &route, env, NULL, 0, 1000, &err);
    if (rc)
        fprintf(stderr, "harness: send to %s failed: %s\n", w->id, err.msg);
    return rc;
}

static void on_register(th *h, th_worker *w, const Kvserve__Register *reg)
{
    w->registrations++;
    snprintf(w->kv_endpoint, sizeof w->kv_endpoint, "%s", reg->kv_endpoint);
    w->block_bytes = reg->layout ? reg->layout->block_bytes : 0;
    snprintf(w->dtype, sizeof w->dtype, "%s", reg->layout && reg->layout->dtype ? reg->layout->dtype : "");
    w->blocks_total_reg = reg->kv_blocks_total;
    Kvserve__RegisterAck ack;
    Kvserve__Error e;
    kvserve__register_ack__init(&ack);
    ack.accepted = !w->refuse;
    ack.heartbeat_interval_ms = (uint32_t)h->hb_interval_ms;
    if (w->refuse) {
        kvserve__error__init(&e);
        e.code = KVSERVE__ERROR_CODE__UNKNOWN_MODEL;
        e.message = "model fingerprint differs from the router's";
        ack.error = &e;
    }
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER_ACK;
    env.register_ack = &ack;
    th_send(h, w, &env);
}

static void on_heartbeat(th *h, th_worker *w, const Kvserve__Heartbeat *hb)
{
    w->hb_count++;
    w->running = hb->running;
    w->queued = hb->queued;
    w->blocks_free = hb->kv_blocks_free;
    w->blocks_total = hb->kv_blocks_total;
    if (w->register_first) {
        w->register_first = 0;
        Kvserve__Envelope env;
        Kvserve__Error e;
        kv_wire_envelope_init(&env);
        kvserve__error__init(&e);
        e.code = KVSERVE__ERROR_CODE__UNKNOWN_REQUEST;
        e.message = "unknown worker: register first";
        env.body_case = KVSERVE__ENVELOPE__BODY_ERROR;
        env.error = &e;
        th_send(h, w, &env);
    }
}

/* The record of request `id`, or NULL (after telling the worker, as the router would, that
 * the request is unknown) when forget_unknown is on and the test never made it. */
static th_req *req_of(th *h, th_worker *w, const char *id)
{
    if (!h->forget_unknown)
        return th_req_get(h, id);
    th_req *r = req_find(h, id);
    if (r)
        return r;
    kv_wire_route route = worker_route(w);
    kv_err err;
    kv_wire_send_error(h->ctl, &route, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, id, "unknown request", &err);
    return NULL;
}

static void on_tokens(th *h, th_worker *w, const Kvserve__TokenEvent *ev)
{
    th_req *r = req_of(h, w, ev->request_id);
    if (!r)
        return;
    r->events++;
    if (ev->index != (uint32_t)r->n_tokens)
        r->index_errors++;
    for (size_t i = 0; i < ev->n_tokens && r->n_tokens < TH_MAX_TOKENS; i++)
        r->tokens[r->n_tokens++] = ev->tokens[i];
    int active = 0;
    for (int i = 0; i < h->nr; i++)
        active += h->r[i].n_tokens > 0 && !h->r[i].finished;
    if (active > h->max_active)
        h->max_active = active;
    if (ev->finish_reason != KVSERVE__FINISH_REASON__FINISH_NONE) {
        r->finished++;
        r->finish_reason = ev->finish_reason;
        r->finish_err = ev->error ? (int)ev->error->code : 0;
    }
}

static void on_message(th *h, const kv_wire_msg *m)
{
    th_worker *w = worker_by_route(h, &m->route);
    const Kvserve__Envelope *env = m->env;
    if (!w) {
        h->unexpected++;
        fprintf(stderr, "harness: message from an unknown peer\n");
        return;
    }
    switch (env->body_case) {
    case KVSERVE__ENVELOPE__BODY_REGISTER: on_register(h, w, env->register_); break;
    case KVSERVE__ENVELOPE__BODY_HEARTBEAT: on_heartbeat(h, w, env->heartbeat); break;
    case KVSERVE__ENVELOPE__BODY_TOKENS: on_tokens(h, w, env->tokens); break;
    case KVSERVE__ENVELOPE__BODY_RESERVE_REPLY: {
        const Kvserve__ReserveReply *rr = env->reserve_reply;
        th_req *r = req_of(h, w, rr->request_id);
        if (!r)
            break;
        r->reserve_replied++;
        r->reserve_ok = rr->ok;
        r->reserve_err = rr->error ? (int)rr->error->code : 0;
        r->n_blocks = 0;
        for (size_t i = 0; i < rr->n_block_ids && i < TH_MAX_BLOCKS; i++)
            r->blocks[r->n_blocks++] = rr->block_ids[i];
        break;
    }
    case KVSERVE__ENVELOPE__BODY_PREFILL_DONE: {
        const Kvserve__PrefillDone *d = env->prefill_done;
        th_req *r = req_of(h, w, d->request_id);
        if (!r)
            break;
        r->prefill_done++;
        r->prefill_ok = d->ok;
        r->prefill_err = d->error ? (int)d->error->code : 0;
        r->first_token = d->first_token;
        r->prefill_done_s = th_now();
        r->prefill_ms = d->prefill_ms;
        r->transfer_ms = d->transfer_ms;
        r->kv_bytes = d->kv_bytes;
        r->kv_chunks = d->kv_chunks;
        r->transport = (int)d->transport;
        break;
    }
    default:
        h->unexpected++;
        fprintf(stderr, "harness: unexpected message body %d from %s\n", (int)env->body_case, w->id);
    }
}

void th_pump(th *h, int timeout_ms)
{
    /* Waits up to timeout_ms for a message, then takes whatever else is already queued. */
    int wait = timeout_ms;
    for (;;) {
        kv_wire_msg m;
        kv_err err;
        int rc = kv_wire_recv(h->ctl, 1, wait, &m, &err);
        if (rc == KV_OK)
            on_message(h, &m);
        else if (rc != KV_ETIMEOUT) {
            h->unexpected++;
            fprintf(stderr, "harness: bad message: %s\n", err.msg);
        }
        kv_wire_msg_close(&m);
        if (rc == KV_ETIMEOUT)
            return;
        wait = 0;
    }
}

static int never(th *h, const void *arg)
{
    (void)h, (void)arg;
    return 0;
}

void th_idle(th *h, int timeout_ms) { th_wait(h, never, NULL, timeout_ms); }

int th_wait(th *h, th_cond cond, const void *arg, int timeout_ms)
{
    double end = th_now() + timeout_ms * 1e-3;
    for (;;) {
        if (cond(h, arg))
            return 1;
        double left = end - th_now();
        if (left <= 0)
            return 0;
        th_pump(h, left > 0.05 ? 50 : (int)(left * 1e3) + 1); /* returns at the first message */
        for (int i = 0; i < h->nw; i++) {
            th_worker *w = &h->w[i];
            if (!w->exited) {
                reap(w, WNOHANG);
                if (w->exited)
                    fprintf(stderr, "harness: %s exited with status %d\n", w->id, w->exit_status);
            }
        }
    }
}

typedef struct reg_arg { th_worker *w; int n; } reg_arg;
static int cond_registered(th *h, const void *a)
{
    const reg_arg *ra = a;
    (void)h;
    return ra->w->registrations >= ra->n && ra->w->hb_count > 0;
}
int th_wait_registered(th *h, th_worker *w, int n, int timeout_ms)
{
    /* Registered and heartbeating (so the ack got through). */
    reg_arg a = {w, n};
    return th_wait(h, cond_registered, &a, timeout_ms);
}

static int cond_reserved(th *h, const void *a) { (void)h; return ((const th_req *)a)->reserve_replied > 0; }
int th_wait_reserved(th *h, th_req *r, int timeout_ms) { return th_wait(h, cond_reserved, r, timeout_ms); }

static int cond_finished(th *h, const void *a) { (void)h; return ((const th_req *)a)->finished > 0; }
int th_wait_finished(th *h, th_req *r, int timeout_ms) { return th_wait(h, cond_finished, r, timeout_ms); }

static int cond_prefill(th *h, const void *a) { (void)h; return ((const th_req *)a)->prefill_done > 0; }
int th_wait_prefill_done(th *h, th_req *r, int timeout_ms) { return th_wait(h, cond_prefill, r, timeout_ms); }

typedef struct idle_arg { th_worker *w; int hb0; } idle_arg;
static int cond_idle(th *h, const void *a)
{
    const idle_arg *ia = a;
    const th_worker *w = ia->w;
    (void)h;
    return w->hb_count > ia->hb0 && !w->running && !w->queued && w->blocks_total > 0 &&
           w->blocks_free == w->blocks_total;
}
int th_wait_idle(th *h, th_worker *w, int timeout_ms)
{
    idle_arg a = {w, w->hb_count};
    return th_wait(h, cond_idle, &a, timeout_ms);
}

int th_reserve(th *h, th_worker *d, const char *rid, uint32_t prompt, uint32_t max_tokens,
               const Kvserve__SamplingParams *sp, int ignore_eos, uint32_t transfer_deadline_ms)
{
    th_req_get(h, rid);
    Kvserve__ReserveRequest rr;
    kvserve__reserve_request__init(&rr);
    rr.request_id = (char *)rid;
    rr.prompt_tokens = prompt;
    rr.max_tokens = max_tokens;
    rr.sampling = (Kvserve__SamplingParams *)sp;
    rr.ignore_eos = ignore_eos;
    rr.transfer_deadline_ms = transfer_deadline_ms;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_RESERVE;
    env.reserve = &rr;
    return th_send(h, d, &env);
}

int th_prefill(th *h, th_worker *p, th_worker *d, const th_req *r, const int32_t *tokens, int n,
               const Kvserve__SamplingParams *sp, uint32_t ack_deadline_ms)
{
    Kvserve__PrefillTask t;
    kvserve__prefill_task__init(&t);
    t.request_id = (char *)r->id;
    t.n_prompt_tokens = (size_t)n;
    t.prompt_tokens = (int32_t *)tokens;
    t.sampling = (Kvserve__SamplingParams *)sp;
    t.decode_worker_id = d->id;
    t.decode_kv_endpoint = d->kv_endpoint;
    t.n_decode_block_ids = (size_t)r->n_blocks;
    t.decode_block_ids = (int32_t *)r->blocks;
    t.ack_deadline_ms = ack_deadline_ms;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_PREFILL;
    env.prefill = &t;
    return th_send(h, p, &env);
}

int th_abort(th *h, th_worker *w, const char *rid)
{
    Kvserve__Abort a;
    kvserve__abort__init(&a);
    a.request_id = (char *)rid;
    a.reason = KVSERVE__ERROR_CODE__CANCELLED;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_ABORT;
    env.abort = &a;
    return th_send(h, w, &env);
}
