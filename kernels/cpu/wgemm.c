/* Prefill on stored-format weights: a panel of KC_WGEMM_NR weight rows by KC_WGEMM_KB columns
 * is dequantized (the ISA's to_f32, vectorized; a repacked layout's group_to_f32, a row group
 * at a time, the same values), transposed to [k][NR] and multiplied with
 * every token row by the ISA's MR x NR register tile, BLIS-style. The loops live here, once,
 * in portable C; each ISA brings only its dequantizers, its panel transpose and its tile.
 *
 * Why our own GEMM rather than OpenBLAS on dequantized tiles, as before: at prefill's shapes
 * (a few hundred tokens against 576..2048-column rows) sgemm spent as much time packing its
 * operands and zeroing C (beta = 0) as the dequantization it was handed, and its results
 * depended on how many tokens shared the call. Here each weight element is dequantized once
 * per KC_WGEMM_TOKENS tokens straight into the packed layout the tile reads, and every output
 * sums its columns in the same order whatever the chunk (prefix-cache reuse recomputes a
 * suffix alone and gets the bits a whole prompt would). */
#include <stdint.h>
#include <string.h>

#include "panel_prefetch.h"
#include "wkernels.h"

/* Token rows per pass: their KC_WGEMM_KB columns (144 KiB) stay in L2 while every panel of
 * the row slice passes over them. */
#define KC_WGEMM_TOKENS 144

static int min_int(int a, int b) { return a < b ? a : b; }

/* The next panel's weight bytes are asked for a few lines at a time while this panel meets the
 * token tiles (kc_panel_prefetch): its KC_WGEMM_NR rows are as many short streams (144 bytes
 * each for q4_0, 1 KiB for f32), which the hardware prefetcher does not pick up in time;
 * without this the dequantization waited on DRAM (9 % of a SmolLM2 q4_0 prefill of 128
 * tokens). All at once, a 16 KiB f32 panel's 256 lines overflowed the core's outstanding
 * misses: the prefetch instructions themselves stalled (5 % of a TinyLlama f32 prefill) and
 * the panel's copy still waited on DRAM (15 %). */
void kc_wgemm_rows(const kc_isa *isa, float *y, size_t ldy, const void *w, kv_type type, size_t w_row_bytes,
                   int row_begin, int row_end, const float *x, int n_tok, int cols, float *scratch)
{
    const struct kv_type_traits *tr = kv_type_traits(type);
    const kv_type_to_f32_fn to_f32 = isa->k[type].to_f32;
    const int group = kc_row_group(type); /* > 1: a repacked layout, dequantized a group at a time */
    const unsigned char *wb = w;
    float *rows = scratch, *panel = scratch + KC_WGEMM_NR * KC_WGEMM_KB;
    for (int t0 = 0; t0 < n_tok; t0 += KC_WGEMM_TOKENS) {
        const int t_end = min_int(n_tok, t0 + KC_WGEMM_TOKENS);
        for (int k0 = 0; k0 < cols; k0 += KC_WGEMM_KB) {
            const int kb = min_int(KC_WGEMM_KB, cols - k0), kbp = (kb + 7) & ~7;
            /* KC_WGEMM_KB is a whole number of every type's blocks, so k0 starts a block */
            const size_t k_off = (size_t)k0 / tr->block_elems * tr->block_bytes;
            for (int rp = row_begin; rp < row_end; rp += KC_WGEMM_NR) {
                const int nr = min_int(KC_WGEMM_NR, row_end - rp);
                const unsigned char *src = wb + (size_t)rp * w_row_bytes + k_off;
                if (type == KV_TYPE_F32 && nr == KC_WGEMM_NR && kb == kbp && (uintptr_t)src % sizeof(float) == 0 &&
                    w_row_bytes % sizeof(float) == 0) {
                    /* a whole f32 panel: transposed straight from the weights, no copy */
                    isa->wgemm_pack(panel, (const float *)(const void *)src, w_row_bytes / sizeof(float), kbp);
                } else {
                    for (int i = 0; i < KC_WGEMM_NR; i += group) {
                        float *ri = rows + (size_t)i * KC_WGEMM_KB;
                        if (i >= nr) {
                            memset(ri, 0, sizeof(float) * (size_t)KC_WGEMM_KB * (size_t)group);
                            continue;
                        }
                        if (group > 1) /* whole groups: rp and nr are multiples of group */
                            isa->k[type].group_to_f32(wb + (size_t)(rp + i) * w_row_bytes, w_row_bytes, k0, kb, ri,
                                                      KC_WGEMM_KB);
                        else
                            to_f32(src + (size_t)i * w_row_bytes, ri, (size_t)kb);
                        for (int g = 0; g < group; g++)
                            memset(ri + (size_t)g * KC_WGEMM_KB + kb, 0, sizeof(float) * (size_t)(kbp - kb));
                    }
                    isa->wgemm_pack(panel, rows, KC_WGEMM_KB, kbp);
                }
                /* the next panel: its rows' segments, or its groups' block columns */
                const size_t seg = kv_type_bytes(type, (uint64_t)kb);
                kc_panel_prefetch pf = {wb + k_off * (size_t)group, w_row_bytes * (size_t)group, seg * (size_t)group,
                                        0, (rp + KC_WGEMM_NR) / group, min_int(rp + 2 * KC_WGEMM_NR, row_end) / group};
                const int n_tiles = (t_end - t0 + KC_WGEMM_MR - 1) / KC_WGEMM_MR;
                const int per_tile = (KC_WGEMM_NR * kc_panel_prefetch_lines(seg) + n_tiles - 1) / n_tiles;
                for (int t = t0; t < t_end; t += KC_WGEMM_MR) {
                    kc_panel_prefetch_some(&pf, per_tile);
                    isa->wgemm_micro(y + (size_t)t * ldy + (size_t)rp, ldy, x + (size_t)t * (size_t)cols + k0,
                                     (size_t)cols, panel, kb, min_int(KC_WGEMM_MR, t_end - t), nr, k0 > 0);
                }
            }
        }
    }
}
