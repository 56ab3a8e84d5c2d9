/* The evaluator: statements write to rt->out, expressions yield values. Scoping follows
 * jinja2: each loop iteration, macro call, with block and generation block gets a scope of
 * its own (a set inside never shows outside); if blocks do not. */
#include <stdio.h>
#include <string.h>

#include "tpl_internal.h"

enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

#define AT(e) (rt->fc->line = (e)->line, rt->fc->col = (e)->col)

tscope *tpl_scope_new(tpl_rt *rt, tscope *parent)
{
    tscope *sc = tpl_alloc(rt->ar, sizeof *sc);
    sc->parent = parent;
    return sc;
}

void tpl_scope_set(tpl_rt *rt, tscope *sc, const char *name, tv v)
{
    td_set(rt->ar, &sc->vars, tv_cstr(name), v);
}

static tv lookup(tscope *sc, const char *name)
{
    size_t n = strlen(name);
    for (; sc; sc = sc->parent) {
        tv *v = td_get_str(&sc->vars, name, n);
        if (v)
            return *v;
    }
    return tv_undef_name(name);
}

static tv capture_begin(tpl_rt *rt, tpl_out *buf, tpl_out **saved)
{
    tpl_out_init(buf, rt->lim->max_string);
    *saved = rt->out;
    rt->out = buf;
    return tv_none();
}

/* ---- assignment ---- */

static void assign(tpl_rt *rt, tscope *sc, const tnode *target, tv v)
{
    AT(target);
    if (target->kind == E_NAME) {
        tpl_scope_set(rt, sc, target->name, v);
    } else if (target->kind == E_NSREF) {
        tv ns = lookup(sc, target->a->name);
        if (ns.t != V_NS)
            tpl_rt_fail(rt, "cannot assign attribute on non-namespace object");
        if (target->name[0] == '_')
            tpl_rt_fail(rt, "SecurityError: Chat templates cannot store underscore-prefixed attributes on a namespace, "
                            "but got '%s'. Please rename the attribute.", target->name);
        td_set(rt->ar, ns.u.d, tv_cstr(target->name), v);
    } else { /* E_TUPLE: unpack */
        tlist *items = tpl_iterate(rt, v);
        if (items->n != target->items.n)
            tpl_rt_fail(rt, items->n > target->items.n ? "ValueError: too many values to unpack (expected %zu)"
                                                        : "ValueError: not enough values to unpack (expected %zu, got %zu)",
                        target->items.n, items->n);
        for (size_t i = 0; i < items->n; i++)
            assign(rt, sc, target->items.v[i], items->items[i]);
    }
}

/* ---- calls ---- */

static tv call_macro(tpl_rt *rt, tmacro *m, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw,
                     tv caller)
{
    const tnode *def = m->node;
    size_t np = def->items.n, nd = def->items2.n;
    if (nargs > np)
        tpl_rt_fail(rt, "TypeError: macro '%s' takes not more than %zu argument(s)", m->name, np);
    if (++rt->depth > rt->lim->max_depth)
        tpl_rt_fail_code(rt, KV_ERANGE, "call depth limit of %d exceeded", rt->lim->max_depth);
    tscope *sc = tpl_scope_new(rt, m->closure);
    for (size_t k = 0; k < nkw; k++) {
        if (!strcmp(kwnames[k], "caller") && def->kind == S_MACRO) {
            caller = kwvals[k];
            continue;
        }
        size_t i;
        for (i = 0; i < np; i++)
            if (!strcmp(def->items.v[i]->name, kwnames[k]))
                break;
        if (i == np)
            tpl_rt_fail(rt, "TypeError: macro '%s' takes no keyword argument '%s'", m->name, kwnames[k]);
        if (i < nargs)
            tpl_rt_fail(rt, "TypeError: macro '%s' got multiple values for argument '%s'", m->name, kwnames[k]);
    }
    for (size_t i = 0; i < np; i++) {
        const char *pname = def->items.v[i]->name;
        tv v;
        int have = 0;
        if (i < nargs) {
            v = args[i];
            have = 1;
        }
        for (size_t k = 0; k < nkw && !have; k++)
            if (!strcmp(kwnames[k], pname)) {
                v = kwvals[k];
                have = 1;
            }
        if (!have) {
            if (i + nd >= np) {
                v = tpl_eval(rt, sc, def->items2.v[i + nd - np]);
            } else {
                char *hint = tpl_alloc(rt->ar, strlen(pname) + 40);
                sprintf(hint, "parameter '%s' was not provided", pname);
                v = tv_undef_hint(hint);
            }
        }
        tpl_scope_set(rt, sc, pname, v);
    }
    if (caller.t != V_UNDEF)
        tpl_scope_set(rt, sc, "caller", caller);
    tpl_out buf, *saved;
    capture_begin(rt, &buf, &saved);
    int flow = FLOW_NORMAL;
    tpl_exec_body(rt, sc, &def->body, &flow);
    rt->out = saved;
    rt->depth--;
    return tpl_out_str(&buf);
}

