/* HTTP on libmicrohttpd (frontend.h): routing, auth, bodies, and the two ways a generate
 * response leaves: a whole JSON body once the pump finished it, or server-sent events read
 * by a content-reader callback that suspends its connection whenever it has nothing to
 * send (the pump resumes it when bytes arrive): no thread waits for any stream. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "frontend.h"
#include "kv_log.h"
#include "kv_time.h"

#define HTTP_IDLE_TIMEOUT_S 120
#define HTTP_CONNECTION_LIMIT 10000
#define HTTP_BACKLOG 1024

typedef struct fe_conn {
    fe_route_match match;
    kv_textbuf body;
    int too_big;
    int responded; /* a response was queued before the body was read */
    fe_stream *s;
} fe_conn;

static enum MHD_Result send_body(struct MHD_Connection *conn, int status, const char *ctype, const char *data,
                                 size_t len, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, int status, kv_textbuf *b)
{
    if (kv_textbuf_failed(b)) {
        kv_textbuf_free(b);
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"internal_server_error\","
                                  "\"param\":null,\"code\":null}}";
        return send_body(conn, 500, "application/json", oom, sizeof oom - 1, NULL);
    }
    enum MHD_Result r = send_body(conn, status, "application/json", b->data ? b->data : "", b->len, NULL);
    kv_textbuf_free(b);
    return r;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, const fe_error *e, const char *allow)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    fe_render_error(&b, e);
    if (e->status >= 500)
        KV_WARN("frontend", "event=http_error status=%d msg=\"%s\"", e->status, e->message);
    else
        KV_DEBUG("frontend", "event=http_error status=%d msg=\"%s\"", e->status, e->message);
    if (kv_textbuf_failed(&b))
        return send_json(conn, 500, &b);
    enum MHD_Result r = send_body(conn, e->status, "application/json", b.data, b.len, allow);
    kv_textbuf_free(&b);
    return r;
}

/* ---- generate ------------------------------------------------------------------------------ */

static ssize_t read_sse(void *cls, uint64_t pos, char *buf, size_t max)
{
    fe_stream *s = cls;
    frontend *fe = s->fe;
    ssize_t n;
    pthread_mutex_lock(&fe->lock);
    if (s->hangup) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (s->out_pos < s->out.len) {
        size_t k = s->out.len - s->out_pos < max ? s->out.len - s->out_pos : max;
        memcpy(buf, s->out.data + s->out_pos, k);
        s->out_pos += k;
        if (s->out_pos == s->out.len)
            s->out.len = s->out_pos = 0;
        n = (ssize_t)k;
    } else if (s->finished) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        fe_stream_suspend(s); /* the pump resumes it with more bytes */
        n = 0;
    }
    pthread_mutex_unlock(&fe->lock);
    return n;
}

static uint64_t random_seed(void)
{
    uint64_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
        v = kv_now_ns();
    return v;
}

static enum MHD_Result start_generate(frontend *fe, fe_conn *c, struct MHD_Connection *conn)
{
    fe_error e;
    fe_gen_request req;
    fe_kind kind = c->match.route == FE_ROUTE_CHAT ? FE_KIND_CHAT : FE_KIND_COMPLETION;
    if (fe_parse_generate(kind, c->body.data ? c->body.data : "", c->body.len, &req, &e))
        return send_error(conn, &e, NULL);
    if (req.model && strcmp(req.model, fe->model)) {
        fe_fail(&e, 404, "invalid_request_error", "model", "model_not_found",
                "The model `%.200s` does not exist (this server serves `%s`).", req.model, fe->model);
        fe_gen_request_free(&req);
        return send_error(conn, &e, NULL);
    }
    if (!req.has_seed)
        req.seed = random_seed(); /* as OpenAI: sampling without a seed differs run to run */
    fe_stream *s = calloc(1, sizeof *s);
    if (!s) {
        fe_gen_request_free(&req);
        fe_fail(&e, 500, "internal_server_error", "", "", "out of memory");
        return send_error(conn, &e, NULL);
    }
    s->fe = fe;
    s->conn = conn;
    s->req = req;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    s->conn_fd = ci ? ci->connect_fd : -1;
    kv_textbuf_init(&s->out);
    kv_textbuf_init(&s->text);
    s->t_arrival = kv_now_s();
    s->deadline = s->t_arrival + fe->cfg.request_timeout_s;
    s->refs = 2;
    pthread_mutex_lock(&fe->lock);
    snprintf(s->id, sizeof s->id, "%s-%016llx%08llx", kind == FE_KIND_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)fe->id_prefix, (unsigned long long)++fe->id_counter);
    s->meta = (fe_meta){kind, s->id, (long long)time(NULL), fe->model};
    if (kind == FE_KIND_CHAT && req.stream)
        fe_render_chunk(&s->out, &s->meta, 1, NULL, 0, NULL, NULL, req.include_usage);
    c->s = s;
    fe_pump_add(fe, s);
    fe_stream_suspend(s); /* until the pump has a reply, an error or a reason to start */
    pthread_mutex_unlock(&fe->lock);
    return MHD_YES;
}

