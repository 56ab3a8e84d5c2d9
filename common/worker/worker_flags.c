#include "worker_flags.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "engine_kv_flags.h"
#include "kv_transport.h"
#include "kv_log.h"
#include "kvctl_args.h"

static void usage(const worker_flags *f, FILE *out)
{
    int decode = f->role == KV_WORKER_DECODE;
    fprintf(out,
            "usage: %s --model DIR [OPTIONS]\n"
            "%s\n"
            "  --model DIR          HuggingFace Llama directory (config.json + *.safetensors)\n"
            "  --router EP          router control endpoint (default tcp://127.0.0.1:7101)\n"
            "  --id NAME            worker id (default %s-<host>-<pid>)\n"
            "  --kv-blocks N        KV pool size in blocks (default: 4 full contexts)\n"
            "  --block-size N       tokens per KV block (default 16)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --device D           cpu | auto | cuda:N (default cpu)\n"
            "  --precision P        f32 | bf16: weights, activations and KV blocks (default f32 on\n"
            "                       the cpu, bf16 on a GPU; the cpu computes in f32 only)\n"
            KV_ENGINE_KV_FLAGS_USAGE
            "                       quantized blocks travel as stored; a prompt's last, partial\n"
            "                       block travels quantized too (decode keeps it at f32 from there)\n"
            "  --kv-transport T     auto | zmq | cuda-ipc | nccl: how KV moves between prefill and\n"
            "                       decode workers (default auto: the fastest both ends support)\n"
            "  --alive-file PATH    touch PATH about once a second while the worker's loop runs,\n"
            "                       registered or not (a liveness probe checks its age)\n"
            "  --prefix-cache on|off  keep sealed prompt blocks (decode: and generated ones) indexed\n"
            "                       by hash for the next request with the same prefix (default on)\n"
            "  --key FILE           this worker's CURVE key pair (kvctl keys gen); without it CURVE\n"
            "                       is off and the worker warns (insecure)\n"
            "  --router-key FILE    the router's public key (.pub, or a .key file's public line)\n"
            "  --worker-keys PATH   the cluster's worker public keys: a decode worker admits only\n"
            "                       these on its KV socket; a prefill worker reads <decode-id>.pub\n"
            "                       in this directory to authenticate the decode worker\n",
            f->prog,
            decode ? "Decode worker: receives KV from prefill workers, runs continuous-batching decode."
                   : "Prefill worker: runs chunked prefill and ships the KV cache to decode workers.",
            decode ? "decode" : "prefill");
    if (decode)
        fprintf(out,
                "  --kv-listen EP       KV endpoint to bind (default tcp://127.0.0.1:0, ephemeral port)\n"
                "  --advertise HOST     host announced for the KV endpoint (default: the bound one;\n"
                "                       127.0.0.1 for a wildcard bind)\n"
                "  --max-batch N        sequences per decode step (default 64)\n"
                "  --fault drop-kv-ack  test-only fault injection: never acknowledge KV\n"
                "  --fault corrupt-kv-once  test-only fault injection: the first KV chunk received\n"
                "                       fails its checksum (KV_CORRUPT)\n"
                "  --fault slow-decode  test-only: every decode step takes at least 5 ms more\n");
    else
        fprintf(out, "  --prefill-chunk N    prompt tokens per prefill forward (default 256 on the cpu,\n"
                     "                       2048 on a GPU, whose GEMMs need the rows)\n"
                     "  --kv-message-kib N   zmq: KiB of KV blocks per KvChunk message (default 4096; at\n"
                     "                       least one block): pieces overlap the wire with the checks\n"
                     "  --kv-peer-idle-s N   close a decode worker's KV connection after N s unused\n"
                     "                       (default 300; reopened by the next task for it)\n"
                     "  --fault exit-mid-transfer  test-only fault injection: die (exit 3) right after\n"
                     "                       shipping a task's first KV chunk when more are to follow\n");
    fprintf(out, "  --help               this text\n");
}

