/* kvctl bench: load a router with synthetic requests and report latency percentiles
 * and throughput.
 *
 * Prompts are L random token ids in [3, --vocab) (no tokenizer needed), different for
 * every request (seeded by --seed and the request's index). Every request sets
 * ignore_eos, so it generates exactly --max-tokens tokens. Load is closed-loop
 * (--concurrency C: C requests always in flight) or open-loop (--rate R: Poisson
 * arrivals, R per second on average). All requests share one client connection.
 *
 * Metrics (client-measured unless noted): TTFT = submit -> first token; TPOT = (last
 * token - first token) / (tokens - 1); end-to-end = submit -> final reply; KV bytes and
 * transfer times come from the routers' final Timings.
 *
 * --json prints one object (keys stable, only ever added):
 *   {"requests", "ok", "failed", "concurrency", "rate", "prompt_len", "max_tokens",
 *    "duration_s", "ttft_ms": {"p50","p90","p99","mean"}, "tpot_ms": {...},
 *    "e2e_ms": {...}, "output_tokens", "output_tok_s", "requests_per_s",
 *    "kv_bytes", "kv_transfer_ms_total", "kv_transfer_ms_mean", "kv_gb_s",
 *    "errors": {"CODE": count, ...}}
 * Exit status: 0 when every request succeeded, 1 otherwise (the report is printed
 * either way), 2 for bad flags. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_client.h"
#include "kv_time.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"

#define DEFAULT_ROUTER "tcp://127.0.0.1:7100"
#define ID_PREFIX "bench-"

typedef struct bench_cfg {
    const char *router;
    long requests, concurrency, prompt_len, max_tokens, vocab, deadline_ms;
    double rate;
    uint64_t seed;
    int json;
} bench_cfg;

enum { BR_PENDING = 0, BR_RUNNING, BR_OK, BR_FAILED };

typedef struct bench_req {
    int state;
    double t_submit, t_first, t_last, t_end;
    uint32_t n_tokens;
    int error_code;
    int has_timings;
    kv_client_timings tm;
} bench_req;

typedef struct pct { double p50, p90, p99, mean; int n; } pct;

static volatile sig_atomic_t bench_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    bench_interrupted = 1;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl bench [--router ADDR] --requests N (--concurrency C | --rate R)\n"
            "                   --prompt-len L --max-tokens M [--seed S] [--json]\n"
            "  --router ADDR     the router's client endpoint (default " DEFAULT_ROUTER ")\n"
            "  --requests N      requests to send\n"
            "  --concurrency C   closed loop: keep C requests in flight\n"
            "  --rate R          open loop: Poisson arrivals, R requests per second\n"
            "  --prompt-len L    prompt tokens per request (random ids, different per request)\n"
            "  --max-tokens M    tokens generated per request (EOS ignored)\n"
            "  --seed S          prompt seed (default 0)\n"
            "  --vocab V         prompt ids are drawn from [3, V) (default 259: valid for any Llama vocab)\n"
            "  --deadline-ms D   per-request deadline sent to the router (default: the router's)\n"
            "  --json            machine-readable report on stdout\n");
}

static int parse(int argc, char **argv, bench_cfg *b)
{
    enum { O_ROUTER = 256, O_REQ, O_CONC, O_RATE, O_PLEN, O_MAX, O_SEED, O_VOCAB, O_DEADLINE, O_JSON, O_HELP };
    static const struct option opts[] = {
        {"router", required_argument, 0, O_ROUTER}, {"requests", required_argument, 0, O_REQ},
        {"concurrency", required_argument, 0, O_CONC}, {"rate", required_argument, 0, O_RATE},
        {"prompt-len", required_argument, 0, O_PLEN}, {"max-tokens", required_argument, 0, O_MAX},
        {"seed", required_argument, 0, O_SEED}, {"vocab", required_argument, 0, O_VOCAB},
        {"deadline-ms", required_argument, 0, O_DEADLINE}, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    memset(b, 0, sizeof *b);
    b->router = DEFAULT_ROUTER;
    b->requests = b->concurrency = b->prompt_len = b->max_tokens = -1;
    b->vocab = 259;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_ROUTER: b->router = optarg; break;
        case O_REQ: bad = kvctl_parse_int("--requests", optarg, 1, 10000000, &b->requests); break;
        case O_CONC: bad = kvctl_parse_int("--concurrency", optarg, 1, 100000, &b->concurrency); break;
        case O_RATE:
            bad = kvctl_parse_float("--rate", optarg, 0, 1e6, &b->rate);
            if (!bad && b->rate <= 0) {
                fprintf(stderr, "kvctl: --rate must be > 0\n");
                bad = 1;
            }
            break;
        case O_PLEN: bad = kvctl_parse_int("--prompt-len", optarg, 1, 1 << 24, &b->prompt_len); break;
        case O_MAX: bad = kvctl_parse_int("--max-tokens", optarg, 1, 1 << 24, &b->max_tokens); break;
        case O_SEED: bad = kvctl_parse_u64("--seed", optarg, &b->seed); break;
        case O_VOCAB: bad = kvctl_parse_int("--vocab", optarg, 4, 1L << 31, &b->vocab); break;
        case O_DEADLINE: bad = kvctl_parse_int("--deadline-ms", optarg, 1, 0xffffffffL, &b->deadline_ms); break;
        case O_JSON: b->json = 1; break;
        case O_HELP: case 'h': usage(stdout); return -1;
        default:
            fprintf(stderr, "kvctl bench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind != argc) {
        fprintf(stderr, "kvctl bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (b->requests < 0 || b->prompt_len < 0 || b->max_tokens < 0) {
        fprintf(stderr, "kvctl bench: --requests, --prompt-len and --max-tokens are required\n");
        usage(stderr);
        return 2;
    }
    if ((b->concurrency > 0) == (b->rate > 0)) {
        fprintf(stderr, "kvctl bench: give exactly one of --concurrency C or --rate R\n");
        return 2;
    }
    return 0;
}

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

static int submit_one(kv_client *c, const bench_cfg *b, long i, int32_t *ids, bench_req *r)
{
    uint64_t s = b->seed * 0x100000001B3ull + (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
    for (long k = 0; k < b->prompt_len; k++)
        ids[k] = (int32_t)(3 + splitmix64(&s) % (uint64_t)(b->vocab - 3));
    char id[64];
    snprintf(id, sizeof id, ID_PREFIX "%ld", i);
    kv_client_request q;
    kv_client_request_init(&q);
    q.request_id = id;
    q.prompt_tokens = ids;
    q.n_prompt_tokens = (size_t)b->prompt_len;
    q.max_tokens = (uint32_t)b->max_tokens;
    q.ignore_eos = 1;
    q.stream = 1;
    q.deadline_ms = (uint32_t)b->deadline_ms;
    r->t_submit = kv_now_s();
    int rc = kv_client_submit(c, &q, NULL, 5000);
    r->state = rc ? BR_FAILED : BR_RUNNING;
    if (rc) {
        r->t_end = kv_now_s();
        r->error_code = rc == KVC_ETIMEOUT ? KVC_ERR_DISCONNECTED : KVC_ERR_INTERNAL;
    }
    return rc;
}

static void print_pct_json(const char *name, pct p, int last)
{
    printf("\"%s\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"mean\":%.3f}%s", name, p.p50, p.p90, p.p99, p.mean,
           last ? "" : ",");
}

int kvctl_cmd_bench(int argc, char **argv)
{
    bench_cfg b;
    int rc = parse(argc, argv, &b);
    if (rc)
        return rc < 0 ? 0 : rc;
    bench_req *reqs = calloc((size_t)b.requests, sizeof *reqs);
    int32_t *ids = malloc((size_t)b.prompt_len * sizeof *ids);
    double *v = malloc((size_t)b.requests * sizeof *v);
    if (!reqs || !ids || !v) {
        fprintf(stderr, "kvctl: out of memory\n");
        free(reqs); free(ids); free(v);
        return 1;
    }
    char errbuf[512];
    kv_client *c = NULL;
    if (kv_client_connect(b.router, &c, errbuf, sizeof errbuf)) {
        fprintf(stderr, "kvctl: %s\n", errbuf);
        free(reqs); free(ids); free(v);
        return 1;
    }
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    /* The router ends every request by its deadlines; this backstop only guards
     * against a router that stops answering. */
    double req_limit_s = (b.deadline_ms ? (double)b.deadline_ms : 600000.0) / 1e3 + 15.0;
    uint64_t arrival_rng = b.seed ^ 0xA5A5A5A5DEADBEEFull;
    long next = 0, running = 0, done = 0, ok = 0, failed = 0;
    double t_start = kv_now_s(), next_arrival = t_start, last_progress = 0, last_sweep = t_start;
    int status = 0;
    while (done < b.requests && !bench_interrupted) {
        double now = kv_now_s();
        while (next < b.requests && (b.concurrency > 0 ? running < b.concurrency : now >= next_arrival)) {
            if (submit_one(c, &b, next, ids, &reqs[next])) {
                fprintf(stderr, "\nkvctl: %s\n", kv_client_last_error(c));
                if (ok + failed == 0) { /* nothing ever worked: the router is not there */
                    status = 1;
                    goto out;
                }
                /* The router went away: what was not sent yet fails as well. */
                for (long i = next; i < b.requests; i++) {
                    reqs[i].state = BR_FAILED;
                    reqs[i].error_code = KVC_ERR_DISCONNECTED;
                    reqs[i].t_end = kv_now_s();
                    failed++;
                    done++;
                }
                next = b.requests;
                break;
            } else {
                running++;
            }
            next++;
            if (b.rate > 0)
                next_arrival += -log(1.0 - uniform01(&arrival_rng)) / b.rate;
            now = kv_now_s();
        }
        int wait_ms = 100;
        if (b.rate > 0 && next < b.requests) {
            double until = (next_arrival - now) * 1e3;
            wait_ms = until < 0 ? 0 : until < wait_ms ? (int)until + 1 : wait_ms;
        }
        kv_client_event ev;
        int erc = kv_client_next_event(c, running ? wait_ms : (b.rate > 0 ? wait_ms : 0), &ev);
        now = kv_now_s();
        if (erc == KVC_OK && ev.kind == KVC_EVENT_REPLY && !strncmp(ev.request_id, ID_PREFIX, strlen(ID_PREFIX))) {
            long i = strtol(ev.request_id + strlen(ID_PREFIX), NULL, 10);
            if (i >= 0 && i < b.requests && reqs[i].state == BR_RUNNING) {
                bench_req *r = &reqs[i];
                if (ev.n_tokens) {
                    if (!r->n_tokens)
                        r->t_first = now;
                    r->t_last = now;
                    r->n_tokens += (uint32_t)ev.n_tokens;
                }
                if (ev.has_timings) {
                    r->has_timings = 1;
                    r->tm = ev.timings;
                }
                if (ev.finished) {
                    r->t_end = now;
                    running--;
                    done++;
                    if (ev.finish_reason == KVC_FINISH_ERROR || ev.finish_reason == KVC_FINISH_CANCELLED) {
                        r->state = BR_FAILED;
                        r->error_code = ev.finish_reason == KVC_FINISH_CANCELLED ? KVC_ERR_CANCELLED : ev.error_code;
                        failed++;
                    } else {
                        r->state = BR_OK;
                        ok++;
                    }
                }
            }
        } else if (erc != KVC_OK && erc != KVC_ETIMEOUT) {
            fprintf(stderr, "\nkvctl: %s\n", kv_client_last_error(c));
            status = 1;
            goto out;
        }
        if (now - last_sweep > 1.0) { /* backstop: requests the router never finished */
            last_sweep = now;
            for (long i = 0; i < next; i++)
                if (reqs[i].state == BR_RUNNING && now - reqs[i].t_submit > req_limit_s) {
                    char id[64];
                    snprintf(id, sizeof id, ID_PREFIX "%ld", i);
                    kv_client_cancel(c, id, 100);
                    reqs[i].state = BR_FAILED;
                    reqs[i].error_code = KVC_ERR_TIMEOUT;
                    reqs[i].t_end = now;
                    running--;
                    done++;
                    failed++;
                }
        }
        if (now - last_progress > 0.25 || done == b.requests) {
            last_progress = now;
            fprintf(stderr, "\r[bench] %ld/%ld done  %ld ok  %ld failed  %ld in flight  %.1f s   ", done, b.requests,
                    ok, failed, running, now - t_start);
            fflush(stderr);
        }
    }
    fprintf(stderr, "\n");
    if (bench_interrupted)
        fprintf(stderr, "kvctl bench: interrupted; reporting the %ld finished requests\n", done);

    double t_end = t_start;
    for (long i = 0; i < next; i++)
        if (reqs[i].state >= BR_OK && reqs[i].t_end > t_end)
            t_end = reqs[i].t_end;
    double duration = t_end - t_start;
    int n;
    n = 0;
    for (long i = 0; i < b.requests; i++)
        if (reqs[i].state == BR_OK && reqs[i].n_tokens)
            v[n++] = (reqs[i].t_first - reqs[i].t_submit) * 1e3;
    pct ttft = summarize(v, n);
    n = 0;
    for (long i = 0; i < b.requests; i++)
        if (reqs[i].state == BR_OK && reqs[i].n_tokens > 1)
            v[n++] = (reqs[i].t_last - reqs[i].t_first) * 1e3 / (reqs[i].n_tokens - 1);
    pct tpot = summarize(v, n);
    n = 0;
    for (long i = 0; i < b.requests; i++)
        if (reqs[i].state == BR_OK)
            v[n++] = (reqs[i].t_end - reqs[i].t_submit) * 1e3;
    pct e2e = summarize(v, n);
    unsigned long long out_tokens = 0, kv_bytes = 0;
    double xfer_ms = 0;
    int n_xfer = 0;
    for (long i = 0; i < b.requests; i++) {
        if (reqs[i].state == BR_OK)
            out_tokens += reqs[i].n_tokens;
        if (reqs[i].has_timings) {
            kv_bytes += reqs[i].tm.kv_bytes;
            xfer_ms += reqs[i].tm.transfer_ms;
            n_xfer++;
        }
    }
    double tok_s = duration > 0 ? out_tokens / duration : 0, req_s = duration > 0 ? ok / duration : 0;
    double gbs = xfer_ms > 0 ? kv_bytes / (xfer_ms * 1e-3) / 1e9 : 0, xfer_mean = n_xfer ? xfer_ms / n_xfer : 0;
    int err_count[KVC_ERR_TIMEOUT + 1] = {0};
    for (long i = 0; i < b.requests; i++)
        if (reqs[i].state == BR_FAILED && reqs[i].error_code >= 0 && reqs[i].error_code <= KVC_ERR_TIMEOUT)
            err_count[reqs[i].error_code]++;
    if (b.json) {
        printf("{\"requests\":%ld,\"ok\":%ld,\"failed\":%ld,\"concurrency\":%ld,\"rate\":%.3f,\"prompt_len\":%ld,"
               "\"max_tokens\":%ld,\"duration_s\":%.3f,",
               b.requests, ok, failed, b.concurrency > 0 ? b.concurrency : 0, b.rate, b.prompt_len, b.max_tokens,
               duration);
        print_pct_json("ttft_ms", ttft, 0);
        print_pct_json("tpot_ms", tpot, 0);
        print_pct_json("e2e_ms", e2e, 0);
        printf("\"output_tokens\":%llu,\"output_tok_s\":%.3f,\"requests_per_s\":%.3f,\"kv_bytes\":%llu,"
               "\"kv_transfer_ms_total\":%.3f,\"kv_transfer_ms_mean\":%.3f,\"kv_gb_s\":%.6f,\"errors\":{",
               out_tokens, tok_s, req_s, kv_bytes, xfer_ms, xfer_mean, gbs);
        int first = 1;
        for (int e = 0; e <= KVC_ERR_TIMEOUT; e++)
            if (err_count[e]) {
                printf("%s\"%s\":%d", first ? "" : ",", kv_client_error_name(e), err_count[e]);
                first = 0;
            }
        printf("}}\n");
    } else {
        if (b.concurrency > 0)
            printf("kvctl bench: %ld requests, concurrency %ld, prompt %ld tokens, %ld new tokens each, router %s\n",
                   b.requests, b.concurrency, b.prompt_len, b.max_tokens, b.router);
        else
            printf("kvctl bench: %ld requests, Poisson rate %.2f/s, prompt %ld tokens, %ld new tokens each, router %s\n",
                   b.requests, b.rate, b.prompt_len, b.max_tokens, b.router);
        printf("requests:     %ld ok, %ld failed in %.3f s\n", ok, failed, duration);
        printf("%-12s %10s %10s %10s %10s\n", "", "p50", "p90", "p99", "mean");
        printf("%-12s %10.2f %10.2f %10.2f %10.2f\n", "ttft_ms", ttft.p50, ttft.p90, ttft.p99, ttft.mean);
        printf("%-12s %10.3f %10.3f %10.3f %10.3f\n", "tpot_ms", tpot.p50, tpot.p90, tpot.p99, tpot.mean);
        printf("%-12s %10.2f %10.2f %10.2f %10.2f\n", "e2e_ms", e2e.p50, e2e.p90, e2e.p99, e2e.mean);
        printf("throughput:   %.1f output tok/s, %.2f requests/s (%llu output tokens)\n", tok_s, req_s, out_tokens);
        printf("kv transfer:  %llu bytes moved, %.2f ms total, %.3f ms mean per request, %.3f GB/s\n", kv_bytes,
               xfer_ms, xfer_mean, gbs);
        for (int e = 0; e <= KVC_ERR_TIMEOUT; e++)
            if (err_count[e])
                printf("errors:       %s x %d\n", kv_client_error_name(e), err_count[e]);
    }
    status = failed || bench_interrupted ? 1 : 0;
out:
    /* Cancel whatever is still running so the cluster does not keep working for nobody. */
    for (long i = 0; i < next; i++)
        if (reqs[i].state == BR_RUNNING) {
            char id[64];
            snprintf(id, sizeof id, ID_PREFIX "%ld", i);
            kv_client_cancel(c, id, 100);
        }
    kv_client_close(c);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(reqs);
    free(ids);
    free(v);
    return status;
}
