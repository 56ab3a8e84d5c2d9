#include "worker_signal.h"

#include <signal.h>
#include <string.h>

/* The one global of the workers: written only by the signal handler. */
static volatile sig_atomic_t g_worker_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_worker_stop = 1;
}

void worker_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int worker_stopping(void) { return g_worker_stop != 0; }
