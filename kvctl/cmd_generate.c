/* kvctl generate: stream a continuation to stdout, either through a router (the default:
 * --router tcp://127.0.0.1:7100) or, with --local, generated in this process. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "engine_kv_flags.h"
#include "generate.h"
#include "kv_client.h"
#include "kv_prompt.h"
#include "kv_textbuf.h"
#include "gen_logprobs.h"
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
    const char *key_file;        /* --key: the client key (else KVSERVE_CLIENT_KEY, kvctl up's) */
    const char *local_only_flag; /* last flag given that only makes sense with --local */
    int max_tokens_set;
    long deadline_ms;
    kv_gen_params gen;
    kv_engine_options engine;
    kv_model_load_options load; /* --weights-dtype */
    char *prompt;
    const char *device;    /* --device as given */
    const char *precision; /* --precision as given, or NULL */
    int chat;              /* --chat: the prompt is one user message of the model's chat template */
    int json;              /* --json: one JSON object at the end instead of streamed text */
} gen_cli;

typedef struct stream_ctx {
    kv_detok detok;
    char buf[1024];
    int failed;
    int json;         /* collect, don't print */
    kv_textbuf text;  /* the continuation's text (--json) */
    int32_t *ids;     /* generated ids (--json) */
    size_t n_ids, cap_ids;
    gen_logprobs lp;  /* --logprobs */
} stream_ctx;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl generate [--router ADDR] [OPTIONS] [--] PROMPT\n"
            "       kvctl generate --local --model DIR|FILE.gguf [OPTIONS] [--] PROMPT\n"
            "Prints only the generated continuation on stdout (as it arrives); timings go to stderr.\n"
            "  --router ADDR        the router's client endpoint (default " DEFAULT_ROUTER ")\n"
            "  --key FILE           with a router: the client key to connect with (kvctl keys gen;\n"
            "                       default $KVSERVE_CLIENT_KEY, else the one kvctl up wrote)\n"
            "  --local              run the model in this process instead\n"
            "  --model DIR          with --local: HuggingFace Llama directory (config.json, *.safetensors,\n"
            "                       tokenizer.json) or a llama GGUF file (weights served as stored);\n"
            "                       with a router: optional, its basename must name the served model\n"
            "  --deadline-ms N      with a router: whole-request deadline (default: the router's)\n"
            "  --max-tokens N       tokens to generate (default 256)\n"
            "  --temperature T      0 = greedy (default 0)\n"
            "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P            nucleus sampling mass in (0, 1] (default 1 = off)\n"
            "  --seed S             sampling seed (default 0)\n"
            "  --ignore-eos         keep generating past end-of-sequence tokens\n"
            "  --chat               apply the model's chat template to PROMPT as one user message\n"
            "  --json               print one JSON object at the end (text, token_ids, prompt_token_ids,\n"
            "                       finish_reason, usage, timings) instead of streaming text\n"
            "  --logprobs N         with --json: each token's logprob (raw logits' log-softmax) and its N\n"
            "                       (0..20) most likely alternatives: token_logprobs, top_logprobs\n"
            "  --prompt-logprobs    with --logprobs: the prompt's too (prompt_logprobs, first null)\n"
            "local only:\n"
            "  --prefill-chunk N    prompt tokens per prefill forward (default 512)\n"
            "  --no-kv-cache        recompute the whole sequence every step (baseline)\n"
            "  --block-size N       KV block size in tokens (default 16)\n"
            "  --kv-blocks N        KV pool size in blocks (default: 4 full contexts)\n"
            "  --kv-dtype T, --kv-residual N, --kv-group G, --kv-keys channel|token\n"
            "                       KV cache dtype (f32 | f16 | bf16 | int8 | int4 | int2 on the CPU) and its grouping\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --weights-dtype T    convert the weights at load: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1\n"
            "                       (default: as stored)\n"
            "  --device D           cpu | auto | cuda:N (default cpu; auto = cuda:0 when usable)\n"
            "  --precision P        f32 | bf16 (default f32 on the cpu, bf16 on a GPU)\n");
}

