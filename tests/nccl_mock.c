/* A stand-in for libnccl.so.2 (libkv_nccl_mock.so), loaded by the workers through
 * KVSERVE_NCCL_LIB like the real library, so the nccl KV transport runs between two
 * processes in CI without a GPU. It implements only what the workers dlsym, with the real
 * nccl.h's signatures, for 2-rank communicators of ranks in different processes (or
 * threads) on one machine. No CUDA: buffers are host-addressable (tests/cuda_mock.c's
 * device memory), streams are ignored and every operation has completed when it returns.
 *
 * ncclGetUniqueId binds a listening Unix socket in the abstract namespace and puts its
 * name in the id; the listening fd stays in this process (a small table keyed by the name)
 * until a rank-0 init on the id takes it (so rank 0 must be in the process that made the
 * id) and accepts rank 1, which connects. Both then exchange a hello (magic, rank). Send
 * and recv move one frame each (8-byte length + bytes) over the socket, blocking with a
 * 10 s SO_SNDTIMEO/SO_RCVTIMEO; a length that differs from what recv expects, an I/O
 * error, EOF or a timeout puts a sticky error on the comm (ncclRemoteError when the peer
 * is gone, ncclSystemError otherwise, ncclInvalidUsage for a size mismatch). In
 * nonblocking mode (config->blocking == 0) init returns ncclInProgress and every
 * ncclCommGetAsyncError makes one nonblocking connect/accept attempt; an operation that
 * fails returns ncclSuccess and its error shows in ncclCommGetAsyncError, as with real
 * NCCL; blocking mode returns errors from the call. Later calls on a failed comm return
 * its error without I/O. Inside ncclGroupStart/End, send/recv queue (per thread) and run
 * in call order at the outermost ncclGroupEnd; a group with both sends and recvs on one
 * comm is refused (ncclInvalidUsage), since nothing here could run them concurrently.
 * KV_NCCL_MOCK_LOG=1 prints every operation to stderr. */
#include <errno.h>
#include <fcntl.h>
#include <nccl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define ID_MAGIC 0x64496b636f6d6b76ULL    /* "vkmockId" */
#define HELLO_MAGIC 0x6f6c6c65486b766eULL /* "nvkHello" */
#define COMM_MAGIC 0x6d6f436bU /* "kCom" */
#define CONFIG_MAGIC 0xcafebeefU /* NCCL_CONFIG_INITIALIZER's */
#define IO_TIMEOUT_S 10
#define INIT_TIMEOUT_S 30

/* ---- ids ------------------------------------------------------------------------------- */

typedef struct mock_id {
    uint64_t magic;
    uint32_t name_len; /* bytes of name, the leading NUL of the abstract namespace included */
    char name[sizeof(((struct sockaddr_un *)0)->sun_path)];
} mock_id;
_Static_assert(sizeof(mock_id) <= sizeof(ncclUniqueId), "mock id too large");

/* The listening sockets of this process's ids that no rank-0 init has taken yet. */
typedef struct id_entry { char name[sizeof(((mock_id *)0)->name)]; uint32_t name_len; int fd; } id_entry;
static pthread_mutex_t g_ids_lock = PTHREAD_MUTEX_INITIALIZER;
static id_entry *g_ids;
static int g_n_ids, g_cap_ids;
static unsigned g_id_counter;

/* ---- comms ------------------------------------------------------------------------------ */

typedef enum { ST_CONNECTING, ST_READY, ST_FAILED } comm_state;

typedef struct hello { uint64_t magic; int32_t rank, nranks; } hello;

struct ncclComm {
    unsigned magic;
    int rank, blocking;
    comm_state state;
    ncclResult_t error;     /* sticky, once failed */
    int listen_fd, fd;      /* listen_fd: rank 0 until it accepted */
    mock_id id;
    hello out, in;          /* the hello exchange while connecting */
    size_t out_done, in_done;
    int group_kinds;        /* in the open group: 1 sends queued, 2 recvs, 3 both */
    char msg[256];          /* what went wrong */
};

static _Thread_local char t_last_error[256];