tv tpl_call(tpl_rt *rt, tscope *sc, tv fn, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw)
{
    switch (fn.t) {
    case V_MACRO: return call_macro(rt, fn.u.m, args, nargs, kwnames, kwvals, nkw, fn.u.m->caller);
    case V_FUNC: return tpl_global_call(rt, sc, fn.u.s.p, args, nargs, kwnames, kwvals, nkw);
    case V_METHOD: return tpl_method_call(rt, fn.u.bm, args, nargs, kwnames, kwvals, nkw);
    case V_UNDEF: tpl_undef_fail(rt, fn);
    default: tpl_rt_fail(rt, "TypeError: '%s' object is not callable", tv_type_name(fn.t));
    }
}

/* ---- expressions ---- */

typedef struct evargs {
    tv *args, *kwvals;
    size_t nargs, nkw;
} evargs;

static evargs eval_args(tpl_rt *rt, tscope *sc, const tnode *e)
{
    evargs a = {0};
    a.nargs = e->items.n;
    a.nkw = e->items2.n;
    if (a.nargs) {
        a.args = tpl_alloc(rt->ar, a.nargs * sizeof(tv));
        for (size_t i = 0; i < a.nargs; i++)
            a.args[i] = tpl_eval(rt, sc, e->items.v[i]);
    }
    if (a.nkw) {
        a.kwvals = tpl_alloc(rt->ar, a.nkw * sizeof(tv));
        for (size_t i = 0; i < a.nkw; i++)
            a.kwvals[i] = tpl_eval(rt, sc, e->items2.v[i]);
    }
    return a;
}

/* A filter chain; the innermost operand is `body` when the chain belongs to a block. */
static tv eval_filter(tpl_rt *rt, tscope *sc, const tnode *f, tv body)
{
    tv val = !f->a ? body : f->a->kind == E_FILTER ? eval_filter(rt, sc, f->a, body) : tpl_eval(rt, sc, f->a);
    evargs a = eval_args(rt, sc, f);
    AT(f);
    return tpl_filter(rt, sc, f->name, val, a.args, a.nargs, f->kwnames, a.kwvals, a.nkw);
}

