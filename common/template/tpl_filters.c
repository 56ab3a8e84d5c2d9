/* The filters chat templates use, with jinja2 3.1's arguments and behaviour (tojson is
 * transformers' override). A filter not listed here is refused when the template compiles. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

void tpl_bind(tpl_rt *rt, const char *fname, const char *const *names, tv *args, size_t nargs, const char **kwnames,
              tv *kwvals, size_t nkw, tv *out)
{
    size_t np = 0;
    while (names[np])
        np++;
    if (nargs > np)
        tpl_rt_fail(rt, "TypeError: %s() takes at most %zu argument(s) (%zu given)", fname, np, nargs);
    for (size_t i = 0; i < np; i++)
        out[i] = i < nargs ? args[i] : (tv){.t = V_UNSET};
    for (size_t k = 0; k < nkw; k++) {
        size_t i;
        for (i = 0; i < np; i++)
            if (!strcmp(names[i], kwnames[k]))
                break;
        if (i == np)
            tpl_rt_fail(rt, "TypeError: %s() got an unexpected keyword argument '%s'", fname, kwnames[k]);
        if (out[i].t != V_UNSET)
            tpl_rt_fail(rt, "TypeError: %s() got multiple values for argument '%s'", fname, kwnames[k]);
        out[i] = kwvals[k];
    }
}

static tv or_default(tv v, tv d) { return v.t == V_UNSET ? d : v; }

static int64_t want_int(tpl_rt *rt, tv v, int64_t d, const char *what)
{
    if (v.t == V_UNSET || v.t == V_NONE)
        return d;
    if (v.t == V_INT)
        return v.u.i;
    if (v.t == V_BOOL)
        return v.u.b;
    tpl_rt_fail(rt, "TypeError: %s must be an integer, not %s", what, tv_type_name(v.t));
}

static tv want_str(tpl_rt *rt, tv v, const char *what)
{
    if (v.t != V_STR)
        tpl_rt_fail(rt, "TypeError: %s must be a string, not %s", what, tv_type_name(v.t));
    return v;
}

tv tpl_attr_path(tpl_rt *rt, tv item, tv path)
{
    if (path.t != V_STR)
        return tpl_getitem(rt, item, path);
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        int digits = n > 0;
        for (size_t i = 0; i < n; i++)
            digits &= p[i] >= '0' && p[i] <= '9';
        tv key = digits && n < 18 ? tv_int(strtoll(p, NULL, 10)) : tv_str(p, n);
        item = tpl_getitem(rt, item, key);
        if (!dot)
            break;
        p = dot + 1;
    }
    return item;
}

/* ---- sorting: a stable merge sort on keys ---- */

typedef struct keyed { tv key, item; } keyed;

static tv sort_key(tpl_rt *rt, tv item, tv attribute, int case_sensitive)
{
    tv k = attribute.t == V_UNSET || attribute.t == V_NONE ? item : tpl_attr_path(rt, item, attribute);
    if (!case_sensitive && k.t == V_STR)
        k = tpl_str_lower(rt, k);
    return k;
}

