/* kvctl subcommands: each gets argv after its name (argv[0] = the subcommand's name)
 * and returns the process exit status (0 ok, 1 runtime error, 2 usage error). */
#ifndef KVCTL_CMDS_H
#define KVCTL_CMDS_H

int kvctl_cmd_generate(int argc, char **argv);
int kvctl_cmd_tokenize(int argc, char **argv);
int kvctl_cmd_model(int argc, char **argv);    /* kvctl model synth ... */
int kvctl_cmd_model_import(int argc, char **argv); /* kvctl model import (argv[0] = "import") */
int kvctl_cmd_capacity(int argc, char **argv);
int kvctl_cmd_chat_template(int argc, char **argv); /* render a model's chat template */
int kvctl_cmd_status(int argc, char **argv);   /* router status (workers, requests) */
int kvctl_cmd_bench(int argc, char **argv);    /* load generator against a router */
int kvctl_cmd_up(int argc, char **argv);       /* local cluster in the foreground */
int kvctl_cmd_keys(int argc, char **argv);     /* kvctl keys gen: CURVE key pairs */
int kvctl_cmd_perplexity(int argc, char **argv); /* a model's perplexity on a text (llama.cpp's method) */

#endif
