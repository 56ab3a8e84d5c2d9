/* Status: the StatusReply as plain C structs, and its stable JSON rendering. */
#include "kv_client_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s, int *oom)
{
    char *d = strdup(s ? s : "");
    if (!d)
        *oom = 1;
    return d;
}

/* A histogram from the router, checked: bounds finite and strictly increasing, one count
 * per bucket plus the one above them all. */
static int hist_from_proto(const Kvserve__Histogram *p, kv_status_histogram *h)
{
    memset(h, 0, sizeof *h);
    if (!p)
        return KVC_OK; /* an empty histogram */
    if (p->n_bounds > KV_STATUS_HIST_MAX_BOUNDS || p->n_counts != p->n_bounds + 1 || !isfinite(p->sum))
        return KVC_EPROTO;
    for (size_t i = 0; i < p->n_bounds; i++) {
        if (!isfinite(p->bounds[i]) || (i && !(p->bounds[i] > p->bounds[i - 1])))
            return KVC_EPROTO;
        h->bounds[i] = p->bounds[i];
    }
    h->n_bounds = p->n_bounds;
    for (size_t i = 0; i < p->n_counts; i++) {
        if (p->counts[i] > UINT64_MAX - h->count)
            return KVC_EPROTO;
        h->counts[i] = p->counts[i];
        h->count += p->counts[i];
    }
    h->sum = p->sum;
    return KVC_OK;
}

static int metrics_from_proto(const Kvserve__ClusterMetrics *p, kv_status_metrics *m)
{
    memset(m, 0, sizeof *m);
    if (!p)
        return KVC_OK;
    m->present = 1;
    m->num_requests_running = p->num_requests_running;
    m->num_requests_waiting = p->num_requests_waiting;
    m->prompt_tokens = p->prompt_tokens;
    m->generation_tokens = p->generation_tokens;
    m->finished_stop = p->finished_stop;
    m->finished_length = p->finished_length;
    m->finished_abort = p->finished_abort;
    m->finished_error = p->finished_error;
    for (size_t i = 0; i < p->n_failures; i++) {
        int code = (int)p->failures[i]->code;
        if (code < 0 || code > KV_STATUS_MAX_ERROR_CODE)
            code = KVC_ERR_INTERNAL;
        m->failures[code] += p->failures[i]->count;
    }
    const Kvserve__Histogram *src[6] = {p->time_to_first_token, p->inter_token_latency, p->e2e_request_latency,
                                        p->request_queue_time,  p->request_prefill_time, p->request_decode_time};
    kv_status_histogram *dst[6] = {&m->ttft, &m->itl, &m->e2e, &m->queue, &m->prefill, &m->decode};
    for (int i = 0; i < 6; i++)
        if (hist_from_proto(src[i], dst[i]))
            return KVC_EPROTO;
    if (p->n_kv_transfers > KV_STATUS_MAX_TRANSPORTS)
        return KVC_EPROTO;
    for (size_t i = 0; i < p->n_kv_transfers; i++) {
        const Kvserve__KvTransferMetrics *x = p->kv_transfers[i];
        kv_status_transfer *t = &m->transfers[i];
        if (!x->transport || strlen(x->transport) >= sizeof t->transport)
            return KVC_EPROTO;
        snprintf(t->transport, sizeof t->transport, "%s", x->transport);
        t->bytes = x->bytes;
        if (hist_from_proto(x->seconds, &t->seconds))
            return KVC_EPROTO;
    }
    m->n_transfers = p->n_kv_transfers;
    m->prefix_query_tokens_prefill = p->prefix_query_tokens_prefill;
    m->prefix_hit_tokens_prefill = p->prefix_hit_tokens_prefill;
    m->prefix_query_tokens_decode = p->prefix_query_tokens_decode;
    m->prefix_hit_tokens_decode = p->prefix_hit_tokens_decode;
    m->prefill_tokens_computed = p->prefill_tokens_computed;
    m->kv_bytes_saved = p->kv_bytes_saved;
    return KVC_OK;
}

