/* kv-bench-prefix: what the prefix cache's bookkeeping costs per request, against which a
 * request's TTFT is measured: hashing a prompt's block chain (XXH3-128), a worker's lookup +
 * reserve + index + release in a pool with the cache on, and the router's index update and
 * per-worker hit count. Prints microseconds per operation for prompts of 1k and 8k tokens.
 * usage: kv-bench-prefix [--iters N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_pool.h"
#include "kv_time.h"
#include "router_prefix.h"

static double per_op_us(double t0, int iters) { return (kv_now_s() - t0) * 1e6 / iters; }

int main(int argc, char **argv)
{
    int iters = 2000;
    if (argc == 3 && !strcmp(argv[1], "--iters"))
        iters = atoi(argv[2]);
    if (iters <= 0) {
        fprintf(stderr, "usage: kv-bench-prefix [--iters N]\n");
        return 2;
    }
    const int bs = 16;
    printf("%-8s %14s %22s %22s\n", "tokens", "chain us", "pool lookup+store us", "router apply+hits us");
    for (int n = 1024; n <= 8192; n *= 8) {
        int32_t *tok = malloc((size_t)n * sizeof *tok), nb = n / bs;
        kv_block_hash *h = malloc((size_t)nb * sizeof *h);
        int32_t *ids = malloc((size_t)nb * sizeof *ids);
        if (!tok || !h || !ids)
            return 1;
        for (int i = 0; i < n; i++)
            tok[i] = (i * 7919) % 49152;
        kv_block_hash root = kv_prefix_root("63ea96a0", "f32/30x3x64/b16/368640");
        double t0 = kv_now_s();
        for (int k = 0; k < iters; k++)
            kv_prefix_chain(root, tok, n, bs, h, nb);
        double chain_us = per_op_us(t0, iters);

        kv_pool p;
        kv_err err;
        kv_pool_shape s = {1, 1, 2, bs}; /* bookkeeping only: the data size does not matter */
        if (kv_pool_init(&p, &s, 4 * nb, &err) || kv_pool_prefix_enable(&p, &err))
            return 1;
        t0 = kv_now_s();
        for (int k = 0; k < iters; k++) {
            int32_t hit = kv_pool_prefix_lookup(&p, h, nb - 1, ids, n);
            if (kv_pool_reserve(&p, nb - hit, ids + hit, &err))
                return 1;
            kv_pool_prefix_insert(&p, ids, h, nb);
            kv_pool_release(&p, ids, nb);
        }
        double pool_us = per_op_us(t0, iters);
        kv_pool_destroy(&p);

        router_prefix x;
        uint32_t hits[ROUTER_PREFIX_SLOTS];
        if (router_prefix_init(&x))
            return 1;
        int slot = router_prefix_slot_take(&x);
        t0 = kv_now_s();
        for (int k = 0; k < iters; k++) {
            router_prefix_apply(&x, slot, 0, h, (size_t)nb, NULL, 0);
            router_prefix_hits(&x, h, (uint32_t)nb, hits);
        }
        double router_us = per_op_us(t0, iters);
        router_prefix_free(&x);
        printf("%-8d %14.2f %22.2f %22.2f\n", n, chain_us, pool_us, router_us);
        free(tok), free(h), free(ids);
    }
    return 0;
}
