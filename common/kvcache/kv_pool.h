/* Paged KV cache: a pool of fixed-size blocks and per-sequence block tables.
 *
 * Block layout: [n_layers][K|V][block_size][n_kv_heads * head_dim] values (float32 in a
 * host pool; the engine's dtype in an external one). A block holds every layer of its
 * tokens contiguously, so shipping a block is one memcpy. Blocks are reference counted so
 * equal prefixes can share them.
 *
 * kv_pool_init owns host float32 memory. kv_pool_init_external keeps only the bookkeeping
 * over memory the caller owns (a GPU allocation, values of elem_size bytes): its data must
 * not be dereferenced on the host, nor passed to kv_pool_k/kv_pool_v. */
#ifndef KV_POOL_H
#define KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "kv_prefix.h"

typedef struct kv_pool_shape {
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int block_size; /* tokens per block */
} kv_pool_shape;

typedef struct kv_pool {
    kv_pool_shape shape;
    int32_t n_blocks;
    size_t block_floats;  /* values per block, all layers */
    size_t layer_floats;  /* values per layer within a block (K and V) */
    size_t elem_size;     /* bytes per value: 4 (host pools), 2 for a bf16 external pool */
    size_t block_bytes;   /* bytes per block: block_floats * elem_size, or a kv_layout's
                           * block_bytes for a quantized pool (kv_pool_init_bytes) */
    int external;         /* data belongs to the caller (kv_pool_init_external) */
    float *data;          /* host memory, or the external (e.g. device) address */
    int32_t *free_ids;    /* stack of free block ids */
    int32_t n_free;
    int32_t *refcount;
    kv_prefix *prefix;    /* NULL = no prefix cache: a block is free or held */
    uint64_t double_releases; /* releases of a block nobody held: a bookkeeping bug, counted */
} kv_pool;

/* Bytes of one block of float32 values (a host pool's block). */
size_t kv_pool_block_bytes(const kv_pool_shape *s);
/* Bytes of one block of elem_size-byte values. */
size_t kv_pool_block_bytes_of(const kv_pool_shape *s, size_t elem_size);
/* Blocks that fit in `bytes` of memory (float32 blocks). */
int32_t kv_pool_blocks_for_bytes(const kv_pool_shape *s, size_t bytes);

int kv_pool_init(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, kv_err *err);
/* Bookkeeping only, over n_blocks blocks of elem_size-byte values at data (caller-owned,
 * at least n_blocks * kv_pool_block_bytes_of(s, elem_size) bytes, never touched here). */
int kv_pool_init_external(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, size_t elem_size, void *data,
                          kv_err *err);
/* Host memory of n_blocks blocks of block_bytes opaque bytes each (a quantized KV layout,
 * common/kvcache/kv_layout.h): the same bookkeeping, but kv_pool_k/kv_pool_v must not be
 * used on it (its blocks are not float rows). */
int kv_pool_init_bytes(kv_pool *p, const kv_pool_shape *s, int32_t n_blocks, size_t block_bytes, kv_err *err);
void kv_pool_destroy(kv_pool *p);
/* This pool's block size in bytes (kv_pool_block_bytes for a host pool). */
static inline size_t kv_pool_nbytes_per_block(const kv_pool *p) { return p->block_bytes; }
/* Address of a block in the pool's memory (host or external), as a byte address. */
static inline void *kv_pool_block_addr(const kv_pool *p, int32_t block)
{
    return (char *)p->data + (size_t)block * kv_pool_nbytes_per_block(p);
}

/* All or nothing: n fresh blocks (refcount 1) into ids, or KV_EFULL and nothing taken. With
 * a prefix cache, cached blocks are evicted (oldest first) when the free list is short. */
int kv_pool_reserve(kv_pool *p, int32_t n, int32_t *ids, kv_err *err);
/* Drops one reference from each block, last block first; at zero a block returns to the
 * free list, or, indexed in the prefix cache, becomes cached (newest on the LRU). Releasing
 * a block nobody holds changes nothing but double_releases. */
void kv_pool_release(kv_pool *p, const int32_t *ids, int32_t n);
void kv_pool_retain(kv_pool *p, const int32_t *ids, int32_t n);
/* Blocks on the free list. */
static inline int32_t kv_pool_n_free(const kv_pool *p) { return p->n_free; }
/* Blocks a reservation can get: free plus cached-and-unreferenced (evictable). */
static inline int32_t kv_pool_n_available(const kv_pool *p) { return p->n_free + (p->prefix ? p->prefix->n_lru : 0); }

/* Turns the prefix cache on (idempotent). */
int kv_pool_prefix_enable(kv_pool *p, kv_err *err);
/* The longest run of leading hashes h[0..n) the cache holds: their blocks into ids, each
 * retained (one reference for the caller, who releases them like reserved ones). Counts
 * query_tokens asked and the hits' tokens in the cache's statistics. 0 without a cache. */
int32_t kv_pool_prefix_lookup(kv_pool *p, const kv_block_hash *h, int32_t n, int32_t *ids, int32_t query_tokens);
/* Indexes sealed, held blocks ids[i] under h[i]; returns how many were newly indexed. */
int32_t kv_pool_prefix_insert(kv_pool *p, const int32_t *ids, const kv_block_hash *h, int32_t n);
/* Evicts every cached, unreferenced block (they return to the free list). */
void kv_pool_prefix_flush(kv_pool *p);
static inline int32_t kv_pool_n_cached(const kv_pool *p) { return p->prefix ? p->prefix->n_indexed : 0; }
/* The three states' invariants: every block exactly once free (refcount 0, unindexed, on the
 * free list), held (refcount > 0, off both lists) or cached (refcount 0, indexed, on the
 * LRU); the index and the LRU agree with the per-block flags. KV_ESTATE naming the first
 * broken one. O(n_blocks). */
int kv_pool_check(const kv_pool *p, kv_err *err);

/* K (V) rows of `layer` in `block`: block_size rows of n_kv_heads*head_dim floats (host pools). */
static inline float *kv_pool_k(const kv_pool *p, int32_t block, int layer)
{
    return p->data + (size_t)block * p->block_floats + (size_t)layer * p->layer_floats;
}
static inline float *kv_pool_v(const kv_pool *p, int32_t block, int layer)
{
    return kv_pool_k(p, block, layer) + p->layer_floats / 2;
}

/* A sequence's block table: token t lives in blocks[t / block_size], slot t % block_size. */
typedef struct kv_seq {
    int32_t *blocks;
    int32_t n_blocks, cap_blocks;
    int32_t n_tokens; /* tokens whose K/V are in the cache */
} kv_seq;

/* Makes the table cover n_tokens tokens, reserving blocks as needed (all or nothing). */
int kv_seq_reserve_tokens(kv_seq *s, kv_pool *p, int32_t n_tokens, kv_err *err);
/* Returns every block to the pool and empties the table. */
void kv_seq_release(kv_seq *s, kv_pool *p);

#endif
