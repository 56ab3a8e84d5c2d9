/* The synthetic-model writer: dtype converters, safetensors layout, config.json,
 * tokenizer.json, sharding, determinism, and clean failure (nothing left that looks like a
 * model). Only small shapes: the whole test runs in well under a second. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype_convert.h"
#include "json.h"
#include "kv_file.h"
#include "kv_test.h"
#include "model_shapes.h"
#include "safetensors_write.h"
#include "synth_model.h"
#include "synth_weights.h"

/* ---- helpers ---- */

static char g_root[64]; /* this run's temporary directory */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static const char *tmp_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", g_root, name);
    return buf;
}

static int file_exists(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* Number of directory entries other than . and .. (0 if the directory is missing). */
static int count_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static int write_model(const char *dir, const char *shape, kv_dtype dt, int layers, int vocab,
                       uint64_t seed, uint64_t shard, kv_err *err)
{
    kv_synth_options o = {.shape = shape, .out_dir = dir, .dtype = dt, .seed = seed,
                          .n_layers = layers, .vocab_size = vocab, .max_shard_bytes = shard};
    return kv_synth_model_write(&o, err);
}

static json_doc *load_json(const char *dir, const char *name)
{
    char path[4096], *text;
    size_t len;
    kv_err err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (kv_file_read_all(path, &text, &len, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return NULL;
    }
    json_doc *d = json_parse(text, len, &err);
    CHECK_MSG(d != NULL, "%s: %s", name, d ? "" : err.msg);
    free(text);
    return d;
}

/* A safetensors file read back whole, with its parsed header. */
typedef struct st_file {
    char *bytes;
    size_t size;
    uint64_t header_len;
    json_doc *header;
} st_file;

static int st_load(const char *dir, const char *name, st_file *f)
{
    char path[4096];
    kv_err err;
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (kv_file_read_all(path, &f->bytes, &f->size, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    CHECK(f->size >= 8);
    if (f->size < 8)
        return -1;
    for (int k = 7; k >= 0; k--)
        f->header_len = (f->header_len << 8) | (unsigned char)f->bytes[k];
    CHECK_MSG((8 + f->header_len) % 8 == 0, "data section at %llu is not 8-byte aligned",
              (unsigned long long)(8 + f->header_len));
    CHECK(8 + f->header_len <= f->size);
    if (8 + f->header_len > f->size)
        return -1;
    f->header = json_parse(f->bytes + 8, f->header_len, &err);
    CHECK_MSG(f->header != NULL, "header: %s", f->header ? "" : err.msg);
    return f->header ? 0 : -1;
}

static void st_free(st_file *f)
{
    json_doc_free(f->header);
    free(f->bytes);
}

/* The tensor's entry, its data pointer and element count (checked against dtype/shape). */
static const void *st_tensor(const st_file *f, const char *name, const char *dtype, int64_t rows,
                             int64_t cols, size_t *n_out)
{
    const json_value *t = json_get(json_root(f->header), name);
    CHECK_MSG(t && t->type == JSON_OBJECT, "tensor %s missing", name);
    if (!t)
        return NULL;
    const char *dt = json_get_string(t, "dtype");
    CHECK_MSG(dt && !strcmp(dt, dtype), "%s: dtype %s, want %s", name, dt ? dt : "?", dtype);
    const json_value *shape = json_get(t, "shape"), *offs = json_get(t, "data_offsets");
    int ndim = cols ? 2 : 1;
    CHECK_MSG(shape && shape->type == JSON_ARRAY && (int)shape->u.arr.n == ndim, "%s: rank", name);
    if (!shape || (int)shape->u.arr.n != ndim || !offs || offs->u.arr.n != 2)
        return NULL;
    CHECK_MSG(shape->u.arr.items[0].u.number == (double)rows, "%s: rows", name);
    if (cols)
        CHECK_MSG(shape->u.arr.items[1].u.number == (double)cols, "%s: cols", name);
    size_t esize = !strcmp(dtype, "F32") ? 4 : 2;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    uint64_t b = (uint64_t)offs->u.arr.items[0].u.number, e = (uint64_t)offs->u.arr.items[1].u.number;
    CHECK_MSG(e - b == n * esize, "%s: %llu bytes for %zu elements", name,
              (unsigned long long)(e - b), n);
    CHECK(8 + f->header_len + e <= f->size);
    *n_out = n;
    return f->bytes + 8 + f->header_len + b;
}

/* ---- converters ---- */

static uint32_t next_u32(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17; /* xorshift64 */
    return (uint32_t)(*s >> 32);
}

static int f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

/* x rounds to h iff no neighbour of h is nearer, and ties go to the even mantissa. */
static int f16_is_nearest(float x, uint16_t h)
{
    double v = kv_f16_to_f32_1(h), d = fabs((double)x - v);
    if ((h & 0x7fff) == 0x7c00)                       /* inf: x at or beyond 65520 */
        return fabs((double)x) >= 65520.0;
    for (int step = -1; step <= 1; step += 2) {
        uint16_t n = (uint16_t)(h + step);
        if ((h & 0x7fff) == 0 && step < 0)
            n = (uint16_t)((h ^ 0x8000) + 1);         /* below +-0 is the other sign's min */
        if ((n & 0x7c00) == 0x7c00)
            continue;
        double dn = fabs((double)x - kv_f16_to_f32_1(n));
        if (dn < d || (dn == d && (h & 1)))
            return 0;
    }
    return 1;
}

static void test_f16(void)
{
    /* Every half value: scalar and vector agree, and finite values survive f16->f32->f16. */
    static uint16_t all[65536], back[65536];
    static float wide[65536], wide_scalar[65536];
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    kv_f16_to_f32(wide, all, 65536);
    for (int i = 0; i < 65536; i++)
        wide_scalar[i] = kv_f16_to_f32_1(all[i]);
    CHECK(!memcmp(wide, wide_scalar, sizeof wide));
    kv_f32_to_f16(back, wide, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        uint16_t s = kv_f32_to_f16_1(wide[i]);
        if (s != back[i] || (f16_is_nan(all[i]) ? !f16_is_nan(s) || !isnan(wide[i])
                                                 : s != all[i]))
            bad++;
    }
    CHECK_MSG(bad == 0, "%d half values do not round-trip", bad);

    struct { float x; uint16_t h; } cases[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.0f, 0x0000}, {-0.0f, 0x8000},
        {1.0f + 0x1p-11f, 0x3c00},            /* tie: stays on the even 1.0 */
        {1.0f + 3 * 0x1p-11f, 0x3c02},        /* tie: up to the even neighbour */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01}, /* just above the tie */
        {65504.0f, 0x7bff}, {65519.0f, 0x7bff}, {65520.0f, 0x7c00}, {1e9f, 0x7c00},
        {-INFINITY, 0xfc00}, {INFINITY, 0x7c00},
        {0x1p-14f, 0x0400},                   /* smallest normal */
        {0x1p-24f, 0x0001},                   /* smallest subnormal */
        {0x1p-25f, 0x0000},                   /* tie between 0 and 2^-24: even is 0 */
        {3 * 0x1p-26f, 0x0001}, {0x1p-26f, 0x0000}, {-0x1p-24f, 0x8001},
        {0x1p-14f - 0x1p-25f, 0x0400},        /* tie at the subnormal/normal border */
        {1e-30f, 0x0000}, {0x1p-149f, 0x0000},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        uint16_t s = kv_f32_to_f16_1(cases[k].x), v;
        kv_f32_to_f16(&v, &cases[k].x, 1);
        CHECK_MSG(s == cases[k].h && v == cases[k].h, "f16(%a) = %04x / %04x, want %04x",
                  (double)cases[k].x, s, v, cases[k].h);
    }
    float nans[3] = {NAN, kv_f32_from_bits(0x7f800001u), kv_f32_from_bits(0xffc00000u)};
    for (int k = 0; k < 3; k++)
        CHECK_MSG(f16_is_nan(kv_f32_to_f16_1(nans[k])), "NaN %d became %04x", k,
                  kv_f32_to_f16_1(nans[k]));

    /* Random floats in and around the half range: vector == scalar == the nearest half. */
    enum { N = 1 << 16 };
    static float xs[N];
    static uint16_t hv[N];
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        uint32_t u = next_u32(&s);
        /* exponents 2^-28 .. 2^17 */
        xs[i] = kv_f32_from_bits((u & 0x807fffffu) | ((99u + (u >> 8) % 46u) << 23));
    }
    kv_f32_to_f16(hv, xs, N);
    bad = 0;
    for (int i = 0; i < N; i++)
        if (hv[i] != kv_f32_to_f16_1(xs[i]) || !f16_is_nearest(xs[i], hv[i]))
            bad++;
    CHECK_MSG(bad == 0, "%d random floats rounded wrongly to f16", bad);
}

static void test_bf16(void)
{
    static uint16_t all[65536];
    static float wide[65536];
    for (int i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    kv_bf16_to_f32(wide, all, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++)
        if (kv_f32_bits(wide[i]) != (uint32_t)i << 16 ||
            kv_f32_bits(kv_bf16_to_f32_1(all[i])) != kv_f32_bits(wide[i]) ||
            (!isnan(wide[i]) && kv_f32_to_bf16_1(wide[i]) != all[i]))
            bad++;
    CHECK_MSG(bad == 0, "%d bf16 values do not round-trip", bad);

    struct { uint32_t x; uint16_t h; } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie: stays even */
        {0x3f818000u, 0x3f82}, {0x3f808001u, 0x3f81}, /* tie up; above the tie */
        {0x7f7fffffu, 0x7f80},                        /* FLT_MAX rounds to inf, as in PyTorch */
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80},
        {0x00000001u, 0x0000}, {0x00008000u, 0x0000}, {0x00018000u, 0x0002}, /* subnormals */
        {0x80000000u, 0x8000},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        float x = kv_f32_from_bits(cases[k].x);
        uint16_t s = kv_f32_to_bf16_1(x), v;
        kv_f32_to_bf16(&v, &x, 1);
        CHECK_MSG(s == cases[k].h && v == cases[k].h, "bf16(%08x) = %04x / %04x, want %04x",
                  cases[k].x, s, v, cases[k].h);
    }
    /* NaN-safe: a NaN whose payload sits in the low bits must not round into inf. */
    uint32_t nans[] = {0x7f800001u, 0x7fffffffu, 0xffffffffu, 0xff800001u, 0x7fc00000u};
    enum { NN = sizeof nans / sizeof *nans };
    float nf[16];
    uint16_t nh[16];
    for (int k = 0; k < 16; k++)
        nf[k] = kv_f32_from_bits(nans[k % NN]);
    kv_f32_to_bf16(nh, nf, 16);
    for (int k = 0; k < 16; k++)
        CHECK_MSG(isnan(kv_bf16_to_f32_1(nh[k])) && nh[k] == kv_f32_to_bf16_1(nf[k]),
                  "NaN %08x -> %04x", nans[k % NN], nh[k]);

    enum { N = 1 << 16 };
    static float xs[N];
    static uint16_t hv[N];
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N; i++)
        xs[i] = kv_f32_from_bits(next_u32(&s));
    kv_f32_to_bf16(hv, xs, N);
    bad = 0;
    for (int i = 0; i < N; i++) {
        if (hv[i] != kv_f32_to_bf16_1(xs[i])) {
            bad++;
            continue;
        }
        if (isnan(xs[i]) || isinf(kv_bf16_to_f32_1(hv[i])))
            continue;
        /* nearest: the error is at most half a bf16 ulp (2^-8 relative), ties to even */
        uint32_t u = kv_f32_bits(xs[i]), lowbits = u & 0xffff;
        uint16_t want = (uint16_t)((u >> 16) + (lowbits > 0x8000 || (lowbits == 0x8000 && (u >> 16 & 1))));
        if (hv[i] != want)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d random floats rounded wrongly to bf16", bad);
}

