/* kv-router as a process, fed bad input over raw ZeroMQ: garbage frames, a wrong protocol
 * version, invalid Generates (each error code), unknown ids, bodies on the wrong endpoint,
 * a worker with the wrong model; it must answer each with the right error and keep serving.
 * With no workers a valid Generate fails NO_CAPACITY after --queue-deadline-ms. SIGTERM
 * ends it with status 0 within 2 s. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "kv_test.h"
#include "kv_time.h"
#include "kv_wire.h"

#ifndef KV_ROUTER_BIN
#error "KV_ROUTER_BIN must name the kv-router binary"
#endif

#define QUEUE_DEADLINE_MS 300

static pid_t start_router(const char *model_dir, const char *ready)
{
    pid_t pid = fork();
    if (pid == 0) {
        char qd[32];
        snprintf(qd, sizeof qd, "%d", QUEUE_DEADLINE_MS);
        execl(KV_ROUTER_BIN, "kv-router", "--model", model_dir, "--listen", "tcp://127.0.0.1:0", "--control",
              "tcp://127.0.0.1:0", "--ready-file", ready, "--queue-deadline-ms", qd, (char *)NULL);
        perror("exec kv-router");
        _exit(127);
    }
    return pid;
}

/* Waits for the ready file: fills the two endpoints. */
static int read_ready(const char *path, pid_t pid, char *client, char *control, size_t cap)
{
    double end = kv_now_s() + 15.0;
    while (kv_now_s() < end) {
        FILE *f = fopen(path, "r");
        if (f) {
            char line[512];
            int got = 0;
            while (fgets(line, sizeof line, f)) {
                line[strcspn(line, "\n")] = '\0';
                if (!strncmp(line, "client=", 7))
                    got |= 1, snprintf(client, cap, "%s", line + 7);
                else if (!strncmp(line, "control=", 8))
                    got |= 2, snprintf(control, cap, "%s", line + 8);
            }
            fclose(f);
            if (got == 3)
                return 0;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "kv-router exited early (status %d)\n", status);
            return -1;
        }
        usleep(10000);
    }
    return -1;
}

static void *dealer(void *ctx, const char *id, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (id)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    zmq_connect(s, ep);
    return s;
}

static void send_env(void *sock, Kvserve__Envelope *env)
{
    kv_err err;
    CHECK_MSG(kv_wire_send(sock, NULL, env, NULL, 0, 2000, &err) == 0, "%s", err.msg);
}

static Kvserve__Envelope *recv_env(void *sock, int timeout_ms)
{
    kv_wire_msg m;
    kv_err err;
    int rc = kv_wire_recv(sock, 0, timeout_ms, &m, &err);
    if (rc) {
        fprintf(stderr, "recv: %s\n", err.msg);
        return NULL;
    }
    Kvserve__Envelope *env = m.env;
    m.env = NULL;
    kv_wire_msg_close(&m);
    return env;
}

static void expect_error(void *sock, int code, const char *what)
{
    Kvserve__Envelope *env = recv_env(sock, 3000);
    CHECK_MSG(env && env->body_case == KVSERVE__ENVELOPE__BODY_ERROR, "%s: no Error reply (body %d)", what,
              env ? (int)env->body_case : -1);
    if (env && env->body_case == KVSERVE__ENVELOPE__BODY_ERROR)
        CHECK_MSG((int)env->error->code == code, "%s: code %d, expected %d (%s)", what, (int)env->error->code, code,
                  env->error->message);
    if (env)
        kvserve__envelope__free_unpacked(env, NULL);
}

static void expect_generate_error(void *sock, const char *id, int code, int timeout_ms, const char *what)
{
    Kvserve__Envelope *env = recv_env(sock, timeout_ms);
    CHECK_MSG(env && env->body_case == KVSERVE__ENVELOPE__BODY_REPLY, "%s: no GenerateReply (body %d)", what,
              env ? (int)env->body_case : -1);
    if (env && env->body_case == KVSERVE__ENVELOPE__BODY_REPLY) {
        Kvserve__GenerateReply *r = env->reply;
        CHECK_MSG(!strcmp(r->request_id, id), "%s: reply for '%s'", what, r->request_id);
        CHECK_MSG(r->finish_reason == KVSERVE__FINISH_REASON__FINISH_ERROR && r->error, "%s: finish %d", what,
                  r->finish_reason);
        if (r->error)
            CHECK_MSG((int)r->error->code == code, "%s: code %d, expected %d (%s)", what, (int)r->error->code, code,
                      r->error->message);
    }
    if (env)
        kvserve__envelope__free_unpacked(env, NULL);
}

static void generate(void *sock, Kvserve__GenerateRequest *g)
{
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_GENERATE;
    env.generate = g;
    send_env(sock, &env);
}

