/* kv-prefill's state: a FIFO of PrefillTasks, one of them current. The current task runs
 * chunk by chunk (one chunk per loop iteration, so heartbeats and control messages are
 * served in between), ships each chunk's sealed blocks to its decode worker, then waits
 * for the KvAck (or its deadline) before freeing the blocks and reporting PrefillDone. */
#ifndef KV_PREFILL_H
#define KV_PREFILL_H

#include "kv_sender.h"
#include "sampler.h"
#include "worker_control.h"
#include "worker_engine.h"
#include "worker_flags.h"

#define PREFILL_DEFAULT_ACK_DEADLINE_MS 30000
#define PREFILL_SEND_TIMEOUT_MS 2000

typedef enum { PT_QUEUED = 0, PT_PREFILLING, PT_WAIT_ACK } prefill_state;

typedef struct prefill_task {
    struct prefill_task *next;
    Kvserve__Envelope *env;          /* owns the message */
    const Kvserve__PrefillTask *t;   /* env->prefill */
    const char *id;                  /* t->request_id */
    prefill_state state;
    kv_sampling_params sp;
    kv_peer *peer;                   /* the decode worker's KV endpoint */
    kv_transport transport;          /* the peer's transport when the first chunk left */
    kv_seq seq;                      /* this worker's blocks for the prompt */
    int done;                        /* prompt tokens prefilled so far */
    int sent_blocks;                 /* blocks shipped so far (from the decode worker's cached ones on) */
    int cached_tokens;               /* prompt tokens found in this worker's prefix cache */
    int last_sent;                   /* the last chunk (first token) has left */
    uint32_t chunk_seq;
    int32_t first_token;
    int lp_top;                      /* logprobs' alternatives; -1 = none asked */
    kc_logprobs first_lp;            /* the first token's, when asked */
    kc_logprobs *prompt_lp;          /* prompt_logprobs: entry p scores token p + 1 (n - 1 entries) */
    uint64_t kv_bytes;
    double t_queued, t_start, prefill_s, t_first_send, ack_deadline;
    atomic_int frames_in_flight;     /* zero-copy frames ZeroMQ still holds (kv_sender_send) */
    kv_gpu_op **gpu_ops;             /* nccl sends of its blocks not yet known complete */
    int n_gpu_ops, cap_gpu_ops;
    double t_retired;                /* when it joined the draining list */
} prefill_task;

typedef struct prefill_worker {
    const worker_flags *f;
    worker_engine *we;
    worker_control *ctl;
    kv_sender sender;
    prefill_task *head, *tail;       /* queued tasks, FIFO */
    int n_queued;
    prefill_task *cur;               /* the task being prefilled / awaiting its ack */
    prefill_task *draining;          /* ended tasks whose frames ZeroMQ still holds */
    float *logits;                   /* vocab floats */
    double next_idle_check;          /* of the decode worker connections (monotonic s) */
} prefill_worker;

/* prefill_task.c: the worker's set-up, the control channel, the queue and what a task
 * must satisfy. */
/* Zeroes pw and sets it up on f, we, ctl and zctx (the decode workers' DEALERs live in
 * zctx): KV_OK or KV_ENOMEM (pw->logits, freed by the caller). */
int prefill_worker_init(prefill_worker *pw, const worker_flags *f, worker_engine *we, worker_control *ctl, void *zctx);
/* A message on the control channel (a worker_msg_fn, ctx the worker): PrefillTask, Abort,
 * Error, and what worker_control_handle takes. */
void prefill_on_control(void *ctx, kv_wire_msg *m, int rc, const kv_err *err);
prefill_task *prefill_task_new(Kvserve__Envelope *env);
/* Ends a task: its blocks return to the pool at once, or, while ZeroMQ still holds frames
 * or NCCL sends that read them are under way, once prefill_reap sees those end. */
void prefill_task_retire(prefill_worker *pw, prefill_task *t);
/* Frees retired tasks whose frames are all released and GPU sends done; `final` (after the
 * ZeroMQ context is terminated and the peers closed) frees them all. */
void prefill_reap(prefill_worker *pw, int final);
/* At most once a second: closes the decode worker connections unused for --kv-peer-idle-s
 * that no task (current or draining) holds; GPU ones only while no NCCL work is under way. */
void prefill_close_idle_peers(prefill_worker *pw);
/* After a KvAck deadline: closes the connection the task used, unless something still uses it. */
void prefill_drop_stuck_peer(prefill_worker *pw, kv_peer *peer, const char *why);
/* Shutdown, after kv_sender_abort_gpu: waits for (bounded) and forgets retired tasks' GPU sends. */
void prefill_drop_gpu_ops(prefill_worker *pw);
void prefill_queue_push(prefill_worker *pw, prefill_task *t);
prefill_task *prefill_queue_pop(prefill_worker *pw);
prefill_task *prefill_queue_remove(prefill_worker *pw, const char *id);
/* Keeps a sent chunk's nccl completion with the task (KV_ENOMEM: waited for at once). */
void prefill_task_hold_op(prefill_task *t, kv_gpu_op *op);
int prefill_known(const prefill_worker *pw, const char *id);
/* KV_OK, or *code + err say why the task cannot run. */
int prefill_task_validate(const prefill_worker *pw, prefill_task *t, Kvserve__ErrorCode *code, kv_err *err);

/* prefill_prefix.c: the prefill side of the prefix cache. */
/* The task's longest cached prompt prefix (whole blocks, never the last prompt token) becomes
 * the start of its block table: those tokens are not computed again. Nothing when the cache
 * is off or the task asks for prompt logprobs (they need every position computed). */
int prefill_prefix_lookup(prefill_worker *pw, prefill_task *t, kv_err *err);
/* Indexes the task's sealed prompt blocks (after the decode worker's ack). */
void prefill_prefix_store(prefill_worker *pw, const prefill_task *t);

/* prefill_run.c: the current task's life. */
void prefill_step(prefill_worker *pw);              /* start / one chunk / deadline */
void prefill_on_ack(prefill_worker *pw, const kv_peer *from, const Kvserve__KvAck *ack);
void prefill_abort(prefill_worker *pw, const char *id, Kvserve__ErrorCode reason);
int prefill_has_work(const prefill_worker *pw);     /* something to compute right now */
double prefill_wake(const prefill_worker *pw);      /* the current task's deadline, or far away */
void prefill_fail_all(prefill_worker *pw);          /* shutdown: drop every task */
/* The router forgot this worker (declared it dead, or a new router): it re-planned or never
 * knew the queued tasks, so running them would only ship KV nobody reserved. Drops them. */
void prefill_drop_queued(prefill_worker *pw);

/* A message on one decode worker's KV socket (a worker_msg_fn, ctx a prefill_kv_from):
 * KvAck, KvHelloReply, Error. */
typedef struct prefill_kv_from {
    prefill_worker *pw;
    kv_peer *peer;
} prefill_kv_from;
void prefill_on_kv(void *ctx, kv_wire_msg *m, int rc, const kv_err *err);

#endif