/* ---- the model directory ---- */

typedef struct expect_tensor {
    char name[96];
    int64_t rows, cols;
} expect_tensor;

/* The HF names and shapes, in file order, for the given dims. */
static size_t expected_tensors(expect_tensor *t, int h, int ff, int layers, int heads, int kv,
                               int vocab, int tied)
{
    int hd = h / heads;
    size_t n = 0;
#define T(r, c, ...)                                                           \
    do {                                                                       \
        snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__);                    \
        t[n].rows = (r), t[n].cols = (c);                                      \
        n++;                                                                   \
    } while (0)
    T(vocab, h, "model.embed_tokens.weight");
    for (int i = 0; i < layers; i++) {
        T(h, 0, "model.layers.%d.input_layernorm.weight", i);
        T(heads * hd, h, "model.layers.%d.self_attn.q_proj.weight", i);
        T(kv * hd, h, "model.layers.%d.self_attn.k_proj.weight", i);
        T(kv * hd, h, "model.layers.%d.self_attn.v_proj.weight", i);
        T(h, heads * hd, "model.layers.%d.self_attn.o_proj.weight", i);
        T(h, 0, "model.layers.%d.post_attention_layernorm.weight", i);
        T(ff, h, "model.layers.%d.mlp.gate_proj.weight", i);
        T(ff, h, "model.layers.%d.mlp.up_proj.weight", i);
        T(h, ff, "model.layers.%d.mlp.down_proj.weight", i);
    }
    T(h, 0, "model.norm.weight");
    if (!tied)
        T(vocab, h, "lm_head.weight");
