/* kvctl perplexity: a model's perplexity on a text file, by llama.cpp's method
 * (kv_perplexity.h), printed as llama-perplexity prints it. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"
#include "engine_kv_flags.h"
#include "kv_file.h"
#include "kv_perplexity.h"
#include "kv_prompt.h"
#include "kv_textbuf.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"
#include "model.h"
#include "tokenizer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl perplexity --model DIR|FILE.gguf --file TEXT [--ctx N] [--chunks N] [--batch N] [--threads N]\n"
            "                        [--device D] [--kv-dtype T] [--kv-residual N] [--kv-group G]\n"
            "                        [--kv-keys channel|token] [--block-size B] [--json]\n"
            "Perplexity as llama.cpp's llama-perplexity computes it: TEXT (one trailing newline dropped)\n"
            "tokenized with the tokenizer's specials, cut into chunks of N tokens, each run from an\n"
            "empty KV cache with BOS first when the tokenizer adds one, the second half of each scored.\n"
            "  --ctx N       tokens per chunk (default 512; at most the model's context)\n"
            "  --chunks N    score only the first N chunks (default: all)\n"
            "  --batch N     tokens per forward pass (default 512; only float rounding changes with it)\n"
            "  --threads N   CPU threads (default: all cores)\n"
            "  --device D    cpu | auto | cuda:N (default cpu; a GPU computes in f32)\n"
            KV_ENGINE_KV_FLAGS_USAGE
            "                   (a scored token attends to what decoding would see: sealed blocks\n"
            "                   outside the residual window read back in the KV dtype)\n"
            "  --block-size B   tokens per KV block (default 16): the span of a key's per-channel group\n"
            "  --json        one object: {\"ppl\", \"ppl_stderr\", \"chunks\", \"tokens_scored\"}\n");
}

typedef struct ppl_cli {
    const char *model_dir, *file, *device;
    long ctx, chunks, batch, threads, block_size;
    int json;
    kv_engine_options kv; /* the --kv-* flags */
} ppl_cli;