static void merge_sort(tpl_rt *rt, keyed *v, keyed *tmp, size_t n, int reverse)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(rt, v, tmp, h, reverse);
    merge_sort(rt, v + h, tmp, n - h, reverse);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c = tpl_order(rt, v[j].key, v[i].key);
        /* take from the right only when strictly before (stability); reversed, when after */
        if (reverse ? c > 0 : c < 0)
            tmp[k++] = v[j++];
        else
            tmp[k++] = v[i++];
    }
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static tlist *sorted(tpl_rt *rt, tlist *items, tv *keys, int reverse)
{
    size_t n = items->n;
    keyed *v = tpl_alloc(rt->ar, (n + 1) * sizeof *v), *tmp = tpl_alloc(rt->ar, (n + 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        tpl_count_iteration(rt);
        v[i].item = items->items[i];
        v[i].key = keys[i];
    }
    merge_sort(rt, v, tmp, n, reverse);
    tlist *out = tl_new(rt->ar, n);
    for (size_t i = 0; i < n; i++)
        tl_push(rt->ar, out, v[i].item);
    return out;
}

/* ---- the filters ---- */

typedef struct fcall {
    tpl_rt *rt;
    tscope *sc;
    const char *name;
    tv val;
    tv *args;
    size_t nargs;
    const char **kwnames;
    tv *kwvals;
    size_t nkw;
} fcall;

#define BIND(...)                                                                                         \
    static const char *const names_[] = {__VA_ARGS__, NULL};                                              \
    tv a[sizeof names_ / sizeof *names_];                                                                 \
    tpl_bind(f->rt, f->name, names_, f->args, f->nargs, f->kwnames, f->kwvals, f->nkw, a)

static tv f_noargs(fcall *f)
{
    if (f->nargs || f->nkw)
        tpl_rt_fail(f->rt, "TypeError: %s() takes no arguments", f->name);
    return f->val;
}

static tv f_str(fcall *f) { return tv_to_str(f->rt, f_noargs(f)); }

static tv f_trim(fcall *f)
{
    BIND("chars");
    tv s = tv_to_str(f->rt, f->val);
    if (a[0].t == V_UNSET || a[0].t == V_NONE)
        return tpl_str_strip(f->rt, s, NULL, 0, 1, 1);
    tv c = want_str(f->rt, a[0], "chars");
    return tpl_str_strip(f->rt, s, c.u.s.p, c.u.s.n, 1, 1);
}

static tv f_upper(fcall *f) { return tpl_str_upper(f->rt, f_str(f)); }
static tv f_lower(fcall *f) { return tpl_str_lower(f->rt, f_str(f)); }
static tv f_title(fcall *f) { return tpl_str_title_jinja(f->rt, f_str(f)); }
static tv f_capitalize(fcall *f) { return tpl_str_capitalize(f->rt, f_str(f)); }
static tv f_string(fcall *f) { return f_str(f); }
static tv f_safe(fcall *f) { return f_noargs(f); }
static tv f_length(fcall *f) { return tv_int(tpl_len(f->rt, f_noargs(f))); }

static tv f_escape(fcall *f)
{
    tv s = f_str(f);
    tpl_out o;
    tpl_out_init(&o, f->rt->lim->max_string);
    for (size_t i = 0; i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        const char *r = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;" : c == '\'' ? "&#39;" : NULL;
        if (r)
            tpl_out_append(f->rt, &o, r, strlen(r));
        else
            tpl_out_append(f->rt, &o, &c, 1);
    }
    tv r = o.p ? tpl_out_str(&o) : tv_str("", 0);
    r.safe = 1;
    return r;
}

static tv f_first(fcall *f)
{
    tlist *l = tpl_iterate(f->rt, f_noargs(f));
    return l->n ? l->items[0] : tv_undef_hint("No first item, sequence was empty.");
}

static tv f_last(fcall *f)
{
    tlist *l = tpl_iterate(f->rt, f_noargs(f));
    return l->n ? l->items[l->n - 1] : tv_undef_hint("No last item, sequence was empty.");
}

static tv f_join(fcall *f)
{
    BIND("d", "attribute");
    tv sep = a[0].t == V_UNSET ? tv_str("", 0) : tv_to_str(f->rt, a[0]);
    tlist *l = tpl_iterate(f->rt, f->val);
    tpl_out o;
    tpl_out_init(&o, f->rt->lim->max_string);
    for (size_t i = 0; i < l->n; i++) {
        tpl_count_iteration(f->rt);
        if (i)
            tpl_out_append(f->rt, &o, sep.u.s.p, sep.u.s.n);
        tv item = a[1].t == V_UNSET || a[1].t == V_NONE ? l->items[i] : tpl_attr_path(f->rt, l->items[i], a[1]);
        tv_write_str(f->rt, &o, item);
    }
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}

static tv f_default(fcall *f)
{
    BIND("default_value", "boolean");
    tv d = or_default(a[0], tv_str("", 0));
    int boolean = a[1].t != V_UNSET && tv_truthy(a[1]);
    if (f->val.t == V_UNDEF || (boolean && !tv_truthy(f->val)))
        return d;
    return f->val;
}

static tv f_tojson(fcall *f)
{
    BIND("ensure_ascii", "indent", "separators", "sort_keys");
    if (a[0].t != V_UNSET && tv_truthy(a[0]))
        tpl_rt_fail(f->rt, "tojson: ensure_ascii=True is not supported");
    return tpl_tojson(f->rt, f->val, or_default(a[1], tv_none()), or_default(a[2], tv_none()),
                      a[3].t != V_UNSET && tv_truthy(a[3]));
}

/* Python's int(s, base): optional sign, a 0x/0o/0b prefix where base allows (base 0 also picks
 * the base by it, and refuses other leading zeros), digits with single underscores between. */
static int parse_py_int(const char *s, size_t n, int base, int64_t *out)
{
    tv t = tpl_str_strip(NULL, tv_str(s, n), NULL, 0, 1, 1);
    const char *p = t.u.s.p, *e = p + t.u.s.n;
    int neg = 0;
    if (p < e && (*p == '+' || *p == '-'))
        neg = *p++ == '-';
    if (e - p >= 2 && p[0] == '0') {
        char x = (char)(p[1] | 0x20);
        int pb = x == 'x' ? 16 : x == 'o' ? 8 : x == 'b' ? 2 : 0;
        if (pb && (base == 0 || base == pb)) {
            base = pb;
            p += 2;
            if (p < e && *p == '_')
                p++;
        }
    }
    int zero_lead = 0;
    if (base == 0) {
        base = 10;
        zero_lead = p < e && *p == '0';
    }
    uint64_t v = 0;
    int digits = 0, nonzero = 0;
    for (; p < e; p++) {
        if (*p == '_') {
            if (!digits || p + 1 >= e || p[1] == '_')
                return 0;
            continue;
        }
        int d = *p >= '0' && *p <= '9' ? *p - '0' : (*p | 0x20) >= 'a' && (*p | 0x20) <= 'z' ? (*p | 0x20) - 'a' + 10 : 99;
        if (d >= base)
            return 0;
        nonzero |= d != 0;
        if (v > (UINT64_C(0x7fffffffffffffff) - (uint64_t)d) / (uint64_t)base)
            return 0;
        v = v * (uint64_t)base + (uint64_t)d;
        digits++;
    }
    if (!digits || (zero_lead && nonzero))
        return 0;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 1;
}

static int parse_py_float(const char *s, size_t n, double *out)
{
    char buf[80];
    tv t = tpl_str_strip(NULL, tv_str(s, n), NULL, 0, 1, 1);
    if (!t.u.s.n || t.u.s.n >= sizeof buf)
        return 0;
    memcpy(buf, t.u.s.p, t.u.s.n);
    buf[t.u.s.n] = '\0';
    if (strchr(buf, 'x') || strchr(buf, 'X'))
        return 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end || end == buf)
        return 0;
    *out = d;
    return 1;
}

