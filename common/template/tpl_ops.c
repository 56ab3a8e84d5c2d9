/* Operators, attribute and item access, slicing and iteration with Python's semantics (jinja2
 * hands these to Python), plus the sandbox's refusals. Integers are 64-bit: where Python would
 * grow a big integer, this is an error. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

static const char *op_name(int op)
{
    switch (op) {
    case T_ADD: return "+";
    case T_SUB: return "-";
    case T_MUL: return "*";
    case T_DIV: return "/";
    case T_FLOORDIV: return "//";
    case T_MOD: return "%";
    case T_POW: return "**";
    case T_LT: return "<";
    case T_LTEQ: return "<=";
    case T_GT: return ">";
    default: return ">=";
    }
}

_Noreturn static void unsupported(tpl_rt *rt, int op, tv a, tv b)
{
    tpl_rt_fail(rt, "TypeError: unsupported operand type(s) for %s: '%s' and '%s'", op_name(op), tv_type_name(a.t),
                tv_type_name(b.t));
}

static int64_t as_int(tv v) { return v.t == V_INT ? v.u.i : v.u.b; }
static int is_intlike(tv v) { return v.t == V_INT || v.t == V_BOOL; }

size_t tpl_utf8_count(const char *p, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)p[i] & 0xC0) != 0x80;
    return c;
}

static tv repeat(tpl_rt *rt, tv seq, int64_t count)
{
    if (count < 0)
        count = 0;
    if (seq.t == V_STR) {
        if (seq.u.s.n && (uint64_t)count > rt->lim->max_string / seq.u.s.n)
            tpl_rt_fail_code(rt, KV_ERANGE, "string size limit of %zu bytes exceeded", rt->lim->max_string);
        size_t n = seq.u.s.n * (size_t)count;
        char *p = tpl_alloc(rt->ar, n + 1);
        for (int64_t i = 0; i < count; i++)
            memcpy(p + (size_t)i * seq.u.s.n, seq.u.s.p, seq.u.s.n);
        return tv_str(p, n);
    }
    size_t n = seq.u.l->n;
    if (n && (uint64_t)count > rt->lim->max_iterations / n)
        tpl_rt_fail_code(rt, KV_ERANGE, "list size limit exceeded");
    tlist *l = tl_new(rt->ar, n * (size_t)count);
    for (int64_t i = 0; i < count; i++)
        for (size_t k = 0; k < n; k++)
            tl_push(rt->ar, l, seq.u.l->items[k]);
    tv r = seq;
    r.u.l = l;
    return r;
}

tv tpl_str_concat(tpl_rt *rt, tv a, tv b)
{
    if (a.u.s.n > rt->lim->max_string - b.u.s.n || b.u.s.n > rt->lim->max_string)
        tpl_rt_fail_code(rt, KV_ERANGE, "string size limit of %zu bytes exceeded", rt->lim->max_string);
    char *p = tpl_alloc(rt->ar, a.u.s.n + b.u.s.n + 1);
    memcpy(p, a.u.s.p, a.u.s.n);
    memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
    return tv_str(p, a.u.s.n + b.u.s.n);
}

/* Python's float divmod. */
static double py_fmod(double a, double b)
{
    double m = fmod(a, b);
    if (m != 0.0 && ((b < 0) != (m < 0)))
        m += b;
    else if (m == 0.0)
        m = copysign(0.0, b);
    return m;
}

static double py_floordiv(double a, double b)
{
    double m = fmod(a, b), div = (a - m) / b;
    if (m != 0.0 && ((b < 0) != (m < 0)))
        div -= 1.0;
    if (div == 0.0)
        return copysign(0.0, a / b);
    double f = floor(div);
    if (div - f > 0.5)
        f += 1.0;
    return f;
}

