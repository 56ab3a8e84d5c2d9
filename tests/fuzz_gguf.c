/* Fuzz target of the GGUF reader (common/model/gguf.c) and the kv_type dequantizers. Every
 * input is a GGUF file in memory. kv_gguf_open_memory must never crash or read outside the
 * input (the driver hands it an exactly-sized heap copy, so ASan sees any overread); a refusal
 * returns KV_EFORMAT with a message naming the input. What it accepts must be safe to use
 * blindly:
 *   - every tensor's data lies inside the input, aligned to the file's alignment, with
 *     n_elems the product of its dims and nbytes what its type needs, and no two overlap;
 *   - every tensor of a kv_type dequantizes (all of it: ASan checks the reads);
 *   - every key and tensor name is found by lookup; each value's typed getter agrees with the
 *     value type, and array getters return exactly the declared count, strings inside the input.
 * Seeds: small GGUFs generated here (version 2 or 3, every value type, an alignment key now and
 * then, tensors of every GGML type) whose tensor bytes are real blocks taken from
 * tests/data/gguf/quant_vectors.gguf, with a field broken now and then. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "kv_file.h"
#include "kv_fuzz_target.h"
#include "kv_type.h"

#define NAME "fuzz-input"

static void check_refusal(const kv_err *err, int rc)
{
    KV_FUZZ_REQUIRE(rc == KV_EFORMAT || rc == KV_ENOMEM, "refused with code %d: %s", rc, err->msg);
    KV_FUZZ_REQUIRE(strstr(err->msg, NAME), "the message \"%s\" does not name the input", err->msg);
}

static void check_values(const kv_gguf *g, const uint8_t *data, size_t size)
{
    kv_err err = {0};
    for (size_t i = 0; i < kv_gguf_kv_count(g); i++) {
        const char *key = kv_gguf_kv_key(g, i);
        KV_FUZZ_REQUIRE(key && kv_gguf_find_key(g, key) == (long)i, "key %zu ('%s') is not found by lookup", i, key);
        int t = kv_gguf_key_type(g, key);
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        float f;
        int b;
        kv_gguf_str s;
        int is_int = t == KV_GGUF_U8 || t == KV_GGUF_I8 || t == KV_GGUF_U16 || t == KV_GGUF_I16 ||
                     t == KV_GGUF_U32 || t == KV_GGUF_I32 || t == KV_GGUF_U64 || t == KV_GGUF_I64;
        int rc = kv_gguf_get_u32(g, key, &u32, &err);
        KV_FUZZ_REQUIRE(is_int || rc == KV_EFORMAT, "get_u32 of a %d", t);
        rc = kv_gguf_get_i32(g, key, &i32, &err);
        KV_FUZZ_REQUIRE(is_int || rc == KV_EFORMAT, "get_i32 of a %d", t);
        rc = kv_gguf_get_u64(g, key, &u64, &err);
        KV_FUZZ_REQUIRE(is_int || rc == KV_EFORMAT, "get_u64 of a %d", t);
        rc = kv_gguf_get_f32(g, key, &f, &err);
        KV_FUZZ_REQUIRE((rc == KV_OK) == (t == KV_GGUF_F32 || t == KV_GGUF_F64), "get_f32 of a %d", t);
        rc = kv_gguf_get_bool(g, key, &b, &err);
        KV_FUZZ_REQUIRE(t == KV_GGUF_BOOL || rc == KV_EFORMAT, "get_bool of a %d", t);
        rc = kv_gguf_get_str(g, key, &s, &err);
        KV_FUZZ_REQUIRE((rc == KV_OK) == (t == KV_GGUF_STRING), "get_str of a %d", t);
        if (rc == KV_OK)
            KV_FUZZ_REQUIRE((const uint8_t *)s.s >= data && s.len <= size &&
                                (const uint8_t *)s.s + s.len <= data + size,
                            "string '%s' outside the input", key);
        if (t != KV_GGUF_ARRAY)
            continue;
        uint64_t count;
        int et = kv_gguf_array_type(g, key, &count);
        size_t n;
        kv_gguf_str *strs;
        int64_t *ints;
        float *floats;
        rc = kv_gguf_get_str_array(g, key, &strs, &n, &err);
        KV_FUZZ_REQUIRE((rc == KV_OK) == (et == KV_GGUF_STRING) && (rc || n == count), "str array '%s'", key);
        for (size_t k = 0; rc == KV_OK && k < n; k++)
            KV_FUZZ_REQUIRE((const uint8_t *)strs[k].s >= data && strs[k].len <= size &&
                                (const uint8_t *)strs[k].s + strs[k].len <= data + size,
                            "'%s'[%zu] outside the input", key, k);
        free(strs);
        rc = kv_gguf_get_int_array(g, key, &ints, &n, &err);
        KV_FUZZ_REQUIRE(rc != KV_OK || n == count, "int array '%s'", key);
        free(ints);
        rc = kv_gguf_get_float_array(g, key, &floats, &n, &err);
        KV_FUZZ_REQUIRE((rc == KV_OK) == (et == KV_GGUF_F32 || et == KV_GGUF_F64) && (rc || n == count),
                        "float array '%s'", key);
        free(floats);
    }
}

static void check_tensors(const kv_gguf *g, const uint8_t *data, size_t size)
{
    const size_t n = kv_gguf_tensor_count(g);
    const uint64_t align = kv_gguf_alignment(g);
    for (size_t i = 0; i < n; i++) {
        const kv_gguf_tensor *t = kv_gguf_tensor_at(g, i);
        KV_FUZZ_REQUIRE(kv_gguf_find_tensor(g, t->name) == t, "tensor '%s' not found by name", t->name);
        KV_FUZZ_REQUIRE(t->n_dims >= 1 && t->n_dims <= KV_GGUF_MAX_DIMS, "'%s': %d dims", t->name, t->n_dims);
        uint64_t elems = 1;
        for (int d = 0; d < KV_GGUF_MAX_DIMS; d++)
            elems *= t->ne[d];
        KV_FUZZ_REQUIRE(elems == t->n_elems, "'%s': n_elems", t->name);
        const uint8_t *p = t->data;
        KV_FUZZ_REQUIRE(p >= data && t->nbytes <= size && (uint64_t)(p - data) <= size - t->nbytes,
                        "'%s' outside the input", t->name);
        KV_FUZZ_REQUIRE(t->file_offset == (uint64_t)(p - data) && t->file_offset % align == 0, "'%s' misaligned",
                        t->name);
        for (size_t k = i + 1; k < n && k < i + 64; k++) {
            const kv_gguf_tensor *u = kv_gguf_tensor_at(g, k);
            KV_FUZZ_REQUIRE(t->file_offset + t->nbytes <= u->file_offset || u->file_offset + u->nbytes <= t->file_offset,
                            "'%s' and '%s' overlap", t->name, u->name);
        }
        if (t->type < 0)
            continue;
        KV_FUZZ_REQUIRE(kv_type_bytes((kv_type)t->type, t->n_elems) == t->nbytes, "'%s': %llu bytes for %llu %s",
                        t->name, (unsigned long long)t->nbytes, (unsigned long long)t->n_elems, t->type_name);
        float *out = malloc(t->n_elems * sizeof *out);
        KV_FUZZ_REQUIRE(out, "out of memory");
        kv_type_traits((kv_type)t->type)->to_f32(t->data, out, (size_t)t->n_elems);
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kv_gguf *g = NULL;
    kv_err err = {0};
    int rc = kv_gguf_open_memory(data, size, NAME, &g, &err);
    if (rc) {
        KV_FUZZ_REQUIRE(!g, "refused but returned a handle");
        check_refusal(&err, rc);
        return 0;
    }
    check_values(g, data, size);
    check_tensors(g, data, size);
    kv_gguf_close(g);
    return 0;
}

/* ---- the generator ---- */

