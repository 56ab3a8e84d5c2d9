/* Small protocol helpers both workers use: sampling params from the wire, error codes,
 * and "send this body" wrappers that log instead of failing the caller. */
#ifndef KV_WORKER_PROTO_H
#define KV_WORKER_PROTO_H

#include "kv_wire.h"
#include "sampler.h"

/* The wire's SamplingParams (NULL = defaults) as sampler params: top_p 0 means 1 (off),
 * as in kvctl; validated. */
int worker_sampling_from_proto(const Kvserve__SamplingParams *sp, kv_sampling_params *out, kv_err *err);

/* An Error sub-message on the stack (message/request id are borrowed). */
void worker_error_init(Kvserve__Error *e, Kvserve__ErrorCode code, const char *request_id, const char *message);

/* Sends env (body set by the caller) on sock; logs a warning (component comp, what) on
 * failure. timeout_ms as kv_wire_send. Returns KV_OK or the error code. */
int worker_send(void *sock, const kv_wire_route *route, const Kvserve__Envelope *env, int timeout_ms,
                const char *comp, const char *what);

/* Name of a protocol error code, for logs. */
const char *worker_error_name(Kvserve__ErrorCode code);

#endif
