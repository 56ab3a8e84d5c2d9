/* test_cluster scenario "impostor" (issue 13's first stall): a process that connects to a
 * decode worker's KV endpoint under a prefill worker's id (which `kvctl status` shows) must
 * not cut that worker off. Before the fix the decode worker's KV ROUTER had
 * ZMQ_ROUTER_HANDOVER and the prefill worker used its id as its routing id: the impostor
 * took the connection over, and every later request failed with "no KvAck from decode
 * worker" while the status showed everything healthy. The impostor here is the issue's
 * Python snippet in C (a DEALER with ZMQ_ROUTING_ID = "prefill-0"), plus a KvChunk for an
 * unknown request whose refusal proves its handshake completed (no sleeps to guess it).
 *
 * Checks: requests served before, while the impostor is connected, after it left, and
 * while impostors keep connecting and leaving, all token-identical to the reference; no
 * request failed; the impostor's own chunk was refused (UNKNOWN_REQUEST); nothing leaks. */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "kv_test.h"
#include "kv_time.h"
#include "kv_wire.h"
#include "test_cluster.h"

/* decode-0's announced KV endpoint, from the router's status: 0 or -1. */
static int kv_endpoint_of(kv_client *c, const char *worker, char *out, size_t cap)
{
    kv_status *st = NULL;
    if (kv_client_status(c, 2000, &st))
        return -1;
    int rc = -1;
    for (size_t i = 0; i < st->n_workers; i++)
        if (!strcmp(st->workers[i].worker_id, worker) && st->workers[i].address &&
            strlen(st->workers[i].address) < cap) {
            snprintf(out, cap, "%s", st->workers[i].address);
            rc = 0;
        }
    kv_status_free(st);
    return rc;
}

/* The snippet: a DEALER claiming `id`, connected to ep. Returns the socket once the
 * decode worker answered a KvChunk for a request it does not know (so the connection is
 * up and identified), or NULL. The chunk is resent while unanswered: a ROUTER without
 * handover ignores a connection whose id is still held (the last impostor's, closing), and
 * then takes its next frame as its id. */
static void *impostor_connect(void *zctx, const char *id, const char *ep)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    if (!s)
        return NULL;
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    if (zmq_connect(s, ep)) {
        zmq_close(s);
        return NULL;
    }
    Kvserve__KvChunk kc;
    kvserve__kv_chunk__init(&kc);
    kc.request_id = "impostor-request";
    kc.prefill_worker_id = (char *)id;
    kc.last = 1;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_CHUNK;
    env.kv_chunk = &kc;
    kv_err err;
    kv_wire_msg m;
    int answered = 0, got = 0;
    kv_err_clear(&err);
    for (int attempt = 0; attempt < 5 && !got; attempt++) {
        if (kv_wire_send(s, NULL, &env, NULL, 0, 5000, &err) != KV_OK)
            break;
        got = kv_wire_recv(s, 0, 2000, &m, &err) == KV_OK;
        if (!got)
            kv_wire_msg_close(&m);
    }
    if (got) {
        answered = m.env->body_case == KVSERVE__ENVELOPE__BODY_KV_ACK && !m.env->kv_ack->ok &&
                   m.env->kv_ack->error && m.env->kv_ack->error->code == KVSERVE__ERROR_CODE__UNKNOWN_REQUEST;
        CHECK_MSG(answered, "impostor: its KvChunk got body %d instead of an UNKNOWN_REQUEST KvAck",
                  (int)m.env->body_case);
        kv_wire_msg_close(&m);
    } else {
        CHECK_MSG(0, "impostor: no answer from the decode worker: %s", err.msg);
    }
    if (!answered) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

void scenario_impostor(const char *model, const char *models)
{
    enum { N = 2, TOKENS = 24, ROUNDS = 4 };
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    void *zctx = zmq_ctx_new();
    void *imp = NULL;
    int32_t ref[300];
    int n_ref = kv_test_reference_tokens(models, ref, 300);
    CHECK_MSG(n_ref >= 5 + TOKENS, "impostor: reference tokens missing");
    memset(&cl, 0, sizeof cl);
    if (!zctx || n_ref < 5 + TOKENS || start_1p1d(&cl, &c, model, NULL, NULL, "impostor"))
        goto out;
    char ep[256];
    CHECK_MSG(kv_endpoint_of(c, "decode-0", ep, sizeof ep) == 0, "impostor: decode-0's KV endpoint not in the status");
    serve_reference(c, ref, N, TOKENS, "impostor (before)");

    /* Connected under prefill-0's id while requests go through prefill-0. */
    CHECK((imp = impostor_connect(zctx, "prefill-0", ep)) != NULL);
    serve_reference(c, ref, N, TOKENS, "impostor (connected)");
    /* The snippet's end: the impostor leaves. */
    if (imp)
        zmq_close(imp);
    imp = NULL;
    serve_reference(c, ref, N, TOKENS, "impostor (gone)");
    /* Again and again, each time with a request in between. */
    for (int i = 0; i < ROUNDS; i++) {
        void *s = impostor_connect(zctx, "prefill-0", ep);
        CHECK_MSG(s != NULL, "impostor round %d: not answered", i);
        if (s)
            zmq_close(s);
        serve_reference(c, ref, 1, TOKENS, "impostor (rounds)");
    }

    kv_status *st = NULL;
    CHECK(kv_client_status(c, 2000, &st) == KVC_OK);
    if (st) {
        CHECK_MSG(st->requests_failed == 0 && st->requests_replanned == 0,
                  "impostor: %llu requests failed, %llu re-planned (expected none)",
                  (unsigned long long)st->requests_failed, (unsigned long long)st->requests_replanned);
        kv_status_free(st);
    }
    CHECK_MSG(wait_idle(c, 4000, "impostor") == 0, "impostor: blocks leaked");
    fprintf(stderr, "impostor scenario: %d requests served around %d impostors claiming prefill-0; %.2f s\n",
            3 * N + ROUNDS, ROUNDS + 1, kv_now_s() - t0);
out:
    if (imp)
        zmq_close(imp);
    kv_client_close(c);
    cluster_stop(&cl);
    if (zctx)
        zmq_ctx_term(zctx);
}
