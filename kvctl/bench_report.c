/* kvctl bench's report: latency percentiles, throughput, KV moved, and the prefix cache's
 * share of the work, from the requests' client-side clocks and their final Timings.
 *
 * Prefix-cache sums run over the requests that succeeded with Timings. A request's prompt
 * tokens are those the bench sent. Its cached tokens are those found on the side that
 * prefilled it: Timings.decode_cached_tokens when local_prefill (the decode worker computed
 * the uncached tail itself; no prefill worker took part), else
 * Timings.prefill_cached_tokens (the prefill worker computed the rest; what the decode
 * worker held only spared shipping, not computing). Both caches hold prefixes of the same
 * prompt, so their counts overlap and must never be subtracted together:
 *     tokens_computed = prompt - (local_prefill ? decode_cached : prefill_cached)
 * (cached clamped to the prompt), and tokens_computed + cached_tokens = prompt_tokens.
 * Hit rates: prefill side = sum prefill_cached / prompt tokens of the requests a prefill
 * worker took (not local_prefill: the router's prefix_query_tokens_prefill counts those);
 * decode side = sum decode_cached / every prompt token (every request reserves on a decode
 * worker). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "kv_textbuf.h"

typedef struct pct { double p50, p90, p99, mean; int n; } pct;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, int n, double p)
{
    if (n <= 0)
        return 0;
    double pos = p / 100.0 * (n - 1);
    int lo = (int)pos;
    if (lo >= n - 1)
        return sorted[n - 1];
    return sorted[lo] + (sorted[lo + 1] - sorted[lo]) * (pos - lo);
}

static pct summarize(double *v, int n)
{
    pct p = {0};
    p.n = n;
    if (!n)
        return p;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    p.p50 = percentile(v, n, 50);
    p.p90 = percentile(v, n, 90);
    p.p99 = percentile(v, n, 99);
    p.mean = sum / n;
    return p;
}

enum { LAT_TTFT, LAT_TPOT, LAT_E2E };

/* The latency of one request, or a negative value when it has none. */
static double latency_ms(const bench_req *r, int which)
{
    if (r->state != BR_OK)
        return -1;
    switch (which) {
    case LAT_TTFT: return r->n_tokens ? (r->t_first - r->t_submit) * 1e3 : -1;
    case LAT_TPOT: return r->n_tokens > 1 ? (r->t_last - r->t_first) * 1e3 / (r->n_tokens - 1) : -1;
    default: return (r->t_end - r->t_submit) * 1e3;
    }
}

/* Percentiles of one latency over requests first, first + stride, ... < end. */
static pct latency(const bench_req *reqs, long first, long end, long stride, int which, double *scratch)
{
    int n = 0;
    for (long i = first; i < end; i += stride) {
        double v = latency_ms(&reqs[i], which);
        if (v >= 0)
            scratch[n++] = v;
    }
    return summarize(scratch, n);
}

/* Prefix-cache sums over a set of requests (see the header comment). */
typedef struct cache_sums {
    long requests; /* succeeded with Timings */
    unsigned long long prompt, prefill_cached, decode_cached, cached, computed, prefill_query, kv_bytes, kv_saved;
    unsigned long long new_tokens, local_prefills;
} cache_sums;

static void add_request(cache_sums *s, const bench_req *r)
{
    if (r->state != BR_OK || !r->has_timings)
        return;
    unsigned long long prompt = (unsigned long long)r->prompt_tokens;
    unsigned long long cached = r->tm.local_prefill ? r->tm.decode_cached_tokens : r->tm.prefill_cached_tokens;
    if (cached > prompt)
        cached = prompt;
    s->requests++;
    s->prompt += prompt;
    s->prefill_cached += r->tm.prefill_cached_tokens;
    s->decode_cached += r->tm.decode_cached_tokens;
    s->cached += cached;
    s->computed += prompt - cached;
    s->prefill_query += r->tm.local_prefill ? 0 : prompt;
    s->local_prefills += r->tm.local_prefill != 0;
    s->kv_bytes += r->tm.kv_bytes;
    s->kv_saved += r->tm.kv_bytes_saved;
    s->new_tokens += (unsigned long long)r->new_tokens;
}

