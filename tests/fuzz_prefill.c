/* fuzz_prefill: kv-prefill's two inputs driven in-process (a CPU worker on stories260K, a
 * pool of 48 blocks, prefill chunks of 3 blocks, KvChunks of 2 blocks) by a sequence of
 * records:
 *   op 0  a control message (the router's): the envelope's length (2 bytes LE) and bytes,
 *         through kv_wire_decode and prefill_on_control, as the main loop does;
 *   op 1  a message from a fake decode worker: which one (1 byte), a frame count (1 byte,
 *         low 2 bits: extra frames of 8 zero bytes), the envelope's length (2 bytes LE) and
 *         bytes; the fake's ROUTER sends it to the worker's routing id, and the worker's
 *         KV sockets are drained through prefill_on_kv, as the main loop does;
 *   op 2  a loop turn: the KV sockets drained, prefill_step (at most MAX_STEPS per input),
 *         prefill_reap, prefill_close_idle_peers;
 *   op 3  the fake decode workers let go of the frames they hold (kept until then, as a
 *         decode worker that is slow to read would: the worker must keep their blocks).
 * The fake decode workers are two inproc ROUTERs; a PrefillTask's decode_kv_endpoint is
 * kept when it is one of them, empty, too long or not an address ("://"), else it becomes
 * one of them: a real address nobody binds would make every send wait its timeout. The
 * worker's DEALERs to both are made at set-up, so replies route from the first input on.
 * After every record, what reached the fakes is checked: each message is a KvChunk of the
 * task being prefilled, from this worker, over zmq, next in seq and first_block, naming the
 * task's destination blocks, n_tokens within its blocks, block-sized frames matching their
 * CRC-32C, last only with the whole prompt; a block full of prompt holds the same bytes as
 * every earlier block with that prefix (the prefill is deterministic: one thread, fixed
 * chunk boundaries). A frame keeps its checksum while held (its block not reused). A
 * PrefillDone ok names the task that sent its last chunk, with its chunk and byte counts
 * and first token. The books: every block free or held (once) by the current or a draining
 * task; queued tasks hold none; the queue's count and tail; the current task's progress;
 * the frames the tasks count in flight are the ones the fakes hold. At the end, with every
 * task aborted as the router would and the frames let go, every block is free and no task
 * is left. Block ids start from a fresh pool's order on every input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_fuzz_envelope.h"
#include "kv_fuzz_worker.h"
#include "kv_fuzz_target.h"
#include "kv_test.h"
#include "kv_time.h"
#include "model_config.h"
#include "prefill.h"
#include "worker_loop.h"

#define N_FAKES 2
#define MAX_STEPS 24   /* a step prefills at most 48 tokens of stories260K */
#define MAX_HELD 256   /* frames the fakes hold; more, and they let go first */
#define N_PREFIX 4096  /* prefix hash -> block CRC, kept across inputs */
#define WORKER_ID "prefill-0"
#define CONTROL_EP "inproc://fuzz-prefill-control"
static const char *const fake_ep[N_FAKES] = {"inproc://fuzz-prefill-kv-0", "inproc://fuzz-prefill-kv-1"};

/* What the fakes saw of the task being prefilled (copied: the task may be freed). */
typedef struct track {
    int active, ep, n_prompt, need, last;
    int p_cached;           /* leading blocks the task took from the prefix cache (not computed) */
    char *id;
    int32_t *prompt, *dst;
    uint32_t next_seq, sent_blocks, n_tokens;
    int32_t first_token;
    uint64_t bytes;
} track;

typedef struct harness {
    void *zctx, *router, *fake[N_FAKES];
    kv_peer *fake_peer[N_FAKES];
    kv_wire_route route[N_FAKES]; /* the worker's connection, as each fake names it */
    worker_flags f;
    worker_engine we;
    worker_control ctl;
    prefill_worker pw;
    kv_fuzz_cluster cl;
    int bs;
    uint8_t *held;        /* per block: check_books's ledger */
    track tr;
    zmq_msg_t frames[MAX_HELD];
    uint32_t sums[MAX_HELD];
    int n_held;
    uint64_t prefix_key[N_PREFIX];
    uint32_t prefix_crc[N_PREFIX];
    uint8_t *indexed_seen;  /* per block: its CRC was taken while it was indexed */
    uint32_t *indexed_crc;  /* that CRC: a cached block is never written */
} harness;

