/* BPE merge table: (left id, right id) -> (rank, merged id), open addressing. */
#ifndef KV_TOK_MERGE_MAP_H
#define KV_TOK_MERGE_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t key; /* left << 32 | right; TOK_MERGE_EMPTY when free */
    uint32_t rank;
    int32_t merged;
} tok_merge_slot;

typedef struct {
    tok_merge_slot *slots;
    size_t mask;
    size_t n;
} tok_merge_map;

#define TOK_MERGE_EMPTY UINT64_MAX

int tok_merge_map_init(tok_merge_map *m, size_t expected);
void tok_merge_map_free(tok_merge_map *m);
/* Inserts or replaces (a later duplicate merge wins, as in HF tokenizers). 0 or KV_ENOMEM. */
int tok_merge_map_put(tok_merge_map *m, int32_t left, int32_t right, uint32_t rank, int32_t merged);
/* Returns the slot for the pair, or NULL. */
const tok_merge_slot *tok_merge_map_get(const tok_merge_map *m, int32_t left, int32_t right);

#endif
