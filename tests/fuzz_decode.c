/* fuzz_decode: kv-decode's two inputs driven in-process (a CPU worker on stories260K, a
 * pool of 64 blocks) by a sequence of records:
 *   op 0  a control message (the router's): the envelope's length (2 bytes LE) and bytes,
 *         through kv_wire_decode and decode_on_control, as the main loop does;
 *   op 1  a message on the KV endpoint: the sender (1 byte: one of two prefill workers),
 *         a flags byte (bits 0-2: payload frame count; bit 7: fill in the KvChunk's
 *         checksums as the CRC-32C of the frames, so the fuzzer gets past that check), the
 *         envelope's length (2 bytes LE) and bytes, then per frame a size code (1 byte: up
 *         to 0xFC that many bytes; 0xFD / 0xFE / 0xFF one block less a byte / exactly one
 *         block / one block and a byte), a pattern length (1 byte) and the pattern, repeated
 *         to fill the frame; it goes through kv_receiver_on_msg;
 *   op 2  a decode step (at most MAX_STEPS with a batch per input), kv_links_poll and
 *         decode_expire, as one turn of the main loop.
 * Replies on the KV endpoint go to peers that are not there (ZeroMQ drops them); what the
 * worker tells the router lands on a ROUTER bound for it and is thrown away. Block ids start
 * from a fresh pool's order on every input, so an input replays alike (but for reservations
 * with deadlines of a few ms: those expire by the wall clock). Properties, besides the
 * sanitizers': after every record each block is either free or held by exactly one request
 * (waiting: its reserved ids; running: its block table), once; requests are where their
 * state says, under distinct ids; a CPU worker holds no GPU session. A KvChunk that was
 * taken had block-sized frames matching their checksums, named the request's next reserved
 * blocks, and its bytes are in those blocks now; its last chunk started the request. At the
 * end, with every request dropped as an Abort drops it, every block is free. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "decode.h"
#include "kv_fuzz_envelope.h"
#include "kv_fuzz_worker.h"
#include "kv_fuzz_target.h"
#include "kv_test.h"
#include "model_config.h"
#include "worker_loop.h"

#define N_PEERS 2
#define FRAMES 0x07  /* flags: the frame count */
#define FIX_CRC 0x80 /* flags: fill in the checksums */
#define MAX_STEPS 24 /* a step decodes up to 8 sequences of stories260K: well under 1 ms */
#define CONTROL_EP "inproc://fuzz-decode-control"

/* Set up on the first input and kept: loading the model, binding sockets and allocating
 * the pool per input would cost far more than the input. */
typedef struct harness {
    void *zctx, *router; /* the router: a ROUTER nobody reads, but bound, so sends never wait */
    worker_flags f;
    worker_engine we;
    worker_control ctl;
    decode_worker dw;
    kv_fuzz_cluster cl;
    uint8_t *held; /* per block: check_books's ledger */
} harness;

static harness *harness_get(void)
{
    static harness h;
    static int ready;
    if (ready)
        return &h;
    char *dir = (char *)kv_fuzz_stories260k("fuzz_decode");
    kv_err err;
    /* One thread: the model is tiny, and a libFuzzer process is one core. */
    char *argv[] = {"fuzz_decode", "--model", dir, "--device", "cpu", "--threads", "1", "--kv-blocks", "64",
                    "--max-batch", "8", "--kv-listen", "inproc://fuzz-decode-kv", "--router", CONTROL_EP,
                    "--id", "decode-0", NULL};
    if (worker_flags_parse(KV_WORKER_DECODE, (int)(sizeof argv / sizeof *argv) - 1, argv, &h.f))
        exit(1);
    decode_worker *dw = &h.dw;
    dw->f = &h.f, dw->we = &h.we, dw->ctl = &h.ctl;
    h.zctx = zmq_ctx_new();
    kv_err_set(&err, KV_ENOMEM, "out of memory or sockets");
    if (worker_engine_open(&h.f, &h.we, &err) || !h.zctx || !(h.router = zmq_socket(h.zctx, ZMQ_ROUTER)) ||
        zmq_bind(h.router, CONTROL_EP) || !(dw->kv_sock = zmq_socket(h.zctx, ZMQ_ROUTER)) ||
        (worker_sock_defaults(dw->kv_sock, 0), kv_receiver_bind(dw, &err)) ||
        worker_control_open(&h.ctl, h.zctx, &h.f, &h.we, dw->kv_endpoint, &err) || decode_alloc_batch(dw) ||
        !(h.held = malloc((size_t)h.we.pool->n_blocks))) {
        fprintf(stderr, "fuzz_decode: set-up: %s\n", err.msg);
        exit(1);
    }
    kv_fuzz_cluster_of(&h.we, dw->kv_endpoint, &h.cl);
    ready = 1;
    return &h;
}