/* Text goes to stdout as it comes, or into s->text for --json. */
static void emit_text(stream_ctx *s, const char *text, size_t n)
{
    if (s->json) {
        kv_textbuf_append(&s->text, text, n);
        return;
    }
    fwrite(text, 1, n, stdout);
    fflush(stdout);
}

static int keep_ids(stream_ctx *s, const int32_t *ids, size_t n)
{
    if (!s->json)
        return 0;
    if (s->n_ids + n > s->cap_ids) {
        size_t cap = s->cap_ids ? s->cap_ids : 64;
        while (cap < s->n_ids + n)
            cap *= 2;
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (!p)
            return KV_ENOMEM;
        s->ids = p;
        s->cap_ids = cap;
    }
    memcpy(s->ids + s->n_ids, ids, n * sizeof *ids);
    s->n_ids += n;
    return 0;
}

static int on_token(void *ctx, int32_t token)
{
    stream_ctx *s = ctx;
    kv_err err;
    int n = kv_detok_push(&s->detok, token, s->buf, sizeof s->buf, &err);
    if (n < 0 || keep_ids(s, &token, 1)) {
        fprintf(stderr, "kvctl: cannot decode token %d: %s\n", token, n < 0 ? err.msg : "out of memory");
        s->failed = 1;
        return 1;
    }
    emit_text(s, s->buf, (size_t)n);
    return 0;
}

static void on_logprobs(void *ctx, const kc_logprobs *lp, int n, int prompt)
{
    stream_ctx *s = ctx;
    if (prompt)
        gen_logprobs_set_prompt_engine(&s->lp, lp, (size_t)n);
    else
        gen_logprobs_add_engine(&s->lp, lp, (size_t)n);
}

static void json_ids(kv_textbuf *b, const char *key, const int32_t *ids, size_t n)
{
    kv_textbuf_printf(b, "\"%s\": [", key);
    for (size_t i = 0; i < n; i++)
        kv_textbuf_printf(b, i ? ", %d" : "%d", ids[i]);
    kv_textbuf_puts(b, "]");
}

/* The --json result: one object on stdout. `timings` is the inner text of the timings
 * object (its members, already formatted). */
