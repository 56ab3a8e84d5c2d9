#include "kv_prefix.h"

#include <stdlib.h>
#include <string.h>

int kv_prefix_init(kv_prefix *c, int32_t n_blocks, kv_err *err)
{
    memset(c, 0, sizeof *c);
    if (n_blocks <= 0 || n_blocks > (1 << 28))
        return kv_err_set(err, KV_EINVAL, "prefix cache: bad block count %d", n_blocks);
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n_blocks)
        cap <<= 1;
    c->n_blocks = n_blocks;
    c->hash = calloc((size_t)n_blocks, sizeof *c->hash);
    c->indexed = calloc((size_t)n_blocks, 1);
    c->parked = calloc((size_t)n_blocks, 1);
    c->lru_prev = malloc((size_t)n_blocks * sizeof *c->lru_prev);
    c->lru_next = malloc((size_t)n_blocks * sizeof *c->lru_next);
    c->table = malloc((size_t)cap * sizeof *c->table);
    c->events = malloc((size_t)KV_PREFIX_EVENTS_MAX * sizeof *c->events);
    if (!c->hash || !c->indexed || !c->parked || !c->lru_prev || !c->lru_next || !c->table || !c->events) {
        kv_prefix_destroy(c);
        return kv_err_set(err, KV_ENOMEM, "prefix cache: out of memory for %d blocks", n_blocks);
    }
    c->table_mask = cap - 1;
    memset(c->table, 0xff, (size_t)cap * sizeof *c->table);
    c->lru_oldest = c->lru_newest = -1;
    return KV_OK;
}

void kv_prefix_destroy(kv_prefix *c)
{
    free(c->hash);
    free(c->indexed);
    free(c->parked);
    free(c->lru_prev);
    free(c->lru_next);
    free(c->table);
    free(c->events);
    memset(c, 0, sizeof *c);
}

static uint32_t slot_of(const kv_prefix *c, kv_block_hash h) { return (uint32_t)(h.lo ^ (h.hi >> 7)) & c->table_mask; }

int32_t kv_prefix_find(const kv_prefix *c, kv_block_hash h)
{
    for (uint32_t i = slot_of(c, h);; i = (i + 1) & c->table_mask) {
        int32_t b = c->table[i];
        if (b < 0)
            return -1;
        if (kv_block_hash_eq(c->hash[b], h))
            return b;
    }
}

static void push_event(kv_prefix *c, kv_block_hash h, int stored)
{
    if (c->reset_pending)
        return; /* the reset will send the whole set */
    if (c->ev_n == KV_PREFIX_EVENTS_MAX) {
        kv_prefix_reset_events(c);
        return;
    }
    kv_prefix_event *e = &c->events[(c->ev_head + c->ev_n) % KV_PREFIX_EVENTS_MAX];
    e->hash = h;
    e->stored = (uint8_t)stored;
    c->ev_n++;
}

int kv_prefix_index(kv_prefix *c, int32_t block, kv_block_hash h)
{
    if (block < 0 || block >= c->n_blocks || c->indexed[block] || kv_prefix_find(c, h) >= 0)
        return 0;
    uint32_t i = slot_of(c, h);
    while (c->table[i] >= 0)
        i = (i + 1) & c->table_mask;
    c->table[i] = block;
    c->hash[block] = h;
    c->indexed[block] = 1;
    c->n_indexed++;
    push_event(c, h, 1);
    return 1;
}

/* Linear probing's deletion: shift later members of the cluster back into the hole. */
static void table_remove(kv_prefix *c, int32_t block)
{
    uint32_t i = slot_of(c, c->hash[block]);
    while (c->table[i] != block)
        i = (i + 1) & c->table_mask;
    uint32_t hole = i;
    for (uint32_t j = (hole + 1) & c->table_mask; c->table[j] >= 0; j = (j + 1) & c->table_mask) {
        uint32_t home = slot_of(c, c->hash[c->table[j]]);
        /* j's entry may move to the hole when its home is not within (hole, j]. */
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            c->table[hole] = c->table[j];
            hole = j;
        }
    }
    c->table[hole] = -1;
}

void kv_prefix_unpark(kv_prefix *c, int32_t block)
{
    if (!c->parked[block])
        return;
    int32_t p = c->lru_prev[block], n = c->lru_next[block];
    if (p >= 0)
        c->lru_next[p] = n;
    else
        c->lru_oldest = n;
    if (n >= 0)
        c->lru_prev[n] = p;
    else
        c->lru_newest = p;
    c->parked[block] = 0;
    c->n_lru--;
}

void kv_prefix_park(kv_prefix *c, int32_t block)
{
    if (c->parked[block] || !c->indexed[block])
        return;
    c->lru_prev[block] = c->lru_newest;
    c->lru_next[block] = -1;
    if (c->lru_newest >= 0)
        c->lru_next[c->lru_newest] = block;
    else
        c->lru_oldest = block;
    c->lru_newest = block;
    c->parked[block] = 1;
    c->n_lru++;
}

void kv_prefix_forget(kv_prefix *c, int32_t block)
{
    if (block < 0 || block >= c->n_blocks || !c->indexed[block])
        return;
    kv_prefix_unpark(c, block);
    table_remove(c, block);
    c->indexed[block] = 0;
    c->n_indexed--;
    c->evictions++;
    push_event(c, c->hash[block], 0);
}

void kv_prefix_reset_events(kv_prefix *c)
{
    c->ev_head = c->ev_n = 0;
    c->reset_pending = 1;
}

/* After a reset, the whole set goes out as "stored" (a snapshot), then events again. */
static void materialize_reset(kv_prefix *c)
{
    c->ev_head = c->ev_n = 0;
    for (int32_t b = 0; b < c->n_blocks && c->ev_n < KV_PREFIX_EVENTS_MAX; b++)
        if (c->indexed[b]) {
            c->events[c->ev_n].hash = c->hash[b];
            c->events[c->ev_n].stored = 1;
            c->ev_n++;
        }
}

int kv_prefix_take_reset(kv_prefix *c)
{
    if (!c->reset_pending)
        return 0;
    materialize_reset(c);
    c->reset_pending = 0;
    return 1;
}

uint32_t kv_prefix_events_peek(const kv_prefix *c, kv_prefix_event *out, uint32_t max)
{
    uint32_t n = c->ev_n < max ? c->ev_n : max;
    for (uint32_t i = 0; i < n; i++)
        out[i] = c->events[(c->ev_head + i) % KV_PREFIX_EVENTS_MAX];
    return n;
}

void kv_prefix_events_pop(kv_prefix *c, uint32_t n)
{
    if (n > c->ev_n)
        n = c->ev_n;
    c->ev_head = (c->ev_head + n) % KV_PREFIX_EVENTS_MAX;
    c->ev_n -= n;
}
