/* Methods a template may call on values (a whitelist of str, dict and list methods, and the
 * loop's cycle/changed) and the global functions. The immutable sandbox's rule: a method that
 * would change a list or dict is found but is unsafe, so calling it raises a SecurityError. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

static const char *const str_methods[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "index", "rindex", "count", "join", "format", "isdigit",
    "isalpha", "isalnum", "isspace", "islower", "isupper", "isnumeric", "isdecimal", "zfill", "center", "ljust",
    "rjust", "swapcase", "casefold", "partition", "rpartition", "removeprefix", "removesuffix", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", "copy", NULL};
static const char *const dict_mutators[] = {"update", "pop", "popitem", "setdefault", "clear", NULL};
static const char *const list_methods[] = {"index", "count", "copy", NULL};
static const char *const list_mutators[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear", NULL};
static const char *const loop_methods[] = {"cycle", "changed", NULL};

static const char *find_name(const char *const *list, const char *name, size_t n)
{
    for (; *list; list++)
        if (strlen(*list) == n && !memcmp(*list, name, n))
            return *list;
    return NULL;
}

tv tpl_method_lookup(tpl_rt *rt, tv self, const char *name, size_t n, int *found)
{
    const char *const *safe = NULL, *const *unsafe = NULL;
    switch (self.t) {
    case V_STR: safe = str_methods; break;
    case V_DICT: safe = dict_methods; unsafe = dict_mutators; break;
    case V_LIST: safe = list_methods; unsafe = list_mutators; break;
    case V_TUPLE: safe = list_methods; break;
    case V_LOOP: safe = loop_methods; break;
    default: break;
    }
    *found = 0;
    const char *m = safe ? find_name(safe, name, n) : NULL;
    if (m) {
        *found = 1;
        tmethod *bm = tpl_alloc(rt->ar, sizeof *bm);
        bm->self = self;
        bm->name = m;
        tv v = {.t = V_METHOD};
        v.u.bm = bm;
        return v;
    }
    m = unsafe ? find_name(unsafe, name, n) : NULL;
    if (m) {
        *found = 1;
        char *hint = tpl_alloc(rt->ar, 120);
        snprintf(hint, 120, "access to attribute '%s' of '%s' object is unsafe.", m, tv_type_name(self.t));
        tv u = tv_undef_hint(hint);
        u.ukind = U_UNSAFE;
        return u;
    }
    return tv_none();
}

/* ---- calls ---- */

typedef struct mcall {
    tpl_rt *rt;
    tv self;
    const char *name;
    tv *args;
    size_t nargs;
    const char **kwnames;
    tv *kwvals;
    size_t nkw;
} mcall;

#define BIND(...)                                                                                             \
    static const char *const names_[] = {__VA_ARGS__, NULL};                                                  \
    tv a[sizeof names_ / sizeof *names_];                                                                     \
    tpl_bind(c->rt, c->name, names_, c->args, c->nargs, c->kwnames, c->kwvals, c->nkw, a)

static int is(const char *a, const char *b) { return !strcmp(a, b); }
static int given(tv v) { return v.t != V_UNSET && v.t != V_NONE; }

static void no_args(mcall *c)
{
    if (c->nargs || c->nkw)
        tpl_rt_fail(c->rt, "TypeError: %s() takes no arguments", c->name);
}

static tv want_str(mcall *c, tv v)
{
    if (v.t != V_STR)
        tpl_rt_fail(c->rt, "TypeError: %s() argument must be str, not %s", c->name, tv_type_name(v.t));
    return v;
}

static int64_t want_int(mcall *c, tv v, int64_t d)
{
    if (!given(v))
        return d;
    if (v.t == V_INT || v.t == V_BOOL)
        return v.t == V_INT ? v.u.i : v.u.b;
    tpl_rt_fail(c->rt, "TypeError: %s(): an integer is required, not %s", c->name, tv_type_name(v.t));
}

