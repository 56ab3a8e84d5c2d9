#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "kv_log.h"
#include "kv_time.h"
#include "worker_proto.h"

#define COMP "kv-decode"

int decode_list_push(decode_list *l, decode_req *r)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        decode_req **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return KV_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = r;
    return KV_OK;
}

int decode_list_find(const decode_list *l, const char *id)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i]->id, id))
            return i;
    return -1;
}

decode_req *decode_list_take(decode_list *l, int i)
{
    decode_req *r = l->v[i];
    memmove(l->v + i, l->v + i + 1, (size_t)(l->n - i - 1) * sizeof *l->v);
    l->n--;
    return r;
}

void decode_req_free(decode_worker *dw, decode_req *r)
{
    if (!r)
        return;
    kv_pool *pool = dw->we->pool;
    if (r->xfer_pending)
        kv_links_forget(dw, r); /* no copy may land in the blocks once they are free */
    if (r->kv_valid)
        decode_prefix_store(dw, r);
    free(r->ctx_tokens);
    if (r->blocks)
        kv_pool_release(pool, r->blocks, r->n_blocks);
    free(r->blocks);
    free(r->prompt_lp);
    kv_seq_release(&r->seq, pool);
    kv_sampler_free(&r->sampler);
    free(r->id);
    free(r);
}

static void send_reply(decode_worker *dw, const char *id, const decode_req *r, int local, Kvserve__ErrorCode code,
                     const char *msg)
{
    Kvserve__ReserveReply rep;
    Kvserve__Error e;
    kvserve__reserve_reply__init(&rep);
    rep.request_id = (char *)id;
    if (r) {
        rep.ok = 1;
        rep.n_block_ids = (size_t)r->n_blocks;
        rep.block_ids = r->blocks;
        rep.cached_blocks = (uint32_t)r->cached_blocks;
        rep.local_prefill = local;
    } else {
        worker_error_init(&e, code, id, msg);
        rep.error = &e;
        KV_WARN(COMP, "msg=\"reserve refused\" request=%s error=%s reason=\"%s\"", id, worker_error_name(code), msg);
    }
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_RESERVE_REPLY;
    env.reserve_reply = &rep;
    worker_send(dw->ctl->sock, NULL, &env, 200, COMP, "ReserveReply");
}

static void reply(decode_worker *dw, const char *id, const decode_req *r, Kvserve__ErrorCode code, const char *msg)
{
    send_reply(dw, id, r, 0, code, msg);
}

/* The prompt ids the router sent for the prefix cache: none, or exactly the prompt, in the
 * vocabulary. */
static int check_prompt_ids(const Kvserve__ReserveRequest *rr, int vocab, char *msg, size_t cap)
{
    if (rr->n_prompt_token_ids && rr->n_prompt_token_ids != rr->prompt_tokens)
        return snprintf(msg, cap, "%zu prompt ids for a prompt of %u tokens", rr->n_prompt_token_ids,
                        rr->prompt_tokens), -1;
    for (size_t i = 0; i < rr->n_prompt_token_ids; i++)
        if (rr->prompt_token_ids[i] < 0 || rr->prompt_token_ids[i] >= vocab)
            return snprintf(msg, cap, "prompt id %zu is %d, outside the vocabulary (%d)", i, rr->prompt_token_ids[i],
                            vocab), -1;
    return 0;
}

/* The uncached tail is short: prefill it here, no prefill worker, no transfer. The reply
 * goes first, so the router knows the request before its first TokenEvent. */
static void start_local(decode_worker *dw, decode_req *r, int32_t n, uint32_t tail)
{
    kv_err err;
    int32_t first = 0;
    KV_INFO(COMP, "msg=\"reserved, prefilling here\" request=%s prompt_tokens=%u cached_blocks=%d tail=%u blocks=%d",
            r->id, r->prompt_tokens, r->cached_blocks, tail, n);
    send_reply(dw, r->id, r, 1, KVSERVE__ERROR_CODE__ERROR_NONE, NULL);
    if (decode_prefill_local(dw, r, &first, &err)) {
        decode_fail(dw, r, err.code == KV_EFULL ? KVSERVE__ERROR_CODE__NO_CAPACITY : KVSERVE__ERROR_CODE__INTERNAL,
                    err.msg);
        return;
    }
    decode_start(dw, r, first);
}