static double ratio(unsigned long long a, unsigned long long b) { return b ? (double)a / (double)b : 0; }

/* The run's own totals, and the router's counters over the run (after - before). */
typedef struct totals {
    long ok, failed, skipped;
    unsigned long long out_tokens, kv_bytes;
    double xfer_ms;
    int n_xfer;
    int err_count[KVC_ERR_TIMEOUT + 1];
    cache_sums cache;
} totals;

static totals count(const bench_cfg *b, const bench_req *reqs)
{
    totals t;
    memset(&t, 0, sizeof t);
    for (long i = 0; i < b->requests; i++) {
        const bench_req *r = &reqs[i];
        t.ok += r->state == BR_OK;
        t.failed += r->state == BR_FAILED || r->state == BR_SKIPPED;
        t.skipped += r->state == BR_SKIPPED;
        if (r->state == BR_OK)
            t.out_tokens += r->n_tokens;
        if (r->has_timings) { /* as the first kvctl bench: failed requests' KV moved too */
            t.kv_bytes += r->tm.kv_bytes;
            t.xfer_ms += r->tm.transfer_ms;
            t.n_xfer++;
        }
        if (r->state == BR_FAILED && r->error_code >= 0 && r->error_code <= KVC_ERR_TIMEOUT)
            t.err_count[r->error_code]++;
        add_request(&t.cache, r);
    }
    return t;
}

typedef struct cluster_delta {
    unsigned long long pq, ph, dq, dh, computed, saved, kv_bytes, prompt;
} cluster_delta;

static unsigned long long transfer_bytes(const kv_status_metrics *m)
{
    unsigned long long s = 0;
    for (size_t i = 0; i < m->n_transfers; i++)
        s += m->transfers[i].bytes;
    return s;
}

static cluster_delta delta(const bench_cluster *c)
{
    const kv_status_metrics *a = &c->before, *z = &c->after;
    cluster_delta d = {
        z->prefix_query_tokens_prefill - a->prefix_query_tokens_prefill,
        z->prefix_hit_tokens_prefill - a->prefix_hit_tokens_prefill,
        z->prefix_query_tokens_decode - a->prefix_query_tokens_decode,
        z->prefix_hit_tokens_decode - a->prefix_hit_tokens_decode,
        z->prefill_tokens_computed - a->prefill_tokens_computed,
        z->kv_bytes_saved - a->kv_bytes_saved,
        transfer_bytes(z) - transfer_bytes(a),
        z->prompt_tokens - a->prompt_tokens,
    };
    return d;
}

static void json_pct(kv_textbuf *o, const char *name, pct p)
{
    kv_textbuf_printf(o, "\"%s\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"mean\":%.3f},", name, p.p50, p.p90, p.p99,
                      p.mean);
}

static void json_cache(kv_textbuf *o, const cache_sums *s)
{
    kv_textbuf_printf(o,
                      "\"prompt_tokens\":%llu,\"prefill_cached_tokens\":%llu,\"decode_cached_tokens\":%llu,"
                      "\"cached_tokens\":%llu,\"tokens_computed\":%llu,\"local_prefills\":%llu,"
                      "\"prefill_query_tokens\":%llu,\"kv_bytes_saved\":%llu,\"prefill_hit_rate\":%.4f,"
                      "\"decode_hit_rate\":%.4f",
                      s->prompt, s->prefill_cached, s->decode_cached, s->cached, s->computed, s->local_prefills,
                      s->prefill_query, s->kv_saved, ratio(s->prefill_cached, s->prefill_query),
                      ratio(s->decode_cached, s->prompt));
}

