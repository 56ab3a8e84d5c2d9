/* kvctl generate: stream a continuation to stdout, either through a router (the default:
 * --router tcp://127.0.0.1:7100) or, with --local, generated in this process. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "generate.h"
#include "kv_client.h"
#include "kvctl_args.h"
#include "kv_time.h"
#include "kvctl_cmds.h"
#include "model.h"
#include "tokenizer.h"

#define DEFAULT_ROUTER "tcp://127.0.0.1:7100"

typedef struct gen_cli {
    const char *model_dir;
    int local;
    const char *router;
    const char *local_only_flag; /* last flag given that only makes sense with --local */
    int max_tokens_set;
    long deadline_ms;
    kv_gen_params gen;
    kv_engine_options engine;
    char *prompt;
    const char *device;    /* --device as given */
    const char *precision; /* --precision as given, or NULL */
} gen_cli;

typedef struct stream_ctx {
    kv_detok detok;
    char buf[1024];
    int failed;
} stream_ctx;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl generate [--router ADDR] [OPTIONS] [--] PROMPT\n"
            "       kvctl generate --local --model DIR [OPTIONS] [--] PROMPT\n"
            "Prints only the generated continuation on stdout (as it arrives); timings go to stderr.\n"
            "  --router ADDR        the router's client endpoint (default " DEFAULT_ROUTER ")\n"
            "  --local              run the model in this process instead\n"
            "  --model DIR          with --local: HuggingFace Llama directory (config.json, *.safetensors,\n"
            "                       tokenizer.json); with a router: optional, its basename must name the\n"
            "                       served model\n"
            "  --deadline-ms N      with a router: whole-request deadline (default: the router's)\n"
            "  --max-tokens N       tokens to generate (default 256)\n"
            "  --temperature T      0 = greedy (default 0)\n"
            "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P            nucleus sampling mass in (0, 1] (default 1 = off)\n"
            "  --seed S             sampling seed (default 0)\n"
            "  --ignore-eos         keep generating past end-of-sequence tokens\n"
            "local only:\n"
            "  --prefill-chunk N    prompt tokens per prefill forward (default 512)\n"
            "  --no-kv-cache        recompute the whole sequence every step (baseline)\n"
            "  --block-size N       KV block size in tokens (default 16)\n"
            "  --kv-blocks N        KV pool size in blocks (default: 4 full contexts)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --device D           cpu | auto | cuda:N (default cpu; auto = cuda:0 when usable)\n"
            "  --precision P        f32 | bf16 (default f32 on the cpu, bf16 on a GPU)\n");
}

static int on_token(void *ctx, int32_t token)
{
    stream_ctx *s = ctx;
    kv_err err;
    int n = kv_detok_push(&s->detok, token, s->buf, sizeof s->buf, &err);
    if (n < 0) {
        fprintf(stderr, "kvctl: cannot decode token %d: %s\n", token, err.msg);
        s->failed = 1;
        return 1;
    }
    fwrite(s->buf, 1, (size_t)n, stdout);
    fflush(stdout);
    return 0;
}

static char *join_args(int argc, char **argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *s = calloc(len, 1);
    if (!s)
        return NULL;
    for (int i = 0; i < argc; i++) {
        if (i)
            strcat(s, " ");
        strcat(s, argv[i]);
    }
    return s;
}

/* --device / --precision into the engine options (kv_engine_parse_device says why a
 * device cannot be used); nonzero after printing the reason. */
static int resolve_device(gen_cli *cli)
{
    kv_err err;
    if (kv_engine_parse_device(cli->device ? cli->device : "cpu", &cli->engine.device, &err)) {
        fprintf(stderr, "kvctl generate: %s\n", err.msg);
        return 2;
    }
    if (!cli->precision) {
        cli->engine.precision = cli->engine.device >= 0 ? KV_PRECISION_BF16 : KV_PRECISION_F32;
    } else if (!strcmp(cli->precision, "f32")) {
        cli->engine.precision = KV_PRECISION_F32;
    } else if (!strcmp(cli->precision, "bf16")) {
        cli->engine.precision = KV_PRECISION_BF16;
    } else {
        fprintf(stderr, "kvctl generate: --precision expects f32 or bf16, got '%s'\n", cli->precision);
        return 2;
    }
    if (cli->engine.device < 0 && cli->engine.precision != KV_PRECISION_F32) {
        fprintf(stderr, "kvctl generate: --precision %s needs a CUDA device: the cpu engine computes in f32 only\n",
                cli->precision);
        return 2;
    }
    return 0;
}

