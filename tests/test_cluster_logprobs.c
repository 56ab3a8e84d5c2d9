/* Scenario 8 of test_cluster: logprobs through the cluster (1P2D) against in-process
 * kv_generate on the same model (what `kvctl generate --local --logprobs` prints):
 *   - greedy and seeded requests, streamed and not, with 5 alternatives and the prompt's
 *     logprobs: the same tokens, every logprob and top alternative within rel. err 1e-4
 *     (of max(|ref|, 1e-3): a logprob near 0 is compared to the nearest thousandth);
 *   - logprobs beyond 21 refused (INVALID_ARGUMENT);
 *   - decode-0 killed mid-stream: the re-planned streams still bring each index's token and
 *     logprobs exactly once, equal to the reference, and the prompt's logprobs once. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "engine.h"
#include "generate.h"
#include "kv_test.h"
#include "kv_time.h"
#include "test_cluster.h"

#define LP_TOP 5
#define LP_MAX_TOKENS 120
#define LP_N_KILL 4

typedef struct lp_ref {
    int32_t tokens[LP_MAX_TOKENS];
    kc_logprobs lp[LP_MAX_TOKENS];
    int n;
    kc_logprobs *prompt_lp; /* n_prompt - 1 */
    int n_prompt_lp;
} lp_ref;

static int ref_on_token(void *ctx, int32_t t)
{
    lp_ref *r = ctx;
    if (r->n < LP_MAX_TOKENS)
        r->tokens[r->n++] = t;
    return 0;
}

static void ref_on_logprobs(void *ctx, const kc_logprobs *lp, int n, int prompt)
{
    lp_ref *r = ctx;
    if (prompt) {
        r->prompt_lp = malloc((size_t)(n > 0 ? n : 1) * sizeof *lp);
        if (r->prompt_lp && n > 0)
            memcpy(r->prompt_lp, lp, (size_t)n * sizeof *lp);
        r->n_prompt_lp = n;
    } else if (r->n < LP_MAX_TOKENS) {
        r->lp[r->n] = *lp; /* before its token */
    }
}

static int reference(const char *model, const int32_t *prompt, int n_prompt, int max_tokens, float temperature,
                     uint64_t seed, lp_ref *out)
{
    kv_err err;
    kv_model *m = NULL;
    kv_engine *e = NULL;
    kv_engine_options o;
    kv_engine_options_default(&o);
    o.n_threads = 1;
    memset(out, 0, sizeof *out);
    int rc = kv_model_load(model, &m, &err);
    if (!rc)
        rc = kv_engine_create(m, &o, &e, &err);
    kv_gen_params p = {.max_tokens = max_tokens, .ignore_eos = 1, .logprobs = LP_TOP + 1, .prompt_logprobs = 1,
                       .on_logprobs = ref_on_logprobs};
    kv_sampling_default(&p.sampling);
    p.sampling.temperature = temperature;
    p.sampling.top_k = temperature > 0 ? 40 : 0;
    p.sampling.seed = seed;
    kv_gen_stats st;
    if (!rc)
        rc = kv_generate(e, prompt, n_prompt, &p, ref_on_token, out, &st, &err);
    if (rc)
        fprintf(stderr, "logprobs reference: %s\n", err.msg);
    kv_engine_free(e);
    kv_model_free(m);
    return rc;
}

static double worst;

static int close_lp(float got, float want)
{
    if (isinf(want) || isinf(got))
        return got == want;
    double d = fabs((double)got - (double)want) / fmax(fabs((double)want), 1e-3);
    if (!(d <= worst))
        worst = d;
    return d < 1e-4;
}

/* One token's (or prompt position's) logprobs against the reference: 0 when equal. */
static int differs(const kv_client_logprobs *got, const kc_logprobs *want)
{
    if (!close_lp(got->logprob, want->logprob) || got->n_top != (uint32_t)want->n_top)
        return 1;
    for (uint32_t k = 0; k < got->n_top; k++)
        if (!close_lp(got->top_logprobs[k], want->top_logprobs[k]) ||
            (got->top_ids[k] != want->top_ids[k] && fabsf(want->top_logprobs[k] - want->top_logprobs[k ? k - 1 : 0]) > 1e-5f))
            return 1; /* an id may differ only where the reference itself has a tie */
    return 0;
}

