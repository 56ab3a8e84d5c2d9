/* kv-frontend: the OpenAI-compatible HTTP front end of a kvserve router (frontend.h).
 * Stateless: several may serve one router behind a load balancer. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "frontend.h"
#include "kv_file.h"
#include "kv_log.h"
#include "kv_signal.h"
#include "model_config.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kv-frontend --router tcp://HOST:PORT --model DIR [OPTIONS]\n"
            "Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models), /health, /metrics,\n"
            "/tokenize and /detokenize over HTTP for the model a kv-router serves.\n"
            "  --router EP              the router's client endpoint\n"
            "  --key FILE               the CURVE client key for the router (kvctl keys gen; default\n"
            "                           $KVSERVE_CLIENT_KEY, else the one kvctl up wrote for EP)\n"
            "  --model DIR              the served model's directory (config.json, tokenizer.json)\n"
            "  --host ADDR              IPv4 address to listen on (default 127.0.0.1)\n"
            "  --port N                 TCP port (default 8000; 0 = any free port, see --ready-file)\n"
            "  --api-key KEY            require 'Authorization: Bearer KEY' (repeatable; also KVSERVE_API_KEY,\n"
            "                           comma-separated); /health is always open, /metrics unless --metrics-auth\n"
            "  --metrics-auth           /metrics needs a key too\n"
            "  --max-body-bytes N       largest request body (default 8388608)\n"
            "  --request-timeout-s N    deadline of every generate request (default 600)\n"
            "  --threads N              HTTP threads (default 2)\n"
            "  --ready-file PATH        once listening, write http=http://HOST:PORT there\n");
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "kv-frontend: %s expects an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* -1 to run, else the exit status. */
static int parse_args(int argc, char **argv, fe_config *c)
{
    enum { O_ROUTER = 256, O_MODEL, O_HOST, O_PORT, O_KEY, O_MAUTH, O_BODY, O_TIMEOUT, O_THREADS, O_READY, O_CKEY, O_HELP };
    static const struct option opts[] = {
        {"router", required_argument, 0, O_ROUTER}, {"model", required_argument, 0, O_MODEL},
        {"host", required_argument, 0, O_HOST}, {"port", required_argument, 0, O_PORT},
        {"api-key", required_argument, 0, O_KEY}, {"metrics-auth", no_argument, 0, O_MAUTH},
        {"max-body-bytes", required_argument, 0, O_BODY}, {"request-timeout-s", required_argument, 0, O_TIMEOUT},
        {"threads", required_argument, 0, O_THREADS}, {"ready-file", required_argument, 0, O_READY},
        {"key", required_argument, 0, O_CKEY}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8000;
    c->max_body_bytes = 8u << 20;
    c->request_timeout_s = 600;
    c->threads = 2;
    opterr = 0;
    int o;
    long v;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_ROUTER: c->router = optarg; break;
        case O_CKEY: c->client_key = optarg; break;
        case O_MODEL: c->model_dir = optarg; break;
        case O_HOST: c->host = optarg; break;
        case O_PORT:
            if (parse_long("--port", optarg, 0, 65535, &v))
                return 2;
            c->port = (int)v;
            break;
        case O_KEY:
            if (!*optarg || strchr(optarg, ',') || fe_keys_add_list(&c->keys, optarg)) {
                fprintf(stderr, "kv-frontend: --api-key: a key of 1 to %d bytes without commas, at most %d keys\n",
                        FE_MAX_API_KEY_BYTES, FE_MAX_API_KEYS);
                return 2;
            }
            break;
        case O_MAUTH: c->metrics_auth = 1; break;
        case O_BODY:
            if (parse_long("--max-body-bytes", optarg, 1024, 1L << 30, &v))
                return 2;
            c->max_body_bytes = (size_t)v;
            break;
        case O_TIMEOUT:
            if (parse_long("--request-timeout-s", optarg, 1, 86400, &v))
                return 2;
            c->request_timeout_s = (int)v;
            break;
        case O_THREADS:
            if (parse_long("--threads", optarg, 1, 64, &v))
                return 2;
            c->threads = (int)v;
            break;
        case O_READY: c->ready_file = optarg; break;
        case O_HELP: case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "kv-frontend: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kv-frontend: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!c->router || !c->model_dir) {
        fprintf(stderr, "kv-frontend: --router and --model are required\n");
        usage(stderr);
        return 2;
    }
    const char *env = getenv("KVSERVE_API_KEY");
    if (env && fe_keys_add_list(&c->keys, env)) {
        fprintf(stderr, "kv-frontend: KVSERVE_API_KEY: keys of at most %d bytes, at most %d keys\n",
                FE_MAX_API_KEY_BYTES, FE_MAX_API_KEYS);
        return 2;
    }
    return -1;
}

