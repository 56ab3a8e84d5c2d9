/* Quantization and packing of KV blocks (kv_quant.h): the formula, one group at a time. */
#include "kv_quant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define KQ_HALF_MAX 65504.0f
#define KQ_HALF_MIN_SUBNORMAL 5.9604645e-8f /* 2^-24 */

int kq_format_check(const kq_format *f, kv_err *err)
{
    if (f->bits != 8 && f->bits != 4 && f->bits != 2)
        return kv_err_set(err, KV_EINVAL, "KV codes of %d bits: 8, 4 or 2 are supported", f->bits);
    int per_byte = 8 / f->bits;
    if (f->n_kv_heads <= 0 || f->head_dim <= 0 || f->block_size <= 0)
        return kv_err_set(err, KV_EINVAL, "KV block of %d heads x head_dim %d x %d tokens", f->n_kv_heads,
                          f->head_dim, f->block_size);
    if (f->block_size % per_byte)
        return kv_err_set(err, KV_EINVAL, "block size %d: %d-bit codes pack %d per byte, so it must be a multiple of %d",
                          f->block_size, f->bits, per_byte, per_byte);
    if (f->group <= 0 || f->group > f->head_dim || f->head_dim % f->group)
        return kv_err_set(err, KV_EINVAL, "KV group of %d channels must divide head_dim %d", f->group, f->head_dim);
    if (f->group % per_byte)
        return kv_err_set(err, KV_EINVAL, "KV group of %d channels: %d-bit codes pack %d per byte, so it must be a multiple of %d",
                          f->group, f->bits, per_byte, per_byte);
    /* Every region size below must fit comfortably in size_t and int indexing. */
    if ((int64_t)f->n_kv_heads * f->head_dim * f->block_size > (int64_t)1 << 30)
        return kv_err_set(err, KV_EINVAL, "KV block of %d heads x head_dim %d x %d tokens is too large", f->n_kv_heads,
                          f->head_dim, f->block_size);
    return KV_OK;
}

size_t kq_k_code_bytes(const kq_format *f)
{
    return (size_t)f->n_kv_heads * (size_t)f->head_dim * (size_t)f->block_size * (size_t)f->bits / 8;
}
size_t kq_v_code_bytes(const kq_format *f) { return kq_k_code_bytes(f); }
size_t kq_v_groups(const kq_format *f)
{
    return (size_t)f->n_kv_heads * (size_t)f->block_size * (size_t)(f->head_dim / f->group);
}
size_t kq_k_groups(const kq_format *f)
{
    return f->keys_per_token ? kq_v_groups(f) : (size_t)f->n_kv_heads * (size_t)f->head_dim;
}

uint16_t kq_f32_to_f16(float x) { return (uint16_t)_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT); }
float kq_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

static inline float to_half_and_back(float x) { return kq_f16_to_f32(kq_f32_to_f16(x)); }

/* S and Z of a group (as the floats the halves hold). */
static void group_params(const float *x, size_t stride, int n, int bits, float *s_out, float *z_out)
{
    float qmax = (float)((1 << bits) - 1);
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        if (v < mn)
            mn = v;
        if (v > mx)
            mx = v;
    }
    float s, z;
    if (mx > mn) {
        s = (mx - mn) / qmax;
        if (!(s <= KQ_HALF_MAX))
            s = KQ_HALF_MAX;
        s = to_half_and_back(s);
        if (s == 0.0f) /* the range underflows a half: the smallest step a half can say */
            s = KQ_HALF_MIN_SUBNORMAL;
        z = kq_round(-mn / s);
    } else { /* constant: x' = -Z * S = m */
        s = to_half_and_back(fabsf(mn));
        z = s == 0.0f ? 0.0f : mn > 0 ? -1.0f : 1.0f;
    }
    if (!(z <= KQ_HALF_MAX))
        z = KQ_HALF_MAX;
    if (z < -KQ_HALF_MAX)
        z = -KQ_HALF_MAX;
    *s_out = s;
    *z_out = to_half_and_back(z);
}

/* q = clamp(round(x / S) + Z, 0, 2^b - 1), clamped in float before the conversion so a NaN
 * or huge value never reaches (int). */
static void group_codes(const float *x, size_t stride, int n, int bits, float s, float z, uint8_t *codes)
{
    float qmax = (float)((1 << bits) - 1);
    for (int i = 0; i < n; i++) {
        float r = s == 0.0f ? 0.0f : kq_round(x[(size_t)i * stride] / s) + z;
        if (!(r >= 0.0f))
            r = 0.0f;
        if (r > qmax)
            r = qmax;
        codes[i] = (uint8_t)r;
    }
}

void kq_quantize_group(const float *x, size_t stride, int n, int bits, uint8_t *codes, uint16_t *scale,
                       uint16_t *zero)
{
    float s, z;
    group_params(x, stride, n, bits, &s, &z);
    group_codes(x, stride, n, bits, s, z, codes);
    *scale = kq_f32_to_f16(s);
    *zero = kq_f32_to_f16(z);
}

void kq_pack(const uint8_t *codes, int n, int bits, uint8_t *packed)
{
    if (bits == 8) {
        memcpy(packed, codes, (size_t)n);
        return;
    }
    int per_byte = 8 / bits;
    uint8_t mask = (uint8_t)((1u << bits) - 1);
    for (int i = 0; i < n; i += per_byte) {
        unsigned b = 0;
        for (int j = 0; j < per_byte; j++)
            b |= (unsigned)(codes[i + j] & mask) << (j * bits);
        packed[i / per_byte] = (uint8_t)b;
    }
}

