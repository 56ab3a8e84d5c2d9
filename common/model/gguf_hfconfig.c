/* The llama hyper-parameters of a GGUF, and the config.json / tokenizer_config.json HF
 * would write for them (key names as llama.cpp's convert_hf_to_gguf.py writes them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_import_internal.h"
#include "kv_utf8.h"

#define MAX_DIM (1 << 30)

const char *gguf_torch_dtype(kv_dtype dtype)
{
    return dtype == KV_DTYPE_F16 ? "float16" : dtype == KV_DTYPE_BF16 ? "bfloat16" : "float32";
}

void gguf_json_float(kv_textbuf *b, float v)
{
    char s[32];
    for (int prec = 6; prec <= 9; prec++) { /* shortest that reads back as the same float */
        snprintf(s, sizeof s, "%.*g", prec, (double)v);
        if (strtof(s, NULL) == v)
            break;
    }
    kv_textbuf_puts(b, s);
    if (!strpbrk(s, ".eEn"))
        kv_textbuf_puts(b, ".0");
}

/* A u32 key in [lo, hi]; absent: *out = dflt when dflt >= 0, else an error. */
static int get_dim(const kv_gguf *g, const char *key, long dflt, long lo, long hi, int *out, kv_err *err)
{
    if (kv_gguf_find_key(g, key) < 0) {
        if (dflt < 0)
            return kv_err_set(err, KV_EFORMAT, "%s: missing metadata key '%s'", kv_gguf_path(g), key);
        *out = (int)dflt;
        return KV_OK;
    }
    uint32_t v;
    int rc = kv_gguf_get_u32(g, key, &v, err);
    if (rc)
        return rc;
    if ((long)v < lo || (long)v > hi)
        return kv_err_set(err, KV_EFORMAT, "%s: '%s' = %u is out of range (%ld..%ld)", kv_gguf_path(g), key, v, lo, hi);
    *out = (int)v;
    return KV_OK;
}

static int get_float(const kv_gguf *g, const char *key, float dflt, int required, float *out, kv_err *err)
{
    if (kv_gguf_find_key(g, key) < 0) {
        if (required)
            return kv_err_set(err, KV_EFORMAT, "%s: missing metadata key '%s'", kv_gguf_path(g), key);
        *out = dflt;
        return KV_OK;
    }
    int rc = kv_gguf_get_f32(g, key, out, err);
    if (!rc && !isfinite(*out))
        rc = kv_err_set(err, KV_EFORMAT, "%s: '%s' is not finite", kv_gguf_path(g), key);
    return rc;
}

static int get_token_id(const kv_gguf *g, const char *key, int vocab, int64_t *out, kv_err *err)
{
    *out = -1;
    if (kv_gguf_find_key(g, key) < 0)
        return KV_OK;
    uint32_t v;
    int rc = kv_gguf_get_u32(g, key, &v, err);
    if (rc)
        return rc;
    if (v >= (uint32_t)vocab)
        return kv_err_set(err, KV_EFORMAT, "%s: '%s' = %u is not below the vocabulary size %d", kv_gguf_path(g), key, v,
                          vocab);
    *out = v;
    return KV_OK;
}

static int read_rope_scaling(const kv_gguf *g, gguf_llama *hp, kv_err *err)
{
    const char *path = kv_gguf_path(g);
    hp->rope_linear = 0;
    hp->rope_factor = 1.0f;
    if (kv_gguf_find_tensor(g, "rope_freqs.weight"))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: tensor 'rope_freqs.weight' (Llama-3.1-style rope scaling) is not "
                                                "supported yet", path);
    kv_gguf_str type = {"none", 4};
    int rc;
    if (kv_gguf_find_key(g, "llama.rope.scaling.type") >= 0 &&
        (rc = kv_gguf_get_str(g, "llama.rope.scaling.type", &type, err)))
        return rc;
    float factor = 1.0f;
    const char *factor_key = kv_gguf_find_key(g, "llama.rope.scaling.factor") >= 0 ? "llama.rope.scaling.factor"
                                                                                  : "llama.rope.scale_linear";
    if ((rc = get_float(g, factor_key, 1.0f, 0, &factor, err)))
        return rc;
    if (type.len == 4 && !memcmp(type.s, "none", 4))
        return KV_OK;
    if (type.len == 6 && !memcmp(type.s, "linear", 6)) {
        if (!(factor >= 1.0f))
            return kv_err_set(err, KV_EFORMAT, "%s: '%s' = %g must be >= 1", path, factor_key, (double)factor);
        hp->rope_linear = factor > 1.0f;
        hp->rope_factor = factor;
        return KV_OK;
    }
    return kv_err_set(err, KV_EUNSUPPORTED, "%s: llama.rope.scaling.type '%.*s' is not supported (none, linear)", path,
                      (int)(type.len > 32 ? 32 : type.len), type.s);
}