#undef T
    return n;
}

/* Header entries in file order, contiguous from 0, covering the file exactly. */
static void check_layout(const st_file *f, const expect_tensor *t, size_t n, const char *dtype)
{
    const json_value *root = json_root(f->header);
    CHECK(root->type == JSON_OBJECT && root->u.obj.n == n + 1);
    const char *fmt = json_get_string(json_get(root, "__metadata__"), "format");
    CHECK(fmt && !strcmp(fmt, "pt"));
    uint64_t off = 0;
    size_t esize = !strcmp(dtype, "F32") ? 4 : 2;
    for (size_t k = 0; k < n && k + 1 < root->u.obj.n; k++) {
        const json_member *m = &root->u.obj.members[k + 1];
        CHECK_MSG(!strcmp(m->key, t[k].name), "tensor %zu is %s, want %s", k, m->key, t[k].name);
        size_t elems;
        const void *data = st_tensor(f, t[k].name, dtype, t[k].rows, t[k].cols, &elems);
        const json_value *offs = json_get(&m->value, "data_offsets");
        CHECK_MSG(data && (uint64_t)offs->u.arr.items[0].u.number == off, "%s not contiguous",
                  t[k].name);
        off += elems * esize;
    }
    CHECK_MSG(8 + f->header_len + off == f->size, "file size %zu, header implies %llu", f->size,
              (unsigned long long)(8 + f->header_len + off));
}