void kq_unpack(const uint8_t *packed, int n, int bits, uint8_t *codes)
{
    if (bits == 8) {
        memcpy(codes, packed, (size_t)n);
        return;
    }
    int per_byte = 8 / bits;
    unsigned mask = (1u << bits) - 1;
    for (int i = 0; i < n; i++)
        codes[i] = (uint8_t)((packed[i / per_byte] >> ((i % per_byte) * bits)) & mask);
}

static inline void store_half(uint8_t *p, uint16_t h) { memcpy(p, &h, sizeof h); }
static inline float load_half(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return kq_f16_to_f32(h);
}

/* Codes go through a small buffer to be packed: a group is coded in runs of this many. */
#define KQ_RUN 256

/* One group of n values (stride apart) into packed codes at dst and its halves at sp, zp. */
static void quantize_group_to(const float *x, size_t stride, int n, int bits, uint8_t *dst, uint8_t *sp, uint8_t *zp)
{
    uint8_t codes[KQ_RUN];
    float s, z;
    group_params(x, stride, n, bits, &s, &z);
    for (int i0 = 0; i0 < n; i0 += KQ_RUN) { /* a run starts at a byte: KQ_RUN * bits % 8 == 0 */
        int m = n - i0 < KQ_RUN ? n - i0 : KQ_RUN;
        group_codes(x + (size_t)i0 * stride, stride, m, bits, s, z, codes);
        kq_pack(codes, m, bits, dst + (size_t)i0 * (size_t)bits / 8);
    }
    store_half(sp, kq_f32_to_f16(s));
    store_half(zp, kq_f32_to_f16(z));
}

void kq_quantize_block(void *base, const kq_format *f, const kq_regions *r, const float *k, const float *v,
                       size_t stride)
{
    uint8_t *b = base;
    int hd = f->head_dim, bs = f->block_size, G = f->group, bits = f->bits, ng = hd / G;
    for (int h = 0; h < f->n_kv_heads; h++) {
        if (!f->keys_per_token)
            for (int c = 0; c < hd; c++) {
                size_t gi = (size_t)h * (size_t)hd + (size_t)c;
                quantize_group_to(k + gi, stride, bs, bits, b + r->k_codes + gi * (size_t)bs * (size_t)bits / 8,
                                  b + r->k_scales + 2 * gi, b + r->k_zeros + 2 * gi);
            }
        for (int t = 0; t < bs; t++)
            for (int g = 0; g < ng; g++) {
                size_t gi = ((size_t)h * (size_t)bs + (size_t)t) * (size_t)ng + (size_t)g;
                size_t code_off = (((size_t)h * (size_t)bs + (size_t)t) * (size_t)hd + (size_t)g * (size_t)G) *
                                  (size_t)bits / 8;
                size_t src = (size_t)t * stride + (size_t)h * (size_t)hd + (size_t)g * (size_t)G;
                quantize_group_to(v + src, 1, G, bits, b + r->v_codes + code_off, b + r->v_scales + 2 * gi,
                                  b + r->v_zeros + 2 * gi);
                if (f->keys_per_token)
                    quantize_group_to(k + src, 1, G, bits, b + r->k_codes + code_off, b + r->k_scales + 2 * gi,
                                      b + r->k_zeros + 2 * gi);
            }
    }
}

/* n codes at packed (starting at a byte boundary) -> x' into out[i * out_stride]. */
static void dequant_run(const uint8_t *packed, int n, int bits, float s, float z, float *out, size_t out_stride)
{
    uint8_t codes[KQ_RUN];
    for (int i0 = 0; i0 < n; i0 += KQ_RUN) {
        int m = n - i0 < KQ_RUN ? n - i0 : KQ_RUN;
        kq_unpack(packed + (size_t)i0 * (size_t)bits / 8, m, bits, codes);
        for (int i = 0; i < m; i++)
            out[(size_t)(i0 + i) * out_stride] = kq_dequant_value(codes[i], s, z);
    }
}

void kq_dequantize_block(const void *base, const kq_format *f, const kq_regions *r, float *k, float *v,
                         size_t stride)
{
    const uint8_t *b = base;
    int hd = f->head_dim, bs = f->block_size, G = f->group, bits = f->bits, ng = hd / G;
    for (int h = 0; h < f->n_kv_heads; h++) {
        if (!f->keys_per_token)
            for (int c = 0; c < hd; c++) {
                size_t gi = (size_t)h * (size_t)hd + (size_t)c;
                dequant_run(b + r->k_codes + gi * (size_t)bs * (size_t)bits / 8, bs, bits,
                            load_half(b + r->k_scales + 2 * gi), load_half(b + r->k_zeros + 2 * gi), k + gi, stride);
            }
        for (int t = 0; t < bs; t++)
            for (int g = 0; g < ng; g++) {
                size_t gi = ((size_t)h * (size_t)bs + (size_t)t) * (size_t)ng + (size_t)g;
                size_t code_off = (((size_t)h * (size_t)bs + (size_t)t) * (size_t)hd + (size_t)g * (size_t)G) *
                                  (size_t)bits / 8;
                size_t dst = (size_t)t * stride + (size_t)h * (size_t)hd + (size_t)g * (size_t)G;
                dequant_run(b + r->v_codes + code_off, G, bits, load_half(b + r->v_scales + 2 * gi),
                            load_half(b + r->v_zeros + 2 * gi), v + dst, 1);
                if (f->keys_per_token)
                    dequant_run(b + r->k_codes + code_off, G, bits, load_half(b + r->k_scales + 2 * gi),
                                load_half(b + r->k_zeros + 2 * gi), k + dst, 1);
            }
    }
}
