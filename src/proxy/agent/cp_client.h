/* The proxy's side of the control plane (docs/control-plane.md): bootstrap
 * (CSR + join token -> certificate), the config stream (hello, snapshots,
 * ACK/NACK), certificate renewal at about half-life, and the data directory
 * that lets a proxy restarted while reted is down serve its last good
 * configuration. Runs on the proxy's main loop; its jobs are split over
 * src/proxy/agent (cp_state.h lists them). */
#ifndef RETE_PROXY_CP_CLIENT_H
#define RETE_PROXY_CP_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct rete_proxy;

typedef struct rete_cp_opts {
    const char *server;         /* HOST:PORT of reted's proxy API */
    const char *token_file;     /* join token for the first certificate */
    const char *ca_file;        /* the mesh trust bundle, to verify reted */
    const char *data_dir;       /* certificate, key, bundle, last good config */
    const char *trust_domain;   /* reted's expected identity lives there */
    const char *ns;
    const char *sa;
    const char *name;
    const char *address;
    char *proxy_doc;            /* the Proxy document (text) every snapshot starts with */
    json_t *workload;           /* what hello announces */
    uint32_t stats_interval_s;  /* --stats-interval: golden summaries; 0 none (cp_golden.c) */
} rete_cp_opts;

/* Start: serve the last good configuration from the data directory if there
 * is one, bootstrap an identity if there is none, and keep a config stream
 * to reted (reconnecting with jittered exponential backoff). Returns -1 when
 * nothing can start (no certificate and no token). */
int rete_cp_start(struct rete_proxy *p, rete_cp_opts *opts);
/* The app's readiness changed (app_probe.h): tell reted at once when
 * connected (else the next hello says it). */
void rete_cp_report_ready(struct rete_proxy *p, bool ready);
/* Tell reted we are going (deregister now), then stop. */
void rete_cp_drain(struct rete_proxy *p);

#endif