static int log_on(void)
{
    const char *s = getenv("KV_NCCL_MOCK_LOG");
    return s && !strcmp(s, "1");
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    if (!log_on())
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nccl_mock[%d]: %s\n", (int)getpid(), buf);
}

/* An error of one call (not the comm's): recorded for ncclGetLastError. */
static ncclResult_t fail(ncclResult_t r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ncclResult_t fail(ncclResult_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_last_error, sizeof t_last_error, fmt, ap);
    va_end(ap);
    logf_("error: %s", t_last_error);
    return r;
}

/* The comm fails for good (the first error sticks). */
static ncclResult_t comm_fail(struct ncclComm *c, ncclResult_t r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ncclResult_t comm_fail(struct ncclComm *c, ncclResult_t r, const char *fmt, ...)
{
    if (c->state != ST_FAILED) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, sizeof c->msg, fmt, ap);
        va_end(ap);
        c->state = ST_FAILED;
        c->error = r;
    }
    snprintf(t_last_error, sizeof t_last_error, "%s", c->msg);
    logf_("rank %d: comm error: %s", c->rank, c->msg);
    return c->error;
}

/* An errno of socket I/O as a result: the peer gone is a remote error. */
static ncclResult_t io_result(int e) { return e == 0 || e == ECONNRESET || e == EPIPE ? ncclRemoteError : ncclSystemError; }

