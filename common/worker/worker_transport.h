/* A worker's side of the KV transports: what its --kv-transport and device allow, where it
 * runs (node id, GPU UUID), its pool as the GPU transports see it, and NCCL when allowed.
 * Both roles hold one (in worker_engine); Register announces `allowed`. */
#ifndef KV_WORKER_TRANSPORT_H
#define KV_WORKER_TRANSPORT_H

#include "engine.h"
#include "kv_gpu_xfer.h"
#include "kv_nccl.h"
#include "kv_transport.h"
#include "worker_flags.h"

typedef struct worker_transport {
    kv_transport_list allowed;   /* preferred first */
    char allowed_names[64];      /* "cuda-ipc,nccl,zmq" */
    char node_id[320];
    int device;                  /* -1 = cpu */
    unsigned char uuid[KV_GPU_UUID_BYTES];
    kv_gpu_pool pool;            /* base is NULL on the cpu */
    const char *kv_dtype;
    kv_nccl *nccl;               /* loaded when nccl may be used */
} worker_transport;

/* KV_EUNSUPPORTED when the flag names a transport this machine cannot give (err says why). */
int worker_transport_open(const worker_flags *f, kv_engine *e, worker_transport *wt, kv_err *err);
void worker_transport_close(worker_transport *wt);
/* This worker as one side of kv_transport_choose (pointers into wt). */
void worker_transport_side(const worker_transport *wt, kv_transport_side *out);

#endif
