/* kv-bench-transport: the GPU KV transports between two processes, through the code the
 * workers use (common/transport): cuda-ipc (the decode process copies blocks out of the
 * prefill process's exported pool, then checksums them on its GPU) and nccl (sends and
 * receives between two GPUs, then the same checksums). Every transferred block is verified
 * against the checksum the prefill side computed, and the rate is set against the
 * device-to-device copy bandwidth measured in the same run (bytes moved once / time).
 * Blocks go in chunks (a prefill chunk's sealed blocks) to a shuffled destination (a
 * decode pool's free list), enqueued back to back as the KvChunks would arrive.
 * Exit status: 0 all checks passed, 77 no GPU, 1 a failure. */
#include <cuda_runtime.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_kernels.h"
#include "kv_gpu_xfer.h"
#include "kv_nccl.h"
#include "kv_time.h"

#define PIPE_TIMEOUT_MS 120000

typedef struct opts {
    size_t block_bytes;
    int n_blocks, chunk, reps;
} opts;

/* What the child (decode side) reports for one transport. */
typedef struct result {
    int ran, ok;
    double best_s;
    char msg[256];
} result;

/* ---- pipes: whole messages or a clear failure, never a hang ---- */

static int pipe_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int pipe_read(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, PIPE_TIMEOUT_MS) <= 0)
            return -1;
        ssize_t r = read(fd, c, n);
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int fail(const char *what, const kv_err *err)
{
    fprintf(stderr, "kv-bench-transport: %s: %s\n", what, err ? err->msg : "");
    return -1;
}

#define CK(call)                                                                                  \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "kv-bench-transport: %s: %s (line %d)\n", #call, cudaGetErrorString(e_), __LINE__); \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)

/* ---- both sides ---- */

static int pool_alloc(int device, const opts *o, kv_gpu_pool *pool)
{
    *pool = (kv_gpu_pool){device, NULL, o->block_bytes, o->n_blocks};
    CK(cudaSetDevice(device));
    CK(cudaMalloc(&pool->base, o->block_bytes * (size_t)o->n_blocks));
    return 0;
}

/* Random bytes (xorshift), written through a host buffer of one block. */
static int pool_fill(const kv_gpu_pool *pool, uint64_t seed)
{
    uint64_t *h = malloc(pool->block_bytes);
    if (!h)
        return -1;
    for (int b = 0; b < pool->n_blocks; b++) {
        for (size_t i = 0; i < pool->block_bytes / 8; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            h[i] = seed;
        }
        if (cudaMemcpy((char *)pool->base + (size_t)b * pool->block_bytes, h, pool->block_bytes,
                       cudaMemcpyHostToDevice) != cudaSuccess) {
            free(h);
            return -1;
        }
    }
    free(h);
    /* A pageable copy may return before its DMA lands, and the lanes' non-blocking streams
     * do not wait for the legacy stream's work. */
    return cudaDeviceSynchronize() == cudaSuccess ? 0 : -1;
}

/* Checksums of all the pool's blocks, in block order. */
static int pool_sums(kv_gpu_lane *lane, int n, uint32_t *out)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    kv_gpu_op *op = NULL;
    kv_err err;
    int rc = ids ? 0 : -1;
    for (int i = 0; ids && i < n; i++)
        ids[i] = i;
    if (!rc && (kv_gpu_mark(lane, ids, n, &op, &err) || kv_gpu_op_wait(op, 60000, &err)))
        rc = fail("checksums", &err);
    if (!rc)
        memcpy(out, kv_gpu_op_sums(op), (size_t)n * sizeof *out);
    kv_gpu_op_free(op);
    free(ids);
    return rc;
}

static void shuffle(int32_t *v, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++)
        v[i] = i;
    for (int i = n - 1; i > 0; i--) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        int j = (int)(seed % (uint64_t)(i + 1));
        int32_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* ---- the decode side (child) ---- */