static tv f_int(fcall *f)
{
    BIND("default", "base");
    tv d = or_default(a[0], tv_int(0));
    int64_t base = want_int(f->rt, a[1], 10, "base");
    tv v = f->val;
    int64_t i;
    double x;
    switch (v.t) {
    case V_INT: return v;
    case V_BOOL: return tv_int(v.u.b);
    case V_FLOAT:
        if (isnan(v.u.f) || isinf(v.u.f) || fabs(v.u.f) >= 9.2e18)
            return d;
        return tv_int((int64_t)v.u.f);
    case V_STR:
        if ((base == 0 || (base >= 2 && base <= 36)) && parse_py_int(v.u.s.p, v.u.s.n, (int)base, &i))
            return tv_int(i);
        if (parse_py_float(v.u.s.p, v.u.s.n, &x) && !isnan(x) && !isinf(x) && fabs(x) < 9.2e18)
            return tv_int((int64_t)x);
        return d;
    default: return d;
    }
}

static tv f_float(fcall *f)
{
    BIND("default");
    tv d = or_default(a[0], tv_float(0.0));
    tv v = f->val;
    double x;
    if (v.t == V_FLOAT)
        return v;
    if (v.t == V_INT || v.t == V_BOOL)
        return tv_float(tv_num(v));
    if (v.t == V_STR && parse_py_float(v.u.s.p, v.u.s.n, &x))
        return tv_float(x);
    return d;
}

static tv f_list(fcall *f)
{
    tlist *l = tpl_iterate(f->rt, f_noargs(f)), *c = tl_new(f->rt->ar, l->n);
    for (size_t i = 0; i < l->n; i++)
        tl_push(f->rt->ar, c, l->items[i]);
    return tv_list(c);
}

static tv pair(tpl_rt *rt, tv k, tv v)
{
    tlist *p = tl_new(rt->ar, 2);
    tl_push(rt->ar, p, k);
    tl_push(rt->ar, p, v);
    return tv_tuple(p);
}

static tv f_items(fcall *f)
{
    tv v = f_noargs(f);
    tlist *l = tl_new(f->rt->ar, 0);
    if (v.t == V_UNDEF)
        return tv_list(l);
    if (v.t != V_DICT)
        tpl_rt_fail(f->rt, "TypeError: can only get item pairs from a mapping.");
    for (size_t i = 0; i < v.u.d->n; i++)
        tl_push(f->rt->ar, l, pair(f->rt, v.u.d->keys[i], v.u.d->vals[i]));
    return tv_list(l);
}

