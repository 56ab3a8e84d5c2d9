/* The prefill side of the KV transfer: one DEALER per decode worker KV endpoint, created
 * lazily and kept, and per peer the transport the pair agreed on.
 *
 * zmq: KvChunk + one zero-copy frame per pool block (a host pool's block itself; for a GPU
 * pool, its copy in a host staging buffer). GPU transports: a handshake first (KvHello ->
 * KvHelloReply, and for nccl KvNcclInit + the communicator's set-up, all polled), then per
 * chunk the blocks' checksums computed on the GPU and a KvChunk without frames; cuda-ipc
 * leaves the copy to the decode worker (it reads our exported pool), nccl sends the blocks. */
#ifndef KV_SENDER_H
#define KV_SENDER_H

#include <stdatomic.h>
#include <stdint.h>
#include <zmq.h>

#include "engine.h"
#include "kv_curve.h"
#include "kv_gpu_xfer.h"
#include "kv_nccl.h"
#include "kv_transport.h"
#include "kv_wire.h"
#include "worker_transport.h"

#define KV_HELLO_TIMEOUT_MS 5000
#define KV_NCCL_INIT_TIMEOUT_MS 30000

typedef enum { PEER_NEW = 0, PEER_HELLO, PEER_NCCL_INIT, PEER_READY, PEER_FAILED } kv_peer_state;

typedef struct kv_peer {
    char endpoint[256];
    void *sock;               /* DEALER; the decode worker names the connection (no routing id) */
    kv_peer_state state;
    kv_transport transport;   /* PEER_READY: the pair's transport */
    uint64_t session;         /* of the last KvHello; 0 = none yet */
    double deadline;          /* of the handshake step under way */
    char failure[400];        /* PEER_FAILED: why */
    int failure_code;         /* PEER_FAILED: a kv_err code; KV_EUNSUPPORTED = no transport in common */
    kv_gpu_lane *lane;        /* GPU transports: this peer's stream (kept across sessions) */
    kv_nccl_comm *comm;
    uint32_t nccl_generation;
    double last_used;         /* a task took it or sent on it (monotonic s) */
} kv_peer;

typedef struct kv_sender {
    void *zctx;
    const char *worker_id;
    const worker_transport *xfer;
    unsigned char ipc_handle[KV_GPU_IPC_HANDLE_BYTES];
    int ipc_state;            /* 0 = not exported yet, 1 = exported, -1 = export failed */
    uint64_t next_session;
    int fault_exit_mid_transfer; /* --fault exit-mid-transfer (tests) */
    kv_peer **peers;
    int n, cap;
    /* CURVE (kv_sender_set_curve): our key pair, and the directory of the cluster's worker
     * public keys where <decode-id>.pub (else decode.pub, one key for all decode workers)
     * authenticates each decode worker's KV socket. */
    int curve_on;
    kv_curve_key curve_key;
    const char *curve_dir;
} kv_sender;

void kv_sender_init(kv_sender *s, void *zctx, const char *worker_id, const worker_transport *xfer);
void kv_sender_close(kv_sender *s);
/* Shutdown: aborts every NCCL communicator, so sends still under way end. */
void kv_sender_abort_gpu(kv_sender *s);

/* CURVE on every KV connection from now on (f->key_file; nothing when it is NULL). */
int kv_sender_set_curve(kv_sender *s, const worker_flags *f, kv_err *err);
/* The peer for decode worker decode_id at endpoint, connecting a new DEALER the first
 * time (with CURVE on, authenticated by decode_id's public key). */
kv_peer *kv_sender_peer_for(kv_sender *s, const char *endpoint, const char *decode_id, kv_err *err);
/* The peer for endpoint, connecting a new DEALER the first time. */
kv_peer *kv_sender_peer(kv_sender *s, const char *endpoint, kv_err *err);
/* Closes the peers unused for idle_s seconds (socket, GPU lane, communicator) that no task
 * in busy[0..n_busy) holds: a decode worker that went away, or restarted on a new port,
 * must not cost a socket, a CUDA stream and pinned buffers for good. A peer with a lane or
 * communicator is closed only when gpu_quiet (no NCCL operation of this process under way):
 * freeing its buffers means cudaFree, which waits for the whole device, and an NCCL send
 * to a dead decode worker would never let it return. Returns how many were closed. */
