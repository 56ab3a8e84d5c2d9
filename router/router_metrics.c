/* Cluster-wide metrics (router_metrics.h). Bucket bounds are vLLM's (v1 loggers.py), so
 * dashboards made for vLLM read them the same way. */
#include "router_metrics.h"

#include <math.h>
#include <string.h>

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                     1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3,  0.4, 0.5,
                                    0.75, 1.0,   2.5,  5.0,   7.5,  10.0, 20.0, 40.0, 80.0};
static const double request_bounds[] = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
                                        30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
/* vLLM has no KV hand-off histogram: a hand-off takes from well under a millisecond (cuda-ipc)
 * to seconds (long prompts over the network). */
static const double transfer_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};

#define N_OF(a) (sizeof(a) / sizeof *(a))

_Static_assert(N_OF(ttft_bounds) <= ROUTER_HIST_MAX_BOUNDS && N_OF(request_bounds) <= ROUTER_HIST_MAX_BOUNDS &&
                   N_OF(itl_bounds) <= ROUTER_HIST_MAX_BOUNDS && N_OF(transfer_bounds) <= ROUTER_HIST_MAX_BOUNDS,
               "a histogram has more bounds than router_histogram holds");

static void hist_init(router_histogram *h, const double *bounds, size_t n)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n;
}

static void hist_observe(router_histogram *h, double v)
{
    if (!(v >= 0) || !isfinite(v))
        return;
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
}

void router_metrics_init(router_metrics *m)
{
    memset(m, 0, sizeof *m);
    hist_init(&m->ttft, ttft_bounds, N_OF(ttft_bounds));
    hist_init(&m->itl, itl_bounds, N_OF(itl_bounds));
    hist_init(&m->e2e, request_bounds, N_OF(request_bounds));
    hist_init(&m->queue, request_bounds, N_OF(request_bounds));
    hist_init(&m->prefill, request_bounds, N_OF(request_bounds));
    hist_init(&m->decode, request_bounds, N_OF(request_bounds));
    for (int t = 0; t < KV_TRANSPORT_COUNT; t++)
        hist_init(&m->kv_seconds[t], transfer_bounds, N_OF(transfer_bounds));
}

void router_metrics_delivered(router_metrics *m, size_t n, int first, double now, double accepted_at,
                              double last_at, uint32_t prompt_tokens)
{
    if (!n)
        return;
    m->generation_tokens += n;
    if (first) {
        m->prompt_tokens += prompt_tokens;
        hist_observe(&m->ttft, now - accepted_at);
        /* Tokens that came with the first one came at the same moment. */
        for (size_t i = 1; i < n; i++)
            hist_observe(&m->itl, 0.0);
        return;
    }
    double gap = now > last_at ? (now - last_at) / (double)n : 0.0;
    for (size_t i = 0; i < n; i++)
        hist_observe(&m->itl, gap);
}

void router_metrics_transfer(router_metrics *m, int transport, uint64_t bytes, double seconds)
{
    if (transport < 0 || transport >= KV_TRANSPORT_COUNT || !(seconds >= 0) || !isfinite(seconds))
        return;
    m->kv_bytes[transport] += bytes;
    hist_observe(&m->kv_seconds[transport], seconds);
}

static void count_failure(router_metrics *m, int code)
{
    m->failures[code >= 0 && code <= ROUTER_MAX_ERROR_CODE ? code : KVSERVE__ERROR_CODE__INTERNAL]++;
}

void router_metrics_finished(router_metrics *m, router_end_kind kind, int code, double e2e_s, double queue_s,
                             double prefill_s, double decode_s)
{
    if ((unsigned)kind >= ROUTER_END_N)
        kind = ROUTER_END_ERROR;
    m->finished[kind]++;
    if (kind == ROUTER_END_ERROR) {
        count_failure(m, code);
        return;
    }
    hist_observe(&m->e2e, e2e_s);
    hist_observe(&m->queue, queue_s);
    hist_observe(&m->prefill, prefill_s);
    hist_observe(&m->decode, decode_s);
}

