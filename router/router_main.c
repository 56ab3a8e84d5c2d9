/* kv-router: flags, signals, and the event loop (see router.h and proto/PROTOCOL.md). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_signal.h"
#include "router.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kv-router --model DIR [OPTIONS]\n"
            "Routes generation requests to prefill and decode workers (proto/PROTOCOL.md).\n"
            "  --model DIR                 model directory (config.json + tokenizer.json; no weights)\n"
            "  --listen EP                 client endpoint (default tcp://*:7100)\n"
            "  --control EP                worker endpoint (default tcp://*:7101)\n"
            "  --ready-file PATH           once bound, write client=EP and control=EP lines there\n"
            "  --heartbeat-ms N            worker heartbeat interval (default 500)\n"
            "  --worker-timeout-ms N       declare a worker dead after N ms without a heartbeat (default 5000)\n"
            "  --max-prompt-tokens N       longest prompt (default: context length - 1)\n"
            "  --reserve-deadline-ms N     wait for a reservation reply (default 2000)\n"
            "  --prefill-deadline-ms N     wait for PrefillDone (default 60000)\n"
            "  --token-deadline-ms N       longest gap between tokens (default 30000)\n"
            "  --request-deadline-ms N     whole request (default 600000)\n"
            "  --queue-deadline-ms N       longest wait for capacity (default 30000)\n"
            "  --ack-deadline-ms N         prefill worker's wait for the KV ack (default 10000)\n"
            "  --key FILE                  CURVE key pair (kvctl keys gen): every socket authenticated;\n"
            "                              without it CURVE is off and the router warns (insecure)\n"
            "  --worker-keys FILE|DIR      public keys of the workers allowed on the control endpoint\n"
            "  --client-keys FILE|DIR      public keys of the clients allowed on the client endpoint\n"
            "  --route-policy cache|load   pick workers by prefix-cache hits and load, or by load only\n"
            "                              (default cache)\n"
            "  --route-load-tokens N       cache policy: one active request costs as much as N tokens to\n"
            "                              compute or ship (default 256)\n"
            "  --route-balance N           cache policy: skip a worker N requests busier than the least\n"
            "                              busy one (default 4)\n"
            "  --local-prefill-max N       a decode worker holding all but <= N prompt tokens prefills\n"
            "                              them itself, without a transfer (default 32; 0 = never)\n"
            "  --client-timeout MS         cancel the requests of a client heard nothing from (not even a\n"
            "                              ClientHeartbeat) for MS ms (default 10000; 0 = never)\n"
            "  --on-exit handover|fail     on SIGTERM/SIGINT, leave the requests in flight to the workers\n"
            "                              and clients for the next router to take back (handover,\n"
            "                              default: a restart loses no stream), or fail them\n"
            "Endpoints may use port 0 (an ephemeral port; see --ready-file).\n");
}

/* Strict: the whole string is an integer in [lo, hi]. */
static int parse_int(const char *flag, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "kv-router: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Strict: s is one of two words; *out = 1 for the first, 0 for the second. */
static int parse_choice(const char *flag, const char *s, const char *first, const char *second, int *out)
{
    if (strcmp(s, first) && strcmp(s, second)) {
        fprintf(stderr, "kv-router: %s expects %s or %s, got '%s'\n", flag, first, second, s);
        return -1;
    }
    *out = !strcmp(s, first);
    return 0;
}

/* Returns -1 to run, else the exit status. */
static int parse_args(int argc, char **argv, router_opts *o)
{
    enum { O_MODEL = 256, O_LISTEN, O_CONTROL, O_READY, O_HB, O_WTO, O_MAXP, O_RES, O_PRE, O_TOK, O_REQ, O_QUE,
           O_ACK, O_KEY, O_WKEYS, O_CKEYS, O_POLICY, O_LOADTOK, O_BALANCE, O_LOCALPF, O_CTO, O_EXIT, O_HELP };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"listen", required_argument, 0, O_LISTEN},
        {"control", required_argument, 0, O_CONTROL},
        {"ready-file", required_argument, 0, O_READY},
        {"heartbeat-ms", required_argument, 0, O_HB},
        {"worker-timeout-ms", required_argument, 0, O_WTO},
        {"max-prompt-tokens", required_argument, 0, O_MAXP},
        {"reserve-deadline-ms", required_argument, 0, O_RES},
        {"prefill-deadline-ms", required_argument, 0, O_PRE},
        {"token-deadline-ms", required_argument, 0, O_TOK},
        {"request-deadline-ms", required_argument, 0, O_REQ},
        {"queue-deadline-ms", required_argument, 0, O_QUE},
        {"ack-deadline-ms", required_argument, 0, O_ACK},
        {"key", required_argument, 0, O_KEY},
        {"worker-keys", required_argument, 0, O_WKEYS},
        {"client-keys", required_argument, 0, O_CKEYS},
        {"route-policy", required_argument, 0, O_POLICY},
        {"route-load-tokens", required_argument, 0, O_LOADTOK},
        {"route-balance", required_argument, 0, O_BALANCE},
        {"local-prefill-max", required_argument, 0, O_LOCALPF},
        {"client-timeout", required_argument, 0, O_CTO},
        {"on-exit", required_argument, 0, O_EXIT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    const long day = 86400000L; /* any deadline up to a day, in ms */
    router_opts_default(o);
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_MODEL: o->model_dir = optarg; break;
        case O_LISTEN: o->listen = optarg; break;
        case O_CONTROL: o->control = optarg; break;
        case O_READY: o->ready_file = optarg; break;
        case O_HB: bad = parse_int("--heartbeat-ms", optarg, 1, 3600000, &o->heartbeat_ms); break;
        case O_WTO: bad = parse_int("--worker-timeout-ms", optarg, 1, day, &o->worker_timeout_ms); break;
        case O_MAXP: bad = parse_int("--max-prompt-tokens", optarg, 1, 1L << 30, &o->max_prompt_tokens); break;
        case O_RES: bad = parse_int("--reserve-deadline-ms", optarg, 1, day, &o->reserve_deadline_ms); break;
        case O_PRE: bad = parse_int("--prefill-deadline-ms", optarg, 1, day, &o->prefill_deadline_ms); break;
        case O_TOK: bad = parse_int("--token-deadline-ms", optarg, 1, day, &o->token_deadline_ms); break;
        case O_REQ: bad = parse_int("--request-deadline-ms", optarg, 1, day, &o->request_deadline_ms); break;
        case O_QUE: bad = parse_int("--queue-deadline-ms", optarg, 1, day, &o->queue_deadline_ms); break;
        case O_ACK: bad = parse_int("--ack-deadline-ms", optarg, 1, day, &o->ack_deadline_ms); break;
        case O_KEY: o->key_file = optarg; break;
        case O_WKEYS: o->worker_keys = optarg; break;
        case O_CKEYS: o->client_keys = optarg; break;
        case O_POLICY: bad = parse_choice("--route-policy", optarg, "cache", "load", &o->route_cache); break;
        case O_LOADTOK: bad = parse_int("--route-load-tokens", optarg, 0, 1L << 30, &o->route_load_tokens); break;
        case O_BALANCE: bad = parse_int("--route-balance", optarg, 0, 1L << 20, &o->route_balance); break;
        case O_LOCALPF: bad = parse_int("--local-prefill-max", optarg, 0, 1L << 20, &o->local_prefill_max); break;
        case O_CTO: bad = parse_int("--client-timeout", optarg, 0, day, &o->client_timeout_ms); break;
        case O_EXIT: bad = parse_choice("--on-exit", optarg, "fail", "handover", &o->exit_fails_requests); break;
        case O_HELP:
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "kv-router: unknown option or missing value: '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "kv-router: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!o->model_dir) {
        fprintf(stderr, "kv-router: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    router_opts opts;
    int rc = parse_args(argc, argv, &opts);
    if (rc >= 0)
        return rc;

    kv_stop_signals_install();

    router_state st;
    kv_err err;
    if (router_state_init(&st, &opts, NULL, &err)) {
        fprintf(stderr, "kv-router: %s\n", err.msg);
        return 1;
    }
    if (opts.ready_file && router_write_ready_file(&st, opts.ready_file, &err)) {
        fprintf(stderr, "kv-router: %s\n", err.msg);
        router_state_free(&st);
        return 1;
    }
    KV_INFO("router", "event=start model=%s fingerprint=%s context=%u max_prompt_tokens=%u client=%s control=%s",
            st.model.name, st.model.fingerprint, st.model.context, st.model.max_prompt, st.client_ep,
            st.control_ep);
    while (!kv_stop_requested())
        router_step(&st, 100);
    KV_INFO("router", "event=stop requests_total=%llu requests_failed=%llu requests_replanned=%llu in_flight=%zu "
            "on_exit=%s",
            (unsigned long long)st.requests_total, (unsigned long long)st.requests_failed,
            (unsigned long long)st.requests_replanned, st.reqs.n, opts.exit_fails_requests ? "fail" : "handover");
    router_state_free(&st);
    return 0;
}
