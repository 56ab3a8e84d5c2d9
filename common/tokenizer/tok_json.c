/* Small typed accessors over the JSON DOM whose errors say which field is wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

int tok_json_opt_bool(const json_value *obj, const char *key, int def, int *out, const char *where,
                      kv_err *err)
{
    const json_value *v = json_get(obj, key);
    if (!v || v->type == JSON_NULL) {
        *out = def;
        return 0;
    }
    if (v->type != JSON_BOOL)
        return kv_err_set(err, KV_EFORMAT, "%s.%s: expected a bool, got %s", where, key,
                          json_type_name(v->type));
    *out = v->u.boolean;
    return 0;
}

int tok_json_string(const json_value *obj, const char *key, const char **out, size_t *len,
                    const char *where, kv_err *err)
{
    const json_value *v = json_get(obj, key);
    if (!v)
        return kv_err_set(err, KV_EFORMAT, "%s.%s: missing", where, key);
    if (v->type != JSON_STRING)
        return kv_err_set(err, KV_EFORMAT, "%s.%s: expected a string, got %s", where, key,
                          json_type_name(v->type));
    *out = v->u.str.s;
    *len = v->u.str.len;
    return 0;
}

int tok_json_type(const json_value *obj, const char **type, const char *where, kv_err *err)
{
    if (obj->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s: expected an object, got %s", where,
                          json_type_name(obj->type));
    size_t len;
    return tok_json_string(obj, "type", type, &len, where, err);
}

char *tok_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

int tok_json_pattern(const json_value *obj, pcre2_code **re, const char *where, kv_err *err)
{
    const json_value *p = json_get(obj, "pattern");
    if (!p || p->type != JSON_OBJECT)
        return kv_err_set(err, KV_EFORMAT, "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
    char pwhere[128];
    snprintf(pwhere, sizeof pwhere, "%s.pattern", where);
    const char *s;
    size_t len;
    int literal = json_get(p, "Regex") == NULL;
    int rc = tok_json_string(p, literal ? "String" : "Regex", &s, &len, pwhere, err);
    if (rc)
        return rc;
    return tok_regex_compile(s, len, literal, re, pwhere, err);
}