/* ---- properties ------------------------------------------------------------------- */

static void check_books(harness *h)
{
    const decode_worker *dw = &h->dw;
    kv_fuzz_ledger ledger = {h->we.pool, h->held};
    kv_fuzz_ledger_open(&ledger);
    for (int k = 0; k < 2; k++) {
        const decode_list *l = k ? &dw->running : &dw->waiting;
        for (int i = 0; i < l->n; i++) {
            const decode_req *r = l->v[i];
            KV_FUZZ_REQUIRE(decode_list_find(l, r->id) == i && (k || decode_list_find(&dw->running, r->id) < 0),
                            "request id %s listed twice", r->id);
            if (!k) {
                KV_FUZZ_REQUIRE(r->state == DR_WAIT_KV && r->blocks && r->n_blocks > 0 && !r->seq.n_blocks &&
                                    r->blocks_received <= r->n_prompt_blocks && r->n_prompt_blocks <= r->n_blocks,
                                "waiting request %s: state %d, %d blocks, %d of %d prompt blocks received", r->id,
                                (int)r->state, r->n_blocks, r->blocks_received, r->n_prompt_blocks);
                kv_fuzz_ledger_hold(&ledger, r->id, r->blocks, r->n_blocks);
            } else {
                KV_FUZZ_REQUIRE(r->state == DR_RUNNING && !r->blocks, "running request %s in state %d", r->id,
                                (int)r->state);
                kv_fuzz_ledger_hold(&ledger, r->id, r->seq.blocks, r->seq.n_blocks);
            }
        }
    }
    kv_fuzz_ledger_close(&ledger);
    KV_FUZZ_REQUIRE(!dw->links, "a CPU worker holds a GPU session with %s", dw->links->prefill_id);
}

/* r (still listed: running or not) took chunk c: what the receiver promises to have
 * checked, and done. */
static void check_taken(harness *h, const decode_req *r, int running, int32_t received, const Kvserve__KvChunk *c,
                        const kv_wire_msg *m)
{
    size_t nb = c->n_block_ids, bb = h->we.block_bytes;
    const int32_t *table = running ? r->seq.blocks : r->blocks;
    KV_FUZZ_REQUIRE(c->transport == KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ && m->n_payloads == nb &&
                        c->n_checksums == nb && c->first_block == (uint32_t)received &&
                        r->blocks_received == received + (int32_t)nb && r->blocks_received <= r->n_prompt_blocks,
                    "request %s took a chunk over %d: %zu ids, %zu checksums, %zu frames, blocks %u.. after %d",
                    r->id, (int)c->transport, nb, c->n_checksums, m->n_payloads, c->first_block, received);
    KV_FUZZ_REQUIRE(running == (int)c->last, "request %s %s after a chunk with last=%d", r->id,
                    running ? "runs" : "waits", (int)c->last);
    for (size_t k = 0; k < nb; k++) {
        zmq_msg_t *f = &m->payloads[k];
        KV_FUZZ_REQUIRE(c->block_ids[k] == table[c->first_block + k], "frame %zu went to block %d, not %d", k,
                        c->block_ids[k], table[c->first_block + k]);
        KV_FUZZ_REQUIRE(zmq_msg_size(f) == bb && kv_crc32c(zmq_msg_data(f), bb) == c->checksums[k],
                        "frame %zu of %zu bytes (a block has %zu) taken with checksum %08x", k, zmq_msg_size(f), bb,
                        c->checksums[k]);
        KV_FUZZ_REQUIRE(!memcmp(kv_pool_block_addr(h->we.pool, c->block_ids[k]), zmq_msg_data(f), bb),
                        "block %d does not hold frame %zu", c->block_ids[k], k);
    }
}

