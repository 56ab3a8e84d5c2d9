#include "tok_str_map.h"

#include <stdlib.h>
#include <string.h>

#include "kv_err.h"

/* Word-at-a-time multiply/xorshift hash: token strings are short, so per-call setup must be
 * cheap, and the final mix spreads the bits for the power-of-two mask. */
uint64_t tok_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    uint64_t w;
    while (n >= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

int tok_str_map_init(tok_str_map *m, size_t expected)
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
        m->slots[i].value = -1;
    m->mask = cap - 1;
    m->n = 0;
    return 0;
}

void tok_str_map_free(tok_str_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = m->n = 0;
}

int tok_str_map_put(tok_str_map *m, const char *key, size_t len, int32_t value)
{
    if (!m->slots || m->n + 1 > (m->mask + 1) / 2 || len > UINT32_MAX)
        return KV_ENOMEM;
    uint64_t h64 = tok_hash_bytes(key, len);
    uint32_t h = (uint32_t)h64;
    for (size_t i = (size_t)h64 & m->mask;; i = (i + 1) & m->mask) {
        tok_str_slot *s = &m->slots[i];
        if (s->value < 0) {
            s->key = key;
            s->len = (uint32_t)len;
            s->hash = h;
            s->value = value;
            m->n++;
            return 0;
        }
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len))
            return 1;
    }
}

int32_t tok_str_map_get(const tok_str_map *m, const char *key, size_t len)
{
    if (!m->slots)
        return -1;
    uint64_t h64 = tok_hash_bytes(key, len);
    uint32_t h = (uint32_t)h64;
    for (size_t i = (size_t)h64 & m->mask;; i = (i + 1) & m->mask) {
        const tok_str_slot *s = &m->slots[i];
        if (s->value < 0)
            return -1;
        if (s->hash == h && s->len == len && !memcmp(s->key, key, len))
            return s->value;
    }
}
