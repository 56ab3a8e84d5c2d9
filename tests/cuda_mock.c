/* A CPU stand-in for the CUDA runtime and for kernels/cuda's launchers, linked instead of
 * them into test_engine_cuda_mock: the CUDA engine's own code (engine_cuda*.c) then runs on
 * a machine without a GPU, its results checked against the same references as on a GPU.
 *
 * "Device" memory is host memory registered by cudaMalloc; every launcher checks that each
 * device pointer it gets lies inside such an allocation with room for what it will touch,
 * that host pointers never go where device ones belong (and the reverse for copies), then
 * computes with the CPU twins (kernels/cpu) in f32, widening bf16 inputs and rounding
 * outputs to bf16 as the GPU stores them. Stream capture records launches and replays them
 * at cudaGraphLaunch, reading the buffers as they are then, like a real graph. A violation
 * prints what and aborts. Environment: KV_CUDA_MOCK_DEVICES (default 1),
 * KV_CUDA_MOCK_CAPTURE_FAIL=1 (every capture fails: the engine's fallback path).
 *
 * CUDA IPC between processes: cudaMalloc memory is a memfd mapped MAP_SHARED (its fd kept
 * open until cudaFree), so another process can map the same pages. cudaIpcGetMemHandle
 * puts the exporter's pid, the fd number, the size and the memfd's inode in the handle;
 * cudaIpcOpenMemHandle in another process opens /proc/<pid>/fd/<fd> (same inode, or the
 * fd was reused) and maps it as "imported" device memory, which copies and launchers take
 * like any device memory and which only cudaIpcCloseMemHandle releases. Opening a handle
 * of one's own process gives "invalid device context", one whose exporter has freed it or
 * exited cudaErrorInvalidValue (error codes, as on a GPU, not aborts); the runtime API's
 * name for the first, the driver's CUDA_ERROR_INVALID_CONTEXT, is cudaErrorDeviceUninitialized. */
#include <assert.h>
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cpu_kernels.h"
#include "cuda_kernels.h"
#include "dtype_convert.h"
#include "cuda_kv_quant.h"
#include "kv_quant.h"

/* ---- allocations --------------------------------------------------------------------- */

/* Every "kernel" here widens its bf16 operands into fresh f32 buffers (a weight matrix: tens
 * of MB). glibc maps blocks that large anew each time and unmaps them on free, so each
 * launch paid its size in page faults: 40 of test_engine_cuda_mock's 56 s were the kernel
 * zeroing pages. Keeping them in the heap makes that 15 s. */
__attribute__((constructor)) static void mock_malloc_keeps_big_blocks(void)
{
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

/* Device memory (cudaMalloc) is a shared mapping of a memfd: fd open, map_n bytes mapped;
 * imported: mapped from another process by cudaIpcOpenMemHandle (fd -1). Host memory
 * (cudaHostAlloc) is aligned_alloc'd (fd -1, map_n 0). */
typedef struct mock_alloc { char *p; size_t n; int device; int fd; size_t map_n; int imported; } mock_alloc;
static mock_alloc g_allocs[4096];
static int g_n_allocs;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda_mock: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static mock_alloc *find_alloc(const void *p)
{
    for (int i = 0; i < g_n_allocs; i++)
        if ((const char *)p >= g_allocs[i].p && (const char *)p < g_allocs[i].p + g_allocs[i].n)
            return &g_allocs[i];
    return NULL;
}

/* p must be device memory with `bytes` bytes from p on. */
static void dev_check(const void *p, size_t bytes, const char *what)
{
    mock_alloc *a = find_alloc(p);
    if (!a || !a->device)
        die("%s: %p is not device memory", what, p);
    if ((const char *)p + bytes > a->p + a->n)
        die("%s: %zu bytes from %p run %zu bytes past the end of its allocation", what, bytes, p,
            (size_t)((const char *)p + bytes - (a->p + a->n)));
}

static void host_check(const void *p, const char *what)
{
    mock_alloc *a = find_alloc(p);
    if (a && a->device)
        die("%s: %p is device memory where host memory belongs", what, p);
}

/* Bytes from p to the end of its (device) allocation. */
static size_t dev_room(const void *p)
{
    mock_alloc *a = find_alloc(p);
    if (!a || !a->device)
        die("%p is not device memory", p);
    return (size_t)(a->p + a->n - (const char *)p);
}

static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}

static cudaError_t mock_alloc_new(void **p, size_t n, int device)
{
    if (g_n_allocs == (int)(sizeof g_allocs / sizeof *g_allocs))
        die("too many allocations");
    int fd = -1;
    size_t sz, map_n = 0;
    if (device) { /* shareable with another process (cudaIpcGetMemHandle) */
        sz = map_n = page_round(n ? n : 1);
        fd = memfd_create("cuda_mock", MFD_CLOEXEC);
        if (fd < 0)
            return cudaErrorMemoryAllocation;
        void *m = ftruncate(fd, (off_t)sz) ? MAP_FAILED : mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return cudaErrorMemoryAllocation;
        }
        *p = m;
    } else {
        sz = (n + 255) & ~(size_t)255;
        if (!sz)
            sz = 256;
        *p = aligned_alloc(256, sz);
        if (!*p)
            return cudaErrorMemoryAllocation;
    }
    /* Garbage, like fresh GPU memory: a read of something never written shows as NaN. */
    memset(*p, 0xFF, sz);
    g_allocs[g_n_allocs++] = (mock_alloc){*p, n ? n : 1, device, fd, map_n, 0};
    return cudaSuccess;
}

static cudaError_t mock_free(void *p, int device)
{
    if (!p)
        return cudaSuccess;
    for (int i = 0; i < g_n_allocs; i++)
        if (g_allocs[i].p == p) {
            if (g_allocs[i].device != device)
                die("free of %p with the wrong function", p);
            if (g_allocs[i].imported)
                die("cudaFree of %p, which cudaIpcOpenMemHandle mapped: the wrong function (cudaIpcCloseMemHandle)", p);
            if (device) {
                munmap(p, g_allocs[i].map_n);
                close(g_allocs[i].fd);
            } else {
                free(p);
            }
            g_allocs[i] = g_allocs[--g_n_allocs];
            return cudaSuccess;
        }
    die("free of %p, which is not an allocation", p);
    return cudaErrorInvalidValue;
}

/* ---- capture and graphs ------------------------------------------------------------------ */

typedef void (*op_fn)(const void *args);
typedef struct mock_op { op_fn run; void *args; } mock_op;
struct CUgraph_st { mock_op *ops; int n, cap; };
struct CUgraphExec_st { mock_op *ops; int n; };
struct CUstream_st { int id; };
struct CUevent_st { int id; double t; }; /* t: when recorded (work runs synchronously here) */

static struct CUgraph_st *g_capture; /* non-NULL while a stream captures */
static int g_capture_invalid;