tv tpl_binop(tpl_rt *rt, int op, tv a, tv b)
{
    if (op == T_TILDE)
        return tpl_str_concat(rt, tv_to_str(rt, a), tv_to_str(rt, b));
    if (a.t == V_UNDEF)
        tpl_undef_fail(rt, a);
    if (b.t == V_UNDEF)
        tpl_undef_fail(rt, b);
    int64_t r;
    if (is_intlike(a) && is_intlike(b)) {
        int64_t x = as_int(a), y = as_int(b);
        switch (op) {
        case T_ADD:
            if (__builtin_add_overflow(x, y, &r))
                goto overflow;
            return tv_int(r);
        case T_SUB:
            if (__builtin_sub_overflow(x, y, &r))
                goto overflow;
            return tv_int(r);
        case T_MUL:
            if (__builtin_mul_overflow(x, y, &r))
                goto overflow;
            return tv_int(r);
        case T_DIV:
            if (!y)
                tpl_rt_fail(rt, "ZeroDivisionError: division by zero");
            return tv_float((double)x / (double)y);
        case T_FLOORDIV:
        case T_MOD: {
            if (!y)
                tpl_rt_fail(rt, "ZeroDivisionError: integer division or modulo by zero");
            if (x == INT64_MIN && y == -1)
                goto overflow;
            int64_t q = x / y, m = x % y;
            if (m && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return tv_int(op == T_MOD ? m : q);
        }
        case T_POW: {
            if (y < 0)
                return tv_float(pow((double)x, (double)y));
            int64_t acc = 1, base = x;
            for (int64_t e = y; e; e >>= 1) {
                if (e & 1 && __builtin_mul_overflow(acc, base, &acc))
                    goto overflow;
                if (e > 1 && __builtin_mul_overflow(base, base, &base))
                    goto overflow;
            }
            return tv_int(acc);
        }
        default: break;
        }
    } else if (tv_is_number(a) && tv_is_number(b)) {
        double x = tv_num(a), y = tv_num(b);
        switch (op) {
        case T_ADD: return tv_float(x + y);
        case T_SUB: return tv_float(x - y);
        case T_MUL: return tv_float(x * y);
        case T_DIV:
            if (y == 0.0)
                tpl_rt_fail(rt, "ZeroDivisionError: float division by zero");
            return tv_float(x / y);
        case T_FLOORDIV:
            if (y == 0.0)
                tpl_rt_fail(rt, "ZeroDivisionError: float floor division by zero");
            return tv_float(py_floordiv(x, y));
        case T_MOD:
            if (y == 0.0)
                tpl_rt_fail(rt, "ZeroDivisionError: float modulo");
            return tv_float(py_fmod(x, y));
        case T_POW:
            if (x == 0.0 && y < 0)
                tpl_rt_fail(rt, "ZeroDivisionError: 0.0 cannot be raised to a negative power");
            if (x < 0 && y != floor(y))
                tpl_rt_fail(rt, "ValueError: complex results are not supported");
            return tv_float(pow(x, y));
        default: break;
        }
    } else if (op == T_ADD && a.t == b.t && a.t == V_STR) {
        return tpl_str_concat(rt, a, b);
    } else if (op == T_ADD && a.t == b.t && tv_is_seq(a)) {
        tlist *l = tl_new(rt->ar, a.u.l->n + b.u.l->n);
        for (size_t i = 0; i < a.u.l->n; i++)
            tl_push(rt->ar, l, a.u.l->items[i]);
        for (size_t i = 0; i < b.u.l->n; i++)
            tl_push(rt->ar, l, b.u.l->items[i]);
        tv v = a;
        v.u.l = l;
        return v;
    } else if (op == T_MUL && (a.t == V_STR || tv_is_seq(a)) && is_intlike(b)) {
        return repeat(rt, a, as_int(b));
    } else if (op == T_MUL && (b.t == V_STR || tv_is_seq(b)) && is_intlike(a)) {
        return repeat(rt, b, as_int(a));
    } else if (op == T_MOD && a.t == V_STR) {
        tpl_rt_fail(rt, "printf-style string formatting (%%) is not supported");
    } else if (op == T_ADD && (a.t == V_STR || tv_is_seq(a))) {
        tpl_rt_fail(rt, "TypeError: can only concatenate %s (not \"%s\") to %s", tv_type_name(a.t),
                    tv_type_name(b.t), tv_type_name(a.t));
    }
    unsupported(rt, op, a, b);
overflow:
    tpl_rt_fail_code(rt, KV_ERANGE, "integer overflow (integers are 64-bit here)");
}

int tpl_order(tpl_rt *rt, tv a, tv b)
{
    if (a.t == V_UNDEF)
        tpl_undef_fail(rt, a);
    if (b.t == V_UNDEF)
        tpl_undef_fail(rt, b);
    if (tv_is_number(a) && tv_is_number(b)) {
        if (a.t != V_FLOAT && b.t != V_FLOAT)
            return as_int(a) < as_int(b) ? -1 : as_int(a) > as_int(b);
        double x = tv_num(a), y = tv_num(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.t == V_STR && b.t == V_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = memcmp(a.u.s.p, b.u.s.p, n);
        if (c)
            return c < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
    }
    if (a.t == b.t && tv_is_seq(a)) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++)
            if (!tv_eq(a.u.l->items[i], b.u.l->items[i]))
                return tpl_order(rt, a.u.l->items[i], b.u.l->items[i]);
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    tpl_rt_fail(rt, "TypeError: '<' not supported between instances of '%s' and '%s'", tv_type_name(a.t),
                tv_type_name(b.t));
}

int tpl_compare(tpl_rt *rt, int op, tv a, tv b)
{
    if (op == T_EQ)
        return tv_eq(a, b);
    if (op == T_NE)
        return !tv_eq(a, b);
    if (tv_is_number(a) && tv_is_number(b) && (a.t == V_FLOAT || b.t == V_FLOAT) &&
        (isnan(tv_num(a)) || isnan(tv_num(b))))
        return 0;
    int c = tpl_order(rt, a, b);
    switch (op) {
    case T_LT: return c < 0;
    case T_LTEQ: return c <= 0;
    case T_GT: return c > 0;
    default: return c >= 0;
    }
}

int tpl_contains(tpl_rt *rt, tv container, tv item)
{
    switch (container.t) {
    case V_STR:
        if (item.t != V_STR)
            tpl_rt_fail(rt, "TypeError: 'in <string>' requires string as left operand, not %s", tv_type_name(item.t));
        if (!item.u.s.n)
            return 1;
        return memmem(container.u.s.p, container.u.s.n, item.u.s.p, item.u.s.n) != NULL;
    case V_LIST:
    case V_TUPLE:
        for (size_t i = 0; i < container.u.l->n; i++)
            if (tv_eq(container.u.l->items[i], item))
                return 1;
        return 0;
    case V_DICT: return td_get(container.u.d, item) != NULL;
    case V_UNDEF: return 0;
    default:
        tpl_rt_fail(rt, "TypeError: argument of type '%s' is not iterable", tv_type_name(container.t));
    }
}

/* ---- attributes and items ---- */

static tv undef_of(tpl_rt *rt, tv obj, int kind, const char *name, size_t n)
{
    tv u = {.t = V_UNDEF, .ukind = (uint8_t)kind, .uobj = obj.t};
    u.u.s.p = tpl_strdup(rt->ar, name, n);
    u.u.s.n = n;
    return u;
}

static tv loop_attr(tpl_rt *rt, tv obj, const char *name, size_t n)
{
    tloop *l = obj.u.loop;
    size_t len = l->items->n, i = l->index0;
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
    if (IS("index"))
        return tv_int((int64_t)i + 1);
    if (IS("index0"))
        return tv_int((int64_t)i);
    if (IS("revindex"))
        return tv_int((int64_t)(len - i));
    if (IS("revindex0"))
        return tv_int((int64_t)(len - i - 1));
    if (IS("first"))
        return tv_bool(i == 0);
    if (IS("last"))
        return tv_bool(i + 1 == len);
    if (IS("length"))
        return tv_int((int64_t)len);
    if (IS("depth"))
        return tv_int(1);
    if (IS("depth0"))
        return tv_int(0);
    if (IS("previtem"))
        return i ? l->items->items[i - 1] : tv_undef_hint("there is no previous item");
    if (IS("nextitem"))
        return i + 1 < len ? l->items->items[i + 1] : tv_undef_hint("there is no next item");
#undef IS
    int found;
    tv m = tpl_method_lookup(rt, obj, name, n, &found);
    return found ? m : undef_of(rt, obj, U_ATTR, name, n);
}

tv tpl_getattr(tpl_rt *rt, tv obj, const char *name, size_t n)
{
    if (obj.t == V_UNDEF)
        tpl_undef_fail(rt, obj);
    if (n && name[0] == '_') {
        char *hint = tpl_alloc(rt->ar, n + 80);
        snprintf(hint, n + 80, "access to attribute '%.*s' of '%s' object is unsafe.", (int)n, name,
                 tv_type_name(obj.t));
        tv u = tv_undef_hint(hint);
        u.ukind = U_UNSAFE;
        return u;
    }
    if (obj.t == V_LOOP)
        return loop_attr(rt, obj, name, n);
    if (obj.t == V_NS) {
        tv *v = td_get_str(obj.u.d, name, n);
        return v ? *v : undef_of(rt, obj, U_ATTR, name, n);
    }
    int found;
    tv m = tpl_method_lookup(rt, obj, name, n, &found);
    if (found)
        return m;
    if (obj.t == V_DICT) {
        tv *v = td_get_str(obj.u.d, name, n);
        if (v)
            return *v;
    }
    return undef_of(rt, obj, U_ATTR, name, n);
}

/* A code point index into s: the byte offset of code point i (i <= count). */
static size_t cp_offset(const char *s, size_t n, size_t i)
{
    size_t off = 0;
    while (i && off < n) {
        off++;
        while (off < n && ((unsigned char)s[off] & 0xC0) == 0x80)
            off++;
        i--;
    }
    return off;
}

tv tpl_getitem(tpl_rt *rt, tv obj, tv key)
{
    if (obj.t == V_UNDEF)
        tpl_undef_fail(rt, obj);
    if (obj.t == V_DICT) {
        tv *v = td_get(obj.u.d, key);
        if (v)
            return *v;
    } else if ((tv_is_seq(obj) || obj.t == V_STR) && is_intlike(key)) {
        int64_t len = tpl_len(rt, obj), i = as_int(key);
        if (i < 0)
            i += len;
        if (i >= 0 && i < len) {
            if (obj.t != V_STR)
                return obj.u.l->items[i];
            size_t b = cp_offset(obj.u.s.p, obj.u.s.n, (size_t)i);
            size_t e = b + 1;
            while (e < obj.u.s.n && ((unsigned char)obj.u.s.p[e] & 0xC0) == 0x80)
                e++;
            return tv_str(obj.u.s.p + b, e - b);
        }
    }
    if (key.t == V_STR)
        return tpl_getattr(rt, obj, key.u.s.p, key.u.s.n);
    tpl_out o;
    tpl_out_init(&o, 256);
    tv_write_repr(rt, &o, key);
    return undef_of(rt, obj, U_ITEM, o.p ? o.p : "", o.n);
}

/* CPython's PySlice_AdjustIndices for one bound (None takes dflt). */
static int64_t slice_index(tpl_rt *rt, tv v, int64_t dflt, int64_t len, int backwards)
{
    if (v.t == V_NONE)
        return dflt;
    if (!is_intlike(v))
        tpl_rt_fail(rt, "TypeError: slice indices must be integers or None");
    int64_t i = as_int(v);
    if (i < 0) {
        i += len;
        if (i < 0)
            i = backwards ? -1 : 0;
    } else if (i >= len) {
        i = backwards ? len - 1 : len;
    }
    return i;
}

tv tpl_slice(tpl_rt *rt, tv obj, tv start, tv stop, tv step)
{
    if (obj.t == V_UNDEF)
        tpl_undef_fail(rt, obj);
    if (obj.t != V_STR && !tv_is_seq(obj))
        return undef_of(rt, obj, U_ITEM, "slice", 5);
    int64_t st = 1;
    if (step.t != V_NONE) {
        if (!is_intlike(step))
            tpl_rt_fail(rt, "TypeError: slice indices must be integers or None");
        st = as_int(step);
        if (!st)
            tpl_rt_fail(rt, "ValueError: slice step cannot be zero");
    }
    int64_t len = tpl_len(rt, obj), b, e;
    if (st > 0) {
        b = slice_index(rt, start, 0, len, 0);
        e = slice_index(rt, stop, len, len, 0);
    } else {
        b = slice_index(rt, start, len - 1, len, 1);
        e = slice_index(rt, stop, -1, len, 1);
    }
    if (obj.t == V_STR) {
        /* code point offsets, once */
        size_t *off = tpl_alloc(rt->ar, ((size_t)len + 1) * sizeof *off), k = 0;
        for (size_t i = 0; i < obj.u.s.n; i++)
            if (((unsigned char)obj.u.s.p[i] & 0xC0) != 0x80)
                off[k++] = i;
        off[k] = obj.u.s.n;
        if (st == 1)
            return b < e ? tv_str(obj.u.s.p + off[b], off[e] - off[b]) : tv_str("", 0);
        tpl_out o;
        tpl_out_init(&o, rt->lim->max_string);
        for (int64_t i = b; st > 0 ? i < e : i > e; i += st)
            tpl_out_append(rt, &o, obj.u.s.p + off[i], off[i + 1] - off[i]);
        return tpl_out_str(&o);
    }
    tlist *l = tl_new(rt->ar, 0);
    for (int64_t i = b; st > 0 ? i < e : i > e; i += st)
        tl_push(rt->ar, l, obj.u.l->items[i]);
    tv r = obj;
    r.u.l = l;
    return r;
}

tlist *tpl_iterate(tpl_rt *rt, tv v)
{
    switch (v.t) {
    case V_LIST:
    case V_TUPLE: return v.u.l;
    case V_DICT: {
        tlist *l = tl_new(rt->ar, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            tl_push(rt->ar, l, v.u.d->keys[i]);
        return l;
    }
    case V_STR: {
        tlist *l = tl_new(rt->ar, v.u.s.n);
        for (size_t i = 0; i < v.u.s.n;) {
            size_t b = i++;
            while (i < v.u.s.n && ((unsigned char)v.u.s.p[i] & 0xC0) == 0x80)
                i++;
            tl_push(rt->ar, l, tv_str(v.u.s.p + b, i - b));
        }
        return l;
    }
    case V_UNDEF: return tl_new(rt->ar, 0);
    default: tpl_rt_fail(rt, "TypeError: '%s' object is not iterable", tv_type_name(v.t));
    }
}

int64_t tpl_len(tpl_rt *rt, tv v)
{
    switch (v.t) {
    case V_STR: return (int64_t)tpl_utf8_count(v.u.s.p, v.u.s.n);
    case V_LIST:
    case V_TUPLE: return (int64_t)v.u.l->n;
    case V_DICT: return (int64_t)v.u.d->n;
    case V_UNDEF: return 0;
    default: tpl_rt_fail(rt, "TypeError: object of type '%s' has no len()", tv_type_name(v.t));
    }
}
