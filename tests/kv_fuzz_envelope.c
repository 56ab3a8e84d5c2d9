/* The plausible messages of the fuzz scenarios: an envelope of any body kind, with random
 * contents that a handler mostly accepts (ids of live requests, the cluster's KV layout and
 * model fingerprint) mixed with values it must refuse. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kv_fuzz_envelope.h"
#include "kv_wire.h"

const int kv_fuzz_kinds[KV_FUZZ_N_KINDS] = {
    KVSERVE__ENVELOPE__BODY_ERROR,         KVSERVE__ENVELOPE__BODY_GENERATE,     KVSERVE__ENVELOPE__BODY_CANCEL,
    KVSERVE__ENVELOPE__BODY_STATUS,        KVSERVE__ENVELOPE__BODY_REGISTER,     KVSERVE__ENVELOPE__BODY_HEARTBEAT,
    KVSERVE__ENVELOPE__BODY_RESERVE_REPLY, KVSERVE__ENVELOPE__BODY_PREFILL_DONE, KVSERVE__ENVELOPE__BODY_TOKENS,
    KVSERVE__ENVELOPE__BODY_KV_CHUNK,      KVSERVE__ENVELOPE__BODY_KV_HELLO,     KVSERVE__ENVELOPE__BODY_KV_NCCL_INIT,
    KVSERVE__ENVELOPE__BODY_KV_ACK,
};

static char *rnd_id(kv_fuzz_rng *f)
{
    /* The cluster fuzz's live requests, and their wire ids ("<id>@<seq>") at a router that
     * has not re-planned them. */
    static char *const ids[] = {"live-0",   "live-1",   "live-2", "live-3",    "fuzz-1",   "",
                                "live-0@1", "live-1@2", "fuzz-1@3", "prefill-0", "decode-0"};
    return ids[kv_fuzz_below(f, sizeof ids / sizeof *ids)];
}

static void fill_i32(kv_fuzz_rng *f, int32_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) v[i] = kv_fuzz_i32(f);
}

/* One envelope of body `kind` (a KVSERVE__ENVELOPE__BODY_* value) with random contents,
 * packed into buf; returns its length (0 if it would not fit). */
