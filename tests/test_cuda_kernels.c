/* CUDA kernels against their CPU twins (kernels/cpu) on random inputs, in f32, bf16 and f16.
 * 16-bit inputs are rounded on the host first and the CPU twin gets the same rounded
 * values, so the error measures the kernel, not input rounding. Every output buffer is
 * poisoned with 0xFF bytes (NaN in every dtype) before a run, and NaN counts as infinite
 * error, so an element the kernel never writes fails. Tolerance: max |a-b| / max(1, |b|)
 * < 1e-5 in f32 (2e-5 for the 8k/32k-key decode reductions), < 1e-2 in bf16/f16.
 * Skipped (exit 77) without a GPU. */
#include <cuda_runtime.h>
#include <immintrin.h>
#include <stdint.h>

#include "cpu_kernels.h"
#include "cuda_kernels.h"
#include "kv_test.h"
#include "kv_test_cuda.h"

/* A kv_cuda_* call that must succeed; its message comes from g_err. */
#define CHECK_KV(call)                                                 \
    do {                                                               \
        int rc_ = (call);                                              \
        CHECK_MSG(rc_ == 0, "%s -> %d: %s", #call, rc_, g_err.msg);    \
    } while (0)

static kv_err g_err; /* the last kv_cuda_* call's message, for CHECK_KV */

/* ---- host helpers ---- */

typedef struct rng { uint64_t s; } rng;
static float frand(rng *r)
{
    return (float)((kv_test_xorshift(&r->s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static float *rand_vec(rng *r, size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = frand(r) * scale;
    return v;
}
static int irand(rng *r, int n) { return (int)((frand(r) + 1.0f) * 0.5f * (float)n) % n; }

static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}
static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t f32_to_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
static float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }

static size_t esz(kv_cuda_dtype dt) { return kv_cuda_dtype_size(dt); }
static const char *dtn(kv_cuda_dtype dt) { return kv_cuda_dtype_name(dt); }
static double tol(kv_cuda_dtype dt) { return dt == KV_CUDA_F32 ? 1e-5 : 1e-2; }

static void to_bits(void *dst, const float *x, size_t n, kv_cuda_dtype dt)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == KV_CUDA_F32) ((float *)dst)[i] = x[i];
        else if (dt == KV_CUDA_BF16) ((uint16_t *)dst)[i] = f32_to_bf16(x[i]);
        else ((uint16_t *)dst)[i] = f32_to_f16(x[i]);
    }
}
static void from_bits(float *dst, const void *src, size_t n, kv_cuda_dtype dt)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == KV_CUDA_F32) dst[i] = ((const float *)src)[i];
        else if (dt == KV_CUDA_BF16) dst[i] = bf16_to_f32(((const uint16_t *)src)[i]);
        else dst[i] = f16_to_f32(((const uint16_t *)src)[i]);
    }
}
/* In place: the value the device will hold in dt. */
static void round_to(float *x, size_t n, kv_cuda_dtype dt)
{
    if (dt == KV_CUDA_F32) return;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = dt == KV_CUDA_BF16 ? f32_to_bf16(x[i]) : f32_to_f16(x[i]);
        x[i] = dt == KV_CUDA_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
}
static void *to_dev(const float *x, size_t n, kv_cuda_dtype dt)
{
    void *tmp = malloc(n * esz(dt) + 1), *d = NULL;
    to_bits(tmp, x, n, dt);
    CK(cudaMalloc(&d, n * esz(dt) + 16));
    CK(cudaMemcpy(d, tmp, n * esz(dt), cudaMemcpyHostToDevice));
    free(tmp);
    return d;
}
static void *to_dev_raw(const void *x, size_t bytes)
{
    void *d = NULL;
    CK(cudaMalloc(&d, bytes + 16));
    CK(cudaMemcpy(d, x, bytes, cudaMemcpyHostToDevice));
    return d;
}
/* n elements of 0xFF bytes: NaN in f32, bf16 and f16 alike. */
static void *dev_poison(size_t n, kv_cuda_dtype dt)
{
    void *d = NULL;
    CK(cudaMalloc(&d, n * esz(dt) + 16));
    CK(cudaMemset(d, 0xFF, n * esz(dt) + 16));
    return d;
}
/* Waits for the device, then copies n elements back as floats (malloc'd). */
static float *from_dev(const void *d, size_t n, kv_cuda_dtype dt)
{
    CK(cudaDeviceSynchronize());
    void *tmp = malloc(n * esz(dt) + 1);
    float *x = malloc(n * sizeof(float) + 1);
    CK(cudaMemcpy(tmp, d, n * esz(dt), cudaMemcpyDeviceToHost));
    from_bits(x, tmp, n, dt);
    free(tmp);
    return x;
}
static void *raw_from_dev(const void *d, size_t bytes)
{
    CK(cudaDeviceSynchronize());
    void *x = malloc(bytes + 1);
    CK(cudaMemcpy(x, d, bytes, cudaMemcpyDeviceToHost));
    return x;
}

/* max |a-b| / max(1, |b|); NaN anywhere is infinite error. */
static double max_rel(const float *got, const float *ref, size_t n)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

static kv_cuda_dtype all_dt[3] = {KV_CUDA_F32, KV_CUDA_BF16, KV_CUDA_F16};

/* ---- conversion ---- */

static void test_convert(rng *r)
{
    size_t n = 10007;
    float *x = rand_vec(r, n, 300.0f);
    x[0] = 0.0f; x[1] = -0.0f; x[2] = INFINITY; x[3] = -INFINITY; x[4] = 1e-30f; x[5] = 65504.0f; x[6] = 70000.0f;
    void *src = to_dev(x, n, KV_CUDA_F32);
    for (int t = 1; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        void *dst = dev_poison(n, dt);
        CHECK_KV(kv_cuda_convert(dst, dt, src, KV_CUDA_F32, n, NULL, &g_err));
        uint16_t *got = raw_from_dev(dst, n * 2), *want = malloc(n * sizeof(float)); /* room for any dtype */
        to_bits(want, x, n, dt);
        CHECK_MSG(memcmp(got, want, n * 2) == 0, "convert f32 -> %s: not bit-exact", dtn(dt));
        /* and back: exact widening */
        void *back = dev_poison(n, KV_CUDA_F32);
        CHECK_KV(kv_cuda_convert(back, KV_CUDA_F32, dst, dt, n, NULL, &g_err));
        float *wide = from_dev(back, n, KV_CUDA_F32), *ref = malloc(n * sizeof(float));
        from_bits(ref, want, n, dt);
        CHECK_MSG(memcmp(wide, ref, n * sizeof(float)) == 0, "convert %s -> f32: not exact", dtn(dt));
        free(got); free(want); free(wide); free(ref);
        CK(cudaFree(dst)); CK(cudaFree(back));
    }
    CK(cudaFree(src));
    free(x);
}

/* ---- embedding, norms, elementwise ---- */

