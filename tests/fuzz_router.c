/* fuzz_router: kv-router's message handling driven in-process, on a clock of the input's
 * making, by a sequence of records:
 *   op 0 / 1  a message on the client / control endpoint: the sender (1 byte: one of four
 *             peers per endpoint), the payload frame count (1 byte, mod 4), the envelope's
 *             length (2 bytes LE) and bytes, then each frame's length (1 byte) and bytes;
 *             the envelope goes through kv_wire_decode and router_handle, as a received
 *             message does;
 *   op 2 / 3  the clock moves on (1 byte) x 10 ms / x 1 s, and the router ticks.
 * Properties, besides the sanitizers': after every record the router's books agree with
 * its requests (each worker's active count and promised blocks, the FIFO); at the end, with
 * every peer silent and the clock an hour on, no request and no worker is left (every
 * request ended by its deadline or its worker's death, every silent worker is forgotten),
 * and each client got exactly one final reply per Generate it sent. The clients are real
 * sockets; what goes to workers goes to peers that are not there (ZeroMQ drops it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_fuzz_envelope.h"
#include "kv_fuzz_target.h"
#include "kv_test.h"
#include "model_config.h"
#include "router.h"

#define N_PEERS 4
#define MAX_FRAMES 4
#define END_STEP_S 60.0 /* the silent hour, in ticks this far apart */
#define END_STEPS 60

/* Loaded on the first input and kept: a router_state_init per input would load the
 * tokenizer and bind sockets thousands of times a second. */
typedef struct harness {
    void *zctx;
    router_state st;
    kv_fuzz_cluster cl;
    double clock;
    /* The clients, there to read their replies: per peer, the Generates it sent this input
     * and the final GenerateReplies it got. */
    void *client[N_PEERS];
    long generates[N_PEERS], finals[N_PEERS];
} harness;

static harness *harness_get(void)
{
    static harness h;
    static int ready;
    if (ready)
        return &h;
    const char *dir = kv_fuzz_stories260k("fuzz_router");
    kv_model_config cfg;
    kv_err err;
    if (kv_model_config_load(dir, &cfg, &err) || kv_model_fingerprint(dir, h.cl.fingerprint, &err)) {
        fprintf(stderr, "fuzz_router: %s\n", err.msg);
        exit(1);
    }
    h.cl.n_layers = (uint32_t)cfg.n_layers, h.cl.n_kv_heads = (uint32_t)cfg.n_kv_heads;
    h.cl.head_dim = (uint32_t)cfg.head_dim;
    h.cl.block_bytes = (uint64_t)2 * h.cl.n_layers * h.cl.n_kv_heads * h.cl.head_dim * 16 * 4; /* f32, 16 tokens */
    snprintf(h.cl.kv_endpoint, sizeof h.cl.kv_endpoint, "tcp://127.0.0.1:1");
    router_opts o;
    router_opts_default(&o);
    o.model_dir = dir;
    o.listen = "inproc://fuzz-router-client";
    o.control = "inproc://fuzz-router-control";
    h.zctx = zmq_ctx_new();
    if (!h.zctx || router_state_init(&h.st, &o, h.zctx, &err)) {
        fprintf(stderr, "fuzz_router: router_state_init: %s\n", err.msg);
        exit(1);
    }
    for (unsigned i = 0; i < N_PEERS; i++) {
        char id[16];
        int zero = 0;
        snprintf(id, sizeof id, "client-%u", i);
        h.client[i] = zmq_socket(h.zctx, ZMQ_DEALER);
        if (!h.client[i] || zmq_setsockopt(h.client[i], ZMQ_ROUTING_ID, id, strlen(id)) ||
            zmq_setsockopt(h.client[i], ZMQ_RCVHWM, &zero, sizeof zero) || zmq_connect(h.client[i], o.listen)) {
            fprintf(stderr, "fuzz_router: client socket: %s\n", zmq_strerror(zmq_errno()));
            exit(1);
        }
    }
    h.clock = 1000.0;
    ready = 1;
    return &h;
}

/* ---- properties ------------------------------------------------------------------- */

