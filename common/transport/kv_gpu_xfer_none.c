/* kv_gpu_xfer and kv_nccl in builds without CUDA: nothing to move GPU memory with. */
#include "kv_gpu_xfer.h"

static int none(kv_err *err) { return kv_err_set(err, KV_EUNSUPPORTED, "this build has no CUDA support"); }

int kv_gpu_device_uuid(int device, unsigned char uuid[KV_GPU_UUID_BYTES], kv_err *err)
{
    (void)device, (void)uuid;
    return none(err);
}
int kv_gpu_ipc_export(const kv_gpu_pool *pool, unsigned char handle[KV_GPU_IPC_HANDLE_BYTES], kv_err *err)
{
    (void)pool, (void)handle;
    return none(err);
}
int kv_gpu_ipc_open(int device, const unsigned char handle[KV_GPU_IPC_HANDLE_BYTES], void **base, kv_err *err)
{
    (void)device, (void)handle;
    *base = NULL;
    return none(err);
}
void kv_gpu_ipc_close(int device, void *base) { (void)device, (void)base; }
int kv_gpu_lane_create(const kv_gpu_pool *pool, kv_gpu_lane **out, kv_err *err)
{
    (void)pool;
    *out = NULL;
    return none(err);
}
void kv_gpu_lane_destroy(kv_gpu_lane *l) { (void)l; }
void *kv_gpu_lane_stream(kv_gpu_lane *l) { (void)l; return NULL; }
const kv_gpu_pool *kv_gpu_lane_pool(const kv_gpu_lane *l) { (void)l; return NULL; }
int kv_gpu_mark(kv_gpu_lane *l, const int32_t *blocks, int n, kv_gpu_op **op, kv_err *err)
{
    (void)l, (void)blocks, (void)n;
    *op = NULL;
    return none(err);
}
int kv_gpu_hash(kv_gpu_lane *l, const int32_t *blocks, int n, kv_gpu_op **op, kv_err *err)
{
    return kv_gpu_mark(l, blocks, n, op, err);
}
int kv_gpu_pull(kv_gpu_lane *l, const void *src_base, const int32_t *src, const int32_t *dst, int n, kv_gpu_op **op,
                kv_err *err)
{
    (void)l, (void)src_base, (void)src, (void)dst, (void)n;
    *op = NULL;
    return none(err);
}
int kv_gpu_op_poll(kv_gpu_op *op, kv_err *err) { (void)op; return none(err); }
int kv_gpu_op_wait(kv_gpu_op *op, int timeout_ms, kv_err *err) { (void)op, (void)timeout_ms; return none(err); }
const uint32_t *kv_gpu_op_sums(const kv_gpu_op *op) { (void)op; return NULL; }
void kv_gpu_op_free(kv_gpu_op *op) { (void)op; }
