/* kv-prefill + kv-decode as real processes, with this test playing the router: the pair's
 * tokens must equal one-process kv_generate (greedy and seeded sampling, multi-chunk prompts,
 * block-aligned prompts, max_tokens 1, the context limit, a batch; a prompt's KV in one
 * KvChunk per block); the KV endpoint must
 * survive garbage and refuse bad chunks (checksum, frame count/size, order); reservations
 * expire; Abort frees; a refused worker exits 1; "register first" re-registers; with
 * --fault drop-kv-ack the prefill worker reports DEADLINE_EXCEEDED within its ack deadline;
 * a prefill worker that dies mid-transfer costs its request and nothing else; a fuzzed
 * control channel (test_workers_fuzz.c) kills neither worker;
 * and after every scenario both pools are all free. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "generate.h"
#include "kv_test.h"
#include "kv_transport.h"
#include "model.h"
#include "test_workers_harness.h"

/* The binaries: kv-decode / kv-prefill, or builds of them on another engine backend
 * (KV_TEST_WORKER_SUFFIX, e.g. "-cudamock") run on KV_TEST_WORKER_DEVICE in f32, decode
 * workers on KV_TEST_DECODE_DEVICE when set; KV_TEST_KV_TRANSPORT is every worker's
 * --kv-transport, and KV_TEST_EXPECT_TRANSPORT the transport every transfer must use. */
static char g_bin_decode[4096], g_bin_prefill[4096];

/* test_workers_fuzz.c */
void test_control_fuzz(th *h, th_worker *p, th_worker *d, long n_messages);
static const char *g_device; /* NULL: the cpu */
static const char *g_decode_device;
static int g_expect_transport = -1;
static const char *g_transport;  /* every worker's --kv-transport, NULL = the default (auto) */
#define BIN_DECODE g_bin_decode
#define BIN_PREFILL g_bin_prefill
#define REQ_MS 60000  /* generous: sanitizer builds are slow */
#define IDLE_MS 5000

static const int32_t PROMPT5[5] = {1, 403, 407, 261, 378}; /* BOS "Once upon a time" */

typedef struct ref_out {
    int32_t t[TH_MAX_TOKENS];
    int n;
    kv_finish_reason finish;
} ref_out;

static int collect(void *ctx, int32_t tok)
{
    ref_out *r = ctx;
    if (r->n < TH_MAX_TOKENS)
        r->t[r->n++] = tok;
    return 0;
}

static Kvserve__SamplingParams sampling(float temp, uint32_t top_k, float top_p, uint64_t seed)
{
    Kvserve__SamplingParams sp;
    kvserve__sampling_params__init(&sp);
    sp.temperature = temp;
    sp.top_k = top_k;
    sp.top_p = top_p;
    sp.seed = seed;
    return sp;
}

/* What one process produces (kvctl's mapping of the params: top_p 0 means 1). */
static void reference(kv_engine *e, const int32_t *prompt, int n, int max_tokens, const Kvserve__SamplingParams *sp,
                      int ignore_eos, ref_out *out)
{
    kv_gen_params gp;
    memset(&gp, 0, sizeof gp);
    gp.max_tokens = max_tokens;
    gp.ignore_eos = ignore_eos;
    kv_sampling_default(&gp.sampling);
    gp.sampling.temperature = sp->temperature;
    gp.sampling.top_k = (int)sp->top_k;
    gp.sampling.top_p = sp->top_p == 0 ? 1.0f : sp->top_p;
    gp.sampling.seed = sp->seed;
    kv_gen_stats st;
    kv_err err;
    memset(out, 0, sizeof *out);
    int rc = kv_generate(e, prompt, n, &gp, collect, out, &st, &err);
    CHECK_MSG(rc == 0, "kv_generate: %s", err.msg);
    out->finish = st.finish;
}

static int proto_finish(kv_finish_reason f)
{
    switch (f) {
    case KV_FINISH_EOS: return KVSERVE__FINISH_REASON__FINISH_EOS;
    case KV_FINISH_LENGTH: return KVSERVE__FINISH_REASON__FINISH_LENGTH;
    case KV_FINISH_CONTEXT: return KVSERVE__FINISH_REASON__FINISH_CONTEXT;
    default: return -1;
    }
}

/* A request the way the router runs it: reserve on d (waited for), then the task to p. */
static th_req *submit(th *h, th_worker *p, th_worker *d, const char *id, const int32_t *prompt, int n, int max_tokens,
                      const Kvserve__SamplingParams *sp, int ignore_eos, uint32_t ack_ms, uint32_t transfer_ms)
{
    th_req *r = th_req_get(h, id);
    CHECK(th_reserve(h, d, id, (uint32_t)n, (uint32_t)max_tokens, sp, ignore_eos, transfer_ms) == 0);
    CHECK_MSG(th_wait_reserved(h, r, REQ_MS), "no ReserveReply for %s", id);
    CHECK_MSG(r->reserve_ok, "reserve %s refused (error %d)", id, r->reserve_err);
    CHECK(th_prefill(h, p, d, r, prompt, n, sp, ack_ms) == 0);
    return r;
}

