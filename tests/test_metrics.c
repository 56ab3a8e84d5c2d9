/* Metrics without processes, every hop of the real code: the router's bookkeeping
 * (router_metrics) -> its StatusReply bytes -> libkvclient's kv_status -> kv-frontend's
 * /metrics exposition (fe_metrics), each number checked against what the requests were;
 * and the Grafana dashboard (deploy/grafana) against that exposition: every kvserve: name
 * its queries use must be one that /metrics exposes. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe_metrics.h"
#include "json.h"
#include "kv_client_internal.h"
#include "kv_file.h"
#include "kv_test.h"
#include "router_metrics.h"

static int near(double a, double b) { return fabs(a - b) <= 1e-9 * (1 + fabs(b)); }

static uint64_t hist_count(const router_histogram *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->n_bounds; i++)
        n += h->counts[i];
    return n;
}

/* Four accepted requests, two refused, three hand-offs (one of them garbage from a worker). */
static void scenario(router_metrics *m)
{
    router_metrics_init(m);
    /* A: 7 prompt tokens, accepted at 10.0; tokens 1 + 2 + 1; EOS. */
    router_metrics_delivered(m, 1, 1, 10.05, 10.0, 0, 7);
    router_metrics_delivered(m, 2, 0, 10.25, 10.0, 10.05, 7);
    router_metrics_delivered(m, 1, 0, 10.30, 10.0, 10.25, 7);
    router_metrics_finished(m, ROUTER_END_STOP, 0, 0.31, 0.01, 0.04, 0.25);
    /* B: 4 prompt tokens, its first three tokens in one run; max_tokens. */
    router_metrics_delivered(m, 3, 1, 11.5, 11.0, 0, 4);
    router_metrics_finished(m, ROUTER_END_LENGTH, 0, 0.6, 0.2, 0.3, 0.0);
    /* C: cancelled in the queue (no token), D: deadline. */
    router_metrics_finished(m, ROUTER_END_ABORT, 0, 2.0, 2.0, -1, -1);
    router_metrics_finished(m, ROUTER_END_ERROR, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, 5, 1, -1, -1);
    router_metrics_refused(m, KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
    router_metrics_refused(m, KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
    router_metrics_transfer(m, KV_TRANSPORT_ZMQ, 4096, 0.002);
    router_metrics_transfer(m, KV_TRANSPORT_CUDA_IPC, 1 << 20, 0.0003);
    router_metrics_transfer(m, 9, 77, 0.1);                      /* no such transport */
    router_metrics_transfer(m, KV_TRANSPORT_NCCL, 55, NAN);      /* not a time */
    router_metrics_transfer(m, KV_TRANSPORT_NCCL, 55, -1);       /* nor this */
}

static void test_router_counts(void)
{
    router_metrics m;
    scenario(&m);
    CHECK_EQ_INT(m.generation_tokens, 7);
    CHECK_EQ_INT(m.prompt_tokens, 11);
    CHECK_EQ_INT(hist_count(&m.ttft), 2);
    CHECK(near(m.ttft.sum, 0.05 + 0.5));
    CHECK_EQ_INT(m.ttft.counts[5], 1); /* 0.05 in (0.04, 0.06] */
    CHECK_EQ_INT(m.ttft.counts[9], 1); /* 0.5 in (0.25, 0.5]: le is inclusive */
    /* n tokens give n - 1 gaps: 7 tokens of 2 requests */
    CHECK_EQ_INT(hist_count(&m.itl), 5);
    CHECK(near(m.itl.sum, 0.25)); /* A's first -> last token; B's came at once */
    CHECK_EQ_INT(m.finished[ROUTER_END_STOP], 1);
    CHECK_EQ_INT(m.finished[ROUTER_END_LENGTH], 1);
    CHECK_EQ_INT(m.finished[ROUTER_END_ABORT], 1);
    CHECK_EQ_INT(m.finished[ROUTER_END_ERROR], 1);
    CHECK_EQ_INT(m.failures[KVSERVE__ERROR_CODE__PROMPT_TOO_LONG], 2);
    CHECK_EQ_INT(m.failures[KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED], 1);
    CHECK_EQ_INT(hist_count(&m.e2e), 3);
    CHECK_EQ_INT(hist_count(&m.queue), 3);
    CHECK_EQ_INT(hist_count(&m.prefill), 2);
    CHECK_EQ_INT(hist_count(&m.decode), 2);
    CHECK(near(m.e2e.sum, 0.31 + 0.6 + 2.0));
    CHECK_EQ_INT(m.kv_bytes[KV_TRANSPORT_ZMQ], 4096);
    CHECK_EQ_INT(m.kv_bytes[KV_TRANSPORT_CUDA_IPC], 1 << 20);
    CHECK_EQ_INT(m.kv_bytes[KV_TRANSPORT_NCCL], 0);
    CHECK_EQ_INT(hist_count(&m.kv_seconds[KV_TRANSPORT_ZMQ]), 1);
    CHECK_EQ_INT(hist_count(&m.kv_seconds[KV_TRANSPORT_NCCL]), 0);
    router_metrics_finished(&m, ROUTER_END_ERROR, 999, 1, 1, 1, 1); /* a code outside the enum */
    CHECK_EQ_INT(m.failures[KVSERVE__ERROR_CODE__INTERNAL], 1);
}

/* The router's StatusReply as bytes, back through libkvclient. */
static kv_status *round_trip(router_metrics *m, uint32_t running, uint32_t waiting, const kv_status_worker *w)
{
    router_metrics_pb *pb = malloc(sizeof *pb);
    Kvserve__StatusReply rep;
    kvserve__status_reply__init(&rep);
    Kvserve__WorkerStatus ws, *wp = &ws;
    kvserve__worker_status__init(&ws);
    ws.worker_id = w->worker_id;
    ws.role = w->role;
    ws.healthy = w->healthy;
    ws.running = w->running;
    ws.queued = w->queued;
    ws.kv_blocks_used = w->kv_blocks_used;
    ws.kv_blocks_total = w->kv_blocks_total;
    rep.model = "m";
    rep.n_workers = 1;
    rep.workers = &wp;
    rep.requests_replanned = 3;
    rep.metrics = router_metrics_to_pb(m, running, waiting, pb);
    size_t len = kvserve__status_reply__get_packed_size(&rep);
    uint8_t *buf = malloc(len);
    kvserve__status_reply__pack(&rep, buf);
    free(pb);
    Kvserve__StatusReply *back = kvserve__status_reply__unpack(NULL, len, buf);
    free(buf);
    kv_status *st = NULL;
    CHECK(back && kvc_status_from_proto(back, &st) == KVC_OK);
    kvserve__status_reply__free_unpacked(back, NULL);
    return st;
}

static void check_hist(const kv_status_histogram *c, const router_histogram *r, const char *what)
{
    int same = c->n_bounds == r->n_bounds && near(c->sum, r->sum) && c->count == hist_count(r);
    for (size_t i = 0; same && i < r->n_bounds; i++)
        same = c->bounds[i] == r->bounds[i] && c->counts[i] == r->counts[i];
    same = same && c->counts[r->n_bounds] == r->counts[r->n_bounds];
    CHECK_MSG(same, "%s differs after the round trip", what);
}

static const kv_status_worker worker = {.worker_id = "decode-\"0\"", .role = KVC_ROLE_DECODE, .healthy = 1,
                                        .running = 2, .queued = 1, .kv_blocks_used = 1, .kv_blocks_total = 4};

static void test_round_trip(void)
{
    router_metrics m;
    scenario(&m);
    kv_status *st = round_trip(&m, 5, 6, &worker);
    if (!st)
        return;
    const kv_status_metrics *c = &st->metrics;
    CHECK(c->present);
    CHECK_EQ_INT(c->num_requests_running, 5);
    CHECK_EQ_INT(c->num_requests_waiting, 6);
    CHECK_EQ_INT(c->generation_tokens, 7);
    CHECK_EQ_INT(c->prompt_tokens, 11);
    CHECK_EQ_INT(c->finished_stop + 10 * c->finished_length + 100 * c->finished_abort + 1000 * c->finished_error, 1111);
    CHECK_EQ_INT(c->failures[KVC_ERR_PROMPT_TOO_LONG], 2);
    CHECK_EQ_INT(c->failures[KVC_ERR_DEADLINE_EXCEEDED], 1);
    check_hist(&c->ttft, &m.ttft, "ttft");
    check_hist(&c->itl, &m.itl, "itl");
    check_hist(&c->e2e, &m.e2e, "e2e");
    check_hist(&c->queue, &m.queue, "queue");
    check_hist(&c->prefill, &m.prefill, "prefill");
    check_hist(&c->decode, &m.decode, "decode");
    CHECK_EQ_INT(c->n_transfers, KV_TRANSPORT_COUNT);
    for (size_t t = 0; t < c->n_transfers && t < KV_TRANSPORT_COUNT; t++) {
        CHECK(!strcmp(c->transfers[t].transport, kv_transport_name((kv_transport)t)));
        CHECK_EQ_INT(c->transfers[t].bytes, m.kv_bytes[t]);
        check_hist(&c->transfers[t].seconds, &m.kv_seconds[t], "kv transfer");
    }
    char *js = kv_status_to_json(st);
    CHECK(js && strstr(js, "\"finished\":{\"stop\":1,\"length\":1,\"abort\":1,\"error\":1}") &&
          strstr(js, "\"failures\":{\"PROMPT_TOO_LONG\":2,\"DEADLINE_EXCEEDED\":1}") &&
          strstr(js, "{\"transport\":\"cuda-ipc\",\"bytes\":1048576,\"count\":1,"));
    free(js);
    kv_status_free(st);
}

static void test_malformed(void)
{
    double bounds[] = {1, 0.5};
    uint64_t counts[] = {1, 2, 3};
    Kvserve__Histogram h;
    kvserve__histogram__init(&h);
    h.n_bounds = 2;
    h.bounds = bounds;
    h.n_counts = 3;
    h.counts = counts;
    Kvserve__ClusterMetrics cm;
    kvserve__cluster_metrics__init(&cm);
    cm.inter_token_latency = &h;
    Kvserve__StatusReply rep;
    kvserve__status_reply__init(&rep);
    rep.metrics = &cm;
    kv_status *st = NULL;
    CHECK_EQ_INT(kvc_status_from_proto(&rep, &st), KVC_EPROTO); /* bounds decrease */
    bounds[1] = 2;
    h.n_counts = 2;
    CHECK_EQ_INT(kvc_status_from_proto(&rep, &st), KVC_EPROTO); /* a count short */
    h.n_counts = 3;
    CHECK_EQ_INT(kvc_status_from_proto(&rep, &st), KVC_OK);
    if (st) {
        CHECK_EQ_INT(st->metrics.itl.count, 6);
        kv_status_free(st);
    }
}

static void test_quantile(void)
{
    kv_status_histogram h = {.n_bounds = 3, .bounds = {1, 2, 4}, .counts = {0, 10, 0, 0}, .count = 10};
    CHECK(near(kv_status_histogram_quantile(&h, 0.5), 1.5));
    CHECK(near(kv_status_histogram_quantile(&h, 1.0), 2.0));
    h.counts[1] = 0;
    h.counts[3] = 10;
    CHECK(near(kv_status_histogram_quantile(&h, 0.5), 4.0)); /* above every bound: the highest */
    h.count = 0;
    h.counts[3] = 0;
    CHECK(isnan(kv_status_histogram_quantile(&h, 0.5)));
}

/* The sample line of a series, exactly. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

/* Every line a comment or "name{labels} value"; a histogram's buckets cumulative. */
static void check_exposition_shape(const char *text)
{
    int bad = 0;
    double last_cum = 0;
    char series[1024] = "";
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        if (!e) {
            bad++;
            break;
        }
        char line[1024];
        size_t n = (size_t)(e - p) < sizeof line - 1 ? (size_t)(e - p) : sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        p = e + 1;
        if (line[0] == '#')
            continue;
        char *brace = strchr(line, '{'), *close = strrchr(line, '}');
        if (!brace || !close || close[1] != ' ' || strncmp(line, "kvserve:", 8)) {
            bad++;
            continue;
        }
        char *end;
        double v = strtod(close + 2, &end);
        if (*end || !isfinite(v) || v < 0)
            bad++;
        char *le = strstr(line, ",le=\"");
        if (strstr(line, "_bucket{") && le) {
            *le = '\0'; /* the series without its le */
            if (strcmp(series, line))
                last_cum = 0;
            if (v < last_cum)
                bad++;
            last_cum = v;
            snprintf(series, sizeof series, "%s", line);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static char *render(const kv_status *st)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    fe_metrics_render(&b, "m", st);
    return b.data;
}

static void test_exposition(void)
{
    router_metrics m;
    scenario(&m);
    kv_status *st = round_trip(&m, 5, 6, &worker);
    if (!st)
        return;
    char *text = render(st);
    const char *want[] = {
        "kvserve:router_up{model_name=\"m\"} 1",
        "kvserve:num_requests_running{model_name=\"m\"} 5",
        "kvserve:num_requests_waiting{model_name=\"m\"} 6",
        "kvserve:requests_replanned_total{model_name=\"m\"} 3",
        "kvserve:kv_cache_usage_perc{model_name=\"m\",worker=\"decode-\\\"0\\\"\",role=\"decode\"} 0.25",
        "kvserve:worker_healthy{model_name=\"m\",worker=\"decode-\\\"0\\\"\",role=\"decode\"} 1",
        "kvserve:worker_num_requests_running{model_name=\"m\",worker=\"decode-\\\"0\\\"\",role=\"decode\"} 2",
        "kvserve:worker_num_requests_waiting{model_name=\"m\",worker=\"decode-\\\"0\\\"\",role=\"decode\"} 1",
        "kvserve:prompt_tokens_total{model_name=\"m\"} 11",
        "kvserve:generation_tokens_total{model_name=\"m\"} 7",
        "kvserve:request_success_total{model_name=\"m\",finished_reason=\"stop\"} 1",
        "kvserve:request_success_total{model_name=\"m\",finished_reason=\"length\"} 1",
        "kvserve:request_success_total{model_name=\"m\",finished_reason=\"abort\"} 1",
        "kvserve:request_success_total{model_name=\"m\",finished_reason=\"error\"} 1",
        "kvserve:request_failure_total{model_name=\"m\",code=\"PROMPT_TOO_LONG\"} 2",
        "kvserve:request_failure_total{model_name=\"m\",code=\"DEADLINE_EXCEEDED\"} 1",
        "kvserve:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.04\"} 0",
        "kvserve:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.06\"} 1",
        "kvserve:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.5\"} 2",
        "kvserve:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"2560.0\"} 2",
        "kvserve:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 2",
        "kvserve:time_to_first_token_seconds_count{model_name=\"m\"} 2",
        "kvserve:inter_token_latency_seconds_bucket{model_name=\"m\",le=\"0.01\"} 2",
        "kvserve:inter_token_latency_seconds_count{model_name=\"m\"} 5",
        "kvserve:e2e_request_latency_seconds_bucket{model_name=\"m\",le=\"1.0\"} 2",
        "kvserve:e2e_request_latency_seconds_count{model_name=\"m\"} 3",
        "kvserve:request_queue_time_seconds_count{model_name=\"m\"} 3",
        "kvserve:request_prefill_time_seconds_count{model_name=\"m\"} 2",
        "kvserve:request_decode_time_seconds_count{model_name=\"m\"} 2",
        "kvserve:kv_transfer_seconds_bucket{model_name=\"m\",transport=\"zmq\",le=\"0.0025\"} 1",
        "kvserve:kv_transfer_seconds_count{model_name=\"m\",transport=\"cuda-ipc\"} 1",
        "kvserve:kv_transfer_seconds_count{model_name=\"m\",transport=\"nccl\"} 0",
        "kvserve:kv_transfer_bytes_total{model_name=\"m\",transport=\"zmq\"} 4096",
        "kvserve:kv_transfer_bytes_total{model_name=\"m\",transport=\"cuda-ipc\"} 1048576",
        "kvserve:kv_transfer_bytes_total{model_name=\"m\",transport=\"nccl\"} 0",
        "# TYPE kvserve:request_decode_time_seconds histogram",
        "# TYPE kvserve:kv_transfer_bytes_total counter",
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECK_MSG(text && has_line(text, want[i]), "no line %s", want[i]);
    if (text)
        check_exposition_shape(text);
    free(text);
    kv_status_free(st);
    /* The router silent: only that is said. */
    text = render(NULL);
    CHECK(text && !strcmp(strstr(text, "kvserve:router_up{"), "kvserve:router_up{model_name=\"m\"} 0\n") &&
          !strstr(text, "_total"));
    free(text);
}

/* ---- the dashboard ------------------------------------------------------------------------ */

typedef struct dash_check {
    const char *exposition;
    int names, unknown, exprs, empty_exprs;
} dash_check;

/* Whether /metrics has a sample line of this name. */
static int exposed(const char *text, const char *name, size_t n)
{
    for (const char *p = text; (p = strstr(p, name)); p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '{' || p[n] == ' '))
            return 1;
    return 0;
}

static void check_names_in(dash_check *c, const char *s, size_t len)
{
    for (size_t i = 0; i + 8 <= len; i++) {
        if (memcmp(s + i, "kvserve:", 8) || (i && (s[i - 1] == '_' || isalnum((unsigned char)s[i - 1]))))
            continue;
        size_t j = i + 8;
        while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '_' || s[j] == ':'))
            j++;
        char name[128];
        size_t n = j - i < sizeof name - 1 ? j - i : sizeof name - 1;
        memcpy(name, s + i, n);
        name[n] = '\0';
        c->names++;
        if (!exposed(c->exposition, name, n)) {
            c->unknown++;
            fprintf(stderr, "dashboard: %s is not a series /metrics exposes\n", name);
        }
        i = j;
    }
}

static void walk(dash_check *c, const json_value *v, const char *key)
{
    switch (v->type) {
    case JSON_STRING:
        check_names_in(c, v->u.str.s, v->u.str.len);
        if (key && !strcmp(key, "expr")) {
            c->exprs++;
            c->empty_exprs += v->u.str.len == 0;
        }
        break;
    case JSON_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            walk(c, &v->u.arr.items[i], NULL);
        break;
    case JSON_OBJECT:
        for (size_t i = 0; i < v->u.obj.n; i++)
            walk(c, &v->u.obj.members[i].value, v->u.obj.members[i].key);
        break;
    default:
        break;
    }
}

static void test_dashboard(void)
{
    router_metrics m;
    scenario(&m);
    kv_status *st = round_trip(&m, 1, 0, &worker);
    char *text = st ? render(st) : NULL;
    kv_status_free(st);
    char *json = NULL;
    size_t len = 0;
    kv_err err;
    const char *path = KV_SOURCE_DIR "/deploy/grafana/kvserve-dashboard.json";
    if (kv_file_read_all(path, &json, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        free(text);
        return;
    }
    json_doc *doc = json_parse(json, len, &err);
    CHECK_MSG(doc, "%s: %s", path, err.msg);
    if (doc && text) {
        const json_value *panels = json_get(json_root(doc), "panels");
        CHECK(panels && panels->type == JSON_ARRAY && panels->u.arr.n >= 10);
        dash_check c = {.exposition = text};
        walk(&c, json_root(doc), NULL);
        fprintf(stderr, "dashboard: %d exprs, %d kvserve: names, %d unknown\n", c.exprs, c.names, c.unknown);
        CHECK(c.exprs >= 20 && c.empty_exprs == 0 && c.names >= c.exprs);
        CHECK_EQ_INT(c.unknown, 0);
        /* the checker itself: a name /metrics lacks is caught */
        dash_check bad = {.exposition = text};
        check_names_in(&bad, "rate(kvserve:no_such_metric_total[5m]) + kvserve:generation_tokens_total", 75);
        CHECK(bad.names == 2 && bad.unknown == 1);
    }
    json_doc_free(doc);
    free(json);
    free(text);
}

int main(void)
{
    test_router_counts();
    test_round_trip();
    test_malformed();
    test_quantile();
    test_exposition();
    test_dashboard();
    return kv_test_result();
}
