/* The command-line flags of kv-prefill and kv-decode (PROTOCOL.md, "Endpoints and flags"):
 * the common ones, plus each role's own. Parsing is strict: a bad value or an unknown flag
 * prints the usage on stderr and the binary exits 2. */
#ifndef KV_WORKER_FLAGS_H
#define KV_WORKER_FLAGS_H

#include <stdint.h>

typedef enum { KV_WORKER_PREFILL = 1, KV_WORKER_DECODE = 2 } kv_worker_role;

#define KV_WORKER_ID_MAX 255 /* a ZeroMQ routing id */

typedef struct worker_flags {
    kv_worker_role role;
    const char *prog;           /* "kv-prefill" | "kv-decode" */
    const char *model_dir;      /* --model DIR (required) */
    const char *router;         /* --router, default tcp://127.0.0.1:7101 */
    char id[KV_WORKER_ID_MAX + 1]; /* --id, default <role>-<host>-<pid> */
    int32_t kv_blocks;          /* --kv-blocks; 0 = the engine's default (4 full contexts) */
    int block_size;             /* --block-size 16 */
    int kv_dtype;               /* --kv-dtype f32 (a kv_cache_dtype; engine_kv_flags.h) */
    int kv_residual, kv_group, kv_keys; /* --kv-residual, --kv-group, --kv-keys channel|token */
    int prefill_chunk;          /* prefill: --prefill-chunk (default 256 on the cpu, 2048 on a GPU) */
    int kv_message_kib;         /* prefill: --kv-message-kib 4096 (zmq KvChunk size) */
    int kv_peer_idle_s;         /* prefill: --kv-peer-idle-s 300 */
    int threads;                /* --threads; 0 = all cores */
    const char *device;         /* --device as given (cpu) */
    const char *precision;      /* --precision as given; NULL = f32 on the cpu, bf16 on a GPU */
    int device_index;           /* the device actually used: -1 = cpu, N = cuda:N */
    int precision_value;        /* kv_precision */
    char device_name[64];       /* the device actually used ("cpu", "cuda:0") */
    int max_batch;              /* decode: --max-batch 64 */
    const char *kv_listen;      /* decode: --kv-listen tcp://127.0.0.1:0 */
    const char *advertise;      /* decode: --advertise HOST (host announced for a wildcard bind) */
    int fault_drop_kv_ack;      /* decode: --fault drop-kv-ack */
    int fault_corrupt_kv_once;  /* decode: --fault corrupt-kv-once */
    int fault_slow_decode;      /* decode: --fault slow-decode (5 ms per step) */
    int fault_exit_mid_transfer; /* prefill: --fault exit-mid-transfer */
    int kv_transport;           /* --kv-transport: KV_TRANSPORT_FLAG_AUTO (default) or a kv_transport */
    const char *alive_file;     /* --alive-file PATH: touched while the loop turns (NULL = none) */
    int prefix_cache;           /* --prefix-cache on|off (default on) */
    const char *key_file;       /* --key FILE: this worker's CURVE key pair (NULL = CURVE off, warned) */
    const char *router_key;     /* --router-key FILE: the router's public key (required with --key) */
    const char *worker_keys;    /* --worker-keys FILE|DIR: decode: the prefill keys its KV socket admits;
                                 * prefill: a DIR holding <decode-id>.pub for each decode worker */
} worker_flags;

/* Returns 0 to run, -1 when --help was printed (exit 0), or 2 (usage printed; exit 2). */
int worker_flags_parse(kv_worker_role role, int argc, char **argv, worker_flags *f);

/* --device, --precision and --kv-transport into device_index, precision_value and device_name, through
 * kv_engine_parse_device: "cpu"; "auto" (cuda:0 when usable, else cpu with a warning);
 * "cuda:N" when this build has CUDA and the machine has that GPU. Returns 0, or 2 with the
 * reason on stderr (a cuda device on a machine without one, bf16 on the cpu, a GPU KV
 * transport on the cpu). */
int worker_device_resolve(worker_flags *f);

#endif
