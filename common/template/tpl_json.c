/* JSON in (messages, tools: json_value trees become values) and out (the tojson filter as
 * transformers defines it: json.dumps(x, ensure_ascii=False, indent, separators, sort_keys)). */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "kv_textbuf.h"
#include "tpl_internal.h"

#define MAX_NESTING 512

/* The parser keeps numbers as doubles: an integral one within 2^53 is taken for a Python int
 * (so 3 prints "3"), anything else for a float. A literal written "1.0" therefore reads as 1. */
tv tpl_from_json(tpl_rt *rt, const json_value *j)
{
    switch (j->type) {
    case JSON_NULL: return tv_none();
    case JSON_BOOL: return tv_bool(j->u.boolean);
    case JSON_NUMBER: {
        double d = j->u.number;
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            return tv_int((int64_t)d);
        return tv_float(d);
    }
    case JSON_STRING: return tv_str(j->u.str.s, j->u.str.len);
    case JSON_ARRAY: {
        tlist *l = tl_new(rt->ar, j->u.arr.n);
        for (size_t i = 0; i < j->u.arr.n; i++)
            tl_push(rt->ar, l, tpl_from_json(rt, &j->u.arr.items[i]));
        return tv_list(l);
    }
    case JSON_OBJECT: {
        tdict *d = td_new(rt->ar);
        for (size_t i = 0; i < j->u.obj.n; i++) {
            const json_member *m = &j->u.obj.members[i];
            td_set(rt->ar, d, tv_str(m->key, m->key_len), tpl_from_json(rt, &m->value));
        }
        tv v = {.t = V_DICT};
        v.u.d = d;
        return v;
    }
    }
    return tv_none();
}

typedef struct jw {
    tpl_rt *rt;
    tpl_out *o;
    tv indent; /* V_NONE, or the V_STR written per level */
    tv item_sep, key_sep;
    int sort_keys;
} jw;

static void put(jw *w, const char *s, size_t n) { tpl_out_append(w->rt, w->o, s, n); }

static void put_json_string(jw *w, const char *s, size_t n)
{
    kv_textbuf b;
    kv_textbuf_init(&b);
    kv_textbuf_json_string(&b, s, n);
    int failed = kv_textbuf_failed(&b);
    tv out = failed ? tv_none() : tv_str(tpl_strdup(w->rt->ar, b.data, b.len), b.len);
    kv_textbuf_free(&b);
    if (failed)
        tpl_rt_fail_code(w->rt, KV_ENOMEM, "out of memory");
    put(w, out.u.s.p, out.u.s.n);
}

static void newline_indent(jw *w, int level)
{
    put(w, "\n", 1);
    for (int i = 0; i < level; i++)
        put(w, w->indent.u.s.p, w->indent.u.s.n);
}

static void write_float(jw *w, double d)
{
    char buf[40];
    size_t n;
    if (isnan(d))
        n = (size_t)snprintf(buf, sizeof buf, "NaN");
    else if (isinf(d))
        n = (size_t)snprintf(buf, sizeof buf, d < 0 ? "-Infinity" : "Infinity");
    else
        n = tpl_py_float_repr(d, buf, sizeof buf);
    put(w, buf, n);
}

/* A dict key as json.dumps turns it into a string. */
static tv key_string(jw *w, tv k)
{
    char buf[40];
    switch (k.t) {
    case V_STR: return k;
    case V_BOOL: return tv_cstr(k.u.b ? "true" : "false");
    case V_NONE: return tv_cstr("null");
    case V_INT: snprintf(buf, sizeof buf, "%lld", (long long)k.u.i); break;
    case V_FLOAT:
        if (isnan(k.u.f) || isinf(k.u.f))
            snprintf(buf, sizeof buf, "%s", isnan(k.u.f) ? "NaN" : k.u.f < 0 ? "-Infinity" : "Infinity");
        else
            tpl_py_float_repr(k.u.f, buf, sizeof buf);
        break;
    default:
        tpl_rt_fail(w->rt, "TypeError: keys must be str, int, float, bool or None, not %s", tv_type_name(k.t));
    }
    return tv_str(tpl_strdup(w->rt->ar, buf, strlen(buf)), strlen(buf));
}

static void write_value(jw *w, tv v, int level);

