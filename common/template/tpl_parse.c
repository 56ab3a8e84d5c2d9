/* The parser: jinja2's parser.py, function for function (parse_tuple, parse_condexpr, ...
 * parse_primary), so precedence and the odd corners (left-associative **, "-x|f" filtering
 * the negation, tests taking one bare argument) come out the same. Unknown filters and tests
 * are refused here, as jinja2 refuses them when it compiles. */
#include <stdio.h>
#include <string.h>

#include "tpl_internal.h"

typedef struct parser {
    tpl_arena *a;
    tpl_fail_ctx *fc;
    const tok *t;
    size_t n, i;
    int depth, max_depth;
    int loops; /* for bodies around the statement being parsed (a macro body starts at 0) */
} parser;

static const tok *cur(parser *P) { return &P->t[P->i]; }
static const tok *peek(parser *P) { return &P->t[P->i + 1 < P->n ? P->i + 1 : P->i]; }
static const tok *advance(parser *P)
{
    const tok *k = cur(P);
    if (P->i + 1 < P->n)
        P->i++;
    return k;
}

static int is_name(const tok *k, const char *s)
{
    return k->type == T_NAME && k->n == strlen(s) && !memcmp(k->p, s, k->n);
}

static const char *describe(const tok *k, char *buf, size_t cap)
{
    static const char *const names[] = {
        [T_EOF] = "end of template", [T_DATA] = "template data", [T_VAR_BEGIN] = "begin of print statement",
        [T_VAR_END] = "end of print statement", [T_BLOCK_BEGIN] = "begin of statement block",
        [T_BLOCK_END] = "end of statement block", [T_STRING] = "string", [T_INT] = "integer", [T_FLOAT] = "float",
        [T_ADD] = "+", [T_SUB] = "-", [T_DIV] = "/", [T_FLOORDIV] = "//", [T_MUL] = "*", [T_MOD] = "%",
        [T_POW] = "**", [T_TILDE] = "~", [T_LBRACKET] = "[", [T_RBRACKET] = "]", [T_LPAREN] = "(",
        [T_RPAREN] = ")", [T_LBRACE] = "{", [T_RBRACE] = "}", [T_EQ] = "==", [T_NE] = "!=", [T_GT] = ">",
        [T_GTEQ] = ">=", [T_LT] = "<", [T_LTEQ] = "<=", [T_ASSIGN] = "=", [T_DOT] = ".", [T_COLON] = ":",
        [T_PIPE] = "|", [T_COMMA] = ",", [T_SEMICOLON] = ";",
    };
    if (k->type == T_NAME)
        snprintf(buf, cap, "%.*s", (int)(k->n > 60 ? 60 : k->n), k->p);
    else
        snprintf(buf, cap, "%s", names[k->type]);
    return buf;
}

_Noreturn static void fail_tok(parser *P, const tok *k, const char *fmt, const char *arg)
{
    tpl_fail_at(P->fc, KV_EFORMAT, k->line, k->col, fmt, arg);
}

_Noreturn static void unexpected(parser *P, const tok *k)
{
    char d[80];
    fail_tok(P, k, "unexpected '%s'", describe(k, d, sizeof d));
}

static const tok *expect(parser *P, int type)
{
    if (cur(P)->type != type) {
        char want[40], got[80], msg[160];
        tok w = {.type = (uint8_t)type};
        snprintf(msg, sizeof msg, "expected '%s', got '%s'", describe(&w, want, sizeof want),
                 describe(cur(P), got, sizeof got));
        fail_tok(P, cur(P), "%s", msg);
    }
    return advance(P);
}

static void expect_name(parser *P, const char *name)
{
    if (!is_name(cur(P), name)) {
        char got[80], msg[160];
        snprintf(msg, sizeof msg, "expected '%s', got '%s'", name, describe(cur(P), got, sizeof got));
        fail_tok(P, cur(P), "%s", msg);
    }
    advance(P);
}

static void enter(parser *P)
{
    if (++P->depth > P->max_depth)
        tpl_fail_at(P->fc, KV_ERANGE, cur(P)->line, cur(P)->col, "nesting deeper than %d", P->max_depth);
}

