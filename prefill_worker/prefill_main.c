/* kv-prefill: registers with the router, takes PrefillTasks (FIFO), runs chunked prefill,
 * ships the KV to each task's decode worker and reports PrefillDone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_log.h"
#include "kv_time.h"
#include "prefill.h"
#include "worker_loop.h"
#include "kv_signal.h"

#define COMP "kv-prefill"
#define DRAIN_MAX 256

static int run_loop(void *ctx)
{
    prefill_worker *pw = ctx;
    zmq_pollitem_t *items = NULL;
    int cap = 0;
    while (!kv_stop_requested() && !pw->ctl->refused) {
        int n = 1 + pw->sender.n;
        if (n > cap) {
            zmq_pollitem_t *p = realloc(items, (size_t)n * sizeof *p);
            if (!p) {
                KV_ERROR(COMP, "msg=\"out of memory\"");
                break;
            }
            items = p;
            cap = n;
        }
        memset(items, 0, (size_t)n * sizeof *items);
        items[0].socket = pw->ctl->sock;
        items[0].events = ZMQ_POLLIN;
        for (int i = 0; i < pw->sender.n; i++) {
            items[1 + i].socket = pw->sender.peers[i]->sock;
            items[1 + i].events = ZMQ_POLLIN;
        }
        double wake = worker_control_wake(pw->ctl);
        double task_wake = prefill_wake(pw);
        if (task_wake < wake)
            wake = task_wake;
        int timeout = prefill_has_work(pw) ? 0 : worker_timeout_ms(kv_now_s(), wake);
        worker_poll(items, n, timeout);
        if (items[0].revents & ZMQ_POLLIN)
            worker_drain(pw->ctl->sock, 0, DRAIN_MAX, prefill_on_control, pw);
        for (int i = 1; i < n; i++)
            if (items[i].revents & ZMQ_POLLIN) {
                prefill_kv_from from = {pw, pw->sender.peers[i - 1]};
                worker_drain(items[i].socket, 0, DRAIN_MAX, prefill_on_kv, &from);
            }
        worker_load load = {pw->cur ? 1u : 0u, (uint32_t)pw->n_queued, (uint32_t)kv_pool_n_available(pw->we->pool),
                            (uint32_t)pw->we->pool->n_blocks};
        worker_control_tick(pw->ctl, &load);
        prefill_step(pw);
        prefill_reap(pw, 0);
        prefill_close_idle_peers(pw);
    }
    free(items);
    return pw->ctl->refused ? 1 : 0;
}

int main(int argc, char **argv)
{
    worker_flags f;
    int rc = worker_flags_parse(KV_WORKER_PREFILL, argc, argv, &f);
    if (rc)
        return rc < 0 ? 0 : rc;
    kv_stop_signals_install();
    kv_err err;
    worker_engine we;
    if (worker_engine_open(&f, &we, &err)) {
        fprintf(stderr, "%s: %s\n", f.prog, err.msg);
        return 1;
    }
    void *zctx = zmq_ctx_new();
    worker_control ctl;
    int status = 1;
    prefill_worker pw;
    int oom = prefill_worker_init(&pw, &f, &we, &ctl, zctx);
    if (!zctx || oom) {
        fprintf(stderr, "%s: out of memory\n", f.prog);
    } else if (kv_sender_set_curve(&pw.sender, &f, &err) || worker_control_open(&ctl, zctx, &f, &we, "", &err)) {
        fprintf(stderr, "%s: %s\n", f.prog, err.msg);
    } else {
        status = worker_control_serve(&ctl, f.prog, run_loop, &pw);
        prefill_fail_all(&pw);
        worker_control_close(&ctl);
    }
    /* NCCL sends first (their communicators aborted, then waited for), then the sockets (no
     * linger), then the context, then the pool the zero-copy frames read. */
    kv_sender_abort_gpu(&pw.sender);
    prefill_drop_gpu_ops(&pw);
    kv_sender_close(&pw.sender);
    if (zctx)
        zmq_ctx_term(zctx);
    prefill_reap(&pw, 1); /* the context is gone: ZeroMQ holds no frame any more */
    free(pw.logits);
    KV_INFO(COMP, "msg=\"stopped\" worker=%s status=%d blocks_free=%d/%d", f.id, status, kv_pool_n_free(we.pool),
            we.pool->n_blocks);
    worker_engine_close(&we);
    return status;
}
