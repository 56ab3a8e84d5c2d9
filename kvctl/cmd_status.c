/* kvctl status: the router's view of the cluster — workers and requests in flight.
 *
 * --json prints kv_status_to_json's one-line object (schema documented in
 * client/kv_client.h; stable: keys are never renamed or removed, only added):
 *   {"model": str, "uptime_s": num, "requests_total": int, "requests_failed": int, "requests_replanned": int,
 *    "workers": [{"worker_id", "role": "prefill"|"decode"|"unspecified", "address",
 *                 "device", "healthy": bool, "last_heartbeat_ms_ago": num, "running",
 *                 "queued", "kv_blocks_used", "kv_blocks_free", "kv_blocks_total", "kv_transports", "weights",
 *                 "kv_blocks_cached", "prefix_query_tokens", "prefix_hit_tokens"}],
 *    "requests": [{"request_id", "state", "prefill_worker", "decode_worker",
 *                  "block_ids": [int], "generated_tokens", "age_ms": num}],
 *    "metrics": {...}}  (the router's counters and histograms: see kv_client.h) */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_client.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"

#define DEFAULT_ROUTER "tcp://127.0.0.1:7100"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl status [--router ADDR] [--key FILE] [--json] [--timeout-ms N] [--worker ID]\n"
            "Shows the router's workers (role, id, address, device, health, heartbeat age,\n"
            "running/queued, KV blocks), its requests in flight with their owners, and what it\n"
            "counted since it started (requests by finish, tokens, latency percentiles, KV moved\n"
            "by transport: the numbers kv-frontend's /metrics serves).\n"
            "  --router ADDR    the router's client endpoint (default " DEFAULT_ROUTER ")\n"
            "  --json           one line of JSON with a stable schema (for scripts)\n"
            "  --key FILE       the client key to connect with (kvctl keys gen; default\n"
            "                   $KVSERVE_CLIENT_KEY, else the one kvctl up wrote for this router)\n"
            "  --timeout-ms N   how long to wait for the router (default 3000)\n"
            "  --worker ID      only that worker's health: exit 0 when the router has it registered\n"
            "                   and healthy, else 1 (for probes: a router that does not answer\n"
            "                   within --timeout-ms exits 1 too)\n");
}

static int maxi(int a, int b) { return a > b ? a : b; }

static void format_blocks(const kv_status_request *r, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->n_block_ids && len + 16 < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%d", i ? "," : "", (int)r->block_ids[i]);
    if (r->n_block_ids && len + 16 >= cap)
        snprintf(buf + len, cap - len, ",...");
    if (!r->n_block_ids)
        snprintf(buf, cap, "-");
}

/* A latency in ms: the mean (q < 0, exact) or a quantile (estimated within vLLM's buckets,
 * coarse below 0.3 s for e2e and queue); "-" when the histogram is empty. */
static const char *ms(const kv_status_histogram *h, double q, char *buf, size_t cap)
{
    double v = q < 0 ? (h->count ? h->sum / (double)h->count : NAN) : kv_status_histogram_quantile(h, q);
    if (v != v)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.1f ms", v * 1e3);
    return buf;
}

