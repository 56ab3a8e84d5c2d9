#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_HEADER_BYTES 24          /* magic, version, tensor count, kv count */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ALIGNMENT (1u << 20)
#define GGUF_MAX_KEY 65535            /* the spec's limit on key length */
#define GGUF_MAX_NAME 1024            /* ggml allows 63; far more is surely garbage */
#define GGUF_MAX_TENSORS (1u << 20)
#define GGUF_MAX_KVS (1u << 20)
/* The fewest bytes one entry can take, to bound counts by the file before allocating:
 * a kv is a key (8-byte length + >= 1 byte), a type (4) and a value (>= 1); a tensor info is a
 * name (8 + >= 1), n_dims (4), >= 1 dim (8), a type (4) and an offset (8). */
#define GGUF_MIN_KV_BYTES 14
#define GGUF_MIN_TENSOR_BYTES 33

/* GGML's types by id: name, block geometry, and the kv_type that dequantizes it (-1: none).
 * Sizes for all of them, so a file using a type kvserve cannot compute is still read and
 * refused only where that tensor is needed, by name. */
static const struct ggml_type_desc {
    const char *name;
    uint32_t block_elems, block_bytes;
    int kv;
} ggml_types[] = {
#define T(id, name, be, bb, kv) [id] = {name, be, bb, kv}
    T(0, "F32", 1, 4, KV_TYPE_F32),         T(1, "F16", 1, 2, KV_TYPE_F16),
    T(2, "Q4_0", 32, 18, KV_TYPE_Q4_0),     T(3, "Q4_1", 32, 20, KV_TYPE_Q4_1),
    T(6, "Q5_0", 32, 22, KV_TYPE_Q5_0),     T(7, "Q5_1", 32, 24, KV_TYPE_Q5_1),
    T(8, "Q8_0", 32, 34, KV_TYPE_Q8_0),     T(9, "Q8_1", 32, 36, -1),
    T(10, "Q2_K", 256, 84, -1),             T(11, "Q3_K", 256, 110, -1),
    T(12, "Q4_K", 256, 144, KV_TYPE_Q4_K),  T(13, "Q5_K", 256, 176, KV_TYPE_Q5_K),
    T(14, "Q6_K", 256, 210, KV_TYPE_Q6_K),  T(15, "Q8_K", 256, 292, -1),
    T(16, "IQ2_XXS", 256, 66, -1),          T(17, "IQ2_XS", 256, 74, -1),
    T(18, "IQ3_XXS", 256, 98, -1),          T(19, "IQ1_S", 256, 50, -1),
    T(20, "IQ4_NL", 32, 18, -1),            T(21, "IQ3_S", 256, 110, -1),
    T(22, "IQ2_S", 256, 82, -1),            T(23, "IQ4_XS", 256, 136, -1),
    T(24, "I8", 1, 1, -1),                  T(25, "I16", 1, 2, -1),
    T(26, "I32", 1, 4, -1),                 T(27, "I64", 1, 8, -1),
    T(28, "F64", 1, 8, -1),                 T(29, "IQ1_M", 256, 56, -1),
    T(30, "BF16", 1, 2, KV_TYPE_BF16),      T(34, "TQ1_0", 256, 54, -1),
    T(35, "TQ2_0", 256, 66, -1),            T(39, "MXFP4", 32, 17, -1),
#undef T
};