static void check_config(const char *dir, int layers, int vocab, const char *torch_dtype)
{
    json_doc *d = load_json(dir, "config.json");
    if (!d)
        return;
    const json_value *c = json_root(d);
    int64_t v;
    double x;
    const char *s;
    CHECK((s = json_get_string(c, "model_type")) && !strcmp(s, "llama"));
    const json_value *arch = json_get(c, "architectures");
    CHECK(arch && arch->type == JSON_ARRAY && arch->u.arr.n == 1 &&
          !strcmp(arch->u.arr.items[0].u.str.s, "LlamaForCausalLM"));
    CHECK(json_get_int(c, "hidden_size", &v) && v == 128);
    CHECK(json_get_int(c, "intermediate_size", &v) && v == 352);
    CHECK(json_get_int(c, "num_hidden_layers", &v) && v == layers);
    CHECK(json_get_int(c, "num_attention_heads", &v) && v == 8);
    CHECK(json_get_int(c, "num_key_value_heads", &v) && v == 2);
    CHECK(json_get_int(c, "head_dim", &v) && v == 16);
    CHECK(json_get_int(c, "vocab_size", &v) && v == vocab);
    CHECK(json_get_int(c, "max_position_embeddings", &v) && v == 1024);
    CHECK(json_get_number(c, "rms_norm_eps", &x) && x == 1e-5);
    CHECK(json_get_number(c, "rope_theta", &x) && x == 10000.0);
    CHECK(json_get(c, "rope_scaling") && json_get(c, "rope_scaling")->type == JSON_NULL);
    CHECK((s = json_get_string(c, "hidden_act")) && !strcmp(s, "silu"));
    int tied = -1;
    CHECK(json_get_bool(c, "tie_word_embeddings", &tied) && tied == 0);
    CHECK(json_get_int(c, "bos_token_id", &v) && v == vocab - 2); /* the tokenizer's specials */
    CHECK(json_get_int(c, "eos_token_id", &v) && v == vocab - 1);
    CHECK((s = json_get_string(c, "torch_dtype")) && !strcmp(s, torch_dtype));
    json_doc_free(d);
}

static const char kRegex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                             "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static void check_tokenizer(const char *dir, int vocab)
{
    json_doc *d = load_json(dir, "tokenizer.json");
    if (!d)
        return;
    const json_value *root = json_root(d), *model = json_get(root, "model");
    const char *s;
    int b;
    CHECK((s = json_get_string(model, "type")) && !strcmp(s, "BPE"));
    CHECK(json_get_bool(model, "ignore_merges", &b) && b == 1);
    CHECK(json_get_bool(model, "byte_fallback", &b) && b == 0);
    CHECK(json_get(root, "normalizer") && json_get(root, "normalizer")->type == JSON_NULL);
    const json_value *pre = json_get(json_get(root, "pre_tokenizer"), "pretokenizers");
    CHECK(pre && pre->type == JSON_ARRAY && pre->u.arr.n == 2);
    if (pre && pre->u.arr.n == 2) {
        s = json_get_string(json_get(&pre->u.arr.items[0], "pattern"), "Regex");
        CHECK_MSG(s && !strcmp(s, kRegex), "regex %s", s ? s : "(none)");
        CHECK((s = json_get_string(&pre->u.arr.items[1], "type")) && !strcmp(s, "ByteLevel"));
    }
    CHECK((s = json_get_string(json_get(root, "decoder"), "type")) && !strcmp(s, "ByteLevel"));

    /* ids: vocab 0..vocab-3 each exactly once, specials at the last two */
    const json_value *voc = json_get(model, "vocab");
    CHECK(voc && voc->type == JSON_OBJECT && (int)voc->u.obj.n == vocab - 2);
    if (!voc || (int)voc->u.obj.n != vocab - 2) {
        json_doc_free(d);
        return;
    }
    const char **by_id = calloc((size_t)vocab, sizeof *by_id);
    for (size_t k = 0; k < voc->u.obj.n; k++) {
        double id = voc->u.obj.members[k].value.u.number;
        CHECK_MSG(id >= 0 && id < vocab - 2 && !by_id[(int)id], "bad or repeated id %g", id);
        if (id >= 0 && id < vocab - 2)
            by_id[(int)id] = voc->u.obj.members[k].key;
    }
    const json_value *added = json_get(root, "added_tokens");
    CHECK(added && added->type == JSON_ARRAY && added->u.arr.n == 2);
    for (size_t k = 0; added && k < added->u.arr.n && k < 2; k++) {
        int64_t id;
        int special = 0;
        CHECK(json_get_int(&added->u.arr.items[k], "id", &id) && id == vocab - 2 + (int)k);
        CHECK(json_get_bool(&added->u.arr.items[k], "special", &special) && special);
        s = json_get_string(&added->u.arr.items[k], "content");
        CHECK(s && !strcmp(s, k ? "<|end_of_text|>" : "<|begin_of_text|>"));
    }
    /* GPT-2 byte tokens at their byte value */
    CHECK(by_id[0] && !strcmp(by_id[0], "\xc4\x80"));      /* U+0100 */
    CHECK(by_id[32] && !strcmp(by_id[32], "\xc4\xa0"));    /* 'Ġ' */
    CHECK(by_id[33] && !strcmp(by_id[33], "!"));
    CHECK(by_id[34] && !strcmp(by_id[34], "\""));
    CHECK(by_id[92] && !strcmp(by_id[92], "\\"));
    CHECK(by_id[127] && !strcmp(by_id[127], "\xc4\xa1"));  /* DEL: U+0121 */
    CHECK(by_id[173] && !strcmp(by_id[173], "\xc5\x83"));  /* soft hyphen: U+0143 */
    CHECK(by_id[255] && !strcmp(by_id[255], "\xc3\xbf"));  /* 'ÿ' */
    /* merges: rank r makes id 256 + r from two existing tokens */
    const json_value *merges = json_get(model, "merges");
    CHECK(merges && merges->type == JSON_ARRAY && (int)merges->u.arr.n == vocab - 2 - 256);
    int bad = 0;
    for (size_t r = 0; merges && r < merges->u.arr.n && (int)r < vocab - 2 - 256; r++) {
        const char *m = merges->u.arr.items[r].u.str.s, *sp = strchr(m, ' ');
        const char *made = by_id[256 + r];
        if (!sp || strchr(sp + 1, ' ') || !made) {
            bad++;
            continue;
        }
        size_t nl = (size_t)(sp - m);
        int left = 0, right = 0;
        for (int id = 0; id < vocab - 2; id++) {
            left |= by_id[id] && strlen(by_id[id]) == nl && !memcmp(by_id[id], m, nl);
            right |= by_id[id] && !strcmp(by_id[id], sp + 1);
        }
        if (!left || !right || strlen(made) != nl + strlen(sp + 1) || memcmp(made, m, nl) ||
            strcmp(made + nl, sp + 1))
            bad++;
    }
    CHECK_MSG(bad == 0, "%d merges do not build their token from existing ones", bad);
    free(by_id);
    json_doc_free(d);
}

