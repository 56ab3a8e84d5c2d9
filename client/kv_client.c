/* libkvclient: one DEALER socket to the router's client endpoint, a table of the
 * requests in flight, a queue of messages received while a blocking call waited for
 * something else, and a socket monitor that turns a lost connection into a final error
 * for every request in flight. */
#include "kv_client.h"
#include "kv_client_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "kv_time.h"
#include "kv_wire.h"

#define MONITOR_EP "inproc://kvclient-monitor"

typedef struct kvc_track {
    char id[KV_CLIENT_ID_MAX + 1];
    int cancel_sent;
    int failed; /* a synthesized final error is queued */
} kvc_track;

/* A received envelope, or (env NULL) a final error synthesized by the client. */
typedef struct kvc_item {
    Kvserve__Envelope *env;
    char id[KV_CLIENT_ID_MAX + 1];
    int code;
    char msg[160];
} kvc_item;

struct kv_client {
    void *ctx, *sock, *mon;
    char endpoint[256];
    char err[512];
    kvc_track *track;
    size_t n_track, cap_track;
    kvc_item *q; /* FIFO: q[0..n_q) */
    size_t n_q, cap_q;
    kvc_item cur; /* the event last returned by next_event (owns its envelope) */
    /* The last event's logprobs, converted from its reply (valid until the next call). */
    kv_client_logprobs *ev_lp, *ev_plp;
    size_t cap_ev_lp, cap_ev_plp;
    uint64_t id_prefix, id_counter;
    unsigned status_pending; /* status requests sent and not yet answered */
    /* The router went away and no connection has finished its handshake since. ZeroMQ
     * reports the disconnect before it retires the dead connection's pipe, so a send in
     * between would "succeed" into that pipe and be lost: sends wait for a handshake. */
    int link_down;
    /* Liveness (kv_client_tick): a ClientHeartbeat when nothing was sent for heartbeat_ms
     * while requests are in flight; 0 = off. */
    int heartbeat_ms;
    double last_sent;
    /* kv_client_set_resume: streams to ask again of the next router after a drop, for up to
     * resume_ms (0 = off: a drop ends every request with KVC_ERR_DISCONNECTED). */
    int resume_ms;
    kvc_resume resume;
    double down_since; /* the link dropped with streams to resume (0 = not waiting) */
    int resume_due;    /* a new connection is up: send the resumes */
};

static int fail(kv_client *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(kv_client *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return rc;
}

static void item_free(kvc_item *it)
{
    if (it->env)
        kvserve__envelope__free_unpacked(it->env, NULL);
    memset(it, 0, sizeof *it);
}

static int ms_left(double deadline)
{
    double left = (deadline - kv_now_s()) * 1e3;
    if (left <= 0)
        return 0;
    return left > 2e9 ? 2000000000 : (int)left + 1;
}

static double deadline_after(int timeout_ms)
{
    return kv_now_s() + (timeout_ms > 0 ? timeout_ms : 0) * 1e-3;
}

/* ---- names ----------------------------------------------------------------------- */

const char *kv_client_finish_name(int r)
{
    switch (r) {
    case KVC_FINISH_NONE: return "none";
    case KVC_FINISH_EOS: return "eos";
    case KVC_FINISH_LENGTH: return "length";
    case KVC_FINISH_CONTEXT: return "context_full";
    case KVC_FINISH_CANCELLED: return "cancelled";
    case KVC_FINISH_ERROR: return "error";
    case KVC_FINISH_STOP: return "stop";
    default: return "unknown";
    }
}

const char *kv_client_error_name(int code)
{
    static const char *names[] = {"NONE", "VERSION_MISMATCH", "BAD_MESSAGE", "INVALID_ARGUMENT", "PROMPT_TOO_LONG",
                                  "UNKNOWN_MODEL", "UNKNOWN_REQUEST", "NO_CAPACITY", "DEADLINE_EXCEEDED",
                                  "WORKER_FAILED", "KV_CORRUPT", "CANCELLED", "INTERNAL", "DUPLICATE_REQUEST",
                                  "KV_SESSION_UNKNOWN", "NO_TRANSPORT"};
    if (code >= 0 && (size_t)code < sizeof names / sizeof *names)
        return names[code];
    if (code == KVC_ERR_DISCONNECTED)
        return "DISCONNECTED";
    if (code == KVC_ERR_TIMEOUT)
        return "TIMEOUT";
    return "UNKNOWN_ERROR";
}

const char *kv_client_role_name(int role)
{
    return role == KVC_ROLE_PREFILL ? "prefill" : role == KVC_ROLE_DECODE ? "decode" : "unspecified";
}

const char *kv_client_strerror(int rc)
{
    switch (rc) {
    case KVC_OK: return "ok";
    case KVC_EINVAL: return "invalid argument";
    case KVC_EIO: return "socket error";
    case KVC_ENOMEM: return "out of memory";
    case KVC_ETIMEOUT: return "timed out";
    case KVC_EPROTO: return "protocol error";
    case KVC_ESTATE: return "invalid state";
    case KVC_EREMOTE: return "request failed";
    default: return "unknown error";
    }
}

/* ---- connection ------------------------------------------------------------------ */

void kv_client_request_init(kv_client_request *r)
{
    memset(r, 0, sizeof *r);
    r->stream = 1;
}

int kv_client_connect(const char *endpoint, kv_client **out, char *errbuf, size_t errcap)
{
    return kv_client_connect_key(endpoint, NULL, out, errbuf, errcap);
}

int kv_client_connect_key(const char *endpoint, const char *key_file, kv_client **out, char *errbuf, size_t errcap)
{
    *out = NULL;
    if (errbuf && errcap)
        errbuf[0] = '\0';
    if (!endpoint || !*endpoint || strlen(endpoint) >= sizeof ((kv_client *)0)->endpoint) {
        if (errbuf && errcap)
            snprintf(errbuf, errcap, "invalid router endpoint");
        return KVC_EINVAL;
    }
    kv_client *c = calloc(1, sizeof *c);
    if (!c) {
        if (errbuf && errcap)
            snprintf(errbuf, errcap, "out of memory");
        return KVC_ENOMEM;
    }
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    c->heartbeat_ms = KV_CLIENT_HEARTBEAT_MS;
    if (getrandom(&c->id_prefix, sizeof c->id_prefix, GRND_NONBLOCK) != (ssize_t)sizeof c->id_prefix)
        c->id_prefix = kv_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
    int rc = KVC_EIO;
    const char *what = "zmq_ctx_new";
    c->ctx = zmq_ctx_new();
    if (!c->ctx)
        goto fail;
    what = "zmq_socket";
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        goto fail;
    int zero = 0, one = 1, hb_ivl = 2000, hb_timeout = 10000;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->sock, ZMQ_RCVHWM, &zero, sizeof zero); /* never make the router drop replies */
    zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one); /* no queueing to a router not yet there */
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl);
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout);
    what = "zmq_socket_monitor";
    if (zmq_socket_monitor(c->sock, MONITOR_EP, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
        goto fail;
    c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
    if (!c->mon || zmq_connect(c->mon, MONITOR_EP) != 0)
        goto fail;
    zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero);
    if (kvc_curve_apply(c->sock, endpoint, key_file, errbuf, errcap)) {
        kv_client_close(c);
        return KVC_EINVAL;
    }
    what = endpoint;
    if (zmq_connect(c->sock, endpoint) != 0) {
        rc = KVC_EINVAL;
        goto fail;
    }
    *out = c;
    return KVC_OK;
fail:
    if (errbuf && errcap)
        snprintf(errbuf, errcap, "cannot connect to %s: %s", what, zmq_strerror(zmq_errno()));
    kv_client_close(c);
    return rc;
}