static const char *const vtype_names[KV_GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
static const unsigned vtype_sizes[KV_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

typedef struct gguf_kv {
    const char *key;    /* set once parsing is done; until then key_off into names */
    size_t key_off;
    uint32_t type;
    uint32_t elem_type; /* arrays */
    uint64_t count;     /* arrays */
    uint64_t at;        /* file offset of the value (for an array: of its first element) */
} gguf_kv;

struct kv_gguf {
    char *path;
    const unsigned char *base;
    uint64_t size;
    void *map;
    uint32_t version, alignment;
    gguf_kv *kvs;
    size_t n_kvs;
    size_t *kv_sorted; /* indices of kvs by key */
    kv_gguf_tensor *tensors;
    size_t n_tensors;
    size_t *by_name;   /* indices of tensors by name */
    char *names;       /* keys and tensor names, NUL-terminated */
    size_t names_used, names_cap;
};

const char *kv_gguf_ggml_type_name(uint32_t t)
{
    return t < sizeof ggml_types / sizeof *ggml_types ? ggml_types[t].name : NULL;
}

static const char *vtype_name(uint32_t t) { return t < KV_GGUF_VTYPE_COUNT ? vtype_names[t] : "?"; }

/* ---- a bounds-checked cursor over the file ---- */

typedef struct cursor {
    const kv_gguf *g;
    uint64_t pos;
} cursor;

static uint64_t left(const cursor *c) { return c->g->size - c->pos; }

static int truncated(const cursor *c, uint64_t need, const char *what, kv_err *err)
{
    return kv_err_set(err, KV_EFORMAT, "%s: truncated: %s needs %llu bytes at byte %llu, file has %llu",
                      c->g->path, what, (unsigned long long)need, (unsigned long long)c->pos,
                      (unsigned long long)c->g->size);
}

static uint64_t load_le(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int read_uint(cursor *c, unsigned n, uint64_t *out, const char *what, kv_err *err)
{
    if (left(c) < n)
        return truncated(c, n, what, err);
    *out = load_le(c->g->base + c->pos, n);
    c->pos += n;
    return KV_OK;
}

/* A string's length prefix and bytes: *at is the offset of its first byte. */
static int read_str(cursor *c, uint64_t max_len, uint64_t *at, uint64_t *len, const char *what, kv_err *err)
{
    uint64_t start = c->pos;
    int rc = read_uint(c, 8, len, what, err);
    if (rc)
        return rc;
    if (*len > left(c))
        return kv_err_set(err, KV_EFORMAT, "%s: %s at byte %llu: length %llu runs past the end of the file (%llu bytes left)",
                          c->g->path, what, (unsigned long long)start, (unsigned long long)*len,
                          (unsigned long long)left(c));
    if (*len > max_len)
        return kv_err_set(err, KV_EFORMAT, "%s: %s at byte %llu: length %llu is more than %llu", c->g->path, what,
                          (unsigned long long)start, (unsigned long long)*len, (unsigned long long)max_len);
    *at = c->pos;
    c->pos += *len;
    return KV_OK;
}

/* Copies a key or name into the names arena (NUL-terminated; refuses empty names and
 * embedded NULs). The arena grows, so callers keep the offset; pointers are set once parsing
 * is done (fix_names). */
static int keep_name(kv_gguf *g, uint64_t at, uint64_t len, size_t *off, const char *what, kv_err *err)
{
    const char *s = (const char *)g->base + at;
    if (len == 0)
        return kv_err_set(err, KV_EFORMAT, "%s: empty %s at byte %llu", g->path, what, (unsigned long long)at);
    if (memchr(s, '\0', len))
        return kv_err_set(err, KV_EFORMAT, "%s: %s at byte %llu holds a NUL byte", g->path, what, (unsigned long long)at);
    if (g->names_cap - g->names_used < len + 1) {
        size_t cap = g->names_cap ? g->names_cap : 4096;
        while (cap - g->names_used < len + 1)
            cap *= 2;
        char *p = realloc(g->names, cap);
        if (!p)
            return kv_err_set(err, KV_ENOMEM, "%s: out of memory for names", g->path);
        g->names = p;
        g->names_cap = cap;
    }
    memcpy(g->names + g->names_used, s, len);
    g->names[g->names_used + len] = '\0';
    *off = g->names_used;
    g->names_used += len + 1;
    return KV_OK;
}

/* ---- metadata ---- */

/* Skips one value of type t (not an array), checking it fits. */
static int skip_scalar(cursor *c, uint32_t t, const char *key, kv_err *err)
{
    if (t == KV_GGUF_STRING) {
        uint64_t at, len;
        char what[96];
        snprintf(what, sizeof what, "string value of '%.64s'", key);
        return read_str(c, UINT64_MAX, &at, &len, what, err);
    }
    if (left(c) < vtype_sizes[t])
        return truncated(c, vtype_sizes[t], key, err);
    c->pos += vtype_sizes[t];
    return KV_OK;
}

static int parse_kv(kv_gguf *g, cursor *c, gguf_kv *kv, kv_err *err)
{
    uint64_t start = c->pos, at = 0, len = 0, t = 0;
    int rc = read_str(c, GGUF_MAX_KEY, &at, &len, "metadata key", err);
    if (rc || (rc = keep_name(g, at, len, &kv->key_off, "metadata key", err)))
        return rc;
    const char *key = g->names + kv->key_off;
    if ((rc = read_uint(c, 4, &t, key, err)))
        return rc;
    if (t >= KV_GGUF_VTYPE_COUNT)
        return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu: unknown value type %llu", g->path, key,
                          (unsigned long long)start, (unsigned long long)t);
    kv->type = (uint32_t)t;
    if (t != KV_GGUF_ARRAY) {
        kv->at = c->pos;
        return skip_scalar(c, (uint32_t)t, key, err);
    }
    uint64_t et = 0, n = 0;
    if ((rc = read_uint(c, 4, &et, key, err)) || (rc = read_uint(c, 8, &n, key, err)))
        return rc;
    if (et >= KV_GGUF_VTYPE_COUNT || et == KV_GGUF_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu: %s element type %llu", g->path, key,
                          (unsigned long long)start, et == KV_GGUF_ARRAY ? "unsupported (nested array)" : "unknown",
                          (unsigned long long)et);
    unsigned min = et == KV_GGUF_STRING ? 8 : vtype_sizes[et];
    if (n > left(c) / min)
        return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu: %llu %s elements cannot fit in the %llu bytes left",
                          g->path, key, (unsigned long long)start, (unsigned long long)n, vtype_name((uint32_t)et),
                          (unsigned long long)left(c));
    kv->elem_type = (uint32_t)et;
    kv->count = n;
    kv->at = c->pos;
    if (et != KV_GGUF_STRING) {
        c->pos += n * min;
        return KV_OK;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((rc = skip_scalar(c, KV_GGUF_STRING, key, err)))
            return rc;
    return KV_OK;
}

static const gguf_kv *find_kv(const kv_gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kvs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(g->kvs[g->kv_sorted[mid]].key, key);
        if (!cmp)
            return &g->kvs[g->kv_sorted[mid]];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- tensors ---- */

static int parse_tensor(kv_gguf *g, cursor *c, kv_gguf_tensor *t, size_t *name_off, uint64_t *offset, kv_err *err)
{
    uint64_t start = c->pos, at = 0, len = 0, v = 0;
    int rc = read_str(c, GGUF_MAX_NAME, &at, &len, "tensor name", err);
    if (rc || (rc = keep_name(g, at, len, name_off, "tensor name", err)))
        return rc;
    t->name = g->names + *name_off; /* for messages; fixed again when the arena stops moving */
    if ((rc = read_uint(c, 4, &v, t->name, err)))
        return rc;
    if (v < 1 || v > KV_GGUF_MAX_DIMS)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' at byte %llu: %llu dims (1..%d allowed)", g->path, t->name,
                          (unsigned long long)start, (unsigned long long)v, KV_GGUF_MAX_DIMS);
    t->n_dims = (int)v;
    t->n_elems = 1;
    for (int d = 0; d < KV_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && (rc = read_uint(c, 8, &t->ne[d], t->name, err)))
            return rc;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX / t->n_elems)
            return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' at byte %llu: dim %d = %llu %s", g->path, t->name,
                              (unsigned long long)start, d, (unsigned long long)t->ne[d],
                              t->ne[d] ? "overflows the element count" : "is empty");
        t->n_elems *= t->ne[d];
    }
    if ((rc = read_uint(c, 4, &v, t->name, err)))
        return rc;
    const char *tn = kv_gguf_ggml_type_name((uint32_t)v);
    if (v > UINT32_MAX || !tn)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' at byte %llu: unknown tensor type %llu", g->path, t->name,
                          (unsigned long long)start, (unsigned long long)v);
    const struct ggml_type_desc *ty = &ggml_types[v];
    t->ggml_type = (uint32_t)v;
    t->type_name = tn;
    t->type = ty->kv;
    if (t->ne[0] % ty->block_elems)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' at byte %llu: row length %llu is not a multiple of %s's block of %u",
                          g->path, t->name, (unsigned long long)start, (unsigned long long)t->ne[0], tn, ty->block_elems);
    uint64_t blocks = t->n_elems / ty->block_elems;
    if (blocks > UINT64_MAX / ty->block_bytes)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' at byte %llu: size overflows", g->path, t->name,
                          (unsigned long long)start);
    t->nbytes = blocks * ty->block_bytes;
    return read_uint(c, 8, offset, t->name, err);
}

