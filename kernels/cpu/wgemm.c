/* Prefill on stored-format weights: dequantize a tile of rows to f32 and hand it to sgemm.
 * At prefill's token counts the GEMM is compute-bound, so the dequantization (once per
 * weight element per call, against n_tok FMAs per element) is noise, and sgemm's blocking
 * beats a hand-written int8 GEMM on AVX2 (bench/bench_wkernels.c measures both). */
#include "kv_blas.h"
#include "wkernels.h"

void kc_wgemm_rows(float *y, size_t ldy, const void *w, kv_type type, size_t w_row_bytes, int row_begin, int row_end,
                   const float *x, int n_tok, int cols, float *tile)
{
    const struct kv_type_traits *tr = kv_type_traits(type);
    const unsigned char *wb = w;
    for (int r = row_begin; r < row_end; r += KC_WGEMM_TILE_ROWS) {
        int n = row_end - r < KC_WGEMM_TILE_ROWS ? row_end - r : KC_WGEMM_TILE_ROWS;
        const float *wt;
        if (type == KV_TYPE_F32) {
            wt = (const float *)(const void *)(wb + (size_t)r * w_row_bytes);
        } else {
            tr->to_f32(wb + (size_t)r * w_row_bytes, tile, (size_t)n * (size_t)cols);
            wt = tile;
        }
        kv_sgemm(KV_BLAS_T, n_tok, n, cols, 1.0f, x, cols, wt, cols, 0.0f, y + r, (int)ldy);
    }
}
