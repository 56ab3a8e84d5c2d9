/* kv_nccl: the few NCCL entry points the KV transport uses, resolved with dlsym. */
#include "kv_nccl.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_log.h"

#define COMP "kv-xfer"
#define ENQUEUE_TIMEOUT_MS 2000
#define WARM_BYTES 16

struct kv_nccl {
    void *dl;
    int version;
    ncclResult_t (*get_version)(int *);
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*init_rank_config)(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *);
    ncclResult_t (*get_async_error)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*abort)(ncclComm_t);
    ncclResult_t (*send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*group_start)(void);
    ncclResult_t (*group_end)(void);
    const char *(*error_string)(ncclResult_t);
    const char *(*last_error)(ncclComm_t);
};

typedef enum { C_INIT = 0, C_WARM_ENQUEUE, C_WARM_RUN, C_READY, C_FAILED } comm_state;

struct kv_nccl_comm {
    kv_nccl *lib;
    kv_gpu_lane *lane;
    ncclComm_t comm;
    int rank;
    comm_state state;
    void *warm;               /* WARM_BYTES of device memory for the warm-up exchange */
    kv_gpu_op *warm_op;
};

int kv_nccl_load(kv_nccl **out, kv_err *err)
{
    *out = NULL;
    const char *path = getenv("KVSERVE_NCCL_LIB");
    if (!path || !path[0])
        path = "libnccl.so.2";
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl)
        return kv_err_set(err, KV_EUNSUPPORTED, "cannot load NCCL (%s): %s", path, dlerror());
    kv_nccl *l = calloc(1, sizeof *l);
    if (!l) {
        dlclose(dl);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    l->dl = dl;
    struct { void **fn; const char *name; } syms[] = {
        {(void **)&l->get_version, "ncclGetVersion"},
        {(void **)&l->get_unique_id, "ncclGetUniqueId"},
        {(void **)&l->init_rank_config, "ncclCommInitRankConfig"},
        {(void **)&l->get_async_error, "ncclCommGetAsyncError"},
        {(void **)&l->abort, "ncclCommAbort"},
        {(void **)&l->send, "ncclSend"},
        {(void **)&l->recv, "ncclRecv"},
        {(void **)&l->group_start, "ncclGroupStart"},
        {(void **)&l->group_end, "ncclGroupEnd"},
        {(void **)&l->error_string, "ncclGetErrorString"},
        {(void **)&l->last_error, "ncclGetLastError"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
        *syms[i].fn = dlsym(dl, syms[i].name);
        if (!*syms[i].fn) {
            kv_err_set(err, KV_EUNSUPPORTED, "NCCL library %s lacks %s (NCCL >= 2.14 needed)", path, syms[i].name);
            kv_nccl_unload(l);
            return err->code;
        }
    }
    if (l->get_version(&l->version) != ncclSuccess || l->version < 21400) {
        kv_err_set(err, KV_EUNSUPPORTED, "NCCL %d at %s is too old: non-blocking communicators need 2.14", l->version,
                   path);
        kv_nccl_unload(l);
        return err->code;
    }
    *out = l;
    return KV_OK;
}

void kv_nccl_unload(kv_nccl *lib)
{
    if (!lib)
        return;
    dlclose(lib->dl);
    free(lib);
}

int kv_nccl_version(const kv_nccl *lib) { return lib->version; }

static int nccl_fail(kv_err *err, kv_nccl *lib, ncclComm_t comm, ncclResult_t r, const char *what)
{
    const char *last = comm ? lib->last_error(comm) : NULL;
    return kv_err_set(err, KV_EIO, "nccl: %s: %s%s%s", what, lib->error_string(r), last && last[0] ? ": " : "",
                      last ? last : "");
}

int kv_nccl_unique_id(kv_nccl *lib, unsigned char id[KV_NCCL_ID_BYTES], kv_err *err)
{
    _Static_assert(sizeof(ncclUniqueId) == KV_NCCL_ID_BYTES, "ncclUniqueId size");
    ncclUniqueId u;
    ncclResult_t r = lib->get_unique_id(&u);
    if (r != ncclSuccess)
        return nccl_fail(err, lib, NULL, r, "ncclGetUniqueId");
    memcpy(id, &u, sizeof u);
    return KV_OK;
}

int kv_nccl_comm_start(kv_nccl *lib, kv_gpu_lane *lane, const unsigned char id[KV_NCCL_ID_BYTES], int rank,
                       kv_nccl_comm **out, kv_err *err)
{
    *out = NULL;
    kv_nccl_comm *c = calloc(1, sizeof *c);
    if (!c)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    c->lib = lib;
    c->lane = lane;
    c->rank = rank;
    const kv_gpu_pool *pool = kv_gpu_lane_pool(lane);
    cudaError_t ce = cudaSetDevice(pool->device);
    if (ce == cudaSuccess)
        ce = cudaMalloc(&c->warm, WARM_BYTES);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        free(c);
        return kv_err_set(err, KV_EIO, "cuda: NCCL warm-up buffer: %s", cudaGetErrorString(ce));
    }
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = lib->init_rank_config(&c->comm, 2, u, rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        int rc = nccl_fail(err, lib, NULL, r, "ncclCommInitRankConfig");
        if (c->comm)
            lib->abort(c->comm);
        cudaFree(c->warm);
        free(c);
        return rc;
    }
    *out = c;
    return KV_OK;
}

