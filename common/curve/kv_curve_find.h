/* Where keys live without flags, the way kubectl finds its kubeconfig.
 * `kvctl up` writes its cluster's keys into RUN/<cluster>/ (mode 0700), where RUN is
 * $XDG_RUNTIME_DIR/kvserve or else /tmp/kvserve-<uid>: client.key (the client's key pair
 * plus server=, the router's public key) and, once the router is up, `endpoint` (the
 * router's client endpoint, one line). A client connecting to endpoint E uses, in order:
 * an explicit key file; $KVSERVE_CLIENT_KEY; the client.key of the cluster whose
 * `endpoint` file says E. Directories not owned by this user or open to others are skipped. */
#ifndef KV_CURVE_FIND_H
#define KV_CURVE_FIND_H

#include <stddef.h>

#include "kv_curve.h"
#include "kv_err.h"

/* RUN (see above) into out. */
int kv_curve_run_dir(char *out, size_t cap, kv_err *err);
/* Creates RUN/<cluster> (and RUN) with mode 0700, refusing one owned by someone else or
 * open to group/others. */
int kv_curve_cluster_dir(const char *cluster, char *out, size_t cap, kv_err *err);
/* The key file for endpoint: KV_ENOTFOUND when none applies (then: no CURVE). */
int kv_curve_client_key_path(const char *endpoint, char *out, size_t cap, kv_err *err);
/* Loads a client key: its server= line, else a router.pub beside it, gives the router's key. */
int kv_curve_client_key_load(const char *path, kv_curve_key *k, kv_err *err);

#endif
