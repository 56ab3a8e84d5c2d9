/* Error codes with a human message. Every fallible function returns an int
 * (0 = KV_OK, negative = a kv_code) and fills a caller-owned kv_err. */
#ifndef KV_ERR_H
#define KV_ERR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kv_code {
    KV_OK = 0,
    KV_EINVAL = -1,      /* bad argument or flag */
    KV_EIO = -2,         /* file or socket I/O failed */
    KV_ENOMEM = -3,      /* allocation failed */
    KV_EFORMAT = -4,     /* malformed input (file, message) */
    KV_EUNSUPPORTED = -5,
    KV_EFULL = -6,       /* no free KV blocks / context full */
    KV_ERANGE = -7,      /* value out of range */
    KV_ENOTFOUND = -8,
    KV_ETIMEOUT = -9,
    KV_ESTATE = -10,     /* call not valid in this state */
};

typedef struct kv_err {
    int code;
    char msg[512];
} kv_err;

/* Records code + printf-style message in err (may be NULL); returns code. */
int kv_err_set(kv_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to an existing message (adds context on the way up). */
int kv_err_wrap(kv_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kv_err_clear(kv_err *err);
const char *kv_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif
