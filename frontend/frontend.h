/* kv-frontend's process state, shared by its three kinds of threads:
 *   - libmicrohttpd's threads parse requests and write responses (fe_server.c);
 *   - the pump (fe_pump.c) owns the one kv_client of generate traffic: it submits,
 *     cancels, reads every reply and turns it into response bytes, for all streams at once,
 *     waking on the client's descriptors, never a thread per stream;
 *   - the status thread (fe_status.c) keeps the router's latest Status for /health and
 *     /metrics on a client of its own, so a slow router never stalls the others.
 * A stream's shared fields are guarded by fe->lock; a connection waiting for output is
 * suspended (MHD_suspend_connection) under that lock and resumed by the pump under it,
 * so a resume can never come before its suspend. */
#ifndef FRONTEND_H
#define FRONTEND_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "fe_http.h"
#include "fe_metrics.h"
#include "fe_render.h"
#include "fe_request.h"
#include "kv_client.h"
#include "kv_textbuf.h"
#include "tokenizer.h"

typedef struct fe_config {
    const char *router;       /* tcp://HOST:PORT */
    const char *client_key;   /* --key: CURVE client key file (NULL: KVSERVE_CLIENT_KEY, kvctl up's) */
    const char *model_dir;
    const char *host;         /* IPv4 address to listen on */
    int port;                 /* 0 = any free port */
    const char *ready_file;   /* once listening, "http=http://HOST:PORT" is written there */
    fe_keys keys;
    int metrics_auth;
    size_t max_body_bytes;
    int request_timeout_s;
    int threads;              /* HTTP threads */
} fe_config;

typedef struct frontend frontend;

/* One generate request from arrival to its last byte (fe_pump.c). */
typedef struct fe_stream {
    frontend *fe;
    struct MHD_Connection *conn;
    int conn_fd;
    fe_gen_request req;
    char id[64];              /* the response id, also the router's request id */
    fe_meta meta;
    double t_arrival, deadline;
    /* ---- guarded by fe->lock ---- */
    int refs;                 /* the connection's and the pump's */
    struct fe_stream *next;   /* the pump's list */
    int suspended;
    int submitted, router_done;
    int client_gone;          /* MHD finished with the connection */
    int hangup;               /* the pump saw the client close its socket */
    int cancel_wanted, cancel_sent;
    int commit_ready;         /* streaming: the 200 and the SSE body may start */
    int committed;            /* a response is queued */
    int finished;             /* everything for the client is in out */
    int failed;               /* err is the answer (before commit) */
    fe_error err;
    kv_textbuf out;           /* bytes for the client: SSE events, or the whole body */
    size_t out_pos;
    kv_textbuf text;          /* the generated text so far (cut at a stop sequence) */
    size_t text_sent;
    int stop_hit;
    uint32_t n_gen, n_gen_at_stop;
    double t_first, t_last, t_last_out;
    /* logprobs (req.logprobs) and echo (fe_pump.c): the generated tokens with theirs (lp_sent
     * of them rendered in stream chunks so far), the prompt's ids and logprobs. */
    int32_t *lp_ids;
    kv_client_logprobs *lp;
    size_t n_lp, cap_lp, lp_sent;
    int32_t *prompt_ids;
    kv_client_logprobs *prompt_lp;
    size_t n_prompt_ids, n_prompt_lp;
    int echo_sent;            /* streaming echo: the prompt's chunk went out */
    size_t text_offset;       /* completions logprobs: characters of text rendered so far */
} fe_stream;

struct frontend {
    fe_config cfg;
    char model[256];          /* the served model's name (its directory's basename) */
    uint32_t max_model_len;
    int bos_id;               /* -1: the tokenizer adds none */
    kv_tokenizer *tok;
    struct MHD_Daemon *mhd;
    int port;
    uint64_t id_prefix;
    /* pump */
    pthread_mutex_t lock;
    fe_stream *streams;       /* every stream the pump holds a reference to */
    uint64_t id_counter;
    int wake_fd;              /* eventfd: a thread changed something the pump must see */
    int stopping;
    pthread_t pump_thread;
    kv_client *client;
    /* status */
    pthread_mutex_t status_lock;
    pthread_cond_t status_cond;
    kv_status *status;        /* the latest answer, NULL until one came */
    double status_at;         /* when it came (kv_now_s) */
    char status_err[256];     /* why the last request failed, "" when it did not */
    int status_stopping;
    pthread_t status_thread;
    kv_client *status_client;
};

/* fe_pump.c */
int fe_pump_start(frontend *fe, kv_err *err);
void fe_pump_stop(frontend *fe);
/* Takes a new stream (refs = 2, on the list) and wakes the pump to submit it. Call with
 * fe->lock held. */
void fe_pump_add(frontend *fe, fe_stream *s);
void fe_pump_wake(frontend *fe);
/* Drops one reference (fe->lock held); frees the stream at zero. */
void fe_stream_unref(fe_stream *s);
/* Suspends / resumes s->conn, with fe->lock held. */
void fe_stream_suspend(fe_stream *s);
void fe_stream_resume(fe_stream *s);

/* fe_status.c */
int fe_status_start(frontend *fe, kv_err *err);
void fe_status_stop(frontend *fe);
/* /health: 200 or 503, with a JSON body. */
int fe_status_health(frontend *fe, kv_textbuf *body);
/* /metrics. */
void fe_status_metrics(frontend *fe, kv_textbuf *body);

/* fe_server.c */
int fe_server_start(frontend *fe, kv_err *err);
void fe_server_stop(frontend *fe);

#endif
