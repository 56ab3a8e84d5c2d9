/* CPU kernels against naive double-precision references on random inputs: odd shapes,
 * GQA, paged block tables in random order, prefill over a cached prefix. */
#include <float.h>
#include <stdint.h>

#include "cpu_kernels.h"
#include "kv_test.h"
#include "simd.h"

typedef struct rng { uint64_t s; } rng;
static float frand(rng *r)
{
    r->s ^= r->s << 13; r->s ^= r->s >> 7; r->s ^= r->s << 17;
    return (float)((r->s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static float *rand_vec(rng *r, size_t n)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = frand(r);
    return v;
}
/* max |a-b| / max(1, |b|) over n; NaN counts as failure (returns INFINITY). */
static double rel_err(const float *a, const double *b, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i]));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static void test_matmul(rng *r)
{
    const int shapes[][3] = {{1, 13, 37}, {3, 64, 100}, {4, 9, 8}, {5, 33, 65}, {17, 70, 129}, {64, 96, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *x = rand_vec(r, (size_t)m * k), *w = rand_vec(r, (size_t)n * k);
        float *y = malloc(sizeof(float) * (size_t)m * n), *y2 = malloc(sizeof(float) * (size_t)m * n);
        double *ref = malloc(sizeof(double) * (size_t)m * n);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0;
                for (int t = 0; t < k; t++) acc += (double)x[i * k + t] * w[j * k + t];
                ref[i * n + j] = acc;
            }
        for (size_t i = 0; i < (size_t)m * n; i++) y[i] = y2[i] = NAN;
        kc_matmul(y, x, w, m, n, k);
        kc_matmul_gemv(y2, x, w, m, n, k);
        CHECK_MSG(rel_err(y, ref, (size_t)m * n) < 1e-5, "matmul %dx%dx%d", m, n, k);
        CHECK_MSG(rel_err(y2, ref, (size_t)m * n) < 1e-5, "gemv %dx%dx%d", m, n, k);
        free(x); free(w); free(y); free(y2); free(ref);
    }
}

/* Decode's GEMV is batch-invariant: a row's result is bit-identical alone or in a batch. */
static void test_gemv_batch_invariance(rng *r)
{
    int m = 7, n = 67, k = 131;
    float *x = rand_vec(r, (size_t)m * k), *w = rand_vec(r, (size_t)n * k);
    float *batch = malloc(sizeof(float) * (size_t)m * n), *solo = malloc(sizeof(float) * (size_t)n);
    kc_matmul_gemv(batch, x, w, m, n, k);
    for (int i = 0; i < m; i++) {
        kc_matmul_gemv(solo, x + (size_t)i * k, w, 1, n, k);
        CHECK_MSG(!memcmp(solo, batch + (size_t)i * n, sizeof(float) * (size_t)n), "row %d differs alone and in a batch", i);
    }
    free(x); free(w); free(batch); free(solo);
}

static void test_elementwise(rng *r)
{
    int rows = 3, dim = 37;
    float *x = rand_vec(r, (size_t)rows * dim), *w = rand_vec(r, (size_t)dim), *out = malloc(sizeof(float) * rows * dim);
    double ref[3 * 37];
    for (int i = 0; i < rows; i++) {
        double ss = 0;
        for (int j = 0; j < dim; j++) ss += (double)x[i * dim + j] * x[i * dim + j];
        double inv = 1.0 / sqrt(ss / dim + 1e-5);
        for (int j = 0; j < dim; j++) ref[i * dim + j] = x[i * dim + j] * inv * w[j];
    }
    kc_rmsnorm(out, x, w, rows, dim, 1e-5f);
    CHECK(rel_err(out, ref, (size_t)rows * dim) < 1e-5);
    float *g = rand_vec(r, 101), *u = rand_vec(r, 101), *o = malloc(sizeof(float) * 101);
    double sref[101];
    for (int i = 0; i < 101; i++) {
        g[i] *= 20.0f; /* silu's both tails */
        sref[i] = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    }
    kc_swiglu(o, g, u, 101);
    CHECK(rel_err(o, sref, 101) < 1e-5);
    float ties[5] = {1, 3, 2, 3, -1};
    CHECK_EQ_INT(kc_argmax(ties, 5), 1);
    float with_nan[5] = {NAN, 1, 3, NAN, 3}, all_nan[3] = {NAN, NAN, NAN}; /* as the device: NaN never wins */
    CHECK_EQ_INT(kc_argmax(with_nan, 5), 2);
    CHECK_EQ_INT(kc_argmax(all_nan, 3), 0);
    free(x); free(w); free(out); free(g); free(u); free(o);
}

/* kc_exp8 (swiglu's and the prefill softmax's exp) against exp in double: within 3 ulp where
 * the result is normal, within the subnormals' spacing below, inf where expf overflows, NaN
 * through. */
