/* Continuous batching: a request joins when its KV has arrived (its first token, sampled by
 * the prefill worker, is streamed at once), every step decodes the oldest --max-batch running
 * requests in one kv_engine_decode, and a request leaves (freeing its blocks) the step it
 * finishes. Stop rules are kv_generate's, so the tokens are the one-process tokens. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode.h"
#include "kv_log.h"
#include "kv_time.h"
#include "worker_proto.h"

#define COMP "kv-decode"

static const char *finish_name(Kvserve__FinishReason f)
{
    switch (f) {
    case KVSERVE__FINISH_REASON__FINISH_EOS: return "eos";
    case KVSERVE__FINISH_REASON__FINISH_LENGTH: return "length";
    case KVSERVE__FINISH_REASON__FINISH_CONTEXT: return "context";
    case KVSERVE__FINISH_REASON__FINISH_CANCELLED: return "cancelled";
    case KVSERVE__FINISH_REASON__FINISH_ERROR: return "error";
    default: return "none";
    }
}

void decode_send_event(decode_worker *dw, const decode_req *r, const int32_t *token, const kc_logprobs *lp,
                       Kvserve__FinishReason fin, Kvserve__ErrorCode code, const char *msg)
{
    Kvserve__TokenEvent ev;
    Kvserve__Error e;
    Kvserve__TokenLogprobs lp_m, *lp_p = &lp_m, *prompt_m = NULL, **prompt_p = NULL;
    kvserve__token_event__init(&ev);
    ev.request_id = r->id;
    if (token) {
        ev.n_tokens = 1;
        ev.tokens = (int32_t *)token;
        ev.index = r->n_generated - 1;
        if (lp) {
            kv_wire_logprobs_to_proto(lp, &lp_m);
            ev.n_logprobs = 1;
            ev.logprobs = &lp_p;
        }
        /* The prompt's go with the first token, once; without memory for them the event
         * goes without (the router then has none to deliver: the client sees them missing). */
        if (ev.index == 0 && r->n_prompt_lp && (prompt_m = malloc(r->n_prompt_lp * sizeof *prompt_m)) &&
            (prompt_p = malloc(r->n_prompt_lp * sizeof *prompt_p))) {
            kv_wire_logprobs_to_protos(r->prompt_lp, r->n_prompt_lp, prompt_m, prompt_p);
            ev.n_prompt_logprobs = r->n_prompt_lp;
            ev.prompt_logprobs = prompt_p;
        }
    } else {
        ev.index = r->n_generated;
    }
    ev.finish_reason = fin;
    if (fin == KVSERVE__FINISH_REASON__FINISH_ERROR) {
        worker_error_init(&e, code, r->id, msg);
        ev.error = &e;
    }
    if (fin != KVSERVE__FINISH_REASON__FINISH_NONE && r->t_first > 0)
        ev.decode_ms = (kv_now_s() - r->t_first) * 1e3;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_TOKENS;
    env.tokens = &ev;
    /* No waiting: the queue is deep, and a router that is away gets these re-planned. */
    worker_send(dw->ctl->sock, NULL, &env, 0, COMP, "TokenEvent");
    free(prompt_m);
    free(prompt_p);
}

/* Takes a freshly sampled token: kv_generate's stop rules, in its order. */
static Kvserve__FinishReason accept_token(decode_worker *dw, decode_req *r, int32_t tok)
{
    const kv_model_config *c = &dw->we->model->cfg;
    r->last_token = tok;
    if (r->ctx_tokens && r->n_ctx_tokens < r->cap_ctx_tokens)
        r->ctx_tokens[r->n_ctx_tokens++] = tok;
    r->n_generated++;
    r->n_ctx++;
    if (!r->ignore_eos && kv_model_config_is_eos(c, tok))
        return KVSERVE__FINISH_REASON__FINISH_EOS;
    if (r->n_generated >= r->max_tokens)
        return KVSERVE__FINISH_REASON__FINISH_LENGTH;
    if (r->n_ctx >= c->max_position)
        return KVSERVE__FINISH_REASON__FINISH_CONTEXT;
    return KVSERVE__FINISH_REASON__FINISH_NONE;
}

static void log_finish(const decode_req *r, Kvserve__FinishReason fin)
{
    double decode_ms = (kv_now_s() - r->t_first) * 1e3;
    KV_INFO(COMP, "msg=\"request finished\" request=%s finish=%s prompt_tokens=%u tokens=%u decode_ms=%.2f tok_s=%.1f",
            r->id, finish_name(fin), r->prompt_tokens, r->n_generated, decode_ms,
            decode_ms > 0 && r->n_generated > 1 ? (r->n_generated - 1) / (decode_ms * 1e-3) : 0.0);
}

/* Streams tok (with its logprobs lp when the request asked); returns 1 when the request
 * finished with it. */
