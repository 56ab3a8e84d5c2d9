/* The prefix cache (kv_prefix.h) in a pool: block hashes against an independent XXH3-128
 * (tests/data/prefix/chain_golden.h, Python xxhash), lookups that retain, parking and LRU
 * eviction (a chain's tail first, a held block never), all-or-nothing reservations that
 * evict, counted double releases, router events, and the three-state invariants after every
 * step of a long random sequence of operations. */
#include <stdlib.h>
#include <string.h>

#include "kv_pool.h"
#include "kv_test.h"

#include "data/prefix/chain_golden.h"

static void check_pool(const kv_pool *p)
{
    kv_err err;
    int rc = kv_pool_check(p, &err);
    if (rc)
        fprintf(stderr, "  pool check: %s\n", err.msg);
    CHECK(rc == 0);
}

static void test_golden_chains(void)
{
    for (size_t c = 0; c < sizeof CHAIN_GOLDEN / sizeof CHAIN_GOLDEN[0]; c++) {
        const chain_golden *g = &CHAIN_GOLDEN[c];
        kv_block_hash root = kv_prefix_root(g->fp, g->layout), out[4];
        CHECK(root.lo == g->root_lo && root.hi == g->root_hi);
        CHECK_EQ_INT(kv_prefix_chain(root, g->tokens, g->n_tokens, g->bs, out, 4), g->n_blocks);
        for (int i = 0; i < g->n_blocks; i++)
            CHECK(out[i].lo == g->lo[i] && out[i].hi == g->hi[i]);
        uint8_t bytes[16];
        kv_block_hash_to_bytes(out[0], bytes);
        CHECK(kv_block_hash_eq(kv_block_hash_from_bytes(bytes), out[0]));
    }
    /* A block's hash depends on its whole history and on the model/layout. */
    int32_t a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {9, 2, 3, 4, 5, 6, 7, 8};
    kv_block_hash r = kv_prefix_root("0a1b2c3d", "f32/2x2x4/b4"), ha[2], hb[2], hc[2];
    kv_prefix_chain(r, a, 8, 4, ha, 2);
    kv_prefix_chain(r, b, 8, 4, hb, 2);
    kv_prefix_chain(kv_prefix_root("0a1b2c3d", "int8/2x2x4/b4"), a, 8, 4, hc, 2);
    CHECK(!kv_block_hash_eq(ha[1], hb[1]) && !kv_block_hash_eq(ha[0], hc[0]));
    CHECK_EQ_INT(kv_prefix_chain(r, a, 3, 4, ha, 2), 0); /* no full block */
}

/* A pool of 8 blocks of 4 tokens with the cache on. */
static void pool8(kv_pool *p)
{
    kv_err err;
    kv_pool_shape s = {1, 1, 2, 4};
    CHECK(kv_pool_init(p, &s, 8, &err) == 0);
    CHECK(kv_pool_prefix_enable(p, &err) == 0);
}

static void hashes(kv_block_hash *h, int n, int seed)
{
    int32_t tok[64];
    for (int i = 0; i < 4 * n; i++)
        tok[i] = i < 8 ? i : seed * 100 + i; /* the first two blocks are shared by every seed */
    kv_prefix_chain(kv_prefix_root("f", "l"), tok, 4 * n, 4, h, n);
}

