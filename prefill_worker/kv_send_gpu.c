/* A chunk over a GPU transport: the blocks' checksums computed on our GPU (on the lane's
 * side stream, so not after the previous chunk's NCCL send, which waits for the decode
 * worker to post its receive), then the KvChunk (no frames). cuda-ipc: the decode worker
 * copies the blocks out of our exported pool (we keep them until its KvAck, as always).
 * nccl: the sends follow on the peer's lane, in the order the decode worker posts its
 * receives (the order of our KvChunks). */
#include <stdlib.h>

#include "kv_sender.h"

#define HASH_TIMEOUT_MS 5000

int kv_sender_send_gpu(kv_sender *s, kv_peer *p, const kv_chunk_desc *c, int timeout_ms, kv_send_hold *hold,
                       uint64_t *bytes, kv_err *err)
{
    size_t n = (size_t)c->n_blocks;
    uint32_t *sums = malloc((n ? n : 1) * sizeof *sums);
    if (!sums)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    int rc = KV_OK;
    if (n) {
        kv_gpu_op *op = NULL;
        rc = kv_gpu_hash(p->lane, c->src, c->n_blocks, &op, err);
        if (!rc && !(rc = kv_gpu_op_wait(op, HASH_TIMEOUT_MS, err)))
            for (size_t i = 0; i < n; i++)
                sums[i] = kv_gpu_op_sums(op)[i];
        kv_gpu_op_free(op);
    }
    if (rc) {
        free(sums);
        return rc;
    }
    Kvserve__KvChunk kc;
    kv_sender_chunk_msg(s, p, c, sums, &kc);
    rc = kv_sender_chunk_send(p, &kc, NULL, 0, timeout_ms, err);
    free(sums);
    if (!rc)
        kv_sender_fault_point(s, c);
    if (!rc && n && p->transport == KV_TRANSPORT_NCCL && !(rc = kv_nccl_send(p->comm, c->src, c->n_blocks, err)))
        rc = kv_gpu_mark(p->lane, NULL, 0, &hold->op, err);
    if (!rc)
        *bytes += n * s->xfer->pool.block_bytes;
    return rc;
}
