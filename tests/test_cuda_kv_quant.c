/* The quantized-KV CUDA kernels (kernels/cuda/cuda_kv_quant.cu) against their CPU twins,
 * on blocks laid out by kv_layout (one layer), for every bits x key mode, head_dim 64 and
 * 128, GQA groups of 1, 3 and 4, and lengths that are not multiples of the block:
 *   quantize: a sealed block's bytes (codes, f16 scales and zero points, padding) equal
 *     kq_quantize_block's byte for byte, on random rows with planted constant, signed-zero
 *     and wide channels;
 *   decode attention: sequences whose old blocks are codes and newest ones f32 rows (the
 *     engine's window rule, residual 1 and 2 blocks) against kq_attend_one: normwise
 *     relative error per head < 1e-4, for one split, several and the chosen count; a NaN
 *     never compares as passing;
 *   every argument the launchers must refuse.
 * Label gpu: exits 77 without a device. Built a second time against tests/cuda_mock.c
 * (test_cuda_kv_quant_mock), whose stand-ins are the CPU twins themselves: there it checks
 * the test, the launchers' contract (sizes, tables, workspace) and the refusals, not the
 * GPU arithmetic. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kv_quant.h"
#include "kv_layout.h"
#include "kv_quant.h"
#include "kv_test.h"
#include "kv_test_cuda.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { return (uint32_t)(kv_test_xorshift(&rng_state) >> 32); }
static float rnd_unit(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }

/* The larger of two errors, NaN once either is (a later finite error must not hide it). */
static double worse(double a, double e) { return isnan(a) || isnan(e) ? NAN : e > a ? e : a; }

typedef struct kvq_case {
    int bits, per_token, head_dim, n_kv_heads, group;
    kv_layout l;
    kv_cuda_kvq_format f;
    kq_format kf;
    kq_regions r;
} kvq_case;

static int case_init(kvq_case *c, int bits, int per_token, int head_dim, int n_kv_heads)
{
    kv_layout_params p = {0};
    p.n_layers = 1;
    p.n_kv_heads = n_kv_heads;
    p.head_dim = head_dim;
    p.block_size = 16;
    p.dtype = bits == 8 ? KV_CACHE_INT8 : bits == 4 ? KV_CACHE_INT4 : KV_CACHE_INT2;
    p.key_mode = per_token ? KV_KEYS_PER_TOKEN : KV_KEYS_PER_CHANNEL;
    kv_err err = {0, ""};
    int rc = kv_layout_init(&c->l, &p, &err);
    CHECK_MSG(rc == KV_OK, "kv_layout_init: %s", err.msg);
    if (rc)
        return rc;
    const kv_layout *l = &c->l;
    c->bits = bits, c->per_token = per_token, c->head_dim = head_dim, c->n_kv_heads = n_kv_heads, c->group = l->group;
    c->f = (kv_cuda_kvq_format){bits,       l->block_size, n_kv_heads, head_dim, l->group, per_token,
                                l->k,       l->k_scales,   l->k_zeros, l->v,     l->v_scales, l->v_zeros};
    c->kf = (kq_format){bits, l->block_size, n_kv_heads, head_dim, l->group, per_token};
    c->r = (kq_regions){l->k, l->k_scales, l->k_zeros, l->v, l->v_scales, l->v_zeros};
    CHECK(kv_cuda_kvq_layer_extent(&c->f) <= l->slot_bytes);
    return KV_OK;
}

static const char *case_name(const kvq_case *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "int%d keys-per-%s hd%d kvh%d g%d", c->bits, c->per_token ? "token" : "channel", c->head_dim,
             c->n_kv_heads, c->group);
    return buf;
}

/* Rows of one block, `stride` floats apart, with the groups the formula finds hard: ties
 * of x / S (S = 1 exactly) that round to even, where roundf would not. */