/* Runs the op now, or records it (with a copy of its arguments) while capturing. */
static void submit(op_fn run, const void *args, size_t size)
{
    if (!g_capture) {
        run(args);
        return;
    }
    struct CUgraph_st *g = g_capture;
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        g->ops = realloc(g->ops, (size_t)g->cap * sizeof *g->ops);
    }
    void *copy = malloc(size);
    memcpy(copy, args, size);
    g->ops[g->n++] = (mock_op){run, copy};
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode)
{
    (void)stream, (void)mode;
    const char *f = getenv("KV_CUDA_MOCK_CAPTURE_FAIL");
    if (f && !strcmp(f, "1"))
        return cudaErrorStreamCaptureUnsupported;
    if (g_capture)
        die("nested capture");
    g_capture = calloc(1, sizeof *g_capture);
    g_capture_invalid = 0;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph)
{
    (void)stream;
    *graph = g_capture;
    g_capture = NULL;
    if (g_capture_invalid) {
        cudaGraphDestroy(*graph);
        *graph = NULL;
        return cudaErrorStreamCaptureInvalidated;
    }
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
    if (!graph)
        return cudaSuccess;
    for (int i = 0; i < graph->n; i++)
        free(graph->ops[i].args);
    free(graph->ops);
    free(graph);
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags)
{
    (void)flags;
    struct CUgraphExec_st *x = calloc(1, sizeof *x);
    x->n = graph->n;
    x->ops = malloc(sizeof *x->ops * (size_t)(graph->n ? graph->n : 1));
    for (int i = 0; i < graph->n; i++)
        x->ops[i] = graph->ops[i], graph->ops[i].args = NULL; /* the exec takes the arguments */
    graph->n = 0;
    *exec = x;
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream)
{
    (void)stream;
    if (g_capture)
        die("graph launch while capturing");
    for (int i = 0; i < exec->n; i++)
        exec->ops[i].run(exec->ops[i].args);
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
    if (!exec)
        return cudaSuccess;
    for (int i = 0; i < exec->n; i++)
        free(exec->ops[i].args);
    free(exec->ops);
    free(exec);
    return cudaSuccess;
}

/* ---- runtime --------------------------------------------------------------------------- */

/* A call a capture cannot hold (a copy, a wait): invalidates it, as on a GPU. */
static int capture_breaks(void)
{
    if (g_capture) {
        g_capture_invalid = 1;
        return 1;
    }
    return 0;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    if (capture_breaks())
        return cudaErrorStreamCaptureUnsupported;
    return mock_alloc_new(p, n, 1);
}
cudaError_t cudaFree(void *p) { return mock_free(p, 1); }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    (void)flags;
    return mock_alloc_new(p, n, 0);
}
cudaError_t cudaFreeHost(void *p) { return mock_free(p, 0); }
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    *free_b = (size_t)70 << 30;
    *total_b = (size_t)80 << 30;
    return cudaSuccess;
}

/* ---- IPC (see the header comment) ---- */

#define MOCK_IPC_MAGIC 0x4350496b636f6d6bULL /* "kmockIPC" */
typedef struct mock_ipc {
    uint64_t magic;
    int32_t pid, fd; /* the exporter and its fd of the memfd */
    uint64_t size;   /* the allocation's size (cudaMalloc's n) */
    uint64_t ino, dev; /* the memfd: tells a reused fd number from the allocation's */
} mock_ipc;
static_assert(sizeof(mock_ipc) <= sizeof(((cudaIpcMemHandle_t *)0)->reserved), "mock IPC handle too large");

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *handle, void *devPtr)
{
    mock_alloc *a = find_alloc(devPtr);
    if (!a || !a->device || a->p != (char *)devPtr)
        die("cudaIpcGetMemHandle: %p is not the base of a device allocation", devPtr);
    if (a->imported)
        die("cudaIpcGetMemHandle: %p was imported from another process (cudaIpcOpenMemHandle)", devPtr);
    struct stat st;
    if (fstat(a->fd, &st))
        die("cudaIpcGetMemHandle: fstat of the allocation's memfd failed");
    mock_ipc h = {MOCK_IPC_MAGIC, (int32_t)getpid(), a->fd, a->n, (uint64_t)st.st_ino, (uint64_t)st.st_dev};
    memset(handle, 0, sizeof *handle);
    memcpy(handle->reserved, &h, sizeof h);
    return cudaSuccess;
}

cudaError_t cudaIpcOpenMemHandle(void **devPtr, cudaIpcMemHandle_t handle, unsigned int flags)
{
    mock_ipc h;
    memcpy(&h, handle.reserved, sizeof h);
    if (!devPtr || h.magic != MOCK_IPC_MAGIC || h.size == 0 || (flags & ~(unsigned)cudaIpcMemLazyEnablePeerAccess))
        return cudaErrorInvalidValue;
    if (h.pid == (int32_t)getpid())
        return cudaErrorDeviceUninitialized; /* 201, "invalid device context": CUDA does not open a
                                              * process's own handles (CUDA_ERROR_INVALID_CONTEXT) */
    if (g_n_allocs == (int)(sizeof g_allocs / sizeof *g_allocs))
        die("too many allocations");
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)h.pid, (int)h.fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) /* the exporter freed it or exited */
        return cudaErrorInvalidValue;
    struct stat st;
    size_t map_n = page_round(h.size);
    if (fstat(fd, &st) || (uint64_t)st.st_ino != h.ino || (uint64_t)st.st_dev != h.dev ||
        (uint64_t)st.st_size < map_n) { /* the fd number now names something else */
        close(fd);
        return cudaErrorInvalidValue;
    }
    void *m = mmap(NULL, map_n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd); /* the mapping keeps the memory */
    if (m == MAP_FAILED)
        return cudaErrorMemoryAllocation;
    g_allocs[g_n_allocs++] = (mock_alloc){m, (size_t)h.size, 1, -1, map_n, 1};
    *devPtr = m;
    return cudaSuccess;
}

cudaError_t cudaIpcCloseMemHandle(void *devPtr)
{
    for (int i = 0; i < g_n_allocs; i++)
        if (g_allocs[i].p == devPtr) {
            if (!g_allocs[i].imported)
                die("cudaIpcCloseMemHandle of %p, which cudaIpcOpenMemHandle did not map", devPtr);
            munmap(devPtr, g_allocs[i].map_n);
            g_allocs[i] = g_allocs[--g_n_allocs];
            return cudaSuccess;
        }
    die("cudaIpcCloseMemHandle of %p, which is not an imported allocation", devPtr);
    return cudaErrorInvalidValue;
}