static tnode *node(parser *P, int kind, const tok *at)
{
    tnode *n = tpl_alloc(P->a, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

static void push(parser *P, tnode_list *l, tnode *n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        tnode **v = tpl_alloc(P->a, cap * sizeof *v);
        if (l->n)
            memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = n;
}

static const char *tok_name(parser *P, const tok *k) { return tpl_strdup(P->a, k->p, k->n); }

static tnode *parse_expression(parser *P, int with_condexpr);
static tnode *parse_tuple(parser *P, int simplified, int with_condexpr, const char *extra_end, int explicit_parens,
                          int with_namespace);
static tnode *parse_unary(parser *P, int with_filter);
static tnode *parse_primary(parser *P, int with_namespace);
static tnode *parse_postfix(parser *P, tnode *n);

/* (args, name=value, ...) into n->items, n->items2 and n->kwnames */
static void parse_call_args(parser *P, tnode *n)
{
    const tok *open = expect(P, T_LPAREN);
    int require_comma = 0;
    size_t nkw_cap = 0;
    while (cur(P)->type != T_RPAREN) {
        if (require_comma) {
            expect(P, T_COMMA);
            if (cur(P)->type == T_RPAREN)
                break;
        }
        if (cur(P)->type == T_MUL || cur(P)->type == T_POW)
            fail_tok(P, cur(P), "%s", "*args and **kwargs in calls are not supported");
        if (cur(P)->type == T_NAME && peek(P)->type == T_ASSIGN) {
            const char *key = tok_name(P, cur(P));
            advance(P);
            advance(P);
            push(P, &n->items2, parse_expression(P, 1));
            if (n->items2.n > nkw_cap) {
                size_t cap = nkw_cap ? nkw_cap * 2 : 4;
                const char **names = tpl_alloc(P->a, cap * sizeof *names);
                if (nkw_cap)
                    memcpy(names, n->kwnames, nkw_cap * sizeof *names);
                n->kwnames = names;
                nkw_cap = cap;
            }
            n->kwnames[n->items2.n - 1] = key;
        } else {
            if (n->items2.n)
                fail_tok(P, open, "%s", "invalid syntax for function call expression");
            push(P, &n->items, parse_expression(P, 1));
        }
        require_comma = 1;
    }
    expect(P, T_RPAREN);
}

static tnode *parse_filter(parser *P, tnode *operand, int start_inline)
{
    while (cur(P)->type == T_PIPE || start_inline) {
        if (!start_inline)
            advance(P);
        const tok *name = expect(P, T_NAME);
        tnode *f = node(P, E_FILTER, name);
        f->name = tok_name(P, name);
        if (cur(P)->type == T_DOT)
            fail_tok(P, cur(P), "%s", "dotted filter names are not supported");
        if (!tpl_has_filter(f->name))
            fail_tok(P, name, "no filter named '%s'", f->name);
        if (cur(P)->type == T_LPAREN)
            parse_call_args(P, f);
        f->a = operand;
        operand = f;
        start_inline = 0;
    }
    return operand;
}

static tnode *parse_test(parser *P, tnode *operand)
{
    const tok *is = advance(P);
    tnode *t = node(P, E_TEST, is);
    if (is_name(cur(P), "not")) {
        advance(P);
        t->negate = 1;
    }
    const tok *name = expect(P, T_NAME);
    t->name = tok_name(P, name);
    if (cur(P)->type == T_DOT)
        fail_tok(P, cur(P), "%s", "dotted test names are not supported");
    if (!tpl_has_test(t->name))
        fail_tok(P, name, "no test named '%s'", t->name);
    int ty = cur(P)->type;
    if (ty == T_LPAREN) {
        parse_call_args(P, t);
        if (t->items2.n)
            fail_tok(P, name, "%s", "keyword arguments to tests are not supported");
    } else if ((ty == T_NAME || ty == T_STRING || ty == T_INT || ty == T_FLOAT || ty == T_LBRACKET ||
                ty == T_LBRACE) &&
               !is_name(cur(P), "else") && !is_name(cur(P), "or") && !is_name(cur(P), "and")) {
        if (is_name(cur(P), "is"))
            fail_tok(P, cur(P), "%s", "You cannot chain multiple tests with is");
        push(P, &t->items, parse_postfix(P, parse_primary(P, 0)));
    }
    t->a = operand;
    return t;
}

static tnode *parse_filter_expr(parser *P, tnode *n)
{
    for (;;) {
        if (cur(P)->type == T_PIPE) {
            n = parse_filter(P, n, 0);
        } else if (is_name(cur(P), "is")) {
            n = parse_test(P, n);
        } else if (cur(P)->type == T_LPAREN) {
            tnode *c = node(P, E_CALL, cur(P));
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else {
            return n;
        }
    }
}

static tnode *parse_subscribed(parser *P)
{
    tnode *args[3] = {0};
    const tok *at = cur(P);
    if (cur(P)->type == T_COLON) {
        advance(P);
    } else {
        tnode *e = parse_expression(P, 1);
        if (cur(P)->type != T_COLON)
            return e;
        advance(P);
        args[0] = e;
    }
    if (cur(P)->type != T_COLON && cur(P)->type != T_RBRACKET && cur(P)->type != T_COMMA)
        args[1] = parse_expression(P, 1);
    if (cur(P)->type == T_COLON) {
        advance(P);
        if (cur(P)->type != T_RBRACKET && cur(P)->type != T_COMMA)
            args[2] = parse_expression(P, 1);
    }
    tnode *s = node(P, E_SLICE, at);
    s->a = args[0];
    s->b = args[1];
    s->c = args[2];
    return s;
}

static tnode *parse_subscript(parser *P, tnode *obj)
{
    const tok *k = advance(P);
    if (k->type == T_DOT) {
        const tok *attr = advance(P);
        if (attr->type == T_NAME) {
            tnode *g = node(P, E_GETATTR, k);
            g->a = obj;
            g->name = tok_name(P, attr);
            return g;
        }
        if (attr->type != T_INT)
            fail_tok(P, attr, "%s", "expected name or number");
        tnode *g = node(P, E_GETITEM, k), *c = node(P, E_CONST, attr);
        c->value = tv_int(attr->i);
        g->a = obj;
        g->b = c;
        return g;
    }
    tnode *g = node(P, E_GETITEM, k);
    g->a = obj;
    tnode_list args = {0};
    while (cur(P)->type != T_RBRACKET) {
        if (args.n)
            expect(P, T_COMMA);
        push(P, &args, parse_subscribed(P));
    }
    expect(P, T_RBRACKET);
    if (args.n == 1) {
        g->b = args.v[0];
    } else {
        tnode *t = node(P, E_TUPLE, k);
        t->items = args;
        g->b = t;
    }
    return g;
}

static tnode *parse_postfix(parser *P, tnode *n)
{
    for (;;) {
        int ty = cur(P)->type;
        if (ty == T_DOT || ty == T_LBRACKET) {
            n = parse_subscript(P, n);
        } else if (ty == T_LPAREN) {
            tnode *c = node(P, E_CALL, cur(P));
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else {
            return n;
        }
    }
}

static tnode *parse_primary(parser *P, int with_namespace)
{
    const tok *k = cur(P);
    tnode *n;
    enter(P);
    switch (k->type) {
    case T_NAME:
        if (is_name(k, "true") || is_name(k, "True") || is_name(k, "false") || is_name(k, "False")) {
            n = node(P, E_CONST, k);
            n->value = tv_bool(k->p[0] == 't' || k->p[0] == 'T');
        } else if (is_name(k, "none") || is_name(k, "None")) {
            n = node(P, E_CONST, k);
            n->value = tv_none();
        } else if (with_namespace && peek(P)->type == T_DOT) {
            n = node(P, E_NSREF, k);
            n->a = node(P, E_NAME, k);
            n->a->name = tok_name(P, k);
            advance(P);
            advance(P);
            n->name = tok_name(P, expect(P, T_NAME));
            P->depth--;
            return n;
        } else {
            n = node(P, E_NAME, k);
            n->name = tok_name(P, k);
        }
        advance(P);
        break;
    case T_STRING: {
        n = node(P, E_CONST, k);
        size_t total = 0;
        size_t j = P->i;
        for (; P->t[j].type == T_STRING; j++)
            total += P->t[j].n;
        char *s = tpl_alloc(P->a, total + 1), *o = s;
        while (cur(P)->type == T_STRING) {
            memcpy(o, cur(P)->p, cur(P)->n);
            o += cur(P)->n;
            advance(P);
        }
        n->value = tv_str(s, total);
        break;
    }
    case T_INT:
    case T_FLOAT:
        n = node(P, E_CONST, k);
        n->value = k->type == T_INT ? tv_int(k->i) : tv_float(k->f);
        advance(P);
        break;
    case T_LPAREN:
        advance(P);
        n = parse_tuple(P, 0, 1, NULL, 1, 0);
        expect(P, T_RPAREN);
        break;
    case T_LBRACKET:
        advance(P);
        n = node(P, E_LIST, k);
        while (cur(P)->type != T_RBRACKET) {
            if (n->items.n)
                expect(P, T_COMMA);
            if (cur(P)->type == T_RBRACKET)
                break;
            push(P, &n->items, parse_expression(P, 1));
        }
        expect(P, T_RBRACKET);
        break;
    case T_LBRACE:
        advance(P);
        n = node(P, E_DICT, k);
        while (cur(P)->type != T_RBRACE) {
            if (n->items.n)
                expect(P, T_COMMA);
            if (cur(P)->type == T_RBRACE)
                break;
            push(P, &n->items, parse_expression(P, 1));
            expect(P, T_COLON);
            push(P, &n->items2, parse_expression(P, 1));
        }
        expect(P, T_RBRACE);
        break;
    default: unexpected(P, k);
    }
    P->depth--;
    return n;
}

static tnode *parse_unary(parser *P, int with_filter)
{
    const tok *k = cur(P);
    tnode *n;
    enter(P);
    if (k->type == T_SUB || k->type == T_ADD) {
        advance(P);
        n = node(P, k->type == T_SUB ? E_NEG : E_POS, k);
        n->a = parse_unary(P, 0);
    } else {
        n = parse_primary(P, 0);
    }
    n = parse_postfix(P, n);
    if (with_filter)
        n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static tnode *binop(parser *P, const tok *at, int kind, int op, tnode *a, tnode *b)
{
    tnode *n = node(P, kind, at);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static tnode *parse_pow(parser *P)
{
    tnode *left = parse_unary(P, 1);
    while (cur(P)->type == T_POW) {
        const tok *k = advance(P);
        left = binop(P, k, E_BINOP, T_POW, left, parse_unary(P, 1));
    }
    return left;
}

static tnode *parse_math2(parser *P)
{
    tnode *left = parse_pow(P);
    while (cur(P)->type == T_MUL || cur(P)->type == T_DIV || cur(P)->type == T_FLOORDIV || cur(P)->type == T_MOD) {
        const tok *k = advance(P);
        left = binop(P, k, E_BINOP, k->type, left, parse_pow(P));
    }
    return left;
}

static tnode *parse_concat(parser *P)
{
    tnode *left = parse_math2(P);
    while (cur(P)->type == T_TILDE) {
        const tok *k = advance(P);
        left = binop(P, k, E_BINOP, T_TILDE, left, parse_math2(P));
    }
    return left;
}

static tnode *parse_math1(parser *P)
{
    tnode *left = parse_concat(P);
    while (cur(P)->type == T_ADD || cur(P)->type == T_SUB) {
        const tok *k = advance(P);
        left = binop(P, k, E_BINOP, k->type, left, parse_concat(P));
    }
    return left;
}

static tnode *parse_compare(parser *P)
{
    const tok *at = cur(P);
    tnode *first = parse_math1(P), *n = NULL;
    uint8_t ops[64];
    for (;;) {
        int ty = cur(P)->type, op;
        if (ty == T_EQ || ty == T_NE || ty == T_LT || ty == T_LTEQ || ty == T_GT || ty == T_GTEQ) {
            op = ty;
            advance(P);
        } else if (is_name(cur(P), "in")) {
            op = OP_IN;
            advance(P);
        } else if (is_name(cur(P), "not") && is_name(peek(P), "in")) {
            op = OP_NOTIN;
            advance(P);
            advance(P);
        } else {
            break;
        }
        if (!n) {
            n = node(P, E_COMPARE, at);
            n->a = first;
        }
        if (n->items.n == sizeof ops)
            fail_tok(P, cur(P), "%s", "comparison chain too long");
        ops[n->items.n] = (uint8_t)op;
        push(P, &n->items, parse_math1(P));
    }
    if (!n)
        return first;
    n->ops = tpl_alloc(P->a, n->items.n);
    memcpy(n->ops, ops, n->items.n);
    return n;
}

static tnode *parse_not(parser *P)
{
    if (is_name(cur(P), "not")) {
        const tok *k = advance(P);
        enter(P);
        tnode *n = node(P, E_NOT, k);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

static tnode *parse_and(parser *P)
{
    tnode *left = parse_not(P);
    while (is_name(cur(P), "and")) {
        const tok *k = advance(P);
        left = binop(P, k, E_AND, 0, left, parse_not(P));
    }
    return left;
}

static tnode *parse_or(parser *P)
{
    tnode *left = parse_and(P);
    while (is_name(cur(P), "or")) {
        const tok *k = advance(P);
        left = binop(P, k, E_OR, 0, left, parse_and(P));
    }
    return left;
}

static tnode *parse_condexpr(parser *P)
{
    const tok *at = cur(P);
    tnode *expr1 = parse_or(P);
    while (is_name(cur(P), "if")) {
        advance(P);
        tnode *c = node(P, E_COND, at);
        c->a = parse_or(P);
        c->b = expr1;
        if (is_name(cur(P), "else")) {
            advance(P);
            enter(P);
            c->c = parse_condexpr(P);
            P->depth--;
        }
        expr1 = c;
        at = cur(P);
    }
    return expr1;
}

static tnode *parse_expression(parser *P, int with_condexpr)
{
    enter(P);
    tnode *n = with_condexpr ? parse_condexpr(P) : parse_or(P);
    P->depth--;
    return n;
}

static int is_tuple_end(parser *P, const char *extra_end)
{
    int ty = cur(P)->type;
    return ty == T_VAR_END || ty == T_BLOCK_END || ty == T_RPAREN || (extra_end && is_name(cur(P), extra_end));
}

static tnode *parse_tuple(parser *P, int simplified, int with_condexpr, const char *extra_end, int explicit_parens,
                          int with_namespace)
{
    const tok *at = cur(P);
    tnode_list args = {0};
    int is_tuple = 0;
    for (;;) {
        if (args.n)
            expect(P, T_COMMA);
        if (is_tuple_end(P, extra_end))
            break;
        push(P, &args, simplified ? parse_primary(P, with_namespace) : parse_expression(P, with_condexpr));
        if (cur(P)->type == T_COMMA)
            is_tuple = 1;
        else
            break;
    }
    if (!is_tuple) {
        if (args.n)
            return args.v[0];
        if (!explicit_parens) {
            char d[80];
            fail_tok(P, cur(P), "expected an expression, got '%s'", describe(cur(P), d, sizeof d));
        }
    }
    tnode *t = node(P, E_TUPLE, at);
    t->items = args;
    return t;
}

/* ---- statements ---- */

static void subparse(parser *P, tnode_list *body, const char *const *end_tags);

/* The rest of a statement's tag, then its body up to one of end_tags (left current). */
static void parse_statements(parser *P, tnode_list *body, const char *const *end_tags, int drop_needle)
{
    expect(P, T_BLOCK_END);
    enter(P);
    subparse(P, body, end_tags);
    P->depth--;
    if (cur(P)->type == T_EOF) {
        char msg[160];
        size_t n = (size_t)snprintf(msg, sizeof msg, "unexpected end of template, expected ");
        for (size_t i = 0; end_tags[i] && n < sizeof msg; i++)
            n += (size_t)snprintf(msg + n, sizeof msg - n, "%s'%s'", i ? " or " : "", end_tags[i]);
        fail_tok(P, cur(P), "%s", msg);
    }
    if (drop_needle)
        advance(P);
}

static void check_target(parser *P, tnode *t, int allow_nsref)
{
    if (t->kind == E_NAME) {
        if (!strcmp(t->name, "true") || !strcmp(t->name, "false") || !strcmp(t->name, "none"))
            fail_tok(P, &(tok){.line = t->line, .col = t->col}, "can't assign to '%s'", t->name);
        return;
    }
    if (t->kind == E_NSREF && allow_nsref)
        return;
    if (t->kind == E_TUPLE) {
        for (size_t i = 0; i < t->items.n; i++)
            check_target(P, t->items.v[i], allow_nsref);
        return;
    }
    fail_tok(P, &(tok){.line = t->line, .col = t->col}, "%s", "can't assign to this expression");
}

static tnode *parse_assign_target(parser *P, const char *extra_end, int with_namespace)
{
    tnode *t = parse_tuple(P, 1, 1, extra_end, 0, with_namespace);
    check_target(P, t, with_namespace);
    return t;
}

static void parse_signature(parser *P, tnode *n)
{
    expect(P, T_LPAREN);
    while (cur(P)->type != T_RPAREN) {
        if (n->items.n)
            expect(P, T_COMMA);
        const tok *k = expect(P, T_NAME);
        tnode *arg = node(P, E_NAME, k);
        arg->name = tok_name(P, k);
        if (cur(P)->type == T_ASSIGN) {
            advance(P);
            push(P, &n->items2, parse_expression(P, 1));
        } else if (n->items2.n) {
            fail_tok(P, k, "%s", "non-default argument follows default argument");
        }
        push(P, &n->items, arg);
    }
    expect(P, T_RPAREN);
}

static tnode *parse_statement(parser *P)
{
    const tok *k = cur(P);
    if (k->type != T_NAME)
        fail_tok(P, k, "%s", "tag name expected");
    static const char *const end_for[] = {"endfor", "else", NULL}, *const end_for2[] = {"endfor", NULL},
                             *const end_if[] = {"elif", "else", "endif", NULL}, *const end_if2[] = {"endif", NULL},
                             *const end_set[] = {"endset", NULL}, *const end_macro[] = {"endmacro", NULL},
                             *const end_call[] = {"endcall", NULL}, *const end_filter[] = {"endfilter", NULL},
                             *const end_gen[] = {"endgeneration", NULL}, *const end_with[] = {"endwith", NULL};
    tnode *n;
    if (is_name(k, "for")) {
        advance(P);
        n = node(P, S_FOR, k);
        n->a = parse_assign_target(P, "in", 0);
        expect_name(P, "in");
        n->b = parse_tuple(P, 0, 0, "recursive", 0, 0);
        if (is_name(cur(P), "if")) {
            advance(P);
            n->c = parse_expression(P, 1);
        }
        if (is_name(cur(P), "recursive"))
            fail_tok(P, cur(P), "%s", "recursive loops are not supported");
        P->loops++;
        parse_statements(P, &n->body, end_for, 0);
        P->loops--;
        if (is_name(advance(P), "else"))
            parse_statements(P, &n->else_body, end_for2, 1);
    } else if (is_name(k, "if")) {
        advance(P);
        n = node(P, S_IF, k);
        tnode *at = n;
        for (;;) {
            at->a = parse_tuple(P, 0, 0, NULL, 0, 0);
            parse_statements(P, &at->body, end_if, 0);
            const tok *e = advance(P);
            if (is_name(e, "elif")) {
                tnode *next = node(P, S_IF, cur(P));
                push(P, &at->else_body, next);
                at = next;
                continue;
            }
            if (is_name(e, "else"))
                parse_statements(P, &at->else_body, end_if2, 1);
            break;
        }
    } else if (is_name(k, "set")) {
        advance(P);
        tnode *target = parse_assign_target(P, NULL, 1);
        if (cur(P)->type == T_ASSIGN) {
            advance(P);
            n = node(P, S_SET, k);
            n->a = target;
            n->b = parse_tuple(P, 0, 1, NULL, 0, 0);
        } else {
            n = node(P, S_SETBLOCK, k);
            n->a = target;
            n->c = parse_filter(P, NULL, 0);
            parse_statements(P, &n->body, end_set, 1);
        }
    } else if (is_name(k, "macro")) {
        advance(P);
        n = node(P, S_MACRO, k);
        n->name = tok_name(P, expect(P, T_NAME));
        parse_signature(P, n);
        int loops = P->loops;
        P->loops = 0;
        parse_statements(P, &n->body, end_macro, 1);
        P->loops = loops;
    } else if (is_name(k, "call")) {
        advance(P);
        n = node(P, S_CALLBLOCK, k);
        if (cur(P)->type == T_LPAREN)
            parse_signature(P, n);
        n->a = parse_expression(P, 1);
        if (n->a->kind != E_CALL)
            fail_tok(P, k, "%s", "expected call");
        int loops = P->loops;
        P->loops = 0;
        parse_statements(P, &n->body, end_call, 1);
        P->loops = loops;
    } else if (is_name(k, "filter")) {
        advance(P);
        n = node(P, S_FILTERBLOCK, k);
        n->c = parse_filter(P, NULL, 1);
        parse_statements(P, &n->body, end_filter, 1);
    } else if (is_name(k, "generation")) {
        advance(P);
        n = node(P, S_GENERATION, k);
        parse_statements(P, &n->body, end_gen, 1);
    } else if (is_name(k, "with")) {
        advance(P);
        n = node(P, S_WITH, k);
        while (cur(P)->type != T_BLOCK_END) {
            if (n->items.n)
                expect(P, T_COMMA);
            tnode *t = parse_assign_target(P, NULL, 0);
            expect(P, T_ASSIGN);
            push(P, &n->items, t);
            push(P, &n->items2, parse_expression(P, 1));
        }
        parse_statements(P, &n->body, end_with, 1);
    } else if (is_name(k, "print")) {
        advance(P);
        n = node(P, S_PRINT, k);
        n->a = parse_tuple(P, 0, 1, NULL, 0, 0);
    } else if (is_name(k, "break") || is_name(k, "continue")) {
        if (!P->loops)
            fail_tok(P, k, "'%s' outside loop", is_name(k, "break") ? "break" : "continue");
        advance(P);
        n = node(P, is_name(k, "break") ? S_BREAK : S_CONTINUE, k);
    } else {
        char d[80];
        describe(k, d, sizeof d);
        if (!strncmp(d, "end", 3) || !strcmp(d, "else") || !strcmp(d, "elif"))
            fail_tok(P, k, "unexpected '%s'", d);
        fail_tok(P, k, "unknown tag '%s'", d);
    }
    return n;
}

static int in_tags(const tok *k, const char *const *tags)
{
    for (; tags && *tags; tags++)
        if (is_name(k, *tags))
            return 1;
    return 0;
}

/* jinja2's subparse: data, {{ }} and statements until EOF or a tag in end_tags (left
 * current, just after its BLOCK_BEGIN). */
static void subparse(parser *P, tnode_list *body, const char *const *end_tags)
{
    for (;;) {
        const tok *k = cur(P);
        if (k->type == T_EOF)
            return;
        if (k->type == T_DATA) {
            tnode *d = node(P, S_DATA, k);
            d->value = tv_str(k->p, k->n);
            push(P, body, d);
            advance(P);
        } else if (k->type == T_VAR_BEGIN) {
            advance(P);
            tnode *p = node(P, S_PRINT, k);
            p->a = parse_tuple(P, 0, 1, NULL, 0, 0);
            expect(P, T_VAR_END);
            push(P, body, p);
        } else if (k->type == T_BLOCK_BEGIN) {
            advance(P);
            if (in_tags(cur(P), end_tags))
                return;
            push(P, body, parse_statement(P));
            expect(P, T_BLOCK_END);
        } else {
            unexpected(P, k);
        }
    }
}

void tpl_parse(tpl_arena *a, tpl_fail_ctx *fc, const tok_array *toks, int max_depth, tnode_list *out)
{
    /* One level of nesting in an expression passes through three of the functions above
     * (expression, unary, primary), so the parser allows four times the render depth. */
    parser P = {.a = a, .fc = fc, .t = toks->v, .n = toks->n, .max_depth = 4 * max_depth};
    subparse(&P, out, NULL);
}