static void put_le(kv_fuzz_out *o, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    kv_fuzz_out_bytes(o, b, (size_t)bytes);
}

static void put_str(kv_fuzz_out *o, const char *s) { put_le(o, strlen(s), 8), kv_fuzz_out_bytes(o, s, strlen(s)); }

/* Real blocks: the tensors of quant_vectors.gguf (NULL without it; then random bytes). */
static kv_gguf *vectors;

static void load_vectors(void)
{
    static int tried;
    if (tried)
        return;
    tried = 1;
    kv_err err = {0};
    static char *bytes;
    size_t n;
    if (kv_file_read_all(KV_GGUF_DATA "/quant_vectors.gguf", &bytes, &n, &err) == KV_OK &&
        kv_gguf_open_memory(bytes, n, "quant_vectors.gguf", &vectors, &err) != KV_OK)
        vectors = NULL;
}

static const uint32_t ggml_ids[] = {0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30, 10, 24, 28, 99};
static const int kv_of_id[] = {KV_TYPE_F32,  KV_TYPE_F16,  KV_TYPE_Q4_0, KV_TYPE_Q4_1, KV_TYPE_Q5_0,
                               KV_TYPE_Q5_1, KV_TYPE_Q8_0, KV_TYPE_Q4_K, KV_TYPE_Q5_K, KV_TYPE_Q6_K,
                               KV_TYPE_BF16, -1,           -1,           -1,           -1};

static int broken(kv_fuzz_rng *r) { return !kv_fuzz_below(r, 40); }