static void copy_checks(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    switch (kind) {
    case cudaMemcpyHostToDevice: dev_check(dst, n, "memcpy H2D dst"); host_check(src, "memcpy H2D src"); break;
    case cudaMemcpyDeviceToHost: dev_check(src, n, "memcpy D2H src"); host_check(dst, "memcpy D2H dst"); break;
    case cudaMemcpyDeviceToDevice: dev_check(src, n, "memcpy D2D src"); dev_check(dst, n, "memcpy D2D dst"); break;
    default: die("memcpy kind %d", (int)kind);
    }
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    (void)s;
    if (capture_breaks())
        return cudaErrorStreamCaptureUnsupported;
    copy_checks(dst, src, n, kind);
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    return cudaMemcpyAsync(dst, src, n, kind, NULL);
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    (void)s;
    if (capture_breaks())
        return cudaErrorStreamCaptureUnsupported;
    dev_check(p, n, "memset");
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n) { return cudaMemsetAsync(p, v, n, NULL); }

static int g_ids;
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    (void)flags;
    *s = malloc(sizeof **s);
    (*s)->id = ++g_ids;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    return capture_breaks() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s)
{
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    (void)flags;
    *e = calloc(1, sizeof **e);
    (*e)->id = ++g_ids;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    *ms = (float)((end->t - start->t) * 1e3);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    (void)e;
    return capture_breaks() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
/* Work runs at enqueue here: every recorded event has completed. */
cudaError_t cudaEventQuery(cudaEvent_t e)
{
    (void)e;
    return capture_breaks() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return capture_breaks() ? cudaErrorStreamCaptureUnsupported : cudaSuccess; }
cudaError_t cudaSetDevice(int d)
{
    (void)d;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "mock error"; }
const char *cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorMock"; }

/* ---- kernels/cuda: devices and helpers -------------------------------------------------- */

size_t kv_cuda_dtype_size(kv_cuda_dtype dt) { return dt == KV_CUDA_F32 ? 4 : dt == KV_CUDA_BF16 || dt == KV_CUDA_F16 ? 2 : 0; }
const char *kv_cuda_dtype_name(kv_cuda_dtype dt) { return dt == KV_CUDA_F32 ? "f32" : dt == KV_CUDA_BF16 ? "bf16" : "f16"; }

static int n_devices(void)
{
    const char *s = getenv("KV_CUDA_MOCK_DEVICES");
    return s ? atoi(s) : 1;
}

int kv_cuda_device_count(int *n, kv_err *err)
{
    *n = n_devices();
    if (!*n)
        kv_err_set(err, KV_OK, "cuda: mock without devices: 0 devices");
    return KV_OK;
}

int kv_cuda_device_info(int dev, char *name, size_t cap, size_t *mem_bytes, int *sm_major, int *sm_minor, kv_err *err)
{
    if (dev < 0 || dev >= n_devices())
        return kv_err_set(err, KV_EIO, "cuda: mock: no device %d", dev);
    if (name && cap)
        snprintf(name, cap, "mock GPU");
    if (mem_bytes)
        *mem_bytes = (size_t)80 << 30;
    if (sm_major)
        *sm_major = 9;
    if (sm_minor)
        *sm_minor = 0;
    return KV_OK;
}

int kv_cuda_device_sm_count(int dev, int *n, kv_err *err)
{
    (void)dev, (void)err;
    *n = 132;
    return KV_OK;
}

/* "mockgpu-uuid" + the device index: one per device, the same in every process. */
int kv_cuda_device_uuid(int dev, unsigned char uuid[16], kv_err *err)
{
    if (dev < 0 || dev >= n_devices())
        return kv_err_set(err, KV_EIO, "cuda: mock: no device %d", dev);
    memcpy(uuid, "mockgpu-uuid", 12);
    uint32_t d = (uint32_t)dev;
    memcpy(uuid + 12, &d, 4);
    return KV_OK;
}

int kv_cuda_blas_create(void **handle, kv_err *err)
{
    (void)err;
    *handle = malloc(1);
    return KV_OK;
}
void kv_cuda_blas_destroy(void *handle) { free(handle); }
int kv_cuda_blas_set_workspace(void *handle, void *stream, void *ws, size_t bytes, kv_err *err)
{
    (void)handle, (void)stream, (void)err;
    dev_check(ws, bytes, "blas workspace");
    return KV_OK;
}

/* Same formulas as cuda_attention_decode.cu. */
static int pick_gmax(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }
int kv_cuda_decode_splits(int n_seqs, int n_heads, int n_kv_heads, int max_seq_len, int n_sms)
{
    if (n_seqs <= 0 || n_kv_heads <= 0 || n_heads < n_kv_heads || max_seq_len <= 0 || n_sms <= 0)
        return 1;
    int group = n_heads / n_kv_heads, gm = pick_gmax(group);
    long long ctas = (long long)n_seqs * n_kv_heads * ((group + gm - 1) / gm);
    long long want = (2LL * n_sms + ctas - 1) / ctas;
    long long by_len = ((long long)max_seq_len + 255) / 256;
    long long s = want < by_len ? want : by_len;
    if (s > KV_CUDA_DECODE_MAX_SPLITS)
        s = KV_CUDA_DECODE_MAX_SPLITS;
    return s < 1 ? 1 : (int)s;
}
size_t kv_cuda_decode_workspace_bytes(int n_seqs, int n_heads, int head_dim, int n_splits)
{
    if (n_splits <= 1 || n_seqs <= 0 || n_heads <= 0 || head_dim <= 0)
        return 0;
    size_t parts = (size_t)n_seqs * (size_t)n_heads * (size_t)n_splits;
    return ((parts * (size_t)head_dim * sizeof(float) + 255) & ~(size_t)255) + parts * sizeof(float);
}

/* ---- element conversion -------------------------------------------------------------------- */

static void need_dtype(kv_cuda_dtype dt)
{
    if (dt != KV_CUDA_F32 && dt != KV_CUDA_BF16)
        die("dtype %d is not used by the engine", (int)dt);
}

/* n values of dt at p as a fresh f32 array. */
static float *widen(const void *p, kv_cuda_dtype dt, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    if (!f)
        die("out of memory widening %zu values", n);
    f[0] = 0.0f; /* n may be 0; keeps the compiler's initialisation analysis happy */
    if (dt == KV_CUDA_F32)
        memcpy(f, p, n * sizeof *f);
    else
        for (size_t i = 0; i < n; i++)
            f[i] = kv_bf16_to_f32_1(((const uint16_t *)p)[i]);
    return f;
}

/* Read-only view as f32: the memory itself for f32 (nothing to free), else a widened copy
 * in *owned (free it). */
static const float *view(const void *p, kv_cuda_dtype dt, size_t n, float **owned)
{
    *owned = NULL;
    if (dt == KV_CUDA_F32)
        return p;
    return *owned = widen(p, dt, n);
}

static void narrow(void *p, kv_cuda_dtype dt, const float *f, size_t n)
{
    if (dt == KV_CUDA_F32)
        memcpy(p, f, n * sizeof *f);
    else
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)p)[i] = kv_f32_to_bf16_1(f[i]);
}

