/* kvctl bench's prompts: random ids (no tokenizer needed), a shared prefix, and the
 * growing history of a conversation. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const char *const workload_names[] = {"random", "shared-prefix", "multi-turn"};

const char *bench_workload_name(bench_workload w)
{
    return (unsigned)w < sizeof workload_names / sizeof *workload_names ? workload_names[w] : "?";
}

int bench_workload_parse(const char *name, bench_workload *out)
{
    for (size_t i = 0; i < sizeof workload_names / sizeof *workload_names; i++)
        if (!strcmp(name, workload_names[i])) {
            *out = (bench_workload)i;
            return 0;
        }
    return -1;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void bench_random_ids(uint64_t seed, uint64_t stream, long vocab, int32_t *ids, long n)
{
    /* The seeding of the first kvctl bench: its random prompts stay what they were. */
    uint64_t s = seed * 0x100000001B3ull + stream * 0x9E3779B97F4A7C15ull + 1;
    for (long k = 0; k < n; k++)
        ids[k] = (int32_t)(3 + splitmix64(&s) % (uint64_t)(vocab - 3));
}

long bench_max_prompt(const bench_cfg *b)
{
    if (b->workload != BENCH_MULTI_TURN)
        return b->prefix_len + b->prompt_len;
    return b->prefix_len + b->turns * b->prompt_len + (b->turns - 1) * b->max_tokens;
}

int bench_conv_begin(bench_conv *cv, const bench_cfg *b)
{
    memset(cv, 0, sizeof *cv);
    cv->cap = bench_max_prompt(b);
    cv->ids = malloc((size_t)cv->cap * sizeof *cv->ids);
    if (!cv->ids)
        return -1;
    bench_random_ids(b->seed, BENCH_PREFIX_STREAM, b->vocab, cv->ids, b->prefix_len);
    cv->len = b->prefix_len;
    return 0;
}

void bench_conv_add_message(bench_conv *cv, const bench_cfg *b, long index)
{
    long n = b->prompt_len < cv->cap - cv->len ? b->prompt_len : cv->cap - cv->len;
    bench_random_ids(b->seed, (uint64_t)index, b->vocab, cv->ids + cv->len, n);
    cv->len += n;
}

void bench_conv_add_reply(bench_conv *cv, const int32_t *tokens, size_t n)
{
    size_t room = (size_t)(cv->cap - cv->len);
    if (n > room)
        n = room;
    memcpy(cv->ids + cv->len, tokens, n * sizeof *tokens);
    cv->len += (long)n;
}

void bench_conv_end(bench_conv *cv)
{
    free(cv->ids);
    memset(cv, 0, sizeof *cv);
}
