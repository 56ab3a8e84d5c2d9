/* The interpreter's private types: the arena, values, tokens, the AST and the render state.
 * Shared by the lexer (tpl_lex.c), the parser (tpl_parse.c), the evaluator (tpl_eval.c,
 * tpl_ops.c) and the built-ins (tpl_filters.c, tpl_tests.c, tpl_methods.c, tpl_json.c).
 *
 * Errors unwind with longjmp to the entry point (kv_template_compile / kv_template_render):
 * everything a compile or a render allocates lives in its arena, so unwinding leaks nothing
 * and the code in between needs no error paths. */
#ifndef TPL_INTERNAL_H
#define TPL_INTERNAL_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "chat_template.h"
#include "json.h"
#include "kv_err.h"

/* ---- failure: where errors go (compile or render) ---- */

typedef struct tpl_fail_ctx {
    jmp_buf jb;
    kv_err *err;
    const char *name; /* "chat_template": the prefix of every message */
    int line, col;    /* where the evaluator is: errors from helpers (and the arena) point here */
} tpl_fail_ctx;

/* Formats "NAME:LINE:COL: message" into fc->err with code and unwinds. */
_Noreturn void tpl_fail_at(tpl_fail_ctx *fc, int code, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- arena: bump allocation in chunks, with a byte budget ---- */

typedef struct tpl_chunk tpl_chunk;
typedef struct tpl_arena {
    tpl_chunk *head;
    size_t used_total, budget;
    tpl_fail_ctx *fc; /* exceeding the budget or malloc failing unwinds through it */
} tpl_arena;

void tpl_arena_init(tpl_arena *a, size_t budget, tpl_fail_ctx *fc);
void tpl_arena_free(tpl_arena *a);
void *tpl_alloc(tpl_arena *a, size_t n);              /* zeroed, 16-aligned; never NULL */
char *tpl_strdup(tpl_arena *a, const char *s, size_t n); /* NUL-terminated copy */

/* ---- values ---- */

typedef enum {
    V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_TUPLE, V_DICT,
    V_NS,      /* namespace(): the one mutable object a template may assign into */
    V_MACRO,   /* a macro, or the caller of a call block */
    V_FUNC,    /* a global function (range, namespace, raise_exception, ...) */
    V_METHOD,  /* a bound method: self + method name */
    V_LOOP,    /* the loop variable of a for */
    V_CYCLER,  /* unused placeholder for jinja2's cycler/joiner: unsupported */
} tv_type;

/* Why an undefined is undefined: for the message of jinja2's UndefinedError. */
typedef enum { U_NAME, U_ATTR, U_ITEM, U_UNSAFE, U_HINT } tv_undef_kind;

typedef struct tlist tlist;
typedef struct tdict tdict;
typedef struct tnode tnode;
typedef struct tscope tscope;
typedef struct tloop tloop;

typedef struct tv {
    uint8_t t;       /* tv_type */
    uint8_t ukind;   /* V_UNDEF: tv_undef_kind */
    uint8_t uobj;    /* V_UNDEF: tv_type of the object that lacked the attribute/item */
    uint8_t safe;    /* V_STR: came from a Markup-returning filter (printing is the same) */
    union {
        int b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s; /* V_STR, V_UNDEF (name/hint), V_FUNC (name) */
        tlist *l;   /* V_LIST, V_TUPLE */
        tdict *d;   /* V_DICT, V_NS */
        struct tmacro *m;
        struct tmethod *bm;
        tloop *loop;
    } u;
} tv;

struct tlist { size_t n, cap; tv *items; };
struct tdict { size_t n, cap; tv *keys, *vals; };

typedef struct tmacro {
    const tnode *node;   /* S_MACRO, or S_CALLBLOCK for a caller */
    tscope *closure;     /* the scope it was defined in */
    const char *name;
    tv caller;           /* V_MACRO caller passed to this call, or V_UNDEF */
} tmacro;

typedef struct tmethod { tv self; const char *name; } tmethod;

struct tloop {
    tlist *items;
    size_t index0;
    tv changed_last;
    int changed_set;
    int depth0;
};

/* ---- tokens ---- */

typedef enum {
    T_EOF, T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END,
    T_NAME, T_STRING, T_INT, T_FLOAT,
    /* operators */
    T_ADD, T_SUB, T_DIV, T_FLOORDIV, T_MUL, T_MOD, T_POW, T_TILDE,
    T_LBRACKET, T_RBRACKET, T_LPAREN, T_RPAREN, T_LBRACE, T_RBRACE,
    T_EQ, T_NE, T_GT, T_GTEQ, T_LT, T_LTEQ, T_ASSIGN, T_DOT, T_COLON, T_PIPE, T_COMMA, T_SEMICOLON,
} tok_type;

typedef struct tok {
    uint8_t type;
    int line, col;
    const char *p; size_t n; /* T_DATA, T_NAME, T_STRING: the (decoded) text */
    int64_t i;
    double f;
} tok;

typedef struct tok_array { tok *v; size_t n, cap; } tok_array;

/* Splits src (already newline-normalized, trailing newline dropped) into tokens, as jinja2's
 * lexer does with trim_blocks and lstrip_blocks. */
void tpl_lex(tpl_arena *a, tpl_fail_ctx *fc, const char *src, size_t len, tok_array *out);
/* jinja2's source preparation: \r\n and \r become \n; one trailing newline is dropped. */
char *tpl_normalize_source(tpl_arena *a, const char *src, size_t len, size_t *out_len);

/* ---- the AST ---- */

typedef enum {
    /* expressions */
    E_CONST, E_NAME, E_LIST, E_TUPLE, E_DICT, E_GETATTR, E_GETITEM, E_SLICE, E_CALL,
    E_FILTER, E_TEST, E_NEG, E_POS, E_NOT, E_BINOP, E_AND, E_OR, E_COMPARE, E_COND, E_NSREF,
    /* statements */
    S_DATA, S_PRINT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_FILTERBLOCK,
    S_BREAK, S_CONTINUE, S_GENERATION, S_WITH,
} node_kind;

typedef struct tnode_list { tnode **v; size_t n, cap; } tnode_list;

/* One node shape for all kinds; which fields a kind uses:
 *   E_CONST value | E_NAME name | E_LIST/E_TUPLE items | E_DICT items (keys), items2 (values)
 *   E_GETATTR a.name | E_GETITEM a[b] | E_SLICE a[b:c:d] (each may be NULL)
 *   E_CALL a(items, names=items2) | E_FILTER a|name(items, names=items2) (a NULL in blocks;
 *     next filter of a chain in c) | E_TEST a is [not: op] name(items)
 *   E_NEG/E_POS/E_NOT a | E_BINOP a op b (op: a tok_type) | E_AND/E_OR a b
 *   E_COMPARE a, then ops[i] items[i] | E_COND b if a else c (c may be NULL) | E_NSREF a.name
 *   S_DATA value | S_PRINT a | S_IF a body else_body | S_FOR a (target) in b if c, body, else_body
 *   S_SET a = b | S_SETBLOCK a, c (filter or NULL), body | S_MACRO name(items=params, items2=defaults) body
 *   S_CALLBLOCK a (the call), items/items2 (caller params/defaults), body
 *   S_FILTERBLOCK c (filter chain) body | S_GENERATION body | S_WITH items = items2, body */
struct tnode {
    uint8_t kind;
    uint8_t op;
    int line, col;
    uint8_t negate;        /* E_TEST: is not */
    uint8_t recursive;     /* S_FOR: unsupported, refused at parse time */
    const char *name;      /* E_NAME, E_GETATTR, E_FILTER, E_TEST, E_NSREF, S_MACRO */
    tnode *a, *b, *c, *d;
    tnode_list items, items2;
    const char **kwnames;  /* E_CALL, E_FILTER, E_TEST: the names of items2 */
    uint8_t *ops;          /* E_COMPARE: one tok_type per items[i] (T_NAME+1 = in, +2 = not in) */
    tnode_list body, else_body;
    tv value;              /* E_CONST, S_DATA */
};

#define OP_IN 200
#define OP_NOTIN 201

/* Parses the tokens into the template's statement list. */
void tpl_parse(tpl_arena *a, tpl_fail_ctx *fc, const tok_array *toks, int max_depth, tnode_list *out);

/* ---- rendering ---- */

typedef struct tpl_out { char *p; size_t n, cap, limit; const char *what; } tpl_out;

struct tscope {
    tscope *parent;
    tdict vars; /* name (V_STR) -> value */
};

typedef struct tpl_rt {
    tpl_arena *ar;
    tpl_fail_ctx *fc;
    const kv_template_limits *lim;
    tpl_out *out;          /* where output goes now (the result, or a captured block) */
    tscope *globals;       /* raise_exception, range, ...: below the render variables */
    uint64_t iterations;
    int depth;
    int64_t now;           /* strftime_now's clock: a fixed Unix time, or 0 for the real one */
} tpl_rt;

_Noreturn void tpl_rt_fail(tpl_rt *rt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void tpl_rt_fail_code(tpl_rt *rt, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void tpl_count_iteration(tpl_rt *rt);

/* render (tpl_eval.c) */
void tpl_exec_body(tpl_rt *rt, tscope *sc, const tnode_list *body, int *flow);
tv tpl_eval(tpl_rt *rt, tscope *sc, const tnode *e);
tv tpl_call(tpl_rt *rt, tscope *sc, tv fn, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw);
tscope *tpl_scope_new(tpl_rt *rt, tscope *parent);
void tpl_scope_set(tpl_rt *rt, tscope *sc, const char *name, tv v);

/* values (tpl_value.c) */
tv tv_undef_name(const char *name);
tv tv_undef_hint(const char *hint);
tv tv_none(void);
tv tv_bool(int b);
tv tv_int(int64_t i);
tv tv_float(double f);
tv tv_str(const char *p, size_t n);
tv tv_cstr(const char *p);
tv tv_list(tlist *l);
tv tv_tuple(tlist *l);
tlist *tl_new(tpl_arena *a, size_t cap);
void tl_push(tpl_arena *a, tlist *l, tv v);
tdict *td_new(tpl_arena *a);
tv *td_get(const tdict *d, tv key);      /* NULL if absent */
tv *td_get_str(const tdict *d, const char *key, size_t n);
void td_set(tpl_arena *a, tdict *d, tv key, tv val);
const char *tv_type_name(int t);          /* Python's type name: 'str', 'int', 'dict', ... */
int tv_truthy(tv v);
int tv_eq(tv a, tv b);
int tv_is_number(tv v);                   /* bool, int, float */
double tv_num(tv v);
int tv_is_seq(tv v);                      /* list or tuple */
void tv_write_str(tpl_rt *rt, tpl_out *o, tv v);   /* Python str() */
void tv_write_repr(tpl_rt *rt, tpl_out *o, tv v);  /* Python repr() */
tv tv_to_str(tpl_rt *rt, tv v);           /* str() as a V_STR */
void tpl_undef_message(tv u, char *buf, size_t cap);
_Noreturn void tpl_undef_fail(tpl_rt *rt, tv u);
size_t tpl_py_float_repr(double d, char *buf, size_t cap);

/* output buffers (tpl_value.c) */
void tpl_out_init(tpl_out *o, size_t limit);
void tpl_out_append(tpl_rt *rt, tpl_out *o, const char *p, size_t n);
tv tpl_out_str(tpl_out *o);

/* operators, attributes, items, iteration (tpl_ops.c) */
tv tpl_binop(tpl_rt *rt, int op, tv a, tv b);
int tpl_compare(tpl_rt *rt, int op, tv a, tv b);
int tpl_contains(tpl_rt *rt, tv container, tv item);
tv tpl_getattr(tpl_rt *rt, tv obj, const char *name, size_t n);
tv tpl_getitem(tpl_rt *rt, tv obj, tv key);
tv tpl_slice(tpl_rt *rt, tv obj, tv start, tv stop, tv step);
tlist *tpl_iterate(tpl_rt *rt, tv v);      /* list(v) as jinja2 iterates it */
int64_t tpl_len(tpl_rt *rt, tv v);
size_t tpl_utf8_count(const char *p, size_t n);
int tpl_order(tpl_rt *rt, tv a, tv b);     /* -1/0/1 for <, or a TypeError */

/* built-ins */
#define V_UNSET 250 /* tpl_bind: an argument not given */
/* Binds positional and keyword arguments to the parameter names of fname (NULL-terminated);
 * out[i].t == V_UNSET where neither gave one. Unknown keywords and extra arguments fail. */
void tpl_bind(tpl_rt *rt, const char *fname, const char *const *names, tv *args, size_t nargs, const char **kwnames,
              tv *kwvals, size_t nkw, tv *out);
tv tpl_attr_path(tpl_rt *rt, tv item, tv path);  /* selectattr/map/sort's "a.b.0" lookup */
tv tpl_filter(tpl_rt *rt, tscope *sc, const char *name, tv val, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw);
int tpl_has_filter(const char *name);
int tpl_test(tpl_rt *rt, tscope *sc, const char *name, tv val, tv *args, size_t nargs);
int tpl_has_test(const char *name);
tv tpl_method_lookup(tpl_rt *rt, tv self, const char *name, size_t n, int *found);
tv tpl_method_call(tpl_rt *rt, tmethod *m, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw);
tv tpl_global_call(tpl_rt *rt, tscope *sc, const char *name, tv *args, size_t nargs, const char **kwnames, tv *kwvals, size_t nkw);
void tpl_install_globals(tpl_rt *rt, tscope *globals);

/* strings (tpl_str.c): Python's notion of whitespace and case over UTF-8 */
int tpl_py_isspace(uint32_t cp);
tv tpl_str_strip(tpl_rt *rt, tv s, const char *chars, size_t nchars, int left, int right);
tv tpl_str_upper(tpl_rt *rt, tv s);
tv tpl_str_lower(tpl_rt *rt, tv s);
tv tpl_str_capitalize(tpl_rt *rt, tv s);
tv tpl_str_title_py(tpl_rt *rt, tv s);      /* str.title() */
tv tpl_str_title_jinja(tpl_rt *rt, tv s);   /* the title filter */
tv tpl_str_replace(tpl_rt *rt, tv s, tv old, tv new_, int64_t count);
tlist *tpl_str_split(tpl_rt *rt, tv s, tv sep, int64_t maxsplit, int from_right);
tlist *tpl_str_splitlines(tpl_rt *rt, tv s, int keepends);
tv tpl_str_concat(tpl_rt *rt, tv a, tv b);

/* JSON (tpl_json.c) */
tv tpl_from_json(tpl_rt *rt, const json_value *j);
tv tpl_tojson(tpl_rt *rt, tv v, tv indent, tv separators, int sort_keys);

#endif
