/* Stop sequences (fe_stop.h). */
#include "fe_stop.h"

#include <string.h>

fe_stop_scan fe_stop_scan_text(const char *text, size_t len, size_t sent, char *const *stop, size_t n_stop)
{
    fe_stop_scan s = {0, 0, len};
    if (sent > len)
        sent = len;
    size_t hold = 0;
    for (size_t i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        if (!sl)
            continue;
        const char *hit = len - sent >= sl ? memmem(text + sent, len - sent, stop[i], sl) : NULL;
        if (hit && (!s.matched || (size_t)(hit - text) < s.match_at)) {
            s.matched = 1;
            s.match_at = (size_t)(hit - text);
        }
        /* the longest suffix of the unsent text that is a proper prefix of this stop */
        size_t k = sl - 1 < len - sent ? sl - 1 : len - sent;
        for (; k > hold; k--)
            if (!memcmp(text + len - k, stop[i], k))
                break;
        if (k > hold)
            hold = k;
    }
    if (s.matched) {
        s.emit_end = s.match_at;
        return s;
    }
    s.emit_end = len - hold;
    while (s.emit_end > sent && s.emit_end < len && ((unsigned char)text[s.emit_end] & 0xC0) == 0x80)
        s.emit_end--;
    return s;
}
