/* String operations as Python's str methods do them over code points: whitespace is Python's
 * (str.isspace), case mapping is Unicode's (utf8proc; Python's one-to-many special cases such
 * as "ß".upper() == "SS" are not applied). */
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#include "kv_utf8.h"
#include "tpl_internal.h"

int tpl_py_isspace(uint32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

static int in_chars(uint32_t cp, const char *chars, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t c;
        i += kv_utf8_next(chars + i, n - i, &c);
        if (c == cp)
            return 1;
    }
    return 0;
}

static int strip_this(uint32_t cp, const char *chars, size_t nchars)
{
    return chars ? in_chars(cp, chars, nchars) : tpl_py_isspace(cp);
}

tv tpl_str_strip(tpl_rt *rt, tv s, const char *chars, size_t nchars, int left, int right)
{
    (void)rt;
    const char *p = s.u.s.p;
    size_t b = 0, e = s.u.s.n;
    while (left && b < e) {
        uint32_t cp;
        size_t len = kv_utf8_next(p + b, e - b, &cp);
        if (!strip_this(cp, chars, nchars))
            break;
        b += len;
    }
    while (right && e > b) {
        size_t st = e - 1;
        while (st > b && ((unsigned char)p[st] & 0xC0) == 0x80)
            st--;
        uint32_t cp;
        kv_utf8_next(p + st, e - st, &cp);
        if (!strip_this(cp, chars, nchars))
            break;
        e = st;
    }
    return tv_str(p + b, e - b);
}

