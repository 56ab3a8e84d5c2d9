/* The lexer: jinja2's lexer.py with trim_blocks and lstrip_blocks on, rule for rule.
 * Text between tags becomes T_DATA (with whitespace control applied); {{ }} and {% %} become
 * BEGIN, expression tokens, END; comments vanish; raw blocks become data. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

#define MAX_BRACKETS 256

typedef struct lexer {
    tpl_arena *a;
    tpl_fail_ctx *fc;
    const char *s;
    size_t n, pos;
    tok_array *out;
    int line_starting;  /* the last match ended with a newline (lstrip_blocks looks at it) */
    /* a cursor turning byte offsets (only ever increasing) into line:column */
    size_t cur;
    int line, col;
} lexer;

char *tpl_normalize_source(tpl_arena *a, const char *src, size_t len, size_t *out_len)
{
    char *o = tpl_alloc(a, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            o[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            o[n++] = src[i];
        }
    }
    if (n && o[n - 1] == '\n')
        n--;
    o[n] = '\0';
    *out_len = n;
    return o;
}

static void locate(lexer *L, size_t pos, int *line, int *col)
{
    while (L->cur < pos) {
        unsigned char c = (unsigned char)L->s[L->cur++];
        if (c == '\n') {
            L->line++;
            L->col = 1;
        } else if ((c & 0xC0) != 0x80) {
            L->col++;
        }
    }
    *line = L->line;
    *col = L->col;
}

_Noreturn static void lex_fail(lexer *L, size_t pos, const char *fmt, const char *arg)
{
    int line, col;
    locate(L, pos, &line, &col);
    tpl_fail_at(L->fc, KV_EFORMAT, line, col, fmt, arg);
}

static tok *emit(lexer *L, int type, size_t pos)
{
    tok_array *t = L->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        tok *v = tpl_alloc(L->a, cap * sizeof *v);
        if (t->n)
            memcpy(v, t->v, t->n * sizeof *v);
        t->v = v;
        t->cap = cap;
    }
    tok *k = &t->v[t->n++];
    memset(k, 0, sizeof *k);
    k->type = (uint8_t)type;
    locate(L, pos, &k->line, &k->col);
    return k;
}

/* Python's \s at s[i]: its byte length, or 0. */
static size_t space_at(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80)
        return tpl_py_isspace(c) ? 1 : 0;
    uint32_t cp;
    size_t len = kv_utf8_next(s + i, n - i, &cp);
    return tpl_py_isspace(cp) ? len : 0;
}

static size_t skip_space(const char *s, size_t n, size_t i)
{
    size_t k;
    while ((k = space_at(s, n, i)))
        i += k;
    return i;
}

/* The end of text[b..e) once trailing whitespace is stripped. */
static size_t rstrip_end(const char *s, size_t b, size_t e)
{
    while (e > b) {
        size_t st = e - 1;
        while (st > b && ((unsigned char)s[st] & 0xC0) == 0x80)
            st--;
        if (space_at(s, e, st) != e - st)
            break;
        e = st;
    }
    return e;
}

/* jinja2's OptionalLStrip: what of text[b..e) stays before a tag whose sign is sign. */
static size_t strip_before_tag(lexer *L, size_t b, size_t e, char sign, int is_variable)
{
    if (sign == '-')
        return rstrip_end(L->s, b, e);
    if (sign == '+' || is_variable)
        return e;
    size_t l_pos = e;
    while (l_pos > b && L->s[l_pos - 1] != '\n')
        l_pos--;
    if ((l_pos > b || L->line_starting) && l_pos < e && skip_space(L->s, e, l_pos) == e)
        return l_pos;
    return e;
}

static void emit_data(lexer *L, size_t b, size_t e)
{
    if (e <= b)
        return;
    tok *k = emit(L, T_DATA, b);
    k->p = L->s + b;
    k->n = e - b;
}

/* `{% raw %}` (or -%}) at t, where after is just past "{%" and its sign: the end of the
 * match, or 0 when it is no raw tag. */
static size_t match_raw_begin(lexer *L, size_t after)
{
    const char *s = L->s;
    size_t n = L->n, i = skip_space(s, n, after);
    if (n - i < 3 || memcmp(s + i, "raw", 3))
        return 0;
    i = skip_space(s, n, i + 3);
    if (n - i >= 3 && !memcmp(s + i, "-%}", 3))
        return skip_space(s, n, i + 3);
    if (n - i >= 2 && !memcmp(s + i, "%}", 2))
        return i + 2;
    return 0;
}