static const char *io_what(int e)
{
    if (e == 0)
        return "peer closed the connection";
    if (e == EAGAIN || e == EWOULDBLOCK)
        return "timed out after 10 s";
    return strerror(e);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static int valid_comm(const struct ncclComm *c) { return c && c->magic == COMM_MAGIC; }

/* ---- connecting --------------------------------------------------------------------------- */

static void set_timeouts(int fd)
{
    struct timeval tv = {IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* One nonblocking step of connecting: ncclInProgress (try again), ncclSuccess (ready) or
 * the comm's error. */
static ncclResult_t progress(struct ncclComm *c)
{
    if (c->state == ST_READY)
        return ncclSuccess;
    if (c->state == ST_FAILED)
        return c->error;
    if (c->fd < 0) {
        if (c->rank == 0) {
            int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                    return ncclInProgress;
                return comm_fail(c, ncclSystemError, "accept: %s", strerror(errno));
            }
            c->fd = fd;
            close_fd(&c->listen_fd); /* one peer per id */
        } else {
            int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            if (fd < 0)
                return comm_fail(c, ncclSystemError, "socket: %s", strerror(errno));
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            memcpy(sa.sun_path, c->id.name, c->id.name_len);
            socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + c->id.name_len);
            if (connect(fd, (struct sockaddr *)&sa, len)) {
                int e = errno;
                close(fd);
                if (e == ECONNREFUSED || e == ENOENT || e == EAGAIN || e == EINTR)
                    return ncclInProgress; /* rank 0's listener is not there (yet), or busy */
                return comm_fail(c, ncclSystemError, "connect: %s", strerror(e));
            }
            int fl = fcntl(fd, F_GETFL);
            fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
            c->fd = fd;
        }
        set_timeouts(c->fd);
        logf_("rank %d: connected", c->rank);
    }
    while (c->out_done < sizeof c->out) {
        ssize_t k = send(c->fd, (char *)&c->out + c->out_done, sizeof c->out - c->out_done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return ncclInProgress;
            return comm_fail(c, io_result(errno), "hello: %s", io_what(errno));
        }
        c->out_done += (size_t)k;
    }
    while (c->in_done < sizeof c->in) {
        ssize_t k = recv(c->fd, (char *)&c->in + c->in_done, sizeof c->in - c->in_done, MSG_DONTWAIT);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return ncclInProgress;
            return comm_fail(c, io_result(errno), "hello: %s", io_what(errno));
        }
        if (k == 0)
            return comm_fail(c, ncclRemoteError, "hello: peer closed the connection");
        c->in_done += (size_t)k;
    }
    if (c->in.magic != HELLO_MAGIC || c->in.nranks != 2 || c->in.rank != 1 - c->rank)
        return comm_fail(c, ncclInvalidUsage, "hello: the peer is not rank %d of a 2-rank nccl_mock comm (rank %d of %d)",
                         1 - c->rank, (int)c->in.rank, (int)c->in.nranks);
    c->state = ST_READY;
    logf_("rank %d: ready", c->rank);
    return ncclSuccess;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void free_comm(struct ncclComm *c);

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t *config)
{
    if (!comm)
        return fail(ncclInvalidArgument, "ncclCommInitRankConfig: comm is NULL");
    *comm = NULL;
    if (nranks != 2)
        return fail(ncclInvalidArgument, "nccl_mock: %d ranks (only 2-rank communicators)", nranks);
    if (rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "ncclCommInitRankConfig: rank %d of %d", rank, nranks);
    if (config && config->magic != CONFIG_MAGIC)
        return fail(ncclInvalidArgument, "ncclCommInitRankConfig: config not set from NCCL_CONFIG_INITIALIZER");
    mock_id id;
    memcpy(&id, commId.internal, sizeof id);
    if (id.magic != ID_MAGIC || id.name_len < 2 || id.name_len > sizeof id.name)
        return fail(ncclInvalidArgument, "ncclCommInitRankConfig: not a unique id from nccl_mock's ncclGetUniqueId");
    int blocking = !config || config->blocking != 0; /* NCCL_CONFIG_UNDEF_INT: the default, blocking */
    int listen_fd = -1;
    if (rank == 0) { /* take the id's listener: it must be this process's and not taken yet */
        pthread_mutex_lock(&g_ids_lock);
        for (int i = 0; i < g_n_ids; i++)
            if (g_ids[i].name_len == id.name_len && !memcmp(g_ids[i].name, id.name, id.name_len)) {
                listen_fd = g_ids[i].fd;
                g_ids[i] = g_ids[--g_n_ids];
                break;
            }
        pthread_mutex_unlock(&g_ids_lock);
        if (listen_fd < 0)
            return fail(ncclInvalidUsage, "ncclCommInitRankConfig: rank 0 must be initialised once, in the process "
                                          "that called ncclGetUniqueId");
    }
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) {
        close_fd(&listen_fd);
        return fail(ncclSystemError, "ncclCommInitRankConfig: out of memory");
    }
    c->magic = COMM_MAGIC;
    c->rank = rank;
    c->blocking = blocking;
    c->state = ST_CONNECTING;
    c->listen_fd = listen_fd;
    c->fd = -1;
    c->id = id;
    c->out = (hello){HELLO_MAGIC, rank, nranks};
    logf_("rank %d: init (%s)", rank, blocking ? "blocking" : "nonblocking");
    if (!blocking) {
        *comm = c;
        return ncclInProgress;
    }
    double deadline = now_s() + INIT_TIMEOUT_S;
    ncclResult_t r;
    while ((r = progress(c)) == ncclInProgress) {
        if (now_s() > deadline) {
            r = comm_fail(c, ncclSystemError, "rank %d: no peer within %d s", rank, INIT_TIMEOUT_S);
            break;
        }
        int fd = c->fd >= 0 ? c->fd : c->listen_fd;
        if (fd >= 0) {
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, 10);
        } else {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (r != ncclSuccess) {
        snprintf(t_last_error, sizeof t_last_error, "%s", c->msg);
        free_comm(c);
        return r;
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId)
{
    if (!uniqueId)
        return fail(ncclInvalidArgument, "ncclGetUniqueId: NULL");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return fail(ncclSystemError, "ncclGetUniqueId: socket: %s", strerror(errno));
    mock_id id = {.magic = ID_MAGIC};
    pthread_mutex_lock(&g_ids_lock);
    if (g_n_ids == g_cap_ids) {
        int cap = g_cap_ids ? 2 * g_cap_ids : 8;
        id_entry *n = realloc(g_ids, (size_t)cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&g_ids_lock);
            close(fd);
            return fail(ncclSystemError, "ncclGetUniqueId: out of memory");
        }
        g_ids = n, g_cap_ids = cap;
    }
    int bound = 0, e = 0;
    for (int attempt = 0; attempt < 8 && !bound; attempt++) {
        uint32_t rnd;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
            rnd = (uint32_t)(now_s() * 1e9);
        int k = snprintf(id.name + 1, sizeof id.name - 1, "kvncclmock-%d-%u-%08x", (int)getpid(), ++g_id_counter, rnd);
        id.name[0] = '\0';
        id.name_len = (uint32_t)(1 + k);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        memcpy(sa.sun_path, id.name, id.name_len);
        socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + id.name_len);
        if (bind(fd, (struct sockaddr *)&sa, len) == 0)
            bound = 1;
        else if ((e = errno) != EADDRINUSE)
            break;
    }
    if (!bound || listen(fd, 4)) {
        if (bound)
            e = errno;
        pthread_mutex_unlock(&g_ids_lock);
        close(fd);
        return fail(ncclSystemError, "ncclGetUniqueId: bind/listen: %s", strerror(e));
    }
    id_entry *ent = &g_ids[g_n_ids++];
    memcpy(ent->name, id.name, id.name_len);
    ent->name_len = id.name_len;
    ent->fd = fd;
    pthread_mutex_unlock(&g_ids_lock);
    memset(uniqueId, 0, sizeof *uniqueId);
    memcpy(uniqueId->internal, &id, sizeof id);
    logf_("unique id @%s", id.name + 1);
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError)
{
    if (!valid_comm(comm) || !asyncError)
        return fail(ncclInvalidArgument, "ncclCommGetAsyncError: invalid comm or NULL result");
    *asyncError = progress(comm);
    if (*asyncError != ncclSuccess && *asyncError != ncclInProgress)
        snprintf(t_last_error, sizeof t_last_error, "%s", comm->msg);
    return ncclSuccess;
}