static int cmp_kv_key(const void *a, const void *b, void *ctx)
{
    const gguf_kv *kvs = ctx;
    return strcmp(kvs[*(const size_t *)a].key, kvs[*(const size_t *)b].key);
}

static int cmp_tensor_name(const void *a, const void *b, void *ctx)
{
    const kv_gguf_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

static int cmp_tensor_offset(const void *a, const void *b, void *ctx)
{
    const kv_gguf_tensor *t = ctx;
    uint64_t x = t[*(const size_t *)a].file_offset, y = t[*(const size_t *)b].file_offset;
    return x < y ? -1 : x > y;
}

static size_t *sorted_indices(size_t n, int (*cmp)(const void *, const void *, void *), void *ctx)
{
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx)
        return NULL;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, n, sizeof *idx, cmp, ctx);
    return idx;
}

static int oom(const kv_gguf *g, kv_err *err) { return kv_err_set(err, KV_ENOMEM, "%s: out of memory", g->path); }

static int read_alignment(kv_gguf *g, kv_err *err)
{
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = find_kv(g, "general.alignment");
    if (!kv)
        return KV_OK;
    if (kv->type != KV_GGUF_U32)
        return kv_err_set(err, KV_EFORMAT, "%s: general.alignment at byte %llu is a %s, not a u32", g->path,
                          (unsigned long long)kv->at, vtype_name(kv->type));
    uint32_t a = (uint32_t)load_le(g->base + kv->at, 4);
    if (a == 0 || (a & (a - 1)) || a > GGUF_MAX_ALIGNMENT)
        return kv_err_set(err, KV_EFORMAT, "%s: general.alignment %u at byte %llu is not a power of two up to %u",
                          g->path, a, (unsigned long long)kv->at, GGUF_MAX_ALIGNMENT);
    g->alignment = a;
    return KV_OK;
}

