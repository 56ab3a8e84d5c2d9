#include "tok_merge_map.h"

#include <stdlib.h>

#include "kv_err.h"

static size_t slot_of(uint64_t key, size_t mask)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29)) & mask;
}

int tok_merge_map_init(tok_merge_map *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2 + 1) {
        if (cap > SIZE_MAX / 2 / sizeof *m->slots)
            return KV_ENOMEM;
        cap *= 2;
    }
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return KV_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].key = TOK_MERGE_EMPTY;
    m->mask = cap - 1;
    m->n = 0;
    return 0;
}

void tok_merge_map_free(tok_merge_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = m->n = 0;
}

int tok_merge_map_put(tok_merge_map *m, int32_t left, int32_t right, uint32_t rank, int32_t merged)
{
    if (!m->slots || m->n + 1 > (m->mask + 1) / 2)
        return KV_ENOMEM;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = slot_of(key, m->mask);; i = (i + 1) & m->mask) {
        tok_merge_slot *s = &m->slots[i];
        if (s->key == TOK_MERGE_EMPTY || s->key == key) {
            if (s->key == TOK_MERGE_EMPTY)
                m->n++;
            s->key = key;
            s->rank = rank;
            s->merged = merged;
            return 0;
        }
    }
}

const tok_merge_slot *tok_merge_map_get(const tok_merge_map *m, int32_t left, int32_t right)
{
    if (!m->slots)
        return NULL;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (size_t i = slot_of(key, m->mask);; i = (i + 1) & m->mask) {
        const tok_merge_slot *s = &m->slots[i];
        if (s->key == key)
            return s;
        if (s->key == TOK_MERGE_EMPTY)
            return NULL;
    }
}
