/* kvctl bench: load a router with synthetic requests and report latency percentiles,
 * throughput, KV moved and what the prefix cache saved.
 *
 * Prompts are token ids in [3, --vocab) (no tokenizer needed); every request sets
 * ignore_eos, so it generates exactly --max-tokens tokens. Workloads (--workload):
 *   random         --prompt-len random ids, different for every request (seeded by --seed
 *                  and the request's index): nothing to reuse.
 *   shared-prefix  --prefix-len ids shared by every request (a system prompt), then
 *                  --prompt-len ids of the request's own.
 *   multi-turn     --conversations C of --turns T: turn 0's prompt is the shared
 *                  --prefix-len ids plus a message of --prompt-len ids; turn k + 1's is turn
 *                  k's prompt + the tokens generated for it + a new message. A conversation's
 *                  turns run one after the other (turn k + 1 is sent when turn k ended; a
 *                  failed turn skips the rest); conversations run side by side.
 * Load is closed-loop (--concurrency C: C requests, or conversations, always in flight) or
 * open-loop (--rate R: Poisson arrivals of requests, or conversations, R per second on
 * average). All requests share one client connection.
 *
 * Metrics (client-measured unless noted): TTFT = submit -> first token; TPOT = (last
 * token - first token) / (tokens - 1); end-to-end = submit -> final reply; KV bytes,
 * transfer times and prefix-cache counts come from the routers' final Timings. Per request,
 *     tokens_computed = prompt - (local_prefill ? decode_cached : prefill_cached)
 * (the two caches hold prefixes of the same prompt: their counts overlap; why, and the hit
 * rates: bench_report.c), so tokens_computed + cached_tokens = prompt_tokens.
 * --status-after reads the router's ClusterMetrics before and after the run and prints its
 * prefix counters over the run beside the bench's own sums.
 *
 * --json prints one object (keys stable, only ever added):
 *   {"requests", "ok", "failed", "concurrency", "rate", "prompt_len", "max_tokens",
 *    "duration_s", "ttft_ms": {"p50","p90","p99","mean"}, "tpot_ms": {...},
 *    "e2e_ms": {...}, "output_tokens", "output_tok_s", "requests_per_s",
 *    "kv_bytes", "kv_transfer_ms_total", "kv_transfer_ms_mean", "kv_gb_s",
 *    "errors": {"CODE": count, ...},
 *    "workload": "random"|"shared-prefix"|"multi-turn", "prefix_len", "conversations",
 *    "turns", "skipped" (turns not sent after a failed turn; counted in "failed"),
 *    "prompt_tokens", "prefill_cached_tokens", "decode_cached_tokens", "cached_tokens",
 *    "tokens_computed", "local_prefills", "prefill_query_tokens", "kv_bytes_saved",
 *    "prefill_hit_rate", "decode_hit_rate",
 *    multi-turn: "per_turn": [{"turn", "requests", "prompt_tokens_mean", "new_tokens_mean",
 *                "tokens_computed_mean", "kv_bytes_mean", "kv_bytes_saved_mean",
 *                "kv_bytes_per_new_token", "ttft_ms_p50"}],
 *    --status-after: "cluster": {"prompt_tokens", "prefix_query_tokens_prefill",
 *                "prefix_hit_tokens_prefill", "prefix_query_tokens_decode",
 *                "prefix_hit_tokens_decode", "prefill_tokens_computed", "kv_bytes_saved",
 *                "kv_bytes"} (the router's counters after - before)}
 * Exit status: 0 when every request succeeded, 1 otherwise (the report is printed
 * either way), 2 for bad flags. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "kv_client.h"
#include "kv_time.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"

#define DEFAULT_ROUTER "tcp://127.0.0.1:7100"
#define ID_PREFIX "bench-"
#define MAX_REQUESTS 10000000L

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
            "usage: kvctl bench [--router ADDR] [--key FILE] [--workload W] (--requests N | --conversations C --turns T)\n"
            "                   (--concurrency C | --rate R) --prompt-len L --max-tokens M [--prefix-len P]\n"
            "                   [--seed S] [--status-after] [--json]\n"
            "  --router ADDR     the router's client endpoint (default " DEFAULT_ROUTER ")\n"
            "  --key FILE        the client key to connect with (default $KVSERVE_CLIENT_KEY, else the\n"
            "                    one kvctl up wrote for this router)\n"
            "  --workload W      random (default): prompts of random ids, different per request\n"
            "                    shared-prefix: --prefix-len ids shared by all + --prompt-len own ids\n"
            "                    multi-turn: conversations; each turn's prompt = the previous turn's\n"
            "                    prompt + its reply + a new --prompt-len message\n"
            "  --requests N      requests to send (random, shared-prefix)\n"
            "  --conversations C conversations (multi-turn), of --turns T turns each\n"
            "  --concurrency C   closed loop: keep C requests (multi-turn: conversations) in flight\n"
            "  --rate R          open loop: Poisson arrivals, R requests (conversations) per second\n"
            "  --prompt-len L    tokens of each request's own (random ids; multi-turn: each message)\n"
            "  --prefix-len P    shared system prompt tokens (shared-prefix: required; multi-turn:\n"
            "                    in front of the first turn, default 0)\n"
            "  --max-tokens M    tokens generated per request (EOS ignored)\n"
            "  --seed S          prompt seed (default 0)\n"
            "  --vocab V         prompt ids are drawn from [3, V) (default 259: valid for any Llama vocab)\n"
            "  --deadline-ms D   per-request deadline sent to the router (default: the router's)\n"
            "  --status-after    print the router's prefix-cache counters over the run beside the bench's\n"
            "  --json            machine-readable report on stdout\n");
}

/* The workload's flags are consistent: 0, or 2 with the reason printed. */
static int check_workload(bench_cfg *b)
{
    const char *w = bench_workload_name(b->workload);
    if (b->workload != BENCH_MULTI_TURN && (b->requests < 0 || b->prompt_len < 0 || b->max_tokens < 0)) {
        fprintf(stderr, "kvctl bench: --requests, --prompt-len and --max-tokens are required\n");
        return 2;
    }
    if (b->prompt_len < 0 || b->max_tokens < 0) {
        fprintf(stderr, "kvctl bench: --prompt-len and --max-tokens are required\n");
        return 2;
    }
    if (b->workload == BENCH_MULTI_TURN) {
        if (b->requests >= 0 || b->units < 0 || b->turns < 0) {
            fprintf(stderr, "kvctl bench: multi-turn takes --conversations C and --turns T, not --requests\n");
            return 2;
        }
        if (b->units * b->turns > MAX_REQUESTS) {
            fprintf(stderr, "kvctl bench: %ld conversations x %ld turns is more than %ld requests\n", b->units,
                    b->turns, MAX_REQUESTS);
            return 2;
        }
        if (b->prefix_len < 0)
            b->prefix_len = 0;
    } else {
        if (b->units >= 0 || b->turns >= 0) {
            fprintf(stderr, "kvctl bench: %s takes --requests N (--conversations and --turns are for multi-turn)\n",
                    w);
            return 2;
        }
        if (b->workload == BENCH_RANDOM && b->prefix_len >= 0) {
            fprintf(stderr, "kvctl bench: --prefix-len is for shared-prefix and multi-turn\n");
            return 2;
        }
        if (b->workload == BENCH_SHARED_PREFIX && b->prefix_len < 0) {
            fprintf(stderr, "kvctl bench: shared-prefix needs --prefix-len P\n");
            return 2;
        }
        if (b->prefix_len < 0)
            b->prefix_len = 0;
        b->units = b->requests;
        b->turns = 1;
    }
    b->requests = b->units * b->turns;
    if (bench_max_prompt(b) > BENCH_MAX_PROMPT) {
        fprintf(stderr, "kvctl bench: the longest prompt would be %ld tokens (at most %ld)\n", bench_max_prompt(b),
                BENCH_MAX_PROMPT);
        return 2;
    }
    return 0;
}

