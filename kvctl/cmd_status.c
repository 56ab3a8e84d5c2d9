/* kvctl status: the router's view of the cluster — workers and requests in flight.
 *
 * --json prints kv_status_to_json's one-line object (schema documented in
 * client/kv_client.h; stable: keys are never renamed or removed, only added):
 *   {"model": str, "uptime_s": num, "requests_total": int, "requests_failed": int, "requests_replanned": int,
 *    "workers": [{"worker_id", "role": "prefill"|"decode"|"unspecified", "address",
 *                 "device", "healthy": bool, "last_heartbeat_ms_ago": num, "running",
 *                 "queued", "kv_blocks_used", "kv_blocks_free", "kv_blocks_total", "kv_transports"}],
 *    "requests": [{"request_id", "state", "prefill_worker", "decode_worker",
 *                  "block_ids": [int], "generated_tokens", "age_ms": num}]} */
#include <getopt.h>
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
            "usage: kvctl status [--router ADDR] [--json] [--timeout-ms N]\n"
            "Shows the router's workers (role, id, address, device, health, heartbeat age,\n"
            "running/queued, KV blocks) and its requests in flight with their owners.\n"
            "  --router ADDR    the router's client endpoint (default " DEFAULT_ROUTER ")\n"
            "  --json           one line of JSON with a stable schema (for scripts)\n"
            "  --timeout-ms N   how long to wait for the router (default 3000)\n");
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

static void print_table(const kv_status *s)
{
    printf("model %s  uptime %.1f s  requests %llu total, %llu failed, %llu re-planned\n\n", s->model, s->uptime_s,
           (unsigned long long)s->requests_total, (unsigned long long)s->requests_failed,
           (unsigned long long)s->requests_replanned);
    int w_id = 2, w_addr = 7, w_dev = 6, w_xfer = 12;
    for (size_t i = 0; i < s->n_workers; i++) {
        w_id = maxi(w_id, (int)strlen(s->workers[i].worker_id));
        w_addr = maxi(w_addr, (int)strlen(s->workers[i].address));
        w_dev = maxi(w_dev, (int)strlen(s->workers[i].device));
        w_xfer = maxi(w_xfer, (int)strlen(s->workers[i].kv_transports));
    }
    printf("workers (%zu)\n", s->n_workers);
    printf("%-8s %-*s %-*s %-*s %-*s %-9s %10s %11s %22s\n", "ROLE", w_id, "ID", w_addr, "ADDRESS", w_dev, "DEVICE",
           w_xfer, "KV TRANSPORT", "HEALTH", "HEARTBEAT", "RUN/QUEUE", "KV USED/FREE (TOTAL)");
    for (size_t i = 0; i < s->n_workers; i++) {
        const kv_status_worker *w = &s->workers[i];
        char hb[32], rq[32], kv[48];
        snprintf(hb, sizeof hb, "%.0f ms", w->last_heartbeat_ms_ago);
        snprintf(rq, sizeof rq, "%u/%u", w->running, w->queued);
        snprintf(kv, sizeof kv, "%u/%u (%u)", w->kv_blocks_used, w->kv_blocks_free, w->kv_blocks_total);
        printf("%-8s %-*s %-*s %-*s %-*s %-9s %10s %11s %22s\n", kv_client_role_name(w->role), w_id, w->worker_id,
               w_addr, w->address, w_dev, w->device, w_xfer, w->kv_transports, w->healthy ? "healthy" : "UNHEALTHY", hb,
               rq, kv);
    }
    int r_id = 2, r_state = 5, r_p = 7, r_d = 6;
    for (size_t i = 0; i < s->n_requests; i++) {
        const kv_status_request *r = &s->requests[i];
        r_id = maxi(r_id, (int)strlen(r->request_id));
        r_state = maxi(r_state, (int)strlen(r->state));
        r_p = maxi(r_p, (int)strlen(r->prefill_worker));
        r_d = maxi(r_d, (int)strlen(r->decode_worker));
    }
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

int kvctl_cmd_status(int argc, char **argv)
{
    enum { O_ROUTER = 256, O_JSON, O_TIMEOUT, O_HELP };
    static const struct option opts[] = {
        {"router", required_argument, 0, O_ROUTER}, {"json", no_argument, 0, O_JSON},
        {"timeout-ms", required_argument, 0, O_TIMEOUT}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    const char *router = DEFAULT_ROUTER;
    int json = 0;
    long timeout_ms = 3000;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case O_ROUTER: router = optarg; break;
        case O_JSON: json = 1; break;
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
    if (kv_client_connect(router, &cl, errbuf, sizeof errbuf)) {
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
    if (json) {
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