/* The block end at i ("+%}", "-%}\s*", "%}\n?"): its end, or 0. */
static size_t match_block_end(const char *s, size_t n, size_t i)
{
    if (n - i >= 3 && !memcmp(s + i, "+%}", 3))
        return i + 3;
    if (n - i >= 3 && !memcmp(s + i, "-%}", 3))
        return skip_space(s, n, i + 3);
    if (n - i >= 2 && !memcmp(s + i, "%}", 2))
        return i + 2 + (i + 2 < n && s[i + 2] == '\n');
    return 0;
}

static void lex_raw_body(lexer *L, size_t start)
{
    const char *s = L->s;
    size_t n = L->n;
    for (size_t i = start; i + 1 < n; i++) {
        if (s[i] != '{' || s[i + 1] != '%')
            continue;
        size_t j = i + 2;
        char sign = j < n && (s[j] == '-' || s[j] == '+') ? s[j] : 0;
        if (sign)
            j++;
        j = skip_space(s, n, j);
        if (n - j < 6 || memcmp(s + j, "endraw", 6))
            continue;
        size_t end = match_block_end(s, n, skip_space(s, n, j + 6));
        if (!end)
            continue;
        emit_data(L, start, strip_before_tag(L, start, i, sign, 0));
        L->pos = end;
        L->line_starting = s[end - 1] == '\n';
        return;
    }
    lex_fail(L, start, "%s", "Missing end of raw directive");
}

static void lex_comment(lexer *L, size_t start)
{
    const char *s = L->s;
    size_t n = L->n;
    for (size_t i = start; i < n; i++) {
        size_t end = 0;
        if (n - i >= 3 && (s[i] == '+' || s[i] == '-') && !memcmp(s + i + 1, "#}", 2))
            end = s[i] == '+' ? i + 3 : skip_space(s, n, i + 3);
        else if (n - i >= 2 && !memcmp(s + i, "#}", 2))
            end = i + 2 + (i + 2 < n && s[i + 2] == '\n');
        if (end) {
            L->pos = end;
            L->line_starting = s[end - 1] == '\n';
            return;
        }
    }
    lex_fail(L, start, "%s", "Missing end of comment tag");
}

/* (\d+_)*\d+ at i: the end, or i. */
static size_t digits(const char *s, size_t n, size_t i)
{
    size_t j = i;
    while (j < n && s[j] >= '0' && s[j] <= '9') {
        while (j < n && s[j] >= '0' && s[j] <= '9')
            j++;
        if (j + 1 < n && s[j] == '_' && s[j + 1] >= '0' && s[j + 1] <= '9')
            j++;
    }
    return j;
}

static size_t match_float(const char *s, size_t n, size_t i)
{
    if (i > 0 && s[i - 1] == '.')
        return 0;
    size_t j = digits(s, n, i);
    if (j == i)
        return 0;
    /* (\.D)?e[+-]?D */
    size_t k = j;
    if (k < n && s[k] == '.') {
        size_t f = digits(s, n, k + 1);
        k = f > k + 1 ? f : j;
    }
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        size_t e = k + 1;
        if (e < n && (s[e] == '+' || s[e] == '-'))
            e++;
        size_t d = digits(s, n, e);
        if (d > e)
            return d;
    }
    /* \.D */
    if (j < n && s[j] == '.') {
        size_t f = digits(s, n, j + 1);
        if (f > j + 1)
            return f;
    }
    return 0;
}

static int is_digit_in_base(char c, int base)
{
    if (base == 2)
        return c == '0' || c == '1';
    if (base == 8)
        return c >= '0' && c <= '7';
    if (base == 16)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    return c >= '0' && c <= '9';
}