void kv_client_close(kv_client *c)
{
    if (!c)
        return;
    item_free(&c->cur);
    kvc_resume_free(&c->resume);
    for (size_t i = 0; i < c->n_q; i++)
        item_free(&c->q[i]);
    free(c->q);
    free(c->track);
    free(c->ev_lp);
    free(c->ev_plp);
    if (c->sock)
        zmq_socket_monitor(c->sock, NULL, 0);
    if (c->mon)
        zmq_close(c->mon);
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c);
}

const char *kv_client_last_error(const kv_client *c) { return c ? c->err : "no client"; }

size_t kv_client_in_flight(const kv_client *c) { return c->n_track; }

int kv_client_poll_fds(kv_client *c, int fds[KV_CLIENT_MAX_FDS])
{
    /* The request socket and the monitor (a lost connection fails the requests in flight). */
    void *socks[KV_CLIENT_MAX_FDS] = {c->sock, c->mon};
    int n = 0;
    for (int i = 0; i < KV_CLIENT_MAX_FDS; i++) {
        int fd;
        size_t len = sizeof fd;
        if (zmq_getsockopt(socks[i], ZMQ_FD, &fd, &len))
            return fail(c, KVC_EIO, "zmq_getsockopt(ZMQ_FD): %s", zmq_strerror(zmq_errno()));
        fds[n++] = fd;
    }
    return n;
}

/* ---- request table --------------------------------------------------------------- */

static kvc_track *track_find(kv_client *c, const char *id)
{
    for (size_t i = 0; i < c->n_track; i++)
        if (!strcmp(c->track[i].id, id))
            return &c->track[i];
    return NULL;
}

static void track_remove(kv_client *c, const char *id)
{
    kvc_track *t = track_find(c, id);
    if (t)
        *t = c->track[--c->n_track];
    kvc_resume_forget(&c->resume, id);
}

static int track_add(kv_client *c, const char *id)
{
    if (c->n_track == c->cap_track) {
        size_t cap = c->cap_track ? c->cap_track * 2 : 16;
        kvc_track *t = realloc(c->track, cap * sizeof *t);
        if (!t)
            return fail(c, KVC_ENOMEM, "out of memory");
        c->track = t;
        c->cap_track = cap;
    }
    kvc_track *t = &c->track[c->n_track++];
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", id);
    return KVC_OK;
}

/* ---- queue ----------------------------------------------------------------------- */