static int load_model(frontend *fe, kv_err *err)
{
    kv_model_config cfg;
    if (kv_model_config_load(fe->cfg.model_dir, &cfg, err))
        return err->code;
    kv_path_basename(fe->cfg.model_dir, fe->model, sizeof fe->model);
    fe->max_model_len = cfg.max_position > 0 ? (uint32_t)cfg.max_position : 0;
    fe->bos_id = cfg.bos_id;
    char path[4096];
    if (kv_path_join(path, sizeof path, fe->cfg.model_dir, "tokenizer.json", err))
        return err->code;
    return kv_tokenizer_load(path, &fe->tok, err);
}

static int write_ready(const frontend *fe, kv_err *err)
{
    char line[300];
    int n = snprintf(line, sizeof line, "http=http://%s:%d\n", fe->cfg.host, fe->port);
    return kv_file_write_all(fe->cfg.ready_file, line, (size_t)n, err);
}

int main(int argc, char **argv)
{
    static frontend fe; /* large (the keys); one per process */
    int rc = parse_args(argc, argv, &fe.cfg);
    if (rc >= 0)
        return rc;
    kv_stop_signals_install();
    kv_err err = {0};
    pthread_mutex_init(&fe.lock, NULL);
    pthread_mutex_init(&fe.status_lock, NULL);
    pthread_cond_init(&fe.status_cond, NULL);
    fe.wake_fd = -1;
    if (getrandom(&fe.id_prefix, sizeof fe.id_prefix, GRND_NONBLOCK) != (ssize_t)sizeof fe.id_prefix)
        fe.id_prefix = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int status = 1, pump = 0, st = 0;
    if (load_model(&fe, &err)) {
        KV_ERROR("frontend", "event=start_failed msg=\"%s\"", err.msg);
        goto out;
    }
    if (fe_status_start(&fe, &err)) {
        KV_ERROR("frontend", "event=start_failed msg=\"%s\"", err.msg);
        goto out;
    }
    st = 1;
    if (fe_pump_start(&fe, &err)) {
        KV_ERROR("frontend", "event=start_failed msg=\"%s\"", err.msg);
        goto out;
    }
    pump = 1;
    if (fe_server_start(&fe, &err)) {
        KV_ERROR("frontend", "event=start_failed msg=\"%s\"", err.msg);
        goto out;
    }
    KV_INFO("frontend", "event=listening url=http://%s:%d router=%s model=%s api_keys=%d max_model_len=%u", fe.cfg.host,
            fe.port, fe.cfg.router, fe.model, fe.cfg.keys.n, fe.max_model_len);
    if (fe.cfg.ready_file && write_ready(&fe, &err)) {
        KV_ERROR("frontend", "event=start_failed msg=\"%s\"", err.msg);
        fe_server_stop(&fe);
        goto out;
    }
    while (!kv_stop_requested()) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    KV_INFO("frontend", "event=stopping");
    fe_server_stop(&fe);
    status = 0;
out:
    if (pump) {
        fe_pump_stop(&fe);
        while (fe.streams) { /* the pump's references */
            fe_stream *s = fe.streams;
            fe.streams = s->next;
            fe_stream_unref(s);
        }
    }
    kv_client_close(fe.client);
    if (st)
        fe_status_stop(&fe);
    if (fe.wake_fd >= 0)
        close(fe.wake_fd);
    kv_tokenizer_free(fe.tok);
    return status;
}
