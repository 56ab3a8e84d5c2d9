#include "engine_kv_flags.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const flags[] = {"kv-dtype", "kv-residual", "kv-group", "kv-keys"};

int kv_engine_is_kv_flag(const char *flag)
{
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (!strcmp(flag, flags[i]))
            return 1;
    return 0;
}

/* A decimal int in [lo, hi]. */
static int parse_int(const char *flag, const char *s, long lo, long hi, int *out, kv_err *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return kv_err_set(err, KV_EINVAL, "--%s wants an integer in %ld..%ld, got '%s'", flag, lo, hi, s);
    *out = (int)v;
    return KV_OK;
}

int kv_engine_kv_flag(kv_engine_options *o, const char *flag, const char *value, kv_err *err)
{
    if (!strcmp(flag, "kv-dtype")) {
        kv_cache_dtype dt;
        if (kv_cache_dtype_parse(value, &dt))
            return kv_err_set(err, KV_EINVAL, "--kv-dtype must be f32, f16, bf16, int8, int4 or int2, got '%s'", value);
        o->kv_dtype = dt;
        return KV_OK;
    }
    if (!strcmp(flag, "kv-residual"))
        return parse_int(flag, value, 0, 1 << 20, &o->kv_residual, err);
    if (!strcmp(flag, "kv-group"))
        return parse_int(flag, value, 1, 1 << 16, &o->kv_group, err);
    if (!strcmp(flag, "kv-keys")) {
        if (!strcmp(value, "channel"))
            o->kv_keys = KV_KEYS_PER_CHANNEL;
        else if (!strcmp(value, "token"))
            o->kv_keys = KV_KEYS_PER_TOKEN;
        else
            return kv_err_set(err, KV_EINVAL, "--kv-keys must be channel or token, got '%s'", value);
        return KV_OK;
    }
    return kv_err_set(err, KV_EINVAL, "--%s is not a KV cache flag", flag);
}