/* The handler runs again after each resume until a response is queued. */
static enum MHD_Result continue_generate(frontend *fe, fe_stream *s, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&fe->lock);
    if (s->hangup || s->committed) {
        pthread_mutex_unlock(&fe->lock);
        return MHD_NO; /* closes the connection */
    }
    if (s->failed) {
        fe_error e = s->err;
        s->committed = 1;
        pthread_mutex_unlock(&fe->lock);
        return send_error(conn, &e, NULL);
    }
    if (s->req.stream && s->commit_ready) {
        s->committed = 1;
        pthread_mutex_unlock(&fe->lock);
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_sse, s, NULL);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "X-Request-Id", s->id);
        enum MHD_Result ret = MHD_queue_response(conn, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (!s->req.stream && s->finished) {
        s->committed = 1;
        kv_textbuf body = s->out; /* the pump is done writing it */
        pthread_mutex_unlock(&fe->lock);
        return send_body(conn, 200, "application/json", body.data ? body.data : "", body.len, NULL);
    }
    fe_stream_suspend(s);
    pthread_mutex_unlock(&fe->lock);
    return MHD_YES;
}

/* ---- the other routes ------------------------------------------------------------------------ */

static enum MHD_Result do_tokenize(frontend *fe, fe_conn *c, struct MHD_Connection *conn)
{
    fe_error e;
    fe_tokenize_request req;
    if (fe_parse_tokenize(c->body.data ? c->body.data : "", c->body.len, &req, &e))
        return send_error(conn, &e, NULL);
    if (req.model && strcmp(req.model, fe->model)) {
        fe_fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model `%.200s` does not exist.",
                req.model);
        fe_tokenize_request_free(&req);
        return send_error(conn, &e, NULL);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    kv_err err;
    if (kv_tokenizer_encode(fe->tok, req.prompt, req.prompt_len, &ids, &n, &err)) {
        fe_fail(&e, 400, "invalid_request_error", "prompt", "", "cannot tokenize the prompt: %s", err.msg);
        fe_tokenize_request_free(&req);
        return send_error(conn, &e, NULL);
    }
    int bos = req.add_special_tokens && fe->bos_id >= 0; /* as the router tokenizes a prompt */
    kv_textbuf b;
    kv_textbuf_init(&b);
    kv_textbuf_printf(&b, "{\"count\":%zu,\"max_model_len\":%u,\"tokens\":[", n + (size_t)bos, fe->max_model_len);
    if (bos)
        kv_textbuf_printf(&b, "%d%s", fe->bos_id, n ? "," : "");
    for (size_t i = 0; i < n; i++)
        kv_textbuf_printf(&b, i ? ",%d" : "%d", ids[i]);
    kv_textbuf_puts(&b, "],\"token_strs\":null}");
    free(ids);
    fe_tokenize_request_free(&req);
    return send_json(conn, 200, &b);
}

static enum MHD_Result do_detokenize(frontend *fe, fe_conn *c, struct MHD_Connection *conn)
{
    fe_error e;
    fe_detokenize_request req;
    if (fe_parse_detokenize(c->body.data ? c->body.data : "", c->body.len, &req, &e))
        return send_error(conn, &e, NULL);
    if (req.model && strcmp(req.model, fe->model)) {
        fe_fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model `%.200s` does not exist.",
                req.model);
        fe_detokenize_request_free(&req);
        return send_error(conn, &e, NULL);
    }
    int32_t n_ids = kv_tokenizer_n_ids(fe->tok);
    for (size_t i = 0; i < req.n_tokens; i++)
        if (req.tokens[i] >= n_ids) {
            fe_fail(&e, 400, "invalid_request_error", "tokens", "", "token id %d at position %zu is outside [0, %d)",
                    req.tokens[i], i, n_ids);
            fe_detokenize_request_free(&req);
            return send_error(conn, &e, NULL);
        }
    char *text = NULL;
    kv_err err;
    if (req.n_tokens && kv_tokenizer_decode(fe->tok, req.tokens, req.n_tokens, &text, &err)) {
        fe_fail(&e, 400, "invalid_request_error", "tokens", "", "cannot decode: %s", err.msg);
        fe_detokenize_request_free(&req);
        return send_error(conn, &e, NULL);
    }
    kv_textbuf b;
    kv_textbuf_init(&b);
    fe_render_detokenized(&b, text ? text : "", text ? strlen(text) : 0);
    free(text);
    fe_detokenize_request_free(&req);
    return send_json(conn, 200, &b);
}

static enum MHD_Result dispatch(frontend *fe, fe_conn *c, struct MHD_Connection *conn)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    switch (c->match.route) {
    case FE_ROUTE_CHAT:
    case FE_ROUTE_COMPLETIONS: return start_generate(fe, c, conn);
    case FE_ROUTE_TOKENIZE: return do_tokenize(fe, c, conn);
    case FE_ROUTE_DETOKENIZE: return do_detokenize(fe, c, conn);
    case FE_ROUTE_MODELS:
        fe_render_models(&b, fe->model, (long long)time(NULL), fe->max_model_len);
        return send_json(conn, 200, &b);
    case FE_ROUTE_HEALTH: {
        int status = fe_status_health(fe, &b);
        return send_json(conn, status, &b);
    }
    case FE_ROUTE_METRICS: {
        fe_status_metrics(fe, &b);
        if (kv_textbuf_failed(&b))
            return send_json(conn, 500, &b);
        enum MHD_Result r = send_body(conn, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "",
                                      b.len, NULL);
        kv_textbuf_free(&b);
        return r;
    }
    default: break;
    }
    fe_error e;
    fe_fail(&e, 404, "not_found_error", "", "", "no route");
    return send_error(conn, &e, NULL);
}