static int queue_push(kv_client *c, kvc_item *it)
{
    if (c->n_q == c->cap_q) {
        size_t cap = c->cap_q ? c->cap_q * 2 : 16;
        kvc_item *q = realloc(c->q, cap * sizeof *q);
        if (!q) {
            item_free(it);
            return fail(c, KVC_ENOMEM, "out of memory");
        }
        c->q = q;
        c->cap_q = cap;
    }
    c->q[c->n_q++] = *it;
    memset(it, 0, sizeof *it);
    return KVC_OK;
}

static void queue_take(kv_client *c, size_t i, kvc_item *out)
{
    *out = c->q[i];
    memmove(&c->q[i], &c->q[i + 1], (c->n_q - i - 1) * sizeof *c->q);
    c->n_q--;
}

/* The request an item is about ("" when none). */
static const char *item_request_id(const kvc_item *it)
{
    if (!it->env)
        return it->id;
    if (it->env->body_case == KVSERVE__ENVELOPE__BODY_REPLY && it->env->reply)
        return it->env->reply->request_id ? it->env->reply->request_id : "";
    if (it->env->body_case == KVSERVE__ENVELOPE__BODY_ERROR && it->env->error)
        return it->env->error->request_id ? it->env->error->request_id : "";
    return "";
}

/* ---- receiving ------------------------------------------------------------------- */

static void fail_disconnected(kv_client *c, kvc_track *t)
{
    t->failed = 1;
    kvc_item it = {0};
    snprintf(it.id, sizeof it.id, "%s", t->id);
    it.code = KVC_ERR_DISCONNECTED;
    snprintf(it.msg, sizeof it.msg, "connection to the router at %.100s lost", c->endpoint);
    queue_push(c, &it);
}

/* The connection dropped: queue a final error for every request in flight, but for the
 * streams waiting to be resumed (down_since set; a cancelled one is not resumed). */
static void fail_all_in_flight(kv_client *c)
{
    for (size_t i = 0; i < c->n_track; i++) {
        kvc_track *t = &c->track[i];
        if (t->failed || (c->down_since && !t->cancel_sent && kvc_resume_has(&c->resume, t->id)))
            continue;
        fail_disconnected(c, t);
    }
    c->status_pending = 0;
}

/* kv_client_set_resume: once a new connection is up, asks it for every stream the old one
 * left unfinished; when none came within resume_ms, they end as disconnected after all. */
static void resume_tick(kv_client *c)
{
    if (c->resume_due) {
        c->resume_due = 0;
        c->down_since = 0;
        for (size_t i = 0; i < c->resume.n; i++) {
            kvc_track *t = track_find(c, c->resume.e[i].id);
            kv_err err;
            if (t && !t->failed && kvc_resume_send(&c->resume.e[i], c->sock, 1000, &err))
                fail_disconnected(c, t);
        }
    } else if (c->down_since && kv_now_s() - c->down_since > c->resume_ms * 1e-3) {
        c->down_since = 0;
        fail_all_in_flight(c);
    }
}

/* A poll's wait, cut to the end of the resume window. */
static int resume_wait(const kv_client *c, int ms)
{
    if (!c->down_since)
        return ms;
    double left = c->down_since + c->resume_ms * 1e-3 - kv_now_s();
    int left_ms = left <= 0 ? 0 : (int)(left * 1e3) + 1;
    return ms < 0 || left_ms < ms ? left_ms : ms;
}

/* A message as it arrives (not as the caller takes it: a drop may come in between): a
 * reply's tokens join what the stream would resume from, and an ended request is never
 * resumed. Returns 1 when the reply only repeats tokens held (to be dropped). */
static int resume_noted(kv_client *c, const Kvserve__Envelope *env)
{
    if (!c->resume.n)
        return 0;
    if (env->body_case == KVSERVE__ENVELOPE__BODY_ERROR) {
        if (env->error->request_id && env->error->request_id[0])
            kvc_resume_forget(&c->resume, env->error->request_id);
        return 0;
    }
    if (env->body_case != KVSERVE__ENVELOPE__BODY_REPLY)
        return 0;
    int repeat = kvc_resume_note(&c->resume, env->reply);
    if (env->reply->finish_reason != KVSERVE__FINISH_REASON__FINISH_NONE && env->reply->request_id)
        kvc_resume_forget(&c->resume, env->reply->request_id);
    return repeat;
}

static void drain_monitor(kv_client *c)
{
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&m) >= 2)
            memcpy(&event, zmq_msg_data(&m), 2);
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        while (more) { /* the endpoint frame */
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c->mon, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            c->link_down = 1;
            if (c->resume_ms && c->resume.n && !c->down_since)
                c->down_since = kv_now_s();
            fail_all_in_flight(c);
        } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            c->link_down = 0;
            c->resume_due = c->down_since != 0;
        }
    }
}

/* Receives one message (or monitor news) within timeout_ms. Returns 1 with *out filled,
 * 2 when only the queue changed (a disconnect queued failures), 0 on timeout, < 0 on a
 * socket error. */