static void fill_rows(float *x, int bs, size_t row, size_t stride, int bits)
{
    for (int t = 0; t < bs; t++)
        for (size_t i = 0; i < stride; i++)
            x[(size_t)t * stride + i] = i < row ? rnd_unit() * (i % 7 == 3 ? 6.0f : 1.0f) : NAN; /* pad: never read */
    for (int t = 0; t < bs; t++) {
        x[(size_t)t * stride + 1] = 0.75f;                                /* a constant channel */
        x[(size_t)t * stride + 2] = (t & 1) ? -0.0f : 0.0f;              /* signed zeros only */
        x[(size_t)t * stride + 5] = t == 3 ? 0.0f : t == 9 ? -0.0f : 1.5f; /* zeros as the minimum */
        x[(size_t)t * stride + row - 1] = 1e-6f * (float)t;              /* a range below a half's step */
    }
    float qmax = (float)((1 << bits) - 1);
    for (int t = 0; t < bs; t++) /* channel 6: 0, qmax, then k + 0.5 */
        x[(size_t)t * stride + 6] = t == 0 ? 0.0f : t == 1 ? qmax : (float)((t - 2) % (int)qmax) + 0.5f;
    for (size_t i = 0; i < 32 && i < row; i++) { /* token 0 all one value: constant per-token groups */
        x[i] = -0.3125f;
        x[2 * stride + i] = i == 0 ? 0.0f : i == 1 ? qmax : (float)((int)(i - 2) % (int)qmax) + 0.5f; /* ties */
    }
}

static void check_quantize(const kvq_case *c)
{
    char name[96];
    case_name(c, name, sizeof name);
    int bs = c->l.block_size;
    size_t row = (size_t)c->n_kv_heads * c->head_dim, stride = row + 3, n = (size_t)bs * stride;
    size_t bytes = c->l.slot_bytes;
    float *k = malloc(n * sizeof *k), *v = malloc(n * sizeof *v);
    uint8_t *want = calloc(1, bytes), *got = malloc(bytes);
    fill_rows(k, bs, row, stride, c->bits);
    fill_rows(v, bs, row, stride, c->bits);
    kq_quantize_block(want, &c->kf, &c->r, k, v, stride);

    void *db;
    float *dk, *dv;
    CK(cudaMalloc(&db, bytes));
    CK(cudaMalloc((void **)&dk, n * sizeof *dk));
    CK(cudaMalloc((void **)&dv, n * sizeof *dv));
    CK(cudaMemset(db, 0, bytes));
    CK(cudaMemcpy(dk, k, n * sizeof *k, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, v, n * sizeof *v, cudaMemcpyHostToDevice));
    kv_err err = {0, ""};
    int rc = kv_cuda_kvq_quantize_block(db, &c->f, dk, dv, stride, NULL, &err);
    CHECK_MSG(rc == KV_OK, "%s: quantize: %s", name, err.msg);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, db, bytes, cudaMemcpyDeviceToHost));
    size_t first = bytes;
    for (size_t i = 0; i < bytes; i++)
        if (got[i] != want[i]) {
            first = i;
            break;
        }
    CHECK_MSG(first == bytes, "%s: quantized block differs from kq_quantize_block at byte %zu (0x%02x, want 0x%02x)",
              name, first, first < bytes ? got[first] : 0, first < bytes ? want[first] : 0);
    CK(cudaFree(db));
    CK(cudaFree(dk));
    CK(cudaFree(dv));
    free(k), free(v), free(want), free(got);
}

/* Decode attention over n_seqs sequences; the pools hold every sequence's blocks in a
 * shuffled order, sealed blocks as codes, the window's as f32 rows. */