/* First call of a request: route, method, auth and declared size, answered before any body. */
static int refuse_early(frontend *fe, fe_conn *c, struct MHD_Connection *conn, const char *method, const char *url,
                        fe_error *e)
{
    if (c->match.route == FE_ROUTE_NONE)
        return fe_fail(e, 404, "not_found_error", "", "", "no route %.16s %.200s", method, url);
    if (fe->cfg.keys.n && fe_route_needs_auth(c->match.route, fe->cfg.metrics_auth) &&
        !fe_keys_check(&fe->cfg.keys, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
        return fe_fail(e, 401, "invalid_request_error", "", "invalid_api_key",
                       "Incorrect or missing API key: send the header 'Authorization: Bearer KEY'.");
    if (!c->match.method_ok)
        return fe_fail(e, 405, "invalid_request_error", "", "method_not_allowed", "%.200s takes %s, not %.16s", url,
                       c->match.allow, method);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t len;
    if (cl && fe_http_content_length(cl, &len))
        return fe_fail(e, 400, "invalid_request_error", "", "", "malformed Content-Length");
    if (cl && len > fe->cfg.max_body_bytes)
        return fe_fail(e, 413, "invalid_request_error", "", "request_too_large",
                       "the body of %llu bytes is larger than the limit of %zu bytes", (unsigned long long)len,
                       fe->cfg.max_body_bytes);
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    frontend *fe = cls;
    fe_conn *c = *con_cls;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        kv_textbuf_init(&c->body);
        c->match = fe_http_route(method, url);
        *con_cls = c;
        fe_error e;
        if (refuse_early(fe, c, conn, method, url, &e)) {
            c->responded = 1; /* whatever body follows is dropped */
            return send_error(conn, &e, e.status == 405 ? c->match.allow : NULL);
        }
        return MHD_YES;
    }
    if (c->responded) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->s)
        return continue_generate(fe, c->s, conn);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (!c->too_big && c->body.len + n <= fe->cfg.max_body_bytes)
            kv_textbuf_append(&c->body, upload_data, n);
        else
            c->too_big = 1;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->too_big) {
        fe_error e;
        fe_fail(&e, 413, "invalid_request_error", "", "request_too_large", "the body is larger than the limit of %zu bytes",
                fe->cfg.max_body_bytes);
        return send_error(conn, &e, NULL);
    }
    if (kv_textbuf_failed(&c->body)) {
        fe_error e;
        fe_fail(&e, 500, "internal_server_error", "", "", "out of memory");
        return send_error(conn, &e, NULL);
    }
    return dispatch(fe, c, conn);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    frontend *fe = cls;
    fe_conn *c = *con_cls;
    if (!c)
        return;
    if (c->s) {
        pthread_mutex_lock(&fe->lock);
        c->s->client_gone = 1;
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !c->s->router_done)
            KV_INFO("frontend", "event=client_gone id=%s reason=%d", c->s->id, (int)toe);
        fe_stream_unref(c->s);
        pthread_mutex_unlock(&fe->lock);
        fe_pump_wake(fe);
    }
    kv_textbuf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\r\n")] = '\0';
    KV_WARN("frontend", "event=http_library msg=\"%s\"", msg);
}

int fe_server_start(frontend *fe, kv_err *err)
{
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)fe->cfg.port);
    if (inet_pton(AF_INET, fe->cfg.host, &addr.sin_addr) != 1)
        return kv_err_set(err, KV_EINVAL, "--host %s is not an IPv4 address", fe->cfg.host);
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    fe->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, fe,
                               MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first: it covers the rest */
                               MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                               MHD_OPTION_THREAD_POOL_SIZE, (unsigned)fe->cfg.threads,
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, fe,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
                               MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)HTTP_BACKLOG,
                               MHD_OPTION_END);
    if (!fe->mhd)
        return kv_err_set(err, KV_EIO, "cannot listen on %s:%d (in use, or not an address of this host?)", fe->cfg.host,
                          fe->cfg.port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(fe->mhd, MHD_DAEMON_INFO_BIND_PORT);
    fe->port = di ? di->port : fe->cfg.port;
    return KV_OK;
}

void fe_server_stop(frontend *fe)
{
    /* Suspended connections must be resumed to be closed: they end as hang-ups. */
    pthread_mutex_lock(&fe->lock);
    for (fe_stream *s = fe->streams; s; s = s->next) {
        s->hangup = 1;
        fe_stream_resume(s);
    }
    pthread_mutex_unlock(&fe->lock);
    MHD_stop_daemon(fe->mhd);
    fe->mhd = NULL;
}
