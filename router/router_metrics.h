/* The router's cluster-wide metrics (StatusReply.metrics, PROTOCOL.md "Metrics"): counters
 * and histograms of every request and KV hand-off the router saw since it started, with
 * vLLM's meanings and bucket bounds. The counts obey, at any moment:
 *   time_to_first_token count   = requests that got a first token (each counted once);
 *   inter_token_latency count   = generation_tokens - that same number;
 *   e2e and queue counts        = finished stop + length + abort;
 *   prefill and decode counts   = those of them that got a first token.
 * Pure bookkeeping: no sockets, no clock (the caller passes the time), no allocation. */
#ifndef ROUTER_METRICS_H
#define ROUTER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_transport.h"
#include "kv_wire.h"

#define ROUTER_HIST_MAX_BOUNDS 32
#define ROUTER_MAX_ERROR_CODE 31 /* ErrorCode values above are counted as INTERNAL */

typedef struct router_histogram {
    const double *bounds; /* upper bounds, increasing; +Inf implied */
    size_t n_bounds;
    uint64_t counts[ROUTER_HIST_MAX_BOUNDS + 1]; /* per bucket; counts[n_bounds]: above every bound */
    double sum;
} router_histogram;

/* How an accepted request ended, as vLLM's finished_reason counts it. */
typedef enum { ROUTER_END_STOP, ROUTER_END_LENGTH, ROUTER_END_ABORT, ROUTER_END_ERROR, ROUTER_END_N } router_end_kind;

typedef struct router_metrics {
    uint64_t prompt_tokens, generation_tokens;
    uint64_t finished[ROUTER_END_N];
    uint64_t failures[ROUTER_MAX_ERROR_CODE + 1]; /* by ErrorCode, refused requests included */
    router_histogram ttft, itl, e2e, queue, prefill, decode;
    uint64_t kv_bytes[KV_TRANSPORT_COUNT];
    router_histogram kv_seconds[KV_TRANSPORT_COUNT];
    /* Prefix cache, [0] prefill side, [1] decode side: prompt tokens looked up, found. */
    uint64_t prefix_query[2], prefix_hit[2];
    uint64_t prefill_computed; /* prompt tokens prefilled (by prefill workers or locally) */
    uint64_t kv_bytes_saved;   /* not shipped: the decode worker had them */
} router_metrics;

void router_metrics_init(router_metrics *m);

/* A request's in-order run of n tokens reached its client at now. first: the run holds the
 * request's first token (accepted_at: when the router accepted it, prompt_tokens: the
 * client's prompt); else last_at: when the previous run arrived. The run's n tokens (n - 1
 * after the first) share the time since the previous run as inter-token latencies. */
void router_metrics_delivered(router_metrics *m, size_t n, int first, double now, double accepted_at,
                              double last_at, uint32_t prompt_tokens);

/* A successful KV hand-off (PrefillDone ok). A transport outside the enum, a negative or
 * non-finite time are not counted (they come from a worker). */
void router_metrics_transfer(router_metrics *m, int transport, uint64_t bytes, double seconds);

/* An accepted request ended. Times in seconds, a negative one is not observed: e2e and
 * queue for every kind but ROUTER_END_ERROR, prefill and decode when it got a token. code:
 * the ErrorCode when kind is ROUTER_END_ERROR. */
void router_metrics_finished(router_metrics *m, router_end_kind kind, int code, double e2e_s, double queue_s,
                             double prefill_s, double decode_s);

/* A prefix-cache lookup of a request's prompt (decode: at its reservation; prefill: its
 * PrefillDone) with the tokens found and, decode side, the KV bytes that were not shipped. */
void router_metrics_prefix(router_metrics *m, int decode_side, uint64_t query_tokens, uint64_t hit_tokens,
                           uint64_t bytes_saved);
/* Prompt tokens a worker computed for a request. */
void router_metrics_prefill_computed(router_metrics *m, uint64_t tokens);

/* A request refused before it was accepted (validation), with its ErrorCode. */
void router_metrics_refused(router_metrics *m, int code);

/* The protobuf form. Points into m and into *pb, which must outlive out's use. */
typedef struct router_metrics_pb {
    Kvserve__ClusterMetrics msg;
    Kvserve__Histogram hist[6 + KV_TRANSPORT_COUNT];
    Kvserve__KvTransferMetrics transfer[KV_TRANSPORT_COUNT];
    Kvserve__KvTransferMetrics *transfer_ptr[KV_TRANSPORT_COUNT];
    Kvserve__ErrorCount errors[ROUTER_MAX_ERROR_CODE + 1];
    Kvserve__ErrorCount *error_ptr[ROUTER_MAX_ERROR_CODE + 1];
    double bounds[6 + KV_TRANSPORT_COUNT][ROUTER_HIST_MAX_BOUNDS];
} router_metrics_pb;

/* running and waiting: the router's requests past and in its queue now. */
Kvserve__ClusterMetrics *router_metrics_to_pb(router_metrics *m, uint32_t running, uint32_t waiting,
                                              router_metrics_pb *pb);

#endif