/* Tiny f32: layout, config, tokenizer, and the values are exactly the documented generator's. */
static void test_tiny_f32(void)
{
    char dir[128];
    tmp_path(dir, sizeof dir, "tiny_f32");
    kv_err err;
    int rc = write_model(dir, "tiny", KV_DTYPE_F32, 0, 0, 0, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc)
        return;
    CHECK_EQ_INT(count_entries(dir), 3); /* config, tokenizer, weights: no leftovers */
    st_file f;
    if (st_load(dir, "model.safetensors", &f) == 0) {
        static expect_tensor t[64];
        size_t n = expected_tensors(t, 128, 352, 4, 8, 2, 1024, 0);
        check_layout(&f, t, n, "F32");
        size_t elems;
        const float *q = st_tensor(&f, "model.layers.0.self_attn.q_proj.weight", "F32", 128, 128, &elems);
        const float *norm = st_tensor(&f, "model.norm.weight", "F32", 128, 0, &elems);
        if (q && norm) {
            static float want[128 * 128], got[128 * 128];
            kv_synth_rng rng;
            kv_synth_rng_init(&rng, 0, "model.layers.0.self_attn.q_proj.weight");
            float amp = sqrtf(3.0f) * (0.5f / sqrtf(128.0f));
            kv_synth_fill_uniform(&rng, 0, want, 128 * 128, 0.0f, amp);
            memcpy(got, q, sizeof got); /* the data is 8-aligned in the file, not in our buffer */
            CHECK(!memcmp(want, got, sizeof got));
            double sum = 0, sq = 0;
            for (int i = 0; i < 128 * 128; i++) {
                sum += got[i], sq += (double)got[i] * got[i];
                CHECK_MSG(fabsf(got[i]) <= amp, "q[%d] = %g", i, got[i]);
            }
            double std = sqrt(sq / (128 * 128) - (sum / (128 * 128)) * (sum / (128 * 128)));
            CHECK_MSG(fabs(std - 0.5 / sqrt(128.0)) < 0.002, "q std %g", std);
            float nv[128];
            memcpy(nv, norm, sizeof nv);
            for (int i = 0; i < 128; i++)
                CHECK_MSG(fabsf(nv[i] - 1.0f) < 0.02f, "norm[%d] = %g", i, nv[i]);
        }
        st_free(&f);
    }
    check_config(dir, 4, 1024, "float32");
    check_tokenizer(dir, 1024);
}

/* The 1-layer vocab-300 variant in f32, f16 and bf16 with one seed: every half value is the
 * f32 value converted, and layer 0 equals the full model's layer 0 (name-keyed values). */
