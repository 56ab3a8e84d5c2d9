/* SIGINT/SIGTERM -> a stop flag the event loops check: the workers exit cleanly (0). */
#ifndef KV_WORKER_SIGNAL_H
#define KV_WORKER_SIGNAL_H

/* Installs the handlers (without SA_RESTART, so a blocking zmq_poll returns EINTR). */
void worker_signals_install(void);
int worker_stopping(void);

#endif