/* s[start:end] by code points, for find/count/startswith's optional bounds. */
static tv sub_range(mcall *c, tv s, tv start, tv end)
{
    if (!given(start) && !given(end))
        return s;
    return tpl_slice(c->rt, s, given(start) ? start : tv_none(), given(end) ? end : tv_none(), tv_none());
}

static int64_t find_in(mcall *c, tv s, tv sub, int from_right)
{
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, m = sub.u.s.n;
    if (m > n)
        return -1;
    size_t hit = (size_t)-1;
    if (!from_right) {
        const char *h = m ? memmem(p, n, sub.u.s.p, m) : p;
        if (h)
            hit = (size_t)(h - p);
    } else {
        for (size_t j = n - m + 1; j-- > 0;)
            if (!memcmp(p + j, sub.u.s.p, m)) {
                hit = j;
                break;
            }
    }
    (void)c;
    return hit == (size_t)-1 ? -1 : (int64_t)tpl_utf8_count(p, hit);
}

static int affix(tv s, tv x, int suffix)
{
    if (x.u.s.n > s.u.s.n)
        return 0;
    return !memcmp(s.u.s.p + (suffix ? s.u.s.n - x.u.s.n : 0), x.u.s.p, x.u.s.n);
}

static tv str_pad(mcall *c, tv s, int64_t width, tv fill, int where /* 0 left-justify, 1 right, 2 center, 3 zfill */)
{
    int64_t len = tpl_len(c->rt, s);
    if (width <= len)
        return s;
    if (width - len > (int64_t)c->rt->lim->max_string)
        tpl_rt_fail_code(c->rt, KV_ERANGE, "string size limit of %zu bytes exceeded", c->rt->lim->max_string);
    int64_t pad = width - len, left = where == 0 ? 0 : where == 2 ? pad / 2 + (pad & width & 1) : pad;
    tpl_out o;
    tpl_out_init(&o, c->rt->lim->max_string);
    size_t start = 0;
    if (where == 3 && s.u.s.n && (s.u.s.p[0] == '+' || s.u.s.p[0] == '-')) {
        tpl_out_append(c->rt, &o, s.u.s.p, 1);
        start = 1;
    }
    for (int64_t i = 0; i < left; i++)
        tpl_out_append(c->rt, &o, fill.u.s.p, fill.u.s.n);
    tpl_out_append(c->rt, &o, s.u.s.p + start, s.u.s.n - start);
    for (int64_t i = left; i < pad; i++)
        tpl_out_append(c->rt, &o, fill.u.s.p, fill.u.s.n);
    return tpl_out_str(&o);
}

static int all_chars(tv s, int (*pred)(uint32_t))
{
    if (!s.u.s.n)
        return 0;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        i += kv_utf8_next(s.u.s.p + i, s.u.s.n - i, &cp);
        if (!pred(cp))
            return 0;
    }
    return 1;
}

static int cat_in(uint32_t cp, int lo, int hi)
{
    int c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= lo && c <= hi;
}
static int p_digit(uint32_t cp) { return cat_in(cp, UTF8PROC_CATEGORY_ND, UTF8PROC_CATEGORY_ND); }
static int p_numeric(uint32_t cp) { return cat_in(cp, UTF8PROC_CATEGORY_ND, UTF8PROC_CATEGORY_NO); }
static int p_alpha(uint32_t cp) { return cat_in(cp, UTF8PROC_CATEGORY_LU, UTF8PROC_CATEGORY_LO); }
static int p_alnum(uint32_t cp) { return p_alpha(cp) || p_numeric(cp); }
static int p_space(uint32_t cp) { return tpl_py_isspace(cp); }

