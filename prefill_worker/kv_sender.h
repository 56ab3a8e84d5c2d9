/* The prefill side of the KV transfer: one DEALER per decode worker KV endpoint, created
 * lazily and kept, and KvChunk + one zero-copy frame per pool block (a host pool's block
 * itself; for a GPU pool, its copy in a host staging buffer). */
#ifndef KV_SENDER_H
#define KV_SENDER_H

#include <stdatomic.h>
#include <stdint.h>
#include <zmq.h>

#include "engine.h"
#include "kv_wire.h"

typedef struct kv_peer {
    char endpoint[256];
    void *sock;              /* DEALER, identity = this worker's id */
} kv_peer;

typedef struct kv_sender {
    void *zctx;
    const char *worker_id;
    kv_peer **peers;
    int n, cap;
} kv_sender;

void kv_sender_init(kv_sender *s, void *zctx, const char *worker_id);
void kv_sender_close(kv_sender *s);

/* The peer for endpoint, connecting a new DEALER the first time. */
kv_peer *kv_sender_peer(kv_sender *s, const char *endpoint, kv_err *err);

/* One chunk of a request's KV. */
typedef struct kv_chunk_desc {
    const char *request_id;
    uint32_t seq;             /* chunk number, from 0 */
    uint32_t first_block;     /* index in the request's block table */
    const int32_t *src;       /* this worker's pool blocks */
    const int32_t *dst;       /* the decode worker's block ids */
    int n_blocks;
    uint32_t n_tokens;        /* tokens covered after this chunk */
    int last;
    int32_t first_token;      /* last chunk only */
} kv_chunk_desc;

/* Sends the chunk: the envelope, then the blocks. A CPU engine's blocks go straight from
 * its pool (zero-copy); a GPU engine's are first copied (kv_engine_blocks_read) into a host
 * staging buffer that the frames point into and that is freed with the last of them.
 * *in_flight counts the frames ZeroMQ still holds: the pool blocks must not be reused until
 * it is back to 0 (an ack alone does not prove ZeroMQ let go of a frame after a failure).
 * Adds the payload bytes to *bytes. Waits at most timeout_ms for a connection/room
 * (KV_ETIMEOUT). */
int kv_sender_send(const kv_sender *s, kv_peer *peer, kv_engine *e, const kv_chunk_desc *c, int timeout_ms,
                   atomic_int *in_flight, uint64_t *bytes, kv_err *err);

#endif