static void print_metrics(const kv_status_metrics *m)
{
    if (!m->present)
        return;
    char a[32], b[32];
    printf("\nsince the router started\n");
    printf("  finished    %llu stop, %llu length, %llu abort, %llu error   (now %u running, %u waiting)\n",
           (unsigned long long)m->finished_stop, (unsigned long long)m->finished_length,
           (unsigned long long)m->finished_abort, (unsigned long long)m->finished_error, m->num_requests_running,
           m->num_requests_waiting);
    printf("  tokens      %llu prompt, %llu generated\n", (unsigned long long)m->prompt_tokens,
           (unsigned long long)m->generation_tokens);
    const struct {
        const char *name;
        const kv_status_histogram *h;
    } rows[] = {{"ttft", &m->ttft}, {"itl", &m->itl}, {"e2e", &m->e2e}, {"queue", &m->queue}};
    printf("  latency    ");
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        printf(" %s mean %s p99 %s%s", rows[i].name, ms(rows[i].h, -1, a, sizeof a), ms(rows[i].h, 0.99, b, sizeof b),
               i + 1 < sizeof rows / sizeof *rows ? "," : "\n");
    printf("  KV moved   ");
    for (size_t i = 0; i < m->n_transfers; i++) {
        const kv_status_transfer *t = &m->transfers[i];
        printf(" %s %.1f MiB in %llu (mean %s)%s", t->transport, (double)t->bytes / (1 << 20),
               (unsigned long long)t->seconds.count, ms(&t->seconds, -1, a, sizeof a),
               i + 1 < m->n_transfers ? "," : "");
    }
    printf("\n");
    const uint64_t q[2] = {m->prefix_query_tokens_prefill, m->prefix_query_tokens_decode};
    const uint64_t h[2] = {m->prefix_hit_tokens_prefill, m->prefix_hit_tokens_decode};
    printf("  prefix     prefill %llu of %llu tokens hit (%.1f %%), decode %llu of %llu (%.1f %%); %llu tokens "
           "computed, %.1f MiB not shipped\n",
           (unsigned long long)h[0], (unsigned long long)q[0], q[0] ? 100.0 * (double)h[0] / (double)q[0] : 0.0,
           (unsigned long long)h[1], (unsigned long long)q[1], q[1] ? 100.0 * (double)h[1] / (double)q[1] : 0.0,
           (unsigned long long)m->prefill_tokens_computed, (double)m->kv_bytes_saved / (1 << 20));
}

static void print_table(const kv_status *s)
{
    printf("model %s  uptime %.1f s  requests %llu total, %llu failed, %llu re-planned\n\n", s->model, s->uptime_s,
           (unsigned long long)s->requests_total, (unsigned long long)s->requests_failed,
           (unsigned long long)s->requests_replanned);
    int w_id = 2, w_addr = 7, w_dev = 6, w_xfer = 12, w_wt = 7;
    for (size_t i = 0; i < s->n_workers; i++) {
        w_id = maxi(w_id, (int)strlen(s->workers[i].worker_id));
        w_addr = maxi(w_addr, (int)strlen(s->workers[i].address));
        w_dev = maxi(w_dev, (int)strlen(s->workers[i].device));
        w_xfer = maxi(w_xfer, (int)strlen(s->workers[i].kv_transports));
        w_wt = maxi(w_wt, (int)strlen(s->workers[i].weights));
    }
    printf("workers (%zu)\n", s->n_workers);
    printf("%-8s %-*s %-*s %-*s %-*s %-*s %-9s %10s %11s %22s %8s %8s\n", "ROLE", w_id, "ID", w_addr, "ADDRESS", w_dev,
           "DEVICE", w_wt, "WEIGHTS", w_xfer, "KV TRANSPORT", "HEALTH", "HEARTBEAT", "RUN/QUEUE", "KV USED/FREE (TOTAL)",
           "CACHED", "HIT %");
    for (size_t i = 0; i < s->n_workers; i++) {
        const kv_status_worker *w = &s->workers[i];
        char hb[32], rq[32], kv[48];
        snprintf(hb, sizeof hb, "%.0f ms", w->last_heartbeat_ms_ago);
        snprintf(rq, sizeof rq, "%u/%u", w->running, w->queued);
        snprintf(kv, sizeof kv, "%u/%u (%u)", w->kv_blocks_used, w->kv_blocks_free, w->kv_blocks_total);
        char hit[16];
        if (w->prefix_query_tokens)
            snprintf(hit, sizeof hit, "%.1f", 100.0 * (double)w->prefix_hit_tokens / (double)w->prefix_query_tokens);
        else
            snprintf(hit, sizeof hit, "-");
        printf("%-8s %-*s %-*s %-*s %-*s %-*s %-9s %10s %11s %22s %8u %8s\n", kv_client_role_name(w->role), w_id,
               w->worker_id, w_addr, w->address, w_dev, w->device, w_wt, w->weights, w_xfer, w->kv_transports,
               w->healthy ? "healthy" : "UNHEALTHY", hb, rq, kv, w->kv_blocks_cached, hit);
    }
    int r_id = 2, r_state = 5, r_p = 7, r_d = 6;
    for (size_t i = 0; i < s->n_requests; i++) {
        const kv_status_request *r = &s->requests[i];
        r_id = maxi(r_id, (int)strlen(r->request_id));
        r_state = maxi(r_state, (int)strlen(r->state));
        r_p = maxi(r_p, (int)strlen(r->prefill_worker));
        r_d = maxi(r_d, (int)strlen(r->decode_worker));
    }
    print_metrics(&s->metrics);
    printf("\nrequests in flight (%zu)\n", s->n_requests);
    if (!s->n_requests)
        return;
    printf("%-*s %-*s %-*s %-*s %7s %10s  %s\n", r_id, "ID", r_state, "STATE", r_p, "PREFILL", r_d, "DECODE",
           "TOKENS", "AGE", "KV BLOCKS");
    for (size_t i = 0; i < s->n_requests; i++) {
        const kv_status_request *r = &s->requests[i];
        char age[32], blocks[256];
        snprintf(age, sizeof age, "%.0f ms", r->age_ms);
        format_blocks(r, blocks, sizeof blocks);
        printf("%-*s %-*s %-*s %-*s %7u %10s  %s\n", r_id, r->request_id, r_state, r->state, r_p,
               *r->prefill_worker ? r->prefill_worker : "-", r_d, *r->decode_worker ? r->decode_worker : "-",
               r->generated_tokens, age, blocks);
    }
}