static void check_attention(const kvq_case *c, int gqa, int residual_blocks, const int *lens, int n_seqs)
{
    char name[96];
    case_name(c, name, sizeof name);
    int bs = c->l.block_size, hd = c->head_dim, n_heads = c->n_kv_heads * gqa;
    size_t row = (size_t)c->n_kv_heads * hd;
    int stride = 0, n_blocks = 0, max_len = 0;
    for (int s = 0; s < n_seqs; s++) {
        int nb = (lens[s] - 1) / bs + 1;
        stride = nb > stride ? nb : stride;
        n_blocks += nb;
        max_len = lens[s] > max_len ? lens[s] : max_len;
    }
    /* every sequence's blocks get ids in both pools; a block is read from one of them */
    size_t qbb = c->l.slot_bytes, fbs = 2 * (size_t)bs * row;
    uint8_t *qpool = calloc((size_t)n_blocks, qbb);
    float *fpool = malloc((size_t)n_blocks * fbs * sizeof *fpool);
    int32_t *qt = malloc((size_t)n_seqs * stride * sizeof *qt), *ft = malloc((size_t)n_seqs * stride * sizeof *ft);
    int32_t *perm = malloc((size_t)n_blocks * sizeof *perm);
    for (int i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint32_t)(i + 1));
        int32_t tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    for (size_t i = 0; i < (size_t)n_blocks * fbs; i++)
        fpool[i] = NAN; /* a row read that should not be shows */
    float *k = malloc((size_t)bs * row * sizeof *k), *v = malloc((size_t)bs * row * sizeof *v);
    int next = 0;
    for (int s = 0; s < n_seqs; s++) {
        int nb = (lens[s] - 1) / bs + 1, ws = (lens[s] - 1) / bs - residual_blocks + 1;
        ws = ws > 0 ? ws : 0;
        for (int b = 0; b < stride; b++)
            qt[(size_t)s * stride + b] = ft[(size_t)s * stride + b] = -1;
        for (int b = 0; b < nb; b++) {
            int32_t id = perm[next++];
            for (size_t i = 0; i < (size_t)bs * row; i++) {
                k[i] = rnd_unit() * ((i % 13 == 0) ? 4.0f : 1.0f);
                v[i] = rnd_unit();
            }
            if (b < ws) {
                qt[(size_t)s * stride + b] = id;
                kq_quantize_block(qpool + (size_t)id * qbb, &c->kf, &c->r, k, v, row);
            } else {
                ft[(size_t)s * stride + b] = id;
                int rows = b == nb - 1 ? lens[s] - b * bs : bs; /* unwritten rows stay NaN */
                memcpy(fpool + (size_t)id * fbs, k, (size_t)rows * row * sizeof *k);
                memcpy(fpool + (size_t)id * fbs + (size_t)bs * row, v, (size_t)rows * row * sizeof *v);
            }
        }
    }
    size_t qn = (size_t)n_seqs * n_heads * hd;
    float *q = malloc(qn * sizeof *q), *want = malloc(qn * sizeof *want), *got = malloc(qn * sizeof *got);
    for (size_t i = 0; i < qn; i++)
        q[i] = rnd_unit();
    /* The CPU twin, as engine_kvq.c calls it. */
    kc_paged_kv fp = {fpool, fbs, (size_t)bs * row, bs, c->n_kv_heads, hd};
    const void **blocks = malloc((size_t)stride * sizeof *blocks);
    float *scores = malloc((size_t)stride * bs * sizeof *scores);
    for (int s = 0; s < n_seqs; s++) {
        int ws = (lens[s] - 1) / bs - residual_blocks + 1;
        ws = ws > 0 ? ws : 0;
        for (int b = 0; b < ws; b++)
            blocks[b] = qpool + (size_t)qt[(size_t)s * stride + b] * qbb;
        for (int h = 0; h < n_heads; h++) {
            size_t off = ((size_t)s * n_heads + h) * hd;
            kq_attend_one(want + off, q + off, &c->kf, &c->r, h / gqa, blocks, ws, &fp, ft + (size_t)s * stride,
                          ws * bs, lens[s] - ws * bs, scores);
        }
    }

    void *dq_pool, *dws = NULL;
    float *df_pool, *dqv, *dout;
    int32_t *dqt, *dft, *dlens;
    size_t tab = (size_t)n_seqs * stride * sizeof(int32_t);
    CK(cudaMalloc(&dq_pool, (size_t)n_blocks * qbb));
    CK(cudaMalloc((void **)&df_pool, (size_t)n_blocks * fbs * sizeof(float)));
    CK(cudaMalloc((void **)&dqv, qn * sizeof(float)));
    CK(cudaMalloc((void **)&dout, qn * sizeof(float)));
    CK(cudaMalloc((void **)&dqt, tab));
    CK(cudaMalloc((void **)&dft, tab));
    CK(cudaMalloc((void **)&dlens, (size_t)n_seqs * sizeof(int32_t)));
    CK(cudaMemcpy(dq_pool, qpool, (size_t)n_blocks * qbb, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(df_pool, fpool, (size_t)n_blocks * fbs * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dqv, q, qn * sizeof(float), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dqt, qt, tab, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dft, ft, tab, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dlens, lens, (size_t)n_seqs * sizeof(int32_t), cudaMemcpyHostToDevice));
    kv_cuda_kvq_pool qp = {dq_pool, qbb, c->f};
    kv_cuda_paged_kv fkv = {df_pool, fbs, (size_t)bs * row, bs, c->n_kv_heads, hd, KV_CUDA_F32};
    int chosen = kv_cuda_decode_splits(n_seqs, n_heads, c->n_kv_heads, max_len, 132);
    int splits[] = {1, 3, chosen};
    for (int si = 0; si < 3; si++) {
        int ns = splits[si];
        size_t wsb = kv_cuda_decode_workspace_bytes(n_seqs, n_heads, hd, ns);
        if (wsb)
            CK(cudaMalloc(&dws, wsb));
        CK(cudaMemset(dout, 0xFF, qn * sizeof(float))); /* NaN: an unwritten output fails */
        kv_err err = {0, ""};
        int rc = kv_cuda_kvq_attention_decode(dout, dqv, &qp, dqt, &fkv, dft, stride, dlens, residual_blocks, n_seqs,
                                              n_heads, ns, dws, wsb, NULL, &err);
        CHECK_MSG(rc == KV_OK, "%s: attention: %s", name, err.msg);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got, dout, qn * sizeof(float), cudaMemcpyDeviceToHost));
        double worst = 0;
        for (size_t hi = 0; hi < (size_t)n_seqs * n_heads; hi++) {
            double diff = 0, mag = 0;
            for (int d = 0; d < hd; d++) {
                diff = worse(diff, fabs((double)got[hi * hd + d] - want[hi * hd + d]));
                mag = fmax(mag, fabs((double)want[hi * hd + d]));
            }
            worst = worse(worst, diff / (mag > 0 ? mag : 1));
        }
        CHECK_MSG(worst < 1e-4, "%s gqa %d residual %d, %d splits: rel err %g against kq_attend_one", name, gqa,
                  residual_blocks, ns, worst);
        fprintf(stderr, "%-38s gqa %d res %d splits %2d: rel err %.2e\n", name, gqa, residual_blocks, ns, worst);
        if (dws)
            CK(cudaFree(dws));
        dws = NULL;
    }
    CK(cudaFree(dq_pool));
    CK(cudaFree(df_pool));
    CK(cudaFree(dqv));
    CK(cudaFree(dout));
    CK(cudaFree(dqt));
    CK(cudaFree(dft));
    CK(cudaFree(dlens));
    free(qpool), free(fpool), free(qt), free(ft), free(perm), free(k), free(v);
    free(q), free(want), free(got), free(blocks), free(scores);
}

