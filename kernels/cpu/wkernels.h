/* Weight kernels: GEMV (decode) and GEMM (prefill) on weights kept in their stored kv_type
 * (f32, f16, bf16, and ggml's q8_0 / q4_0 / q4_1 / q5_0 / q5_1 / q4_k / q6_k blocks, byte for
 * byte), one table of entry points per instruction set, picked once at start-up.
 *
 * A weight is W[rows][cols] row-major (an HF Linear [out, in]); row r starts at
 * w + r * w_row_bytes, w_row_bytes = kv_type_bytes(type, cols). For a block type, cols must be
 * a whole number of blocks (kv_type_bytes != 0); f32/f16/bf16 take any cols.
 *
 * Activations: as llama.cpp's vec_dot does, a quantized weight's dot product wants its
 * activation rows quantized first (kc_wkernel.act): int8 blocks of 32 for the q*_0/q*_1
 * family, int8 blocks of 256 with 16-element sums for the k-quants; f32/f16/bf16 take the f32
 * row itself (their quantize_act is a copy, so every caller does the same two steps).
 * quantize_act gives the same bytes under every ISA (one portable implementation).
 *
 * Intended calling pattern (the engine, one OpenMP parallel region per layer; these kernels
 * never open a parallel region themselves):
 *
 *     const kc_isa *isa;  kc_isa_pick(&isa, &err);                 // once, at engine creation
 *     const kc_wkernel *k = &isa->k[w.type];
 *     #pragma omp parallel
 *     {
 *         #pragma omp for                                          // quantize inputs once
 *         for (int v = 0; v < n_vec; v++)
 *             k->quantize_act(act + v * act_row_bytes, x + v * cols, cols);
 *         // implicit barrier; then each thread its rows (kc_split_rows)
 *         int r0, r1;  kc_split_rows(rows, omp_get_num_threads(), omp_get_thread_num(), 16, &r0, &r1);
 *         k->gemv_rows(y, rows, w.data, w_row_bytes, r0, r1, act, act_row_bytes, n_vec, cols);
 *         #pragma omp barrier ... next matmul of the layer
 *     }
 *
 * Every output y[v][r] is computed by the same sequence of operations whatever n_vec, the row
 * range and the ISA's grouping of rows are, so decode stays batch-invariant (a sequence's
 * tokens never depend on its batch mates). Different ISAs give different roundings.
 * A non-finite activation makes its block's outputs NaN (never a finite lie). */
#ifndef KV_CPU_WKERNELS_H
#define KV_CPU_WKERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kv_err.h"
#include "kv_type.h"

/* Activation formats. Q8_32 block: float d, float s (= d * sum of qs), int8 qs[32] (40 bytes);
 * Q8_K block: float d, int16 bsums[16] (sums of 16 qs each), int8 qs[256] (292 bytes).
 * qs = round-half-even(x / d), d = max|x| / 127. */
typedef enum kc_act { KC_ACT_F32 = 0, KC_ACT_Q8_32, KC_ACT_Q8_K } kc_act;
#define KC_Q8_32_BYTES 40
#define KC_Q8_K_BYTES 292

/* Bytes of one activation row of cols elements in format act (0 when cols is not a whole
 * number of its blocks, or is not positive). */
size_t kc_act_row_bytes(kc_act act, int cols);

/* act_row <- x[cols] in the kernel's activation format. */
typedef void (*kc_quantize_act_fn)(void *act_row, const float *x, int cols);
/* The dot product of one weight row with one activation row. */
typedef float (*kc_vec_dot_fn)(const void *w_row, const void *act_row, int cols);
/* y[v * ldy + r] = W[r] . act[v] for r in [row_begin, row_end), v in [0, n_vec): each weight
 * block is read once and used for up to 8 activation vectors while in registers (more than 8
 * are taken 8 at a time over tiles of rows that stay in cache: a GEMM). */
typedef void (*kc_gemv_rows_fn)(float *y, size_t ldy, const void *w, size_t w_row_bytes, int row_begin, int row_end,
                                const void *act, size_t act_row_bytes, int n_vec, int cols);

typedef struct kc_wkernel {
    kc_act act;
    kc_quantize_act_fn quantize_act;
    kc_vec_dot_fn vec_dot;
    kc_gemv_rows_fn gemv_rows; /* NULL: this type has no kernels (none today) */
    /* Prefill's dequantization into kc_wgemm_rows' panels: the same values as kv_type_traits'
     * to_f32, bit for bit, on every ISA. */
    kv_type_to_f32_fn to_f32;
    /* Prefill in int8 (activations quantized as for gemv_rows, any n_vec): y[v][r] as
     * gemv_rows promises, each output the same whatever the tokens and rows sharing the call,
     * but its own rounding (not gemv_rows' bits). NULL: the type's prefill is kc_wgemm_rows. */
    kc_gemv_rows_fn igemm_rows;
    /* A repacked layout's dequantizer (to_f32 is NULL there), for kc_wgemm_rows' panels:
     * rows[i * ld + 0..n) <- row i of the row group at g, columns [k0, k0 + n) (whole
     * blocks), for each of the group's rows: the stored type's to_f32 values, bit for bit. */
    void (*group_to_f32)(const void *g, size_t w_row_bytes, int k0, int n, float *rows, size_t ld);
} kc_wkernel;

