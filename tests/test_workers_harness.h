/* A fake router for process-level worker tests: binds a control ROUTER, starts kv-prefill /
 * kv-decode children against it, answers Register, records heartbeats, ReserveReplies,
 * TokenEvents and PrefillDones, and waits (always with a timeout) for conditions on them. */
#ifndef TEST_WORKERS_HARNESS_H
#define TEST_WORKERS_HARNESS_H

#include <stdint.h>
#include <sys/types.h>

#include "kv_wire.h"

#define TH_MAX_WORKERS 16
#define TH_MAX_REQS 64
#define TH_MAX_TOKENS 1024
#define TH_MAX_BLOCKS 256

typedef struct th_worker {
    char id[64];
    pid_t pid;
    int exited, exit_status;      /* set when reaped */
    int refuse;                   /* answer its Register with accepted = false */
    int register_first;           /* answer its next heartbeat with Error "register first" */
    int registrations;            /* Register messages seen */
    char kv_endpoint[256];
    char dtype[16];               /* its Register's KV layout dtype */
    uint64_t block_bytes;
    uint32_t blocks_total_reg;
    int hb_count;                 /* heartbeats seen; the last one's numbers: */
    uint32_t running, queued, blocks_free, blocks_total;
} th_worker;

typedef struct th_req {
    char id[64];
    int reserve_replied, reserve_ok, reserve_err;
    int32_t blocks[TH_MAX_BLOCKS];
    int n_blocks;
    int32_t tokens[TH_MAX_TOKENS];
    int n_tokens;
    int events, index_errors;
    int finished, finish_reason, finish_err;
    int prefill_done, prefill_ok, prefill_err, first_token;
    double prefill_done_s, prefill_ms, transfer_ms;
    uint64_t kv_bytes;
    uint32_t kv_chunks;           /* PrefillDone's */
    int transport;                /* PrefillDone's KvTransport */
} th_req;

typedef struct th {
    void *zctx, *ctl;
    char endpoint[256];
    th_worker w[TH_MAX_WORKERS];
    int nw;
    th_req r[TH_MAX_REQS];
    int nr;
    int hb_interval_ms;
    int unexpected;               /* messages nobody expected (counted, printed) */
    int max_active;               /* most requests streaming tokens at one time */
    const char *worker_args[8];   /* given to every worker before its own (NULL-ended) */
    int forget_unknown;           /* answer news of requests this test never made (ReserveReply,
                                   * PrefillDone, TokenEvent) with Error UNKNOWN_REQUEST, as the
                                   * router does, instead of recording them */
} th;

int th_init(th *h, int hb_interval_ms);
void th_close(th *h);                /* kills (SIGKILL) what is still running */

/* Starts bin (kv_test_bin_dir()/kv-decode...) with --model --router --id --threads 1, then
 * h->worker_args, then extra (NULL-ended; a flag given twice: the last one counts). */
th_worker *th_spawn(th *h, const char *bin, const char *model_dir, const char *id, const char *const *extra);
/* SIGTERM, then waits up to timeout_ms: the exit status, or -1 (then SIGKILLed). */
int th_stop(th *h, th_worker *w, int timeout_ms);
/* Waits for a child to exit by itself: the exit status, or -1 on timeout. */
int th_wait_exit(th *h, th_worker *w, int timeout_ms);

th_req *th_req_get(th *h, const char *id); /* found or created */

/* Receives and records messages for up to timeout_ms. */
void th_pump(th *h, int timeout_ms);

typedef int (*th_cond)(th *h, const void *arg);
/* Pumps until cond holds (1) or timeout_ms passes (0). */
int th_wait(th *h, th_cond cond, const void *arg, int timeout_ms);
/* Pumps for timeout_ms: messages recorded, exited children reaped. */
void th_idle(th *h, int timeout_ms);
int th_wait_registered(th *h, th_worker *w, int n, int timeout_ms);
int th_wait_reserved(th *h, th_req *r, int timeout_ms);
int th_wait_finished(th *h, th_req *r, int timeout_ms);
int th_wait_prefill_done(th *h, th_req *r, int timeout_ms);
/* A heartbeat newer than this call reporting nothing running or queued and every block free. */
int th_wait_idle(th *h, th_worker *w, int timeout_ms);

/* Router -> worker messages. sp may be NULL. */
int th_reserve(th *h, th_worker *d, const char *rid, uint32_t prompt, uint32_t max_tokens,
               const Kvserve__SamplingParams *sp, int ignore_eos, uint32_t transfer_deadline_ms);
int th_prefill(th *h, th_worker *p, th_worker *d, const th_req *r, const int32_t *tokens, int n,
               const Kvserve__SamplingParams *sp, uint32_t ack_deadline_ms);
int th_abort(th *h, th_worker *w, const char *rid);
int th_send(th *h, th_worker *w, Kvserve__Envelope *env);

double th_now(void);

#endif
