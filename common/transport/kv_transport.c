#include "kv_transport.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>


static const char *const NAMES[KV_TRANSPORT_COUNT] = {"zmq", "cuda-ipc", "nccl"};

const char *kv_transport_name(kv_transport t)
{
    return (unsigned)t < KV_TRANSPORT_COUNT ? NAMES[t] : "?";
}

int kv_transport_parse(const char *s, int *out, kv_err *err)
{
    if (s && !strcmp(s, "auto")) {
        *out = KV_TRANSPORT_FLAG_AUTO;
        return KV_OK;
    }
    for (int t = 0; s && t < KV_TRANSPORT_COUNT; t++)
        if (!strcmp(s, NAMES[t])) {
            *out = t;
            return KV_OK;
        }
    return kv_err_set(err, KV_EINVAL, "--kv-transport expects auto, zmq, cuda-ipc or nccl, got '%s'", s ? s : "");
}

int kv_transport_list_has(const kv_transport_list *l, kv_transport t)
{
    for (int i = 0; i < l->n; i++)
        if (l->t[i] == t)
            return 1;
    return 0;
}

void kv_transport_list_format(const kv_transport_list *l, char *out, size_t n)
{
    size_t len = 0;
    if (n)
        out[0] = '\0';
    for (int i = 0; i < l->n && len < n; i++) {
        int w = snprintf(out + len, n - len, "%s%s", i ? "," : "", kv_transport_name(l->t[i]));
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

static void push(kv_transport_list *l, kv_transport t) { l->t[l->n++] = t; }

int kv_transport_allowed(int flag, int device, int nccl_loaded, const char *nccl_why, kv_transport_list *out,
                         kv_err *err)
{
    memset(out, 0, sizeof *out);
    const char *why = nccl_why && nccl_why[0] ? nccl_why : "the NCCL library is not loaded";
    switch (flag) {
    case KV_TRANSPORT_FLAG_AUTO:
        if (device >= 0) {
            push(out, KV_TRANSPORT_CUDA_IPC);
            if (nccl_loaded)
                push(out, KV_TRANSPORT_NCCL);
        }
        push(out, KV_TRANSPORT_ZMQ);
        return KV_OK;
    case KV_TRANSPORT_ZMQ:
        push(out, KV_TRANSPORT_ZMQ);
        return KV_OK;
    case KV_TRANSPORT_CUDA_IPC:
    case KV_TRANSPORT_NCCL:
        if (device < 0)
            return kv_err_set(err, KV_EINVAL, "--kv-transport %s moves KV between GPUs: it needs --device cuda:N",
                              kv_transport_name((kv_transport)flag));
        if (flag == KV_TRANSPORT_NCCL && !nccl_loaded)
            return kv_err_set(err, KV_EUNSUPPORTED, "--kv-transport nccl: %s", why);
        push(out, (kv_transport)flag);
        return KV_OK;
    default:
        return kv_err_set(err, KV_EINVAL, "unknown KV transport %d", flag);
    }
}

/* Why t cannot serve this pair, or NULL when it can. */
static const char *unfit(kv_transport t, const kv_transport_side *d, const kv_transport_side *p)
{
    if (t == KV_TRANSPORT_ZMQ)
        return NULL;
    if (d->device < 0 || p->device < 0)
        return "needs both workers on GPUs";
    if (d->block_bytes % 16)
        return "needs KV blocks of a multiple of 16 bytes";
    if (t == KV_TRANSPORT_CUDA_IPC)
        return strcmp(d->node_id, p->node_id) ? "needs both workers on one node" : NULL;
    if (!d->uuid || !p->uuid)
        return "needs the GPUs' UUIDs";
    return memcmp(d->uuid, p->uuid, 16) ? NULL : "needs two different GPUs (both workers are on one)";
}

int kv_transport_choose(const kv_transport_side *decode, const kv_transport_side *prefill, unsigned skip,
                        kv_transport *out, kv_err *err)
{
    if (decode->block_bytes != prefill->block_bytes || strcmp(decode->kv_dtype, prefill->kv_dtype))
        return kv_err_set(err, KV_EINVAL, "KV layouts differ: prefill %llu-byte %s blocks, decode %llu-byte %s blocks",
                          (unsigned long long)prefill->block_bytes, prefill->kv_dtype,
                          (unsigned long long)decode->block_bytes, decode->kv_dtype);
    char why[400] = "";
    size_t len = 0;
    for (int i = 0; i < prefill->allowed.n; i++) {
        kv_transport t = prefill->allowed.t[i];
        const char *no = skip & (1u << t) ? "failed to set up"
                         : !kv_transport_list_has(&decode->allowed, t) ? "not allowed by the decode worker"
                                                                       : unfit(t, decode, prefill);
        if (!no) {
            *out = t;
            return KV_OK;
        }
        int w = snprintf(why + len, sizeof why - len, "%s%s: %s", len ? "; " : "", kv_transport_name(t), no);
        if (w > 0 && (size_t)w < sizeof why - len)
            len += (size_t)w;
    }
    return kv_err_set(err, KV_ENOTFOUND, "no KV transport in common (%s)", len ? why : "nothing offered");
}

void kv_transport_node_id(char *out, size_t n)
{
    /* The kernel's boot id, not the host name: containers (pods) of one machine have host
     * names of their own but share the kernel, and whether their GPUs can share memory is
     * for cudaIpcOpenMemHandle to say (a handle that does not open falls back to the next
     * offered transport). */
    char boot[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f))
            boot[0] = '\0';
        fclose(f);
    }
    boot[strcspn(boot, "\r\n")] = '\0';
    if (boot[0]) {
        snprintf(out, n, "boot:%s", boot);
        return;
    }
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0)
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(out, n, "host:%s", host);
}