static int place_tensors(kv_gguf *g, uint64_t infos_end, const uint64_t *offsets, kv_err *err)
{
    uint64_t data_start = infos_end + (g->alignment - infos_end % g->alignment) % g->alignment;
    if (g->n_tensors && data_start > g->size)
        return kv_err_set(err, KV_EFORMAT, "%s: truncated: the data section would start at byte %llu, file has %llu",
                          g->path, (unsigned long long)data_start, (unsigned long long)g->size);
    for (size_t i = 0; i < g->n_tensors; i++) {
        kv_gguf_tensor *t = &g->tensors[i];
        if (offsets[i] % g->alignment)
            return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s': data offset %llu is not a multiple of the alignment %u",
                              g->path, t->name, (unsigned long long)offsets[i], g->alignment);
        uint64_t room = g->size - data_start;
        if (offsets[i] > room || t->nbytes > room - offsets[i])
            return kv_err_set(err, KV_EFORMAT,
                              "%s: tensor '%s': %llu bytes at data offset %llu (byte %llu) run past the end of the file (%llu bytes)",
                              g->path, t->name, (unsigned long long)t->nbytes, (unsigned long long)offsets[i],
                              (unsigned long long)(data_start + offsets[i]), (unsigned long long)g->size);
        t->file_offset = data_start + offsets[i];
        t->data = g->base + t->file_offset;
    }
    size_t *by_off = sorted_indices(g->n_tensors, cmp_tensor_offset, g->tensors);
    if (!by_off)
        return oom(g, err);
    int rc = KV_OK;
    for (size_t i = 1; i < g->n_tensors && !rc; i++) {
        const kv_gguf_tensor *a = &g->tensors[by_off[i - 1]], *b = &g->tensors[by_off[i]];
        if (a->file_offset + a->nbytes > b->file_offset)
            rc = kv_err_set(err, KV_EFORMAT, "%s: tensors '%s' and '%s' overlap at byte %llu", g->path, a->name, b->name,
                            (unsigned long long)b->file_offset);
    }
    free(by_off);
    return rc;
}

