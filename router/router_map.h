/* A small open-addressing hash map: byte-string keys (copied) -> void * values.
 * Linear probing with tombstones; grows at 70% load (live + tombstones). */
#ifndef ROUTER_MAP_H
#define ROUTER_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct router_map_slot {
    unsigned char *key; /* owned copy when live */
    size_t len;
    int state;          /* 0 empty, 1 live, 2 deleted (tombstone) */
    uint64_t hash;
    void *val;
} router_map_slot;

typedef struct router_map {
    router_map_slot *slots;
    size_t cap;  /* power of two, or 0 before the first insert */
    size_t n;    /* live entries */
    size_t used; /* live + tombstones */
} router_map;

void router_map_init(router_map *m);
/* Frees the keys and the table, not the values. */
void router_map_free(router_map *m);
void *router_map_get(const router_map *m, const void *key, size_t len);
/* Inserts or replaces. Returns 0, or KV_ENOMEM (the map is unchanged). */
int router_map_put(router_map *m, const void *key, size_t len, void *val);
/* Removes key; returns its value, or NULL when absent. */
void *router_map_del(router_map *m, const void *key, size_t len);
static inline size_t router_map_count(const router_map *m) { return m->n; }
/* Iteration: start with *pos = 0; returns 0 at the end. Do not insert while iterating. */
int router_map_next(const router_map *m, size_t *pos, const void **key, size_t *len, void **val);

#endif