double kv_status_histogram_quantile(const kv_status_histogram *h, double q)
{
    if (!h || !h->count || !(q >= 0 && q <= 1))
        return NAN;
    double rank = q * (double)h->count;
    uint64_t below = 0;
    for (size_t i = 0; i < h->n_bounds; i++) {
        if ((double)(below + h->counts[i]) >= rank && h->counts[i]) {
            double lo = i ? h->bounds[i - 1] : (h->bounds[0] > 0 ? 0 : h->bounds[0]);
            return lo + (h->bounds[i] - lo) * ((rank - (double)below) / (double)h->counts[i]);
        }
        below += h->counts[i];
    }
    return h->n_bounds ? h->bounds[h->n_bounds - 1] : NAN;
}

int kvc_status_from_proto(const Kvserve__StatusReply *p, kv_status **out)
{
    int oom = 0;
    kv_status *s = calloc(1, sizeof *s);
    if (!s)
        return KVC_ENOMEM;
    s->model = dup_str(p->model, &oom);
    s->requests_total = p->requests_total;
    s->requests_failed = p->requests_failed;
    s->requests_replanned = p->requests_replanned;
    s->uptime_s = p->uptime_s;
    if (p->n_workers) {
        s->workers = calloc(p->n_workers, sizeof *s->workers);
        if (!s->workers)
            oom = 1;
        else
            s->n_workers = p->n_workers;
    }
    for (size_t i = 0; i < s->n_workers; i++) {
        const Kvserve__WorkerStatus *w = p->workers[i];
        kv_status_worker *o = &s->workers[i];
        o->worker_id = dup_str(w->worker_id, &oom);
        o->role = (int)w->role;
        o->address = dup_str(w->address, &oom);
        o->device = dup_str(w->device, &oom);
        o->kv_transports = dup_str(w->kv_transports, &oom);
        o->weights = dup_str(w->weights, &oom);
        o->healthy = w->healthy != 0;
        o->last_heartbeat_ms_ago = w->last_heartbeat_ms_ago;
        o->running = w->running;
        o->queued = w->queued;
        o->kv_blocks_used = w->kv_blocks_used;
        o->kv_blocks_free = w->kv_blocks_free;
        o->kv_blocks_total = w->kv_blocks_total;
        o->kv_blocks_cached = w->kv_blocks_cached;
        o->prefix_query_tokens = w->prefix_query_tokens;
        o->prefix_hit_tokens = w->prefix_hit_tokens;
    }
    if (p->n_requests) {
        s->requests = calloc(p->n_requests, sizeof *s->requests);
        if (!s->requests)
            oom = 1;
        else
            s->n_requests = p->n_requests;
    }
    for (size_t i = 0; i < s->n_requests; i++) {
        const Kvserve__RequestStatus *r = p->requests[i];
        kv_status_request *o = &s->requests[i];
        o->request_id = dup_str(r->request_id, &oom);
        o->state = dup_str(r->state, &oom);
        o->prefill_worker = dup_str(r->prefill_worker, &oom);
        o->decode_worker = dup_str(r->decode_worker, &oom);
        if (r->n_block_ids) {
            o->block_ids = malloc(r->n_block_ids * sizeof *o->block_ids);
            if (!o->block_ids) {
                oom = 1;
            } else {
                memcpy(o->block_ids, r->block_ids, r->n_block_ids * sizeof *o->block_ids);
                o->n_block_ids = r->n_block_ids;
            }
        }
        o->generated_tokens = r->generated_tokens;
        o->age_ms = r->age_ms;
    }
    if (oom) {
        kv_status_free(s);
        return KVC_ENOMEM;
    }
    if (metrics_from_proto(p->metrics, &s->metrics)) {
        kv_status_free(s);
        return KVC_EPROTO;
    }
    *out = s;
    return KVC_OK;
}