static void check_result(const kv_client_result *res, const lp_ref *ref, const char *label)
{
    CHECK_MSG(res->n_tokens == (size_t)ref->n, "%s: %zu tokens, reference %d", label, res->n_tokens, ref->n);
    CHECK_MSG(res->logprobs != NULL, "%s: no logprobs", label);
    for (size_t i = 0; res->logprobs && i < res->n_tokens && i < (size_t)ref->n; i++) {
        CHECK_MSG(res->tokens[i] == ref->tokens[i], "%s: token %zu is %d, reference %d", label, i, res->tokens[i],
                  ref->tokens[i]);
        CHECK_MSG(!differs(&res->logprobs[i], &ref->lp[i]), "%s: token %zu logprob %.9g, reference %.9g", label, i,
                  (double)res->logprobs[i].logprob, (double)ref->lp[i].logprob);
    }
    CHECK_MSG(res->n_prompt_logprobs == (size_t)ref->n_prompt_lp, "%s: %zu prompt logprobs, reference %d", label,
              res->n_prompt_logprobs, ref->n_prompt_lp);
    for (size_t i = 0; i < res->n_prompt_logprobs && i < (size_t)ref->n_prompt_lp; i++)
        CHECK_MSG(!differs(&res->prompt_logprobs[i], &ref->prompt_lp[i]), "%s: prompt position %zu: %.9g vs %.9g",
                  label, i + 1, (double)res->prompt_logprobs[i].logprob, (double)ref->prompt_lp[i].logprob);
}

static void one(kv_client *c, const int32_t *prompt, int n_prompt, const lp_ref *ref, float temperature,
                uint64_t seed, int stream, const char *label)
{
    kv_client_request r;
    kv_client_request_init(&r);
    r.prompt_tokens = prompt;
    r.n_prompt_tokens = (size_t)n_prompt;
    r.max_tokens = (uint32_t)ref->n;
    r.ignore_eos = 1;
    r.stream = stream;
    r.temperature = temperature;
    r.top_k = temperature > 0 ? 40 : 0;
    r.seed = seed;
    r.logprobs = LP_TOP + 1;
    r.prompt_logprobs = 1;
    kv_client_result res;
    int rc = kv_client_generate(c, &r, NULL, NULL, &res, 20000);
    CHECK_MSG(rc == KVC_OK, "%s: %s", label, kv_client_last_error(c));
    if (rc == KVC_OK)
        check_result(&res, ref, label);
    kv_client_result_free(&res);
}

/* decode-0 dies once streams run: every request's logprobs, index by index, exactly once. */
static void killed_mid_stream(cluster *cl, kv_client *c, proc *victim, const int32_t *prompt, int n_prompt,
                              const lp_ref *ref)
{
    char ids[LP_N_KILL][KV_CLIENT_ID_MAX + 1];
    int n_got[LP_N_KILL] = {0}, n_plp[LP_N_KILL] = {0}, fin[LP_N_KILL] = {0}, bad[LP_N_KILL] = {0}, done = 0;
    for (int i = 0; i < LP_N_KILL; i++) {
        kv_client_request r;
        kv_client_request_init(&r);
        r.prompt_tokens = prompt;
        r.n_prompt_tokens = (size_t)n_prompt;
        r.max_tokens = (uint32_t)ref->n;
        r.ignore_eos = 1;
        r.logprobs = LP_TOP + 1;
        r.prompt_logprobs = 1;
        CHECK(kv_client_submit(c, &r, ids[i], 2000) == KVC_OK);
    }
    int killed = 0;
    double deadline = kv_now_s() + 30.0;
    while (done < LP_N_KILL && kv_now_s() < deadline) {
        kv_client_event ev;
        if (kv_client_next_event(c, 200, &ev) || ev.kind != KVC_EVENT_REPLY)
            continue;
        for (int i = 0; i < LP_N_KILL; i++) {
            if (strcmp(ev.request_id, ids[i]))
                continue;
            if (ev.n_prompt_logprobs) {
                n_plp[i]++;
                for (size_t k = 0; k < ev.n_prompt_logprobs && k < (size_t)ref->n_prompt_lp; k++)
                    bad[i] |= differs(&ev.prompt_logprobs[k], &ref->prompt_lp[k]);
                bad[i] |= ev.n_prompt_logprobs != (size_t)ref->n_prompt_lp;
            }
            if (ev.n_tokens && (ev.index != (uint32_t)n_got[i] || !ev.logprobs))
                bad[i] = 1;
            for (size_t k = 0; ev.logprobs && k < ev.n_tokens && n_got[i] < ref->n; k++, n_got[i]++)
                bad[i] |= ev.tokens[k] != ref->tokens[n_got[i]] || differs(&ev.logprobs[k], &ref->lp[n_got[i]]);
            if (ev.finished) {
                fin[i] = ev.finish_reason;
                done++;
            }
        }
        if (!killed && ev.n_tokens) {
            kill(victim->pid, SIGKILL);
            waitpid(victim->pid, NULL, 0);
            victim->pid = 0;
            killed = 1;
        }
    }
    (void)cl;
    CHECK_MSG(killed && done == LP_N_KILL, "logprobs kill: %d of %d requests ended", done, LP_N_KILL);
    for (int i = 0; i < LP_N_KILL; i++) {
        CHECK_MSG(fin[i] == KVC_FINISH_LENGTH, "logprobs kill: request %d finished %s", i,
                  kv_client_finish_name(fin[i]));
        CHECK_MSG(n_got[i] == ref->n, "logprobs kill: request %d: %d tokens", i, n_got[i]);
        CHECK_MSG(!bad[i], "logprobs kill: request %d: a token or its logprobs differ, out of order or missing", i);
        CHECK_MSG(n_plp[i] == 1, "logprobs kill: request %d got the prompt's logprobs %d times", i, n_plp[i]);
    }
    /* Re-planned, and then nothing in flight and no live worker holding blocks. */
    int replanned = 0, idle = 0;
    for (double until = kv_now_s() + 5.0; !idle && kv_now_s() < until; sleep_ms(50)) {
        kv_status *st;
        if (kv_client_status(c, 1000, &st))
            continue;
        replanned = st->requests_replanned > 0;
        idle = st->n_requests == 0;
        for (size_t i = 0; i < st->n_workers; i++)
            idle &= !st->workers[i].healthy || st->workers[i].kv_blocks_used == 0;
        kv_status_free(st);
    }
    CHECK_MSG(replanned, "logprobs kill: nothing was re-planned");
    CHECK_MSG(idle, "logprobs kill: requests in flight or blocks held after the worker died");
}

