/* Internal to the configuration loader (src/common/config*.c); not installed
 * and not included anywhere else. It holds what the three files of the loader
 * share: the "raw" resources the field tables decode into, which still name
 * each other by string; the kinds; and the loader state that the document
 * pass (config.c) fills and the resolution pass (config_resolve.c) reads.
 * Kept out of config.h because none of these types outlives a load. Its
 * structs mirror config-t.h's (pointer, n_) arrays: the same shape by design. */
#ifndef RETE_CONFIG_RAW_H
#define RETE_CONFIG_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "config_schema.h"
#include "kinds.h"

/* ---- raw resources: what the tables decode into ---------------------------- */

typedef struct raw_meta {
    const char *name;
    const char *ns;
    const rete_label *labels;
    size_t n_labels;
} raw_meta;

/* Every raw resource starts with this header. */
typedef struct raw_res {
    const rete_kind *kind;
    raw_meta meta;
    int doc;              /* document index in the stream */
    struct raw_res *next; /* next of the same kind, document order */
} raw_res;

typedef struct raw_selector {
    const rete_label *labels;
    size_t n_labels;
} raw_selector;

/* Proxy */
typedef struct raw_upstream {
    rete_socket_addr listen;
    const char *service;
    uint16_t port;
} raw_upstream;

typedef struct raw_proxy {
    raw_res hdr;
    rete_proxy_spec p;
    const char *address;
    const raw_upstream *upstreams;
    size_t n_upstreams;
    bool has_trust_domain, has_app_address, has_outbound, has_inbound, has_mesh, has_admin;
    bool has_stats;
    bool has_inbound_ports;
    bool has_dns_listen;
    bool has_http_get, has_tcp_socket;
} raw_proxy;

/* Service */
typedef struct raw_svc_port {
    rete_service_port p;
    int protocol;
    int app_protocol;
    bool has_target, has_protocol, has_app_protocol;
} raw_svc_port;

typedef struct raw_service {
    raw_res hdr;
    const raw_svc_port *ports;
    size_t n_ports;
    const rete_label *selector;
    size_t n_selector;
    const char *cluster_ip;      /* as written; canonical in rete_service */
    const char *external_name;
} raw_service;

/* Workload */
typedef struct raw_workload {
    raw_res hdr;
    rete_workload w;
    const char **egress;      /* read by reted's compiler, not by the proxy */
    size_t n_egress;
} raw_workload;

/* Routes (HTTPRoute, GRPCRoute, TCPRoute share one raw shape) */
typedef struct raw_ref { /* parentRefs[] and backendRefs[] */
    const char *group;
    const char *kind;
    const char *name;
    const char *ns;
    uint16_t port;
    uint32_t weight;
} raw_ref;

typedef struct raw_path_mod {
    int type;
    const char *full;
    const char *prefix;
    bool has_full, has_prefix;
} raw_path_mod;

typedef struct raw_fraction { /* Gateway API Fraction */
    uint32_t numerator, denominator;
} raw_fraction;

typedef struct raw_filter {
    rete_http_filter f;
    int type;
    raw_path_mod redirect_path, rewrite_path;
    raw_ref mirror_ref;           /* requestMirror.backendRef, resolved by config_resolve.c */
    uint32_t mirror_percent;
    raw_fraction mirror_fraction;
    bool has_req, has_resp, has_redirect, has_rewrite, has_redirect_path, has_rewrite_path;
    bool has_mirror, has_mirror_percent, has_mirror_fraction;
} raw_filter;

typedef struct raw_grpc_method {
    int type;
    const char *service;
    const char *method;
} raw_grpc_method;

typedef struct raw_grpc_match {
    raw_grpc_method method;
    bool has_method;
    const rete_string_match *headers;
    size_t n_headers;
} raw_grpc_match;

/* An Istio Percent {value: 0..100, fractional} */
typedef struct raw_pct {
    const char *value;
    uint32_t ppm; /* derived: parts per million */
} raw_pct;

typedef struct raw_rule {
    rete_http_rule r;
    raw_pct delay_pct, abort_pct;
    int abort_http, abort_grpc;
    bool has_delay, has_abort, has_abort_http, has_abort_grpc;
    const raw_grpc_match *grpc_matches;
    size_t n_grpc_matches;
    const raw_filter *filters;
    size_t n_filters;
    const raw_ref *backends;
    size_t n_backends;
    bool has_retry, has_codes;
} raw_rule;

typedef struct raw_route {
    raw_res hdr;
    const raw_ref *parents;
    size_t n_parents;
    const char *const *hostnames;
    size_t n_hostnames;
    const raw_rule *rules;
    size_t n_rules;
} raw_route;

/* DestinationRule */
/* DestinationRule localityLbSetting.distribute[] (refused: documented only) */
typedef struct raw_distribute {
    const char *from;
    const rete_label *to;
    size_t n_to;
} raw_distribute;

typedef struct raw_dr {
    raw_res hdr;
    const char *host;
    rete_traffic_policy p;
    int simple;
    const char *hash_header;
    const char *cookie_name;
    uint32_t cookie_ttl_ms;
    bool source_ip;
    bool has_simple, has_hash, has_header, has_cookie, has_source_ip, has_ring, has_maglev;
    bool has_outlier, has_locality, locality_enabled;
    bool has_hc, has_hc_http, has_hc_tcp, has_hc_grpc, has_warmup;
} raw_dr;

