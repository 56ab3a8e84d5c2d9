/* Worker registry of the router: registration checks (model fingerprint, KV layout),
 * heartbeats and health, load accounting (the picks are router_policy.h's).
 * Pure bookkeeping: no sockets, time passed in by the caller. */
#ifndef ROUTER_WORKERS_H
#define ROUTER_WORKERS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_wire.h"
#include "router_map.h"

typedef struct router_layout {
    uint32_t n_layers, n_kv_heads, head_dim, block_size;
    char dtype[16];
    uint64_t block_bytes;
} router_layout;

typedef struct router_worker {
    kv_wire_route route;   /* control DEALER identity: where messages to it go */
    char *id;              /* Register.worker_id */
    int role;              /* KVSERVE__WORKER_ROLE__ROLE_PREFILL / _DECODE */
    char *kv_endpoint;     /* decode: where prefill workers ship KV */
    char *address;         /* shown by status: the KV endpoint, or the control peer + pid */
    char *device;
    char *weights;         /* Register.weights: its weight formats ("q4_1+q8_0+f32") */
    char *kv_transports;   /* what its --kv-transport allows, preferred first ("cuda-ipc,nccl,zmq") */
    uint32_t pid;
    uint32_t kv_blocks_total;
    uint32_t max_context;  /* 0 = the model's */
    double registered_at;
    /* From the last heartbeat. */
    double last_heartbeat;
    uint32_t hb_running, hb_queued, hb_free, hb_total;
    /* Router accounting. Messages on one socket arrive in order, so a heartbeat reflects
     * every ReserveReply the worker sent before it: free_est = last heartbeat's free blocks
     * - blocks granted since + blocks released (finished requests) since. */
    int64_t free_est;
    uint64_t promised;     /* decode: blocks of ReserveRequests sent, not yet answered */
    uint32_t active;       /* decode: requests owned; prefill: tasks sent, not done */
    uint64_t serial;       /* registration number: a new process of one id gets a new one */
    int prefix_slot;       /* its slot in the router's prefix index (router_prefix.h); -1 = none */
    uint32_t hb_cached;    /* Heartbeat.kv_blocks_cached */
    uint64_t hb_query_tokens, hb_hit_tokens; /* Heartbeat.prefix_*_tokens (cumulative) */
    /* Prefill: decode workers (by serial) it has no KV transport in common with. */
    uint64_t *refused;
    size_t n_refused;
} router_worker;

typedef struct router_workers {
    router_map by_route;
    router_worker **list; /* registration order */
    size_t n, cap;
    int have_layout;      /* the cluster's KV layout is fixed by the first worker */
    router_layout layout;
    uint64_t next_serial;
} router_workers;

/* What the model requires of every worker's layout. */
typedef struct router_model_shape {
    uint32_t n_layers, n_kv_heads, head_dim;
    const char *fingerprint; /* 8 hex digits */
} router_model_shape;

void router_workers_init(router_workers *w);
void router_workers_free(router_workers *w);

router_worker *router_workers_find(const router_workers *w, const kv_wire_route *route);

/* Checks a Register against the model and the cluster: returns ERROR_NONE, or the code for
 * the refusal (UNKNOWN_MODEL, INVALID_ARGUMENT) with a message in msg. */
int router_workers_check_register(const router_workers *w, const router_model_shape *model,
                                  const Kvserve__Register *reg, char *msg, size_t msg_cap);
/* Adds a worker (after the check passed). Returns it, or NULL when out of memory. The caller
 * removes any previous worker on the same route first. */
router_worker *router_workers_add(router_workers *w, const kv_wire_route *route, const Kvserve__Register *reg,
                                  double now);
/* Removes and frees a worker (its requests must have been dealt with). */
void router_workers_remove(router_workers *w, router_worker *wk);

void router_workers_heartbeat(router_worker *wk, const Kvserve__Heartbeat *hb, double now);
/* Blocks a decode worker can still promise. */
int64_t router_worker_available(const router_worker *wk);

/* Blocks for n tokens with this block size. */
static inline uint32_t router_blocks_for(uint64_t n_tokens, uint32_t block_size)
{
    return block_size ? (uint32_t)((n_tokens + block_size - 1) / block_size) : 0;
}

/* Prefill worker p found no KV transport in common with decode worker d: the pair is not
 * picked again while both live. KV_OK or KV_ENOMEM. */
int router_pair_refuse(router_worker *p, const router_worker *d);
int router_pair_refused(const router_worker *p, const router_worker *d);
/* Workers whose last heartbeat is older than timeout_s: fills out (up to cap), returns count. */
size_t router_workers_expired(const router_workers *w, double now, double timeout_s, router_worker **out,
                              size_t cap);

const char *router_role_name(int role);

#endif
