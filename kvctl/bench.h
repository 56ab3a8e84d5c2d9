/* kvctl bench's parts. The run (cmd_bench.c) submits the requests and fills one bench_req
 * per request; the workloads (bench_workload.c) make their prompts; the report
 * (bench_report.c) sums the requests up and prints text or JSON.
 *
 * Every workload is a set of units run concurrently (--concurrency C: C units at a time;
 * --rate R: units arrive as a Poisson process), each a chain of `turns` requests where
 * turn k + 1 is submitted when turn k ended. random and shared-prefix are units of one
 * turn (a unit = a request); multi-turn's units are conversations. Request i is turn
 * i % turns of unit i / turns. */
#ifndef KVCTL_BENCH_H
#define KVCTL_BENCH_H

#include <stdint.h>

#include "kv_client.h"

typedef enum { BENCH_RANDOM = 0, BENCH_SHARED_PREFIX, BENCH_MULTI_TURN } bench_workload;

/* The longest prompt a workload may build (the last turn of a conversation). */
#define BENCH_MAX_PROMPT (1L << 24)

typedef struct bench_cfg {
    const char *router;
    const char *key_file; /* --key: the client key (else KVSERVE_CLIENT_KEY, kvctl up's) */
    bench_workload workload;
    long units, turns;  /* requests = units * turns */
    long requests, concurrency, prompt_len, prefix_len, max_tokens, vocab, deadline_ms;
    double rate;
    uint64_t seed;
    int json, status_after;
} bench_cfg;

enum { BR_PENDING = 0, BR_RUNNING, BR_OK, BR_FAILED, BR_SKIPPED /* an earlier turn failed */ };

typedef struct bench_req {
    int state;
    double t_submit, t_first, t_last, t_end;
    uint32_t n_tokens;   /* generated tokens received */
    long prompt_tokens;  /* as sent */
    long new_tokens;     /* not in the previous turn's prompt (all of them in turn 0) */
    int error_code;
    int has_timings;
    kv_client_timings tm;
} bench_req;

/* ---- workloads (bench_workload.c) ---- */

const char *bench_workload_name(bench_workload w);
/* 0 and *out set, or -1 for an unknown name. */
int bench_workload_parse(const char *name, bench_workload *out);

/* n prompt ids in [3, vocab): a pure function of (seed, stream). Request i's own ids are
 * stream i (the random workload's prompts are exactly those); the shared prefix is
 * BENCH_PREFIX_STREAM. */
#define BENCH_PREFIX_STREAM (1ull << 63)
void bench_random_ids(uint64_t seed, uint64_t stream, long vocab, int32_t *ids, long n);

/* A conversation's history: the next turn's prompt is built in ids[0..len). */
typedef struct bench_conv {
    int32_t *ids;
    long len, cap;
    long prev_len; /* the previous turn's prompt length */
} bench_conv;

/* The longest prompt of a multi-turn conversation (its last turn), or of a flat request:
 * fits in a long, since every factor was bounded when the flags were parsed. */
long bench_max_prompt(const bench_cfg *b);
/* Starts conversation (allocates its history and writes the shared system prefix): 0, or
 * -1 out of memory. */
int bench_conv_begin(bench_conv *cv, const bench_cfg *b);
/* Appends request `index`'s new message (prompt_len ids of stream index). */
void bench_conv_add_message(bench_conv *cv, const bench_cfg *b, long index);
/* Appends generated tokens (those past the history's capacity are dropped: a reply never
 * has more than max_tokens of them). */
void bench_conv_add_reply(bench_conv *cv, const int32_t *tokens, size_t n);
void bench_conv_end(bench_conv *cv);

/* ---- report (bench_report.c) ---- */

/* The router's prefix-cache counters before and after the run (--status-after). */
typedef struct bench_cluster {
    int present;
    kv_status_metrics before, after;
} bench_cluster;

/* Prints the report of reqs[0..b->requests) to stdout (text, or one JSON line with
 * --json). duration_s: first submit to last end. 0, or -1 when out of memory. */
int bench_report(const bench_cfg *b, const bench_req *reqs, double duration_s, const bench_cluster *cl);

#endif
