/* Strict parsing of flag values for kvctl: the whole string must be a number in range,
 * else a message naming the flag goes to stderr. */
#ifndef KVCTL_ARGS_H
#define KVCTL_ARGS_H

#include <stddef.h>
#include <stdint.h>

int kvctl_parse_int(const char *flag, const char *s, long lo, long hi, long *out);
int kvctl_parse_u64(const char *flag, const char *s, uint64_t *out);
int kvctl_parse_float(const char *flag, const char *s, double lo, double hi, double *out);
/* "123", "64KiB", "8GiB", "1.5GB": bytes. */
int kvctl_parse_size(const char *flag, const char *s, size_t *out);

#endif
