#include "model_config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include <stdio.h>
#include "kv_file.h"
#include "model_gguf.h"

/* Architectures whose weights and forward pass are exactly Llama's. */
static const char *const supported_archs[] = {"LlamaForCausalLM", "MistralForCausalLM"};

static int get_required_int(const json_value *root, const char *origin, const char *key, int lo,
                            int *out, kv_err *err)
{
    int64_t v;
    if (!json_get(root, key))
        return kv_err_set(err, KV_EFORMAT, "%s: missing required key \"%s\"", origin, key);
    if (!json_get_int(root, key, &v) || v < lo || v > (1 << 30))
        return kv_err_set(err, KV_EFORMAT, "%s: \"%s\" must be an integer >= %d", origin, key, lo);
    *out = (int)v;
    return KV_OK;
}

static int check_arch(const json_value *root, const char *origin, kv_err *err)
{
    const json_value *archs = json_get(root, "architectures");
    const char *model_type = json_get_string(root, "model_type");
    if (archs && archs->type == JSON_ARRAY && archs->u.arr.n > 0) {
        const json_value *a = &archs->u.arr.items[0];
        if (a->type != JSON_STRING)
            return kv_err_set(err, KV_EFORMAT, "%s: \"architectures\" must hold strings", origin);
        for (size_t i = 0; i < sizeof supported_archs / sizeof *supported_archs; i++)
            if (!strcmp(a->u.str.s, supported_archs[i]))
                return KV_OK;
        return kv_err_set(err, KV_EUNSUPPORTED,
                          "%s: unsupported architecture \"%s\" (supported: LlamaForCausalLM, MistralForCausalLM)",
                          origin, a->u.str.s);
    }
    if (model_type && (!strcmp(model_type, "llama") || !strcmp(model_type, "mistral")))
        return KV_OK;
    return kv_err_set(err, KV_EUNSUPPORTED, "%s: unsupported model_type \"%s\" (need a Llama-family model)",
                      origin, model_type ? model_type : "(missing)");
}

static int parse_rope_scaling(const json_value *root, const char *origin, kv_model_config *cfg, kv_err *err)
{
    const json_value *rs = json_get(root, "rope_scaling");
    cfg->rope_scaling = KV_ROPE_NONE;
    cfg->rope_factor = 1.0f;
    if (!rs || rs->type == JSON_NULL)
        return KV_OK;
    if (rs->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s: \"rope_scaling\" must be an object or null", origin);
    const char *type = json_get_string(rs, "rope_type");
    if (!type)
        type = json_get_string(rs, "type");
    double factor = 1.0;
    json_get_number(rs, "factor", &factor);
    if (!(factor >= 1.0))
        return kv_err_set(err, KV_EFORMAT, "%s: rope_scaling.factor must be >= 1", origin);
    cfg->rope_factor = (float)factor;
    if (!type || !strcmp(type, "default"))
        return KV_OK;
    if (!strcmp(type, "linear")) {
        cfg->rope_scaling = KV_ROPE_LINEAR;
        return KV_OK;
    }
    if (!strcmp(type, "llama3")) {
        double lo = 1.0, hi = 4.0;
        int64_t orig = 8192;
        json_get_number(rs, "low_freq_factor", &lo);
        json_get_number(rs, "high_freq_factor", &hi);
        json_get_int(rs, "original_max_position_embeddings", &orig);
        if (!(hi > lo) || orig <= 0)
            return kv_err_set(err, KV_EFORMAT, "%s: bad llama3 rope_scaling parameters", origin);
        cfg->rope_scaling = KV_ROPE_LLAMA3;
        cfg->rope_low_freq_factor = (float)lo;
        cfg->rope_high_freq_factor = (float)hi;
        cfg->rope_original_max_position = (int)orig;
        return KV_OK;
    }
    return kv_err_set(err, KV_EUNSUPPORTED, "%s: unsupported rope_scaling type \"%s\" (supported: linear, llama3)",
                      origin, type);
}

