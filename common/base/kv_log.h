/* Structured logging: one line per event, "ts=... level=... comp=... msg=... k=v".
 * The level threshold comes from KVSERVE_LOG (debug|info|warn|error), read once
 * per call site's process via kv_log_level(); logs go to stderr. */
#ifndef KV_LOG_H
#define KV_LOG_H

enum kv_log_level { KV_LOG_DEBUG = 0, KV_LOG_INFO, KV_LOG_WARN, KV_LOG_ERROR };

void kv_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define KV_DEBUG(comp, ...) kv_log(KV_LOG_DEBUG, comp, __VA_ARGS__)
#define KV_INFO(comp, ...) kv_log(KV_LOG_INFO, comp, __VA_ARGS__)
#define KV_WARN(comp, ...) kv_log(KV_LOG_WARN, comp, __VA_ARGS__)
#define KV_ERROR(comp, ...) kv_log(KV_LOG_ERROR, comp, __VA_ARGS__)

#endif