/* Per turn index, over conversations: what a turn costs as the history grows. */
static void json_turns(kv_textbuf *o, const bench_cfg *b, const bench_req *reqs, double *scratch)
{
    kv_textbuf_puts(o, ",\"per_turn\":[");
    for (long t = 0; t < b->turns; t++) {
        cache_sums s = {0};
        for (long i = t; i < b->requests; i += b->turns)
            add_request(&s, &reqs[i]);
        double n = s.requests ? (double)s.requests : 1;
        pct ttft = latency(reqs, t, b->requests, b->turns, LAT_TTFT, scratch);
        kv_textbuf_printf(o,
                          "%s{\"turn\":%ld,\"requests\":%ld,\"prompt_tokens_mean\":%.2f,\"new_tokens_mean\":%.2f,"
                          "\"tokens_computed_mean\":%.2f,\"kv_bytes_mean\":%.1f,\"kv_bytes_saved_mean\":%.1f,"
                          "\"kv_bytes_per_new_token\":%.1f,\"ttft_ms_p50\":%.3f}",
                          t ? "," : "", t, s.requests, (double)s.prompt / n, (double)s.new_tokens / n,
                          (double)s.computed / n, (double)s.kv_bytes / n, (double)s.kv_saved / n,
                          ratio(s.kv_bytes, s.new_tokens), ttft.p50);
    }
    kv_textbuf_puts(o, "]");
}

static void json_cluster(kv_textbuf *o, const bench_cluster *c)
{
    cluster_delta d = delta(c);
    kv_textbuf_printf(o,
                      ",\"cluster\":{\"prompt_tokens\":%llu,\"prefix_query_tokens_prefill\":%llu,"
                      "\"prefix_hit_tokens_prefill\":%llu,\"prefix_query_tokens_decode\":%llu,"
                      "\"prefix_hit_tokens_decode\":%llu,\"prefill_tokens_computed\":%llu,\"kv_bytes_saved\":%llu,"
                      "\"kv_bytes\":%llu}",
                      d.prompt, d.pq, d.ph, d.dq, d.dh, d.computed, d.saved, d.kv_bytes);
}

static int print_json(const bench_cfg *b, const bench_req *reqs, double duration, const bench_cluster *cl,
                      const totals *t, const pct lat[3], double *scratch)
{
    double tok_s = duration > 0 ? t->out_tokens / duration : 0, req_s = duration > 0 ? t->ok / duration : 0;
    double gbs = t->xfer_ms > 0 ? t->kv_bytes / (t->xfer_ms * 1e-3) / 1e9 : 0;
    kv_textbuf o;
    kv_textbuf_init(&o);
    kv_textbuf_printf(&o,
                      "{\"requests\":%ld,\"ok\":%ld,\"failed\":%ld,\"concurrency\":%ld,\"rate\":%.3f,"
                      "\"prompt_len\":%ld,\"max_tokens\":%ld,\"duration_s\":%.3f,",
                      b->requests, t->ok, t->failed, b->concurrency > 0 ? b->concurrency : 0, b->rate, b->prompt_len,
                      b->max_tokens, duration);
    json_pct(&o, "ttft_ms", lat[LAT_TTFT]);
    json_pct(&o, "tpot_ms", lat[LAT_TPOT]);
    json_pct(&o, "e2e_ms", lat[LAT_E2E]);
    kv_textbuf_printf(&o,
                      "\"output_tokens\":%llu,\"output_tok_s\":%.3f,\"requests_per_s\":%.3f,\"kv_bytes\":%llu,"
                      "\"kv_transfer_ms_total\":%.3f,\"kv_transfer_ms_mean\":%.3f,\"kv_gb_s\":%.6f,\"errors\":{",
                      t->out_tokens, tok_s, req_s, t->kv_bytes, t->xfer_ms, t->n_xfer ? t->xfer_ms / t->n_xfer : 0,
                      gbs);
    int first = 1;
    for (int e = 0; e <= KVC_ERR_TIMEOUT; e++)
        if (t->err_count[e]) {
            kv_textbuf_puts(&o, first ? "" : ",");
            const char *name = kv_client_error_name(e);
            kv_textbuf_json_string(&o, name, strlen(name));
            kv_textbuf_printf(&o, ":%d", t->err_count[e]);
            first = 0;
        }
    kv_textbuf_puts(&o, "},\"workload\":");
    kv_textbuf_json_string(&o, bench_workload_name(b->workload), strlen(bench_workload_name(b->workload)));
    kv_textbuf_printf(&o, ",\"prefix_len\":%ld,\"conversations\":%ld,\"turns\":%ld,\"skipped\":%ld,",
                      b->prefix_len, b->workload == BENCH_MULTI_TURN ? b->units : 0, b->turns, t->skipped);
    json_cache(&o, &t->cache);
    if (b->workload == BENCH_MULTI_TURN)
        json_turns(&o, b, reqs, scratch);
    if (cl && cl->present)
        json_cluster(&o, cl);
    kv_textbuf_puts(&o, "}\n");
    int rc = kv_textbuf_failed(&o) ? -1 : 0;
    if (!rc)
        fputs(o.data, stdout);
    kv_textbuf_free(&o);
    return rc;
}