int worker_device_resolve(worker_flags *f)
{
    kv_err err;
    if (kv_engine_parse_device(f->device, &f->device_index, &err)) {
        fprintf(stderr, "%s: %s\n", f->prog, err.msg);
        return 2;
    }
    if (!f->precision)
        f->precision_value = f->device_index >= 0 ? KV_PRECISION_BF16 : KV_PRECISION_F32;
    else if (!strcmp(f->precision, "f32"))
        f->precision_value = KV_PRECISION_F32;
    else if (!strcmp(f->precision, "bf16"))
        f->precision_value = KV_PRECISION_BF16;
    else {
        fprintf(stderr, "%s: --precision expects f32 or bf16, got '%s'\n", f->prog, f->precision);
        return 2;
    }
    if (f->device_index < 0 && f->precision_value != KV_PRECISION_F32) {
        fprintf(stderr, "%s: --precision %s needs a CUDA device: the cpu engine computes in f32 only\n", f->prog,
                f->precision);
        return 2;
    }
    /* The transport against the device, before the model loads; whether NCCL loads is
     * worker_transport_open's to find out. */
    kv_transport_list allowed;
    if (kv_transport_allowed(f->kv_transport, f->device_index, 1, NULL, &allowed, &err)) {
        fprintf(stderr, "%s: %s\n", f->prog, err.msg);
        return 2;
    }
    if (!f->prefill_chunk)
        f->prefill_chunk = f->device_index >= 0 ? 2048 : 256;
    if (f->device_index < 0)
        snprintf(f->device_name, sizeof f->device_name, "cpu");
    else
        snprintf(f->device_name, sizeof f->device_name, "cuda:%d", f->device_index);
    return 0;
}

static void default_id(worker_flags *f)
{
    char host[128] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(f->id, sizeof f->id, "%s-%s-%ld", f->role == KV_WORKER_DECODE ? "decode" : "prefill", host,
             (long)getpid());
}

static int bad_flag(const worker_flags *f, const char *msg, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\n", f->prog, msg, arg);
    usage(f, stderr);
    return 2;
}

enum {
    O_MODEL = 256, O_ROUTER, O_ID, O_BLOCKS, O_BS, O_CHUNK, O_THREADS, O_DEVICE, O_PRECISION, O_BATCH, O_LISTEN,
    O_ADVERTISE, O_FAULT, O_TRANSPORT, O_MSG_KIB, O_PEER_IDLE, O_ALIVE, O_KEY, O_RKEY, O_WKEYS, O_PREFIX, O_HELP,
    O_KVDT, O_KVRES, O_KVGROUP, O_KVKEYS
};

/* A role's own flag given to the other role is as unknown as a misspelt one. */
static int flag_allowed(kv_worker_role role, int c)
{
    switch (c) {
    case O_CHUNK: case O_MSG_KIB: case O_PEER_IDLE: return role == KV_WORKER_PREFILL;
    case O_BATCH: case O_LISTEN: case O_ADVERTISE: return role == KV_WORKER_DECODE;
    default: return 1;
    }
}