static tv f_dictsort(fcall *f)
{
    BIND("case_sensitive", "by", "reverse");
    int cs = a[0].t != V_UNSET && tv_truthy(a[0]), rev = a[2].t != V_UNSET && tv_truthy(a[2]);
    int pos = 0;
    if (a[1].t != V_UNSET) {
        tv by = want_str(f->rt, a[1], "by");
        if (by.u.s.n == 5 && !memcmp(by.u.s.p, "value", 5))
            pos = 1;
        else if (!(by.u.s.n == 3 && !memcmp(by.u.s.p, "key", 3)))
            tpl_rt_fail(f->rt, "FilterArgumentError: You can only sort by either \"key\" or \"value\"");
    }
    if (f->val.t != V_DICT)
        tpl_rt_fail(f->rt, "TypeError: dictsort needs a mapping, not %s", tv_type_name(f->val.t));
    tdict *d = f->val.u.d;
    tlist *items = tl_new(f->rt->ar, d->n);
    tv *keys = tpl_alloc(f->rt->ar, (d->n + 1) * sizeof(tv));
    for (size_t i = 0; i < d->n; i++) {
        tl_push(f->rt->ar, items, pair(f->rt, d->keys[i], d->vals[i]));
        keys[i] = sort_key(f->rt, pos ? d->vals[i] : d->keys[i], (tv){.t = V_UNSET}, cs);
    }
    return tv_list(sorted(f->rt, items, keys, rev));
}

static tv f_sort(fcall *f)
{
    BIND("reverse", "case_sensitive", "attribute");
    int rev = a[0].t != V_UNSET && tv_truthy(a[0]), cs = a[1].t != V_UNSET && tv_truthy(a[1]);
    tlist *items = tpl_iterate(f->rt, f->val);
    tv *keys = tpl_alloc(f->rt->ar, (items->n + 1) * sizeof(tv));
    tv attr = a[2];
    /* "a,b": a tuple of keys */
    int multi = attr.t == V_STR && memchr(attr.u.s.p, ',', attr.u.s.n);
    /* jinja2 sorts on a list of keys even for one attribute: equal (==) keys, undefined ones
     * included, never reach <. */
    for (size_t i = 0; i < items->n; i++) {
        if (!multi) {
            tlist *k = tl_new(f->rt->ar, 1);
            tl_push(f->rt->ar, k, sort_key(f->rt, items->items[i], attr, cs));
            keys[i] = tv_list(k);
            continue;
        }
        tlist *parts = tpl_str_split(f->rt, attr, tv_str(",", 1), -1, 0), *k = tl_new(f->rt->ar, parts->n);
        for (size_t j = 0; j < parts->n; j++)
            tl_push(f->rt->ar, k, sort_key(f->rt, items->items[i], parts->items[j], cs));
        keys[i] = tv_list(k);
    }
    return tv_list(sorted(f->rt, items, keys, rev));
}

static tv f_reverse(fcall *f)
{
    tv v = f_noargs(f);
    if (v.t == V_STR) {
        tlist *chars = tpl_iterate(f->rt, v);
        tpl_out o;
        tpl_out_init(&o, f->rt->lim->max_string);
        for (size_t i = chars->n; i-- > 0;)
            tpl_out_append(f->rt, &o, chars->items[i].u.s.p, chars->items[i].u.s.n);
        return o.p ? tpl_out_str(&o) : tv_str("", 0);
    }
    tlist *l = tpl_iterate(f->rt, v), *r = tl_new(f->rt->ar, l->n);
    for (size_t i = l->n; i-- > 0;)
        tl_push(f->rt->ar, r, l->items[i]);
    return tv_list(r);
}

