/* A weight matrix as the engines read it: W[rows][cols] row-major (an HF Linear [out, in]),
 * each row kv_type_bytes(type, cols) = row_bytes bytes, row r at data + r * row_bytes, the
 * bytes exactly as stored (f32, f16, bf16, or ggml's blocks; any alignment but f32's 4). The
 * data lives in the model's file mappings or buffers and outlives nothing but the model. */
#ifndef KV_WEIGHT_H
#define KV_WEIGHT_H

#include <stddef.h>

#include "kv_type.h"

typedef struct kv_weight {
    const void *data;
    kv_type type;
    int rows, cols;
    size_t row_bytes;
} kv_weight;

static inline const void *kv_weight_row(const kv_weight *w, int r)
{
    return (const unsigned char *)w->data + (size_t)r * w->row_bytes;
}

static inline size_t kv_weight_bytes(const kv_weight *w) { return (size_t)w->rows * w->row_bytes; }

#endif
