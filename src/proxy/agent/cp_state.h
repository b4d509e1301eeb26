/* The control-plane agent's state and the calls between its jobs (internal
 * to src/proxy/agent; the rest of the proxy sees cp_client.h only).
 *
 * The agent is one object on the proxy's main loop, split by job:
 *
 *   cp_client.c  start and drain, the data directory's files
 *   cp_http.c    one HTTP/1.1-over-TLS exchange with reted (a one-shot
 *                answer, or the config stream's lines)
 *   cp_certs.c   identity: bootstrap (CSR + join token), renewal at about
 *                half-life, the trust bundle and the TLS contexts
 *   cp_stream.c  the config stream: hello, messages, ACK/NACK, pings,
 *                reconnecting with backoff
 *   cp_servers.c the replicas of reted (--control-plane's list): the one
 *                in use, the next one when an exchange fails
 *   cp_golden.c  the golden-metrics summary sent on the stream
 *   cp_tap.c     taps started by reted, their records sent up the stream
 *   cp_config.c  the resource set (snapshot_wire.h): whole snapshots and
 *                deltas built into a configuration and installed, saved for
 *                a restart while reted is away */
#ifndef RETE_PROXY_CP_STATE_H
#define RETE_PROXY_CP_STATE_H

#include "cp_client.h"
#include "proxy.h"
#include "snapshot_wire.h"

#include <uv.h>

#define CP_MAX_RESPONSE (8u << 20) /* an answer's body; a stream's pending line */
#define CP_MAX_SERVERS 16            /* replica addresses (--control-plane, names resolved) */

typedef struct cp_server {
    char ip[64];
    uint16_t port;
    char name[300]; /* as given (and the address a name resolved to): for logs */
} cp_server;

struct cp_http;
typedef struct cp_golden cp_golden;

typedef struct rete_cp {
    rete_proxy *p;
    rete_cp_opts *o;
    rete_tls_ctx *ctx_anon;      /* bootstrap: no client certificate */
    rete_tls_ctx *ctx_cert;      /* stream and renewal: the workload certificate */
    struct cp_http *stream;
    cp_server servers[CP_MAX_SERVERS];
    size_t n_servers;
    size_t cur;                  /* the replica every exchange goes to */
    uint64_t last_rx_ms;         /* the stream's last line (reted pings every 15 s) */
    uint64_t snapshot_hash;      /* reted's hash of the set in use: a hello names it to resume */
    bool connected;
    bool draining;
    uint32_t backoff_ms;
    uv_timer_t retry_timer;
    uv_timer_t renew_timer;
    uv_timer_t ping_timer;
    uv_timer_t stats_timer;      /* the golden-metrics summary (cp_golden.c) */
    cp_golden *golden;
    char *endpoints_sent;        /* the last "endpoints" message's shape reted got, NULL: none */
    uv_timer_t tap_timer;        /* sends captured tap records (cp_tap.c) */
    uint64_t tap_dropped_told;   /* tap records dropped, as last told to reted */
    uint64_t version;            /* last applied */
    int64_t cert_not_after;
    int64_t cert_not_before;
    int64_t renewed_for;         /* the last renewIssuedBefore honoured */
    char cert_path[4096];
    char key_path[4096];
    char bundle_path[4096];
    char config_path[4096];
    char *pending_key;           /* key of a certificate request in flight */
    bool pending_renewal;        /* that request renews (else bootstraps) */
    rete_wire_set set;           /* the resources in use, for applying deltas */
    rete_config *set_cfg;        /* the configuration the set's documents live in (a reference) */
} rete_cp;

/* cp_client.c: files of the data directory. write: atomic, logs a failure. */
int cp_write_file(const char *path, const char *data, size_t len, unsigned mode);
char *cp_read_file(const char *path, size_t *len);

/* cp_certs.c */
bool cp_certs_load(rete_cp *cp);                 /* the certificate on disk: its times */
void cp_certs_request(rete_cp *cp, bool renewal);
void cp_certs_schedule_renewal(rete_cp *cp);
void cp_certs_rebuild_contexts(rete_cp *cp);
/* What a config message says of trust: a new bundle (CA rotation) goes to
 * disk and into the contexts; renewIssuedBefore asks for a renewal. */
void cp_certs_on_message(rete_cp *cp, const char *bundle, int64_t renew_issued_before);

/* cp_servers.c: parse the list (resolving names: before the loop runs);
 * the replica in use; an exchange with it failed: move to the next. */
bool cp_servers_parse(rete_cp *cp, const char *list, rete_error *err);
const cp_server *cp_server_cur(const rete_cp *cp);
void cp_server_failed(rete_cp *cp);

/* cp_stream.c */
void cp_stream_connect(rete_cp *cp);
void cp_stream_schedule_retry(rete_cp *cp);
void cp_stream_send(rete_cp *cp, json_t *msg); /* takes msg's reference */
void cp_stream_start_timers(rete_cp *cp);

/* cp_golden.c: the summary's state; a reading of what grew since the last
 * one as a "stats" message (NULL when nothing did); the timer. */
cp_golden *cp_golden_new(void);
void cp_golden_free(cp_golden **g);
json_t *cp_golden_read(cp_golden *g, rete_proxy *p, uint32_t interval_s);
void cp_golden_start(rete_cp *cp);
/* The "endpoints" message: the endpoints outlier detection or active health
 * checks hold out now (at most RETE_GOLDEN_MAX_OUT_ENDPOINTS; the rest
 * counted in "dropped"), read from the proxy-wide outlier table, and the
 * retries each Service's retry budget refused since start
 * ("retryBudgetExhausted": cluster -> count). Main loop. */
json_t *cp_golden_endpoints(const rete_proxy *p, uint64_t now_ns);

/* cp_tap.c: metrics and timer (init); "tap" and "tap-stop" messages; the
 * stream closed (every tap stops); drain (the timer closes). */
void cp_tap_init(rete_cp *cp);
void cp_tap_on_message(rete_cp *cp, const char *type, json_t *m);
void cp_tap_stream_closed(rete_cp *cp);
void cp_tap_close(rete_cp *cp);

/* cp_config.c */
/* Apply a "config" (whole) or "delta" message m; false with err (starting
 * "resync" when only a whole snapshot can help). */
bool cp_config_apply(rete_cp *cp, json_t *m, bool whole, char *err, size_t errlen);
bool cp_config_load_saved(rete_cp *cp);

#endif