static void test_embed(rng *r)
{
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        int vocab = 50, dim = 37, n = 9;
        float *table = rand_vec(r, (size_t)vocab * dim, 1.0f);
        round_to(table, (size_t)vocab * dim, dt);
        int32_t tok[9];
        for (int i = 0; i < n; i++) tok[i] = irand(r, vocab);
        tok[3] = vocab - 1;
        float *ref = malloc(sizeof(float) * n * dim);
        kc_embed(ref, table, tok, n, dim);
        void *dtab = to_dev(table, (size_t)vocab * dim, dt), *dout = dev_poison((size_t)n * dim, dt);
        int32_t *dtok = to_dev_raw(tok, sizeof tok);
        CHECK_KV(kv_cuda_embed(dout, dtab, dtok, n, dim, vocab, dt, NULL, &g_err));
        float *got = from_dev(dout, (size_t)n * dim, dt);
        CHECK_MSG(max_rel(got, ref, (size_t)n * dim) == 0.0, "embed %s", dtn(dt));
        /* An id outside the vocabulary poisons its row instead of reading out of bounds. */
        tok[0] = vocab;
        CK(cudaMemcpy(dtok, tok, sizeof tok, cudaMemcpyHostToDevice));
        CHECK_KV(kv_cuda_embed(dout, dtab, dtok, 1, dim, vocab, dt, NULL, &g_err));
        free(got);
        got = from_dev(dout, (size_t)dim, dt);
        CHECK_MSG(isnan(got[0]) && isnan(got[dim - 1]), "embed %s: bad id must give NaN", dtn(dt));
        free(table); free(ref); free(got);
        CK(cudaFree(dtab)); CK(cudaFree(dout)); CK(cudaFree(dtok));
    }
}

static void test_rmsnorm(rng *r)
{
    const int shapes[][2] = {{1, 8}, {3, 37}, {7, 4096}, {2, 8195}, {33, 64}};
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int rows = shapes[s][0], dim = shapes[s][1];
            size_t n = (size_t)rows * dim;
            float *x = rand_vec(r, n, 2.0f), *y = rand_vec(r, n, 1.0f), *w = rand_vec(r, (size_t)dim, 1.5f);
            round_to(x, n, dt); round_to(y, n, dt); round_to(w, (size_t)dim, dt);
            float *ref = malloc(n * sizeof(float));
            void *dx = to_dev(x, n, dt), *dy = to_dev(y, n, dt), *dw = to_dev(w, (size_t)dim, dt);
            void *dout = dev_poison(n, dt);

            kc_rmsnorm(ref, x, w, rows, dim, 1e-5f);
            CHECK_KV(kv_cuda_rmsnorm(dout, dx, dw, rows, dim, 1e-5f, dt, NULL, &g_err));
            float *got = from_dev(dout, n, dt);
            double e = max_rel(got, ref, n);
            CHECK_MSG(e < tol(dt), "rmsnorm %s %dx%d: err %g", dtn(dt), rows, dim, e);
            free(got);

            /* Fused: x += y (rounded to dt, as stored), out = rmsnorm(x). */
            kc_add(x, y, n);
            round_to(x, n, dt);
            kc_rmsnorm(ref, x, w, rows, dim, 1e-5f);
            CK(cudaMemset(dout, 0xFF, n * esz(dt)));
            CHECK_KV(kv_cuda_add_rmsnorm(dout, dx, dy, dw, rows, dim, 1e-5f, dt, NULL, &g_err));
            got = from_dev(dout, n, dt);
            float *gx = from_dev(dx, n, dt);
            e = max_rel(got, ref, n);
            CHECK_MSG(e < tol(dt), "add_rmsnorm %s %dx%d: out err %g", dtn(dt), rows, dim, e);
            CHECK_MSG(max_rel(gx, x, n) == 0.0, "add_rmsnorm %s %dx%d: residual differs", dtn(dt), rows, dim);
            /* out aliasing y, the engine's pattern (x += xb; xb = norm(x)) */
            kc_add(x, y, n);
            round_to(x, n, dt);
            kc_rmsnorm(ref, x, w, rows, dim, 1e-5f);
            CHECK_KV(kv_cuda_add_rmsnorm(dy, dx, dy, dw, rows, dim, 1e-5f, dt, NULL, &g_err));
            free(got);
            got = from_dev(dy, n, dt);
            e = max_rel(got, ref, n);
            CHECK_MSG(e < tol(dt), "add_rmsnorm %s %dx%d aliased: err %g", dtn(dt), rows, dim, e);
            free(x); free(y); free(w); free(ref); free(got); free(gx);
            CK(cudaFree(dx)); CK(cudaFree(dy)); CK(cudaFree(dw)); CK(cudaFree(dout));
        }
    }
}

/* The fused projections' follow-ups: the Q/K/V split with RoPE (plain, Llama 3.1 and
 * linear scaling), SwiGLU over gate|up rows. Shapes with GQA, MHA, a head_dim that is no
 * power of two, one row and many; positions up to 32k. */
static void test_fused(rng *r)
{
    kc_rope_params plain = {.head_dim = 8, .theta = 10000.0f};
    kc_rope_params l3 = {.head_dim = 128, .theta = 500000.0f, .scaling = 2, .factor = 8.0f, .low_freq_factor = 1.0f,
                         .high_freq_factor = 4.0f, .original_max_position = 8192};
    kc_rope_params lin = {.head_dim = 64, .theta = 10000.0f, .scaling = 1, .factor = 4.0f};
    const kc_rope_params *ps[5] = {&plain, &l3, &lin, &plain, &l3};
    const int shapes[][4] = {{5, 4, 2, 8}, {37, 32, 8, 128}, {300, 8, 8, 64}, {3, 6, 2, 18}, {1, 32, 8, 128}};
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
            int nt = shapes[c][0], nh = shapes[c][1], nkv = shapes[c][2], hd = shapes[c][3];
            kc_rope_params p = *ps[c];
            p.head_dim = hd;
            float inv[256];
            kc_rope_inv_freq(inv, &p);
            size_t qd = (size_t)nh * hd, kvd = (size_t)nkv * hd, row = qd + 2 * kvd;
            int32_t *pos = malloc(sizeof(int32_t) * (size_t)nt);
            for (int i = 0; i < nt; i++) pos[i] = i % 2 ? irand(r, 32768) : i;
            float *qkv = rand_vec(r, (size_t)nt * row, 1.0f);
            round_to(qkv, (size_t)nt * row, dt);
            float *q = malloc(sizeof(float) * nt * qd), *k = malloc(sizeof(float) * nt * kvd),
                  *v = malloc(sizeof(float) * nt * kvd);
            kc_qkv_rope(q, k, v, qkv, nt, nh, nkv, hd, pos, inv);
            void *dqkv = to_dev(qkv, (size_t)nt * row, dt), *dq = dev_poison((size_t)nt * qd, dt),
                 *dk = dev_poison((size_t)nt * kvd, dt), *dv = dev_poison((size_t)nt * kvd, dt);
            float *dinv = to_dev_raw(inv, sizeof(float) * (size_t)hd / 2);
            int32_t *dpos = to_dev_raw(pos, sizeof(int32_t) * (size_t)nt);
            CHECK_KV(kv_cuda_qkv_rope(dq, dk, dv, dqkv, nt, nh, nkv, hd, dpos, dinv, dt, NULL, &g_err));
            float *gq = from_dev(dq, (size_t)nt * qd, dt), *gk = from_dev(dk, (size_t)nt * kvd, dt),
                  *gv = from_dev(dv, (size_t)nt * kvd, dt);
            double eq = max_rel(gq, q, (size_t)nt * qd), ek = max_rel(gk, k, (size_t)nt * kvd),
                   ev = max_rel(gv, v, (size_t)nt * kvd);
            CHECK_MSG(eq < tol(dt) && ek < tol(dt) && ev == 0.0, "qkv_rope %s %dx%d/%d/%d: err q %g k %g v %g", dtn(dt),
                      nt, nh, nkv, hd, eq, ek, ev);
            free(pos); free(qkv); free(q); free(k); free(v); free(gq); free(gk); free(gv);
            CK(cudaFree(dqkv)); CK(cudaFree(dq)); CK(cudaFree(dk)); CK(cudaFree(dv));
            CK(cudaFree(dinv)); CK(cudaFree(dpos));
        }
        const int sw[][2] = {{1, 14336}, {7, 1000}, {64, 172}, {3, 1}};
        for (size_t c = 0; c < sizeof sw / sizeof *sw; c++) {
            int rows = sw[c][0], ff = sw[c][1];
            size_t n = (size_t)rows * ff;
            float *gu = rand_vec(r, 2 * n, 8.0f), *ref = malloc(n * sizeof(float));
            round_to(gu, 2 * n, dt);
            kc_swiglu_rows(ref, gu, rows, ff);
            void *dgu = to_dev(gu, 2 * n, dt), *dout = dev_poison(n, dt);
            CHECK_KV(kv_cuda_swiglu_rows(dout, dgu, rows, ff, dt, NULL, &g_err));
            float *got = from_dev(dout, n, dt);
            double e = max_rel(got, ref, n);
            CHECK_MSG(e < tol(dt), "swiglu_rows %s %dx%d: err %g", dtn(dt), rows, ff, e);
            free(gu); free(ref); free(got);
            CK(cudaFree(dgu)); CK(cudaFree(dout));
        }
    }
}

