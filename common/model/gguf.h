/* Read-only, memory-mapped GGUF files (versions 2 and 3, little-endian), as llama.cpp writes
 * them: a header, typed metadata (key -> value), tensor descriptions, then the aligned data.
 *
 * kv_gguf_open validates the whole file before it returns: every count, string length and
 * array length is bounded by the bytes left in the file, keys and tensor names are unique,
 * a tensor has 1..4 dims whose element count neither overflows nor splits a block, its type
 * is a GGML type of known size, and its data lies aligned inside the file without overlapping
 * another's. So every pointer and size handed out afterwards is inside the mapping. Errors
 * name the file, the key or tensor at fault and the byte offset where it was found.
 *
 * Strings in GGUF are length-prefixed, not NUL-terminated: values come back as kv_gguf_str
 * pointing into the mapping. Keys and tensor names are copied NUL-terminated. */
#ifndef KV_GGUF_H
#define KV_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "kv_type.h"

/* GGUF metadata value types (the file's numbering). */
enum kv_gguf_vtype {
    KV_GGUF_U8 = 0, KV_GGUF_I8, KV_GGUF_U16, KV_GGUF_I16, KV_GGUF_U32, KV_GGUF_I32, KV_GGUF_F32,
    KV_GGUF_BOOL, KV_GGUF_STRING, KV_GGUF_ARRAY, KV_GGUF_U64, KV_GGUF_I64, KV_GGUF_F64,
    KV_GGUF_VTYPE_COUNT
};

#define KV_GGUF_MAX_DIMS 4

typedef struct kv_gguf_str {
    const char *s; /* inside the mapping; NOT NUL-terminated */
    size_t len;
} kv_gguf_str;

typedef struct kv_gguf_tensor {
    const char *name;
    uint32_t ggml_type;      /* the file's type id */
    const char *type_name;   /* GGML's name: "Q4_1", "F32", ... */
    int type;                /* a kv_type, or -1 for a GGML type kvserve cannot dequantize */
    int n_dims;              /* 1..KV_GGUF_MAX_DIMS */
    uint64_t ne[KV_GGUF_MAX_DIMS]; /* GGML order: ne[0] is the row length; unused dims are 1 */
    uint64_t n_elems;
    const void *data;        /* inside the mapping, aligned to the file's alignment */
    uint64_t nbytes;
    uint64_t file_offset;    /* of data, for messages */
} kv_gguf_tensor;

typedef struct kv_gguf kv_gguf;

/* Maps and validates path. */
int kv_gguf_open(const char *path, kv_gguf **out, kv_err *err);
/* The same on bytes in memory (they must outlive the kv_gguf; name appears in messages). */
int kv_gguf_open_memory(const void *data, size_t size, const char *name, kv_gguf **out, kv_err *err);
void kv_gguf_close(kv_gguf *g);

const char *kv_gguf_path(const kv_gguf *g);
uint32_t kv_gguf_version(const kv_gguf *g);
uint64_t kv_gguf_file_size(const kv_gguf *g);
uint32_t kv_gguf_alignment(const kv_gguf *g);

/* ---- metadata ---- */
size_t kv_gguf_kv_count(const kv_gguf *g);
const char *kv_gguf_kv_key(const kv_gguf *g, size_t i);
/* Index of key, or -1. */
long kv_gguf_find_key(const kv_gguf *g, const char *key);
/* The value type of key (KV_GGUF_ARRAY for arrays), or -1 when absent. */
int kv_gguf_key_type(const kv_gguf *g, const char *key);
/* For an array: its element type and count (0 and -1 when key is absent or not an array). */
int kv_gguf_array_type(const kv_gguf *g, const char *key, uint64_t *count);

/* Typed getters. Each returns KV_OK, KV_ENOTFOUND when the key is absent (message names it),
 * or KV_EFORMAT when the value has another type or does not fit (message names key, type and
 * byte offset). Integer getters accept any integer type whose value fits the result. */
int kv_gguf_get_str(const kv_gguf *g, const char *key, kv_gguf_str *out, kv_err *err);
int kv_gguf_get_u32(const kv_gguf *g, const char *key, uint32_t *out, kv_err *err);
int kv_gguf_get_i32(const kv_gguf *g, const char *key, int32_t *out, kv_err *err);
int kv_gguf_get_u64(const kv_gguf *g, const char *key, uint64_t *out, kv_err *err);
/* f32 or f64 (rounded to float). */
int kv_gguf_get_f32(const kv_gguf *g, const char *key, float *out, kv_err *err);
int kv_gguf_get_bool(const kv_gguf *g, const char *key, int *out, kv_err *err);
/* Arrays, copied into malloc'd memory the caller frees (*out is NULL for an empty array).
 * Strings point into the mapping. Integers: any integer element type; floats: f32 or f64. */
int kv_gguf_get_str_array(const kv_gguf *g, const char *key, kv_gguf_str **out, size_t *n, kv_err *err);
int kv_gguf_get_int_array(const kv_gguf *g, const char *key, int64_t **out, size_t *n, kv_err *err);
int kv_gguf_get_float_array(const kv_gguf *g, const char *key, float **out, size_t *n, kv_err *err);

/* ---- tensors (in file order) ---- */
size_t kv_gguf_tensor_count(const kv_gguf *g);
const kv_gguf_tensor *kv_gguf_tensor_at(const kv_gguf *g, size_t i);
const kv_gguf_tensor *kv_gguf_find_tensor(const kv_gguf *g, const char *name);

/* GGML's name of a type id ("Q2_K"), or NULL when the id is not one GGML defines. */
const char *kv_gguf_ggml_type_name(uint32_t ggml_type);

#endif
