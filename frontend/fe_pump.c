/* The pump: one thread, one kv_client, every generate stream (frontend.h). Each turn it
 * submits new streams, sends the cancels that are due, turns every reply waiting on the
 * client into response bytes, enforces deadlines and keep-alives, and then polls the
 * client's descriptors, its wake-up eventfd and the sockets of the suspended connections
 * (a client that closes its socket is cancelled at the router at once). */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fe_logprobs.h"
#include "fe_stop.h"
#include "frontend.h"
#include "kv_log.h"
#include "kv_time.h"

#define TICK_MS 100
#define COMMIT_AFTER_S 1.0   /* a stream with no reply yet starts (200, keep-alives) after this */
#define KEEPALIVE_S 5.0      /* an SSE comment when nothing was sent for this long */
#define SUBMIT_TIMEOUT_MS 200
#define ROUTER_DOWN_S 1.0    /* after a submit found no router, fail fast for this long */

void fe_stream_suspend(fe_stream *s)
{
    if (!s->suspended) {
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
    }
}

void fe_stream_resume(fe_stream *s)
{
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
}

void fe_stream_unref(fe_stream *s)
{
    if (--s->refs > 0)
        return;
    fe_gen_request_free(&s->req);
    kv_textbuf_free(&s->out);
    kv_textbuf_free(&s->text);
    free(s->lp_ids);
    free(s->lp);
    free(s->prompt_ids);
    free(s->prompt_lp);
    free(s);
}

