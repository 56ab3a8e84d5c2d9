/* kv-bench-zmq-curve: what CURVE costs on the zmq KV path. The same KV-shaped messages as
 * kv-bench-zmq (a header frame + 8 block frames, DEALER -> ROUTER over loopback TCP, the
 * receiver in another thread), once in plain TCP and once with CURVE (each frame encrypted
 * and authenticated by libsodium's crypto_box). The handshake (and ZAP) happen once per
 * connection, before the timed part: this is the steady-state cost per byte.
 * usage: kv-bench-zmq-curve [MB per measurement, default 512] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_time.h"

typedef struct run { void *sock; int messages; int failed; } run;

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
                r->failed = 1;
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

static double measure(void *ctx, int curve, size_t frame_bytes, int frames, int messages)
{
    char spub[41], ssec[41], cpub[41], csec[41];
    zmq_curve_keypair(spub, ssec);
    zmq_curve_keypair(cpub, csec);
    run r = {zmq_socket(ctx, ZMQ_ROUTER), messages, 0};
    int hwm = 0, one = 1;
    zmq_setsockopt(r.sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (curve) {
        zmq_setsockopt(r.sock, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(r.sock, ZMQ_CURVE_SECRETKEY, ssec, 40);
    }
    char endpoint[256];
    size_t ep_len = sizeof endpoint;
    if (zmq_bind(r.sock, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(r.sock, ZMQ_LAST_ENDPOINT, endpoint, &ep_len) != 0) {
        fprintf(stderr, "kv-bench-zmq-curve: bind: %s\n", zmq_strerror(zmq_errno()));
        zmq_close(r.sock);
        return 0;
    }
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (curve) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, spub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csec, 40);
    }
    zmq_connect(s, endpoint);
    /* The handshake first, out of the timed part: one message there and back is not needed,
     * a first message received is enough (the receiver counts it as message 0). */
    pthread_t th;
    pthread_create(&th, NULL, receiver, &r);
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
    pthread_join(th, NULL);
    double t = kv_now_s() - t0;
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s);
    free(block);
    if (r.failed) {
        fprintf(stderr, "kv-bench-zmq-curve: %s: the receiver saw nothing for 10 s\n", endpoint);
        return 0;
    }
    return (double)frame_bytes * frames * messages / t / 1e9;
}

int main(int argc, char **argv)
{
    double mb = argc > 1 ? atof(argv[1]) : 512;
    if (!(mb >= 1 && mb <= 1e6)) {
        fprintf(stderr, "usage: kv-bench-zmq-curve [MB per measurement, 1..1e6]\n");
        return 2;
    }
    if (!zmq_has("curve")) {
        fprintf(stderr, "kv-bench-zmq-curve: this ZeroMQ has no CURVE\n");
        return 1;
    }
    void *ctx = zmq_ctx_new();
    const struct { const char *what; size_t bytes; } sizes[] = {
        {"stories260K block (20 KiB)", 20480}, {"stories110m block (1.125 MiB)", 1179648},
    };
    printf("| frame | frames/msg | plain GB/s | CURVE GB/s | CURVE/plain |\n|---|---|---|---|---|\n");
    for (int i = 0; i < 2; i++) {
        int frames = 8;
        int messages = (int)(mb * 1e6 / ((double)sizes[i].bytes * frames)) + 1;
        double best[2] = {0, 0};
        for (int rep = 0; rep < 3; rep++)
            for (int curve = 0; curve < 2; curve++) {
                double g = measure(ctx, curve, sizes[i].bytes, frames, messages);
                if (g > best[curve]) best[curve] = g;
            }
        printf("| %s | %d | %.2f | %.2f | %.2f |\n", sizes[i].what, frames, best[0], best[1],
               best[0] > 0 ? best[1] / best[0] : 0);
    }
    zmq_ctx_term(ctx);
    return 0;
}