static int is_cased(uint32_t cp)
{
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

enum { C_UPPER, C_LOWER, C_TITLE, C_KEEP };

/* Python's one-to-many mappings (Unicode SpecialCasing.txt) for the characters text is likely
 * to hold; each is no longer in UTF-8 than its source plus one byte. */
static const char *special_case(uint32_t cp, int mode)
{
    static const struct { uint32_t cp; const char *upper, *title, *lower; } table[] = {
        {0x00DF, "SS", "Ss", NULL},          /* ß */
        {0x0130, NULL, NULL, "i\xCC\x87"},  /* İ */
        {0x0149, "\xCA\xBCN", "\xCA\xBCN", NULL}, /* ŉ */
        {0xFB00, "FF", "Ff", NULL}, {0xFB01, "FI", "Fi", NULL}, {0xFB02, "FL", "Fl", NULL},
        {0xFB03, "FFI", "Ffi", NULL}, {0xFB04, "FFL", "Ffl", NULL}, {0xFB05, "ST", "St", NULL},
        {0xFB06, "ST", "St", NULL},
    };
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (table[i].cp == cp)
            return mode == C_UPPER ? table[i].upper : mode == C_TITLE ? table[i].title : mode == C_LOWER ? table[i].lower : NULL;
    return NULL;
}

/* Rewrites s code point by code point; mode(i, cp, state) picks each one's mapping. */
typedef int (*case_rule)(size_t i, uint32_t cp, int *state);

static tv map_case(tpl_rt *rt, tv s, case_rule rule)
{
    size_t n = s.u.s.n;
    if (n > rt->lim->max_string / 2)
        tpl_rt_fail_code(rt, KV_ERANGE, "string size limit of %zu bytes exceeded", rt->lim->max_string);
    char *o = tpl_alloc(rt->ar, n * 2 + 8), *q = o; /* a case mapping grows a code point by at most one byte */
    int state = 0;
    for (size_t i = 0, k = 0; i < n; k++) {
        uint32_t cp;
        i += kv_utf8_next(s.u.s.p + i, n - i, &cp);
        int m = rule(k, cp, &state);
        const char *special = special_case(cp, m);
        if (special) {
            size_t len = strlen(special);
            memcpy(q, special, len);
            q += len;
            continue;
        }
        uint32_t r = m == C_UPPER   ? (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp)
                     : m == C_LOWER ? (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp)
                     : m == C_TITLE ? (uint32_t)utf8proc_totitle((utf8proc_int32_t)cp)
                                    : cp;
        q += kv_utf8_put(q, r);
    }
    return tv_str(o, (size_t)(q - o));
}

static int rule_upper(size_t i, uint32_t cp, int *st) { (void)i, (void)cp, (void)st; return C_UPPER; }
static int rule_lower(size_t i, uint32_t cp, int *st) { (void)i, (void)cp, (void)st; return C_LOWER; }
static int rule_capitalize(size_t i, uint32_t cp, int *st) { (void)cp, (void)st; return i ? C_LOWER : C_TITLE; }

/* str.title(): title-case a cased character after an uncased one, lower-case the rest. */
static int rule_title_py(size_t i, uint32_t cp, int *prev_cased)
{
    (void)i;
    int m = *prev_cased ? C_LOWER : C_TITLE;
    *prev_cased = is_cased(cp);
    return m;
}

/* The title filter: words split at runs of [-\s({\[<]; each word's first character upper-cased,
 * the rest lower-cased. */
static int rule_title_jinja(size_t i, uint32_t cp, int *in_word)
{
    (void)i;
    if (tpl_py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<') {
        *in_word = 0;
        return C_KEEP;
    }
    int m = *in_word ? C_LOWER : C_UPPER;
    *in_word = 1;
    return m;
}

tv tpl_str_upper(tpl_rt *rt, tv s) { return map_case(rt, s, rule_upper); }
tv tpl_str_lower(tpl_rt *rt, tv s) { return map_case(rt, s, rule_lower); }
tv tpl_str_capitalize(tpl_rt *rt, tv s) { return map_case(rt, s, rule_capitalize); }
tv tpl_str_title_py(tpl_rt *rt, tv s) { return map_case(rt, s, rule_title_py); }
tv tpl_str_title_jinja(tpl_rt *rt, tv s) { return map_case(rt, s, rule_title_jinja); }

tv tpl_str_replace(tpl_rt *rt, tv s, tv old, tv new_, int64_t count)
{
    tpl_out o;
    tpl_out_init(&o, rt->lim->max_string);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, i = 0;
    if (!old.u.s.n) { /* Python inserts new_ between every code point and at both ends */
        for (int64_t done = 0;; done++) {
            if (count >= 0 && done >= count) {
                tpl_out_append(rt, &o, p + i, n - i);
                break;
            }
            tpl_out_append(rt, &o, new_.u.s.p, new_.u.s.n);
            if (i >= n)
                break;
            size_t b = i++;
            while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80)
                i++;
            tpl_out_append(rt, &o, p + b, i - b);
            tpl_count_iteration(rt);
        }
        return tpl_out_str(&o);
    }
    for (int64_t done = 0; count < 0 || done < count; done++) {
        const char *hit = memmem(p + i, n - i, old.u.s.p, old.u.s.n);
        if (!hit)
            break;
        tpl_out_append(rt, &o, p + i, (size_t)(hit - (p + i)));
        tpl_out_append(rt, &o, new_.u.s.p, new_.u.s.n);
        i = (size_t)(hit - p) + old.u.s.n;
    }
    tpl_out_append(rt, &o, p + i, n - i);
    return o.p ? tpl_out_str(&o) : tv_str("", 0);
}

static size_t space_len_at(const char *p, size_t n, size_t i)
{
    uint32_t cp;
    size_t len = kv_utf8_next(p + i, n - i, &cp);
    return tpl_py_isspace(cp) ? len : 0;
}

static size_t space_len_before(const char *p, size_t e)
{
    size_t st = e - 1;
    while (st > 0 && ((unsigned char)p[st] & 0xC0) == 0x80)
        st--;
    uint32_t cp;
    kv_utf8_next(p + st, e - st, &cp);
    return tpl_py_isspace(cp) ? e - st : 0;
}

static void reverse_list(tlist *l)
{
    for (size_t i = 0, j = l->n ? l->n - 1 : 0; i < j; i++, j--) {
        tv t = l->items[i];
        l->items[i] = l->items[j];
        l->items[j] = t;
    }
}

