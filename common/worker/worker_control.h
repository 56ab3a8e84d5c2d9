/* A worker's control channel to the router: a DEALER (identity = worker id), Register +
 * RegisterAck (retried every 5 s until answered; a refusal is final), heartbeats every
 * interval, and re-registration when the router answers "register first". */
#ifndef KV_WORKER_CONTROL_H
#define KV_WORKER_CONTROL_H

#include <stdint.h>

#include "kv_wire.h"
#include "worker_engine.h"
#include "worker_flags.h"

#define WORKER_REGISTER_RETRY_S 5.0
#define WORKER_DEFAULT_HEARTBEAT_MS 500
#define WORKER_ALIVE_PERIOD_S 1.0

/* What a heartbeat reports. */
typedef struct worker_load {
    uint32_t running, queued, blocks_free, blocks_total;
} worker_load;

typedef struct worker_control {
    void *sock;                 /* DEALER to the router */
    const char *comp;           /* log component: the program name */
    Kvserve__Register reg;      /* what Register announces (strings point into the fields below) */
    Kvserve__KvLayout layout;
    Kvserve__KvTransport transports[KV_TRANSPORT_COUNT];
    char id[KV_WORKER_ID_MAX + 1];
    char model[256], fingerprint[9], kv_endpoint[256], device[64], router[256];
    int registered;             /* the router accepted us (and has not forgotten us since) */
    int refused;                /* the router refused us: exit 1 */
    char refusal[512];
    int heartbeat_ms;
    double next_heartbeat_s;
    double register_at_s;       /* when to (re)send Register while not registered; 0 = not pending */
    const char *alive_file;     /* --alive-file, or NULL */
    double alive_next_s;        /* when to touch it next */
    int alive_failing;          /* the last touch failed (logged once per failing spell) */
    kv_pool *pool;              /* its prefix cache's events ride on the heartbeats */
    /* Called before each Register goes out, to fill reg->held (a decode worker's running
     * requests); reg->held is cleared after the send. NULL = nothing held. */
    void (*register_fill)(void *ctx, Kvserve__Register *reg);
    void *register_ctx;
} worker_control;

/* Connects the DEALER to f->router and prepares the Register message. kv_endpoint: the
 * decode worker's announced KV endpoint ("" for a prefill worker). */
/* CURVE client options (--key, --router-key) on sock, before it connects to the router;
 * nothing but a loud warning without --key. */
int worker_curve_client(void *sock, const worker_flags *f, kv_err *err);
int worker_control_open(worker_control *wc, void *zctx, const worker_flags *f, const worker_engine *we,
                        const char *kv_endpoint, kv_err *err);
void worker_control_close(worker_control *wc);

/* Blocks until the router accepts (KV_OK), refuses (KV_ESTATE, err = its message) or a
 * signal stops the worker (KV_ETIMEOUT), sending Register every 5 s meanwhile. */
int worker_control_register(worker_control *wc, kv_err *err);

/* Registers, then runs loop(ctx) while registered: the worker's exit status. 0 also when a
 * signal stopped it before the router answered; 1 after a refusal (at registration or
 * later), whose reason is printed on stderr as "prog: reason". */
int worker_control_serve(worker_control *wc, const char *prog, int (*loop)(void *ctx), void *ctx);

/* Offers a control message to the channel: returns 1 when it was the channel's (RegisterAck,
 * Error "register first"), 0 when the role should handle it. */
int worker_control_handle(worker_control *wc, const kv_wire_msg *m);

/* Sends what is due: a heartbeat (with the prefix cache's stored/evicted block hashes since
 * the last one, and a reset after each fresh registration), or a pending Register; touches the --alive-file (at most
 * once a second, whether or not the router is there: its age tells a liveness probe whether
 * this loop still turns). */
void worker_control_tick(worker_control *wc, const worker_load *load);

/* When worker_control_tick next has something to do (monotonic seconds). */
double worker_control_wake(const worker_control *wc);

#endif