void kv_status_free(kv_status *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_workers; i++) {
        free(s->workers[i].worker_id);
        free(s->workers[i].address);
        free(s->workers[i].device);
        free(s->workers[i].kv_transports);
        free(s->workers[i].weights);
    }
    for (size_t i = 0; i < s->n_requests; i++) {
        free(s->requests[i].request_id);
        free(s->requests[i].state);
        free(s->requests[i].prefill_worker);
        free(s->requests[i].decode_worker);
        free(s->requests[i].block_ids);
    }
    free(s->workers);
    free(s->requests);
    free(s->model);
    free(s);
}

/* ---- JSON ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t n)
{
    if (b->oom || b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return;
    }
    b->s = s;
    b->cap = cap;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_reserve(b, (size_t)n);
    if (b->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_printf(b, "\\%c", *p);
        else if (*p == '\n')
            sb_printf(b, "\\n");
        else if (*p == '\t')
            sb_printf(b, "\\t");
        else if (*p == '\r')
            sb_printf(b, "\\r");
        else if (*p < 0x20)
            sb_printf(b, "\\u%04x", *p);
        else
            sb_printf(b, "%c", *p);
    }
    sb_printf(b, "\"");
}

static double finite_or_zero(double v) { return isfinite(v) ? v : 0.0; }

/* A number, or null when it is not one (a quantile of an empty histogram). */
static void sb_num(sbuf *b, double v)
{
    if (isfinite(v))
        sb_printf(b, "%.6g", v);
    else
        sb_printf(b, "null");
}

static void hist_json(sbuf *b, const char *key, const kv_status_histogram *h)
{
    sb_printf(b, ",\"%s\":{\"count\":%llu,\"sum\":%.6f,\"p50\":", key, (unsigned long long)h->count,
              finite_or_zero(h->sum));
    sb_num(b, kv_status_histogram_quantile(h, 0.5));
    sb_printf(b, ",\"p99\":");
    sb_num(b, kv_status_histogram_quantile(h, 0.99));
    sb_printf(b, "}");
}

static void metrics_json(sbuf *b, const kv_status_metrics *m)
{
    sb_printf(b,
              ",\"metrics\":{\"num_requests_running\":%u,\"num_requests_waiting\":%u,\"prompt_tokens\":%llu,"
              "\"generation_tokens\":%llu,\"finished\":{\"stop\":%llu,\"length\":%llu,\"abort\":%llu,\"error\":%llu},"
              "\"failures\":{",
              m->num_requests_running, m->num_requests_waiting, (unsigned long long)m->prompt_tokens,
              (unsigned long long)m->generation_tokens, (unsigned long long)m->finished_stop,
              (unsigned long long)m->finished_length, (unsigned long long)m->finished_abort,
              (unsigned long long)m->finished_error);
    int first = 1;
    for (int code = 0; code <= KV_STATUS_MAX_ERROR_CODE; code++)
        if (m->failures[code]) {
            sb_printf(b, "%s", first ? "" : ",");
            sb_str(b, kv_client_error_name(code));
            sb_printf(b, ":%llu", (unsigned long long)m->failures[code]);
            first = 0;
        }
    sb_printf(b, "}");
    hist_json(b, "time_to_first_token_s", &m->ttft);
    hist_json(b, "inter_token_latency_s", &m->itl);
    hist_json(b, "e2e_request_latency_s", &m->e2e);
    hist_json(b, "request_queue_time_s", &m->queue);
    hist_json(b, "request_prefill_time_s", &m->prefill);
    hist_json(b, "request_decode_time_s", &m->decode);
    sb_printf(b, ",\"kv_transfers\":[");
    for (size_t i = 0; i < m->n_transfers; i++) {
        const kv_status_transfer *t = &m->transfers[i];
        sb_printf(b, "%s{\"transport\":", i ? "," : "");
        sb_str(b, t->transport);
        sb_printf(b, ",\"bytes\":%llu,\"count\":%llu,\"sum_s\":%.6f,\"p50_s\":", (unsigned long long)t->bytes,
                  (unsigned long long)t->seconds.count, finite_or_zero(t->seconds.sum));
        sb_num(b, kv_status_histogram_quantile(&t->seconds, 0.5));
        sb_printf(b, ",\"p99_s\":");
        sb_num(b, kv_status_histogram_quantile(&t->seconds, 0.99));
        sb_printf(b, "}");
    }
    sb_printf(b,
              "],\"prefix_cache\":{\"prefill\":{\"query_tokens\":%llu,\"hit_tokens\":%llu},"
              "\"decode\":{\"query_tokens\":%llu,\"hit_tokens\":%llu},\"prefill_tokens_computed\":%llu,"
              "\"kv_bytes_saved\":%llu}}",
              (unsigned long long)m->prefix_query_tokens_prefill, (unsigned long long)m->prefix_hit_tokens_prefill,
              (unsigned long long)m->prefix_query_tokens_decode, (unsigned long long)m->prefix_hit_tokens_decode,
              (unsigned long long)m->prefill_tokens_computed, (unsigned long long)m->kv_bytes_saved);
}