void fe_pump_wake(frontend *fe)
{
    uint64_t one = 1;
    if (write(fe->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        KV_WARN("frontend", "event=wake_failed error=\"%s\"", strerror(errno));
}

void fe_pump_add(frontend *fe, fe_stream *s)
{
    s->next = fe->streams;
    fe->streams = s;
    fe_pump_wake(fe);
}

/* ---- logprobs and echo (fe->lock held) ------------------------------------------------------ */

/* A token's text as it reads inside a text (a SentencePiece word's leading space kept);
 * special tokens as their token string. */
static int token_text(void *ctx, int32_t id, char *out, size_t cap)
{
    const frontend *fe = ctx;
    if (id < 0 || id >= kv_tokenizer_n_ids(fe->tok) || cap == 0)
        return -1;
    if (kv_tokenizer_is_special(fe->tok, id)) {
        const char *t = kv_tokenizer_token_str(fe->tok, id);
        return snprintf(out, cap, "%s", t ? t : "") < (int)cap ? (int)strlen(out) : -1;
    }
    kv_detok d;
    kv_detok_init(&d, fe->tok);
    d.at_start = d.first_token = 0; /* a continuation: as if primed with earlier tokens */
    kv_err err;
    int n = kv_detok_push(&d, id, out, cap, &err);
    if (n < 0)
        return -1;
    int m = kv_detok_flush(&d, out + n, cap - (size_t)n);
    return m < 0 ? n : n + m;
}

/* Tokens whose logprobs the answer shows: those up to a stop sequence's match. */
static size_t lp_limit(const fe_stream *s)
{
    return s->stop_hit && s->n_gen_at_stop < s->n_lp ? s->n_gen_at_stop : s->n_lp;
}

/* The "logprobs" JSON of tokens [from, to) (with the prompt's first when with_prompt) into
 * b; 0, or -1 when nothing is to be shown (the value is then null). */
static int lp_json(fe_stream *s, size_t from, size_t to, int with_prompt, kv_textbuf *b)
{
    if (!s->req.logprobs || (from >= to && !with_prompt))
        return -1;
    fe_token_texts tt = {token_text, s->fe};
    if (s->req.kind == FE_KIND_CHAT) {
        fe_render_chat_logprobs(b, s->lp_ids + from, s->lp + from, to - from, &tt);
    } else {
        int prompt = with_prompt && s->prompt_lp;
        fe_render_completion_logprobs(b, s->prompt_ids, prompt ? s->prompt_lp : NULL, prompt ? s->n_prompt_ids : 0,
                                      s->lp_ids + from, s->lp + from, to - from, &s->text_offset, &tt);
    }
    return 0;
}

/* Echo: the prompt's text (as given, or decoded from its ids) into b. */
static void prompt_text(const fe_stream *s, kv_textbuf *b)
{
    if (s->req.prompt) {
        kv_textbuf_puts(b, s->req.prompt);
        return;
    }
    char *t = NULL;
    kv_err err;
    if (s->req.n_prompt_tokens && !kv_tokenizer_decode(s->fe->tok, s->req.prompt_tokens, s->req.n_prompt_tokens, &t, &err))
        kv_textbuf_puts(b, t);
    free(t);
}

/* An event's logprobs and prompt ids into the stream (out of memory: the answer fails). */
static int keep_logprobs(fe_stream *s, const kv_client_event *ev)
{
    if (s->req.logprobs && ev->n_tokens) {
        if (s->n_lp + ev->n_tokens > s->cap_lp) {
            size_t cap = s->cap_lp ? s->cap_lp * 2 : 64;
            while (cap < s->n_lp + ev->n_tokens)
                cap *= 2;
            int32_t *ids = realloc(s->lp_ids, cap * sizeof *ids);
            if (ids)
                s->lp_ids = ids;
            kv_client_logprobs *lp = ids ? realloc(s->lp, cap * sizeof *lp) : NULL;
            if (!lp)
                return -1;
            s->lp = lp;
            s->cap_lp = cap;
        }
        for (size_t i = 0; i < ev->n_tokens; i++) {
            s->lp_ids[s->n_lp + i] = ev->tokens[i];
            s->lp[s->n_lp + i] = ev->logprobs ? ev->logprobs[i] : (kv_client_logprobs){.logprob = NAN};
        }
        s->n_lp += ev->n_tokens;
    }
    if (ev->n_prompt_tokens && !s->prompt_ids) {
        if (!(s->prompt_ids = malloc(ev->n_prompt_tokens * sizeof *s->prompt_ids)))
            return -1;
        memcpy(s->prompt_ids, ev->prompt_tokens, ev->n_prompt_tokens * sizeof *s->prompt_ids);
        s->n_prompt_ids = ev->n_prompt_tokens;
    }
    if (ev->n_prompt_logprobs && !s->prompt_lp && ev->n_prompt_logprobs + 1 == s->n_prompt_ids) {
        if (!(s->prompt_lp = malloc(ev->n_prompt_logprobs * sizeof *s->prompt_lp)))
            return -1;
        memcpy(s->prompt_lp, ev->prompt_logprobs, ev->n_prompt_logprobs * sizeof *s->prompt_lp);
        s->n_prompt_lp = ev->n_prompt_logprobs;
    }
    return 0;
}

/* Streaming echo: the prompt's chunk first, once its logprobs (when asked) are here. */
static void maybe_send_echo(fe_stream *s, int final)
{
    if (!s->req.stream || !s->req.echo || s->echo_sent || (s->req.logprobs && !s->prompt_lp && !final))
        return;
    kv_textbuf t, l;
    kv_textbuf_init(&t);
    kv_textbuf_init(&l);
    prompt_text(s, &t);
    int has_lp = s->req.logprobs && s->prompt_lp && !lp_json(s, 0, 0, 1, &l);
    fe_render_chunk(&s->out, &s->meta, 0, t.data ? t.data : "", t.len, has_lp ? l.data : NULL, NULL,
                    s->req.include_usage);
    kv_textbuf_free(&t);
    kv_textbuf_free(&l);
    s->echo_sent = 1;
    s->t_last_out = kv_now_s();
}

/* ---- turning replies into bytes (fe->lock held) ------------------------------------------ */

static void append_text_chunk(fe_stream *s, size_t end)
{
    if (end <= s->text_sent)
        return;
    if (s->req.stream) {
        maybe_send_echo(s, 0);
        kv_textbuf l;
        kv_textbuf_init(&l);
        size_t to = lp_limit(s);
        int has_lp = !lp_json(s, s->lp_sent, to, 0, &l);
        if (has_lp)
            s->lp_sent = to;
        fe_render_chunk(&s->out, &s->meta, 0, s->text.data + s->text_sent, end - s->text_sent, has_lp ? l.data : NULL,
                        NULL, s->req.include_usage);
        kv_textbuf_free(&l);
        s->t_last_out = kv_now_s();
    }
    s->text_sent = end;
}

/* The client's answer is complete: text, finish reason, usage. */
static void finish_ok(fe_stream *s, const char *finish, uint32_t prompt_tokens)
{
    fe_usage u = {prompt_tokens, s->stop_hit ? s->n_gen_at_stop : s->n_gen};
    kv_textbuf l;
    kv_textbuf_init(&l);
    if (s->req.stream) {
        maybe_send_echo(s, 1);
        append_text_chunk(s, s->text.len);
        if (!lp_json(s, s->lp_sent, lp_limit(s), 0, &l)) { /* tokens without text of their own */
            s->lp_sent = lp_limit(s);
            fe_render_chunk(&s->out, &s->meta, 0, "", 0, l.data, NULL, s->req.include_usage);
        }
        fe_render_chunk(&s->out, &s->meta, 0, NULL, 0, NULL, finish, s->req.include_usage);
        if (s->req.include_usage)
            fe_render_usage_chunk(&s->out, &s->meta, &u);
        fe_render_done(&s->out);
    } else {
        s->out.len = s->out_pos = 0;
        kv_textbuf t;
        kv_textbuf_init(&t);
        if (s->req.echo)
            prompt_text(s, &t);
        kv_textbuf_append(&t, s->text.data ? s->text.data : "", s->text.len);
        int has_lp = !lp_json(s, 0, lp_limit(s), s->req.echo, &l);
        fe_render_response(&s->out, &s->meta, t.data ? t.data : "", t.len, has_lp ? l.data : NULL, finish, &u);
        kv_textbuf_free(&t);
    }
    kv_textbuf_free(&l);
    s->finished = 1;
    s->commit_ready = 1;
}

static void finish_error(fe_stream *s, const fe_error *e)
{
    if (s->committed) {
        fe_render_sse_error(&s->out, e);
    } else {
        s->failed = 1;
        s->err = *e;
    }
    s->finished = 1;
    s->commit_ready = 1;
}

static void on_event(frontend *fe, fe_stream *s, const kv_client_event *ev)
{
    double now = kv_now_s();
    if (ev->n_tokens) {
        s->n_gen += (uint32_t)ev->n_tokens;
        if (!s->t_first)
            s->t_first = now;
        s->t_last = now;
    }
    if (s->req.stream)
        s->commit_ready = 1;
    if (!s->finished && keep_logprobs(s, ev)) {
        fe_error e;
        fe_fail(&e, 500, "internal_server_error", "", "", "out of memory (logprobs)");
        finish_error(s, &e);
        s->cancel_wanted = !ev->finished;
    }
    if (!s->finished)
        maybe_send_echo(s, 0);
    if (!s->finished && !s->stop_hit && ev->text_len) {
        kv_textbuf_append(&s->text, ev->text, ev->text_len);
        fe_stop_scan sc = fe_stop_scan_text(s->text.data, s->text.len, s->text_sent, s->req.stop, s->req.n_stop);
        if (sc.matched) {
            s->text.len = sc.match_at;
            s->text.data[s->text.len] = '\0';
            s->stop_hit = 1;
            s->n_gen_at_stop = s->n_gen;
            if (!ev->finished)
                s->cancel_wanted = 1;
        }
        append_text_chunk(s, sc.emit_end);
    }
    if (!ev->finished)
        return;
    s->router_done = 1;
    uint32_t prompt_tokens = ev->has_timings ? ev->timings.prompt_tokens : 0;
    if (s->finished) /* timed out or the client went away: the router's end only */
        return;
    if (s->client_gone || s->hangup) {
        s->finished = 1;
        return;
    }
    if (s->stop_hit || ev->finish_reason == KVC_FINISH_EOS || ev->finish_reason == KVC_FINISH_LENGTH ||
        ev->finish_reason == KVC_FINISH_CONTEXT || ev->finish_reason == KVC_FINISH_STOP) {
        int stop = s->stop_hit || ev->finish_reason == KVC_FINISH_EOS || ev->finish_reason == KVC_FINISH_STOP;
        finish_ok(s, stop ? "stop" : "length", prompt_tokens);
        KV_DEBUG("frontend", "event=request_done id=%s finish=%s prompt_tokens=%u tokens=%u ms=%.1f", s->id,
                 stop ? "stop" : "length", prompt_tokens, s->n_gen, (now - s->t_arrival) * 1e3);
        return;
    }
    fe_error e;
    if (ev->finish_reason == KVC_FINISH_CANCELLED)
        fe_fail(&e, 500, "internal_server_error", "", "cancelled", "the request was cancelled by the server");
    else
        fe_error_from_router(&e, ev->error_code, ev->error_message);
    KV_INFO("frontend", "event=request_failed id=%s status=%d code=%s msg=\"%s\"", s->id, e.status, e.code, e.message);
    finish_error(s, &e);
}

static fe_stream *find_stream(frontend *fe, const char *id)
{
    for (fe_stream *s = fe->streams; s; s = s->next)
        if (s->submitted && !s->router_done && !strcmp(s->id, id))
            return s;
    return NULL;
}

/* ---- one turn ---------------------------------------------------------------------------- */

typedef struct work {
    fe_stream **items;
    size_t n, cap;
} work;

static int work_push(work *w, fe_stream *s)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        fe_stream **p = realloc(w->items, cap * sizeof *p);
        if (!p)
            return -1;
        w->items = p;
        w->cap = cap;
    }
    w->items[w->n++] = s;
    return 0;
}