/* select / reject / selectattr / rejectattr */
static tv select_common(fcall *f, int by_attr, int keep)
{
    if (by_attr && !f->nargs)
        tpl_rt_fail(f->rt, "TypeError: %s() needs an attribute name", f->name);
    tv attr = by_attr ? f->args[0] : tv_none();
    size_t first = by_attr ? 1 : 0;
    tlist *l = tpl_iterate(f->rt, f->val), *out = tl_new(f->rt->ar, 0);
    const char *test = NULL;
    if (f->nargs > first) {
        tv t = want_str(f->rt, f->args[first], "test name");
        test = tpl_strdup(f->rt->ar, t.u.s.p, t.u.s.n);
        if (!tpl_has_test(test))
            tpl_rt_fail(f->rt, "TemplateRuntimeError: No test named '%s'.", test);
    }
    if (f->nkw)
        tpl_rt_fail(f->rt, "TypeError: %s() takes no keyword arguments", f->name);
    for (size_t i = 0; i < l->n; i++) {
        tpl_count_iteration(f->rt);
        tv item = by_attr ? tpl_attr_path(f->rt, l->items[i], attr) : l->items[i];
        int ok = test ? tpl_test(f->rt, f->sc, test, item, f->args + first + 1, f->nargs - first - 1) : tv_truthy(item);
        if (ok == keep)
            tl_push(f->rt->ar, out, l->items[i]);
    }
    return tv_list(out);
}

static tv f_select(fcall *f) { return select_common(f, 0, 1); }
static tv f_reject(fcall *f) { return select_common(f, 0, 0); }
static tv f_selectattr(fcall *f) { return select_common(f, 1, 1); }
static tv f_rejectattr(fcall *f) { return select_common(f, 1, 0); }

static tv f_map(fcall *f)
{
    tlist *l = tpl_iterate(f->rt, f->val), *out = tl_new(f->rt->ar, l->n);
    tv attribute = {.t = V_UNSET}, dflt = {.t = V_UNSET};
    for (size_t k = 0; k < f->nkw; k++) {
        if (!strcmp(f->kwnames[k], "attribute"))
            attribute = f->kwvals[k];
        else if (!strcmp(f->kwnames[k], "default"))
            dflt = f->kwvals[k];
        else if (!f->nargs)
            tpl_rt_fail(f->rt, "FilterArgumentError: Unexpected keyword argument '%s'", f->kwnames[k]);
    }
    if (attribute.t != V_UNSET) {
        for (size_t i = 0; i < l->n; i++) {
            tpl_count_iteration(f->rt);
            tv v = tpl_attr_path(f->rt, l->items[i], attribute);
            tl_push(f->rt->ar, out, v.t == V_UNDEF && dflt.t != V_UNSET ? dflt : v);
        }
        return tv_list(out);
    }
    if (!f->nargs)
        tpl_rt_fail(f->rt, "FilterArgumentError: map requires a filter argument");
    tv name = want_str(f->rt, f->args[0], "filter name");
    const char *fname = tpl_strdup(f->rt->ar, name.u.s.p, name.u.s.n);
    if (!tpl_has_filter(fname))
        tpl_rt_fail(f->rt, "TemplateRuntimeError: No filter named '%s'.", fname);
    for (size_t i = 0; i < l->n; i++) {
        tpl_count_iteration(f->rt);
        tl_push(f->rt->ar, out, tpl_filter(f->rt, f->sc, fname, l->items[i], f->args + 1, f->nargs - 1, f->kwnames,
                                           f->kwvals, f->nkw));
    }
    return tv_list(out);
}

static tv f_unique(fcall *f)
{
    BIND("case_sensitive", "attribute");
    int cs = a[0].t != V_UNSET && tv_truthy(a[0]);
    tlist *l = tpl_iterate(f->rt, f->val), *out = tl_new(f->rt->ar, 0), *seen = tl_new(f->rt->ar, 0);
    for (size_t i = 0; i < l->n; i++) {
        tv key = sort_key(f->rt, l->items[i], a[1], cs);
        if (key.t == V_LIST || key.t == V_DICT || key.t == V_NS)
            tpl_rt_fail(f->rt, "TypeError: unhashable type: '%s'", tv_type_name(key.t));
        int dup = 0;
        for (size_t j = 0; j < seen->n && !dup; j++) {
            tpl_count_iteration(f->rt);
            dup = tv_eq(seen->items[j], key);
        }
        if (!dup) {
            tl_push(f->rt->ar, seen, key);
            tl_push(f->rt->ar, out, l->items[i]);
        }
    }
    return tv_list(out);
}

static tv f_minmax(fcall *f, int want_max)
{
    BIND("case_sensitive", "attribute");
    int cs = a[0].t != V_UNSET && tv_truthy(a[0]);
    tlist *l = tpl_iterate(f->rt, f->val);
    if (!l->n)
        return tv_undef_hint("No aggregated item, sequence was empty.");
    size_t best = 0;
    tv bk = sort_key(f->rt, l->items[0], a[1], cs);
    for (size_t i = 1; i < l->n; i++) {
        tpl_count_iteration(f->rt);
        tv k = sort_key(f->rt, l->items[i], a[1], cs);
        int c = tpl_order(f->rt, k, bk);
        if (want_max ? c > 0 : c < 0) {
            best = i;
            bk = k;
        }
    }
    return l->items[best];
}