static int parse(int argc, char **argv, bench_cfg *b)
{
    enum { O_ROUTER = 256, O_REQ, O_CONC, O_RATE, O_PLEN, O_MAX, O_SEED, O_VOCAB, O_DEADLINE, O_JSON, O_HELP,
           O_WORKLOAD, O_PREFIX, O_CONV, O_TURNS, O_STATUS, O_KEY };
    static const struct option opts[] = {
        {"router", required_argument, 0, O_ROUTER}, {"requests", required_argument, 0, O_REQ},
        {"concurrency", required_argument, 0, O_CONC}, {"rate", required_argument, 0, O_RATE},
        {"prompt-len", required_argument, 0, O_PLEN}, {"max-tokens", required_argument, 0, O_MAX},
        {"seed", required_argument, 0, O_SEED}, {"vocab", required_argument, 0, O_VOCAB},
        {"deadline-ms", required_argument, 0, O_DEADLINE}, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP}, {"workload", required_argument, 0, O_WORKLOAD},
        {"prefix-len", required_argument, 0, O_PREFIX}, {"conversations", required_argument, 0, O_CONV},
        {"turns", required_argument, 0, O_TURNS}, {"status-after", no_argument, 0, O_STATUS},
        {"key", required_argument, 0, O_KEY}, {0, 0, 0, 0},
    };
    memset(b, 0, sizeof *b);
    b->router = DEFAULT_ROUTER;
    b->requests = b->concurrency = b->prompt_len = b->max_tokens = -1;
    b->prefix_len = b->units = b->turns = -1;
    b->vocab = 259;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_ROUTER: b->router = optarg; break;
        case O_KEY: b->key_file = optarg; break;
        case O_REQ: bad = kvctl_parse_int("--requests", optarg, 1, MAX_REQUESTS, &b->requests); break;
        case O_CONC: bad = kvctl_parse_int("--concurrency", optarg, 1, 100000, &b->concurrency); break;
        case O_RATE:
            bad = kvctl_parse_float("--rate", optarg, 0, 1e6, &b->rate);
            if (!bad && b->rate <= 0) {
                fprintf(stderr, "kvctl: --rate must be > 0\n");
                bad = 1;
            }
            break;
        case O_PLEN: bad = kvctl_parse_int("--prompt-len", optarg, 1, 1 << 24, &b->prompt_len); break;
        case O_PREFIX: bad = kvctl_parse_int("--prefix-len", optarg, 0, 1 << 24, &b->prefix_len); break;
        case O_MAX: bad = kvctl_parse_int("--max-tokens", optarg, 1, 1 << 24, &b->max_tokens); break;
        case O_CONV: bad = kvctl_parse_int("--conversations", optarg, 1, MAX_REQUESTS, &b->units); break;
        case O_TURNS: bad = kvctl_parse_int("--turns", optarg, 1, 10000, &b->turns); break;
        case O_SEED: bad = kvctl_parse_u64("--seed", optarg, &b->seed); break;
        case O_VOCAB: bad = kvctl_parse_int("--vocab", optarg, 4, 1L << 31, &b->vocab); break;
        case O_DEADLINE: bad = kvctl_parse_int("--deadline-ms", optarg, 1, 0xffffffffL, &b->deadline_ms); break;
        case O_JSON: b->json = 1; break;
        case O_STATUS: b->status_after = 1; break;
        case O_WORKLOAD:
            if (bench_workload_parse(optarg, &b->workload)) {
                fprintf(stderr, "kvctl bench: --workload is random, shared-prefix or multi-turn, not '%s'\n", optarg);
                bad = 1;
            }
            break;
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
    if (check_workload(b)) {
        usage(stderr);
        return 2;
    }
    if ((b->concurrency > 0) == (b->rate > 0)) {
        fprintf(stderr, "kvctl bench: give exactly one of --concurrency C or --rate R\n");
        return 2;
    }
    return 0;
}

