#include "kv_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int kv_file_read_all(const char *path, char **out, size_t *out_len, kv_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return kv_err_set(err, errno == ENOENT ? KV_ENOTFOUND : KV_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return kv_err_set(err, KV_EIO, "%s: not a regular file", path);
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return kv_err_set(err, KV_EIO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    rewind(f);
    if (n < 0) {
        fclose(f);
        return kv_err_set(err, KV_EIO, "%s: cannot size (is it a directory?)", path);
    }
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory for %ld bytes", path, n);
    }
    size_t got = fread(buf, 1, (size_t)n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != (size_t)n) {
        free(buf);
        return kv_err_set(err, KV_EIO, "%s: short read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = (size_t)n;
    return KV_OK;
}

int kv_file_write_all(const char *path, const void *data, size_t len, kv_err *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return kv_err_set(err, KV_EINVAL, "path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return kv_err_set(err, KV_EIO, "%s: %s", tmp, strerror(errno));
    size_t put = len ? fwrite(data, 1, len, f) : 0;
    int bad = put != len;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return kv_err_set(err, KV_EIO, "%s: write failed: %s", path, strerror(errno));
    }
    return KV_OK;
}

int kv_path_join(char *out, size_t cap, const char *dir, const char *name, kv_err *err)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return kv_err_set(err, KV_EINVAL, "path too long: %s/%s", dir, name);
    return KV_OK;
}

void kv_path_basename(const char *dir, char *out, size_t cap)
{
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/')
        end--;
    size_t start = end;
    while (start > 0 && dir[start - 1] != '/')
        start--;
    size_t n = end - start;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, dir + start, n);
    out[n] = '\0';
}
