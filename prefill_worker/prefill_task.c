#include "prefill.h"

#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_time.h"
#include "kv_wire_logprobs.h"
#include "worker_proto.h"

int prefill_worker_init(prefill_worker *pw, const worker_flags *f, worker_engine *we, worker_control *ctl, void *zctx)
{
    memset(pw, 0, sizeof *pw);
    pw->f = f;
    pw->we = we;
    pw->ctl = ctl;
    kv_sender_init(&pw->sender, zctx, f->id, &we->xfer);
    pw->sender.fault_exit_mid_transfer = f->fault_exit_mid_transfer;
    pw->logits = malloc((size_t)we->model->cfg.vocab_size * sizeof *pw->logits);
    return pw->logits ? KV_OK : KV_ENOMEM;
}

prefill_task *prefill_task_new(Kvserve__Envelope *env)
{
    prefill_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    atomic_init(&t->frames_in_flight, 0);
    t->env = env;
    t->t = env->prefill;
    t->id = t->t->request_id;
    t->t_queued = kv_now_s();
    return t;
}

/* 1 when nothing sent from the task's blocks is still under way. */
static int task_idle(prefill_task *t)
{
    if (atomic_load(&t->frames_in_flight))
        return 0;
    while (t->n_gpu_ops) {
        kv_err err;
        int rc = kv_gpu_op_poll(t->gpu_ops[t->n_gpu_ops - 1], &err);
        if (rc == 0)
            return 0;
        if (rc < 0)
            KV_WARN("kv-prefill", "msg=\"KV send failed on the GPU\" request=%s err=\"%s\"", t->id, err.msg);
        kv_gpu_op_free(t->gpu_ops[--t->n_gpu_ops]);
    }
    return 1;
}

void prefill_task_hold_op(prefill_task *t, kv_gpu_op *op)
{
    if (!op)
        return;
    if (t->n_gpu_ops == t->cap_gpu_ops) {
        int cap = t->cap_gpu_ops ? 2 * t->cap_gpu_ops : 8;
        kv_gpu_op **v = realloc(t->gpu_ops, (size_t)cap * sizeof *v);
        if (!v) {
            kv_gpu_op_free(op); /* waits for it (bounded) */
            return;
        }
        t->gpu_ops = v;
        t->cap_gpu_ops = cap;
    }
    t->gpu_ops[t->n_gpu_ops++] = op;
}

/* Forgets the task's GPU sends, each waited for (bounded) first. */
static void task_drop_ops(prefill_task *t)
{
    while (t->n_gpu_ops)
        kv_gpu_op_free(t->gpu_ops[--t->n_gpu_ops]);
}

static void task_free(prefill_worker *pw, prefill_task *t)
{
    task_drop_ops(t);
    free(t->gpu_ops);
    free(t->prompt_lp);
    kv_seq_release(&t->seq, pw->we->pool);
    kvserve__envelope__free_unpacked(t->env, NULL);
    free(t);
}

void prefill_task_retire(prefill_worker *pw, prefill_task *t)
{
    if (!t)
        return;
    if (task_idle(t)) {
        task_free(pw, t);
        return;
    }
    t->t_retired = kv_now_s();
    t->next = pw->draining;
    pw->draining = t;
}

void prefill_reap(prefill_worker *pw, int final)
{
    prefill_task **link = &pw->draining;
    while (*link) {
        prefill_task *t = *link;
        if (final || task_idle(t)) {
            *link = t->next;
            task_free(pw, t);
            continue;
        }
        /* A decode worker that is connected but not reading keeps our frames queued. */
        if (kv_now_s() - t->t_retired > 10.0 && t->t_retired > 0) {
            KV_WARN("kv-prefill", "msg=\"blocks held by unsent KV\" request=%s frames=%d gpu_sends=%d blocks=%d", t->id,
                    atomic_load(&t->frames_in_flight), t->n_gpu_ops, t->seq.n_blocks);
            t->t_retired = -1; /* warn once */
        }
        link = &t->next;
    }
}

/* A connection whose KvAck never came may be stuck, not just slow: a link that was slow or
 * cut leaves the stale transfer queued ahead of everything sent after it, and TCP's backed-off
 * retransmission timer can hold the queue for seconds after the link is clean again
 * (test_partition saw every later request to that worker miss its deadline). The next task
 * connects afresh instead. A peer with GPU state, or one a draining task still uses, is kept. */