size_t kv_fuzz_envelope(kv_fuzz_rng *f, const kv_fuzz_cluster *cl, int kind, uint8_t *buf)
{
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    Kvserve__Error er;
    Kvserve__GenerateRequest g;
    Kvserve__CancelRequest cancel;
    Kvserve__StatusRequest status;
    Kvserve__SamplingParams sp;
    Kvserve__Register reg;
    Kvserve__KvLayout lay;
    Kvserve__Heartbeat hb;
    Kvserve__ReserveReply rr;
    Kvserve__PrefillDone pd;
    Kvserve__TokenEvent te;
    Kvserve__KvChunk kc;
    static kv_fuzz_lp lp, plp; /* large: not on the stack (one caller thread per process) */
    Kvserve__KvHello hello;
    Kvserve__KvNcclInit ni;
    Kvserve__KvAck ack;
    int32_t ids[12];
    uint32_t sums[12];
    Kvserve__KvTransport offer[3] = {kv_fuzz_below(f, 4), kv_fuzz_below(f, 3), KVSERVE__KV_TRANSPORT__KV_TRANSPORT_ZMQ};
    uint8_t bytes[80];
    size_t n_ids = kv_fuzz_below(f, 12);
    fill_i32(f, ids, 12);
    for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)kv_fuzz_next(f);
    kvserve__error__init(&er);
    er.code = kv_fuzz_below(f, 17);
    er.request_id = rnd_id(f);
    er.message = "fuzz";
    kv_fuzz_sampling(f, &sp);
    switch (kind) {
    case KVSERVE__ENVELOPE__BODY_ERROR:
        env.error = &er;
        break;
    case KVSERVE__ENVELOPE__BODY_GENERATE:
        kvserve__generate_request__init(&g);
        g.request_id = rnd_id(f);
        if (kv_fuzz_below(f, 4) == 0)
            g.prompt = "Once upon a time";
        g.prompt_tokens = ids;
        g.n_prompt_tokens = n_ids;
        g.sampling = kv_fuzz_below(f, 4) ? &sp : NULL;
        g.max_tokens = kv_fuzz_below(f, 4) ? kv_fuzz_below(f, 20) : kv_fuzz_u32(f);
        g.stream = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        g.ignore_eos = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        g.model = kv_fuzz_below(f, 8) ? "" : "other-model";
        g.deadline_ms = kv_fuzz_below(f, 3) ? 0 : kv_fuzz_below(f, 3000);
        g.logprobs = kv_fuzz_below(f, 2) ? 0 : kv_fuzz_below(f, 24);
        g.prompt_logprobs = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        env.generate = &g;
        break;
    case KVSERVE__ENVELOPE__BODY_CANCEL:
        kvserve__cancel_request__init(&cancel);
        cancel.request_id = rnd_id(f);
        env.cancel = &cancel;
        break;
    case KVSERVE__ENVELOPE__BODY_STATUS:
        kvserve__status_request__init(&status);
        env.status = &status;
        break;
    case KVSERVE__ENVELOPE__BODY_REGISTER:
        kvserve__register__init(&reg);
        kvserve__kv_layout__init(&lay);
        /* The cluster's own layout three times in four: such a Register is accepted, and
         * the fuzz's control socket is a worker of the cluster from then on. */
        int real = kv_fuzz_below(f, 4) != 0;
        lay.n_layers = real ? (uint32_t)cl->n_layers : kv_fuzz_u32(f);
        lay.n_kv_heads = real ? (uint32_t)cl->n_kv_heads : kv_fuzz_u32(f);
        lay.head_dim = real ? (uint32_t)cl->head_dim : kv_fuzz_u32(f);
        lay.block_size = real ? 16 : kv_fuzz_u32(f);
        lay.dtype = real ? "f32" : "q9";
        lay.block_bytes = real ? cl->block_bytes : kv_fuzz_next(f);
        reg.worker_id = kv_fuzz_below(f, 4) ? "fuzz-w" : "";
        reg.role = kv_fuzz_below(f, 4);
        reg.model = "stories260K";
        reg.model_fingerprint = kv_fuzz_below(f, 4) ? (char *)cl->fingerprint : "deadbeef";
        reg.kv_endpoint = kv_fuzz_below(f, 2) ? (char *)cl->kv_endpoint : "tcp://127.0.0.1:1";
        reg.device = "cpu";
        reg.layout = kv_fuzz_below(f, 6) ? &lay : NULL;
        reg.kv_blocks_total = kv_fuzz_u32(f);
        reg.max_context = kv_fuzz_u32(f);
        reg.kv_transports = offer;
        reg.n_kv_transports = kv_fuzz_below(f, 4);
        env.register_ = &reg;
        break;
    case KVSERVE__ENVELOPE__BODY_HEARTBEAT:
        kvserve__heartbeat__init(&hb);
        hb.worker_id = "fuzz-w";
        hb.running = kv_fuzz_u32(f), hb.queued = kv_fuzz_u32(f);
        hb.kv_blocks_free = kv_fuzz_u32(f), hb.kv_blocks_total = kv_fuzz_u32(f);
        env.heartbeat = &hb;
        break;
    case KVSERVE__ENVELOPE__BODY_RESERVE_REPLY:
        kvserve__reserve_reply__init(&rr);
        rr.request_id = rnd_id(f);
        rr.ok = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        rr.block_ids = ids;
        rr.n_block_ids = n_ids;
        rr.error = kv_fuzz_below(f, 2) ? &er : NULL;
        env.reserve_reply = &rr;
        break;
    case KVSERVE__ENVELOPE__BODY_PREFILL_DONE:
        kvserve__prefill_done__init(&pd);
        pd.request_id = rnd_id(f);
        pd.ok = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        pd.error = kv_fuzz_below(f, 2) ? &er : NULL;
        pd.first_token = kv_fuzz_i32(f);
        pd.prefill_ms = (double)kv_fuzz_u32(f), pd.transfer_ms = -1.0;
        pd.kv_bytes = kv_fuzz_next(f);
        pd.transport = kv_fuzz_below(f, 4);
        env.prefill_done = &pd;
        break;
    case KVSERVE__ENVELOPE__BODY_TOKENS:
        kvserve__token_event__init(&te);
        te.request_id = rnd_id(f);
        te.tokens = ids;
        te.n_tokens = n_ids;
        te.index = kv_fuzz_u32(f);
        te.finish_reason = kv_fuzz_below(f, 7);
        te.error = kv_fuzz_below(f, 3) ? NULL : &er;
        if (kv_fuzz_below(f, 2)) {
            te.n_logprobs = kv_fuzz_below(f, 4) ? n_ids : kv_fuzz_below(f, KV_FUZZ_LP_MAX);
            te.logprobs = kv_fuzz_logprobs(f, &lp, te.n_logprobs, (int)kv_fuzz_below(f, 21), 512, 1);
            te.n_logprobs = te.n_logprobs > KV_FUZZ_LP_MAX ? KV_FUZZ_LP_MAX : te.n_logprobs;
        }
        if (kv_fuzz_below(f, 4) == 0) {
            te.n_prompt_logprobs = kv_fuzz_below(f, KV_FUZZ_LP_MAX + 1);
            te.prompt_logprobs = kv_fuzz_logprobs(f, &plp, te.n_prompt_logprobs, (int)kv_fuzz_below(f, 21), 512, 1);
        }
        env.tokens = &te;
        break;
    case KVSERVE__ENVELOPE__BODY_KV_CHUNK:
        kvserve__kv_chunk__init(&kc);
        kc.request_id = rnd_id(f);
        kc.prefill_worker_id = "fuzz-p";
        kc.first_block = kv_fuzz_u32(f) % 40;
        kc.block_ids = ids;
        kc.n_block_ids = n_ids;
        for (size_t i = 0; i < n_ids; i++) sums[i] = (uint32_t)kv_fuzz_next(f);
        kc.checksums = sums;
        kc.n_checksums = kv_fuzz_below(f, 3) ? n_ids : kv_fuzz_below(f, 12);
        kc.n_tokens = kv_fuzz_u32(f);
        kc.last = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        kc.first_token = kv_fuzz_i32(f);
        kc.seq = kv_fuzz_below(f, 3);
        kc.transport = kv_fuzz_below(f, 4);
        kc.session = kv_fuzz_below(f, 2) ? 0 : kv_fuzz_next(f);
        kc.src_block_ids = ids;
        kc.n_src_block_ids = kv_fuzz_below(f, 2) ? n_ids : 0;
        if (kc.last && kv_fuzz_below(f, 2)) {
            kc.first_logprobs = kv_fuzz_logprobs(f, &lp, 1, (int)kv_fuzz_below(f, 21), 512, 1)[0];
            kc.n_prompt_logprobs = kv_fuzz_below(f, KV_FUZZ_LP_MAX + 1);
            kc.prompt_logprobs = kv_fuzz_logprobs(f, &plp, kc.n_prompt_logprobs, (int)kv_fuzz_below(f, 21), 512, 1);
        }
        env.kv_chunk = &kc;
        break;
    case KVSERVE__ENVELOPE__BODY_KV_HELLO:
        kvserve__kv_hello__init(&hello);
        hello.prefill_worker_id = "fuzz-p";
        hello.session = kv_fuzz_below(f, 4) ? kv_fuzz_next(f) : 0;
        hello.offer = offer;
        hello.n_offer = kv_fuzz_below(f, 4);
        hello.node_id = kv_fuzz_below(f, 2) ? "boot:fuzz" : "";
        hello.device = kv_fuzz_i32(f);
        hello.device_uuid.data = bytes, hello.device_uuid.len = kv_fuzz_below(f, 20);
        hello.ipc_handle.data = bytes, hello.ipc_handle.len = kv_fuzz_below(f, 80);
        hello.pool_bytes = kv_fuzz_next(f), hello.block_bytes = kv_fuzz_below(f, 2) ? cl->block_bytes : kv_fuzz_next(f);
        hello.kv_dtype = kv_fuzz_below(f, 2) ? "f32" : "bf16";
        env.kv_hello = &hello;
        break;
    case KVSERVE__ENVELOPE__BODY_KV_NCCL_INIT:
        kvserve__kv_nccl_init__init(&ni);
        ni.session = kv_fuzz_next(f), ni.generation = kv_fuzz_u32(f);
        ni.unique_id.data = bytes, ni.unique_id.len = kv_fuzz_below(f, 80);
        env.kv_nccl_init = &ni;
        break;
    default: /* KV_ACK */
        kind = KVSERVE__ENVELOPE__BODY_KV_ACK;
        kvserve__kv_ack__init(&ack);
        ack.request_id = rnd_id(f);
        ack.ok = (protobuf_c_boolean)kv_fuzz_below(f, 2);
        ack.error = kv_fuzz_below(f, 2) ? &er : NULL;
        ack.bytes = kv_fuzz_next(f);
        env.kv_ack = &ack;
        break;
    }
    env.body_case = (Kvserve__Envelope__BodyCase)kind;
    size_t len = kvserve__envelope__get_packed_size(&env);
    return len <= KV_FUZZ_BUF / 2 ? kvserve__envelope__pack(&env, buf) : 0;
}

