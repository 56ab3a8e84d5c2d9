/* The client endpoint: Generate (validation, tokenization, queueing), Cancel, Status, and
 * the GenerateReply stream. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_time.h"
#include "kv_wire_logprobs.h"
#include "router.h"

#define MAX_REQUEST_ID 128
#define DEFAULT_MAX_TOKENS 256
/* No real token is longer than this many bytes: a text prompt longer than max_prompt times
 * this cannot fit, and is refused before spending time on tokenizing it. */
#define MAX_TOKEN_BYTES 1024

static void send_client(router_state *st, const kv_wire_route *to, const Kvserve__Envelope *env, const char *what)
{
    kv_err err;
    /* Timeout 0: a slow or vanished client never blocks the loop; its replies are dropped. */
    if (kv_wire_send(st->client, to, env, NULL, 0, 0, &err))
        KV_WARN("router", "event=reply_dropped msg=%s error=\"%s\"", what, err.msg);
}

/* A final error reply for a request that never entered the table. */
static void reply_rejected(router_state *st, const kv_wire_route *to, const char *request_id, int code,
                           const char *msg)
{
    Kvserve__Envelope env;
    Kvserve__GenerateReply rep;
    Kvserve__Error e;
    Kvserve__Timings t;
    kv_wire_envelope_init(&env);
    kvserve__generate_reply__init(&rep);
    kvserve__error__init(&e);
    kvserve__timings__init(&t);
    e.code = code;
    e.message = (char *)msg;
    e.request_id = (char *)request_id;
    rep.request_id = (char *)request_id;
    rep.finish_reason = KVSERVE__FINISH_REASON__FINISH_ERROR;
    rep.error = &e;
    rep.timings = &t;
    env.body_case = KVSERVE__ENVELOPE__BODY_REPLY;
    env.reply = &rep;
    send_client(st, to, &env, "reply");
}

void router_client_send_output(router_state *st, router_req *r, int final, int finish, int code, const char *msg)
{
    if (r->orphan) { /* no client to send to (router_resume.c) */
        router_req_output_sent(r);
        return;
    }
    if (final)
        router_req_flush_text(r);
    Kvserve__Envelope env;
    Kvserve__GenerateReply rep;
    Kvserve__Error e;
    Kvserve__Timings t;
    kv_wire_envelope_init(&env);
    kvserve__generate_reply__init(&rep);
    rep.request_id = r->id;
    rep.n_tokens = r->n_out;
    rep.tokens = r->out_tokens;
    rep.text = r->text_len ? r->out_text : "";
    rep.index = r->out_index;
    rep.finish_reason = final ? finish : KVSERVE__FINISH_REASON__FINISH_NONE;
    if (final && code) {
        kvserve__error__init(&e);
        e.code = code;
        e.message = (char *)(msg ? msg : "");
        e.request_id = r->id;
        rep.error = &e;
        rep.finish_reason = KVSERVE__FINISH_REASON__FINISH_ERROR;
    }
    if (final) {
        router_req_timings(r, st->now, &t);
        rep.timings = &t;
        if (r->return_prompt_tokens) {
            rep.n_prompt_tokens = r->n_prompt_orig;
            rep.prompt_tokens = r->prompt;
        }
    }
    /* Logprobs: one message per token, and the prompt's once (then forgotten). */
    Kvserve__TokenLogprobs *lp_m = NULL, **lp_p = NULL, *pl_m = NULL, **pl_p = NULL;
    if (r->logprobs && r->n_out && (lp_m = malloc(r->n_out * sizeof *lp_m)) &&
        (lp_p = malloc(r->n_out * sizeof *lp_p))) {
        kv_wire_logprobs_to_protos(r->out_lp, r->n_out, lp_m, lp_p);
        rep.n_logprobs = r->n_out;
        rep.logprobs = lp_p;
    }
    if (r->n_prompt_lp && (pl_m = malloc(r->n_prompt_lp * sizeof *pl_m)) &&
        (pl_p = malloc(r->n_prompt_lp * sizeof *pl_p))) {
        kv_wire_logprobs_to_protos(r->prompt_lp, r->n_prompt_lp, pl_m, pl_p);
        rep.n_prompt_logprobs = r->n_prompt_lp;
        rep.prompt_logprobs = pl_p;
        if (r->return_prompt_tokens) { /* the ids they score, with them (a stream shows them first) */
            rep.n_prompt_tokens = r->n_prompt_orig;
            rep.prompt_tokens = r->prompt;
        }
    }
    env.body_case = KVSERVE__ENVELOPE__BODY_REPLY;
    env.reply = &rep;
    send_client(st, &r->client, &env, "reply");
    free(lp_m), free(lp_p), free(pl_m), free(pl_p);
    if (rep.n_prompt_logprobs) {
        free(r->prompt_lp);
        r->prompt_lp = NULL;
        r->n_prompt_lp = 0;
    }
    router_req_output_sent(r);
}

