/* Cross-layer KV sharing in config.json ("cla_share_factor"): parsed and bounded, Gemma 3n's
 * "num_kv_shared_layers" refused, the owner map (layer i -> i - i % F) and the owner-layer
 * count that KV sizes use. */
#include "kv_capacity.h"
#include "kv_test.h"
#include "model_config.h"

static int parse(const char *extra, kv_model_config *c, kv_err *err)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 128, "
             "\"num_hidden_layers\": 5, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
             "\"vocab_size\": 300%s}", extra);
    return kv_model_config_parse(text, strlen(text), "test", c, err);
}

static void test_parse(void)
{
    kv_model_config c;
    kv_err err;
    CHECK_EQ_INT(parse("", &c, &err), KV_OK);
    CHECK_EQ_INT(c.cla_share, 1);
    CHECK_EQ_INT(kv_model_config_kv_layers(&c), 5);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": null", &c, &err), KV_OK);
    CHECK_EQ_INT(c.cla_share, 1);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": 3", &c, &err), KV_OK);
    CHECK_EQ_INT(c.cla_share, 3);
    const int owner[5] = {0, 0, 0, 3, 3};
    for (int i = 0; i < 5; i++)
        CHECK_MSG(kv_model_config_kv_owner(&c, i) == owner[i], "layer %d attends with %d, want %d", i,
                  kv_model_config_kv_owner(&c, i), owner[i]);
    CHECK_EQ_INT(kv_model_config_kv_layers(&c), 2);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": 5", &c, &err), KV_OK);
    CHECK_EQ_INT(kv_model_config_kv_layers(&c), 1);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": 0", &c, &err), KV_EFORMAT);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": 6", &c, &err), KV_EFORMAT);
    CHECK(strstr(err.msg, "cla_share_factor") != NULL);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": 2.5", &c, &err), KV_EFORMAT);
    CHECK_EQ_INT(parse(", \"cla_share_factor\": \"2\"", &c, &err), KV_EFORMAT);
    CHECK_EQ_INT(parse(", \"num_kv_shared_layers\": 0", &c, &err), KV_OK);
    CHECK_EQ_INT(parse(", \"num_kv_shared_layers\": 2", &c, &err), KV_EUNSUPPORTED);
    CHECK(strstr(err.msg, "num_kv_shared_layers") != NULL);
}

/* A config not made by the parser (cla_share 0) shares nothing. */
static void test_unparsed(void)
{
    kv_model_config c;
    memset(&c, 0, sizeof c);
    c.n_layers = 4;
    c.n_kv_heads = 2;
    c.head_dim = 16;
    CHECK_EQ_INT(kv_model_config_kv_owner(&c, 3), 3);
    CHECK_EQ_INT(kv_model_config_kv_layers(&c), 4);
    double full = kv_cache_bytes_per_token(&c, KV_CACHE_F32);
    c.cla_share = 2;
    CHECK(kv_cache_bytes_per_token(&c, KV_CACHE_F32) * 2 == full);
}

int main(void)
{
    test_parse();
    test_unparsed();
    return kv_test_result();
}
