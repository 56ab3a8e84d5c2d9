/* Streaming safetensors writer: the header is written first from the tensor list, then the
 * tensors' bytes are appended in that order in chunks of any size, so a model never has to be
 * in memory. Data goes to PATH.tmp, renamed to PATH only by a successful close. */
#ifndef KV_SAFETENSORS_WRITE_H
#define KV_SAFETENSORS_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "safetensors.h" /* kv_dtype, KV_ST_MAX_DIMS: shared with the reader */

typedef struct kv_st_tensor_desc {
    const char *name;
    kv_dtype dtype;
    int n_dims;                      /* 0 (scalar) .. KV_ST_MAX_DIMS */
    int64_t shape[KV_ST_MAX_DIMS];
} kv_st_tensor_desc;

typedef struct kv_st_writer kv_st_writer;

/* Data bytes of one tensor (0 for an unknown dtype). */
uint64_t kv_st_tensor_bytes(const kv_st_tensor_desc *d);

/* Creates PATH.tmp and writes the header for descs[0..n); reserves the data's disk space up
 * front so a full disk fails here rather than after minutes of writing. */
int kv_st_writer_open(const char *path, const kv_st_tensor_desc *descs, size_t n,
                      kv_st_writer **out, kv_err *err);
/* Appends the next bytes of tensor data (any split across calls; more than the header
 * declared is refused). */
int kv_st_writer_write(kv_st_writer *w, const void *data, size_t bytes, kv_err *err);
/* Checks that every declared byte arrived, closes, renames PATH.tmp to PATH, frees w.
 * On failure the temporary file is removed; w is freed either way. */
int kv_st_writer_close(kv_st_writer *w, kv_err *err);
/* Drops an unfinished file: removes PATH.tmp and frees w (NULL-safe). */
void kv_st_writer_abort(kv_st_writer *w);

/* Size of the file kv_st_writer_open + writes would produce (header included). */
int kv_st_writer_file_size(const kv_st_tensor_desc *descs, size_t n, uint64_t *out, kv_err *err);

#endif
