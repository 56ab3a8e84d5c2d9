/* test_cluster's router-restart scenarios (issue 13 item 3): 1P2D, 8 greedy streams (EOS
 * ignored) from a client with resume on; the router is killed with SIGKILL mid-stream and a
 * new one started on the same ports. Every stream must end by length, its indices
 * contiguous and its tokens identical to the shared reference, and afterwards nothing is in
 * flight and every decode worker's blocks are free. Without another failure, some streams
 * must have been adopted from the decode workers (no KV shipped after the restart).
 * "router-restart-kill-decode" also kills decode-0 while the router is away: its streams run
 * afresh on decode-1 from what the client holds. "router-restart-term" stops the router with
 * SIGTERM instead (kv-router --on-exit handover, the default): a graceful restart loses no
 * stream either. Prints the recovery time (kill -> first token after the restart). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_client.h"
#include "kv_test.h"
#include "kv_time.h"
#include "test_cluster.h"

#define RESTART_N 8
#define RESTART_TOKENS 240
#define RESUME_WINDOW_MS 30000
#define KILL_AFTER_TOKENS (RESTART_N * 24) /* mid-stream: about a tenth of the way */

/* Flags of both routers: quick worker health, and reservations a dead router left behind
 * (requests it was still dispatching) dropped by the decode workers within 7 s; not less:
 * the prefill worker may first spend 2 s on a KV send to the dead decode worker. */
static const char *const kRouterFlags[] = {"--worker-timeout-ms", "1000", "--heartbeat-ms", "200",
                                           "--prefill-deadline-ms", "5000", NULL};

static void kill_proc(proc *p, int sig)
{
    if (!p || p->pid <= 0)
        return;
    kill(p->pid, sig);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

/* A new kv-router on the dead one's endpoints: 0 once it wrote its ready file, else -1. */
static int restart_router(cluster *cl)
{
    unlink(cl->ready);
    char ready_arg[160];
    snprintf(ready_arg, sizeof ready_arg, "--ready-file=%s", cl->ready);
    const char *argv[32] = {"kv-router", "--model",  cl->model, "--listen", cl->client_ep,
                            "--control", cl->control_ep, ready_arg};
    int n = 8;
    for (int i = 0; kRouterFlags[i] && n < 31; i++)
        argv[n++] = kRouterFlags[i];
    argv[n] = NULL;
    proc *r = spawn(cl, "router-2", argv);
    if (!r)
        return -1;
    double deadline = kv_now_s() + 10.0;
    while (access(cl->ready, R_OK)) {
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = 0;
            fprintf(stderr, "restarted kv-router exited during start-up (status 0x%x)\n", st);
            return -1;
        }
        if (kv_now_s() > deadline)
            return -1;
        sleep_ms(5);
    }
    return 0;
}

/* The streams' state as the client saw it. */
typedef struct streams {
    char ids[RESTART_N][KV_CLIENT_ID_MAX + 1];
    int32_t got[RESTART_N][RESTART_TOKENS];
    int n_got[RESTART_N], in_order[RESTART_N], fin[RESTART_N], code[RESTART_N], finished[RESTART_N];
    int done, total;
    int adopted; /* finished with no KV shipped: bound to what a decode worker kept running */
} streams;

/* Notes one event; returns how many tokens it brought. */
static int take_event(streams *sm, const kv_client_event *ev)
{
    if (ev->kind != KVC_EVENT_REPLY)
        return 0;
    for (int i = 0; i < RESTART_N; i++) {
        if (strcmp(ev->request_id, sm->ids[i]))
            continue;
        if (ev->n_tokens && ev->index != (uint32_t)sm->n_got[i])
            sm->in_order[i] = 0;
        for (size_t k = 0; k < ev->n_tokens && sm->n_got[i] < RESTART_TOKENS; k++)
            sm->got[i][sm->n_got[i]++] = ev->tokens[k];
        sm->total += (int)ev->n_tokens;
        if (ev->finished) {
            sm->finished[i] = 1;
            sm->fin[i] = ev->finish_reason;
            sm->code[i] = ev->error_code;
            sm->done++;
            sm->adopted += ev->has_timings && !ev->timings.kv_transport[0] && !ev->timings.local_prefill &&
                           ev->timings.prefill_ms == 0;
        }
    }
    return (int)ev->n_tokens;
}

static proc *find_proc(cluster *cl, const char *name)
{
    for (int i = 0; i < cl->n; i++)
        if (!strcmp(cl->p[i].name, name))
            return &cl->p[i];
    return NULL;
}