/* The worker's KV DEALERs set no routing id (each decode-side ROUTER names the connection):
 * a fake learns the name from one empty frame sent on the worker's socket at set-up. */
static int learn_route(harness *h, int i)
{
    char none;
    if (zmq_send(h->fake_peer[i]->sock, "", 0, 0) < 0)
        return -1;
    int n = zmq_recv(h->fake[i], h->route[i].id, sizeof h->route[i].id, 0);
    if (n <= 0 || n > (int)sizeof h->route[i].id || zmq_recv(h->fake[i], &none, 1, 0) != 0)
        return -1;
    h->route[i].len = (size_t)n;
    return 0;
}

static harness *harness_get(void)
{
    static harness h;
    static int ready;
    if (ready)
        return &h;
    char *dir = (char *)kv_fuzz_stories260k("fuzz_prefill");
    kv_err err;
    /* One thread: the model is tiny, and a libFuzzer process is one core. A chunk of 3
     * blocks ships as 2 KvChunks; idle peers are never closed by the clock. */
    char *argv[] = {"fuzz_prefill", "--model", dir, "--device", "cpu", "--threads", "1", "--kv-blocks", "48",
                    "--prefill-chunk", "48", "--kv-message-kib", "40", "--kv-peer-idle-s", "86400", "--router",
                    CONTROL_EP, "--id", WORKER_ID, NULL};
    if (worker_flags_parse(KV_WORKER_PREFILL, (int)(sizeof argv / sizeof *argv) - 1, argv, &h.f))
        exit(1);
    h.zctx = zmq_ctx_new();
    kv_err_set(&err, KV_ENOMEM, "out of memory or sockets");
    int bad = worker_engine_open(&h.f, &h.we, &err) || !h.zctx || !(h.router = zmq_socket(h.zctx, ZMQ_ROUTER)) ||
              zmq_bind(h.router, CONTROL_EP) || prefill_worker_init(&h.pw, &h.f, &h.we, &h.ctl, h.zctx) ||
              worker_control_open(&h.ctl, h.zctx, &h.f, &h.we, "", &err) ||
              !(h.held = malloc((size_t)h.we.pool->n_blocks)) ||
              !(h.indexed_seen = calloc((size_t)h.we.pool->n_blocks, 1)) ||
              !(h.indexed_crc = calloc((size_t)h.we.pool->n_blocks, sizeof *h.indexed_crc));
    int mandatory = 1;
    for (int i = 0; i < N_FAKES && !bad; i++)
        bad = !(h.fake[i] = zmq_socket(h.zctx, ZMQ_ROUTER)) || zmq_bind(h.fake[i], fake_ep[i]) ||
              zmq_setsockopt(h.fake[i], ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) ||
              !(h.fake_peer[i] = kv_sender_peer(&h.pw.sender, fake_ep[i], &err)) ||
              kv_sender_connect(&h.pw.sender, h.fake_peer[i], &err) != 1 || learn_route(&h, i);
    if (bad) {
        fprintf(stderr, "fuzz_prefill: set-up: %s\n", err.msg);
        exit(1);
    }
    kv_fuzz_cluster_of(&h.we, fake_ep[0], &h.cl);
    h.bs = h.we.pool->shape.block_size;
    ready = 1;
    return &h;
}

/* ---- properties ------------------------------------------------------------------- */

/* A block indexed in the prefix cache keeps its bytes for as long as it stays indexed. */
static void check_cached_blocks(harness *h)
{
    const kv_pool *pool = h->we.pool;
    size_t bb = h->we.block_bytes;
    for (int32_t b = 0; pool->prefix && b < pool->n_blocks; b++) {
        if (!pool->prefix->indexed[b]) {
            h->indexed_seen[b] = 0;
            continue;
        }
        uint32_t crc = kv_crc32c(kv_pool_block_addr(pool, b), bb);
        if (!h->indexed_seen[b])
            h->indexed_seen[b] = 1, h->indexed_crc[b] = crc;
        KV_FUZZ_REQUIRE(h->indexed_crc[b] == crc, "cached block %d was written while indexed", b);
    }
}

