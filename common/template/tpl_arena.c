/* The arena of a compile or a render, and the one way errors leave the interpreter. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tpl_internal.h"

struct tpl_chunk {
    tpl_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define CHUNK_MIN (64 * 1024)

void tpl_fail_at(tpl_fail_ctx *fc, int code, int line, int col, const char *fmt, ...)
{
    char msg[sizeof fc->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kv_err_set(fc->err, code, "%s:%d:%d: %s", fc->name, line, col, msg);
    longjmp(fc->jb, 1);
}

void tpl_arena_init(tpl_arena *a, size_t budget, tpl_fail_ctx *fc)
{
    memset(a, 0, sizeof *a);
    a->budget = budget;
    a->fc = fc;
}

void tpl_arena_free(tpl_arena *a)
{
    for (tpl_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used_total = 0;
}

void *tpl_alloc(tpl_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    tpl_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_MIN ? n : CHUNK_MIN;
        if (n > a->budget || a->used_total > a->budget - n)
            tpl_fail_at(a->fc, KV_ERANGE, a->fc->line, a->fc->col, "memory limit of %zu bytes exceeded", a->budget);
        c = malloc(sizeof *c + cap);
        if (!c)
            tpl_fail_at(a->fc, KV_ENOMEM, a->fc->line, a->fc->col, "out of memory");
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->used_total += cap;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *tpl_strdup(tpl_arena *a, const char *s, size_t n)
{
    char *p = tpl_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
