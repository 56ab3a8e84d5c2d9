/* Cluster integration tests: real kv-router / kv-prefill / kv-decode processes on
 * loopback, driven through libkvclient (and raw ZeroMQ for malformed input).
 *
 *  1. parity: 32 concurrent requests (token-id prompts of 1..200 tokens cut from
 *     stories-like text, some text prompts, a few seeded sampling ones; max_tokens
 *     1..100) through 1P1D and 2P2D clusters are token-identical to in-process
 *     kv_generate on the same model; afterwards every KV block is free and no request
 *     is in flight.
 *  2. bad input (1P1D): prompt too long, unknown model, invalid sampling, token id out
 *     of vocab, empty prompt, cancel of an unknown id, cancel mid-stream, raw frames
 *     that are not envelopes, a wrong protocol version, a duplicate request id.
 *  3. a decode worker that never acknowledges KV (--fault drop-kv-ack): the request
 *     fails with DEADLINE_EXCEEDED, naming the missing ack or the router's
 *     --prefill-deadline-ms; no leak.
 *  4. a decode worker killed (SIGKILL) mid-stream (1P2D): the router re-plans its requests
 *     on the other decode worker (prompt + tokens already streamed, re-prefilled) and every
 *     stream goes on to the end, token-identical to the shared reference; nothing leaks.
 *  5. KV that arrives corrupt (--fault corrupt-kv-once): the router re-plans the request,
 *     which completes token-identical to the reference; nothing fails, nothing leaks.
 *  6. (workers on a GPU) a prefill worker with no KV transport in common with the decode
 *     worker: the router marks the pair and serves everything through the other one.
 *  7. fuzz (test_cluster_fuzz.c): thousands of valid and mutated messages of every kind on
 *     the router's and the decode worker's endpoints; every process survives, then serves
 *     the reference exactly, and nothing leaks.
 *  8. impostor (test_cluster_impostor.c, issue 13): processes connecting to the decode
 *     worker's KV endpoint under prefill-0's id never cut prefill-0 off; every request is
 *     served exactly, none fails.
 *  8. logprobs (test_cluster_logprobs.c): greedy and seeded requests with top-5 logprobs and
 *     prompt logprobs equal in-process kv_generate's (rel. err < 1e-4), streamed or not, also
 *     when a decode worker is killed mid-stream (every index's logprobs exactly once).
 *  9. router restart (test_cluster_restart.c, issue 13): the router killed (SIGKILL) mid-stream
 *     under 8 greedy streams (1P2D) and started again on its ports, alone or with decode-0
 *     killed too: every stream completes token-identical to the reference, the decode workers'
 *     running requests are adopted (not recomputed), nothing leaks.
 *
 * The workers can be other builds (KV_TEST_WORKER_SUFFIX, e.g. "-cudamock") with more flags
 * (KV_TEST_PREFILL_ARGS, KV_TEST_DECODE_ARGS: space-separated, e.g. a device and a KV
 * transport); every request's KV must then have taken KV_TEST_EXPECT_TRANSPORT (default zmq).
 *
 * Children are started with PR_SET_PDEATHSIG(SIGKILL), so they die with this process
 * even if it crashes; every scenario stops its cluster on all paths. Worker logs go to
 * a temporary directory and are printed when a scenario fails. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "generate.h"
#include "kv_client.h"
#include "kv_test.h"
#include "kv_time.h"
#include "kv_wire.h"
#include "model.h"
#include "test_cluster.h"
#include "tokenizer.h"

#ifndef KV_BIN_DIR
#error "KV_BIN_DIR must be defined (the directory holding kv-router, kv-prefill, kv-decode)"
#endif

#define N_PARITY 32

/* ---- processes ------------------------------------------------------------------- */

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* argv: NULL-terminated, argv[0] = binary name in kv_test_bin_dir(). */
proc *spawn(cluster *cl, const char *name, const char *const *argv)
{
    if (cl->n >= MAX_PROCS)
        return NULL;
    proc *p = &cl->p[cl->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log, sizeof p->log, "%s/%s.log", cl->dir, name);
    char exe[512];
    snprintf(exe, sizeof exe, "%s/%s", kv_test_bin_dir(), argv[0]);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return NULL;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(exe, (char *const *)argv);
        fprintf(stderr, "cannot exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    cl->n++;
    return p;
}

static void dump_logs(const cluster *cl)
{
    for (int i = 0; i < cl->n; i++) {
        FILE *f = fopen(cl->p[i].log, "r");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, len > 6000 ? len - 6000 : 0, SEEK_SET);
        fprintf(stderr, "----- %s log (last %ld bytes) -----\n", cl->p[i].name, len > 6000 ? 6000L : len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, stderr);
        fclose(f);
    }
}

void cluster_stop(cluster *cl)
{
    for (int i = 0; i < cl->n; i++)
        if (cl->p[i].pid > 0)
            kill(cl->p[i].pid, SIGTERM);
    double deadline = kv_now_s() + 5.0;
    for (int i = 0; i < cl->n; i++) {
        while (cl->p[i].pid > 0) {
            int st;
            pid_t r = waitpid(cl->p[i].pid, &st, WNOHANG);
            if (r == cl->p[i].pid || r < 0) {
                /* SIGTERM means a clean exit 0 (and, under ASan, no leak reports). */
                if (r == cl->p[i].pid)
                    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: wait status 0x%x after SIGTERM",
                              cl->p[i].name, st);
                cl->p[i].pid = 0;
            } else if (kv_now_s() > deadline) {
                fprintf(stderr, "%s did not exit within 5 s of SIGTERM: killing it\n", cl->p[i].name);
                kv_test_failures++;
                kill(cl->p[i].pid, SIGKILL);
                waitpid(cl->p[i].pid, NULL, 0);
                cl->p[i].pid = 0;
            } else {
                sleep_ms(10);
            }
        }
    }
    if (kv_test_failures > cl->failures_at_start)
        dump_logs(cl);
    for (int i = 0; i < cl->n; i++)
        unlink(cl->p[i].log);
    unlink(cl->ready);
    rmdir(cl->dir);
    cl->n = 0;
}

static int read_ready(cluster *cl)
{
    FILE *f = fopen(cl->ready, "r");
    if (!f)
        return -1;
    char line[512];
    int got = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!strncmp(line, "client=", 7) && strlen(line + 7) < sizeof cl->client_ep) {
            memcpy(cl->client_ep, line + 7, strlen(line + 7) + 1);
            got |= 1;
        } else if (!strncmp(line, "control=", 8) && strlen(line + 8) < sizeof cl->control_ep) {
            memcpy(cl->control_ep, line + 8, strlen(line + 8) + 1);
            got |= 2;
        }
    }
    fclose(f);
    return got == 3 ? 0 : -1;
}

