/* kc_block_hash: the KV transfer checksum of the GPU transports (see cpu_kernels.h). */
#include <string.h>

#include "cpu_kernels.h"

static uint32_t fmix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

uint32_t kc_block_hash(const void *data, size_t bytes)
{
    const unsigned char *p = data;
    size_t n_words = (bytes + 3) / 4;
    uint32_t sum = 0;
    for (size_t i = 0; i < n_words; i++) {
        uint32_t w = 0;
        size_t take = bytes - i * 4 < 4 ? bytes - i * 4 : 4;
        memcpy(&w, p + i * 4, take); /* little-endian hosts, as every CUDA host is */
        sum += fmix32(w ^ ((uint32_t)i * 0x9E3779B9u));
    }
    return fmix32(sum + (uint32_t)n_words);
}