/* Waits for every op (chunk k: source blocks k*chunk..), frees them, and checks each
 * destination block's checksum against its source block's. */
static int finish_ops(kv_gpu_op **ops, int n_ops, const opts *o, const uint32_t *src_sums, result *res)
{
    int bad = 0, err_rc = 0;
    for (int k = 0; k < n_ops; k++) {
        kv_err err;
        if (kv_gpu_op_wait(ops[k], 120000, &err)) {
            snprintf(res->msg, sizeof res->msg, "transfer: %.200s", err.msg);
            err_rc = -1;
        } else {
            const uint32_t *got = kv_gpu_op_sums(ops[k]);
            for (int i = 0; i < o->chunk && k * o->chunk + i < o->n_blocks; i++)
                bad += got[i] != src_sums[k * o->chunk + i];
        }
        kv_gpu_op_free(ops[k]);
    }
    if (!err_rc && bad)
        snprintf(res->msg, sizeof res->msg, "%d of %d blocks arrived with a wrong checksum", bad, o->n_blocks);
    return err_rc || bad ? -1 : 0;
}

/* One timed pass: every chunk enqueued, then all waited for. nccl: comm != NULL. */
static int decode_pass(kv_gpu_lane *lane, void *src_base, kv_nccl_comm *comm, const opts *o, const int32_t *dst,
                       const uint32_t *src_sums, double *secs, result *res)
{
    int n_chunks = (o->n_blocks + o->chunk - 1) / o->chunk;
    kv_gpu_op **ops = calloc((size_t)n_chunks, sizeof *ops);
    int32_t *src = malloc((size_t)o->n_blocks * sizeof *src);
    if (!ops || !src) {
        free(ops);
        free(src);
        return -1;
    }
    for (int i = 0; i < o->n_blocks; i++)
        src[i] = i; /* a prefill worker's sealed blocks come off its free list in order */
    kv_err err;
    int rc = 0, n_ops = 0;
    double t0 = kv_now_s();
    for (int k = 0; k < n_chunks && !rc; k++) {
        int first = k * o->chunk, n = o->n_blocks - first < o->chunk ? o->n_blocks - first : o->chunk;
        if (comm)
            rc = kv_nccl_recv(comm, dst + first, n, &err) || kv_gpu_mark(lane, dst + first, n, &ops[n_ops], &err);
        else
            rc = kv_gpu_pull(lane, src_base, src + first, dst + first, n, &ops[n_ops], &err);
        if (rc)
            snprintf(res->msg, sizeof res->msg, "enqueue: %.200s", err.msg);
        else
            n_ops++;
    }
    int vrc = finish_ops(ops, n_ops, o, src_sums, res);
    *secs = kv_now_s() - t0;
    free(ops);
    free(src);
    return rc || vrc ? -1 : 0;
}

