/* Block identity for the prefix cache (kv_prefix.h): XXH3-128 chains. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "kv_prefix.h"

kv_block_hash kv_prefix_root(const char *model_fingerprint, const char *layout_desc)
{
    XXH3_state_t *s = XXH3_createState();
    kv_block_hash h = {0, 0};
    if (!s)
        return h; /* out of memory: a constant root still gives correct (model-local) chains */
    XXH3_128bits_reset(s);
    XXH3_128bits_update(s, "kvserve-prefix-v1", 17);
    /* Lengths first, so "ab"+"c" and "a"+"bc" differ. */
    uint32_t n1 = (uint32_t)strlen(model_fingerprint), n2 = (uint32_t)strlen(layout_desc);
    XXH3_128bits_update(s, &n1, sizeof n1);
    XXH3_128bits_update(s, model_fingerprint, n1);
    XXH3_128bits_update(s, &n2, sizeof n2);
    XXH3_128bits_update(s, layout_desc, n2);
    XXH128_hash_t r = XXH3_128bits_digest(s);
    XXH3_freeState(s);
    h.lo = r.low64;
    h.hi = r.high64;
    return h;
}

void kv_block_hash_to_bytes(kv_block_hash h, uint8_t out[16])
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(h.lo >> (8 * i));
        out[8 + i] = (uint8_t)(h.hi >> (8 * i));
    }
}

kv_block_hash kv_block_hash_from_bytes(const uint8_t in[16])
{
    kv_block_hash h = {0, 0};
    for (int i = 0; i < 8; i++) {
        h.lo |= (uint64_t)in[i] << (8 * i);
        h.hi |= (uint64_t)in[8 + i] << (8 * i);
    }
    return h;
}

int32_t kv_prefix_chain(kv_block_hash root, const int32_t *tokens, int32_t n_tokens, int block_size,
                        kv_block_hash *out, int32_t max)
{
    if (block_size <= 0 || n_tokens <= 0 || max <= 0)
        return 0;
    int32_t n = n_tokens / block_size;
    if (n > max)
        n = max;
    /* Parent hash (16 bytes, little-endian) then the block's ids as little-endian int32. */
    size_t len = 16 + (size_t)block_size * 4;
    uint8_t stack_buf[16 + 64 * 4], *buf = len <= sizeof stack_buf ? stack_buf : malloc(len);
    if (!buf)
        return 0; /* no hashes: the caller just finds no prefix */
    kv_block_hash parent = root;
    for (int32_t b = 0; b < n; b++) {
        kv_block_hash_to_bytes(parent, buf);
        for (int i = 0; i < block_size; i++) {
            uint32_t t = (uint32_t)tokens[(size_t)b * (size_t)block_size + (size_t)i];
            uint8_t *d = buf + 16 + (size_t)i * 4;
            d[0] = (uint8_t)t, d[1] = (uint8_t)(t >> 8), d[2] = (uint8_t)(t >> 16), d[3] = (uint8_t)(t >> 24);
        }
        XXH128_hash_t r = XXH3_128bits(buf, len);
        parent.lo = r.low64;
        parent.hi = r.high64;
        out[b] = parent;
    }
    if (buf != stack_buf)
        free(buf);
    return n;
}

kv_block_hash kv_prefix_root_of(const char *fingerprint, const char *dtype, uint32_t n_layers, uint32_t n_kv_heads,
                                uint32_t head_dim, uint32_t block_size, uint64_t block_bytes)
{
    char desc[128];
    snprintf(desc, sizeof desc, "%s/%ux%ux%u/b%u/%llu", dtype, n_layers, n_kv_heads, head_dim, block_size,
             (unsigned long long)block_bytes);
    return kv_prefix_root(fingerprint, desc);
}