static void check_books(harness *h)
{
    const prefill_worker *pw = &h->pw;
    kv_fuzz_ledger ledger = {h->we.pool, h->held};
    kv_fuzz_ledger_open(&ledger);
    int n = 0;
    const prefill_task *last = NULL;
    for (const prefill_task *t = pw->head; t; last = t, t = t->next, n++) {
        KV_FUZZ_REQUIRE(t->state == PT_QUEUED && !t->seq.n_blocks && !t->done && !t->sent_blocks,
                        "queued task %s in state %d with %d blocks", t->id, (int)t->state, t->seq.n_blocks);
        KV_FUZZ_REQUIRE(!(pw->cur && !strcmp(pw->cur->id, t->id)), "task %s current and queued", t->id);
        for (const prefill_task *u = t->next; u; u = u->next)
            KV_FUZZ_REQUIRE(strcmp(t->id, u->id), "task %s queued twice", t->id);
    }
    KV_FUZZ_REQUIRE(n == pw->n_queued && pw->tail == last, "%d tasks queued, counted %d", n, pw->n_queued);
    long in_flight = 0;
    if (pw->cur) {
        const prefill_task *t = pw->cur;
        int np = (int)t->t->n_prompt_tokens, all = (np + h->bs - 1) / h->bs;
        KV_FUZZ_REQUIRE((t->state == PT_PREFILLING || t->state == PT_WAIT_ACK) && t->peer && t->done <= np &&
                            t->seq.n_tokens == t->done &&
                            (t->sent_blocks <= (t->done + h->bs - 1) / h->bs ||
                             t->sent_blocks == (int)t->t->decode_cached_blocks) &&
                            (t->state == PT_PREFILLING || (t->last_sent && t->done == np && t->sent_blocks == all)),
                        "current task %s: state %d, %d of %d tokens, %d in the cache, %d blocks sent, last %d", t->id,
                        (int)t->state, t->done, np, t->seq.n_tokens, t->sent_blocks, t->last_sent);
        kv_fuzz_ledger_hold(&ledger, t->id, t->seq.blocks, t->seq.n_blocks);
        in_flight += atomic_load(&t->frames_in_flight);
    }
    for (const prefill_task *t = pw->draining; t; t = t->next) {
        KV_FUZZ_REQUIRE(t != pw->cur && !t->n_gpu_ops && atomic_load(&t->frames_in_flight) >= 0,
                        "draining task %s: %d GPU sends, %d frames", t->id, t->n_gpu_ops,
                        atomic_load(&t->frames_in_flight));
        kv_fuzz_ledger_hold(&ledger, t->id, t->seq.blocks, t->seq.n_blocks);
        in_flight += atomic_load(&t->frames_in_flight);
    }
    kv_fuzz_ledger_close(&ledger);
    check_cached_blocks(h);
    KV_FUZZ_REQUIRE(in_flight == h->n_held, "tasks count %ld frames in flight; the decode side holds %d", in_flight,
                    h->n_held);
}

static void track_reset(track *tr)
{
    free(tr->id), free(tr->prompt), free(tr->dst);
    memset(tr, 0, sizeof *tr);
}

/* The task just started: what its chunks must say. */
static void track_start(harness *h, const prefill_task *t)
{
    track *tr = &h->tr;
    track_reset(tr);
    tr->n_prompt = (int)t->t->n_prompt_tokens;
    tr->need = (tr->n_prompt + h->bs - 1) / h->bs;
    tr->id = strdup(t->id);
    tr->prompt = malloc((size_t)tr->n_prompt * sizeof *tr->prompt);
    tr->dst = malloc((size_t)tr->need * sizeof *tr->dst);
    KV_FUZZ_REQUIRE(tr->id && tr->prompt && tr->dst, "out of memory");
    tr->p_cached = t->cached_tokens / h->bs;
    tr->sent_blocks = t->t->decode_cached_blocks; /* the decode worker holds those */
    memcpy(tr->prompt, t->t->prompt_tokens, (size_t)tr->n_prompt * sizeof *tr->prompt);
    memcpy(tr->dst, t->t->decode_block_ids, (size_t)tr->need * sizeof *tr->dst);
    tr->ep = strcmp(t->t->decode_kv_endpoint, fake_ep[0]) ? 1 : 0;
    tr->active = 1;
}

/* A full block's bytes are those of every earlier prefill through the same tokens in the
 * same chunks (one thread, the chunks' boundaries fixed): the first CRC seen is the answer.
 * Only for tasks that computed their whole prompt: a token's K/V bits depend on its chunk
 * mates (sgemm and the attention GEMM round by their shapes), so a task that started from
 * cached blocks (computed in another prompt's chunks) equals a full prefill only up to
 * rounding; its cached blocks are checked by check_cached_blocks instead. */