/* PeerAuthentication */
enum { MTLS_UNSET = -1 };

typedef struct raw_peer_authn {
    raw_res hdr;
    raw_selector selector;
    bool has_selector;
    int mode;
} raw_peer_authn;

/* AuthorizationPolicy: from[] and to[] entries decode straight into the
 * source or operation half of a rete_authz_rule. */
typedef struct raw_authz_rule {
    const rete_authz_rule *from;
    size_t n_from;
    const rete_authz_rule *to;
    size_t n_to;
} raw_authz_rule;

typedef struct raw_authz_from {
    rete_authz_rule source;
} raw_authz_from;

/* HTTPLocalRateLimitPolicy */
typedef struct raw_client_ref {
    int kind;
    const char *name;
    const char *ns;
} raw_client_ref;

typedef struct raw_rl_override {
    uint32_t rps;
    const raw_client_ref *refs;
    size_t n_refs;
} raw_rl_override;

typedef struct raw_rate_limit {
    raw_res hdr;
    raw_selector selector;
    bool has_selector, has_total, has_identity;
    uint16_t port;
    uint32_t total_rps, identity_rps;
    const raw_rl_override *overrides;
    size_t n_overrides;
} raw_rate_limit;

typedef struct raw_authz {
    raw_res hdr;
    raw_selector selector;
    bool has_selector;
    int action;
    const raw_authz_rule *rules;
    size_t n_rules;
} raw_authz;

/* MeshConfig */
typedef struct raw_mesh {
    raw_res hdr;
    const char *trust_domain;
    int default_mtls;
    const char **default_egress; /* read by reted's compiler, not by the proxy */
    size_t n_default_egress;
    uint32_t cert_ttl_ms;        /* read by reted's CA, not by the proxy */
    int path_norm;               /* rete_path_norm_mode */
    int outbound_policy;         /* rete_outbound_policy */
    const char *service_cidr;    /* checked by the loader, assigned from by reted */
    const char *trace_sampling;  /* tracing.sampling: percent, as written */
    uint32_t trace_ppm;          /* derived: parts per million */
    const char *trace_collector; /* tracing.collector: host:port, NULL: off */
    int trace_format;            /* rete_trace_format */
} raw_mesh;

/* WorkloadGroup: what proxies of one service account may register (read by
 * reted's registry, never pushed to a proxy). */
typedef struct raw_workload_group {
    raw_res hdr;
    const char *service_account;
    const rete_label *labels;
    size_t n_labels;
    const char **egress;
    size_t n_egress;
} raw_workload_group;

/* ---- kinds: the table in kinds.c ---------------------------------------------------- */

/* The metadata mapping every kind shares. */
extern const cfg_schema cfg_meta_schema;
/* The documentation of every rate limit's requestsPerSecond (both field-table files). */
#define CFG_RPS_DOC "token bucket: refills at this rate, holds one second's worth (the burst)"
/* Validators of single values (config_fields.c), shared by both field-table files. */
rete_rc cfg_check_cidr(cfg_ctx *ctx, const rete_ynode *n, void *value);
rete_rc cfg_check_dns_name(cfg_ctx *ctx, const rete_ynode *n, void *value);
rete_rc cfg_check_egress_host(cfg_ctx *ctx, const rete_ynode *n, void *value);
rete_rc cfg_check_header_name(cfg_ctx *ctx, const rete_ynode *n, void *value);
rete_rc cfg_check_prime(cfg_ctx *ctx, const rete_ynode *n, void *value);
/* A DestinationRule's trafficPolicy; decoded from nothing it gives the
 * policy of a Service that no DestinationRule names. */
extern const cfg_schema cfg_policy_schema;

/* ---- the loader ------------------------------------------------------------------- */

/* One load: the decoding context, the snapshot being built and the raw
 * resources decoded so far, per kind in document order. */
typedef struct loader {
    cfg_ctx ctx;
    rete_config *cfg;
    raw_res *head[RETE_KIND_COUNT];
    raw_res *tail[RETE_KIND_COUNT];
    size_t count[RETE_KIND_COUNT];
    /* Every decoded resource by (kind, namespace, name), open addressing:
     * the duplicate check in O(1) instead of a scan of the kind's list
     * (O(n^2) over a snapshot of 10000 workloads). malloc'ed, freed with
     * the loader. */
    raw_res **idx;
    size_t idx_cap;
    size_t idx_n;
    /* rete_config_rebuild: the addresses of externalName hosts */
    const rete_external_addrs *ext;
    size_t n_ext;
} loader;

/* Pass 2 (config_resolve.c): the raw resources in l -> l->cfg, resolved and
 * with its route tables built. On failure fills l->ctx.err and returns
 * non-zero; everything allocated is in the snapshot's arena. */
RETE_MUST_CHECK rete_rc cfg_resolve(loader *l);

/* The service among svcs[0..n) that host names: "name" (in default_ns),
 * "name.ns", "name.ns.svc" or "name.ns.svc.cluster.local", any case,
 * optional trailing dot. NULL when none. */
const rete_service *cfg_service_by_host(const rete_service *svcs, size_t n, rete_view host,
                                        const char *default_ns);
bool cfg_service_has_port(const rete_service *s, uint16_t port);

#endif
