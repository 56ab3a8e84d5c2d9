/* Growable arrays used while loading and encoding: bytes, ids and spans. A zeroed struct is
 * an empty array; every push returns 0 or KV_ENOMEM and leaves the array intact on failure. */
#ifndef KV_TOK_VEC_H
#define KV_TOK_VEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct { char *p; size_t len, cap; } tok_buf;
typedef struct { int32_t *p; size_t len, cap; } tok_ids;
typedef struct { size_t off, len; } tok_span;
typedef struct { tok_span *p; size_t len, cap; } tok_spans;
/* A stretch of a pre-token and whether the splitting pattern matched it. */
typedef struct { size_t start, end; int is_match; } tok_mark;
typedef struct { tok_mark *p; size_t len, cap; } tok_marks;

/* Makes room for `need` elements of size `elem` in *p (capacity *cap, doubling). */
int tok_grow(void **p, size_t *cap, size_t need, size_t elem);

int tok_buf_put(tok_buf *b, const void *s, size_t n);
int tok_ids_push(tok_ids *v, int32_t id);
int tok_spans_push(tok_spans *v, size_t off, size_t len);
int tok_marks_push(tok_marks *v, size_t start, size_t end, int is_match);

#endif
