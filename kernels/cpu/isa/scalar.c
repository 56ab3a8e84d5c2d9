/* The portable kernels: plain C, no intrinsics (the reference the SIMD files are read
 * against, and what KVSERVE_ISA=scalar runs). Integer dot products per block as ggml's
 * generic vec_dot does. */
#include "isa_internal.h"
#include "kv_type_dequant.h"

static float dot_f32(const void *w, const void *a, int cols)
{
    const float *x = a;
    const uint8_t *p = w;
    float s = 0.0f;
    for (int i = 0; i < cols; i++)
        s += kc_load_f32(p + 4 * i) * x[i];
    return s;
}

static float dot_f16(const void *w, const void *a, int cols)
{
    const float *x = a;
    const uint8_t *p = w;
    float s = 0.0f;
    for (int i = 0; i < cols; i++)
        s += kc_load_half(p + 2 * i) * x[i];
    return s;
}

static float dot_bf16(const void *w, const void *a, int cols)
{
    const float *x = a;
    const uint8_t *p = w;
    float s = 0.0f;
    for (int i = 0; i < cols; i++)
        s += kc_bf16_to_f32(kc_load_u16(p + 2 * i)) * x[i];
    return s;
}

/* The q*_0 / q*_1 family: unpack a block's 32 integers, then one integer dot with the Q8_32
 * activation block; a min (q*_1) adds m * s. */
static void unpack_q8_0(const uint8_t *b, int q[32]) { for (int j = 0; j < 32; j++) q[j] = (int8_t)b[2 + j]; }

static void unpack_q4_0(const uint8_t *b, int q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = (b[2 + j] & 0x0F) - 8;
        q[j + 16] = (b[2 + j] >> 4) - 8;
    }
}

static void unpack_q4_1(const uint8_t *b, int q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = b[4 + j] & 0x0F;
        q[j + 16] = b[4 + j] >> 4;
    }
}

static void unpack_q5(const uint32_t qh, const uint8_t *qs, int offset, int q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = (int)((qs[j] & 0x0F) | (((qh >> j) << 4) & 0x10)) - offset;
        q[j + 16] = (int)((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - offset;
    }
}

static int idot32(const int q[32], const uint8_t *a)
{
    const int8_t *qa = (const int8_t *)(a + KC_Q8_32_QS);
    int s = 0;
    for (int j = 0; j < 32; j++)
        s += q[j] * qa[j];
    return s;
}

#define Q32_DOT(NAME, WB, D_AT, M_AT, UNPACK)                                                 \
    static float dot_##NAME(const void *w, const void *a, int cols)                           \
    {                                                                                         \
        const uint8_t *wb = w, *ab = a;                                                       \
        float sum = 0.0f;                                                                     \
        for (int i = 0; i < cols / 32; i++, wb += (WB), ab += KC_Q8_32_BYTES) {               \
            int q[32];                                                                        \
            UNPACK;                                                                           \
            float d = kc_load_half(wb + (D_AT)) * kc_load_f32(ab);                            \
            sum += d * (float)idot32(q, ab);                                                  \
            if ((M_AT) >= 0)                                                                  \
                sum += kc_load_half(wb + ((M_AT) >= 0 ? (M_AT) : 0)) * kc_load_f32(ab + KC_Q8_32_S); \
        }                                                                                     \
        return sum;                                                                           \
    }

Q32_DOT(q8_0, 34, 0, -1, unpack_q8_0(wb, q))
Q32_DOT(q4_0, 18, 0, -1, unpack_q4_0(wb, q))
Q32_DOT(q4_1, 20, 0, 2, unpack_q4_1(wb, q))
Q32_DOT(q5_0, 22, 0, -1, unpack_q5(kc_load_u32(wb + 2), wb + 6, 16, q))
Q32_DOT(q5_1, 24, 0, 2, unpack_q5(kc_load_u32(wb + 4), wb + 8, 0, q))

/* k-quants against Q8_K: sum over sub-blocks of scale * integer dot, minus the mins times
 * the activation's 32-element sums (two bsums). */
static float dot_q45_k(const void *w, const void *a, int cols, int five)
{
    const uint8_t *wb = w, *ab = a;
    const size_t wbytes = five ? 176 : 144;
    float sum = 0.0f;
    for (int i = 0; i < cols / 256; i++, wb += wbytes, ab += KC_Q8_K_BYTES) {
        const float da = kc_load_f32(ab);
        const float d = kc_load_half(wb) * da, dmin = kc_load_half(wb + 2) * da;
        const uint8_t *scales = wb + 4, *qh = wb + 16, *ql = wb + (five ? 48 : 16);
        const int8_t *qa = (const int8_t *)(ab + KC_Q8_K_QS);
        int sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            kc_scale_min_k4(j, scales, &sc, &m);
            const uint8_t *run = ql + 32 * (j / 2);
            const int shift = (j & 1) * 4;
            int isum = 0;
            for (int l = 0; l < 32; l++) {
                int q = (run[l] >> shift) & 0x0F;
                if (five && (qh[l] >> j) & 1)
                    q += 16;
                isum += q * qa[32 * j + l];
            }
            sumi += sc * isum;
            int16_t b0, b1;
            memcpy(&b0, ab + KC_Q8_K_BSUMS + 4 * j, 2);
            memcpy(&b1, ab + KC_Q8_K_BSUMS + 4 * j + 2, 2);
            summ += m * (b0 + b1);
        }
        sum += d * (float)sumi - dmin * (float)summ;
    }
    return sum;
}