static void test_exp8(void)
{
    double worst = 0;
    int bad = 0;
    for (int i = -1100000; i < 1100000; i += 8) {
        float x[8], y[8];
        for (int j = 0; j < 8; j++)
            x[j] = (float)(i + j) * 1e-4f;
        _mm256_storeu_ps(y, kc_exp8(_mm256_loadu_ps(x)));
        for (int j = 0; j < 8; j++) {
            double ref = exp((double)x[j]);
            if (ref > FLT_MAX)
                bad += !(isinf(y[j]) && y[j] > 0);
            else if (ref < FLT_MIN)
                bad += !(fabs(y[j] - ref) <= 2 * 1.4e-45 + 3 * 5.97e-8 * ref);
            else {
                double e = fabs(y[j] - ref) / ref;
                worst = e > worst || isnan(e) ? e : worst;
            }
        }
    }
    CHECK_MSG(bad == 0, "kc_exp8: %d values outside the normal range wrong", bad);
    CHECK_MSG(worst <= 3 * 5.97e-8, "kc_exp8: max rel err %g", worst);
    float sp[8] = {NAN, -INFINITY, INFINITY, 0.0f, -0.0f, 1.0f, -1.0f, 1e30f}, y[8];
    _mm256_storeu_ps(y, kc_exp8(_mm256_loadu_ps(sp)));
    CHECK(isnan(y[0]) && y[1] == 0.0f && isinf(y[2]) && y[3] == 1.0f && y[4] == 1.0f);
    CHECK(fabsf(y[5] - 2.7182817f) <= 3e-7f && fabsf(y[6] - 0.36787944f) <= 1e-7f && isinf(y[7]));
}

static void test_rope(rng *r)
{
    kc_rope_params plain = {.head_dim = 8, .theta = 10000.0f};
    float inv[64];
    kc_rope_inv_freq(inv, &plain);
    for (int i = 0; i < 4; i++) CHECK(fabs(inv[i] - pow(10000.0, -2.0 * i / 8)) < 1e-6);
    /* Llama 3.1 scaling: high frequencies kept, low ones divided by factor. */
    kc_rope_params l3 = {.head_dim = 128, .theta = 500000.0f, .scaling = 2, .factor = 8.0f, .low_freq_factor = 1.0f,
                         .high_freq_factor = 4.0f, .original_max_position = 8192};
    kc_rope_inv_freq(inv, &l3);
    CHECK(fabs(inv[0] - 1.0) < 1e-6);
    double base63 = pow(500000.0, -126.0 / 128);
    CHECK(fabs(inv[63] - base63 / 8) / (base63 / 8) < 1e-5);
    int n_tok = 3, nh = 2, hd = 8;
    int32_t pos[3] = {0, 5, 1000};
    kc_rope_inv_freq(inv, &plain);
    float *x = rand_vec(r, (size_t)n_tok * nh * hd);
    double ref[48];
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < hd / 2; i++) {
                const float *v = x + (t * nh + h) * hd;
                double a = pos[t] * (double)inv[i];
                ref[(t * nh + h) * hd + i] = v[i] * cos(a) - v[i + hd / 2] * sin(a);
                ref[(t * nh + h) * hd + i + hd / 2] = v[i + hd / 2] * cos(a) + v[i] * sin(a);
            }
    kc_rope(x, n_tok, nh, hd, pos, inv);
    CHECK(rel_err(x, ref, 48) < 1e-4); /* float angle at position 1000 */
    free(x);
}

/* Naive attention of one query over contiguous K/V [len][n_kv][hd]. */
static void naive_attend(double *out, const float *q, const float *k, const float *v, int len, int n_kv, int kvh, int hd)
{
    double *s = malloc(sizeof(double) * (size_t)len), mx = -INFINITY, sum = 0;
    for (int t = 0; t < len; t++) {
        double d = 0;
        for (int i = 0; i < hd; i++) d += (double)q[i] * k[((size_t)t * n_kv + kvh) * hd + i];
        s[t] = d / sqrt(hd);
        mx = fmax(mx, s[t]);
    }
    for (int t = 0; t < len; t++) sum += (s[t] = exp(s[t] - mx));
    for (int i = 0; i < hd; i++) {
        double acc = 0;
        for (int t = 0; t < len; t++) acc += s[t] * v[((size_t)t * n_kv + kvh) * hd + i];
        out[i] = acc / sum;
    }
    free(s);
}

typedef struct paged { kc_paged_kv kv; float *mem; int32_t *table; int n_blocks; } paged;

/* A pool with `layers` layers; the tested layer is the last; blocks in shuffled order. */
static paged make_paged(rng *r, int len, int bs, int n_kv, int hd, int layers)
{
    paged p;
    p.n_blocks = (len + bs - 1) / bs + 3;
    size_t row = (size_t)n_kv * hd, layer_floats = 2 * (size_t)bs * row;
    p.mem = rand_vec(r, (size_t)p.n_blocks * layers * layer_floats); /* garbage everywhere not written */
    p.table = malloc(sizeof(int32_t) * (size_t)p.n_blocks);
    for (int i = 0; i < p.n_blocks; i++) p.table[i] = i;
    for (int i = p.n_blocks - 1; i > 0; i--) {
        int j = (int)((frand(r) + 1.0f) * 0.5f * (float)i);
        int32_t t = p.table[i]; p.table[i] = p.table[j]; p.table[j] = t;
    }
    p.kv = (kc_paged_kv){p.mem + (size_t)(layers - 1) * layer_floats, (size_t)layers * layer_floats, layer_floats / 2,
                         bs, n_kv, hd};
    return p;
}