static void fill_request(const fe_stream *s, kv_client_request *r, uint32_t max_model_len)
{
    kv_client_request_init(r);
    r->request_id = s->id;
    r->prompt = s->req.prompt;
    r->prompt_tokens = s->req.prompt_tokens;
    r->n_prompt_tokens = s->req.n_prompt_tokens;
    r->chat_messages = s->req.chat_messages;
    r->temperature = s->req.temperature;
    r->top_k = s->req.top_k;
    r->top_p = s->req.top_p;
    r->seed = s->req.seed;
    r->ignore_eos = s->req.ignore_eos;
    r->logprobs = (uint32_t)s->req.logprobs;
    r->prompt_logprobs = s->req.echo && s->req.logprobs;
    r->return_prompt_tokens = s->req.echo && s->req.logprobs; /* the ids the prompt's logprobs score */
    r->stop = (const char *const *)s->req.stop; /* the router ends it there; we cut the text */
    r->n_stop = s->req.n_stop;
    /* Completions default to 16 tokens (OpenAI); chat to what the context leaves (the router
     * clips to the context). */
    r->max_tokens = s->req.max_tokens ? s->req.max_tokens : s->req.kind == FE_KIND_COMPLETION ? 16 : max_model_len;
    r->stream = 1; /* the pump always streams: a stop sequence needs the text as it comes */
    double left = s->deadline - kv_now_s();
    r->deadline_ms = left > 1e-3 ? (uint32_t)(left * 1e3) : 1;
}

