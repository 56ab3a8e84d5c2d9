/* kv-router: the state every router module shares, owned by main (no globals besides the
 * signal flag), and the functions the modules call on each other. */
#ifndef ROUTER_H
#define ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "kv_wire.h"
#include "model_config.h"
#include "router_metrics.h"
#include "router_policy.h"
#include "router_prefix.h"
#include "router_requests.h"
#include "router_workers.h"
#include "router_zap.h"
#include "router_liveness.h"
#include "kv_prompt.h"
#include "tokenizer.h"

typedef struct router_opts {
    const char *model_dir;
    const char *listen;     /* client endpoint */
    const char *control;    /* worker endpoint */
    const char *ready_file; /* NULL = none */
    int heartbeat_ms;
    int worker_timeout_ms;
    int max_prompt_tokens;  /* 0 = context length - 1 */
    int reserve_deadline_ms;
    int prefill_deadline_ms;
    int token_deadline_ms;
    int request_deadline_ms;
    int queue_deadline_ms;
    int ack_deadline_ms;    /* PrefillTask.ack_deadline_ms (capped at the prefill deadline) */
    const char *key_file;    /* --key: CURVE on (router_zap.h); NULL = off, said loudly */
    const char *worker_keys; /* --worker-keys FILE|DIR */
    const char *client_keys; /* --client-keys FILE|DIR */
    int route_cache;         /* --route-policy cache (1) | load (0) */
    int route_load_tokens;   /* --route-load-tokens: an active request's cost, in tokens */
    int route_balance;       /* --route-balance: the most extra active requests a pick tolerates */
    int local_prefill_max;   /* --local-prefill-max (ReserveRequest.local_prefill_max) */
    int client_timeout_ms;   /* --client-timeout: cancel a silent client's requests (0 = off) */
    int exit_fails_requests; /* --on-exit fail: router_state_free ends what is in flight with an
                                error; default (handover): it leaves it to the workers and clients */
} router_opts;

void router_opts_default(router_opts *o);

/* The served model, as far as the router needs it: no weights. */
typedef struct router_model {
    char name[256];     /* directory basename: Generate.model must be empty or equal */
    char fingerprint[9];
    kv_model_config cfg;
    kv_prompt_encoder prompt; /* tokenizer (NULL: text prompts refused, unit tests) + chat template */
    uint32_t context;   /* max_position */
    uint32_t max_prompt;
} router_model;

typedef struct router_state {
    router_opts opt;
    router_deadlines dl;
    router_model model;
    void *zctx;
    int own_ctx;
    void *client;  /* ROUTER: clients */
    void *control; /* ROUTER: workers */
    router_security sec;
    char client_ep[256], control_ep[256];
    router_workers workers;
    router_prefix prefix;  /* who holds which block (heartbeats), for the cache-aware picks */
    router_map gone_workers; /* ids of workers this router declared gone (router_resume.c) */
    router_requests reqs;
    router_liveness clients; /* when each client was last heard (--client-timeout) */
    double started;
    double now;        /* time of the current step */
    double next_check; /* earliest armed request deadline (0 = none) */
    uint64_t requests_total, requests_failed, requests_replanned;
    router_metrics metrics; /* cluster-wide: StatusReply.metrics */
    /* The last few unknown request ids a registered worker sent about (a worker cut off for
     * a while delivers its queued TokenEvents in a burst): answered and logged at the 1st,
     * 2nd, 4th, 8th... message each, not every one. */
    struct { char id[128]; uint32_t count; } unknown[8];
    unsigned unknown_next;
} router_state;

/* ---- router_state.c: life cycle and the event loop step ---- */

/* Loads the model (config.json, tokenizer.json, fingerprint) and binds both sockets. zctx:
 * a ZeroMQ context to use (tests with inproc peers), or NULL for a private one. */
int router_state_init(router_state *st, const router_opts *o, void *zctx, kv_err *err);
/* Model only, no sockets (unit tests). tok may be NULL. */
void router_model_from_config(router_model *m, const char *name, const kv_model_config *cfg, kv_tokenizer *tok,
                              int max_prompt_tokens);
/* Frees everything; under --on-exit fail, ends every request first (error reply to clients,
 * Abort to workers). */
void router_state_free(router_state *st);
/* One loop iteration: waits up to max_wait_ms (also bounded by the next deadline) for
 * messages, handles them, then runs router_tick. */
int router_step(router_state *st, int max_wait_ms);
/* One message as kv_wire_recv gave it (rc KV_OK, or KV_EFORMAT / KV_EUNSUPPORTED: an error
 * reply then) from the control (1) or the client (0) endpoint, at st->now. */