void router_metrics_refused(router_metrics *m, int code) { count_failure(m, code); }

void router_metrics_prefix(router_metrics *m, int decode_side, uint64_t query_tokens, uint64_t hit_tokens,
                           uint64_t bytes_saved)
{
    m->prefix_query[decode_side ? 1 : 0] += query_tokens;
    m->prefix_hit[decode_side ? 1 : 0] += hit_tokens;
    m->kv_bytes_saved += bytes_saved;
}

void router_metrics_prefill_computed(router_metrics *m, uint64_t tokens) { m->prefill_computed += tokens; }

static Kvserve__Histogram *hist_pb(router_histogram *h, Kvserve__Histogram *out, double *bounds)
{
    kvserve__histogram__init(out);
    memcpy(bounds, h->bounds, h->n_bounds * sizeof *bounds);
    out->n_bounds = h->n_bounds;
    out->bounds = bounds;
    out->n_counts = h->n_bounds + 1;
    out->counts = h->counts;
    out->sum = h->sum;
    return out;
}

Kvserve__ClusterMetrics *router_metrics_to_pb(router_metrics *m, uint32_t running, uint32_t waiting,
                                              router_metrics_pb *pb)
{
    Kvserve__ClusterMetrics *c = &pb->msg;
    kvserve__cluster_metrics__init(c);
    c->num_requests_running = running;
    c->num_requests_waiting = waiting;
    c->prompt_tokens = m->prompt_tokens;
    c->generation_tokens = m->generation_tokens;
    c->finished_stop = m->finished[ROUTER_END_STOP];
    c->finished_length = m->finished[ROUTER_END_LENGTH];
    c->finished_abort = m->finished[ROUTER_END_ABORT];
    c->finished_error = m->finished[ROUTER_END_ERROR];
    size_t ne = 0;
    for (int code = 0; code <= ROUTER_MAX_ERROR_CODE; code++)
        if (m->failures[code]) {
            kvserve__error_count__init(&pb->errors[ne]);
            pb->errors[ne].code = code;
            pb->errors[ne].count = m->failures[code];
            pb->error_ptr[ne] = &pb->errors[ne];
            ne++;
        }
    c->n_failures = ne;
    c->failures = pb->error_ptr;
    router_histogram *h[6] = {&m->ttft, &m->itl, &m->e2e, &m->queue, &m->prefill, &m->decode};
    Kvserve__Histogram **dst[6] = {&c->time_to_first_token, &c->inter_token_latency, &c->e2e_request_latency,
                                   &c->request_queue_time,  &c->request_prefill_time, &c->request_decode_time};
    for (int i = 0; i < 6; i++)
        *dst[i] = hist_pb(h[i], &pb->hist[i], pb->bounds[i]);
    for (int t = 0; t < KV_TRANSPORT_COUNT; t++) {
        Kvserve__KvTransferMetrics *x = &pb->transfer[t];
        kvserve__kv_transfer_metrics__init(x);
        x->transport = (char *)kv_transport_name((kv_transport)t);
        x->bytes = m->kv_bytes[t];
        x->seconds = hist_pb(&m->kv_seconds[t], &pb->hist[6 + t], pb->bounds[6 + t]);
        pb->transfer_ptr[t] = x;
    }
    c->n_kv_transfers = KV_TRANSPORT_COUNT;
    c->kv_transfers = pb->transfer_ptr;
    c->prefix_query_tokens_prefill = m->prefix_query[0];
    c->prefix_hit_tokens_prefill = m->prefix_hit[0];
    c->prefix_query_tokens_decode = m->prefix_query[1];
    c->prefix_hit_tokens_decode = m->prefix_hit[1];
    c->prefill_tokens_computed = m->prefill_computed;
    c->kv_bytes_saved = m->kv_bytes_saved;
    return c;
}