static int recv_item(kv_client *c, int timeout_ms, kvc_item *out)
{
    double deadline = kv_now_s() + timeout_ms * 1e-3;
    memset(out, 0, sizeof *out);
    for (;;) {
        size_t queued = c->n_q;
        resume_tick(c);
        if (c->n_q != queued)
            return 2;
        zmq_pollitem_t items[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->mon, 0, ZMQ_POLLIN, 0}};
        int wait = resume_wait(c, ms_left(deadline)), hb = kv_client_tick(c); /* a long wait still heartbeats */
        int n = zmq_poll(items, 2, hb >= 0 && hb < wait ? hb : wait);
        if (n < 0) {
            if (zmq_errno() == EINTR)
                return 0; /* let the caller look at its signal flags */
            return fail(c, KVC_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (items[1].revents & ZMQ_POLLIN) {
            size_t before = c->n_q;
            drain_monitor(c);
            if (c->n_q != before)
                return 2;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            kv_wire_msg m;
            kv_err err;
            int rc = kv_wire_recv(c->sock, 0, 0, &m, &err);
            if (rc == KV_OK) {
                out->env = m.env;
                m.env = NULL;
                kv_wire_msg_close(&m);
                switch (out->env->body_case) {
                case KVSERVE__ENVELOPE__BODY_REPLY:
                case KVSERVE__ENVELOPE__BODY_ERROR:
                case KVSERVE__ENVELOPE__BODY_STATUS_REPLY:
                    if ((out->env->body_case == KVSERVE__ENVELOPE__BODY_REPLY && !out->env->reply) ||
                        (out->env->body_case == KVSERVE__ENVELOPE__BODY_ERROR && !out->env->error) ||
                        (out->env->body_case == KVSERVE__ENVELOPE__BODY_STATUS_REPLY && !out->env->status_reply)) {
                        item_free(out);
                        break;
                    }
                    if (resume_noted(c, out->env)) {
                        item_free(out); /* a repeat of tokens this client already holds */
                        break;
                    }
                    return 1;
                default: /* not for a client: ignore */
                    fail(c, KVC_EPROTO, "ignored an unexpected message (body %d) from the router",
                         (int)out->env->body_case);
                    item_free(out);
                    break;
                }
            } else if (rc != KV_ETIMEOUT) {
                fail(c, KVC_EPROTO, "ignored a message from the router: %s", err.msg);
            }
        }
        if (ms_left(deadline) == 0)
            return 0;
    }
}

static void fill_timings(kv_client_timings *t, const Kvserve__Timings *p)
{
    t->queue_ms = p->queue_ms;
    t->prefill_ms = p->prefill_ms;
    t->transfer_ms = p->transfer_ms;
    t->ttft_ms = p->ttft_ms;
    t->decode_ms = p->decode_ms;
    t->total_ms = p->total_ms;
    t->kv_bytes = p->kv_bytes;
    t->prompt_tokens = p->prompt_tokens;
    t->generated_tokens = p->generated_tokens;
    snprintf(t->kv_transport, sizeof t->kv_transport, "%s", p->kv_transport ? p->kv_transport : "");
    t->prefill_cached_tokens = p->prefill_cached_tokens;
    t->decode_cached_tokens = p->decode_cached_tokens;
    t->kv_bytes_saved = p->kv_bytes_saved;
    t->local_prefill = p->local_prefill != 0;
}

/* n TokenLogprobs into *buf (grown to *cap): the array, or NULL when out of memory. Top
 * lists are cut to what both arrays hold and to KV_CLIENT_LOGPROBS_TOP_MAX. */
static const kv_client_logprobs *convert_logprobs(Kvserve__TokenLogprobs *const *m, size_t n, kv_client_logprobs **buf,
                                                  size_t *cap)
{
    if (n > *cap) {
        kv_client_logprobs *p = realloc(*buf, n * sizeof *p);
        if (!p)
            return NULL;
        *buf = p;
        *cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        kv_client_logprobs *o = &(*buf)[i];
        size_t k = m[i]->n_top_ids < m[i]->n_top_logprobs ? m[i]->n_top_ids : m[i]->n_top_logprobs;
        if (k > KV_CLIENT_LOGPROBS_TOP_MAX)
            k = KV_CLIENT_LOGPROBS_TOP_MAX;
        o->logprob = m[i]->logprob;
        o->n_top = (uint32_t)k;
        if (k) {
            memcpy(o->top_ids, m[i]->top_ids, k * sizeof *o->top_ids);
            memcpy(o->top_logprobs, m[i]->top_logprobs, k * sizeof *o->top_logprobs);
        }
    }
    return *buf;
}

/* Fills ev from an item (kept alive in the caller's storage). Returns 0 when the item
 * is not an event for the caller (a reply of a request not in flight here). */
static int item_to_event(kv_client *c, const kvc_item *it, kv_client_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->request_id = "";
    ev->text = "";
    ev->error_message = "";
    if (!it->env) { /* synthesized */
        if (!track_find(c, it->id))
            return 0;
        ev->kind = KVC_EVENT_REPLY;
        ev->request_id = it->id;
        ev->finished = 1;
        ev->finish_reason = KVC_FINISH_ERROR;
        ev->error_code = it->code;
        ev->error_message = it->msg;
        track_remove(c, it->id);
        return 1;
    }
    if (it->env->body_case == KVSERVE__ENVELOPE__BODY_REPLY) {
        const Kvserve__GenerateReply *r = it->env->reply;
        const char *id = r->request_id ? r->request_id : "";
        if (!track_find(c, id))
            return 0;
        ev->kind = KVC_EVENT_REPLY;
        ev->request_id = id;
        ev->tokens = r->tokens;
        ev->n_tokens = r->n_tokens;
        ev->index = r->index;
        ev->text = r->text ? r->text : "";
        ev->text_len = strlen(ev->text);
        ev->finish_reason = (int)r->finish_reason;
        ev->finished = r->finish_reason != KVSERVE__FINISH_REASON__FINISH_NONE;
        if (r->error) {
            ev->error_code = (int)r->error->code;
            ev->error_message = r->error->message ? r->error->message : "";
        }
        if (ev->finish_reason == KVC_FINISH_ERROR && ev->error_code == KVC_ERR_NONE)
            ev->error_code = KVC_ERR_INTERNAL;
        if (r->timings) {
            ev->has_timings = 1;
            fill_timings(&ev->timings, r->timings);
        }
        ev->prompt_tokens = r->prompt_tokens;
        ev->n_prompt_tokens = r->n_prompt_tokens;
        /* Logprobs only when they match the tokens one to one (the router sends them so). */
        if (r->n_tokens && r->n_logprobs == r->n_tokens)
            ev->logprobs = convert_logprobs(r->logprobs, r->n_logprobs, &c->ev_lp, &c->cap_ev_lp);
        if (r->n_prompt_logprobs &&
            (ev->prompt_logprobs = convert_logprobs(r->prompt_logprobs, r->n_prompt_logprobs, &c->ev_plp,
                                                    &c->cap_ev_plp)))
            ev->n_prompt_logprobs = r->n_prompt_logprobs;
        if (ev->finished)
            track_remove(c, id);
        return 1;
    }
    if (it->env->body_case == KVSERVE__ENVELOPE__BODY_ERROR) {
        const Kvserve__Error *e = it->env->error;
        const char *id = e->request_id ? e->request_id : "";
        ev->request_id = id;
        ev->error_code = (int)e->code;
        ev->error_message = e->message ? e->message : "";
        if (*id && track_find(c, id)) {
            /* The router refused a request of ours outright: that is its end. */
            ev->kind = KVC_EVENT_REPLY;
            ev->finished = 1;
            ev->finish_reason = KVC_FINISH_ERROR;
            track_remove(c, id);
        } else {
            ev->kind = KVC_EVENT_ERROR;
        }
        return 1;
    }
    return 0;
}

int kv_client_next_event(kv_client *c, int timeout_ms, kv_client_event *ev)
{
    double deadline = deadline_after(timeout_ms);
    memset(ev, 0, sizeof *ev);
    item_free(&c->cur);
    for (;;) {
        while (c->n_q) {
            queue_take(c, 0, &c->cur);
            if (item_to_event(c, &c->cur, ev))
                return KVC_OK;
            item_free(&c->cur);
        }
        int rc = recv_item(c, ms_left(deadline), &c->cur);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if (c->cur.env->body_case == KVSERVE__ENVELOPE__BODY_STATUS_REPLY) {
                if (c->status_pending)
                    c->status_pending--; /* a late answer nobody waits for */
            } else if (item_to_event(c, &c->cur, ev)) {
                return KVC_OK;
            }
            item_free(&c->cur);
            continue;
        }
        if (rc == 2)
            continue;
        if (c->n_q == 0 && ms_left(deadline) == 0)
            return fail(c, KVC_ETIMEOUT, "no event within %d ms", timeout_ms);
    }
}