void router_handle(router_state *st, int control, int rc, kv_wire_msg *m, const kv_err *err);
/* Worker health, request deadlines, scheduling at time `now`. */
void router_tick(router_state *st, double now);
/* Writes "client=EP\ncontrol=EP\n" to path atomically. */
int router_write_ready_file(const router_state *st, const char *path, kv_err *err);

/* ---- router_client.c: the client endpoint ---- */

typedef struct router_validated {
    int32_t *prompt; /* malloc'd */
    uint32_t n_prompt;
    uint32_t max_tokens;
    kv_sampling_params sampling;
    double deadline_s;
} router_validated;

/* Validates a Generate exactly as PROTOCOL.md says, tokenizing a text prompt. Returns
 * ERROR_NONE (out filled; caller frees out->prompt) or the ErrorCode, with msg. */
int router_validate_generate(const router_model *m, const router_opts *o, const router_requests *t,
                             const kv_wire_route *client, const Kvserve__GenerateRequest *g, router_validated *out,
                             char *msg, size_t cap);
void router_client_handle(router_state *st, kv_wire_msg *m);
/* Sends the buffered output as a GenerateReply: a streamed chunk (final = 0) or the final one. */
void router_client_send_output(router_state *st, router_req *r, int final, int finish, int code, const char *msg);

/* ---- router_resume.c: requests that outlive a router (held by workers, resumed by clients) ---- */

/* A decode worker's Register.held: each request becomes an orphan waiting for its client (or
 * is bound at once to a parked resume); invalid ones and leftovers get an Abort. */
void router_adopt_held(router_state *st, router_worker *wk, const Kvserve__Register *reg);
/* A new request that resumes a stream (router_req_resume done): 1 when it was bound to its
 * orphan or parked waiting for one (soon after the router started), 0 to queue it as usual. */
int router_resume_start(router_state *st, router_req *r);
/* A parked request whose wait is over joins the FIFO: 1 when r was that. */
int router_resume_unpark(router_state *st, router_req *r, double now);
/* A worker this router forgot (timed out, replaced): what it still runs was already re-planned
 * or failed here, so its requests are aborted, never adopted. */
void router_resume_note_gone(router_state *st, const char *worker_id);
/* Whether the worker at route is one this router forgot (else it may come from a router
 * that died, and registers next with what it runs). */
int router_resume_forgot(const router_state *st, const kv_wire_route *route);

/* ---- router_control.c: the worker endpoint ---- */

void router_control_handle(router_state *st, kv_wire_msg *m);
void router_send_reserve(router_state *st, router_req *r);
void router_send_prefill(router_state *st, router_req *r);
void router_send_abort(router_state *st, const kv_wire_route *to, const char *wire_id, int reason);

/* ---- router_sched.c: the request flow ---- */

/* Runs the FIFO: dispatches requests that fit, fails those that never can. */
void router_schedule(router_state *st);
/* The cache-aware pick's view of r (hits: ROUTER_PREFIX_SLOTS entries, filled), or NULL for
 * the load policy (--route-policy load, no layout yet, out of memory). */
const router_pick_hint *router_hint_for(const router_state *st, const router_req *r, uint32_t *hits,
                                        router_pick_hint *hint);
/* Enters a state and arms its deadline. */
void router_enter(router_state *st, router_req *r, router_req_state state);
/* Notes a newly armed deadline so the loop wakes for it. */
void router_note_deadline(router_state *st, double when);
/* Cancels, as a CancelRequest would, every request of a client silent for longer than
 * --client-timeout at `now` (router_client.c), and logs it. */
void router_expire_clients(router_state *st, double now);
/* Ends a request: final reply (finish; code != 0: FINISH_ERROR with code and msg), Abort to
 * the workers that still hold it, the request_done log line; frees it. */
void router_end(router_state *st, router_req *r, int finish, int code, const char *msg);
/* A worker reported r failed with code: a failure of the KV hand-off (transfer_retryable
 * in router_sched.c) before the client has a token of this attempt runs the request again,
 * like a worker death does (at most 3 times in all); anything else ends it. */
void router_fail_request(router_state *st, router_req *r, int code, const char *msg);
/* Ends it if both workers are done with it (D's finish and P's PrefillDone). */
void router_maybe_complete(router_state *st, router_req *r);
/* TokenEvent from the request's decode worker. */
void router_on_tokens(router_state *st, router_req *r, const Kvserve__TokenEvent *ev);
/* A worker is gone (timed out or replaced): fails or re-queues its requests, forgets it. */
void router_worker_gone(router_state *st, router_worker *wk, const char *why);
/* Deadline scan at `now`. */
void router_expire(router_state *st, double now);

/* Name of an ErrorCode ("?" for values outside the enum). */
const char *router_code_name(int code);
/* Printable form of an id for logs (spaces and controls replaced). */
const char *router_log_id(const char *id, char *buf, size_t cap);

#endif