/* Returns 0 to proceed, else the exit status. */
static int parse_args(int argc, char **argv, gen_cli *cli)
{
    enum { O_LOCAL = 256, O_MODEL, O_MAX, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_CHUNK, O_NOKV, O_IGNEOS, O_BS, O_BLOCKS,
           O_THREADS, O_ROUTER, O_DEADLINE, O_DEVICE, O_PRECISION, O_HELP };
    static const struct option opts[] = {
        {"local", no_argument, 0, O_LOCAL}, {"model", required_argument, 0, O_MODEL},
        {"max-tokens", required_argument, 0, O_MAX}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"prefill-chunk", required_argument, 0, O_CHUNK},
        {"no-kv-cache", no_argument, 0, O_NOKV}, {"ignore-eos", no_argument, 0, O_IGNEOS},
        {"block-size", required_argument, 0, O_BS}, {"kv-blocks", required_argument, 0, O_BLOCKS},
        {"threads", required_argument, 0, O_THREADS}, {"router", required_argument, 0, O_ROUTER},
        {"deadline-ms", required_argument, 0, O_DEADLINE}, {"device", required_argument, 0, O_DEVICE},
        {"precision", required_argument, 0, O_PRECISION}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    memset(cli, 0, sizeof *cli);
    cli->gen.max_tokens = 256;
    kv_sampling_default(&cli->gen.sampling);
    kv_engine_options_default(&cli->engine);
    optind = 1;
    opterr = 0;
    int c;
    long v;
    double d;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_LOCAL: cli->local = 1; break;
        case O_MODEL: cli->model_dir = optarg; break;
        case O_MAX:
            bad = kvctl_parse_int("--max-tokens", optarg, 0, 1 << 24, &v);
            cli->gen.max_tokens = (int)v;
            cli->max_tokens_set = 1;
            break;
        case O_TEMP: bad = kvctl_parse_float("--temperature", optarg, 0, 100, &d); cli->gen.sampling.temperature = (float)d; break;
        case O_TOPK: bad = kvctl_parse_int("--top-k", optarg, 0, 1 << 30, &v); cli->gen.sampling.top_k = (int)v; break;
        case O_TOPP:
            bad = kvctl_parse_float("--top-p", optarg, 0, 1, &d);
            if (!bad && d <= 0) { fprintf(stderr, "kvctl: --top-p must be > 0\n"); bad = 1; }
            cli->gen.sampling.top_p = (float)d;
            break;
        case O_SEED: bad = kvctl_parse_u64("--seed", optarg, &cli->gen.sampling.seed); break;
        case O_CHUNK: cli->local_only_flag = "--prefill-chunk"; bad = kvctl_parse_int("--prefill-chunk", optarg, 1, 1 << 20, &v); cli->engine.prefill_chunk = (int)v; break;
        case O_NOKV: cli->local_only_flag = "--no-kv-cache"; cli->gen.no_kv_cache = 1; break;
        case O_IGNEOS: cli->gen.ignore_eos = 1; break;
        case O_BS: cli->local_only_flag = "--block-size"; bad = kvctl_parse_int("--block-size", optarg, 1, 1024, &v); cli->engine.block_size = (int)v; break;
        case O_BLOCKS: cli->local_only_flag = "--kv-blocks"; bad = kvctl_parse_int("--kv-blocks", optarg, 1, 1L << 30, &v); cli->engine.n_blocks = (int32_t)v; break;
        case O_THREADS: cli->local_only_flag = "--threads"; bad = kvctl_parse_int("--threads", optarg, 1, 1024, &v); cli->engine.n_threads = (int)v; break;
        case O_DEVICE: cli->local_only_flag = "--device"; cli->device = optarg; break;
        case O_PRECISION: cli->local_only_flag = "--precision"; cli->precision = optarg; break;
        case O_ROUTER: cli->router = optarg; break;
        case O_DEADLINE: bad = kvctl_parse_int("--deadline-ms", optarg, 1, 0xffffffffL, &cli->deadline_ms); break;
        case O_HELP: case 'h': usage(stdout); return -1;
        default:
            fprintf(stderr, "kvctl generate: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (cli->local && cli->router) {
        fprintf(stderr, "kvctl generate: --local and --router exclude each other\n");
        return 2;
    }
    if (cli->local && cli->deadline_ms) {
        fprintf(stderr, "kvctl generate: --deadline-ms needs a router (not --local)\n");
        return 2;
    }
    if (!cli->local) {
        if (!cli->router)
            cli->router = DEFAULT_ROUTER;
        if (cli->local_only_flag) {
            fprintf(stderr, "kvctl generate: %s applies only to --local\n", cli->local_only_flag);
            return 2;
        }
        if (cli->max_tokens_set && cli->gen.max_tokens < 1) {
            fprintf(stderr, "kvctl generate: --max-tokens must be >= 1 with a router\n");
            return 2;
        }
    } else if (!cli->model_dir) {
        fprintf(stderr, "kvctl generate: --model DIR is required\n");
        return 2;
    } else if (resolve_device(cli)) {
        return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "kvctl generate: a PROMPT is required\n");
        return 2;
    }
    cli->prompt = join_args(argc - optind, argv + optind);
    return cli->prompt ? 0 : 1;
}