static int parse(kv_gguf *g, kv_err *err)
{
    cursor c = {g, 0};
    if (g->size < GGUF_HEADER_BYTES)
        return kv_err_set(err, KV_EFORMAT, "%s: truncated: %llu bytes is less than the %d-byte GGUF header", g->path,
                          (unsigned long long)g->size, GGUF_HEADER_BYTES);
    if (memcmp(g->base, "GGUF", 4))
        return kv_err_set(err, KV_EFORMAT, "%s: not a GGUF file (magic %02x %02x %02x %02x at byte 0, want \"GGUF\")",
                          g->path, g->base[0], g->base[1], g->base[2], g->base[3]);
    c.pos = 4;
    uint64_t version = 0, n_tensors = 0, n_kvs = 0;
    read_uint(&c, 4, &version, "version", err);
    read_uint(&c, 8, &n_tensors, "tensor count", err);
    read_uint(&c, 8, &n_kvs, "metadata count", err);
    if (version != 2 && version != 3)
        return kv_err_set(err, KV_EFORMAT, "%s: GGUF version %llu at byte 4 is not supported (2 or 3%s)", g->path,
                          (unsigned long long)version, load_le(g->base + 4, 4) >= 0x01000000 ? "; a big-endian file?" : "");
    g->version = (uint32_t)version;
    if (n_tensors > GGUF_MAX_TENSORS || n_tensors > left(&c) / GGUF_MIN_TENSOR_BYTES)
        return kv_err_set(err, KV_EFORMAT, "%s: tensor count %llu at byte 8 is more than a %llu-byte file can hold "
                          "(truncated?)", g->path, (unsigned long long)n_tensors, (unsigned long long)g->size);
    if (n_kvs > GGUF_MAX_KVS || n_kvs > left(&c) / GGUF_MIN_KV_BYTES)
        return kv_err_set(err, KV_EFORMAT, "%s: metadata count %llu at byte 16 is more than a %llu-byte file can hold "
                          "(truncated?)", g->path, (unsigned long long)n_kvs, (unsigned long long)g->size);
    g->kvs = calloc(n_kvs ? n_kvs : 1, sizeof *g->kvs);
    g->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    uint64_t *offsets = calloc(n_tensors ? n_tensors : 1, sizeof *offsets);
    size_t *name_offs = calloc(n_tensors ? n_tensors : 1, sizeof *name_offs);
    int rc = !g->kvs || !g->tensors || !offsets || !name_offs ? oom(g, err) : KV_OK;
    for (; !rc && g->n_kvs < n_kvs; g->n_kvs++)
        rc = parse_kv(g, &c, &g->kvs[g->n_kvs], err);
    for (; !rc && g->n_tensors < n_tensors; g->n_tensors++)
        rc = parse_tensor(g, &c, &g->tensors[g->n_tensors], &name_offs[g->n_tensors], &offsets[g->n_tensors], err);
    if (!rc) { /* the names arena is final: point into it */
        for (size_t i = 0; i < g->n_kvs; i++)
            g->kvs[i].key = g->names + g->kvs[i].key_off;
        for (size_t i = 0; i < g->n_tensors; i++)
            g->tensors[i].name = g->names + name_offs[i];
    }
    if (!rc && !(g->kv_sorted = sorted_indices(g->n_kvs, cmp_kv_key, g->kvs)))
        rc = oom(g, err);
    for (size_t i = 1; !rc && i < g->n_kvs; i++)
        if (!strcmp(g->kvs[g->kv_sorted[i - 1]].key, g->kvs[g->kv_sorted[i]].key))
            rc = kv_err_set(err, KV_EFORMAT, "%s: metadata key '%s' appears twice", g->path, g->kvs[g->kv_sorted[i]].key);
    if (!rc)
        rc = read_alignment(g, err);
    if (!rc && !(g->by_name = sorted_indices(g->n_tensors, cmp_tensor_name, g->tensors)))
        rc = oom(g, err);
    for (size_t i = 1; !rc && i < g->n_tensors; i++)
        if (!strcmp(g->tensors[g->by_name[i - 1]].name, g->tensors[g->by_name[i]].name))
            rc = kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' appears twice", g->path, g->tensors[g->by_name[i]].name);
    if (!rc)
        rc = place_tensors(g, c.pos, offsets, err);
    free(name_offs);
    free(offsets);
    return rc;
}