/* str.format with {} / {0} / {name} fields, no conversions or format specs. */
static tv str_format(mcall *c, tv fmt)
{
    tpl_out o;
    tpl_out_init(&o, c->rt->lim->max_string);
    size_t auto_index = 0;
    const char *p = fmt.u.s.p;
    size_t n = fmt.u.s.n;
    for (size_t i = 0; i < n; i++) {
        if ((p[i] == '{' || p[i] == '}') && i + 1 < n && p[i + 1] == p[i]) {
            tpl_out_append(c->rt, &o, p + i, 1);
            i++;
            continue;
        }
        if (p[i] == '}')
            tpl_rt_fail(c->rt, "ValueError: Single '}' encountered in format string");
        if (p[i] != '{') {
            tpl_out_append(c->rt, &o, p + i, 1);
            continue;
        }
        const char *close = memchr(p + i, '}', n - i);
        if (!close)
            tpl_rt_fail(c->rt, "ValueError: Single '{' encountered in format string");
        size_t b = i + 1, e = (size_t)(close - p);
        for (size_t k = b; k < e; k++)
            if (p[k] == ':' || p[k] == '!' || p[k] == '.' || p[k] == '[')
                tpl_rt_fail(c->rt, "format: conversions, specs and field access are not supported");
        tv v;
        if (b == e || (p[b] >= '0' && p[b] <= '9')) {
            size_t idx = b == e ? auto_index++ : (size_t)strtoul(p + b, NULL, 10);
            if (idx >= c->nargs)
                tpl_rt_fail(c->rt, "IndexError: Replacement index %zu out of range for positional args tuple", idx);
            v = c->args[idx];
        } else {
            size_t k;
            for (k = 0; k < c->nkw; k++)
                if (strlen(c->kwnames[k]) == e - b && !memcmp(c->kwnames[k], p + b, e - b))
                    break;
            if (k == c->nkw)
                tpl_rt_fail(c->rt, "KeyError: '%.*s'", (int)(e - b), p + b);
            v = c->kwvals[k];
        }
        tv_write_str(c->rt, &o, v);
        i = e;
    }
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}

