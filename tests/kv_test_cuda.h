/* What the CUDA kernel tests share: a CUDA runtime call that must succeed (else the test
 * exits naming the call), and the xorshift step their deterministic random data come from. */
#ifndef KV_TEST_CUDA_H
#define KV_TEST_CUDA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#define CK(call)                                                                                          \
    do {                                                                                                  \
        cudaError_t e_ = (call);                                                                          \
        if (e_ != cudaSuccess) {                                                                          \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                                      \
        }                                                                                                 \
    } while (0)

/* Marsaglia's xorshift64: advances *s and returns the new state. */
static inline uint64_t kv_test_xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#endif
