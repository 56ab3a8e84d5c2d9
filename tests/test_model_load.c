/* Model loading: a hand-built tiny checkpoint loads (f32, f16, bf16, sharded), and every
 * kind of broken model directory gets a clear error naming the file and tensor. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype_convert.h"
#include "kv_test.h"
#include "model.h"
#include "safetensors.h"

#define HID 8
#define FF 12
#define VOCAB 16
#define NH 2
#define NKV 1
#define HD 4

typedef struct tensor_spec { char name[96]; int64_t rows, cols; } tensor_spec;

static char tmpdir[256];

static int specs(tensor_spec *t)
{
    int n = 0;
    snprintf(t[n].name, 96, "model.embed_tokens.weight"); t[n].rows = VOCAB; t[n++].cols = HID;
    const char *sfx[] = {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                         "mlp.down_proj"};
    const int64_t rows[] = {HID, NH * HD, NKV * HD, NKV * HD, HID, HID, FF, FF, HID};
    const int64_t cols[] = {0, HID, HID, HID, NH * HD, 0, HID, HID, FF};
    for (int i = 0; i < 9; i++) {
        snprintf(t[n].name, 96, "model.layers.0.%s.weight", sfx[i]);
        t[n].rows = rows[i];
        t[n++].cols = cols[i];
    }
    snprintf(t[n].name, 96, "model.norm.weight"); t[n].rows = HID; t[n++].cols = 0;
    return n;
}

static void write_bytes(const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
}

static void write_text(const char *name, const char *text) { write_bytes(name, text, strlen(text)); }

static const char *good_config =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":12,"
    "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":16,"
    "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":true,"
    "\"bos_token_id\":1,\"eos_token_id\":[2,3]}";

/* Writes tensors [first, last) of the spec list to `file`, as `dtype`. mutate: 1 = wrong
 * shape for the q_proj, 2 = truncate the data, 3 = header length beyond the file, 4 = bad
 * JSON header, 5 = I8 dtype, 6 = skip q_proj. Value of element i of tensor k: k + i/64. */
static void write_safetensors(const char *file, int first, int last, const char *dtype, int mutate)
{
    tensor_spec t[16];
    int n = specs(t);
    if (last > n) last = n;
    size_t esz = strcmp(dtype, "F32") ? 2 : 4;
    char header[8192] = "{\"__metadata__\":{\"format\":\"pt\"}";
    size_t off = 0;
    for (int k = first; k < last; k++) {
        if (mutate == 6 && strstr(t[k].name, "q_proj")) continue;
        int64_t rows = t[k].rows + (mutate == 1 && strstr(t[k].name, "q_proj") ? 1 : 0);
        size_t numel = (size_t)rows * (size_t)(t[k].cols ? t[k].cols : 1);
        char shape[64];
        if (t[k].cols) snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)rows, (long long)t[k].cols);
        else snprintf(shape, sizeof shape, "[%lld]", (long long)rows);
        snprintf(header + strlen(header), sizeof header - strlen(header),
                 ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", t[k].name,
                 mutate == 5 ? "I8" : dtype, shape, off, off + numel * esz);
        off += numel * esz;
    }
    strcat(header, mutate == 4 ? "," : "}");
    while ((8 + strlen(header)) % 8) strcat(header, " ");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, file);
    FILE *f = fopen(path, "wb");
    uint64_t hlen = strlen(header) + (mutate == 3 ? 1000000 : 0);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (int k = first; k < last; k++) {
        if (mutate == 6 && strstr(t[k].name, "q_proj")) continue;
        int64_t rows = t[k].rows + (mutate == 1 && strstr(t[k].name, "q_proj") ? 1 : 0);
        size_t numel = (size_t)rows * (size_t)(t[k].cols ? t[k].cols : 1);
        for (size_t i = 0; i < numel; i++) {
            float v = (float)k + (float)i / 64.0f;
            if (esz == 4) { fwrite(&v, 4, 1, f); continue; }
            uint16_t h = strcmp(dtype, "F16") ? kv_f32_to_bf16_1(v) : kv_f32_to_f16_1(v);
            fwrite(&h, 2, 1, f);
        }
    }
    fclose(f);
    if (mutate == 2) truncate(path, (off_t)(8 + strlen(header) + off / 2));
}

