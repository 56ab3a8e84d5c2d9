/* kv_gpu_xfer on the CUDA runtime. Ops are recycled per lane with their buffers (pinned
 * host + device arrays for block ids and hashes, an event), so a steady stream of chunks
 * allocates nothing. The buffers have room for the whole pool from the start: growing them
 * would mean cudaFree, which waits for the whole device, NCCL kernels waiting on a peer
 * (that may be dead) included. */
#include "kv_gpu_xfer.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_kernels.h"
#include "kv_log.h"

#define COMP "kv-xfer"
#define DRAIN_TIMEOUT_MS 5000

struct kv_gpu_op {
    kv_gpu_op *next;          /* the lane's free list */
    kv_gpu_lane *lane;
    cudaEvent_t done;
    int n;
    int32_t *h_ids, *d_ids;
    uint32_t *h_sums, *d_sums;
};

struct kv_gpu_lane {
    kv_gpu_pool pool;
    cudaStream_t stream;
    cudaStream_t hash_stream; /* kv_gpu_hash: not behind the lane's copies and NCCL sends */
    kv_gpu_op *free_ops;
    int n_ops;                /* ops allocated, for the leak check at destroy */
};

static int cuda_fail(kv_err *err, cudaError_t e, const char *what)
{
    (void)cudaGetLastError(); /* a non-sticky error must not poison the next call */
    return kv_err_set(err, e == cudaErrorMemoryAllocation ? KV_ENOMEM : KV_EIO, "cuda: %s: %s (%s)", what,
                      cudaGetErrorString(e), cudaGetErrorName(e));
}

#define CHECK(call, what)                                                    \
    do {                                                                     \
        cudaError_t e_ = (call);                                             \
        if (e_ != cudaSuccess)                                               \
            return cuda_fail(err, e_, what);                                 \
    } while (0)

int kv_gpu_device_uuid(int device, unsigned char uuid[KV_GPU_UUID_BYTES], kv_err *err)
{
    return kv_cuda_device_uuid(device, uuid, err);
}

int kv_gpu_ipc_export(const kv_gpu_pool *pool, unsigned char handle[KV_GPU_IPC_HANDLE_BYTES], kv_err *err)
{
    _Static_assert(sizeof(cudaIpcMemHandle_t) == KV_GPU_IPC_HANDLE_BYTES, "cudaIpcMemHandle_t size");
    cudaIpcMemHandle_t h;
    CHECK(cudaSetDevice(pool->device), "cudaSetDevice");
    CHECK(cudaIpcGetMemHandle(&h, pool->base), "cudaIpcGetMemHandle (KV pool)");
    memcpy(handle, &h, sizeof h);
    return KV_OK;
}

int kv_gpu_ipc_open(int device, const unsigned char handle[KV_GPU_IPC_HANDLE_BYTES], void **base, kv_err *err)
{
    cudaIpcMemHandle_t h;
    memcpy(&h, handle, sizeof h);
    *base = NULL;
    CHECK(cudaSetDevice(device), "cudaSetDevice");
    CHECK(cudaIpcOpenMemHandle(base, h, cudaIpcMemLazyEnablePeerAccess), "cudaIpcOpenMemHandle (peer KV pool)");
    return KV_OK;
}

void kv_gpu_ipc_close(int device, void *base)
{
    if (!base)
        return;
    cudaSetDevice(device);
    cudaError_t e = cudaIpcCloseMemHandle(base);
    if (e != cudaSuccess)
        KV_WARN(COMP, "msg=\"cudaIpcCloseMemHandle failed\" err=\"%s\"", cudaGetErrorString(e));
    (void)cudaGetLastError();
}

int kv_gpu_lane_create(const kv_gpu_pool *pool, kv_gpu_lane **out, kv_err *err)
{
    *out = NULL;
    kv_gpu_lane *l = calloc(1, sizeof *l);
    if (!l)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    l->pool = *pool;
    cudaError_t e = cudaSetDevice(pool->device);
    if (e == cudaSuccess)
        e = cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess && (e = cudaStreamCreateWithFlags(&l->hash_stream, cudaStreamNonBlocking)) != cudaSuccess)
        cudaStreamDestroy(l->stream);
    if (e != cudaSuccess) {
        free(l);
        return cuda_fail(err, e, "transfer streams");
    }
    *out = l;
    return KV_OK;
}