/* ---- sending --------------------------------------------------------------------- */

/* Waits until a connection lost has been replaced by a new one: KVC_OK, or KVC_ETIMEOUT at
 * the deadline. Called before a request is tracked, so that news of the old connection's
 * end does not fail a request that was never sent on it. */
static int await_router(kv_client *c, double deadline, int timeout_ms)
{
    for (;;) {
        drain_monitor(c);
        if (!c->link_down)
            return KVC_OK;
        int left = ms_left(deadline);
        if (left == 0)
            break;
        zmq_pollitem_t item = {c->mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, left) < 0 && zmq_errno() != EINTR)
            break;
    }
    return fail(c, KVC_ETIMEOUT, "router at %s not reachable within %d ms", c->endpoint, timeout_ms);
}

/* Sends env once the router is there (await_router), by the deadline. */
static int send_env(kv_client *c, const Kvserve__Envelope *env, double deadline, int timeout_ms)
{
    kv_err err;
    int rc = kv_wire_send(c->sock, NULL, env, NULL, 0, ms_left(deadline), &err);
    if (rc == KV_OK)
        c->last_sent = kv_now_s(); /* any message says this client is alive */
    if (rc == KV_ETIMEOUT)
        return fail(c, KVC_ETIMEOUT, "router at %s not reachable within %d ms", c->endpoint, timeout_ms);
    if (rc)
        return fail(c, KVC_EIO, "send to %s: %s", c->endpoint, err.msg);
    return KVC_OK;
}