static void print_cache_text(const bench_cfg *b, const bench_req *reqs, const cache_sums *s, double *scratch)
{
    printf("prompts:      %llu tokens: %llu computed, %llu cached (%llu requests prefilled on the decode worker)\n",
           s->prompt, s->computed, s->cached, s->local_prefills);
    printf("prefix cache: prefill side %llu of %llu tokens (%.1f %%), decode side %llu of %llu (%.1f %%); "
           "%llu KV bytes not shipped\n",
           s->prefill_cached, s->prefill_query, 100 * ratio(s->prefill_cached, s->prefill_query), s->decode_cached,
           s->prompt, 100 * ratio(s->decode_cached, s->prompt), s->kv_saved);
    if (b->workload != BENCH_MULTI_TURN)
        return;
    printf("per turn (mean over conversations):\n");
    printf("%6s %6s %9s %8s %9s %12s %12s %10s %10s\n", "turn", "ok", "prompt", "new", "computed", "kv_bytes",
           "bytes/new", "saved", "ttft_p50");
    for (long t = 0; t < b->turns; t++) {
        cache_sums ts = {0};
        for (long i = t; i < b->requests; i += b->turns)
            add_request(&ts, &reqs[i]);
        double n = ts.requests ? (double)ts.requests : 1;
        pct ttft = latency(reqs, t, b->requests, b->turns, LAT_TTFT, scratch);
        printf("%6ld %6ld %9.1f %8.1f %9.1f %12.0f %12.1f %10.0f %10.2f\n", t, ts.requests, (double)ts.prompt / n,
               (double)ts.new_tokens / n, (double)ts.computed / n, (double)ts.kv_bytes / n,
               ratio(ts.kv_bytes, ts.new_tokens), (double)ts.kv_saved / n, ttft.p50);
    }
}

static void print_cluster_text(const bench_cluster *c, const totals *t)
{
    cluster_delta d = delta(c);
    const cache_sums *s = &t->cache;
    printf("router counters over the run (they match the bench's when it was the only traffic):\n");
    printf("  %-34s %14s %14s\n", "", "bench", "router");
    printf("  %-34s %14llu %14llu\n", "prompt tokens", s->prompt, d.prompt);
    printf("  %-34s %14llu %14llu\n", "prefill-side tokens looked up", s->prefill_query, d.pq);
    printf("  %-34s %14llu %14llu\n", "prefill-side hits (tokens)", s->prefill_cached, d.ph);
    printf("  %-34s %14llu %14llu\n", "decode-side tokens looked up", s->prompt, d.dq);
    printf("  %-34s %14llu %14llu\n", "decode-side hits (tokens)", s->decode_cached, d.dh);
    printf("  %-34s %14llu %14llu\n", "prefill tokens computed", s->computed, d.computed);
    printf("  %-34s %14llu %14llu\n", "KV bytes shipped", t->kv_bytes, d.kv_bytes);
    printf("  %-34s %14llu %14llu\n", "KV bytes not shipped", s->kv_saved, d.saved);
}