void prefill_drop_stuck_peer(prefill_worker *pw, kv_peer *peer, const char *why)
{
    if (!peer || peer->lane || peer->comm || (pw->cur && pw->cur->peer == peer))
        return;
    for (prefill_task *t = pw->draining; t; t = t->next)
        if (t->peer == peer)
            return;
    kv_sender_drop(&pw->sender, peer, why);
}

void prefill_close_idle_peers(prefill_worker *pw)
{
    double now = kv_now_s();
    if (now < pw->next_idle_check)
        return;
    pw->next_idle_check = now + 1.0;
    int n = pw->cur != NULL, gpu_quiet = !pw->cur || !pw->cur->n_gpu_ops;
    for (prefill_task *t = pw->draining; t; t = t->next) {
        n++;
        gpu_quiet &= !t->n_gpu_ops;
    }
    for (int i = 0; i < pw->sender.n; i++)
        gpu_quiet &= pw->sender.peers[i]->state != PEER_NCCL_INIT; /* its warm-up may be running */
    kv_peer **busy = malloc((size_t)(n ? n : 1) * sizeof *busy);
    if (!busy)
        return; /* next time */
    n = 0;
    if (pw->cur)
        busy[n++] = pw->cur->peer;
    for (prefill_task *t = pw->draining; t; t = t->next)
        busy[n++] = t->peer; /* its GPU sends are on the peer's lane */
    kv_sender_close_idle(&pw->sender, now, pw->f->kv_peer_idle_s, busy, n, gpu_quiet);
    free(busy);
}

void prefill_drop_gpu_ops(prefill_worker *pw)
{
    for (prefill_task *t = pw->draining; t; t = t->next)
        task_drop_ops(t);
}

void prefill_queue_push(prefill_worker *pw, prefill_task *t)
{
    t->next = NULL;
    if (pw->tail)
        pw->tail->next = t;
    else
        pw->head = t;
    pw->tail = t;
    pw->n_queued++;
}

prefill_task *prefill_queue_pop(prefill_worker *pw)
{
    prefill_task *t = pw->head;
    if (!t)
        return NULL;
    pw->head = t->next;
    if (!pw->head)
        pw->tail = NULL;
    pw->n_queued--;
    t->next = NULL;
    return t;
}

prefill_task *prefill_queue_remove(prefill_worker *pw, const char *id)
{
    prefill_task *prev = NULL;
    for (prefill_task *t = pw->head; t; prev = t, t = t->next) {
        if (strcmp(t->id, id))
            continue;
        if (prev)
            prev->next = t->next;
        else
            pw->head = t->next;
        if (pw->tail == t)
            pw->tail = prev;
        pw->n_queued--;
        t->next = NULL;
        return t;
    }
    return NULL;
}

int prefill_known(const prefill_worker *pw, const char *id)
{
    if (pw->cur && !strcmp(pw->cur->id, id))
        return 1;
    for (const prefill_task *t = pw->head; t; t = t->next)
        if (!strcmp(t->id, id))
            return 1;
    return 0;
}