/* ---- launchers ----------------------------------------------------------------------------- */

typedef struct a_convert { void *dst; kv_cuda_dtype ddt; const void *src; kv_cuda_dtype sdt; size_t n; } a_convert;
static void run_convert(const void *p)
{
    const a_convert *a = p;
    float *f = widen(a->src, a->sdt, a->n);
    narrow(a->dst, a->ddt, f, a->n);
    free(f);
}
int kv_cuda_convert(void *dst, kv_cuda_dtype dst_dt, const void *src, kv_cuda_dtype src_dt, size_t n, void *stream,
                    kv_err *err)
{
    (void)stream, (void)err;
    need_dtype(dst_dt), need_dtype(src_dt);
    dev_check(dst, n * kv_cuda_dtype_size(dst_dt), "convert dst");
    dev_check(src, n * kv_cuda_dtype_size(src_dt), "convert src");
    a_convert a = {dst, dst_dt, src, src_dt, n};
    submit(run_convert, &a, sizeof a);
    return KV_OK;
}

typedef struct a_embed { void *out; const void *table; const int32_t *tokens; int n, dim, vocab; kv_cuda_dtype dt; } a_embed;
static void run_embed(const void *p)
{
    const a_embed *a = p;
    size_t es = kv_cuda_dtype_size(a->dt), row = (size_t)a->dim * es;
    for (int i = 0; i < a->n; i++) {
        int t = a->tokens[i];
        if (t < 0 || t >= a->vocab)
            die("embed: token %d outside the vocabulary %d", t, a->vocab);
        memcpy((char *)a->out + (size_t)i * row, (const char *)a->table + (size_t)t * row, row);
    }
}
int kv_cuda_embed(void *out, const void *table, const int32_t *tokens, int n, int dim, int vocab, kv_cuda_dtype dt,
                  void *stream, kv_err *err)
{
    (void)stream, (void)err;
    need_dtype(dt);
    size_t es = kv_cuda_dtype_size(dt);
    dev_check(out, (size_t)n * dim * es, "embed out");
    dev_check(table, (size_t)vocab * dim * es, "embed table");
    dev_check(tokens, (size_t)n * 4, "embed tokens");
    a_embed a = {out, table, tokens, n, dim, vocab, dt};
    submit(run_embed, &a, sizeof a);
    return KV_OK;
}

typedef struct a_norm { void *out, *x; const void *y, *w; int rows, dim; float eps; kv_cuda_dtype dt; } a_norm;
static void run_norm(const void *p)
{
    const a_norm *a = p;
    size_t n = (size_t)a->rows * a->dim;
    float *x = widen(a->x, a->dt, n), *w = widen(a->w, a->dt, (size_t)a->dim), *o = malloc(n * sizeof *o);
    if (a->y) { /* fused residual: x += y, stored (rounded) in dt, then normed as stored */
        float *y = widen(a->y, a->dt, n);
        kc_add(x, y, n);
        narrow(a->x, a->dt, x, n);
        free(x);
        x = widen(a->x, a->dt, n);
        free(y);
    }
    kc_rmsnorm(o, x, w, a->rows, a->dim, a->eps);
    narrow(a->out, a->dt, o, n);
    free(x), free(w), free(o);
}
int kv_cuda_rmsnorm(void *out, const void *x, const void *weight, int rows, int dim, float eps, kv_cuda_dtype dt,
                    void *stream, kv_err *err)
{
    (void)stream, (void)err;
    need_dtype(dt);
    size_t bytes = (size_t)rows * dim * kv_cuda_dtype_size(dt);
    dev_check(out, bytes, "rmsnorm out"), dev_check(x, bytes, "rmsnorm x");
    dev_check(weight, (size_t)dim * kv_cuda_dtype_size(dt), "rmsnorm weight");
    a_norm a = {out, (void *)x, NULL, weight, rows, dim, eps, dt};
    submit(run_norm, &a, sizeof a);
    return KV_OK;
}
int kv_cuda_add_rmsnorm(void *out, void *x, const void *y, const void *weight, int rows, int dim, float eps,
                        kv_cuda_dtype dt, void *stream, kv_err *err)
{
    (void)stream;
    need_dtype(dt);
    if (out == x)
        return kv_err_set(err, KV_EINVAL, "cuda add_rmsnorm: out must not alias x");
    size_t bytes = (size_t)rows * dim * kv_cuda_dtype_size(dt);
    dev_check(out, bytes, "add_rmsnorm out"), dev_check(x, bytes, "add_rmsnorm x"), dev_check(y, bytes, "add_rmsnorm y");
    dev_check(weight, (size_t)dim * kv_cuda_dtype_size(dt), "add_rmsnorm weight");
    a_norm a = {out, x, y, weight, rows, dim, eps, dt};
    submit(run_norm, &a, sizeof a);
    return KV_OK;
}

typedef struct a_qkv {
    void *q, *k, *v; const void *qkv; int n, heads, kv_heads, hd; const int32_t *pos; const float *inv; kv_cuda_dtype dt;
} a_qkv;
static void run_qkv_rope(const void *p)
{
    const a_qkv *a = p;
    size_t qd = (size_t)a->heads * a->hd, kvd = (size_t)a->kv_heads * a->hd, n = (size_t)a->n;
    float *qkv = widen(a->qkv, a->dt, n * (qd + 2 * kvd)), *q = malloc(sizeof *q * n * qd),
          *k = malloc(sizeof *k * n * kvd), *v = malloc(sizeof *v * n * kvd);
    if (!q || !k || !v)
        die("out of memory in qkv_rope");
    kc_qkv_rope(q, k, v, qkv, a->n, a->heads, a->kv_heads, a->hd, a->pos, a->inv);
    narrow(a->q, a->dt, q, n * qd), narrow(a->k, a->dt, k, n * kvd), narrow(a->v, a->dt, v, n * kvd);
    free(qkv), free(q), free(k), free(v);
}
int kv_cuda_qkv_rope(void *q, void *k, void *v, const void *qkv, int n_tokens, int n_heads, int n_kv_heads,
                     int head_dim, const int32_t *pos, const float *inv_freq, kv_cuda_dtype dt, void *stream,
                     kv_err *err)
{
    (void)stream, (void)err;
    need_dtype(dt);
    size_t es = kv_cuda_dtype_size(dt), qb = (size_t)n_tokens * n_heads * head_dim * es,
           kvb = (size_t)n_tokens * n_kv_heads * head_dim * es;
    dev_check(qkv, qb + 2 * kvb, "qkv_rope qkv");
    dev_check(q, qb, "qkv_rope q"), dev_check(k, kvb, "qkv_rope k"), dev_check(v, kvb, "qkv_rope v");
    dev_check(pos, (size_t)n_tokens * 4, "qkv_rope positions");
    dev_check(inv_freq, (size_t)head_dim / 2 * 4, "qkv_rope inv_freq");
    a_qkv a = {q, k, v, qkv, n_tokens, n_heads, n_kv_heads, head_dim, pos, inv_freq, dt};
    submit(run_qkv_rope, &a, sizeof a);
    return KV_OK;
}

