/* kvctl capacity: KV bytes per token, for N tokens, and how many tokens fit in memory. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "engine_kv_flags.h"
#include "kv_capacity.h"
#include "kv_layout.h"
#include "kv_textbuf.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"
#include "model.h"
#include "model_config.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl capacity --model DIR|FILE.gguf --tokens N [--kv-dtype D] [--memory SIZE] [--block-size B]\n"
            "                      [--kv-residual N] [--kv-group G] [--kv-keys channel|token] [--json]\n"
            "  --kv-dtype D     f32|f16|bf16|int8|int4|int2 (default: f32, the CPU engine's dtype)\n"
            "  --kv-residual N, --kv-group G, --kv-keys M: as the engine takes them (kvctl perplexity --help);\n"
            "                   bytes per token are kv_layout's: codes + scales + zero points of owner layers\n"
            "  --json           one object (kv_bytes_per_token, tokens_fit, ...)\n"
            "  --memory SIZE    memory for weights + KV cache, e.g. 80GiB (default: this machine's RAM)\n"
            "  --weights-dtype D  weights converted at load: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 (default: as\n"
            "                   stored; weights are counted in their real format, by type)\n"
            "  --block-size B   tokens per KV block (default 16)\n");
}

static double gib(double b) { return b / 1073741824.0; }

int kvctl_cmd_capacity(int argc, char **argv)
{
    enum { O_MODEL = 256, O_TOKENS, O_DTYPE, O_MEM, O_BS, O_WDT, O_HELP, O_KV, O_JSON };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"tokens", required_argument, 0, O_TOKENS},
        {"kv-dtype", required_argument, 0, O_DTYPE}, {"memory", required_argument, 0, O_MEM},
        {"block-size", required_argument, 0, O_BS}, {"weights-dtype", required_argument, 0, O_WDT},
        {"help", no_argument, 0, O_HELP}, {"kv-residual", required_argument, 0, O_KV},
        {"kv-group", required_argument, 0, O_KV}, {"kv-keys", required_argument, 0, O_KV},
        {"json", no_argument, 0, O_JSON}, {0, 0, 0, 0},
    };
    const char *dir = NULL;
    long tokens = -1, block_size = 16;
    kv_cache_dtype kv_dt = KV_CACHE_F32;
    kv_model_load_options lo;
    kv_model_load_options_default(&lo);
    lo.layout_only = 1;
    kv_err err;
    size_t memory = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    kv_engine_options kvo;
    kv_engine_options_default(&kvo);
    int json = 0;
    optind = 1;
    opterr = 0;
    int c, which = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, &which)) != -1) {
        int bad = 0;
        switch (c) {
        case O_KV:
            if ((bad = kv_engine_kv_flag(&kvo, opts[which].name, optarg, &err) != 0))
                fprintf(stderr, "kvctl capacity: %s\n", err.msg);
            break;
        case O_JSON: json = 1; break;
        case O_MODEL: dir = optarg; break;
        case O_TOKENS: bad = kvctl_parse_int("--tokens", optarg, 0, 1L << 40, &tokens); break;
        case O_DTYPE:
            if (kv_cache_dtype_parse(optarg, &kv_dt)) {
                fprintf(stderr, "kvctl: --kv-dtype must be f32, f16, bf16, int8, int4 or int2, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_WDT:
            if (kv_weights_type_parse(optarg, &lo.weights_type, &err)) {
                fprintf(stderr, "kvctl: --%s\n", err.msg);
                bad = 1;
            }
            break;
        case O_MEM: bad = kvctl_parse_size("--memory", optarg, &memory); break;
        case O_BS: bad = kvctl_parse_int("--block-size", optarg, 1, 1024, &block_size); break;
        case O_HELP: case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "kvctl capacity: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!dir || tokens < 0 || optind != argc) {
        fprintf(stderr, "kvctl capacity: --model DIR and --tokens N are required (and nothing else)\n");
        usage(stderr);
        return 2;
    }
    kv_model *m;
    if (kv_model_load_opts(dir, &lo, &m, &err)) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        return 1;
    }
    const kv_model_config cfg = m->cfg;
    double weights = 0;
    char by_type[256] = "";
    for (int t = 0; t < KV_TYPE_COUNT; t++)
        if (m->type_bytes[t]) {
            weights += (double)m->type_bytes[t];
            snprintf(by_type + strlen(by_type), sizeof by_type - strlen(by_type), "%s%s %.0f", by_type[0] ? ", " : "",
                     kv_type_name((kv_type)t), (double)m->type_bytes[t]);
        }
    char types[sizeof m->weight_types];
    snprintf(types, sizeof types, "%s", m->weight_types);
    kv_model_free(m);
    kv_layout lay;
    int share[KV_LAYOUT_MAX_LAYERS]; /* cross-layer KV sharing: only owner layers hold K/V */
    for (int i = 0; i < cfg.n_layers && i < KV_LAYOUT_MAX_LAYERS; i++)
        share[i] = kv_model_config_kv_owner(&cfg, i);
    kv_layout_params lp = {cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, (int)block_size, kv_dt,
                           kvo.kv_keys, kvo.kv_group, kvo.kv_residual, share};
    if (kv_layout_init(&lay, &lp, &err)) {
        fprintf(stderr, "kvctl capacity: %s\n", err.msg);
        return 2;
    }
    kv_layout f16;
    lp.dtype = KV_CACHE_F16;
    if (kv_layout_init(&f16, &lp, &err)) {
        fprintf(stderr, "kvctl capacity: %s\n", err.msg);
        return 2;
    }
    double per_tok = kv_layout_bytes_per_token(&lay);
    double per_block = (double)lay.block_bytes;
    double residual = (double)lay.residual_blocks * (double)lay.fp_block_bytes; /* per sequence, f32 */
    double free_kv = (double)memory - weights;
    double fit_blocks = free_kv > 0 ? (double)(long long)(free_kv / per_block) : 0;
    if (json) {
        kv_textbuf b;
        kv_textbuf_init(&b);
        kv_textbuf_puts(&b, "{\"model\": ");
        kv_textbuf_json_string(&b, dir, strlen(dir));
        kv_textbuf_printf(&b, ", \"kv_dtype\": \"%s\", \"kv_keys\": \"%s\", \"kv_group\": %d, \"block_size\": %ld",
                          kv_cache_dtype_name(kv_dt), lay.key_mode == KV_KEYS_PER_TOKEN ? "token" : "channel", lay.group,
                          block_size);
        kv_textbuf_printf(&b, ", \"kv_layers\": %d, \"cla_share_factor\": %d", lay.n_slots,
                          cfg.cla_share > 1 ? cfg.cla_share : 1);
        kv_textbuf_printf(&b, ", \"kv_bytes_per_token\": %.17g, \"kv_bytes_per_block\": %.0f, \"vs_f16\": %.6g",
                          per_tok, per_block, per_tok / kv_layout_bytes_per_token(&f16));
        kv_textbuf_printf(&b, ", \"residual_bytes_per_sequence\": %.0f, \"kv_bytes_for_tokens\": %.17g", residual,
                          per_tok * (double)tokens);
        kv_textbuf_printf(&b, ", \"tokens\": %ld, \"weights_bytes\": %.0f, \"memory_bytes\": %zu", tokens, weights,
                          memory);
        kv_textbuf_printf(&b, ", \"blocks_fit\": %.0f, \"tokens_fit\": %.0f, \"tokens_per_gib\": %.0f}\n", fit_blocks,
                          fit_blocks * (double)block_size, 1073741824.0 / per_tok);
        int failed = kv_textbuf_failed(&b);
        if (!failed)
            fwrite(b.data, 1, b.len, stdout);
        kv_textbuf_free(&b);
        return failed ? 1 : 0;
    }
    printf("model:            %s (%d layers, %d kv heads x head_dim %d, context %d)\n", dir, cfg.n_layers,
           cfg.n_kv_heads, cfg.head_dim, cfg.max_position);
    printf("kv dtype:         %s\n", kv_cache_dtype_name(kv_dt));
    printf("kv bytes/token:   %.6g  (2 x %d %slayers x %d kv heads x %d dims%s; %.3fx f16)\n", per_tok, lay.n_slots,
           lay.n_slots != cfg.n_layers ? "owner " : "", cfg.n_kv_heads, cfg.head_dim,
           kv_dt >= KV_CACHE_INT8 ? (lay.key_mode == KV_KEYS_PER_TOKEN ? " + f16 scale/zero per group of keys and values"
                                                                      : " + f16 scale/zero per key channel, per value group")
                                  : "",
           per_tok / kv_layout_bytes_per_token(&f16));
    if (lay.bits)
        printf("residual window:  %d blocks at f32 per sequence (%.0f bytes), not counted above\n", lay.residual_blocks,
               residual);
    printf("kv bytes/block:   %.0f  (%ld tokens)\n", per_block, block_size);
    printf("kv for %ld tokens: %.0f bytes (%.3f GiB)\n", tokens, per_tok * (double)tokens, gib(per_tok * (double)tokens));
    printf("weights (%s): %.0f bytes (%.3f GiB; %s)\n", types, weights, gib(weights), by_type);
    printf("memory:           %zu bytes (%.3f GiB)\n", memory, gib((double)memory));
    printf("tokens that fit:  %.0f  (%.0f blocks; %.1f full contexts)\n", fit_blocks * (double)block_size,
           fit_blocks, fit_blocks * (double)block_size / cfg.max_position);
    return 0;
}
