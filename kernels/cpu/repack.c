/* The repacked weight layouts (kc_repack_type in wkernels.h), portable C: a copy at load.
 *
 * q4_0x8: q4_0 rows in groups of 8. Group g starts at row 8 g's offset; for each block
 * column b of 32 weights it holds 144 bytes, the 8 rows' q4_0 bytes of that block:
 *     d[8]      the rows' fp16 scales, row i at bytes 2i (one cvtph gives all eight)
 *     qs[4][32] the rows' 16 nibble bytes, 4 at a time: bytes 32k + 4i .. 32k + 4i + 3 are
 *               row i's bytes 4k .. 4k + 3 (low nibbles columns 4k.., high ones 16 + 4k..)
 * so that one 32-byte load holds 4 columns (and their 4 partners) of all 8 rows, and a
 * maddubs of it with a token's 4 activation bytes, broadcast, leaves each row's products in
 * its own lanes (isa/avx2_q4_0x8.h). The scales first and the nibbles right after: a group
 * is one sequential stream. */
#include <string.h>

#include "wkernels.h"

#define Q4_0_BYTES 18
#define X8_ROWS 8

int kc_row_group(kv_type t) { return t == KV_TYPE_Q4_0_X8 ? X8_ROWS : 1; }

kv_type kc_repack_type(const kc_isa *isa, kv_type t, int rows)
{
    if (t == KV_TYPE_Q4_0 && rows > 0 && rows % X8_ROWS == 0 && isa->k[KV_TYPE_Q4_0_X8].gemv_rows)
        return KV_TYPE_Q4_0_X8;
    return t;
}

static void repack_q4_0_x8(uint8_t *dst, const uint8_t *w, size_t row_bytes, int group)
{
    const size_t nb = row_bytes / Q4_0_BYTES;
    const uint8_t *rows = w + (size_t)group * X8_ROWS * row_bytes;
    uint8_t *out = dst + (size_t)group * X8_ROWS * row_bytes;
    for (size_t b = 0; b < nb; b++, out += X8_ROWS * Q4_0_BYTES)
        for (int i = 0; i < X8_ROWS; i++) {
            const uint8_t *blk = rows + (size_t)i * row_bytes + b * Q4_0_BYTES;
            memcpy(out + 2 * i, blk, 2);
            for (int k = 0; k < 4; k++)
                memcpy(out + 16 + 32 * k + 4 * i, blk + 2 + 4 * k, 4);
        }
}

void kc_repack_rows(kv_type to, void *dst, const void *w, size_t row_bytes, int row_begin, int row_end)
{
    if (to != KV_TYPE_Q4_0_X8) { /* a stored type: as it is */
        memcpy((uint8_t *)dst + (size_t)row_begin * row_bytes, (const uint8_t *)w + (size_t)row_begin * row_bytes,
               (size_t)(row_end - row_begin) * row_bytes);
        return;
    }
    for (int g = row_begin / X8_ROWS; g < row_end / X8_ROWS; g++)
        repack_q4_0_x8(dst, w, row_bytes, g);
}
