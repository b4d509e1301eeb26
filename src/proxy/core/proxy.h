/* The proxy process: configuration source, worker threads, signals. */
#ifndef RETE_PROXY_PROXY_H
#define RETE_PROXY_PROXY_H

#include "config-t.h"
#include "error.h"
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
    atomic_bool app_ready;       /* the app's readiness probe (app_probe.h); true without one */
    rete_metrics *metrics;       /* the process registry: families declared once in main */
    rete_mesh_metrics *mm;
    rete_proxy_series ms;        /* fixed series, resolved before the workers start */
    rete_metrics_shard *main_shard; /* the main thread's counts (reloads) */
    char last_reload_error[1024];
    uint64_t started_unix;
    rete_io_loop iol;            /* the main loop's buffers (control-plane client) */
    char **child_argv;           /* run mode: started once the proxy is ready */
    bool started;                /* workers running */
    void (*on_drain)(struct rete_proxy *p); /* set by main.c: tell the control plane we go */
    /* set by main.c: what starts with the first snapshot on the main loop
     * (the DNS listener); -1 fails the start */
    int (*on_start)(struct rete_proxy *p);
    struct rete_external *external; /* externalName resolutions (external.h), main thread */
    /* set by main.c: the app's readiness changed (app_probe.h) */
    void (*on_app_ready)(struct rete_proxy *p, bool ready);
} rete_proxy;

extern rete_proxy *rete_the_proxy;

/* Put a snapshot in service: the first one starts the workers (and the app
 * in run mode); later ones are handed to every worker as a new generation.
 * Takes the references. Returns -1 when the workers cannot start. */
int rete_proxy_install(rete_proxy *p, rete_config *cfg, rete_tls_set *tls);
/* Whether `cfg` can replace the running snapshot: listeners are bound and
 * workers started once, so a snapshot that moves, adds or drops a listener
 * or changes the worker count would be accepted but not applied. Fails
 * (RETE_ESTATE) with err naming the field (the caller rejects the snapshot
 * whole). */
RETE_MUST_CHECK rete_rc rete_proxy_can_reload(const rete_proxy *p, const rete_config *cfg, rete_error *err);

/* Create the registry, declare the families and resolve the fixed series.
 * Aborts on failure (start-up only). */
void rete_proxy_metrics_init(rete_proxy *p);
void rete_proxy_metrics_free(rete_proxy *p);
/* rete_proxy_cert_expiry_timestamp_seconds from the PEM certificate at path
 * (main thread; a file that cannot be read leaves the gauge as it was). */
void rete_proxy_metrics_cert(rete_proxy *p, const char *path);
/* Count a configuration reload (main thread). */
void rete_proxy_count_reload(rete_proxy *p, bool ok);

/* Build the TLS contexts a snapshot names; NULL with err on failure. */
rete_tls_set *rete_tls_set_build(const rete_config *cfg, rete_error *err);

/* Drain: stop accepting, finish in-flight requests, stop the main loop once
 * every worker (and the app, in run mode) has stopped. Once. */
void rete_proxy_drain(rete_proxy *p);
/* The drain poll timer, on p->loop: set up before, closed after the run. */
void rete_proxy_process_init(rete_proxy *p);
void rete_proxy_process_close(rete_proxy *p);
/* Pass `sig` to the app started in run mode; false when none is running. */
bool rete_proxy_signal_child(rete_proxy *p, int sig);
/* The app's exit code (128+signal when killed), -1 while it has not exited. */
int rete_proxy_child_exit_code(void);

#endif