static void test_cache_states(void)
{
    kv_pool p;
    kv_err err;
    pool8(&p);
    kv_block_hash h[4], h2[4];
    hashes(h, 4, 1);
    hashes(h2, 4, 2);
    int32_t a[4], got[4];
    CHECK(kv_pool_reserve(&p, 4, a, &err) == 0);
    CHECK_EQ_INT(kv_pool_prefix_insert(&p, a, h, 4), 4);
    CHECK_EQ_INT(kv_pool_prefix_insert(&p, a, h, 4), 0); /* already indexed */
    CHECK_EQ_INT(kv_pool_prefix_lookup(&p, h, 4, got, 16), 4); /* held and indexed: shared */
    CHECK(!memcmp(got, a, sizeof a) && p.refcount[a[0]] == 2);
    kv_pool_release(&p, got, 4);
    kv_pool_release(&p, a, 4);
    check_pool(&p);
    CHECK_EQ_INT(kv_pool_n_free(&p), 4);
    CHECK_EQ_INT(kv_pool_n_available(&p), 8);
    CHECK_EQ_INT(kv_pool_n_cached(&p), 4);
    /* Parked last block first: the chain's tail is the oldest. */
    CHECK_EQ_INT(kv_prefix_oldest(p.prefix), a[3]);
    /* A request sharing the first two blocks finds them, and only them. */
    CHECK_EQ_INT(kv_pool_prefix_lookup(&p, h2, 4, got, 16), 2);
    CHECK(got[0] == a[0] && got[1] == a[1]);
    CHECK_EQ_INT(p.prefix->hit_tokens, 16 + 8);
    check_pool(&p);
    /* 6 more blocks: 4 free + 2 evicted, the tail (a[3], then a[2]) first, never a held one. */
    int32_t b[6];
    CHECK(kv_pool_reserve(&p, 6, b, &err) == 0);
    CHECK(kv_prefix_find(p.prefix, h[3]) < 0 && kv_prefix_find(p.prefix, h[2]) < 0);
    CHECK(kv_prefix_find(p.prefix, h[0]) == a[0] && kv_prefix_find(p.prefix, h[1]) == a[1]);
    check_pool(&p);
    /* Full: all or nothing, and held cached blocks are not evictable. */
    int32_t c[1];
    CHECK(kv_pool_reserve(&p, 1, c, &err) == KV_EFULL);
    CHECK_EQ_INT(kv_pool_n_available(&p), 0);
    /* Double release is counted, changes nothing. */
    kv_pool_release(&p, got, 2);
    kv_pool_release(&p, got, 2);
    CHECK_EQ_INT(p.double_releases, 2);
    check_pool(&p);
    /* Events: 4 stored, then 2 evicted; a reset replays the indexed set as stored. */
    kv_prefix_event ev[16];
    uint32_t n = kv_prefix_events_peek(p.prefix, ev, 16);
    CHECK_EQ_INT(n, 6);
    CHECK(ev[0].stored && kv_block_hash_eq(ev[0].hash, h[0]) && !ev[4].stored && kv_block_hash_eq(ev[4].hash, h[3]));
    kv_prefix_events_pop(p.prefix, n);
    CHECK_EQ_INT(kv_prefix_events_peek(p.prefix, ev, 16), 0);
    kv_prefix_reset_events(p.prefix);
    CHECK_EQ_INT(kv_prefix_take_reset(p.prefix), 1);
    CHECK_EQ_INT(kv_prefix_take_reset(p.prefix), 0);
    CHECK_EQ_INT(kv_prefix_events_peek(p.prefix, ev, 16), 2);
    kv_pool_release(&p, b, 6);
    kv_pool_prefix_flush(&p);
    CHECK_EQ_INT(kv_pool_n_free(&p), 8);
    CHECK_EQ_INT(kv_pool_n_cached(&p), 0);
    check_pool(&p);
    kv_pool_destroy(&p);
}

/* Random reserve / lookup / insert / release against a model of who holds what. */
static void test_random_ops(void)
{
    kv_pool p;
    kv_err err;
    kv_pool_shape s = {1, 1, 2, 4};
    CHECK(kv_pool_init(&p, &s, 32, &err) == 0);
    CHECK(kv_pool_prefix_enable(&p, &err) == 0);
    enum { SEQS = 6, MAXB = 8 };
    int32_t held[SEQS][MAXB];
    int n_held[SEQS] = {0};
    kv_block_hash chain[SEQS][MAXB];
    uint64_t x = 12345;
    int bad = 0;
    for (int step = 0; step < 20000 && !bad; step++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int sq = (int)((x >> 33) % SEQS), op = (int)((x >> 40) % 4), len = 1 + (int)((x >> 45) % MAXB);
        if (op == 0 && n_held[sq] == 0) {
            /* A "request": a prompt from one of 3 families, look up, then reserve the rest. */
            int fam = (int)((x >> 50) % 3), variant = (int)((x >> 55) % 5);
            int32_t tok[4 * MAXB];
            for (int i = 0; i < 4 * len; i++)
                tok[i] = fam * 1000 + (i < 8 ? 0 : variant * 100) + i; /* shared heads, varied tails */
            kv_prefix_chain(kv_prefix_root("f", "l"), tok, 4 * len, 4, chain[sq], len);
            int32_t hit = kv_pool_prefix_lookup(&p, chain[sq], len, held[sq], 4 * len);
            if (kv_pool_reserve(&p, len - hit, held[sq] + hit, &err) == 0) {
                n_held[sq] = len;
            } else {
                kv_pool_release(&p, held[sq], hit);
            }
        } else if (op == 1 && n_held[sq]) {
            kv_pool_prefix_insert(&p, held[sq], chain[sq], n_held[sq]);
        } else if (op >= 2 && n_held[sq]) {
            kv_pool_release(&p, held[sq], n_held[sq]);
            n_held[sq] = 0;
        }
        bad = kv_pool_check(&p, &err) != 0;
        if (bad)
            fprintf(stderr, "  step %d: %s\n", step, err.msg);
        int32_t refs = 0;
        for (int q = 0; q < SEQS; q++)
            refs += n_held[q];
        int32_t sum = 0;
        for (int32_t b = 0; b < p.n_blocks; b++)
            sum += p.refcount[b];
        if (sum != refs) {
            fprintf(stderr, "  step %d: %d references in the pool, %d held\n", step, sum, refs);
            bad = 1;
        }
    }
    CHECK(!bad);
    CHECK_EQ_INT(p.double_releases, 0);
    CHECK(p.prefix->hit_tokens > 0 && p.prefix->evictions > 0); /* the sequence exercised both */
    kv_pool_destroy(&p);
}

int main(void)
{
    test_golden_chains();
    test_cache_states();
    test_random_ops();
    return kv_test_result();
}
