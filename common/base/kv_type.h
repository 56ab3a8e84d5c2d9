/* The one list of element types kvserve knows (weights today; KV dtypes and kernels join it
 * later) and, per type, a traits table: block geometry and the row dequantizer. Kernel
 * families add their own entries (vec_dot, gemv) to the table rather than switching on the
 * type, as ggml's type traits do.
 *
 * A type stores its elements in blocks: block_elems elements in block_bytes bytes (1 and 4
 * for f32). The quantized layouts are ggml's, byte for byte (little-endian, fp16 scales), so a
 * GGUF tensor's bytes are used as they are. */
#ifndef KV_TYPE_H
#define KV_TYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum kv_type {
    KV_TYPE_F32 = 0,
    KV_TYPE_F16,
    KV_TYPE_BF16,
    KV_TYPE_Q8_0,
    KV_TYPE_Q4_0,
    KV_TYPE_Q4_1,
    KV_TYPE_Q5_0,
    KV_TYPE_Q5_1,
    KV_TYPE_Q4_K,
    KV_TYPE_Q5_K,
    KV_TYPE_Q6_K,
    KV_TYPE_COUNT, /* the stored types above: what a file holds or a conversion makes */
    /* Kernel layouts, never in a file: a stored type's rows repacked at load for the CPU's
     * SIMD kernels (kc_repack_type, kernels/cpu/wkernels.h). Same bytes per row as the
     * stored type, but rows interleaved in groups: no row stands alone (to_f32 NULL). */
    KV_TYPE_Q4_0_X8 = KV_TYPE_COUNT, /* q4_0, 8 rows interleaved */
    KV_TYPE_Q4_1_X8,                 /* q4_1, 8 rows interleaved */
    KV_TYPE_LAYOUT_END
} kv_type;

/* Dequantizes n_elems elements (a multiple of block_elems) from blocks (any alignment) into
 * out. Every finite encoding gives the value ggml's reference dequantizer gives, bit for bit. */
typedef void (*kv_type_to_f32_fn)(const void *blocks, float *out, size_t n_elems);

struct kv_type_traits {
    const char *name;        /* lowercase: "f32", "q4_k", ... */
    size_t block_elems;
    size_t block_bytes;
    kv_type_to_f32_fn to_f32; /* NULL for a kernel layout */
};

/* The traits of t, or NULL when t is not a kv_type. */
const struct kv_type_traits *kv_type_traits(kv_type t);
/* Lowercase name of t ("?" when t is not a kv_type). */
const char *kv_type_name(kv_type t);
/* Bytes of n_elems elements of t: 0 when t is unknown, n_elems is not a whole number of blocks,
 * or the size overflows. */
uint64_t kv_type_bytes(kv_type t, uint64_t n_elems);

#endif
