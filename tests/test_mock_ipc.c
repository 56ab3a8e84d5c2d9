/* The mocks of the GPU KV transports between two processes: tests/cuda_mock.c's CUDA IPC
 * (cudaIpcGetMemHandle / cudaIpcOpenMemHandle over memfd-backed device memory) and
 * tests/nccl_mock.c (libkv_nccl_mock.so, dlopened like libnccl.so.2), each with a forked
 * peer; plus kv_cuda_block_hash and kv_cuda_device_uuid on the mock. Every wait has a
 * deadline: a hang fails the test instead of stalling CI. */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <errno.h>
#include <nccl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cpu_kernels.h"
#include "cuda_kernels.h"
#include "kv_test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t k = write(fd, s, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return 0;
        s += k, n -= (size_t)k;
    }
    return 1;
}

/* All n bytes within timeout_s, else 0. */
static int read_all(int fd, void *p, size_t n, double timeout_s)
{
    char *d = p;
    double deadline = now_s() + timeout_s;
    while (n) {
        int left_ms = (int)((deadline - now_s()) * 1e3);
        if (left_ms <= 0)
            return 0;
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, left_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        ssize_t k = read(fd, d, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return 0;
        d += k, n -= (size_t)k;
    }
    return 1;
}

/* The child's exit status within timeout_s, else kills it and returns -1. */
static int wait_child(pid_t pid, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_s() > deadline) {
            fprintf(stderr, "child %d did not finish within %.0f s: killed\n", (int)pid, timeout_s);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_ms(2);
    }
}

static int g_failures_at_fork;
static pid_t fork_child(void)
{
    fflush(stdout);
    fflush(stderr);
    g_failures_at_fork = kv_test_failures;
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    return pid;
}
/* A child ends here: 0 when its own checks passed. */
static void child_exit(void)
{
    fflush(stderr);
    _exit(kv_test_failures > g_failures_at_fork ? 1 : 0);
}

static void check_child_ok(pid_t pid, double timeout_s, const char *what)
{
    int st = wait_child(pid, timeout_s);
    CHECK_MSG(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child status 0x%x", what, st);
}

static unsigned char pat1(size_t i) { return (unsigned char)(i * 131u + (i >> 9) + 7u); }
static unsigned char pat2(size_t i) { return (unsigned char)(i * 29u + 101u); }

/* ---- CUDA IPC ---------------------------------------------------------------------------- */

/* In a child: opening h gives want. */
static void child_open_expect(cudaIpcMemHandle_t h, cudaError_t want, const char *what)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        void *p = NULL;
        cudaError_t e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
        CHECK_MSG(e == want, "%s: cudaIpcOpenMemHandle gave %d, want %d", what, (int)e, (int)want);
        if (e == cudaSuccess)
            CHECK_EQ_INT(cudaIpcCloseMemHandle(p), cudaSuccess);
        child_exit();
    }
    check_child_ok(pid, 10, what);
}

/* In a child (stderr silenced): fn(arg) must abort, a misuse the mock refuses. */
static void child_dies(void (*fn)(void *), void *arg, const char *what)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(3);
        fn(arg);
        _exit(0);
    }
    int st = wait_child(pid, 10);
    CHECK_MSG(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%s: child status 0x%x, want SIGABRT", what, st);
}

static void free_imported(void *arg)
{
    void *p = NULL;
    if (cudaIpcOpenMemHandle(&p, *(cudaIpcMemHandle_t *)arg, cudaIpcMemLazyEnablePeerAccess) == cudaSuccess)
        cudaFree(p); /* wrong function: aborts */
}
static void handle_of_interior(void *arg)
{
    cudaIpcMemHandle_t h;
    cudaIpcGetMemHandle(&h, (char *)arg + 16); /* not the allocation's base: aborts */
}
static void close_own(void *arg)
{
    cudaIpcCloseMemHandle(arg); /* not imported: aborts */
}