static int run_decode(int rfd, int wfd, const opts *o, int device, int nccl_device)
{
    int go = 0;
    if (pipe_read(rfd, &go, sizeof go))
        return -1;
    if (!go)
        return 0; /* the parent found no GPU, or failed on its side (and says so) */
    uint32_t *sums = malloc((size_t)o->n_blocks * sizeof *sums);
    int32_t *dst = malloc((size_t)o->n_blocks * sizeof *dst);
    unsigned char handle[KV_GPU_IPC_HANDLE_BYTES];
    if (!sums || !dst || pipe_read(rfd, sums, (size_t)o->n_blocks * sizeof *sums) ||
        pipe_read(rfd, handle, sizeof handle))
        return -1;
    result res[2];
    memset(res, 0, sizeof res);
    kv_err err;
    /* cuda-ipc: a pool on the prefill side's GPU, as on a one-GPU node. */
    kv_gpu_pool pool;
    kv_gpu_lane *lane = NULL;
    void *peer = NULL;
    res[0].ran = 1;
    if (pool_alloc(device, o, &pool) || kv_gpu_lane_create(&pool, &lane, &err) ||
        kv_gpu_ipc_open(device, handle, &peer, &err)) {
        snprintf(res[0].msg, sizeof res[0].msg, "set-up: %.200s", err.msg);
    } else {
        res[0].ok = 1;
        for (int rep = 0; rep < o->reps && res[0].ok; rep++) {
            double s;
            shuffle(dst, o->n_blocks, 77 + (uint64_t)rep);
            res[0].ok = !decode_pass(lane, peer, NULL, o, dst, sums, &s, &res[0]);
            if (rep == 0 || s < res[0].best_s)
                res[0].best_s = s;
        }
    }
    kv_gpu_ipc_close(device, peer);
    kv_gpu_lane_destroy(lane);
    cudaFree(pool.base);
    /* nccl: the parent says whether (and sends the unique id). */
    unsigned char id[KV_NCCL_ID_BYTES];
    int nccl = 0;
    if (pipe_read(rfd, &nccl, sizeof nccl) || (nccl && pipe_read(rfd, id, sizeof id)))
        return -1;
    if (nccl) {
        kv_nccl *lib = NULL;
        kv_nccl_comm *comm = NULL;
        res[1].ran = 1;
        int rc = pool_alloc(nccl_device, o, &pool) || kv_nccl_load(&lib, &err) ||
                 kv_gpu_lane_create(&pool, &lane, &err) || kv_nccl_comm_start(lib, lane, id, 1, &comm, &err);
        double until = kv_now_s() + 60.0;
        while (!rc && (rc = kv_nccl_comm_poll(comm, &err)) == 0 && kv_now_s() < until)
            usleep(1000);
        if (rc != 1) {
            snprintf(res[1].msg, sizeof res[1].msg, "communicator: %.200s", rc ? err.msg : "not ready in 60 s");
        } else {
            res[1].ok = 1;
            for (int rep = 0; rep < o->reps && res[1].ok; rep++) {
                double s;
                shuffle(dst, o->n_blocks, 99 + (uint64_t)rep);
                int ready = 1;
                res[1].ok = !pipe_write(wfd, &ready, sizeof ready) &&
                            !decode_pass(lane, NULL, comm, o, dst, sums, &s, &res[1]);
                if (rep == 0 || s < res[1].best_s)
                    res[1].best_s = s;
            }
        }
        int stop = 0;
        pipe_write(wfd, &stop, sizeof stop);
        kv_nccl_comm_abort(comm);
        kv_gpu_lane_destroy(lane);
        kv_nccl_unload(lib);
        cudaFree(pool.base);
    }
    free(sums);
    free(dst);
    return pipe_write(wfd, res, sizeof res);
}

/* ---- the prefill side (parent) ---- */

/* Best of 3 device-to-device copies of the pool, seconds. */
static double copy_floor(const kv_gpu_pool *pool)
{
    size_t bytes = pool->block_bytes * (size_t)pool->n_blocks;
    void *to = NULL;
    double best = 0;
    if (cudaMalloc(&to, bytes) != cudaSuccess)
        return 0;
    for (int rep = 0; rep < 4; rep++) {
        double t0 = kv_now_s();
        if (cudaMemcpy(to, pool->base, bytes, cudaMemcpyDeviceToDevice) != cudaSuccess ||
            cudaDeviceSynchronize() != cudaSuccess)
            break;
        double s = kv_now_s() - t0;
        if (rep && (best == 0 || s < best)) /* the first one warms up */
            best = s;
    }
    cudaFree(to);
    return best;
}

