/* NCCL for the KV transport, loaded at run time (dlopen of $KVSERVE_NCCL_LIB, default
 * libnccl.so.2), so a binary runs where NCCL is missing and `--kv-transport auto` then
 * simply leaves nccl out. A pair's communicator has two ranks (0 = prefill, 1 = decode), is
 * non-blocking (every step is polled, so the worker loops keep serving), and is warmed up
 * with one tiny exchange so that the first real transfer does not pay for the connection.
 * Sends and receives are whole KV blocks of a lane's pool, enqueued on the lane's stream:
 * complete them with kv_gpu_mark + kv_gpu_op_poll. */
#ifndef KV_NCCL_H
#define KV_NCCL_H

#include <stdint.h>

#include "kv_err.h"
#include "kv_gpu_xfer.h"

#define KV_NCCL_ID_BYTES 128

typedef struct kv_nccl kv_nccl;
typedef struct kv_nccl_comm kv_nccl_comm;

int kv_nccl_load(kv_nccl **out, kv_err *err);
void kv_nccl_unload(kv_nccl *lib);
int kv_nccl_version(const kv_nccl *lib);       /* e.g. 22809 */

/* A new id for rank 0 to hand to rank 1 (over the KV socket). */
int kv_nccl_unique_id(kv_nccl *lib, unsigned char id[KV_NCCL_ID_BYTES], kv_err *err);

/* Starts joining the communicator; the lane gives the device, stream and pool. */
int kv_nccl_comm_start(kv_nccl *lib, kv_gpu_lane *lane, const unsigned char id[KV_NCCL_ID_BYTES], int rank,
                       kv_nccl_comm **out, kv_err *err);
/* 1 = ready for transfers, 0 = still connecting / warming up, < 0 = failed (abort it). */
int kv_nccl_comm_poll(kv_nccl_comm *c, kv_err *err);
/* KV_OK while the communicator is healthy; < 0 once NCCL reported an error on it (a peer
 * that died or closed it): what is pending on it will not complete correctly. */
int kv_nccl_comm_check(kv_nccl_comm *c, kv_err *err);
/* Enqueue sends (recvs) of the pool's blocks, in order, to (from) the other rank: one
 * operation per block, so any two pools' block lists of one length match. */
int kv_nccl_send(kv_nccl_comm *c, const int32_t *blocks, int n, kv_err *err);
int kv_nccl_recv(kv_nccl_comm *c, const int32_t *blocks, int n, kv_err *err);
/* Tears the communicator down: operations still pending on it end (with garbage). */
void kv_nccl_comm_abort(kv_nccl_comm *c);

#endif
