#include "router_map.h"

#include <stdlib.h>
#include <string.h>

#include "kv_err.h"

enum { SLOT_EMPTY = 0, SLOT_LIVE = 1, SLOT_TOMB = 2 };

static uint64_t hash_bytes(const void *key, size_t len)
{
    /* FNV-1a 64, then a final avalanche so linear probing sees well-mixed low bits. */
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

void router_map_init(router_map *m) { memset(m, 0, sizeof *m); }

void router_map_free(router_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].state == SLOT_LIVE)
            free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static int is_live(const router_map_slot *s) { return s->state == SLOT_LIVE; }

static router_map_slot *find(const router_map *m, const void *key, size_t len, uint64_t h)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask, probes = 0; probes < m->cap; i = (i + 1) & mask, probes++) {
        router_map_slot *s = &m->slots[i];
        if (s->state == SLOT_EMPTY)
            return NULL;
        if (s->state == SLOT_LIVE && s->hash == h && s->len == len && !memcmp(s->key, key, len))
            return s;
    }
    return NULL;
}

static int grow(router_map *m)
{
    size_t cap = m->cap ? m->cap : 16;
    while (m->n * 2 + 2 > cap)
        cap *= 2; /* after a rehash, at most ~50% full */
    router_map_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return KV_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        router_map_slot *s = &m->slots[i];
        if (!is_live(s))
            continue;
        size_t j = (size_t)s->hash & (cap - 1);
        while (slots[j].state != SLOT_EMPTY)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->n;
    return KV_OK;
}

void *router_map_get(const router_map *m, const void *key, size_t len)
{
    router_map_slot *s = find(m, key, len, hash_bytes(key, len));
    return s ? s->val : NULL;
}

int router_map_put(router_map *m, const void *key, size_t len, void *val)
{
    uint64_t h = hash_bytes(key, len);
    router_map_slot *s = find(m, key, len, h);
    if (s) {
        s->val = val;
        return KV_OK;
    }
    if ((m->used + 1) * 10 > m->cap * 7 && grow(m))
        return KV_ENOMEM;
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return KV_ENOMEM;
    if (len)
        memcpy(copy, key, len);
    size_t mask = m->cap - 1, i = (size_t)h & mask;
    while (is_live(&m->slots[i]))
        i = (i + 1) & mask;
    if (m->slots[i].state == SLOT_EMPTY)
        m->used++; /* reusing a tombstone does not add to `used` */
    m->slots[i] = (router_map_slot){.key = copy, .len = len, .state = SLOT_LIVE, .hash = h, .val = val};
    m->n++;
    return KV_OK;
}

void *router_map_del(router_map *m, const void *key, size_t len)
{
    router_map_slot *s = find(m, key, len, hash_bytes(key, len));
    if (!s)
        return NULL;
    void *val = s->val;
    free(s->key);
    s->key = NULL;
    s->state = SLOT_TOMB;
    s->val = NULL;
    m->n--;
    return val;
}

int router_map_next(const router_map *m, size_t *pos, const void **key, size_t *len, void **val)
{
    while (*pos < m->cap) {
        router_map_slot *s = &m->slots[(*pos)++];
        if (is_live(s)) {
            if (key) *key = s->key;
            if (len) *len = s->len;
            if (val) *val = s->val;
            return 1;
        }
    }
    return 0;
}