/* ---- paged pool ---- */

typedef struct pool {
    kv_cuda_dtype dt;
    int n_blocks, layers;
    size_t layer_elems, total;
    float *host; /* the values the device holds, as floats */
    void *dev;
    int32_t *perm; /* shuffled block ids: sequences take consecutive runs */
    kc_paged_kv ckv;
    kv_cuda_paged_kv gkv;
} pool;

/* A pool of `layers` layers with random contents; the tested layer is the last. */
static void pool_make(pool *p, rng *r, int n_blocks, int bs, int n_kv, int hd, int layers, kv_cuda_dtype dt)
{
    size_t row = (size_t)n_kv * hd;
    p->dt = dt;
    p->n_blocks = n_blocks;
    p->layers = layers;
    p->layer_elems = 2 * (size_t)bs * row;
    p->total = (size_t)n_blocks * layers * p->layer_elems;
    p->host = rand_vec(r, p->total, 1.0f);
    round_to(p->host, p->total, dt);
    p->dev = to_dev(p->host, p->total, dt);
    p->perm = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++) p->perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = irand(r, i + 1);
        int32_t t = p->perm[i]; p->perm[i] = p->perm[j]; p->perm[j] = t;
    }
    size_t last = (size_t)(layers - 1) * p->layer_elems;
    p->ckv = (kc_paged_kv){p->host + last, (size_t)layers * p->layer_elems, p->layer_elems / 2, bs, n_kv, hd};
    p->gkv = (kv_cuda_paged_kv){(char *)p->dev + last * esz(dt), (size_t)layers * p->layer_elems,
                                p->layer_elems / 2, bs, n_kv, hd, dt};
}
static void pool_free(pool *p)
{
    free(p->host); free(p->perm);
    CK(cudaFree(p->dev));
}

static void test_kv_write(rng *r)
{
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        int bs = 16, n_kv = 2, hd = 64, start = 21, n = 40; /* prefill rows span blocks 1..3 */
        size_t row = (size_t)n_kv * hd;
        pool p;
        pool_make(&p, r, 16, bs, n_kv, hd, 2, dt);
        /* Unwritten slots are NaN on both sides, so a stray or missing write shows. */
        for (size_t i = 0; i < p.total; i++) p.host[i] = NAN;
        CK(cudaMemset(p.dev, 0xFF, p.total * esz(dt)));
        float *k = rand_vec(r, (size_t)n * row, 1.0f), *v = rand_vec(r, (size_t)n * row, 1.0f);
        round_to(k, (size_t)n * row, dt); round_to(v, (size_t)n * row, dt);
        void *dk = to_dev(k, (size_t)n * row, dt), *dv = to_dev(v, (size_t)n * row, dt);
        int32_t *dtable = to_dev_raw(p.perm, sizeof(int32_t) * 4);
        kc_kv_write(&p.ckv, p.perm, start, n, k, v);
        CHECK_KV(kv_cuda_kv_write(&p.gkv, dtable, start, n, dk, dv, NULL, &g_err));
        /* Decode: 4 sequences, tables of 2 blocks (stride 2) from blocks perm[4..11]; row 2
         * is batch padding (position -1) and must not write. */
        int32_t *tables = p.perm + 4, positions[4] = {0, 31, -1, 17};
        int32_t *dtables = to_dev_raw(tables, sizeof(int32_t) * 8), *dpos = to_dev_raw(positions, sizeof positions);
        CHECK_KV(kv_cuda_kv_write_decode(&p.gkv, dtables, 2, dpos, 4, dk, dv, NULL, &g_err));
        for (int i = 0; i < 4; i++)
            if (positions[i] >= 0)
                kc_kv_write(&p.ckv, tables + 2 * i, positions[i], 1, k + (size_t)i * row, v + (size_t)i * row);
        float *got = from_dev(p.dev, p.total, dt);
        size_t bad = 0;
        for (size_t i = 0; i < p.total; i++)
            if (!(got[i] == p.host[i] || (isnan(got[i]) && isnan(p.host[i])))) bad++;
        CHECK_MSG(bad == 0, "kv_write %s: %zu elements differ", dtn(dt), bad);
        free(k); free(v); free(got);
        CK(cudaFree(dk)); CK(cudaFree(dv)); CK(cudaFree(dtable)); CK(cudaFree(dtables)); CK(cudaFree(dpos));
        pool_free(&p);
    }
}

/* ---- attention ---- */

typedef struct pf_case { kv_cuda_dtype dt; int hd, n_heads, n_kv, bs, start, n; } pf_case;