int prefill_task_validate(const prefill_worker *pw, prefill_task *t, Kvserve__ErrorCode *code, kv_err *err)
{
    const kv_model_config *c = &pw->we->model->cfg;
    const Kvserve__PrefillTask *m = t->t;
    int bs = pw->we->pool->shape.block_size;
    *code = KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    if (m->n_prompt_tokens == 0)
        return kv_err_set(err, KV_EINVAL, "empty prompt");
    for (size_t i = 0; i < m->n_prompt_tokens; i++)
        if (m->prompt_tokens[i] < 0 || m->prompt_tokens[i] >= c->vocab_size)
            return kv_err_set(err, KV_ERANGE, "prompt token %zu is %d, outside the vocabulary (%d)", i,
                              m->prompt_tokens[i], c->vocab_size);
    if (m->n_prompt_tokens + 1 > (size_t)c->max_position) {
        *code = KVSERVE__ERROR_CODE__PROMPT_TOO_LONG;
        return kv_err_set(err, KV_EFULL, "prompt of %zu tokens leaves no room in the context length %d",
                          m->n_prompt_tokens, c->max_position);
    }
    size_t need = (m->n_prompt_tokens + (size_t)bs - 1) / (size_t)bs;
    if (m->n_decode_block_ids < need)
        return kv_err_set(err, KV_EINVAL, "%zu destination blocks for a prompt that needs %zu",
                          m->n_decode_block_ids, need);
    for (size_t i = 0; i < need; i++)
        if (m->decode_block_ids[i] < 0)
            return kv_err_set(err, KV_EINVAL, "destination block id %d is negative", m->decode_block_ids[i]);
    if ((uint64_t)m->decode_cached_blocks * (uint64_t)bs >= m->n_prompt_tokens)
        return kv_err_set(err, KV_EINVAL, "decode_cached_blocks %u leave nothing of a %zu-token prompt to ship",
                          m->decode_cached_blocks, m->n_prompt_tokens);
    if (!m->decode_kv_endpoint[0])
        return kv_err_set(err, KV_EINVAL, "no decode KV endpoint");
    int rc = worker_sampling_from_proto(m->sampling, &t->sp, err);
    if (rc)
        return rc;
    if (m->logprobs > KV_WIRE_LOGPROBS_MAX)
        return kv_err_set(err, KV_EINVAL, "logprobs %u: at most %d", m->logprobs, KV_WIRE_LOGPROBS_MAX);
    t->lp_top = (int)m->logprobs - 1;
    if (t->lp_top >= 0 && m->prompt_logprobs && !t->prompt_lp &&
        !(t->prompt_lp = calloc(m->n_prompt_tokens, sizeof *t->prompt_lp))) {
        *code = KVSERVE__ERROR_CODE__INTERNAL;
        return kv_err_set(err, KV_ENOMEM, "out of memory (prompt logprobs)");
    }
    if ((int32_t)need > pw->we->pool->n_blocks) {
        *code = KVSERVE__ERROR_CODE__NO_CAPACITY;
        return kv_err_set(err, KV_EFULL, "prompt needs %zu KV blocks; this worker's pool has %d", need,
                          pw->we->pool->n_blocks);
    }
    return KV_OK;
}

static void on_task(prefill_worker *pw, kv_wire_msg *m)
{
    const char *id = m->env->prefill->request_id;
    if (!id[0]) {
        KV_WARN("kv-prefill", "msg=\"PrefillTask without a request id dropped\"");
        return;
    }
    if (prefill_known(pw, id)) {
        KV_WARN("kv-prefill", "msg=\"duplicate PrefillTask dropped\" request=%s", id);
        return;
    }
    prefill_task *t = prefill_task_new(m->env);
    if (!t) {
        KV_ERROR("kv-prefill", "msg=\"out of memory queueing a task\" request=%s", id);
        return;
    }
    m->env = NULL; /* the task owns the message now */
    prefill_queue_push(pw, t);
    KV_DEBUG("kv-prefill", "msg=\"task queued\" request=%s queued=%d", t->id, pw->n_queued);
}

void prefill_on_control(void *ctx, kv_wire_msg *m, int rc, const kv_err *err)
{
    prefill_worker *pw = ctx;
    if (rc) {
        KV_WARN("kv-prefill", "msg=\"bad control message\" err=\"%s\"", err->msg);
        return;
    }
    int was_registered = pw->ctl->registered;
    if (worker_control_handle(pw->ctl, m)) {
        if (was_registered && !pw->ctl->registered)
            prefill_drop_queued(pw);
        return;
    }
    const Kvserve__Envelope *env = m->env;
    switch (env->body_case) {
    case KVSERVE__ENVELOPE__BODY_PREFILL:
        on_task(pw, m);
        break;
    case KVSERVE__ENVELOPE__BODY_ABORT:
        prefill_abort(pw, env->abort->request_id, env->abort->reason);
        break;
    case KVSERVE__ENVELOPE__BODY_ERROR:
        KV_WARN("kv-prefill", "msg=\"router error\" code=%s request=%s message=\"%s\"", worker_error_name(env->error->code),
                env->error->request_id, env->error->message);
        break;
    default:
        KV_WARN("kv-prefill", "msg=\"unexpected control message ignored\" body=%d", (int)env->body_case);
    }
}
