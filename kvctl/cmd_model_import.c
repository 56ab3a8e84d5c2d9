/* kvctl model import: a llama-family GGUF -> a HuggingFace model directory (gguf_import.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "gguf_import.h"
#include "kvctl_cmds.h"

static void import_usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl model import FILE.gguf --out DIR [--dtype f32|bf16|f16] [--force]\n"
            "Converts a llama-architecture GGUF into DIR: config.json, model.safetensors (every tensor\n"
            "dequantized, Q/K rows back in HF order), tokenizer.json and tokenizer_config.json.\n"
            "DIR appears only when complete; a failed import leaves nothing behind.\n"
            "  --out DIR     output directory (its parent must exist)\n"
            "  --dtype D     weight dtype: f32 (default), bf16 or f16\n"
            "  --force       replace DIR when it is not empty\n");
}

int kvctl_cmd_model_import(int argc, char **argv)
{
    enum { O_OUT = 256, O_DTYPE, O_FORCE, O_HELP };
    static const struct option opts[] = {
        {"out", required_argument, 0, O_OUT}, {"dtype", required_argument, 0, O_DTYPE},
        {"force", no_argument, 0, O_FORCE},   {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    kv_gguf_import_options opt = {.dtype = KV_DTYPE_F32, .progress = stderr};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_OUT: opt.out_dir = optarg; break;
        case O_DTYPE:
            if (!strcmp(optarg, "f32"))
                opt.dtype = KV_DTYPE_F32;
            else if (!strcmp(optarg, "bf16"))
                opt.dtype = KV_DTYPE_BF16;
            else if (!strcmp(optarg, "f16"))
                opt.dtype = KV_DTYPE_F16;
            else {
                fprintf(stderr, "kvctl: --dtype must be f32, bf16 or f16, got '%s'\n", optarg);
                return 2;
            }
            break;
        case O_FORCE: opt.force = 1; break;
        case O_HELP: case 'h': import_usage(stdout); return 0;
        default:
            fprintf(stderr, "kvctl model import: unknown or incomplete option '%s'\n", argv[optind - 1]);
            import_usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc || !opt.out_dir || !opt.out_dir[0]) {
        fprintf(stderr, "kvctl model import: FILE.gguf and --out DIR are required (and nothing else)\n");
        import_usage(stderr);
        return 2;
    }
    opt.gguf_path = argv[optind];
    kv_err err = {0};
    int rc = kv_gguf_import(&opt, &err);
    if (rc) {
        fprintf(stderr, "kvctl: %s\n", err.msg);
        return rc == KV_EINVAL ? 2 : 1;
    }
    return 0;
}
