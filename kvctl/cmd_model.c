/* kvctl model synth: write a synthetic HF Llama model (random weights, real shapes). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "kvctl_args.h"
#include "kvctl_cmds.h"
#include "model_shapes.h"
#include "synth_model.h"

static void model_usage(FILE *out)
{
    fprintf(out, "usage: kvctl model SUBCOMMAND [OPTIONS]\n\nsubcommands:\n"
                 "  synth      write a synthetic HuggingFace Llama model (random weights, real shapes)\n"
                 "  import     convert a llama GGUF file into a HuggingFace model directory\n"
                 "\n'kvctl model synth --help' lists the shapes and options.\n");
}

static void synth_usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl model synth --shape NAME --dtype f32|f16|bf16 --out DIR [OPTIONS]\n"
            "Writes DIR/config.json, DIR/tokenizer.json (byte-level BPE) and the weights as\n"
            "DIR/model.safetensors, or as HF shards + model.safetensors.index.json above 4 GiB.\n"
            "  --shape NAME       model shape (below)\n"
            "  --dtype D          f32, f16 or bf16 weights\n"
            "  --out DIR          output directory (created if missing)\n"
            "  --seed S           weight seed (default 0; same seed, same bytes)\n"
            "  --layers N         override the number of layers\n"
            "  --vocab N          override the vocabulary size (at least 258)\n"
            "  --cla F            cross-layer KV sharing: layer i attends with the K/V of layer\n"
            "                     i - (i mod F), the only layers with k_proj/v_proj (default 1)\n"
            "  --max-shard SIZE   shard the weights above SIZE, e.g. 2GiB (default 4GiB)\n"
            "  --force            replace a model already in DIR\n"
            "shapes:\n");
    for (size_t i = 0; i < kv_model_shape_count(); i++) {
        const kv_model_shape *s = kv_model_shape_at(i);
        fprintf(out, "  %-16s %s\n", s->name, s->description);
    }
}

static int parse_dtype(const char *s, kv_dtype *out)
{
    if (!strcmp(s, "f32"))
        *out = KV_DTYPE_F32;
    else if (!strcmp(s, "f16"))
        *out = KV_DTYPE_F16;
    else if (!strcmp(s, "bf16"))
        *out = KV_DTYPE_BF16;
    else
        return -1;
    return 0;
}

static int cmd_synth(int argc, char **argv)
{
    enum { O_SHAPE = 256, O_DTYPE, O_OUT, O_SEED, O_LAYERS, O_VOCAB, O_SHARD, O_FORCE, O_CLA, O_HELP };
    static const struct option opts[] = {
        {"shape", required_argument, 0, O_SHAPE},   {"dtype", required_argument, 0, O_DTYPE},
        {"out", required_argument, 0, O_OUT},       {"seed", required_argument, 0, O_SEED},
        {"layers", required_argument, 0, O_LAYERS}, {"vocab", required_argument, 0, O_VOCAB},
        {"max-shard", required_argument, 0, O_SHARD}, {"force", no_argument, 0, O_FORCE},
        {"cla", required_argument, 0, O_CLA},       {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    kv_synth_options opt = {.progress = stderr};
    int have_dtype = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        int bad = 0;
        long v;
        size_t size;
        switch (c) {
        case O_SHAPE:
            if (!kv_model_shape_find(optarg)) {
                char names[256];
                kv_model_shape_names(names, sizeof names);
                fprintf(stderr, "kvctl: --shape must be one of %s, got '%s'\n", names, optarg);
                bad = 1;
            }
            opt.shape = optarg;
            break;
        case O_DTYPE:
            if (parse_dtype(optarg, &opt.dtype)) {
                fprintf(stderr, "kvctl: --dtype must be f32, f16 or bf16, got '%s'\n", optarg);
                bad = 1;
            }
            have_dtype = 1;
            break;
        case O_OUT: opt.out_dir = optarg; break;
        case O_SEED: bad = kvctl_parse_u64("--seed", optarg, &opt.seed); break;
        case O_LAYERS:
            bad = kvctl_parse_int("--layers", optarg, 1, KV_SYNTH_MAX_LAYERS, &v);
            opt.n_layers = (int)v;
            break;
        case O_VOCAB:
            bad = kvctl_parse_int("--vocab", optarg, 1, KV_SYNTH_MAX_VOCAB, &v); /* <258: explained below */
            opt.vocab_size = (int)v;
            break;
        case O_SHARD:
            bad = kvctl_parse_size("--max-shard", optarg, &size);
            if (!bad && size == 0) {
                fprintf(stderr, "kvctl: --max-shard must be more than 0\n");
                bad = 1;
            }
            opt.max_shard_bytes = size;
            break;
        case O_FORCE: opt.force = 1; break;
        case O_CLA:
            bad = kvctl_parse_int("--cla", optarg, 1, KV_SYNTH_MAX_LAYERS, &v);
            opt.cla_share = (int)v;
            break;
        case O_HELP: case 'h': synth_usage(stdout); return 0;
        default:
            fprintf(stderr, "kvctl model synth: unknown or incomplete option '%s'\n", argv[optind - 1]);
            synth_usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (!opt.shape || !have_dtype || !opt.out_dir || !opt.out_dir[0] || optind != argc) {
        fprintf(stderr, "kvctl model synth: --shape NAME, --dtype D and --out DIR are required "
                        "(and nothing else)\n");
        synth_usage(stderr);
        return 2;
    }
    kv_err err;
    int rc = kv_synth_model_write(&opt, &err);
    if (rc) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        return rc == KV_EINVAL ? 2 : 1;
    }
    return 0;
}

int kvctl_cmd_model(int argc, char **argv)
{
    if (argc < 2) {
        model_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        model_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "synth"))
        return cmd_synth(argc - 1, argv + 1);
    if (!strcmp(argv[1], "import"))
        return kvctl_cmd_model_import(argc - 1, argv + 1);
    fprintf(stderr, "kvctl model: unknown subcommand '%s'\n", argv[1]);
    model_usage(stderr);
    return 2;
}
