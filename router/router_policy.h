/* The router's scheduling policy (PROTOCOL.md "A request", "Prefix cache"): which decode and
 * which prefill worker take a request.
 *   load policy — decode: healthy, free blocks - blocks promised in flight >= blocks needed,
 *                 then the fewest active requests, ties by id;
 *                 prefill: the shortest queue (tasks sent and not done), ties by id;
 *   cache policy (a router_pick_hint) — among the same candidates, the lowest
 *                 tokens to compute (prefill) or ship (decode) + load_tokens x active,
 *                 within a balance guard (router_prefix.h has the index the hits come from);
 *   a pair whose KV handshake found no transport in common (NO_TRANSPORT) is not picked
 *   again, as long as both are the same processes.
 * Pure: no sockets, no clock. */
#ifndef ROUTER_POLICY_H
#define ROUTER_POLICY_H

#include <stdint.h>

#include "router_workers.h"

/* Scheduling. The decode pick needs `blocks` free and prompt + max_tokens within the worker's
 * context; the prefill pick needs its pool to hold the prompt's blocks. NULL = nothing fits. */
router_worker *router_pick_decode(const router_workers *w, uint32_t blocks, uint32_t seq_tokens);
/* What the cache-aware picks weigh (router_prefix.h): per prefix slot, the leading blocks of
 * the request's prompt a worker holds (capped as the workers cap them), against its load. */
typedef struct router_pick_hint {
    const uint32_t *hits;   /* [ROUTER_PREFIX_SLOTS] */
    uint32_t prompt_tokens, block_size;
    int load_tokens;        /* an active request costs this many tokens */
    int balance;            /* skip workers this many active requests above the least busy */
} router_pick_hint;
/* router_pick_decode / router_pick_prefill by the lowest cost (hint NULL: by load, as above):
 * decode: prompt tokens it lacks (to ship) + load; prefill: tokens it must compute + load. */
router_worker *router_pick_decode_by(const router_workers *w, uint32_t blocks, uint32_t seq_tokens,
                                     const router_pick_hint *hint);
router_worker *router_pick_prefill_by(const router_workers *w, uint32_t prompt_blocks, const router_worker *d,
                                      const router_pick_hint *hint);
/* The prefill pick for a request whose blocks decode worker d holds (NULL: any). */
router_worker *router_pick_prefill(const router_workers *w, uint32_t prompt_blocks, const router_worker *d);
/* 1 when workers of both roles exist that could take the request, but every such pair has
 * been refused: the request can never be served as the cluster stands. */
int router_no_pair(const router_workers *w, uint32_t blocks, uint32_t seq_tokens, uint32_t prompt_blocks);
/* 1 when no registered worker of the role could ever hold the request (whole pool too small),
 * 0 when one could, or when none of that role is registered (one may come). */
int router_never_fits_decode(const router_workers *w, uint32_t blocks, uint32_t seq_tokens);
int router_never_fits_prefill(const router_workers *w, uint32_t prompt_blocks);

#endif