/* ---- the input -------------------------------------------------------------------- */

static int take_frame(kv_fuzz_reader *rd, size_t block_bytes, zmq_msg_t *f)
{
    uint8_t code, n;
    if (kv_fuzz_take(rd, &code, 1) || kv_fuzz_take(rd, &n, 1) || n > rd->left)
        return -1;
    size_t size = code < 0xFD ? code : block_bytes + code - 0xFE;
    zmq_msg_init_size(f, size);
    uint8_t *d = zmq_msg_data(f);
    size_t have = n < size ? n : size;
    memcpy(d, rd->p, have);
    if (!n)
        memset(d, 0, size);
    /* Doubling copies: seven block-sized frames a record stay cheap in a -O0 fuzz build. */
    for (; have && have < size; have *= 2)
        memcpy(d + have, d, have < size - have ? have : size - have);
    rd->p += n, rd->left -= n;
    return 0;
}

/* One record of op 0 or 1 (after its op byte). -1 when the input ends inside it. */
static int deliver(harness *h, int kv, kv_fuzz_reader *rd)
{
    decode_worker *dw = &h->dw;
    uint8_t peer = 0, flags = 0, len2[2];
    if ((kv && (kv_fuzz_take(rd, &peer, 1) || kv_fuzz_take(rd, &flags, 1))) || kv_fuzz_take(rd, len2, 2))
        return -1;
    kv_wire_msg m;
    memset(&m, 0, sizeof m);
    if (kv)
        m.route.len = (size_t)snprintf((char *)m.route.id, sizeof m.route.id, "prefill-%u", peer % N_PEERS);
    size_t len = (size_t)len2[0] | (size_t)len2[1] << 8;
    if (len > rd->left)
        len = rd->left;
    kv_err err;
    int rc = kv_wire_decode(rd->p, len, &m.env, &err);
    rd->p += len, rd->left -= len;
    zmq_msg_t payloads[FRAMES];
    m.payloads = payloads;
    while (m.n_payloads < (size_t)(flags & FRAMES) && !take_frame(rd, h->we.block_bytes, &payloads[m.n_payloads]))
        m.n_payloads++;
    Kvserve__KvChunk *c = kv && !rc && m.env->body_case == KVSERVE__ENVELOPE__BODY_KV_CHUNK ? m.env->kv_chunk : NULL;
    for (size_t i = 0; c && (flags & FIX_CRC) && i < c->n_checksums && i < m.n_payloads; i++)
        c->checksums[i] = kv_crc32c(zmq_msg_data(&payloads[i]), zmq_msg_size(&payloads[i]));
    int at = c ? decode_list_find(&dw->waiting, c->request_id) : -1;
    uint32_t seq = at >= 0 ? dw->waiting.v[at]->next_seq : 0;
    int32_t received = at >= 0 ? dw->waiting.v[at]->blocks_received : 0;
    if (kv)
        kv_receiver_on_msg(dw, &m, rc, &err);
    else
        decode_on_control(dw, &m, rc, &err);
    /* Still listed under its id it is the same request (a KV message creates none); gone,
     * it was refused or started and finished at once: nothing to look at then. */
    int running = at >= 0 ? decode_list_find(&dw->running, c->request_id) : -1;
    at = at >= 0 ? decode_list_find(&dw->waiting, c->request_id) : -1;
    const decode_req *r = at >= 0 ? dw->waiting.v[at] : running >= 0 ? dw->running.v[running] : NULL;
    if (r && r->next_seq != seq) {
        KV_FUZZ_REQUIRE(r->next_seq == seq + 1 && c->seq == seq, "chunk %u taken as %u (next %u)", c->seq, seq,
                        r->next_seq);
        check_taken(h, r, running >= 0, received, c, &m);
    }
    if (m.env)
        kvserve__envelope__free_unpacked(m.env, NULL);
    for (size_t i = 0; i < m.n_payloads; i++)
        zmq_msg_close(&payloads[i]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    harness *h = harness_get();
    decode_worker *dw = &h->dw;
    kv_pool *pool = h->we.pool;
    kv_fuzz_pool_restart(pool); /* every block is free: the end of the last input says so */
    kv_fuzz_reader rd = {data, size};
    uint8_t op;
    int steps = 0;
    while (kv_fuzz_take(&rd, &op, 1) == 0) {
        if (op % 3 < 2) {
            if (deliver(h, op % 3, &rd))
                break;
        } else {
            if (dw->running.n && steps < MAX_STEPS) {
                decode_step(dw);
                steps++;
            }
            kv_links_poll(dw);
            decode_expire(dw);
        }
        check_books(h);
    }
    while (dw->waiting.n || dw->running.n) {
        decode_list *l = dw->waiting.n ? &dw->waiting : &dw->running;
        KV_FUZZ_REQUIRE(decode_drop(dw, l->v[l->n - 1]->id, "fuzz input over"), "a listed request was not found");
        check_books(h);
    }
    KV_FUZZ_REQUIRE(kv_pool_n_available(pool) == pool->n_blocks, "%d of %d blocks free with no request",
                    kv_pool_n_available(pool), pool->n_blocks);
    zmq_msg_t sent; /* what the worker told the router: nobody reads it */
    zmq_msg_init(&sent);
    while (zmq_msg_recv(&sent, h->router, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&sent);
    return 0;
}

/* ---- seeds ------------------------------------------------------------------------ */

/* A record of op 0 or 1; a KV one with (flags & FRAMES) frames of size code `code`, each
 * a short random pattern. -1 when it does not fit. */
static int put_msg(kv_fuzz_writer *w, kv_fuzz_rng *r, int kv, uint8_t peer, uint8_t flags, const uint8_t *env, size_t len,
                   uint8_t code)
{
    int n = kv ? flags & FRAMES : 0;
    if (!len || len > 0xFFFF || w->left < 5 + len + (size_t)n * 6)
        return -1;
    uint8_t hdr[5] = {(uint8_t)kv, peer, flags, (uint8_t)len, (uint8_t)(len >> 8)};
    if (kv)
        kv_fuzz_put(w, hdr, 5);
    else
        kv_fuzz_put(w, (uint8_t[3]){0, hdr[3], hdr[4]}, 3);
    kv_fuzz_put(w, env, len);
    for (int i = 0; i < n; i++) {
        uint8_t frame[6] = {code, 4};
        for (int j = 2; j < 6; j++)
            frame[j] = (uint8_t)kv_fuzz_next(r);
        kv_fuzz_put(w, frame, sizeof frame);
    }
    return 0;
}

/* A ReserveRequest: a plausible one, or (noisy) one with values to refuse or to expire. */
static size_t pack_reserve(kv_fuzz_rng *r, const char *id, uint32_t prompt, uint32_t max_tokens, int ignore_eos,
                           uint32_t logprobs, int noisy, uint8_t *buf)
{
    Kvserve__Envelope env;
    Kvserve__ReserveRequest rr;
    Kvserve__SamplingParams sp;
    kv_wire_envelope_init(&env);
    kvserve__reserve_request__init(&rr);
    rr.request_id = (char *)id;
    rr.prompt_tokens = prompt, rr.max_tokens = max_tokens;
    rr.ignore_eos = (protobuf_c_boolean)ignore_eos;
    kv_fuzz_sampling(r, &sp);
    if (!noisy)
        sp.top_k = 40, sp.top_p = 0.9f;
    rr.sampling = kv_fuzz_below(r, 2) ? &sp : NULL;
    rr.logprobs = noisy ? kv_fuzz_below(r, 24) : logprobs;
    if (noisy) {
        rr.transfer_deadline_ms = kv_fuzz_below(r, 2) ? kv_fuzz_below(r, 3) : 0;
        rr.sampling_offset = kv_fuzz_u32(r);
    }
    env.body_case = KVSERVE__ENVELOPE__BODY_RESERVE, env.reserve = &rr;
    return kvserve__envelope__pack(&env, buf);
}

/* A request as a router and its prefill worker would tell it: reserved first (a fresh pool
 * hands out ids in order: its blocks are first_id..), then its prompt's KV in chunks. */
typedef struct life {
    char id[16];
    uint32_t prompt, max_tokens, seq;
    int32_t first_id, n_prompt_blocks, sent;
    uint32_t logprobs;          /* ReserveRequest.logprobs: the last chunk carries the first token's */
    uint8_t peer;
} life;

static size_t pack_chunk(kv_fuzz_rng *r, life *l, int32_t nb, uint8_t *buf)
{
    Kvserve__Envelope env;
    Kvserve__KvChunk kc;
    int32_t ids[FRAMES];
    uint32_t sums[FRAMES] = {0}; /* the record's FIX_CRC fills them in */
    kv_wire_envelope_init(&env);
    kvserve__kv_chunk__init(&kc);
    kc.request_id = l->id;
    kc.prefill_worker_id = l->peer ? "prefill-1" : "prefill-0";
    kc.first_block = (uint32_t)l->sent;
    for (int32_t i = 0; i < nb; i++)
        ids[i] = l->first_id + l->sent + i;
    kc.block_ids = ids, kc.n_block_ids = (size_t)nb;
    kc.checksums = sums, kc.n_checksums = (size_t)nb;
    l->sent += nb;
    kc.n_tokens = (uint32_t)l->sent * 16 < l->prompt ? (uint32_t)l->sent * 16 : l->prompt;
    kc.last = l->sent == l->n_prompt_blocks;
    kc.first_token = kc.last ? (int32_t)kv_fuzz_below(r, 512) : 0;
    static kv_fuzz_lp lp, plp;
    if (kc.last && l->logprobs) { /* as a prefill worker sends them; now and then malformed */
        int noisy = kv_fuzz_below(r, 8) == 0;
        kc.first_logprobs = kv_fuzz_logprobs(r, &lp, 1, (int)l->logprobs - 1, 512, noisy)[0];
        if (l->prompt - 1 <= KV_FUZZ_LP_MAX && kv_fuzz_below(r, 2)) {
            kc.n_prompt_logprobs = l->prompt - 1;
            kc.prompt_logprobs = kv_fuzz_logprobs(r, &plp, kc.n_prompt_logprobs, (int)l->logprobs - 1, 512, noisy);
        }
    }
    kc.seq = l->seq++;
    env.body_case = KVSERVE__ENVELOPE__BODY_KV_CHUNK, env.kv_chunk = &kc;
    return kvserve__envelope__pack(&env, buf);
}

/* Control noise: an Abort, the router forgetting a request, or a ReserveRequest to refuse. */
static size_t pack_control_noise(kv_fuzz_rng *r, uint8_t *buf)
{
    static const char *const ids[] = {"live-0", "live-1", "live-2", "live-3", "fuzz-1", ""};
    const char *id = ids[kv_fuzz_below(r, sizeof ids / sizeof *ids)];
    Kvserve__Envelope env;
    Kvserve__Abort ab;
    Kvserve__Error er;
    kv_wire_envelope_init(&env);
    switch (kv_fuzz_below(r, 3)) {
    case 0:
        kvserve__abort__init(&ab);
        ab.request_id = (char *)id, ab.reason = kv_fuzz_below(r, 17);
        env.body_case = KVSERVE__ENVELOPE__BODY_ABORT, env.abort = &ab;
        break;
    case 1:
        kvserve__error__init(&er);
        er.code = kv_fuzz_below(r, 2) ? KVSERVE__ERROR_CODE__UNKNOWN_REQUEST : kv_fuzz_below(r, 17);
        er.request_id = (char *)id, er.message = kv_fuzz_below(r, 4) ? "fuzz" : "register first";
        env.body_case = KVSERVE__ENVELOPE__BODY_ERROR, env.error = &er;
        break;
    default:
        return pack_reserve(r, id, kv_fuzz_u32(r), kv_fuzz_u32(r), 0, 0, 1, buf);
    }
    return kvserve__envelope__pack(&env, buf);
}

/* One to three requests reserved, then their KV in chunks of one to three real-sized
 * blocks (checksums filled in, seven times in eight), interleaved with decode steps and now
 * and then noise: a message of any kind (KV kinds on the KV endpoint, one in eight on the
 * other one), an Abort, an Error, a ReserveRequest to refuse. */
size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    const kv_fuzz_cluster *cl = &harness_get()->cl;
    kv_fuzz_writer w = {buf, cap};
    static uint8_t env[KV_FUZZ_BUF];
    life lives[3];
    int n_lives = 1 + (int)kv_fuzz_below(r, 3);
    int32_t next_id = 0;
    for (int k = 0; k < n_lives; k++) {
        life *l = &lives[k];
        memset(l, 0, sizeof *l);
        snprintf(l->id, sizeof l->id, "live-%d", k);
        l->prompt = 1 + kv_fuzz_below(r, 60);
        l->max_tokens = 1 + kv_fuzz_below(r, 16);
        l->n_prompt_blocks = (int32_t)(l->prompt + 15) / 16;
        l->first_id = next_id;
        next_id += (int32_t)(l->prompt + l->max_tokens + 15) / 16;
        l->peer = (uint8_t)kv_fuzz_below(r, N_PEERS);
        l->logprobs = kv_fuzz_below(r, 3) ? 0 : 1 + kv_fuzz_below(r, 21);
        size_t len = pack_reserve(r, l->id, l->prompt, l->max_tokens, kv_fuzz_below(r, 4) != 0, l->logprobs, 0, env);
        put_msg(&w, r, 0, 0, 0, env, len, 0);
    }
    static const uint8_t codes[] = {0xFD, 0xFF, 0, 16, 255 - 3};
    for (int steps = 0; steps < 60; steps++) {
        uint32_t what = kv_fuzz_below(r, 10);
        int k = (int)kv_fuzz_below(r, (uint32_t)n_lives);
        life *l = &lives[k];
        if (what < 2 || (what >= 4 && l->sent == l->n_prompt_blocks)) {
            if (w.left)
                kv_fuzz_put(&w, (uint8_t[1]){2}, 1);
        } else if (what == 2) {
            int kind = kv_fuzz_kinds[kv_fuzz_below(r, KV_FUZZ_N_KINDS)];
            int kv = kind == KVSERVE__ENVELOPE__BODY_KV_CHUNK || kind == KVSERVE__ENVELOPE__BODY_KV_HELLO ||
                     kind == KVSERVE__ENVELOPE__BODY_KV_NCCL_INIT || kind == KVSERVE__ENVELOPE__BODY_KV_ACK;
            uint8_t flags = (uint8_t)(kv_fuzz_below(r, FRAMES + 1) | (kv_fuzz_below(r, 2) ? FIX_CRC : 0));
            uint8_t code = kv_fuzz_below(r, 2) ? 0xFE : codes[kv_fuzz_below(r, sizeof codes)];
            put_msg(&w, r, kv_fuzz_below(r, 8) ? kv : !kv, (uint8_t)kv_fuzz_below(r, N_PEERS), flags, env,
                    kv_fuzz_envelope(r, cl, kind, env), code);
        } else if (what == 3) {
            put_msg(&w, r, 0, 0, 0, env, pack_control_noise(r, env), 0);
        } else {
            int32_t nb = 1 + (int32_t)kv_fuzz_below(r, 3);
            if (nb > l->n_prompt_blocks - l->sent)
                nb = l->n_prompt_blocks - l->sent;
            uint8_t flags = (uint8_t)(nb | (kv_fuzz_below(r, 8) ? FIX_CRC : 0));
            uint8_t code = kv_fuzz_below(r, 16) ? 0xFE : codes[kv_fuzz_below(r, sizeof codes)];
            if (put_msg(&w, r, 1, l->peer, flags, env, pack_chunk(r, l, nb, env), code))
                break;
        }
    }
    return (size_t)(w.p - buf);
}
