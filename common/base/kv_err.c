#include "kv_err.h"

#include <stdio.h>
#include <string.h>

int kv_err_set(kv_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int kv_err_wrap(kv_err *err, const char *fmt, ...)
{
    if (!err)
        return KV_EINVAL;
    char prefix[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation is acceptable: the message is for humans. */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->code;
}

void kv_err_clear(kv_err *err)
{
    if (err) {
        err->code = KV_OK;
        err->msg[0] = '\0';
    }
}

const char *kv_code_name(int code)
{
    switch (code) {
    case KV_OK: return "ok";
    case KV_EINVAL: return "invalid_argument";
    case KV_EIO: return "io_error";
    case KV_ENOMEM: return "out_of_memory";
    case KV_EFORMAT: return "bad_format";
    case KV_EUNSUPPORTED: return "unsupported";
    case KV_EFULL: return "full";
    case KV_ERANGE: return "out_of_range";
    case KV_ENOTFOUND: return "not_found";
    case KV_ETIMEOUT: return "timeout";
    case KV_ESTATE: return "bad_state";
    default: return "unknown";
    }
}
