/* Values: constructors, lists and dicts, truth, equality, and printing as Python's str() and
 * repr() do (jinja2 prints through str()). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

/* ---- errors at the current position ---- */

void tpl_rt_fail(tpl_rt *rt, const char *fmt, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tpl_fail_at(rt->fc, KV_EINVAL, rt->fc->line, rt->fc->col, "%s", msg);
}

void tpl_rt_fail_code(tpl_rt *rt, int code, const char *fmt, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tpl_fail_at(rt->fc, code, rt->fc->line, rt->fc->col, "%s", msg);
}

void tpl_count_iteration(tpl_rt *rt)
{
    if (++rt->iterations > rt->lim->max_iterations)
        tpl_rt_fail_code(rt, KV_ERANGE, "loop iteration limit of %llu exceeded",
                         (unsigned long long)rt->lim->max_iterations);
}

/* ---- constructors ---- */

tv tv_undef_name(const char *name)
{
    tv v = {.t = V_UNDEF, .ukind = U_NAME};
    v.u.s.p = name;
    v.u.s.n = name ? strlen(name) : 0;
    return v;
}

tv tv_undef_hint(const char *hint)
{
    tv v = tv_undef_name(hint);
    v.ukind = U_HINT;
    return v;
}

tv tv_none(void) { return (tv){.t = V_NONE}; }
tv tv_bool(int b) { return (tv){.t = V_BOOL, .u.b = !!b}; }
tv tv_int(int64_t i) { return (tv){.t = V_INT, .u.i = i}; }
tv tv_float(double f) { return (tv){.t = V_FLOAT, .u.f = f}; }

tv tv_str(const char *p, size_t n)
{
    tv v = {.t = V_STR};
    v.u.s.p = p ? p : "";
    v.u.s.n = n;
    return v;
}

tv tv_cstr(const char *p) { return tv_str(p, strlen(p)); }
tv tv_list(tlist *l) { return (tv){.t = V_LIST, .u.l = l}; }
tv tv_tuple(tlist *l) { return (tv){.t = V_TUPLE, .u.l = l}; }

tlist *tl_new(tpl_arena *a, size_t cap)
{
    tlist *l = tpl_alloc(a, sizeof *l);
    if (cap) {
        l->items = tpl_alloc(a, cap * sizeof(tv));
        l->cap = cap;
    }
    return l;
}

void tl_push(tpl_arena *a, tlist *l, tv v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        tv *items = tpl_alloc(a, cap * sizeof(tv));
        if (l->n)
            memcpy(items, l->items, l->n * sizeof(tv));
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = v;
}

tdict *td_new(tpl_arena *a) { return tpl_alloc(a, sizeof(tdict)); }

/* Python hashes 1, 1.0 and True alike: a key equal to another is the same key. */
tv *td_get(const tdict *d, tv key)
{
    for (size_t i = 0; i < d->n; i++)
        if (tv_eq(d->keys[i], key))
            return &d->vals[i];
    return NULL;
}

tv *td_get_str(const tdict *d, const char *key, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].t == V_STR && d->keys[i].u.s.n == n && !memcmp(d->keys[i].u.s.p, key, n))
            return &d->vals[i];
    return NULL;
}

void td_set(tpl_arena *a, tdict *d, tv key, tv val)
{
    tv *slot = td_get(d, key);
    if (slot) {
        *slot = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        tv *keys = tpl_alloc(a, cap * sizeof(tv)), *vals = tpl_alloc(a, cap * sizeof(tv));
        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof(tv));
            memcpy(vals, d->vals, d->n * sizeof(tv));
        }
        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
}

const char *tv_type_name(int t)
{
    switch (t) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return "list";
    case V_TUPLE: return "tuple";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_MACRO: return "Macro";
    case V_FUNC: return "function";
    case V_METHOD: return "builtin_function_or_method";
    case V_LOOP: return "LoopContext";
    default: return "object";
    }
}