tv tpl_eval(tpl_rt *rt, tscope *sc, const tnode *e)
{
    AT(e);
    switch (e->kind) {
    case E_CONST: return e->value;
    case E_NAME: return lookup(sc, e->name);
    case E_LIST:
    case E_TUPLE: {
        tlist *l = tl_new(rt->ar, e->items.n);
        for (size_t i = 0; i < e->items.n; i++)
            tl_push(rt->ar, l, tpl_eval(rt, sc, e->items.v[i]));
        return e->kind == E_LIST ? tv_list(l) : tv_tuple(l);
    }
    case E_DICT: {
        tdict *d = td_new(rt->ar);
        for (size_t i = 0; i < e->items.n; i++) {
            tv k = tpl_eval(rt, sc, e->items.v[i]), v = tpl_eval(rt, sc, e->items2.v[i]);
            AT(e->items.v[i]);
            if (k.t == V_LIST || k.t == V_DICT || k.t == V_NS)
                tpl_rt_fail(rt, "TypeError: unhashable type: '%s'", tv_type_name(k.t));
            td_set(rt->ar, d, k, v);
        }
        tv v = {.t = V_DICT};
        v.u.d = d;
        return v;
    }
    case E_GETATTR: {
        tv obj = tpl_eval(rt, sc, e->a);
        AT(e);
        return tpl_getattr(rt, obj, e->name, strlen(e->name));
    }
    case E_GETITEM: {
        tv obj = tpl_eval(rt, sc, e->a);
        if (e->b->kind == E_SLICE) {
            const tnode *s = e->b;
            tv start = s->a ? tpl_eval(rt, sc, s->a) : tv_none(), stop = s->b ? tpl_eval(rt, sc, s->b) : tv_none(),
               step = s->c ? tpl_eval(rt, sc, s->c) : tv_none();
            AT(e);
            return tpl_slice(rt, obj, start, stop, step);
        }
        tv key = tpl_eval(rt, sc, e->b);
        AT(e);
        return tpl_getitem(rt, obj, key);
    }
    case E_CALL: {
        tv fn = tpl_eval(rt, sc, e->a);
        evargs a = eval_args(rt, sc, e);
        AT(e);
        return tpl_call(rt, sc, fn, a.args, a.nargs, e->kwnames, a.kwvals, a.nkw);
    }
    case E_FILTER: return eval_filter(rt, sc, e, tv_undef_name(""));
    case E_TEST: {
        tv val = tpl_eval(rt, sc, e->a);
        evargs a = eval_args(rt, sc, e);
        AT(e);
        int r = tpl_test(rt, sc, e->name, val, a.args, a.nargs);
        return tv_bool(e->negate ? !r : r);
    }
    case E_NEG:
    case E_POS: {
        tv v = tpl_eval(rt, sc, e->a);
        AT(e);
        if (v.t == V_UNDEF)
            tpl_undef_fail(rt, v);
        if (v.t == V_FLOAT)
            return tv_float(e->kind == E_NEG ? -v.u.f : v.u.f);
        if (v.t == V_INT || v.t == V_BOOL) {
            int64_t i = v.t == V_INT ? v.u.i : v.u.b;
            if (e->kind == E_NEG && i == INT64_MIN)
                tpl_rt_fail_code(rt, KV_ERANGE, "integer overflow");
            return tv_int(e->kind == E_NEG ? -i : i);
        }
        tpl_rt_fail(rt, "TypeError: bad operand type for unary %c: '%s'", e->kind == E_NEG ? '-' : '+',
                    tv_type_name(v.t));
    }
    case E_NOT: return tv_bool(!tv_truthy(tpl_eval(rt, sc, e->a)));
    case E_AND: {
        tv l = tpl_eval(rt, sc, e->a);
        return tv_truthy(l) ? tpl_eval(rt, sc, e->b) : l;
    }
    case E_OR: {
        tv l = tpl_eval(rt, sc, e->a);
        return tv_truthy(l) ? l : tpl_eval(rt, sc, e->b);
    }
    case E_BINOP: {
        tv l = tpl_eval(rt, sc, e->a), r = tpl_eval(rt, sc, e->b);
        AT(e);
        return tpl_binop(rt, e->op, l, r);
    }
    case E_COMPARE: {
        tv l = tpl_eval(rt, sc, e->a);
        for (size_t i = 0; i < e->items.n; i++) {
            tv r = tpl_eval(rt, sc, e->items.v[i]);
            AT(e->items.v[i]);
            int op = e->ops[i], ok;
            if (op == OP_IN || op == OP_NOTIN)
                ok = tpl_contains(rt, r, l) == (op == OP_IN);
            else
                ok = tpl_compare(rt, op, l, r);
            if (!ok)
                return tv_bool(0);
            l = r;
        }
        return tv_bool(1);
    }
    case E_COND: {
        if (tv_truthy(tpl_eval(rt, sc, e->a)))
            return tpl_eval(rt, sc, e->b);
        if (e->c)
            return tpl_eval(rt, sc, e->c);
        char *hint = tpl_alloc(rt->ar, 120);
        snprintf(hint, 120, "the inline if-expression on line %d evaluated to false and no else section was defined.",
                 e->line);
        return tv_undef_hint(hint);
    }
    default: tpl_rt_fail(rt, "internal error: node kind %d is no expression", e->kind);
    }
}

/* ---- statements ---- */

static void exec_for(tpl_rt *rt, tscope *sc, const tnode *s)
{
    tv seq = tpl_eval(rt, sc, s->b);
    AT(s);
    tlist *items = tpl_iterate(rt, seq);
    if (s->c) { /* {% for x in y if cond %}: the loop sees only the items that pass */
        tlist *kept = tl_new(rt->ar, items->n);
        for (size_t i = 0; i < items->n; i++) {
            tpl_count_iteration(rt);
            tscope *probe = tpl_scope_new(rt, sc);
            assign(rt, probe, s->a, items->items[i]);
            if (tv_truthy(tpl_eval(rt, probe, s->c)))
                tl_push(rt->ar, kept, items->items[i]);
        }
        items = kept;
    }
    tloop *loop = tpl_alloc(rt->ar, sizeof *loop);
    loop->items = items;
    tv loopv = {.t = V_LOOP};
    loopv.u.loop = loop;
    /* One scope serves every iteration, emptied each time: what an iteration sets is gone in
     * the next, as in jinja2, and a long loop does not allocate per iteration. */
    tscope *it = tpl_scope_new(rt, sc);
    for (size_t i = 0; i < items->n; i++) {
        AT(s);
        tpl_count_iteration(rt);
        loop->index0 = i;
        it->vars.n = 0;
        assign(rt, it, s->a, items->items[i]);
        tpl_scope_set(rt, it, "loop", loopv);
        int flow = FLOW_NORMAL;
        tpl_exec_body(rt, it, &s->body, &flow);
        if (flow == FLOW_BREAK)
            break;
    }
    if (!items->n && s->else_body.n) {
        int flow = FLOW_NORMAL;
        tpl_exec_body(rt, tpl_scope_new(rt, sc), &s->else_body, &flow);
    }
}