static void check_books(const router_state *st)
{
    size_t n = 0, queued = 0;
    for (const router_req *r = st->reqs.head; r; r = r->next) {
        n++;
        KV_FUZZ_REQUIRE(r->state != RQ_DONE, "request %s ended but still in the table", r->wire_id);
        int known_d = !r->decode, known_p = !r->prefill;
        for (size_t i = 0; i < st->workers.n; i++) {
            known_d |= st->workers.list[i] == r->decode;
            known_p |= st->workers.list[i] == r->prefill;
        }
        KV_FUZZ_REQUIRE(known_d && known_p, "request %s names a worker that is gone", r->wire_id);
        if (r->in_queue) {
            queued++;
            KV_FUZZ_REQUIRE(r->state == RQ_QUEUED && !r->decode && !r->prefill,
                            "queued request %s in state %d holds a worker", r->wire_id, (int)r->state);
        }
    }
    KV_FUZZ_REQUIRE(n == st->reqs.n && queued == st->reqs.n_queued, "%zu requests (%zu queued) listed, %zu (%zu) counted",
                    n, queued, st->reqs.n, st->reqs.n_queued);
    for (size_t i = 0; i < st->workers.n; i++) {
        const router_worker *wk = st->workers.list[i];
        uint32_t owned = 0;
        uint64_t promised = 0;
        for (const router_req *r = st->reqs.head; r; r = r->next) {
            owned += (r->decode == wk) + (r->prefill == wk);
            if (r->decode == wk && r->state == RQ_RESERVING)
                promised += r->blocks;
        }
        KV_FUZZ_REQUIRE(wk->active == owned, "worker %s: active %u, but %u requests name it", wk->id, wk->active, owned);
        KV_FUZZ_REQUIRE(wk->promised == promised, "worker %s: %llu blocks promised, its reservations ask %llu", wk->id,
                        (unsigned long long)wk->promised, (unsigned long long)promised);
    }
}

/* Reads what the clients got, counting the final replies. */
static void read_replies(harness *h)
{
    for (int i = 0; i < N_PEERS; i++) {
        kv_wire_msg m;
        kv_err err;
        int rc;
        while ((rc = kv_wire_recv(h->client[i], 0, 0, &m, &err)) != KV_ETIMEOUT) {
            KV_FUZZ_REQUIRE(rc == KV_OK, "client-%d got a message it cannot read: %s", i, err.msg);
            if (m.env->body_case == KVSERVE__ENVELOPE__BODY_REPLY &&
                m.env->reply->finish_reason != KVSERVE__FINISH_REASON__FINISH_NONE)
                h->finals[i]++;
            kv_wire_msg_close(&m);
        }
    }
}

/* ---- the input -------------------------------------------------------------------- */

