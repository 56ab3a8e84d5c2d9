#include "worker_loop.h"

#include <errno.h>

int worker_timeout_ms(double now_s, double wake_s)
{
    double ms = (wake_s - now_s) * 1e3;
    if (!(ms > 0))
        return 0;
    if (ms >= WORKER_MAX_WAIT_MS)
        return WORKER_MAX_WAIT_MS;
    return (int)ms + 1; /* round up: waking just before a deadline would spin */
}

int worker_poll(zmq_pollitem_t *items, int n, int timeout_ms)
{
    for (int i = 0; i < n; i++)
        items[i].revents = 0;
    int rc = zmq_poll(items, n, timeout_ms);
    return rc < 0 ? 0 : rc; /* EINTR: the caller re-checks the stop flag */
}

int worker_drain(void *sock, int with_route, int max, worker_msg_fn fn, void *ctx)
{
    int n = 0;
    while (n < max) {
        kv_wire_msg m;
        kv_err err;
        kv_err_clear(&err);
        int rc = kv_wire_recv(sock, with_route, 0, &m, &err);
        if (rc == KV_ETIMEOUT || rc == KV_EIO || rc == KV_ENOMEM) {
            kv_wire_msg_close(&m);
            if (rc == KV_ETIMEOUT || rc == KV_EIO)
                break; /* nothing more queued (EIO: EINTR or a closed socket) */
            continue;
        }
        n++;
        fn(ctx, &m, rc, &err);
        kv_wire_msg_close(&m);
    }
    return n;
}

void worker_sock_defaults(void *sock, int immediate)
{
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (immediate) {
        int one = 1;
        zmq_setsockopt(sock, ZMQ_IMMEDIATE, &one, sizeof one);
    }
}
