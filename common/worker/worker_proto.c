#include "worker_proto.h"

#include <limits.h>

#include "kv_log.h"

int worker_sampling_from_proto(const Kvserve__SamplingParams *sp, kv_sampling_params *out, kv_err *err)
{
    kv_sampling_default(out);
    if (sp) {
        out->temperature = sp->temperature;
        out->top_k = sp->top_k > (uint32_t)INT_MAX ? INT_MAX : (int)sp->top_k;
        out->top_p = sp->top_p == 0.0f ? 1.0f : sp->top_p;
        out->seed = sp->seed;
    }
    return kv_sampling_validate(out, err);
}

void worker_error_init(Kvserve__Error *e, Kvserve__ErrorCode code, const char *request_id, const char *message)
{
    kvserve__error__init(e);
    e->code = code;
    e->request_id = (char *)(request_id ? request_id : "");
    e->message = (char *)(message ? message : "");
}

int worker_send(void *sock, const kv_wire_route *route, const Kvserve__Envelope *env, int timeout_ms,
                const char *comp, const char *what)
{
    kv_err err;
    int rc = kv_wire_send(sock, route, env, NULL, 0, timeout_ms, &err);
    if (rc)
        KV_WARN(comp, "msg=\"send failed\" what=%s err=\"%s\"", what, err.msg);
    return rc;
}

const char *worker_error_name(Kvserve__ErrorCode code)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&kvserve__error_code__descriptor, (int)code);
    return v ? v->name : "?";
}