static void test_prefill(rng *r)
{
    const pf_case cases[] = {
        {KV_CUDA_F32, 8, 4, 2, 16, 0, 19},      /* the tiny test model's shape */
        {KV_CUDA_F32, 128, 8, 2, 16, 100, 77},  /* GQA 4, cached prefix */
        {KV_CUDA_F32, 64, 8, 1, 16, 0, 64},     /* GQA 8 */
        {KV_CUDA_F32, 256, 4, 2, 16, 10, 33},   /* largest head_dim (opt-in shared memory) */
        {KV_CUDA_F32, 10, 2, 1, 3, 0, 17},      /* odd block size, head_dim not a multiple of 4 */
        {KV_CUDA_BF16, 8, 4, 4, 16, 5, 40},     /* plain path in bf16 */
        {KV_CUDA_BF16, 128, 8, 8, 16, 0, 64},   /* tensor cores, exactly one tile */
        {KV_CUDA_BF16, 128, 16, 4, 16, 1000, 300}, /* prefix, n not a multiple of 64 */
        {KV_CUDA_BF16, 64, 16, 2, 16, 37, 129}, /* head_dim 64, GQA 8 */
        {KV_CUDA_BF16, 128, 8, 8, 16, 0, 1},    /* a single query */
        {KV_CUDA_BF16, 96, 4, 2, 16, 20, 50},   /* head_dim without a fast path */
        {KV_CUDA_BF16, 128, 32, 8, 16, 8000, 100}, /* long cached prefix */
        {KV_CUDA_F16, 128, 8, 4, 16, 513, 65},  /* f16 tensor cores, GQA 2 */
        {KV_CUDA_F16, 64, 4, 4, 7, 3, 100},     /* block size 7: tiles straddle blocks */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        pf_case k = cases[c];
        int total = k.start + k.n, blocks = (total + k.bs - 1) / k.bs;
        pool p;
        pool_make(&p, r, blocks + 3, k.bs, k.n_kv, k.hd, 2, k.dt);
        size_t nq = (size_t)k.n * k.n_heads * k.hd;
        float *q = rand_vec(r, nq, 4.0f), *ref = malloc(nq * sizeof(float));
        round_to(q, nq, k.dt);
        kc_attention_prefill(ref, q, &p.ckv, p.perm, k.start, k.n, k.n_heads);
        void *dq = to_dev(q, nq, k.dt), *dout = dev_poison(nq, k.dt);
        int32_t *dtable = to_dev_raw(p.perm, sizeof(int32_t) * (size_t)blocks);
        CHECK_KV(kv_cuda_attention_prefill(dout, dq, &p.gkv, dtable, k.start, k.n, k.n_heads, NULL, &g_err));
        float *got = from_dev(dout, nq, k.dt);
        double e = max_rel(got, ref, nq);
        CHECK_MSG(e < tol(k.dt), "prefill %s hd=%d heads=%d/%d bs=%d start=%d n=%d: err %g", dtn(k.dt), k.hd,
                  k.n_heads, k.n_kv, k.bs, k.start, k.n, e);
        free(q); free(ref); free(got);
        CK(cudaFree(dq)); CK(cudaFree(dout)); CK(cudaFree(dtable));
        pool_free(&p);
    }
}

typedef struct dec_case { kv_cuda_dtype dt; int hd, n_heads, n_kv, bs, n_seqs, lens[4]; } dec_case;

