/* BPE over one pre-token, as HF tokenizers' Word::merge_all: symbols in a linked list, a
 * min-heap of candidate merges keyed by (rank, position); a popped candidate is applied only
 * if the pair it was made for is still there. O(n log n), which matters for SentencePiece
 * style tokenizers where a whole prompt is one pre-token. */
#include <stdlib.h>

#include "tok_internal.h"
#include "tok_utf8.h"

void tok_bpe_scratch_free(tok_bpe_scratch *sc)
{
    free(sc->sym);
    free(sc->prev);
    free(sc->next);
    free(sc->heap);
    *sc = (tok_bpe_scratch){0};
}

static int reserve_symbols(tok_bpe_scratch *sc, size_t n)
{
    if (n <= sc->cap)
        return 0;
    size_t cap = sc->cap, c1 = cap, c2 = cap;
    if (tok_grow((void **)&sc->sym, &cap, n, sizeof *sc->sym) ||
        tok_grow((void **)&sc->prev, &c1, n, sizeof *sc->prev) ||
        tok_grow((void **)&sc->next, &c2, n, sizeof *sc->next))
        return KV_ENOMEM;
    /* The three grew independently; the usable capacity is what all of them have. */
    sc->cap = cap < c1 ? (cap < c2 ? cap : c2) : (c1 < c2 ? c1 : c2);
    return 0;
}

static int before(const tok_bpe_merge *a, const tok_bpe_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static int heap_push(tok_bpe_scratch *sc, uint32_t rank, uint32_t pos, int32_t merged)
{
    if (tok_grow((void **)&sc->heap, &sc->heap_cap, sc->heap_len + 1, sizeof *sc->heap))
        return KV_ENOMEM;
    tok_bpe_merge m = {rank, pos, merged};
    size_t i = sc->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&m, &sc->heap[parent]))
            break;
        sc->heap[i] = sc->heap[parent];
        i = parent;
    }
    sc->heap[i] = m;
    return 0;
}

static tok_bpe_merge heap_pop(tok_bpe_scratch *sc)
{
    tok_bpe_merge top = sc->heap[0];
    tok_bpe_merge last = sc->heap[--sc->heap_len];
    size_t n = sc->heap_len, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&sc->heap[c + 1], &sc->heap[c]))
            c++;
        if (!before(&sc->heap[c], &last))
            break;
        sc->heap[i] = sc->heap[c];
        i = c;
    }
    if (n)
        sc->heap[i] = last;
    return top;
}

/* Candidate merge of the symbol at pos with its right neighbour, if the pair has one. */
static int push_pair(const kv_tokenizer *tok, tok_bpe_scratch *sc, int32_t pos)
{
    if (pos < 0 || sc->next[pos] < 0)
        return 0;
    const tok_merge_slot *m = tok_merge_map_get(&tok->merges, sc->sym[pos], sc->sym[sc->next[pos]]);
    return m ? heap_push(sc, m->rank, (uint32_t)pos, m->merged) : 0;
}

/* Initial symbols: one per character; a character missing from the vocab becomes its
 * <0xAB> byte tokens (byte_fallback), else the unknown token (runs fused when fuse_unk),
 * else nothing. */
static size_t initial_symbols(const kv_tokenizer *tok, tok_bpe_scratch *sc, const char *w, size_t n)
{
    size_t ns = 0;
    int unk_pending = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = kv_utf8_next(w + i, n - i, &cp);
        int32_t id = tok_str_map_get(&tok->vocab, w + i, len);
        if (id >= 0) {
            if (unk_pending)
                sc->sym[ns++] = tok->unk_id;
            unk_pending = 0;
            sc->sym[ns++] = id;
        } else {
            int bytes_ok = tok->byte_fallback;
            for (size_t k = 0; k < len && bytes_ok; k++)
                bytes_ok = tok->byte_ids[(unsigned char)w[i + k]] >= 0;
            if (bytes_ok) {
                if (unk_pending)
                    sc->sym[ns++] = tok->unk_id;
                unk_pending = 0;
                for (size_t k = 0; k < len; k++)
                    sc->sym[ns++] = tok->byte_ids[(unsigned char)w[i + k]];
            } else if (tok->unk_id >= 0) {
                if (unk_pending && !tok->fuse_unk)
                    sc->sym[ns++] = tok->unk_id;
                unk_pending = 1;
            }
        }
        i += len;
    }
    if (unk_pending)
        sc->sym[ns++] = tok->unk_id;
    return ns;
}

int tok_bpe_word(const kv_tokenizer *tok, tok_bpe_scratch *sc, const char *w, size_t n, tok_ids *out)
{
    if (n == 0)
        return 0;
    if (tok->ignore_merges) {
        int32_t id = tok_str_map_get(&tok->vocab, w, n);
        if (id >= 0)
            return tok_ids_push(out, id);
    }
    if (n > INT32_MAX - 1)
        return KV_ENOMEM;
    /* Every symbol covers at least one byte, so n bounds their number. */
    if (reserve_symbols(sc, n))
        return KV_ENOMEM;
    size_t ns = initial_symbols(tok, sc, w, n);
    for (size_t i = 0; i < ns; i++) {
        sc->prev[i] = (int32_t)i - 1;
        sc->next[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    sc->heap_len = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        if (push_pair(tok, sc, (int32_t)i))
            return KV_ENOMEM;
    while (sc->heap_len) {
        tok_bpe_merge top = heap_pop(sc);
        int32_t pos = (int32_t)top.pos, right = sc->next[pos];
        if (sc->sym[pos] < 0 || right < 0)
            continue;
        const tok_merge_slot *m = tok_merge_map_get(&tok->merges, sc->sym[pos], sc->sym[right]);
        if (!m || m->merged != top.merged)
            continue; /* stale: one side was merged into something else since */
        sc->sym[pos] = top.merged;
        sc->sym[right] = -1;
        sc->next[pos] = sc->next[right];
        if (sc->next[right] >= 0)
            sc->prev[sc->next[right]] = pos;
        if (push_pair(tok, sc, sc->prev[pos]) || push_pair(tok, sc, pos))
            return KV_ENOMEM;
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = sc->next[i])
        if (tok_ids_push(out, sc->sym[i]))
            return KV_ENOMEM;
    return 0;
}
