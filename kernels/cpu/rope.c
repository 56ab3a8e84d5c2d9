#include <math.h>
#include <string.h>

#include "cpu_kernels.h"

void kc_rope_inv_freq(float *inv_freq, const kc_rope_params *p)
{
    int half = p->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float f = 1.0f / powf(p->theta, (float)(2 * i) / (float)p->head_dim);
        if (p->scaling == 1) {
            f /= p->factor;
        } else if (p->scaling == 2) {
            /* Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a
             * smooth blend between (HF _compute_llama3_parameters). */
            const float two_pi = 6.28318530717958647692f;
            float wavelen = two_pi / f;
            float low_wavelen = (float)p->original_max_position / p->low_freq_factor;
            float high_wavelen = (float)p->original_max_position / p->high_freq_factor;
            if (wavelen > low_wavelen) {
                f /= p->factor;
            } else if (wavelen >= high_wavelen) {
                float smooth = ((float)p->original_max_position / wavelen - p->low_freq_factor) /
                               (p->high_freq_factor - p->low_freq_factor);
                f = (1.0f - smooth) * f / p->factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
}

void kc_rope(float *x, int n_tokens, int n_heads, int head_dim, const int32_t *pos, const float *inv_freq)
{
    int half = head_dim / 2;
    for (int t = 0; t < n_tokens; t++) {
        for (int i = 0; i < half; i++) {
            float angle = (float)pos[t] * inv_freq[i];
            float c = cosf(angle), s = sinf(angle);
            for (int h = 0; h < n_heads; h++) {
                float *v = x + ((size_t)t * (size_t)n_heads + (size_t)h) * (size_t)head_dim;
                float x0 = v[i], x1 = v[i + half];
                v[i] = x0 * c - x1 * s;
                v[i + half] = x1 * c + x0 * s;
            }
        }
    }
}

void kc_qkv_rope(float *q, float *k, float *v, const float *qkv, int n_tokens, int n_heads, int n_kv_heads,
                 int head_dim, const int32_t *pos, const float *inv_freq)
{
    size_t qd = (size_t)n_heads * (size_t)head_dim, kvd = (size_t)n_kv_heads * (size_t)head_dim;
    for (int t = 0; t < n_tokens; t++) {
        const float *row = qkv + (size_t)t * (qd + 2 * kvd);
        memcpy(q + (size_t)t * qd, row, qd * sizeof *q);
        memcpy(k + (size_t)t * kvd, row + qd, kvd * sizeof *k);
        memcpy(v + (size_t)t * kvd, row + qd + kvd, kvd * sizeof *v);
    }
    kc_rope(q, n_tokens, n_heads, head_dim, pos, inv_freq);
    kc_rope(k, n_tokens, n_kv_heads, head_dim, pos, inv_freq);
}