static int print_json_result(const char *text, size_t text_len, const int32_t *ids, size_t n_ids,
                             const int32_t *prompt_ids, size_t n_prompt, const gen_logprobs *lp, const char *finish,
                             const char *timings)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    kv_textbuf_puts(&b, "{\"text\": ");
    kv_textbuf_json_string(&b, text ? text : "", text_len);
    kv_textbuf_puts(&b, ", ");
    json_ids(&b, "token_ids", ids, n_ids);
    kv_textbuf_puts(&b, ", ");
    json_ids(&b, "prompt_token_ids", prompt_ids, n_prompt);
    if (lp)
        gen_logprobs_json(lp, &b);
    kv_textbuf_printf(&b,
                      ", \"finish_reason\": \"%s\", \"usage\": {\"prompt_tokens\": %zu, \"completion_tokens\": %zu, "
                      "\"total_tokens\": %zu}, \"timings\": {%s}}\n",
                      finish, n_prompt, n_ids, n_prompt + n_ids, timings);
    int failed = kv_textbuf_failed(&b) || (lp && lp->failed);
    if (!failed)
        fwrite(b.data, 1, b.len, stdout);
    fflush(stdout);
    kv_textbuf_free(&b);
    if (failed)
        fprintf(stderr, "kvctl: out of memory\n");
    return failed;
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
           O_THREADS, O_ROUTER, O_DEADLINE, O_DEVICE, O_PRECISION, O_CHAT, O_JSON, O_HELP, O_LOGPROBS, O_PROMPT_LP, O_WDT, O_KV, O_CKEY };
    static const struct option opts[] = {
        {"local", no_argument, 0, O_LOCAL}, {"model", required_argument, 0, O_MODEL},
        {"max-tokens", required_argument, 0, O_MAX}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"prefill-chunk", required_argument, 0, O_CHUNK},
        {"no-kv-cache", no_argument, 0, O_NOKV}, {"ignore-eos", no_argument, 0, O_IGNEOS},
        {"block-size", required_argument, 0, O_BS}, {"kv-blocks", required_argument, 0, O_BLOCKS},
        {"threads", required_argument, 0, O_THREADS}, {"router", required_argument, 0, O_ROUTER},
        {"deadline-ms", required_argument, 0, O_DEADLINE}, {"device", required_argument, 0, O_DEVICE},
        {"precision", required_argument, 0, O_PRECISION}, {"chat", no_argument, 0, O_CHAT},
        {"json", no_argument, 0, O_JSON}, {"help", no_argument, 0, O_HELP},
        {"logprobs", required_argument, 0, O_LOGPROBS}, {"prompt-logprobs", no_argument, 0, O_PROMPT_LP},
        {"weights-dtype", required_argument, 0, O_WDT}, {"kv-dtype", required_argument, 0, O_KV},
        {"kv-residual", required_argument, 0, O_KV}, {"kv-group", required_argument, 0, O_KV},
        {"kv-keys", required_argument, 0, O_KV}, {"key", required_argument, 0, O_CKEY}, {0, 0, 0, 0},
    };
    memset(cli, 0, sizeof *cli);
    cli->gen.max_tokens = 256;
    kv_sampling_default(&cli->gen.sampling);
    kv_engine_options_default(&cli->engine);
    kv_model_load_options_default(&cli->load);
    kv_err perr;
    optind = 1;
    opterr = 0;
    int c, which = 0;
    long v;
    double d;
    while ((c = getopt_long(argc, argv, "+h", opts, &which)) != -1) {
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
        case O_WDT:
            cli->local_only_flag = "--weights-dtype";
            if ((bad = kv_weights_type_parse(optarg, &cli->load.weights_type, &perr) != KV_OK))
                fprintf(stderr, "kvctl: --%s\n", perr.msg);
            break;
        case O_THREADS: cli->local_only_flag = "--threads"; bad = kvctl_parse_int("--threads", optarg, 1, 1024, &v); cli->engine.n_threads = (int)v; break;
        case O_DEVICE: cli->local_only_flag = "--device"; cli->device = optarg; break;
        case O_PRECISION: cli->local_only_flag = "--precision"; cli->precision = optarg; break;
        case O_ROUTER: cli->router = optarg; break;
        case O_CKEY: cli->key_file = optarg; break;
        case O_KV:
            cli->local_only_flag = "--kv-dtype";
            if ((bad = kv_engine_kv_flag(&cli->engine, opts[which].name, optarg, &perr) != 0))
                fprintf(stderr, "kvctl generate: %s\n", perr.msg);
            break;
        case O_CHAT: cli->chat = 1; break;
        case O_JSON: cli->json = 1; break;
        case O_LOGPROBS:
            bad = kvctl_parse_int("--logprobs", optarg, 0, KC_LOGPROBS_TOP_MAX, &v);
            cli->gen.logprobs = (int)v + 1; /* the token's own, and v alternatives */
            break;
        case O_PROMPT_LP: cli->gen.prompt_logprobs = 1; break;
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
    if (cli->local && (cli->router || cli->key_file)) {
        fprintf(stderr, "kvctl generate: --local excludes --router and --key\n");
        return 2;
    }
    if ((cli->gen.logprobs && !cli->json) || (cli->gen.prompt_logprobs && !cli->gen.logprobs)) {
        fprintf(stderr, "kvctl generate: --logprobs needs --json, --prompt-logprobs needs --logprobs\n");
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

/* --chat: the prompt as the one user message of a chat (a JSON messages array), as the
 * router's chat_messages and kv_prompt_encode_chat_json take it. */
static void user_message_json(kv_textbuf *b, const char *prompt)
{
    kv_textbuf_puts(b, "[{\"role\": \"user\", \"content\": ");
    kv_textbuf_json_string(b, prompt, strlen(prompt));
    kv_textbuf_puts(b, "}]");
}

/* The prompt as one user message of the chat template (--chat), or as text. */
static int encode_cli_prompt(const gen_cli *cli, const kv_prompt_encoder *pe, int32_t **ids, int *n, kv_err *err)
{
    size_t len = strlen(cli->prompt), n_ids = 0;
    int rc;
    if (cli->chat) {
        kv_textbuf msgs;
        kv_textbuf_init(&msgs);
        user_message_json(&msgs, cli->prompt);
        rc = kv_textbuf_failed(&msgs) ? kv_err_set(err, KV_ENOMEM, "out of memory")
                                      : kv_prompt_encode_chat_json(pe, msgs.data, msgs.len, 1, ids, &n_ids, err);
        kv_textbuf_free(&msgs);
    } else {
        rc = kv_prompt_encode_text(pe, cli->prompt, len, ids, &n_ids, err);
    }
    if (!rc && n_ids > INT32_MAX) {
        free(*ids);
        *ids = NULL;
        rc = kv_err_set(err, KV_ERANGE, "prompt of %zu tokens is too long", n_ids);
    }
    *n = (int)n_ids;
    return rc;
}

static int run(const gen_cli *cli)
{
    kv_err err;
    kv_model *model = NULL;
    kv_engine *engine = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, status = 1;
    kv_prompt_encoder pe = {.config_bos = -1};
    if (kv_model_load_opts(cli->model_dir, &cli->load, &model, &err) ||
        kv_prompt_encoder_load(cli->model_dir, model->cfg.bos_id, &pe, &err) ||
        encode_cli_prompt(cli, &pe, &ids, &n_ids, &err) || kv_engine_create(model, &cli->engine, &engine, &err)) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        goto out;
    }
    const kv_tokenizer *tok = pe.tok;
    stream_ctx sc = {.failed = 0, .json = cli->json};
    kv_gen_params gp = cli->gen;
    gp.on_logprobs = on_logprobs;
    kv_textbuf_init(&sc.text);
    kv_detok_init(&sc.detok, tok);
    for (int i = 0; i < n_ids; i++) /* prime: the continuation's first space is kept */
        kv_detok_push(&sc.detok, ids[i], sc.buf, sizeof sc.buf, &err);
    kv_gen_stats st;
    if (kv_generate(engine, ids, n_ids, &gp, on_token, &sc, &st, &err)) {
        fprintf(stderr, "\nkvctl: %s\n", err.msg);
        goto out_stream;
    }
    if (sc.failed)
        goto out_stream;
    int n = kv_detok_flush(&sc.detok, sc.buf, sizeof sc.buf);
    emit_text(&sc, sc.buf, (size_t)n);
    if (st.finish == KV_FINISH_CONTEXT)
        fprintf(stderr, "kvctl: context full: stopped after %d tokens, the model's context length\n",
                model->cfg.max_position);
    double decode_tps = st.n_generated > 1 && st.decode_s > 0 ? (st.n_generated - 1) / st.decode_s : 0;
    double prefill_tps = st.prefill_s > 0 ? st.n_prompt / st.prefill_s : 0;
    if (cli->json) {
        char timings[512];
        snprintf(timings, sizeof timings,
                 "\"ttft_ms\": %.3f, \"prefill_ms\": %.3f, \"decode_ms\": %.3f, \"prefill_tok_s\": %.1f, "
                 "\"decode_tok_s\": %.1f",
                 st.ttft_s * 1e3, st.prefill_s * 1e3, st.decode_s * 1e3, prefill_tps, decode_tps);
        if (print_json_result(sc.text.data, sc.text.len, sc.ids, sc.n_ids, ids, (size_t)n_ids,
                              cli->gen.logprobs ? &sc.lp : NULL, kv_finish_reason_name(st.finish), timings))
            goto out_stream;
    } else if (isatty(STDOUT_FILENO)) {
        fputc('\n', stdout);
    }
    fflush(stdout);
    char dev[32] = "cpu";
    if (kv_engine_device(engine) >= 0)
        snprintf(dev, sizeof dev, "cuda:%d", kv_engine_device(engine));
    fprintf(stderr,
            "prompt_tokens=%d generated_tokens=%d finish=%s ttft_ms=%.2f prefill_tok_s=%.1f decode_tok_s=%.1f "
            "kv_cache=%s device=%s kv_dtype=%s weights=%s kernels=%s repacked=%s\n",
            st.n_prompt, st.n_generated, kv_finish_reason_name(st.finish), st.ttft_s * 1e3, prefill_tps, decode_tps,
            cli->gen.no_kv_cache ? "off" : "on", dev, kv_engine_kv_dtype(engine), model->weight_types,
            kv_engine_cpu_isa(engine) ? kv_engine_cpu_isa(engine) : "cuda",
            kv_engine_cpu_layouts(engine) && kv_engine_cpu_layouts(engine)[0] ? kv_engine_cpu_layouts(engine) : "none");
    status = 0;
out_stream:
    kv_textbuf_free(&sc.text);
    free(sc.ids);
    gen_logprobs_free(&sc.lp);
out:
    free(ids);
    kv_engine_free(engine);
    kv_prompt_encoder_free(&pe);
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
    if (kv_client_connect_key(cli->router, cli->key_file, &c, errbuf, sizeof errbuf)) {
        fprintf(stderr, "kvctl: %s\n", errbuf);
        return 1;
    }
    kv_client_set_resume(c, KV_CLIENT_RESUME_DEFAULT_MS); /* survive a router restart */
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    kv_client_request r;
    kv_client_request_init(&r);
    kv_textbuf chat, text;
    kv_textbuf_init(&chat);
    kv_textbuf_init(&text);
    int32_t *gen_ids = NULL;
    size_t n_gen = 0, cap_gen = 0;
    if (cli->chat) {
        user_message_json(&chat, cli->prompt);
        r.chat_messages = chat.data;
    } else {
        r.prompt = cli->prompt;
    }
    r.return_prompt_tokens = cli->json;
    r.temperature = cli->gen.sampling.temperature;
    r.top_k = (uint32_t)cli->gen.sampling.top_k;
    r.top_p = cli->gen.sampling.top_p;
    r.seed = cli->gen.sampling.seed;
    r.max_tokens = (uint32_t)cli->gen.max_tokens;
    r.ignore_eos = cli->gen.ignore_eos;
    r.deadline_ms = (uint32_t)cli->deadline_ms;
    r.logprobs = (uint32_t)cli->gen.logprobs;
    r.prompt_logprobs = cli->gen.prompt_logprobs;
    gen_logprobs lp = {0};
    char name[256];
    r.model = model_name(cli->model_dir, name, sizeof name);
    r.stream = 1;
    /* The router ends every request (its own deadlines); this is a backstop only. */
    double limit_s = (cli->deadline_ms ? (double)cli->deadline_ms : 600000.0) / 1e3 + 15.0;
    int status = 1, cancelled = 0;
    char id[KV_CLIENT_ID_MAX + 1];
    if (kv_textbuf_failed(&chat)) {
        fprintf(stderr, "kvctl: out of memory\n");
        goto out;
    }
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
        if (cli->json) {
            kv_textbuf_append(&text, ev.text, ev.text_len);
            if (n_gen + ev.n_tokens > cap_gen) {
                size_t cap = cap_gen ? cap_gen : 64;
                while (cap < n_gen + ev.n_tokens)
                    cap *= 2;
                int32_t *p = realloc(gen_ids, cap * sizeof *p);
                if (!p) {
                    kv_client_cancel(c, id, 500);
                    fprintf(stderr, "kvctl: out of memory\n");
                    goto out;
                }
                gen_ids = p;
                cap_gen = cap;
            }
            if (ev.n_tokens)
                memcpy(gen_ids + n_gen, ev.tokens, ev.n_tokens * sizeof *gen_ids);
            n_gen += ev.n_tokens;
            if (r.logprobs && ev.n_tokens) {
                if (!ev.logprobs) {
                    kv_client_cancel(c, id, 500);
                    fprintf(stderr, "kvctl: the router sent tokens without their logprobs\n");
                    goto out;
                }
                gen_logprobs_add(&lp, ev.logprobs, ev.n_tokens);
            }
            if (ev.n_prompt_logprobs)
                gen_logprobs_set_prompt(&lp, ev.prompt_logprobs, ev.n_prompt_logprobs);
        } else if (ev.text_len) {
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
    const kv_client_timings *t = &ev.timings;
    if (cli->json) {
        char timings[768];
        snprintf(timings, sizeof timings,
                 "\"queue_ms\": %.3f, \"prefill_ms\": %.3f, \"transfer_ms\": %.3f, \"ttft_ms\": %.3f, "
                 "\"decode_ms\": %.3f, \"total_ms\": %.3f, \"kv_bytes\": %llu, \"kv_transport\": \"%s\", "
                 "\"prefill_cached_tokens\": %u, \"decode_cached_tokens\": %u, \"kv_bytes_saved\": %llu, "
                 "\"local_prefill\": %s",
                 t->queue_ms, t->prefill_ms, t->transfer_ms, t->ttft_ms, t->decode_ms, t->total_ms,
                 (unsigned long long)t->kv_bytes, t->kv_transport, t->prefill_cached_tokens, t->decode_cached_tokens,
                 (unsigned long long)t->kv_bytes_saved, t->local_prefill ? "true" : "false");
        if (kv_textbuf_failed(&text)) {
            fprintf(stderr, "kvctl: out of memory\n");
            goto out;
        }
        if (r.prompt_logprobs && !lp.have_prompt && ev.n_prompt_tokens > 1) {
            fprintf(stderr, "kvctl: the router sent no prompt logprobs\n");
            goto out;
        }
        if (print_json_result(text.data, text.len, gen_ids, n_gen, ev.prompt_tokens, ev.n_prompt_tokens,
                              r.logprobs ? &lp : NULL, kv_client_finish_name(ev.finish_reason), timings))
            goto out;
    } else if (isatty(STDOUT_FILENO)) {
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (ev.finish_reason == KVC_FINISH_CONTEXT)
        fprintf(stderr, "kvctl: context full: stopped after %u tokens\n", t->prompt_tokens + t->generated_tokens);
    fprintf(stderr,
            "prompt_tokens=%u generated_tokens=%u finish=%s ttft_ms=%.2f prefill_tok_s=%.1f decode_tok_s=%.1f "
            "kv_cache=on queue_ms=%.2f prefill_ms=%.2f transfer_ms=%.2f kv_bytes=%llu kv_transport=%s decode_ms=%.2f "
            "total_ms=%.2f prefill_cached_tokens=%u decode_cached_tokens=%u kv_bytes_saved=%llu local_prefill=%d\n",
            t->prompt_tokens, t->generated_tokens, kv_client_finish_name(ev.finish_reason), t->ttft_ms,
            t->prefill_ms > 0 ? t->prompt_tokens / (t->prefill_ms * 1e-3) : 0,
            t->generated_tokens > 1 && t->decode_ms > 0 ? (t->generated_tokens - 1) / (t->decode_ms * 1e-3) : 0,
            t->queue_ms, t->prefill_ms, t->transfer_ms, (unsigned long long)t->kv_bytes,
            t->kv_transport[0] ? t->kv_transport : "-", t->decode_ms, t->total_ms, t->prefill_cached_tokens,
            t->decode_cached_tokens, (unsigned long long)t->kv_bytes_saved, t->local_prefill);
    status = ev.finish_reason == KVC_FINISH_CANCELLED ? 130 : 0;
out:
    kv_textbuf_free(&chat);
    kv_textbuf_free(&text);
    free(gen_ids);
    gen_logprobs_free(&lp);
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