static size_t match_int(const char *s, size_t n, size_t i, int *base)
{
    *base = 10;
    if (i + 1 < n && s[i] == '0' && strchr("bBoOxX", s[i + 1]) && s[i + 1]) {
        int b = s[i + 1] == 'b' || s[i + 1] == 'B' ? 2 : s[i + 1] == 'o' || s[i + 1] == 'O' ? 8 : 16;
        size_t j = i + 2;
        for (;;) {
            size_t k = j < n && s[j] == '_' ? j + 1 : j;
            if (k < n && is_digit_in_base(s[k], b))
                j = k + 1;
            else
                break;
        }
        if (j > i + 2) {
            *base = b;
            return j;
        }
    }
    if (s[i] >= '1' && s[i] <= '9') {
        size_t j = i + 1;
        for (;;) {
            size_t k = j < n && s[j] == '_' ? j + 1 : j;
            if (k < n && s[k] >= '0' && s[k] <= '9')
                j = k + 1;
            else
                return j;
        }
    }
    if (s[i] == '0') {
        size_t j = i + 1;
        for (;;) {
            size_t k = j < n && s[j] == '_' ? j + 1 : j;
            if (k < n && s[k] == '0')
                j = k + 1;
            else
                return j;
        }
    }
    return i;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Python's unicode-escape decoding of a string literal's body s[b..e). */
static void decode_string(lexer *L, tok *k, size_t b, size_t e)
{
    const char *s = L->s;
    char *o = tpl_alloc(L->a, (e - b) * 4 / 3 + 16), *p = o;
    for (size_t i = b; i < e;) {
        if (s[i] != '\\' || i + 1 >= e) {
            *p++ = s[i++];
            continue;
        }
        char c = s[i + 1];
        i += 2;
        uint32_t cp;
        int nhex = 0;
        switch (c) {
        case '\n': continue;
        case '\\': *p++ = '\\'; continue;
        case '\'': *p++ = '\''; continue;
        case '"': *p++ = '"'; continue;
        case 'a': *p++ = '\a'; continue;
        case 'b': *p++ = '\b'; continue;
        case 'f': *p++ = '\f'; continue;
        case 'n': *p++ = '\n'; continue;
        case 'r': *p++ = '\r'; continue;
        case 't': *p++ = '\t'; continue;
        case 'v': *p++ = '\v'; continue;
        case 'x': nhex = 2; break;
        case 'u': nhex = 4; break;
        case 'U': nhex = 8; break;
        case 'N': lex_fail(L, i - 2, "%s", "\\N{...} escapes are not supported");
        default:
            if (c >= '0' && c <= '7') {
                cp = (uint32_t)(c - '0');
                for (int d = 0; d < 2 && i < e && s[i] >= '0' && s[i] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[i++] - '0');
                p += kv_utf8_put(p, cp);
                continue;
            }
            if ((unsigned char)c >= 0x80) {
                /* backslashreplace then unicode-escape: "\é" reads as the text \xe9 */
                kv_utf8_next(s + i - 1, e - (i - 1), &cp);
                i = i - 1 + (size_t)kv_utf8_lead_len((unsigned char)c);
                *p++ = '\\';
                p += (size_t)sprintf(p, cp < 0x100 ? "x%02x" : cp < 0x10000 ? "u%04x" : "U%08x", cp);
                continue;
            }
            *p++ = '\\';
            *p++ = c;
            continue;
        }
        cp = 0;
        for (int d = 0; d < nhex; d++) {
            int h = i < e ? hexval(s[i]) : -1;
            if (h < 0)
                lex_fail(L, i, "%s", c == 'x' ? "truncated \\xXX escape" : c == 'u' ? "truncated \\uXXXX escape" : "truncated \\UXXXXXXXX escape");
            cp = cp * 16 + (uint32_t)h;
            i++;
        }
        if (cp > 0x10FFFF)
            lex_fail(L, i, "%s", "illegal Unicode character");
        if (cp >= 0xD800 && cp <= 0xDFFF)
            lex_fail(L, i, "%s", "surrogate code points are not supported in string literals");
        p += kv_utf8_put(p, cp);
    }
    *p = '\0';
    k->p = o;
    k->n = (size_t)(p - o);
}

static int is_name_start(unsigned char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static const struct { const char *s; int type; } operators[] = {
    {"//", T_FLOORDIV}, {"**", T_POW}, {"==", T_EQ}, {"!=", T_NE}, {">=", T_GTEQ}, {"<=", T_LTEQ},
    {"+", T_ADD}, {"-", T_SUB}, {"/", T_DIV}, {"*", T_MUL}, {"%", T_MOD}, {"~", T_TILDE},
    {"[", T_LBRACKET}, {"]", T_RBRACKET}, {"(", T_LPAREN}, {")", T_RPAREN}, {"{", T_LBRACE},
    {"}", T_RBRACE}, {">", T_GT}, {"<", T_LT}, {"=", T_ASSIGN}, {".", T_DOT}, {":", T_COLON},
    {"|", T_PIPE}, {",", T_COMMA}, {";", T_SEMICOLON},
};

static void lex_tag(lexer *L, int is_block)
{
    const char *s = L->s;
    size_t n = L->n, i = L->pos;
    char stack[MAX_BRACKETS];
    int depth = 0;
    for (;;) {
        if (i >= n) { /* the parser reports the missing end */
            L->pos = n;
            return;
        }
        if (!depth) {
            size_t end = 0;
            if (is_block)
                end = match_block_end(s, n, i);
            else if (n - i >= 3 && !memcmp(s + i, "-}}", 3))
                end = skip_space(s, n, i + 3);
            else if (n - i >= 2 && !memcmp(s + i, "}}", 2))
                end = i + 2;
            if (end) {
                emit(L, is_block ? T_BLOCK_END : T_VAR_END, i);
                L->pos = end;
                L->line_starting = s[end - 1] == '\n';
                return;
            }
        }
        size_t j = skip_space(s, n, i);
        if (j > i) {
            i = j;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        int base;
        if ((j = match_float(s, n, i))) {
            tok *k = emit(L, T_FLOAT, i);
            char buf[128];
            size_t m = 0;
            for (size_t q = i; q < j && m < sizeof buf - 1; q++)
                if (s[q] != '_')
                    buf[m++] = s[q];
            buf[m] = '\0';
            k->f = strtod(buf, NULL);
            i = j;
        } else if (c >= '0' && c <= '9' && (j = match_int(s, n, i, &base)) > i) {
            tok *k = emit(L, T_INT, i);
            uint64_t v = 0;
            for (size_t q = i + (base == 10 ? 0 : 2); q < j; q++) {
                if (s[q] == '_')
                    continue;
                uint64_t d = (uint64_t)hexval(s[q]);
                if (v > (UINT64_C(0x7fffffffffffffff) - d) / (uint64_t)base)
                    lex_fail(L, i, "%s", "integer literal too large");
                v = v * (uint64_t)base + d;
            }
            k->i = (int64_t)v;
            i = j;
        } else if (is_name_start(c)) {
            j = i + 1;
            while (j < n && (is_name_start((unsigned char)s[j]) || (s[j] >= '0' && s[j] <= '9')))
                j++;
            tok *k = emit(L, T_NAME, i);
            k->p = s + i;
            k->n = j - i;
            i = j;
        } else if (c == '\'' || c == '"') {
            for (j = i + 1; j < n && s[j] != (char)c; j++)
                if (s[j] == '\\')
                    j++;
            if (j >= n)
                lex_fail(L, i, "unexpected char '%s'", c == '"' ? "\"" : "'");
            tok *k = emit(L, T_STRING, i);
            decode_string(L, k, i + 1, j);
            i = j + 1;
        } else {
            size_t o;
            for (o = 0; o < sizeof operators / sizeof *operators; o++) {
                size_t len = strlen(operators[o].s);
                if (n - i >= len && !memcmp(s + i, operators[o].s, len))
                    break;
            }
            if (o == sizeof operators / sizeof *operators) {
                char ch[8] = {0};
                memcpy(ch, s + i, (size_t)(kv_utf8_lead_len(c) ? kv_utf8_lead_len(c) : 1) < n - i ? (size_t)(kv_utf8_lead_len(c) ? kv_utf8_lead_len(c) : 1) : n - i);
                lex_fail(L, i, "unexpected char '%s'", ch);
            }
            int type = operators[o].type;
            if (type == T_LBRACE || type == T_LPAREN || type == T_LBRACKET) {
                if (depth == MAX_BRACKETS)
                    lex_fail(L, i, "%s", "brackets nested too deeply");
                stack[depth++] = type == T_LBRACE ? '}' : type == T_LPAREN ? ')' : ']';
            } else if (type == T_RBRACE || type == T_RPAREN || type == T_RBRACKET) {
                char ch[16];
                snprintf(ch, sizeof ch, "%c', expected '%c", (char)c, depth ? stack[depth - 1] : '?');
                if (!depth)
                    lex_fail(L, i, "unexpected '%s'", (char[]){(char)c, 0});
                if (stack[--depth] != (char)c)
                    lex_fail(L, i, "unexpected '%s'", ch);
            }
            emit(L, type, i);
            i += strlen(operators[o].s);
        }
    }
}

void tpl_lex(tpl_arena *a, tpl_fail_ctx *fc, const char *src, size_t len, tok_array *out)
{
    lexer L = {.a = a, .fc = fc, .s = src, .n = len, .out = out, .line_starting = 1, .line = 1, .col = 1};
    while (L.pos < L.n) {
        const char *s = L.s;
        size_t t = L.pos;
        while (t + 1 < L.n && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')))
            t++;
        if (t + 1 >= L.n) {
            emit_data(&L, L.pos, L.n);
            break;
        }
        char kind = s[t + 1];
        char sign = t + 2 < L.n && (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        size_t after = t + 2 + (sign ? 1 : 0);
        size_t raw_end = kind == '%' ? match_raw_begin(&L, after) : 0;
        emit_data(&L, L.pos, strip_before_tag(&L, L.pos, t, sign, kind == '{'));
        if (raw_end) {
            L.line_starting = s[raw_end - 1] == '\n';
            lex_raw_body(&L, raw_end);
        } else if (kind == '#') {
            lex_comment(&L, after);
        } else {
            emit(&L, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, t);
            L.pos = after;
            L.line_starting = 0;
            lex_tag(&L, kind == '%');
        }
    }
    emit(&L, T_EOF, L.n);
}