tlist *tpl_str_split(tpl_rt *rt, tv s, tv sep, int64_t maxsplit, int from_right)
{
    tlist *l = tl_new(rt->ar, 0);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n;
    if (sep.t == V_STR && !sep.u.s.n)
        tpl_rt_fail(rt, "ValueError: empty separator");
    if (sep.t != V_STR) { /* runs of whitespace; none at the ends */
        if (!from_right) {
            size_t i = 0;
            for (;;) {
                size_t k;
                while (i < n && (k = space_len_at(p, n, i)))
                    i += k;
                if (i >= n)
                    break;
                if (maxsplit >= 0 && (int64_t)l->n >= maxsplit) { /* the rest, trailing space and all */
                    tl_push(rt->ar, l, tv_str(p + i, n - i));
                    break;
                }
                size_t b = i;
                while (i < n && !space_len_at(p, n, i))
                    i += kv_utf8_lead_len((unsigned char)p[i]) ? (size_t)kv_utf8_lead_len((unsigned char)p[i]) : 1;
                if (i > n)
                    i = n;
                tl_push(rt->ar, l, tv_str(p + b, i - b));
                tpl_count_iteration(rt);
            }
        } else {
            size_t e = n;
            for (;;) {
                size_t k;
                while (e > 0 && (k = space_len_before(p, e)))
                    e -= k;
                if (!e)
                    break;
                if (maxsplit >= 0 && (int64_t)l->n >= maxsplit) { /* the rest, leading space and all */
                    tl_push(rt->ar, l, tv_str(p, e));
                    break;
                }
                size_t end = e;
                while (e > 0 && !space_len_before(p, e)) {
                    e--;
                    while (e > 0 && ((unsigned char)p[e] & 0xC0) == 0x80)
                        e--;
                }
                tl_push(rt->ar, l, tv_str(p + e, end - e));
                tpl_count_iteration(rt);
            }
            reverse_list(l);
        }
        return l;
    }
    const char *q = sep.u.s.p;
    size_t m = sep.u.s.n;
    if (!from_right) {
        size_t i = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || (int64_t)l->n < maxsplit) ? memmem(p + i, n - i, q, m) : NULL;
            if (!hit) {
                tl_push(rt->ar, l, tv_str(p + i, n - i));
                break;
            }
            tl_push(rt->ar, l, tv_str(p + i, (size_t)(hit - (p + i))));
            i = (size_t)(hit - p) + m;
            tpl_count_iteration(rt);
        }
    } else {
        size_t e = n;
        for (;;) {
            size_t hit = (size_t)-1;
            if (maxsplit < 0 || (int64_t)l->n < maxsplit)
                for (size_t j = e >= m ? e - m + 1 : 0; j-- > 0;)
                    if (!memcmp(p + j, q, m)) {
                        hit = j;
                        break;
                    }
            if (hit == (size_t)-1) {
                tl_push(rt->ar, l, tv_str(p, e));
                break;
            }
            tl_push(rt->ar, l, tv_str(p + hit + m, e - hit - m));
            e = hit;
            tpl_count_iteration(rt);
        }
        reverse_list(l);
    }
    return l;
}

/* str.splitlines: \n \r \r\n \v \f \x1c \x1d \x1e \x85 \u2028 \u2029 end lines. */
tlist *tpl_str_splitlines(tpl_rt *rt, tv s, int keepends)
{
    tlist *l = tl_new(rt->ar, 0);
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, b = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = kv_utf8_next(p + i, n - i, &cp);
        int brk = cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f' || (cp >= 0x1c && cp <= 0x1e) || cp == 0x85 ||
                  cp == 0x2028 || cp == 0x2029;
        if (!brk) {
            i += len;
            continue;
        }
        size_t eol = i + len;
        if (cp == '\r' && eol < n && p[eol] == '\n')
            eol++;
        tl_push(rt->ar, l, tv_str(p + b, (keepends ? eol : i) - b));
        tpl_count_iteration(rt);
        i = b = eol;
    }
    if (b < n)
        tl_push(rt->ar, l, tv_str(p + b, n - b));
    return l;
}