static int open_common(kv_gguf *g, kv_gguf **out, kv_err *err)
{
    int rc = parse(g, err);
    if (rc) {
        kv_gguf_close(g);
        return rc;
    }
    *out = g;
    return KV_OK;
}

static kv_gguf *new_gguf(const char *name)
{
    kv_gguf *g = calloc(1, sizeof *g);
    if (g && !(g->path = strdup(name ? name : "(memory)"))) {
        free(g);
        g = NULL;
    }
    return g;
}

int kv_gguf_open_memory(const void *data, size_t size, const char *name, kv_gguf **out, kv_err *err)
{
    if (!out || (!data && size))
        return kv_err_set(err, KV_EINVAL, "kv_gguf_open_memory: null argument");
    *out = NULL;
    kv_gguf *g = new_gguf(name);
    if (!g)
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    g->base = data;
    g->size = size;
    return open_common(g, out, err);
}

int kv_gguf_open(const char *path, kv_gguf **out, kv_err *err)
{
    if (!path || !out)
        return kv_err_set(err, KV_EINVAL, "kv_gguf_open: null argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kv_err_set(err, KV_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return kv_err_set(err, KV_EIO, "%s: not a regular file", path);
    }
    kv_gguf *g = new_gguf(path);
    if (!g) {
        close(fd);
        return kv_err_set(err, KV_ENOMEM, "out of memory");
    }
    g->size = (uint64_t)st.st_size;
    if (g->size) {
        g->map = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (g->map == MAP_FAILED) {
            g->map = NULL;
            close(fd);
            int e = errno;
            kv_gguf_close(g);
            return kv_err_set(err, KV_EIO, "%s: mmap failed: %s", path, strerror(e));
        }
        g->base = g->map;
    }
    close(fd);
    return open_common(g, out, err);
}

void kv_gguf_close(kv_gguf *g)
{
    if (!g)
        return;
    if (g->map)
        munmap(g->map, (size_t)g->size);
    free(g->kvs);
    free(g->kv_sorted);
    free(g->tensors);
    free(g->by_name);
    free(g->names);
    free(g->path);
    free(g);
}

const char *kv_gguf_path(const kv_gguf *g) { return g->path; }
uint32_t kv_gguf_version(const kv_gguf *g) { return g->version; }
uint64_t kv_gguf_file_size(const kv_gguf *g) { return g->size; }
uint32_t kv_gguf_alignment(const kv_gguf *g) { return g->alignment; }
size_t kv_gguf_kv_count(const kv_gguf *g) { return g->n_kvs; }
const char *kv_gguf_kv_key(const kv_gguf *g, size_t i) { return i < g->n_kvs ? g->kvs[i].key : NULL; }
size_t kv_gguf_tensor_count(const kv_gguf *g) { return g->n_tensors; }
const kv_gguf_tensor *kv_gguf_tensor_at(const kv_gguf *g, size_t i) { return i < g->n_tensors ? &g->tensors[i] : NULL; }

long kv_gguf_find_key(const kv_gguf *g, const char *key)
{
    const gguf_kv *kv = key ? find_kv(g, key) : NULL;
    return kv ? (long)(kv - g->kvs) : -1;
}

int kv_gguf_key_type(const kv_gguf *g, const char *key)
{
    const gguf_kv *kv = key ? find_kv(g, key) : NULL;
    return kv ? (int)kv->type : -1;
}

int kv_gguf_array_type(const kv_gguf *g, const char *key, uint64_t *count)
{
    const gguf_kv *kv = key ? find_kv(g, key) : NULL;
    if (!kv || kv->type != KV_GGUF_ARRAY) {
        if (count)
            *count = 0;
        return -1;
    }
    if (count)
        *count = kv->count;
    return (int)kv->elem_type;
}