static tv call_str(mcall *c)
{
    tpl_rt *rt = c->rt;
    tv s = c->self;
    const char *m = c->name;
    if (is(m, "strip") || is(m, "lstrip") || is(m, "rstrip")) {
        BIND("chars");
        int l = !is(m, "rstrip"), r = !is(m, "lstrip");
        if (!given(a[0]))
            return tpl_str_strip(rt, s, NULL, 0, l, r);
        tv ch = want_str(c, a[0]);
        return tpl_str_strip(rt, s, ch.u.s.p, ch.u.s.n, l, r);
    }
    if (is(m, "split") || is(m, "rsplit")) {
        BIND("sep", "maxsplit");
        tv sep = given(a[0]) ? want_str(c, a[0]) : tv_none();
        return tv_list(tpl_str_split(rt, s, sep, want_int(c, a[1], -1), is(m, "rsplit")));
    }
    if (is(m, "splitlines")) {
        BIND("keepends");
        return tv_list(tpl_str_splitlines(rt, s, given(a[0]) && tv_truthy(a[0])));
    }
    if (is(m, "startswith") || is(m, "endswith")) {
        BIND("prefix", "start", "end");
        if (a[0].t == V_UNSET)
            tpl_rt_fail(rt, "TypeError: %s() takes at least 1 argument (0 given)", m);
        tv r = sub_range(c, s, a[1], a[2]);
        if (a[0].t == V_TUPLE) {
            for (size_t i = 0; i < a[0].u.l->n; i++)
                if (affix(r, want_str(c, a[0].u.l->items[i]), is(m, "endswith")))
                    return tv_bool(1);
            return tv_bool(0);
        }
        if (a[0].t != V_STR)
            tpl_rt_fail(rt, "TypeError: %s first arg must be str or a tuple of str, not %s", m, tv_type_name(a[0].t));
        return tv_bool(affix(r, a[0], is(m, "endswith")));
    }
    if (is(m, "upper") || is(m, "lower") || is(m, "title") || is(m, "capitalize") || is(m, "casefold") ||
        is(m, "swapcase")) {
        no_args(c);
        if (is(m, "swapcase"))
            tpl_rt_fail(rt, "swapcase() is not supported");
        return is(m, "upper") ? tpl_str_upper(rt, s)
               : is(m, "lower") || is(m, "casefold") ? tpl_str_lower(rt, s)
               : is(m, "title")                      ? tpl_str_title_py(rt, s)
                                                     : tpl_str_capitalize(rt, s);
    }
    if (is(m, "replace")) {
        BIND("old", "new", "count");
        if (a[0].t == V_UNSET || a[1].t == V_UNSET)
            tpl_rt_fail(rt, "TypeError: replace() expected at least 2 arguments");
        return tpl_str_replace(rt, s, want_str(c, a[0]), want_str(c, a[1]), want_int(c, a[2], -1));
    }
    if (is(m, "find") || is(m, "rfind") || is(m, "index") || is(m, "rindex") || is(m, "count")) {
        BIND("sub", "start", "end");
        if (a[0].t == V_UNSET)
            tpl_rt_fail(rt, "TypeError: %s() takes at least 1 argument (0 given)", m);
        tv sub = want_str(c, a[0]), r = sub_range(c, s, a[1], a[2]);
        if (is(m, "count")) {
            if (!sub.u.s.n)
                return tv_int(tpl_len(rt, r) + 1);
            int64_t k = 0;
            for (const char *p = r.u.s.p, *e = p + r.u.s.n; (p = memmem(p, (size_t)(e - p), sub.u.s.p, sub.u.s.n));
                 p += sub.u.s.n)
                k++;
            return tv_int(k);
        }
        int64_t at = find_in(c, r, sub, m[0] == 'r');
        if (at < 0 && (is(m, "index") || is(m, "rindex")))
            tpl_rt_fail(rt, "ValueError: substring not found");
        if (at >= 0 && given(a[1])) { /* back to an index into s: where the range began */
            int64_t len = tpl_len(rt, s), start = want_int(c, a[1], 0);
            if (start < 0)
                start = start + len < 0 ? 0 : start + len;
            at += start > len ? len : start;
        }
        return tv_int(at);
    }
    if (is(m, "join")) {
        BIND("iterable");
        if (a[0].t == V_UNSET)
            tpl_rt_fail(rt, "TypeError: join() takes exactly one argument (0 given)");
        tlist *l = tpl_iterate(rt, a[0]);
        tpl_out o;
        tpl_out_init(&o, rt->lim->max_string);
        for (size_t i = 0; i < l->n; i++) {
            tpl_count_iteration(rt);
            if (l->items[i].t != V_STR)
                tpl_rt_fail(rt, "TypeError: sequence item %zu: expected str instance, %s found", i,
                            tv_type_name(l->items[i].t));
            if (i)
                tpl_out_append(rt, &o, s.u.s.p, s.u.s.n);
            tpl_out_append(rt, &o, l->items[i].u.s.p, l->items[i].u.s.n);
        }
        return o.p ? tpl_out_str(&o) : tv_str("", 0);
    }
    if (is(m, "format"))
        return str_format(c, s);
    if (is(m, "isdigit") || is(m, "isdecimal") || is(m, "isnumeric") || is(m, "isalpha") || is(m, "isalnum") ||
        is(m, "isspace")) {
        no_args(c);
        return tv_bool(all_chars(s, is(m, "isalpha") ? p_alpha : is(m, "isalnum") ? p_alnum : is(m, "isspace") ? p_space
                                    : is(m, "isnumeric")                                                   ? p_numeric
                                                                                                           : p_digit));
    }
    if (is(m, "islower") || is(m, "isupper")) {
        no_args(c);
        tv lo = tpl_str_lower(rt, s), up = tpl_str_upper(rt, s);
        return tv_bool(!tv_eq(lo, up) && tv_eq(s, is(m, "islower") ? lo : up));
    }
    if (is(m, "zfill")) {
        BIND("width");
        return str_pad(c, s, want_int(c, a[0], 0), tv_str("0", 1), 3);
    }
    if (is(m, "center") || is(m, "ljust") || is(m, "rjust")) {
        BIND("width", "fillchar");
        tv fill = given(a[1]) ? want_str(c, a[1]) : tv_str(" ", 1);
        if (tpl_len(rt, fill) != 1)
            tpl_rt_fail(rt, "TypeError: The fill character must be exactly one character long");
        return str_pad(c, s, want_int(c, a[0], 0), fill, is(m, "ljust") ? 0 : is(m, "rjust") ? 1 : 2);
    }
    if (is(m, "partition") || is(m, "rpartition")) {
        BIND("sep");
        tv sep = want_str(c, a[0]);
        if (!sep.u.s.n)
            tpl_rt_fail(rt, "ValueError: empty separator");
        tlist *parts = tpl_str_split(rt, s, sep, 1, is(m, "rpartition"));
        tlist *t = tl_new(rt->ar, 3);
        if (parts->n == 2) {
            tl_push(rt->ar, t, parts->items[0]);
            tl_push(rt->ar, t, sep);
            tl_push(rt->ar, t, parts->items[1]);
        } else if (is(m, "partition")) {
            tl_push(rt->ar, t, s);
            tl_push(rt->ar, t, tv_str("", 0));
            tl_push(rt->ar, t, tv_str("", 0));
        } else {
            tl_push(rt->ar, t, tv_str("", 0));
            tl_push(rt->ar, t, tv_str("", 0));
            tl_push(rt->ar, t, s);
        }
        return tv_tuple(t);
    }
    if (is(m, "removeprefix") || is(m, "removesuffix")) {
        BIND("affix");
        tv x = want_str(c, a[0]);
        int suffix = is(m, "removesuffix");
        if (!affix(s, x, suffix))
            return s;
        return tv_str(s.u.s.p + (suffix ? 0 : x.u.s.n), s.u.s.n - x.u.s.n);
    }
    tpl_rt_fail(rt, "str.%s() is not supported", m);
}