/* Submits the new streams and sends due cancels, outside the lock (the client may wait). */
static void submit_and_cancel(frontend *fe, double *router_down_until)
{
    work sub = {0}, can = {0};
    pthread_mutex_lock(&fe->lock);
    for (fe_stream *s = fe->streams; s; s = s->next) {
        if (!s->submitted && !s->router_done) {
            if (s->client_gone || s->hangup)
                s->router_done = 1; /* never sent */
            else if (work_push(&sub, s)) {
                fe_error e;
                fe_fail(&e, 500, "internal_server_error", "", "", "out of memory");
                finish_error(s, &e);
                s->router_done = 1;
                fe_stream_resume(s);
            }
        } else if (s->submitted && !s->router_done && (s->cancel_wanted || s->client_gone || s->hangup) &&
                   !s->cancel_sent) {
            s->cancel_sent = 1;
            if (work_push(&can, s))
                s->cancel_sent = 0; /* next turn */
        }
    }
    pthread_mutex_unlock(&fe->lock);
    for (size_t i = 0; i < sub.n; i++) {
        fe_stream *s = sub.items[i];
        kv_client_request r;
        fill_request(s, &r, fe->max_model_len);
        double now = kv_now_s();
        int rc = kv_client_submit(fe->client, &r, NULL, now < *router_down_until ? 0 : SUBMIT_TIMEOUT_MS);
        pthread_mutex_lock(&fe->lock);
        if (rc == KVC_OK) {
            s->submitted = 1;
        } else {
            fe_error e;
            if (rc == KVC_ETIMEOUT) {
                *router_down_until = now + ROUTER_DOWN_S;
                fe_fail(&e, 503, "service_unavailable", "", "router_unreachable", "the router at %s is not reachable",
                        fe->cfg.router);
            } else {
                fe_fail(&e, 500, "internal_server_error", "", "", "cannot submit to the router: %s",
                        kv_client_last_error(fe->client));
            }
            KV_WARN("frontend", "event=submit_failed id=%s msg=\"%s\"", s->id, e.message);
            s->router_done = 1;
            finish_error(s, &e);
            fe_stream_resume(s);
        }
        pthread_mutex_unlock(&fe->lock);
    }
    for (size_t i = 0; i < can.n; i++) {
        /* a failed cancel (router gone) ends the request anyway: the client fails it */
        /* A stop sequence ends it as "stop" in the router's metrics, anything else as "abort". */
        if (kv_client_cancel_stop(fe->client, can.items[i]->id, can.items[i]->stop_hit, 0))
            KV_DEBUG("frontend", "event=cancel_not_sent id=%s msg=\"%s\"", can.items[i]->id,
                     kv_client_last_error(fe->client));
    }
    free(sub.items);
    free(can.items);
}