/* One run: its requests, the conversations under way, and the counts the loop steers by. */
typedef struct bench_run {
    const bench_cfg *b;
    kv_client *c;
    bench_req *reqs;
    bench_conv *convs; /* multi-turn: one per conversation (its history while it runs) */
    int32_t *ids;      /* other workloads: the shared prefix, then the request's own ids */
    long next_unit, active_units, running, done, ok, failed;
} bench_run;

static void request_id(long i, char id[64]) { snprintf(id, 64, ID_PREFIX "%ld", i); }

/* Sends request i (its prompt built here): 0, or the client's error (the request stays
 * pending: the caller decides what the failure means). */
static int submit(bench_run *run, long i)
{
    const bench_cfg *b = run->b;
    bench_req *r = &run->reqs[i];
    const int32_t *prompt;
    long n;
    if (b->workload == BENCH_MULTI_TURN) {
        bench_conv *cv = &run->convs[i / b->turns];
        if (i % b->turns == 0 && bench_conv_begin(cv, b)) {
            fprintf(stderr, "\nkvctl: out of memory for a conversation's history\n");
            return KVC_ENOMEM;
        }
        bench_conv_add_message(cv, b, i);
        prompt = cv->ids;
        n = cv->len;
        r->new_tokens = cv->len - cv->prev_len;
        cv->prev_len = cv->len;
    } else {
        bench_random_ids(b->seed, (uint64_t)i, b->vocab, run->ids + b->prefix_len, b->prompt_len);
        prompt = run->ids;
        n = b->prefix_len + b->prompt_len;
        r->new_tokens = n;
    }
    char id[64];
    request_id(i, id);
    kv_client_request q;
    kv_client_request_init(&q);
    q.request_id = id;
    q.prompt_tokens = prompt;
    q.n_prompt_tokens = (size_t)n;
    q.max_tokens = (uint32_t)b->max_tokens;
    q.ignore_eos = 1;
    q.stream = 1;
    q.deadline_ms = (uint32_t)b->deadline_ms;
    r->prompt_tokens = n;
    r->t_submit = kv_now_s();
    int rc = kv_client_submit(run->c, &q, NULL, 5000);
    if (!rc) {
        r->state = BR_RUNNING;
        run->running++;
    }
    return rc;
}

