/* kvctl subcommands: each gets argv after its name (argv[0] = the subcommand's name)
 * and returns the process exit status (0 ok, 1 runtime error, 2 usage error). */
#ifndef KVCTL_CMDS_H
#define KVCTL_CMDS_H

int kvctl_cmd_generate(int argc, char **argv);
int kvctl_cmd_tokenize(int argc, char **argv);
int kvctl_cmd_model(int argc, char **argv);    /* kvctl model synth ... */
int kvctl_cmd_capacity(int argc, char **argv);
int kvctl_cmd_status(int argc, char **argv);   /* router status (workers, requests) */
int kvctl_cmd_bench(int argc, char **argv);    /* load generator against a router */
int kvctl_cmd_up(int argc, char **argv);       /* local cluster in the foreground */

#endif
