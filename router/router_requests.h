/* The router's request table: one entry per request in flight, keyed by (client routing id,
 * request_id) for the client and by a router-unique wire id for the workers; its state
 * machine, per-state deadlines, ownership (decode worker + block ids, prefill worker),
 * timings, the in-order token reassembly, and the FIFO of requests waiting for capacity.
 *
 *   queued --reserve sent--> reserving --ReserveReply ok, PrefillTask sent--> prefilling
 *   prefilling --PrefillDone ok--> transferring --first TokenEvent--> decoding
 *   prefilling --first TokenEvent (before PrefillDone)--> decoding
 *   reserving --ReserveReply NO_CAPACITY--> queued (front of the FIFO)
 *   decoding --finish from D and PrefillDone from P--> done (final reply)
 *   any --error, cancel, deadline, worker death--> done (error reply, Abort to its workers)
 *
 * Pure bookkeeping: no sockets; the caller passes the time. */
#ifndef ROUTER_REQUESTS_H
#define ROUTER_REQUESTS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_wire.h"
#include "router_map.h"
#include "router_stop.h"
#include "router_workers.h"
#include "sampler.h"
#include "tokenizer.h"

typedef enum router_req_state {
    RQ_QUEUED = 0,
    RQ_RESERVING,
    RQ_PREFILLING,
    RQ_TRANSFERRING, /* PrefillDone received, waiting for the decode worker's first token */
    RQ_DECODING,
    RQ_DONE,
} router_req_state;

/* A TokenEvent that arrived ahead of its turn. */
typedef struct router_tok_event {
    uint32_t index;
    int32_t *tokens;
    kc_logprobs *lp; /* n entries, or NULL */
    size_t n;
    int finish; /* Kvserve__FinishReason */
    double decode_ms;
} router_tok_event;

#define ROUTER_MAX_PENDING_EVENTS 1024

typedef struct router_req {
    /* Identity. */
    kv_wire_route client;
    char *id;      /* the client's request_id */
    char *wire_id; /* "<id>@<seq>": unique among this router's requests, used with workers */
    uint64_t seq;
    /* What to run. */
    int32_t *prompt;               /* the client's prompt + tokens delivered before a re-plan */
    uint32_t n_prompt;
    uint32_t n_prompt_orig;        /* the client's prompt alone */
    uint32_t max_tokens;           /* tokens still to generate by the current attempt */
    uint32_t index_base;           /* stream index of the current attempt's first token */
    int replans;                   /* times re-planned after a worker or KV hand-off failure */
    kv_sampling_params sampling;   /* top_p normalised to (0, 1] */
    int ignore_eos, stream;
    int return_prompt_tokens;      /* the final reply carries prompt[0, n_prompt_orig) */
    uint32_t logprobs;             /* GenerateRequest.logprobs (0 = none) */
    int prompt_logprobs;           /* the prompt's asked, and not received yet */
    kc_logprobs *prompt_lp;        /* received, not yet sent: n_prompt_orig - 1 entries */
    size_t n_prompt_lp;
    uint32_t blocks;               /* decode blocks reserved for it (set when reserving) */
    /* State and ownership. */
    router_req_state state;
    router_worker *decode, *prefill; /* NULL when none / released */
    int32_t *block_ids;
    size_t n_block_ids;
    int p_done;                    /* PrefillDone ok received (P released its blocks) */
    int d_done;                    /* D reported the finish (D released its blocks) */
    int d_finish;                  /* Kvserve__FinishReason from D */
    /* Deadlines, absolute monotonic seconds; 0 = not armed. */
    double dl_stage;               /* queue / reserve reply / PrefillDone, by state */
    double dl_token;               /* next TokenEvent */
    double dl_total;               /* whole request */
    /* Timings (monotonic seconds; 0 = not reached) and worker-measured figures. */
    double t_accept, t_prefill_start, t_first_token, t_d_done;
    double t_last_token;           /* when the last run of tokens was delivered */
    int stop_matched;              /* a stop sequence ended it: ours (stop) or the client's cancel (metrics: "stop") */
    router_stop stop;              /* GenerateRequest.stop */
    double prefill_ms, transfer_ms, decode_ms;
    uint64_t kv_bytes;
    uint64_t kv_bytes_saved;       /* blocks the decode worker had cached, not shipped */
    uint32_t decode_cached_blocks; /* ReserveReply.cached_blocks of the current attempt */
    uint32_t decode_cached_tokens; /* those blocks in tokens */
    uint32_t prefill_cached_tokens;/* PrefillDone.cached_tokens */
    int local_prefill;             /* the decode worker prefilled the tail itself */
    char kv_transport[16];         /* the transport its KV took ("" before PrefillDone) */
    /* Token reassembly: tokens [0, next_index) have been delivered in order; gen keeps them
     * (a re-plan prefills them after the prompt). */
    uint32_t next_index;
    int32_t *gen;
    uint32_t n_gen, cap_gen;
    router_tok_event *pending;
    size_t n_pending, cap_pending;
    /* Output not yet sent to the client: tokens from out_index on, and their text. */
    int32_t *out_tokens;
    kc_logprobs *out_lp;           /* one per out token when logprobs were asked */
    size_t n_out, cap_out;
    uint32_t out_index;
    char *out_text;
    size_t text_len, text_cap;
    kv_detok detok;
    int have_detok;
    /* Links: all requests (creation order) and the FIFO of queued ones. */
    struct router_req *prev, *next;
    struct router_req *qprev, *qnext;
    int in_queue;
    /* Router restarts (router_resume.c): adopted from a decode worker's Register.held, no
     * client yet (orphan); a client's resume waiting for its orphan to be announced (parked:
     * not in the FIFO until dl_stage). */
    int orphan, parked;
    int resumed; /* its client resumed it (GenerateRequest.resume) */
} router_req;