int cluster_start(cluster *cl, const char *model, const char *const *extra)
{
    memset(cl, 0, sizeof *cl);
    cl->model = model;
    cl->failures_at_start = kv_test_failures;
    snprintf(cl->dir, sizeof cl->dir, "/tmp/kv-cluster-test-XXXXXX");
    if (!mkdtemp(cl->dir))
        return -1;
    snprintf(cl->ready, sizeof cl->ready, "%s/router.ready", cl->dir);
    char ready_arg[160];
    snprintf(ready_arg, sizeof ready_arg, "--ready-file=%s", cl->ready);
    const char *argv[32] = {"kv-router", "--model", model, "--listen", "tcp://127.0.0.1:0",
                            "--control", "tcp://127.0.0.1:0", ready_arg};
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    proc *r = spawn(cl, "router", argv);
    if (!r)
        return -1;
    double deadline = kv_now_s() + 10.0;
    while (read_ready(cl)) {
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = 0;
            fprintf(stderr, "kv-router exited during start-up (status 0x%x)\n", st);
            return -1;
        }
        if (kv_now_s() > deadline) {
            fprintf(stderr, "kv-router did not write its ready file within 10 s\n");
            return -1;
        }
        sleep_ms(10);
    }
    return 0;
}

/* The workers under test (see the top of the file). */
static const char *g_suffix = "";
static char g_prefill_args[256], g_decode_args[256];
static const char *g_expect_transport = "zmq";

/* Appends the space-separated words of s (a static buffer, cut in place) to argv. */
static int append_words(const char **argv, int n, int cap, char *s)
{
    for (char *w = strtok(s, " "); w && n < cap; w = strtok(NULL, " "))
        argv[n++] = w;
    return n;
}

proc *add_worker(cluster *cl, const char *bin, const char *id, const char *const *extra)
{
    char exe[64];
    snprintf(exe, sizeof exe, "%s%s", bin, g_suffix);
    const char *argv[32] = {exe, "--model", cl->model, "--router", cl->control_ep, "--id", id, "--threads", "1"};
    int n = 9;
    char words[256];
    snprintf(words, sizeof words, "%s", strcmp(bin, "kv-decode") ? g_prefill_args : g_decode_args);
    n = append_words(argv, n, 31, words);
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    return spawn(cl, id, argv);
}

/* ---- status helpers ---------------------------------------------------------------- */

static int count_healthy(kv_client *c, int role)
{
    kv_status *st;
    if (kv_client_status(c, 1000, &st))
        return -1;
    int n = 0;
    for (size_t i = 0; i < st->n_workers; i++)
        n += st->workers[i].healthy && (role == 0 || st->workers[i].role == role);
    kv_status_free(st);
    return n;
}

int wait_workers(kv_client *c, int n, int timeout_ms)
{
    double deadline = kv_now_s() + timeout_ms * 1e-3;
    while (kv_now_s() < deadline) {
        if (count_healthy(c, 0) == n)
            return 0;
        sleep_ms(50);
    }
    fprintf(stderr, "workers: %d healthy, wanted %d\n", count_healthy(c, 0), n);
    return -1;
}

int wait_idle(kv_client *c, int timeout_ms, const char *what)
{
    double deadline = kv_now_s() + timeout_ms * 1e-3;
    char *last = NULL;
    for (;;) {
        kv_status *st;
        if (!kv_client_status(c, 1000, &st)) {
            int idle = st->n_requests == 0 && st->n_workers > 0;
            for (size_t i = 0; i < st->n_workers; i++)
                idle &= st->workers[i].kv_blocks_used == 0 &&
                        st->workers[i].kv_blocks_free == st->workers[i].kv_blocks_total;
            free(last);
            last = kv_status_to_json(st);
            kv_status_free(st);
            if (idle) {
                free(last);
                return 0;
            }
        }
        if (kv_now_s() > deadline)
            break;
        sleep_ms(50);
    }
    fprintf(stderr, "%s: cluster not idle after %d ms: %s\n", what, timeout_ms, last ? last : "(no status)");
    free(last);
    return -1;
}

/* ---- reference ------------------------------------------------------------------- */

typedef struct treq {
    int32_t *prompt; /* token ids, or NULL for a text prompt */
    int n_prompt;
    const char *text;
    int32_t *ref_prompt; /* what the engine sees (text: BOS + encoded) */
    int n_ref_prompt;
    int max_tokens, ignore_eos, stream;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    int32_t expect[128];
    int n_expect;
    kv_finish_reason expect_finish;
    int32_t got[128];
    int n_got;
    int finished, finish_reason, error_code, has_timings, index_ok;
    kv_client_timings tm;
} treq;

typedef struct collect {
    int32_t *out;
    int n, cap;
} collect;

static int on_ref_token(void *ctx, int32_t t)
{
    collect *c = ctx;
    if (c->n < c->cap)
        c->out[c->n++] = t;
    return 0;
}

static int reference(kv_engine *e, treq *r)
{
    kv_gen_params p = {0};
    p.max_tokens = r->max_tokens;
    kv_sampling_default(&p.sampling);
    p.sampling.temperature = r->temperature;
    p.sampling.top_k = r->top_k;
    p.sampling.top_p = r->top_p > 0 ? r->top_p : 1.0f;
    p.sampling.seed = r->seed;
    p.ignore_eos = r->ignore_eos;
    collect c = {r->expect, 0, 128};
    kv_gen_stats st;
    kv_err err;
    if (kv_generate(e, r->ref_prompt, r->n_ref_prompt, &p, on_ref_token, &c, &st, &err)) {
        fprintf(stderr, "reference generation failed: %s\n", err.msg);
        return -1;
    }
    r->n_expect = c.n;
    r->expect_finish = st.finish;
    return 0;
}

static const char *const kStoriesText =
    "Tom had a little dog named Max. Max liked to run in the park and play with a red ball. One sunny day, "
    "Tom and Max went to the park. They saw a big tree with a bird in it. The bird sang a happy song. Max "
    "barked at the bird, and the bird flew away. Tom laughed and said, \"Max, you scared the bird!\" Max "
    "wagged his tail. Then they found a small pond. There were ducks in the pond. The ducks swam and said "
    "quack quack. Tom gave them some bread. The ducks were happy and ate the bread. When the sun went down, "
    "Tom and Max went home. Mom made a warm dinner. Tom ate his soup and Max ate his food. After dinner, Tom "
    "read a book about a brave lion. The lion was strong and kind. He helped all the animals in the forest. "
    "Tom wanted to be brave like the lion. He hugged Max and went to sleep. Max slept next to his bed. They "
    "dreamed about the park, the ducks and the happy bird.";