static int encode_prompt(const kv_tokenizer *tok, const kv_model_config *cfg, const char *text, int32_t **ids,
                         int *n, kv_err *err)
{
    int32_t *raw;
    size_t n_raw;
    int rc = kv_tokenizer_encode(tok, text, strlen(text), &raw, &n_raw, err);
    if (rc)
        return rc;
    int bos = cfg->bos_id >= 0 ? 1 : 0;
    *ids = malloc((n_raw + 1) * sizeof **ids);
    if (!*ids) {
        free(raw);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    if (bos)
        (*ids)[0] = cfg->bos_id;
    memcpy(*ids + bos, raw, n_raw * sizeof *raw);
    *n = (int)n_raw + bos;
    free(raw);
    return KV_OK;
}

static int run(const gen_cli *cli)
{
    kv_err err;
    kv_model *model = NULL;
    kv_tokenizer *tok = NULL;
    kv_engine *engine = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, status = 1;
    char tok_path[4096];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", cli->model_dir);
    if (kv_model_load(cli->model_dir, &model, &err) || kv_tokenizer_load(tok_path, &tok, &err) ||
        encode_prompt(tok, &model->cfg, cli->prompt, &ids, &n_ids, &err) ||
        kv_engine_create(model, &cli->engine, &engine, &err)) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        goto out;
    }
    stream_ctx sc = {.failed = 0};
    kv_detok_init(&sc.detok, tok);
    for (int i = 0; i < n_ids; i++) /* prime: the continuation's first space is kept */
        kv_detok_push(&sc.detok, ids[i], sc.buf, sizeof sc.buf, &err);
    kv_gen_stats st;
    if (kv_generate(engine, ids, n_ids, &cli->gen, on_token, &sc, &st, &err)) {
        fprintf(stderr, "\nkvctl: %s\n", err.msg);
        goto out;
    }
    if (sc.failed)
        goto out;
    int n = kv_detok_flush(&sc.detok, sc.buf, sizeof sc.buf);
    fwrite(sc.buf, 1, (size_t)n, stdout);
    if (isatty(STDOUT_FILENO))
        fputc('\n', stdout);
    fflush(stdout);
    if (st.finish == KV_FINISH_CONTEXT)
        fprintf(stderr, "kvctl: context full: stopped after %d tokens, the model's context length\n",
                model->cfg.max_position);
    double decode_tps = st.n_generated > 1 && st.decode_s > 0 ? (st.n_generated - 1) / st.decode_s : 0;
    char dev[32] = "cpu";
    if (kv_engine_device(engine) >= 0)
        snprintf(dev, sizeof dev, "cuda:%d", kv_engine_device(engine));
    fprintf(stderr,
            "prompt_tokens=%d generated_tokens=%d finish=%s ttft_ms=%.2f prefill_tok_s=%.1f decode_tok_s=%.1f "
            "kv_cache=%s device=%s kv_dtype=%s\n",
            st.n_prompt, st.n_generated, kv_finish_reason_name(st.finish), st.ttft_s * 1e3,
            st.prefill_s > 0 ? st.n_prompt / st.prefill_s : 0, decode_tps, cli->gen.no_kv_cache ? "off" : "on", dev,
            kv_engine_kv_dtype(engine));
    status = 0;
out:
    free(ids);
    kv_engine_free(engine);
    kv_tokenizer_free(tok);
    kv_model_free(model);
    return status;
}

/* ---- through a router ---------------------------------------------------------- */

static volatile sig_atomic_t interrupted; /* SIGINT/SIGTERM: cancel the request */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* The served model's name as the router knows it: the directory's basename. */
static const char *model_name(const char *dir, char *buf, size_t cap)
{
    if (!dir)
        return NULL;
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    snprintf(buf, cap, "%.*s", (int)n, dir);
    const char *slash = strrchr(buf, '/');
    return slash && slash[1] ? slash + 1 : buf;
}