static void clean_dir(void)
{
    const char *names[] = {"config.json", "model.safetensors", "model.safetensors.index.json", "a.safetensors",
                           "b.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
}

/* Loads tmpdir expecting failure with `code` and every needle in the message. */
static void expect_error(const char *what, int code, const char *needle1, const char *needle2)
{
    kv_model *m = NULL;
    kv_err err = {0};
    int rc = kv_model_load(tmpdir, &m, &err);
    CHECK_MSG(rc == code, "%s: rc %d (%s), expected %d", what, rc, err.msg, code);
    CHECK_MSG(m == NULL, "%s: model returned on error", what);
    CHECK_MSG(strstr(err.msg, needle1) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle1);
    if (needle2) CHECK_MSG(strstr(err.msg, needle2) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle2);
    kv_model_free(m);
}

static void expect_ok(const char *what, kv_dtype dt)
{
    kv_model *m = NULL;
    kv_err err = {0};
    int rc = kv_model_load(tmpdir, &m, &err);
    CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
    if (rc) return;
    CHECK(m->cfg.hidden_size == HID && m->cfg.n_kv_heads == NKV && m->cfg.head_dim == HD);
    CHECK(m->cfg.n_eos == 2 && kv_model_config_is_eos(&m->cfg, 3) && !kv_model_config_is_eos(&m->cfg, 1));
    CHECK(m->lm_head.data == m->embed.data);
    /* Weights kept as stored: the checkpoint's dtype, no copy. */
    const kv_type want = dt == KV_DTYPE_F16 ? KV_TYPE_F16 : dt == KV_DTYPE_BF16 ? KV_TYPE_BF16 : KV_TYPE_F32;
    CHECK_MSG(m->layers[0].wq.type == want, "%s: wq is %s", what, kv_type_name(m->layers[0].wq.type));
    CHECK_MSG(strstr(m->weight_types, kv_type_name(want)) != NULL, "%s: weight types %s", what, m->weight_types);
    /* tensor 2 = q_proj, element 5 = 2 + 5/64 (exact in f16 and bf16) */
    float row[HID];
    kv_type_traits(m->layers[0].wq.type)->to_f32(kv_weight_row(&m->layers[0].wq, 0), row, (size_t)m->layers[0].wq.cols);
    CHECK_MSG(row[5] == 2.0f + 5.0f / 64.0f, "%s: wq[5] = %g", what, (double)row[5]);
    CHECK(m->final_norm[0] == 10.0f);
    kv_model_free(m);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kvserve-model-XXXXXX");
    if (!mkdtemp(tmpdir)) KV_TEST_SKIP("cannot create a temp dir");

    expect_error("missing config", KV_ENOTFOUND, "config.json", NULL);
    write_text("config.json", good_config);
    expect_error("missing weights", KV_ENOTFOUND, "model.safetensors", NULL);

    const char *dts[] = {"F32", "F16", "BF16"};
    const kv_dtype kdt[] = {KV_DTYPE_F32, KV_DTYPE_F16, KV_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        write_safetensors("model.safetensors", 0, 99, dts[i], 0);
        expect_ok(dts[i], kdt[i]);
    }
    write_safetensors("model.safetensors", 0, 99, "F32", 1);
    expect_error("wrong shape", KV_EFORMAT, "model.layers.0.self_attn.q_proj.weight", "shape [9, 8]");
    write_safetensors("model.safetensors", 0, 99, "F32", 2);
    expect_error("truncated data", KV_EFORMAT, "truncated", "model.safetensors");
    write_safetensors("model.safetensors", 0, 99, "F32", 3);
    expect_error("header length", KV_EFORMAT, "header length", "model.safetensors");
    write_safetensors("model.safetensors", 0, 99, "F32", 4);
    expect_error("bad JSON header", KV_EFORMAT, "bad header", "JSON");
    write_safetensors("model.safetensors", 0, 99, "F32", 5);
    expect_error("I8 dtype", KV_EUNSUPPORTED, "unsupported dtype I8", "model.embed_tokens.weight");
    write_safetensors("model.safetensors", 0, 99, "F32", 6);
    expect_error("missing tensor", KV_EFORMAT, "model.layers.0.self_attn.q_proj.weight", "missing");
    write_text("model.safetensors", "");
    expect_error("empty file", KV_EFORMAT, "empty", NULL);
    write_bytes("model.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{}", 10);
    expect_error("short header", KV_EFORMAT, "header length", NULL);

    /* Sharded: tensors 0..5 in a.safetensors, the rest in b.safetensors. */
    write_safetensors("a.safetensors", 0, 6, "F32", 0);
    write_safetensors("b.safetensors", 6, 99, "F32", 0);
    tensor_spec t[16];
    int n = specs(t);
    char index[4096] = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
    for (int k = 0; k < n; k++)
        snprintf(index + strlen(index), sizeof index - strlen(index), "%s\"%s\":\"%s\"", k ? "," : "", t[k].name,
                 k < 6 ? "a.safetensors" : "b.safetensors");
    strcat(index, "}}");
    write_text("model.safetensors.index.json", index);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    unlink(path);
    expect_ok("sharded", KV_DTYPE_F32);
    snprintf(path, sizeof path, "%s/b.safetensors", tmpdir);
    unlink(path);
    expect_error("missing shard", KV_ENOTFOUND, "b.safetensors", NULL);
    write_text("model.safetensors.index.json", "{\"weight_map\": 3}");
    expect_error("bad index", KV_EFORMAT, "weight_map", NULL);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmpdir);
    unlink(path);

    /* Bad configs. */
    write_safetensors("model.safetensors", 0, 99, "F32", 0);
    write_text("config.json", "{\"architectures\":[\"GPT2LMHeadModel\"],\"hidden_size\":8}");
    expect_error("architecture", KV_EUNSUPPORTED, "unsupported architecture \"GPT2LMHeadModel\"", "config.json");
    write_text("config.json", "{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":12}");
    expect_error("missing key", KV_EFORMAT, "hidden_size", "config.json");
    write_text("config.json", "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":12,"
                              "\"num_hidden_layers\":1,\"num_attention_heads\":3,\"num_key_value_heads\":2,\"vocab_size\":16}");
    expect_error("heads", KV_EFORMAT, "multiple of num_key_value_heads", NULL);
    write_text("config.json", "{\"hidden_size\": 8,");
    expect_error("bad json", KV_EFORMAT, "config.json", "JSON");
    write_text("config.json", "{\"model_type\":\"llama\",\"hidden_size\":8,\"intermediate_size\":12,"
                              "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"vocab_size\":16,"
                              "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}");
    expect_error("rope", KV_EUNSUPPORTED, "yarn", NULL);

    clean_dir();
    rmdir(tmpdir);
    return kv_test_result();
}
