/* The decode worker's KV socket under CURVE: a server with this worker's key, admitting
 * only the keys of --worker-keys, the same allowlist the router admits workers from (so
 * only prefill workers the cluster vouched for can ship KV). The ZAP handler runs on its
 * own thread and reads nothing but the allowlist, fixed at start. */
#ifndef DECODE_KV_AUTH_H
#define DECODE_KV_AUTH_H

#include "kv_curve.h"
#include "kv_zap.h"
#include "worker_flags.h"

typedef struct decode_kv_auth {
    int on;
    kv_curve_allow allow;
    kv_zap zap;
} decode_kv_auth;

/* Before kv_sock binds: loads the allowlist, starts the ZAP thread in zctx, makes kv_sock a
 * CURVE server. Nothing when f->key_file is NULL. */
int decode_kv_auth_open(decode_kv_auth *a, void *zctx, void *kv_sock, const worker_flags *f, kv_err *err);
/* After zmq_ctx_term(zctx) returned (the ZAP thread ends with the context). */
void decode_kv_auth_close(decode_kv_auth *a);

#endif