/* The router went away: nothing more is sent, and what was not sent fails. */
static void router_gone(bench_run *run)
{
    for (long i = 0; i < run->b->requests; i++)
        if (run->reqs[i].state == BR_PENDING) {
            run->reqs[i].state = BR_FAILED;
            run->reqs[i].error_code = KVC_ERR_DISCONNECTED;
            run->reqs[i].t_end = kv_now_s();
            run->failed++;
            run->done++;
        }
    run->next_unit = run->b->units;
}

/* Request i ended (its state set): sends its unit's next turn, or ends the unit (a failed
 * turn skips the turns after it). */
static void request_ended(bench_run *run, long i)
{
    const bench_cfg *b = run->b;
    run->running--;
    run->done++;
    if (run->reqs[i].state == BR_OK)
        run->ok++;
    else
        run->failed++;
    long unit = i / b->turns, last = (unit + 1) * b->turns - 1;
    if (i < last && run->reqs[i].state == BR_OK && run->reqs[i + 1].state == BR_PENDING) {
        if (!submit(run, i + 1))
            return;
        fprintf(stderr, "\nkvctl: %s\n", kv_client_last_error(run->c));
        router_gone(run);
    }
    for (long k = i + 1; k <= last; k++)
        if (run->reqs[k].state == BR_PENDING) {
            run->reqs[k].state = BR_SKIPPED;
            run->failed++;
            run->done++;
        }
    if (run->convs)
        bench_conv_end(&run->convs[unit]);
    run->active_units--;
}