typedef struct router_requests {
    router_map by_client; /* client route + request_id -> req */
    router_map by_wire;   /* wire id -> req */
    router_req *head, *tail;   /* all, oldest first */
    router_req *qhead, *qtail; /* FIFO of queued requests */
    size_t n, n_queued;
    uint64_t next_seq;
} router_requests;

void router_requests_init(router_requests *t);
/* Frees every request (no replies, no aborts: for shutdown after those were sent). */
void router_requests_free(router_requests *t);

/* Creates a request in state queued (not yet in the FIFO) and indexes it. Takes ownership
 * of prompt (malloc'd). Returns NULL when out of memory (prompt freed). */
router_req *router_requests_add(router_requests *t, const kv_wire_route *client, const char *id, int32_t *prompt,
                                uint32_t n_prompt, double now);
router_req *router_requests_find_client(const router_requests *t, const kv_wire_route *client, const char *id);
router_req *router_requests_find_wire(const router_requests *t, const char *wire_id);
/* An orphan (router_resume.c): a request known by its wire id alone (client id = the wire id
 * up to its last '@'), not indexed by client. Takes prompt. NULL: out of memory or a bad id. */
router_req *router_requests_add_orphan(router_requests *t, const char *wire_id, int32_t *prompt, uint32_t n_prompt,
                                       double now);
/* Re-indexes r under the given wire id (unique: not in use). Returns 0 or KV_ENOMEM. */
int router_requests_set_wire(router_requests *t, router_req *r, const char *wire_id);
/* Gives the request a new wire id (a re-planned attempt): late messages about the old attempt
 * no longer find it. Returns 0 or KV_ENOMEM (the old id is kept then). */
int router_requests_rewire(router_requests *t, router_req *r);
/* Appends the delivered tokens [index_base, next_index) to the prompt and starts a new
 * attempt from next_index: drops the ownership, blocks and out-of-order events of the old one. */
int router_req_restart_after_delivered(router_req *r);
/* A stream resumed by its client (GenerateRequest.resume_tokens): it already holds tokens
 * [0, n), so they join the prompt (and gen), the budget shrinks by n, and this attempt and
 * the client's stream start at index n, as after a re-plan. Call before the first attempt.
 * Returns 0, KV_EINVAL (n not below max_tokens) or KV_ENOMEM. */
int router_req_resume(router_req *r, const int32_t *tokens, uint32_t n);
/* Unindexes, unlinks and frees. */
void router_requests_remove(router_requests *t, router_req *r);

/* FIFO. */
void router_queue_push_back(router_requests *t, router_req *r);
void router_queue_push_front(router_requests *t, router_req *r);
void router_queue_remove(router_requests *t, router_req *r);

const char *router_req_state_name(router_req_state s);

/* ---- deadlines ---- */

typedef struct router_deadlines {
    double queue_s, reserve_s, prefill_s, token_s;
} router_deadlines;

/* Enters `state` at `now` and arms the matching stage deadline. */
void router_req_enter(router_req *r, router_req_state state, const router_deadlines *d, double now);
/* The earliest armed deadline, or 0. */
double router_req_next_deadline(const router_req *r);
/* Which deadline has passed at `now`: returns the ErrorCode to fail with (NO_CAPACITY for the
 * queue, DEADLINE_EXCEEDED otherwise) and writes a message naming the stage; 0 when none. */
int router_req_expired(const router_req *r, double now, const router_deadlines *d, char *msg, size_t cap);

/* ---- token reassembly ---- */

/* Called for each in-order run of tokens. finish != FINISH_NONE ends the stream. */
typedef int (*router_deliver_fn)(void *ctx, router_req *r, const int32_t *tokens, const kc_logprobs *lp, size_t n,
                                 int finish, double decode_ms);

/* Accepts a TokenEvent (any order): delivers every run that is now in order through fn, and
 * buffers the rest. Tokens before next_index (duplicates) are dropped. Returns 0, a non-zero
 * value returned by fn, or KV_EFULL when too many events wait for a missing index, KV_ENOMEM. */
/* lp: the tokens' logprobs (n entries) or NULL; they travel with their tokens. */
int router_req_accept_tokens(router_req *r, uint32_t index, const int32_t *tokens, const kc_logprobs *lp, size_t n,
                             int finish, double decode_ms, router_deliver_fn fn, void *ctx);

/* ---- output buffer ---- */

/* Appends delivered tokens and their text (via the request's detokenizer when it has one). */
int router_req_append_output(router_req *r, const int32_t *tokens, const kc_logprobs *lp, size_t n);
/* End of the stream: bytes of an unfinished character held back become U+FFFD. */
int router_req_flush_text(router_req *r);
/* Empties the output buffer after it was sent (out_index moves on). */
void router_req_output_sent(router_req *r);

/* Timings for the final reply, measured at `now`. */
void router_req_timings(const router_req *r, double now, Kvserve__Timings *t);

#endif
