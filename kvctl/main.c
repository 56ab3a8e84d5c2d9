/* kvctl: the operator and client CLI. */
#include <stdio.h>
#include <string.h>

#include "kvctl_cmds.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"generate", kvctl_cmd_generate, "generate a continuation through a router (--local: in this process)"},
    {"status", kvctl_cmd_status, "show a router's workers and requests in flight"},
    {"bench", kvctl_cmd_bench, "load a router with synthetic requests; latency and throughput report"},
    {"up", kvctl_cmd_up, "run a local cluster (router + workers) in the foreground"},
    {"keys", kvctl_cmd_keys, "CURVE keys: gen (a key pair for a router, worker or client)"},
    {"tokenize", kvctl_cmd_tokenize, "print the token ids of a text"},
    {"model", kvctl_cmd_model, "model tools: synth (write a synthetic model), import (GGUF to HF)"},
    {"perplexity", kvctl_cmd_perplexity, "a model's perplexity on a text file, as llama-perplexity computes it"},
    {"capacity", kvctl_cmd_capacity, "KV cache bytes per token and tokens that fit in memory"},
    {"chat-template", kvctl_cmd_chat_template, "render a model's chat template over messages (JSON)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: kvctl COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'kvctl COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kvctl: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