int kv_client_submit(kv_client *c, const kv_client_request *r, char id_out[KV_CLIENT_ID_MAX + 1], int timeout_ms)
{
    if (!r)
        return fail(c, KVC_EINVAL, "no request");
    char id[KV_CLIENT_ID_MAX + 1];
    if (r->request_id && *r->request_id) {
        if (strlen(r->request_id) > KV_CLIENT_ID_MAX)
            return fail(c, KVC_EINVAL, "request id longer than %d bytes", KV_CLIENT_ID_MAX);
        snprintf(id, sizeof id, "%s", r->request_id);
    } else {
        do
            snprintf(id, sizeof id, "%016llx-%llu", (unsigned long long)c->id_prefix,
                     (unsigned long long)++c->id_counter);
        while (track_find(c, id));
    }
    if (track_find(c, id))
        return fail(c, KVC_ESTATE, "request id '%s' is already in flight on this client", id);
    if (r->n_prompt_tokens && !r->prompt_tokens)
        return fail(c, KVC_EINVAL, "n_prompt_tokens without prompt_tokens");

    Kvserve__Envelope env;
    Kvserve__GenerateRequest g;
    Kvserve__SamplingParams sp;
    kv_wire_envelope_init(&env);
    kvserve__generate_request__init(&g);
    kvserve__sampling_params__init(&sp);
    sp.temperature = r->temperature;
    sp.top_k = r->top_k;
    sp.top_p = r->top_p;
    sp.seed = r->seed;
    g.request_id = id;
    g.prompt = (char *)(r->prompt ? r->prompt : "");
    g.n_prompt_tokens = r->n_prompt_tokens;
    g.prompt_tokens = (int32_t *)r->prompt_tokens;
    g.sampling = &sp;
    g.max_tokens = r->max_tokens;
    g.stream = r->stream != 0;
    g.ignore_eos = r->ignore_eos != 0;
    g.model = (char *)(r->model ? r->model : "");
    g.deadline_ms = r->deadline_ms;
    g.chat_messages = (char *)(r->chat_messages ? r->chat_messages : "");
    g.return_prompt_tokens = r->return_prompt_tokens != 0;
    g.logprobs = r->logprobs;
    g.prompt_logprobs = r->prompt_logprobs != 0;
    g.n_stop = r->n_stop;
    g.stop = (char **)r->stop;
    env.body_case = KVSERVE__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    double deadline = deadline_after(timeout_ms);
    int rc = await_router(c, deadline, timeout_ms);
    if (rc)
        return rc;
    rc = track_add(c, id); /* before the send: a send cannot be undone */
    if (rc)
        return rc;
    rc = send_env(c, &env, deadline, timeout_ms);
    if (rc) {
        track_remove(c, id);
        return rc;
    }
    /* Out of memory here only costs the resume: the request ends as disconnected on a drop. */
    if (c->resume_ms && kvc_resume_add(&c->resume, id, &g))
        fail(c, KVC_ENOMEM, "request %s: no memory to keep it resumable", id);
    if (id_out)
        snprintf(id_out, KV_CLIENT_ID_MAX + 1, "%s", id);
    return KVC_OK;
}

int kv_client_set_resume(kv_client *c, int window_ms)
{
    if (window_ms < 0 || window_ms > KV_CLIENT_RESUME_MAX_MS)
        return fail(c, KVC_EINVAL, "resume window must be in [0, %d] ms, got %d", KV_CLIENT_RESUME_MAX_MS, window_ms);
    c->resume_ms = window_ms;
    return KVC_OK;
}

int kv_client_set_heartbeat(kv_client *c, int heartbeat_ms)
{
    if (heartbeat_ms < 0 || heartbeat_ms > KV_CLIENT_HEARTBEAT_MAX_MS)
        return fail(c, KVC_EINVAL, "heartbeat_ms must be in [0, %d], got %d", KV_CLIENT_HEARTBEAT_MAX_MS,
                    heartbeat_ms);
    c->heartbeat_ms = heartbeat_ms;
    return KVC_OK;
}

int kv_client_tick(kv_client *c)
{
    /* link_down as the last drain of the monitor left it: draining here could queue
     * failures that a waiting recv_item would not notice. */
    if (!c->heartbeat_ms || !c->n_track || c->link_down)
        return -1;
    double now = kv_now_s(), due = c->last_sent + c->heartbeat_ms * 1e-3;
    if (now >= due) {
        Kvserve__Envelope env;
        Kvserve__ClientHeartbeat hb;
        kv_wire_envelope_init(&env);
        kvserve__client_heartbeat__init(&hb);
        env.body_case = KVSERVE__ENVELOPE__BODY_CLIENT_HEARTBEAT;
        env.client_heartbeat = &hb;
        kv_err err;
        /* Never waits: a full pipe means the router has not read our last messages yet,
         * and the next tick tries again. */
        if (kv_wire_send(c->sock, NULL, &env, NULL, 0, 0, &err) == KV_OK)
            c->last_sent = now;
        else
            c->last_sent = now - c->heartbeat_ms * 1e-3 + 0.05; /* retry in 50 ms */
        due = c->last_sent + c->heartbeat_ms * 1e-3;
    }
    return ms_left(due);
}

int kv_client_cancel(kv_client *c, const char *request_id, int timeout_ms)
{
    return kv_client_cancel_stop(c, request_id, 0, timeout_ms);
}