static void write_dict(jw *w, const tdict *d, int level)
{
    if (!d->n) {
        put(w, "{}", 2);
        return;
    }
    size_t *order = tpl_alloc(w->rt->ar, d->n * sizeof *order);
    for (size_t i = 0; i < d->n; i++)
        order[i] = i;
    if (w->sort_keys) /* insertion sort: stable, and dicts in templates are small */
        for (size_t i = 1; i < d->n; i++)
            for (size_t j = i; j > 0 && tpl_order(w->rt, d->keys[order[j - 1]], d->keys[order[j]]) > 0; j--) {
                size_t t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
    put(w, "{", 1);
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            put(w, w->item_sep.u.s.p, w->item_sep.u.s.n);
        if (w->indent.t == V_STR)
            newline_indent(w, level + 1);
        tv k = key_string(w, d->keys[order[i]]);
        put_json_string(w, k.u.s.p, k.u.s.n);
        put(w, w->key_sep.u.s.p, w->key_sep.u.s.n);
        write_value(w, d->vals[order[i]], level + 1);
    }
    if (w->indent.t == V_STR)
        newline_indent(w, level);
    put(w, "}", 1);
}

static void write_value(jw *w, tv v, int level)
{
    char buf[40];
    if (level > MAX_NESTING)
        tpl_rt_fail_code(w->rt, KV_ERANGE, "tojson: nested deeper than %d", MAX_NESTING);
    switch (v.t) {
    case V_NONE: put(w, "null", 4); return;
    case V_BOOL: put(w, v.u.b ? "true" : "false", v.u.b ? 4 : 5); return;
    case V_INT: put(w, buf, (size_t)snprintf(buf, sizeof buf, "%lld", (long long)v.u.i)); return;
    case V_FLOAT: write_float(w, v.u.f); return;
    case V_STR: put_json_string(w, v.u.s.p, v.u.s.n); return;
    case V_LIST:
    case V_TUPLE:
        if (!v.u.l->n) {
            put(w, "[]", 2);
            return;
        }
        put(w, "[", 1);
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                put(w, w->item_sep.u.s.p, w->item_sep.u.s.n);
            if (w->indent.t == V_STR)
                newline_indent(w, level + 1);
            write_value(w, v.u.l->items[i], level + 1);
        }
        if (w->indent.t == V_STR)
            newline_indent(w, level);
        put(w, "]", 1);
        return;
    case V_DICT: write_dict(w, v.u.d, level); return;
    default: tpl_rt_fail(w->rt, "TypeError: Object of type %s is not JSON serializable", tv_type_name(v.t));
    }
}

tv tpl_tojson(tpl_rt *rt, tv v, tv indent, tv separators, int sort_keys)
{
    tpl_out o;
    tpl_out_init(&o, rt->lim->max_string);
    jw w = {.rt = rt, .o = &o, .indent = tv_none(), .sort_keys = sort_keys};
    if (indent.t == V_INT || indent.t == V_BOOL) {
        int64_t n = indent.t == V_INT ? indent.u.i : indent.u.b;
        if (n > 1024)
            tpl_rt_fail_code(rt, KV_ERANGE, "tojson: indent %lld is too large", (long long)n);
        char *sp = tpl_alloc(rt->ar, n > 0 ? (size_t)n + 1 : 1);
        for (int64_t i = 0; i < n; i++)
            sp[i] = ' ';
        w.indent = tv_str(sp, n > 0 ? (size_t)n : 0);
    } else if (indent.t == V_STR) {
        w.indent = indent;
    } else if (indent.t != V_NONE && indent.t != V_UNDEF) {
        tpl_rt_fail(rt, "TypeError: tojson: indent must be an int or a string, not %s", tv_type_name(indent.t));
    }
    w.item_sep = tv_cstr(w.indent.t == V_STR ? "," : ", ");
    w.key_sep = tv_cstr(": ");
    if (separators.t != V_NONE && separators.t != V_UNDEF) {
        if (!tv_is_seq(separators) || separators.u.l->n != 2 || separators.u.l->items[0].t != V_STR ||
            separators.u.l->items[1].t != V_STR)
            tpl_rt_fail(rt, "TypeError: tojson: separators must be a pair of strings");
        w.item_sep = separators.u.l->items[0];
        w.key_sep = separators.u.l->items[1];
    }
    write_value(&w, v, 0);
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}
