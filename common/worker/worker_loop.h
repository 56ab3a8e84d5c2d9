/* The event-loop skeleton both workers share: one zmq_poll over their sockets with a
 * timeout derived from the next deadline, then drain what arrived. */
#ifndef KV_WORKER_LOOP_H
#define KV_WORKER_LOOP_H

#include <zmq.h>

#include "kv_wire.h"

/* Longest single wait: the loops re-check the stop flag at least this often. */
#define WORKER_MAX_WAIT_MS 250

/* Milliseconds from now_s until wake_s (monotonic seconds), clamped to [0, WORKER_MAX_WAIT_MS]. */
int worker_timeout_ms(double now_s, double wake_s);

/* zmq_poll; EINTR (a signal) counts as "nothing ready". Returns the number of ready items. */
int worker_poll(zmq_pollitem_t *items, int n, int timeout_ms);

/* Called for each message drained from a socket: rc is KV_OK (m->env valid), KV_EFORMAT or
 * KV_EUNSUPPORTED (m->route tells the sender; err says what was wrong). The callee may take
 * m->env (set it to NULL); the rest is closed after the call. */
typedef void (*worker_msg_fn)(void *ctx, kv_wire_msg *m, int rc, const kv_err *err);

/* Receives up to max messages already queued on sock, without waiting. Returns how many. */
int worker_drain(void *sock, int with_route, int max, worker_msg_fn fn, void *ctx);

/* Socket options every worker socket gets: no linger at close; optionally ZMQ_IMMEDIATE. */
void worker_sock_defaults(void *sock, int immediate);

#endif