static void check_same(th *h, th_req *r, const ref_out *ref)
{
    CHECK_MSG(th_wait_finished(h, r, REQ_MS), "%s never finished", r->id);
    CHECK_MSG(th_wait_prefill_done(h, r, REQ_MS), "no PrefillDone for %s", r->id);
    CHECK_MSG(r->prefill_ok, "%s: PrefillDone not ok (error %d)", r->id, r->prefill_err);
    CHECK_MSG(r->finished == 1, "%s: %d final events", r->id, r->finished);
    CHECK_MSG(r->index_errors == 0, "%s: %d TokenEvents out of order", r->id, r->index_errors);
    CHECK_MSG(r->n_tokens == ref->n, "%s: %d tokens, one process made %d", r->id, r->n_tokens, ref->n);
    int first_diff = -1;
    for (int i = 0; i < r->n_tokens && i < ref->n; i++)
        if (r->tokens[i] != ref->t[i]) {
            first_diff = i;
            break;
        }
    CHECK_MSG(first_diff < 0, "%s: token %d is %d, one process made %d", r->id, first_diff,
              first_diff >= 0 ? r->tokens[first_diff] : 0, first_diff >= 0 ? ref->t[first_diff] : 0);
    CHECK_MSG(r->finish_reason == proto_finish(ref->finish), "%s: finish %d, one process %s", r->id, r->finish_reason,
              kv_finish_reason_name(ref->finish));
    CHECK_MSG(ref->n > 0 && r->first_token == ref->t[0], "%s: PrefillDone first token %d, expected %d", r->id,
              r->first_token, ref->n ? ref->t[0] : -1);
    CHECK_MSG(g_expect_transport < 0 || r->transport == g_expect_transport, "%s: KV went over %s, expected %s", r->id,
              kv_transport_name((kv_transport)r->transport), kv_transport_name((kv_transport)g_expect_transport));
    fprintf(stderr, "  %s: %d tokens, finish %s, prefill %.2f ms, transfer %.2f ms (%s), kv %llu bytes\n", r->id,
            r->n_tokens, kv_finish_reason_name(ref->finish), r->prefill_ms, r->transfer_ms,
            kv_transport_name((kv_transport)r->transport), (unsigned long long)r->kv_bytes);
}

static void check_idle(th *h, th_worker *w)
{
    CHECK_MSG(th_wait_idle(h, w, IDLE_MS), "%s not idle: running %u queued %u free %u/%u", w->id, w->running,
              w->queued, w->blocks_free, w->blocks_total);
}

/* A prefill worker started with args and registered, or NULL (a failed check). */
static th_worker *spawn_prefill(th *h, const char *model_dir, const char *id, const char *const *args)
{
    th_worker *p = th_spawn(h, BIN_PREFILL, model_dir, id, args);
    int up = p && th_wait_registered(h, p, 1, 30000);
    CHECK_MSG(up, "%s did not start and register", id);
    return up ? p : NULL;
}

/* ---- token identity ------------------------------------------------------------------ */

typedef struct case_def {
    const char *id;
    const int32_t *prompt;
    int n, max_tokens, ignore_eos;
    Kvserve__SamplingParams sp;
} case_def;

/* All reserved first, then all tasks at once: P runs them back to back (FIFO, chunks of 16)
 * while D's batch mixes them. Returns the most requests seen streaming at one time. */
static int run_cases(th *h, th_worker *p, th_worker *d, kv_engine *e, const case_def *c, int n)
{
    th_req *reqs[16];
    for (int i = 0; i < n; i++) {
        reqs[i] = th_req_get(h, c[i].id);
        CHECK(th_reserve(h, d, c[i].id, (uint32_t)c[i].n, (uint32_t)c[i].max_tokens, &c[i].sp, c[i].ignore_eos,
                         30000) == 0);
    }
    for (int i = 0; i < n; i++) {
        CHECK_MSG(th_wait_reserved(h, reqs[i], REQ_MS), "no ReserveReply for %s", c[i].id);
        CHECK_MSG(reqs[i]->reserve_ok, "reserve %s refused (error %d)", c[i].id, reqs[i]->reserve_err);
    }
    h->max_active = 0;
    for (int i = 0; i < n; i++)
        CHECK(th_prefill(h, p, d, reqs[i], c[i].prompt, c[i].n, &c[i].sp, 10000) == 0);
    for (int i = 0; i < n; i++) {
        ref_out ref;
        reference(e, c[i].prompt, c[i].n, c[i].max_tokens, &c[i].sp, c[i].ignore_eos, &ref);
        check_same(h, reqs[i], &ref);
    }
    fprintf(stderr, "  (up to %d requests streaming at once)\n", h->max_active);
    return h->max_active;
}

/* tag prefixes the request ids: the harness keeps every request it has seen by id. */
static void test_identical(th *h, th_worker *p, th_worker *d, kv_engine *e, const char *tag)
{
    fprintf(stderr, "token identity with one-process kv_generate\n");
    char ids[6][64];
    const char *names[6] = {"greedy", "sampled", "multichunk", "aligned", "one-token", "context"};
    for (int i = 0; i < 6; i++)
        snprintf(ids[i], sizeof ids[i], "%s%s", tag, names[i]);
    ref_out g;
    Kvserve__SamplingParams greedy = sampling(0, 0, 0, 0);
    reference(e, PROMPT5, 5, 60, &greedy, 1, &g);
    int32_t long_prompt[45], aligned[32], ctx_prompt[505];
    memcpy(long_prompt, PROMPT5, sizeof PROMPT5);
    memcpy(long_prompt + 5, g.t, 40 * sizeof(int32_t));
    memcpy(aligned, long_prompt, sizeof aligned);
    for (int i = 0; i < 505; i++)
        ctx_prompt[i] = i == 0 ? 1 : long_prompt[i % 45 ? i % 45 : 1];
    /* Three at a time: the batch mixes them; P runs them FIFO in chunks of 16. */
    case_def a[] = {
        {ids[0], PROMPT5, 5, 60, 0, sampling(0, 0, 0, 0)},
        {ids[1], PROMPT5, 5, 60, 0, sampling(0.8f, 0, 0.9f, 7)},
        {ids[2], long_prompt, 45, 30, 0, sampling(0, 0, 0, 0)},
    };
    run_cases(h, p, d, e, a, 3); /* short: whether they overlap is up to the scheduler */
    check_idle(h, d);
    check_idle(h, p);
    case_def b[] = {
        {ids[3], aligned, 32, 20, 1, sampling(1.0f, 40, 0, 3)},
        {ids[4], PROMPT5, 5, 1, 0, sampling(0, 0, 0, 0)},
        {ids[5], ctx_prompt, 505, 100, 1, sampling(0.7f, 0, 0.95f, 11)},
    };
    run_cases(h, p, d, e, b, 3);
    check_idle(h, d);
    check_idle(h, p);
}