static void test_decode(rng *r, int n_sms)
{
    const dec_case cases[] = {
        {KV_CUDA_F32, 8, 4, 2, 16, 3, {1, 17, 300}},
        {KV_CUDA_F32, 128, 32, 8, 16, 3, {8192, 5, 1000}},
        {KV_CUDA_F32, 128, 8, 2, 16, 1, {32768}},
        {KV_CUDA_F32, 128, 16, 1, 16, 2, {2000, 9}}, /* GQA 16: two head chunks per kv head */
        {KV_CUDA_F32, 64, 6, 2, 5, 2, {333, 64}},    /* GQA 3, odd block size */
        {KV_CUDA_BF16, 128, 8, 2, 16, 2, {32768, 100}},
        {KV_CUDA_BF16, 128, 8, 1, 16, 2, {8192, 33}}, /* GQA 8 */
        {KV_CUDA_BF16, 64, 4, 4, 16, 3, {700, 1, 64}}, /* GQA 1 */
        {KV_CUDA_BF16, 96, 8, 2, 16, 2, {500, 77}},   /* no fast path */
        {KV_CUDA_BF16, 8, 4, 2, 16, 2, {50, 3}},
        {KV_CUDA_F16, 64, 16, 8, 16, 4, {1, 2, 3, 4000}}, /* GQA 2 */
        {KV_CUDA_F16, 128, 32, 8, 16, 2, {8192, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        dec_case k = cases[c];
        int max_len = 0, max_blocks = 0, used = 0;
        for (int s = 0; s < k.n_seqs; s++) {
            int b = (k.lens[s] + k.bs - 1) / k.bs;
            if (k.lens[s] > max_len) max_len = k.lens[s];
            if (b > max_blocks) max_blocks = b;
            used += b;
        }
        pool p;
        pool_make(&p, r, used + 2, k.bs, k.n_kv, k.hd, max_len > 10000 ? 1 : 2, k.dt);
        /* Padded tables [n_seqs][max_blocks]; slots past a sequence's end hold -1 (a read
         * there would fault). */
        int32_t *tables = malloc(sizeof(int32_t) * (size_t)k.n_seqs * max_blocks);
        const int32_t *ctables[4];
        int next = 0;
        for (int s = 0; s < k.n_seqs; s++) {
            int b = (k.lens[s] + k.bs - 1) / k.bs;
            for (int i = 0; i < max_blocks; i++) tables[s * max_blocks + i] = i < b ? p.perm[next + i] : -1;
            next += b;
            ctables[s] = tables + s * max_blocks;
        }
        size_t nq = (size_t)k.n_seqs * k.n_heads * k.hd;
        float *q = rand_vec(r, nq, 4.0f), *ref = malloc(nq * sizeof(float));
        round_to(q, nq, k.dt);
        kc_attention_decode(ref, q, &p.ckv, ctables, k.lens, k.n_seqs, k.n_heads);
        void *dq = to_dev(q, nq, k.dt), *dout = dev_poison(nq, k.dt);
        int32_t *dtables = to_dev_raw(tables, sizeof(int32_t) * (size_t)k.n_seqs * max_blocks);
        int32_t *dlens = to_dev_raw(k.lens, sizeof(int32_t) * (size_t)k.n_seqs);
        int auto_splits = kv_cuda_decode_splits(k.n_seqs, k.n_heads, k.n_kv, max_len, n_sms);
        int splits[4] = {1, auto_splits, 7, KV_CUDA_DECODE_MAX_SPLITS};
        double limit = k.dt == KV_CUDA_F32 && max_len >= 8192 ? 2e-5 : tol(k.dt);
        for (int si = 0; si < 4; si++) {
            size_t ws_bytes = kv_cuda_decode_workspace_bytes(k.n_seqs, k.n_heads, k.hd, splits[si]);
            void *ws = NULL;
            if (ws_bytes) {
                CK(cudaMalloc(&ws, ws_bytes));
                CK(cudaMemset(ws, 0xFF, ws_bytes));
            }
            CK(cudaMemset(dout, 0xFF, nq * esz(k.dt)));
            CHECK_KV(kv_cuda_attention_decode(dout, dq, &p.gkv, dtables, max_blocks, dlens, k.n_seqs, k.n_heads,
                                              splits[si], ws, ws_bytes, NULL, &g_err));
            float *got = from_dev(dout, nq, k.dt);
            double e = max_rel(got, ref, nq);
            CHECK_MSG(e < limit, "decode %s hd=%d heads=%d/%d lens=%d.. splits=%d: err %g", dtn(k.dt), k.hd,
                      k.n_heads, k.n_kv, k.lens[0], splits[si], e);
            free(got);
            if (ws) CK(cudaFree(ws));
        }
        free(tables); free(q); free(ref);
        CK(cudaFree(dq)); CK(cudaFree(dout)); CK(cudaFree(dtables)); CK(cudaFree(dlens));
        pool_free(&p);
    }
}

/* ---- sampling ---- */

typedef struct pid { float p; int32_t id; } pid;
static int by_p_desc(const void *a, const void *b)
{
    const pid *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;
}

static void test_argmax_topk(rng *r)
{
    const int vocabs[] = {1, 7, 1000, 128257};
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t vi = 0; vi < sizeof vocabs / sizeof *vocabs; vi++) {
            int vocab = vocabs[vi], rows = 4;
            size_t n = (size_t)rows * vocab;
            float *x = rand_vec(r, n, 10.0f);
            if (vocab > 10) {
                x[5] = x[9] = 20.0f;               /* row 0: a tie at the top, lowest id wins */
                for (int i = 0; i < vocab; i++) x[(size_t)vocab + i] = floorf(x[(size_t)vocab + i]); /* row 1: many ties */
                for (int i = 0; i < vocab; i++) x[2 * (size_t)vocab + i] = -INFINITY;
                x[2 * (size_t)vocab + vocab - 1] = -1.0f; /* row 2: one finite value, last */
            }
            round_to(x, n, dt);
            void *dx = to_dev(x, n, dt);
            int32_t *dids = dev_poison((size_t)rows, KV_CUDA_F32);
            CHECK_KV(kv_cuda_argmax(dids, dx, rows, vocab, dt, NULL, &g_err));
            int32_t *ids = raw_from_dev(dids, sizeof(int32_t) * (size_t)rows);
            for (int rw = 0; rw < rows; rw++)
                CHECK_MSG(ids[rw] == kc_argmax(x + (size_t)rw * vocab, vocab), "argmax %s vocab=%d row %d: %d vs %d",
                          dtn(dt), vocab, rw, ids[rw], kc_argmax(x + (size_t)rw * vocab, vocab));
            free(ids);
            const int ks[] = {1, 5, 50, 1024};
            pid *ref = malloc(sizeof(pid) * (size_t)vocab);
            for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                int k = ks[ki];
                if (k > vocab) continue;
                float *dv = dev_poison((size_t)rows * k, KV_CUDA_F32);
                int32_t *di = dev_poison((size_t)rows * k, KV_CUDA_F32);
                CHECK_KV(kv_cuda_topk(dv, di, dx, rows, vocab, k, dt, NULL, &g_err));
                float *vals = from_dev(dv, (size_t)rows * k, KV_CUDA_F32);
                int32_t *gi = raw_from_dev(di, sizeof(int32_t) * (size_t)rows * k);
                for (int rw = 0; rw < rows; rw++) {
                    for (int i = 0; i < vocab; i++) ref[i] = (pid){x[(size_t)rw * vocab + i], i};
                    qsort(ref, (size_t)vocab, sizeof *ref, by_p_desc);
                    int bad = 0;
                    for (int j = 0; j < k; j++)
                        bad += gi[(size_t)rw * k + j] != ref[j].id || !(vals[(size_t)rw * k + j] == ref[j].p);
                    CHECK_MSG(bad == 0, "topk %s vocab=%d k=%d row %d: %d of %d differ", dtn(dt), vocab, k, rw, bad, k);
                }
                free(vals); free(gi);
                CK(cudaFree(dv)); CK(cudaFree(di));
            }
            free(ref); free(x);
            CK(cudaFree(dx)); CK(cudaFree(dids));
        }
    }
}

/* The tokens sampler.c could return: temperature softmax, top-k, then top-p. `slack` widens
 * the nucleus by that much mass so a boundary token that rounding puts on either side
 * counts as valid. Returns the count; allowed[id] = 1 for members. */
static int nucleus(const float *x, int vocab, float temp, int top_k, float top_p, float slack, char *allowed,
                   double *prob)
{
    pid *c = malloc(sizeof(pid) * (size_t)vocab);
    float mx = x[kc_argmax(x, vocab)];
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
        c[i] = (pid){expf((x[i] - mx) / temp), i};
        sum += c[i].p;
    }
    qsort(c, (size_t)vocab, sizeof *c, by_p_desc);
    int n = top_k > 0 && top_k < vocab ? top_k : vocab;
    double kept = 0;
    for (int i = 0; i < n; i++) kept += c[i].p;
    if (top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= (top_p + slack) * kept) {
                n = i + 1;
                break;
            }
        }
    }
    double mass = 0;
    for (int i = 0; i < n; i++) mass += c[i].p;
    memset(allowed, 0, (size_t)vocab);
    for (int i = 0; i < vocab; i++) prob[i] = 0;
    for (int i = 0; i < n; i++) {
        allowed[c[i].id] = 1;
        prob[c[i].id] = c[i].p / mass;
    }
    free(c);
    return n;
}

