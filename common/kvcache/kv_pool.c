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
    p->block_bytes = p->block_floats * elem_size;
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

int kv_pool_init_bytes(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, size_t block_bytes, kv_err *err)
{
    int rc = pool_setup(p, s, n_blocks, sizeof(float), err);
    if (rc)
        return rc;
    if (block_bytes == 0 || block_bytes > SIZE_MAX / 2 / (size_t)n_blocks) {
        kv_pool_destroy(p);
        return kv_err_set(err, KV_ERANGE, "kv pool: %d blocks of %zu bytes", n_blocks, block_bytes);
    }
    p->block_bytes = block_bytes;
    size_t bytes = (size_t)n_blocks * block_bytes;
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
    if (p->prefix) {
        kv_prefix_destroy(p->prefix);
        free(p->prefix);
    }
    memset(p, 0, sizeof *p);
}

int kv_pool_reserve(kv_pool *p, int32_t n, int32_t *ids, kv_err *err)
{
    if (n < 0)
        return kv_err_set(err, KV_EINVAL, "kv pool: negative block count");
    if (n > kv_pool_n_available(p))
        return kv_err_set(err, KV_EFULL, "kv pool full: need %d blocks, %d of %d free", n, kv_pool_n_available(p),
                          p->n_blocks);
    while (n > p->n_free) {
        int32_t victim = kv_prefix_oldest(p->prefix);
        kv_prefix_forget(p->prefix, victim);
        p->free_ids[p->n_free++] = victim;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t id = p->free_ids[--p->n_free];
        p->refcount[id] = 1;
        ids[i] = id;
    }
    return KV_OK;
}

void kv_pool_release(kv_pool *p, const int32_t *ids, int32_t n)
{
    /* Last block first: a chain's tail is parked before its head, so it is evicted first. */
    for (int32_t i = n - 1; i >= 0; i--) {
        int32_t id = ids[i];
        if (id < 0 || id >= p->n_blocks || p->refcount[id] <= 0) {
            p->double_releases++; /* never corrupts the free list */
            continue;
        }
        if (--p->refcount[id] > 0)
            continue;
        if (p->prefix && p->prefix->indexed[id])
            kv_prefix_park(p->prefix, id);
        else
            p->free_ids[p->n_free++] = id;
    }
}

int kv_pool_prefix_enable(kv_pool *p, kv_err *err)
{
    if (p->prefix)
        return KV_OK;
    kv_prefix *c = malloc(sizeof *c);
    if (!c)
        return kv_err_set(err, KV_ENOMEM, "kv pool: out of memory for the prefix cache");
    int rc = kv_prefix_init(c, p->n_blocks, err);
    if (rc) {
        free(c);
        return rc;
    }
    p->prefix = c;
    return KV_OK;
}

int32_t kv_pool_prefix_lookup(kv_pool *p, const kv_block_hash *h, int32_t n, int32_t *ids, int32_t query_tokens)
{
    if (!p->prefix)
        return 0;
    int32_t hit = 0;
    for (; hit < n; hit++) {
        int32_t b = kv_prefix_find(p->prefix, h[hit]);
        if (b < 0)
            break;
        kv_prefix_unpark(p->prefix, b);
        p->refcount[b]++;
        ids[hit] = b;
    }
    p->prefix->query_tokens += (uint64_t)(query_tokens > 0 ? query_tokens : 0);
    p->prefix->hit_tokens += (uint64_t)hit * (uint64_t)p->shape.block_size;
    return hit;
}

int32_t kv_pool_prefix_insert(kv_pool *p, const int32_t *ids, const kv_block_hash *h, int32_t n)
{
    int32_t added = 0;
    for (int32_t i = 0; p->prefix && i < n; i++)
        if (ids[i] >= 0 && ids[i] < p->n_blocks && p->refcount[ids[i]] > 0)
            added += kv_prefix_index(p->prefix, ids[i], h[i]);
    return added;
}

void kv_pool_prefix_flush(kv_pool *p)
{
    while (p->prefix && p->prefix->n_lru) {
        int32_t victim = kv_prefix_oldest(p->prefix);
        kv_prefix_forget(p->prefix, victim);
        p->free_ids[p->n_free++] = victim;
    }
}

int kv_pool_check(const kv_pool *p, kv_err *err)
{
    const kv_prefix *c = p->prefix;
    uint8_t *seen = calloc((size_t)p->n_blocks, 1);
    if (!seen)
        return kv_err_set(err, KV_ENOMEM, "kv pool check: out of memory");
    int rc = KV_OK;
    for (int32_t i = 0; i < p->n_free && !rc; i++) {
        int32_t b = p->free_ids[i];
        if (b < 0 || b >= p->n_blocks || seen[b] || p->refcount[b] != 0 || (c && c->indexed[b]))
            rc = kv_err_set(err, KV_ESTATE, "free list entry %d: block %d is out of range, listed twice, held or indexed",
                            i, b);
        else
            seen[b] = 1;
    }
    int32_t n_lru = 0, n_indexed = 0;
    for (int32_t b = c ? c->lru_oldest : -1; b >= 0 && !rc; b = c->lru_next[b], n_lru++) {
        if (seen[b] || p->refcount[b] != 0 || !c->indexed[b] || !c->parked[b] || n_lru > p->n_blocks)
            rc = kv_err_set(err, KV_ESTATE, "LRU entry %d: block %d is free, held, unindexed or listed twice", n_lru, b);
        else
            seen[b] = 2;
    }
    for (int32_t b = 0; b < p->n_blocks && !rc; b++) {
        if (c && c->indexed[b]) {
            n_indexed++;
            if (kv_prefix_find(c, c->hash[b]) != b)
                rc = kv_err_set(err, KV_ESTATE, "block %d is indexed but its hash finds another block", b);
        }
        if (!rc && !seen[b] && p->refcount[b] <= 0)
            rc = kv_err_set(err, KV_ESTATE, "block %d is neither free, held nor cached (refcount %d)", b,
                            p->refcount[b]);
        if (!rc && c && c->parked[b] != (seen[b] == 2))
            rc = kv_err_set(err, KV_ESTATE, "block %d: parked flag disagrees with the LRU", b);
    }
    if (!rc && c && (n_lru != c->n_lru || n_indexed != c->n_indexed))
        rc = kv_err_set(err, KV_ESTATE, "counts: LRU %d listed vs %d counted, %d indexed vs %d counted", n_lru,
                        c->n_lru, n_indexed, c->n_indexed);
    free(seen);
    return rc;
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