/* ---- groups and operations ------------------------------------------------------------ */

typedef struct mock_op { struct ncclComm *comm; int send; void *buf; size_t bytes; } mock_op;
static _Thread_local int t_depth;
static _Thread_local mock_op *t_ops;
static _Thread_local int t_n_ops, t_cap_ops;

static void drop_ops_of(struct ncclComm *c)
{
    int k = 0;
    for (int i = 0; i < t_n_ops; i++)
        if (t_ops[i].comm != c)
            t_ops[k++] = t_ops[i];
    t_n_ops = k;
}

static void free_comm(struct ncclComm *c)
{
    drop_ops_of(c);
    close_fd(&c->fd);
    close_fd(&c->listen_fd);
    c->magic = 0;
    free(c);
}

ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    if (!comm)
        return ncclSuccess;
    if (!valid_comm(comm))
        return fail(ncclInvalidArgument, "ncclCommAbort: invalid comm");
    logf_("rank %d: abort", comm->rank);
    free_comm(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm)
        return ncclSuccess;
    if (!valid_comm(comm))
        return fail(ncclInvalidArgument, "ncclCommDestroy: invalid comm");
    logf_("rank %d: destroy", comm->rank);
    free_comm(comm);
    return ncclSuccess;
}

/* Moves all n bytes (-1), or fails: the errno, 0 for EOF. */
static int send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        s += k, n -= (size_t)k;
    }
    return -1;
}

static int recv_all(int fd, void *p, size_t n)
{
    char *d = p;
    while (n) {
        ssize_t k = recv(fd, d, n, 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno ? errno : EIO;
        }
        if (k == 0)
            return 0;
        d += k, n -= (size_t)k;
    }
    return -1;
}

/* Runs one operation; the comm's error (sticky) or ncclSuccess. */
static ncclResult_t run_op(const mock_op *op)
{
    struct ncclComm *c = op->comm;
    if (c->state == ST_FAILED)
        return c->error;
    logf_("rank %d: %s %zu bytes", c->rank, op->send ? "send" : "recv", op->bytes);
    uint64_t len = op->bytes;
    int e;
    if (op->send) {
        if ((e = send_all(c->fd, &len, sizeof len)) >= 0 || (e = send_all(c->fd, op->buf, op->bytes)) >= 0)
            return comm_fail(c, io_result(e), "send of %zu bytes to rank %d: %s", op->bytes, 1 - c->rank, io_what(e));
        return ncclSuccess;
    }
    if ((e = recv_all(c->fd, &len, sizeof len)) >= 0)
        return comm_fail(c, io_result(e), "recv of %zu bytes from rank %d: %s", op->bytes, 1 - c->rank, io_what(e));
    if (len != op->bytes)
        return comm_fail(c, ncclInvalidUsage, "recv of %zu bytes but the peer sent %llu", op->bytes,
                         (unsigned long long)len);
    if ((e = recv_all(c->fd, op->buf, op->bytes)) >= 0)
        return comm_fail(c, io_result(e), "recv of %zu bytes from rank %d: %s", op->bytes, 1 - c->rank, io_what(e));
    return ncclSuccess;
}