static void test_sample(rng *r)
{
    typedef struct { int vocab; float temp; int top_k; float top_p; int check_freq; } sc;
    const sc cases[] = {
        {1000, 1.0f, 5, 1.0f, 1},   {1000, 0.7f, 0, 0.5f, 0},   {1000, 1.0f, 50, 0.9f, 0},
        {16, 1.0f, 0, 1.0f, 1},     {32000, 1.0f, 0, 1.0f, 0},  {32000, 0.8f, 40, 1.0f, 1},
        {32000, 1.0f, 0, 0.001f, 0}, /* nucleus of one: the argmax */
        {32000, 0.05f, 0, 0.9f, 0},  /* a nucleus of a few hundred, under the candidate cap */
        {2000, 1.0f, 1500, 1.0f, 0}, /* top_k above the 1024-candidate cap: left to the host */
        {32000, 1.0f, 0, 0.9f, 0},   /* a nucleus of thousands: left to the host */
    };
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
            sc k = cases[ci];
            int rows = k.vocab > 5000 ? 512 : 4096; /* identical rows, one draw each */
            float *row = rand_vec(r, (size_t)k.vocab, 4.0f);
            round_to(row, (size_t)k.vocab, dt);
            float *x = malloc(sizeof(float) * (size_t)rows * k.vocab);
            for (int i = 0; i < rows; i++) memcpy(x + (size_t)i * k.vocab, row, sizeof(float) * (size_t)k.vocab);
            void *dx = to_dev(x, (size_t)rows * k.vocab, dt);
            /* Evenly spread draws: row i gets u = (i + 0.5) / rows, so token counts follow the
             * probabilities to within a couple of rows, with no randomness to be lucky with. */
            kv_cuda_sample_params *ps = calloc((size_t)rows, sizeof *ps);
            for (int i = 0; i < rows; i++)
                ps[i] = (kv_cuda_sample_params){k.temp, k.top_k, k.top_p, ((float)i + 0.5f) / (float)rows};
            kv_cuda_sample_params *dps = to_dev_raw(ps, sizeof *ps * (size_t)rows);
            int32_t *dids = dev_poison((size_t)rows, KV_CUDA_F32);
            CHECK_KV(kv_cuda_sample(dids, dx, rows, k.vocab, dt, dps, NULL, &g_err));
            int32_t *ids = raw_from_dev(dids, sizeof(int32_t) * (size_t)rows);

            char *allowed = malloc((size_t)k.vocab);
            double *prob = malloc(sizeof(double) * (size_t)k.vocab);
            kc_prob_id *cands = malloc(sizeof *cands * (size_t)k.vocab);
            kc_sample_params sp = {k.temp, k.top_k, k.top_p};
            int fits = kc_sample_fits(row, k.vocab, &sp, KV_CUDA_TOPK_MAX, cands);
            nucleus(row, k.vocab, k.temp, k.top_k, k.top_p, 1e-4f, allowed, prob);
            int bad = 0;
            for (int i = 0; i < rows; i++)
                bad += fits ? ids[i] < 0 || ids[i] >= k.vocab || !allowed[ids[i]] : ids[i] != KV_CUDA_SAMPLE_ON_HOST;
            CHECK_MSG(bad == 0, "sample %s case %zu: %d of %d ids %s", dtn(dt), ci, bad, rows,
                      fits ? "outside the candidate set" : "not left to the host (candidates past the cap)");
            if (fits) {
                /* The CPU twin with the same draws: equal but where a draw lands within
                 * rounding of a boundary of the cumulative sum. */
                int differ = 0;
                for (int i = 0; i < rows; i++) differ += ids[i] != kc_sample(row, k.vocab, &sp, ps[i].u, cands);
                CHECK_MSG(differ <= 2 + rows / 1000, "sample %s case %zu: %d of %d ids differ from kc_sample",
                          dtn(dt), ci, differ, rows);
            }
            free(cands);
            if (k.top_p < 0.01f)
                CHECK_MSG(ids[0] == kc_argmax(row, k.vocab), "sample %s: tiny top_p must give the argmax", dtn(dt));
            if (k.check_freq && fits) {
                int *cnt = calloc((size_t)k.vocab, sizeof(int)), off = 0;
                for (int i = 0; i < rows; i++)
                    if (ids[i] >= 0 && ids[i] < k.vocab) cnt[ids[i]]++;
                for (int i = 0; i < k.vocab; i++) off += fabs(cnt[i] - prob[i] * rows) > 2.0 + 1e-3 * rows;
                CHECK_MSG(off == 0, "sample %s case %zu: %d token frequencies off", dtn(dt), ci, off);
                free(cnt);
            }
            /* Same draws, same ids. */
            CK(cudaMemset(dids, 0xFF, sizeof(int32_t) * (size_t)rows));
            CHECK_KV(kv_cuda_sample(dids, dx, rows, k.vocab, dt, dps, NULL, &g_err));
            int32_t *again = raw_from_dev(dids, sizeof(int32_t) * (size_t)rows);
            CHECK_MSG(memcmp(ids, again, sizeof(int32_t) * (size_t)rows) == 0, "sample %s: not deterministic", dtn(dt));
            free(again);
            /* Greedy rows mixed in: temperature 0 is the argmax. */
            for (int i = 0; i < rows; i += 3) ps[i].temperature = 0.0f;
            CK(cudaMemcpy(dps, ps, sizeof *ps * (size_t)rows, cudaMemcpyHostToDevice));
            CHECK_KV(kv_cuda_sample(dids, dx, rows, k.vocab, dt, dps, NULL, &g_err));
            again = raw_from_dev(dids, sizeof(int32_t) * (size_t)rows);
            int am = kc_argmax(row, k.vocab);
            bad = 0;
            for (int i = 0; i < rows; i += 3) bad += again[i] != am;
            CHECK_MSG(bad == 0, "sample %s: %d greedy rows differ from argmax", dtn(dt), bad);
            free(again); free(allowed); free(prob); free(ids); free(ps); free(row); free(x);
            CK(cudaFree(dx)); CK(cudaFree(dps)); CK(cudaFree(dids));
        }
    }
}

/* ---- GEMM ---- */

/* A product's inputs (random, rounded to dt), its CPU reference (the GEMV twin or the GEMM
 * one) and device copies, with a poisoned output. */
typedef struct mm_case {
    float *x, *w, *ref;
    void *dx, *dw, *dy;
} mm_case;

static mm_case mm_case_make(rng *r, int m, int n, int k, kv_cuda_dtype dt, int gemv_ref)
{
    mm_case c;
    c.x = rand_vec(r, (size_t)m * k, 1.0f), c.w = rand_vec(r, (size_t)n * k, 1.0f);
    round_to(c.x, (size_t)m * k, dt); round_to(c.w, (size_t)n * k, dt);
    c.ref = malloc(sizeof(float) * (size_t)m * n);
    if (gemv_ref)
        kc_matmul_gemv(c.ref, c.x, c.w, m, n, k);
    else
        kc_matmul(c.ref, c.x, c.w, m, n, k);
    c.dx = to_dev(c.x, (size_t)m * k, dt), c.dw = to_dev(c.w, (size_t)n * k, dt);
    c.dy = dev_poison((size_t)m * n, dt);
    return c;
}

static void mm_case_free(mm_case *c)
{
    free(c->x); free(c->w); free(c->ref);
    CK(cudaFree(c->dx)); CK(cudaFree(c->dw)); CK(cudaFree(c->dy));
}

/* kv_cuda_logprobs against kc_logprobs_row on the same (rounded) values: rows with ties,
 * NaN and -inf entries, an all -inf row, a token outside the row, 0 / 1 / 5 / 20 top
 * alternatives and a skipped row (n_top < 0: left as it was). */
static int lp_close(float got, float want)
{
    if (isnan(want) || isinf(want))
        return isnan(want) ? isnan(got) : got == want;
    return fabs((double)got - (double)want) <= 1e-6 * fmax(1.0, fabs((double)want));
}

