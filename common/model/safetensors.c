#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

/* A header larger than this is not a model header but an attack or corruption. */
#define ST_MAX_HEADER (100u << 20)

struct kv_st_file {
    char *path;
    void *map;
    size_t map_len;
    json_doc *header;
    kv_st_tensor *tensors;
    size_t n_tensors;
};

size_t kv_dtype_size(kv_dtype dt) { return dt == KV_DTYPE_F32 ? 4 : 2; }

const char *kv_dtype_name(kv_dtype dt)
{
    switch (dt) {
    case KV_DTYPE_F32: return "F32";
    case KV_DTYPE_F16: return "F16";
    case KV_DTYPE_BF16: return "BF16";
    }
    return "?";
}

static int parse_dtype(const char *s, kv_dtype *out)
{
    if (!strcmp(s, "F32")) *out = KV_DTYPE_F32;
    else if (!strcmp(s, "F16")) *out = KV_DTYPE_F16;
    else if (!strcmp(s, "BF16")) *out = KV_DTYPE_BF16;
    else return -1;
    return 0;
}

static int parse_tensor(const kv_st_file *f, const json_member *m, const char *data, size_t data_len,
                        kv_st_tensor *t, kv_err *err)
{
    const json_value *v = &m->value;
    const char *dt = json_get_string(v, "dtype");
    const json_value *shape = json_get(v, "shape");
    const json_value *offs = json_get(v, "data_offsets");
    t->name = m->key;
    if (!dt || !shape || shape->type != JSON_ARRAY || !offs || offs->type != JSON_ARRAY || offs->u.arr.n != 2)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\": header entry needs dtype, shape and data_offsets[2]",
                          f->path, m->key);
    if (parse_dtype(dt, &t->dtype))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: tensor \"%s\": unsupported dtype %s (supported: F32, F16, BF16)",
                          f->path, m->key, dt);
    if (shape->u.arr.n > KV_ST_MAX_DIMS)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: tensor \"%s\": %zu dimensions (at most %d)", f->path, m->key,
                          shape->u.arr.n, KV_ST_MAX_DIMS);
    t->ndim = (int)shape->u.arr.n;
    double numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        const json_value *d = &shape->u.arr.items[i];
        if (d->type != JSON_NUMBER || d->u.number < 0 || d->u.number != floor(d->u.number) || d->u.number > 1e12)
            return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\": bad shape", f->path, m->key);
        t->shape[i] = (int64_t)d->u.number;
        numel *= d->u.number;
    }
    double b = offs->u.arr.items[0].type == JSON_NUMBER ? offs->u.arr.items[0].u.number : -1;
    double e = offs->u.arr.items[1].type == JSON_NUMBER ? offs->u.arr.items[1].u.number : -1;
    if (b < 0 || e < b || e > (double)data_len || b != floor(b) || e != floor(e))
        return kv_err_set(err, KV_EFORMAT,
                          "%s: tensor \"%s\": data_offsets [%.0f, %.0f] outside the %zu-byte data section "
                          "(truncated file?)", f->path, m->key, b, e, data_len);
    if (e - b != numel * (double)kv_dtype_size(t->dtype))
        return kv_err_set(err, KV_EFORMAT, "%s: tensor \"%s\": %.0f bytes do not match its shape and dtype",
                          f->path, m->key, e - b);
    t->data = data + (size_t)b;
    t->nbytes = (size_t)(e - b);
    return KV_OK;
}

static int parse_header(kv_st_file *f, kv_err *err)
{
    if (f->map_len < 8)
        return kv_err_set(err, KV_EFORMAT, "%s: file too short for a safetensors header", f->path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | ((const unsigned char *)f->map)[i];
    if (hlen > ST_MAX_HEADER || hlen > f->map_len - 8)
        return kv_err_set(err, KV_EFORMAT, "%s: header length %llu exceeds the file (truncated or not safetensors)",
                          f->path, (unsigned long long)hlen);
    const char *hdr = (const char *)f->map + 8;
    f->header = json_parse(hdr, (size_t)hlen, err);
    if (!f->header)
        return kv_err_wrap(err, "%s: bad header", f->path);
    const json_value *root = json_root(f->header);
    if (root->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s: header is not a JSON object", f->path);
    f->tensors = calloc(root->u.obj.n ? root->u.obj.n : 1, sizeof *f->tensors);
    if (!f->tensors)
        return kv_err_set(err, KV_ENOMEM, "%s: out of memory", f->path);
    const char *data = hdr + hlen;
    size_t data_len = f->map_len - 8 - (size_t)hlen;
    for (size_t i = 0; i < root->u.obj.n; i++) {
        const json_member *m = &root->u.obj.members[i];
        if (!strcmp(m->key, "__metadata__"))
            continue;
        int rc = parse_tensor(f, m, data, data_len, &f->tensors[f->n_tensors], err);
        if (rc)
            return rc;
        f->n_tensors++;
    }
    return KV_OK;
}

int kv_st_open(const char *path, kv_st_file **out, kv_err *err)
{
    *out = NULL;
    kv_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = kv_err_set(err, errno == ENOENT ? KV_ENOTFOUND : KV_EIO, "%s: %s", path, strerror(errno));
        kv_st_close(f);
        return rc;
    }
    struct stat st;
    int rc = KV_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = kv_err_set(err, KV_EIO, "%s: not a regular file", path);
    } else if (st.st_size == 0) {
        rc = kv_err_set(err, KV_EFORMAT, "%s: empty file", path);
    } else {
        f->map_len = (size_t)st.st_size;
        f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = kv_err_set(err, KV_EIO, "%s: mmap failed: %s", path, strerror(errno));
        }
    }
    close(fd);
    if (!rc)
        rc = parse_header(f, err);
    if (rc) {
        kv_st_close(f);
        return rc;
    }
    *out = f;
    return KV_OK;
}

void kv_st_close(kv_st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    json_doc_free(f->header);
    free(f->tensors);
    free(f->path);
    free(f);
}

const kv_st_tensor *kv_st_find(const kv_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}

size_t kv_st_count(const kv_st_file *f) { return f->n_tensors; }
const kv_st_tensor *kv_st_at(const kv_st_file *f, size_t i) { return i < f->n_tensors ? &f->tensors[i] : NULL; }
const char *kv_st_path(const kv_st_file *f) { return f->path; }
