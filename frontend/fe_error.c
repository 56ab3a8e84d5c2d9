/* OpenAI-shaped errors (fe_error.h). */
#include "fe_error.h"

#include <stdarg.h>
#include <stdio.h>

#include "kv_client.h"

int fe_fail(fe_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type ? type : "");
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

void fe_error_from_router(fe_error *e, int error_code, const char *message)
{
    int status = 500;
    const char *type = "internal_server_error", *code = kv_client_error_name(error_code);
    switch (error_code) {
    case KVC_ERR_INVALID_ARGUMENT:
    case KVC_ERR_BAD_MESSAGE:
        status = 400, type = "invalid_request_error";
        break;
    case KVC_ERR_PROMPT_TOO_LONG:
        status = 400, type = "invalid_request_error", code = "context_length_exceeded";
        break;
    case KVC_ERR_UNKNOWN_MODEL:
        status = 404, type = "invalid_request_error", code = "model_not_found";
        break;
    case KVC_ERR_NO_CAPACITY:
        status = 429, type = "rate_limit_exceeded";
        break;
    case KVC_ERR_WORKER_FAILED:
    case KVC_ERR_NO_TRANSPORT:
    case KVC_ERR_DISCONNECTED:
    case KVC_ERR_KV_SESSION_UNKNOWN:
        status = 503, type = "service_unavailable";
        break;
    case KVC_ERR_DEADLINE_EXCEEDED:
    case KVC_ERR_TIMEOUT:
        status = 504, type = "timeout";
        break;
    default: break;
    }
    fe_fail(e, status, type, "", code, "%s", message && *message ? message : kv_client_error_name(error_code));
}
