/* The tests of `x is NAME(args)`: jinja2 3.1's list, with Python's isinstance semantics
 * (True is a number; an undefined is iterable, a sequence and callable, as jinja2's is). */
#include <stdio.h>
#include <string.h>

#include "tpl_internal.h"

static const char *const tests[] = {
    "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false",
    "mapping", "iterable", "sequence", "callable", "even", "odd", "divisibleby", "in", "eq", "equalto",
    "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "lower",
    "upper", "sameas", "escaped", "filter", "test", NULL,
};

int tpl_has_test(const char *name)
{
    for (const char *const *t = tests; *t; t++)
        if (!strcmp(*t, name))
            return 1;
    return 0;
}

static int is(const char *a, const char *b) { return !strcmp(a, b); }

static tv arg(tpl_rt *rt, const char *name, tv *args, size_t nargs)
{
    if (nargs != 1)
        tpl_rt_fail(rt, "TypeError: test '%s' takes exactly one argument (%zu given)", name, nargs);
    return args[0];
}

static int str_case_is(tpl_rt *rt, tv v, int upper)
{
    tv s = tv_to_str(rt, v), lo = tpl_str_lower(rt, s), up = tpl_str_upper(rt, s);
    int cased = !tv_eq(lo, up); /* some character has case */
    return cased && tv_eq(s, upper ? up : lo);
}

int tpl_test(tpl_rt *rt, tscope *sc, const char *name, tv v, tv *args, size_t nargs)
{
    static const char *const one_arg[] = {"divisibleby", "in", "sameas", "eq", "equalto", "==", "ne", "!=", "lt",
                                          "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", NULL};
    (void)sc;
    int takes_arg = 0;
    for (const char *const *t = one_arg; *t; t++)
        takes_arg |= is(*t, name);
    if (!takes_arg && nargs)
        tpl_rt_fail(rt, "TypeError: test '%s' takes no arguments", name);
    if (is(name, "defined"))
        return v.t != V_UNDEF;
    if (is(name, "undefined"))
        return v.t == V_UNDEF;
    if (is(name, "none"))
        return v.t == V_NONE;
    if (is(name, "string"))
        return v.t == V_STR;
    if (is(name, "number"))
        return tv_is_number(v);
    if (is(name, "integer"))
        return v.t == V_INT;
    if (is(name, "float"))
        return v.t == V_FLOAT;
    if (is(name, "boolean"))
        return v.t == V_BOOL;
    if (is(name, "true"))
        return v.t == V_BOOL && v.u.b;
    if (is(name, "false"))
        return v.t == V_BOOL && !v.u.b;
    if (is(name, "mapping"))
        return v.t == V_DICT;
    if (is(name, "iterable"))
        return v.t == V_STR || tv_is_seq(v) || v.t == V_DICT || v.t == V_UNDEF;
    if (is(name, "sequence"))
        return v.t == V_STR || tv_is_seq(v) || v.t == V_DICT || v.t == V_UNDEF;
    if (is(name, "callable"))
        return v.t == V_MACRO || v.t == V_FUNC || v.t == V_METHOD || v.t == V_UNDEF;
    if (is(name, "even") || is(name, "odd")) {
        tv m = tpl_binop(rt, T_MOD, v, tv_int(2));
        return tv_eq(m, tv_int(0)) == is(name, "even");
    }
    if (is(name, "divisibleby"))
        return tv_eq(tpl_binop(rt, T_MOD, v, arg(rt, name, args, nargs)), tv_int(0));
    if (is(name, "in"))
        return tpl_contains(rt, arg(rt, name, args, nargs), v);
    if (is(name, "eq") || is(name, "equalto") || is(name, "=="))
        return tv_eq(v, arg(rt, name, args, nargs));
    if (is(name, "ne") || is(name, "!="))
        return !tv_eq(v, arg(rt, name, args, nargs));
    if (is(name, "lt") || is(name, "lessthan") || is(name, "<"))
        return tpl_compare(rt, T_LT, v, arg(rt, name, args, nargs));
    if (is(name, "le") || is(name, "<="))
        return tpl_compare(rt, T_LTEQ, v, arg(rt, name, args, nargs));
    if (is(name, "gt") || is(name, "greaterthan") || is(name, ">"))
        return tpl_compare(rt, T_GT, v, arg(rt, name, args, nargs));
    if (is(name, "ge") || is(name, ">="))
        return tpl_compare(rt, T_GTEQ, v, arg(rt, name, args, nargs));
    if (is(name, "lower"))
        return str_case_is(rt, v, 0);
    if (is(name, "upper"))
        return str_case_is(rt, v, 1);
    if (is(name, "sameas")) {
        tv o = arg(rt, name, args, nargs);
        if (v.t != o.t)
            return 0;
        if (v.t == V_NONE || v.t == V_BOOL || v.t == V_UNDEF)
            return v.t != V_BOOL || v.u.b == o.u.b;
        if (v.t == V_INT) /* CPython caches the small ints */
            return v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256;
        if (v.t == V_STR) /* literals are interned */
            return tv_eq(v, o);
        return tv_is_seq(v) || v.t == V_DICT || v.t == V_NS ? v.u.l == o.u.l : tv_eq(v, o);
    }
    if (is(name, "escaped"))
        return v.t == V_STR && v.safe;
    if (is(name, "filter"))
        return v.t == V_STR && tpl_has_filter(tpl_strdup(rt->ar, v.u.s.p, v.u.s.n));
    if (is(name, "test"))
        return v.t == V_STR && tpl_has_test(tpl_strdup(rt->ar, v.u.s.p, v.u.s.n));
    tpl_rt_fail(rt, "no test named '%s'", name);
}