/* One message record (after its op byte). -1 when the input ends inside it. */
static int deliver(harness *h, int control, kv_fuzz_reader *rd)
{
    uint8_t peer, frames, len2[2];
    if (kv_fuzz_take(rd, &peer, 1) || kv_fuzz_take(rd, &frames, 1) || kv_fuzz_take(rd, len2, 2))
        return -1;
    size_t len = (size_t)len2[0] | (size_t)len2[1] << 8;
    if (len > rd->left)
        len = rd->left;
    kv_wire_msg m;
    memset(&m, 0, sizeof m);
    m.route.len = (size_t)snprintf((char *)m.route.id, sizeof m.route.id, "%s-%u", control ? "worker" : "client",
                                   peer % N_PEERS);
    kv_err err;
    int rc = kv_wire_decode(rd->p, len, &m.env, &err);
    rd->p += len, rd->left -= len;
    if (!control && rc == KV_OK && m.env->body_case == KVSERVE__ENVELOPE__BODY_GENERATE)
        h->generates[peer % N_PEERS]++;
    /* Owned as kv_wire_recv's are: kv_wire_msg_close frees them. */
    m.payloads = malloc(MAX_FRAMES * sizeof *m.payloads);
    for (int i = 0; m.payloads && i < frames % MAX_FRAMES; i++) {
        uint8_t n;
        if (kv_fuzz_take(rd, &n, 1) || n > rd->left)
            break;
        zmq_msg_init_size(&m.payloads[i], n);
        memcpy(zmq_msg_data(&m.payloads[i]), rd->p, n);
        rd->p += n, rd->left -= n;
        m.n_payloads++;
    }
    h->st.now = h->clock;
    router_handle(&h->st, control, rc, &m, &err);
    kv_wire_msg_close(&m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    harness *h = harness_get();
    router_state *st = &h->st;
    st->reqs.next_seq = 1; /* the table is empty: wire ids restart, so inputs replay alike */
    memset(h->generates, 0, sizeof h->generates);
    memset(h->finals, 0, sizeof h->finals);
    kv_fuzz_reader rd = {data, size};
    uint8_t op, dt;
    while (kv_fuzz_take(&rd, &op, 1) == 0) {
        if (op % 4 < 2) {
            if (deliver(h, op % 4, &rd))
                break;
        } else {
            if (kv_fuzz_take(&rd, &dt, 1))
                break;
            h->clock += dt * (op % 4 == 2 ? 0.01 : 1.0);
            router_tick(st, h->clock);
        }
        check_books(st);
        read_replies(h);
    }
    for (int i = 0; i < END_STEPS && (st->reqs.n || st->workers.n); i++) {
        h->clock += END_STEP_S;
        router_tick(st, h->clock);
        check_books(st);
    }
    KV_FUZZ_REQUIRE(st->reqs.n == 0 && st->workers.n == 0,
                    "an hour after every peer fell silent: %zu requests and %zu workers left", st->reqs.n,
                    st->workers.n);
    read_replies(h);
    for (int i = 0; i < N_PEERS; i++)
        KV_FUZZ_REQUIRE(h->finals[i] == h->generates[i], "client-%d sent %ld Generates and got %ld final replies", i,
                        h->generates[i], h->finals[i]);
    return 0;
}

/* ---- seeds ------------------------------------------------------------------------ */

static int put_message(kv_fuzz_writer *w, int control, uint8_t peer, const uint8_t *env, size_t len)
{
    if (len > 0xFFFF || w->left < 5 + len)
        return -1;
    kv_fuzz_put(w, (uint8_t[5]){(uint8_t)control, peer, 0, (uint8_t)len, (uint8_t)(len >> 8)}, 5);
    kv_fuzz_put(w, env, len);
    return 0;
}

/* A worker of the cluster: the real layout and fingerprint, room for many requests. */
static size_t pack_register(const kv_fuzz_cluster *cl, const char *id, int role, uint8_t *buf)
{
    Kvserve__Envelope env;
    Kvserve__Register reg;
    Kvserve__KvLayout lay;
    kv_wire_envelope_init(&env);
    kvserve__register__init(&reg);
    kvserve__kv_layout__init(&lay);
    lay.n_layers = cl->n_layers, lay.n_kv_heads = cl->n_kv_heads, lay.head_dim = cl->head_dim;
    lay.block_size = 16, lay.dtype = "f32", lay.block_bytes = cl->block_bytes;
    reg.worker_id = (char *)id;
    reg.role = role;
    reg.model = "stories260K";
    reg.model_fingerprint = (char *)cl->fingerprint;
    reg.kv_endpoint = (char *)cl->kv_endpoint;
    reg.device = "cpu";
    reg.layout = &lay;
    reg.kv_blocks_total = 64;
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    return kvserve__envelope__pack(&env, buf);
}

/* The clock moves on: op 2 (x 10 ms) or 3 (x 1 s). */
static void put_tick(kv_fuzz_writer *w, int op, uint8_t dt)
{
    if (w->left >= 2)
        kv_fuzz_put(w, (uint8_t[2]){(uint8_t)op, dt}, 2);
}

/* One request's life, as its client and workers would tell it: Generate, ReserveReply from
 * the decode worker (peer 1), PrefillDone from the prefill worker (peer 0), TokenEvents up
 * to max_tokens. Its wire id is "<id>@<seq>", seq counting the Generates the router took. */
typedef struct life {
    char id[16], wire[32];
    int32_t prompt[40];
    uint32_t n_prompt, max_tokens, sent;
    uint32_t logprobs;              /* GenerateRequest.logprobs: the TokenEvents carry them */
    int stage, client;
} life;

static void life_init(life *l, kv_fuzz_rng *r, int k)
{
    memset(l, 0, sizeof *l);
    snprintf(l->id, sizeof l->id, "req-%d", k);
    snprintf(l->wire, sizeof l->wire, "req-%d@%d", k, k + 1);
    l->n_prompt = 1 + kv_fuzz_below(r, 40);
    for (uint32_t i = 0; i < l->n_prompt; i++)
        l->prompt[i] = (int32_t)kv_fuzz_below(r, 512);
    l->max_tokens = 1 + kv_fuzz_below(r, 24);
    l->client = (int)kv_fuzz_below(r, N_PEERS);
    l->logprobs = kv_fuzz_below(r, 3) ? 0 : 1 + kv_fuzz_below(r, 21);
}

/* Packs the life's next message into env; *control and *peer say where it goes. 0 when
 * the life is over. */
static size_t life_next(life *l, kv_fuzz_rng *r, uint8_t *env, int *control, uint8_t *peer)
{
    Kvserve__Envelope e;
    Kvserve__GenerateRequest g;
    Kvserve__ReserveReply rr;
    Kvserve__PrefillDone pd;
    Kvserve__TokenEvent te;
    Kvserve__Error er;
    int32_t ids[64];
    kv_wire_envelope_init(&e);
    *control = 1, *peer = 1;
    switch (l->stage++) {
    case 0:
        kvserve__generate_request__init(&g);
        g.request_id = l->id;
        g.prompt_tokens = l->prompt, g.n_prompt_tokens = l->n_prompt;
        g.max_tokens = l->max_tokens;
        g.stream = (protobuf_c_boolean)kv_fuzz_below(r, 2);
        g.ignore_eos = 1;
        g.logprobs = l->logprobs;
        g.prompt_logprobs = l->logprobs != 0;
        e.body_case = KVSERVE__ENVELOPE__BODY_GENERATE, e.generate = &g;
        *control = 0, *peer = (uint8_t)l->client;
        break;
    case 1: {
        kvserve__reserve_reply__init(&rr);
        rr.request_id = l->wire;
        rr.ok = 1;
        uint32_t need = router_blocks_for(l->n_prompt + l->max_tokens, 16);
        for (uint32_t i = 0; i < need && i < 64; i++)
            ids[i] = (int32_t)i;
        rr.block_ids = ids, rr.n_block_ids = need;
        e.body_case = KVSERVE__ENVELOPE__BODY_RESERVE_REPLY, e.reserve_reply = &rr;
        break;
    }
    case 2:
        kvserve__prefill_done__init(&pd);
        pd.request_id = l->wire;
        pd.ok = kv_fuzz_below(r, 6) != 0;
        if (!pd.ok) { /* mostly the failures of a KV hand-off, which re-plan the request */
            static const int codes[] = {KVSERVE__ERROR_CODE__NO_TRANSPORT, KVSERVE__ERROR_CODE__KV_CORRUPT,
                                        KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN, KVSERVE__ERROR_CODE__WORKER_FAILED,
                                        KVSERVE__ERROR_CODE__INTERNAL};
            kvserve__error__init(&er);
            er.code = codes[kv_fuzz_below(r, 5)];
            er.request_id = l->wire;
            er.message = "fuzz";
            pd.error = &er;
        }
        pd.first_token = (int32_t)kv_fuzz_below(r, 512);
        pd.kv_bytes = 1000;
        e.body_case = KVSERVE__ENVELOPE__BODY_PREFILL_DONE, e.prefill_done = &pd;
        *peer = 0;
        break;
    default:
        if (l->sent >= l->max_tokens)
            return 0;
        kvserve__token_event__init(&te);
        te.request_id = l->wire;
        te.index = l->sent;
        te.n_tokens = 1 + kv_fuzz_below(r, 4);
        if (te.n_tokens > l->max_tokens - l->sent)
            te.n_tokens = l->max_tokens - l->sent;
        for (size_t i = 0; i < te.n_tokens; i++)
            ids[i] = (int32_t)kv_fuzz_below(r, 512);
        te.tokens = ids;
        if (l->logprobs) { /* as D sends them: one per token, the prompt's with index 0 */
            static kv_fuzz_lp lp, plp;
            te.logprobs = kv_fuzz_logprobs(r, &lp, te.n_tokens, (int)l->logprobs - 1, 512, 0);
            te.n_logprobs = te.n_tokens;
            if (l->sent == 0 && l->n_prompt - 1 <= KV_FUZZ_LP_MAX) {
                te.n_prompt_logprobs = l->n_prompt - 1;
                te.prompt_logprobs = kv_fuzz_logprobs(r, &plp, te.n_prompt_logprobs, (int)l->logprobs - 1, 512, 0);
            }
        }
        l->sent += (uint32_t)te.n_tokens;
        if (l->sent == l->max_tokens)
            te.finish_reason = KVSERVE__FINISH_REASON__FINISH_LENGTH;
        e.body_case = KVSERVE__ENVELOPE__BODY_TOKENS, e.tokens = &te;
        break;
    }
    return kvserve__envelope__pack(&e, env);
}

/* Two workers (a prefill worker on peer 0, a decode worker on peer 1); up to three requests
 * living their lives interleaved; between their messages, now and then a message of any
 * kind (one in eight to the wrong endpoint), a heartbeat, or the clock moving on. */
size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    const kv_fuzz_cluster *cl = &harness_get()->cl;
    kv_fuzz_writer w = {buf, cap};
    static uint8_t env[KV_FUZZ_BUF];
    put_message(&w, 1, 0, env, pack_register(cl, "prefill-0", KVSERVE__WORKER_ROLE__ROLE_PREFILL, env));
    put_message(&w, 1, 1, env, pack_register(cl, "decode-0", KVSERVE__WORKER_ROLE__ROLE_DECODE, env));
    life lives[3];
    int n_lives = (int)kv_fuzz_below(r, 4), started = 0;
    for (int k = 0; k < n_lives; k++)
        life_init(&lives[k], r, k);
    for (int steps = 0; steps < 80; steps++) {
        int control;
        uint8_t peer;
        size_t len;
        uint32_t what = kv_fuzz_below(r, 8);
        if (what == 0) {
            /* Mostly milliseconds; a few seconds at times (a worker's timeout is 5 s). */
            int seconds = kv_fuzz_below(r, 8) == 0;
            put_tick(&w, seconds ? 3 : 2, (uint8_t)kv_fuzz_below(r, seconds ? 8 : 50));
            continue;
        } else if (what == 1) {
            int kind = kv_fuzz_kinds[kv_fuzz_below(r, KV_FUZZ_N_KINDS)];
            control = kind != KVSERVE__ENVELOPE__BODY_GENERATE && kind != KVSERVE__ENVELOPE__BODY_CANCEL &&
                      kind != KVSERVE__ENVELOPE__BODY_STATUS;
            if (kv_fuzz_below(r, 8) == 0)
                control = !control;
            peer = (uint8_t)kv_fuzz_below(r, control ? 2 : N_PEERS);
            len = kv_fuzz_envelope(r, cl, kind, env);
        } else {
            /* Lives start in order (their seqs are fixed), then interleave. */
            int k = started < n_lives && kv_fuzz_below(r, 2) ? started : (int)kv_fuzz_below(r, (uint32_t)started + 1);
            if (k >= n_lives)
                continue;
            if (k == started)
                started++;
            len = life_next(&lives[k], r, env, &control, &peer);
            if (!len)
                continue;
            if (put_message(&w, control, peer, env, len))
                break;
            if (lives[k].stage == 1) /* the router schedules on its tick */
                put_tick(&w, 2, 0);
            continue;
        }
        if (put_message(&w, control, peer, env, len))
            break;
    }
    return (size_t)(w.p - buf);
}