void scenario_logprobs(const char *model)
{
    double t0 = kv_now_s();
    const int32_t prompt[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 303, 307, 292};
    int n_prompt = (int)(sizeof prompt / sizeof *prompt);
    lp_ref greedy, sampled;
    worst = 0;
    if (reference(model, prompt, n_prompt, LP_MAX_TOKENS, 0.0f, 0, &greedy) ||
        reference(model, prompt, n_prompt, 40, 0.8f, 77, &sampled)) {
        CHECK_MSG(0, "logprobs: the in-process reference failed");
        return;
    }
    cluster cl;
    kv_client *c = NULL;
    const char *router_flags[] = {"--worker-timeout-ms", "1000", "--heartbeat-ms", "200", NULL};
    if (cluster_start(&cl, model, router_flags)) {
        CHECK_MSG(0, "logprobs: router start failed");
        goto out;
    }
    CHECK(add_worker(&cl, "kv-prefill", "prefill-0", NULL) != NULL);
    proc *d0 = add_worker(&cl, "kv-decode", "decode-0", NULL);
    CHECK(add_worker(&cl, "kv-decode", "decode-1", NULL) != NULL);
    char errbuf[256];
    if (!d0 || kv_client_connect(cl.client_ep, &c, errbuf, sizeof errbuf) || wait_workers(c, 3, 15000)) {
        CHECK_MSG(0, "logprobs: cluster did not come up");
        goto out;
    }
    one(c, prompt, n_prompt, &greedy, 0.0f, 0, 1, "logprobs greedy streamed");
    one(c, prompt, n_prompt, &greedy, 0.0f, 0, 0, "logprobs greedy whole");
    one(c, prompt, n_prompt, &sampled, 0.8f, 77, 1, "logprobs seeded");

    /* More than 20 alternatives: refused by the router. */
    kv_client_request r;
    kv_client_request_init(&r);
    r.prompt_tokens = prompt;
    r.n_prompt_tokens = 3;
    r.max_tokens = 2;
    r.logprobs = 22;
    kv_client_result res;
    int rc = kv_client_generate(c, &r, NULL, NULL, &res, 10000);
    CHECK_MSG(rc == KVC_EREMOTE && res.error_code == KVC_ERR_INVALID_ARGUMENT, "logprobs 22: rc %d %s", rc,
              kv_client_error_name(res.error_code));
    kv_client_result_free(&res);

    CHECK(wait_idle(c, 5000, "logprobs") == 0);
    killed_mid_stream(&cl, c, d0, prompt, n_prompt, &greedy);
    fprintf(stderr, "logprobs scenario: worst relative error %.3g; %.2f s\n", worst, kv_now_s() - t0);
out:
    free(greedy.prompt_lp);
    free(sampled.prompt_lp);
    kv_client_close(c);
    cluster_stop(&cl);
}
