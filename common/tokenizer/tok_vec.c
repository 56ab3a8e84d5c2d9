#include "tok_vec.h"

#include <stdlib.h>
#include <string.h>

#include "kv_err.h"

int tok_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2)
            return KV_ENOMEM;
        n *= 2;
    }
    if (n > SIZE_MAX / elem)
        return KV_ENOMEM;
    void *q = realloc(*p, n * elem);
    if (!q)
        return KV_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

int tok_buf_put(tok_buf *b, const void *s, size_t n)
{
    /* +1 keeps room for a terminating NUL that callers may add. */
    if (n > SIZE_MAX - b->len - 1 || tok_grow((void **)&b->p, &b->cap, b->len + n + 1, 1))
        return KV_ENOMEM;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

int tok_ids_push(tok_ids *v, int32_t id)
{
    if (tok_grow((void **)&v->p, &v->cap, v->len + 1, sizeof *v->p))
        return KV_ENOMEM;
    v->p[v->len++] = id;
    return 0;
}

int tok_spans_push(tok_spans *v, size_t off, size_t len)
{
    if (tok_grow((void **)&v->p, &v->cap, v->len + 1, sizeof *v->p))
        return KV_ENOMEM;
    v->p[v->len].off = off;
    v->p[v->len].len = len;
    v->len++;
    return 0;
}

int tok_marks_push(tok_marks *v, size_t start, size_t end, int is_match)
{
    if (tok_grow((void **)&v->p, &v->cap, v->len + 1, sizeof *v->p))
        return KV_ENOMEM;
    v->p[v->len++] = (tok_mark){start, end, is_match};
    return 0;
}