static void check_status(void *client, const char *when)
{
    Kvserve__Envelope env;
    Kvserve__StatusRequest sr;
    kv_wire_envelope_init(&env);
    kvserve__status_request__init(&sr);
    env.body_case = KVSERVE__ENVELOPE__BODY_STATUS;
    env.status = &sr;
    send_env(client, &env);
    Kvserve__Envelope *rep = recv_env(client, 3000);
    CHECK_MSG(rep && rep->body_case == KVSERVE__ENVELOPE__BODY_STATUS_REPLY, "no StatusReply %s", when);
    if (rep && rep->body_case == KVSERVE__ENVELOPE__BODY_STATUS_REPLY) {
        CHECK(!strcmp(rep->status_reply->model, "stories260K"));
        CHECK_EQ_INT(rep->status_reply->n_workers, 0);
    }
    if (rep)
        kvserve__envelope__free_unpacked(rep, NULL);
}

static void run(void *ctx, const char *client_ep, const char *control_ep)
{
    void *client = dealer(ctx, "bad-client", client_ep);
    void *control = dealer(ctx, "bad-worker", control_ep);
    Kvserve__Envelope env;

    /* Garbage bytes: not an envelope. */
    const unsigned char garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
    CHECK(zmq_send(client, garbage, sizeof garbage, 0) == (int)sizeof garbage);
    expect_error(client, KVSERVE__ERROR_CODE__BAD_MESSAGE, "garbage on the client endpoint");
    CHECK(zmq_send(control, garbage, sizeof garbage, 0) == (int)sizeof garbage);
    expect_error(control, KVSERVE__ERROR_CODE__BAD_MESSAGE, "garbage on the control endpoint");

    /* An envelope of protocol version 99. */
    Kvserve__StatusRequest sr;
    kv_wire_envelope_init(&env);
    kvserve__status_request__init(&sr);
    env.version = 99;
    env.body_case = KVSERVE__ENVELOPE__BODY_STATUS;
    env.status = &sr;
    send_env(client, &env);
    expect_error(client, KVSERVE__ERROR_CODE__VERSION_MISMATCH, "version 99");

    /* A body the client endpoint does not take. */
    Kvserve__Heartbeat hb;
    kv_wire_envelope_init(&env);
    kvserve__heartbeat__init(&hb);
    env.body_case = KVSERVE__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(client, &env);
    expect_error(client, KVSERVE__ERROR_CODE__BAD_MESSAGE, "heartbeat on the client endpoint");

    /* Invalid Generates. */
    int32_t toks[600];
    for (int i = 0; i < 600; i++)
        toks[i] = 1 + i % 500;
    Kvserve__GenerateRequest g;
    Kvserve__SamplingParams sp;
    kvserve__generate_request__init(&g);
    g.request_id = "unknown-model";
    g.prompt = "Once upon a time";
    g.model = "llama-405b";
    generate(client, &g);
    expect_generate_error(client, "unknown-model", KVSERVE__ERROR_CODE__UNKNOWN_MODEL, 3000, "unknown model");

    kvserve__generate_request__init(&g);
    g.request_id = "empty";
    generate(client, &g);
    expect_generate_error(client, "empty", KVSERVE__ERROR_CODE__INVALID_ARGUMENT, 3000, "empty prompt");

    kvserve__generate_request__init(&g);
    g.request_id = "too-long";
    g.prompt_tokens = toks;
    g.n_prompt_tokens = 600; /* context 512 */
    generate(client, &g);
    expect_generate_error(client, "too-long", KVSERVE__ERROR_CODE__PROMPT_TOO_LONG, 3000, "prompt too long");

    size_t big = 20000;
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        text[i] = "ab, cd. "[i % 8];
    text[big] = '\0';
    kvserve__generate_request__init(&g);
    g.request_id = "too-long-text";
    g.prompt = text;
    generate(client, &g);
    expect_generate_error(client, "too-long-text", KVSERVE__ERROR_CODE__PROMPT_TOO_LONG, 3000, "text too long");
    free(text);

    kvserve__generate_request__init(&g);
    kvserve__sampling_params__init(&sp);
    sp.temperature = -1.0f;
    g.request_id = "bad-temperature";
    g.prompt = "Once upon a time";
    g.sampling = &sp;
    generate(client, &g);
    expect_generate_error(client, "bad-temperature", KVSERVE__ERROR_CODE__INVALID_ARGUMENT, 3000,
                          "invalid temperature");

    int32_t oov = 100000;
    kvserve__generate_request__init(&g);
    g.request_id = "bad-token";
    g.prompt_tokens = &oov;
    g.n_prompt_tokens = 1;
    generate(client, &g);
    expect_generate_error(client, "bad-token", KVSERVE__ERROR_CODE__INVALID_ARGUMENT, 3000, "token out of vocab");

    /* Cancel of an id never sent. */
    Kvserve__CancelRequest c;
    kv_wire_envelope_init(&env);
    kvserve__cancel_request__init(&c);
    c.request_id = "never-sent";
    env.body_case = KVSERVE__ENVELOPE__BODY_CANCEL;
    env.cancel = &c;
    send_env(client, &env);
    expect_error(client, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "cancel unknown id");

    /* A worker of another model. */
    Kvserve__Register reg;
    Kvserve__KvLayout l;
    kv_wire_envelope_init(&env);
    kvserve__register__init(&reg);
    kvserve__kv_layout__init(&l);
    l.n_layers = 5;
    l.n_kv_heads = 4;
    l.head_dim = 8;
    l.block_size = 16;
    l.dtype = "f32";
    l.block_bytes = 2 * 5 * 4 * 8 * 16 * 4;
    reg.worker_id = "bad-worker";
    reg.role = KVSERVE__WORKER_ROLE__ROLE_DECODE;
    reg.model = "other";
    reg.model_fingerprint = "deadbeef";
    reg.kv_endpoint = "tcp://127.0.0.1:1";
    reg.layout = &l;
    reg.kv_blocks_total = 64;
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    send_env(control, &env);
    Kvserve__Envelope *ack = recv_env(control, 3000);
    CHECK_MSG(ack && ack->body_case == KVSERVE__ENVELOPE__BODY_REGISTER_ACK, "no RegisterAck");
    if (ack && ack->body_case == KVSERVE__ENVELOPE__BODY_REGISTER_ACK)
        CHECK(!ack->register_ack->accepted && ack->register_ack->error &&
              ack->register_ack->error->code == KVSERVE__ERROR_CODE__UNKNOWN_MODEL);
    if (ack)
        kvserve__envelope__free_unpacked(ack, NULL);

    /* An unregistered worker's heartbeat: "register first". */
    kv_wire_envelope_init(&env);
    kvserve__heartbeat__init(&hb);
    hb.worker_id = "bad-worker";
    env.body_case = KVSERVE__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(control, &env);
    expect_error(control, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "heartbeat before register");

    /* A client that sends and vanishes: its reply is dropped, nothing blocks. */
    void *gone = dealer(ctx, "gone-client", client_ep);
    kvserve__generate_request__init(&g);
    g.request_id = "orphan";
    g.prompt = "Once upon a time";
    generate(gone, &g);
    zmq_close(gone);

    check_status(client, "after bad input");

    /* With no workers a valid request waits for capacity, then fails NO_CAPACITY. */
    kvserve__generate_request__init(&g);
    g.request_id = "no-workers";
    g.prompt = "Once upon a time";
    g.max_tokens = 8;
    g.stream = 1;
    double t0 = kv_now_s();
    generate(client, &g);
    expect_generate_error(client, "no-workers", KVSERVE__ERROR_CODE__NO_CAPACITY, 5000, "no workers");
    double waited_ms = (kv_now_s() - t0) * 1e3;
    /* Not before the queue deadline; how long after is the machine's business. */
    CHECK_MSG(waited_ms >= QUEUE_DEADLINE_MS - 50, "NO_CAPACITY after only %.0f ms", waited_ms);

    check_status(client, "at the end");
    zmq_close(client);
    zmq_close(control);
}