static tv call_dict(mcall *c)
{
    tpl_rt *rt = c->rt;
    tdict *d = c->self.u.d;
    if (is(c->name, "get")) {
        BIND("key", "default");
        if (a[0].t == V_UNSET)
            tpl_rt_fail(rt, "TypeError: get expected at least 1 argument, got 0");
        tv *v = td_get(d, a[0]);
        return v ? *v : a[1].t == V_UNSET ? tv_none() : a[1];
    }
    no_args(c);
    tlist *l = tl_new(rt->ar, d->n);
    if (is(c->name, "copy")) {
        tdict *cp = td_new(rt->ar);
        for (size_t i = 0; i < d->n; i++)
            td_set(rt->ar, cp, d->keys[i], d->vals[i]);
        tv v = {.t = V_DICT};
        v.u.d = cp;
        return v;
    }
    for (size_t i = 0; i < d->n; i++) {
        if (is(c->name, "keys")) {
            tl_push(rt->ar, l, d->keys[i]);
        } else if (is(c->name, "values")) {
            tl_push(rt->ar, l, d->vals[i]);
        } else {
            tlist *p = tl_new(rt->ar, 2);
            tl_push(rt->ar, p, d->keys[i]);
            tl_push(rt->ar, p, d->vals[i]);
            tl_push(rt->ar, l, tv_tuple(p));
        }
    }
    return tv_list(l);
}

static tv call_list(mcall *c)
{
    tlist *l = c->self.u.l;
    if (is(c->name, "copy")) {
        no_args(c);
        tlist *cp = tl_new(c->rt->ar, l->n);
        for (size_t i = 0; i < l->n; i++)
            tl_push(c->rt->ar, cp, l->items[i]);
        return tv_list(cp);
    }
    BIND("value");
    if (a[0].t == V_UNSET)
        tpl_rt_fail(c->rt, "TypeError: %s() takes exactly one argument (0 given)", c->name);
    int64_t k = 0;
    for (size_t i = 0; i < l->n; i++)
        if (tv_eq(l->items[i], a[0])) {
            if (is(c->name, "index"))
                return tv_int((int64_t)i);
            k++;
        }
    if (is(c->name, "index"))
        tpl_rt_fail(c->rt, "ValueError: value is not in list");
    return tv_int(k);
}