/* A reply chunk of one of our requests. */
static void on_event(bench_run *run, const kv_client_event *ev, double now)
{
    if (strncmp(ev->request_id, ID_PREFIX, strlen(ID_PREFIX)))
        return;
    char *end;
    long i = strtol(ev->request_id + strlen(ID_PREFIX), &end, 10);
    if (*end || i < 0 || i >= run->b->requests || run->reqs[i].state != BR_RUNNING)
        return;
    bench_req *r = &run->reqs[i];
    if (ev->n_tokens) {
        if (!r->n_tokens)
            r->t_first = now;
        r->t_last = now;
        r->n_tokens += (uint32_t)ev->n_tokens;
        if (run->convs)
            bench_conv_add_reply(&run->convs[i / run->b->turns], ev->tokens, ev->n_tokens);
    }
    if (ev->has_timings) {
        r->has_timings = 1;
        r->tm = ev->timings;
    }
    if (!ev->finished)
        return;
    r->t_end = now;
    if (ev->finish_reason == KVC_FINISH_ERROR || ev->finish_reason == KVC_FINISH_CANCELLED) {
        r->state = BR_FAILED;
        r->error_code = ev->finish_reason == KVC_FINISH_CANCELLED ? KVC_ERR_CANCELLED : ev->error_code;
    } else {
        r->state = BR_OK;
    }
    request_ended(run, i);
}

/* Backstop: fails the requests the router never finished (it ends every request by its
 * deadlines; this only guards against a router that stops answering). */
static void sweep(bench_run *run, double now, double limit_s)
{
    for (long i = 0; i < run->b->requests; i++) {
        bench_req *r = &run->reqs[i];
        if (r->state != BR_RUNNING || now - r->t_submit <= limit_s)
            continue;
        char id[64];
        request_id(i, id);
        kv_client_cancel(run->c, id, 100);
        r->state = BR_FAILED;
        r->error_code = KVC_ERR_TIMEOUT;
        r->t_end = now;
        request_ended(run, i);
    }
}

/* The router's metrics now into *m: 0, or -1 with a warning (the report then goes without). */
static int read_metrics(kv_client *c, kv_status_metrics *m)
{
    kv_status *st = NULL;
    if (kv_client_status(c, 3000, &st)) {
        fprintf(stderr, "kvctl bench: --status-after: %s\n", kv_client_last_error(c));
        return -1;
    }
    int present = st->metrics.present;
    *m = st->metrics;
    kv_status_free(st);
    if (!present)
        fprintf(stderr, "kvctl bench: --status-after: the router sent no metrics\n");
    return present ? 0 : -1;
}

/* Runs the load until every request ended (or SIGINT): 0, or 1 when the router was never
 * reachable (then there is nothing to report). */
static int run_load(bench_run *run)
{
    const bench_cfg *b = run->b;
    double req_limit_s = (b->deadline_ms ? (double)b->deadline_ms : 600000.0) / 1e3 + 15.0;
    uint64_t arrival_rng = b->seed ^ 0xA5A5A5A5DEADBEEFull;
    double t_start = kv_now_s(), next_arrival = t_start, last_progress = 0, last_sweep = t_start;
    while (run->done < b->requests && !bench_interrupted) {
        double now = kv_now_s();
        while (run->next_unit < b->units &&
               (b->concurrency > 0 ? run->active_units < b->concurrency : now >= next_arrival)) {
            long first = run->next_unit * b->turns;
            if (submit(run, first)) {
                fprintf(stderr, "\nkvctl: %s\n", kv_client_last_error(run->c));
                if (run->ok + run->failed == 0) /* nothing ever worked: the router is not there */
                    return 1;
                router_gone(run);
                break;
            }
            run->active_units++;
            run->next_unit++;
            if (b->rate > 0)
                next_arrival += -log(1.0 - uniform01(&arrival_rng)) / b->rate;
            now = kv_now_s();
        }
        int wait_ms = 100;
        if (b->rate > 0 && run->next_unit < b->units) {
            double until = (next_arrival - now) * 1e3;
            wait_ms = until < 0 ? 0 : until < wait_ms ? (int)until + 1 : wait_ms;
        }
        kv_client_event ev;
        int erc = kv_client_next_event(run->c, run->running ? wait_ms : (b->rate > 0 ? wait_ms : 0), &ev);
        now = kv_now_s();
        if (erc == KVC_OK && ev.kind == KVC_EVENT_REPLY) {
            on_event(run, &ev, now);
        } else if (erc != KVC_OK && erc != KVC_ETIMEOUT) {
            fprintf(stderr, "\nkvctl: %s\n", kv_client_last_error(run->c));
            return 1;
        }
        if (now - last_sweep > 1.0) {
            last_sweep = now;
            sweep(run, now, req_limit_s);
        }
        if (now - last_progress > 0.25 || run->done == b->requests) {
            last_progress = now;
            fprintf(stderr, "\r[bench] %ld/%ld done  %ld ok  %ld failed  %ld in flight  %.1f s   ", run->done,
                    b->requests, run->ok, run->failed, run->running, now - t_start);
            fflush(stderr);
        }
    }
    fprintf(stderr, "\n");
    return 0;
}