/* What the caller sees of an operation's result: a nonblocking comm reports I/O errors
 * through ncclCommGetAsyncError only. */
static ncclResult_t op_result(const struct ncclComm *c, ncclResult_t r) { return c->blocking ? r : ncclSuccess; }

static size_t type_size(ncclDataType_t t)
{
    switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
    }
}

static ncclResult_t enqueue(int send, void *buf, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm)
{
    const char *what = send ? "ncclSend" : "ncclRecv";
    if (!valid_comm(comm))
        return fail(ncclInvalidArgument, "%s: invalid comm", what);
    size_t es = type_size(datatype);
    if (!es)
        return fail(ncclInvalidArgument, "%s: datatype %d", what, (int)datatype);
    if (count > SIZE_MAX / es)
        return fail(ncclInvalidArgument, "%s: %zu elements overflow", what, count);
    if (!buf && count)
        return fail(ncclInvalidArgument, "%s: NULL buffer", what);
    if (peer != 1 - comm->rank)
        return fail(ncclInvalidArgument, "%s: peer %d (rank %d's only peer is %d)", what, peer, comm->rank,
                    1 - comm->rank);
    if (comm->state == ST_CONNECTING)
        return fail(ncclInvalidArgument, "%s: the communicator is still being initialised", what);
    if (comm->state == ST_FAILED) {
        snprintf(t_last_error, sizeof t_last_error, "%s", comm->msg);
        return comm->error;
    }
    mock_op op = {comm, send, buf, count * es};
    if (t_depth == 0)
        return op_result(comm, run_op(&op));
    if (t_n_ops == t_cap_ops) {
        int cap = t_cap_ops ? 2 * t_cap_ops : 16;
        mock_op *n = realloc(t_ops, (size_t)cap * sizeof *n);
        if (!n)
            return fail(ncclSystemError, "%s: out of memory", what);
        t_ops = n, t_cap_ops = cap;
    }
    t_ops[t_n_ops++] = op;
    comm->group_kinds |= send ? 1 : 2;
    return ncclSuccess;
}

ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream)
{
    (void)stream;
    return enqueue(1, (void *)sendbuff, count, datatype, peer, comm);
}

ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream)
{
    (void)stream;
    return enqueue(0, recvbuff, count, datatype, peer, comm);
}

ncclResult_t ncclGroupStart(void)
{
    t_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void)
{
    if (t_depth == 0)
        return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--t_depth > 0)
        return ncclSuccess;
    ncclResult_t r = ncclSuccess;
    for (int i = 0; i < t_n_ops && r == ncclSuccess; i++)
        if (t_ops[i].comm->group_kinds == 3)
            r = fail(ncclInvalidUsage, "nccl_mock: a group with both sends and recvs on one communicator "
                                       "(rank %d) is not supported", t_ops[i].comm->rank);
    for (int i = 0; i < t_n_ops; i++)
        t_ops[i].comm->group_kinds = 0;
    if (r == ncclSuccess)
        for (int i = 0; i < t_n_ops; i++) {
            ncclResult_t ri = op_result(t_ops[i].comm, run_op(&t_ops[i]));
            if (r == ncclSuccess)
                r = ri;
        }
    t_n_ops = 0;
    return r;
}

/* ---- misc ------------------------------------------------------------------------------- */

ncclResult_t ncclGetVersion(int *version)
{
    if (!version)
        return fail(ncclInvalidArgument, "ncclGetVersion: NULL");
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result)
{
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

/* This thread's last error; a comm's own when the thread has none. */
const char *ncclGetLastError(ncclComm_t comm)
{
    if (!t_last_error[0] && valid_comm(comm))
        return comm->msg;
    return t_last_error;
}
