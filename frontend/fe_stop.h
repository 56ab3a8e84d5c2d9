/* Stop sequences on a growing text: where the first one ends the output, and how much of the
 * text is safe to send before more arrives (a suffix that could still grow into a stop
 * sequence is held back, never splitting a UTF-8 character). */
#ifndef FE_STOP_H
#define FE_STOP_H

#include <stddef.h>

typedef struct fe_stop_scan {
    int matched;      /* a stop sequence occurs in text[sent..len) */
    size_t match_at;  /* where the earliest one starts (the output ends there) */
    size_t emit_end;  /* without a match: text[sent..emit_end) may be sent now */
} fe_stop_scan;

/* text[0..sent) was sent already (and is known to hold no stop sequence, nor to end in the
 * start of one past what was held back). */
fe_stop_scan fe_stop_scan_text(const char *text, size_t len, size_t sent, char *const *stop, size_t n_stop);

#endif