static void test_logprobs(rng *r)
{
    const int vocabs[] = {1, 7, 1000, 128257};
    enum { ROWS = 6 };
    const int32_t tops[ROWS] = {0, 1, 5, 20, 20, -1};
    _Static_assert(sizeof(kv_cuda_logprob_row) == sizeof(kc_logprobs), "same layout");
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t vi = 0; vi < sizeof vocabs / sizeof *vocabs; vi++) {
            int vocab = vocabs[vi];
            size_t n = (size_t)ROWS * vocab;
            float *x = rand_vec(r, n, 12.0f);
            int32_t toks[ROWS];
            for (int rw = 0; rw < ROWS; rw++)
                toks[rw] = irand(r, vocab);
            toks[4] = -1; /* KV_CUDA_SAMPLE_ON_HOST: NaN logprob, the top list still */
            if (vocab > 10) {
                for (int i = 0; i < vocab; i++) x[(size_t)vocab + i] = floorf(x[(size_t)vocab + i]); /* ties */
                x[2 * (size_t)vocab + 3] = NAN;
                x[2 * (size_t)vocab + 4] = -INFINITY;
                for (int i = 0; i < vocab; i++) x[3 * (size_t)vocab + i] = -INFINITY; /* no finite max */
            }
            round_to(x, n, dt);
            void *dx = to_dev(x, n, dt);
            int32_t *dt_tok = to_dev_raw(toks, sizeof toks), *dt_top = to_dev_raw(tops, sizeof tops);
            void *dout = dev_poison(ROWS * sizeof(kv_cuda_logprob_row) / 4, KV_CUDA_F32); /* 4-byte units */
            CHECK_KV(kv_cuda_logprobs(dout, dx, ROWS, vocab, dt, dt_tok, dt_top, NULL, &g_err));
            kc_logprobs *got = raw_from_dev(dout, ROWS * sizeof(kv_cuda_logprob_row));
            for (int rw = 0; rw < ROWS - 1; rw++) {
                kc_logprobs want;
                kc_logprobs_row(x + (size_t)rw * vocab, vocab, toks[rw], tops[rw], &want);
                const kc_logprobs *g = &got[rw];
                int ok = lp_close(g->logprob, want.logprob) && g->n_top == want.n_top;
                for (int k = 0; ok && k < want.n_top; k++)
                    ok = g->top_ids[k] == want.top_ids[k] && lp_close(g->top_logprobs[k], want.top_logprobs[k]);
                CHECK_MSG(ok, "logprobs %s vocab=%d row %d: %.9g (%d top, first id %d) vs %.9g (%d top, first id %d)",
                          dtn(dt), vocab, rw, (double)g->logprob, g->n_top, g->n_top ? g->top_ids[0] : -1,
                          (double)want.logprob, want.n_top, want.n_top ? want.top_ids[0] : -1);
            }
            uint32_t skipped;
            memcpy(&skipped, &got[ROWS - 1].logprob, sizeof skipped);
            CHECK_MSG(skipped == 0xFFFFFFFFu, "logprobs %s vocab=%d: a row with n_top < 0 was written", dtn(dt), vocab);
            free(got);
            free(x);
            CK(cudaFree(dx));
            CK(cudaFree(dt_tok));
            CK(cudaFree(dt_top));
            CK(cudaFree(dout));
        }
    }
}

static void test_gemm(rng *r)
{
    const int shapes[][3] = {{1, 13, 37}, {3, 64, 100}, {5, 33, 65}, {17, 70, 129}, {64, 96, 64}, {257, 1000, 512}};
    void *blas = NULL;
    CHECK_KV(kv_cuda_blas_create(&blas, &g_err));
    if (!blas) return;
    for (int t = 0; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            mm_case mc = mm_case_make(r, m, n, k, dt, 0);
            CHECK_KV(kv_cuda_gemm(blas, mc.dy, mc.dx, mc.dw, m, n, k, dt, NULL, &g_err));
            float *got = from_dev(mc.dy, (size_t)m * n, dt);
            double e = max_rel(got, mc.ref, (size_t)m * n);
            CHECK_MSG(e < tol(dt), "gemm %s %dx%dx%d: err %g", dtn(dt), m, n, k, e);
            /* 16-bit inputs, f32 output (the LM head): only accumulation-order error left. */
            if (dt != KV_CUDA_F32) {
                float *dy32 = dev_poison((size_t)m * n, KV_CUDA_F32);
                CHECK_KV(kv_cuda_gemm_out(blas, dy32, KV_CUDA_F32, mc.dx, mc.dw, m, n, k, dt, NULL, &g_err));
                float *got32 = from_dev(dy32, (size_t)m * n, KV_CUDA_F32);
                double e32 = max_rel(got32, mc.ref, (size_t)m * n);
                CHECK_MSG(e32 < 2e-4, "gemm %s->f32 %dx%dx%d: err %g", dtn(dt), m, n, k, e32);
                free(got32);
                CK(cudaFree(dy32));
            }
            free(got);
            mm_case_free(&mc);
        }
    }
    /* A workspace of our own, on a stream of our own: the calls above keep working. */
    void *ws = NULL;
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    CK(cudaMalloc(&ws, 4u << 20));
    CHECK_KV(kv_cuda_blas_set_workspace(blas, st, ws, 4u << 20, &g_err));
    CHECK(kv_cuda_gemm_out(blas, ws, KV_CUDA_BF16, ws, ws, 1, 8, 8, KV_CUDA_F32, st, &g_err) == KV_EINVAL);
    {
        int m = 33, n = 70, k = 129;
        float *x = rand_vec(r, (size_t)m * k, 1.0f), *w = rand_vec(r, (size_t)n * k, 1.0f);
        float *ref = malloc(sizeof(float) * (size_t)m * n);
        kc_matmul(ref, x, w, m, n, k);
        void *dx = to_dev(x, (size_t)m * k, KV_CUDA_F32), *dw = to_dev(w, (size_t)n * k, KV_CUDA_F32);
        void *dy = dev_poison((size_t)m * n, KV_CUDA_F32);
        CHECK_KV(kv_cuda_gemm(blas, dy, dx, dw, m, n, k, KV_CUDA_F32, st, &g_err));
        CK(cudaStreamSynchronize(st));
        float *got = from_dev(dy, (size_t)m * n, KV_CUDA_F32);
        CHECK_MSG(max_rel(got, ref, (size_t)m * n) < 1e-5, "gemm on a stream with a set workspace");
        free(x); free(w); free(ref); free(got);
        CK(cudaFree(dx)); CK(cudaFree(dw)); CK(cudaFree(dy));
    }
    kv_cuda_blas_destroy(blas);
    CK(cudaFree(ws));
    CK(cudaStreamDestroy(st));
}

/* The decode projection kernel against kc_matmul_gemv: every row count it takes, k from one
 * vector (8) to an MLP's 14336 with a tail of vectors past the unrolled loads, n not a
 * multiple of the warps per block; and what it refuses. */