/* 1 = the communicator is idle (what was enqueued is enqueued), 0 = busy, < 0 = failed. */
static int async_state(kv_nccl_comm *c, const char *what, kv_err *err)
{
    ncclResult_t st = ncclSuccess;
    ncclResult_t r = c->lib->get_async_error(c->comm, &st);
    if (r != ncclSuccess)
        st = r;
    if (st == ncclInProgress)
        return 0;
    if (st != ncclSuccess) {
        c->state = C_FAILED;
        return nccl_fail(err, c->lib, c->comm, st, what);
    }
    return 1;
}

/* Sends (recv = 0) or receives the warm-up bytes, or the given blocks. */
static int enqueue(kv_nccl_comm *c, int recv, const int32_t *blocks, int n, kv_err *err)
{
    kv_nccl *l = c->lib;
    const kv_gpu_pool *pool = kv_gpu_lane_pool(c->lane);
    cudaStream_t s = kv_gpu_lane_stream(c->lane);
    int peer = 1 - c->rank;
    ncclResult_t r = l->group_start();
    /* One operation per block, never merged into runs: a send and its receive must have
     * the same size, and the two pools' block ids run differently. */
    for (int i = 0; (r == ncclSuccess || r == ncclInProgress) && i < (blocks ? n : 1); i++) {
        char *p = blocks ? (char *)pool->base + (size_t)blocks[i] * pool->block_bytes : c->warm;
        size_t bytes = blocks ? pool->block_bytes : WARM_BYTES;
        r = recv ? l->recv(p, bytes, ncclInt8, peer, c->comm, s) : l->send(p, bytes, ncclInt8, peer, c->comm, s);
    }
    ncclResult_t re = l->group_end();
    if (r == ncclSuccess || r == ncclInProgress)
        r = re;
    if (r != ncclSuccess && r != ncclInProgress) {
        c->state = C_FAILED;
        return nccl_fail(err, l, c->comm, r, recv ? "ncclRecv" : "ncclSend");
    }
    return KV_OK;
}