const kv_gguf_tensor *kv_gguf_find_tensor(const kv_gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_tensors;
    while (name && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const kv_gguf_tensor *t = &g->tensors[g->by_name[mid]];
        int cmp = strcmp(t->name, name);
        if (!cmp)
            return t;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- typed getters ---- */

static int lookup(const kv_gguf *g, const char *key, const gguf_kv **kv, kv_err *err)
{
    *kv = key ? find_kv(g, key) : NULL;
    if (!*kv)
        return kv_err_set(err, KV_ENOTFOUND, "%s: no metadata key '%s'", g->path, key ? key : "(null)");
    return KV_OK;
}

static int wrong_type(const kv_gguf *g, const gguf_kv *kv, const char *want, kv_err *err)
{
    if (kv->type == KV_GGUF_ARRAY)
        return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu is an array of %s, not %s", g->path, kv->key,
                          (unsigned long long)kv->at, vtype_name(kv->elem_type), want);
    return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu is a %s, not %s", g->path, kv->key,
                      (unsigned long long)kv->at, vtype_name(kv->type), want);
}

static int is_int_type(uint32_t t)
{
    return t == KV_GGUF_U8 || t == KV_GGUF_I8 || t == KV_GGUF_U16 || t == KV_GGUF_I16 || t == KV_GGUF_U32 ||
           t == KV_GGUF_I32 || t == KV_GGUF_U64 || t == KV_GGUF_I64;
}

static int is_signed(uint32_t t) { return t == KV_GGUF_I8 || t == KV_GGUF_I16 || t == KV_GGUF_I32 || t == KV_GGUF_I64; }

/* An integer of type t at p, as a sign flag and magnitude bits: *neg set for negatives. */
static void load_int(const unsigned char *p, uint32_t t, int *neg, uint64_t *bits)
{
    unsigned n = vtype_sizes[t];
    uint64_t v = load_le(p, n);
    *neg = 0;
    if (is_signed(t) && n < 8 && (v >> (8 * n - 1)) & 1)
        v |= ~UINT64_C(0) << (8 * n); /* sign-extend */
    if (is_signed(t) && (int64_t)v < 0)
        *neg = 1;
    *bits = v;
}

static int get_int(const kv_gguf *g, const char *key, int64_t lo, uint64_t hi, int want_signed, uint64_t *out,
                   const char *want, kv_err *err)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc)
        return rc;
    if (kv->type == KV_GGUF_ARRAY || !is_int_type(kv->type))
        return wrong_type(g, kv, want, err);
    int neg;
    uint64_t v;
    load_int(g->base + kv->at, kv->type, &neg, &v);
    if ((neg && (!want_signed || (int64_t)v < lo)) || (!neg && v > hi))
        return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu: value %s%llu does not fit a %s", g->path, key,
                          (unsigned long long)kv->at, neg ? "-" : "",
                          neg ? (unsigned long long)(0 - v) : (unsigned long long)v, want);
    *out = v;
    return KV_OK;
}

int kv_gguf_get_u32(const kv_gguf *g, const char *key, uint32_t *out, kv_err *err)
{
    uint64_t v;
    int rc = get_int(g, key, 0, UINT32_MAX, 0, &v, "u32", err);
    if (!rc)
        *out = (uint32_t)v;
    return rc;
}

int kv_gguf_get_i32(const kv_gguf *g, const char *key, int32_t *out, kv_err *err)
{
    uint64_t v;
    int rc = get_int(g, key, INT32_MIN, INT32_MAX, 1, &v, "i32", err);
    if (!rc)
        *out = (int32_t)(int64_t)v;
    return rc;
}

int kv_gguf_get_u64(const kv_gguf *g, const char *key, uint64_t *out, kv_err *err)
{
    return get_int(g, key, 0, UINT64_MAX, 0, out, "u64", err);
}

static double load_float(const unsigned char *p, uint32_t t)
{
    if (t == KV_GGUF_F32) {
        uint32_t u = (uint32_t)load_le(p, 4);
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    uint64_t u = load_le(p, 8);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

int kv_gguf_get_f32(const kv_gguf *g, const char *key, float *out, kv_err *err)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc)
        return rc;
    if (kv->type != KV_GGUF_F32 && kv->type != KV_GGUF_F64)
        return wrong_type(g, kv, "f32", err);
    *out = (float)load_float(g->base + kv->at, kv->type);
    return KV_OK;
}

