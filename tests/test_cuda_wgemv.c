/* kv_cuda_wgemv (kernels/cuda/cuda_wgemv.cu) on random q8_0 / q4_0 / q4_1 blocks and odd
 * shapes: against the weights dequantized by kv_type's bit-exact to_f32 and a double dot
 * (rel. err per output, relative to sum |w_i x_i|, below 1e-4), and against its CPU twin's
 * kernels (kernels/cpu/isa, scalar table: int8 activations, so only to 2e-2, which still
 * catches any block-layout slip); then every argument it must refuse. Needs a GPU (label
 * gpu): exits 77 without one. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_kernels.h"
#include "kv_test.h"
#include "kv_test_cuda.h"
#include "wkernels.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void) { return (uint32_t)(kv_test_xorshift(&rng_state) >> 32); }
static float rnd_unit(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }

/* A finite half scale of magnitude 2^-14 .. 2^-3, random sign unless positive. */
static uint16_t rnd_half_scale(int positive)
{
    uint16_t exp = (uint16_t)(1 + rnd() % 12), mant = (uint16_t)(rnd() & 0x3ff);
    uint16_t sign = positive ? 0 : (uint16_t)((rnd() & 1) << 15);
    return (uint16_t)(sign | exp << 10 | mant);
}

static void fill_blocks(kv_type t, uint8_t *w, size_t bytes)
{
    size_t bb = kv_type_traits(t)->block_bytes;
    for (size_t i = 0; i < bytes; i++)
        w[i] = (uint8_t)rnd();
    for (size_t b = 0; b + bb <= bytes; b += bb) {
        uint16_t d = rnd_half_scale(t == KV_TYPE_Q4_1), m = rnd_half_scale(0);
        memcpy(w + b, &d, 2);
        if (t == KV_TYPE_Q4_1)
            memcpy(w + b + 2, &m, 2);
    }
}

static void check_case(kv_type t, int m, int n, int k)
{
    const size_t rb = (size_t)kv_type_bytes(t, (uint64_t)k);
    uint8_t *w = malloc(rb * (size_t)n);
    float *x = malloc(sizeof(float) * (size_t)m * (size_t)k), *wf = malloc(sizeof(float) * (size_t)k);
    float *got = malloc(sizeof(float) * (size_t)m * (size_t)n), *twin = malloc(sizeof(float) * (size_t)m * (size_t)n);
    fill_blocks(t, w, rb * (size_t)n);
    for (int i = 0; i < m * k; i++)
        x[i] = rnd_unit() * (i % 97 == 5 ? 8.0f : 1.0f);

    void *dw;
    float *dx, *dy;
    CK(cudaMalloc(&dw, rb * (size_t)n));
    CK(cudaMalloc((void **)&dx, sizeof(float) * (size_t)m * (size_t)k));
    CK(cudaMalloc((void **)&dy, sizeof(float) * (size_t)m * (size_t)n));
    CK(cudaMemcpy(dw, w, rb * (size_t)n, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dx, x, sizeof(float) * (size_t)m * (size_t)k, cudaMemcpyHostToDevice));
    CK(cudaMemset(dy, 0xFF, sizeof(float) * (size_t)m * (size_t)n)); /* NaN: an unwritten output fails */
    kv_err err = {0, ""};
    int rc = kv_cuda_wgemv(dy, dx, dw, t, m, n, k, NULL, &err);
    CHECK_MSG(rc == KV_OK, "%s %dx%dx%d: %s", kv_type_name(t), m, n, k, err.msg);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, dy, sizeof(float) * (size_t)m * (size_t)n, cudaMemcpyDeviceToHost));

    /* The CPU twin: the scalar table's kernel for this format (int8 activations). */
    const kc_isa *scalar = kc_isa_by_name("scalar");
    const kc_wkernel *kw = &scalar->k[t];
    size_t arb = kc_act_row_bytes(kw->act, k);
    uint8_t *act = malloc(arb * (size_t)m);
    for (int v = 0; v < m; v++)
        kw->quantize_act(act + (size_t)v * arb, x + (size_t)v * k, k);
    kw->gemv_rows(twin, (size_t)n, w, rb, 0, n, act, arb, m, k);

    double worst = 0, worst_twin = 0;
    for (int r = 0; r < n; r++) {
        kv_type_traits(t)->to_f32(w + (size_t)r * rb, wf, (size_t)k);
        for (int v = 0; v < m; v++) {
            double ref = 0, scale = 0;
            for (int i = 0; i < k; i++) {
                ref += (double)wf[i] * x[(size_t)v * k + i];
                scale += fabs((double)wf[i] * x[(size_t)v * k + i]);
            }
            double g = got[(size_t)v * n + r], e = fabs(g - ref) / (scale > 0 ? scale : 1);
            double et = fabs(g - twin[(size_t)v * n + r]) / (scale > 0 ? scale : 1);
            /* A NaN, once seen, stays: a later finite error must not replace it. */
            if (worst == worst && !(e <= worst))
                worst = e;
            if (worst_twin == worst_twin && !(et <= worst_twin))
                worst_twin = et;
        }
    }
    CHECK_MSG(worst < 1e-4, "%s m=%d n=%d k=%d: rel err %g against dequantize-then-f32", kv_type_name(t), m, n, k,
              worst);
    CHECK_MSG(worst_twin < 2e-2, "%s m=%d n=%d k=%d: rel err %g against the CPU twin", kv_type_name(t), m, n, k,
              worst_twin);
    fprintf(stderr, "%-5s m=%d n=%-5d k=%-5d rel err %.2e (dequantized ref), %.2e (CPU twin)\n", kv_type_name(t), m,
            n, k, worst, worst_twin);
    CK(cudaFree(dw));
    CK(cudaFree(dx));
    CK(cudaFree(dy));
    free(w);
    free(x);
    free(wf);
    free(got);
    free(twin);
    free(act);
}