static void test_attention(rng *r)
{
    const int cases[][6] = {/* len, start, bs, n_heads, n_kv, hd */
                            {1, 0, 16, 4, 4, 8},   {37, 0, 16, 8, 4, 8},  {50, 20, 5, 6, 2, 16},
                            {130, 129, 16, 4, 1, 32}, {300, 100, 16, 8, 8, 64}, {9, 3, 1, 2, 1, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int len = cases[c][0], start = cases[c][1], bs = cases[c][2], nh = cases[c][3], nkv = cases[c][4], hd = cases[c][5];
        int n = len - start;
        paged p = make_paged(r, len, bs, nkv, hd, 2);
        size_t row = (size_t)nkv * hd;
        float *k = rand_vec(r, (size_t)len * row), *v = rand_vec(r, (size_t)len * row);
        kc_kv_write(&p.kv, p.table, 0, start, k, v);
        kc_kv_write(&p.kv, p.table, start, n, k + (size_t)start * row, v + (size_t)start * row);
        float *q = rand_vec(r, (size_t)n * nh * hd), *out = malloc(sizeof(float) * (size_t)n * nh * hd);
        double *ref = malloc(sizeof(double) * (size_t)n * nh * hd);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < nh; h++)
                naive_attend(ref + ((size_t)i * nh + h) * hd, q + ((size_t)i * nh + h) * hd, k, v, start + i + 1, nkv,
                             h / (nh / nkv), hd);
        for (size_t i = 0; i < (size_t)n * nh * hd; i++) out[i] = NAN;
        kc_attention_prefill(out, q, &p.kv, p.table, start, n, nh);
        CHECK_MSG(rel_err(out, ref, (size_t)n * nh * hd) < 1e-5, "prefill case %zu", c);
        /* Decode: the last query alone, plus a second sequence of another length in the batch. */
        int32_t lens[2] = {len, start + 1};
        const int32_t *tables[2] = {p.table, p.table};
        float q2[2 * 8 * 64], out2[2 * 8 * 64];
        double ref2[2 * 8 * 64];
        memcpy(q2, q + (size_t)(n - 1) * nh * hd, sizeof(float) * (size_t)nh * hd);
        memcpy(q2 + nh * hd, q, sizeof(float) * (size_t)nh * hd);
        memcpy(ref2, ref + (size_t)(n - 1) * nh * hd, sizeof(double) * (size_t)nh * hd);
        memcpy(ref2 + nh * hd, ref, sizeof(double) * (size_t)nh * hd);
        for (int i = 0; i < 2 * nh * hd; i++) out2[i] = NAN;
        kc_attention_decode(out2, q2, &p.kv, tables, lens, 2, nh);
        CHECK_MSG(rel_err(out2, ref2, (size_t)2 * nh * hd) < 1e-5, "decode case %zu", c);
        free(p.mem); free(p.table); free(k); free(v); free(q); free(out); free(ref);
    }
}

/* The KV transfer checksum: pinned values (the GPU twin and every decode worker must agree
 * on them across versions), every single-bit flip and a swap of two words detected. */
static void test_block_hash(void)
{
    unsigned char b[64] = {0};
    CHECK_EQ_INT((long long)kc_block_hash(b, 16), 0x627dcca9LL);
    const unsigned char seven[7] = {1, 2, 3, 4, 5, 6, 7}; /* a tail of 3 bytes, zero-padded */
    CHECK_EQ_INT((long long)kc_block_hash(seven, 7), 0x44e4b4d2LL);
    for (int i = 0; i < 64; i++)
        b[i] = (unsigned char)(i * 37 + 11);
    uint32_t h = kc_block_hash(b, sizeof b);
    int missed = 0;
    for (int bit = 0; bit < 64 * 8; bit++) {
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        missed += kc_block_hash(b, sizeof b) == h;
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    CHECK_MSG(missed == 0, "%d single-bit flips leave the checksum unchanged", missed);
    unsigned char w[4];
    memcpy(w, b, 4);
    memcpy(b, b + 20, 4);
    memcpy(b + 20, w, 4);
    CHECK_MSG(kc_block_hash(b, sizeof b) != h, "two swapped words leave the checksum unchanged");
}

int main(void)
{
    rng r = {0x9E3779B97F4A7C15ull};
    test_matmul(&r);
    test_gemv_batch_invariance(&r);
    test_elementwise(&r);
    test_exp8();
    test_rope(&r);
    test_attention(&r);
    test_block_hash();
    return kv_test_result();
}