/* ne[0] x ne[1] of a 2-D tensor (HF shape [ne1, ne0]). */
static int check_matrix(const kv_gguf *g, const char *name, uint64_t cols, uint64_t rows, kv_err *err)
{
    const kv_gguf_tensor *t = kv_gguf_find_tensor(g, name);
    if (!t)
        return kv_err_set(err, KV_EFORMAT, "%s: missing tensor '%s'", kv_gguf_path(g), name);
    if (t->n_dims != 2 || t->ne[0] != cols || (rows && t->ne[1] != rows))
        return kv_err_set(err, KV_EFORMAT, "%s: tensor '%s' has shape [%llu, %llu] (GGUF order), expected [%llu, %llu]",
                          kv_gguf_path(g), name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          (unsigned long long)cols, (unsigned long long)rows);
    return KV_OK;
}

int gguf_llama_read(const kv_gguf *g, gguf_llama *hp, kv_err *err)
{
    memset(hp, 0, sizeof *hp);
    const char *path = kv_gguf_path(g);
    kv_gguf_str arch;
    int rc = kv_gguf_get_str(g, "general.architecture", &arch, err);
    if (rc)
        return rc;
    if (arch.len != 5 || memcmp(arch.s, "llama", 5))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: architecture '%.*s' is not supported (only 'llama')", path,
                          (int)(arch.len > 64 ? 64 : arch.len), arch.s);
    if (kv_gguf_key_type(g, "llama.attention.head_count") == KV_GGUF_ARRAY ||
        kv_gguf_key_type(g, "llama.feed_forward_length") == KV_GGUF_ARRAY)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: per-layer head counts or feed-forward sizes are not supported", path);
    if ((rc = get_dim(g, "llama.embedding_length", -1, 1, MAX_DIM, &hp->hidden, err)) ||
        (rc = get_dim(g, "llama.feed_forward_length", -1, 1, MAX_DIM, &hp->intermediate, err)) ||
        (rc = get_dim(g, "llama.block_count", -1, 1, 4096, &hp->layers, err)) ||
        (rc = get_dim(g, "llama.attention.head_count", -1, 1, 65536, &hp->heads, err)) ||
        (rc = get_dim(g, "llama.attention.head_count_kv", hp->heads, 1, hp->heads, &hp->kv_heads, err)) ||
        (rc = get_dim(g, "llama.context_length", 2048, 1, MAX_DIM, &hp->context, err)) ||
        (rc = get_float(g, "llama.attention.layer_norm_rms_epsilon", 0, 1, &hp->rms_eps, err)) ||
        (rc = get_float(g, "llama.rope.freq_base", 10000.0f, 0, &hp->rope_theta, err)) ||
        (rc = read_rope_scaling(g, hp, err)))
        return rc;
    if (hp->heads % hp->kv_heads)
        return kv_err_set(err, KV_EFORMAT, "%s: head_count %d is not a multiple of head_count_kv %d", path, hp->heads,
                          hp->kv_heads);
    hp->head_dim_given = kv_gguf_find_key(g, "llama.attention.key_length") >= 0;
    if (hp->head_dim_given) {
        if ((rc = get_dim(g, "llama.attention.key_length", -1, 2, 65536, &hp->head_dim, err)))
            return rc;
    } else {
        if (hp->hidden % hp->heads)
            return kv_err_set(err, KV_EFORMAT, "%s: embedding_length %d is not a multiple of head_count %d", path,
                              hp->hidden, hp->heads);
        hp->head_dim = hp->hidden / hp->heads;
    }
    int v_dim, rope_dim;
    if ((rc = get_dim(g, "llama.attention.value_length", hp->head_dim, 1, 65536, &v_dim, err)) ||
        (rc = get_dim(g, "llama.rope.dimension_count", hp->head_dim, 1, 65536, &rope_dim, err)))
        return rc;
    if (v_dim != hp->head_dim)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: value_length %d differs from key_length %d", path, v_dim, hp->head_dim);
    if (rope_dim != hp->head_dim)
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: rope.dimension_count %d is not the head size %d (partial rotary)",
                          path, rope_dim, hp->head_dim);
    if (hp->head_dim % 2)
        return kv_err_set(err, KV_EFORMAT, "%s: head size %d is odd (RoPE needs pairs)", path, hp->head_dim);
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1) || !(hp->rope_theta > 1))
        return kv_err_set(err, KV_EFORMAT, "%s: rms epsilon %g or rope base %g out of range", path, (double)hp->rms_eps,
                          (double)hp->rope_theta);

    const kv_gguf_tensor *emb = kv_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return kv_err_set(err, KV_EFORMAT, "%s: missing tensor 'token_embd.weight'", path);
    if (emb->n_dims != 2 || emb->ne[0] != (uint64_t)hp->hidden || emb->ne[1] > MAX_DIM)
        return kv_err_set(err, KV_EFORMAT, "%s: token_embd.weight has shape [%llu, %llu], expected [%d, vocab]", path,
                          (unsigned long long)emb->ne[0], (unsigned long long)emb->ne[1], hp->hidden);
    hp->vocab = (int)emb->ne[1];
    hp->tied = !kv_gguf_find_tensor(g, "output.weight");
    if (!hp->tied && (rc = check_matrix(g, "output.weight", (uint64_t)hp->hidden, (uint64_t)hp->vocab, err)))
        return rc;
    if ((rc = get_token_id(g, "tokenizer.ggml.bos_token_id", hp->vocab, &hp->bos, err)) ||
        (rc = get_token_id(g, "tokenizer.ggml.eos_token_id", hp->vocab, &hp->eos, err)) ||
        (rc = get_token_id(g, "tokenizer.ggml.unknown_token_id", hp->vocab, &hp->unk, err)) ||
        (rc = get_token_id(g, "tokenizer.ggml.padding_token_id", hp->vocab, &hp->pad, err)))
        return rc;
    return KV_OK;
}

