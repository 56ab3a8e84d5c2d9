/* kv-bench-zmq: ZeroMQ loopback bandwidth for KV-shaped messages (a small header frame +
 * n block frames, zero-copy on send), DEALER -> ROUTER like prefill -> decode, with the
 * receiver in another thread. The floor that KV transfer GB/s is compared against; then
 * what CURVE costs on that path (each frame encrypted and authenticated by libsodium's
 * crypto_box), plain and CURVE over TCP side by side. The handshake (and ZAP) happen once
 * per connection, before the timed part: this is the steady-state cost per byte. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_time.h"

typedef struct run { void *sock; int messages; int failed; } run;

/* Bound before the sender connects (in the caller's thread), handed over to this thread. */
static void *receiver(void *p)
{
    run *r = p;
    int timeout = 10000;
    zmq_setsockopt(r->sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    for (int m = 0; m <= r->messages && !r->failed; m++) {
        int more = 1;
        while (more) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, r->sock, 0) < 0) {
                r->failed = 1; /* nothing for 10 s: report instead of hanging */
                zmq_msg_close(&msg);
                break;
            }
            more = zmq_msg_more(&msg);
            zmq_msg_close(&msg);
        }
    }
    zmq_close(r->sock);
    return NULL;
}

static double measure(void *ctx, const char *bind_ep, int curve, size_t frame_bytes, int frames, int messages)
{
    char spub[41], ssec[41], cpub[41], csec[41];
    run r = {zmq_socket(ctx, ZMQ_ROUTER), messages, 0};
    int hwm = 0, one = 1;
    zmq_setsockopt(r.sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (curve) {
        zmq_curve_keypair(spub, ssec);
        zmq_curve_keypair(cpub, csec);
        zmq_setsockopt(r.sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(r.sock, ZMQ_CURVE_SECRETKEY, ssec, 40);
    }
    char endpoint[256];
    size_t ep_len = sizeof endpoint;
    if (zmq_bind(r.sock, bind_ep) != 0 || zmq_getsockopt(r.sock, ZMQ_LAST_ENDPOINT, endpoint, &ep_len) != 0) {
        fprintf(stderr, "kv-bench-zmq: bind %s: %s\n", bind_ep, zmq_strerror(zmq_errno()));
        zmq_close(r.sock);
        return 0;
    }
    pthread_t th;
    pthread_create(&th, NULL, receiver, &r);
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (curve) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, spub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csec, 40);
    }
    zmq_connect(s, endpoint);
    char *block = malloc(frame_bytes);
    for (size_t i = 0; i < frame_bytes; i++) block[i] = (char)(i * 131);
    zmq_send(s, "hello", 5, 0);
    double t0 = kv_now_s();
    for (int m = 0; m < messages; m++) {
        zmq_send(s, "header-of-a-kv-chunk", 20, ZMQ_SNDMORE);
        for (int f = 0; f < frames; f++) {
            zmq_msg_t msg;
            zmq_msg_init_data(&msg, block, frame_bytes, NULL, NULL);
            zmq_msg_send(&msg, s, f + 1 < frames ? ZMQ_SNDMORE : 0);
        }
    }
    pthread_join(th, NULL); /* the receiver has every byte */
    double t = kv_now_s() - t0;
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    free(block);
    if (r.failed) {
        fprintf(stderr, "kv-bench-zmq: %s: the receiver saw nothing for 10 s\n", endpoint);
        return 0;
    }
    return (double)frame_bytes * frames * messages / t / 1e9;
}

/* The best of 3 measurements. */
static double best_of_3(void *ctx, const char *ep, int curve, size_t bytes, int frames, int messages)
{
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double g = measure(ctx, ep, curve, bytes, frames, messages);
        if (g > best)
            best = g;
    }
    return best;
}

int main(void)
{
    void *ctx = zmq_ctx_new();
    const struct { const char *what; size_t bytes; } sizes[] = {
        {"stories260K block (20 KiB)", 20480}, {"stories110m block (1.125 MiB)", 1179648},
    };
    const char *eps[] = {"tcp://127.0.0.1:*", "ipc://*"};
    const int frames = 8;
    printf("| transport | frame | frames/msg | GB/s |\n|---|---|---|---|\n");
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 2; i++) {
            int messages = (int)(2e9 / ((double)sizes[i].bytes * frames)) + 1;
            printf("| %s | %s | %d | %.2f |\n", eps[e], sizes[i].what, frames,
                   best_of_3(ctx, eps[e], 0, sizes[i].bytes, frames, messages));
        }
    if (!zmq_has("curve")) {
        printf("\nthis ZeroMQ has no CURVE: its cost is not measured\n");
        zmq_ctx_term(ctx);
        return 0;
    }
    printf("\n| CURVE over %s | frames/msg | plain GB/s | CURVE GB/s | CURVE/plain |\n|---|---|---|---|---|\n", eps[0]);
    for (int i = 0; i < 2; i++) {
        int messages = (int)(512e6 / ((double)sizes[i].bytes * frames)) + 1;
        double plain = best_of_3(ctx, eps[0], 0, sizes[i].bytes, frames, messages);
        double curve = best_of_3(ctx, eps[0], 1, sizes[i].bytes, frames, messages);
        printf("| %s | %d | %.2f | %.2f | %.2f |\n", sizes[i].what, frames, plain, curve, plain > 0 ? curve / plain : 0);
    }
    zmq_ctx_term(ctx);
    return 0;
}