/* A whole prompt in one prefill chunk, shipped one block per KvChunk (--kv-message-kib 1 is
 * less than a block): over zmq the pieces must line up (seq, first_block, last) just as
 * chunked prefill's do. */
static void test_small_messages(th *h, th_worker *d, kv_engine *e, const char *model_dir)
{
    fprintf(stderr, "one prefill chunk, one block per KvChunk\n");
    const char *args[] = {"--kv-blocks", "64", "--prefill-chunk", "512", "--kv-message-kib", "1", NULL};
    th_worker *p = spawn_prefill(h, model_dir, "pre-pieces", args);
    if (!p)
        return;
    test_identical(h, p, d, e, "pieces-");
    /* One prefill chunk each, so without the cut these would be one KvChunk each. */
    const struct { const char *id; uint32_t blocks; } cut[] = {{"pieces-multichunk", 3}, {"pieces-context", 32}};
    for (int i = 0; i < 2; i++) {
        const th_req *r = th_req_get(h, cut[i].id);
        int want = r && r->transport != KV_TRANSPORT_ZMQ ? 1 : (int)cut[i].blocks; /* GPU chunks go whole */
        CHECK_MSG(r && (int)r->kv_chunks == want, "%s: %u KvChunks, expected %d", cut[i].id, r ? r->kv_chunks : 0,
                  want);
    }
    CHECK_MSG(th_stop(h, p, 10000) == 0, "pre-pieces: exit status %d", p->exit_status);
}

/* Open descriptors of a process (-1 when /proc cannot say). */
static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    int n = 0;
    for (struct dirent *de; (de = readdir(dir));)
        n += de->d_name[0] != '.';
    closedir(dir);
    return n;
}

/* --kv-peer-idle-s: a decode worker connection unused for that long is closed (its socket
 * goes: fewer descriptors), and the next task for that decode worker opens it again. */
static void test_idle_peer(th *h, th_worker *d, kv_engine *e, const char *model_dir)
{
    fprintf(stderr, "an idle decode worker connection is closed, then reopened\n");
    const char *args[] = {"--kv-blocks", "64", "--prefill-chunk", "16", "--kv-peer-idle-s", "2", NULL};
    th_worker *p = spawn_prefill(h, model_dir, "pre-idle", args);
    if (!p)
        return;
    Kvserve__SamplingParams greedy = sampling(0, 0, 0, 0);
    ref_out ref;
    reference(e, PROMPT5, 5, 20, &greedy, 0, &ref);
    int before = open_fds(p->pid); /* no connection yet */
    check_same(h, submit(h, p, d, "idle-a", PROMPT5, 5, 20, &greedy, 0, 10000, 10000), &ref);
    int open = open_fds(p->pid), closed = open;
    for (int i = 0; i < 60 && closed > before; i++) {
        th_idle(h, 100);
        closed = open_fds(p->pid);
    }
    /* Measured more than 2 s after the request (a stalled machine), the connection may be
     * gone already: then only the end state can be checked. */
    CHECK_MSG(before > 0 && (open > before || open == closed), "pre-idle: %d descriptors before, %d with the connection",
              before, open);
    CHECK_MSG(closed <= before, "pre-idle: %d descriptors before the connection, %d with it, %d after 6 s idle", before,
              open, closed);
    check_same(h, submit(h, p, d, "idle-b", PROMPT5, 5, 20, &greedy, 0, 10000, 10000), &ref);
    check_idle(h, d);
    check_idle(h, p);
    CHECK_MSG(th_stop(h, p, 10000) == 0, "pre-idle: exit status %d", p->exit_status);
}

static void test_batch(th *h, th_worker *p, th_worker *d, kv_engine *e)
{
    fprintf(stderr, "a batch of 8 concurrent requests\n");
    case_def c[8];
    char ids[8][16];
    for (int i = 0; i < 8; i++) {
        snprintf(ids[i], sizeof ids[i], "batch-%d", i);
        case_def one = {ids[i], PROMPT5, 5, 400 + i, 1, sampling(0.9f, 0, 0, 100 + (uint64_t)i)};
        c[i] = one;
    }
    /* More than 4 rows: the decode matmuls take the sgemm path, one request the GEMV one.
     * 400 tokens each: far longer than P needs to hand all eight over. */
    int most = run_cases(h, p, d, e, c, 8);
    CHECK_MSG(most >= 5, "only %d requests shared a batch", most);
    check_idle(h, d);
    check_idle(h, p);
}

/* ---- the KV endpoint under bad input -------------------------------------------------- */

