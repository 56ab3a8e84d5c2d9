/* Read-only, memory-mapped safetensors files. Every header field is validated
 * against the file size before any tensor pointer is handed out. */
#ifndef KV_SAFETENSORS_H
#define KV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"

typedef enum { KV_DTYPE_F32 = 0, KV_DTYPE_F16, KV_DTYPE_BF16 } kv_dtype;

#define KV_ST_MAX_DIMS 4

typedef struct kv_st_tensor {
    const char *name;
    kv_dtype dtype;
    int ndim;
    int64_t shape[KV_ST_MAX_DIMS];
    const void *data; /* inside the mapping; not necessarily aligned */
    size_t nbytes;
} kv_st_tensor;

typedef struct kv_st_file kv_st_file;

int kv_st_open(const char *path, kv_st_file **out, kv_err *err);
void kv_st_close(kv_st_file *f);
const kv_st_tensor *kv_st_find(const kv_st_file *f, const char *name);
size_t kv_st_count(const kv_st_file *f);
const kv_st_tensor *kv_st_at(const kv_st_file *f, size_t i);
const char *kv_st_path(const kv_st_file *f);
size_t kv_dtype_size(kv_dtype dt);
const char *kv_dtype_name(kv_dtype dt);

#endif
