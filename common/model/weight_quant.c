/* The reference quantizers (weight_quant.h), after ggml-quants.c's quantize_row_*_ref. This
 * file is compiled with -ffp-contract=off (common/model/CMakeLists.txt): ggml's reference
 * rounds (x - min) * id + 0.5 twice, and a fused multiply-add would pick other codes at ties. */
#include "weight_quant.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype_convert.h"

#define QK 32

static void put_half(unsigned char *p, float f)
{
    uint16_t h = kv_f32_to_f16_1(f);
    p[0] = (unsigned char)(h & 0xff);
    p[1] = (unsigned char)(h >> 8);
}

static void q8_0(const float *x, unsigned char *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 2 + QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / ((1 << 7) - 1), id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        for (int j = 0; j < QK; j++)
            y[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
    }
}

/* The signed value of largest magnitude (the first one, at ties), as q4_0 / q5_0 scale by. */
static float signed_amax(const float *x)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void min_max(const float *x, float *min, float *max)
{
    *min = FLT_MAX;
    *max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < *min)
            *min = x[j];
        if (x[j] > *max)
            *max = x[j];
    }
}

static int clamp_max(int v, int hi) { return v < hi ? v : hi; }

static void q4_0(const float *x, unsigned char *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 2 + QK / 2) {
        const float d = signed_amax(x) / -8, id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        for (int j = 0; j < QK / 2; j++) {
            int xi0 = clamp_max((int8_t)(x[j] * id + 8.5f), 15);
            int xi1 = clamp_max((int8_t)(x[QK / 2 + j] * id + 8.5f), 15);
            y[2 + j] = (unsigned char)(xi0 | (xi1 << 4));
        }
    }
}

static void q4_1(const float *x, unsigned char *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 4 + QK / 2) {
        float min, max;
        min_max(x, &min, &max);
        const float d = (max - min) / ((1 << 4) - 1), id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        put_half(y + 2, min);
        for (int j = 0; j < QK / 2; j++) {
            int xi0 = clamp_max((int8_t)((x[j] - min) * id + 0.5f), 15);
            int xi1 = clamp_max((int8_t)((x[QK / 2 + j] - min) * id + 0.5f), 15);
            y[4 + j] = (unsigned char)(xi0 | (xi1 << 4));
        }
    }
}

/* The low nibbles and the fifth bits (qh) of a q5 block's 32 codes. */
static void pack5(const int *codes, unsigned char *qh_at, unsigned char *qs)
{
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; j++) {
        int xi0 = codes[j], xi1 = codes[QK / 2 + j];
        qs[j] = (unsigned char)((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((uint32_t)(xi0 & 0x10) >> 4) << j;
        qh |= ((uint32_t)(xi1 & 0x10) >> 4) << (j + QK / 2);
    }
    for (int b = 0; b < 4; b++)
        qh_at[b] = (unsigned char)(qh >> (8 * b));
}

static void q5_0(const float *x, unsigned char *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 6 + QK / 2) {
        const float d = signed_amax(x) / -16, id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        int codes[QK];
        for (int j = 0; j < QK; j++)
            codes[j] = clamp_max((int8_t)(x[j] * id + 16.5f), 31);
        pack5(codes, y + 2, y + 6);
    }
}

static void q5_1(const float *x, unsigned char *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, x += QK, y += 8 + QK / 2) {
        float min, max;
        min_max(x, &min, &max);
        const float d = (max - min) / ((1 << 5) - 1), id = d ? 1.0f / d : 0.0f;
        put_half(y, d);
        put_half(y + 2, min);
        int codes[QK];
        for (int j = 0; j < QK; j++)
            codes[j] = (uint8_t)((x[j] - min) * id + 0.5f);
        pack5(codes, y + 4, y + 8);
    }
}

int kv_quantize_supported(kv_type t)
{
    switch (t) {
    case KV_TYPE_F32: case KV_TYPE_F16: case KV_TYPE_BF16: case KV_TYPE_Q8_0:
    case KV_TYPE_Q4_0: case KV_TYPE_Q4_1: case KV_TYPE_Q5_0: case KV_TYPE_Q5_1:
        return 1;
    default:
        return 0;
    }
}

int kv_quantize_row(kv_type t, const float *x, void *out, size_t n, kv_err *err)
{
    if (!kv_quantize_supported(t))
        return kv_err_set(err, KV_EUNSUPPORTED, "no quantizer for weight type %s", kv_type_name(t));
    const struct kv_type_traits *tr = kv_type_traits(t);
    if (n % tr->block_elems)
        return kv_err_set(err, KV_EINVAL, "%zu elements are not a whole number of %s blocks (%zu)", n,
                          tr->name, tr->block_elems);
    size_t nb = n / tr->block_elems;
    unsigned char *y = out;
    switch (t) {
    case KV_TYPE_F32: memcpy(out, x, n * sizeof *x); break;
    case KV_TYPE_F16:
        for (size_t i = 0; i < n; i++)
            put_half(y + 2 * i, x[i]);
        break;
    case KV_TYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = kv_f32_to_bf16_1(x[i]);
            y[2 * i] = (unsigned char)(h & 0xff);
            y[2 * i + 1] = (unsigned char)(h >> 8);
        }
        break;
    case KV_TYPE_Q8_0: q8_0(x, y, nb); break;
    case KV_TYPE_Q4_0: q4_0(x, y, nb); break;
    case KV_TYPE_Q4_1: q4_1(x, y, nb); break;
    case KV_TYPE_Q5_0: q5_0(x, y, nb); break;
    case KV_TYPE_Q5_1: q5_1(x, y, nb); break;
    default: break;
    }
    return KV_OK;
}