int main(void)
{
    const char *models = kv_test_models_dir();
    if (!models)
        KV_TEST_SKIP("shared models not found (set KVSERVE_TEST_MODELS)");
    char model_dir[4096];
    snprintf(model_dir, sizeof model_dir, "%s/stories260K", models);
    char tmpl[] = "/tmp/kv-router-test-XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir) {
        perror("mkdtemp");
        return 1;
    }
    char ready[4200];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    signal(SIGPIPE, SIG_IGN);

    pid_t pid = start_router(model_dir, ready);
    CHECK(pid > 0);
    char client_ep[512], control_ep[512];
    int up = pid > 0 && read_ready(ready, pid, client_ep, control_ep, sizeof client_ep) == 0;
    CHECK_MSG(up, "kv-router did not write %s", ready);
    if (up) {
        void *ctx = zmq_ctx_new();
        run(ctx, client_ep, control_ep);
        zmq_ctx_term(ctx);
    }

    /* SIGTERM: exit status 0 within 2 s. */
    if (pid > 0) {
        kill(pid, SIGTERM);
        int status = -1, done = 0;
        double end = kv_now_s() + 2.0;
        while (!done && kv_now_s() < end) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                done = 1;
            else
                usleep(10000);
        }
        CHECK_MSG(done, "kv-router still running 2 s after SIGTERM");
        if (!done) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        } else {
            CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "kv-router exit status %d", status);
        }
    }
    unlink(ready);
    rmdir(dir);
    return kv_test_result();
}
