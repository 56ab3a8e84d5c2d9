/* The wire layer every process shares: one protobuf Envelope per ZeroMQ multipart
 * message (after the ROUTER routing frame, when there is one), then optional raw payload
 * frames (KV blocks). Version checks, deadlines and malformed input are handled here so
 * callers only ever see a valid envelope or an error. */
#ifndef KV_WIRE_H
#define KV_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "kv_err.h"
#include "kvserve.pb-c.h"

#define KV_WIRE_VERSION KVSERVE__PROTOCOL_VERSION__PROTOCOL_VERSION_CURRENT
#define KV_WIRE_MAX_ROUTE 255 /* ZeroMQ routing ids are at most 255 bytes */

typedef struct kv_wire_route {
    unsigned char id[KV_WIRE_MAX_ROUTE];
    size_t len;    /* 0 = no routing frame (DEALER side) */
    char peer[64]; /* the sender's IP address as ZeroMQ saw it ("" when unknown, e.g. ipc) */
    char user[41]; /* the sender's CURVE public key (Z85) as the ZAP handler named it; "" without CURVE */
} kv_wire_route;

typedef struct kv_wire_payload {
    const void *data;
    size_t len;
    /* Hand ZeroMQ the bytes without copying: they must stay unchanged until `released` is
     * called (from ZeroMQ's I/O thread, exactly once per frame, also when sending fails). */
    int zero_copy;
    void (*released)(void *data, void *hint);
    void *hint;
} kv_wire_payload;

typedef struct kv_wire_msg {
    kv_wire_route route;
    Kvserve__Envelope *env; /* unpacked; freed by kv_wire_msg_close */
    zmq_msg_t *payloads;    /* raw frames after the envelope */
    size_t n_payloads;
} kv_wire_msg;

/* Initialises an envelope of the current version (body set by the caller). */
void kv_wire_envelope_init(Kvserve__Envelope *env);

/* Sends [route] envelope [payloads...]. Blocks at most timeout_ms (-1 = forever) when
 * the peer's queue is full: KV_ETIMEOUT then. */
int kv_wire_send(void *sock, const kv_wire_route *route, const Kvserve__Envelope *env, const kv_wire_payload *payloads,
                 size_t n_payloads, int timeout_ms, kv_err *err);

/* Receives one message within timeout_ms (-1 = forever, 0 = poll). Returns KV_OK,
 * KV_ETIMEOUT (nothing arrived), KV_EFORMAT (a message arrived but was malformed: it has
 * been consumed, and out->route says who sent it, so the caller can reply with an error),
 * or KV_EUNSUPPORTED (protocol version mismatch; same). with_route: expect a routing frame. */
int kv_wire_recv(void *sock, int with_route, int timeout_ms, kv_wire_msg *out, kv_err *err);
void kv_wire_msg_close(kv_wire_msg *m);
/* The envelope check of kv_wire_recv on one frame's bytes: KV_OK (*out to free with
 * kvserve__envelope__free_unpacked), KV_EFORMAT or KV_EUNSUPPORTED, *out NULL then. */
int kv_wire_decode(const void *data, size_t len, Kvserve__Envelope **out, kv_err *err);

/* Convenience: an Error envelope to `route`. */
int kv_wire_send_error(void *sock, const kv_wire_route *route, Kvserve__ErrorCode code, const char *request_id,
                       const char *message, kv_err *err);

/* CRC-32C (Castagnoli), for KV block checksums. */
uint32_t kv_crc32c(const void *data, size_t len);

#endif
