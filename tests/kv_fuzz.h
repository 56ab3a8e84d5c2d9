/* What the fuzz tests share: a seeded xorshift stream, values a handler expects mixed with
 * the ones it must refuse, byte-level mutation, reading and writing an input. Header-only;
 * the protocol's plausible messages are in kv_fuzz_envelope.h. */
#ifndef KV_FUZZ_H
#define KV_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define KV_FUZZ_BUF 4096 /* room for a packed message and its growth */

typedef struct kv_fuzz_rng {
    uint64_t s; /* never 0 */
} kv_fuzz_rng;

static inline uint64_t kv_fuzz_next(kv_fuzz_rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return r->s;
}

static inline uint32_t kv_fuzz_below(kv_fuzz_rng *r, uint32_t n)
{
    return n ? (uint32_t)(kv_fuzz_next(r) % n) : 0;
}

/* Mostly small non-negative ints (token and block ids), sometimes the edges. */
static inline int32_t kv_fuzz_i32(kv_fuzz_rng *r)
{
    switch (kv_fuzz_below(r, 8)) {
    case 0: return -1;
    case 1: return INT32_MAX;
    case 2: return INT32_MIN;
    case 3: return (int32_t)kv_fuzz_next(r);
    default: return (int32_t)kv_fuzz_below(r, 600);
    }
}

static inline uint32_t kv_fuzz_u32(kv_fuzz_rng *r)
{
    switch (kv_fuzz_below(r, 6)) {
    case 0: return UINT32_MAX;
    case 1: return (uint32_t)kv_fuzz_next(r);
    default: return kv_fuzz_below(r, 300);
    }
}

/* One to four edits of buf[0..len) (which has room for KV_FUZZ_BUF): a bit flipped, a byte
 * set, the end cut, random bytes appended, a slice copied elsewhere. Returns the length. */
static inline size_t kv_fuzz_mutate(kv_fuzz_rng *r, uint8_t *buf, size_t len)
{
    for (int k = 1 + (int)kv_fuzz_below(r, 4); k > 0; k--) {
        switch (kv_fuzz_below(r, 5)) {
        case 0:
            if (len) buf[kv_fuzz_below(r, (uint32_t)len)] ^= (uint8_t)(1u << kv_fuzz_below(r, 8));
            break;
        case 1:
            if (len) buf[kv_fuzz_below(r, (uint32_t)len)] = (uint8_t)(kv_fuzz_below(r, 2) ? 0xFF : kv_fuzz_next(r));
            break;
        case 2:
            len = kv_fuzz_below(r, (uint32_t)len + 1);
            break;
        case 3:
            for (int n = 1 + (int)kv_fuzz_below(r, 16); n > 0 && len < KV_FUZZ_BUF; n--)
                buf[len++] = (uint8_t)kv_fuzz_next(r);
            break;
        default:
            if (len > 1) {
                size_t from = kv_fuzz_below(r, (uint32_t)len), n = 1 + kv_fuzz_below(r, (uint32_t)(len - from));
                size_t to = kv_fuzz_below(r, (uint32_t)len);
                if (to + n > KV_FUZZ_BUF) n = KV_FUZZ_BUF - to;
                memmove(buf + to, buf + from, n);
                if (to + n > len) len = to + n;
            }
        }
    }
    return len;
}

/* An input read front to back: a fuzz target's records. */
typedef struct kv_fuzz_reader {
    const uint8_t *p;
    size_t left;
} kv_fuzz_reader;

/* The next n bytes into out: 0, or -1 (nothing taken) when fewer are left. */
static inline int kv_fuzz_take(kv_fuzz_reader *rd, void *out, size_t n)
{
    if (rd->left < n)
        return -1;
    memcpy(out, rd->p, n);
    rd->p += n, rd->left -= n;
    return 0;
}

/* An input written front to back: a target's seed generator (which checks the room). */
typedef struct kv_fuzz_writer {
    uint8_t *p;
    size_t left;
} kv_fuzz_writer;

static inline void kv_fuzz_put(kv_fuzz_writer *w, const void *src, size_t n)
{
    memcpy(w->p, src, n);
    w->p += n, w->left -= n;
}

/* A generator's output buffer: unlike kv_fuzz_writer, appends keep what fits and drop the
 * rest, so a generator writes freely and its input is cut at the fuzzer's size. */
typedef struct kv_fuzz_out {
    uint8_t *p;
    size_t cap, len;
} kv_fuzz_out;

static inline void kv_fuzz_out_bytes(kv_fuzz_out *o, const void *s, size_t n)
{
    n = n < o->cap - o->len ? n : o->cap - o->len;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static inline void kv_fuzz_out_str(kv_fuzz_out *o, const char *s) { kv_fuzz_out_bytes(o, s, strlen(s)); }

/* A random element of a fixed array. */
#define KV_FUZZ_PICK(r, list) (list)[kv_fuzz_below(r, sizeof(list) / sizeof *(list))]

#endif
