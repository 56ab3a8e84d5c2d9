/* kvctl up's ephemeral CURVE keys: one key pair per process of its local cluster, made at
 * start in RUN/up-<pid>/ (kv_curve_find.h: mode 0700, per user) and removed at exit:
 *   router.key/.pub, workers/<id>.key/.pub (the workers' allowlist, and where a prefill
 *   worker finds a decode worker's key), client.key (with server=) + client.pub (the
 *   clients' allowlist), and `endpoint` (the router's client endpoint: how libkvclient,
 *   kvctl and kv-frontend find client.key without a flag). Directories of earlier kvctl up
 *   processes that are gone (killed) are removed first. */
#ifndef UP_KEYS_H
#define UP_KEYS_H

#include <limits.h>

#include "kv_err.h"

typedef struct up_keys {
    int on;
    char dir[PATH_MAX / 2];
} up_keys;

/* Makes the directory and every key: the router's, the client's, and the workers'
 * (prefill-0..n_prefill-1, decode-0..n_decode-1: kvctl up's worker ids), all before the
 * router starts, since it reads the allowlists once. */
int up_keys_make(up_keys *k, int n_prefill, int n_decode, kv_err *err);
/* Appends to argv-style option strings (each "--flag=value", written into args[i], cap
 * bytes each) the options a child needs: router (1) or worker (0, with its id). Returns
 * how many were written (at most 3). */
int up_keys_args(const up_keys *k, int router, const char *id, char (*args)[PATH_MAX + 32]);
/* Records the router's client endpoint, for clients to find client.key by. */
int up_keys_endpoint(const up_keys *k, const char *endpoint, kv_err *err);
/* Removes every file it made and the directory. */
void up_keys_remove(up_keys *k);

#endif