int kv_client_cancel_stop(kv_client *c, const char *request_id, int stop_matched, int timeout_ms)
{
    if (!request_id || strlen(request_id) > KV_CLIENT_ID_MAX)
        return fail(c, KVC_EINVAL, "invalid request id");
    Kvserve__Envelope env;
    Kvserve__CancelRequest cr;
    kv_wire_envelope_init(&env);
    kvserve__cancel_request__init(&cr);
    cr.request_id = (char *)request_id;
    cr.stop_matched = stop_matched != 0;
    env.body_case = KVSERVE__ENVELOPE__BODY_CANCEL;
    env.cancel = &cr;
    double deadline = deadline_after(timeout_ms);
    int rc = await_router(c, deadline, timeout_ms);
    if (!rc)
        rc = send_env(c, &env, deadline, timeout_ms);
    kvc_track *t = track_find(c, request_id);
    if (!rc && t)
        t->cancel_sent = 1;
    return rc;
}

/* ---- blocking generate ----------------------------------------------------------- */

static int append(kv_client_result *res, const kv_client_event *ev, int want_lp, size_t *tok_cap, size_t *text_cap)
{
    if (res->n_tokens + ev->n_tokens > *tok_cap) {
        size_t cap = *tok_cap ? *tok_cap : 64;
        while (cap < res->n_tokens + ev->n_tokens)
            cap *= 2;
        int32_t *t = realloc(res->tokens, cap * sizeof *t);
        if (!t)
            return KVC_ENOMEM;
        res->tokens = t;
        if (want_lp) {
            kv_client_logprobs *l = realloc(res->logprobs, cap * sizeof *l);
            if (!l)
                return KVC_ENOMEM;
            res->logprobs = l;
        }
        *tok_cap = cap;
    }
    if (ev->n_tokens)
        memcpy(res->tokens + res->n_tokens, ev->tokens, ev->n_tokens * sizeof *ev->tokens);
    if (ev->n_tokens && want_lp) { /* a token without logprobs gets NaN (the router always sends them) */
        for (size_t i = 0; i < ev->n_tokens; i++)
            res->logprobs[res->n_tokens + i] = ev->logprobs ? ev->logprobs[i] : (kv_client_logprobs){.logprob = NAN};
    }
    if (ev->n_prompt_logprobs && !res->prompt_logprobs) {
        if (!(res->prompt_logprobs = malloc(ev->n_prompt_logprobs * sizeof *res->prompt_logprobs)))
            return KVC_ENOMEM;
        memcpy(res->prompt_logprobs, ev->prompt_logprobs, ev->n_prompt_logprobs * sizeof *res->prompt_logprobs);
        res->n_prompt_logprobs = ev->n_prompt_logprobs;
    }
    res->n_tokens += ev->n_tokens;
    if (res->text_len + ev->text_len + 1 > *text_cap) {
        size_t cap = *text_cap ? *text_cap : 256;
        while (cap < res->text_len + ev->text_len + 1)
            cap *= 2;
        char *s = realloc(res->text, cap);
        if (!s)
            return KVC_ENOMEM;
        res->text = s;
        *text_cap = cap;
    }
    memcpy(res->text + res->text_len, ev->text, ev->text_len);
    res->text_len += ev->text_len;
    res->text[res->text_len] = '\0';
    return KVC_OK;
}

static void result_error(kv_client_result *res, int finish, int code, const char *msg)
{
    res->finish_reason = finish;
    res->error_code = code;
    size_t n = strnlen(msg, sizeof res->error_message - 1);
    memcpy(res->error_message, msg, n);
    res->error_message[n] = '\0';
}