void scenario_router_restart(const char *model, const char *models, int kill_decode, int graceful)
{
    const char *label = graceful ? "router-restart-term" : kill_decode ? "router-restart-kill-decode" : "router-restart";
    double t0 = kv_now_s();
    cluster cl;
    kv_client *c = NULL;
    int32_t ref[300];
    int n_ref = kv_test_reference_tokens(models, ref, 300);
    CHECK_MSG(n_ref >= 5 + RESTART_TOKENS, "%s: reference tokens missing", label);
    if (n_ref < 5 + RESTART_TOKENS || cluster_start(&cl, model, kRouterFlags)) {
        CHECK_MSG(0, "%s: router start failed", label);
        goto out;
    }
    CHECK(add_worker(&cl, "kv-prefill", "prefill-0", NULL) != NULL);
    /* Slowed so that the streams outlast the restart: at stories260K's ~1,800 tokens/s a stream
     * could end on its worker before the worker re-registers, leaving nothing to adopt. */
    const char *slow[] = {"--fault", "slow-decode", NULL};
    CHECK(add_worker(&cl, "kv-decode", "decode-0", slow) != NULL);
    CHECK(add_worker(&cl, "kv-decode", "decode-1", slow) != NULL);
    char errbuf[256];
    if (kv_client_connect(cl.client_ep, &c, errbuf, sizeof errbuf) || wait_workers(c, 3, 15000)) {
        CHECK_MSG(0, "%s: cluster did not come up", label);
        goto out;
    }
    CHECK(kv_client_set_resume(c, RESUME_WINDOW_MS) == KVC_OK);
    streams sm;
    memset(&sm, 0, sizeof sm);
    for (int i = 0; i < RESTART_N; i++) {
        sm.in_order[i] = 1;
        kv_client_request r;
        kv_client_request_init(&r);
        r.prompt_tokens = ref;
        r.n_prompt_tokens = 5;
        r.max_tokens = RESTART_TOKENS;
        r.ignore_eos = 1;
        CHECK(kv_client_submit(c, &r, sm.ids[i], 2000) == KVC_OK);
    }
    int killed = 0, on_victim = 0, tokens_at_kill = 0, restarted = 0;
    double t_kill = 0, t_back = 0, t_first_after = 0, deadline = kv_now_s() + 40.0;
    while (sm.done < RESTART_N && kv_now_s() < deadline) {
        kv_client_event ev;
        if (kv_client_next_event(c, 100, &ev))
            continue;
        int n = take_event(&sm, &ev);
        if (killed && n && !t_first_after)
            t_first_after = kv_now_s();
        if (!killed && sm.total >= KILL_AFTER_TOKENS) {
            /* Which requests decode-0 holds now: with kill_decode, those must survive it. */
            kv_status *st;
            if (!kv_client_status(c, 1000, &st)) {
                for (size_t i = 0; i < st->n_requests; i++)
                    on_victim += st->requests[i].decode_worker && !strcmp(st->requests[i].decode_worker, "decode-0");
                kv_status_free(st);
            }
            t_kill = kv_now_s();
            kill_proc(&cl.p[0], graceful ? SIGTERM : SIGKILL); /* the router */
            if (kill_decode)
                kill_proc(find_proc(&cl, "decode-0"), SIGKILL);
            killed = 1;
            /* What the dead router sent before it died is no token of the new one's. */
            while (!kv_client_next_event(c, 0, &ev))
                take_event(&sm, &ev);
            tokens_at_kill = sm.total;
            restarted = restart_router(&cl) == 0;
            t_back = kv_now_s();
            CHECK_MSG(restarted, "%s: the router did not come back on its ports", label);
            if (!restarted)
                break;
        }
    }
    CHECK_MSG(killed, "%s: no token ever arrived", label);
    CHECK_MSG(!kill_decode || on_victim > 0, "%s: decode-0 held no request when killed", label);
    CHECK_MSG(tokens_at_kill < RESTART_N * RESTART_TOKENS, "%s: every stream ended before the kill", label);
    /* Without a decode worker's death, the streams it ran when the router died go on there. */
    CHECK_MSG(kill_decode || sm.adopted > 0, "%s: no stream was adopted from a decode worker", label);
    CHECK_MSG(sm.done == RESTART_N, "%s: %d of %d requests ended within 40 s", label, sm.done, RESTART_N);
    int n_exact = 0;
    for (int i = 0; i < RESTART_N; i++) {
        if (!sm.finished[i])
            continue;
        CHECK_MSG(sm.fin[i] == KVC_FINISH_LENGTH, "%s: request %d finished %s (%s)", label, i,
                  kv_client_finish_name(sm.fin[i]), kv_client_error_name(sm.code[i]));
        CHECK_MSG(sm.in_order[i], "%s: request %d: stream indices not contiguous", label, i);
        CHECK_MSG(sm.n_got[i] == RESTART_TOKENS, "%s: request %d got %d tokens", label, i, sm.n_got[i]);
        int first_bad = -1;
        for (int k = 0; k < sm.n_got[i] && first_bad < 0; k++)
            if (sm.got[i][k] != ref[5 + k])
                first_bad = k;
        CHECK_MSG(first_bad < 0, "%s: request %d token %d differs from the reference (got %d, expected %d)", label, i,
                  first_bad, first_bad < 0 ? 0 : sm.got[i][first_bad], first_bad < 0 ? 0 : ref[5 + first_bad]);
        n_exact += sm.fin[i] == KVC_FINISH_LENGTH && sm.n_got[i] == RESTART_TOKENS && first_bad < 0;
    }
    /* Nothing in flight at the new router, every live decode worker's blocks free (the dead
     * router's requests aborted or finished, its reservations dropped by their deadline). */
    if (restarted)
        CHECK_MSG(wait_idle(c, 15000, label) == 0, "%s: requests in flight or blocks held after the restart", label);
    fprintf(stderr,
            "%s scenario: killed the router after %d tokens (%d requests on decode-0); new router up %.0f ms after "
            "the kill; first token %.0f ms after the kill; %d/%d streams complete and exact, %d adopted; %.2f s in all\n",
            label, tokens_at_kill, on_victim, (t_back - t_kill) * 1e3,
            t_first_after ? (t_first_after - t_kill) * 1e3 : -1.0, n_exact, RESTART_N, sm.adopted, kv_now_s() - t0);
out:
    kv_client_close(c);
    cluster_stop(&cl);
}