static tv f_min(fcall *f) { return f_minmax(f, 0); }
static tv f_max(fcall *f) { return f_minmax(f, 1); }

static tv f_sum(fcall *f)
{
    BIND("attribute", "start");
    tv acc = or_default(a[1], tv_int(0));
    if (acc.t == V_STR)
        tpl_rt_fail(f->rt, "TypeError: sum() can't sum strings [use ''.join(seq) instead]");
    tlist *l = tpl_iterate(f->rt, f->val);
    for (size_t i = 0; i < l->n; i++) {
        tpl_count_iteration(f->rt);
        tv item = a[0].t == V_UNSET || a[0].t == V_NONE ? l->items[i] : tpl_attr_path(f->rt, l->items[i], a[0]);
        acc = tpl_binop(f->rt, T_ADD, acc, item);
    }
    return acc;
}

static tv f_abs(fcall *f)
{
    tv v = f_noargs(f);
    if (v.t == V_INT) {
        if (v.u.i == INT64_MIN)
            tpl_rt_fail_code(f->rt, KV_ERANGE, "integer overflow");
        return tv_int(v.u.i < 0 ? -v.u.i : v.u.i);
    }
    if (v.t == V_BOOL)
        return tv_int(v.u.b);
    if (v.t == V_FLOAT)
        return tv_float(fabs(v.u.f));
    tpl_rt_fail(f->rt, "TypeError: bad operand type for abs(): '%s'", tv_type_name(v.t));
}

static tv f_round(fcall *f)
{
    BIND("precision", "method");
    int64_t prec = want_int(f->rt, a[0], 0, "precision");
    const char *method = "common";
    if (a[1].t != V_UNSET) {
        tv m = want_str(f->rt, a[1], "method");
        method = tpl_strdup(f->rt->ar, m.u.s.p, m.u.s.n);
    }
    if (strcmp(method, "common") && strcmp(method, "ceil") && strcmp(method, "floor"))
        tpl_rt_fail(f->rt, "FilterArgumentError: method must be common, ceil or floor");
    tv v = f->val;
    if (!tv_is_number(v))
        tpl_rt_fail(f->rt, "TypeError: type %s doesn't define __round__ method", tv_type_name(v.t));
    if (prec < -30 || prec > 30)
        tpl_rt_fail_code(f->rt, KV_ERANGE, "round: precision %lld is out of range", (long long)prec);
    if (!strcmp(method, "common")) {
        if (v.t != V_FLOAT) { /* Python's round(int, n) stays an int; n < 0 rounds half to even */
            int64_t i = v.t == V_INT ? v.u.i : v.u.b;
            if (prec >= 0)
                return tv_int(i);
            if (prec < -18)
                return tv_int(0);
            int64_t m = 1;
            for (int64_t k = 0; k < -prec; k++)
                m *= 10;
            int64_t q = i / m, r = i % m;
            if (r < 0) {
                q--;
                r += m;
            }
            if (2 * r > m || (2 * r == m && (q & 1)))
                q++;
            int64_t res;
            if (__builtin_mul_overflow(q, m, &res))
                tpl_rt_fail_code(f->rt, KV_ERANGE, "integer overflow");
            return tv_int(res);
        }
        if (isnan(v.u.f) || isinf(v.u.f) || prec < 0)
            return tv_float(prec < 0 ? rint(v.u.f / pow(10, (double)-prec)) * pow(10, (double)-prec) : v.u.f);
        /* printf rounds the exact binary value half to even, as Python's round does */
        char buf[400];
        snprintf(buf, sizeof buf, "%.*f", (int)prec, v.u.f);
        return tv_float(strtod(buf, NULL));
    }
    double scale = pow(10, (double)prec), x = tv_num(v) * scale;
    return tv_float((!strcmp(method, "ceil") ? ceil(x) : floor(x)) / scale);
}

