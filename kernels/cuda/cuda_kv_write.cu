/* Stores new K/V rows into the paged pool (twin of kc_kv_write). One block per row; the
 * same kernel serves a prefill chunk (one table, consecutive positions) and a decode batch
 * (one table and position per row). */
#include "cuda_common.cuh"

#define KVW_THREADS 128

template <typename T>
__global__ void __launch_bounds__(KVW_THREADS)
    kv_write_kernel(kv_cuda_paged_kv kv, const int32_t *tables, int table_stride, const int32_t *positions, int start,
                    const T *k, const T *v)
{
    int r = blockIdx.x;
    int pos = positions ? positions[r] : start + r;
    if (pos < 0)
        return;
    const int32_t *table = tables + (size_t)r * (size_t)table_stride;
    int row = kv.n_kv_heads * kv.head_dim;
    T *dst = (T *)kv.pool + (size_t)table[pos / kv.block_size] * kv.block_stride +
             (size_t)(pos % kv.block_size) * (size_t)row;
    const T *ks = k + (size_t)r * (size_t)row, *vs = v + (size_t)r * (size_t)row;
    for (int i = threadIdx.x; i < row; i += blockDim.x) {
        dst[i] = ks[i];
        dst[kv.v_offset + i] = vs[i];
    }
}

static int check_kv(const kv_cuda_paged_kv *kv, kv_err *err)
{
    if (!kv->pool || kv->block_size <= 0 || kv->n_kv_heads <= 0 || kv->head_dim <= 0)
        return kv_err_set(err, KV_EINVAL, "cuda kv: bad pool (block_size %d, kv heads %d, head_dim %d)",
                          kv->block_size, kv->n_kv_heads, kv->head_dim);
    return KV_OK;
}

static int launch(const kv_cuda_paged_kv *kv, const int32_t *tables, int table_stride, const int32_t *positions,
                  int start, int rows, const void *k, const void *v, void *stream, kv_err *err)
{
    int rc = check_kv(kv, err);
    if (rc)
        return rc;
    if (rows == 0)
        return KV_OK;
    KV_DISPATCH_DTYPE(kv->dtype, T,
                      kv_write_kernel<T><<<rows, KVW_THREADS, 0, KV_STREAM(stream)>>>(
                          *kv, tables, table_stride, positions, start, (const T *)k, (const T *)v));
    KV_CUDA_CHECK_LAUNCH("kv_write_kernel");
    return KV_OK;
}

extern "C" int kv_cuda_kv_write(const kv_cuda_paged_kv *kv, const int32_t *block_table, int start, int n,
                                const void *k, const void *v, void *stream, kv_err *err)
{
    if (start < 0 || n < 0)
        return kv_err_set(err, KV_EINVAL, "cuda kv_write: bad range start=%d n=%d", start, n);
    return launch(kv, block_table, 0, NULL, start, n, k, v, stream, err);
}

extern "C" int kv_cuda_kv_write_decode(const kv_cuda_paged_kv *kv, const int32_t *block_tables, int table_stride,
                                       const int32_t *positions, int n_seqs, const void *k, const void *v,
                                       void *stream, kv_err *err)
{
    if (n_seqs < 0 || table_stride < 0 || !positions)
        return kv_err_set(err, KV_EINVAL, "cuda kv_write_decode: bad batch n_seqs=%d table_stride=%d", n_seqs,
                          table_stride);
    return launch(kv, block_tables, table_stride, positions, 0, n_seqs, k, v, stream, err);
}