static tv call_loop(mcall *c)
{
    tloop *l = c->self.u.loop;
    if (c->nkw)
        tpl_rt_fail(c->rt, "TypeError: loop.%s() takes no keyword arguments", c->name);
    if (is(c->name, "cycle")) {
        if (!c->nargs)
            tpl_rt_fail(c->rt, "TypeError: no items for cycling given");
        return c->args[l->index0 % c->nargs];
    }
    /* changed(*values): whether the values differ from the last call's */
    tlist *t = tl_new(c->rt->ar, c->nargs);
    for (size_t i = 0; i < c->nargs; i++)
        tl_push(c->rt->ar, t, c->args[i]);
    tv now = tv_list(t);
    if (l->changed_set && tv_eq(l->changed_last, now))
        return tv_bool(0);
    l->changed_last = now;
    l->changed_set = 1;
    return tv_bool(1);
}

tv tpl_method_call(tpl_rt *rt, tmethod *bm, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw)
{
    mcall c = {rt, bm->self, bm->name, args, nargs, kwnames, kwvals, nkw};
    switch (bm->self.t) {
    case V_STR: return call_str(&c);
    case V_DICT: return call_dict(&c);
    case V_LIST:
    case V_TUPLE: return call_list(&c);
    case V_LOOP: return call_loop(&c);
    default: tpl_rt_fail(rt, "internal error: a method of %s", tv_type_name(bm->self.t));
    }
}

/* ---- globals ---- */

static const char *const globals[] = {"raise_exception", "strftime_now", "range", "namespace", "dict", NULL};

void tpl_install_globals(tpl_rt *rt, tscope *g)
{
    for (const char *const *n = globals; *n; n++) {
        tv f = {.t = V_FUNC};
        f.u.s.p = *n;
        f.u.s.n = strlen(*n);
        tpl_scope_set(rt, g, *n, f);
    }
}

#define SANDBOX_MAX_RANGE 100000 /* jinja2.sandbox.MAX_RANGE */

static tv g_range(mcall *c)
{
    if (c->nkw)
        tpl_rt_fail(c->rt, "TypeError: range() takes no keyword arguments");
    if (!c->nargs || c->nargs > 3)
        tpl_rt_fail(c->rt, "TypeError: range expected 1 to 3 arguments, got %zu", c->nargs);
    int64_t v[3];
    for (size_t i = 0; i < c->nargs; i++) {
        tv a = c->args[i];
        if (a.t != V_INT && a.t != V_BOOL)
            tpl_rt_fail(c->rt, "TypeError: '%s' object cannot be interpreted as an integer", tv_type_name(a.t));
        v[i] = a.t == V_INT ? a.u.i : a.u.b;
    }
    int64_t start = c->nargs > 1 ? v[0] : 0, stop = c->nargs > 1 ? v[1] : v[0], step = c->nargs > 2 ? v[2] : 1;
    if (!step)
        tpl_rt_fail(c->rt, "ValueError: range() arg 3 must not be zero");
    double count = step > 0 ? ((double)stop - (double)start) / (double)step : ((double)start - (double)stop) / -(double)step;
    if (count > SANDBOX_MAX_RANGE)
        tpl_rt_fail_code(c->rt, KV_ERANGE,
                         "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
                         SANDBOX_MAX_RANGE);
    tlist *l = tl_new(c->rt->ar, count > 0 ? (size_t)count + 1 : 0);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        tl_push(c->rt->ar, l, tv_int(i));
    return tv_list(l);
}

