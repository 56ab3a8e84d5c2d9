/* kvctl capacity: KV bytes per token, for N tokens, and how many tokens fit in memory. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kv_capacity.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"
#include "model.h"
#include "model_config.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl capacity --model DIR|FILE.gguf --tokens N [--kv-dtype D] [--memory SIZE] [--block-size B]\n"
            "  --kv-dtype D     f32|f16|bf16|int8|int4|int2 (default: f32, the CPU engine's dtype)\n"
            "  --memory SIZE    memory for weights + KV cache, e.g. 80GiB (default: this machine's RAM)\n"
            "  --weights-dtype D  weights converted at load: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 (default: as\n"
            "                   stored; weights are counted in their real format, by type)\n"
            "  --block-size B   tokens per KV block (default 16)\n");
}

static double gib(double b) { return b / 1073741824.0; }

int kvctl_cmd_capacity(int argc, char **argv)
{
    enum { O_MODEL = 256, O_TOKENS, O_DTYPE, O_MEM, O_BS, O_WDT, O_HELP };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"tokens", required_argument, 0, O_TOKENS},
        {"kv-dtype", required_argument, 0, O_DTYPE}, {"memory", required_argument, 0, O_MEM},
        {"block-size", required_argument, 0, O_BS}, {"weights-dtype", required_argument, 0, O_WDT},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    const char *dir = NULL;
    long tokens = -1, block_size = 16;
    kv_cache_dtype kv_dt = KV_CACHE_F32;
    kv_model_load_options lo;
    kv_model_load_options_default(&lo);
    lo.layout_only = 1;
    kv_err err;
    size_t memory = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
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
    double per_tok = kv_cache_bytes_per_token(&cfg, kv_dt);
    double per_block = per_tok * (double)block_size;
    double free_kv = (double)memory - weights;
    double fit_blocks = free_kv > 0 ? (double)(long long)(free_kv / per_block) : 0;
    printf("model:            %s (%d layers, %d kv heads x head_dim %d, context %d)\n", dir, cfg.n_layers,
           cfg.n_kv_heads, cfg.head_dim, cfg.max_position);
    printf("kv dtype:         %s\n", kv_cache_dtype_name(kv_dt));
    printf("kv bytes/token:   %.0f  (2 x %d layers x %d kv heads x %d dims%s)\n", per_tok, cfg.n_layers,
           cfg.n_kv_heads, cfg.head_dim, kv_dt >= KV_CACHE_INT8 ? " + f16 scale/zero per group" : "");
    printf("kv bytes/block:   %.0f  (%ld tokens)\n", per_block, block_size);
    printf("kv for %ld tokens: %.0f bytes (%.3f GiB)\n", tokens, per_tok * (double)tokens, gib(per_tok * (double)tokens));
    printf("weights (%s): %.0f bytes (%.3f GiB; %s)\n", types, weights, gib(weights), by_type);
    printf("memory:           %zu bytes (%.3f GiB)\n", memory, gib((double)memory));
    printf("tokens that fit:  %.0f  (%.0f blocks; %.1f full contexts)\n", fit_blocks * (double)block_size,
           fit_blocks, fit_blocks * (double)block_size / cfg.max_position);
    return 0;
}
