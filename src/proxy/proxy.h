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
} rete_proxy;

extern rete_proxy *rete_the_proxy;

/* Build the TLS contexts a snapshot names; NULL with err on failure. */
rete_tls_set *rete_tls_set_build(const rete_config *cfg, char *err, size_t errlen);

#endif