/* --worker: one line on the worker's health; 0 when registered and healthy, else 1. */
static int worker_health(const kv_status *s, const char *id)
{
    for (size_t i = 0; i < s->n_workers; i++) {
        const kv_status_worker *w = &s->workers[i];
        if (strcmp(w->worker_id, id))
            continue;
        printf("%s %s %s, last heartbeat %.0f ms ago\n", kv_client_role_name(w->role), id,
               w->healthy ? "healthy" : "UNHEALTHY", w->last_heartbeat_ms_ago);
        return w->healthy ? 0 : 1;
    }
    fprintf(stderr, "kvctl: worker %s is not registered with the router\n", id);
    return 1;
}

int kvctl_cmd_status(int argc, char **argv)
{
    enum { O_ROUTER = 256, O_JSON, O_TIMEOUT, O_WORKER, O_KEY, O_HELP };
    static const struct option opts[] = {
        {"router", required_argument, 0, O_ROUTER}, {"json", no_argument, 0, O_JSON},
        {"timeout-ms", required_argument, 0, O_TIMEOUT}, {"worker", required_argument, 0, O_WORKER},
        {"key", required_argument, 0, O_KEY}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    const char *router = DEFAULT_ROUTER, *worker = NULL, *key_file = NULL;
    int json = 0;
    long timeout_ms = 3000;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case O_ROUTER: router = optarg; break;
        case O_JSON: json = 1; break;
        case O_WORKER: worker = optarg; break;
        case O_KEY: key_file = optarg; break;
        case O_TIMEOUT:
            if (kvctl_parse_int("--timeout-ms", optarg, 1, 3600000, &timeout_ms))
                return 2;
            break;
        case O_HELP: case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "kvctl status: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kvctl status: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    char errbuf[512];
    kv_client *cl;
    if (kv_client_connect_key(router, key_file, &cl, errbuf, sizeof errbuf)) {
        fprintf(stderr, "kvctl: %s\n", errbuf);
        return 1;
    }
    kv_status *st = NULL;
    if (kv_client_status(cl, (int)timeout_ms, &st)) {
        fprintf(stderr, "kvctl: %s\n", kv_client_last_error(cl));
        kv_client_close(cl);
        return 1;
    }
    kv_client_close(cl);
    int rc = 0;
    if (worker) {
        rc = worker_health(st, worker);
    } else if (json) {
        char *js = kv_status_to_json(st);
        if (js)
            printf("%s\n", js);
        else
            rc = 1;
        free(js);
    } else {
        print_table(st);
    }
    kv_status_free(st);
    return rc;
}
