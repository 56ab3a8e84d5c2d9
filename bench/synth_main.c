/* kv-synth: `kvctl model synth` as a binary of its own (same flags, same code: kvctl's
 * cmd_model.c), for GPU-only builds that have no kvctl. */
#include <stdlib.h>

#include "kvctl_cmds.h"

int main(int argc, char **argv)
{
    /* cmd_model wants argv = {"model", "synth", flags...}. */
    char **args = malloc(((size_t)argc + 2) * sizeof *args);
    if (!args)
        return 1;
    args[0] = "model";
    args[1] = "synth";
    for (int i = 1; i < argc; i++)
        args[i + 1] = argv[i];
    args[argc + 1] = NULL;
    int rc = kvctl_cmd_model(argc + 1, args);
    free(args);
    return rc;
}