static void test_refusals(void)
{
    kvq_case c;
    if (case_init(&c, 4, 0, 64, 2))
        return;
    void *d = NULL;
    CK(cudaMalloc(&d, 1 << 20));
    CK(cudaMemset(d, 0, 1 << 20)); /* lengths 0: the one accepted call writes zeros */
    float *f = d;
    int32_t *t = d;
    kv_err err;
    kv_cuda_kvq_format bad = c.f;
    bad.bits = 3;
    CHECK(kv_cuda_kvq_quantize_block(d, &bad, f, f, 128, NULL, &err) == KV_EINVAL);
    bad = c.f, bad.group = 24; /* does not divide 64 */
    CHECK(kv_cuda_kvq_quantize_block(d, &bad, f, f, 128, NULL, &err) == KV_EINVAL);
    bad = c.f, bad.block_size = 15; /* 4-bit codes pack two a byte */
    CHECK(kv_cuda_kvq_quantize_block(d, &bad, f, f, 128, NULL, &err) == KV_EINVAL);
    bad = c.f, bad.k_scales += 1; /* halves on odd offsets */
    CHECK(kv_cuda_kvq_quantize_block(d, &bad, f, f, 128, NULL, &err) == KV_EINVAL);
    bad = c.f, bad.head_dim = 512, bad.group = 32;
    CHECK(kv_cuda_kvq_quantize_block(d, &bad, f, f, 1024, NULL, &err) == KV_EUNSUPPORTED);
    CHECK(kv_cuda_kvq_quantize_block(d, &c.f, f, f, 127, NULL, &err) == KV_EINVAL); /* stride below a row */
    CHECK(kv_cuda_kvq_quantize_block((char *)d + 1, &c.f, f, f, 128, NULL, &err) == KV_EINVAL);

    kv_cuda_kvq_pool qp = {d, c.l.slot_bytes, c.f};
    kv_cuda_paged_kv fkv = {d, 2 * 16 * 128, 16 * 128, 16, 2, 64, KV_CUDA_F32};
#define ATT(qp_, fkv_, res, heads, splits, ws, wsb) \
    kv_cuda_kvq_attention_decode(f, f, qp_, t, fkv_, t, 4, t, res, 1, heads, splits, ws, wsb, NULL, &err)
    CHECK(ATT(&qp, &fkv, 1, 4, 1, NULL, 0) == KV_OK);
    CK(cudaDeviceSynchronize());
    kv_cuda_kvq_pool qbad = qp;
    qbad.block_bytes = kv_cuda_kvq_layer_extent(&c.f) - 2;
    CHECK(ATT(&qbad, &fkv, 1, 4, 1, NULL, 0) == KV_EINVAL);
    qbad = qp, qbad.block_bytes += 1;
    CHECK(ATT(&qbad, &fkv, 1, 4, 1, NULL, 0) == KV_EINVAL);
    kv_cuda_paged_kv fbad = fkv;
    fbad.dtype = KV_CUDA_BF16;
    CHECK(ATT(&qp, &fbad, 1, 4, 1, NULL, 0) == KV_EINVAL);
    fbad = fkv, fbad.block_size = 32;
    CHECK(ATT(&qp, &fbad, 1, 4, 1, NULL, 0) == KV_EINVAL);
    CHECK(ATT(&qp, &fkv, 0, 4, 1, NULL, 0) == KV_EINVAL);                           /* no residual block */
    CHECK(ATT(&qp, &fkv, 1, 3, 1, NULL, 0) == KV_EINVAL);                           /* 3 heads over 2 */
    CHECK(ATT(&qp, &fkv, 1, 4, 0, NULL, 0) == KV_EINVAL);                           /* no split */
    CHECK(ATT(&qp, &fkv, 1, 4, KV_CUDA_DECODE_MAX_SPLITS + 1, d, 1 << 20) == KV_EINVAL);
    CHECK(ATT(&qp, &fkv, 1, 4, 2, NULL, 0) == KV_EINVAL);                           /* splits need a workspace */
#undef ATT
    CK(cudaFree(d));
}