static int emit(decode_worker *dw, decode_req *r, int32_t tok, const kc_logprobs *lp)
{
    Kvserve__FinishReason fin = accept_token(dw, r, tok);
    decode_send_event(dw, r, &tok, r->lp_top >= 0 ? lp : NULL, fin, KVSERVE__ERROR_CODE__ERROR_NONE, NULL);
    if (fin == KVSERVE__FINISH_REASON__FINISH_NONE)
        return 0;
    log_finish(r, fin);
    return 1;
}

void decode_start(decode_worker *dw, decode_req *r, int32_t first_token)
{
    kv_err err;
    /* The reserved ids become the block table; the prompt's K/V are in them. */
    r->seq.blocks = r->blocks;
    r->seq.n_blocks = r->seq.cap_blocks = r->n_blocks;
    r->seq.n_tokens = (int32_t)r->prompt_tokens;
    r->blocks = NULL;
    r->n_ctx = (int)r->prompt_tokens;
    r->t_first = kv_now_s();
    if (kv_sampler_init(&r->sampler, &r->sp, dw->we->model->cfg.vocab_size, &err)) {
        decode_fail(dw, r, KVSERVE__ERROR_CODE__INTERNAL, err.msg);
        return;
    }
    /* The prefill worker drew the first token, after the draws of earlier attempts. */
    kv_sampler_advance(&r->sampler, 1 + (int)r->sampling_offset);
    r->state = DR_RUNNING;
    r->kv_valid = 1; /* the prompt's K/V are verified (or computed here) */
    /* Its sealed prompt blocks serve requests with the same prefix from now on, while it runs. */
    decode_prefix_store(dw, r);
    KV_INFO(COMP, "msg=\"request started\" request=%s prompt_tokens=%u first_token=%d running=%d", r->id,
            r->prompt_tokens, first_token, dw->running.n + 1);
    if (emit(dw, r, first_token, &r->first_lp)) {
        decode_req_free(dw, r);
        return;
    }
    if (decode_list_push(&dw->running, r)) {
        decode_fail(dw, r, KVSERVE__ERROR_CODE__INTERNAL, "out of memory");
        return;
    }
}

void decode_step(decode_worker *dw)
{
    int n = dw->running.n < dw->f->max_batch ? dw->running.n : dw->f->max_batch;
    if (n == 0)
        return;
    int any_lp = 0;
    for (int i = 0; i < n; i++) {
        dw->b_seqs[i] = &dw->running.v[i]->seq;
        dw->b_samplers[i] = &dw->running.v[i]->sampler;
        dw->b_tokens[i] = dw->running.v[i]->last_token;
        dw->b_lp_top[i] = dw->running.v[i]->lp_top;
        any_lp |= dw->b_lp_top[i] >= 0;
    }
    kv_err err;
    int rc = kv_engine_decode_sample_lp(dw->we->engine, dw->b_seqs, dw->b_tokens, n, dw->b_samplers,
                                        any_lp ? dw->b_lp_top : NULL, dw->b_lp, dw->b_next, &err);
    if (dw->f->fault_slow_decode) { /* streams that outlast a router restart, on a tiny model */
        struct timespec step = {0, 5000000L};
        nanosleep(&step, NULL);
    }
    for (int i = 0; i < n; i++) {
        decode_req *r = dw->running.v[i];
        int done;
        if (rc) {
            decode_send_event(dw, r, NULL, NULL, KVSERVE__FINISH_REASON__FINISH_ERROR, KVSERVE__ERROR_CODE__INTERNAL,
                              err.msg);
            KV_ERROR(COMP, "msg=\"decode step failed\" request=%s err=\"%s\"", r->id, err.msg);
            done = 1;
        } else {
            done = emit(dw, r, dw->b_next[i], &dw->b_lp[i]);
        }
        if (done) {
            decode_req_free(dw, r);
            dw->running.v[i] = NULL;
        }
    }
    /* Leavers go; the order of those who stay (oldest first) is kept. */
    int k = 0;
    for (int i = 0; i < dw->running.n; i++)
        if (dw->running.v[i])
            dw->running.v[k++] = dw->running.v[i];
    dw->running.n = k;
}

int decode_alloc_batch(decode_worker *dw)
{
    size_t b = (size_t)dw->f->max_batch;
    dw->b_seqs = malloc(b * sizeof *dw->b_seqs);
    dw->b_samplers = malloc(b * sizeof *dw->b_samplers);
    dw->b_tokens = malloc(b * sizeof *dw->b_tokens);
    dw->b_next = malloc(b * sizeof *dw->b_next);
    dw->b_lp_top = malloc(b * sizeof *dw->b_lp_top);
    dw->b_lp = malloc(b * sizeof *dw->b_lp);
    return dw->b_seqs && dw->b_samplers && dw->b_tokens && dw->b_next && dw->b_lp_top && dw->b_lp ? KV_OK
                                                                                                    : KV_ENOMEM;
}
