/* Helper of test_partition.sh: a libkvclient program that runs --streams greedy requests at
 * once on one connection and checks each stream's token indices as they arrive: every event
 * must start at the index the stream already holds (an earlier index is a token served twice,
 * a later one a token lost). Prompts are --prompt-len token ids, different per stream and the
 * same for the same stream number in every run (so a run under faults can be compared with
 * a reference run), ids "<--tag>-<n>".
 * stdout, line-buffered (the script reads it while it runs):
 *   "submitted"                           all requests sent
 *   "midstream"                           once every stream holds --mark tokens (0 = never)
 *   "done id=ID finish=F error=E tokens=N repeats=R gaps=G last_ms=T ids=a,b,c"
 *                                         per stream as it ends (T: the wall clock, ms since
 *                                         the epoch, of its last event)
 *   "unfinished id=ID tokens=N"           per stream without an end within --run-ms
 *   "late id=ID index=I n=N"              an event after its stream ended (or for an id
 *                                         never sent): a token served twice
 * --hold-file F: after the streams end, go on reading (and reporting late events) until
 * file F exists or --run-ms is over.
 * --events FILE: one line per event, "T ID INDEX N" (T as above), for the script's timings.
 * Exit 0: every stream ended by length or EOS with no repeat, no gap and no late event; 1: otherwise;
 * 2: usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_client.h"

#define MAX_STREAMS 32
#define MAX_TOKENS 512 /* stories260K's context */

typedef struct stream {
    char id[KV_CLIENT_ID_MAX + 1];
    int32_t prompt[MAX_TOKENS];
    int32_t tokens[MAX_TOKENS];
    size_t n_tokens;
    unsigned repeats, gaps;
    int finished, finish_reason, error_code;
    long long last_ms;
} stream;

typedef struct options {
    const char *ep, *tag, *events, *hold_file;
    long streams, prompt_len, max_tokens, run_ms, mark, deadline_ms;
} options;

static int usage(void)
{
    fprintf(stderr, "usage: test_partition_client EP [--streams N] [--prompt-len L] [--max-tokens M] "
                    "[--tag T] [--mark K] [--run-ms N] [--deadline-ms N] [--events FILE] [--hold-file F]\n");
    return 2;
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Prompt ids in [3, 512) from a per-stream xorshift, so runs agree stream by stream. */
static void make_prompt(int32_t *p, long n, long stream_no)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(stream_no + 1);
    p[0] = 1; /* BOS */
    for (long i = 1; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (int32_t)(3 + x % 509);
    }
}

static int parse(int argc, char **argv, options *o)
{
    *o = (options){.ep = argv[1], .tag = "s", .streams = 8, .prompt_len = 16, .max_tokens = 200,
                   .run_ms = 60000};
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            return -1;
        const char *k = argv[i], *v = argv[i + 1];
        long n = strtol(v, NULL, 10);
        if (!strcmp(k, "--tag"))
            o->tag = v;
        else if (!strcmp(k, "--events"))
            o->events = v;
        else if (!strcmp(k, "--hold-file"))
            o->hold_file = v;
        else if (!strcmp(k, "--streams"))
            o->streams = n;
        else if (!strcmp(k, "--prompt-len"))
            o->prompt_len = n;
        else if (!strcmp(k, "--max-tokens"))
            o->max_tokens = n;
        else if (!strcmp(k, "--run-ms"))
            o->run_ms = n;
        else if (!strcmp(k, "--mark"))
            o->mark = n;
        else if (!strcmp(k, "--deadline-ms"))
            o->deadline_ms = n;
        else
            return -1;
    }
    if (o->streams < 1 || o->streams > MAX_STREAMS || o->prompt_len < 2 || o->max_tokens < 1 ||
        o->prompt_len + o->max_tokens > MAX_TOKENS || o->run_ms < 1 || o->mark < 0 || o->deadline_ms < 0 ||
        strlen(o->tag) > 64)
        return -1;
    return 0;
}

static stream *find(stream *s, long n, const char *id)
{
    for (long i = 0; i < n; i++)
        if (!strcmp(s[i].id, id))
            return &s[i];
    return NULL;
}