static void check_prefix(harness *h, int32_t block, uint32_t crc)
{
    int chunk = h->f.prefill_chunk, end = (block * h->bs / chunk + 1) * chunk;
    uint64_t key = 1469598103934665603ull ^ (uint64_t)block;
    for (int i = 0; i < end && i < h->tr.n_prompt; i++)
        key = (key ^ (uint32_t)h->tr.prompt[i]) * 1099511628211ull;
    key |= 1;
    for (uint32_t i = (uint32_t)key % N_PREFIX, k = 0; k < 64; i = (i + 1) % N_PREFIX, k++) {
        if (!h->prefix_key[i]) {
            h->prefix_key[i] = key, h->prefix_crc[i] = crc;
            return;
        }
        if (h->prefix_key[i] == key) {
            KV_FUZZ_REQUIRE(h->prefix_crc[i] == crc, "block %d of %s: CRC %08x, the same prefix gave %08x", block,
                            h->tr.id, crc, h->prefix_crc[i]);
            return;
        }
    }
}

static void release_frames(harness *h)
{
    for (int i = 0; i < h->n_held; i++) {
        zmq_msg_t *f = &h->frames[i];
        KV_FUZZ_REQUIRE(kv_crc32c(zmq_msg_data(f), zmq_msg_size(f)) == h->sums[i],
                        "a KV frame changed while the decode side held it (its block reused)");
        zmq_msg_close(f);
    }
    h->n_held = 0;
}

static void check_chunk(harness *h, int ep, kv_wire_msg *m)
{
    track *tr = &h->tr;
    size_t bb = h->we.block_bytes;
    KV_FUZZ_REQUIRE(m->route.len == h->route[ep].len && !memcmp(m->route.id, h->route[ep].id, m->route.len) &&
                        m->env->body_case == KVSERVE__ENVELOPE__BODY_KV_CHUNK,
                    "decode endpoint %d got body %d from another routing id", ep, (int)m->env->body_case);
    const Kvserve__KvChunk *c = m->env->kv_chunk;
    size_t n = c->n_block_ids;
    KV_FUZZ_REQUIRE(tr->active && ep == tr->ep && !strcmp(c->request_id, tr->id) && !tr->last,
                    "chunk of %s at endpoint %d; the task being prefilled is %s at %d (last sent %d)", c->request_id,
                    ep, tr->active ? tr->id : "none", tr->ep, tr->last);
    KV_FUZZ_REQUIRE(!strcmp(c->prefill_worker_id, WORKER_ID) && c->transport == KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ &&
                        !c->session && c->seq == tr->next_seq && c->first_block == tr->sent_blocks &&
                        c->n_checksums == n && m->n_payloads == n && c->first_block + n <= (size_t)tr->need,
                    "chunk %u of %s (next %u): blocks %u+%zu of %d, %zu checksums, %zu frames", c->seq, tr->id,
                    tr->next_seq, c->first_block, n, tr->need, c->n_checksums, m->n_payloads);
    uint32_t upto = c->first_block + (uint32_t)n;
    KV_FUZZ_REQUIRE(c->n_tokens <= upto * (uint32_t)h->bs && c->n_tokens + (uint32_t)h->bs > upto * (uint32_t)h->bs &&
                        c->n_tokens >= tr->n_tokens && (!c->last || (upto == (uint32_t)tr->need &&
                                                                     c->n_tokens == (uint32_t)tr->n_prompt)) &&
                        (c->last || !c->first_token),
                    "chunk %u of %s: %u tokens over blocks [0, %u) (prompt %d, before %u), last %d, first token %d",
                    c->seq, tr->id, c->n_tokens, upto, tr->n_prompt, tr->n_tokens, (int)c->last, c->first_token);
    for (size_t k = 0; k < n; k++) {
        zmq_msg_t *f = &m->payloads[k];
        uint32_t j = c->first_block + (uint32_t)k;
        KV_FUZZ_REQUIRE(c->block_ids[k] == tr->dst[j], "frame %zu to block %d, not %d", k, c->block_ids[k], tr->dst[j]);
        KV_FUZZ_REQUIRE(zmq_msg_size(f) == bb && kv_crc32c(zmq_msg_data(f), bb) == c->checksums[k],
                        "frame %zu of %zu bytes (a block has %zu) sent with checksum %08x", k, zmq_msg_size(f), bb,
                        c->checksums[k]);
        if ((int)(j + 1) * h->bs <= tr->n_prompt && !tr->p_cached)
            check_prefix(h, (int32_t)j, c->checksums[k]);
        if (h->n_held == MAX_HELD)
            release_frames(h);
        zmq_msg_init(&h->frames[h->n_held]);
        zmq_msg_move(&h->frames[h->n_held], f);
        h->sums[h->n_held++] = c->checksums[k];
    }
    tr->next_seq++, tr->sent_blocks = upto, tr->n_tokens = c->n_tokens, tr->last = c->last;
    tr->first_token = c->first_token, tr->bytes += n * bb;
}

