#include "safetensors_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_textbuf.h"

struct kv_st_writer {
    FILE *f;
    char *path;          /* final name */
    char *tmp_path;      /* PATH.tmp, where the bytes go until close */
    uint64_t data_bytes; /* declared by the header */
    uint64_t written;
};

/* Local twins of safetensors.c's kv_dtype_size/name: this library must not depend on the
 * reader's (kv_model links kv_model_synth, not the other way round). */
static size_t dtype_size(kv_dtype dtype)
{
    switch (dtype) {
    case KV_DTYPE_F32: return 4;
    case KV_DTYPE_F16:
    case KV_DTYPE_BF16: return 2;
    default: return 0;
    }
}

static const char *dtype_name(kv_dtype dtype)
{
    switch (dtype) {
    case KV_DTYPE_F32: return "F32";
    case KV_DTYPE_F16: return "F16";
    case KV_DTYPE_BF16: return "BF16";
    default: return NULL;
    }
}

uint64_t kv_st_tensor_bytes(const kv_st_tensor_desc *d)
{
    uint64_t n = dtype_size(d->dtype);
    for (int k = 0; k < d->n_dims; k++)
        n *= (uint64_t)d->shape[k];
    return n;
}

/* Rejects what would make an unreadable file: bad dtype/rank, negative or overflowing
 * shapes, empty or duplicate names. */
static int validate(const kv_st_tensor_desc *descs, size_t n, kv_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const kv_st_tensor_desc *d = &descs[i];
        if (!d->name || !d->name[0])
            return kv_err_set(err, KV_EINVAL, "safetensors: tensor %zu has no name", i);
        if (!dtype_name(d->dtype))
            return kv_err_set(err, KV_EINVAL, "safetensors: %s: unknown dtype %d", d->name, (int)d->dtype);
        if (d->n_dims < 0 || d->n_dims > KV_ST_MAX_DIMS)
            return kv_err_set(err, KV_EINVAL, "safetensors: %s: rank %d out of range", d->name,
                              d->n_dims);
        uint64_t bytes = dtype_size(d->dtype);
        for (int k = 0; k < d->n_dims; k++) {
            int64_t dim = d->shape[k];
            if (dim < 0 || (dim > 0 && bytes > (UINT64_C(1) << 62) / (uint64_t)dim))
                return kv_err_set(err, KV_EINVAL, "safetensors: %s: bad shape", d->name);
            bytes *= (uint64_t)dim;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(descs[j].name, d->name))
                return kv_err_set(err, KV_EINVAL, "safetensors: duplicate tensor name %s", d->name);
    }
    return KV_OK;
}

/* The JSON header, padded with spaces so the data section starts 8-byte aligned (the
 * loader mmaps it and reads floats in place). */
static int build_header(const kv_st_tensor_desc *descs, size_t n, kv_textbuf *hdr,
                        uint64_t *data_bytes, kv_err *err)
{
    int rc = validate(descs, n, err);
    if (rc)
        return rc;
    kv_textbuf_init(hdr);
    kv_textbuf_puts(hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const kv_st_tensor_desc *d = &descs[i];
        uint64_t bytes = kv_st_tensor_bytes(d);
        kv_textbuf_puts(hdr, ",");
        kv_textbuf_json_string(hdr, d->name, strlen(d->name));
        kv_textbuf_printf(hdr, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(d->dtype));
        for (int k = 0; k < d->n_dims; k++)
            kv_textbuf_printf(hdr, "%s%lld", k ? "," : "", (long long)d->shape[k]);
        kv_textbuf_printf(hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                          (unsigned long long)(off + bytes));
        off += bytes;
    }
    kv_textbuf_puts(hdr, "}");
    while (!kv_textbuf_failed(hdr) && hdr->len % 8 != 0)
        kv_textbuf_puts(hdr, " ");
    if (kv_textbuf_failed(hdr)) {
        kv_textbuf_free(hdr);
        return kv_err_set(err, KV_ENOMEM, "safetensors: out of memory building the header");
    }
    *data_bytes = off;
    return KV_OK;
}