void decode_on_reserve(decode_worker *dw, const Kvserve__ReserveRequest *rr)
{
    const kv_model_config *c = &dw->we->model->cfg;
    kv_pool *pool = dw->we->pool;
    const char *id = rr->request_id;
    char msg[300];
    kv_err err;
    kv_sampling_params sp;
    if (!id[0]) {
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__BAD_MESSAGE, "ReserveRequest without a request id");
        return;
    }
    if (decode_list_find(&dw->waiting, id) >= 0 || decode_list_find(&dw->running, id) >= 0) {
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__DUPLICATE_REQUEST, "request id already holds a reservation here");
        return;
    }
    if (rr->prompt_tokens == 0) {
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__INVALID_ARGUMENT, "empty prompt");
        return;
    }
    if ((uint64_t)rr->prompt_tokens + 1 > (uint64_t)c->max_position) {
        snprintf(msg, sizeof msg, "prompt of %u tokens leaves no room in the context length %d", rr->prompt_tokens,
                 c->max_position);
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__PROMPT_TOO_LONG, msg);
        return;
    }
    if (worker_sampling_from_proto(rr->sampling, &sp, &err)) {
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__INVALID_ARGUMENT, err.msg);
        return;
    }
    if (rr->logprobs > KV_WIRE_LOGPROBS_MAX) {
        snprintf(msg, sizeof msg, "logprobs %u: at most %d", rr->logprobs, KV_WIRE_LOGPROBS_MAX);
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__INVALID_ARGUMENT, msg);
        return;
    }
    if (check_prompt_ids(rr, c->vocab_size, msg, sizeof msg)) {
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__INVALID_ARGUMENT, msg);
        return;
    }
    uint32_t max_tokens = rr->max_tokens ? rr->max_tokens : DECODE_DEFAULT_MAX_TOKENS;
    uint64_t tokens = (uint64_t)rr->prompt_tokens + max_tokens;
    if (tokens > (uint64_t)c->max_position)
        tokens = (uint64_t)c->max_position;
    int bs = pool->shape.block_size;
    int32_t n = (int32_t)((tokens + (uint64_t)bs - 1) / (uint64_t)bs);
    decode_req *r = calloc(1, sizeof *r);
    if (r && !(r->id = strdup(id))) {
        free(r);
        r = NULL;
    }
    if (!r || !(r->blocks = malloc((size_t)n * sizeof *r->blocks))) {
        decode_req_free(dw, r);
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__INTERNAL, "out of memory");
        return;
    }
    if (rr->n_prompt_token_ids) {
        /* The context's ids (prompt, then what is generated): the cache's keys at the end. */
        r->cap_ctx_tokens = (int32_t)tokens;
        if (!(r->ctx_tokens = malloc((size_t)r->cap_ctx_tokens * sizeof *r->ctx_tokens))) {
            decode_req_free(dw, r);
            reply(dw, id, NULL, KVSERVE__ERROR_CODE__INTERNAL, "out of memory");
            return;
        }
        memcpy(r->ctx_tokens, rr->prompt_token_ids, rr->n_prompt_token_ids * sizeof *r->ctx_tokens);
        r->n_ctx_tokens = (int32_t)rr->n_prompt_token_ids;
        r->cached_blocks = worker_prefix_lookup(dw->we, rr->prompt_token_ids, (int32_t)rr->n_prompt_token_ids,
                                                r->blocks, n);
    }
    int32_t hit = r->cached_blocks;
    if (kv_pool_reserve(pool, n - hit, r->blocks + hit, &err)) {
        kv_pool_release(pool, r->blocks, hit);
        free(r->blocks);
        r->blocks = NULL;
        decode_req_free(dw, r);
        snprintf(msg, sizeof msg, "need %d KV blocks, %d of %d free", n, kv_pool_n_free(pool), pool->n_blocks);
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__NO_CAPACITY, msg);
        return;
    }
    r->n_blocks = n;
    r->blocks_received = hit; /* the first KvChunk starts after the cached blocks */
    r->n_prompt_blocks = (int32_t)((rr->prompt_tokens + (uint32_t)bs - 1) / (uint32_t)bs);
    r->prompt_tokens = rr->prompt_tokens;
    r->max_tokens = max_tokens;
    r->ignore_eos = rr->ignore_eos ? 1 : 0;
    r->sampling_offset = rr->sampling_offset;
    r->lp_top = (int)rr->logprobs - 1;
    r->sp = sp;
    r->t_reserved = kv_now_s();
    uint32_t dl = rr->transfer_deadline_ms ? rr->transfer_deadline_ms : DECODE_DEFAULT_TRANSFER_DEADLINE_MS;
    r->deadline = r->t_reserved + dl * 1e-3;
    uint32_t tail = r->prompt_tokens - (uint32_t)hit * (uint32_t)bs;
    /* Only a prompt mostly held here: a short uncached prompt is still the prefill worker's. */
    if (hit > 0 && rr->local_prefill_max && tail <= rr->local_prefill_max) {
        start_local(dw, r, n, tail);
        return;
    }
    if (decode_list_push(&dw->waiting, r)) {
        decode_req_free(dw, r);
        reply(dw, id, NULL, KVSERVE__ERROR_CODE__INTERNAL, "out of memory");
        return;
    }
    KV_INFO(COMP,
            "msg=\"reserved\" request=%s prompt_tokens=%u max_tokens=%u blocks=%d cached_blocks=%d free=%d/%d "
            "deadline_ms=%u",
            id, r->prompt_tokens, r->max_tokens, n, hit, kv_pool_n_available(pool), pool->n_blocks, dl);
    reply(dw, id, r, KVSERVE__ERROR_CODE__ERROR_NONE, NULL);
}