int kv_sender_close_idle(kv_sender *s, double now, double idle_s, kv_peer *const *busy, int n_busy, int gpu_quiet);

/* Moves the peer's handshake on: 1 = ready to ship, 0 = under way (see peer->deadline),
 * < 0 = failed (err says why; the peer is back to PEER_NEW for the next task). A pair
 * where this worker allows only zmq needs no handshake. */
int kv_sender_connect(kv_sender *s, kv_peer *p, kv_err *err);
void kv_sender_on_hello_reply(kv_sender *s, kv_peer *p, const Kvserve__KvHelloReply *r);
/* Forgets the pair's session (aborting an NCCL communicator): the next task says hello again. */
void kv_sender_reset(kv_sender *s, kv_peer *p, const char *why);
/* Closes p's socket and forgets p (the caller's pointer is dead): what it still queued is
 * dropped, and the next task to that endpoint connects afresh. */
void kv_sender_drop(kv_sender *s, kv_peer *p, const char *why);
/* When the loop must next look at the peer's handshake (monotonic s), or far away. */
double kv_sender_wake(const kv_peer *p);

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
    /* Last chunk only, when the task asked for logprobs (else NULL / 0): the first token's
     * and the prompt's, ready for the KvChunk (kept by the caller until the send returns). */
    Kvserve__TokenLogprobs *first_logprobs;
    Kvserve__TokenLogprobs **prompt_logprobs;
    size_t n_prompt_logprobs;
} kv_chunk_desc;

/* What a sent chunk leaves behind that must end before its blocks are reused. */
typedef struct kv_send_hold {
    atomic_int *in_flight;    /* zmq: frames ZeroMQ still holds (counted here) */
    kv_gpu_op *op;            /* nccl: set to the sends' completion; NULL otherwise */
} kv_send_hold;

/* Sends the chunk over the peer's transport (the peer must be ready). zmq: a CPU engine's
 * blocks go straight from its pool (zero-copy); a GPU engine's are first copied into a
 * host staging buffer that the frames point into and that is freed with the last of them;
 * *hold->in_flight counts the frames ZeroMQ still holds: the pool blocks must not be reused
 * until it is back to 0 (an ack alone does not prove ZeroMQ let go of a frame after a
 * failure). nccl: hold->op completes when the sends have left. Adds the payload bytes to
 * *bytes. Waits at most timeout_ms for a connection/room (KV_ETIMEOUT). */
int kv_sender_send(kv_sender *s, kv_peer *peer, kv_engine *e, const kv_chunk_desc *c, int timeout_ms,
                   kv_send_hold *hold, uint64_t *bytes, kv_err *err);

/* The KvChunk of c over the peer's transport (pointers into c and sums), and its sending. */
void kv_sender_chunk_msg(const kv_sender *s, const kv_peer *peer, const kv_chunk_desc *c, uint32_t *sums,
                         Kvserve__KvChunk *kc);
int kv_sender_chunk_send(const kv_peer *peer, const Kvserve__KvChunk *kc, const kv_wire_payload *frames,
                         size_t n_frames, int timeout_ms, kv_err *err);

/* --fault exit-mid-transfer: after the KvChunk of a chunk that is not the last has left
 * (and, over nccl, before its data), the process dies: exit 3, no cleanup. */
void kv_sender_fault_point(const kv_sender *s, const kv_chunk_desc *c);

/* kv_send_gpu.c: the GPU transports' part of kv_sender_send. */
int kv_sender_send_gpu(kv_sender *s, kv_peer *peer, const kv_chunk_desc *c, int timeout_ms, kv_send_hold *hold,
                       uint64_t *bytes, kv_err *err);

#endif