char *kv_status_to_json(const kv_status *s)
{
    sbuf b = {0};
    sb_printf(&b, "{\"model\":");
    sb_str(&b, s->model);
    sb_printf(&b, ",\"uptime_s\":%.3f,\"requests_total\":%llu,\"requests_failed\":%llu,\"requests_replanned\":%llu,"
              "\"workers\":[",
              finite_or_zero(s->uptime_s), (unsigned long long)s->requests_total,
              (unsigned long long)s->requests_failed, (unsigned long long)s->requests_replanned);
    for (size_t i = 0; i < s->n_workers; i++) {
        const kv_status_worker *w = &s->workers[i];
        sb_printf(&b, "%s{\"worker_id\":", i ? "," : "");
        sb_str(&b, w->worker_id);
        sb_printf(&b, ",\"role\":\"%s\",\"address\":", kv_client_role_name(w->role));
        sb_str(&b, w->address);
        sb_printf(&b, ",\"device\":");
        sb_str(&b, w->device);
        sb_printf(&b,
                  ",\"healthy\":%s,\"last_heartbeat_ms_ago\":%.3f,\"running\":%u,\"queued\":%u,"
                  "\"kv_blocks_used\":%u,\"kv_blocks_free\":%u,\"kv_blocks_total\":%u,\"kv_transports\":",
                  w->healthy ? "true" : "false", finite_or_zero(w->last_heartbeat_ms_ago), w->running, w->queued,
                  w->kv_blocks_used, w->kv_blocks_free, w->kv_blocks_total);
        sb_str(&b, w->kv_transports);
        sb_printf(&b, ",\"weights\":");
        sb_str(&b, w->weights);
        sb_printf(&b, ",\"kv_blocks_cached\":%u,\"prefix_query_tokens\":%llu,\"prefix_hit_tokens\":%llu}",
                  w->kv_blocks_cached, (unsigned long long)w->prefix_query_tokens,
                  (unsigned long long)w->prefix_hit_tokens);
    }
    sb_printf(&b, "],\"requests\":[");
    for (size_t i = 0; i < s->n_requests; i++) {
        const kv_status_request *r = &s->requests[i];
        sb_printf(&b, "%s{\"request_id\":", i ? "," : "");
        sb_str(&b, r->request_id);
        sb_printf(&b, ",\"state\":");
        sb_str(&b, r->state);
        sb_printf(&b, ",\"prefill_worker\":");
        sb_str(&b, r->prefill_worker);
        sb_printf(&b, ",\"decode_worker\":");
        sb_str(&b, r->decode_worker);
        sb_printf(&b, ",\"block_ids\":[");
        for (size_t j = 0; j < r->n_block_ids; j++)
            sb_printf(&b, "%s%d", j ? "," : "", (int)r->block_ids[j]);
        sb_printf(&b, "],\"generated_tokens\":%u,\"age_ms\":%.3f}", r->generated_tokens, finite_or_zero(r->age_ms));
    }
    sb_printf(&b, "]");
    if (s->metrics.present)
        metrics_json(&b, &s->metrics);
    sb_printf(&b, "}");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