void decode_fail(decode_worker *dw, decode_req *r, Kvserve__ErrorCode code, const char *msg)
{
    KV_WARN(COMP, "msg=\"request failed\" request=%s error=%s reason=\"%s\" tokens=%u", r->id, worker_error_name(code),
            msg, r->n_generated);
    decode_send_event(dw, r, NULL, NULL, KVSERVE__FINISH_REASON__FINISH_ERROR, code, msg);
    r->kv_valid = 0; /* a failed request's K/V are not offered to the next one */
    decode_req_free(dw, r);
}

void decode_expire(decode_worker *dw)
{
    double now = kv_now_s();
    for (int i = 0; i < dw->waiting.n;) {
        decode_req *r = dw->waiting.v[i];
        if (now < r->deadline) {
            i++;
            continue;
        }
        decode_list_take(&dw->waiting, i);
        char msg[200];
        snprintf(msg, sizeof msg, "KV did not arrive within %.0f ms (%d of %d blocks)", (r->deadline - r->t_reserved) * 1e3,
                 r->blocks_received, r->n_prompt_blocks);
        KV_WARN(COMP, "msg=\"reservation expired\" request=%s blocks=%d", r->id, r->n_blocks);
        decode_fail(dw, r, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, msg);
    }
}

int decode_drop(decode_worker *dw, const char *id, const char *why)
{
    decode_list *lists[2] = {&dw->waiting, &dw->running};
    for (int k = 0; k < 2; k++) {
        int i = decode_list_find(lists[k], id);
        if (i < 0)
            continue;
        decode_req *r = decode_list_take(lists[k], i);
        KV_INFO(COMP, "msg=\"request dropped\" request=%s why=\"%s\" state=%s tokens=%u blocks=%d", id, why,
                k ? "running" : "waiting_kv", r->n_generated, r->n_blocks);
        decode_req_free(dw, r);
        return 1;
    }
    return 0;
}

void decode_free_all(decode_worker *dw)
{
    for (int i = 0; i < dw->waiting.n; i++)
        decode_req_free(dw, dw->waiting.v[i]);
    for (int i = 0; i < dw->running.n; i++)
        decode_req_free(dw, dw->running.v[i]);
    free(dw->waiting.v);
    free(dw->running.v);
    memset(&dw->waiting, 0, sizeof dw->waiting);
    memset(&dw->running, 0, sizeof dw->running);
}

double decode_wake(const decode_worker *dw)
{
    if (kv_links_busy(dw))
        return kv_now_s() + 1e-3; /* GPU copies complete without telling the socket */
    double wake = kv_now_s() + 1.0;
    for (int i = 0; i < dw->waiting.n; i++)
        if (dw->waiting.v[i]->deadline < wake)
            wake = dw->waiting.v[i]->deadline;
    return wake;
}

void decode_on_control(void *ctx, kv_wire_msg *m, int rc, const kv_err *err)
{
    decode_worker *dw = ctx;
    if (rc) {
        KV_WARN(COMP, "msg=\"bad control message\" err=\"%s\"", err->msg);
        return;
    }
    if (worker_control_handle(dw->ctl, m))
        return;
    const Kvserve__Envelope *env = m->env;
    switch (env->body_case) {
    case KVSERVE__ENVELOPE__BODY_RESERVE:
        decode_on_reserve(dw, env->reserve);
        break;
    case KVSERVE__ENVELOPE__BODY_ABORT:
        if (!decode_drop(dw, env->abort->request_id, worker_error_name(env->abort->reason)))
            KV_DEBUG(COMP, "msg=\"abort for an unknown request ignored\" request=%s", env->abort->request_id);
        break;
    case KVSERVE__ENVELOPE__BODY_ERROR:
        KV_WARN(COMP, "msg=\"router error\" code=%s request=%s message=\"%s\"", worker_error_name(env->error->code),
                env->error->request_id, env->error->message);
        /* The router no longer knows this request (it restarted or gave up): nobody will
         * read its tokens, so its blocks are better free. */
        if (env->error->code == KVSERVE__ERROR_CODE__UNKNOWN_REQUEST && env->error->request_id[0])
            decode_drop(dw, env->error->request_id, "unknown to the router");
        break;
    default:
        KV_WARN(COMP, "msg=\"unexpected control message ignored\" body=%d", (int)env->body_case);
    }
}