int tv_truthy(tv v)
{
    switch (v.t) {
    case V_UNDEF:
    case V_NONE: return 0;
    case V_BOOL: return v.u.b;
    case V_INT: return v.u.i != 0;
    case V_FLOAT: return v.u.f != 0.0;
    case V_STR: return v.u.s.n != 0;
    case V_LIST:
    case V_TUPLE: return v.u.l->n != 0;
    case V_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

int tv_is_number(tv v) { return v.t == V_BOOL || v.t == V_INT || v.t == V_FLOAT; }
int tv_is_seq(tv v) { return v.t == V_LIST || v.t == V_TUPLE; }

double tv_num(tv v)
{
    return v.t == V_FLOAT ? v.u.f : v.t == V_INT ? (double)v.u.i : v.t == V_BOOL ? v.u.b : 0.0;
}

int tv_eq(tv a, tv b)
{
    if (tv_is_number(a) && tv_is_number(b)) {
        if (a.t != V_FLOAT && b.t != V_FLOAT)
            return (a.t == V_INT ? a.u.i : a.u.b) == (b.t == V_INT ? b.u.i : b.u.b);
        return tv_num(a) == tv_num(b);
    }
    if (a.t != b.t)
        return 0;
    switch (a.t) {
    case V_UNDEF:
    case V_NONE: return 1;
    case V_STR: return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case V_LIST:
    case V_TUPLE:
        if (a.u.l->n != b.u.l->n)
            return 0;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!tv_eq(a.u.l->items[i], b.u.l->items[i]))
                return 0;
        return 1;
    case V_DICT:
        if (a.u.d->n != b.u.d->n)
            return 0;
        for (size_t i = 0; i < a.u.d->n; i++) {
            tv *o = td_get(b.u.d, a.u.d->keys[i]);
            if (!o || !tv_eq(a.u.d->vals[i], *o))
                return 0;
        }
        return 1;
    case V_NS: return a.u.d == b.u.d;
    case V_MACRO: return a.u.m == b.u.m;
    case V_FUNC: return a.u.s.p == b.u.s.p;
    case V_METHOD: return a.u.bm == b.u.bm;
    case V_LOOP: return a.u.loop == b.u.loop;
    default: return 0;
    }
}

/* ---- output buffers ---- */

void tpl_out_init(tpl_out *o, size_t limit)
{
    memset(o, 0, sizeof *o);
    o->limit = limit;
    o->what = "string size";
}

void tpl_out_append(tpl_rt *rt, tpl_out *o, const char *p, size_t n)
{
    if (!n)
        return;
    if (n > o->limit || o->n > o->limit - n)
        tpl_rt_fail_code(rt, KV_ERANGE, "%s limit of %zu bytes exceeded", o->what, o->limit);
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n + 1)
            cap *= 2;
        char *q = tpl_alloc(rt->ar, cap);
        if (o->n)
            memcpy(q, o->p, o->n);
        o->p = q;
        o->cap = cap;
    }
    memcpy(o->p + o->n, p, n);
    o->n += n;
    o->p[o->n] = '\0';
}

tv tpl_out_str(tpl_out *o) { return tv_str(o->p, o->n); }

/* ---- printing ---- */

/* Python's float repr: the shortest digits that read back as the same double; fixed notation
 * for exponents -4..15 (with ".0" when integral), else d.ddde+XX. */
size_t tpl_py_float_repr(double d, char *buf, size_t cap)
{
    if (isnan(d))
        return (size_t)snprintf(buf, cap, "nan");
    if (isinf(d))
        return (size_t)snprintf(buf, cap, d < 0 ? "-inf" : "inf");
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    /* tmp: [-]D[.DDD]e[+-]XX */
    char digits[32];
    size_t nd = 0;
    const char *p = tmp;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    char *o = buf, *end = buf + cap - 1;
#define PUT(c) do { if (o < end) *o++ = (c); } while (0)
    if (neg)
        PUT('-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            PUT('0');
            PUT('.');
            for (int i = -1; i > exp; i--)
                PUT('0');
            for (size_t i = 0; i < nd; i++)
                PUT(digits[i]);
        } else {
            for (int i = 0; i <= exp; i++)
                PUT((size_t)i < nd ? digits[i] : '0');
            PUT('.');
            if ((size_t)exp + 1 < nd)
                for (size_t i = (size_t)exp + 1; i < nd; i++)
                    PUT(digits[i]);
            else
                PUT('0');
        }
    } else {
        PUT(digits[0]);
        if (nd > 1) {
            PUT('.');
            for (size_t i = 1; i < nd; i++)
                PUT(digits[i]);
        }
        char e[16];
        snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
        for (const char *q = e; *q; q++)
            PUT(*q);
    }
#undef PUT
    *o = '\0';
    return (size_t)(o - buf);
}

/* Whether Python's str.isprintable() holds for cp (repr escapes the others). */
static int py_printable(uint32_t cp)
{
    if (cp == ' ')
        return 1;
    if (cp < 0x7f)
        return cp >= 0x20;
    if (cp < 0xa0)
        return 0;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return !(c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP ||
             c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CS ||
             c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CN);
}

static void write_str_repr(tpl_rt *rt, tpl_out *o, const char *s, size_t n)
{
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    tpl_out_append(rt, o, &q, 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = kv_utf8_next(s + i, n - i, &cp);
        char esc[16];
        const char *rep = NULL;
        if (cp == (uint32_t)q || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            esc[2] = 0;
            rep = esc;
        } else if (cp == '\n') {
            rep = "\\n";
        } else if (cp == '\r') {
            rep = "\\r";
        } else if (cp == '\t') {
            rep = "\\t";
        } else if (!py_printable(cp)) {
            if (cp < 0x100)
                snprintf(esc, sizeof esc, "\\x%02x", cp);
            else if (cp < 0x10000)
                snprintf(esc, sizeof esc, "\\u%04x", cp);
            else
                snprintf(esc, sizeof esc, "\\U%08x", cp);
            rep = esc;
        }
        if (rep)
            tpl_out_append(rt, o, rep, strlen(rep));
        else
            tpl_out_append(rt, o, s + i, len);
        i += len;
    }
    tpl_out_append(rt, o, &q, 1);
}