static void exec_stmt(tpl_rt *rt, tscope *sc, const tnode *s, int *flow)
{
    AT(s);
    switch (s->kind) {
    case S_DATA: tpl_out_append(rt, rt->out, s->value.u.s.p, s->value.u.s.n); break;
    case S_PRINT: {
        tv v = tpl_eval(rt, sc, s->a);
        AT(s);
        tv_write_str(rt, rt->out, v);
        break;
    }
    case S_IF:
        if (tv_truthy(tpl_eval(rt, sc, s->a)))
            tpl_exec_body(rt, sc, &s->body, flow);
        else
            tpl_exec_body(rt, sc, &s->else_body, flow);
        break;
    case S_FOR: exec_for(rt, sc, s); break;
    case S_SET: assign(rt, sc, s->a, tpl_eval(rt, sc, s->b)); break;
    case S_SETBLOCK: {
        tpl_out buf, *saved;
        capture_begin(rt, &buf, &saved);
        int inner = FLOW_NORMAL;
        tpl_exec_body(rt, sc, &s->body, &inner);
        rt->out = saved;
        tv v = tpl_out_str(&buf);
        if (s->c)
            v = eval_filter(rt, sc, s->c, v);
        assign(rt, sc, s->a, v);
        break;
    }
    case S_MACRO: {
        tmacro *m = tpl_alloc(rt->ar, sizeof *m);
        m->node = s;
        m->closure = sc;
        m->name = s->name;
        m->caller = tv_undef_name("caller");
        tv v = {.t = V_MACRO};
        v.u.m = m;
        tpl_scope_set(rt, sc, s->name, v);
        break;
    }
    case S_CALLBLOCK: {
        tmacro *c = tpl_alloc(rt->ar, sizeof *c);
        c->node = s;
        c->closure = sc;
        c->name = "caller";
        c->caller = tv_undef_name("caller");
        tv callerv = {.t = V_MACRO};
        callerv.u.m = c;
        tv fn = tpl_eval(rt, sc, s->a->a);
        evargs a = eval_args(rt, sc, s->a);
        AT(s);
        if (fn.t != V_MACRO)
            tpl_rt_fail(rt, "TypeError: a call block needs a macro, not '%s'", tv_type_name(fn.t));
        tv r = call_macro(rt, fn.u.m, a.args, a.nargs, s->a->kwnames, a.kwvals, a.nkw, callerv);
        tv_write_str(rt, rt->out, r);
        break;
    }
    case S_FILTERBLOCK: {
        tpl_out buf, *saved;
        capture_begin(rt, &buf, &saved);
        int inner = FLOW_NORMAL;
        tpl_exec_body(rt, sc, &s->body, &inner);
        rt->out = saved;
        tv_write_str(rt, rt->out, eval_filter(rt, sc, s->c, tpl_out_str(&buf)));
        break;
    }
    case S_BREAK: *flow = FLOW_BREAK; break;
    case S_CONTINUE: *flow = FLOW_CONTINUE; break;
    case S_GENERATION: {
        int inner = FLOW_NORMAL;
        tpl_exec_body(rt, tpl_scope_new(rt, sc), &s->body, &inner);
        break;
    }
    case S_WITH: {
        tscope *w = tpl_scope_new(rt, sc);
        for (size_t i = 0; i < s->items.n; i++)
            assign(rt, w, s->items.v[i], tpl_eval(rt, sc, s->items2.v[i]));
        tpl_exec_body(rt, w, &s->body, flow);
        break;
    }
    default: tpl_rt_fail(rt, "internal error: node kind %d is no statement", s->kind);
    }
}

void tpl_exec_body(tpl_rt *rt, tscope *sc, const tnode_list *body, int *flow)
{
    for (size_t i = 0; i < body->n && *flow == FLOW_NORMAL; i++)
        exec_stmt(rt, sc, body->v[i], flow);
}
