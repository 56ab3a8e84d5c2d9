/* kv-decode's state: requests waiting for their KV (a reservation with a deadline) and
 * running requests (the continuous batch, oldest first). A request owns its reserved
 * blocks from ReserveRequest to its end, whatever the ending. */
#ifndef KV_DECODE_H
#define KV_DECODE_H

#include "kv_gpu_xfer.h"
#include "kv_nccl.h"
#include "kv_transport.h"
#include "kv_wire_logprobs.h"
#include "sampler.h"
#include "worker_control.h"
#include "worker_engine.h"
#include "worker_flags.h"

#define DECODE_DEFAULT_TRANSFER_DEADLINE_MS 60000
#define DECODE_DEFAULT_MAX_TOKENS 256 /* max_tokens 0, as the router reads it */

typedef enum { DR_WAIT_KV = 0, DR_RUNNING } decode_state;

typedef struct decode_req {
    char *id;
    decode_state state;
    uint32_t prompt_tokens, max_tokens;
    int ignore_eos;
    uint32_t sampling_offset;   /* draws made by earlier attempts of a re-planned request */
    kv_sampling_params sp;
    int32_t *blocks;            /* reserved block ids, table order (moved into seq at start) */
    int32_t n_blocks, n_prompt_blocks;
    double t_reserved, deadline;
    /* KV transfer */
    uint32_t next_seq;
    int32_t blocks_received;
    uint64_t bytes;
    int kv_last_seen;           /* the last chunk has arrived (its copies may still run) */
    int32_t first_token;        /* from the last chunk */
    int lp_top;                 /* logprobs' alternatives per token; -1 = none asked */
    kc_logprobs first_lp;       /* the first token's (from the last chunk), when asked */
    kc_logprobs *prompt_lp;     /* the prompt's, when sent: to the router with the first token */
    size_t n_prompt_lp;
    int xfer_pending;           /* GPU chunks whose copy / receive is under way (kv_links.c) */
    kv_transport transport;     /* of its chunks */
    kv_wire_route kv_from;      /* the prefill worker's KV socket route, for the KvAck */
    int kv_complete;            /* --fault drop-kv-ack: arrived, never started */
    /* decoding */
    kv_seq seq;
    kv_sampler sampler;
    int32_t last_token;
    uint32_t n_generated;
    int n_ctx;                  /* prompt + generated tokens */
    double t_first;
    /* prefix cache */
    int32_t *ctx_tokens;        /* prompt + generated ids (NULL when the router sent no prompt ids) */
    int32_t n_ctx_tokens, cap_ctx_tokens;
    int32_t cached_blocks;      /* leading blocks found in the cache at reservation */
    int kv_valid;               /* seq's K/V are complete (started, not failed): indexable at the end */
} decode_req;

typedef struct decode_list {
    decode_req **v;
    int n, cap;
} decode_list;

/* A GPU chunk whose copy (cuda-ipc) or receive (nccl) is under way on its link's lane. */
typedef struct kv_pending {
    struct kv_pending *next;
    decode_req *r;
    kv_gpu_op *op;              /* completes after the data landed and was hashed */
    uint32_t *expected;         /* the prefill worker's checksums */
    int n;
    uint32_t first_block;
} kv_pending;

/* A prefill worker's GPU session with this decode worker (KvHello), keyed by its route. */
typedef struct kv_link {
    struct kv_link *next;
    kv_wire_route route;
    char prefill_id[256];
    uint64_t session;           /* 0 = none (the communicator was torn down: say hello again) */
    kv_transport transport;
    void *ipc_base;             /* cuda-ipc: the prefill worker's pool, mapped here */
    int32_t peer_blocks;        /* blocks in the prefill worker's pool */
    kv_gpu_lane *lane;
    kv_nccl_comm *comm;         /* nccl: rank 1 */
    int comm_ready;
    uint32_t generation;
    kv_pending *head, *tail;    /* completion order = enqueue order on the lane */
} kv_link;

/* decode_held.c: Register.held's messages (they point into the running requests). */
typedef struct decode_held {
    Kvserve__HeldRequest *m, **p;
    size_t n;
} decode_held;

typedef struct decode_worker {
    const worker_flags *f;
    worker_engine *we;
    worker_control *ctl;
    void *kv_sock;               /* ROUTER: prefill workers' DEALERs */
    char kv_endpoint[256];       /* announced */
    decode_list waiting;         /* reservation order */
    decode_list running;         /* start order: the batch takes the oldest first */
    kv_link *links;              /* GPU sessions with prefill workers */
    int fault_corrupt_pending;   /* --fault corrupt-kv-once, not fired yet */
    /* The step's batch: max_batch each. */
    kv_seq **b_seqs;
    kv_sampler **b_samplers;
    int32_t *b_tokens, *b_next;
    int *b_lp_top;               /* per row: logprobs' alternatives, -1 = none */
    kc_logprobs *b_lp;
    decode_held held;            /* what the last Register announced */
} decode_worker;