static void op_destroy(kv_gpu_op *op)
{
    if (op->done)
        cudaEventDestroy(op->done);
    if (op->h_ids)
        cudaFreeHost(op->h_ids);
    if (op->h_sums)
        cudaFreeHost(op->h_sums);
    if (op->d_ids)
        cudaFree(op->d_ids);
    if (op->d_sums)
        cudaFree(op->d_sums);
    free(op);
}

void kv_gpu_lane_destroy(kv_gpu_lane *l)
{
    if (!l)
        return;
    cudaSetDevice(l->pool.device);
    cudaStreamSynchronize(l->stream);
    cudaStreamSynchronize(l->hash_stream);
    for (kv_gpu_op *op = l->free_ops, *next; op; op = next) {
        next = op->next;
        op_destroy(op);
        l->n_ops--;
    }
    if (l->n_ops)
        KV_WARN(COMP, "msg=\"transfer lane closed with ops still out\" ops=%d", l->n_ops);
    cudaStreamDestroy(l->stream);
    cudaStreamDestroy(l->hash_stream);
    (void)cudaGetLastError();
    free(l);
}

void *kv_gpu_lane_stream(kv_gpu_lane *l) { return l->stream; }
const kv_gpu_pool *kv_gpu_lane_pool(const kv_gpu_lane *l) { return &l->pool; }

/* An op from the free list, or a new one with room for every block of the pool. */
static int op_get(kv_gpu_lane *l, int n, kv_gpu_op **out, kv_err *err)
{
    kv_gpu_op *op = l->free_ops;
    if (op) {
        l->free_ops = op->next;
    } else {
        if (!(op = calloc(1, sizeof *op)))
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        op->lane = l;
        l->n_ops++;
        size_t b = (size_t)(l->pool.n_blocks > 0 ? l->pool.n_blocks : 1) * 4;
        cudaError_t e = cudaEventCreateWithFlags(&op->done, cudaEventDisableTiming);
        if (e != cudaSuccess)
            op->done = NULL;
        if (e == cudaSuccess)
            e = cudaHostAlloc((void **)&op->h_ids, b, cudaHostAllocDefault);
        if (e == cudaSuccess)
            e = cudaHostAlloc((void **)&op->h_sums, b, cudaHostAllocDefault);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&op->d_ids, b);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&op->d_sums, b);
        if (e != cudaSuccess) {
            int rc = cuda_fail(err, e, "transfer buffers");
            op_destroy(op); /* never used: nothing of it can be in flight */
            l->n_ops--;
            return rc;
        }
    }
    op->next = NULL;
    op->n = n;
    *out = op;
    return KV_OK;
}

/* After a failed enqueue: what was enqueued still runs, so wait before the op is reused. */
static int enqueue_failed(kv_gpu_lane *l, cudaStream_t stream, kv_gpu_op *op, int rc)
{
    cudaStreamSynchronize(stream);
    (void)cudaGetLastError();
    op->next = l->free_ops;
    l->free_ops = op;
    return rc;
}

/* kc_block_hash of blocks[0..n) on `stream`, then the op's event. */
static int enqueue_hash(kv_gpu_lane *l, cudaStream_t stream, const int32_t *blocks, int n, kv_gpu_op **out,
                        kv_err *err)
{
    *out = NULL;
    if (n < 0 || n > l->pool.n_blocks)
        return kv_err_set(err, KV_EINVAL, "checksums of %d blocks (the pool has %d)", n, l->pool.n_blocks);
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= l->pool.n_blocks)
            return kv_err_set(err, KV_ERANGE, "block %d outside the pool of %d", blocks[i], l->pool.n_blocks);
    CHECK(cudaSetDevice(l->pool.device), "cudaSetDevice");
    kv_gpu_op *op = NULL;
    int rc = op_get(l, n, &op, err);
    if (rc)
        return rc;
    cudaError_t e = cudaSuccess;
    if (n) {
        memcpy(op->h_ids, blocks, (size_t)n * sizeof *blocks);
        e = cudaMemcpyAsync(op->d_ids, op->h_ids, (size_t)n * 4, cudaMemcpyHostToDevice, stream);
        if (e == cudaSuccess &&
            (rc = kv_cuda_block_hash(op->d_sums, l->pool.base, l->pool.block_bytes, op->d_ids, n, stream, err)))
            return enqueue_failed(l, stream, op, rc);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(op->h_sums, op->d_sums, (size_t)n * 4, cudaMemcpyDeviceToHost, stream);
    }
    if (e == cudaSuccess)
        e = cudaEventRecord(op->done, stream);
    if (e != cudaSuccess)
        return enqueue_failed(l, stream, op, cuda_fail(err, e, "enqueue on the transfer stream"));
    *out = op;
    return KV_OK;
}

