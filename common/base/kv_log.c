#include "kv_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int threshold_from_env(void)
{
    const char *v = getenv("KVSERVE_LOG");
    if (!v) return KV_LOG_INFO;
    if (!strcmp(v, "debug")) return KV_LOG_DEBUG;
    if (!strcmp(v, "warn")) return KV_LOG_WARN;
    if (!strcmp(v, "error")) return KV_LOG_ERROR;
    return KV_LOG_INFO;
}

void kv_log(int level, const char *component, const char *fmt, ...)
{
    /* getenv each call: logging is off the hot path and this keeps no global state. */
    if (level < threshold_from_env())
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level & 3], component);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && n < (int)sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
