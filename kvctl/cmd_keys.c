/* kvctl keys gen: a CURVE key pair for one process of a cluster (kv_curve.h has the formats). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "kv_curve.h"
#include "kvctl_cmds.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: kvctl keys gen --out DIR [--name NAME] [--server-key FILE]\n"
                 "Writes DIR/NAME.key (the secret key pair, mode 0600; an existing one is never\n"
                 "overwritten) and DIR/NAME.pub (the public key, for allowlists and --router-key).\n"
                 "  --out DIR          directory (must exist)\n"
                 "  --name NAME        file name (default: key)\n"
                 "  --server-key FILE  a client's key: also record the router's public key (from\n"
                 "                     its .pub file), so the .key file alone is enough to connect\n");
}

static int keys_gen(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"name", required_argument, 0, 'n'},
                                         {"server-key", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *name = "key", *server = NULL;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'n': name = optarg; break;
        case 's': server = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "kvctl keys gen: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (!out || optind < argc) {
        fprintf(stderr, "kvctl keys gen: %s\n", out ? "unexpected argument" : "--out DIR is required");
        usage(stderr);
        return 2;
    }
    kv_curve_key k;
    kv_err err;
    if (kv_curve_key_new(&k, &err) || (server && kv_curve_pub_load(server, k.server, &err)) ||
        kv_curve_key_save(out, name, &k, &err)) {
        fprintf(stderr, "kvctl keys gen: %s\n", err.msg);
        return 1;
    }
    printf("%s/%s.key %s/%s.pub %s\n", out, name, out, name, k.pub);
    return 0;
}

int kvctl_cmd_keys(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "gen"))
        return keys_gen(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