static void test_variants(void)
{
    char d32[128], d16[128], dbf[128], full[128];
    tmp_path(d32, sizeof d32, "v_f32");
    tmp_path(d16, sizeof d16, "v_f16");
    tmp_path(dbf, sizeof dbf, "v_bf16");
    tmp_path(full, sizeof full, "tiny_f32");
    kv_err err;
    int rc = write_model(d32, "tiny", KV_DTYPE_F32, 1, 300, 0, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    rc |= write_model(d16, "tiny", KV_DTYPE_F16, 1, 300, 0, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    rc |= write_model(dbf, "tiny", KV_DTYPE_BF16, 1, 300, 0, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc)
        return;
    check_config(d16, 1, 300, "float16");
    check_config(dbf, 1, 300, "bfloat16");
    check_tokenizer(d16, 300);
    st_file a, h, bf, fl;
    if (st_load(d32, "model.safetensors", &a) || st_load(d16, "model.safetensors", &h) ||
        st_load(dbf, "model.safetensors", &bf) || st_load(full, "model.safetensors", &fl))
        return;
    static expect_tensor t[16];
    size_t n = expected_tensors(t, 128, 352, 1, 8, 2, 300, 0);
    check_layout(&a, t, n, "F32");
    check_layout(&h, t, n, "F16");
    check_layout(&bf, t, n, "BF16");
    int bad16 = 0, badbf = 0;
    for (size_t k = 0; k < n; k++) {
        size_t na, nh, nb;
        const char *pa = st_tensor(&a, t[k].name, "F32", t[k].rows, t[k].cols, &na);
        const char *ph = st_tensor(&h, t[k].name, "F16", t[k].rows, t[k].cols, &nh);
        const char *pb = st_tensor(&bf, t[k].name, "BF16", t[k].rows, t[k].cols, &nb);
        for (size_t i = 0; pa && ph && pb && i < na; i++) {
            float x;
            uint16_t vh, vb;
            memcpy(&x, pa + 4 * i, 4);
            memcpy(&vh, ph + 2 * i, 2);
            memcpy(&vb, pb + 2 * i, 2);
            bad16 += vh != kv_f32_to_f16_1(x) || fabsf(kv_f16_to_f32_1(vh) - x) > 1e-3f * fabsf(x) + 1e-7f;
            badbf += vb != kv_f32_to_bf16_1(x) || fabsf(kv_bf16_to_f32_1(vb) - x) > 4e-3f * fabsf(x);
        }
    }
    CHECK_MSG(bad16 == 0 && badbf == 0, "%d f16 and %d bf16 values differ from f32", bad16, badbf);
    size_t n1, n2;
    const char *l1 = st_tensor(&a, "model.layers.0.mlp.down_proj.weight", "F32", 128, 352, &n1);
    const char *l2 = st_tensor(&fl, "model.layers.0.mlp.down_proj.weight", "F32", 128, 352, &n2);
    CHECK(l1 && l2 && !memcmp(l1, l2, n1 * 4));
    st_free(&a);
    st_free(&h);
    st_free(&bf);
    st_free(&fl);
}

static void test_determinism(void)
{
    char a[128], b[128], c[128], pa[160], pb[160], pc[160];
    tmp_path(a, sizeof a, "seed_a");
    tmp_path(b, sizeof b, "seed_b");
    tmp_path(c, sizeof c, "seed_c");
    kv_err err;
    int rc = write_model(a, "tiny", KV_DTYPE_BF16, 2, 0, 42, 0, &err);
    rc |= write_model(b, "tiny", KV_DTYPE_BF16, 2, 0, 42, 0, &err);
    rc |= write_model(c, "tiny", KV_DTYPE_BF16, 2, 0, 43, 0, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc)
        return;
    char *x, *y, *z;
    size_t nx, ny, nz;
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    snprintf(pc, sizeof pc, "%s/model.safetensors", c);
    if (kv_file_read_all(pa, &x, &nx, &err) || kv_file_read_all(pb, &y, &ny, &err) ||
        kv_file_read_all(pc, &z, &nz, &err)) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    CHECK(nx == ny && !memcmp(x, y, nx));                  /* same seed: same bytes */
    CHECK(nx == nz && memcmp(x + 4096, z + 4096, nx - 4096)); /* another seed: other values */
    free(x);
    free(y);
    free(z);
}

/* HF sharding: model-0000K-of-0000N files + an index whose weight_map and total_size agree
 * with the shards' own headers. */
static void test_sharded(void)
{
    char dir[128];
    tmp_path(dir, sizeof dir, "sharded");
    kv_err err;
    int rc = write_model(dir, "tiny", KV_DTYPE_BF16, 0, 0, 0, 600 * 1024, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc)
        return;
    CHECK(!file_exists(dir, "model.safetensors"));
    json_doc *idx = load_json(dir, "model.safetensors.index.json");
    if (!idx)
        return;
    const json_value *map = json_get(json_root(idx), "weight_map");
    int64_t total = 0;
    CHECK(json_get_int(json_get(json_root(idx), "metadata"), "total_size", &total));
    static expect_tensor t[64];
    size_t n = expected_tensors(t, 128, 352, 4, 8, 2, 1024, 0);
    CHECK(map && map->type == JSON_OBJECT && map->u.obj.n == n);
    /* tiny bf16 is ~1.9 MB: several shards of <= 600 KiB, named with their total */
    int n_shards = 0;
    for (int total_n = 2; total_n < 20 && !n_shards; total_n++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", 1, total_n);
        if (file_exists(dir, name))
            n_shards = total_n;
    }
    CHECK_MSG(n_shards >= 3, "%d shards", n_shards);
    CHECK_EQ_INT(count_entries(dir), n_shards + 3);
    uint64_t sum = 0;
    size_t seen = 0;
    for (int s = 0; s < n_shards; s++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        st_file f;
        if (st_load(dir, name, &f))
            continue;
        const json_value *root = json_root(f.header);
        uint64_t off = 0;
        for (size_t k = 1; k < root->u.obj.n; k++, seen++) {
            const json_member *m = &root->u.obj.members[k];
            const char *where = json_get_string(map, m->key);
            CHECK_MSG(where && !strcmp(where, name), "%s listed in %s", m->key, where ? where : "-");
            CHECK_MSG(seen < n && !strcmp(m->key, t[seen].name), "shard order: %s", m->key);
            const json_value *offs = json_get(&m->value, "data_offsets");
            CHECK((uint64_t)offs->u.arr.items[0].u.number == off);
            off = (uint64_t)offs->u.arr.items[1].u.number;
        }
        CHECK(8 + f.header_len + off == f.size);
        CHECK_MSG(off <= 600 * 1024, "shard %d holds %llu bytes", s + 1, (unsigned long long)off);
        sum += off;
        st_free(&f);
    }
    CHECK_EQ_INT(seen, n);
    CHECK_EQ_INT(sum, total);
    json_doc_free(idx);
}

/* ---- failures leave nothing that looks like a model ---- */

static int looks_clean(const char *dir)
{
    return !file_exists(dir, "config.json") && !file_exists(dir, "model.safetensors") &&
           !file_exists(dir, "model.safetensors.tmp") && !file_exists(dir, "tokenizer.json") &&
           !file_exists(dir, "model.safetensors.index.json");
}

static void test_errors(void)
{
    char dir[128], path[160];
    kv_err err;
    tmp_path(dir, sizeof dir, "errors");

    int rc = write_model(dir, "llama5-900b", KV_DTYPE_F32, 0, 0, 0, 0, &err);
    CHECK_EQ_INT(rc, KV_EINVAL);
    CHECK_MSG(strstr(err.msg, "llama5-900b") && strstr(err.msg, "llama3-8b") &&
              strstr(err.msg, "tiny"), "message: %s", err.msg);
    rc = write_model(dir, "tiny", KV_DTYPE_F32, 0, 257, 0, 0, &err);
    CHECK_EQ_INT(rc, KV_EINVAL);
    CHECK_MSG(strstr(err.msg, "258"), "message: %s", err.msg);
    rc = write_model(dir, "tiny", (kv_dtype)7, 0, 0, 0, 0, &err);
    CHECK_EQ_INT(rc, KV_EINVAL);
    rc = write_model(NULL, "tiny", KV_DTYPE_F32, 0, 0, 0, 0, &err);
    CHECK_EQ_INT(rc, KV_EINVAL);
    CHECK_EQ_INT(count_entries(dir), 0); /* option errors create nothing */

    /* Unwritable: a regular file where a directory should be (works even as root). */
    tmp_path(path, sizeof path, "a_file");
    CHECK(kv_file_write_all(path, "x", 1, &err) == 0);
    char sub[200];
    snprintf(sub, sizeof sub, "%s/model", path);
    rc = write_model(sub, "tiny", KV_DTYPE_F32, 1, 300, 0, 0, &err);
    CHECK_MSG(rc == KV_EIO && strstr(err.msg, "a_file"), "rc %d: %s", rc, err.msg);

    /* An existing model is not clobbered without force, and is replaced with it. */
    tmp_path(path, sizeof path, "existing");
    CHECK(write_model(path, "tiny", KV_DTYPE_F32, 1, 300, 0, 0, &err) == 0);
    rc = write_model(path, "tiny", KV_DTYPE_F16, 1, 300, 0, 0, &err);
    CHECK_MSG(rc == KV_ESTATE && strstr(err.msg, "--force"), "rc %d: %s", rc, err.msg);
    kv_synth_options o = {.shape = "tiny", .out_dir = path, .dtype = KV_DTYPE_BF16, .n_layers = 1,
                          .vocab_size = 300, .max_shard_bytes = 100 * 1024, .force = 1};
    rc = kv_synth_model_write(&o, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK(!file_exists(path, "model.safetensors") && file_exists(path, "model.safetensors.index.json"));
    o.max_shard_bytes = 0; /* back to one file: the old shards and index must go */
    CHECK(kv_synth_model_write(&o, &err) == 0);
    CHECK_EQ_INT(count_entries(path), 3);

    /* A full disk, simulated with the file size limit: fails cleanly and removes its files. */
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = {.rlim_cur = 1 << 20, .rlim_max = old.rlim_max};
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    tmp_path(path, sizeof path, "full");
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        rc = write_model(path, "tiny", KV_DTYPE_F32, 0, 0, 0, 0, &err);
        CHECK_MSG(rc == KV_EIO, "rc %d: %s", rc, err.msg);
        CHECK_EQ_INT(count_entries(path), 0);
        /* Sharded, failing at the 180 KB gate_proj after three small shards were complete:
         * those must be removed too. */
        lim.rlim_cur = 170 * 1024;
        setrlimit(RLIMIT_FSIZE, &lim);
        rc = write_model(path, "tiny", KV_DTYPE_F32, 1, 300, 0, 100 * 1024, &err);
        CHECK_MSG(rc == KV_EIO && strstr(err.msg, "model-00004-of-"), "rc %d: %s", rc, err.msg);
        CHECK_EQ_INT(count_entries(path), 0);
        setrlimit(RLIMIT_FSIZE, &old);
    }
    signal(SIGXFSZ, old_handler);
    CHECK(looks_clean(path));
}

/* The writer on its own: sizes must add up, and a failed write leaves no file. */
static void test_writer(void)
{
    char path[160], tmp[170];
    kv_err err;
    tmp_path(path, sizeof path, "w.safetensors");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    kv_st_tensor_desc d[2] = {{.name = "a", .dtype = KV_DTYPE_F32, .n_dims = 2, .shape = {3, 5}},
                              {.name = "b\"q", .dtype = KV_DTYPE_BF16, .n_dims = 1, .shape = {7}}};
    static char zeros[4096];
    kv_st_writer *w;
    CHECK(kv_st_writer_open(path, d, 2, &w, &err) == 0);
    CHECK(kv_st_writer_write(w, zeros, 60, &err) == 0);
    CHECK(kv_st_writer_write(w, zeros, 15, &err) == KV_ESTATE); /* 14 bytes of b remain */
    CHECK(kv_st_writer_write(w, zeros, 13, &err) == 0);
    CHECK(kv_st_writer_close(w, &err) == KV_ESTATE);           /* one byte short */
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0);

    CHECK(kv_st_writer_open(path, d, 2, &w, &err) == 0);
    CHECK(kv_st_writer_write(w, zeros, 74, &err) == 0);
    CHECK(access(path, F_OK) != 0);                            /* invisible until closed */
    CHECK(kv_st_writer_close(w, &err) == 0);
    st_file f;
    if (st_load(g_root, "w.safetensors", &f) == 0) {
        uint64_t size = 0;
        CHECK(kv_st_writer_file_size(d, 2, &size, &err) == 0 && size == f.size);
        const json_value *b = json_get(json_root(f.header), "b\"q"); /* escaped in the header */
        CHECK(b && json_get_string(b, "dtype") && !strcmp(json_get_string(b, "dtype"), "BF16"));
        st_free(&f);
    }
    kv_st_tensor_desc dup[2] = {d[0], d[0]};
    CHECK(kv_st_writer_open(path, dup, 2, &w, &err) == KV_EINVAL);
    kv_st_tensor_desc neg = {.name = "n", .dtype = KV_DTYPE_F32, .n_dims = 1, .shape = {-1}};
    CHECK(kv_st_writer_open(path, &neg, 1, &w, &err) == KV_EINVAL);

    /* A write error mid-file (file size limit after the header): reported, the temporary
     * removed, and the complete file of the same name from before left alone. */
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    kv_st_tensor_desc big = {.name = "big", .dtype = KV_DTYPE_F32, .n_dims = 1, .shape = {4096}};
    CHECK(kv_st_writer_open(path, &big, 1, &w, &err) == 0);
    struct rlimit lim = {.rlim_cur = 1024, .rlim_max = old.rlim_max};
    if (w && setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        int rc = 0;
        for (int k = 0; k < 4 && rc == 0; k++)
            rc = kv_st_writer_write(w, zeros, sizeof zeros, &err);
        if (rc == 0)
            rc = kv_st_writer_close(w, &err);
        else
            kv_st_writer_abort(w);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK_MSG(rc == KV_EIO, "rc %d: %s", rc, err.msg);
        /* the temporary is gone and the earlier complete file is untouched */
        struct stat st;
        uint64_t size = 0;
        kv_st_writer_file_size(d, 2, &size, &err);
        CHECK(access(tmp, F_OK) != 0 && stat(path, &st) == 0 && (uint64_t)st.st_size == size);
    } else if (w) {
        kv_st_writer_abort(w);
    }
    signal(SIGXFSZ, old_handler);
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/kv_test_synth.XXXXXX");
    if (!mkdtemp(g_root)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_f16();
    test_bf16();
    test_writer();
    test_tiny_f32();
    test_variants();
    test_determinism();
    test_sharded();
    test_errors();
    rm_rf(g_root);
    return kv_test_result();
}
