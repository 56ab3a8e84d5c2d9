/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68
 * bytes (controls, space, DEL, NBSP, soft hyphen) map to U+0100.. in byte order, so every
 * byte string becomes a string of visible characters that BPE vocabularies can hold. */
#include "kv_utf8.h"
#include "tok_internal.h"
#include "tok_utf8.h"

static int is_printable_latin1(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

void tok_byte_level_init(tok_byte_level *t)
{
    for (unsigned cp = 0; cp < 324; cp++)
        t->byte_of[cp] = -1;
    unsigned next = 256;
    for (unsigned b = 0; b < 256; b++) {
        unsigned cp = is_printable_latin1(b) ? b : next++;
        t->utf8_len[b] = (unsigned char)kv_utf8_put(t->utf8[b], cp);
        t->byte_of[cp] = (int16_t)b;
    }
}
