/* The GEMV/GEMM loop shared by the SIMD files, instantiated per weight format by
 * KC_DEFINE_GEMV(FMT, BE, WB, AB). The including file defines, before the macro's use:
 *   KC_ACC, kc_acc_zero(), kc_acc_hsum(acc)    the accumulator vector type
 *   FMT##_wblk                                 one weight block held in registers
 *   FMT##_unpack(FMT##_wblk *, const uint8_t *w_block)
 *   FMT##_dot(const FMT##_wblk *, const uint8_t *act_block, KC_ACC acc) -> acc + the block's dot
 *   FMT##_tail(w_row, act_row, from, cols) -> float, elements past the last whole block
 * BE: elements per block; WB / AB: bytes per block of weights / of activations.
 *
 * Each (row, vector) pair has its own accumulator that sees the blocks in order, so its
 * result does not depend on how rows are grouped (R) or how many vectors share the pass
 * (NV): that is the batch invariance wkernels.h promises. (The 32-block formats bring their
 * own tiles, avx2_kernels.h's KC_DEFINE_GEMV_Q8_0 and KC_DEFINE_GEMV_Q32_LANES, and share the
 * loops below.) R x NV accumulators are chosen so that a lone vector still has 4 independent
 * FMA chains (R = 4 rows at a time), except where a format streams faster one row at a time
 * (KC_DEFINE_GEMV_LOOPS' R1). */
#ifndef KV_CPU_GEMV_DRIVER_H
#define KV_CPU_GEMV_DRIVER_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define KC_ALWAYS_INLINE static inline __attribute__((always_inline))

/* Software prefetch of the weight stream. A tile reads R rows at once: R interleaved streams,
 * which the hardware prefetcher follows poorly (SmolLM2's 360-byte q4_1 rows, streamed from
 * DRAM at 1 thread: 4.5 GB/s without, 7-8.5 GB/s with; in cache it costs ~5 %). Whenever a
 * row's block starts a new 64-byte line, the line at the same place KC_PREFETCH_TILES tiles
 * ahead is asked for, so the stream is a steady 2-4 KiB ahead of the loads. Prefetching never
 * faults, past the matrix's end included (the address is formed as an integer, not by pointer
 * arithmetic past the object); results do not depend on it. */
KC_ALWAYS_INLINE int kc_prefetch_tiles(size_t tile_bytes) { return tile_bytes >= 2048 ? 1 : 2; }
#define KC_PREFETCH_ROWS(w_block, wrb, R, B_OFFSET, BLOCK_BYTES)                                                    \
    do {                                                                                                            \
        if (((B_OFFSET) & 63) < (BLOCK_BYTES)) {                                                                    \
            const size_t ahead_ = (size_t)(R) * (wrb) * (size_t)kc_prefetch_tiles((size_t)(R) * (wrb));             \
            for (int r_ = 0; r_ < (R); r_++) {                                                                      \
                const uintptr_t at_ = (uintptr_t)(w_block) + (size_t)r_ * (wrb) + ahead_;                           \
                /* a block over 64 bytes (the k-quants' 144..210) spans several lines: all of them */               \
                for (size_t o_ = 64; o_ < (BLOCK_BYTES); o_ += 64)                                                  \
                    _mm_prefetch((const char *)(at_ + o_), _MM_HINT_T0);                                            \
                _mm_prefetch((const char *)at_, _MM_HINT_T0);                                                       \
                if ((BLOCK_BYTES) > 64)                                                                             \
                    _mm_prefetch((const char *)(at_ + (BLOCK_BYTES) - 1), _MM_HINT_T0);                             \
            }                                                                                                       \
        }                                                                                                           \
    } while (0)

/* Rows per cache tile when there are more than 8 vectors (the GEMM case): the tile's weight
 * rows stay in L2 while every group of 8 vectors passes over them. */
#define KC_GEMM_TILE_ROWS 16