static int copy_tokens(const int32_t *ids, size_t n, int vocab, router_validated *out, char *msg, size_t cap)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) {
            snprintf(msg, cap, "prompt token %d at position %zu is outside the vocabulary [0, %d)", ids[i], i, vocab);
            return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
        }
    if (n > UINT32_MAX - 1) {
        snprintf(msg, cap, "prompt of %zu tokens is too long", n);
        return KVSERVE__ERROR_CODE__PROMPT_TOO_LONG;
    }
    out->prompt = malloc(n * sizeof *ids);
    if (!out->prompt) {
        snprintf(msg, cap, "out of memory");
        return KVSERVE__ERROR_CODE__INTERNAL;
    }
    memcpy(out->prompt, ids, n * sizeof *ids);
    out->n_prompt = (uint32_t)n;
    return 0;
}

/* Text, or chat messages through the model's chat template, to the request's prompt ids
 * (kv_prompt: exactly as HF transformers makes them, as kvctl generate --local does). */
static int encode_prompt(const router_model *m, const char *text, int chat, router_validated *out, char *msg,
                         size_t cap)
{
    size_t len = strlen(text);
    if (!m->prompt.tok) {
        snprintf(msg, cap, "this router has no tokenizer: send prompt_tokens");
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    /* A quick bound before any work: no token is longer than MAX_TOKEN_BYTES, and JSON
     * escaping at most sextuples a message's text. */
    if (len / MAX_TOKEN_BYTES / (chat ? 6 : 1) > m->max_prompt) {
        snprintf(msg, cap, "prompt of %zu bytes cannot fit in %u tokens", len, m->max_prompt);
        return KVSERVE__ERROR_CODE__PROMPT_TOO_LONG;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    kv_err err;
    int rc = chat ? kv_prompt_encode_chat_json(&m->prompt, text, len, 1, &ids, &n, &err)
                  : kv_prompt_encode_text(&m->prompt, text, len, &ids, &n, &err);
    if (rc) {
        snprintf(msg, cap, "%s: %s", chat ? "cannot apply the chat template" : "cannot tokenize the prompt", err.msg);
        return rc == KV_ENOMEM ? KVSERVE__ERROR_CODE__INTERNAL : KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (n > UINT32_MAX - 2) {
        free(ids);
        snprintf(msg, cap, "prompt too long");
        return KVSERVE__ERROR_CODE__PROMPT_TOO_LONG;
    }
    out->prompt = ids;
    out->n_prompt = (uint32_t)n;
    return 0;
}

/* GenerateRequest.resume_tokens: ids in the vocabulary, fewer than the request's budget (a
 * client holding them all had its final reply too). */
static int check_resume(const router_model *m, const Kvserve__GenerateRequest *g, const router_validated *v,
                        char *msg, size_t cap)
{
    if (g->n_resume_tokens >= v->max_tokens) {
        snprintf(msg, cap, "resume_tokens: %zu tokens, the request has %u at most", g->n_resume_tokens,
                 v->max_tokens);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < g->n_resume_tokens; i++)
        if (g->resume_tokens[i] < 0 || g->resume_tokens[i] >= m->cfg.vocab_size) {
            snprintf(msg, cap, "resume token %d at index %zu is outside the vocabulary", g->resume_tokens[i], i);
            return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
        }
    return 0;
}

int router_validate_generate(const router_model *m, const router_opts *o, const router_requests *t,
                             const kv_wire_route *client, const Kvserve__GenerateRequest *g, router_validated *out,
                             char *msg, size_t cap)
{
    memset(out, 0, sizeof *out);
    msg[0] = '\0';
    const char *id = g->request_id ? g->request_id : "";
    size_t id_len = strlen(id);
    if (id_len == 0 || id_len > MAX_REQUEST_ID) {
        snprintf(msg, cap, "request_id must be 1..%d bytes, got %zu", MAX_REQUEST_ID, id_len);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (t && router_requests_find_client(t, client, id)) {
        snprintf(msg, cap, "request '%s' is already in flight", id);
        return KVSERVE__ERROR_CODE__DUPLICATE_REQUEST;
    }
    if (g->model && g->model[0] && strcmp(g->model, m->name)) {
        snprintf(msg, cap, "model '%s' is not served here (this router serves '%s')", g->model, m->name);
        return KVSERVE__ERROR_CODE__UNKNOWN_MODEL;
    }
    kv_sampling_params s;
    kv_sampling_default(&s);
    if (g->sampling) {
        const Kvserve__SamplingParams *sp = g->sampling;
        if (!(sp->temperature >= 0.0f && sp->temperature <= 100.0f)) {
            snprintf(msg, cap, "temperature must be in [0, 100], got %g", (double)sp->temperature);
            return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
        }
        if (!(sp->top_p >= 0.0f && sp->top_p <= 1.0f)) {
            snprintf(msg, cap, "top_p must be in [0, 1] (0 = off), got %g", (double)sp->top_p);
            return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
        }
        s.temperature = sp->temperature;
        s.top_k = sp->top_k > INT_MAX ? INT_MAX : (int)sp->top_k;
        s.top_p = sp->top_p == 0.0f ? 1.0f : sp->top_p;
        s.seed = sp->seed;
    }
    kv_err err;
    if (kv_sampling_validate(&s, &err)) {
        snprintf(msg, cap, "invalid sampling: %s", err.msg);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    out->sampling = s;
    size_t stop_max;
    if (router_stop_check(g->stop, g->n_stop, &stop_max, msg, cap))
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    if (g->logprobs > KV_WIRE_LOGPROBS_MAX) {
        snprintf(msg, cap, "logprobs must be in [0, %d] (the token and at most %d alternatives), got %u",
                 KV_WIRE_LOGPROBS_MAX, KV_WIRE_LOGPROBS_MAX - 1, g->logprobs);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    int code;
    int has_text = g->prompt && g->prompt[0], has_chat = g->chat_messages && g->chat_messages[0];
    if ((g->n_prompt_tokens != 0) + has_text + has_chat > 1) {
        snprintf(msg, cap, "give one of prompt text, prompt_tokens and chat_messages");
        code = KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    } else if (g->n_prompt_tokens) {
        code = copy_tokens(g->prompt_tokens, g->n_prompt_tokens, m->cfg.vocab_size, out, msg, cap);
    } else if (has_text || has_chat) {
        code = encode_prompt(m, has_chat ? g->chat_messages : g->prompt, has_chat, out, msg, cap);
    } else {
        snprintf(msg, cap, "empty prompt: give prompt text, prompt_tokens or chat_messages");
        code = KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (code)
        return code;
    out->max_tokens = g->max_tokens ? g->max_tokens : DEFAULT_MAX_TOKENS;
    if (out->n_prompt > m->max_prompt || (uint64_t)out->n_prompt + 1 > m->context) {
        snprintf(msg, cap, "prompt of %u tokens exceeds the limit of %u tokens (context %u)", out->n_prompt,
                 m->max_prompt, m->context);
        free(out->prompt);
        out->prompt = NULL;
        return KVSERVE__ERROR_CODE__PROMPT_TOO_LONG;
    }
    if ((uint64_t)out->n_prompt + out->max_tokens > m->context)
        out->max_tokens = m->context - out->n_prompt;
    if (g->n_resume_tokens) { /* a resumed stream: what the client holds must fit the request */
        code = check_resume(m, g, out, msg, cap);
        if (code) {
            free(out->prompt);
            out->prompt = NULL;
            return code;
        }
    }
    uint32_t dl = (uint32_t)o->request_deadline_ms;
    if (g->deadline_ms && g->deadline_ms < dl)
        dl = g->deadline_ms;
    out->deadline_s = dl * 1e-3;
    return 0;
}

static void on_generate(router_state *st, const kv_wire_route *client, const Kvserve__GenerateRequest *g)
{
    st->requests_total++;
    router_validated v;
    char msg[512];
    const char *id = g->request_id ? g->request_id : "";
    int code = router_validate_generate(&st->model, &st->opt, &st->reqs, client, g, &v, msg, sizeof msg);
    if (code) {
        char idbuf[160];
        st->requests_failed++;
        router_metrics_refused(&st->metrics, code);
        KV_WARN("router", "event=request_rejected id=%s code=%s reason=\"%s\"", router_log_id(id, idbuf, sizeof idbuf),
                router_code_name(code), msg);
        reply_rejected(st, client, id, code, msg);
        return;
    }
    router_req *r = router_requests_add(&st->reqs, client, id, v.prompt, v.n_prompt, st->now);
    if (!r) {
        st->requests_failed++;
        router_metrics_refused(&st->metrics, KVSERVE__ERROR_CODE__INTERNAL);
        reply_rejected(st, client, id, KVSERVE__ERROR_CODE__INTERNAL, "router out of memory");
        return;
    }
    r->max_tokens = v.max_tokens;
    r->sampling = v.sampling;
    r->ignore_eos = g->ignore_eos;
    r->stream = g->stream;
    r->return_prompt_tokens = g->return_prompt_tokens;
    r->logprobs = g->logprobs;
    r->prompt_logprobs = g->logprobs && g->prompt_logprobs && r->n_prompt > 1 && !g->n_resume_tokens;
    r->dl_total = st->now + v.deadline_s;
    r->resumed = g->resume || g->n_resume_tokens;
    if ((g->n_resume_tokens && router_req_resume(r, g->resume_tokens, (uint32_t)g->n_resume_tokens)) ||
        router_stop_init(&r->stop, g->stop, g->n_stop, msg, sizeof msg)) {
        router_end(st, r, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL, "router out of memory");
        return;
    }
    if (st->model.prompt.tok) {
        /* Primed with the prompt, so the continuation's text is exactly as in the whole text. */
        char scratch[1024];
        kv_detok_init(&r->detok, st->model.prompt.tok);
        for (uint32_t i = 0; i < r->n_prompt; i++)
            if (r->prompt[i] < kv_tokenizer_n_ids(st->model.prompt.tok))
                kv_detok_push(&r->detok, r->prompt[i], scratch, sizeof scratch, NULL);
        r->have_detok = 1;
    }
    if (router_resume_start(st, r))
        return; /* bound to what a decode worker still runs, or parked until it registers */
    router_enter(st, r, RQ_QUEUED);
    router_queue_push_back(&st->reqs, r);
    char idbuf[160];
    KV_DEBUG("router", "event=request_accepted id=%s prompt_tokens=%u max_tokens=%u stream=%d",
             router_log_id(id, idbuf, sizeof idbuf), r->n_prompt, r->max_tokens, r->stream);
}

static void on_cancel(router_state *st, const kv_wire_route *client, const Kvserve__CancelRequest *c)
{
    const char *id = c->request_id ? c->request_id : "";
    router_req *r = id[0] ? router_requests_find_client(&st->reqs, client, id) : NULL;
    if (!r) {
        kv_err err;
        char msg[256];
        snprintf(msg, sizeof msg, "no request '%.128s' in flight", id);
        if (kv_wire_send_error(st->client, client, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, id, msg, &err))
            KV_WARN("router", "event=reply_dropped msg=error error=\"%s\"", err.msg);
        return;
    }
    r->stop_matched = c->stop_matched;
    router_end(st, r, KVSERVE__FINISH_REASON__FINISH_CANCELLED, 0, NULL);
}

static void on_status(router_state *st, const kv_wire_route *client)
{
    Kvserve__Envelope env;
    Kvserve__StatusReply rep;
    router_metrics_pb *mpb = malloc(sizeof *mpb); /* about 5 KiB: not on the loop's stack */
    kv_wire_envelope_init(&env);
    kvserve__status_reply__init(&rep);
    size_t nw = st->workers.n, nr = st->reqs.n;
    Kvserve__WorkerStatus *ws = calloc(nw ? nw : 1, sizeof *ws);
    Kvserve__WorkerStatus **wp = calloc(nw ? nw : 1, sizeof *wp);
    Kvserve__RequestStatus *rs = calloc(nr ? nr : 1, sizeof *rs);
    Kvserve__RequestStatus **rp = calloc(nr ? nr : 1, sizeof *rp);
    if (!ws || !wp || !rs || !rp || !mpb) {
        kv_err err;
        kv_wire_send_error(st->client, client, KVSERVE__ERROR_CODE__INTERNAL, "", "router out of memory", &err);
        goto out;
    }
    for (size_t i = 0; i < nw; i++) {
        const router_worker *wk = st->workers.list[i];
        Kvserve__WorkerStatus *w = &ws[i];
        kvserve__worker_status__init(w);
        w->worker_id = wk->id;
        w->role = wk->role;
        w->address = wk->address;
        w->device = wk->device;
        w->weights = wk->weights;
        w->kv_transports = wk->kv_transports;
        w->healthy = st->now - wk->last_heartbeat <= st->opt.worker_timeout_ms * 1e-3;
        w->last_heartbeat_ms_ago = (st->now - wk->last_heartbeat) * 1e3;
        w->running = wk->hb_running;
        w->queued = wk->hb_queued;
        w->kv_blocks_total = wk->hb_total;
        w->kv_blocks_free = wk->hb_free;
        w->kv_blocks_cached = wk->hb_cached;
        w->prefix_query_tokens = wk->hb_query_tokens;
        w->prefix_hit_tokens = wk->hb_hit_tokens;
        w->kv_blocks_used = wk->hb_total > wk->hb_free ? wk->hb_total - wk->hb_free : 0;
        wp[i] = w;
    }
    size_t i = 0;
    for (router_req *r = st->reqs.head; r && i < nr; r = r->next, i++) {
        Kvserve__RequestStatus *q = &rs[i];
        kvserve__request_status__init(q);
        q->request_id = r->id;
        q->state = (char *)router_req_state_name(r->state);
        q->prefill_worker = r->prefill ? r->prefill->id : "";
        q->decode_worker = r->decode ? r->decode->id : "";
        q->n_block_ids = r->decode ? r->n_block_ids : 0;
        q->block_ids = r->block_ids;
        q->generated_tokens = r->next_index;
        q->age_ms = (st->now - r->t_accept) * 1e3;
        rp[i] = q;
    }
    rep.model = st->model.name;
    rep.n_workers = nw;
    rep.workers = wp;
    rep.n_requests = i;
    rep.requests = rp;
    rep.requests_total = st->requests_total;
    rep.requests_failed = st->requests_failed;
    rep.requests_replanned = st->requests_replanned;
    rep.uptime_s = st->now - st->started;
    uint32_t waiting = (uint32_t)st->reqs.n_queued;
    rep.metrics = router_metrics_to_pb(&st->metrics, (uint32_t)st->reqs.n - waiting, waiting, mpb);
    env.body_case = KVSERVE__ENVELOPE__BODY_STATUS_REPLY;
    env.status_reply = &rep;
    send_client(st, client, &env, "status_reply");
out:
    free(mpb);
    free(ws);
    free(wp);
    free(rs);
    free(rp);
}

void router_expire_clients(router_state *st, double now)
{
    if (st->opt.client_timeout_ms <= 0)
        return;
    kv_wire_route silent[16];
    size_t n;
    while ((n = router_liveness_silent(&st->clients, now, st->opt.client_timeout_ms * 1e-3, silent, 16)) > 0) {
        for (size_t i = 0; i < n; i++) {
            unsigned cancelled = 0;
            router_req *next;
            for (router_req *r = st->reqs.head; r; r = next) {
                next = r->next; /* router_end frees r */
                if (r->client.len != silent[i].len || memcmp(r->client.id, silent[i].id, silent[i].len))
                    continue;
                char idbuf[160];
                KV_WARN("router", "event=client_timeout id=%s timeout_ms=%d", router_log_id(r->id, idbuf, sizeof idbuf),
                        st->opt.client_timeout_ms);
                router_end(st, r, KVSERVE__FINISH_REASON__FINISH_CANCELLED, 0, NULL);
                cancelled++;
            }
            if (cancelled)
                KV_WARN("router", "event=client_gone requests_cancelled=%u reason=\"no message for more than %d ms "
                                  "(--client-timeout)\"", cancelled, st->opt.client_timeout_ms);
        }
        if (n < 16)
            break;
    }
}

void router_client_handle(router_state *st, kv_wire_msg *m)
{
    const Kvserve__Envelope *env = m->env;
    switch (env->body_case) {
    case KVSERVE__ENVELOPE__BODY_GENERATE:
        on_generate(st, &m->route, env->generate);
        return;
    case KVSERVE__ENVELOPE__BODY_CANCEL:
        on_cancel(st, &m->route, env->cancel);
        return;
    case KVSERVE__ENVELOPE__BODY_STATUS:
        on_status(st, &m->route);
        return;
    case KVSERVE__ENVELOPE__BODY_CLIENT_HEARTBEAT:
        return; /* router_handle noted the client alive; nothing to answer */
    case KVSERVE__ENVELOPE__BODY_ERROR:
        KV_WARN("router", "event=client_error code=%s message=\"%s\"", router_code_name(env->error->code),
                env->error->message ? env->error->message : "");
        return;
    default: {
        char msg[128];
        kv_err err;
        snprintf(msg, sizeof msg, "unexpected message body %d on the router's client endpoint", (int)env->body_case);
        KV_WARN("router", "event=bad_message endpoint=client reason=\"%s\"", msg);
        kv_wire_send_error(st->client, &m->route, KVSERVE__ERROR_CODE__BAD_MESSAGE, "", msg, &err);
        return;
    }
    }
}