typedef struct a_swr { void *out; const void *gu; int rows, ff; kv_cuda_dtype dt; } a_swr;
static void run_swiglu_rows(const void *p)
{
    const a_swr *a = p;
    size_t n = (size_t)a->rows * a->ff;
    float *gu = widen(a->gu, a->dt, 2 * n), *out = malloc(sizeof *out * (n ? n : 1));
    if (!out)
        die("out of memory in swiglu_rows");
    kc_swiglu_rows(out, gu, a->rows, a->ff);
    narrow(a->out, a->dt, out, n);
    free(gu), free(out);
}
int kv_cuda_swiglu_rows(void *out, const void *gu, int rows, int ff, kv_cuda_dtype dt, void *stream, kv_err *err)
{
    (void)stream, (void)err;
    need_dtype(dt);
    size_t bytes = (size_t)rows * ff * kv_cuda_dtype_size(dt);
    dev_check(out, bytes, "swiglu_rows out"), dev_check(gu, 2 * bytes, "swiglu_rows gate|up");
    a_swr a = {out, gu, rows, ff, dt};
    submit(run_swiglu_rows, &a, sizeof a);
    return KV_OK;
}

/* ---- paged KV ---- */

static void kv_check(const kv_cuda_paged_kv *kv)
{
    need_dtype(kv->dtype);
    dev_check(kv->pool, kv_cuda_dtype_size(kv->dtype), "kv pool");
    if (kv->v_offset * 2 > kv->block_stride)
        die("kv: v_offset %zu beyond half the block stride %zu", kv->v_offset, kv->block_stride);
}

/* Address of (pos's block, slot), checked to lie inside the pool's allocation. */
static char *kv_row(const kv_cuda_paged_kv *kv, const int32_t *table, int pos, int v)
{
    size_t es = kv_cuda_dtype_size(kv->dtype), row = (size_t)kv->n_kv_heads * kv->head_dim;
    int32_t b = table[pos / kv->block_size];
    if (b < 0)
        die("kv: negative block id %d for position %d", b, pos);
    char *p = (char *)kv->pool +
              ((size_t)b * kv->block_stride + (v ? kv->v_offset : 0) + (size_t)(pos % kv->block_size) * row) * es;
    dev_check(p, row * es, "kv row");
    return p;
}

typedef struct a_kvw {
    kv_cuda_paged_kv kv; const int32_t *tables; int stride; const int32_t *positions; int start, n; const void *k, *v;
} a_kvw;
static void run_kv_write(const void *p)
{
    const a_kvw *a = p;
    size_t es = kv_cuda_dtype_size(a->kv.dtype), row = (size_t)a->kv.n_kv_heads * a->kv.head_dim * es;
    for (int r = 0; r < a->n; r++) {
        int pos = a->positions ? a->positions[r] : a->start + r;
        if (pos < 0)
            continue;
        const int32_t *table = a->tables + (size_t)r * (size_t)a->stride;
        if (a->positions && pos / a->kv.block_size >= a->stride)
            die("kv_write_decode: position %d beyond the table stride %d", pos, a->stride);
        memcpy(kv_row(&a->kv, table, pos, 0), (const char *)a->k + (size_t)r * row, row);
        memcpy(kv_row(&a->kv, table, pos, 1), (const char *)a->v + (size_t)r * row, row);
    }
}
int kv_cuda_kv_write(const kv_cuda_paged_kv *kv, const int32_t *block_table, int start, int n, const void *k,
                     const void *v, void *stream, kv_err *err)
{
    (void)stream, (void)err;
    kv_check(kv);
    size_t bytes = (size_t)n * kv->n_kv_heads * kv->head_dim * kv_cuda_dtype_size(kv->dtype);
    dev_check(k, bytes, "kv_write k"), dev_check(v, bytes, "kv_write v");
    dev_check(block_table, (size_t)((start + n + kv->block_size - 1) / kv->block_size) * 4, "kv_write table");
    a_kvw a = {*kv, block_table, 0, NULL, start, n, k, v};
    submit(run_kv_write, &a, sizeof a);
    return KV_OK;
}
int kv_cuda_kv_write_decode(const kv_cuda_paged_kv *kv, const int32_t *block_tables, int table_stride,
                            const int32_t *positions, int n_seqs, const void *k, const void *v, void *stream,
                            kv_err *err)
{
    (void)stream, (void)err;
    kv_check(kv);
    size_t bytes = (size_t)n_seqs * kv->n_kv_heads * kv->head_dim * kv_cuda_dtype_size(kv->dtype);
    dev_check(k, bytes, "kv_write_decode k"), dev_check(v, bytes, "kv_write_decode v");
    dev_check(block_tables, (size_t)n_seqs * table_stride * 4, "kv_write_decode tables");
    dev_check(positions, (size_t)n_seqs * 4, "kv_write_decode positions");
    a_kvw a = {*kv, block_tables, table_stride, positions, 0, n_seqs, k, v};
    submit(run_kv_write, &a, sizeof a);
    return KV_OK;
}

/* The pool from kv->pool to the end of its allocation as f32 (the CPU twins read it). */
static kc_paged_kv widen_pool(const kv_cuda_paged_kv *kv, float **mem)
{
    size_t es = kv_cuda_dtype_size(kv->dtype), n = dev_room(kv->pool) / es;
    kc_paged_kv c = {(float *)view(kv->pool, kv->dtype, n, mem), kv->block_stride, kv->v_offset, kv->block_size,
                     kv->n_kv_heads, kv->head_dim};
    return c;
}

/* Every block a sequence of len tokens reads lies inside the pool. */
static void table_check(const kv_cuda_paged_kv *kv, const int32_t *table, int len)
{
    for (int pos = 0; pos < len; pos += kv->block_size) {
        kv_row(kv, table, pos, 0);
        kv_row(kv, table, pos, 1);
    }
}

