/* The proxy process: configuration source, worker threads, signals. */
#ifndef RETE_PROXY_PROXY_H
#define RETE_PROXY_PROXY_H

#include "config-t.h"
#include "worker.h"

#include <stdatomic.h>
#include <uv.h>

typedef struct rete_proxy {
    const char *config_path;
    unsigned concurrency;
    rete_worker *workers;
    rete_config *cfg;            /* the main thread's reference to the current snapshot */
    rete_tls_set *tls;
    uv_loop_t *loop;             /* main thread: signals, reloads, the child process */
    uv_signal_t sigterm, sigint, sighup;
    atomic_bool ready;           /* listeners bound and configuration loaded */
    atomic_bool draining;
    atomic_uint_fast64_t reloads_ok;
    atomic_uint_fast64_t reloads_failed;
    char last_reload_error[1024];
    uint64_t started_unix;
    rete_io_loop iol;            /* the main loop's buffers (control-plane client) */
    char **child_argv;           /* run mode: started once the proxy is ready */
    bool started;                /* workers running */
} rete_proxy;

extern rete_proxy *rete_the_proxy;

/* Put a snapshot in service: the first one starts the workers (and the app
 * in run mode); later ones are handed to every worker as a new generation.
 * Takes the references. Returns -1 when the workers cannot start. */
int rete_proxy_install(rete_proxy *p, rete_config *cfg, rete_tls_set *tls);

/* Build the TLS contexts a snapshot names; NULL with err on failure. */
rete_tls_set *rete_tls_set_build(const rete_config *cfg, char *err, size_t errlen);

#endif
