/* SIGINT/SIGTERM -> a stop flag the event loops check: the processes exit cleanly (0). */
#ifndef KV_SIGNAL_H
#define KV_SIGNAL_H

/* Installs the handlers (without SA_RESTART, so a blocking zmq_poll returns EINTR) and
 * ignores SIGPIPE. */
void kv_stop_signals_install(void);
int kv_stop_requested(void);

#endif