static void write_items(tpl_rt *rt, tpl_out *o, const tlist *l, const char *open, const char *close, int tuple)
{
    tpl_out_append(rt, o, open, 1);
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            tpl_out_append(rt, o, ", ", 2);
        tv_write_repr(rt, o, l->items[i]);
    }
    if (tuple && l->n == 1)
        tpl_out_append(rt, o, ",", 1);
    tpl_out_append(rt, o, close, 1);
}

static void write_dict(tpl_rt *rt, tpl_out *o, const tdict *d)
{
    tpl_out_append(rt, o, "{", 1);
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            tpl_out_append(rt, o, ", ", 2);
        tv_write_repr(rt, o, d->keys[i]);
        tpl_out_append(rt, o, ": ", 2);
        tv_write_repr(rt, o, d->vals[i]);
    }
    tpl_out_append(rt, o, "}", 1);
}

static void write_scalar(tpl_rt *rt, tpl_out *o, tv v)
{
    char buf[64];
    size_t n;
    switch (v.t) {
    case V_NONE: tpl_out_append(rt, o, "None", 4); return;
    case V_BOOL: tpl_out_append(rt, o, v.u.b ? "True" : "False", v.u.b ? 4 : 5); return;
    case V_INT:
        n = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)v.u.i);
        tpl_out_append(rt, o, buf, n);
        return;
    case V_FLOAT:
        n = tpl_py_float_repr(v.u.f, buf, sizeof buf);
        tpl_out_append(rt, o, buf, n);
        return;
    case V_LIST: write_items(rt, o, v.u.l, "[", "]", 0); return;
    case V_TUPLE: write_items(rt, o, v.u.l, "(", ")", 1); return;
    case V_DICT: write_dict(rt, o, v.u.d); return;
    case V_NS:
        tpl_out_append(rt, o, "<Namespace ", 11);
        write_dict(rt, o, v.u.d);
        tpl_out_append(rt, o, ">", 1);
        return;
    case V_MACRO:
        n = (size_t)snprintf(buf, sizeof buf, "<Macro '%.40s'>", v.u.m->name ? v.u.m->name : "caller");
        tpl_out_append(rt, o, buf, n);
        return;
    case V_FUNC:
    case V_METHOD:
        n = (size_t)snprintf(buf, sizeof buf, "<built-in function %.40s>",
                             v.t == V_FUNC ? v.u.s.p : v.u.bm->name);
        tpl_out_append(rt, o, buf, n);
        return;
    case V_LOOP:
        n = (size_t)snprintf(buf, sizeof buf, "<LoopContext %zu/%zu>", v.u.loop->index0 + 1, v.u.loop->items->n);
        tpl_out_append(rt, o, buf, n);
        return;
    default: return;
    }
}

void tv_write_str(tpl_rt *rt, tpl_out *o, tv v)
{
    if (v.t == V_UNDEF)
        return;
    if (v.t == V_STR)
        tpl_out_append(rt, o, v.u.s.p, v.u.s.n);
    else
        write_scalar(rt, o, v);
}

void tv_write_repr(tpl_rt *rt, tpl_out *o, tv v)
{
    if (v.t == V_UNDEF)
        tpl_out_append(rt, o, "Undefined", 9);
    else if (v.t == V_STR)
        write_str_repr(rt, o, v.u.s.p, v.u.s.n);
    else
        write_scalar(rt, o, v);
}

tv tv_to_str(tpl_rt *rt, tv v)
{
    if (v.t == V_STR)
        return v;
    if (v.t == V_UNDEF)
        return tv_str("", 0);
    tpl_out o;
    tpl_out_init(&o, rt->lim->max_string);
    tv_write_str(rt, &o, v);
    return tpl_out_str(&o);
}

/* jinja2's Undefined._undefined_message. */
void tpl_undef_message(tv u, char *buf, size_t cap)
{
    int nl = u.u.s.n > 200 ? 200 : (int)u.u.s.n;
    switch (u.ukind) {
    case U_HINT:
    case U_UNSAFE: snprintf(buf, cap, "%.*s", nl, u.u.s.p); break;
    case U_ATTR:
        if (u.uobj == V_NONE)
            snprintf(buf, cap, "'None' has no attribute '%.*s'", nl, u.u.s.p);
        else
            snprintf(buf, cap, "'%s object' has no attribute '%.*s'", tv_type_name(u.uobj), nl, u.u.s.p);
        break;
    case U_ITEM: snprintf(buf, cap, "%s object has no element %.*s", tv_type_name(u.uobj), nl, u.u.s.p); break;
    default: snprintf(buf, cap, "'%.*s' is undefined", nl, u.u.s.p); break;
    }
}

void tpl_undef_fail(tpl_rt *rt, tv u)
{
    char msg[300];
    tpl_undef_message(u, msg, sizeof msg);
    tpl_rt_fail(rt, "%s%s", u.ukind == U_UNSAFE ? "SecurityError: " : "UndefinedError: ", msg);
}