/* 0 to run, else the exit status (usage printed). */
static int parse_args(int argc, char **argv, ppl_cli *cli)
{
    enum { O_MODEL = 256, O_FILE, O_CTX, O_CHUNKS, O_BATCH, O_THREADS, O_DEVICE, O_JSON, O_HELP, O_KV, O_BLOCK };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},   {"file", required_argument, 0, O_FILE},
        {"ctx", required_argument, 0, O_CTX},       {"chunks", required_argument, 0, O_CHUNKS},
        {"batch", required_argument, 0, O_BATCH},   {"threads", required_argument, 0, O_THREADS},
        {"device", required_argument, 0, O_DEVICE}, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP},           {"kv-dtype", required_argument, 0, O_KV},
        {"kv-residual", required_argument, 0, O_KV}, {"kv-group", required_argument, 0, O_KV},
        {"kv-keys", required_argument, 0, O_KV},    {"block-size", required_argument, 0, O_BLOCK},
        {0, 0, 0, 0},
    };
    *cli = (ppl_cli){.ctx = 512};
    kv_engine_options_default(&cli->kv);
    optind = 1;
    opterr = 0;
    int c, which = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, &which)) != -1) {
        int bad = 0;
        kv_err kerr;
        switch (c) {
        case O_KV:
            if ((bad = kv_engine_kv_flag(&cli->kv, opts[which].name, optarg, &kerr) != 0))
                fprintf(stderr, "kvctl perplexity: %s\n", kerr.msg);
            break;
        case O_MODEL: cli->model_dir = optarg; break;
        case O_FILE: cli->file = optarg; break;
        case O_CTX: bad = kvctl_parse_int("--ctx", optarg, 4, 1L << 20, &cli->ctx); break;
        case O_CHUNKS: bad = kvctl_parse_int("--chunks", optarg, 1, 1L << 30, &cli->chunks); break;
        case O_BATCH: bad = kvctl_parse_int("--batch", optarg, 1, 1L << 20, &cli->batch); break;
        case O_THREADS: bad = kvctl_parse_int("--threads", optarg, 1, 1024, &cli->threads); break;
        case O_BLOCK: bad = kvctl_parse_int("--block-size", optarg, 1, 1024, &cli->block_size); break;
        case O_DEVICE: cli->device = optarg; break;
        case O_JSON: cli->json = 1; break;
        case O_HELP: case 'h': usage(stdout); return -1;
        default:
            fprintf(stderr, "kvctl perplexity: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!cli->model_dir || !cli->file || optind != argc) {
        fprintf(stderr, "kvctl perplexity: --model DIR and --file TEXT are required (and nothing else)\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

typedef struct progress {
    int json;
    double t0;
} progress;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* llama.cpp's running values, "[1]x,[2]y,...", on stdout as the chunks finish. */
static void on_chunk(void *user, int chunk, int n_chunks, const kv_ppl_stats *so_far)
{
    progress *p = user;
    if (chunk == 1)
        fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", now_s() - p->t0,
                (now_s() - p->t0) * n_chunks / 60.0);
    if (!p->json) {
        printf("[%d]%.4f,", chunk, kv_ppl_stats_ppl(so_far));
        fflush(stdout);
    }
}

static int print_json(const kv_ppl_result *r)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    /* %.17g round-trips a double; a NaN stderr (one scored token) is JSON null. */
    kv_textbuf_printf(&b, "{\"ppl\": %.17g, \"ppl_stderr\": ", r->ppl);
    if (r->ppl_stderr == r->ppl_stderr)
        kv_textbuf_printf(&b, "%.17g", r->ppl_stderr);
    else
        kv_textbuf_puts(&b, "null");
    kv_textbuf_printf(&b, ", \"chunks\": %d, \"tokens_scored\": %lld}\n", r->chunks, (long long)r->tokens_scored);
    int rc = kv_textbuf_failed(&b) ? 1 : 0;
    if (rc)
        fprintf(stderr, "kvctl: out of memory\n");
    else
        fputs(b.data, stdout);
    kv_textbuf_free(&b);
    return rc;
}

/* The file's tokens as llama.cpp's -f and common_tokenize(add_special) make them. */
static int tokenize_file(const char *path, const kv_tokenizer *tok, int32_t **ids, size_t *n, kv_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = kv_file_read_all(path, &text, &len, err);
    if (rc)
        return rc;
    if (len > 0 && text[len - 1] == '\n')
        len--;
    rc = kv_tokenizer_encode_special(tok, text, len, 1, ids, n, err);
    free(text);
    return rc;
}

int kvctl_cmd_perplexity(int argc, char **argv)
{
    ppl_cli cli;
    int st = parse_args(argc, argv, &cli);
    if (st)
        return st < 0 ? 0 : st;
    kv_err err;
    kv_model *model = NULL;
    kv_prompt_encoder pe = {.config_bos = -1}; /* the tokenizer, from DIR or the GGUF's metadata */
    kv_engine *engine = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int status = 1;
    kv_engine_options eo;
    kv_engine_options_default(&eo);
    eo.n_threads = (int)cli.threads;
    eo.precision = KV_PRECISION_F32;
    eo.kv_dtype = cli.kv.kv_dtype;
    eo.kv_residual = cli.kv.kv_residual;
    eo.kv_group = cli.kv.kv_group;
    eo.kv_keys = cli.kv.kv_keys;
    if (cli.block_size)
        eo.block_size = (int)cli.block_size;
    if (kv_engine_parse_device(cli.device ? cli.device : "cpu", &eo.device, &err) ||
        kv_model_load(cli.model_dir, &model, &err) ||
        kv_prompt_encoder_load(cli.model_dir, model->cfg.bos_id, &pe, &err) ||
        tokenize_file(cli.file, pe.tok, &ids, &n_ids, &err)) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        goto out;
    }
    if (cli.ctx > model->cfg.max_position) {
        fprintf(stderr, "kvctl perplexity: --ctx %ld is beyond the model's context of %d\n", cli.ctx,
                model->cfg.max_position);
        status = 2;
        goto out;
    }
    /* Logits of a whole forward are held at once (batch x vocab floats): 512 rows by default. */
    long batch = cli.batch > 0 ? cli.batch : 512;
    eo.prefill_chunk = (int)(batch < cli.ctx ? batch : cli.ctx);
    if (kv_engine_create(model, &eo, &engine, &err)) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        goto out;
    }
    const kv_tokenizer *tok = pe.tok;
    int adds_bos = kv_tokenizer_adds_bos(tok);
    kv_ppl_options po = {.ctx = (int)cli.ctx, .max_chunks = (int)cli.chunks,
                         .bos_id = adds_bos ? kv_tokenizer_bos_id(tok) : -1, .on_chunk = on_chunk};
    progress prog = {.json = cli.json, .t0 = now_s()};
    po.user = &prog;
    fprintf(stderr, "perplexity: %zu tokens, %zu chunks of %ld (BOS %s), the last %ld of each scored\n", n_ids,
            n_ids / (size_t)cli.ctx, cli.ctx, adds_bos ? "first in each" : "not added", cli.ctx - 1 - cli.ctx / 2);
    kv_ppl_result r;
    if (kv_perplexity(engine, ids, n_ids, &po, &r, &err)) {
        if (!cli.json)
            putchar('\n');
        fprintf(stderr, "kvctl: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, "perplexity: %d chunks, %lld tokens scored in %.2f s\n", r.chunks, (long long)r.tokens_scored,
            now_s() - prog.t0);
    if (cli.json)
        status = print_json(&r);
    else {
        printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_stderr);
        status = 0;
    }
out:
    free(ids);
    kv_engine_free(engine);
    kv_prompt_encoder_free(&pe);
    kv_model_free(model);
    return status;
}
