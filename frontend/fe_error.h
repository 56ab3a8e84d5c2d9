/* An error as the OpenAI API reports it: an HTTP status and
 * {"error": {"message", "type", "param", "code"}}. */
#ifndef FE_ERROR_H
#define FE_ERROR_H

typedef struct fe_error {
    int status;        /* HTTP status; 0 = no error */
    char type[40];     /* "invalid_request_error", ... */
    char param[64];    /* the offending field, "" = null */
    char code[40];     /* "" = null */
    char message[512];
} fe_error;

/* Fills e; returns -1 (for "return fe_fail(...)"). */
int fe_fail(fe_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* The status, type and code of a router error (kv_client.h KVC_ERR_*), with its message. */
void fe_error_from_router(fe_error *e, int error_code, const char *message);

#endif
