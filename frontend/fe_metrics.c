/* The Prometheus exposition of the router's metrics (fe_metrics.h). */
#include "fe_metrics.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A label value: backslash, double quote and newline escaped (exposition format). */
static void label(kv_textbuf *b, const char *s)
{
    kv_textbuf_puts(b, "\"");
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            kv_textbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            kv_textbuf_puts(b, "\\n");
        else
            kv_textbuf_append(b, s, 1);
    }
    kv_textbuf_puts(b, "\"");
}

static void family(kv_textbuf *b, const char *name, const char *type, const char *help)
{
    kv_textbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Up to two labels after model_name (a NULL key: none). */
typedef struct labels {
    const char *k1, *v1, *k2, *v2;
} labels;

static void series(kv_textbuf *b, const char *name, const char *suffix, const char *model, labels l)
{
    kv_textbuf_printf(b, "%s%s{model_name=", name, suffix);
    label(b, model);
    if (l.k1) {
        kv_textbuf_printf(b, ",%s=", l.k1);
        label(b, l.v1);
    }
    if (l.k2) {
        kv_textbuf_printf(b, ",%s=", l.k2);
        label(b, l.v2);
    }
}

static void sample(kv_textbuf *b, const char *name, const char *model, labels l, double v)
{
    series(b, name, "", model, l);
    kv_textbuf_printf(b, "} %.17g\n", isfinite(v) ? v : 0.0);
}

static void sample_u64(kv_textbuf *b, const char *name, const char *model, labels l, uint64_t v)
{
    series(b, name, "", model, l);
    kv_textbuf_printf(b, "} %llu\n", (unsigned long long)v);
}

/* A bucket bound as Prometheus' own clients write it ("0.5", "1.0", "2560.0"). */
static void bound_text(double v, char *buf, size_t cap)
{
    /* the fewest decimals that read back as v (bounds are finite, no exponent) */
    for (int prec = 0; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*f", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (!strchr(buf, '.'))
        snprintf(buf + strlen(buf), cap - strlen(buf), ".0");
}

/* One histogram's series (the family header is the caller's). */
static void histogram(kv_textbuf *b, const char *name, const char *model, labels l, const kv_status_histogram *h)
{
    uint64_t cum = 0;
    char le[40];
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        if (i < h->n_bounds)
            bound_text(h->bounds[i], le, sizeof le);
        else
            snprintf(le, sizeof le, "+Inf");
        series(b, name, "_bucket", model, l);
        kv_textbuf_printf(b, ",le=\"%s\"} %llu\n", le, (unsigned long long)cum);
    }
    series(b, name, "_count", model, l);
    kv_textbuf_printf(b, "} %llu\n", (unsigned long long)h->count);
    series(b, name, "_sum", model, l);
    kv_textbuf_printf(b, "} %.17g\n", isfinite(h->sum) ? h->sum : 0.0);
}

static const labels none = {0};

static void worker_gauges(kv_textbuf *b, const char *model, const kv_status *st)
{
    static const struct {
        const char *name, *help;
    } fams[] = {
        {"kvserve:kv_cache_usage_perc", "KV cache usage of each worker's block pool (1 = full), from its heartbeat."},
        {"kvserve:worker_healthy", "1 while the router counts the worker healthy (heartbeats on time)."},
        {"kvserve:worker_num_requests_running", "Requests the worker is running, from its heartbeat."},
        {"kvserve:worker_num_requests_waiting", "Requests queued at the worker, from its heartbeat."},
    };
    for (size_t f = 0; f < sizeof fams / sizeof *fams; f++) {
        family(b, fams[f].name, "gauge", fams[f].help);
        for (size_t i = 0; i < st->n_workers; i++) {
            const kv_status_worker *w = &st->workers[i];
            labels l = {"worker", w->worker_id, "role", kv_client_role_name(w->role)};
            double v = f == 0   ? (w->kv_blocks_total ? (double)w->kv_blocks_used / w->kv_blocks_total : 0.0)
                       : f == 1 ? (double)w->healthy
                       : f == 2 ? (double)w->running
                                : (double)w->queued;
            sample(b, fams[f].name, model, l, v);
        }
    }
}

static void request_metrics(kv_textbuf *b, const char *model, const kv_status_metrics *m)
{
    family(b, "kvserve:num_requests_running", "gauge", "Requests past the router's queue (reserving .. decoding).");
    sample_u64(b, "kvserve:num_requests_running", model, none, m->num_requests_running);
    family(b, "kvserve:num_requests_waiting", "gauge", "Requests waiting in the router's queue.");
    sample_u64(b, "kvserve:num_requests_waiting", model, none, m->num_requests_waiting);
    family(b, "kvserve:prompt_tokens_total", "counter", "Prompt tokens of requests that got a first token.");
    sample_u64(b, "kvserve:prompt_tokens_total", model, none, m->prompt_tokens);
    family(b, "kvserve:generation_tokens_total", "counter", "Generated tokens delivered to clients.");
    sample_u64(b, "kvserve:generation_tokens_total", model, none, m->generation_tokens);
    family(b, "kvserve:request_success_total", "counter", "Accepted requests that ended, by finished_reason.");
    const char *reasons[] = {"stop", "length", "abort", "error"};
    const uint64_t counts[] = {m->finished_stop, m->finished_length, m->finished_abort, m->finished_error};
    for (int i = 0; i < 4; i++)
        sample_u64(b, "kvserve:request_success_total", model, (labels){"finished_reason", reasons[i], 0, 0}, counts[i]);
    family(b, "kvserve:request_failure_total", "counter",
           "Requests ended by an error, refused ones included, by error code (codes seen so far).");
    for (int code = 0; code <= KV_STATUS_MAX_ERROR_CODE; code++)
        if (m->failures[code])
            sample_u64(b, "kvserve:request_failure_total", model,
                       (labels){"code", kv_client_error_name(code), 0, 0}, m->failures[code]);
    static const struct {
        const char *name, *help;
        size_t off;
    } hists[] = {
        {"kvserve:time_to_first_token_seconds", "Time to first token: accepted by the router -> first token.",
         offsetof(kv_status_metrics, ttft)},
        {"kvserve:inter_token_latency_seconds", "Time between consecutive tokens of a request.",
         offsetof(kv_status_metrics, itl)},
        {"kvserve:e2e_request_latency_seconds", "Request latency: accepted -> finished.",
         offsetof(kv_status_metrics, e2e)},
        {"kvserve:request_queue_time_seconds", "Time in the router's queue: accepted -> dispatched to a prefill worker.",
         offsetof(kv_status_metrics, queue)},
        {"kvserve:request_prefill_time_seconds", "Prefill phase: dispatched -> first token (KV hand-off included).",
         offsetof(kv_status_metrics, prefill)},
        {"kvserve:request_decode_time_seconds", "Decode phase: first token -> last token.",
         offsetof(kv_status_metrics, decode)},
    };
    for (size_t i = 0; i < sizeof hists / sizeof *hists; i++) {
        family(b, hists[i].name, "histogram", hists[i].help);
        histogram(b, hists[i].name, model, none, (const kv_status_histogram *)((const char *)m + hists[i].off));
    }
    family(b, "kvserve:kv_transfer_seconds", "histogram",
           "KV hand-off time, prefill worker -> decode worker, by transport (first chunk sent -> acknowledged).");
    for (size_t i = 0; i < m->n_transfers; i++)
        histogram(b, "kvserve:kv_transfer_seconds", model, (labels){"transport", m->transfers[i].transport, 0, 0},
                  &m->transfers[i].seconds);
    family(b, "kvserve:kv_transfer_bytes_total", "counter", "KV bytes moved prefill -> decode, by transport.");
    for (size_t i = 0; i < m->n_transfers; i++)
        sample_u64(b, "kvserve:kv_transfer_bytes_total", model, (labels){"transport", m->transfers[i].transport, 0, 0},
                   m->transfers[i].bytes);
    /* vLLM's prefix_cache_queries / prefix_cache_hits (in tokens), per side of the transfer. */
    family(b, "kvserve:prefix_cache_queries_total", "counter",
           "Prompt tokens looked up in the workers' prefix caches, by side (prefill, decode).");
    family(b, "kvserve:prefix_cache_hits_total", "counter", "Of those, tokens found (not computed / not shipped).");
    const char *sides[] = {"prefill", "decode"};
    const uint64_t q[] = {m->prefix_query_tokens_prefill, m->prefix_query_tokens_decode};
    const uint64_t h[] = {m->prefix_hit_tokens_prefill, m->prefix_hit_tokens_decode};
    for (int i = 0; i < 2; i++) {
        sample_u64(b, "kvserve:prefix_cache_queries_total", model, (labels){"side", sides[i], 0, 0}, q[i]);
        sample_u64(b, "kvserve:prefix_cache_hits_total", model, (labels){"side", sides[i], 0, 0}, h[i]);
    }
    family(b, "kvserve:prefill_tokens_computed_total", "counter",
           "Prompt tokens prefilled (by prefill workers, or by decode workers for a short uncached tail).");
    sample_u64(b, "kvserve:prefill_tokens_computed_total", model, none, m->prefill_tokens_computed);
    family(b, "kvserve:kv_bytes_saved_total", "counter",
           "KV bytes not shipped because the decode worker already held those blocks.");
    sample_u64(b, "kvserve:kv_bytes_saved_total", model, none, m->kv_bytes_saved);
}

void fe_metrics_render(kv_textbuf *b, const char *model, const kv_status *st)
{
    family(b, "kvserve:router_up", "gauge", "1 when the router answered the frontend's last status request.");
    sample(b, "kvserve:router_up", model, none, st ? 1 : 0);
    if (!st)
        return;
    family(b, "kvserve:requests_replanned_total", "counter",
           "Requests run again after a worker died or a KV hand-off failed.");
    sample_u64(b, "kvserve:requests_replanned_total", model, none, st->requests_replanned);
    worker_gauges(b, model, st);
    if (st->metrics.present)
        request_metrics(b, model, &st->metrics);
}