void gguf_config_json(const gguf_llama *hp, kv_dtype dtype, kv_textbuf *b)
{
    kv_textbuf_printf(b, "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
                         "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
                         "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n",
                      hp->hidden, hp->intermediate, hp->layers, hp->heads, hp->kv_heads);
    if (hp->head_dim_given)
        kv_textbuf_printf(b, "  \"head_dim\": %d,\n", hp->head_dim);
    kv_textbuf_printf(b, "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": ", hp->vocab,
                      hp->context);
    gguf_json_float(b, hp->rms_eps);
    kv_textbuf_puts(b, ",\n  \"rope_theta\": ");
    gguf_json_float(b, hp->rope_theta);
    kv_textbuf_puts(b, ",\n  \"rope_scaling\": ");
    if (hp->rope_linear) {
        kv_textbuf_puts(b, "{\"rope_type\": \"linear\", \"factor\": ");
        gguf_json_float(b, hp->rope_factor);
        kv_textbuf_puts(b, "}");
    } else {
        kv_textbuf_puts(b, "null");
    }
    kv_textbuf_printf(b, ",\n  \"hidden_act\": \"silu\",\n  \"tie_word_embeddings\": %s,\n",
                      hp->tied ? "true" : "false");
    if (hp->bos >= 0)
        kv_textbuf_printf(b, "  \"bos_token_id\": %lld,\n", (long long)hp->bos);
    if (hp->eos >= 0)
        kv_textbuf_printf(b, "  \"eos_token_id\": %lld,\n", (long long)hp->eos);
    kv_textbuf_printf(b, "  \"torch_dtype\": \"%s\"\n}\n", gguf_torch_dtype(dtype));
}