/* What reached the fake decode workers and the router. */
static void drain_fakes(harness *h)
{
    for (int ep = 0; ep < N_FAKES; ep++) {
        kv_wire_msg m;
        kv_err err;
        int rc;
        while ((rc = kv_wire_recv(h->fake[ep], 1, 0, &m, &err)) != KV_ETIMEOUT) {
            KV_FUZZ_REQUIRE(rc == KV_OK, "decode endpoint %d got a malformed message: %s", ep, err.msg);
            check_chunk(h, ep, &m);
            kv_wire_msg_close(&m);
        }
    }
    kv_wire_msg m;
    kv_err err;
    int rc;
    while ((rc = kv_wire_recv(h->router, 1, 0, &m, &err)) != KV_ETIMEOUT) {
        KV_FUZZ_REQUIRE(rc == KV_OK, "the router got a malformed message: %s", err.msg);
        const Kvserve__PrefillDone *d = m.env->body_case == KVSERVE__ENVELOPE__BODY_PREFILL_DONE ? m.env->prefill_done : NULL;
        const track *tr = &h->tr;
        if (d && d->ok)
            KV_FUZZ_REQUIRE(tr->active && !strcmp(d->request_id, tr->id) && tr->last && d->kv_chunks == tr->next_seq &&
                                d->kv_bytes == tr->bytes && d->first_token == tr->first_token,
                            "PrefillDone ok for %s: %u chunks, %llu bytes, first token %d; its KV: %u, %llu, %d (%s)",
                            d->request_id, d->kv_chunks, (unsigned long long)d->kv_bytes, d->first_token,
                            tr->next_seq, (unsigned long long)tr->bytes, tr->first_token, tr->last ? "all" : "not all");
        kv_wire_msg_close(&m);
    }
}

/* ---- the input -------------------------------------------------------------------- */

static void on_control(harness *h, const uint8_t *p, size_t len)
{
    kv_wire_msg m;
    kv_err err;
    memset(&m, 0, sizeof m);
    int rc = kv_wire_decode(p, len, &m.env, &err);
    Kvserve__PrefillTask *t = !rc && m.env->body_case == KVSERVE__ENVELOPE__BODY_PREFILL ? m.env->prefill : NULL;
    if (t) {
        const char *ep = t->decode_kv_endpoint;
        size_t n = strlen(ep);
        if (n && n < 256 && strstr(ep, "://") && strcmp(ep, fake_ep[0]) && strcmp(ep, fake_ep[1])) {
            char *to = strdup(fake_ep[n % N_FAKES]); /* protobuf-c frees it with free() */
            KV_FUZZ_REQUIRE(to, "out of memory");
            free(t->decode_kv_endpoint);
            t->decode_kv_endpoint = to;
        }
    }
    prefill_on_control(&h->pw, &m, rc, &err);
    if (m.env)
        kvserve__envelope__free_unpacked(m.env, NULL);
}

/* The worker's KV sockets drained, as its loop does. */
static void drain_peers(harness *h)
{
    for (int i = 0; i < h->pw.sender.n; i++) {
        prefill_kv_from from = {&h->pw, h->pw.sender.peers[i]};
        worker_drain(from.peer->sock, 0, 256, prefill_on_kv, &from);
    }
}