#define KC_DEFINE_GEMV(FMT, BE, WB, AB)                                                                             \
    KC_ALWAYS_INLINE void FMT##_tile(float *y, size_t ldy, const uint8_t *w, size_t wrb, const uint8_t *a,          \
                                     size_t arb, int cols, const int R, const int NV)                               \
    {                                                                                                               \
        KC_ACC acc[4][8];                                                                                           \
        for (int r = 0; r < R; r++)                                                                                 \
            for (int v = 0; v < NV; v++)                                                                            \
                acc[r][v] = kc_acc_zero();                                                                          \
        const int nb = cols / (BE);                                                                                 \
        for (int b = 0; b < nb; b++) {                                                                              \
            KC_PREFETCH_ROWS(w + (size_t)b * (WB), wrb, R, (size_t)b * (WB), (WB));                                  \
            for (int r = 0; r < R; r++) {                                                                           \
                FMT##_wblk u;                                                                                       \
                FMT##_unpack(&u, w + (size_t)r * wrb + (size_t)b * (WB));                                           \
                for (int v = 0; v < NV; v++)                                                                        \
                    acc[r][v] = FMT##_dot(&u, a + (size_t)v * arb + (size_t)b * (AB), acc[r][v]);                   \
            }                                                                                                       \
        }                                                                                                           \
        for (int r = 0; r < R; r++)                                                                                 \
            for (int v = 0; v < NV; v++)                                                                            \
                y[(size_t)v * ldy + (size_t)r] = kc_acc_hsum(acc[r][v]) +                                           \
                                                 FMT##_tail(w + (size_t)r * wrb, a + (size_t)v * arb, nb * (BE), cols); \
    }                                                                                                               \
    KC_DEFINE_GEMV_LOOPS(FMT, 4)

/* FMT##_rows_nv, FMT##_gemv_rows and FMT##_vec_dot over a FMT##_tile(y, ldy, w, wrb, a, arb,
 * cols, R, NV) that takes (R, NV) in (R1, 1), (2, 2) and (1, 1..8). R1: rows per tile for a
 * lone vector (decode), 4 or 1 (results are the same either way: each pair has its own
 * accumulator). */
#define KC_DEFINE_GEMV_LOOPS(FMT, R1)                                                                               \
    /* Rows [r0, r1) against NV (1..8) vectors. */                                                                  \
    __attribute__((unused)) static void FMT##_rows_nv(float *y, size_t ldy, const uint8_t *w, size_t wrb, int r0, int r1, const uint8_t *a, \
                              size_t arb, int nv, int cols)                                                         \
    {                                                                                                               \
        int r = r0;                                                                                                 \
        if (nv == 1 && (R1) == 4)                                                                                   \
            for (; r + 4 <= r1; r += 4)                                                                             \
                FMT##_tile(y + r, ldy, w + (size_t)r * wrb, wrb, a, arb, cols, 4, 1);                               \
        if (nv == 2)                                                                                                \
            for (; r + 2 <= r1; r += 2)                                                                             \
                FMT##_tile(y + r, ldy, w + (size_t)r * wrb, wrb, a, arb, cols, 2, 2);                               \
        for (; r < r1; r++) {                                                                                       \
            const uint8_t *wr = w + (size_t)r * wrb;                                                                \
            switch (nv) {                                                                                           \
            case 1: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 1); break;                                     \
            case 2: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 2); break;                                     \
            case 3: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 3); break;                                     \
            case 4: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 4); break;                                     \
            case 5: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 5); break;                                     \
            case 6: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 6); break;                                     \
            case 7: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 7); break;                                     \
            default: FMT##_tile(y + r, ldy, wr, wrb, a, arb, cols, 1, 8); break;                                    \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
                                                                                                                    \
    __attribute__((unused)) static void FMT##_gemv_rows(float *y, size_t ldy, const void *w, size_t wrb, int r0, int r1, const void *act,  \
                                size_t arb, int n_vec, int cols)                                                    \
    {                                                                                                               \
        const uint8_t *wb = w, *ab = act;                                                                           \
        if (n_vec <= 8) {                                                                                           \
            FMT##_rows_nv(y, ldy, wb, wrb, r0, r1, ab, arb, n_vec, cols);                                           \
            return;                                                                                                 \
        }                                                                                                           \
        for (int t0 = r0; t0 < r1; t0 += KC_GEMM_TILE_ROWS) {                                                       \
            int t1 = t0 + KC_GEMM_TILE_ROWS < r1 ? t0 + KC_GEMM_TILE_ROWS : r1;                                     \
            for (int v = 0; v < n_vec; v += 8)                                                                      \
                FMT##_rows_nv(y + (size_t)v * ldy, ldy, wb, wrb, t0, t1, ab + (size_t)v * arb, arb,                 \
                              n_vec - v < 8 ? n_vec - v : 8, cols);                                                 \
        }                                                                                                           \
    }                                                                                                               \
                                                                                                                    \
    __attribute__((unused)) static float FMT##_vec_dot(const void *w, const void *act, int cols)                                            \
    {                                                                                                               \
        float y;                                                                                                    \
        FMT##_tile(&y, 1, w, 0, act, 0, cols, 1, 1);                                                                \
        return y;                                                                                                   \
    }

#endif