int kv_client_generate(kv_client *c, const kv_client_request *r, kv_client_chunk_fn on_chunk, void *ctx,
                       kv_client_result *res, int timeout_ms)
{
    memset(res, 0, sizeof *res);
    res->text = calloc(1, 1);
    if (!res->text)
        return fail(c, KVC_ENOMEM, "out of memory");
    size_t tok_cap = 0, text_cap = 1;
    double t0 = kv_now_s(), deadline = t0 + (timeout_ms > 0 ? timeout_ms : 0) * 1e-3;
    int rc = kv_client_submit(c, r, res->request_id, ms_left(deadline));
    if (rc) {
        result_error(res, KVC_FINISH_ERROR, rc == KVC_ETIMEOUT ? KVC_ERR_TIMEOUT : KVC_ERR_NONE, c->err);
        return rc;
    }
    const char *id = res->request_id;
    kvc_item it = {0};
    int stopped = 0;
    for (;;) {
        item_free(&it);
        int got = 0;
        for (size_t i = 0; i < c->n_q && !got; i++)
            if (!strcmp(item_request_id(&c->q[i]), id)) {
                queue_take(c, i, &it);
                got = 1;
            }
        if (!got) {
            int left = ms_left(deadline);
            if (left == 0)
                break;
            int n = recv_item(c, left, &it);
            if (n < 0) {
                rc = n;
                goto out_local;
            }
            if (n != 1)
                continue;
            if (it.env->body_case == KVSERVE__ENVELOPE__BODY_STATUS_REPLY) {
                if (c->status_pending)
                    c->status_pending--;
                continue;
            }
            if (strcmp(item_request_id(&it), id)) {
                if ((rc = queue_push(c, &it)) != 0)
                    goto out_local;
                continue;
            }
        }
        kv_client_event ev;
        if (!item_to_event(c, &it, &ev))
            continue;
        if (ev.kind == KVC_EVENT_ERROR && !ev.finished)
            continue; /* an error about our cancel of a request that just ended */
        if (ev.n_tokens && ev.index != res->n_tokens) {
            rc = fail(c, KVC_EPROTO, "request %s: chunk at token %u, expected %zu", id, ev.index, res->n_tokens);
            kv_client_cancel(c, id, 100);
            track_remove(c, id);
            goto out_local;
        }
        if (ev.n_tokens && res->n_tokens == 0)
            res->client_ttft_ms = (kv_now_s() - t0) * 1e3;
        if ((rc = append(res, &ev, r->logprobs != 0, &tok_cap, &text_cap)) != 0) {
            fail(c, rc, "out of memory");
            kv_client_cancel(c, id, 100);
            track_remove(c, id);
            goto out_local;
        }
        if (on_chunk && (ev.n_tokens || ev.text_len) && !stopped &&
            on_chunk(ctx, ev.tokens, ev.n_tokens, ev.text, ev.text_len) && !ev.finished) {
            stopped = 1;
            kv_client_cancel(c, id, ms_left(deadline));
        }
        if (ev.has_timings) {
            res->has_timings = 1;
            res->timings = ev.timings;
        }
        if (ev.finished && ev.n_prompt_tokens && !res->prompt_tokens) {
            res->prompt_tokens = malloc(ev.n_prompt_tokens * sizeof *res->prompt_tokens);
            if (!res->prompt_tokens) {
                rc = fail(c, KVC_ENOMEM, "out of memory");
                item_free(&it);
                return rc;
            }
            memcpy(res->prompt_tokens, ev.prompt_tokens, ev.n_prompt_tokens * sizeof *res->prompt_tokens);
            res->n_prompt_tokens = ev.n_prompt_tokens;
        }
        if (ev.finished) {
            res->client_total_ms = (kv_now_s() - t0) * 1e3;
            result_error(res, ev.finish_reason, ev.error_code, ev.error_message);
            rc = KVC_OK;
            if (ev.finish_reason == KVC_FINISH_ERROR)
                rc = fail(c, KVC_EREMOTE, "request %s failed: %s: %s", id, kv_client_error_name(ev.error_code),
                          ev.error_message);
            item_free(&it); /* ev points into it */
            return rc;
        }
    }
    /* Timed out: give up on the request (the router is told; late replies are dropped). */
    item_free(&it);
    kv_client_cancel(c, id, 100);
    track_remove(c, id);
    res->client_total_ms = (kv_now_s() - t0) * 1e3;
    fail(c, KVC_ETIMEOUT, "request %s: no final reply within %d ms (cancelled)", id, timeout_ms);
    result_error(res, KVC_FINISH_ERROR, KVC_ERR_TIMEOUT, c->err);
    return KVC_ETIMEOUT;
out_local:
    item_free(&it);
    track_remove(c, id);
    res->client_total_ms = (kv_now_s() - t0) * 1e3;
    result_error(res, KVC_FINISH_ERROR, KVC_ERR_NONE, c->err);
    return rc;
}

void kv_client_result_free(kv_client_result *res)
{
    if (!res)
        return;
    free(res->tokens);
    free(res->text);
    free(res->prompt_tokens);
    free(res->logprobs);
    free(res->prompt_logprobs);
    res->logprobs = res->prompt_logprobs = NULL;
    res->n_prompt_logprobs = 0;
    res->tokens = res->prompt_tokens = NULL;
    res->text = NULL;
    res->n_tokens = res->text_len = res->n_prompt_tokens = 0;
}

/* ---- status ---------------------------------------------------------------------- */

int kv_client_status(kv_client *c, int timeout_ms, kv_status **out)
{
    *out = NULL;
    double deadline = deadline_after(timeout_ms);
    Kvserve__Envelope env;
    Kvserve__StatusRequest sr;
    kv_wire_envelope_init(&env);
    kvserve__status_request__init(&sr);
    env.body_case = KVSERVE__ENVELOPE__BODY_STATUS;
    env.status = &sr;
    int rc = await_router(c, deadline, timeout_ms);
    if (!rc)
        rc = send_env(c, &env, deadline, timeout_ms);
    if (rc)
        return rc;
    c->status_pending++;
    for (;;) {
        int left = ms_left(deadline);
        if (left == 0)
            return fail(c, KVC_ETIMEOUT, "no status reply from %s within %d ms", c->endpoint, timeout_ms);
        kvc_item it;
        int n = recv_item(c, left, &it);
        if (n < 0)
            return n;
        if (n != 1)
            continue;
        if (it.env->body_case != KVSERVE__ENVELOPE__BODY_STATUS_REPLY) {
            if ((rc = queue_push(c, &it)) != 0)
                return rc;
            continue;
        }
        if (c->status_pending)
            c->status_pending--;
        if (c->status_pending) { /* an older request's answer */
            item_free(&it);
            continue;
        }
        rc = kvc_status_from_proto(it.env->status_reply, out);
        item_free(&it);
        if (rc)
            return fail(c, rc, rc == KVC_EPROTO ? "the router's status has malformed metrics" : "out of memory");
        return KVC_OK;
    }
}
