/* The repacked weight layouts (kc_repack_type in wkernels.h), portable C: a copy at load.
 *
 * q4_0x8 and q4_1x8: q4_0 / q4_1 rows in groups of 8. Group g starts at row 8 g's offset;
 * for each block column b of 32 weights it holds the 8 rows' bytes of that block (144 / 160):
 *     d[8]      the rows' fp16 scales, row i at bytes 2i (one cvtph gives all eight)
 *     m[8]      q4_1 only: the rows' fp16 mins, likewise
 *     qs[4][32] the rows' 16 nibble bytes, 4 at a time: bytes 32k + 4i .. 32k + 4i + 3 are
 *               row i's bytes 4k .. 4k + 3 (low nibbles columns 4k.., high ones 16 + 4k..)
 * so that one 32-byte load holds 4 columns (and their 4 partners) of all 8 rows, and a
 * maddubs of it with a token's 4 activation bytes, broadcast, leaves each row's products in
 * its own lanes (isa/avx2_x8.h). Scales first and nibbles right after: a group is one
 * sequential stream. */
#include <string.h>

#include "wkernels.h"

#define X8_ROWS 8

/* The bytes before the nibbles in a stored block: d, or d and m. */
static size_t x8_head(kv_type t) { return t == KV_TYPE_Q4_0_X8 ? 2 : 4; }

int kc_row_group(kv_type t) { return t == KV_TYPE_Q4_0_X8 || t == KV_TYPE_Q4_1_X8 ? X8_ROWS : 1; }

kv_type kc_repack_type(const kc_isa *isa, kv_type t, int rows)
{
    const kv_type to = t == KV_TYPE_Q4_0 ? KV_TYPE_Q4_0_X8 : t == KV_TYPE_Q4_1 ? KV_TYPE_Q4_1_X8 : t;
    return to != t && rows > 0 && rows % X8_ROWS == 0 && isa->k[to].gemv_rows ? to : t;
}

static void repack_x8(kv_type to, uint8_t *dst, const uint8_t *w, size_t row_bytes, int group)
{
    const size_t head = x8_head(to), bb = head + 16, nb = row_bytes / bb;
    const uint8_t *rows = w + (size_t)group * X8_ROWS * row_bytes;
    uint8_t *out = dst + (size_t)group * X8_ROWS * row_bytes;
    for (size_t b = 0; b < nb; b++, out += X8_ROWS * bb)
        for (int i = 0; i < X8_ROWS; i++) {
            const uint8_t *blk = rows + (size_t)i * row_bytes + b * bb;
            for (size_t f = 0; f < head / 2; f++) /* d, then m */
                memcpy(out + 16 * f + 2 * i, blk + 2 * f, 2);
            for (int k = 0; k < 4; k++)
                memcpy(out + 8 * head + 32 * k + 4 * i, blk + head + 4 * k, 4);
        }
}

void kc_repack_rows(kv_type to, void *dst, const void *w, size_t row_bytes, int row_begin, int row_end)
{
    if (kc_row_group(to) == 1) { /* a stored type: as it is */
        memcpy((uint8_t *)dst + (size_t)row_begin * row_bytes, (const uint8_t *)w + (size_t)row_begin * row_bytes,
               (size_t)(row_end - row_begin) * row_bytes);
        return;
    }
    for (int g = row_begin / X8_ROWS; g < row_end / X8_ROWS; g++)
        repack_x8(to, dst, w, row_bytes, g);
}
