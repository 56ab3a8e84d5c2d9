/* The router's Status for /health and /metrics (frontend.h): a thread of its own asks once a
 * second on a client of its own and keeps the latest answer, so a request for /health never
 * waits on the router and never stalls a stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frontend.h"
#include "kv_log.h"
#include "kv_time.h"

#define STATUS_EVERY_S 1.0
#define STATUS_TIMEOUT_MS 1000
/* /health is 200 only while the last answer is at most this old. */
#define STATUS_FRESH_S 3.0

static void *status_main(void *arg)
{
    frontend *fe = arg;
    int was_ok = -1;
    for (;;) {
        kv_status *st = NULL;
        int rc = kv_client_status(fe->status_client, STATUS_TIMEOUT_MS, &st);
        pthread_mutex_lock(&fe->status_lock);
        if (rc == KVC_OK) {
            kv_status_free(fe->status);
            fe->status = st;
            fe->status_at = kv_now_s();
            fe->status_err[0] = '\0';
        } else {
            snprintf(fe->status_err, sizeof fe->status_err, "%s", kv_client_last_error(fe->status_client));
        }
        if (was_ok != (rc == KVC_OK)) {
            if (rc == KVC_OK)
                KV_INFO("frontend", "event=router_status_ok router=%s", fe->cfg.router);
            else
                KV_WARN("frontend", "event=router_status_failed router=%s msg=\"%s\"", fe->cfg.router, fe->status_err);
            was_ok = rc == KVC_OK;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)(STATUS_EVERY_S * 1e9);
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!fe->status_stopping && pthread_cond_timedwait(&fe->status_cond, &fe->status_lock, &until) == 0) {
        }
        int stop = fe->status_stopping;
        pthread_mutex_unlock(&fe->status_lock);
        if (stop)
            break;
    }
    return NULL;
}

int fe_status_start(frontend *fe, kv_err *err)
{
    char buf[512];
    if (kv_client_connect_key(fe->cfg.router, fe->cfg.client_key, &fe->status_client, buf, sizeof buf))
        return kv_err_set(err, KV_EIO, "%s", buf);
    if (pthread_create(&fe->status_thread, NULL, status_main, fe))
        return kv_err_set(err, KV_EIO, "cannot start the status thread");
    return KV_OK;
}

void fe_status_stop(frontend *fe)
{
    pthread_mutex_lock(&fe->status_lock);
    fe->status_stopping = 1;
    pthread_cond_broadcast(&fe->status_cond);
    pthread_mutex_unlock(&fe->status_lock);
    pthread_join(fe->status_thread, NULL);
    kv_status_free(fe->status);
    fe->status = NULL;
    kv_client_close(fe->status_client);
    fe->status_client = NULL;
}

int fe_status_health(frontend *fe, kv_textbuf *body)
{
    fe_error e;
    pthread_mutex_lock(&fe->status_lock);
    double age = kv_now_s() - fe->status_at;
    int prefill = 0, decode = 0, fresh = fe->status && age <= STATUS_FRESH_S;
    if (fresh)
        for (size_t i = 0; i < fe->status->n_workers; i++) {
            const kv_status_worker *w = &fe->status->workers[i];
            prefill += w->healthy && w->role == KVC_ROLE_PREFILL;
            decode += w->healthy && w->role == KVC_ROLE_DECODE;
        }
    if (!fresh)
        fe_fail(&e, 503, "service_unavailable", "", "router_unreachable",
                "the router at %s did not answer a status request within %.0f s%s%s", fe->cfg.router, STATUS_FRESH_S,
                fe->status_err[0] ? ": " : "", fe->status_err);
    else if (!prefill || !decode)
        fe_fail(&e, 503, "service_unavailable", "", "no_healthy_workers",
                "%d healthy prefill and %d healthy decode workers: at least one of each is needed", prefill, decode);
    pthread_mutex_unlock(&fe->status_lock);
    if (!fresh || !prefill || !decode) {
        fe_render_error(body, &e);
        return 503;
    }
    kv_textbuf_printf(body, "{\"status\":\"ok\",\"healthy_prefill_workers\":%d,\"healthy_decode_workers\":%d}", prefill,
                      decode);
    return 200;
}

void fe_status_metrics(frontend *fe, kv_textbuf *body)
{
    pthread_mutex_lock(&fe->status_lock);
    int fresh = fe->status && kv_now_s() - fe->status_at <= STATUS_FRESH_S;
    fe_metrics_render(body, fe->model, fresh ? fe->status : NULL);
    pthread_mutex_unlock(&fe->status_lock);
}