static void *kv_client(th *h, th_worker *d)
{
    void *s = zmq_socket(h->zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    /* No routing id, as kv-prefill: the decode worker's ROUTER has no handover, so a fixed
     * one reused right after the last socket closed would be ignored as a duplicate. */
    CHECK(zmq_connect(s, d->kv_endpoint) == 0);
    return s;
}

/* The reply on the test's KV DEALER (pumping the control socket meanwhile). */
static int kv_reply(th *h, void *s, kv_wire_msg *m)
{
    double end = th_now() + 10.0;
    while (th_now() < end) {
        kv_err err;
        int rc = kv_wire_recv(s, 0, 50, m, &err);
        if (rc == KV_OK)
            return 1;
        kv_wire_msg_close(m);
        th_pump(h, 1);
    }
    return 0;
}

static void expect_error(th *h, void *s, int code)
{
    kv_wire_msg m;
    int got = kv_reply(h, s, &m);
    CHECK_MSG(got, "no reply from the KV endpoint");
    if (got) {
        CHECK_MSG(m.env->body_case == KVSERVE__ENVELOPE__BODY_ERROR && (int)m.env->error->code == code,
                  "expected Error %d, got body %d", code, (int)m.env->body_case);
        kv_wire_msg_close(&m);
    }
}

static void expect_ack(th *h, void *s, const char *id, int ok, int code)
{
    kv_wire_msg m;
    int got = kv_reply(h, s, &m);
    CHECK_MSG(got, "no KvAck for %s", id);
    if (!got)
        return;
    int is_ack = m.env->body_case == KVSERVE__ENVELOPE__BODY_KV_ACK;
    CHECK_MSG(is_ack, "expected a KvAck, got body %d", (int)m.env->body_case);
    if (is_ack) {
        const Kvserve__KvAck *a = m.env->kv_ack;
        CHECK_MSG(!strcmp(a->request_id, id), "KvAck for %s, expected %s", a->request_id, id);
        CHECK_MSG(a->ok == ok, "%s: KvAck ok=%d", id, a->ok);
        CHECK_MSG(ok || (a->error && (int)a->error->code == code), "%s: KvAck error %d, expected %d", id,
                  a->error ? (int)a->error->code : 0, code);
    }
    kv_wire_msg_close(&m);
}

/* A KvChunk for the first block of r with the given frames (data may be NULL: zeros). */
static void send_chunk(void *s, const th_req *r, uint32_t seq, int n_ids, int n_frames, size_t frame_bytes,
                       int bad_crc, int last, uint32_t n_tokens)
{
    unsigned char *buf = calloc(1, frame_bytes ? frame_bytes : 1);
    for (size_t i = 0; i < frame_bytes; i++)
        buf[i] = (unsigned char)(i * 7 + 3);
    uint32_t sums[4];
    kv_wire_payload frames[4];
    for (int i = 0; i < 4; i++) {
        sums[i] = kv_crc32c(buf, frame_bytes) + (bad_crc ? 1u : 0u);
        frames[i].data = buf;
        frames[i].len = frame_bytes;
        frames[i].zero_copy = 0;
    }
    Kvserve__KvChunk c;
    kvserve__kv_chunk__init(&c);
    c.request_id = (char *)r->id;
    c.prefill_worker_id = "tester";
    c.first_block = 0;
    c.n_block_ids = (size_t)n_ids;
    c.block_ids = (int32_t *)r->blocks;
    c.n_checksums = (size_t)n_ids;
    c.checksums = sums;
    c.n_tokens = n_tokens;
    c.last = last;
    c.first_token = 5;
    c.seq = seq;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_CHUNK;
    env.kv_chunk = &c;
    kv_err err;
    CHECK(kv_wire_send(s, NULL, &env, frames, (size_t)n_frames, 1000, &err) == 0);
    free(buf);
}

static th_req *reserve_only(th *h, th_worker *d, const char *id, uint32_t prompt, uint32_t max_tokens,
                            uint32_t deadline_ms)
{
    th_req *r = th_req_get(h, id);
    CHECK(th_reserve(h, d, id, prompt, max_tokens, NULL, 0, deadline_ms) == 0);
    CHECK_MSG(th_wait_reserved(h, r, REQ_MS), "no ReserveReply for %s", id);
    return r;
}

static void expect_failed(th *h, th_req *r, int code)
{
    CHECK_MSG(th_wait_finished(h, r, REQ_MS), "%s: no final TokenEvent", r->id);
    CHECK_MSG(r->finish_reason == KVSERVE__FINISH_REASON__FINISH_ERROR && r->finish_err == code,
              "%s: finish %d error %d, expected FINISH_ERROR %d", r->id, r->finish_reason, r->finish_err, code);
}

static void test_kv_endpoint(th *h, th_worker *d)
{
    fprintf(stderr, "the KV endpoint under bad input\n");
    void *s = kv_client(h, d);
    size_t bb = (size_t)d->block_bytes;
    /* Not an envelope at all. */
    CHECK(zmq_send(s, "garbage!", 8, 0) == 8);
    expect_error(h, s, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    /* Another protocol version. */
    Kvserve__Envelope env;
    Kvserve__Heartbeat hb;
    kv_wire_envelope_init(&env);
    kvserve__heartbeat__init(&hb);
    env.body_case = KVSERVE__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    env.version = 99;
    kv_err err;
    CHECK(kv_wire_send(s, NULL, &env, NULL, 0, 1000, &err) == 0);
    expect_error(h, s, KVSERVE__ERROR_CODE__VERSION_MISMATCH);
    /* A body that has no business on a KV endpoint. */
    env.version = KV_WIRE_VERSION;
    CHECK(kv_wire_send(s, NULL, &env, NULL, 0, 1000, &err) == 0);
    expect_error(h, s, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    /* KV for a request nobody reserved. */
    th_req ghost;
    memset(&ghost, 0, sizeof ghost);
    snprintf(ghost.id, sizeof ghost.id, "ghost");
    send_chunk(s, &ghost, 0, 0, 0, bb, 0, 1, 5);
    expect_ack(h, s, "ghost", 0, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST);
    /* A bad checksum: KV_CORRUPT to the sender, FINISH_ERROR to the router, blocks freed. */
    th_req *r = reserve_only(h, d, "bad-crc", 5, 10, 10000);
    send_chunk(s, r, 0, 1, 1, bb, 1, 1, 5);
    expect_ack(h, s, r->id, 0, KVSERVE__ERROR_CODE__KV_CORRUPT);
    expect_failed(h, r, KVSERVE__ERROR_CODE__KV_CORRUPT);
    /* One block id, no frame. */
    r = reserve_only(h, d, "bad-count", 5, 10, 10000);
    send_chunk(s, r, 0, 1, 0, bb, 0, 1, 5);
    expect_ack(h, s, r->id, 0, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    expect_failed(h, r, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    /* A frame that is not a block. */
    r = reserve_only(h, d, "bad-size", 5, 10, 10000);
    send_chunk(s, r, 0, 1, 1, 100, 0, 1, 5);
    expect_ack(h, s, r->id, 0, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    expect_failed(h, r, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    /* Chunks out of order. */
    r = reserve_only(h, d, "bad-seq", 40, 10, 10000);
    send_chunk(s, r, 1, 1, 1, bb, 0, 0, 16);
    expect_ack(h, s, r->id, 0, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    expect_failed(h, r, KVSERVE__ERROR_CODE__BAD_MESSAGE);
    /* Well-formed KV (whatever its values): acknowledged, the request runs; Abort frees it. */
    r = reserve_only(h, d, "manual", 5, 400, 10000);
    send_chunk(s, r, 0, 1, 1, bb, 0, 1, 5);
    expect_ack(h, s, r->id, 1, 0);
    CHECK(th_abort(h, d, r->id) == 0);
    check_idle(h, d);
    zmq_close(s);
}

/* ---- the GPU-transport handshake under bad input ---------------------------------------- */

/* The KvHelloReply on s: ok and the transport, or the refusal's message. */
static int expect_hello_reply(th *h, void *s, uint64_t session, int ok, int transport, const char *why_part)
{
    kv_wire_msg m;
    int got = kv_reply(h, s, &m);
    CHECK_MSG(got, "no KvHelloReply");
    if (!got)
        return 0;
    int is = m.env->body_case == KVSERVE__ENVELOPE__BODY_KV_HELLO_REPLY;
    CHECK_MSG(is, "expected a KvHelloReply, got body %d", (int)m.env->body_case);
    if (is) {
        const Kvserve__KvHelloReply *r = m.env->kv_hello_reply;
        const char *why = r->error ? r->error->message : "";
        CHECK_MSG(r->session == session, "reply for session %llu", (unsigned long long)r->session);
        CHECK_MSG(r->ok == ok, "hello: ok=%d (%s)", r->ok, why);
        CHECK_MSG(!ok || (int)r->transport == transport, "hello: chose %d, expected %d", (int)r->transport, transport);
        CHECK_MSG(ok || (r->error && r->error->code == KVSERVE__ERROR_CODE__NO_TRANSPORT && strstr(why, why_part)),
                  "hello refused with '%s', expected NO_TRANSPORT mentioning '%s'", why, why_part);
    }
    kv_wire_msg_close(&m);
    return got;
}

static void send_hello(void *s, uint64_t session, const Kvserve__KvTransport *offer, size_t n, const char *node,
                       uint64_t block_bytes, const char *dtype)
{
    static unsigned char junk[64] = {1, 2, 3};
    static unsigned char uuid[16] = {9, 9, 9};
    Kvserve__KvHello hl;
    kvserve__kv_hello__init(&hl);
    hl.prefill_worker_id = "tester";
    hl.session = session;
    hl.n_offer = n;
    hl.offer = (Kvserve__KvTransport *)offer;
    hl.node_id = (char *)node;
    hl.device = 0;
    hl.device_uuid.len = sizeof uuid;
    hl.device_uuid.data = uuid;
    hl.ipc_handle.len = sizeof junk; /* opens nowhere */
    hl.ipc_handle.data = junk;
    hl.pool_bytes = block_bytes * 8;
    hl.block_bytes = block_bytes;
    hl.kv_dtype = (char *)dtype;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_HELLO;
    env.kv_hello = &hl;
    kv_err err;
    CHECK(kv_wire_send(s, NULL, &env, NULL, 0, 1000, &err) == 0);
}

static void test_hello(th *h, th_worker *d)
{
    fprintf(stderr, "KvHello: refusals, fallback to zmq, chunks of unknown sessions\n");
    void *s = kv_client(h, d);
    char node[320];
    kv_transport_node_id(node, sizeof node);
    const Kvserve__KvTransport ipc_only[] = {KVSERVE__KV_TRANSPORT__KV_TRANSPORT_CUDA_IPC};
    const Kvserve__KvTransport ipc_zmq[] = {KVSERVE__KV_TRANSPORT__KV_TRANSPORT_CUDA_IPC,
                                            KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ};
    /* cuda-ipc alone from another node: nothing in common. */
    send_hello(s, 11, ipc_only, 1, "elsewhere/0", d->block_bytes, d->dtype);
    expect_hello_reply(h, s, 11, 0, 0, "cuda-ipc");
    /* A handle that opens nowhere (or a cpu decode worker): zmq after all, where allowed. */
    int zmq_allowed = !g_transport || !strcmp(g_transport, "auto") || !strcmp(g_transport, "zmq");
    send_hello(s, 12, ipc_zmq, 2, node, d->block_bytes, d->dtype);
    expect_hello_reply(h, s, 12, zmq_allowed, KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ, "zmq: not allowed");
    /* Another KV layout. */
    send_hello(s, 13, ipc_zmq, 2, node, d->block_bytes * 2, d->dtype);
    expect_hello_reply(h, s, 13, 0, 0, "layouts differ");
    /* A GPU chunk of a session nobody opened: KV_SESSION_UNKNOWN, and the request ends. */
    th_req *r = reserve_only(h, d, "no-session", 5, 10, 10000);
    uint32_t sum = 0;
    int32_t src = 0;
    Kvserve__KvChunk c;
    kvserve__kv_chunk__init(&c);
    c.request_id = r->id;
    c.prefill_worker_id = "tester";
    c.n_block_ids = 1;
    c.block_ids = r->blocks;
    c.n_checksums = 1;
    c.checksums = &sum;
    c.n_src_block_ids = 1;
    c.src_block_ids = &src;
    c.n_tokens = 5;
    c.last = 1;
    c.first_token = 5;
    c.transport = KVSERVE__KV_TRANSPORT__KV_TRANSPORT_CUDA_IPC;
    c.session = 12345;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_CHUNK;
    env.kv_chunk = &c;
    kv_err err;
    CHECK(kv_wire_send(s, NULL, &env, NULL, 0, 1000, &err) == 0);
    expect_ack(h, s, r->id, 0, KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN);
    expect_failed(h, r, KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN);
    check_idle(h, d);
    zmq_close(s);
}

/* A prefill worker that insists on nccl with a decode worker on its own GPU: the task fails
 * with the reason, nothing leaks, and both keep serving. */
static void test_transport_refused(th *h, th_worker *d, const char *model_dir)
{
    fprintf(stderr, "--kv-transport nccl on one GPU: a clear failure\n");
    const char *args[] = {"--kv-blocks", "64", "--kv-transport", "nccl", NULL};
    th_worker *p = spawn_prefill(h, model_dir, "pre-nccl", args);
    if (!p)
        return;
    Kvserve__SamplingParams greedy = sampling(0, 0, 0, 0);
    th_req *r = submit(h, p, d, "one-gpu", PROMPT5, 5, 10, &greedy, 0, 10000, 10000);
    CHECK_MSG(th_wait_prefill_done(h, r, REQ_MS), "no PrefillDone for one-gpu");
    CHECK_MSG(!r->prefill_ok && r->prefill_err == KVSERVE__ERROR_CODE__NO_TRANSPORT, "one-gpu: ok=%d error %d",
              r->prefill_ok, r->prefill_err);
    CHECK(th_abort(h, d, r->id) == 0);
    check_idle(h, p);
    check_idle(h, d);
    CHECK_MSG(th_stop(h, p, 10000) == 0, "pre-nccl: exit status %d", p->exit_status);
}

/* A prefill worker that dies after the first of three chunks: the decode worker ends the
 * request (by its transfer deadline, or at once when the transport notices), frees every
 * block, and serves the restarted prefill worker (same id: a new KV session, over nccl a
 * new communicator) token for token. */
static void test_prefill_dies(th *h, th_worker *d, kv_engine *e, const char *model_dir)
{
    fprintf(stderr, "a prefill worker dies mid-transfer\n");
    const char *doomed_args[] = {"--kv-blocks", "64", "--prefill-chunk", "16", "--fault", "exit-mid-transfer", NULL};
    th_worker *p = spawn_prefill(h, model_dir, "pre-doomed", doomed_args);
    if (!p)
        return;
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = i ? PROMPT5[1 + i % 4] : PROMPT5[0];
    Kvserve__SamplingParams greedy = sampling(0, 0, 0, 0);
    /* One chunk first (the fault spares last chunks): the pair's KV session is then set up,
     * so the doomed task ships its first chunk as soon as it is computed. */
    th_req *warm = submit(h, p, d, "warm-up", PROMPT5, 5, 5, &greedy, 0, 5000, 5000);
    CHECK_MSG(th_wait_finished(h, warm, REQ_MS) && warm->finish_reason == KVSERVE__FINISH_REASON__FINISH_LENGTH,
              "warm-up: finish %d", warm->finish_reason);
    th_req *r = submit(h, p, d, "doomed", prompt, 40, 20, &greedy, 0, 5000, 1500);
    CHECK_MSG(th_wait_exit(h, p, 10000) == 3, "pre-doomed: exit status %d, expected 3 (the fault)", p->exit_status);
    CHECK_MSG(th_wait_finished(h, r, REQ_MS), "doomed: the decode worker never ended it");
    CHECK_MSG(r->finish_reason == KVSERVE__FINISH_REASON__FINISH_ERROR, "doomed: finish %d", r->finish_reason);
    CHECK_MSG(!r->prefill_done, "doomed: a PrefillDone from a dead worker");
    check_idle(h, d);
    const char *args[] = {"--kv-blocks", "64", "--prefill-chunk", "16", NULL};
    th_worker *p2 = spawn_prefill(h, model_dir, "pre-doomed", args);
    if (!p2)
        return;
    ref_out ref;
    reference(e, prompt, 40, 20, &greedy, 0, &ref);
    check_same(h, submit(h, p2, d, "reborn", prompt, 40, 20, &greedy, 0, 10000, 10000), &ref);
    check_idle(h, d);
    check_idle(h, p2);
    CHECK_MSG(th_stop(h, p2, 10000) == 0, "pre-doomed (restarted): exit status %d", p2->exit_status);
}

/* ---- reservations --------------------------------------------------------------------- */

static void test_reservations(th *h, th_worker *d)
{
    fprintf(stderr, "reservations: deadline, capacity, duplicates, abort\n");
    th_req *r = reserve_only(h, d, "expire", 5, 10, 300);
    CHECK(r->reserve_ok);
    double t0 = th_now();
    expect_failed(h, r, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED);
    CHECK_MSG(th_now() - t0 < 3.0, "reservation expired after %.2f s", th_now() - t0);
    /* 32 blocks each: the pool (256) takes eight, the ninth is refused whole. */
    const char *ids[9] = {"cap-0", "cap-1", "cap-2", "cap-3", "cap-4", "cap-5", "cap-6", "cap-7", "cap-8"};
    for (int i = 0; i < 9; i++) {
        r = reserve_only(h, d, ids[i], 100, 412, 30000);
        CHECK_MSG(r->reserve_ok == (i < 8), "%s: ok=%d", ids[i], r->reserve_ok);
        CHECK(r->reserve_ok ? r->n_blocks == 32 : r->reserve_err == KVSERVE__ERROR_CODE__NO_CAPACITY);
    }
    th_req *dup = th_req_get(h, "cap-0");
    dup->reserve_replied = 0;
    CHECK(th_reserve(h, d, "cap-0", 5, 5, NULL, 0, 1000) == 0);
    CHECK(th_wait_reserved(h, dup, REQ_MS));
    CHECK(!dup->reserve_ok && dup->reserve_err == KVSERVE__ERROR_CODE__DUPLICATE_REQUEST);
    for (int i = 0; i < 8; i++)
        CHECK(th_abort(h, d, ids[i]) == 0);
    CHECK(th_abort(h, d, "never-heard-of-it") == 0);
    check_idle(h, d);
    /* Bad requests. */
    r = reserve_only(h, d, "too-long", 512, 10, 1000);
    CHECK(!r->reserve_ok && r->reserve_err == KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
    Kvserve__SamplingParams bad = sampling(-1, 0, 0, 0);
    r = th_req_get(h, "bad-temp");
    CHECK(th_reserve(h, d, "bad-temp", 5, 5, &bad, 0, 1000) == 0);
    CHECK(th_wait_reserved(h, r, REQ_MS) && !r->reserve_ok && r->reserve_err == KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    check_idle(h, d);
}

/* ---- the prefill worker against a decode worker that never acknowledges -------------- */

static void test_fault(th *h, th_worker *p, th_worker *df)
{
    fprintf(stderr, "--fault drop-kv-ack: ack deadline, abort while waiting\n");
    Kvserve__SamplingParams greedy = sampling(0, 0, 0, 0);
    /* Abort while P waits for the ack, and abort of a queued task: no PrefillDone, all free. */
    th_req *a = submit(h, p, df, "wait-a", PROMPT5, 5, 10, &greedy, 0, 20000, 20000);
    th_req *b = submit(h, p, df, "wait-b", PROMPT5, 5, 10, &greedy, 0, 20000, 20000);
    th_pump(h, 300);
    CHECK(th_abort(h, p, "wait-b") == 0);
    CHECK(th_abort(h, p, "wait-a") == 0);
    CHECK(th_abort(h, df, "wait-a") == 0);
    CHECK(th_abort(h, df, "wait-b") == 0);
    th_pump(h, 300);
    CHECK_MSG(!a->prefill_done && !b->prefill_done, "PrefillDone after Abort");
    check_idle(h, p);
    check_idle(h, df);
    /* The ack deadline: PrefillDone{DEADLINE_EXCEEDED} in time; D's reservation expires. */
    th_req *r = th_req_get(h, "fault-1");
    CHECK(th_reserve(h, df, r->id, 5, 10, &greedy, 0, 1500) == 0);
    CHECK(th_wait_reserved(h, r, REQ_MS) && r->reserve_ok);
    double t0 = th_now();
    CHECK(th_prefill(h, p, df, r, PROMPT5, 5, &greedy, 800) == 0);
    CHECK_MSG(th_wait_prefill_done(h, r, 10000), "no PrefillDone for fault-1");
    double dt = r->prefill_done_s - t0;
    CHECK_MSG(!r->prefill_ok && r->prefill_err == KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "PrefillDone ok=%d error %d",
              r->prefill_ok, r->prefill_err);
    CHECK_MSG(dt >= 0.75 && dt < 2.0, "PrefillDone after %.3f s for an 800 ms ack deadline", dt);
    expect_failed(h, r, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED);
    check_idle(h, p);
    check_idle(h, df);
}

/* ---- registration --------------------------------------------------------------------- */

static void test_register_first(th *h, th_worker *d)
{
    fprintf(stderr, "\"register first\" -> re-registration\n");
    int n = d->registrations;
    d->register_first = 1;
    CHECK_MSG(th_wait_registered(h, d, n + 1, 10000), "%s did not re-register", d->id);
    check_idle(h, d);
}

static void test_refused(th *h, const char *model_dir)
{
    fprintf(stderr, "a refused worker exits 1\n");
    th_worker *w = th_spawn(h, BIN_PREFILL, model_dir, "pre-refused", NULL);
    CHECK(w != NULL);
    if (!w)
        return;
    w->refuse = 1;
    CHECK_EQ_INT(th_wait_exit(h, w, 30000), 1);
}

static int run_status(const char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    for (int i = 0; i < 3000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static void test_flags(const char *model_dir)
{
    fprintf(stderr, "flags\n");
    const char *help[] = {BIN_DECODE, "--help", NULL};
    const char *bogus[] = {BIN_PREFILL, "--model", model_dir, "--bogus", NULL};
    const char *badnum[] = {BIN_DECODE, "--model", model_dir, "--max-batch", "0", NULL};
    /* A GPU the machine does not have (cuda:7 on the device runs, where cuda:0 exists). */
    const char *cuda[] = {BIN_DECODE, "--model", model_dir, "--device", g_device ? "cuda:7" : "cuda:0", NULL};
    const char *wrong_role[] = {BIN_PREFILL, "--model", model_dir, "--max-batch", "4", NULL};
    const char *no_model[] = {BIN_PREFILL, NULL};
    CHECK_EQ_INT(run_status(help), 0);
    CHECK_EQ_INT(run_status(bogus), 2);
    CHECK_EQ_INT(run_status(badnum), 2);
    CHECK_EQ_INT(run_status(cuda), 2);
    CHECK_EQ_INT(run_status(wrong_role), 2);
    CHECK_EQ_INT(run_status(no_model), 2);
}

/* Register carries the engine's KV layout: f32 blocks here; a bf16 worker's are half. */
static void test_layouts(th *h, th_worker *d, const char *model_dir)
{
    CHECK_MSG(!strcmp(d->dtype, "f32"), "decode worker registered dtype '%s'", d->dtype);
    if (!g_device)
        return;
    const char *bf16_args[] = {"--kv-blocks", "16", "--precision", "bf16", NULL};
    th_worker *b = th_spawn(h, BIN_DECODE, model_dir, "dec-bf16", bf16_args);
    CHECK(b != NULL);
    if (!b)
        return;
    CHECK_MSG(th_wait_registered(h, b, 1, 30000), "bf16 decode worker did not register");
    CHECK_MSG(!strcmp(b->dtype, "bf16") && b->block_bytes * 2 == d->block_bytes, "bf16 worker: dtype '%s', %llu bytes "
              "per block (f32: %llu)", b->dtype, (unsigned long long)b->block_bytes, (unsigned long long)d->block_bytes);
    CHECK_MSG(th_stop(h, b, 10000) == 0, "dec-bf16: exit status %d", b->exit_status);
}

int main(void)
{
    const char *suffix = getenv("KV_TEST_WORKER_SUFFIX");
    g_device = getenv("KV_TEST_WORKER_DEVICE");
    snprintf(g_bin_decode, sizeof g_bin_decode, "%s/kv-decode%s", kv_test_bin_dir(), suffix ? suffix : "");
    snprintf(g_bin_prefill, sizeof g_bin_prefill, "%s/kv-prefill%s", kv_test_bin_dir(), suffix ? suffix : "");
    const char *models = kv_test_models_dir();
    if (!models)
        KV_TEST_SKIP("shared test models not found (set KVSERVE_TEST_MODELS)");
    char model_dir[4096];
    snprintf(model_dir, sizeof model_dir, "%s/stories260K", models);
    kv_model *model = NULL;
    kv_engine *engine = NULL;
    kv_err err;
    if (kv_model_load(model_dir, &model, &err))
        KV_TEST_SKIP("cannot load %s: %s", model_dir, err.msg);
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = 1;
    CHECK(kv_engine_create(model, &o, &engine, &err) == 0);
    signal(SIGPIPE, SIG_IGN);

    test_flags(model_dir);
    th h;
    CHECK(th_init(&h, 100) == 0);
    int na = 0;
    if (g_device) {
        const char *dev_args[] = {"--device", g_device, "--precision", "f32"};
        for (int i = 0; i < 4; i++)
            h.worker_args[na++] = dev_args[i];
        fprintf(stderr, "workers: %s, %s --precision f32\n", g_bin_decode, g_device);
    }
    g_transport = getenv("KV_TEST_KV_TRANSPORT");
    if (g_transport) {
        h.worker_args[na++] = "--kv-transport";
        h.worker_args[na++] = g_transport;
    }
    h.worker_args[na] = NULL;
    const char *expect = getenv("KV_TEST_EXPECT_TRANSPORT");
    if (expect)
        CHECK(kv_transport_parse(expect, &g_expect_transport, &err) == 0 && g_expect_transport >= 0);
    g_decode_device = getenv("KV_TEST_DECODE_DEVICE");
    const char *dd = g_decode_device ? "--device" : NULL;
    const char *dec_args[] = {"--kv-blocks", "256", "--max-batch", "16", dd, g_decode_device, NULL};
    const char *pre_args[] = {"--kv-blocks", "64", "--prefill-chunk", "16", NULL};
    const char *fault_args[] = {"--kv-blocks", "32", "--fault", "drop-kv-ack", dd, g_decode_device, NULL};
    th_worker *d = th_spawn(&h, BIN_DECODE, model_dir, "dec-1", dec_args);
    th_worker *p = th_spawn(&h, BIN_PREFILL, model_dir, "pre-1", pre_args);
    th_worker *df = th_spawn(&h, BIN_DECODE, model_dir, "dec-fault", fault_args);
    CHECK(d && p && df);
    int up = d && p && df && th_wait_registered(&h, d, 1, 30000) && th_wait_registered(&h, p, 1, 30000) &&
             th_wait_registered(&h, df, 1, 30000);
    CHECK_MSG(up, "workers did not register");
    if (up) {
        CHECK_MSG(!strncmp(d->kv_endpoint, "tcp://127.0.0.1:", 16), "KV endpoint %s", d->kv_endpoint);
        CHECK_EQ_INT(d->blocks_total_reg, 256);
        test_layouts(&h, d, model_dir);
        test_identical(&h, p, d, engine, "");
        test_batch(&h, p, d, engine);
        test_small_messages(&h, d, engine, model_dir);
        test_idle_peer(&h, d, engine, model_dir);
        test_kv_endpoint(&h, d);
        test_hello(&h, d);
        if (g_device && !g_decode_device && getenv("KVSERVE_NCCL_LIB"))
            test_transport_refused(&h, d, model_dir);
        test_prefill_dies(&h, d, engine, model_dir);
        test_reservations(&h, d);
        test_fault(&h, p, df);
        test_register_first(&h, d);
        test_refused(&h, model_dir);
        test_control_fuzz(&h, p, d, 2000);
        /* Still serving after all that. */
        Kvserve__SamplingParams greedy = sampling(0, 0, 0, 0);
        ref_out ref;
        reference(engine, PROMPT5, 5, 60, &greedy, 0, &ref);
        check_same(&h, submit(&h, p, d, "after", PROMPT5, 5, 60, &greedy, 0, 10000, 30000), &ref);
        check_idle(&h, d);
        check_idle(&h, p);
        CHECK_MSG(h.unexpected == 0, "%d unexpected messages", h.unexpected);
    }
    th_worker *all[] = {d, p, df};
    for (int i = 0; i < 3; i++)
        if (all[i])
            CHECK_MSG(th_stop(&h, all[i], 10000) == 0, "%s: exit status %d", all[i]->id, all[i]->exit_status);
    th_close(&h);
    kv_engine_free(engine);
    kv_model_free(model);
    return kv_test_result();
}