typedef struct a_att {
    void *out; const void *q; kv_cuda_paged_kv kv; const int32_t *tables; int stride; const int32_t *lens;
    int start, n, heads;
} a_att;
static void run_prefill(const void *p)
{
    const a_att *a = p;
    size_t n = (size_t)a->n * a->heads * a->kv.head_dim;
    table_check(&a->kv, a->tables, a->start + a->n);
    float *mem = NULL, *q = widen(a->q, a->kv.dtype, n), *o = malloc(n * sizeof *o);
    kc_paged_kv kv = widen_pool(&a->kv, &mem);
    kc_attention_prefill(o, q, &kv, a->tables, a->start, a->n, a->heads);
    narrow(a->out, a->kv.dtype, o, n);
    free(mem), free(q), free(o);
}
int kv_cuda_attention_prefill(void *out, const void *q, const kv_cuda_paged_kv *kv, const int32_t *block_table,
                              int start, int n, int n_heads, void *stream, kv_err *err)
{
    (void)stream;
    kv_check(kv);
    if (n_heads % kv->n_kv_heads)
        return kv_err_set(err, KV_EINVAL, "mock prefill attention: heads");
    size_t bytes = (size_t)n * n_heads * kv->head_dim * kv_cuda_dtype_size(kv->dtype);
    dev_check(out, bytes, "prefill out"), dev_check(q, bytes, "prefill q");
    dev_check(block_table, (size_t)((start + n + kv->block_size - 1) / kv->block_size) * 4, "prefill table");
    a_att a = {out, q, *kv, block_table, 0, NULL, start, n, n_heads};
    submit(run_prefill, &a, sizeof a);
    return KV_OK;
}

static void run_decode(const void *p)
{
    const a_att *a = p;
    size_t hd = (size_t)a->kv.head_dim, per = (size_t)a->heads * hd, n = (size_t)a->n * per;
    float *mem = NULL, *q = widen(a->q, a->kv.dtype, n), *o = calloc(n, sizeof *o);
    kc_paged_kv kv = widen_pool(&a->kv, &mem);
    for (int s = 0; s < a->n; s++) {
        int len = a->lens[s];
        if (len <= 0) /* padding row: the GPU kernel writes zeros */
            continue;
        const int32_t *table = a->tables + (size_t)s * (size_t)a->stride;
        if ((len + a->kv.block_size - 1) / a->kv.block_size > a->stride)
            die("decode attention: length %d beyond the table stride %d", len, a->stride);
        table_check(&a->kv, table, len);
        kc_attention_decode(o + (size_t)s * per, q + (size_t)s * per, &kv, &table, &len, 1, a->heads);
    }
    narrow(a->out, a->kv.dtype, o, n);
    free(mem), free(q), free(o);
}
int kv_cuda_attention_decode(void *out, const void *q, const kv_cuda_paged_kv *kv, const int32_t *block_tables,
                             int table_stride, const int32_t *seq_lens, int n_seqs, int n_heads, int n_splits,
                             void *workspace, size_t workspace_bytes, void *stream, kv_err *err)
{
    (void)stream;
    kv_check(kv);
    if (n_splits < 1 || n_splits > KV_CUDA_DECODE_MAX_SPLITS || n_heads % kv->n_kv_heads)
        return kv_err_set(err, KV_EINVAL, "mock decode attention: %d splits", n_splits);
    size_t need = kv_cuda_decode_workspace_bytes(n_seqs, n_heads, kv->head_dim, n_splits);
    if (need > 0 && (!workspace || workspace_bytes < need))
        return kv_err_set(err, KV_EINVAL, "mock decode attention: %zu bytes of workspace, need %zu", workspace_bytes,
                          need);
    if (need)
        dev_check(workspace, need, "decode workspace");
    size_t bytes = (size_t)n_seqs * n_heads * kv->head_dim * kv_cuda_dtype_size(kv->dtype);
    dev_check(out, bytes, "decode out"), dev_check(q, bytes, "decode q");
    dev_check(block_tables, (size_t)n_seqs * table_stride * 4, "decode tables");
    dev_check(seq_lens, (size_t)n_seqs * 4, "decode lengths");
    a_att a = {out, q, *kv, block_tables, table_stride, seq_lens, 0, n_seqs, n_heads};
    submit(run_decode, &a, sizeof a);
    return KV_OK;
}

/* ---- KV transfer checks ---- */

typedef struct a_bhash { uint32_t *out; const char *base; size_t block_bytes; const int32_t *blocks; int n; } a_bhash;
static void run_block_hash(const void *p)
{
    const a_bhash *a = p;
    for (int i = 0; i < a->n; i++) {
        int32_t b = a->blocks[i];
        if (b < 0)
            die("block_hash: negative block id %d at %d", b, i);
        const char *blk = a->base + (size_t)b * a->block_bytes;
        dev_check(blk, a->block_bytes, "block_hash block");
        a->out[i] = kc_block_hash(blk, a->block_bytes);
    }
}
int kv_cuda_block_hash(uint32_t *out, const void *base, size_t block_bytes, const int32_t *blocks, int n,
                       void *stream, kv_err *err)
{
    (void)stream;
    if (n < 0 || !base || !out || !blocks || block_bytes == 0 || block_bytes % 16)
        return kv_err_set(err, KV_EINVAL, "mock block_hash: bad arguments (n %d, block_bytes %zu: a multiple of 16)",
                          n, block_bytes);
    if (n == 0)
        return KV_OK;
    if (n > 65535)
        return kv_err_set(err, KV_EINVAL, "mock block_hash: %d blocks in one call (at most 65535)", n);
    dev_check(out, (size_t)n * 4, "block_hash out");
    dev_check(blocks, (size_t)n * 4, "block_hash blocks");
    dev_check(base, 1, "block_hash base");
    a_bhash a = {out, base, block_bytes, blocks, n};
    submit(run_block_hash, &a, sizeof a);
    return KV_OK;
}

/* ---- sampling ---- */

typedef struct a_sample { int32_t *ids; const void *logits; int rows, vocab; kv_cuda_dtype dt;
                          const kv_cuda_sample_params *params; } a_sample;
static void run_sample(const void *p)
{
    const a_sample *a = p;
    float *owned = NULL;
    const float *x = view(a->logits, a->dt, (size_t)a->rows * a->vocab, &owned);
    kc_prob_id *cands = malloc(sizeof *cands * (size_t)a->vocab);
    if (!cands)
        die("out of memory sampling");
    for (int r = 0; r < a->rows; r++) {
        const kv_cuda_sample_params *ps = &a->params[r];
        kc_sample_params sp = {ps->temperature, ps->top_k, ps->top_p};
        const float *row = x + (size_t)r * a->vocab;
        a->ids[r] = kc_sample_fits(row, a->vocab, &sp, KV_CUDA_TOPK_MAX, cands)
                        ? kc_sample(row, a->vocab, &sp, ps->u, cands)
                        : KV_CUDA_SAMPLE_ON_HOST; /* as the kernel: past its candidate cap */
    }
    free(cands);
    free(owned);
}
int kv_cuda_sample(int32_t *ids, const void *logits, int rows, int vocab, kv_cuda_dtype dt,
                   const kv_cuda_sample_params *params, void *stream, kv_err *err)
{
    (void)stream;
    if (rows < 0 || vocab <= 0)
        return kv_err_set(err, KV_EINVAL, "mock sample: bad shape rows=%d vocab=%d", rows, vocab);
    if (rows == 0)
        return KV_OK;
    need_dtype(dt);
    dev_check(ids, (size_t)rows * sizeof *ids, "sample ids");
    dev_check(logits, (size_t)rows * vocab * kv_cuda_dtype_size(dt), "sample logits");
    dev_check(params, (size_t)rows * sizeof *params, "sample params");
    a_sample a = {ids, logits, rows, vocab, dt, params};
    submit(run_sample, &a, sizeof a);
    return KV_OK;
}