static void test_refusals(void)
{
    void *d = NULL;
    kv_err err;
    CK(cudaMalloc(&d, 1 << 16));
    float *f = d;
    CHECK(kv_cuda_wgemv(f, f, d, KV_TYPE_Q4_K, 1, 8, 256, NULL, &err) == KV_EUNSUPPORTED);
    CHECK(kv_cuda_wgemv(f, f, d, KV_TYPE_F32, 1, 8, 256, NULL, &err) == KV_EUNSUPPORTED);
    CHECK(kv_cuda_wgemv(f, f, d, KV_TYPE_Q8_0, 0, 8, 64, NULL, &err) == KV_EINVAL);
    CHECK(kv_cuda_wgemv(f, f, d, KV_TYPE_Q8_0, KV_CUDA_WGEMV_MAX_ROWS + 1, 8, 64, NULL, &err) == KV_EINVAL);
    CHECK(kv_cuda_wgemv(f, f, d, KV_TYPE_Q4_0, 1, 0, 64, NULL, &err) == KV_EINVAL);
    CHECK(kv_cuda_wgemv(f, f, d, KV_TYPE_Q4_0, 1, 8, 48, NULL, &err) == KV_EINVAL); /* k not a multiple of 32 */
    CHECK(kv_cuda_wgemv(f, f + 1, d, KV_TYPE_Q4_1, 1, 8, 64, NULL, &err) == KV_EINVAL); /* x not 16-byte aligned */
    CHECK(kv_cuda_wgemv(f, f, (char *)d + 1, KV_TYPE_Q4_1, 1, 8, 64, NULL, &err) == KV_EINVAL);
    CK(cudaFree(d));
}

int main(void)
{
    int n_dev = 0;
    kv_err err = {0, ""};
    kv_cuda_device_count(&n_dev, &err);
    if (n_dev == 0)
        KV_TEST_SKIP("no CUDA device (%s)", err.msg[0] ? err.msg : "none found");
    static const kv_type types[] = {KV_TYPE_Q8_0, KV_TYPE_Q4_0, KV_TYPE_Q4_1};
    /* m every count it takes; n not a multiple of the 8 warps a block; k from one block to
     * past a warp's 32 blocks with a ragged last pass (SmolLM2's 576 and 1536, TinyLlama's 5632). */
    static const int shapes[][3] = {{1, 1, 32},   {1, 13, 96},    {2, 37, 576},  {3, 1000, 1536}, {4, 257, 5632},
                                    {5, 9, 1056}, {6, 100, 2048}, {7, 33, 64},   {8, 576, 576},   {1, 49152, 576}};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            check_case(types[t], shapes[s][0], shapes[s][1], shapes[s][2]);
    test_refusals();
    return kv_test_result();
}
