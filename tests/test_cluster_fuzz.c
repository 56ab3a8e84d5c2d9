/* test_cluster's scenario "fuzz": a 1P1D cluster serving requests of its own takes
 * FUZZ_MESSAGES messages on all three of its listening endpoints (the router's client and
 * control sockets, the decode worker's KV socket): envelopes of every body kind with
 * random but plausible contents (live request ids, block ids in and out of range, a
 * Register with the real model fingerprint), half of them then mutated (bits flipped, bytes
 * set, cut short, lengthened, spliced), some followed by payload frames. Afterwards every
 * process must still run, serve the reference token for token, and go idle: no request in
 * flight, every KV block free. The seed is fixed, so a failure reproduces; under the ASan
 * build a memory error in any process fails the scenario as well. For a longer campaign:
 * KV_FUZZ_SEED=N KV_FUZZ_MESSAGES=M KV_CLUSTER_ONLY=fuzz test_cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <zmq.h>

#include "kv_fuzz_envelope.h"
#include "kv_test.h"
#include "kv_time.h"
#include "kv_wire.h"
#include "model_config.h"
#include "test_cluster.h"

#define FUZZ_MESSAGES 3000
#define FUZZ_LIVE 4      /* requests of the test's own client in flight meanwhile */

typedef struct fuzz {
    kv_fuzz_rng r;
    kv_fuzz_cluster cl;
    void *sock[3];       /* client, control, KV */
    long sent[3];
} fuzz;

enum { TO_CLIENT = 0, TO_CONTROL, TO_KV };

static uint64_t rnd(fuzz *f) { return kv_fuzz_next(&f->r); }
static uint32_t below(fuzz *f, uint32_t n) { return kv_fuzz_below(&f->r, n); }

/* Which endpoint a body kind is meant for; one in eight goes to another at random. */
static int target_of(fuzz *f, int kind)
{
    if (below(f, 8) == 0)
        return (int)below(f, 3);
    switch (kind) {
    case KVSERVE__ENVELOPE__BODY_GENERATE:
    case KVSERVE__ENVELOPE__BODY_CANCEL:
    case KVSERVE__ENVELOPE__BODY_STATUS:
        return TO_CLIENT;
    case KVSERVE__ENVELOPE__BODY_KV_CHUNK:
    case KVSERVE__ENVELOPE__BODY_KV_HELLO:
    case KVSERVE__ENVELOPE__BODY_KV_NCCL_INIT:
    case KVSERVE__ENVELOPE__BODY_KV_ACK:
        return TO_KV;
    default:
        return TO_CONTROL;
    }
}

/* Without waiting: a full queue drops the message, as a flooding peer would be dropped. */
static void send_message(fuzz *f, int to, const uint8_t *buf, size_t len)
{
    static uint8_t frame[64 << 10];
    int frames = to == TO_KV && below(f, 3) == 0 ? 1 + (int)below(f, 4) : 0;
    if (zmq_send(f->sock[to], buf, len, ZMQ_DONTWAIT | (frames ? ZMQ_SNDMORE : 0)) < 0)
        return;
    for (int i = 0; i < frames; i++) {
        size_t n = below(f, 2) && f->cl.block_bytes <= sizeof frame ? f->cl.block_bytes : below(f, 4096);
        for (size_t k = 0; k < n; k += 8) frame[k] = (uint8_t)rnd(f);
        zmq_send(f->sock[to], frame, n, ZMQ_DONTWAIT | (i + 1 < frames ? ZMQ_SNDMORE : 0));
    }
    f->sent[to]++;
}

/* Whatever came back (errors, replies) is read and dropped. */
static void drain_replies(fuzz *f)
{
    uint8_t sink[256];
    for (int s = 0; s < 3; s++)
        while (zmq_recv(f->sock[s], sink, sizeof sink, ZMQ_DONTWAIT) >= 0) {
        }
}