/* ---- logprobs ---- */

static_assert(sizeof(kv_cuda_logprob_row) == sizeof(kc_logprobs), "kv_cuda_logprobs writes kc_logprobs rows");
typedef struct a_logprobs { kv_cuda_logprob_row *out; const void *logits; int rows, vocab; kv_cuda_dtype dt;
                            const int32_t *tokens, *n_top; } a_logprobs;
static void run_logprobs(const void *p)
{
    const a_logprobs *a = p;
    float *owned = NULL;
    const float *x = view(a->logits, a->dt, (size_t)a->rows * a->vocab, &owned);
    for (int r = 0; r < a->rows; r++) {
        if (a->n_top[r] < 0)
            continue;
        kc_logprobs lp;
        kc_logprobs_row(x + (size_t)r * a->vocab, a->vocab, a->tokens[r], a->n_top[r], &lp);
        memcpy(&a->out[r], &lp, sizeof lp);
    }
    free(owned);
}
int kv_cuda_logprobs(kv_cuda_logprob_row *out, const void *logits, int rows, int vocab, kv_cuda_dtype dt,
                     const int32_t *tokens, const int32_t *n_top, void *stream, kv_err *err)
{
    (void)stream;
    if (rows < 0 || vocab <= 0)
        return kv_err_set(err, KV_EINVAL, "mock logprobs: bad shape rows=%d vocab=%d", rows, vocab);
    if (rows == 0)
        return KV_OK;
    need_dtype(dt);
    dev_check(out, (size_t)rows * sizeof *out, "logprobs out");
    dev_check(logits, (size_t)rows * vocab * kv_cuda_dtype_size(dt), "logprobs logits");
    dev_check(tokens, (size_t)rows * sizeof *tokens, "logprobs tokens");
    dev_check(n_top, (size_t)rows * sizeof *n_top, "logprobs n_top");
    a_logprobs a = {out, logits, rows, vocab, dt, tokens, n_top};
    submit(run_logprobs, &a, sizeof a);
    return KV_OK;
}

/* ---- GEMM ---- */

typedef struct a_gemm { void *y; kv_cuda_dtype ydt; const void *x, *w; int m, n, k; kv_cuda_dtype dt; } a_gemm;
static void run_gemm(const void *p)
{
    const a_gemm *a = p;
    float *ox = NULL, *ow = NULL;
    const float *x = view(a->x, a->dt, (size_t)a->m * a->k, &ox), *w = view(a->w, a->dt, (size_t)a->n * a->k, &ow);
    float *y = malloc(sizeof *y * (size_t)a->m * a->n);
    /* Up to a decode graph's batch, the CPU engine's decode GEMV (batch-invariant, what the
     * worker tests compare against); above it, its prefill GEMM. */
    if (a->m <= 64)
        kc_matmul_gemv(y, x, w, a->m, a->n, a->k);
    else
        kc_matmul(y, x, w, a->m, a->n, a->k);
    narrow(a->y, a->ydt, y, (size_t)a->m * a->n);
    free(ox), free(ow), free(y);
}
int kv_cuda_gemm_out(void *handle, void *y, kv_cuda_dtype y_dt, const void *x, const void *w, int m, int n, int k,
                     kv_cuda_dtype dt, void *stream, kv_err *err)
{
    (void)stream;
    if (!handle || m < 0 || n <= 0 || k <= 0)
        return kv_err_set(err, KV_EINVAL, "mock gemm: bad call");
    need_dtype(dt), need_dtype(y_dt);
    if (y_dt != dt && y_dt != KV_CUDA_F32)
        return kv_err_set(err, KV_EINVAL, "mock gemm: output dtype");
    if (m == 0)
        return KV_OK;
    size_t es = kv_cuda_dtype_size(dt);
    dev_check(x, (size_t)m * k * es, "gemm x"), dev_check(w, (size_t)n * k * es, "gemm w");
    dev_check(y, (size_t)m * n * kv_cuda_dtype_size(y_dt), "gemm y");
    a_gemm a = {y, y_dt, x, w, m, n, k, dt};
    submit(run_gemm, &a, sizeof a);
    return KV_OK;
}
/* The own GEMV's contract (kernels/cuda/cuda_gemv.cu), computed like the GEMM here. */
int kv_cuda_gemv_fits(const void *x, const void *w, int m, int k, kv_cuda_dtype dt)
{
    return (dt == KV_CUDA_BF16 || dt == KV_CUDA_F16) && m >= 1 && m <= KV_CUDA_GEMV_MAX_ROWS && k > 0 &&
           k % 8 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0;
}
int kv_cuda_gemv(void *y, const void *x, const void *w, int m, int n, int k, kv_cuda_dtype dt, void *stream,
                 kv_err *err)
{
    (void)stream;
    if (n <= 0 || !kv_cuda_gemv_fits(x, w, m, k, dt))
        return kv_err_set(err, KV_EINVAL, "mock gemv: m=%d n=%d k=%d does not fit", m, n, k);
    need_dtype(dt);
    size_t es = kv_cuda_dtype_size(dt);
    dev_check(x, (size_t)m * k * es, "gemv x"), dev_check(w, (size_t)n * k * es, "gemv w");
    dev_check(y, (size_t)m * n * es, "gemv y");
    a_gemm a = {y, dt, x, w, m, n, k, dt};
    submit(run_gemm, &a, sizeof a);
    return KV_OK;
}
int kv_cuda_gemm(void *handle, void *y, const void *x, const void *w, int m, int n, int k, kv_cuda_dtype dt,
                 void *stream, kv_err *err)
{
    return kv_cuda_gemm_out(handle, y, dt, x, w, m, n, k, dt, stream, err);
}

/* ---- Quantized KV blocks (kernels/cuda/cuda_kv_quant.cu): their CPU twins ---- */

static void kvq_split(const kv_cuda_kvq_format *f, kq_format *kf, kq_regions *r)
{
    *kf = (kq_format){f->bits, f->block_size, f->n_kv_heads, f->head_dim, f->group, f->keys_per_token};
    *r = (kq_regions){f->k_codes, f->k_scales, f->k_zeros, f->v_codes, f->v_scales, f->v_zeros};
}