static int parse_one(worker_flags *f, int c, const char *arg)
{
    long v;
    switch (c) {
    case O_MODEL: f->model_dir = arg; return 0;
    case O_ROUTER: f->router = arg; return 0;
    case O_ID:
        if (!*arg || strlen(arg) > KV_WORKER_ID_MAX)
            return bad_flag(f, "--id must be 1..255 bytes, got", arg);
        snprintf(f->id, sizeof f->id, "%s", arg);
        return 0;
    case O_BLOCKS:
        if (kvctl_parse_int("--kv-blocks", arg, 1, 1L << 30, &v)) return 2;
        f->kv_blocks = (int32_t)v;
        return 0;
    case O_BS:
        if (kvctl_parse_int("--block-size", arg, 1, 1024, &v)) return 2;
        f->block_size = (int)v;
        return 0;
    case O_CHUNK:
        if (kvctl_parse_int("--prefill-chunk", arg, 1, 1 << 20, &v)) return 2;
        f->prefill_chunk = (int)v;
        return 0;
    case O_MSG_KIB:
        if (kvctl_parse_int("--kv-message-kib", arg, 1, 1 << 21, &v)) return 2;
        f->kv_message_kib = (int)v;
        return 0;
    case O_PEER_IDLE:
        if (kvctl_parse_int("--kv-peer-idle-s", arg, 1, 86400, &v)) return 2;
        f->kv_peer_idle_s = (int)v;
        return 0;
    case O_THREADS:
        if (kvctl_parse_int("--threads", arg, 1, 1024, &v)) return 2;
        f->threads = (int)v;
        return 0;
    case O_DEVICE: f->device = arg; return 0;
    case O_PRECISION: f->precision = arg; return 0;
    case O_BATCH:
        if (kvctl_parse_int("--max-batch", arg, 1, 65536, &v)) return 2;
        f->max_batch = (int)v;
        return 0;
    case O_LISTEN: f->kv_listen = arg; return 0;
    case O_PREFIX:
        if (strcmp(arg, "on") && strcmp(arg, "off"))
            return bad_flag(f, "--prefix-cache expects on or off, got", arg);
        f->prefix_cache = !strcmp(arg, "on");
        return 0;
    case O_KVDT: case O_KVRES: case O_KVGROUP: case O_KVKEYS: {
        kv_engine_options o;
        kv_engine_options_default(&o);
        o.kv_dtype = (kv_cache_dtype)f->kv_dtype;
        o.kv_residual = f->kv_residual;
        o.kv_group = f->kv_group;
        o.kv_keys = (kv_key_mode)f->kv_keys;
        kv_err err;
        static const char *const names[] = {"kv-dtype", "kv-residual", "kv-group", "kv-keys"};
        if (kv_engine_kv_flag(&o, names[c - O_KVDT], arg, &err)) {
            fprintf(stderr, "%s: %s\n", f->prog, err.msg);
            return 2;
        }
        f->kv_dtype = (int)o.kv_dtype;
        f->kv_residual = o.kv_residual;
        f->kv_group = o.kv_group;
        f->kv_keys = (int)o.kv_keys;
        return 0;
    }
    case O_KEY: f->key_file = arg; return 0;
    case O_RKEY: f->router_key = arg; return 0;
    case O_WKEYS: f->worker_keys = arg; return 0;
    case O_ALIVE:
        if (!*arg || strlen(arg) > 1024)
            return bad_flag(f, "--alive-file expects a path of 1..1024 bytes, got", arg);
        f->alive_file = arg;
        return 0;
    case O_ADVERTISE:
        if (!*arg || strlen(arg) > 200)
            return bad_flag(f, "--advertise expects a host name or address, got", arg);
        f->advertise = arg;
        return 0;
    case O_TRANSPORT: {
        kv_err err;
        if (kv_transport_parse(arg, &f->kv_transport, &err)) {
            fprintf(stderr, "%s: %s\n", f->prog, err.msg);
            return 2;
        }
        return 0;
    }
    case O_FAULT:
        if (f->role == KV_WORKER_DECODE && !strcmp(arg, "drop-kv-ack"))
            f->fault_drop_kv_ack = 1;
        else if (f->role == KV_WORKER_DECODE && !strcmp(arg, "corrupt-kv-once"))
            f->fault_corrupt_kv_once = 1;
        else if (f->role == KV_WORKER_DECODE && !strcmp(arg, "slow-decode"))
            f->fault_slow_decode = 1;
        else if (f->role == KV_WORKER_PREFILL && !strcmp(arg, "exit-mid-transfer"))
            f->fault_exit_mid_transfer = 1;
        else if (f->role == KV_WORKER_DECODE)
            return bad_flag(f, "--fault expects drop-kv-ack, corrupt-kv-once or slow-decode, got", arg);
        else
            return bad_flag(f, "--fault expects exit-mid-transfer, got", arg);
        return 0;
    default: return 2;
    }
}