/* Reads the socket until a StatusReply arrives: 0, or -1 after timeout_ms. */
static int wait_status_reply(void *s, int timeout_ms)
{
    double deadline = kv_now_s() + timeout_ms * 1e-3;
    while (kv_now_s() < deadline) {
        kv_wire_msg m;
        kv_err err;
        if (kv_wire_recv(s, 0, 100, &m, &err))
            continue;
        int found = m.env->body_case == KVSERVE__ENVELOPE__BODY_STATUS_REPLY;
        kv_wire_msg_close(&m);
        if (found)
            return 0;
    }
    return -1;
}

static void *fuzz_socket(void *ctx, const char *identity, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, hwm = 10000;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_ROUTING_ID, identity, strlen(identity));
    zmq_connect(s, ep);
    return s;
}

/* decode-0's KV endpoint and block size, from the router's status. */
static int decode_endpoint(kv_client *c, fuzz *f)
{
    kv_status *st = NULL;
    if (kv_client_status(c, 2000, &st))
        return -1;
    int found = -1;
    for (size_t i = 0; i < st->n_workers; i++)
        if (st->workers[i].role == KVC_ROLE_DECODE && st->workers[i].address) {
            snprintf(f->cl.kv_endpoint, sizeof f->cl.kv_endpoint, "%s", st->workers[i].address);
            found = 0;
        }
    kv_status_free(st);
    return found;
}

static void submit_live(kv_client *c, const int32_t *prompt)
{
    for (int i = 0; i < FUZZ_LIVE; i++) {
        char id[16];
        snprintf(id, sizeof id, "live-%d", i);
        kv_client_request r;
        kv_client_request_init(&r);
        r.request_id = id;
        r.prompt_tokens = prompt;
        r.n_prompt_tokens = 40 + (size_t)i * 20;
        r.max_tokens = 150;
        r.ignore_eos = 1;
        CHECK_MSG(kv_client_submit(c, &r, NULL, 2000) == KVC_OK, "fuzz: live request %d not submitted", i);
    }
}

/* The live requests end one way or another (the fuzz may have cancelled or broken them). */
static int wait_live(kv_client *c, int timeout_ms)
{
    double deadline = kv_now_s() + timeout_ms * 1e-3;
    while (kv_client_in_flight(c) > 0 && kv_now_s() < deadline) {
        kv_client_event ev;
        kv_client_next_event(c, 100, &ev);
    }
    return kv_client_in_flight(c);
}