int bench_report(const bench_cfg *b, const bench_req *reqs, double duration, const bench_cluster *cl)
{
    double *scratch = malloc((size_t)b->requests * sizeof *scratch);
    if (!scratch)
        return -1;
    totals t = count(b, reqs);
    pct lat[3];
    for (int w = LAT_TTFT; w <= LAT_E2E; w++)
        lat[w] = latency(reqs, 0, b->requests, 1, w, scratch);
    if (b->json) {
        int rc = print_json(b, reqs, duration, cl, &t, lat, scratch);
        free(scratch);
        return rc;
    }
    double tok_s = duration > 0 ? t.out_tokens / duration : 0, req_s = duration > 0 ? t.ok / duration : 0;
    double gbs = t.xfer_ms > 0 ? t.kv_bytes / (t.xfer_ms * 1e-3) / 1e9 : 0;
    char what[160];
    if (b->workload == BENCH_MULTI_TURN)
        snprintf(what, sizeof what, "%ld conversations x %ld turns (system prompt %ld tokens, messages %ld)", b->units,
                 b->turns, b->prefix_len, b->prompt_len);
    else if (b->workload == BENCH_SHARED_PREFIX)
        snprintf(what, sizeof what, "%ld requests, shared prefix %ld tokens + %ld", b->requests, b->prefix_len,
                 b->prompt_len);
    else
        snprintf(what, sizeof what, "%ld requests", b->requests);
    if (b->concurrency > 0)
        printf("kvctl bench: %s, concurrency %ld, prompt %ld tokens, %ld new tokens each, router %s\n", what,
               b->concurrency, b->prompt_len, b->max_tokens, b->router);
    else
        printf("kvctl bench: %s, Poisson rate %.2f/s, prompt %ld tokens, %ld new tokens each, router %s\n", what,
               b->rate, b->prompt_len, b->max_tokens, b->router);
    printf("requests:     %ld ok, %ld failed in %.3f s\n", t.ok, t.failed, duration);
    printf("%-12s %10s %10s %10s %10s\n", "", "p50", "p90", "p99", "mean");
    printf("%-12s %10.2f %10.2f %10.2f %10.2f\n", "ttft_ms", lat[0].p50, lat[0].p90, lat[0].p99, lat[0].mean);
    printf("%-12s %10.3f %10.3f %10.3f %10.3f\n", "tpot_ms", lat[1].p50, lat[1].p90, lat[1].p99, lat[1].mean);
    printf("%-12s %10.2f %10.2f %10.2f %10.2f\n", "e2e_ms", lat[2].p50, lat[2].p90, lat[2].p99, lat[2].mean);
    printf("throughput:   %.1f output tok/s, %.2f requests/s (%llu output tokens)\n", tok_s, req_s, t.out_tokens);
    printf("kv transfer:  %llu bytes moved, %.2f ms total, %.3f ms mean per request, %.3f GB/s\n", t.kv_bytes,
           t.xfer_ms, t.n_xfer ? t.xfer_ms / t.n_xfer : 0, gbs);
    for (int e = 0; e <= KVC_ERR_TIMEOUT; e++)
        if (t.err_count[e])
            printf("errors:       %s x %d\n", kv_client_error_name(e), t.err_count[e]);
    if (t.skipped)
        printf("skipped:      %ld turns after a failed turn of their conversation\n", t.skipped);
    print_cache_text(b, reqs, &t.cache, scratch);
    if (cl && cl->present)
        print_cluster_text(cl, &t);
    free(scratch);
    return 0;
}
