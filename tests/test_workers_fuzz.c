/* Part of test_workers_pair: the workers' control channel fuzzed. This test is the
 * workers' router, so it sends them what only a router can: ReserveRequests to the decode
 * worker, PrefillTasks to the prefill worker (towards the real decode worker's endpoint or
 * nowhere, with block ids in and out of its pool), Aborts and Errors to both; random
 * contents, half of the messages then mutated byte by byte (kv_fuzz.h). RegisterAcks are
 * left out: a refusal is final by design, and the worker would rightly exit. Meanwhile the
 * "router" answers news of requests it never made with UNKNOWN_REQUEST, as kv-router does
 * (ids the mutations made up included). Afterwards both workers must still run; every id
 * the fuzz named is aborted, and the caller checks that they serve exactly and hold no
 * block. */
#include <stdio.h>
#include <stdlib.h>

#include "kv_fuzz_envelope.h"
#include "kv_test.h"
#include "test_workers_harness.h"

#define FUZZ_IDS 6

static const char *const kFuzzIds[FUZZ_IDS] = {"fz-0", "fz-1", "fz-2", "fz-3", "fz-4", ""};

static const char *fuzz_id(kv_fuzz_rng *r) { return kFuzzIds[kv_fuzz_below(r, FUZZ_IDS)]; }



/* A control message of `kind` for one of the workers, packed into buf: its length. */
static size_t control_message(kv_fuzz_rng *r, int kind, const th_worker *d, uint8_t *buf)
{
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    Kvserve__SamplingParams sp;
    Kvserve__ReserveRequest rq;
    Kvserve__PrefillTask t;
    Kvserve__Abort ab;
    Kvserve__Error er;
    int32_t toks[24], blocks[8];
    for (int i = 0; i < 24; i++) toks[i] = kv_fuzz_i32(r);
    for (int i = 0; i < 8; i++) blocks[i] = kv_fuzz_below(r, 4) ? (int32_t)kv_fuzz_below(r, 256) : kv_fuzz_i32(r);
    kv_fuzz_sampling(r, &sp);
    switch (kind) {
    case KVSERVE__ENVELOPE__BODY_RESERVE:
        kvserve__reserve_request__init(&rq);
        rq.request_id = (char *)fuzz_id(r);
        rq.prompt_tokens = kv_fuzz_u32(r);
        rq.max_tokens = kv_fuzz_u32(r);
        rq.sampling = kv_fuzz_below(r, 4) ? &sp : NULL;
        rq.ignore_eos = (protobuf_c_boolean)kv_fuzz_below(r, 2);
        rq.transfer_deadline_ms = kv_fuzz_below(r, 4) ? 200 + kv_fuzz_below(r, 800) : kv_fuzz_u32(r);
        rq.sampling_offset = kv_fuzz_u32(r);
        env.reserve = &rq;
        break;
    case KVSERVE__ENVELOPE__BODY_PREFILL:
        kvserve__prefill_task__init(&t);
        t.request_id = (char *)fuzz_id(r);
        t.prompt_tokens = toks;
        t.n_prompt_tokens = kv_fuzz_below(r, 25);
        t.sampling = kv_fuzz_below(r, 4) ? &sp : NULL;
        t.decode_worker_id = (char *)d->id;
        t.decode_kv_endpoint = kv_fuzz_below(r, 3) ? (char *)d->kv_endpoint : "tcp://127.0.0.1:1";
        t.decode_block_ids = blocks;
        t.n_decode_block_ids = kv_fuzz_below(r, 9);
        t.ack_deadline_ms = kv_fuzz_below(r, 4) ? 300 + kv_fuzz_below(r, 700) : kv_fuzz_u32(r);
        t.sampling_offset = kv_fuzz_u32(r);
        env.prefill = &t;
        break;
    case KVSERVE__ENVELOPE__BODY_ABORT:
        kvserve__abort__init(&ab);
        ab.request_id = (char *)fuzz_id(r);
        ab.reason = kv_fuzz_below(r, 17);
        env.abort = &ab;
        break;
    default:
        kind = KVSERVE__ENVELOPE__BODY_ERROR;
        kvserve__error__init(&er);
        er.code = kv_fuzz_below(r, 17);
        er.request_id = (char *)fuzz_id(r);
        er.message = kv_fuzz_below(r, 2) ? "register first" : "fuzz";
        env.error = &er;
        break;
    }
    env.body_case = (Kvserve__Envelope__BodyCase)kind;
    return kvserve__envelope__get_packed_size(&env) <= KV_FUZZ_BUF / 2 ? kvserve__envelope__pack(&env, buf) : 0;
}

void test_control_fuzz(th *h, th_worker *p, th_worker *d, long n_messages)
{
    const char *seed = getenv("KV_FUZZ_SEED"), *count = getenv("KV_FUZZ_MESSAGES"); /* longer campaigns */
    kv_fuzz_rng r = {0xC0FFEE1234567ull ^ (seed ? strtoull(seed, NULL, 0) * 0xD1B54A32D192ED03ull : 0)};
    if (count)
        n_messages = strtol(count, NULL, 0);
    fprintf(stderr, "control channel fuzz: %ld messages\n", n_messages);
    static const int kinds[] = {KVSERVE__ENVELOPE__BODY_RESERVE, KVSERVE__ENVELOPE__BODY_PREFILL,
                                KVSERVE__ENVELOPE__BODY_ABORT, KVSERVE__ENVELOPE__BODY_ERROR};
    int unexpected = h->unexpected;
    h->forget_unknown = 1; /* whatever the workers took on for the fuzz, the "router" disowns */
    uint8_t buf[KV_FUZZ_BUF];
    for (long i = 0; i < n_messages; i++) {
        int kind = kinds[kv_fuzz_below(&r, 4)];
        size_t len = control_message(&r, kind, d, buf);
        if (kv_fuzz_below(&r, 2))
            len = kv_fuzz_mutate(&r, buf, len);
        th_worker *to = kind == KVSERVE__ENVELOPE__BODY_RESERVE   ? d
                        : kind == KVSERVE__ENVELOPE__BODY_PREFILL ? p
                        : kv_fuzz_below(&r, 2)                    ? p
                                                                  : d;
        if (kv_fuzz_below(&r, 8) == 0)
            to = to == p ? d : p; /* the wrong worker's message */
        if (zmq_send(h->ctl, to->id, strlen(to->id), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
            zmq_send(h->ctl, buf, len, ZMQ_DONTWAIT);
        if (i % 50 == 49)
            th_pump(h, 2); /* their replies, heartbeats and re-registrations */
    }
    th_idle(h, 500); /* replies read, children reaped */
    CHECK_MSG(!p->exited && !d->exited, "control fuzz: a worker exited (prefill %d, decode %d)", p->exit_status,
              d->exit_status);
    /* As a router does when it gives a request up: every id the fuzz used is aborted. */
    for (int i = 0; i < FUZZ_IDS; i++) {
        th_abort(h, p, kFuzzIds[i]);
        th_abort(h, d, kFuzzIds[i]);
    }
    th_idle(h, 500);
    h->forget_unknown = 0;
    h->unexpected = unexpected; /* the workers' error replies to the fuzz were expected */
}