/* Sends every chunk as the prefill worker does, once per rep the child asks for. */
static int nccl_send_passes(int rfd, const opts *o, kv_nccl_comm *comm, kv_gpu_lane *lane)
{
    int32_t *src = malloc((size_t)o->n_blocks * sizeof *src);
    if (!src)
        return -1;
    for (int i = 0; i < o->n_blocks; i++)
        src[i] = i;
    int ready = 0, rc = 0;
    /* Until the child says stop (0), even after a failure: what follows on the pipe is its result. */
    while (!pipe_read(rfd, &ready, sizeof ready) && ready) {
        if (rc)
            continue;
        kv_err err;
        kv_gpu_op *op = NULL;
        for (int first = 0; !rc && first < o->n_blocks; first += o->chunk) {
            int n = o->n_blocks - first < o->chunk ? o->n_blocks - first : o->chunk;
            if (kv_nccl_send(comm, src + first, n, &err))
                rc = fail("ncclSend", &err);
        }
        if (!rc && (kv_gpu_mark(lane, NULL, 0, &op, &err) || kv_gpu_op_wait(op, 120000, &err)))
            rc = fail("sends", &err);
        kv_gpu_op_free(op);
    }
    free(src);
    return rc;
}

static void row(const char *what, double secs, double bytes, double floor_gbs, const char *note)
{
    double gbs = secs > 0 ? bytes / secs / 1e9 : 0;
    char pct[16] = "";
    if (floor_gbs > 0 && secs > 0)
        snprintf(pct, sizeof pct, "%5.1f %%", 100.0 * gbs / floor_gbs);
    printf("| %-24s | %9.3f ms | %8.1f GB/s | %7s | %s\n", what, secs * 1e3, gbs, pct, note);
}

static int run_prefill(int wfd, int rfd, const opts *o, int *nccl_device)
{
    int n_dev = 0, go;
    kv_err err = {0, ""};
    kv_cuda_device_count(&n_dev, &err);
    if (n_dev == 0) {
        go = 0;
        pipe_write(wfd, &go, sizeof go);
        fprintf(stderr, "kv-bench-transport: no CUDA device (%s)\n", err.msg);
        return 77;
    }
    go = 1;
    *nccl_device = n_dev > 1 ? 1 : -1;
    char name[256] = "?";
    kv_cuda_device_info(0, name, sizeof name, NULL, NULL, NULL, &err);
    kv_gpu_pool pool;
    kv_gpu_lane *lane = NULL;
    uint32_t *sums = malloc((size_t)o->n_blocks * sizeof *sums);
    unsigned char handle[KV_GPU_IPC_HANDLE_BYTES];
    if (!sums || pool_alloc(0, o, &pool) || pool_fill(&pool, 0x9E3779B97F4A7C15ull) ||
        kv_gpu_lane_create(&pool, &lane, &err) || pool_sums(lane, o->n_blocks, sums) ||
        kv_gpu_ipc_export(&pool, handle, &err)) {
        fprintf(stderr, "kv-bench-transport: prefill side set-up failed: %s\n", err.msg);
        go = 0;
        pipe_write(wfd, &go, sizeof go);
        return 1;
    }
    double floor_s = copy_floor(&pool);
    if (pipe_write(wfd, &go, sizeof go) || pipe_write(wfd, sums, (size_t)o->n_blocks * sizeof *sums) ||
        pipe_write(wfd, handle, sizeof handle))
        return fail("pipe to the decode side", NULL), 1;
    /* nccl between cuda:0 and cuda:1 when there are two GPUs and NCCL loads. */
    kv_nccl *lib = NULL;
    kv_nccl_comm *comm = NULL;
    unsigned char id[KV_NCCL_ID_BYTES];
    char nccl_note[300] = "";
    int nccl = 0;
    if (*nccl_device < 0)
        snprintf(nccl_note, sizeof nccl_note, "skipped: one GPU (nccl needs two)");
    else if (kv_nccl_load(&lib, &err) || kv_nccl_unique_id(lib, id, &err))
        snprintf(nccl_note, sizeof nccl_note, "skipped: %.250s", err.msg);
    else if (kv_nccl_comm_start(lib, lane, id, 0, &comm, &err))
        snprintf(nccl_note, sizeof nccl_note, "FAILED: %.250s", err.msg);
    else
        nccl = 1;
    if (pipe_write(wfd, &nccl, sizeof nccl) || (nccl && pipe_write(wfd, id, sizeof id)))
        return 1;
    int rc = 0;
    if (nccl) {
        double until = kv_now_s() + 60.0;
        int ready;
        while ((ready = kv_nccl_comm_poll(comm, &err)) == 0 && kv_now_s() < until)
            usleep(1000);
        rc = ready == 1 ? nccl_send_passes(rfd, o, comm, lane) : fail("nccl communicator", &err);
    }
    result res[2];
    if (pipe_read(rfd, res, sizeof res)) {
        fprintf(stderr, "kv-bench-transport: no result from the decode side\n");
        return 1;
    }
    double bytes = (double)o->block_bytes * o->n_blocks, floor_gbs = floor_s > 0 ? bytes / floor_s / 1e9 : 0;
    printf("kv-bench-transport: %d blocks x %.2f MiB (%.0f MiB), chunks of %d blocks, best of %d; cuda:0 = %s\n",
           o->n_blocks, (double)o->block_bytes / (1 << 20), bytes / (1 << 20), o->chunk, o->reps, name);
    printf("| %-24s | %12s | %13s | %7s | %s\n", "path", "time", "rate", "% floor", "check");
    row("copy d2d (floor)", floor_s, bytes, 0, "cudaMemcpy in one process");
    const char *names[2] = {"cuda-ipc pull+checksum", "nccl send/recv+checksum"};
    for (int t = 0; t < 2; t++) {
        if (!res[t].ran) {
            printf("| %-24s | %s\n", names[t], nccl_note);
            continue;
        }
        char note[300];
        snprintf(note, sizeof note, "%s", res[t].ok ? "all blocks intact" : res[t].msg);
        row(names[t], res[t].ok ? res[t].best_s : 0, bytes, floor_gbs, note);
        if (!res[t].ok)
            rc = -1;
    }
    kv_nccl_comm_abort(comm);
    kv_nccl_unload(lib);
    kv_gpu_lane_destroy(lane);
    cudaFree(pool.base);
    free(sums);
    return rc ? 1 : 0;
}