/* namespace(...) and dict(...): from a mapping and/or keywords. */
static tv g_mapping(mcall *c, int ns)
{
    tdict *d = td_new(c->rt->ar);
    if (c->nargs > 1)
        tpl_rt_fail(c->rt, "TypeError: %s expected at most 1 argument, got %zu", c->name, c->nargs);
    if (c->nargs) {
        tv src = c->args[0];
        if (src.t == V_DICT || src.t == V_NS) {
            for (size_t i = 0; i < src.u.d->n; i++)
                td_set(c->rt->ar, d, src.u.d->keys[i], src.u.d->vals[i]);
        } else {
            tlist *l = tpl_iterate(c->rt, src);
            for (size_t i = 0; i < l->n; i++) {
                tlist *kv = tv_is_seq(l->items[i]) ? l->items[i].u.l : NULL;
                if (!kv || kv->n != 2)
                    tpl_rt_fail(c->rt, "ValueError: dictionary update sequence element #%zu has the wrong length", i);
                td_set(c->rt->ar, d, kv->items[0], kv->items[1]);
            }
        }
    }
    for (size_t k = 0; k < c->nkw; k++)
        td_set(c->rt->ar, d, tv_cstr(c->kwnames[k]), c->kwvals[k]);
    if (ns)
        for (size_t i = 0; i < d->n; i++)
            if (d->keys[i].t == V_STR && d->keys[i].u.s.n && d->keys[i].u.s.p[0] == '_')
                tpl_rt_fail(c->rt,
                            "SecurityError: Chat templates cannot store underscore-prefixed attributes on a namespace, "
                            "but got '%.*s'. Please rename the attribute.",
                            (int)(d->keys[i].u.s.n > 100 ? 100 : d->keys[i].u.s.n), d->keys[i].u.s.p);
    tv v = {.t = ns ? V_NS : V_DICT};
    v.u.d = d;
    return v;
}

static tv g_strftime_now(mcall *c)
{
    if (c->nargs != 1 || c->nkw || c->args[0].t != V_STR)
        tpl_rt_fail(c->rt, "TypeError: strftime_now() takes one format string");
    tv fmt = c->args[0];
    if (fmt.u.s.n > 256 || memchr(fmt.u.s.p, '\0', fmt.u.s.n))
        tpl_rt_fail(c->rt, "strftime_now: format too long or holding NUL");
    char f[260], out[1024];
    memcpy(f, fmt.u.s.p, fmt.u.s.n);
    f[fmt.u.s.n] = '\0';
    struct tm tm;
    time_t t = c->rt->now ? (time_t)c->rt->now : time(NULL);
    if (c->rt->now)
        gmtime_r(&t, &tm);
    else
        localtime_r(&t, &tm);
    size_t n = fmt.u.s.n ? strftime(out, sizeof out, f, &tm) : 0;
    if (!n && fmt.u.s.n)
        tpl_rt_fail(c->rt, "strftime_now: the formatted date is empty or too long");
    return tv_str(tpl_strdup(c->rt->ar, out, n), n);
}

tv tpl_global_call(tpl_rt *rt, tscope *sc, const char *name, tv *args, size_t nargs, const char **kwnames, tv *kwvals,
                   size_t nkw)
{
    (void)sc;
    mcall c = {rt, tv_none(), name, args, nargs, kwnames, kwvals, nkw};
    if (is(name, "raise_exception")) {
        if (nargs != 1 || nkw)
            tpl_rt_fail(rt, "TypeError: raise_exception() takes one message");
        tv msg = tv_to_str(rt, args[0]);
        tpl_fail_at(rt->fc, KV_EINVAL, rt->fc->line, rt->fc->col, "%.*s", (int)(msg.u.s.n > 400 ? 400 : msg.u.s.n),
                    msg.u.s.p);
    }
    if (is(name, "strftime_now"))
        return g_strftime_now(&c);
    if (is(name, "range"))
        return g_range(&c);
    if (is(name, "namespace"))
        return g_mapping(&c, 1);
    if (is(name, "dict"))
        return g_mapping(&c, 0);
    tpl_rt_fail(rt, "internal error: no global '%s'", name);
}