int kv_gpu_mark(kv_gpu_lane *l, const int32_t *blocks, int n, kv_gpu_op **out, kv_err *err)
{
    return enqueue_hash(l, l->stream, blocks, n, out, err);
}

int kv_gpu_hash(kv_gpu_lane *l, const int32_t *blocks, int n, kv_gpu_op **out, kv_err *err)
{
    return enqueue_hash(l, l->hash_stream, blocks, n, out, err);
}

int kv_gpu_pull(kv_gpu_lane *l, const void *src_base, const int32_t *src, const int32_t *dst, int n, kv_gpu_op **out,
                kv_err *err)
{
    *out = NULL;
    size_t bb = l->pool.block_bytes;
    for (int i = 0; i < n; i++)
        if (dst[i] < 0 || dst[i] >= l->pool.n_blocks || src[i] < 0)
            return kv_err_set(err, KV_ERANGE, "copy of block %d into block %d: outside the pools", src[i], dst[i]);
    CHECK(cudaSetDevice(l->pool.device), "cudaSetDevice");
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && src[j] == src[j - 1] + 1 && dst[j] == dst[j - 1] + 1)
            j++;
        cudaError_t e = cudaMemcpyAsync((char *)l->pool.base + (size_t)dst[i] * bb,
                                        (const char *)src_base + (size_t)src[i] * bb, (size_t)(j - i) * bb,
                                        cudaMemcpyDeviceToDevice, l->stream);
        if (e != cudaSuccess) {
            /* The copies already enqueued still write into dst: they end before its blocks
             * can go back to the pool. */
            cudaStreamSynchronize(l->stream);
            return cuda_fail(err, e, "copy of KV blocks from the peer pool");
        }
        i = j;
    }
    int rc = kv_gpu_mark(l, dst, n, out, err);
    if (rc) /* no op to wait on: the copies end here, before dst can go back to the pool */
        cudaStreamSynchronize(l->stream);
    return rc;
}

int kv_gpu_op_poll(kv_gpu_op *op, kv_err *err)
{
    cudaError_t e = cudaEventQuery(op->done);
    if (e == cudaSuccess)
        return 1;
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError(); /* not an error: it must not fail the next launch's check */
        return 0;
    }
    return cuda_fail(err, e, "transfer");
}

int kv_gpu_op_wait(kv_gpu_op *op, int timeout_ms, kv_err *err)
{
    struct timespec nap = {0, 50 * 1000}; /* 50 us: a transfer of a chunk takes far longer */
    for (long waited_us = 0;; waited_us += 50) {
        int rc = kv_gpu_op_poll(op, err);
        if (rc)
            return rc < 0 ? rc : KV_OK;
        if (waited_us >= (long)timeout_ms * 1000)
            return kv_err_set(err, KV_ETIMEOUT, "GPU transfer not done after %d ms", timeout_ms);
        nanosleep(&nap, NULL);
    }
}

const uint32_t *kv_gpu_op_sums(const kv_gpu_op *op) { return op->h_sums; }

void kv_gpu_op_free(kv_gpu_op *op)
{
    if (!op)
        return;
    kv_gpu_lane *l = op->lane;
    kv_err err;
    if (kv_gpu_op_wait(op, DRAIN_TIMEOUT_MS, &err) == KV_ETIMEOUT) {
        /* Its copies may still land in its buffers: never reuse them. */
        KV_ERROR(COMP, "msg=\"transfer op still running; its buffers are abandoned\" err=\"%s\"", err.msg);
        return;
    }
    op->next = l->free_ops;
    l->free_ops = op;
}