int worker_flags_parse(kv_worker_role role, int argc, char **argv, worker_flags *f)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},       {"router", required_argument, 0, O_ROUTER},
        {"id", required_argument, 0, O_ID},             {"kv-blocks", required_argument, 0, O_BLOCKS},
        {"block-size", required_argument, 0, O_BS},     {"prefill-chunk", required_argument, 0, O_CHUNK},
        {"threads", required_argument, 0, O_THREADS},   {"device", required_argument, 0, O_DEVICE},
        {"precision", required_argument, 0, O_PRECISION},
        {"max-batch", required_argument, 0, O_BATCH},   {"kv-listen", required_argument, 0, O_LISTEN},
        {"advertise", required_argument, 0, O_ADVERTISE}, {"fault", required_argument, 0, O_FAULT},
        {"kv-transport", required_argument, 0, O_TRANSPORT}, {"kv-message-kib", required_argument, 0, O_MSG_KIB},
        {"kv-peer-idle-s", required_argument, 0, O_PEER_IDLE}, {"alive-file", required_argument, 0, O_ALIVE},
        {"prefix-cache", required_argument, 0, O_PREFIX},
        {"kv-dtype", required_argument, 0, O_KVDT},     {"kv-residual", required_argument, 0, O_KVRES},
        {"kv-group", required_argument, 0, O_KVGROUP},  {"kv-keys", required_argument, 0, O_KVKEYS},
        {"key", required_argument, 0, O_KEY},           {"router-key", required_argument, 0, O_RKEY},
        {"worker-keys", required_argument, 0, O_WKEYS},
        {"help", no_argument, 0, O_HELP},               {0, 0, 0, 0},
    };
    memset(f, 0, sizeof *f);
    f->role = role;
    f->prog = role == KV_WORKER_DECODE ? "kv-decode" : "kv-prefill";
    f->router = "tcp://127.0.0.1:7101";
    f->block_size = 16;
    f->prefill_chunk = 0; /* by device: worker_device_resolve */
    f->device = "cpu";
    f->max_batch = 64;
    f->kv_message_kib = 4096;
    f->kv_peer_idle_s = 300;
    f->kv_listen = "tcp://127.0.0.1:0";
    f->kv_transport = KV_TRANSPORT_FLAG_AUTO;
    f->prefix_cache = 1;
    default_id(f);
    optind = 1;
    opterr = 0;
    int c, li = -1;
    while ((c = getopt_long(argc, argv, "+h", opts, &li)) != -1) {
        if (c == O_HELP || c == 'h') {
            usage(f, stdout);
            return -1;
        }
        if (c == '?' || c == ':')
            return bad_flag(f, "unknown or incomplete option", argv[optind - 1]);
        if (!flag_allowed(role, c)) {
            fprintf(stderr, "%s: --%s is not a %s flag\n", f->prog, li >= 0 ? opts[li].name : "?", f->prog);
            usage(f, stderr);
            return 2;
        }
        li = -1;
        int rc = parse_one(f, c, optarg);
        if (rc) {
            if (rc == 2 && c != O_ID && c != O_ADVERTISE && c != O_FAULT && c != O_TRANSPORT && c != O_ALIVE && c != O_PREFIX)
                usage(f, stderr);
            return 2;
        }
    }
    if (optind < argc)
        return bad_flag(f, "unexpected argument", argv[optind]);
    if (!f->model_dir) {
        fprintf(stderr, "%s: --model DIR is required\n", f->prog);
        usage(f, stderr);
        return 2;
    }
    if (f->key_file && (!f->router_key || !f->worker_keys)) {
        fprintf(stderr, "%s: --key needs --router-key and --worker-keys\n", f->prog);
        return 2;
    }
    return worker_device_resolve(f);
}