static const char *const kTextPrompts[] = {"Once upon a time", "Lily and Ben went to the beach.",
                                            "The cat sat on the mat and", "One day, a little boy named Tim"};

/* ---- scenario 1: parity ------------------------------------------------------------ */

static int first_difference(const treq *r)
{
    int d = 0;
    while (d < r->n_got && d < r->n_expect && r->got[d] == r->expect[d])
        d++;
    return d;
}

static void run_parity(kv_client *c, treq *reqs, int n, const char *label)
{
    char ids[N_PARITY][16];
    int submitted = 0;
    for (int i = 0; i < n; i++) {
        treq *r = &reqs[i];
        r->n_got = 0;
        r->finished = 0;
        r->index_ok = 1;
        r->has_timings = 0;
        kv_client_request q;
        kv_client_request_init(&q);
        snprintf(ids[i], sizeof ids[i], "p%d", i);
        q.request_id = ids[i];
        if (r->prompt) {
            q.prompt_tokens = r->prompt;
            q.n_prompt_tokens = (size_t)r->n_prompt;
        } else {
            q.prompt = r->text;
        }
        q.max_tokens = (uint32_t)r->max_tokens;
        q.ignore_eos = r->ignore_eos;
        q.stream = r->stream;
        q.temperature = r->temperature;
        q.top_k = (uint32_t)r->top_k;
        q.top_p = r->top_p;
        q.seed = r->seed;
        int rc = kv_client_submit(c, &q, NULL, 5000);
        CHECK_MSG(rc == KVC_OK, "%s: submit %d: %s", label, i, kv_client_last_error(c));
        submitted += rc == KVC_OK;
    }
    int done = 0;
    double deadline = kv_now_s() + 60.0;
    while (done < submitted && kv_now_s() < deadline) {
        kv_client_event ev;
        if (kv_client_next_event(c, 500, &ev))
            continue;
        if (ev.kind != KVC_EVENT_REPLY || ev.request_id[0] != 'p')
            continue;
        int i = atoi(ev.request_id + 1);
        if (i < 0 || i >= n)
            continue;
        treq *r = &reqs[i];
        if (ev.n_tokens && ev.index != (uint32_t)r->n_got)
            r->index_ok = 0;
        for (size_t k = 0; k < ev.n_tokens && r->n_got < 128; k++)
            r->got[r->n_got++] = ev.tokens[k];
        if (ev.has_timings) {
            r->has_timings = 1;
            r->tm = ev.timings;
        }
        if (ev.finished) {
            r->finished = 1;
            r->finish_reason = ev.finish_reason;
            r->error_code = ev.error_code;
            if (ev.finish_reason == KVC_FINISH_ERROR)
                fprintf(stderr, "%s: request %d failed: %s: %s\n", label, i, kv_client_error_name(ev.error_code),
                        ev.error_message);
            done++;
        }
    }
    CHECK_MSG(done == n, "%s: %d of %d requests finished within 60 s", label, done, n);
    int identical = 0, local = 0;
    uint64_t cached = 0;
    for (int i = 0; i < n; i++) {
        treq *r = &reqs[i];
        if (!r->finished)
            continue;
        int same = r->n_got == r->n_expect && !memcmp(r->got, r->expect, (size_t)r->n_got * sizeof *r->got);
        int want_finish = r->expect_finish == KV_FINISH_EOS ? KVC_FINISH_EOS
                          : r->expect_finish == KV_FINISH_CONTEXT ? KVC_FINISH_CONTEXT
                                                                  : KVC_FINISH_LENGTH;
        CHECK_MSG(same, "%s: request %d (prompt %d tokens%s, max %d, T=%.1f): %d tokens, expected %d; first "
                  "difference at %d", label, i, r->n_ref_prompt, r->prompt ? "" : " text", r->max_tokens,
                  r->temperature, r->n_got, r->n_expect, first_difference(r));
        CHECK_MSG(r->finish_reason == want_finish, "%s: request %d finished %s, expected %s", label, i,
                  kv_client_finish_name(r->finish_reason), kv_client_finish_name(want_finish));
        CHECK_MSG(r->index_ok, "%s: request %d: chunk indexes out of order", label, i);
        CHECK_MSG(r->has_timings, "%s: request %d: no timings on the final reply", label, i);
        if (r->has_timings) {
            CHECK_MSG(r->tm.generated_tokens == (uint32_t)r->n_got, "%s: request %d: timings say %u tokens, got %d",
                      label, i, r->tm.generated_tokens, r->n_got);
            CHECK_MSG(r->tm.prompt_tokens == (uint32_t)r->n_ref_prompt, "%s: request %d: timings say prompt %u, "
                      "expected %d", label, i, r->tm.prompt_tokens, r->n_ref_prompt);
            if (r->tm.local_prefill) {
                /* A prompt the decode worker mostly held (a repeated prompt): it prefilled the
                 * tail itself, nothing was shipped. */
                CHECK_MSG(r->tm.decode_cached_tokens > 0 && r->tm.kv_bytes == 0 && !r->tm.kv_transport[0],
                          "%s: request %d: prefilled by the decode worker with %u cached tokens, %llu KV bytes",
                          label, i, r->tm.decode_cached_tokens, (unsigned long long)r->tm.kv_bytes);
                local++;
            } else {
                CHECK_MSG(r->tm.kv_bytes > 0, "%s: request %d: no KV bytes reported", label, i);
                CHECK_MSG(!strcmp(r->tm.kv_transport, g_expect_transport),
                          "%s: request %d: KV over '%s', expected %s", label, i, r->tm.kv_transport,
                          g_expect_transport);
            }
            CHECK_MSG(r->tm.decode_cached_tokens < (uint32_t)r->n_ref_prompt &&
                          r->tm.prefill_cached_tokens < (uint32_t)r->n_ref_prompt,
                      "%s: request %d: %u / %u cached tokens of a %d-token prompt", label, i,
                      r->tm.decode_cached_tokens, r->tm.prefill_cached_tokens, r->n_ref_prompt);
            cached += r->tm.decode_cached_tokens + r->tm.prefill_cached_tokens;
        }
        identical += same;
    }
    fprintf(stderr, "%s: %d/%d requests token-identical to in-process generation (%d prefilled by the decode "
            "worker, %llu prompt tokens from prefix caches)\n", label, identical, n, local, (unsigned long long)cached);
}

static void scenario_parity(const char *model, int n_prefill, int n_decode, treq *reqs, int n, int with_bad_input);

/* ---- scenario 2: bad input ----------------------------------------------------------- */

