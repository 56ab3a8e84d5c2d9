/* The argument rules of cuda_kv_quant.h, in plain C so that the GPU launchers and the CUDA
 * mock (tests/cuda_mock.c) refuse exactly the same formats. */
#include "cuda_kv_quant.h"

int kv_cuda_kvq_format_check(const kv_cuda_kvq_format *f, kv_err *err)
{
    if (f->bits != 8 && f->bits != 4 && f->bits != 2)
        return kv_err_set(err, KV_EINVAL, "KV codes of %d bits: 8, 4 or 2 are supported", f->bits);
    int per_byte = 8 / f->bits;
    if (f->n_kv_heads <= 0 || f->head_dim <= 0 || f->block_size <= 0)
        return kv_err_set(err, KV_EINVAL, "KV block of %d heads x head_dim %d x %d tokens", f->n_kv_heads,
                          f->head_dim, f->block_size);
    if (f->head_dim > KV_CUDA_KVQ_MAX_HEAD_DIM)
        return kv_err_set(err, KV_EUNSUPPORTED, "cuda KV codes: head_dim %d is beyond %d", f->head_dim,
                          KV_CUDA_KVQ_MAX_HEAD_DIM);
    if (f->block_size % per_byte)
        return kv_err_set(err, KV_EINVAL, "block size %d: %d-bit codes pack %d per byte", f->block_size, f->bits,
                          per_byte);
    if (f->group <= 0 || f->group > f->head_dim || f->head_dim % f->group)
        return kv_err_set(err, KV_EINVAL, "KV group of %d channels must divide head_dim %d", f->group, f->head_dim);
    if (f->group % per_byte)
        return kv_err_set(err, KV_EINVAL, "KV group of %d channels: %d-bit codes pack %d per byte", f->group, f->bits,
                          per_byte);
    if ((int64_t)f->n_kv_heads * f->head_dim * f->block_size > (int64_t)1 << 30)
        return kv_err_set(err, KV_EINVAL, "KV block of %d heads x head_dim %d x %d tokens is too large", f->n_kv_heads,
                          f->head_dim, f->block_size);
    if ((f->k_scales | f->k_zeros | f->v_scales | f->v_zeros) & 1)
        return kv_err_set(err, KV_EINVAL, "KV scale and zero-point regions must start at even offsets");
    return KV_OK;
}

/* Sizes as kq_k_code_bytes / kq_k_groups compute them (f checked). */
size_t kv_cuda_kvq_layer_extent(const kv_cuda_kvq_format *f)
{
    size_t codes = (size_t)f->n_kv_heads * (size_t)f->head_dim * (size_t)f->block_size * (size_t)f->bits / 8;
    size_t v_groups = (size_t)f->n_kv_heads * (size_t)f->block_size * (size_t)(f->head_dim / f->group);
    size_t k_groups = f->keys_per_token ? v_groups : (size_t)f->n_kv_heads * (size_t)f->head_dim;
    size_t ends[6] = {f->k_codes + codes,         f->k_scales + 2 * k_groups, f->k_zeros + 2 * k_groups,
                      f->v_codes + codes,         f->v_scales + 2 * v_groups, f->v_zeros + 2 * v_groups};
    size_t e = 0;
    for (int i = 0; i < 6; i++)
        if (ends[i] > e)
            e = ends[i];
    return e;
}