int kv_nccl_comm_poll(kv_nccl_comm *c, kv_err *err)
{
    int rc;
    switch (c->state) {
    case C_INIT:
        if ((rc = async_state(c, "communicator set-up", err)) <= 0)
            return rc;
        if ((rc = enqueue(c, c->rank == 1, NULL, 0, err)))
            return rc;
        c->state = C_WARM_ENQUEUE;
        /* fall through */
    case C_WARM_ENQUEUE:
        if ((rc = async_state(c, "warm-up exchange", err)) <= 0)
            return rc;
        if ((rc = kv_gpu_mark(c->lane, NULL, 0, &c->warm_op, err))) {
            c->state = C_FAILED;
            return rc;
        }
        c->state = C_WARM_RUN;
        /* fall through */
    case C_WARM_RUN:
        if ((rc = kv_gpu_op_poll(c->warm_op, err)) == 0) {
            /* A peer that died mid-exchange shows as an async error, not as the event. */
            return async_state(c, "warm-up exchange", err) < 0 ? err->code : 0;
        }
        kv_gpu_op_free(c->warm_op);
        c->warm_op = NULL;
        if (rc < 0) {
            c->state = C_FAILED;
            return rc;
        }
        c->state = C_READY;
        return 1;
    case C_READY:
        return 1;
    default:
        return kv_err_set(err, KV_ESTATE, "nccl communicator failed earlier");
    }
}

int kv_nccl_comm_check(kv_nccl_comm *c, kv_err *err)
{
    if (c->state == C_FAILED)
        return kv_err_set(err, KV_EIO, "nccl communicator failed earlier");
    return async_state(c, "communicator", err) < 0 ? err->code : KV_OK;
}

/* Waits (bounded) until NCCL has enqueued the group on the stream. */
static int enqueue_blocks(kv_nccl_comm *c, int recv, const int32_t *blocks, int n, kv_err *err)
{
    if (c->state != C_READY)
        return kv_err_set(err, KV_ESTATE, "nccl communicator not ready");
    const kv_gpu_pool *pool = kv_gpu_lane_pool(c->lane);
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= pool->n_blocks)
            return kv_err_set(err, KV_ERANGE, "block %d outside the pool of %d", blocks[i], pool->n_blocks);
    if (cudaSetDevice(pool->device) != cudaSuccess) {
        (void)cudaGetLastError();
        return kv_err_set(err, KV_EIO, "cuda: cudaSetDevice(%d) failed", pool->device);
    }
    int rc = enqueue(c, recv, blocks, n, err);
    struct timespec nap = {0, 20 * 1000};
    for (long us = 0; !rc; us += 20) {
        if ((rc = async_state(c, recv ? "ncclRecv" : "ncclSend", err)) != 0)
            return rc < 0 ? rc : KV_OK;
        if (us >= ENQUEUE_TIMEOUT_MS * 1000L) {
            c->state = C_FAILED;
            return kv_err_set(err, KV_ETIMEOUT, "nccl: %s not enqueued within %d ms", recv ? "recv" : "send",
                              ENQUEUE_TIMEOUT_MS);
        }
        nanosleep(&nap, NULL);
    }
    return rc;
}

int kv_nccl_send(kv_nccl_comm *c, const int32_t *blocks, int n, kv_err *err)
{
    return enqueue_blocks(c, 0, blocks, n, err);
}

int kv_nccl_recv(kv_nccl_comm *c, const int32_t *blocks, int n, kv_err *err)
{
    return enqueue_blocks(c, 1, blocks, n, err);
}

void kv_nccl_comm_abort(kv_nccl_comm *c)
{
    if (!c)
        return;
    const kv_gpu_pool *pool = kv_gpu_lane_pool(c->lane);
    cudaSetDevice(pool->device);
    if (c->comm) {
        ncclResult_t r = c->lib->abort(c->comm);
        if (r != ncclSuccess)
            KV_WARN(COMP, "msg=\"ncclCommAbort failed\" err=\"%s\"", c->lib->error_string(r));
    }
    /* Aborted operations leave the stream; only then may the warm-up buffer go. */
    kv_gpu_op *drained = NULL;
    kv_err err;
    int rc = kv_gpu_mark(c->lane, NULL, 0, &drained, &err);
    if (!rc)
        rc = kv_gpu_op_wait(drained, 5000, &err);
    kv_gpu_op_free(drained);
    kv_gpu_op_free(c->warm_op);
    if (rc)
        KV_ERROR(COMP, "msg=\"transfer stream still busy after ncclCommAbort\" err=\"%s\"", err.msg);
    else
        cudaFree(c->warm);
    (void)cudaGetLastError();
    free(c);
}