/* Submits r and waits for its final event; returns the finish reason (error in *code). */
static int one_request(kv_client *c, kv_client_request *r, int *code, int timeout_ms)
{
    kv_client_result res;
    kv_client_generate(c, r, NULL, NULL, &res, timeout_ms);
    *code = res.error_code;
    int fin = res.finish_reason;
    kv_client_result_free(&res);
    return fin;
}

static void *raw_socket(void *ctx, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, ep);
    return s;
}

/* Receives envelopes until one satisfying want() arrives (others are skipped). */
static Kvserve__Envelope *raw_wait(void *s, int timeout_ms, int body_case, const char *request_id)
{
    double deadline = kv_now_s() + timeout_ms * 1e-3;
    while (kv_now_s() < deadline) {
        kv_wire_msg m;
        kv_err err;
        int left = (int)((deadline - kv_now_s()) * 1e3) + 1;
        if (kv_wire_recv(s, 0, left, &m, &err))
            continue;
        Kvserve__Envelope *e = m.env;
        m.env = NULL;
        kv_wire_msg_close(&m);
        const char *id = e->body_case == KVSERVE__ENVELOPE__BODY_REPLY ? e->reply->request_id
                         : e->body_case == KVSERVE__ENVELOPE__BODY_ERROR ? e->error->request_id
                                                                          : "";
        if ((int)e->body_case == body_case && (!request_id || !strcmp(id ? id : "", request_id)))
            return e;
        kvserve__envelope__free_unpacked(e, NULL);
    }
    return NULL;
}

static int raw_generate(void *s, const char *id, const int32_t *toks, size_t n, uint32_t max_tokens)
{
    Kvserve__Envelope env;
    Kvserve__GenerateRequest g;
    Kvserve__SamplingParams sp;
    kv_wire_envelope_init(&env);
    kvserve__generate_request__init(&g);
    kvserve__sampling_params__init(&sp);
    g.request_id = (char *)id;
    g.prompt_tokens = (int32_t *)toks;
    g.n_prompt_tokens = n;
    g.max_tokens = max_tokens;
    g.ignore_eos = 1;
    g.stream = 1;
    g.sampling = &sp;
    env.body_case = KVSERVE__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    kv_err err;
    return kv_wire_send(s, NULL, &env, NULL, 0, 2000, &err);
}