static tv f_indent(fcall *f)
{
    BIND("width", "first", "blank");
    tpl_rt *rt = f->rt;
    tv ind;
    if (a[0].t == V_STR) {
        ind = a[0];
    } else {
        int64_t w = want_int(rt, a[0], 4, "width");
        if (w > 1024)
            tpl_rt_fail_code(rt, KV_ERANGE, "indent: width %lld is too large", (long long)w);
        char *sp = tpl_alloc(rt->ar, w > 0 ? (size_t)w + 1 : 1);
        for (int64_t i = 0; i < w; i++)
            sp[i] = ' ';
        ind = tv_str(sp, w > 0 ? (size_t)w : 0);
    }
    int first = a[1].t != V_UNSET && tv_truthy(a[1]), blank = a[2].t != V_UNSET && tv_truthy(a[2]);
    tv s = tpl_str_concat(rt, tv_to_str(rt, f->val), tv_str("\n", 1));
    tlist *lines = tpl_str_splitlines(rt, s, 0);
    tpl_out o;
    tpl_out_init(&o, rt->lim->max_string);
    if (first)
        tpl_out_append(rt, &o, ind.u.s.p, ind.u.s.n);
    for (size_t i = 0; i < lines->n; i++) {
        tv line = lines->items[i];
        if (i) {
            tpl_out_append(rt, &o, "\n", 1);
            if (blank || line.u.s.n)
                tpl_out_append(rt, &o, ind.u.s.p, ind.u.s.n);
        }
        tpl_out_append(rt, &o, line.u.s.p, line.u.s.n);
    }
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}

static tv f_replace(fcall *f)
{
    BIND("old", "new", "count");
    if (a[0].t == V_UNSET || a[1].t == V_UNSET)
        tpl_rt_fail(f->rt, "TypeError: replace() needs old and new");
    tv s = tv_to_str(f->rt, f->val);
    return tpl_str_replace(f->rt, s, tv_to_str(f->rt, a[0]), tv_to_str(f->rt, a[1]), want_int(f->rt, a[2], -1, "count"));
}

static tv f_batch(fcall *f)
{
    BIND("linecount", "fill_with");
    int64_t n = want_int(f->rt, a[0], 0, "linecount");
    if (n <= 0)
        tpl_rt_fail(f->rt, "ValueError: batch: linecount must be positive");
    tlist *l = tpl_iterate(f->rt, f->val), *out = tl_new(f->rt->ar, 0), *cur = NULL;
    for (size_t i = 0; i < l->n; i++) {
        tpl_count_iteration(f->rt);
        if (!cur || (int64_t)cur->n == n) {
            cur = tl_new(f->rt->ar, 0);
            tl_push(f->rt->ar, out, tv_list(cur));
        }
        tl_push(f->rt->ar, cur, l->items[i]);
    }
    if (cur && a[1].t != V_UNSET && a[1].t != V_NONE)
        while ((int64_t)cur->n < n)
            tl_push(f->rt->ar, cur, a[1]);
    return tv_list(out);
}