Kvserve__TokenLogprobs **kv_fuzz_logprobs(kv_fuzz_rng *r, kv_fuzz_lp *s, size_t n, int top, int vocab, int noisy)
{
    if (n > KV_FUZZ_LP_MAX)
        n = KV_FUZZ_LP_MAX;
    for (size_t i = 0; i < n; i++) {
        Kvserve__TokenLogprobs *m = &s->m[i];
        kvserve__token_logprobs__init(m);
        int k = top < 0 ? 0 : top > 20 ? 20 : top;
        if (noisy && kv_fuzz_below(r, 4) == 0)
            k = (int)kv_fuzz_below(r, 21);
        for (int j = 0; j < k; j++) {
            s->ids[i][j] = noisy && kv_fuzz_below(r, 8) == 0 ? kv_fuzz_i32(r) : (int32_t)kv_fuzz_below(r, (uint32_t)vocab);
            s->lps[i][j] = -(float)kv_fuzz_below(r, 1000) / 100.0f;
        }
        m->logprob = noisy && kv_fuzz_below(r, 8) == 0 ? NAN : -(float)kv_fuzz_below(r, 1000) / 100.0f;
        m->top_ids = s->ids[i];
        m->top_logprobs = s->lps[i];
        m->n_top_ids = (size_t)k;
        m->n_top_logprobs = noisy && kv_fuzz_below(r, 8) == 0 ? kv_fuzz_below(r, 21) : (size_t)k;
        s->p[i] = m;
    }
    return s->p;
}