static void drain_events(frontend *fe)
{
    kv_client_event ev;
    while (kv_client_next_event(fe->client, 0, &ev) == KVC_OK) {
        if (ev.kind != KVC_EVENT_REPLY)
            continue; /* e.g. a cancel of a request that had just ended */
        pthread_mutex_lock(&fe->lock);
        fe_stream *s = find_stream(fe, ev.request_id);
        if (s) {
            on_event(fe, s, &ev);
            if (s->req.stream ? s->commit_ready : s->finished)
                fe_stream_resume(s);
        }
        pthread_mutex_unlock(&fe->lock);
    }
}

/* Deadlines, the first commit of a quiet stream, keep-alives; drops the streams the pump is
 * done with. Returns how many suspended connections it put into fds. */
static size_t timers_and_sweep(frontend *fe, struct pollfd *fds, fe_stream **who, size_t cap)
{
    double now = kv_now_s();
    size_t n = 0;
    pthread_mutex_lock(&fe->lock);
    for (fe_stream **pp = &fe->streams; *pp;) {
        fe_stream *s = *pp;
        if (s->router_done && (s->finished || s->client_gone || s->hangup)) {
            *pp = s->next;
            fe_stream_unref(s);
            continue;
        }
        if (!s->finished && now > s->deadline) {
            fe_error e;
            fe_fail(&e, 504, "timeout", "", "DEADLINE_EXCEEDED", "the request did not finish within %d s",
                    fe->cfg.request_timeout_s);
            finish_error(s, &e);
            s->cancel_wanted = 1;
            fe_stream_resume(s);
        } else if (s->req.stream && !s->commit_ready && now - s->t_arrival > COMMIT_AFTER_S) {
            s->commit_ready = 1;
            s->t_last_out = now;
            fe_stream_resume(s);
        } else if (s->req.stream && s->committed && !s->finished && now - s->t_last_out > KEEPALIVE_S) {
            fe_render_keepalive(&s->out);
            s->t_last_out = now;
            fe_stream_resume(s);
        }
        if (s->suspended && !s->client_gone && !s->hangup && s->conn_fd >= 0 && n < cap) {
            fds[n] = (struct pollfd){s->conn_fd, POLLRDHUP, 0};
            who[n++] = s;
        }
        pp = &s->next;
    }
    pthread_mutex_unlock(&fe->lock);
    return n;
}

