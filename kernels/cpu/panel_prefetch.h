/* A cursor over the cache lines of a panel of weight rows, for the prefill GEMMs (wgemm.c and
 * isa/avx2_igemm.h) to ask for the next panel while they multiply the current one: rows
 * [row, row_end) of stride row_bytes, seg_bytes from w in each. */
#ifndef KV_CPU_PANEL_PREFETCH_H
#define KV_CPU_PANEL_PREFETCH_H

#include <stddef.h>

typedef struct kc_panel_prefetch {
    const unsigned char *w;
    size_t row_bytes, seg_bytes, off;
    int row, row_end;
} kc_panel_prefetch;

/* Lines per row the segment touches, the last byte's included. */
static inline int kc_panel_prefetch_lines(size_t seg_bytes) { return (int)(seg_bytes / 64) + 2; }

/* Up to n more lines of the panel (every line of a row, then its last byte's). */
static inline void kc_panel_prefetch_some(kc_panel_prefetch *pf, int n)
{
    for (; n > 0 && pf->row < pf->row_end; n--) {
        const unsigned char *p = pf->w + (size_t)pf->row * pf->row_bytes;
        __builtin_prefetch(p + (pf->off < pf->seg_bytes ? pf->off : pf->seg_bytes - 1));
        if (pf->off >= pf->seg_bytes) {
            pf->off = 0;
            pf->row++;
        } else {
            pf->off += 64;
        }
    }
}

#endif