static float dot_q4_k(const void *w, const void *a, int cols) { return dot_q45_k(w, a, cols, 0); }
static float dot_q5_k(const void *w, const void *a, int cols) { return dot_q45_k(w, a, cols, 1); }

static float dot_q6_k(const void *w, const void *a, int cols)
{
    const uint8_t *wb = w, *ab = a;
    float sum = 0.0f;
    for (int i = 0; i < cols / 256; i++, wb += 210, ab += KC_Q8_K_BYTES) {
        const float d = kc_load_half(wb + 208) * kc_load_f32(ab);
        const int8_t *qa = (const int8_t *)(ab + KC_Q8_K_QS);
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = wb + 64 * h, *qh = wb + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(wb + 192 + 8 * h);
            const int8_t *x = qa + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                sumi += sc[is] * q1 * x[l] + sc[is + 2] * q2 * x[l + 32] + sc[is + 4] * q3 * x[l + 64] +
                        sc[is + 6] * q4 * x[l + 96];
            }
        }
        sum += d * (float)sumi;
    }
    return sum;
}

#define SCALAR_GEMV(NAME)                                                                                     \
    static void gemv_##NAME(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,  \
                            size_t arb, int n_vec, int cols)                                                  \
    {                                                                                                         \
        for (int r = r0; r < r1; r++)                                                                         \
            for (int v = 0; v < n_vec; v++)                                                                   \
                y[(size_t)v * ldy + (size_t)r] =                                                              \
                    dot_##NAME((const uint8_t *)w + (size_t)r * wrb, (const uint8_t *)act + (size_t)v * arb, cols); \
    }

SCALAR_GEMV(f32)
SCALAR_GEMV(f16)
SCALAR_GEMV(bf16)
SCALAR_GEMV(q8_0)
SCALAR_GEMV(q4_0)
SCALAR_GEMV(q4_1)
SCALAR_GEMV(q5_0)
SCALAR_GEMV(q5_1)
SCALAR_GEMV(q4_k)
SCALAR_GEMV(q5_k)
SCALAR_GEMV(q6_k)

static void wgemm_pack(float *panel, const float *rows, size_t ld, int kbp)
{
    for (int k = 0; k < kbp; k++)
        for (int r = 0; r < KC_WGEMM_NR; r++)
            panel[(size_t)k * KC_WGEMM_NR + (size_t)r] = rows[(size_t)r * ld + (size_t)k];
}

static void wgemm_micro(float *y, size_t ldy, const float *x, size_t ldx, const float *panel, int kb, int mr, int nr,
                        int accumulate)
{
    for (int i = 0; i < mr; i++) {
        float acc[KC_WGEMM_NR] = {0};
        for (int k = 0; k < kb; k++)
            for (int r = 0; r < KC_WGEMM_NR; r++)
                acc[r] += x[(size_t)i * ldx + (size_t)k] * panel[(size_t)k * KC_WGEMM_NR + (size_t)r];
        for (int r = 0; r < nr; r++)
            y[(size_t)i * ldy + (size_t)r] = accumulate ? y[(size_t)i * ldy + (size_t)r] + acc[r] : acc[r];
    }
}

const kc_isa kc_isa_scalar = {
    "scalar",
    {
        KC_ISA_ENTRY(F32, dot_f32, gemv_f32, kv_dequant_f32),
        KC_ISA_ENTRY(F16, dot_f16, gemv_f16, kv_dequant_f16),
        KC_ISA_ENTRY(BF16, dot_bf16, gemv_bf16, kv_dequant_bf16),
        KC_ISA_ENTRY(Q8_0, dot_q8_0, gemv_q8_0, kv_dequant_q8_0),
        KC_ISA_ENTRY(Q4_0, dot_q4_0, gemv_q4_0, kv_dequant_q4_0),
        KC_ISA_ENTRY(Q4_1, dot_q4_1, gemv_q4_1, kv_dequant_q4_1),
        KC_ISA_ENTRY(Q5_0, dot_q5_0, gemv_q5_0, kv_dequant_q5_0),
        KC_ISA_ENTRY(Q5_1, dot_q5_1, gemv_q5_1, kv_dequant_q5_1),
        KC_ISA_ENTRY(Q4_K, dot_q4_k, gemv_q4_k, kv_dequant_q4_k),
        KC_ISA_ENTRY(Q5_K, dot_q5_k, gemv_q5_k, kv_dequant_q5_k),
        KC_ISA_ENTRY(Q6_K, dot_q6_k, gemv_q6_k, kv_dequant_q6_k),
    },
    wgemm_pack,
    wgemm_micro,
};
