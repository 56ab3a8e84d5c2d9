/* Helper of test_security.sh: an impostor peer. Connects a DEALER to EP (plain, or CURVE
 * with --key FILE and --server-key PUB), optionally under --id ID (a routing id, as the
 * issue's Python snippet claims "prefill-0"), sends one message (--msg status: a
 * StatusRequest, for a router's client endpoint; --msg register: a Register of --id, for a
 * router's control endpoint; --msg kvchunk: a KvChunk for an unknown request, for a decode
 * worker's KV endpoint; --claim ID: the id the message names, when not the routing id)
 * and waits --wait-ms for any answer.
 * Exit 0: answered (the socket let it in); 3: no answer (refused); 2: usage; 1: error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_curve.h"
#include "kv_time.h"
#include "kv_wire.h"

static int usage(void)
{
    fprintf(stderr, "usage: test_security_probe EP --msg status|register|kvchunk [--id ID] [--claim ID] [--key FILE "
                    "--server-key PUB] [--wait-ms N]\n");
    return 2;
}

static int send_msg(void *s, const char *msg, const char *id)
{
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    Kvserve__StatusRequest sr;
    Kvserve__KvChunk kc;
    Kvserve__Register reg;
    if (!strcmp(msg, "status")) {
        kvserve__status_request__init(&sr);
        env.body_case = KVSERVE__ENVELOPE__BODY_STATUS;
        env.status = &sr;
    } else if (!strcmp(msg, "kvchunk")) {
        kvserve__kv_chunk__init(&kc);
        kc.request_id = "probe-request";
        kc.prefill_worker_id = (char *)(id ? id : "probe");
        kc.last = 1;
        env.body_case = KVSERVE__ENVELOPE__BODY_KV_CHUNK;
        env.kv_chunk = &kc;
    } else if (!strcmp(msg, "register")) {
        kvserve__register__init(&reg);
        reg.worker_id = (char *)(id ? id : "probe");
        reg.role = KVSERVE__WORKER_ROLE__ROLE_DECODE;
        env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER;
        env.register_ = &reg;
    } else {
        return 2;
    }
    kv_err err;
    return kv_wire_send(s, NULL, &env, NULL, 0, 200, &err) ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *ep = argv[1], *msg = NULL, *id = NULL, *claim = NULL, *key = NULL, *server = NULL;
    long wait_ms = 3000;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--msg")) msg = argv[i + 1];
        else if (!strcmp(argv[i], "--id")) id = argv[i + 1];
        else if (!strcmp(argv[i], "--claim")) claim = argv[i + 1];
        else if (!strcmp(argv[i], "--key")) key = argv[i + 1];
        else if (!strcmp(argv[i], "--server-key")) server = argv[i + 1];
        else if (!strcmp(argv[i], "--wait-ms")) wait_ms = strtol(argv[i + 1], NULL, 10);
        else return usage();
    }
    if (!msg || (argc % 2) != 0 || wait_ms <= 0 || wait_ms > 60000)
        return usage();
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (id)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    if (key) {
        kv_curve_key k;
        char pub[KV_CURVE_Z85];
        kv_err err;
        if (!server || kv_curve_key_load(key, &k, &err) || kv_curve_pub_load(server, pub, &err) ||
            kv_curve_apply_client(s, &k, pub, &err)) {
            fprintf(stderr, "test_security_probe: %s\n", server ? err.msg : "--key needs --server-key");
            return 1;
        }
    }
    if (zmq_connect(s, ep) != 0) {
        fprintf(stderr, "test_security_probe: connect %s: %s\n", ep, zmq_strerror(zmq_errno()));
        return 1;
    }
    /* Resent until answered: a message queued before a refused handshake is simply lost. */
    double end = kv_now_s() + wait_ms * 1e-3;
    int answered = 0;
    while (!answered && kv_now_s() < end) {
        if (send_msg(s, msg, claim ? claim : id) == 2)
            return usage();
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 300) > 0) {
            kv_wire_msg m;
            kv_err err;
            if (kv_wire_recv(s, 0, 0, &m, &err) == KV_OK) {
                answered = 1;
                printf("answered: body %d\n", (int)m.env->body_case);
            }
            kv_wire_msg_close(&m);
        }
    }
    if (!answered)
        printf("no answer within %ld ms\n", wait_ms);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return answered ? 0 : 3;
}
