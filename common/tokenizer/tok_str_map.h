/* Open-addressing hash map from byte strings to non-negative int32 ids. Keys are not copied:
 * they must outlive the map (the tokenizer keeps them in its string pool). */
#ifndef KV_TOK_STR_MAP_H
#define KV_TOK_STR_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *key;
    uint32_t len;
    uint32_t hash;
    int32_t value; /* -1 marks an empty slot */
} tok_str_slot;

typedef struct {
    tok_str_slot *slots;
    size_t mask; /* capacity - 1 (capacity is a power of two) */
    size_t n;
} tok_str_map;

/* Sizes the map for `expected` keys at load factor <= 1/2. Returns 0 or KV_ENOMEM. */
int tok_str_map_init(tok_str_map *m, size_t expected);
void tok_str_map_free(tok_str_map *m);
/* Inserts key -> value (value >= 0). Returns 0, 1 when the key is already present (the
 * existing value is kept), or KV_ENOMEM when the map is full. */
int tok_str_map_put(tok_str_map *m, const char *key, size_t len, int32_t value);
/* Value of key, or -1. */
int32_t tok_str_map_get(const tok_str_map *m, const char *key, size_t len);

uint64_t tok_hash_bytes(const char *s, size_t n);

#endif