static int parse(int argc, char **argv, opts *o)
{
    *o = (opts){(size_t)2 << 20, 256, 16, 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n = v ? strtol(v, NULL, 10) : 0;
        if (!strcmp(a, "--block-bytes") && v && n >= 16 && n % 16 == 0)
            o->block_bytes = (size_t)n;
        else if (!strcmp(a, "--blocks") && v && n >= 1 && n <= 1 << 20)
            o->n_blocks = (int)n;
        else if (!strcmp(a, "--chunk") && v && n >= 1 && n <= 65535)
            o->chunk = (int)n;
        else if (!strcmp(a, "--reps") && v && n >= 1 && n <= 100)
            o->reps = (int)n;
        else {
            fprintf(stderr, "usage: kv-bench-transport [--block-bytes B (multiple of 16; default 2 MiB)] "
                            "[--blocks N (256)] [--chunk C (16)] [--reps R (3)]\n");
            return 2;
        }
        i++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o))
        return 2;
    int down[2], up[2];
    if (pipe(down) || pipe(up))
        return 1;
    signal(SIGPIPE, SIG_IGN);
    fflush(NULL);
    /* Fork before any CUDA call: a CUDA context does not survive into a child. */
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        int n_dev = 0;
        kv_err err;
        kv_cuda_device_count(&n_dev, &err);
        _exit(run_decode(down[0], up[1], &o, 0, n_dev > 1 ? 1 : 0) ? 1 : 0);
    }
    close(down[0]);
    close(up[1]);
    int nccl_device;
    int rc = run_prefill(down[1], up[0], &o, &nccl_device);
    close(down[1]);
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "kv-bench-transport: the decode side failed (status %d)\n", st);
        if (rc == 0)
            rc = 1;
    }
    return rc;
}
