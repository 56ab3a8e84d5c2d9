/* kv-decode's state: requests waiting for their KV (a reservation with a deadline) and
 * running requests (the continuous batch, oldest first). A request owns its reserved
 * blocks from ReserveRequest to its end, whatever the ending. */
#ifndef KV_DECODE_H
#define KV_DECODE_H

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
    int kv_complete;            /* --fault drop-kv-ack: arrived, never started */
    /* decoding */
    kv_seq seq;
    kv_sampler sampler;
    int32_t last_token;
    uint32_t n_generated;
    int n_ctx;                  /* prompt + generated tokens */
    double t_first;
} decode_req;

typedef struct decode_list {
    decode_req **v;
    int n, cap;
} decode_list;

typedef struct decode_worker {
    const worker_flags *f;
    worker_engine *we;
    worker_control *ctl;
    void *kv_sock;               /* ROUTER: prefill workers' DEALERs */
    char kv_endpoint[256];       /* announced */
    decode_list waiting;         /* reservation order */
    decode_list running;         /* start order: the batch takes the oldest first */
    float *logits;               /* max_batch x vocab */
    kv_seq **b_seqs;
    int32_t *b_tokens;
} decode_worker;

/* decode_reserve.c: the request table, reservations and their ends. */
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

/* kv_receiver.c: the KV endpoint. */
int kv_receiver_bind(decode_worker *dw, kv_err *err);
void kv_receiver_on_msg(void *ctx, kv_wire_msg *m, int rc, const kv_err *err);

/* decode_batch.c: first token, decode steps, token events. */
void decode_start(decode_worker *dw, decode_req *r, int32_t first_token);
void decode_step(decode_worker *dw);
void decode_send_event(decode_worker *dw, const decode_req *r, const int32_t *token, Kvserve__FinishReason fin,
                       Kvserve__ErrorCode code, const char *msg);

#endif