/* decode_reserve.c: the request table, reservations and their ends; the control channel. */
int decode_list_push(decode_list *l, decode_req *r);
int decode_list_find(const decode_list *l, const char *id);
decode_req *decode_list_take(decode_list *l, int i);
void decode_on_reserve(decode_worker *dw, const Kvserve__ReserveRequest *rr);
void decode_expire(decode_worker *dw);
/* Drops a request wherever it is (Abort, or the router forgot it); returns 1 if found. */
int decode_drop(decode_worker *dw, const char *id, const char *why);
/* Ends a request that is no longer in a list with TokenEvent{FINISH_ERROR}; frees it. */
void decode_fail(decode_worker *dw, decode_req *r, Kvserve__ErrorCode code, const char *msg);
void decode_req_free(decode_worker *dw, decode_req *r);
void decode_free_all(decode_worker *dw);
double decode_wake(const decode_worker *dw);
/* A message on the control channel (a worker_msg_fn): ReserveRequest, Abort, Error. */
void decode_on_control(void *ctx, kv_wire_msg *m, int rc, const kv_err *err);

/* decode_prefix.c: the decode side of the prefix cache. */
/* Indexes the sealed blocks of r's K/V (prompt and generated tokens) in the cache. */
void decode_prefix_store(decode_worker *dw, const decode_req *r);
/* Prefills the prompt's uncached tail here and samples its first token (as a prefill worker
 * would): KV_OK with *first, or an error with err. */
int decode_prefill_local(decode_worker *dw, decode_req *r, int32_t *first, kv_err *err);

/* decode_held.c: fills reg->held with the running requests (worker_control's register_fill). */
void decode_held_fill(void *ctx, Kvserve__Register *reg);
void decode_held_free(decode_held *h);

/* kv_receiver.c: the KV endpoint. */
int kv_receiver_bind(decode_worker *dw, kv_err *err);
void kv_receiver_on_msg(void *ctx, kv_wire_msg *m, int rc, const kv_err *err);
void kv_receiver_send_ack(decode_worker *dw, const kv_wire_route *to, const char *id, int ok, uint64_t bytes,
                          Kvserve__ErrorCode code, const char *msg);
/* The request's KV is all there and verified: KvAck, and it joins the batch. */
void kv_receiver_complete(decode_worker *dw, decode_req *r);
/* --fault corrupt-kv-once: 1 (with the message) the first time a chunk's checksums are
 * checked, then never again. */
int kv_receiver_fault_corrupt(decode_worker *dw, const decode_req *r, char *msg, size_t n);
/* A chunk of r failed: KvAck{ok: false} to the prefill worker, the request ends. */
void kv_receiver_fail(decode_worker *dw, decode_req *r, Kvserve__ErrorCode code, const char *msg);

/* kv_links.c: GPU sessions (cuda-ipc, nccl) with prefill workers. */
void kv_links_on_hello(decode_worker *dw, const kv_wire_route *from, const Kvserve__KvHello *h);
void kv_links_on_nccl_init(decode_worker *dw, const kv_wire_route *from, const Kvserve__KvNcclInit *ni);
/* Starts a verified GPU chunk's copy / receive into r's blocks; KV_OK, or *code + msg. */
int kv_links_start_chunk(decode_worker *dw, decode_req *r, const kv_wire_route *from, const Kvserve__KvChunk *c,
                         Kvserve__ErrorCode *code, char *msg, size_t msg_n);
/* Finishes what has completed (checksums compared; a request whose KV is complete starts). */
void kv_links_poll(decode_worker *dw);
int kv_links_busy(const decode_worker *dw);   /* something to poll soon */
/* Before r's blocks are released: its copies have ended (an NCCL receive is aborted). */
void kv_links_forget(decode_worker *dw, decode_req *r);
void kv_links_close_all(decode_worker *dw);

/* decode_batch.c: first token, decode steps, token events. */
void decode_start(decode_worker *dw, decode_req *r, int32_t first_token);
void decode_step(decode_worker *dw);
/* The step's batch arrays, max_batch each: KV_OK or KV_ENOMEM (freed by the caller). */
int decode_alloc_batch(decode_worker *dw);
/* token (may be NULL) with its logprobs lp (NULL when not asked); the request's prompt
 * logprobs go with its first token. */
void decode_send_event(decode_worker *dw, const decode_req *r, const int32_t *token, const kc_logprobs *lp,
                       Kvserve__FinishReason fin, Kvserve__ErrorCode code, const char *msg);

#endif