/* "key": the spelling of token id (a JSON string), or null. */
static int token_field(kv_textbuf *b, const char *key, int64_t id, const kv_gguf_str *tokens, size_t n,
                       const char *path, kv_err *err)
{
    kv_textbuf_printf(b, "  \"%s\": ", key);
    if (id < 0 || (size_t)id >= n) {
        kv_textbuf_puts(b, "null,\n");
        return KV_OK;
    }
    const kv_gguf_str *t = &tokens[id];
    if (kv_utf8_invalid_at(t->s, t->len) != t->len)
        return kv_err_set(err, KV_EFORMAT, "%s: token %lld (%s) is not valid UTF-8", path, (long long)id, key);
    kv_textbuf_json_string(b, t->s, t->len);
    kv_textbuf_puts(b, ",\n");
    return KV_OK;
}

static int get_flag(const kv_gguf *g, const char *key, int dflt, int *out, kv_err *err)
{
    *out = dflt;
    return kv_gguf_find_key(g, key) < 0 ? KV_OK : kv_gguf_get_bool(g, key, out, err);
}

int gguf_tokenizer_config_json(const kv_gguf *g, const gguf_llama *hp, kv_textbuf *b, kv_err *err)
{
    const char *path = kv_gguf_path(g);
    kv_gguf_str model = {"", 0}, tmpl = {NULL, 0};
    int rc = kv_gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (rc)
        return rc;
    int spm = model.len == 5 && !memcmp(model.s, "llama", 5), add_bos, add_eos;
    /* llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise. */
    if ((rc = get_flag(g, "tokenizer.ggml.add_bos_token", spm, &add_bos, err)) ||
        (rc = get_flag(g, "tokenizer.ggml.add_eos_token", 0, &add_eos, err)))
        return rc;
    if (kv_gguf_find_key(g, "tokenizer.chat_template") >= 0 &&
        (rc = kv_gguf_get_str(g, "tokenizer.chat_template", &tmpl, err)))
        return rc;
    if (tmpl.s && kv_utf8_invalid_at(tmpl.s, tmpl.len) != tmpl.len)
        return kv_err_set(err, KV_EFORMAT, "%s: tokenizer.chat_template is not valid UTF-8", path);
    kv_gguf_str *tokens = NULL;
    size_t n = 0;
    if ((rc = kv_gguf_get_str_array(g, "tokenizer.ggml.tokens", &tokens, &n, err)))
        return rc;
    kv_textbuf_printf(b, "{\n  \"add_bos_token\": %s,\n  \"add_eos_token\": %s,\n", add_bos ? "true" : "false",
                      add_eos ? "true" : "false");
    if ((rc = token_field(b, "bos_token", hp->bos, tokens, n, path, err)) == KV_OK && tmpl.s) {
        kv_textbuf_puts(b, "  \"chat_template\": ");
        kv_textbuf_json_string(b, tmpl.s, tmpl.len);
        kv_textbuf_puts(b, ",\n");
    }
    if (rc == KV_OK) {
        kv_textbuf_puts(b, "  \"clean_up_tokenization_spaces\": false,\n");
        rc = token_field(b, "eos_token", hp->eos, tokens, n, path, err);
    }
    if (rc == KV_OK) {
        kv_textbuf_printf(b, "  \"model_max_length\": %d,\n", hp->context);
        rc = token_field(b, "pad_token", hp->pad, tokens, n, path, err);
    }
    if (rc == KV_OK)
        rc = token_field(b, "unk_token", hp->unk, tokens, n, path, err);
    kv_textbuf_puts(b, "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
    free(tokens);
    return rc;
}
