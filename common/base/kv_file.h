#ifndef KV_FILE_H
#define KV_FILE_H

#include <stddef.h>

#include "kv_err.h"

/* Reads a whole file into a malloc'd, NUL-terminated buffer. */
int kv_file_read_all(const char *path, char **out, size_t *out_len, kv_err *err);
/* Writes len bytes to path (via a temporary file + rename, so readers never see half a file). */
int kv_file_write_all(const char *path, const void *data, size_t len, kv_err *err);
/* Joins dir and name into out (size cap); fails cleanly when too long. */
int kv_path_join(char *out, size_t cap, const char *dir, const char *name, kv_err *err);

/* The last component of a directory path (trailing slashes ignored) into out, truncated to cap. */
void kv_path_basename(const char *dir, char *out, size_t cap);

#endif
