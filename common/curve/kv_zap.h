/* A ZAP handler (ZeroMQ RFC 27) for the CURVE servers of one ZeroMQ context: every CURVE
 * handshake on a socket of that context asks it, and only an admitted key gets through.
 * The handler replies with User-Id = the client's Z85 public key, so each message a server
 * receives names its sender's key (zmq_msg_gets(msg, "User-Id")).
 *
 * Two ways to run it: polled from the owner's own loop (kv_zap_socket + kv_zap_handle),
 * so the decision may use the owner's state without locks; or on a thread of its own
 * (kv_zap_thread_start) with a decision that reads only immutable data. */
#ifndef KV_ZAP_H
#define KV_ZAP_H

#include <pthread.h>
#include <stddef.h>

#include "kv_curve.h"
#include "kv_err.h"

/* What a ZAP request says about the connecting peer. */
typedef struct kv_zap_peer {
    char domain[64];             /* the server socket's ZMQ_ZAP_DOMAIN */
    char address[64];            /* its IP address */
    unsigned char routing_id[255]; /* the routing id it announced (ZMQ_ROUTING_ID; may be empty) */
    size_t routing_id_len;
    char key[KV_CURVE_Z85];      /* its public key, Z85 ("" when not a CURVE handshake) */
} kv_zap_peer;

/* Returns 1 to admit the peer; to refuse, 0 with a short reason in why. */
typedef int (*kv_zap_decide)(void *ctx, const kv_zap_peer *peer, char *why, size_t cap);

typedef struct kv_zap {
    void *sock; /* REP bound to inproc://zeromq.zap.01 */
    kv_zap_decide decide;
    void *ctx;
    const char *comp; /* log component */
    pthread_t thread;
    int has_thread;
} kv_zap;

/* Binds the handler in zctx (one per context). */
int kv_zap_open(kv_zap *z, void *zctx, kv_zap_decide decide, void *ctx, const char *comp, kv_err *err);
/* Answers every request waiting now (never blocks). Refusals are logged with the key's
 * first characters and the reason. */
void kv_zap_handle(kv_zap *z);
/* Runs kv_zap_handle on its own thread until the context is terminated. */
int kv_zap_thread_start(kv_zap *z, kv_err *err);
/* Closes the socket (polled mode), or joins the thread: call after zmq_ctx_term started
 * (i.e. from the thread that terminated the context, after it returned). */
void kv_zap_close(kv_zap *z);

/* Log form of a key: its first 8 characters. */
const char *kv_zap_key_prefix(const char *z85, char out[9]);

#endif