static int run_router(const gen_cli *cli)
{
    char errbuf[512];
    kv_client *c = NULL;
    if (kv_client_connect(cli->router, &c, errbuf, sizeof errbuf)) {
        fprintf(stderr, "kvctl: %s\n", errbuf);
        return 1;
    }
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    kv_client_request r;
    kv_client_request_init(&r);
    r.prompt = cli->prompt;
    r.temperature = cli->gen.sampling.temperature;
    r.top_k = (uint32_t)cli->gen.sampling.top_k;
    r.top_p = cli->gen.sampling.top_p;
    r.seed = cli->gen.sampling.seed;
    r.max_tokens = (uint32_t)cli->gen.max_tokens;
    r.ignore_eos = cli->gen.ignore_eos;
    r.deadline_ms = (uint32_t)cli->deadline_ms;
    char name[256];
    r.model = model_name(cli->model_dir, name, sizeof name);
    r.stream = 1;
    /* The router ends every request (its own deadlines); this is a backstop only. */
    double limit_s = (cli->deadline_ms ? (double)cli->deadline_ms : 600000.0) / 1e3 + 15.0;
    int status = 1, cancelled = 0;
    char id[KV_CLIENT_ID_MAX + 1];
    if (kv_client_submit(c, &r, id, 5000)) {
        fprintf(stderr, "kvctl: %s (start a cluster with 'kvctl up', or generate in this process with --local)\n",
                kv_client_last_error(c));
        goto out;
    }
    double t0 = kv_now_s(), t_cancel = 0;
    kv_client_event ev = {0};
    for (;;) {
        if (interrupted && !cancelled) {
            cancelled = 1;
            t_cancel = kv_now_s();
            kv_client_cancel(c, id, 500);
        }
        if (cancelled && kv_now_s() - t_cancel > 2.0) {
            fprintf(stderr, "\nkvctl: interrupted\n");
            status = 130;
            goto out;
        }
        if (kv_now_s() - t0 > limit_s) {
            kv_client_cancel(c, id, 500);
            fprintf(stderr, "\nkvctl: no answer from the router within %.0f s; request cancelled\n", limit_s);
            goto out;
        }
        int rc = kv_client_next_event(c, 200, &ev);
        if (rc == KVC_ETIMEOUT)
            continue;
        if (rc) {
            fprintf(stderr, "\nkvctl: %s\n", kv_client_last_error(c));
            goto out;
        }
        if (ev.kind != KVC_EVENT_REPLY || strcmp(ev.request_id, id))
            continue;
        if (ev.text_len) {
            fwrite(ev.text, 1, ev.text_len, stdout);
            fflush(stdout);
        }
        if (ev.finished)
            break;
    }
    if (ev.finish_reason == KVC_FINISH_ERROR) {
        fflush(stdout);
        fprintf(stderr, "%skvctl: request failed: %s: %s\n", isatty(STDOUT_FILENO) ? "\n" : "",
                kv_client_error_name(ev.error_code), ev.error_message);
        goto out;
    }
    if (isatty(STDOUT_FILENO))
        fputc('\n', stdout);
    fflush(stdout);
    const kv_client_timings *t = &ev.timings;
    if (ev.finish_reason == KVC_FINISH_CONTEXT)
        fprintf(stderr, "kvctl: context full: stopped after %u tokens\n", t->prompt_tokens + t->generated_tokens);
    fprintf(stderr,
            "prompt_tokens=%u generated_tokens=%u finish=%s ttft_ms=%.2f prefill_tok_s=%.1f decode_tok_s=%.1f "
            "kv_cache=on queue_ms=%.2f prefill_ms=%.2f transfer_ms=%.2f kv_bytes=%llu kv_transport=%s decode_ms=%.2f "
            "total_ms=%.2f\n",
            t->prompt_tokens, t->generated_tokens, kv_client_finish_name(ev.finish_reason), t->ttft_ms,
            t->prefill_ms > 0 ? t->prompt_tokens / (t->prefill_ms * 1e-3) : 0,
            t->generated_tokens > 1 && t->decode_ms > 0 ? (t->generated_tokens - 1) / (t->decode_ms * 1e-3) : 0,
            t->queue_ms, t->prefill_ms, t->transfer_ms, (unsigned long long)t->kv_bytes,
            t->kv_transport[0] ? t->kv_transport : "-", t->decode_ms, t->total_ms);
    status = ev.finish_reason == KVC_FINISH_CANCELLED ? 130 : 0;
out:
    kv_client_close(c);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return status;
}

int kvctl_cmd_generate(int argc, char **argv)
{
    gen_cli cli;
    int rc = parse_args(argc, argv, &cli);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = cli.local ? run(&cli) : run_router(&cli);
    free(cli.prompt);
    return rc;
}