/* Takes one event's tokens into its stream, counting indices that repeat or skip. */
static void take(stream *s, const kv_client_event *ev, FILE *events, long long now)
{
    if (events)
        fprintf(events, "%lld %s %u %zu\n", now, s->id, ev->index, ev->n_tokens);
    if (ev->n_tokens) {
        if (ev->index < s->n_tokens)
            s->repeats++;
        else if (ev->index > s->n_tokens)
            s->gaps++;
        for (size_t i = 0; i < ev->n_tokens && s->n_tokens < MAX_TOKENS; i++)
            s->tokens[s->n_tokens++] = ev->tokens[i];
    }
    s->last_ms = now;
    if (ev->finished) {
        s->finished = 1;
        s->finish_reason = ev->finish_reason;
        s->error_code = ev->error_code;
    }
}

static void print_done(const stream *s)
{
    printf("done id=%s finish=%s error=%s tokens=%zu repeats=%u gaps=%u last_ms=%lld ids=", s->id,
           kv_client_finish_name(s->finish_reason), kv_client_error_name(s->error_code), s->n_tokens, s->repeats,
           s->gaps, s->last_ms);
    for (size_t i = 0; i < s->n_tokens; i++)
        printf("%s%d", i ? "," : "", (int)s->tokens[i]);
    printf("\n");
}

static int run(kv_client *c, const options *o, stream *s, FILE *events)
{
    for (long i = 0; i < o->streams; i++) {
        snprintf(s[i].id, sizeof s[i].id, "%s-%ld", o->tag, i);
        make_prompt(s[i].prompt, o->prompt_len, i);
        kv_client_request r;
        kv_client_request_init(&r);
        r.request_id = s[i].id;
        r.prompt_tokens = s[i].prompt;
        r.n_prompt_tokens = (size_t)o->prompt_len;
        r.max_tokens = (uint32_t)o->max_tokens;
        r.ignore_eos = 1;
        r.deadline_ms = (uint32_t)o->deadline_ms;
        if (kv_client_submit(c, &r, NULL, 5000)) {
            fprintf(stderr, "test_partition_client: submit %s: %s\n", s[i].id, kv_client_last_error(c));
            return 1;
        }
    }
    printf("submitted\n");
    long finished = 0, late = 0;
    int marked = o->mark == 0;
    for (long long end = mono_ms() + o->run_ms;
         (finished < o->streams || (o->hold_file && access(o->hold_file, F_OK) != 0)) && mono_ms() < end;) {
        kv_client_event ev;
        int rc = kv_client_next_event(c, 100, &ev);
        if (rc == KVC_ETIMEOUT)
            continue;
        if (rc != KVC_OK) {
            fprintf(stderr, "test_partition_client: %s\n", kv_client_last_error(c));
            return 1;
        }
        stream *st = ev.kind == KVC_EVENT_REPLY ? find(s, o->streams, ev.request_id) : NULL;
        if (!st || st->finished) {
            printf("late id=%s index=%u n=%zu finish=%s error=%s\n", ev.request_id, ev.index, ev.n_tokens,
                   kv_client_finish_name(ev.finish_reason), kv_client_error_name(ev.error_code));
            late++;
            continue;
        }
        take(st, &ev, events, wall_ms());
        if (st->finished) {
            finished++;
            print_done(st);
        }
        if (!marked) {
            long ready = 0;
            for (long i = 0; i < o->streams; i++)
                ready += s[i].n_tokens >= (size_t)o->mark;
            if (ready == o->streams) {
                marked = 1;
                printf("midstream\n");
            }
        }
    }
    int ok = finished == o->streams && late == 0;
    for (long i = 0; i < o->streams; i++) {
        if (!s[i].finished)
            printf("unfinished id=%s tokens=%zu\n", s[i].id, s[i].n_tokens);
        else if ((s[i].finish_reason != KVC_FINISH_LENGTH && s[i].finish_reason != KVC_FINISH_EOS) || s[i].repeats ||
                 s[i].gaps)
            ok = 0;
    }
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    options o;
    if (argc < 2 || parse(argc, argv, &o))
        return usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    FILE *events = NULL;
    if (o.events && !(events = fopen(o.events, "w"))) {
        perror(o.events);
        return 1;
    }
    stream *s = calloc((size_t)o.streams, sizeof *s);
    char err[256];
    kv_client *c = NULL;
    int rc = 1;
    if (!s)
        fprintf(stderr, "test_partition_client: out of memory\n");
    else if (kv_client_connect(o.ep, &c, err, sizeof err))
        fprintf(stderr, "test_partition_client: %s\n", err);
    else
        rc = run(c, &o, s, events);
    kv_client_close(c);
    free(s);
    if (events && fclose(events))
        rc = 1;
    return rc;
}
