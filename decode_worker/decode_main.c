/* kv-decode: registers with the router (announcing its KV endpoint), reserves blocks for
 * requests, receives their KV from prefill workers, and decodes them in continuous batches,
 * streaming TokenEvents to the router. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "kv_auth.h"
#include "kv_log.h"
#include "kv_time.h"
#include "worker_loop.h"
#include "kv_signal.h"

#define COMP "kv-decode"
#define DRAIN_MAX 256

static int run_loop(void *ctx)
{
    decode_worker *dw = ctx;
    while (!kv_stop_requested() && !dw->ctl->refused) {
        zmq_pollitem_t items[2] = {{dw->ctl->sock, 0, ZMQ_POLLIN, 0}, {dw->kv_sock, 0, ZMQ_POLLIN, 0}};
        double wake = worker_control_wake(dw->ctl);
        double res_wake = decode_wake(dw);
        if (res_wake < wake)
            wake = res_wake;
        /* A running batch never waits: messages are picked up between steps. */
        int timeout = dw->running.n ? 0 : worker_timeout_ms(kv_now_s(), wake);
        worker_poll(items, 2, timeout);
        if (items[0].revents & ZMQ_POLLIN)
            worker_drain(dw->ctl->sock, 0, DRAIN_MAX, decode_on_control, dw);
        if (items[1].revents & ZMQ_POLLIN)
            worker_drain(dw->kv_sock, 1, DRAIN_MAX, kv_receiver_on_msg, dw);
        kv_links_poll(dw);
        decode_expire(dw);
        worker_load load = {(uint32_t)dw->running.n, (uint32_t)dw->waiting.n, (uint32_t)kv_pool_n_available(dw->we->pool),
                            (uint32_t)dw->we->pool->n_blocks};
        worker_control_tick(dw->ctl, &load);
        decode_step(dw);
    }
    return dw->ctl->refused ? 1 : 0;
}

int main(int argc, char **argv)
{
    worker_flags f;
    int rc = worker_flags_parse(KV_WORKER_DECODE, argc, argv, &f);
    if (rc)
        return rc < 0 ? 0 : rc;
    kv_stop_signals_install();
    kv_err err;
    worker_engine we;
    if (worker_engine_open(&f, &we, &err)) {
        fprintf(stderr, "%s: %s\n", f.prog, err.msg);
        return 1;
    }
    if (f.fault_drop_kv_ack)
        KV_WARN(COMP, "msg=\"fault injection on: KV is never acknowledged\"");
    if (f.fault_corrupt_kv_once)
        KV_WARN(COMP, "msg=\"fault injection on: the first KV chunk is reported corrupt\"");
    int status = 1;
    worker_control ctl;
    memset(&ctl, 0, sizeof ctl);
    decode_worker dw;
    memset(&dw, 0, sizeof dw);
    dw.f = &f;
    dw.we = &we;
    dw.ctl = &ctl;
    dw.fault_corrupt_pending = f.fault_corrupt_kv_once;
    decode_kv_auth kv_auth;
    memset(&kv_auth, 0, sizeof kv_auth);
    void *zctx = zmq_ctx_new();
    if (zctx)
        dw.kv_sock = zmq_socket(zctx, ZMQ_ROUTER);
    if (!zctx || !dw.kv_sock || decode_alloc_batch(&dw)) {
        fprintf(stderr, "%s: cannot set up sockets or memory\n", f.prog);
    } else if (worker_sock_defaults(dw.kv_sock, 0), decode_kv_auth_open(&kv_auth, zctx, dw.kv_sock, &f, &err) ||
               kv_receiver_bind(&dw, &err) ||
               worker_control_open(&ctl, zctx, &f, &we, dw.kv_endpoint, &err)) {
        fprintf(stderr, "%s: %s\n", f.prog, err.msg);
    } else {
        ctl.register_fill = decode_held_fill; /* a restarted router adopts what runs here */
        ctl.register_ctx = &dw;
        status = worker_control_serve(&ctl, f.prog, run_loop, &dw);
    }
    decode_held_free(&dw.held);
    decode_free_all(&dw);
    kv_links_close_all(&dw);
    worker_control_close(&ctl);
    if (dw.kv_sock)
        zmq_close(dw.kv_sock);
    if (zctx)
        zmq_ctx_term(zctx);
    decode_kv_auth_close(&kv_auth);
    free(dw.b_seqs);
    free(dw.b_samplers);
    free(dw.b_tokens);
    free(dw.b_next);
    free(dw.b_lp_top);
    free(dw.b_lp);
    KV_INFO(COMP, "msg=\"stopped\" worker=%s status=%d blocks_free=%d/%d", f.id, status, kv_pool_n_free(we.pool),
            we.pool->n_blocks);
    worker_engine_close(&we);
    return status;
}