/* The prefill GEMM's register tile (kc_wgemm_rows): up to KC_WGEMM_MR token rows by
 * KC_WGEMM_NR weight rows, over a panel of kb <= KC_WGEMM_KB columns stored [k][NR]. */
#define KC_WGEMM_MR 6
#define KC_WGEMM_NR 16
#define KC_WGEMM_KB 256
/* panel[k * NR + r] <- rows[r * ld + k], for k < kbp (a multiple of 8), r < NR. */
typedef void (*kc_wgemm_pack_fn)(float *panel, const float *rows, size_t ld, int kbp);
/* y[i * ldy + r] (+)= x[i * ldx + 0..kb) . panel column r, for i < mr <= MR, r < nr <= NR;
 * accumulate 0 stores, 1 adds to y. Each y element sees k in order, one multiply-add per k
 * (an FMA in the SIMD tiles). */
typedef void (*kc_wgemm_micro_fn)(float *y, size_t ldy, const float *x, size_t ldx, const float *panel, int kb,
                                  int mr, int nr, int accumulate);

/* One instruction set's kernels, indexed by kv_type. Tables are constant. */
typedef struct kc_isa {
    const char *name; /* "scalar", "avx2", "avx512" */
    kc_wkernel k[KV_TYPE_LAYOUT_END]; /* the kernel layouts' too (NULL entries: none here) */
    kc_wgemm_pack_fn wgemm_pack;
    kc_wgemm_micro_fn wgemm_micro;
} kc_isa;

/* The best ISA this CPU runs, or the one KVSERVE_ISA names (scalar|avx2|avx512): KV_EINVAL
 * when it names an unknown ISA or one this CPU cannot run. */
int kc_isa_pick(const kc_isa **out, kv_err *err);
/* The named ISA's table when this CPU can run it, else NULL. */
const kc_isa *kc_isa_by_name(const char *name);
/* Every ISA compiled in, best last (some may not run here: kc_isa_runnable). */
const kc_isa *const *kc_isa_all(int *n);
int kc_isa_runnable(const kc_isa *isa);

/* Repacked layouts (llama.cpp's CPU "repack" buffers): a matrix may stream faster in a
 * kernel layout of its type (kv_type.h), rows interleaved in groups so that one SIMD load
 * holds a block column of the group's rows and their scales load as one vector. The engine
 * repacks once at load, when the ISA has kernels for the layout. A row range handed to a
 * layout's kernels starts and ends on a group; a layout has no vec_dot and no to_f32. */
/* The layout a matrix of type t and `rows` rows takes under isa: t itself when it stays as
 * stored (no layout of t, none in this ISA, or rows not whole groups). */
kv_type kc_repack_type(const kc_isa *isa, kv_type t, int rows);
/* Rows per group of type t (1 for a stored type). */
int kc_row_group(kv_type t);
/* Rows [row_begin, row_end) (whole groups) of a stored matrix w (row_bytes apart) into dst,
 * the same bytes at the same offsets, in layout `to` (a kc_repack_type result). */
void kc_repack_rows(kv_type to, void *dst, const void *w, size_t row_bytes, int row_begin, int row_end);

/* Thread t of n_threads gets rows [*r0, *r1): contiguous slices, multiples of `align` rows
 * except the last, so neighbouring threads never share a cache line of y. */
void kc_split_rows(int rows, int n_threads, int t, int align, int *r0, int *r1);

/* Prefill: y[t * ldy + r] = W[r] . x[t] for t < n_tok, r in [row_begin, row_end), x f32
 * [n_tok][cols]. Weights are dequantized KC_WGEMM_NR rows by KC_WGEMM_KB columns at a time
 * into a panel in scratch (the caller's, per thread: KC_WGEMM_SCRATCH_FLOATS floats) that
 * isa's register tile multiplies with every token row. Single-threaded: the caller splits
 * rows. Each y element sums its columns in the same order whatever n_tok and the row range
 * are, so a token's output does not depend on its chunk mates. */
#define KC_WGEMM_SCRATCH_FLOATS (2 * KC_WGEMM_NR * KC_WGEMM_KB)
void kc_wgemm_rows(const kc_isa *isa, float *y, size_t ldy, const void *w, kv_type type, size_t w_row_bytes,
                   int row_begin, int row_end, const float *x, int n_tok, int cols, float *scratch);

#endif