static tv f_wordcount(fcall *f)
{
    tv s = f_str(f);
    int64_t words = 0;
    int in = 0;
    for (size_t i = 0; i < s.u.s.n;) {
        uint32_t cp;
        i += kv_utf8_next(s.u.s.p + i, s.u.s.n - i, &cp);
        utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
        int w = cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
                (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
        if (w && !in)
            words++;
        in = w;
    }
    return tv_int(words);
}

static tv pad_to(tpl_rt *rt, tv s, int64_t left, int64_t right)
{
    if (left + right > (int64_t)rt->lim->max_string)
        tpl_rt_fail_code(rt, KV_ERANGE, "string size limit of %zu bytes exceeded", rt->lim->max_string);
    tpl_out o;
    tpl_out_init(&o, rt->lim->max_string);
    for (int64_t i = 0; i < left; i++)
        tpl_out_append(rt, &o, " ", 1);
    tpl_out_append(rt, &o, s.u.s.p, s.u.s.n);
    for (int64_t i = 0; i < right; i++)
        tpl_out_append(rt, &o, " ", 1);
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}

static tv f_center(fcall *f)
{
    BIND("width");
    tv s = tv_to_str(f->rt, f->val);
    int64_t width = want_int(f->rt, a[0], 80, "width"), len = tpl_len(f->rt, s);
    if (width <= len)
        return s;
    int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
    return pad_to(f->rt, s, left, pad - left);
}

static tv f_truncate(fcall *f)
{
    BIND("length", "killwords", "end", "leeway");
    tpl_rt *rt = f->rt;
    tv s = tv_to_str(rt, f->val);
    int64_t length = want_int(rt, a[0], 255, "length"), leeway = want_int(rt, a[3], 5, "leeway");
    int killwords = a[1].t != V_UNSET && tv_truthy(a[1]);
    tv end = a[2].t == V_UNSET ? tv_cstr("...") : tv_to_str(rt, a[2]);
    int64_t end_len = tpl_len(rt, end);
    if (length < end_len)
        tpl_rt_fail(rt, "AssertionError: expected length >= %lld, got %lld", (long long)end_len, (long long)length);
    if (leeway < 0)
        tpl_rt_fail(rt, "AssertionError: expected leeway >= 0, got %lld", (long long)leeway);
    if (tpl_len(rt, s) <= length + leeway)
        return s;
    tv head = tpl_slice(rt, s, tv_int(0), tv_int(length - end_len), tv_none());
    if (!killwords) {
        tlist *parts = tpl_str_split(rt, head, tv_str(" ", 1), 1, 1);
        head = parts->items[0];
    }
    return tpl_str_concat(rt, head, end);
}

static tv f_attr(fcall *f)
{
    BIND("name");
    /* Python's getattr only: unlike obj.name, no fallback to obj['name'] */
    tv n = want_str(f->rt, a[0], "name");
    if (f->val.t == V_DICT) {
        int found;
        tv m = tpl_method_lookup(f->rt, f->val, n.u.s.p, n.u.s.n, &found);
        return found ? m : tv_undef_hint("no such attribute");
    }
    return tpl_getattr(f->rt, f->val, n.u.s.p, n.u.s.n);
}

/* printf-style formatting, for %s, %d, %i, %r and %% only. */
static tv f_format(fcall *f)
{
    tpl_rt *rt = f->rt;
    tv s = tv_to_str(rt, f->val);
    if (f->nkw)
        tpl_rt_fail(rt, "format: keyword arguments are not supported");
    tpl_out o;
    tpl_out_init(&o, rt->lim->max_string);
    size_t next = 0;
    for (size_t i = 0; i < s.u.s.n; i++) {
        char c = s.u.s.p[i];
        if (c != '%') {
            tpl_out_append(rt, &o, &c, 1);
            continue;
        }
        char spec = i + 1 < s.u.s.n ? s.u.s.p[++i] : 0;
        if (spec == '%') {
            tpl_out_append(rt, &o, "%", 1);
            continue;
        }
        if (spec != 's' && spec != 'd' && spec != 'i' && spec != 'r')
            tpl_rt_fail(rt, "format: only %%s, %%d, %%r and %%%% are supported");
        if (next >= f->nargs)
            tpl_rt_fail(rt, "TypeError: not enough arguments for format string");
        tv arg = f->args[next++];
        if (spec == 'r')
            tv_write_repr(rt, &o, arg);
        else if (spec == 's')
            tv_write_str(rt, &o, arg);
        else if (tv_is_number(arg))
            tv_write_str(rt, &o, arg.t == V_FLOAT ? tv_int((int64_t)arg.u.f) : tv_int(arg.t == V_INT ? arg.u.i : arg.u.b));
        else
            tpl_rt_fail(rt, "TypeError: %%d format: a real number is required, not %s", tv_type_name(arg.t));
    }
    if (next < f->nargs)
        tpl_rt_fail(rt, "TypeError: not all arguments converted during string formatting");
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}

static const struct {
    const char *name;
    tv (*fn)(fcall *);
} filters[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"forceescape", f_escape}, {"format", f_format},
    {"indent", f_indent}, {"int", f_int}, {"items", f_items}, {"join", f_join}, {"last", f_last},
    {"length", f_length}, {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min},
    {"reject", f_reject}, {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
    {"round", f_round}, {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort},
    {"string", f_string}, {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim},
    {"truncate", f_truncate}, {"unique", f_unique}, {"upper", f_upper}, {"wordcount", f_wordcount},
};

int tpl_has_filter(const char *name)
{
    for (size_t i = 0; i < sizeof filters / sizeof *filters; i++)
        if (!strcmp(filters[i].name, name))
            return 1;
    return 0;
}

tv tpl_filter(tpl_rt *rt, tscope *sc, const char *name, tv val, tv *args, size_t nargs, const char **kwnames,
              tv *kwvals, size_t nkw)
{
    for (size_t i = 0; i < sizeof filters / sizeof *filters; i++)
        if (!strcmp(filters[i].name, name)) {
            fcall f = {rt, sc, name, val, args, nargs, kwnames, kwvals, nkw};
            return filters[i].fn(&f);
        }
    tpl_rt_fail(rt, "no filter named '%s'", name);
}
