/* KV transports: which one a (prefill, decode) pair uses. `zmq` (raw frames of host memory
 * on the KV socket) works everywhere; `cuda-ipc` (same node: the decode worker copies the
 * blocks out of the prefill worker's exported GPU pool) and `nccl` (GPU to GPU through a
 * 2-rank communicator) need both workers on GPUs. Each worker's --kv-transport says what it
 * allows; the decode worker picks, for each prefill worker that offers, the first offered
 * one it allows whose conditions hold (kv_transport_choose). Pure logic: no CUDA, no ZeroMQ. */
#ifndef KV_TRANSPORT_H
#define KV_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

/* Values match the wire's KvTransport. */
typedef enum { KV_TRANSPORT_ZMQ = 0, KV_TRANSPORT_CUDA_IPC = 1, KV_TRANSPORT_NCCL = 2 } kv_transport;
#define KV_TRANSPORT_COUNT 3

/* --kv-transport: auto or one transport. */
typedef enum { KV_TRANSPORT_FLAG_AUTO = -1 } kv_transport_flag;

const char *kv_transport_name(kv_transport t); /* "zmq" | "cuda-ipc" | "nccl" */
/* "auto" -> KV_TRANSPORT_FLAG_AUTO, else a kv_transport; anything else is KV_EINVAL. */
int kv_transport_parse(const char *s, int *out, kv_err *err);

/* Transports in preference order. */
typedef struct kv_transport_list {
    kv_transport t[KV_TRANSPORT_COUNT];
    int n;
} kv_transport_list;

int kv_transport_list_has(const kv_transport_list *l, kv_transport t);
/* "cuda-ipc,nccl,zmq" */
void kv_transport_list_format(const kv_transport_list *l, char *out, size_t n);

/* What a worker allows from its flag, its device (-1 = cpu) and whether NCCL loaded:
 * auto on a GPU = cuda-ipc, nccl (when loaded), zmq; auto on the cpu = zmq; a named GPU
 * transport without a GPU (or nccl without the library) is an error saying why. */
int kv_transport_allowed(int flag, int device, int nccl_loaded, const char *nccl_why, kv_transport_list *out,
                         kv_err *err);

/* One side of a pairing, as KvHello carries the prefill side. */
typedef struct kv_transport_side {
    kv_transport_list allowed;   /* the prefill side: its offer */
    const char *node_id;         /* kv_transport_node_id */
    int device;                  /* -1 = cpu */
    const unsigned char *uuid;   /* 16 bytes, or NULL on the cpu */
    uint64_t block_bytes;
    const char *kv_dtype;
} kv_transport_side;

/* The first transport of the prefill side's offer that the decode side allows, that is not
 * in `skip` (bit 1 << t: tried and failed, e.g. an IPC handle that would not open) and whose
 * conditions hold: cuda-ipc = both on GPUs of one node; nccl = both on GPUs, not the same
 * GPU; GPU transports need block_bytes % 16 == 0. KV_ENOTFOUND when none does, with every
 * offered transport's reason in err. The KV layouts must match (KV_EINVAL otherwise). */
int kv_transport_choose(const kv_transport_side *decode, const kv_transport_side *prefill, unsigned skip,
                        kv_transport *out, kv_err *err);

/* "boot:<kernel boot id>" (else "host:<hostname>"): equal on two processes of one running
 * machine, containers included. */
void kv_transport_node_id(char *out, size_t n);

#endif