int kv_st_writer_file_size(const kv_st_tensor_desc *descs, size_t n, uint64_t *out, kv_err *err)
{
    kv_textbuf hdr;
    uint64_t data_bytes;
    int rc = build_header(descs, n, &hdr, &data_bytes, err);
    if (rc)
        return rc;
    *out = 8 + hdr.len + data_bytes;
    kv_textbuf_free(&hdr);
    return KV_OK;
}

static void writer_free(kv_st_writer *w)
{
    free(w->path);
    free(w->tmp_path);
    free(w);
}

void kv_st_writer_abort(kv_st_writer *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    remove(w->tmp_path);
    writer_free(w);
}

/* Reserves the file's final size so that a full disk (or quota, or file size limit) is
 * reported now. Filesystems without fallocate just skip the check; the writes still are. */
static int reserve_space(kv_st_writer *w, uint64_t total, kv_err *err)
{
    if (total == 0 || fallocate(fileno(w->f), 0, 0, (off_t)total) == 0)
        return KV_OK;
    if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)
        return kv_err_set(err, KV_EIO, "%s: cannot reserve %.2f GB: %s", w->tmp_path,
                          (double)total / 1e9, strerror(errno));
    return KV_OK;
}

int kv_st_writer_open(const char *path, const kv_st_tensor_desc *descs, size_t n,
                      kv_st_writer **out, kv_err *err)
{
    *out = NULL;
    kv_textbuf hdr;
    uint64_t data_bytes;
    int rc = build_header(descs, n, &hdr, &data_bytes, err);
    if (rc)
        return rc;
    kv_st_writer *w = calloc(1, sizeof *w);
    size_t plen = strlen(path);
    if (w) {
        w->path = strdup(path);
        w->tmp_path = malloc(plen + 5);
    }
    if (!w || !w->path || !w->tmp_path) {
        if (w)
            writer_free(w);
        kv_textbuf_free(&hdr);
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", path);
    }
    memcpy(w->tmp_path, path, plen);
    memcpy(w->tmp_path + plen, ".tmp", 5);
    w->data_bytes = data_bytes;

    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        rc = kv_err_set(err, KV_EIO, "%s: %s", w->tmp_path, strerror(errno));
        kv_textbuf_free(&hdr);
        writer_free(w); /* nothing was created */
        return rc;
    }
    rc = reserve_space(w, 8 + hdr.len + data_bytes, err);
    if (rc == KV_OK) {
        unsigned char len_le[8];
        for (int k = 0; k < 8; k++)
            len_le[k] = (unsigned char)((uint64_t)hdr.len >> (8 * k));
        if (fwrite(len_le, 1, 8, w->f) != 8 || fwrite(hdr.data, 1, hdr.len, w->f) != hdr.len)
            rc = kv_err_set(err, KV_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    }
    kv_textbuf_free(&hdr);
    if (rc) {
        kv_st_writer_abort(w);
        return rc;
    }
    *out = w;
    return KV_OK;
}

int kv_st_writer_write(kv_st_writer *w, const void *data, size_t bytes, kv_err *err)
{
    if (bytes > w->data_bytes - w->written)
        return kv_err_set(err, KV_ESTATE, "%s: %zu bytes more than the header declares (%llu)",
                          w->path, bytes, (unsigned long long)w->data_bytes);
    if (bytes && fwrite(data, 1, bytes, w->f) != bytes)
        return kv_err_set(err, KV_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    w->written += bytes;
    return KV_OK;
}

int kv_st_writer_close(kv_st_writer *w, kv_err *err)
{
    int rc = KV_OK;
    if (w->written != w->data_bytes)
        rc = kv_err_set(err, KV_ESTATE, "%s: closed after %llu of %llu data bytes", w->path,
                        (unsigned long long)w->written, (unsigned long long)w->data_bytes);
    /* fclose flushes: a full disk often shows up only here. */
    int closed = fclose(w->f);
    w->f = NULL;
    if (rc == KV_OK && closed != 0)
        rc = kv_err_set(err, KV_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
    if (rc == KV_OK && rename(w->tmp_path, w->path) != 0)
        rc = kv_err_set(err, KV_EIO, "%s: cannot rename to %s: %s", w->tmp_path, w->path,
                        strerror(errno));
    if (rc) {
        kv_st_writer_abort(w);
        return rc;
    }
    writer_free(w);
    return KV_OK;
}
