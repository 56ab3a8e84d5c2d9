#include "model_shapes.h"

#include <stdio.h>
#include <string.h>

/* Values from each model's published config.json. */
static const kv_model_shape kShapes[] = {
    {.name = "llama2-7b", .description = "Llama-2-7B: 6.7B params, MHA, vocab 32000",
     .hidden_size = 4096, .intermediate_size = 11008, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 32, .vocab_size = 32000, .max_position = 4096, .rms_eps = 1e-5,
     .rope_theta = 10000.0, .bos_id = 1, .eos_id = 2},
    {.name = "llama3-8b", .description = "Llama-3-8B: 8.0B params, GQA 32/8, vocab 128256",
     .hidden_size = 4096, .intermediate_size = 14336, .n_layers = 32, .n_heads = 32,
     .n_kv_heads = 8, .vocab_size = 128256, .max_position = 8192, .rms_eps = 1e-5,
     .rope_theta = 500000.0, .rope_llama3 = 1, .rope_factor = 8.0, .rope_low_freq_factor = 1.0,
     .rope_high_freq_factor = 4.0, .rope_original_max_position = 8192, .bos_id = 128000,
     .eos_id = 128001},
    {.name = "tinyllama-1.1b", .description = "TinyLlama-1.1B: 1.1B params, GQA 32/4, vocab 32000",
     .hidden_size = 2048, .intermediate_size = 5632, .n_layers = 22, .n_heads = 32,
     .n_kv_heads = 4, .vocab_size = 32000, .max_position = 2048, .rms_eps = 1e-5,
     .rope_theta = 10000.0, .bos_id = 1, .eos_id = 2},
    {.name = "stories110m", .description = "llama2.c stories110M: 110M params, tied embeddings",
     .hidden_size = 768, .intermediate_size = 2048, .n_layers = 12, .n_heads = 12,
     .n_kv_heads = 12, .vocab_size = 32000, .max_position = 1024, .rms_eps = 1e-5,
     .rope_theta = 10000.0, .tie_embeddings = 1, .bos_id = 1, .eos_id = 2},
    {.name = "stories15m", .description = "llama2.c stories15M: 15M params, tied embeddings",
     .hidden_size = 288, .intermediate_size = 768, .n_layers = 6, .n_heads = 6,
     .n_kv_heads = 6, .vocab_size = 32000, .max_position = 256, .rms_eps = 1e-5,
     .rope_theta = 10000.0, .tie_embeddings = 1, .bos_id = 1, .eos_id = 2},
    {.name = "tiny", .description = "test model: 0.97M params, GQA 8/2, vocab 1024",
     .hidden_size = 128, .intermediate_size = 352, .n_layers = 4, .n_heads = 8, .n_kv_heads = 2,
     .vocab_size = 1024, .max_position = 1024, .rms_eps = 1e-5, .rope_theta = 10000.0,
     .bos_id = -1, .eos_id = -1},
};

size_t kv_model_shape_count(void) { return sizeof kShapes / sizeof kShapes[0]; }

const kv_model_shape *kv_model_shape_at(size_t i)
{
    return i < kv_model_shape_count() ? &kShapes[i] : NULL;
}

const kv_model_shape *kv_model_shape_find(const char *name)
{
    for (size_t i = 0; name && i < kv_model_shape_count(); i++)
        if (!strcmp(kShapes[i].name, name))
            return &kShapes[i];
    return NULL;
}

void kv_model_shape_names(char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < kv_model_shape_count() && len < cap; i++) {
        int n = snprintf(out + len, cap - len, "%s%s", i ? ", " : "", kShapes[i].name);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}
