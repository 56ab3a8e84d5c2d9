/* The activation quantizers (kc_act in wkernels.h), one portable implementation for every
 * ISA table: activations are O(cols) per vector against the GEMV's O(rows * cols), and one
 * implementation means every ISA sees the same int8 inputs. */
#include <math.h>

#include "isa_internal.h"

void kc_quantize_f32(void *act_row, const float *x, int cols) { memcpy(act_row, x, (size_t)cols * sizeof *x); }

/* d = max|x| / 127 and q = round-half-even(x / d) into qs[n]; returns sum of q. A block
 * with a non-finite value gets d = NaN (its dot products come out NaN). */
static int quantize_block(const float *x, int n, float *d_out, int8_t *qs)
{
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < n; j++) {
        float a = fabsf(x[j]);
        finite &= a <= 3.4028234663852886e38f; /* false for inf and NaN */
        amax = a > amax ? a : amax;
    }
    if (!finite) {
        memset(qs, 0, (size_t)n);
        *d_out = NAN;
        return 0;
    }
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < n; j++) {
        float v = nearbyintf(x[j] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        qs[j] = (int8_t)v;
        sum += qs[j];
    }
    *d_out = d;
    return sum;
}

void kc_quantize_q8_32(void *act_row, const float *x, int cols)
{
    uint8_t *b = act_row;
    for (int i = 0; i + 32 <= cols; i += 32, b += KC_Q8_32_BYTES) {
        float d;
        int sum = quantize_block(x + i, 32, &d, (int8_t *)(b + KC_Q8_32_QS));
        float s = d * (float)sum;
        memcpy(b, &d, sizeof d);
        memcpy(b + KC_Q8_32_S, &s, sizeof s);
    }
}

void kc_quantize_q8_k(void *act_row, const float *x, int cols)
{
    uint8_t *b = act_row;
    for (int i = 0; i + 256 <= cols; i += 256, b += KC_Q8_K_BYTES) {
        float d;
        int8_t *qs = (int8_t *)(b + KC_Q8_K_QS);
        quantize_block(x + i, 256, &d, qs);
        memcpy(b, &d, sizeof d);
        for (int g = 0; g < 16; g++) {
            int16_t s = 0;
            for (int j = 0; j < 16; j++)
                s = (int16_t)(s + qs[16 * g + j]);
            memcpy(b + KC_Q8_K_BSUMS + 2 * g, &s, sizeof s);
        }
    }
}

size_t kc_act_row_bytes(kc_act act, int cols)
{
    if (cols <= 0)
        return 0;
    switch (act) {
    case KC_ACT_F32: return (size_t)cols * sizeof(float);
    case KC_ACT_Q8_32: return cols % 32 ? 0 : (size_t)(cols / 32) * KC_Q8_32_BYTES;
    case KC_ACT_Q8_K: return cols % 256 ? 0 : (size_t)(cols / 256) * KC_Q8_K_BYTES;
    }
    return 0;
}
