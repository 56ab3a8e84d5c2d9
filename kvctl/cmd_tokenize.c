/* kvctl tokenize --tokenizer FILE [--] TEXT: prints the ids of TEXT (no BOS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvctl_cmds.h"
#include "tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvctl tokenize --tokenizer FILE [--] TEXT\n"
            "  Encodes TEXT with a HF tokenizer.json (BPE) and prints the token ids,\n"
            "  space separated, without BOS.\n"
            "  --tokenizer FILE   path to tokenizer.json (also --tokenizer=FILE)\n"
            "  --help             show this help\n");
}

int kvctl_cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL, *text = NULL;
    int only_text = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_text && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            usage(stdout);
            return 0;
        }
        if (!only_text && !strcmp(a, "--")) {
            only_text = 1;
        } else if (!only_text && !strcmp(a, "--tokenizer")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kvctl tokenize: --tokenizer needs a FILE\n");
                usage(stderr);
                return 2;
            }
            path = argv[++i];
        } else if (!only_text && !strncmp(a, "--tokenizer=", 12)) {
            path = a + 12;
        } else if (!only_text && a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "kvctl tokenize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (!text) {
            text = a;
        } else {
            fprintf(stderr, "kvctl tokenize: more than one TEXT (quote it)\n");
            usage(stderr);
            return 2;
        }
    }
    if (!path || !text) {
        fprintf(stderr, "kvctl tokenize: %s\n", !path ? "--tokenizer FILE is required" : "TEXT is required");
        usage(stderr);
        return 2;
    }

    kv_err err = {0};
    kv_tokenizer *tok;
    if (kv_tokenizer_load(path, &tok, &err)) {
        fprintf(stderr, "kvctl tokenize: %s\n", err.msg);
        return 1;
    }
    int32_t *ids;
    size_t n;
    if (kv_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err)) {
        fprintf(stderr, "kvctl tokenize: %s\n", err.msg);
        kv_tokenizer_free(tok);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    kv_tokenizer_free(tok);
    return fflush(stdout) == 0 ? 0 : 1;
}