void scenario_fuzz(const char *model, const char *models)
{
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    void *zctx = NULL;
    fuzz f;
    memset(&f, 0, sizeof f);
    const char *env = getenv("KV_FUZZ_SEED");
    f.r.s = 0x9E3779B97F4A7C15ull ^ (env ? strtoull(env, NULL, 0) * 0xD1B54A32D192ED03ull : 0);
    env = getenv("KV_FUZZ_MESSAGES");
    long n_messages = env ? strtol(env, NULL, 0) : FUZZ_MESSAGES;
    int32_t ref[300];
    int n_ref = kv_test_reference_tokens(models, ref, 300);
    kv_err err;
    kv_model_config cfg;
    int ready = n_ref >= 200 && kv_model_fingerprint(model, f.cl.fingerprint, &err) == 0 &&
                kv_model_config_load(model, &cfg, &err) == 0;
    CHECK_MSG(ready, "fuzz: reference, fingerprint or config missing");
    /* A fake worker registered by the fuzz must be gone soon after it falls silent. */
    const char *router_flags[] = {"--worker-timeout-ms", "2000", "--reserve-deadline-ms", "1000", NULL};
    memset(&cl, 0, sizeof cl);
    if (!ready || start_1p1d(&cl, &c, model, router_flags, NULL, "fuzz"))
        goto out;
    CHECK_MSG(decode_endpoint(c, &f) == 0, "fuzz: no decode worker KV endpoint in the status");
    f.cl.n_layers = (uint32_t)cfg.n_layers, f.cl.n_kv_heads = (uint32_t)cfg.n_kv_heads, f.cl.head_dim = (uint32_t)cfg.head_dim;
    f.cl.block_bytes = (uint64_t)16 * 2 * f.cl.n_layers * f.cl.n_kv_heads * f.cl.head_dim * 4;
    zctx = zmq_ctx_new();
    f.sock[TO_CLIENT] = fuzz_socket(zctx, "fuzz-client", cl.client_ep);
    f.sock[TO_CONTROL] = fuzz_socket(zctx, "fuzz-control", cl.control_ep);
    f.sock[TO_KV] = fuzz_socket(zctx, "fuzz-kv", f.cl.kv_endpoint);
    submit_live(c, ref);
    uint8_t buf[KV_FUZZ_BUF];
    for (long i = 0; i < n_messages; i++) {
        int kind = kv_fuzz_kinds[below(&f, KV_FUZZ_N_KINDS)];
        size_t len = kv_fuzz_envelope(&f.r, &f.cl, kind, buf);
        if (below(&f, 2))
            len = kv_fuzz_mutate(&f.r, buf, len);
        send_message(&f, target_of(&f, kind), buf, len);
        drain_replies(&f);
        if (i % 100 == 99) { /* let the processes read: a flood alone only fills queues */
            sleep_ms(5);
            kv_client_event ev;
            while (kv_client_next_event(c, 0, &ev) == KVC_OK) {
            }
        }
    }
    /* The router answers a client's messages in order: its reply to this Status says it has
     * read the whole flood from the fuzz client (the other sockets get a moment more). */
    size_t len = kv_fuzz_envelope(&f.r, &f.cl, KVSERVE__ENVELOPE__BODY_STATUS, buf);
    int synced = zmq_send(f.sock[TO_CLIENT], buf, len, 0) >= 0 && wait_status_reply(f.sock[TO_CLIENT], 20000) == 0;
    CHECK_MSG(synced, "fuzz: the router did not answer a Status after the flood");
    sleep_ms(500);
    for (int s = 0; s < 3; s++)
        zmq_close(f.sock[s]);
    zmq_ctx_term(zctx);
    zctx = NULL;
    kv_status *st = NULL;
    if (kv_client_status(c, 5000, &st) == KVC_OK) {
        fprintf(stderr, "fuzz: the router counted %llu requests (%llu failed)\n",
                (unsigned long long)st->requests_total, (unsigned long long)st->requests_failed);
        kv_status_free(st);
    }
    int died = 0;
    for (int i = 0; i < cl.n; i++) {
        int ws = 0;
        int gone = cl.p[i].pid > 0 && waitpid(cl.p[i].pid, &ws, WNOHANG) == cl.p[i].pid;
        CHECK_MSG(!gone, "fuzz: %s died (wait status 0x%x)", cl.p[i].name, ws);
        if (gone)
            cl.p[i].pid = 0;
        died += gone;
    }
    if (died)
        goto out; /* its log is printed by cluster_stop */
    CHECK_MSG(wait_live(c, 30000) == 0, "fuzz: live requests still in flight 30 s after the fuzz");
    CHECK_MSG(wait_workers(c, 2, 10000) == 0, "fuzz: the real workers are not both healthy");
    CHECK_MSG(wait_idle(c, 10000, "fuzz") == 0, "fuzz: not idle after the fuzz (a leak, or a fake worker kept)");
    serve_reference(c, ref, 2, 24, "fuzz");
    CHECK_MSG(wait_idle(c, 5000, "fuzz (after serving)") == 0, "fuzz: blocks leaked serving after the fuzz");
    fprintf(stderr, "fuzz scenario: %ld client, %ld control, %ld KV messages; %.2f s\n", f.sent[TO_CLIENT],
            f.sent[TO_CONTROL], f.sent[TO_KV], kv_now_s() - t0);
out:
    if (zctx) {
        for (int s = 0; s < 3; s++)
            if (f.sock[s])
                zmq_close(f.sock[s]);
        zmq_ctx_term(zctx);
    }
    kv_client_close(c);
    cluster_stop(&cl);
}
