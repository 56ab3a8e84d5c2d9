/* kvctl generate --local: tokenize, generate in this process, stream the continuation. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "generate.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"
#include "model.h"
#include "tokenizer.h"

typedef struct gen_cli {
    const char *model_dir;
    int local;
    kv_gen_params gen;
    kv_engine_options engine;
    char *prompt;
} gen_cli;

typedef struct stream_ctx {
    kv_detok detok;
    char buf[1024];
    int failed;
} stream_ctx;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl generate --local --model DIR [OPTIONS] [--] PROMPT\n"
            "Prints only the generated continuation on stdout; timings go to stderr.\n"
            "  --local              run the model in this process\n"
            "  --model DIR          HuggingFace Llama directory (config.json, *.safetensors, tokenizer.json)\n"
            "  --max-tokens N       tokens to generate (default 256)\n"
            "  --temperature T      0 = greedy (default 0)\n"
            "  --top-k K            keep the K most likely tokens (default 0 = off)\n"
            "  --top-p P            nucleus sampling mass in (0, 1] (default 1 = off)\n"
            "  --seed S             sampling seed (default 0)\n"
            "  --prefill-chunk N    prompt tokens per prefill forward (default 512)\n"
            "  --no-kv-cache        recompute the whole sequence every step (baseline)\n"
            "  --ignore-eos         keep generating past end-of-sequence tokens\n"
            "  --block-size N       KV block size in tokens (default 16)\n"
            "  --kv-blocks N        KV pool size in blocks (default: 4 full contexts)\n"
            "  --threads N          CPU threads (default: all cores)\n");
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

/* Returns 0 to proceed, else the exit status. */
static int parse_args(int argc, char **argv, gen_cli *cli)
{
    enum { O_LOCAL = 256, O_MODEL, O_MAX, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_CHUNK, O_NOKV, O_IGNEOS, O_BS, O_BLOCKS,
           O_THREADS, O_ROUTER, O_HELP };
    static const struct option opts[] = {
        {"local", no_argument, 0, O_LOCAL}, {"model", required_argument, 0, O_MODEL},
        {"max-tokens", required_argument, 0, O_MAX}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"prefill-chunk", required_argument, 0, O_CHUNK},
        {"no-kv-cache", no_argument, 0, O_NOKV}, {"ignore-eos", no_argument, 0, O_IGNEOS},
        {"block-size", required_argument, 0, O_BS}, {"kv-blocks", required_argument, 0, O_BLOCKS},
        {"threads", required_argument, 0, O_THREADS}, {"router", required_argument, 0, O_ROUTER},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
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
        case O_MAX: bad = kvctl_parse_int("--max-tokens", optarg, 0, 1 << 24, &v); cli->gen.max_tokens = (int)v; break;
        case O_TEMP: bad = kvctl_parse_float("--temperature", optarg, 0, 100, &d); cli->gen.sampling.temperature = (float)d; break;
        case O_TOPK: bad = kvctl_parse_int("--top-k", optarg, 0, 1 << 30, &v); cli->gen.sampling.top_k = (int)v; break;
        case O_TOPP:
            bad = kvctl_parse_float("--top-p", optarg, 0, 1, &d);
            if (!bad && d <= 0) { fprintf(stderr, "kvctl: --top-p must be > 0\n"); bad = 1; }
            cli->gen.sampling.top_p = (float)d;
            break;
        case O_SEED: bad = kvctl_parse_u64("--seed", optarg, &cli->gen.sampling.seed); break;
        case O_CHUNK: bad = kvctl_parse_int("--prefill-chunk", optarg, 1, 1 << 20, &v); cli->engine.prefill_chunk = (int)v; break;
        case O_NOKV: cli->gen.no_kv_cache = 1; break;
        case O_IGNEOS: cli->gen.ignore_eos = 1; break;
        case O_BS: bad = kvctl_parse_int("--block-size", optarg, 1, 1024, &v); cli->engine.block_size = (int)v; break;
        case O_BLOCKS: bad = kvctl_parse_int("--kv-blocks", optarg, 1, 1L << 30, &v); cli->engine.n_blocks = (int32_t)v; break;
        case O_THREADS: bad = kvctl_parse_int("--threads", optarg, 1, 1024, &v); cli->engine.n_threads = (int)v; break;
        case O_ROUTER:
            fprintf(stderr, "kvctl: generate through a router is not yet implemented; use --local\n");
            return 2;
        case O_HELP: case 'h': usage(stdout); return -1;
        default:
            fprintf(stderr, "kvctl generate: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!cli->local) {
        fprintf(stderr, "kvctl generate: --local is required until the router service exists\n");
        return 2;
    }
    if (!cli->model_dir) {
        fprintf(stderr, "kvctl generate: --model DIR is required\n");
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
    fprintf(stderr,
            "prompt_tokens=%d generated_tokens=%d finish=%s ttft_ms=%.2f prefill_tok_s=%.1f decode_tok_s=%.1f "
            "kv_cache=%s\n",
            st.n_prompt, st.n_generated, kv_finish_reason_name(st.finish), st.ttft_s * 1e3,
            st.prefill_s > 0 ? st.n_prompt / st.prefill_s : 0, decode_tps, cli->gen.no_kv_cache ? "off" : "on");
    status = 0;
out:
    free(ids);
    kv_engine_free(engine);
    kv_tokenizer_free(tok);
    kv_model_free(model);
    return status;
}

int kvctl_cmd_generate(int argc, char **argv)
{
    gen_cli cli;
    int rc = parse_args(argc, argv, &cli);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = run(&cli);
    free(cli.prompt);
    return rc;
}