static void bad_input_tests(const cluster *cl, kv_client *c)
{
    int code, fin;
    kv_client_request r;
    int32_t toks[600];
    for (int i = 0; i < 600; i++)
        toks[i] = 3 + (i * 7) % 500;

    /* Prompt longer than the context (512). */
    kv_client_request_init(&r);
    r.prompt_tokens = toks;
    r.n_prompt_tokens = 600;
    r.max_tokens = 4;
    fin = one_request(c, &r, &code, 5000);
    CHECK_MSG(fin == KVC_FINISH_ERROR && code == KVC_ERR_PROMPT_TOO_LONG, "oversized prompt: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));

    /* Unknown model. */
    kv_client_request_init(&r);
    r.prompt = "Once upon a time";
    r.max_tokens = 4;
    r.model = "no-such-model";
    fin = one_request(c, &r, &code, 5000);
    CHECK_MSG(fin == KVC_FINISH_ERROR && code == KVC_ERR_UNKNOWN_MODEL, "unknown model: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));

    /* Invalid sampling: temperature out of range, top_p > 1. */
    kv_client_request_init(&r);
    r.prompt_tokens = toks;
    r.n_prompt_tokens = 8;
    r.max_tokens = 4;
    r.temperature = 150.0f;
    fin = one_request(c, &r, &code, 5000);
    CHECK_MSG(fin == KVC_FINISH_ERROR && code == KVC_ERR_INVALID_ARGUMENT, "temperature 150: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));
    r.temperature = 0.5f;
    r.top_p = 1.5f;
    fin = one_request(c, &r, &code, 5000);
    CHECK_MSG(fin == KVC_FINISH_ERROR && code == KVC_ERR_INVALID_ARGUMENT, "top_p 1.5: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));

    /* Token id outside the vocabulary; empty prompt. */
    int32_t bad_tok[3] = {1, 9999, 5};
    kv_client_request_init(&r);
    r.prompt_tokens = bad_tok;
    r.n_prompt_tokens = 3;
    r.max_tokens = 4;
    fin = one_request(c, &r, &code, 5000);
    CHECK_MSG(fin == KVC_FINISH_ERROR && code == KVC_ERR_INVALID_ARGUMENT, "token 9999: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));
    kv_client_request_init(&r);
    r.prompt = "";
    r.max_tokens = 4;
    fin = one_request(c, &r, &code, 5000);
    CHECK_MSG(fin == KVC_FINISH_ERROR && code == KVC_ERR_INVALID_ARGUMENT, "empty prompt: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));

    /* Cancel of an unknown id. */
    CHECK(kv_client_cancel(c, "no-such-request", 2000) == KVC_OK);
    {
        kv_client_event ev;
        int got = 0;
        double deadline = kv_now_s() + 3.0;
        while (!got && kv_now_s() < deadline)
            if (!kv_client_next_event(c, 200, &ev) && ev.kind == KVC_EVENT_ERROR &&
                !strcmp(ev.request_id, "no-such-request"))
                got = ev.error_code == KVC_ERR_UNKNOWN_REQUEST ? 1 : -1;
        CHECK_MSG(got == 1, "cancel of an unknown id: %s", got ? "wrong error code" : "no Error reply");
    }

    /* Cancel mid-stream (retried: a fast stream may finish before the cancel lands). */
    int cancelled = 0;
    for (int attempt = 0; attempt < 3 && !cancelled; attempt++) {
        kv_client_request_init(&r);
        r.prompt_tokens = toks;
        r.n_prompt_tokens = 10;
        r.max_tokens = 500;
        r.ignore_eos = 1;
        char id[KV_CLIENT_ID_MAX + 1];
        CHECK(kv_client_submit(c, &r, id, 2000) == KVC_OK);
        int sent_cancel = 0, finished = 0, n_tok = 0;
        double deadline = kv_now_s() + 10.0;
        kv_client_event ev;
        while (!finished && kv_now_s() < deadline) {
            if (kv_client_next_event(c, 200, &ev) || strcmp(ev.request_id, id))
                continue;
            n_tok += (int)ev.n_tokens;
            if (ev.finished) {
                finished = 1;
                cancelled = ev.finish_reason == KVC_FINISH_CANCELLED;
                if (!cancelled)
                    fprintf(stderr, "cancel attempt %d: finished %s after %d tokens\n", attempt,
                            kv_client_finish_name(ev.finish_reason), n_tok);
            } else if (n_tok > 0 && !sent_cancel) {
                CHECK(kv_client_cancel(c, id, 2000) == KVC_OK);
                sent_cancel = 1;
            }
        }
        CHECK_MSG(finished, "cancelled stream did not end within 10 s");
    }
    CHECK_MSG(cancelled, "a cancel mid-stream never produced FINISH_CANCELLED");

    /* Raw ZeroMQ: garbage, a wrong version, a duplicate request id; the router keeps serving. */
    void *ctx = zmq_ctx_new();
    void *s = raw_socket(ctx, cl->client_ep);
    zmq_send(s, "definitely not protobuf \xff\xff\xff", 27, 0);
    Kvserve__Envelope *e = raw_wait(s, 3000, KVSERVE__ENVELOPE__BODY_ERROR, NULL);
    CHECK_MSG(e && e->error->code == KVSERVE__ERROR_CODE__BAD_MESSAGE, "garbage frame: %s",
              e ? kv_client_error_name((int)e->error->code) : "no Error reply");
    if (e)
        kvserve__envelope__free_unpacked(e, NULL);
    {
        Kvserve__Envelope env;
        Kvserve__StatusRequest sr;
        kv_wire_envelope_init(&env);
        kvserve__status_request__init(&sr);
        env.version = 99;
        env.body_case = KVSERVE__ENVELOPE__BODY_STATUS;
        env.status = &sr;
        kv_err err;
        kv_wire_send(s, NULL, &env, NULL, 0, 2000, &err);
        /* kv_wire_recv refuses a wrong version, so the reply (version 1) parses. */
        e = raw_wait(s, 3000, KVSERVE__ENVELOPE__BODY_ERROR, NULL);
        CHECK_MSG(e && e->error->code == KVSERVE__ERROR_CODE__VERSION_MISMATCH, "version 99: %s",
                  e ? kv_client_error_name((int)e->error->code) : "no Error reply");
        if (e)
            kvserve__envelope__free_unpacked(e, NULL);
    }
    CHECK(raw_generate(s, "dup", toks, 10, 500) == KV_OK);
    CHECK(raw_generate(s, "dup", toks, 10, 500) == KV_OK);
    {
        /* Expect one FINISH_ERROR DUPLICATE_REQUEST reply for "dup"; then cancel the first. */
        double deadline = kv_now_s() + 5.0;
        int dup = 0, ended = 0;
        while (kv_now_s() < deadline && !dup) {
            e = raw_wait(s, 500, KVSERVE__ENVELOPE__BODY_REPLY, "dup");
            if (!e)
                continue;
            if (e->reply->finish_reason == KVSERVE__FINISH_REASON__FINISH_ERROR && e->reply->error &&
                e->reply->error->code == KVSERVE__ERROR_CODE__DUPLICATE_REQUEST)
                dup = 1;
            else if (e->reply->finish_reason != KVSERVE__FINISH_REASON__FINISH_NONE)
                ended = 1;
            kvserve__envelope__free_unpacked(e, NULL);
        }
        CHECK_MSG(dup, "a second request 'dup' while the first is in flight got no DUPLICATE_REQUEST");
        if (!ended) {
            Kvserve__Envelope env;
            Kvserve__CancelRequest cr;
            kv_wire_envelope_init(&env);
            kvserve__cancel_request__init(&cr);
            cr.request_id = "dup";
            env.body_case = KVSERVE__ENVELOPE__BODY_CANCEL;
            env.cancel = &cr;
            kv_err err;
            kv_wire_send(s, NULL, &env, NULL, 0, 2000, &err);
            deadline = kv_now_s() + 5.0;
            while (!ended && kv_now_s() < deadline) {
                e = raw_wait(s, 500, KVSERVE__ENVELOPE__BODY_REPLY, "dup");
                if (e && e->reply->finish_reason != KVSERVE__FINISH_REASON__FINISH_NONE)
                    ended = 1;
                if (e)
                    kvserve__envelope__free_unpacked(e, NULL);
            }
            CHECK_MSG(ended, "request 'dup' did not end after its cancel");
        }
    }
    zmq_close(s);
    zmq_ctx_term(ctx);

    /* Still serving after all that. */
    kv_client_request_init(&r);
    r.prompt = "Once upon a time";
    r.max_tokens = 8;
    fin = one_request(c, &r, &code, 10000);
    CHECK_MSG(fin == KVC_FINISH_LENGTH || fin == KVC_FINISH_EOS, "router after bad input: %s/%s",
              kv_client_finish_name(fin), kv_client_error_name(code));
}

static void scenario_parity(const char *model, int n_prefill, int n_decode, treq *reqs, int n, int with_bad_input)
{
    char label[32];
    snprintf(label, sizeof label, "%dP%dD", n_prefill, n_decode);
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    if (cluster_start(&cl, model, NULL)) {
        CHECK_MSG(0, "%s: router start failed", label);
        goto out;
    }
    for (int i = 0; i < n_prefill; i++) {
        char id[32];
        snprintf(id, sizeof id, "prefill-%d", i);
        CHECK(add_worker(&cl, "kv-prefill", id, NULL) != NULL);
    }
    for (int i = 0; i < n_decode; i++) {
        char id[32];
        snprintf(id, sizeof id, "decode-%d", i);
        CHECK(add_worker(&cl, "kv-decode", id, NULL) != NULL);
    }
    char errbuf[256];
    if (kv_client_connect(cl.client_ep, &c, errbuf, sizeof errbuf)) {
        CHECK_MSG(0, "%s: %s", label, errbuf);
        goto out;
    }
    if (wait_workers(c, n_prefill + n_decode, 15000)) {
        CHECK_MSG(0, "%s: workers did not register", label);
        goto out;
    }
    run_parity(c, reqs, n, label);
    CHECK_MSG(wait_idle(c, 2000, label) == 0, "%s: KV blocks or requests left after the parity run", label);
    if (with_bad_input) {
        bad_input_tests(&cl, c);
        CHECK_MSG(wait_idle(c, 2000, "bad input") == 0, "%s: KV blocks or requests left after the bad input", label);
    }
    fprintf(stderr, "%s scenario: %.2f s\n", label, kv_now_s() - t0);
out:
    kv_client_close(c);
    cluster_stop(&cl);
}

/* ---- scenario 3: KV never acknowledged --------------------------------------------- */

/* A client connected to the cluster once n workers are healthy: 0, or -1 after a failed
 * CHECK naming label. */
static int connect_when_up(cluster *cl, kv_client **c, int n, const char *label)
{
    char errbuf[256];
    if (kv_client_connect(cl->client_ep, c, errbuf, sizeof errbuf) || wait_workers(*c, n, 15000)) {
        CHECK_MSG(0, "%s: cluster did not come up", label);
        return -1;
    }
    return 0;
}

int start_1p1d(cluster *cl, kv_client **c, const char *model, const char *const *router_flags,
               const char *const *decode_extra, const char *label)
{
    if (cluster_start(cl, model, router_flags)) {
        CHECK_MSG(0, "%s: router start failed", label);
        return -1;
    }
    CHECK(add_worker(cl, "kv-prefill", "prefill-0", NULL) != NULL);
    CHECK(add_worker(cl, "kv-decode", "decode-0", decode_extra) != NULL);
    return connect_when_up(cl, c, 2, label);
}

static void scenario_drop_kv_ack(const char *model)
{
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    const char *router_flags[] = {"--prefill-deadline-ms", "3000", NULL};
    const char *fault[] = {"--fault", "drop-kv-ack", NULL};
    if (start_1p1d(&cl, &c, model, router_flags, fault, "drop-kv-ack"))
        goto out;
    int32_t toks[40];
    for (int i = 0; i < 40; i++)
        toks[i] = 3 + i * 11 % 500;
    kv_client_request r;
    kv_client_request_init(&r);
    r.prompt_tokens = toks;
    r.n_prompt_tokens = 40;
    r.max_tokens = 16;
    kv_client_result res;
    double ts = kv_now_s();
    int rc = kv_client_generate(c, &r, NULL, NULL, &res, 10000);
    double took = kv_now_s() - ts;
    CHECK_MSG(rc == KVC_EREMOTE && res.finish_reason == KVC_FINISH_ERROR &&
                  res.error_code == KVC_ERR_DEADLINE_EXCEEDED,
              "drop-kv-ack: rc %d finish %s error %s (%s)", rc, kv_client_finish_name(res.finish_reason),
              kv_client_error_name(res.error_code), res.error_message);
    /* The stage that timed out, from the message rather than the clock (no timing
     * assertions): the prefill worker's ack wait, or the router's prefill deadline. */
    CHECK_MSG(strstr(res.error_message, "no KvAck from decode worker decode-0") ||
                  strstr(res.error_message, "did not report PrefillDone within 3000 ms"),
              "drop-kv-ack: failed for another reason: %s", res.error_message);
    CHECK_MSG(wait_idle(c, 4000, "drop-kv-ack") == 0, "drop-kv-ack: blocks leaked");
    fprintf(stderr, "drop-kv-ack scenario: failed after %.2f s with \"%s\"; %.2f s in all\n", took,
            res.error_message, kv_now_s() - t0);
    kv_client_result_free(&res);
out:
    kv_client_close(c);
    cluster_stop(&cl);
}

/* ---- scenario 4: decode worker killed mid-stream ------------------------------------ */

#define KILL_N 4
#define KILL_TOKENS 240

static void scenario_kill_decode(const char *model, const char *models)
{
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    int32_t ref[300];
    int n_ref = kv_test_reference_tokens(models, ref, 300);
    CHECK_MSG(n_ref >= 5 + KILL_TOKENS, "kill-decode: reference tokens missing");
    const char *router_flags[] = {"--worker-timeout-ms", "1000", "--heartbeat-ms", "200", NULL};
    if (n_ref < 5 + KILL_TOKENS || cluster_start(&cl, model, router_flags)) {
        CHECK_MSG(0, "kill-decode: router start failed");
        goto out;
    }
    CHECK(add_worker(&cl, "kv-prefill", "prefill-0", NULL) != NULL);
    proc *d = add_worker(&cl, "kv-decode", "decode-0", NULL);
    CHECK(add_worker(&cl, "kv-decode", "decode-1", NULL) != NULL);
    char errbuf[256];
    if (!d || kv_client_connect(cl.client_ep, &c, errbuf, sizeof errbuf) || wait_workers(c, 3, 15000)) {
        CHECK_MSG(0, "kill-decode: cluster did not come up");
        goto out;
    }
    /* Greedy on the reference prompt: every stream must reproduce the reference. */
    char ids[KILL_N][KV_CLIENT_ID_MAX + 1];
    int32_t got[KILL_N][KILL_TOKENS];
    int n_got[KILL_N] = {0}, in_order[KILL_N], fin[KILL_N] = {0}, code[KILL_N] = {0}, finished[KILL_N] = {0};
    for (int i = 0; i < KILL_N; i++) {
        in_order[i] = 1;
        kv_client_request r;
        kv_client_request_init(&r);
        r.prompt_tokens = ref;
        r.n_prompt_tokens = 5;
        r.max_tokens = KILL_TOKENS;
        r.ignore_eos = 1;
        CHECK(kv_client_submit(c, &r, ids[i], 2000) == KVC_OK);
    }
    int killed = 0, done = 0, on_victim = 0;
    double t_kill = 0, deadline = kv_now_s() + 20.0;
    while (done < KILL_N && kv_now_s() < deadline) {
        kv_client_event ev;
        if (kv_client_next_event(c, 200, &ev) || ev.kind != KVC_EVENT_REPLY)
            continue;
        for (int i = 0; i < KILL_N; i++) {
            if (strcmp(ev.request_id, ids[i]))
                continue;
            if (ev.index != (uint32_t)n_got[i])
                in_order[i] = 0;
            for (size_t k = 0; k < ev.n_tokens && n_got[i] < KILL_TOKENS; k++)
                got[i][n_got[i]++] = ev.tokens[k];
            if (ev.finished) {
                finished[i] = 1;
                fin[i] = ev.finish_reason;
                code[i] = ev.error_code;
                done++;
            }
        }
        if (!killed && ev.n_tokens) {
            /* Which requests decode-0 holds right now: those must survive its death. */
            kv_status *st;
            if (!kv_client_status(c, 1000, &st)) {
                for (size_t i = 0; i < st->n_requests; i++)
                    on_victim += st->requests[i].decode_worker && !strcmp(st->requests[i].decode_worker, "decode-0");
                kv_status_free(st);
            }
            kill(d->pid, SIGKILL);
            waitpid(d->pid, NULL, 0);
            d->pid = 0;
            killed = 1;
            t_kill = kv_now_s();
        }
    }
    CHECK_MSG(killed, "kill-decode: no token ever arrived");
    CHECK_MSG(on_victim > 0, "kill-decode: decode-0 held no request when killed (nothing re-planned)");
    CHECK_MSG(done == KILL_N, "kill-decode: %d of %d requests ended within 20 s", done, KILL_N);
    for (int i = 0; i < KILL_N; i++) {
        if (!finished[i])
            continue;
        CHECK_MSG(fin[i] == KVC_FINISH_LENGTH, "kill-decode: request %d finished %s (%s)", i,
                  kv_client_finish_name(fin[i]), kv_client_error_name(code[i]));
        CHECK_MSG(in_order[i], "kill-decode: request %d: stream indices not contiguous", i);
        CHECK_MSG(n_got[i] == KILL_TOKENS, "kill-decode: request %d got %d tokens", i, n_got[i]);
        int first_bad = -1;
        for (int k = 0; k < n_got[i] && first_bad < 0; k++)
            if (got[i][k] != ref[5 + k])
                first_bad = k;
        CHECK_MSG(first_bad < 0, "kill-decode: request %d token %d differs from the reference", i, first_bad);
    }
    /* Nothing in flight; the dead worker is gone (or unhealthy); the live workers are clean. */
    double idle_deadline = kv_now_s() + 3.0;
    int ok = 0;
    while (!ok && kv_now_s() < idle_deadline) {
        kv_status *st;
        if (!kv_client_status(c, 1000, &st)) {
            ok = st->n_requests == 0;
            for (size_t i = 0; i < st->n_workers; i++) {
                if (!strcmp(st->workers[i].worker_id, "decode-0"))
                    ok &= !st->workers[i].healthy;
                else
                    ok &= st->workers[i].kv_blocks_used == 0;
            }
            kv_status_free(st);
        }
        if (!ok)
            sleep_ms(50);
    }
    CHECK_MSG(ok, "kill-decode: requests in flight or blocks held after the worker died");
    fprintf(stderr, "kill-decode scenario: %d requests on the killed worker, all %d streams completed %.2f s after "
                    "the kill; %.2f s in all\n", on_victim, KILL_N, kv_now_s() - t_kill, kv_now_s() - t0);
out:
    kv_client_close(c);
    cluster_stop(&cl);
}

void serve_reference(kv_client *c, const int32_t *ref, int n, int tokens, const char *label)
{
    for (int i = 0; i < n; i++) {
        kv_client_request r;
        kv_client_request_init(&r);
        r.prompt_tokens = ref;
        r.n_prompt_tokens = 5;
        r.max_tokens = (uint32_t)tokens;
        r.ignore_eos = 1;
        kv_client_result res;
        int rc = kv_client_generate(c, &r, NULL, NULL, &res, 20000);
        CHECK_MSG(rc == KVC_OK && res.finish_reason == KVC_FINISH_LENGTH && res.n_tokens == (size_t)tokens,
                  "%s: request %d: rc %d finish %s error %s (%s), %zu tokens", label, i, rc,
                  kv_client_finish_name(res.finish_reason), kv_client_error_name(res.error_code),
                  res.error_message, res.n_tokens);
        int first_bad = -1;
        for (size_t k = 0; rc == KVC_OK && k < res.n_tokens && first_bad < 0; k++)
            if (res.tokens[k] != ref[5 + k])
                first_bad = (int)k;
        CHECK_MSG(first_bad < 0, "%s: request %d token %d differs from the reference", label, i, first_bad);
        kv_client_result_free(&res);
    }
}

/* serve_reference, then the status must count one re-plan and no failure, and the cluster
 * go idle. */
static void expect_served_with_one_replan(kv_client *c, const int32_t *ref, int n, int tokens, const char *label)
{
    serve_reference(c, ref, n, tokens, label);
    kv_status *st = NULL;
    CHECK(kv_client_status(c, 2000, &st) == KVC_OK);
    if (st) {
        CHECK_MSG(st->requests_replanned == 1 && st->requests_failed == 0,
                  "%s: %llu re-planned, %llu failed (expected 1 and 0)", label,
                  (unsigned long long)st->requests_replanned, (unsigned long long)st->requests_failed);
        kv_status_free(st);
    }
    CHECK_MSG(wait_idle(c, 4000, label) == 0, "%s: blocks leaked", label);
}

/* ---- scenario 5: KV arrives corrupt once ----------------------------------------------- */

/* The decode worker reports the first KV it gets as corrupt (--fault corrupt-kv-once): the
 * router re-plans that request instead of failing it, and every request, that one too,
 * completes token-identical to the shared reference; the status shows one re-plan and no
 * failure; nothing leaks. */
static void scenario_corrupt_kv(const char *model, const char *models)
{
    enum { N = 3, TOKENS = 24 };
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    int32_t ref[300];
    int n_ref = kv_test_reference_tokens(models, ref, 300);
    CHECK_MSG(n_ref >= 5 + TOKENS, "corrupt-kv: reference tokens missing");
    const char *fault[] = {"--fault", "corrupt-kv-once", NULL};
    memset(&cl, 0, sizeof cl);
    if (n_ref < 5 + TOKENS || start_1p1d(&cl, &c, model, NULL, fault, "corrupt-kv"))
        goto out;
    expect_served_with_one_replan(c, ref, N, TOKENS, "corrupt-kv");
    fprintf(stderr, "corrupt-kv scenario: %d requests served, the corrupt one re-planned; %.2f s\n", N,
            kv_now_s() - t0);
out:
    kv_client_close(c);
    cluster_stop(&cl);
}

/* ---- scenario 6: a pair with no KV transport in common ------------------------------------ */

/* Workers on one GPU; prefill-0 insists on nccl (which needs two GPUs), prefill-1 takes
 * what works. The first request goes to prefill-0 (ties go by id), whose handshake finds
 * no transport in common: the router marks that pair and re-plans the request to
 * prefill-1; every later request goes to prefill-1 at once. All complete token-identical
 * to the shared reference, with one re-plan and no failure. Needs the workers on a GPU
 * (KV_TEST_PREFILL_ARGS with --device cuda) and NCCL (KVSERVE_NCCL_LIB). */
static void scenario_no_transport(const char *model, const char *models)
{
    enum { N = 3, TOKENS = 16 };
    if (!strstr(g_prefill_args, "--device cuda") || !getenv("KVSERVE_NCCL_LIB")) {
        fprintf(stderr, "no-transport scenario: skipped (needs workers on a GPU and KVSERVE_NCCL_LIB)\n");
        return;
    }
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    int32_t ref[300];
    int n_ref = kv_test_reference_tokens(models, ref, 300);
    CHECK_MSG(n_ref >= 5 + TOKENS, "no-transport: reference tokens missing");
    memset(&cl, 0, sizeof cl);
    const char *nccl_only[] = {"--kv-transport", "nccl", NULL};
    if (n_ref < 5 + TOKENS || cluster_start(&cl, model, NULL)) {
        CHECK_MSG(0, "no-transport: router start failed");
        goto out;
    }
    CHECK(add_worker(&cl, "kv-prefill", "prefill-0", nccl_only) != NULL);
    CHECK(add_worker(&cl, "kv-prefill", "prefill-1", NULL) != NULL);
    CHECK(add_worker(&cl, "kv-decode", "decode-0", NULL) != NULL);
    if (connect_when_up(&cl, &c, 3, "no-transport"))
        goto out;
    expect_served_with_one_replan(c, ref, N, TOKENS, "no-transport");
    fprintf(stderr, "no-transport scenario: %d requests served past a refused pair; %.2f s\n", N, kv_now_s() - t0);
out:
    kv_client_close(c);
    cluster_stop(&cl);
}

/* ---- main -------------------------------------------------------------------------- */

static int scenario_on(const char *only, const char *name)
{
    if (!only)
        return 1;
    size_t n = strlen(name);
    for (const char *p = only; (p = strstr(p, name)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *models = kv_test_models_dir();
    if (!models)
        KV_TEST_SKIP("shared models not found (KVSERVE_TEST_MODELS or ../shared/models)");
    char model[1024], tok_path[1100], probe[600];
    snprintf(model, sizeof model, "%s/stories260K", models);
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", model);
    const char *env = getenv("KV_TEST_WORKER_SUFFIX");
    g_suffix = env ? env : "";
    snprintf(g_prefill_args, sizeof g_prefill_args, "%s", (env = getenv("KV_TEST_PREFILL_ARGS")) ? env : "");
    snprintf(g_decode_args, sizeof g_decode_args, "%s", (env = getenv("KV_TEST_DECODE_ARGS")) ? env : "");
    if ((env = getenv("KV_TEST_EXPECT_TRANSPORT")))
        g_expect_transport = env;
    const char *bins[] = {"kv-router", "kv-prefill", "kv-decode"};
    for (int i = 0; i < 3; i++) {
        snprintf(probe, sizeof probe, "%s/%s%s", kv_test_bin_dir(), bins[i], i ? g_suffix : "");
        if (access(probe, X_OK))
            KV_TEST_SKIP("%s not built", probe);
    }
    /* Scenarios to run, comma-separated (default: all). */
    const char *only = getenv("KV_CLUSTER_ONLY");

    kv_err err;
    kv_model *m = NULL;
    kv_tokenizer *tok = NULL;
    kv_engine *e = NULL;
    kv_engine_options eo;
    kv_engine_options_default(&eo);
    eo.n_threads = 1;
    if (kv_model_load(model, &m, &err) || kv_tokenizer_load(tok_path, &tok, &err) ||
        kv_engine_create(m, &eo, &e, &err)) {
        fprintf(stderr, "cannot load %s: %s\n", model, err.msg);
        return 1;
    }

    /* Prompt material: the reference greedy story (BOS first) and a tokenized story. */
    int32_t ref_ids[300];
    int n_ref = kv_test_reference_tokens(models, ref_ids, 300);
    int32_t *story = NULL;
    size_t n_story = 0;
    CHECK(kv_tokenizer_encode(tok, kStoriesText, strlen(kStoriesText), &story, &n_story, &err) == KV_OK);
    CHECK(n_ref >= 200 && n_story >= 200);
    if (n_ref < 200 || n_story < 200)
        return kv_test_result();

    treq reqs[N_PARITY];
    memset(reqs, 0, sizeof reqs);
    for (int i = 0; i < N_PARITY; i++) {
        treq *r = &reqs[i];
        r->max_tokens = 1 + (i * 37) % 100;
        r->ignore_eos = i % 3 == 0;
        r->stream = i % 5 != 4;
        if (i % 8 == 7) { /* text prompt, tokenized by the router with BOS */
            r->text = kTextPrompts[(i / 8) % 4];
            int32_t *raw;
            size_t n_raw;
            CHECK(kv_tokenizer_encode(tok, r->text, strlen(r->text), &raw, &n_raw, &err) == KV_OK);
            r->ref_prompt = malloc((n_raw + 1) * sizeof *raw);
            r->ref_prompt[0] = m->cfg.bos_id;
            memcpy(r->ref_prompt + 1, raw, n_raw * sizeof *raw);
            r->n_ref_prompt = (int)n_raw + 1;
            free(raw);
        } else {
            int len = i == 0 ? 1 : i == 1 ? 200 : 1 + (i * 53) % 200;
            const int32_t *src = i % 2 ? story : ref_ids;
            int avail = i % 2 ? (int)n_story : n_ref;
            int off = i % 4 < 2 ? 0 : (i * 17) % (avail - len + 1);
            r->prompt = malloc((size_t)len * sizeof *r->prompt);
            memcpy(r->prompt, src + off, (size_t)len * sizeof *src);
            r->n_prompt = len;
            r->ref_prompt = r->prompt;
            r->n_ref_prompt = len;
        }
        if (i % 10 == 9) { /* seeded sampling: P's first token + D's advanced sampler */
            r->temperature = 0.8f;
            r->top_k = 40;
            r->top_p = 0.9f;
            r->seed = 1000 + (uint64_t)i;
        }
        CHECK(reference(e, r) == 0);
    }

    if (scenario_on(only, "1p1d"))
        scenario_parity(model, 1, 1, reqs, N_PARITY, 1);
    if (scenario_on(only, "2p2d"))
        scenario_parity(model, 2, 2, reqs, N_PARITY, 0);
    if (scenario_on(only, "drop-kv-ack"))
        scenario_drop_kv_ack(model);
    if (scenario_on(only, "kill-decode"))
        scenario_kill_decode(model, models);
    if (scenario_on(only, "corrupt-kv"))
        scenario_corrupt_kv(model, models);
    if (scenario_on(only, "no-transport"))
        scenario_no_transport(model, models);
    if (scenario_on(only, "fuzz"))
        scenario_fuzz(model, models);
    if (scenario_on(only, "logprobs"))
        scenario_logprobs(model);
    if (scenario_on(only, "impostor"))
        scenario_impostor(model, models);
    if (scenario_on(only, "router-restart"))
        scenario_router_restart(model, models, 0, 0);
    if (scenario_on(only, "router-restart-kill-decode"))
        scenario_router_restart(model, models, 1, 0);
    if (scenario_on(only, "router-restart-term"))
        scenario_router_restart(model, models, 0, 1);

    for (int i = 0; i < N_PARITY; i++) {
        if (reqs[i].ref_prompt != reqs[i].prompt)
            free(reqs[i].ref_prompt);
        free(reqs[i].prompt);
    }
    free(story);
    kv_engine_free(e);
    kv_tokenizer_free(tok);
    kv_model_free(m);
    return kv_test_result();
}
