/* kv_nccl where the build has no CUDA or no nccl.h: `--kv-transport auto` leaves nccl out. */
#include "kv_nccl.h"

static int none(kv_err *err) { return kv_err_set(err, KV_EUNSUPPORTED, "this build has no NCCL support"); }

int kv_nccl_load(kv_nccl **out, kv_err *err)
{
    *out = NULL;
    return none(err);
}
void kv_nccl_unload(kv_nccl *lib) { (void)lib; }
int kv_nccl_version(const kv_nccl *lib) { (void)lib; return 0; }
int kv_nccl_unique_id(kv_nccl *lib, unsigned char id[KV_NCCL_ID_BYTES], kv_err *err)
{
    (void)lib, (void)id;
    return none(err);
}
int kv_nccl_comm_start(kv_nccl *lib, kv_gpu_lane *lane, const unsigned char id[KV_NCCL_ID_BYTES], int rank,
                       kv_nccl_comm **out, kv_err *err)
{
    (void)lib, (void)lane, (void)id, (void)rank;
    *out = NULL;
    return none(err);
}
int kv_nccl_comm_poll(kv_nccl_comm *c, kv_err *err) { (void)c; return none(err); }
int kv_nccl_comm_check(kv_nccl_comm *c, kv_err *err) { (void)c; return none(err); }
int kv_nccl_send(kv_nccl_comm *c, const int32_t *blocks, int n, kv_err *err)
{
    (void)c, (void)blocks, (void)n;
    return none(err);
}
int kv_nccl_recv(kv_nccl_comm *c, const int32_t *blocks, int n, kv_err *err)
{
    (void)c, (void)blocks, (void)n;
    return none(err);
}
void kv_nccl_comm_abort(kv_nccl_comm *c) { (void)c; }