/* A timing line for gpu-check's log (no assertion): decode attention over a batch of long
 * sequences with int4 per-channel keys against the f32 decode kernel on the same shape. */
static void time_decode(void)
{
    char dev[64] = "";
    kv_err err = {0, ""};
    kv_cuda_device_info(0, dev, sizeof dev, NULL, NULL, NULL, &err);
    if (strstr(dev, "mock")) /* CPU stand-ins: nothing to measure */
        return;
    kvq_case c;
    if (case_init(&c, 4, 0, 128, 8))
        return;
    enum { N_SEQS = 8, CTX = 4096, GQA = 4, REPS = 20 };
    int bs = c.l.block_size, nb = CTX / bs, n_heads = 8 * GQA, hd = 128;
    size_t row = 8 * 128, fbs = 2 * (size_t)bs * row, n_blocks = (size_t)N_SEQS * nb;
    size_t qn = (size_t)N_SEQS * n_heads * hd;
    int32_t *tables = malloc(n_blocks * sizeof *tables), lens[N_SEQS];
    for (size_t i = 0; i < n_blocks; i++)
        tables[i] = (int32_t)i;
    for (int s = 0; s < N_SEQS; s++)
        lens[s] = CTX;
    void *dq_pool, *dws = NULL;
    float *df_pool, *dq, *dout;
    int32_t *dt, *dlens;
    CK(cudaMalloc(&dq_pool, n_blocks * c.l.slot_bytes));
    CK(cudaMalloc((void **)&df_pool, n_blocks * fbs * sizeof(float)));
    CK(cudaMalloc((void **)&dq, qn * sizeof(float)));
    CK(cudaMalloc((void **)&dout, qn * sizeof(float)));
    CK(cudaMalloc((void **)&dt, n_blocks * sizeof(int32_t)));
    CK(cudaMalloc((void **)&dlens, sizeof lens));
    CK(cudaMemset(dq_pool, 0, n_blocks * c.l.slot_bytes));
    CK(cudaMemset(df_pool, 0, n_blocks * fbs * sizeof(float)));
    CK(cudaMemset(dq, 0, qn * sizeof(float)));
    CK(cudaMemcpy(dt, tables, n_blocks * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dlens, lens, sizeof lens, cudaMemcpyHostToDevice));
    int sms = 0;
    kv_cuda_device_sm_count(0, &sms, &err);
    int ns = kv_cuda_decode_splits(N_SEQS, n_heads, 8, CTX, sms > 0 ? sms : 132);
    size_t wsb = kv_cuda_decode_workspace_bytes(N_SEQS, n_heads, hd, ns);
    if (wsb)
        CK(cudaMalloc(&dws, wsb));
    kv_cuda_kvq_pool qp = {dq_pool, c.l.slot_bytes, c.f};
    kv_cuda_paged_kv fkv = {df_pool, fbs, (size_t)bs * row, bs, 8, hd, KV_CUDA_F32};
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float ms[2] = {0, 0};
    for (int which = 0; which < 2; which++)
        for (int rep = -2; rep < REPS; rep++) { /* two warm-up runs */
            if (rep == 0)
                CK(cudaEventRecord(e0, NULL));
            int rc = which == 0 ? kv_cuda_kvq_attention_decode(dout, dq, &qp, dt, &fkv, dt, nb, dlens, 1, N_SEQS,
                                                               n_heads, ns, dws, wsb, NULL, &err)
                                : kv_cuda_attention_decode(dout, dq, &fkv, dt, nb, dlens, N_SEQS, n_heads, ns, dws,
                                                           wsb, NULL, &err);
            CHECK_MSG(rc == KV_OK, "timed decode: %s", err.msg);
            if (rep == REPS - 1) {
                CK(cudaEventRecord(e1, NULL));
                CK(cudaEventSynchronize(e1));
                CK(cudaEventElapsedTime(&ms[which], e0, e1));
            }
        }
    double code_gb = (double)N_SEQS * (nb - 1) * (double)c.l.slot_bytes / 1e9;
    double f32_gb = (double)N_SEQS * CTX * 2.0 * (double)row * 4 / 1e9;
    fprintf(stderr,
            "timing (%s): decode %d seqs x %d ctx, %d heads / 8 kv, hd 128, %d splits: int4 codes %.1f us (%.0f GB/s), "
            "f32 kernel %.1f us (%.0f GB/s)\n",
            dev, N_SEQS, CTX, n_heads, ns, ms[0] * 1e3 / REPS, code_gb / (ms[0] * 1e-3 / REPS), ms[1] * 1e3 / REPS,
            f32_gb / (ms[1] * 1e-3 / REPS));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(dq_pool));
    CK(cudaFree(df_pool));
    CK(cudaFree(dq));
    CK(cudaFree(dout));
    CK(cudaFree(dt));
    CK(cudaFree(dlens));
    if (dws)
        CK(cudaFree(dws));
    free(tables);
}

int main(void)
{
    int n_dev = 0;
    kv_err err = {0, ""};
    kv_cuda_device_count(&n_dev, &err);
    if (n_dev == 0)
        KV_TEST_SKIP("no CUDA device (%s)", err.msg[0] ? err.msg : "none found");
    static const int bits[] = {8, 4, 2};
    static const int shapes[][2] = {{64, 2}, {128, 1}, {128, 3}}; /* head_dim, kv heads */
    static const int gqas[] = {1, 3, 4};
    const int lens_a[] = {1, 16, 37, 150, 17};     /* one token, one block, ragged */
    const int lens_b[] = {300, 33, 2};
    for (int bi = 0; bi < 3; bi++)
        for (int pt = 0; pt < 2; pt++)
            for (int si = 0; si < 3; si++) {
                kvq_case c;
                if (case_init(&c, bits[bi], pt, shapes[si][0], shapes[si][1]))
                    continue;
                check_quantize(&c);
                check_attention(&c, gqas[si], 1, lens_a, 5);
                check_attention(&c, gqas[(si + 1) % 3], 2, lens_b, 3);
            }
    test_refusals();
    time_decode();
    return kv_test_result();
}
