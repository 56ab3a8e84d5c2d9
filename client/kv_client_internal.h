/* Library-internal glue between kv_client.c and kv_client_status.c (not installed). */
#ifndef KV_CLIENT_INTERNAL_H
#define KV_CLIENT_INTERNAL_H

#include "kv_client.h"
#include "kvserve.pb-c.h"

/* Deep-copies a StatusReply into a malloc'd kv_status: KVC_OK or KVC_ENOMEM. */
int kvc_status_from_proto(const Kvserve__StatusReply *p, kv_status **out);

#endif