static void test_cuda_ipc(void)
{
    const size_t n = (size_t)1 << 20, chunk = (size_t)64 << 10, off_r = 200000, off_w = 600000;
    unsigned char *h = malloc(n), *back = malloc(n);
    for (size_t i = 0; i < n; i++)
        h[i] = pat1(i);
    void *d = NULL;
    CHECK_EQ_INT(cudaMalloc(&d, n), cudaSuccess);
    CHECK_EQ_INT(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice), cudaSuccess);
    cudaIpcMemHandle_t hd;
    CHECK_EQ_INT(cudaIpcGetMemHandle(&hd, d), cudaSuccess);

    /* A process's own handle and a handle that is not one. */
    void *p = NULL;
    CHECK_EQ_INT(cudaIpcOpenMemHandle(&p, hd, cudaIpcMemLazyEnablePeerAccess), cudaErrorDeviceUninitialized);
    cudaIpcMemHandle_t junk;
    memset(&junk, 0x5A, sizeof junk);
    CHECK_EQ_INT(cudaIpcOpenMemHandle(&p, junk, cudaIpcMemLazyEnablePeerAccess), cudaErrorInvalidValue);

    /* The importer: reads at off_r, writes at off_w, all through D2D copies. */
    int to_child[2], to_parent[2];
    if (pipe(to_child) || pipe(to_parent)) {
        perror("pipe");
        exit(1);
    }
    pid_t pid = fork_child();
    if (pid == 0) {
        close(to_child[1]), close(to_parent[0]);
        cudaIpcMemHandle_t got;
        if (!read_all(to_child[0], &got, sizeof got, 10)) {
            fprintf(stderr, "child: no handle\n");
            _exit(2);
        }
        void *imp = NULL, *own = NULL;
        CHECK_EQ_INT(cudaIpcOpenMemHandle(&imp, got, cudaIpcMemLazyEnablePeerAccess), cudaSuccess);
        if (!imp)
            child_exit();
        CHECK(imp != d); /* a mapping of its own, not the inherited one */
        CHECK_EQ_INT(cudaMalloc(&own, chunk), cudaSuccess);
        cudaStream_t s;
        CHECK_EQ_INT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
        CHECK_EQ_INT(cudaMemcpyAsync(own, (char *)imp + off_r, chunk, cudaMemcpyDeviceToDevice, s), cudaSuccess);
        CHECK_EQ_INT(cudaStreamSynchronize(s), cudaSuccess);
        unsigned char *buf = malloc(chunk);
        CHECK_EQ_INT(cudaMemcpy(buf, own, chunk, cudaMemcpyDeviceToHost), cudaSuccess);
        size_t bad = 0;
        for (size_t i = 0; i < chunk; i++)
            bad += buf[i] != pat1(off_r + i);
        CHECK_MSG(bad == 0, "child: %zu of %zu bytes read through the imported memory differ", bad, chunk);

        /* block_hash runs on imported memory like on any device memory. */
        int32_t blocks[2] = {0, 5};
        void *d_blocks = NULL, *d_out = NULL;
        CHECK_EQ_INT(cudaMalloc(&d_blocks, sizeof blocks), cudaSuccess);
        CHECK_EQ_INT(cudaMalloc(&d_out, 2 * sizeof(uint32_t)), cudaSuccess);
        CHECK_EQ_INT(cudaMemcpy(d_blocks, blocks, sizeof blocks, cudaMemcpyHostToDevice), cudaSuccess);
        kv_err err = {0};
        CHECK_EQ_INT(kv_cuda_block_hash(d_out, imp, chunk, d_blocks, 2, s, &err), KV_OK);
        uint32_t hashes[2] = {0, 0};
        CHECK_EQ_INT(cudaMemcpy(hashes, d_out, sizeof hashes, cudaMemcpyDeviceToHost), cudaSuccess);
        CHECK_EQ_INT(hashes[0], kc_block_hash(h, chunk));
        CHECK_EQ_INT(hashes[1], kc_block_hash(h + 5 * chunk, chunk));

        for (size_t i = 0; i < chunk; i++)
            buf[i] = pat2(i);
        CHECK_EQ_INT(cudaMemcpy(own, buf, chunk, cudaMemcpyHostToDevice), cudaSuccess);
        CHECK_EQ_INT(cudaMemcpyAsync((char *)imp + off_w, own, chunk, cudaMemcpyDeviceToDevice, s), cudaSuccess);
        CHECK_EQ_INT(cudaStreamSynchronize(s), cudaSuccess);
        CHECK_EQ_INT(cudaIpcCloseMemHandle(imp), cudaSuccess);

        unsigned char uuid[16];
        CHECK_EQ_INT(kv_cuda_device_uuid(0, uuid, &err), KV_OK);
        if (!write_all(to_parent[1], uuid, sizeof uuid))
            _exit(2);
        child_exit();
    }
    close(to_child[0]), close(to_parent[1]);
    CHECK(write_all(to_child[1], &hd, sizeof hd));
    unsigned char uuid_child[16] = {0}, uuid0[16] = {0}, uuid1[16] = {0};
    CHECK_MSG(read_all(to_parent[0], uuid_child, sizeof uuid_child, 30), "no UUID from the child");
    check_child_ok(pid, 30, "importer");
    close(to_child[1]), close(to_parent[0]);
    CHECK_EQ_INT(cudaMemcpy(back, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += back[i] != (i >= off_w && i < off_w + chunk ? pat2(i - off_w) : pat1(i));
    CHECK_MSG(bad == 0, "%zu bytes of the exported memory differ from what the importer wrote", bad);

    /* UUIDs: per device, the same in every process. */
    kv_err err = {0};
    setenv("KV_CUDA_MOCK_DEVICES", "2", 1);
    CHECK_EQ_INT(kv_cuda_device_uuid(0, uuid0, &err), KV_OK);
    CHECK_EQ_INT(kv_cuda_device_uuid(1, uuid1, &err), KV_OK);
    CHECK(memcmp(uuid0, uuid_child, 16) == 0);
    CHECK(memcmp(uuid0, uuid1, 16) != 0);
    CHECK_EQ_INT(kv_cuda_device_uuid(2, uuid1, &err), KV_EIO);
    CHECK_EQ_INT(kv_cuda_device_uuid(-1, uuid1, &err), KV_EIO);
    unsetenv("KV_CUDA_MOCK_DEVICES");

    /* Handles that no longer name memory: freed (fd closed; then fd number reused by a
     * new allocation), and an exporter that has exited. All error codes, not aborts. */
    void *d2 = NULL, *d3 = NULL;
    cudaIpcMemHandle_t h2, h3;
    CHECK_EQ_INT(cudaMalloc(&d2, 4096), cudaSuccess);
    CHECK_EQ_INT(cudaIpcGetMemHandle(&h2, d2), cudaSuccess);
    child_open_expect(h2, cudaSuccess, "live handle");
    CHECK_EQ_INT(cudaFree(d2), cudaSuccess);
    child_open_expect(h2, cudaErrorInvalidValue, "freed");
    CHECK_EQ_INT(cudaMalloc(&d3, 4096), cudaSuccess); /* likely the freed fd number again */
    child_open_expect(h2, cudaErrorInvalidValue, "freed, fd reused");
    CHECK_EQ_INT(cudaIpcGetMemHandle(&h3, d3), cudaSuccess);
    child_open_expect(h3, cudaSuccess, "the new allocation");
    CHECK_EQ_INT(cudaFree(d3), cudaSuccess);

    if (pipe(to_parent)) {
        perror("pipe");
        exit(1);
    }
    pid = fork_child();
    if (pid == 0) {
        close(to_parent[0]);
        void *e = NULL;
        cudaIpcMemHandle_t he;
        if (cudaMalloc(&e, 8192) != cudaSuccess || cudaIpcGetMemHandle(&he, e) != cudaSuccess ||
            !write_all(to_parent[1], &he, sizeof he))
            _exit(2);
        _exit(0);
    }
    close(to_parent[1]);
    cudaIpcMemHandle_t he;
    int got = read_all(to_parent[0], &he, sizeof he, 10);
    CHECK_MSG(got, "no handle from the exporter");
    close(to_parent[0]);
    check_child_ok(pid, 10, "exporter");
    if (got) {
        p = NULL;
        CHECK_EQ_INT(cudaIpcOpenMemHandle(&p, he, cudaIpcMemLazyEnablePeerAccess), cudaErrorInvalidValue);
    }

    /* Misuse aborts, like the mock's other checks. */
    fprintf(stderr, "(three children abort on purpose next)\n");
    child_dies(free_imported, &hd, "cudaFree of imported memory");
    child_dies(handle_of_interior, d, "cudaIpcGetMemHandle of an interior pointer");
    child_dies(close_own, d, "cudaIpcCloseMemHandle of an own allocation");

    /* cudaEventQuery: work is done at enqueue. */
    cudaEvent_t ev;
    CHECK_EQ_INT(cudaEventCreate(&ev), cudaSuccess);
    CHECK_EQ_INT(cudaEventRecord(ev, NULL), cudaSuccess);
    CHECK_EQ_INT(cudaEventQuery(ev), cudaSuccess);
    CHECK_EQ_INT(cudaEventDestroy(ev), cudaSuccess);

    CHECK_EQ_INT(cudaFree(d), cudaSuccess);
    free(h), free(back);
}

/* ---- kv_cuda_block_hash ------------------------------------------------------------------ */

static void test_block_hash(void)
{
    const size_t bb = 4096;
    const int n_pool = 8;
    unsigned char *h = malloc(bb * (size_t)n_pool);
    for (size_t i = 0; i < bb * (size_t)n_pool; i++)
        h[i] = pat1(i * 7 + 3);
    int32_t blocks[5] = {3, 0, 7, 5, 3};
    uint32_t got[5] = {0};
    void *pool = NULL, *d_blocks = NULL, *d_out = NULL;
    CHECK_EQ_INT(cudaMalloc(&pool, bb * (size_t)n_pool), cudaSuccess);
    CHECK_EQ_INT(cudaMalloc(&d_blocks, sizeof blocks), cudaSuccess);
    CHECK_EQ_INT(cudaMalloc(&d_out, sizeof got), cudaSuccess);
    CHECK_EQ_INT(cudaMemcpy(pool, h, bb * (size_t)n_pool, cudaMemcpyHostToDevice), cudaSuccess);
    CHECK_EQ_INT(cudaMemcpy(d_blocks, blocks, sizeof blocks, cudaMemcpyHostToDevice), cudaSuccess);
    kv_err err = {0};
    CHECK_EQ_INT(kv_cuda_block_hash(d_out, pool, bb, d_blocks, 5, NULL, &err), KV_OK);
    CHECK_EQ_INT(cudaMemcpy(got, d_out, sizeof got, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(got[i], kc_block_hash(h + (size_t)blocks[i] * bb, bb));
    CHECK(got[1] != got[0]);
    CHECK_EQ_INT(got[4], got[0]);
    CHECK_EQ_INT(kv_cuda_block_hash(d_out, pool, bb, d_blocks, 0, NULL, &err), KV_OK);
    CHECK_EQ_INT(kv_cuda_block_hash(d_out, pool, 100, d_blocks, 5, NULL, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_cuda_block_hash(d_out, pool, 0, d_blocks, 5, NULL, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_cuda_block_hash(d_out, pool, bb, d_blocks, -1, NULL, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_cuda_block_hash(d_out, pool, bb, d_blocks, 70000, NULL, &err), KV_EINVAL);
    CHECK(strstr(err.msg, "65535") != NULL);
    cudaFree(pool), cudaFree(d_blocks), cudaFree(d_out);
    free(h);
}

/* ---- NCCL ---------------------------------------------------------------------------------- */

typedef struct nccl_api {
    __typeof__(&ncclGetVersion) GetVersion;
    __typeof__(&ncclGetUniqueId) GetUniqueId;
    __typeof__(&ncclCommInitRankConfig) CommInitRankConfig;
    __typeof__(&ncclCommGetAsyncError) CommGetAsyncError;
    __typeof__(&ncclCommAbort) CommAbort;
    __typeof__(&ncclCommDestroy) CommDestroy;
    __typeof__(&ncclSend) Send;
    __typeof__(&ncclRecv) Recv;
    __typeof__(&ncclGroupStart) GroupStart;
    __typeof__(&ncclGroupEnd) GroupEnd;
    __typeof__(&ncclGetErrorString) GetErrorString;
    __typeof__(&ncclGetLastError) GetLastError;
} nccl_api;

static int load_nccl(nccl_api *a)
{
    void *lib = dlopen(KV_NCCL_MOCK_LIB, RTLD_NOW | RTLD_LOCAL);
    CHECK_MSG(lib != NULL, "dlopen %s: %s", KV_NCCL_MOCK_LIB, dlerror());
    if (!lib)
        return 0;
    int ok = 1;
#define LOAD(f)                                                   \
    do {                                                          \
        *(void **)&a->f = dlsym(lib, "nccl" #f);                  \
        CHECK_MSG(a->f != NULL, "%s has no nccl" #f, KV_NCCL_MOCK_LIB); \
        ok &= a->f != NULL;                                       \
    } while (0)
    LOAD(GetVersion);
    LOAD(GetUniqueId);
    LOAD(CommInitRankConfig);
    LOAD(CommGetAsyncError);
    LOAD(CommAbort);
    LOAD(CommDestroy);
    LOAD(Send);
    LOAD(Recv);
    LOAD(GroupStart);
    LOAD(GroupEnd);
    LOAD(GetErrorString);
    LOAD(GetLastError);
#undef LOAD
    return ok;
}

/* Polls a nonblocking comm until it is no longer in progress (or timeout_s). */
static ncclResult_t wait_ready(const nccl_api *a, ncclComm_t c, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    ncclResult_t st = ncclInProgress;
    while (now_s() < deadline) {
        if (a->CommGetAsyncError(c, &st) != ncclSuccess)
            return ncclInternalError;
        if (st != ncclInProgress)
            return st;
        sleep_ms(1);
    }
    return st;
}

static unsigned char patk(int k, size_t i) { return (unsigned char)(i * 131u + (unsigned)k * 17u + (i >> 8)); }

#define N_BUFS 3
static const size_t g_counts[N_BUFS] = {1000, 4096, (size_t)3 << 20}; /* int8, f32, uint8 */
static const ncclDataType_t g_types[N_BUFS] = {ncclInt8, ncclFloat32, ncclUint8};
static const size_t g_sizes[N_BUFS] = {1, 4, 1};

static void nccl_child(const nccl_api *a, int from_parent)
{
    ncclUniqueId ids[2];
    if (!read_all(from_parent, ids, sizeof ids, 10)) {
        fprintf(stderr, "child: no ids\n");
        _exit(2);
    }
    ncclConfig_t nb = NCCL_CONFIG_INITIALIZER, bl = NCCL_CONFIG_INITIALIZER;
    nb.blocking = 0;
    ncclComm_t c1 = NULL, c2 = NULL, x = NULL;
    CHECK_EQ_INT(a->CommInitRankConfig(&x, 2, ids[0], 0, &nb), ncclInvalidUsage); /* rank 0 elsewhere */
    ncclResult_t r = a->CommInitRankConfig(&c1, 2, ids[0], 1, &nb);
    CHECK_MSG(r == ncclInProgress || r == ncclSuccess, "child init: %d", (int)r);
    CHECK_EQ_INT(wait_ready(a, c1, 10), ncclSuccess);

    unsigned char *bufs[N_BUFS];
    CHECK_EQ_INT(a->GroupStart(), ncclSuccess);
    for (int k = 0; k < N_BUFS; k++) {
        bufs[k] = calloc(g_counts[k], g_sizes[k]);
        CHECK_EQ_INT(a->Recv(bufs[k], g_counts[k], g_types[k], 0, c1, NULL), ncclSuccess);
    }
    CHECK_EQ_INT(a->GroupEnd(), ncclSuccess);
    ncclResult_t st = ncclInternalError;
    CHECK_EQ_INT(a->CommGetAsyncError(c1, &st), ncclSuccess);
    CHECK_EQ_INT(st, ncclSuccess);
    for (int k = 0; k < N_BUFS; k++) {
        size_t bytes = g_counts[k] * g_sizes[k], bad = 0;
        for (size_t i = 0; i < bytes; i++)
            bad += bufs[k][i] != patk(k, i);
        CHECK_MSG(bad == 0, "child: buffer %d: %zu of %zu bytes differ", k, bad, bytes);
        free(bufs[k]);
    }

    /* Blocking comm: the parent sends 8192 bytes, this side expects 4096. */
    CHECK_EQ_INT(a->CommInitRankConfig(&c2, 2, ids[1], 1, &bl), ncclSuccess);
    unsigned char small[4096];
    CHECK_EQ_INT(a->Recv(small, sizeof small, ncclUint8, 0, c2, NULL), ncclInvalidUsage);
    const char *msg = a->GetLastError(c2);
    CHECK_MSG(msg && strstr(msg, "8192") && strstr(msg, "4096"), "child: last error \"%s\"", msg ? msg : "(null)");
    CHECK_EQ_INT(a->CommGetAsyncError(c2, &st), ncclSuccess);
    CHECK_EQ_INT(st, ncclInvalidUsage);
    /* Closing before the parent's send has returned could fail it (EPIPE mid-frame). */
    char sent = 0;
    CHECK_MSG(read_all(from_parent, &sent, 1, 10), "child: the parent never said it had sent");
    CHECK_EQ_INT(a->CommDestroy(c2), ncclSuccess);
    CHECK_EQ_INT(a->CommAbort(c1), ncclSuccess);
    child_exit();
}

static void test_nccl(void)
{
    nccl_api a;
    if (!load_nccl(&a))
        return;
    int v = 0;
    CHECK_EQ_INT(a.GetVersion(&v), ncclSuccess);
    CHECK_EQ_INT(v, 22809);
    CHECK(strlen(a.GetErrorString(ncclRemoteError)) > 0);

    int to_child[2];
    if (pipe(to_child)) {
        perror("pipe");
        exit(1);
    }
    /* Fork first: the ids are this process's (their listening sockets stay here). */
    pid_t pid = fork_child();
    if (pid == 0) {
        close(to_child[1]);
        nccl_child(&a, to_child[0]);
    }
    close(to_child[0]);
    ncclUniqueId ids[2];
    CHECK_EQ_INT(a.GetUniqueId(&ids[0]), ncclSuccess);
    CHECK_EQ_INT(a.GetUniqueId(&ids[1]), ncclSuccess);
    CHECK(memcmp(&ids[0], &ids[1], sizeof ids[0]) != 0);
    CHECK(write_all(to_child[1], ids, sizeof ids));

    ncclConfig_t nb = NCCL_CONFIG_INITIALIZER, bl = NCCL_CONFIG_INITIALIZER;
    nb.blocking = 0;
    ncclComm_t c1 = NULL, c2 = NULL, x = NULL;
    CHECK_EQ_INT(a.CommInitRankConfig(&x, 3, ids[0], 0, &nb), ncclInvalidArgument);
    ncclResult_t r = a.CommInitRankConfig(&c1, 2, ids[0], 0, &nb);
    CHECK_MSG(r == ncclInProgress || r == ncclSuccess, "parent init: %d", (int)r);
    CHECK_EQ_INT(wait_ready(&a, c1, 10), ncclSuccess);

    unsigned char *bufs[N_BUFS];
    for (int k = 0; k < N_BUFS; k++) {
        size_t bytes = g_counts[k] * g_sizes[k];
        bufs[k] = malloc(bytes);
        for (size_t i = 0; i < bytes; i++)
            bufs[k][i] = patk(k, i);
    }
    /* Refused without I/O: a wrong peer, an unknown type, a mixed group, an unopened group. */
    CHECK_EQ_INT(a.Send(bufs[0], 1, ncclInt8, 0, c1, NULL), ncclInvalidArgument);
    CHECK_EQ_INT(a.Send(bufs[0], 1, (ncclDataType_t)99, 1, c1, NULL), ncclInvalidArgument);
    CHECK_EQ_INT(a.GroupStart(), ncclSuccess);
    CHECK_EQ_INT(a.Send(bufs[0], 8, ncclInt8, 1, c1, NULL), ncclSuccess);
    CHECK_EQ_INT(a.Recv(bufs[1], 8, ncclInt8, 1, c1, NULL), ncclSuccess);
    CHECK_EQ_INT(a.GroupEnd(), ncclInvalidUsage);
    CHECK_EQ_INT(a.GroupEnd(), ncclInvalidUsage);

    double t0 = now_s();
    CHECK_EQ_INT(a.GroupStart(), ncclSuccess);
    CHECK_EQ_INT(a.GroupStart(), ncclSuccess); /* nested: runs at the outer end */
    for (int k = 0; k < N_BUFS; k++)
        CHECK_EQ_INT(a.Send(bufs[k], g_counts[k], g_types[k], 1, c1, NULL), ncclSuccess);
    CHECK_EQ_INT(a.GroupEnd(), ncclSuccess);
    CHECK_EQ_INT(a.GroupEnd(), ncclSuccess);
    ncclResult_t st = ncclInternalError;
    CHECK_EQ_INT(a.CommGetAsyncError(c1, &st), ncclSuccess);
    CHECK_EQ_INT(st, ncclSuccess);
    fprintf(stderr, "nccl mock: %zu bytes in 3 sends in %.3f s\n", g_counts[2] + 1000 + 4096 * 4, now_s() - t0);

    CHECK_EQ_INT(a.CommInitRankConfig(&c2, 2, ids[1], 0, &bl), ncclSuccess);
    static unsigned char big[8192];
    CHECK_EQ_INT(a.Send(big, sizeof big, ncclUint8, 1, c2, NULL), ncclSuccess);
    CHECK(write_all(to_child[1], "s", 1));
    close(to_child[1]);

    check_child_ok(pid, 30, "nccl rank 1");

    /* The peer aborted its comm and exited: the next send fails, reported asynchronously
     * (nonblocking comm), well within the 10 s I/O timeout. */
    t0 = now_s();
    r = a.Send(bufs[0], g_counts[0], ncclInt8, 1, c1, NULL);
    CHECK_EQ_INT(r, ncclSuccess);
    st = ncclSuccess;
    double deadline = now_s() + 12;
    while (now_s() < deadline && a.CommGetAsyncError(c1, &st) == ncclSuccess && st == ncclSuccess)
        sleep_ms(1);
    CHECK_MSG(st == ncclRemoteError || st == ncclSystemError, "async error after the peer left: %d", (int)st);
    CHECK(now_s() - t0 < 11);
    const char *msg = a.GetLastError(c1);
    CHECK(msg && *msg);
    fprintf(stderr, "nccl mock: after the peer's abort: %s: %s\n", a.GetErrorString(st), msg ? msg : "(null)");
    CHECK_EQ_INT(a.Send(bufs[0], g_counts[0], ncclInt8, 1, c1, NULL), st); /* fails fast */
    /* Blocking comm whose peer closed it with 8192 bytes unread: the error comes back. */
    r = a.Recv(big, 16, ncclUint8, 1, c2, NULL);
    CHECK_MSG(r == ncclRemoteError || r == ncclSystemError, "blocking recv from a closed peer: %d", (int)r);
    CHECK_EQ_INT(a.CommDestroy(c1), ncclSuccess);
    CHECK_EQ_INT(a.CommDestroy(c2), ncclSuccess);
    CHECK_EQ_INT(a.CommAbort(NULL), ncclSuccess);
    for (int k = 0; k < N_BUFS; k++)
        free(bufs[k]);
}

int main(void)
{
    test_block_hash();
    test_cuda_ipc();
    test_nccl();
    return kv_test_result();
}
