#include "worker_transport.h"

#include <string.h>

#include "kv_log.h"

int worker_transport_open(const worker_flags *f, kv_engine *e, worker_transport *wt, kv_err *err)
{
    memset(wt, 0, sizeof *wt);
    wt->device = kv_engine_device(e);
    wt->kv_dtype = kv_engine_kv_dtype(e);
    kv_transport_node_id(wt->node_id, sizeof wt->node_id);
    int rc;
    kv_err why;
    kv_err_clear(&why);
    wt->pool = (kv_gpu_pool){wt->device, wt->device >= 0 ? kv_engine_block_ptr(e, 0) : NULL,
                             kv_engine_block_bytes(e), kv_engine_pool(e)->n_blocks};
    if (wt->device >= 0) {
        if ((rc = kv_gpu_device_uuid(wt->device, wt->uuid, err)))
            return rc;
        if ((f->kv_transport == KV_TRANSPORT_FLAG_AUTO || f->kv_transport == KV_TRANSPORT_NCCL) &&
            kv_nccl_load(&wt->nccl, &why) == KV_OK)
            KV_INFO(f->prog, "msg=\"NCCL loaded\" version=%d", kv_nccl_version(wt->nccl));
        else if (f->kv_transport == KV_TRANSPORT_FLAG_AUTO)
            KV_INFO(f->prog, "msg=\"nccl KV transport unavailable\" reason=\"%s\"", why.msg);
    }
    if ((rc = kv_transport_allowed(f->kv_transport, wt->device, wt->nccl != NULL, why.msg, &wt->allowed, err))) {
        worker_transport_close(wt);
        return rc;
    }
    kv_transport_list_format(&wt->allowed, wt->allowed_names, sizeof wt->allowed_names);
    KV_INFO(f->prog, "msg=\"KV transports\" allowed=%s node=%s", wt->allowed_names, wt->node_id);
    return KV_OK;
}

void worker_transport_close(worker_transport *wt)
{
    kv_nccl_unload(wt->nccl);
    wt->nccl = NULL;
}

void worker_transport_side(const worker_transport *wt, kv_transport_side *out)
{
    out->allowed = wt->allowed;
    out->node_id = wt->node_id;
    out->device = wt->device;
    out->uuid = wt->device >= 0 ? wt->uuid : NULL;
    out->block_bytes = wt->pool.block_bytes;
    out->kv_dtype = wt->kv_dtype;
}
