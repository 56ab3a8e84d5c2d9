#include "router_prefix.h"

#include <stdlib.h>
#include <string.h>

#include "kv_err.h"

#define INITIAL_CAP 1024u

int router_prefix_init(router_prefix *x)
{
    memset(x, 0, sizeof *x);
    x->table = calloc(INITIAL_CAP, sizeof *x->table);
    if (!x->table)
        return KV_ENOMEM;
    x->mask = INITIAL_CAP - 1;
    return KV_OK;
}

void router_prefix_free(router_prefix *x)
{
    free(x->table);
    memset(x, 0, sizeof *x);
}

static uint32_t home(const router_prefix *x, kv_block_hash h) { return (uint32_t)(h.lo ^ (h.hi >> 9)) & x->mask; }

static router_prefix_entry *find(const router_prefix *x, kv_block_hash h)
{
    for (uint32_t i = home(x, h);; i = (i + 1) & x->mask) {
        router_prefix_entry *e = &x->table[i];
        if (!e->holders)
            return NULL;
        if (kv_block_hash_eq(e->hash, h))
            return e;
    }
}

static void put(router_prefix *x, kv_block_hash h, uint64_t holders)
{
    uint32_t i = home(x, h);
    while (x->table[i].holders)
        i = (i + 1) & x->mask;
    x->table[i].hash = h;
    x->table[i].holders = holders;
    x->n++;
}

static int grow(router_prefix *x)
{
    uint32_t cap = (x->mask + 1) * 2;
    router_prefix_entry *old = x->table, *t = calloc(cap, sizeof *t);
    if (!t)
        return KV_ENOMEM;
    uint32_t old_cap = x->mask + 1;
    x->table = t;
    x->mask = cap - 1;
    x->n = 0;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].holders)
            put(x, old[i].hash, old[i].holders);
    free(old);
    return KV_OK;
}

/* Linear probing's deletion: later members of the cluster move back into the hole. */
static void erase(router_prefix *x, router_prefix_entry *e)
{
    uint32_t hole = (uint32_t)(e - x->table);
    for (uint32_t j = (hole + 1) & x->mask; x->table[j].holders; j = (j + 1) & x->mask) {
        uint32_t h = home(x, x->table[j].hash);
        int between = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
        if (!between) {
            x->table[hole] = x->table[j];
            hole = j;
        }
    }
    memset(&x->table[hole], 0, sizeof x->table[hole]);
    x->n--;
}

static void drop_bit(router_prefix *x, router_prefix_entry *e, int slot)
{
    uint64_t bit = 1ull << slot;
    if (!(e->holders & bit))
        return;
    x->per_slot[slot]--;
    e->holders &= ~bit;
    if (!e->holders)
        erase(x, e);
}

static void forget_slot(router_prefix *x, int slot)
{
    uint64_t bit = 1ull << slot;
    if (!x->per_slot[slot])
        return;
    /* Erasing shifts entries back: re-examine the same index after a removal. */
    for (uint32_t i = 0; i <= x->mask;) {
        router_prefix_entry *e = &x->table[i];
        if (e->holders & bit) {
            uint64_t before = e->holders;
            drop_bit(x, e, slot);
            if (before != bit)
                i++;
            continue;
        }
        i++;
    }
    x->per_slot[slot] = 0;
}

int router_prefix_slot_take(router_prefix *x)
{
    for (int s = 0; s < ROUTER_PREFIX_SLOTS; s++)
        if (!(x->slots_used & (1ull << s))) {
            x->slots_used |= 1ull << s;
            return s;
        }
    return -1;
}

void router_prefix_slot_release(router_prefix *x, int slot)
{
    if (slot < 0 || slot >= ROUTER_PREFIX_SLOTS)
        return;
    forget_slot(x, slot);
    x->slots_used &= ~(1ull << slot);
}

int router_prefix_apply(router_prefix *x, int slot, int reset, const kv_block_hash *stored, size_t n_stored,
                        const kv_block_hash *evicted, size_t n_evicted)
{
    if (slot < 0 || slot >= ROUTER_PREFIX_SLOTS)
        return KV_OK;
    if (reset)
        forget_slot(x, slot);
    for (size_t i = 0; i < n_evicted; i++) {
        router_prefix_entry *e = find(x, evicted[i]);
        if (e)
            drop_bit(x, e, slot);
    }
    for (size_t i = 0; i < n_stored; i++) {
        router_prefix_entry *e = find(x, stored[i]);
        if (e) {
            if (!(e->holders & (1ull << slot)))
                x->per_slot[slot]++;
            e->holders |= 1ull << slot;
            continue;
        }
        if ((x->n + 1) * 2 > (size_t)x->mask + 1 && grow(x))
            return KV_ENOMEM;
        put(x, stored[i], 1ull << slot);
        x->per_slot[slot]++;
    }
    return KV_OK;
}

void router_prefix_hits(const router_prefix *x, const kv_block_hash *chain, uint32_t n,
                        uint32_t hits[ROUTER_PREFIX_SLOTS])
{
    memset(hits, 0, ROUTER_PREFIX_SLOTS * sizeof *hits);
    uint64_t alive = x->slots_used;
    for (uint32_t i = 0; i < n && alive; i++) {
        const router_prefix_entry *e = find(x, chain[i]);
        alive &= e ? e->holders : 0;
        for (int s = 0; s < ROUTER_PREFIX_SLOTS; s++)
            if (alive & (1ull << s))
                hits[s] = i + 1;
    }
}