static int from_decode(harness *h, kv_fuzz_reader *rd)
{
    uint8_t ep, extra, len2[2];
    if (kv_fuzz_take(rd, &ep, 1) || kv_fuzz_take(rd, &extra, 1) || kv_fuzz_take(rd, len2, 2))
        return -1;
    size_t len = (size_t)len2[0] | (size_t)len2[1] << 8, n_extra = extra & 3;
    if (len > rd->left)
        len = rd->left;
    void *s = h->fake[ep % N_FAKES];
    int events;
    size_t sz = sizeof events;
    zmq_getsockopt(s, ZMQ_EVENTS, &events, &sz); /* takes in the worker's connection, if new */
    static const uint8_t zeros[8];
    const kv_wire_route *to = &h->route[ep % N_FAKES];
    int rc = zmq_send(s, to->id, to->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
             zmq_send(s, rd->p, len, (n_extra ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0;
    for (size_t i = 0; i < n_extra && !rc; i++)
        rc = zmq_send(s, zeros, sizeof zeros, (i + 1 < n_extra ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0;
    KV_FUZZ_REQUIRE(!rc, "fake decode worker %d cannot reach the worker: %s", ep % N_FAKES, zmq_strerror(zmq_errno()));
    rd->p += len, rd->left -= len;
    drain_peers(h);
    return 0;
}

static void loop_turn(harness *h, int *steps)
{
    prefill_worker *pw = &h->pw;
    drain_peers(h);
    drain_fakes(h); /* a PrefillDone an ack caused is the tracked task's */
    if (*steps < MAX_STEPS && (pw->cur || pw->head)) {
        int starting = !pw->cur;
        prefill_step(pw);
        (*steps)++;
        if (starting && pw->cur)
            track_start(h, pw->cur);
    }
    drain_fakes(h); /* before the reap: a frame the fakes let go is counted back */
    prefill_reap(pw, 0);
    prefill_close_idle_peers(pw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    harness *h = harness_get();
    prefill_worker *pw = &h->pw;
    kv_pool *pool = h->we.pool;
    kv_fuzz_pool_restart(pool); /* every block is free: the end of the last input says so */
    /* A refusal would have ended the worker; here the next input starts unregistered again. */
    h->ctl.registered = h->ctl.refused = 0, h->ctl.register_at_s = 0;
    kv_fuzz_reader rd = {data, size};
    uint8_t op, len2[2];
    int steps = 0;
    while (kv_fuzz_take(&rd, &op, 1) == 0) {
        if (op % 4 == 0) {
            if (kv_fuzz_take(&rd, len2, 2))
                break;
            size_t len = (size_t)len2[0] | (size_t)len2[1] << 8;
            len = len < rd.left ? len : rd.left;
            on_control(h, rd.p, len);
            rd.p += len, rd.left -= len;
        } else if (op % 4 == 1) {
            if (from_decode(h, &rd))
                break;
        } else if (op % 4 == 2) {
            loop_turn(h, &steps);
        } else {
            release_frames(h);
        }
        drain_fakes(h);
        check_books(h);
    }
    /* The router's end of every task: an Abort each; then the frames let go, the loop run. */
    while (pw->cur || pw->head) {
        char *id = strdup(pw->cur ? pw->cur->id : pw->head->id);
        KV_FUZZ_REQUIRE(id, "out of memory");
        int n_before = pw->n_queued + (pw->cur != NULL);
        Kvserve__Envelope env;
        Kvserve__Abort ab;
        kv_wire_envelope_init(&env);
        kvserve__abort__init(&ab);
        ab.request_id = id, ab.reason = KVSERVE__ERROR_CODE__CANCELLED;
        env.body_case = KVSERVE__ENVELOPE__BODY_ABORT, env.abort = &ab;
        kv_wire_msg m = {.env = &env};
        prefill_on_control(pw, &m, KV_OK, NULL);
        KV_FUZZ_REQUIRE(pw->n_queued + (pw->cur != NULL) == n_before - 1, "an Abort for %s left it", id);
        free(id);
        check_books(h);
    }
    release_frames(h);
    for (int turn = 0; turn < 3; turn++)
        loop_turn(h, &steps);
    check_books(h);
    KV_FUZZ_REQUIRE(!pw->draining && !pw->n_queued && kv_pool_n_available(pool) == pool->n_blocks,
                    "%d of %d blocks free with no task (%s draining)", kv_pool_n_available(pool), pool->n_blocks,
                    pw->draining ? pw->draining->id : "none");
    /* Connections to anything but the fakes go, so the next input finds the same sockets. */
    kv_sender_close_idle(&pw->sender, kv_now_s(), 0, h->fake_peer, N_FAKES, 1);
    track_reset(&h->tr);
    return 0;
}

/* ---- seeds ------------------------------------------------------------------------ */

/* A record of op 0 or 1; -1 when it does not fit. */
static int put_msg(kv_fuzz_writer *w, int kv, uint8_t ep, uint8_t extra, const uint8_t *env, size_t len)
{
    if (!len || len > 0xFFFF || w->left < 5 + len)
        return -1;
    if (kv)
        kv_fuzz_put(w, (uint8_t[5]){1, ep, extra, (uint8_t)len, (uint8_t)(len >> 8)}, 5);
    else
        kv_fuzz_put(w, (uint8_t[3]){0, (uint8_t)len, (uint8_t)(len >> 8)}, 3);
    kv_fuzz_put(w, env, len);
    return 0;
}

static void put_op(kv_fuzz_writer *w, uint8_t op)
{
    if (w->left)
        kv_fuzz_put(w, &op, 1);
}

/* A task as the router would send it: a prompt of valid tokens, destination blocks for it
 * at one fake decode worker, sometimes a deadline of a few ms (it expires on the clock). */
typedef struct life {
    char id[16];
    uint32_t prompt;
    uint8_t ep;
} life;

static size_t pack_task(kv_fuzz_rng *r, const life *l, uint8_t *buf)
{
    Kvserve__Envelope env;
    Kvserve__PrefillTask t;
    Kvserve__SamplingParams sp;
    int32_t tokens[64], dst[8];
    kv_wire_envelope_init(&env);
    kvserve__prefill_task__init(&t);
    t.request_id = (char *)l->id;
    /* One of four prompts, most of the time to the end: full blocks repeat their prefixes. */
    uint32_t variant = kv_fuzz_below(r, 4), own = kv_fuzz_below(r, 2) ? l->prompt : kv_fuzz_below(r, l->prompt);
    for (uint32_t i = 0; i < l->prompt; i++)
        tokens[i] = !i ? 1 : i < own ? (int32_t)((i * 37 + variant * 101) % 512) : (int32_t)kv_fuzz_below(r, 512);
    t.prompt_tokens = tokens, t.n_prompt_tokens = l->prompt;
    size_t need = (l->prompt + 15) / 16;
    for (size_t i = 0; i < 8; i++)
        dst[i] = (int32_t)(100 * l->ep + i * 3);
    t.decode_block_ids = dst, t.n_decode_block_ids = need + kv_fuzz_below(r, (uint32_t)(9 - need));
    t.decode_worker_id = l->ep ? "decode-1" : "decode-0";
    t.decode_kv_endpoint = (char *)fake_ep[l->ep];
    kv_fuzz_sampling(r, &sp);
    sp.top_k = 40, sp.top_p = 0.9f;
    t.sampling = kv_fuzz_below(r, 2) ? &sp : NULL;
    t.ack_deadline_ms = kv_fuzz_below(r, 8) ? 0 : 1 + kv_fuzz_below(r, 3);
    t.sampling_offset = kv_fuzz_below(r, 4);
    env.body_case = KVSERVE__ENVELOPE__BODY_PREFILL, env.prefill = &t;
    return kvserve__envelope__pack(&env, buf);
}

/* The decode worker's verdict: ok with the bytes (now and then a wrong count), or a refusal
 * (one in three of them "session unknown"). */
static size_t pack_ack(kv_fuzz_rng *r, const life *l, int ok, const char *id, uint8_t *buf)
{
    Kvserve__Envelope env;
    Kvserve__KvAck ack;
    Kvserve__Error er;
    kv_wire_envelope_init(&env);
    kvserve__kv_ack__init(&ack);
    ack.request_id = (char *)id;
    ack.ok = (protobuf_c_boolean)ok;
    ack.bytes = (uint64_t)((l->prompt + 15) / 16) * harness_get()->we.block_bytes + (kv_fuzz_below(r, 8) ? 0 : 1);
    if (!ok) {
        kvserve__error__init(&er);
        er.code = kv_fuzz_below(r, 3) ? KVSERVE__ERROR_CODE__KV_CORRUPT : KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN;
        er.message = "fuzz";
        ack.error = kv_fuzz_below(r, 4) ? &er : NULL;
    }
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_ACK, env.kv_ack = &ack;
    return kvserve__envelope__pack(&env, buf);
}

/* Noise for either channel: an Abort, a RegisterAck, a KvHelloReply, "register first". */
static size_t pack_noise(kv_fuzz_rng *r, const char *id, uint8_t *buf)
{
    Kvserve__Envelope env;
    Kvserve__Abort ab;
    Kvserve__RegisterAck ra;
    Kvserve__KvHelloReply hr;
    Kvserve__Error er;
    kv_wire_envelope_init(&env);
    kvserve__error__init(&er);
    er.code = kv_fuzz_below(r, 17), er.request_id = (char *)id, er.message = "register first";
    switch (kv_fuzz_below(r, 4)) {
    case 0:
        kvserve__abort__init(&ab);
        ab.request_id = (char *)id, ab.reason = kv_fuzz_below(r, 17);
        env.body_case = KVSERVE__ENVELOPE__BODY_ABORT, env.abort = &ab;
        break;
    case 1:
        kvserve__register_ack__init(&ra);
        ra.accepted = kv_fuzz_below(r, 32) != 0, ra.heartbeat_interval_ms = kv_fuzz_below(r, 1000);
        ra.error = ra.accepted ? NULL : &er;
        env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER_ACK, env.register_ack = &ra;
        break;
    case 2:
        kvserve__kv_hello_reply__init(&hr);
        hr.session = kv_fuzz_below(r, 2) ? 0 : kv_fuzz_next(r), hr.ok = (protobuf_c_boolean)kv_fuzz_below(r, 2);
        hr.transport = kv_fuzz_below(r, 4), hr.error = hr.ok ? NULL : &er;
        env.body_case = KVSERVE__ENVELOPE__BODY_KV_HELLO_REPLY, env.kv_hello_reply = &hr;
        break;
    default:
        env.body_case = KVSERVE__ENVELOPE__BODY_ERROR, env.error = &er;
    }
    return kvserve__envelope__pack(&env, buf);
}

/* One to three tasks, queued at once or one after the other; each gets the loop turns its
 * prefill needs, then its KvAck from its decode worker (ok seven times in eight), with now
 * and then noise in between: a message of any kind on either channel, an Abort, the
 * frames let go, a duplicate task. */
size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    const kv_fuzz_cluster *cl = &harness_get()->cl;
    kv_fuzz_writer w = {buf, cap};
    static uint8_t env[KV_FUZZ_BUF];
    life lives[3];
    int n_lives = 1 + (int)kv_fuzz_below(r, 3), upfront = kv_fuzz_below(r, 2);
    for (int k = 0; k < n_lives; k++) {
        life *l = &lives[k];
        snprintf(l->id, sizeof l->id, "live-%d", k);
        l->prompt = 1 + kv_fuzz_below(r, kv_fuzz_below(r, 4) ? 40 : 64);
        l->ep = (uint8_t)kv_fuzz_below(r, N_FAKES);
        if (upfront)
            put_msg(&w, 0, 0, 0, env, pack_task(r, l, env));
    }
    for (int k = 0; k < n_lives; k++) {
        life *l = &lives[k];
        if (!upfront)
            put_msg(&w, 0, 0, 0, env, pack_task(r, l, env));
        int turns = (int)(l->prompt + 47) / 48 + 1 + (int)kv_fuzz_below(r, 2);
        for (int t = 0; t < turns; t++) {
            put_op(&w, 2);
            uint32_t what = kv_fuzz_below(r, 16);
            const char *id = lives[kv_fuzz_below(r, (uint32_t)n_lives)].id;
            if (what == 0) {
                int kind = kv_fuzz_kinds[kv_fuzz_below(r, KV_FUZZ_N_KINDS)];
                put_msg(&w, (int)kv_fuzz_below(r, 2), (uint8_t)kv_fuzz_below(r, N_FAKES), (uint8_t)kv_fuzz_below(r, 4),
                        env, kv_fuzz_envelope(r, cl, kind, env));
            } else if (what == 1) {
                put_msg(&w, (int)kv_fuzz_below(r, 2), l->ep, 0, env, pack_noise(r, id, env));
            } else if (what == 2) {
                put_op(&w, 3);
            } else if (what == 3) {
                put_msg(&w, 0, 0, 0, env, pack_task(r, &lives[kv_fuzz_below(r, (uint32_t)n_lives)], env));
            }
        }
        int ok = kv_fuzz_below(r, 8) != 0;
        put_msg(&w, 1, kv_fuzz_below(r, 16) ? l->ep : (uint8_t)!l->ep, 0, env, pack_ack(r, l, ok, l->id, env));
        if (kv_fuzz_below(r, 4) == 0)
            put_op(&w, 3);
    }
    for (int t = kv_fuzz_below(r, 3); t > 0; t--)
        put_op(&w, 2);
    return (size_t)(w.p - buf);
}