int kv_gguf_get_bool(const kv_gguf *g, const char *key, int *out, kv_err *err)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc)
        return rc;
    if (kv->type != KV_GGUF_BOOL)
        return wrong_type(g, kv, "bool", err);
    unsigned char b = g->base[kv->at];
    if (b > 1)
        return kv_err_set(err, KV_EFORMAT, "%s: key '%s' at byte %llu: bool byte %u is neither 0 nor 1", g->path, key,
                          (unsigned long long)kv->at, b);
    *out = b;
    return KV_OK;
}

int kv_gguf_get_str(const kv_gguf *g, const char *key, kv_gguf_str *out, kv_err *err)
{
    const gguf_kv *kv;
    int rc = lookup(g, key, &kv, err);
    if (rc)
        return rc;
    if (kv->type != KV_GGUF_STRING)
        return wrong_type(g, kv, "string", err);
    out->len = (size_t)load_le(g->base + kv->at, 8);
    out->s = (const char *)g->base + kv->at + 8;
    return KV_OK;
}

static int lookup_array(const kv_gguf *g, const char *key, const gguf_kv **kv, const char *want, kv_err *err)
{
    int rc = lookup(g, key, kv, err);
    if (rc)
        return rc;
    if ((*kv)->type != KV_GGUF_ARRAY)
        return wrong_type(g, *kv, want, err);
    return KV_OK;
}

int kv_gguf_get_str_array(const kv_gguf *g, const char *key, kv_gguf_str **out, size_t *n, kv_err *err)
{
    const gguf_kv *kv;
    *out = NULL;
    *n = 0;
    int rc = lookup_array(g, key, &kv, "an array of strings", err);
    if (rc)
        return rc;
    if (kv->elem_type != KV_GGUF_STRING)
        return wrong_type(g, kv, "an array of strings", err);
    if (!kv->count)
        return KV_OK;
    kv_gguf_str *a = malloc((size_t)kv->count * sizeof *a);
    if (!a)
        return oom(g, err);
    uint64_t at = kv->at;
    for (uint64_t i = 0; i < kv->count; i++) { /* lengths were checked against the file at open */
        a[i].len = (size_t)load_le(g->base + at, 8);
        a[i].s = (const char *)g->base + at + 8;
        at += 8 + a[i].len;
    }
    *out = a;
    *n = (size_t)kv->count;
    return KV_OK;
}

int kv_gguf_get_int_array(const kv_gguf *g, const char *key, int64_t **out, size_t *n, kv_err *err)
{
    const gguf_kv *kv;
    *out = NULL;
    *n = 0;
    int rc = lookup_array(g, key, &kv, "an array of integers", err);
    if (rc)
        return rc;
    if (!is_int_type(kv->elem_type))
        return wrong_type(g, kv, "an array of integers", err);
    if (!kv->count)
        return KV_OK;
    int64_t *a = malloc((size_t)kv->count * sizeof *a);
    if (!a)
        return oom(g, err);
    unsigned size = vtype_sizes[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++) {
        int neg;
        uint64_t v;
        load_int(g->base + kv->at + i * size, kv->elem_type, &neg, &v);
        if (!neg && v > (uint64_t)INT64_MAX) {
            free(a);
            return kv_err_set(err, KV_EFORMAT, "%s: key '%s': element %llu does not fit an i64", g->path, key,
                              (unsigned long long)i);
        }
        a[i] = (int64_t)v;
    }
    *out = a;
    *n = (size_t)kv->count;
    return KV_OK;
}

int kv_gguf_get_float_array(const kv_gguf *g, const char *key, float **out, size_t *n, kv_err *err)
{
    const gguf_kv *kv;
    *out = NULL;
    *n = 0;
    int rc = lookup_array(g, key, &kv, "an array of floats", err);
    if (rc)
        return rc;
    if (kv->elem_type != KV_GGUF_F32 && kv->elem_type != KV_GGUF_F64)
        return wrong_type(g, kv, "an array of floats", err);
    if (!kv->count)
        return KV_OK;
    float *a = malloc((size_t)kv->count * sizeof *a);
    if (!a)
        return oom(g, err);
    unsigned size = vtype_sizes[kv->elem_type];
    for (uint64_t i = 0; i < kv->count; i++)
        a[i] = (float)load_float(g->base + kv->at + i * size, kv->elem_type);
    *out = a;
    *n = (size_t)kv->count;
    return KV_OK;
}