/* A metadata value of type t (arrays: of a scalar type, a few elements). */
static void put_value(kv_fuzz_rng *r, kv_fuzz_out *o, uint32_t t, int depth)
{
    static const char *const strs[] = {"llama", "", "gpt2", "\xc3\xa9t\xc3\xa9", "<s>", "a b"};
    static const unsigned sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (t == KV_GGUF_STRING) {
        put_str(o, strs[kv_fuzz_below(r, 6)]);
    } else if (t == KV_GGUF_ARRAY && !depth) {
        uint32_t et = kv_fuzz_below(r, 13);
        if (et == KV_GGUF_ARRAY)
            et = KV_GGUF_STRING;
        uint32_t n = kv_fuzz_below(r, 6);
        put_le(o, et, 4);
        put_le(o, broken(r) ? kv_fuzz_next(r) : n, 8);
        for (uint32_t i = 0; i < n; i++)
            put_value(r, o, et, 1);
    } else {
        put_le(o, t == KV_GGUF_BOOL ? kv_fuzz_below(r, 2) : kv_fuzz_next(r), (int)sizes[t < 13 ? t : 0]);
    }
}

size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    load_vectors();
    kv_fuzz_out o = {buf, cap, 0};
    uint32_t n_kv = kv_fuzz_below(r, 6), n_t = kv_fuzz_below(r, 5);
    uint32_t align = kv_fuzz_below(r, 4) ? 32 : 8u << kv_fuzz_below(r, 4);
    int align_key = align != 32 || !kv_fuzz_below(r, 4);
    kv_fuzz_out_bytes(&o, broken(r) ? "GGUX" : "GGUF", 4);
    put_le(&o, broken(r) ? kv_fuzz_below(r, 5) : 2 + kv_fuzz_below(r, 2), 4);
    put_le(&o, broken(r) ? kv_fuzz_next(r) : n_t, 8);
    put_le(&o, broken(r) ? kv_fuzz_next(r) : n_kv + (uint32_t)align_key, 8);
    if (align_key) {
        put_str(&o, "general.alignment");
        put_le(&o, broken(r) ? KV_GGUF_U64 : KV_GGUF_U32, 4);
        put_le(&o, broken(r) ? 24 : align, 4);
    }
    for (uint32_t i = 0; i < n_kv; i++) {
        char key[32];
        snprintf(key, sizeof key, "k.%u", broken(r) ? 0 : i);
        put_str(&o, key);
        uint32_t t = kv_fuzz_below(r, 13);
        put_le(&o, broken(r) ? 13 + kv_fuzz_below(r, 3) : t, 4);
        put_value(r, &o, t, 0);
    }
    /* tensor infos, then the data each needs, at aligned offsets */
    struct {
        uint32_t id;
        uint64_t ne0, ne1, bytes, off;
        const kv_gguf_tensor *src;
    } t[5];
    uint64_t off = 0;
    for (uint32_t i = 0; i < n_t; i++) {
        size_t k = kv_fuzz_below(r, sizeof ggml_ids / sizeof *ggml_ids);
        t[i].id = ggml_ids[k];
        const struct kv_type_traits *tr = kv_of_id[k] >= 0 ? kv_type_traits((kv_type)kv_of_id[k]) : NULL;
        uint64_t be = tr ? tr->block_elems : 1, bb = tr ? tr->block_bytes : (t[i].id == 10 ? 84 : 1);
        if (t[i].id == 10)
            be = 256;
        t[i].ne0 = be * (1 + kv_fuzz_below(r, 2));
        t[i].ne1 = 1 + kv_fuzz_below(r, 3);
        t[i].bytes = t[i].ne0 / be * bb * t[i].ne1;
        t[i].off = off;
        off += (t[i].bytes + align - 1) / align * align;
        t[i].src = vectors && tr ? kv_gguf_find_tensor(vectors, tr->name) : NULL;
        char name[32];
        snprintf(name, sizeof name, "blk.%u.w", broken(r) ? 0 : i);
        put_str(&o, name);
        int n_dims = 2;
        put_le(&o, broken(r) ? 5 : (uint64_t)n_dims, 4);
        put_le(&o, broken(r) ? UINT64_C(1) << 62 : t[i].ne0, 8);
        put_le(&o, t[i].ne1, 8);
        put_le(&o, t[i].id, 4);
        put_le(&o, broken(r) ? t[i].off + align / 2 : t[i].off, 8);
    }
    while (o.len % align)
        put_le(&o, 0, 1);
    for (uint32_t i = 0; i < n_t; i++) {
        for (uint64_t b = 0; b < t[i].bytes; b++) {
            uint8_t v = t[i].src ? ((const uint8_t *)t[i].src->data)[b % t[i].src->nbytes] : (uint8_t)kv_fuzz_next(r);
            kv_fuzz_out_bytes(&o, &v, 1);
        }
        while (o.len % align)
            put_le(&o, 0, 1);
    }
    if (broken(r) && o.len)
        o.len -= kv_fuzz_below(r, (uint32_t)o.len);
    return o.len;
}