typedef struct a_kvq_quant { void *base; kv_cuda_kvq_format f; const float *k, *v; size_t stride; } a_kvq_quant;
static void run_kvq_quantize(const void *p)
{
    const a_kvq_quant *a = p;
    kq_format kf;
    kq_regions r;
    kvq_split(&a->f, &kf, &r);
    kq_quantize_block(a->base, &kf, &r, a->k, a->v, a->stride);
}
int kv_cuda_kvq_quantize_block(void *base, const kv_cuda_kvq_format *f, const float *k, const float *v,
                               size_t stride, void *stream, kv_err *err)
{
    (void)stream;
    int rc = kv_cuda_kvq_format_check(f, err);
    if (rc)
        return rc;
    if (!base || !k || !v || ((uintptr_t)base & 1))
        return kv_err_set(err, KV_EINVAL, "mock KV quantize: null or odd block pointer");
    size_t row = (size_t)f->n_kv_heads * (size_t)f->head_dim;
    if (stride < row)
        return kv_err_set(err, KV_EINVAL, "mock KV quantize: row stride %zu below a row of %zu floats", stride, row);
    size_t rows_bytes = ((size_t)(f->block_size - 1) * stride + row) * sizeof(float);
    dev_check(base, kv_cuda_kvq_layer_extent(f), "kvq block"), dev_check(k, rows_bytes, "kvq k rows");
    dev_check(v, rows_bytes, "kvq v rows");
    a_kvq_quant a = {base, *f, k, v, stride};
    submit(run_kvq_quantize, &a, sizeof a);
    return KV_OK;
}

typedef struct a_kvq_dec {
    float *out;
    const float *q;
    kv_cuda_kvq_pool qp;
    const int32_t *q_tables;
    kv_cuda_paged_kv fp;
    const int32_t *fp_tables;
    int stride;
    const int32_t *lens;
    int residual_blocks, n, heads;
} a_kvq_dec;
static void run_kvq_decode(const void *p)
{
    const a_kvq_dec *a = p;
    const kv_cuda_kvq_format *f = &a->qp.f;
    kq_format kf;
    kq_regions r;
    kvq_split(f, &kf, &r);
    int bs = f->block_size, hd = f->head_dim, group = a->heads / f->n_kv_heads;
    size_t extent = kv_cuda_kvq_layer_extent(f), row = (size_t)f->n_kv_heads * (size_t)hd;
    kc_paged_kv fp = {(float *)a->fp.pool, a->fp.block_stride, a->fp.v_offset, bs, f->n_kv_heads, hd};
    for (int s = 0; s < a->n; s++) {
        int len = a->lens[s];
        float *o = a->out + (size_t)s * a->heads * hd;
        if (len <= 0) {
            memset(o, 0, (size_t)a->heads * hd * sizeof *o);
            continue;
        }
        int nb = (len - 1) / bs + 1, ws = (len - 1) / bs - a->residual_blocks + 1;
        ws = ws > 0 ? ws : 0;
        if (nb > a->stride)
            die("kvq decode: length %d beyond the table stride %d", len, a->stride);
        const int32_t *qt = a->q_tables + (size_t)s * a->stride, *ft = a->fp_tables + (size_t)s * a->stride;
        const void **blocks = malloc((size_t)nb * sizeof *blocks);
        float *scores = malloc((size_t)nb * (size_t)bs * sizeof *scores);
        if (!blocks || !scores)
            die("out of memory");
        for (int b = 0; b < ws; b++) {
            if (qt[b] < 0)
                die("kvq decode: negative block id %d", qt[b]);
            blocks[b] = (const char *)a->qp.base + (size_t)qt[b] * a->qp.block_bytes;
            dev_check(blocks[b], extent, "kvq decode block");
        }
        for (int b = ws; b < nb; b++) {
            if (ft[b] < 0)
                die("kvq decode: negative residual block id %d", ft[b]);
            dev_check(fp.pool + (size_t)ft[b] * fp.block_stride, (fp.v_offset + (size_t)bs * row) * sizeof(float),
                      "kvq decode residual block");
        }
        for (int h = 0; h < a->heads; h++)
            kq_attend_one(o + (size_t)h * hd, a->q + ((size_t)s * a->heads + h) * hd, &kf, &r, h / group, blocks, ws,
                          &fp, ft, ws * bs, len - ws * bs, scores);
        free(blocks), free(scores);
    }
}
int kv_cuda_kvq_attention_decode(float *out, const float *q, const kv_cuda_kvq_pool *qpool,
                                 const int32_t *q_tables, const kv_cuda_paged_kv *fp, const int32_t *fp_tables,
                                 int table_stride, const int32_t *seq_lens, int residual_blocks, int n_seqs,
                                 int n_heads, int n_splits, void *workspace, size_t workspace_bytes, void *stream,
                                 kv_err *err)
{
    (void)stream;
    const kv_cuda_kvq_format *f = &qpool->f;
    int rc = kv_cuda_kvq_format_check(f, err);
    if (rc)
        return rc;
    if (!qpool->base || ((uintptr_t)qpool->base & 1) || (qpool->block_bytes & 1) ||
        qpool->block_bytes < kv_cuda_kvq_layer_extent(f))
        return kv_err_set(err, KV_EINVAL, "mock KV-code attention: block of %zu bytes", qpool->block_bytes);
    if (!fp->pool || fp->dtype != KV_CUDA_F32 || fp->block_size != f->block_size || fp->n_kv_heads != f->n_kv_heads ||
        fp->head_dim != f->head_dim)
        return kv_err_set(err, KV_EINVAL, "mock KV-code attention: the residual pool must be f32 of the same shape");
    if (n_heads <= 0 || n_heads > 65535 || n_heads % f->n_kv_heads || n_seqs < 0 || n_seqs > 65535 ||
        table_stride < 0 || residual_blocks < 1 || n_splits < 1 || n_splits > KV_CUDA_DECODE_MAX_SPLITS)
        return kv_err_set(err, KV_EINVAL, "mock KV-code attention: bad heads, batch, residual or splits");
    if (n_seqs == 0)
        return KV_OK;
    size_t need = kv_cuda_decode_workspace_bytes(n_seqs, n_heads, f->head_dim, n_splits);
    if (need > 0 && (!workspace || workspace_bytes < need))
        return kv_err_set(err, KV_EINVAL, "mock KV-code attention: %zu bytes of workspace, need %zu", workspace_bytes,
                          need);
    if (need)
        dev_check(workspace, need, "kvq decode workspace");
    size_t bytes = (size_t)n_seqs * n_heads * f->head_dim * sizeof(float);
    dev_check(out, bytes, "kvq decode out"), dev_check(q, bytes, "kvq decode q");
    dev_check(q_tables, (size_t)n_seqs * table_stride * 4, "kvq decode tables");
    dev_check(fp_tables, (size_t)n_seqs * table_stride * 4, "kvq decode residual tables");
    dev_check(seq_lens, (size_t)n_seqs * 4, "kvq decode lengths");
    a_kvq_dec a = {out, q, *qpool, q_tables, *fp, fp_tables, table_stride, seq_lens, residual_blocks, n_seqs, n_heads};
    submit(run_kvq_decode, &a, sizeof a);
    return KV_OK;
}
