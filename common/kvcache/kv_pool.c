#include "kv_pool.h"

#include <stdlib.h>
#include <string.h>

size_t kv_pool_block_bytes_of(const kv_pool_shape *s, size_t elem_size)
{
    return (size_t)s->n_layers * 2 * (size_t)s->block_size * (size_t)s->n_kv_heads * (size_t)s->head_dim * elem_size;
}

size_t kv_pool_block_bytes(const kv_pool_shape *s) { return kv_pool_block_bytes_of(s, sizeof(float)); }

int32_t kv_pool_blocks_for_bytes(const kv_pool_shape *s, size_t bytes)
{
    size_t n = bytes / kv_pool_block_bytes(s);
    return n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

/* Shape, counts and the free list; data is set by the caller. */
static int pool_setup(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, size_t elem_size, kv_err *err)
{
    memset(p, 0, sizeof *p);
    if (s->n_layers <= 0 || s->n_kv_heads <= 0 || s->head_dim <= 0 || s->block_size <= 0 || n_blocks <= 0 ||
        (elem_size != 2 && elem_size != 4))
        return kv_err_set(err, KV_EINVAL, "kv pool: bad shape or block count (%d blocks of %d tokens)", n_blocks,
                          s->block_size);
    p->shape = *s;
    p->n_blocks = n_blocks;
    p->elem_size = elem_size;
    p->block_floats = kv_pool_block_bytes_of(s, 1);
    p->layer_floats = p->block_floats / (size_t)s->n_layers;
    p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
    p->refcount = calloc((size_t)n_blocks, sizeof *p->refcount);
    if (!p->free_ids || !p->refcount) {
        kv_pool_destroy(p);
        return kv_err_set(err, KV_ENOMEM, "kv pool: cannot allocate the bookkeeping of %d blocks", n_blocks);
    }
    /* Pop order = ascending ids, which keeps small tests' block ids predictable. */
    for (int32_t i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    return KV_OK;
}

int kv_pool_init(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, kv_err *err)
{
    int rc = pool_setup(p, s, n_blocks, sizeof(float), err);
    if (rc)
        return rc;
    /* 64-byte alignment: whole cache lines per block row for the SIMD attention loops. */
    size_t bytes = (size_t)n_blocks * kv_pool_block_bytes(s);
    p->data = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p->data) {
        kv_pool_destroy(p);
        return kv_err_set(err, KV_ENOMEM, "kv pool: cannot allocate %d blocks (%zu bytes)", n_blocks, bytes);
    }
    return KV_OK;
}

int kv_pool_init_external(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, size_t elem_size, void *data,
                          kv_err *err)
{
    if (!data) {
        memset(p, 0, sizeof *p);
        return kv_err_set(err, KV_EINVAL, "kv pool: no memory given for an external pool");
    }
    int rc = pool_setup(p, s, n_blocks, elem_size, err);
    if (rc)
        return rc;
    p->data = data;
    p->external = 1;
    return KV_OK;
}

void kv_pool_destroy(kv_pool *p)
{
    if (!p->external)
        free(p->data);
    free(p->free_ids);
    free(p->refcount);
    memset(p, 0, sizeof *p);
}

int kv_pool_reserve(kv_pool *p, int32_t n, int32_t *ids, kv_err *err)
{
    if (n < 0)
        return kv_err_set(err, KV_EINVAL, "kv pool: negative block count");
    if (n > p->n_free)
        return kv_err_set(err, KV_EFULL, "kv pool full: need %d blocks, %d of %d free", n, p->n_free, p->n_blocks);
    for (int32_t i = 0; i < n; i++) {
        int32_t id = p->free_ids[--p->n_free];
        p->refcount[id] = 1;
        ids[i] = id;
    }
    return KV_OK;
}

void kv_pool_release(kv_pool *p, const int32_t *ids, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= p->n_blocks || p->refcount[id] <= 0)
            continue; /* double free is ignored, never corrupts the free list */
        if (--p->refcount[id] == 0)
            p->free_ids[p->n_free++] = id;
    }
}

void kv_pool_retain(kv_pool *p, const int32_t *ids, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < p->n_blocks && p->refcount[ids[i]] > 0)
            p->refcount[ids[i]]++;
}

int kv_seq_reserve_tokens(kv_seq *s, kv_pool *p, int32_t n_tokens, kv_err *err)
{
    int32_t bs = p->shape.block_size;
    int32_t need = (n_tokens + bs - 1) / bs;
    if (need <= s->n_blocks)
        return KV_OK;
    if (need > s->cap_blocks) {
        int32_t cap = s->cap_blocks ? s->cap_blocks : 8;
        while (cap < need)
            cap *= 2;
        int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b)
            return kv_err_set(err, KV_ENOMEM, "out of memory for a block table");
        s->blocks = b;
        s->cap_blocks = cap;
    }
    int rc = kv_pool_reserve(p, need - s->n_blocks, s->blocks + s->n_blocks, err);
    if (rc)
        return rc;
    s->n_blocks = need;
    return KV_OK;
}

void kv_seq_release(kv_seq *s, kv_pool *p)
{
    kv_pool_release(p, s->blocks, s->n_blocks);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}