#define MAX_WATCHED 8192

static void *pump_main(void *arg)
{
    frontend *fe = arg;
    double router_down_until = 0;
    int cfds[KV_CLIENT_MAX_FDS];
    int n_cfds = kv_client_poll_fds(fe->client, cfds);
    if (n_cfds < 0) {
        KV_ERROR("frontend", "event=pump_failed msg=\"%s\"", kv_client_last_error(fe->client));
        n_cfds = 0;
    }
    struct pollfd *fds = malloc((MAX_WATCHED + 1 + KV_CLIENT_MAX_FDS) * sizeof *fds);
    fe_stream **who = malloc(MAX_WATCHED * sizeof *who);
    if (!fds || !who) {
        KV_ERROR("frontend", "event=pump_failed msg=\"out of memory\"");
        free(fds);
        free(who);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&fe->lock);
        int stop = fe->stopping;
        pthread_mutex_unlock(&fe->lock);
        if (stop)
            break;
        submit_and_cancel(fe, &router_down_until);
        drain_events(fe);
        size_t base = 1 + (size_t)n_cfds;
        size_t n = timers_and_sweep(fe, fds + base, who, MAX_WATCHED);
        fds[0] = (struct pollfd){fe->wake_fd, POLLIN, 0};
        for (int i = 0; i < n_cfds; i++)
            fds[1 + i] = (struct pollfd){cfds[i], POLLIN, 0};
        if (poll(fds, base + n, TICK_MS) < 0 && errno != EINTR) {
            KV_ERROR("frontend", "event=poll_failed error=\"%s\"", strerror(errno));
            break;
        }
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            if (read(fe->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                KV_WARN("frontend", "event=wake_read_failed error=\"%s\"", strerror(errno));
        }
        pthread_mutex_lock(&fe->lock);
        for (size_t i = 0; i < n; i++) {
            fe_stream *s = who[i];
            /* still ours: nothing is freed before the next sweep, which runs on this thread */
            if (fds[base + i].revents && s->suspended && !s->hangup) {
                s->hangup = 1;
                KV_INFO("frontend", "event=client_disconnected id=%s", s->id);
                fe_stream_resume(s);
            }
        }
        pthread_mutex_unlock(&fe->lock);
    }
    free(fds);
    free(who);
    return NULL;
}

int fe_pump_start(frontend *fe, kv_err *err)
{
    char buf[512];
    if (kv_client_connect_key(fe->cfg.router, fe->cfg.client_key, &fe->client, buf, sizeof buf))
        return kv_err_set(err, KV_EIO, "%s", buf);
    kv_client_set_resume(fe->client, KV_CLIENT_RESUME_DEFAULT_MS); /* streams survive a router restart */
    fe->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fe->wake_fd < 0)
        return kv_err_set(err, KV_EIO, "eventfd: %s", strerror(errno));
    if (pthread_create(&fe->pump_thread, NULL, pump_main, fe))
        return kv_err_set(err, KV_EIO, "cannot start the pump thread");
    return KV_OK;
}

void fe_pump_stop(frontend *fe)
{
    pthread_mutex_lock(&fe->lock);
    fe->stopping = 1;
    pthread_mutex_unlock(&fe->lock);
    fe_pump_wake(fe);
    pthread_join(fe->pump_thread, NULL);
}
