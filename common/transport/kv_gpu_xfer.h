/* GPU side of the KV transports: a worker's pool as the transports see it, CUDA IPC export
 * and import of a pool, and lanes: one CUDA stream per peer on which block copies, NCCL
 * operations and block checksums are enqueued and then polled to completion, so the
 * single-threaded worker loops never block on a transfer. In builds without CUDA every
 * function here fails with KV_EUNSUPPORTED. */
#ifndef KV_GPU_XFER_H
#define KV_GPU_XFER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

#define KV_GPU_IPC_HANDLE_BYTES 64
#define KV_GPU_UUID_BYTES 16

/* A KV pool in GPU memory: n_blocks blocks of block_bytes from base, on device. */
typedef struct kv_gpu_pool {
    int device;
    void *base;
    size_t block_bytes;
    int32_t n_blocks;
} kv_gpu_pool;

int kv_gpu_device_uuid(int device, unsigned char uuid[KV_GPU_UUID_BYTES], kv_err *err);

/* The pool's memory as an IPC handle another process of this node can open. */
int kv_gpu_ipc_export(const kv_gpu_pool *pool, unsigned char handle[KV_GPU_IPC_HANDLE_BYTES], kv_err *err);
/* Maps another process's exported pool into this one (on `device`, peer access enabled
 * when the pool lives on another GPU). */
int kv_gpu_ipc_open(int device, const unsigned char handle[KV_GPU_IPC_HANDLE_BYTES], void **base, kv_err *err);
void kv_gpu_ipc_close(int device, void *base);

typedef struct kv_gpu_lane kv_gpu_lane;
typedef struct kv_gpu_op kv_gpu_op;

int kv_gpu_lane_create(const kv_gpu_pool *pool, kv_gpu_lane **out, kv_err *err);
/* Waits for the lane's work (abort a lane's NCCL communicator first), then frees it and
 * its ops. */
void kv_gpu_lane_destroy(kv_gpu_lane *l);
void *kv_gpu_lane_stream(kv_gpu_lane *l);     /* cudaStream_t */
const kv_gpu_pool *kv_gpu_lane_pool(const kv_gpu_lane *l);

/* Enqueues kc_block_hash of the pool's blocks[0..n) (n may be 0) after whatever the lane
 * already holds, then an event: the op completes when all of it has run. */
int kv_gpu_mark(kv_gpu_lane *l, const int32_t *blocks, int n, kv_gpu_op **op, kv_err *err);
/* The same checksums on the lane's side stream, not behind its copies and NCCL operations:
 * for blocks nothing on the lane writes (a sender's, whose NCCL send of the previous chunk
 * may wait on the peer). */
int kv_gpu_hash(kv_gpu_lane *l, const int32_t *blocks, int n, kv_gpu_op **op, kv_err *err);
/* Enqueues copies of blocks src[i] of the pool mapped at src_base into this pool's blocks
 * dst[i] (runs of consecutive ids in one copy), then kv_gpu_mark of dst. */
int kv_gpu_pull(kv_gpu_lane *l, const void *src_base, const int32_t *src, const int32_t *dst, int n, kv_gpu_op **op,
                kv_err *err);
/* 1 when the op has completed, 0 while it runs, < 0 when the GPU reported an error. */
int kv_gpu_op_poll(kv_gpu_op *op, kv_err *err);
/* Polls until done or timeout_ms (KV_ETIMEOUT). */
int kv_gpu_op_wait(kv_gpu_op *op, int timeout_ms, kv_err *err);
/* The hashes of a completed op (n of them, in the order given). */
const uint32_t *kv_gpu_op_sums(const kv_gpu_op *op);
/* Gives the op back to its lane; the caller knows it has completed (or gives up on it:
 * its buffers are then only reused after the lane has drained). */
void kv_gpu_op_free(kv_gpu_op *op);

#endif
