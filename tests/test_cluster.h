/* test_cluster's processes and checks, shared by its scenario files (test_cluster.c, and
 * test_cluster_fuzz.c): a router and workers started as children on loopback, a client on
 * them, and the status checks every scenario ends with. */
#ifndef TEST_CLUSTER_H
#define TEST_CLUSTER_H

#include <stdint.h>
#include <sys/types.h>

#include "kv_client.h"

#define MAX_PROCS 8

typedef struct proc {
    pid_t pid;
    char name[48];
    char log[256];
} proc;

typedef struct cluster {
    proc p[MAX_PROCS];
    int n;
    char dir[64];
    char ready[128];
    char client_ep[256], control_ep[256];
    const char *model;
    int failures_at_start;
} cluster;

void sleep_ms(int ms);
/* Starts the router (port 0, ready file) with extra flags (NULL-terminated): 0 or -1. */
int cluster_start(cluster *cl, const char *model, const char *const *extra);
/* Starts a worker (bin "kv-prefill" or "kv-decode") with the id and extra flags. */
proc *add_worker(cluster *cl, const char *bin, const char *id, const char *const *extra);
/* SIGTERM to every process; each must exit 0 within 5 s (else a failure, then SIGKILL).
 * Prints the logs when a check failed since the cluster started. */
void cluster_stop(cluster *cl);
/* A router (router_flags, NULL-terminated or NULL), prefill-0 and decode-0 (with
 * decode_extra flags), and a client connected to them: 0, or -1 after a failed CHECK naming
 * label. Stopping the cluster and closing the client stay the caller's, on every path. */
int start_1p1d(cluster *cl, kv_client **c, const char *model, const char *const *router_flags,
               const char *const *decode_extra, const char *label);
/* Polls status until n workers are healthy: 0, or -1 after timeout_ms. */
int wait_workers(kv_client *c, int n, int timeout_ms);
/* Polls status until no request is in flight and every worker reports all its KV blocks
 * free: 0, or -1 (the last status printed) after timeout_ms. */
int wait_idle(kv_client *c, int timeout_ms, const char *what);
/* n greedy requests of `tokens` tokens (EOS ignored) on the prompt ref[0..5): each must
 * finish by length and match ref[5..5+tokens) token for token. */
void serve_reference(kv_client *c, const int32_t *ref, int n, int tokens, const char *label);

/* test_cluster_fuzz.c */
void scenario_fuzz(const char *model, const char *models);
/* test_cluster_logprobs.c */
void scenario_logprobs(const char *model);
/* argv: NULL-terminated, argv[0] = a binary in kv_test_bin_dir(); logs to cl->dir/name.log. */
proc *spawn(cluster *cl, const char *name, const char *const *argv);
/* test_cluster_restart.c: the router killed and restarted mid-stream (kill_decode: decode-0 too). */
void scenario_router_restart(const char *model, const char *models, int kill_decode, int graceful);
/* test_cluster_impostor.c */
void scenario_impostor(const char *model, const char *models);

#endif