static int parse_eos(const json_value *root, const char *origin, kv_model_config *cfg, kv_err *err)
{
    const json_value *eos = json_get(root, "eos_token_id");
    cfg->n_eos = 0;
    if (!eos || eos->type == JSON_NULL)
        return KV_OK;
    const json_value *items = eos->type == JSON_ARRAY ? eos->u.arr.items : eos;
    size_t n = eos->type == JSON_ARRAY ? eos->u.arr.n : 1;
    for (size_t i = 0; i < n && cfg->n_eos < KV_MAX_EOS; i++) {
        const json_value *v = &items[i];
        if (v->type != JSON_NUMBER || v->u.number < 0 || v->u.number != floor(v->u.number) ||
            v->u.number >= cfg->vocab_size)
            return kv_err_set(err, KV_EFORMAT, "%s: eos_token_id must be token id(s) below vocab_size", origin);
        cfg->eos_ids[cfg->n_eos++] = (int)v->u.number;
    }
    return KV_OK;
}

/* Cross-layer KV sharing. "cla_share_factor": F (Brandon et al. 2024, CLA-F: layers grouped
 * F by F, the first of each group computes the K/V the group attends with). Gemma 3n's
 * "num_kv_shared_layers" (the last N layers reuse the K/V of the last earlier layer of their
 * attention type) is another scheme: refused rather than ignored, since ignoring it would
 * compute a different model. */
static int parse_kv_sharing(const json_value *root, const char *origin, kv_model_config *cfg, kv_err *err)
{
    int64_t shared = 0;
    cfg->cla_share = 1;
    if (json_get(root, "num_kv_shared_layers") && (!json_get_int(root, "num_kv_shared_layers", &shared) || shared))
        return kv_err_set(err, KV_EUNSUPPORTED,
                          "%s: \"num_kv_shared_layers\" (Gemma 3n's KV sharing) is not supported; "
                          "cross-layer sharing is \"cla_share_factor\"", origin);
    const json_value *f = json_get(root, "cla_share_factor");
    if (!f || f->type == JSON_NULL)
        return KV_OK;
    int rc = get_required_int(root, origin, "cla_share_factor", 1, &cfg->cla_share, err);
    if (!rc && cfg->cla_share > cfg->n_layers)
        rc = kv_err_set(err, KV_EFORMAT, "%s: \"cla_share_factor\" %d exceeds num_hidden_layers %d", origin,
                        cfg->cla_share, cfg->n_layers);
    return rc;
}