static void test_gemv(rng *r)
{
    const int shapes[][3] = {{1, 13, 8}, {2, 37, 136}, {3, 1000, 4096}, {4, 257, 14336}, {1, 6144, 4096}, {4, 9, 1032}};
    for (int t = 1; t < 3; t++) {
        kv_cuda_dtype dt = all_dt[t];
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            mm_case mc = mm_case_make(r, m, n, k, dt, 1);
            CHECK(kv_cuda_gemv_fits(mc.dx, mc.dw, m, k, dt));
            CHECK_KV(kv_cuda_gemv(mc.dy, mc.dx, mc.dw, m, n, k, dt, NULL, &g_err));
            float *got = from_dev(mc.dy, (size_t)m * n, dt);
            double e = max_rel(got, mc.ref, (size_t)m * n);
            CHECK_MSG(e < tol(dt), "gemv %s %dx%dx%d: err %g", dtn(dt), m, n, k, e);
            free(got);
            mm_case_free(&mc);
        }
    }
    void *d = NULL;
    CK(cudaMalloc(&d, 4096));
    CHECK(!kv_cuda_gemv_fits(d, d, 1, 64, KV_CUDA_F32));                  /* f32: cuBLAS's */
    CHECK(!kv_cuda_gemv_fits(d, d, KV_CUDA_GEMV_MAX_ROWS + 1, 64, KV_CUDA_BF16));
    CHECK(!kv_cuda_gemv_fits(d, d, 1, 60, KV_CUDA_BF16));                 /* k not a multiple of 8 */
    CHECK(!kv_cuda_gemv_fits((char *)d + 8, d, 1, 64, KV_CUDA_BF16));    /* x not 16-byte aligned */
    CHECK(kv_cuda_gemv(d, d, d, 0, 8, 64, KV_CUDA_BF16, NULL, &g_err) == KV_EINVAL);
    CK(cudaFree(d));
}

/* ---- KV transfer checksums ---- */

static void test_block_hash(rng *r)
{
    /* A 16-byte block, stories260K's f32 block, a bf16 Llama-3-8B block + one vector (slices
     * of the kernel's 256 KiB that do not divide it), and an odd size of several slices. */
    const size_t sizes[] = {16, 20480, (2u << 20) + 16, 777 * 1024 + 48};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t bb = sizes[k];
        int n_blocks = bb > (1u << 20) ? 5 : 37;
        size_t total = bb * (size_t)n_blocks;
        unsigned char *host = malloc(total);
        for (size_t i = 0; i < total; i++)
            host[i] = (unsigned char)(frand(r) * 127.0f);
        void *dev = to_dev_raw(host, total);
        /* Out of order, with a repeat: each output is its own block's. */
        int32_t ids[6] = {n_blocks - 1, 0, 2, 2, 1, n_blocks / 2};
        int n = 6;
        int32_t *dids = to_dev_raw(ids, sizeof ids);
        uint32_t *dout;
        CK(cudaMalloc((void **)&dout, sizeof(uint32_t) * (size_t)n));
        CK(cudaMemset(dout, 0xAB, sizeof(uint32_t) * (size_t)n)); /* poisoned */
        CHECK_KV(kv_cuda_block_hash(dout, dev, bb, dids, n, NULL, &g_err));
        uint32_t got[6];
        CK(cudaMemcpy(got, dout, sizeof got, cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int i = 0; i < n; i++)
            bad += got[i] != kc_block_hash(host + (size_t)ids[i] * bb, bb);
        CHECK_MSG(bad == 0, "block_hash of %zu-byte blocks: %d of %d differ from kc_block_hash", bb, bad, n);
        /* One flipped bit anywhere changes the block's checksum. */
        size_t at = (size_t)irand(r, (int)(bb < 1000000 ? bb : 1000000)) + (size_t)ids[0] * bb;
        host[at] ^= 0x10;
        CK(cudaMemcpy((char *)dev + at, host + at, 1, cudaMemcpyHostToDevice));
        uint32_t again;
        CHECK_KV(kv_cuda_block_hash(dout, dev, bb, dids, 1, NULL, &g_err));
        CK(cudaMemcpy(&again, dout, sizeof again, cudaMemcpyDeviceToHost));
        CHECK_MSG(again != got[0] && again == kc_block_hash(host + (size_t)ids[0] * bb, bb),
                  "block_hash of %zu-byte blocks misses a flipped bit", bb);
        free(host);
        CK(cudaFree(dev)); CK(cudaFree(dids)); CK(cudaFree(dout));
    }
    CHECK(kv_cuda_block_hash((uint32_t *)16, (void *)16, 20, (int32_t *)16, 1, NULL, &g_err) == KV_EINVAL);
}

static void test_bad_args(void)
{
    kv_cuda_paged_kv kv = {(void *)16, 64, 32, 16, 2, 7, KV_CUDA_BF16};
    CHECK(kv_cuda_attention_prefill(NULL, NULL, &kv, NULL, 0, 1, 4, NULL, &g_err) == KV_EUNSUPPORTED);
    kv.head_dim = 8;
    CHECK(kv_cuda_attention_prefill(NULL, NULL, &kv, NULL, 0, 1, 3, NULL, &g_err) == KV_EINVAL);
    CHECK(kv_cuda_attention_decode(NULL, NULL, &kv, NULL, 1, NULL, 1, 4, 2, NULL, 0, NULL, &g_err) == KV_EINVAL);
    CHECK(kv_cuda_qkv_rope(NULL, NULL, NULL, NULL, 1, 1, 1, 9, NULL, NULL, KV_CUDA_F32, NULL, &g_err) == KV_EINVAL);
    CHECK(kv_cuda_swiglu_rows(NULL, NULL, -1, 4, KV_CUDA_F32, NULL, &g_err) == KV_EINVAL);
    CHECK(kv_cuda_topk(NULL, NULL, NULL, 1, 10, 11, KV_CUDA_F32, NULL, &g_err) == KV_EINVAL);
    CHECK(kv_cuda_rmsnorm(NULL, NULL, NULL, 1, 8, 1e-5f, (kv_cuda_dtype)7, NULL, &g_err) == KV_EINVAL);
    CHECK_EQ_INT(kv_cuda_decode_splits(1, 32, 8, 100, 132), 1);     /* short: one piece */
    CHECK_EQ_INT(kv_cuda_decode_splits(1, 32, 8, 32768, 132), 33);  /* 8 CTAs -> ~2 waves of 132 SMs */
    CHECK_EQ_INT(kv_cuda_decode_splits(64, 32, 8, 8192, 132), 1);   /* 512 CTAs already */
}

int main(void)
{
    int n = 0;
    kv_err err = {0, ""};
    kv_cuda_device_count(&n, &err);
    if (n == 0)
        KV_TEST_SKIP("no CUDA device (%s)", err.msg[0] ? err.msg : "none found");
    char name[256];
    size_t mem = 0;
    int major = 0, minor = 0, sms = 0;
    if (kv_cuda_device_info(0, name, sizeof name, &mem, &major, &minor, &err) ||
        kv_cuda_device_sm_count(0, &sms, &err)) {
        fprintf(stderr, "device query failed: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "device 0: %s, %.1f GiB, sm_%d%d, %d SMs\n", name, (double)mem / (1 << 30), major, minor, sms);
    rng r = {0x9E3779B97F4A7C15ull};
    test_bad_args();
    test_convert(&r);
    test_embed(&r);
    test_rmsnorm(&r);
    test_fused(&r);
    test_kv_write(&r);
    test_prefill(&r);
    test_decode(&r, sms);
    test_argmax_topk(&r);
    test_sample(&r);
    test_logprobs(&r);
    test_gemm(&r);
    test_gemv(&r);
    test_block_hash(&r);
    CK(cudaDeviceSynchronize());
    return kv_test_result();
}