int kvctl_cmd_bench(int argc, char **argv)
{
    bench_cfg b;
    int rc = parse(argc, argv, &b);
    if (rc)
        return rc < 0 ? 0 : rc;
    bench_run run = {.b = &b};
    run.reqs = calloc((size_t)b.requests, sizeof *run.reqs);
    if (b.workload == BENCH_MULTI_TURN)
        run.convs = calloc((size_t)b.units, sizeof *run.convs);
    else
        run.ids = malloc((size_t)(b.prefix_len + b.prompt_len) * sizeof *run.ids);
    if (!run.reqs || (!run.convs && !run.ids)) {
        fprintf(stderr, "kvctl: out of memory\n");
        free(run.reqs); free(run.convs); free(run.ids);
        return 1;
    }
    if (run.ids)
        bench_random_ids(b.seed, BENCH_PREFIX_STREAM, b.vocab, run.ids, b.prefix_len);
    char errbuf[512];
    if (kv_client_connect_key(b.router, b.key_file, &run.c, errbuf, sizeof errbuf)) {
        fprintf(stderr, "kvctl: %s\n", errbuf);
        free(run.reqs); free(run.convs); free(run.ids);
        return 1;
    }
    kv_client_set_resume(run.c, KV_CLIENT_RESUME_DEFAULT_MS); /* survive a router restart */
    bench_cluster cluster = {0};
    if (b.status_after)
        cluster.present = !read_metrics(run.c, &cluster.before);
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    double t_start = kv_now_s();
    int status = run_load(&run);
    if (status)
        goto out;
    if (bench_interrupted)
        fprintf(stderr, "kvctl bench: interrupted; reporting the %ld finished requests\n", run.done);
    double t_end = t_start;
    for (long i = 0; i < b.requests; i++)
        if (run.reqs[i].state == BR_OK || run.reqs[i].state == BR_FAILED)
            if (run.reqs[i].t_end > t_end)
                t_end = run.reqs[i].t_end;
    if (cluster.present && !bench_interrupted)
        cluster.present = !read_metrics(run.c, &cluster.after);
    else
        cluster.present = 0;
    if (bench_report(&b, run.reqs, t_end - t_start, &cluster)) {
        fprintf(stderr, "kvctl: out of memory for the report\n");
        status = 1;
    } else {
        status = run.failed || bench_interrupted ? 1 : 0;
    }
out:
    /* Cancel whatever is still running so the cluster does not keep working for nobody. */
    for (long i = 0; i < b.requests; i++)
        if (run.reqs[i].state == BR_RUNNING) {
            char id[64];
            request_id(i, id);
            kv_client_cancel(run.c, id, 100);
        }
    kv_client_close(run.c);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (run.convs)
        for (long u = 0; u < b.units; u++)
            bench_conv_end(&run.convs[u]);
    free(run.reqs);
    free(run.convs);
    free(run.ids);
    return status;
}