static int parse_root(const json_value *root, const char *origin, kv_model_config *cfg, kv_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (root->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s: top level must be an object", origin);
    int rc;
    if ((rc = check_arch(root, origin, err)) ||
        (rc = get_required_int(root, origin, "hidden_size", 1, &cfg->hidden_size, err)) ||
        (rc = get_required_int(root, origin, "intermediate_size", 1, &cfg->intermediate_size, err)) ||
        (rc = get_required_int(root, origin, "num_hidden_layers", 1, &cfg->n_layers, err)) ||
        (rc = get_required_int(root, origin, "num_attention_heads", 1, &cfg->n_heads, err)) ||
        (rc = get_required_int(root, origin, "vocab_size", 1, &cfg->vocab_size, err)))
        return rc;
    cfg->n_kv_heads = cfg->n_heads;
    if (json_get(root, "num_key_value_heads") &&
        (rc = get_required_int(root, origin, "num_key_value_heads", 1, &cfg->n_kv_heads, err)))
        return rc;
    if (cfg->n_heads % cfg->n_kv_heads)
        return kv_err_set(err, KV_EFORMAT, "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
                          origin, cfg->n_heads, cfg->n_kv_heads);
    const json_value *hd = json_get(root, "head_dim");
    if (hd && hd->type != JSON_NULL) {
        if ((rc = get_required_int(root, origin, "head_dim", 2, &cfg->head_dim, err)))
            return rc;
    } else {
        if (cfg->hidden_size % cfg->n_heads)
            return kv_err_set(err, KV_EFORMAT, "%s: hidden_size must be a multiple of num_attention_heads", origin);
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->head_dim % 2)
        return kv_err_set(err, KV_EFORMAT, "%s: head_dim must be even for RoPE", origin);
    cfg->max_position = 2048;
    if (json_get(root, "max_position_embeddings") &&
        (rc = get_required_int(root, origin, "max_position_embeddings", 1, &cfg->max_position, err)))
        return rc;
    double d = 1e-6;
    json_get_number(root, "rms_norm_eps", &d);
    if (!(d > 0 && d < 1))
        return kv_err_set(err, KV_EFORMAT, "%s: rms_norm_eps must be in (0, 1)", origin);
    cfg->rms_eps = (float)d;
    d = 10000.0;
    json_get_number(root, "rope_theta", &d);
    if (!(d > 1))
        return kv_err_set(err, KV_EFORMAT, "%s: rope_theta must be > 1", origin);
    cfg->rope_theta = (float)d;
    const char *act = json_get_string(root, "hidden_act");
    if (act && strcmp(act, "silu"))
        return kv_err_set(err, KV_EUNSUPPORTED, "%s: unsupported hidden_act \"%s\" (need silu)", origin, act);
    cfg->tie_embeddings = 0;
    json_get_bool(root, "tie_word_embeddings", &cfg->tie_embeddings);
    int64_t bos = -1;
    json_get_int(root, "bos_token_id", &bos);
    cfg->bos_id = bos >= 0 && bos < cfg->vocab_size ? (int)bos : -1;
    if ((rc = parse_eos(root, origin, cfg, err)) || (rc = parse_rope_scaling(root, origin, cfg, err)))
        return rc;
    return parse_kv_sharing(root, origin, cfg, err);
}

int kv_model_config_parse(const char *text, size_t len, const char *origin, kv_model_config *cfg, kv_err *err)
{
    json_doc *doc = json_parse(text, len, err);
    if (!doc)
        return kv_err_wrap(err, "%s", origin);
    int rc = parse_root(json_root(doc), origin, cfg, err);
    json_doc_free(doc);
    return rc;
}

/* DIR/config.json, or the config.json a GGUF file implies (model_gguf.h); path names it. */
static int read_config(const char *dir, char *path, size_t cap, char **text, size_t *len, kv_err *err)
{
    size_t n = strlen(dir);
    if (n > 5 && !strcasecmp(dir + n - 5, ".gguf")) {
        snprintf(path, cap, "%s", dir);
        return kv_model_gguf_config_file(dir, text, len, err);
    }
    int rc = kv_path_join(path, cap, dir, "config.json", err);
    return rc ? rc : kv_file_read_all(path, text, len, err);
}

int kv_model_config_load(const char *dir, kv_model_config *cfg, kv_err *err)
{
    char path[4096];
    char *text;
    size_t len;
    int rc = read_config(dir, path, sizeof path, &text, &len, err);
    if (rc)
        return rc;
    rc = kv_model_config_parse(text, len, path, cfg, err);
    free(text);
    return rc;
}

int kv_model_config_is_eos(const kv_model_config *cfg, int token)
{
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] == token)
            return 1;
    return 0;
}

double kv_model_config_n_params(const kv_model_config *c)
{
    double h = c->hidden_size, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    double per_layer = 2 * h + h * q * 2 + 3 * h * c->intermediate_size;
    double embed = (double)c->vocab_size * h;
    double kv_proj = kv_model_config_kv_layers(c) * h * kv * 2; /* owner layers only */
    return embed * (c->tie_embeddings ? 1 : 2) + c->n_layers * per_layer + kv_proj + h;
}

/* Bitwise CRC-32C: config.json is a few hundred bytes, read once per process. */
static uint32_t crc32c_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

int kv_model_fingerprint(const char *dir, char out[9], kv_err *err)
{
    char path[4096];
    char *text;
    size_t len;
    int rc = read_config(dir, path, sizeof path, &text, &len, err);
    if (rc)
        return rc;
    snprintf(out, 9, "%08x", crc32c_bitwise((const unsigned char *)text, len));
    free(text);
    return KV_OK;
}
