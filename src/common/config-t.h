/* The proxy's configuration model: types only (functions in config.h).
 *
 * One `rete_config` is an immutable snapshot built from resources (Service,
 * Workload, HTTPRoute, GRPCRoute, TCPRoute, DestinationRule, PeerAuthentication,
 * AuthorizationPolicy, MeshConfig) and the proxy's own `Proxy` document. It is
 * built once (from a static file today, from reted's push later), then only
 * read: workers share it through an atomic reference count and never lock.
 * Everything a request needs is resolved at build time: routes point at their
 * services, services at their endpoints, regexes are compiled, route rules
 * are sorted by Gateway API precedence. All memory of a snapshot belongs to
 * its arena and is freed with it.
 *
 * Every array of the model is a (pointer, n_) pair, so the structs below
 * repeat that shape (and config_raw.h's mirror them): by design, not copies. */
#ifndef RETE_CONFIG_T_H
#define RETE_CONFIG_T_H

#include "path_norm.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rete_arena;
typedef struct pcre2_real_code_8 rete_regex; /* pcre2_code */

typedef enum rete_app_protocol {
    RETE_PROTO_HTTP,  /* HTTP/1.1 from the app (HTTP/2 detected too) */
    RETE_PROTO_HTTP2,
    RETE_PROTO_GRPC,
    RETE_PROTO_TCP,
} rete_app_protocol;

typedef struct rete_label {
    const char *key;
    const char *value;
} rete_label;

typedef struct rete_socket_addr {
    char host[64];  /* IP literal */
    uint16_t port;
} rete_socket_addr;

/* ---- registry ------------------------------------------------------------ */

typedef struct rete_workload {
    const char *name;
    const char *ns;
    const char *address;         /* IP literal: where the workload (and its sidecar) lives */
    const char *service_account;
    const rete_label *labels;
    size_t n_labels;
    uint16_t mesh_port;          /* its sidecar's mesh listener, default 15008 */
    uint32_t weight;             /* default 1 */
    bool in_mesh;                /* false: plaintext straight to address:targetPort */
    bool ready;                  /* default true; false: no traffic from other proxies (weight 0) */
    const char *spiffe_id;       /* derived: spiffe://<td>/ns/<ns>/sa/<sa> */
} rete_workload;

typedef struct rete_service_port {
    const char *name;
    uint16_t port;
    uint16_t target_port;        /* default: port */
    rete_app_protocol protocol;  /* from `protocol` or appProtocol */
} rete_service_port;

typedef enum rete_lb_kind {
    RETE_LB_PEAK_EWMA,     /* default: least request, P2C weighted by peak-EWMA latency (Linkerd) */
    RETE_LB_ROUND_ROBIN,
    RETE_LB_LEAST_REQUEST, /* P2C on outstanding requests only */
    RETE_LB_RANDOM,
    RETE_LB_RING_HASH,
    RETE_LB_MAGLEV,
} rete_lb_kind;

typedef enum rete_hash_on {
    RETE_HASH_NONE,
    RETE_HASH_HEADER,
    RETE_HASH_COOKIE,
    RETE_HASH_SOURCE_IP,
} rete_hash_on;

/* DestinationRule loadBalancer.localityLbSetting.failover[]: when the
 * caller's region `from` has no healthy endpoint, prefer region `to`. */
typedef struct rete_locality_failover {
    const char *from;
    const char *to;
} rete_locality_failover;

/* DestinationRule trafficPolicy.healthCheck (rete extension): the calling
 * proxy's active checks of the Service's endpoints. */
typedef enum rete_hc_kind {
    RETE_HC_NONE,
    RETE_HC_HTTP,  /* GET http.path, a status in expectedStatuses */
    RETE_HC_TCP,   /* a connect (over the mesh: a CONNECT tunnel to the app port) */
    RETE_HC_GRPC,  /* grpc.health.v1.Health/Check, SERVING */
} rete_hc_kind;
/* DestinationRule trafficPolicy.tls.mode (MUTUAL and ISTIO_MUTUAL are
 * refused at load). */
typedef enum rete_tls_origination {
    RETE_TLS_ORIG_DISABLE,  /* plaintext to endpoints outside the mesh */
    RETE_TLS_ORIG_SIMPLE,   /* originate TLS, verifying the server */
} rete_tls_origination;

typedef struct rete_traffic_policy {       /* DestinationRule.spec.trafficPolicy */
    rete_lb_kind lb;
    rete_hash_on hash_on;
    const char *hash_key;                  /* header or cookie name */
    uint32_t ring_size;                    /* ring hash minimum ring size, default 1024 */
    uint32_t maglev_table_size;            /* prime, default 65537 */
    /* connectionPool */
    uint32_t max_connections;              /* tcp.maxConnections, default 1024 */
    uint32_t connect_timeout_ms;           /* tcp.connectTimeout, default 10000 */
    uint32_t max_pending_requests;         /* http.http1MaxPendingRequests, default 1024 */
    uint32_t max_requests;                 /* http.http2MaxRequests, default 1024 */
    uint32_t max_requests_per_connection;  /* 0 = unlimited */
    uint32_t max_retries;                  /* retries in flight, default UINT32_MAX (Istio's) */
    uint32_t pending_timeout_ms;           /* http.pendingTimeout (rete), default 1000 */
    uint32_t idle_timeout_ms;              /* http.idleTimeout: pooled connection idle, default 3600000 */
    uint32_t response_header_timeout_ms;   /* http.responseHeaderTimeout (rete), 0 = none */
    uint32_t stream_idle_timeout_ms;       /* http.streamIdleTimeout (rete), 0 = none */
    /* retryConstraint (Gateway API GEP-3388 shape, rete extension) */
    uint32_t budget_percent;               /* budget.percent, default 20 */
    uint32_t budget_interval_ms;           /* budget.interval, whole seconds 1s..60s, default 10000 */
    uint32_t min_retry_count;              /* minRetryRate.count, default 10 */
    uint32_t min_retry_interval_ms;        /* minRetryRate.interval, default 1000 */
    /* outlierDetection */
    uint32_t consecutive_5xx;              /* 0 = off */
    uint32_t outlier_interval_ms;
    uint32_t base_ejection_ms;
    uint32_t max_ejection_percent;
    uint32_t consecutive_gateway;          /* consecutiveGatewayErrors, 0 = off */
    uint32_t min_health_percent;           /* minHealthPercent (panic threshold), default 50 */
    /* outlierDetection.successRate (rete extension, Envoy's success_rate_*) */
    bool sr_on;
    uint32_t sr_minimum_hosts;             /* default 5 */
    uint32_t sr_request_volume;            /* default 100, per interval */
    uint32_t sr_stdev_factor;              /* x 1/1000, default 1900 */
    /* loadBalancer.localityLbSetting: on with outlierDetection unless enabled: false */
    bool locality;
    const rete_locality_failover *failover;
    size_t n_failover;
    /* loadBalancer.warmupDurationSecs (slow start), 0 = off; ROUND_ROBIN and
     * LEAST_REQUEST only (refused with the others at load) */
    uint32_t warmup_ms;
    /* healthCheck (rete extension), hc_kind NONE = off */
    rete_hc_kind hc_kind;
    uint32_t hc_interval_ms;               /* default 10000 */
    uint32_t hc_timeout_ms;                /* default 1000, <= interval */
    uint32_t hc_unhealthy_threshold;       /* default 3 */
    uint32_t hc_healthy_threshold;         /* default 2 */
    const char *hc_path;                   /* http.path, default "/" */
    const uint16_t *hc_statuses;           /* http.expectedStatuses; none: 200..399 */
    size_t n_hc_statuses;
    const char *hc_grpc_service;           /* grpc.service, default "" (the whole server) */
    /* tls (Istio ClientTLSSettings): to endpoints outside the mesh */
    rete_tls_origination tls_mode;         /* default DISABLE: plaintext */
    const char *tls_ca;                    /* caCertificates; NULL: the system roots */
    const char *tls_sni;                   /* sni; NULL: the Service's externalName */
} rete_traffic_policy;

typedef struct rete_service {
    const char *name;
    const char *ns;
    const char *fqdn;                      /* derived: name.ns.svc.cluster.local */
    const rete_service_port *ports;
    size_t n_ports;
    const rete_label *selector;
    size_t n_selector;
    const rete_workload *const *endpoints; /* resolved: workloads matching the selector */
    size_t n_endpoints;
    rete_traffic_policy policy;            /* defaults, or the DestinationRule's */
    const char *cluster_ip;                /* virtual address (canonical text), NULL: none */
    /* spec.externalName: a host outside the mesh (a DNS name or an IP
     * literal), NULL for a mesh Service. Its endpoints are synthetic
     * Workloads (inMesh false), one per address: the literal's, or those
     * the proxy resolved (rete_config_rebuild); none before the first
     * resolution. */
    const char *external_name;
} rete_service;

/* ---- routes (Gateway API v1, GAMMA: parentRefs name a Service) ----------- */

typedef enum rete_match_kind {
    RETE_MATCH_EXACT,
    RETE_MATCH_PREFIX,          /* paths only: PathPrefix, element-wise (Gateway API) */
    RETE_MATCH_REGEX,           /* RegularExpression, PCRE2, anchored on the whole value */
} rete_match_kind;

typedef struct rete_string_match {
    rete_match_kind kind;
    const char *name;           /* header or query parameter name; NULL for paths */
    const char *value;
    size_t value_len;
    rete_regex *re;             /* compiled when kind == RETE_MATCH_REGEX */
} rete_string_match;

typedef struct rete_http_match {
    bool has_path;
    rete_string_match path;     /* default: PathPrefix "/" */
    const rete_string_match *headers;
    size_t n_headers;
    const rete_string_match *query;
    size_t n_query;
    const char *method;         /* NULL = any */
} rete_http_match;

typedef struct rete_header_kv {
    const char *name;
    const char *value;
} rete_header_kv;

typedef struct rete_header_modifier {  /* RequestHeaderModifier / ResponseHeaderModifier */
    const rete_header_kv *set;
    size_t n_set;
    const rete_header_kv *add;
    size_t n_add;
    const char *const *remove;
    size_t n_remove;
} rete_header_modifier;

typedef enum rete_filter_kind {
    RETE_FILTER_REQUEST_HEADER,
    RETE_FILTER_RESPONSE_HEADER,
    RETE_FILTER_REDIRECT,
    RETE_FILTER_URL_REWRITE,
    RETE_FILTER_MIRROR,             /* RequestMirror (http/filter_mirror.c), up to
                                     * RETE_MIRRORS_PER_RULE_MAX per rule */
    RETE_FILTER_KIND_N,
} rete_filter_kind;

/* RequestMirror filters one rule may have (Gateway API lets RequestMirror
 * repeat; every other filter type appears at most once). */
#define RETE_MIRRORS_PER_RULE_MAX 4

typedef struct rete_http_filter {
    rete_filter_kind kind;
    rete_header_modifier headers;   /* REQUEST_HEADER / RESPONSE_HEADER */
    /* REDIRECT (RequestRedirect) */
    const char *scheme;             /* NULL = keep */
    const char *hostname;           /* NULL = keep; also URL_REWRITE */
    uint16_t port;                  /* 0 = keep */
    int status_code;                /* 301 or 302 (default 302) */
    /* REDIRECT and URL_REWRITE path modifier */
    enum { RETE_PATH_KEEP, RETE_PATH_FULL, RETE_PATH_PREFIX } path_kind;
    const char *path;               /* ReplaceFullPath / ReplacePrefixMatch value */
    /* MIRROR (RequestMirror): copies go to port mirror_port of Service
     * mirror_service (resolved), for mirror_ppm parts per million of the
     * rule's requests (percent or fraction; default all). */
    const rete_service *mirror_service;
    uint16_t mirror_port;
    uint32_t mirror_ppm;
} rete_http_filter;

typedef struct rete_backend_ref {
    const rete_service *service;    /* resolved */
    uint16_t port;                  /* service port; 0 = the port the request came for */
    uint32_t weight;                /* default 1; 0 = never chosen */
} rete_backend_ref;

typedef struct rete_retry_policy {
    uint32_t attempts;              /* retries after the first try; 0 = none */
    uint32_t backoff_ms;            /* base, jittered exponential (cap: 10x base) */
    const uint16_t *codes;          /* retry on these statuses (default 502, 503, 504) */
    size_t n_codes;
    bool on_connect_failure;        /* default true */
    bool non_idempotent;            /* retry POST/PATCH (and any method but GET, HEAD, OPTIONS,
                                       PUT, DELETE, TRACE) on more than a connect failure */
} rete_retry_policy;

/* Fault injection (Istio VirtualService `fault`, as a rule field): shares
 * are in parts per million of requests, drawn per request from the
 * worker's PRNG. */
typedef struct rete_fault_policy {
    uint32_t delay_ppm;             /* requests delayed; 0 = no delay */
    uint32_t delay_ms;              /* fixedDelay */
    uint32_t abort_ppm;             /* requests aborted; 0 = no abort */
    uint16_t abort_http;            /* httpStatus; 0 = grpcStatus is used */
    int8_t abort_grpc;              /* grpcStatus code 0..16; -1 = httpStatus is used */
} rete_fault_policy;

typedef struct rete_http_rule {
    const rete_http_match *matches; /* none = match everything */
    size_t n_matches;
    const rete_http_filter *filters;
    size_t n_filters;
    const rete_backend_ref *backends;
    size_t n_backends;
    uint32_t total_weight;          /* derived */
    uint32_t timeout_ms;            /* timeouts.request, 0 = none */
    uint32_t backend_timeout_ms;    /* timeouts.backendRequest, 0 = none */
    rete_retry_policy retry;
    rete_fault_policy fault;        /* rete extension `fault`; zero = none */
    uint32_t rate_limit_rps;        /* rete extension `rateLimit.requestsPerSecond`; 0 = none */
    /* rete extension `circuitBreaker`: requests and retries in flight
     * through the rule, per proxy, when limit_requests / limit_retries
     * (unbounded otherwise, and in a zeroed rule) */
    uint32_t max_requests;
    uint32_t max_retries;
    bool limit_requests, limit_retries;
} rete_http_rule;

typedef struct rete_http_route {
    const char *name;
    const char *ns;
    bool grpc;                      /* a GRPCRoute, compiled into the same shape */
    const char *const *hostnames;
    size_t n_hostnames;
    const rete_http_rule *rules;
    size_t n_rules;
    uint64_t order;                 /* creation order for precedence ties */
    /* parentRefs (GAMMA: Services); parent_ports[i] == 0 attaches to every
     * port of parents[i]. */
    const rete_service *const *parents;
    const uint16_t *parent_ports;
    size_t n_parents;
} rete_http_route;

/* A TCPRoute (Gateway API, experimental channel) attached to one Service. */
typedef struct rete_tcp_route {
    const char *name;
    const char *ns;
    const rete_service *parent;
    uint16_t parent_port;           /* 0 = every port of parent */
    const rete_backend_ref *backends;
    size_t n_backends;
    uint64_t order;                 /* creation order: the oldest one wins a port */
} rete_tcp_route;

/* One (route, rule, match) triple, as the router tries them in order. */
typedef struct rete_route_entry {
    const rete_http_route *route;
    const rete_http_rule *rule;
    const rete_http_match *match;   /* NULL when the rule has no matches */
} rete_route_entry;

/* All HTTP routing for one service port, sorted by Gateway API precedence
 * at build time; a service port with no route gets a default rule that sends
 * everything to the service itself. */
typedef struct rete_route_table {
    const rete_service *service;
    uint16_t port;
    const rete_route_entry *entries;
    size_t n_entries;
    /* TCPRoute for this port, or the default (the service itself) */
    const rete_backend_ref *tcp_backends;
    size_t n_tcp_backends;
    uint32_t tcp_total_weight;
} rete_route_table;

/* ---- security ------------------------------------------------------------ */

typedef enum rete_mtls_mode {
    RETE_MTLS_STRICT,
    RETE_MTLS_PERMISSIVE,
    RETE_MTLS_DISABLE,
} rete_mtls_mode;

/* MeshConfig outboundTrafficPolicy.mode: what the outbound listener does
 * with an intercepted connection whose original destination is no Service
 * (by clusterIP or endpoint address) and, for HTTP, whose Host names none. */
typedef enum rete_outbound_policy {
    RETE_OUTBOUND_ALLOW_ANY,     /* passed through to the original destination, unmeshed */
    RETE_OUTBOUND_REGISTRY_ONLY, /* refused */
} rete_outbound_policy;

/* MeshConfig tracing.format: the collector's wire format (filter_trace.c). */
typedef enum rete_trace_format {
    RETE_TRACE_OTLP,   /* OTLP/HTTP JSON, POST /v1/traces */
    RETE_TRACE_ZIPKIN, /* Zipkin v2 JSON, POST /api/v2/spans */
} rete_trace_format;

typedef enum rete_authz_action { RETE_AUTHZ_ALLOW, RETE_AUTHZ_DENY, RETE_AUTHZ_AUDIT } rete_authz_action;

typedef struct rete_authz_rule {    /* one `rules[]` entry: from AND to AND when */
    const char *const *principals;  /* from.source.principals; "*" prefix/suffix wildcards */
    size_t n_principals;
    const char *const *not_principals;
    size_t n_not_principals;
    const char *const *namespaces;
    size_t n_namespaces;
    const char *const *not_namespaces;
    size_t n_not_namespaces;
    /* to.operation: from here to the end (the loader copies this half of
     * a `to` entry over the `from` half of a rule as one block) */
    const char *const *methods;
    size_t n_methods;
    const char *const *not_methods;
    size_t n_not_methods;
    const char *const *paths;       /* exact, "prefix*", "*suffix" */
    size_t n_paths;
    const char *const *not_paths;
    size_t n_not_paths;
    const uint16_t *ports;
    size_t n_ports;
    const uint16_t *not_ports;
    size_t n_not_ports;
} rete_authz_rule;

/* HTTPLocalRateLimitPolicy (Linkerd's shape), resolved for this workload. */
typedef struct rete_rate_override {
    const char *identity;           /* a caller's SPIFFE ID */
    uint32_t rps;
} rete_rate_override;

typedef struct rete_rate_limit_policy {
    const char *name;
    const char *ns;
    uint16_t port;                  /* inbound port; 0 = every port */
    uint32_t total_rps;             /* 0 = no total limit */
    uint32_t identity_rps;          /* per caller identity; 0 = none (overrides still apply) */
    const rete_rate_override *overrides;
    size_t n_overrides;
} rete_rate_limit_policy;

typedef struct rete_authz_policy {
    const char *name;
    const char *ns;
    rete_authz_action action;
    const rete_authz_rule *rules;   /* none: ALLOW matches nothing, DENY matches nothing */
    size_t n_rules;
} rete_authz_policy;

/* ---- the proxy itself (kind: Proxy) -------------------------------------- */

typedef struct rete_upstream_listener {   /* explicit upstream: 127.0.0.1:9191 -> db */
    rete_socket_addr listen;
    const rete_service *service;
    uint16_t port;                         /* service port */
} rete_upstream_listener;

typedef struct rete_inbound_port {         /* an app port this sidecar fronts */
    uint16_t port;
    rete_app_protocol protocol;
} rete_inbound_port;

typedef struct rete_limits {
    uint32_t max_request_line;      /* default 8192 */
    uint32_t max_header_bytes;      /* default 65536 */
    uint32_t max_headers;           /* default 100 */
    uint32_t max_body_buffer;       /* per direction per stream in flight, default 65536 */
    uint32_t max_connections;       /* downstream data listeners, per worker, default 10000 */
    uint32_t max_admin_connections; /* admin listener, its own cap, default 32 */
    uint32_t max_streams;           /* HTTP/2 concurrent streams per connection, default 256 */
    uint32_t detect_timeout_ms;     /* protocol detection, default 5000 for server-first safety */
    uint32_t idle_timeout_ms;       /* downstream idle, default 300000 */
    uint32_t request_header_timeout_ms; /* whole HTTP/1.1 request head, default 10000 */
    uint32_t request_body_timeout_ms;   /* between two request body reads, default 30000 */
    uint32_t response_write_timeout_ms; /* without write progress to a client, default 60000 */
    uint32_t stream_idle_timeout_ms;    /* HTTP/2 stream, nothing either way, default 300000 */
    uint32_t tcp_idle_timeout_ms;   /* opaque TCP downstream, no byte either way, default 3600000 */
    uint32_t drain_timeout_ms;      /* SIGTERM grace, default 5000 */
    uint32_t max_mirrors_in_flight; /* RequestMirror copies per proxy, default 64 */
    uint32_t max_mirror_body;       /* request body bytes a copy carries, default 65536 */
} rete_limits;

/* Proxy spec.dns: the sidecar's DNS listener (src/proxy/dns/dns.c). */
typedef struct rete_dns_spec {
    bool enabled;                   /* spec.dns.listen given */
    rete_socket_addr listen;        /* loopback only (never an open resolver) */
    const char **upstreams;         /* IP literals, port 53; none: resolvConf's nameservers */
    size_t n_upstreams;
    const char *resolv_conf;        /* default /etc/resolv.conf, read once at start */
    uint32_t max_in_flight;         /* forwarded queries awaiting an answer, default 256 */
    uint32_t timeout_ms;            /* upstream answer, and a TCP client's idle time; default 5000 */
    uint32_t max_tcp_connections;   /* default 16 */
    uint32_t ttl_s;                 /* of mesh answers, default 30 */
} rete_dns_spec;

/* Proxy `readiness`: the app's readiness probe the sidecar runs (Kubernetes
 * readinessProbe's shape; app/probe in src/proxy/core/app_probe.c). */
typedef struct rete_readiness_probe {
    bool enabled;                   /* spec.readiness given */
    bool http;                      /* httpGet; else tcpSocket */
    const char *path;               /* httpGet.path, default "/" */
    uint16_t port;                  /* httpGet.port or tcpSocket.port, on appAddress */
    uint32_t period_ms;             /* default 10000 */
    uint32_t timeout_ms;            /* default 1000 */
    uint32_t failure_threshold;     /* failures in a row that make it not ready, default 3 */
    uint32_t success_threshold;     /* successes in a row that make it ready again, default 1 */
} rete_readiness_probe;

typedef struct rete_proxy_spec {
    const char *name;               /* metadata.name: this proxy's workload name */
    const char *ns;
    const char *service_account;
    const char *trust_domain;       /* default cluster.local */
    const char *spiffe_id;          /* derived */
    const char *app_address;        /* where the local app listens, default: workload address */
    rete_socket_addr outbound;      /* default <address>:15001 */
    rete_socket_addr inbound;       /* default <address>:15006 */
    rete_socket_addr mesh;          /* default <address>:15008 */
    rete_socket_addr admin;         /* default 127.0.0.1:15000, loopback only */
    rete_socket_addr stats;         /* default <address>:15020: /metrics /ready /live */
    const rete_upstream_listener *upstreams;
    size_t n_upstreams;
    const rete_inbound_port *inbound_ports;
    size_t n_inbound_ports;
    const char *cert_file;          /* PEM: workload cert chain */
    const char *key_file;
    const char *ca_file;            /* trust bundle: one or more roots */
    const char *server_cert_file;   /* optional cert for HTTP/2-over-TLS from the app (ALPN) */
    const char *server_key_file;
    unsigned concurrency;           /* default 1 */
    rete_limits limits;
    rete_dns_spec dns;
    rete_readiness_probe readiness;
    uint32_t external_refresh_ms;   /* externalNameRefresh: re-resolution period, default 30000 */
} rete_proxy_spec;

typedef struct rete_config {
    atomic_uint refs;
    struct rete_arena *arena;
    uint64_t version;               /* increases with every snapshot */
    char source[256];               /* file path or control-plane version string */

    rete_proxy_spec proxy;
    rete_mtls_mode mtls_mode;       /* effective PeerAuthentication for this workload */
    /* MeshConfig pathNormalization.normalization (default BASE): how every
     * request's path is normalised where it enters (path_norm.h). */
    rete_path_norm_mode path_norm;
    rete_outbound_policy outbound_policy; /* MeshConfig outboundTrafficPolicy.mode */
    /* MeshConfig tracing (http/filter_trace.c): the collector as "host:port",
     * NULL when tracing is off; the head-sampling rate of requests that come
     * with no sampling decision, in parts per million (default 10000: 1%). */
    const char *trace_collector;
    uint32_t trace_sample_ppm;
    rete_trace_format trace_format;

    const rete_service *services;
    size_t n_services;
    const rete_workload *workloads;
    size_t n_workloads;
    const rete_http_route *http_routes;
    size_t n_http_routes;
    const rete_tcp_route *tcp_routes;
    size_t n_tcp_routes;
    const rete_route_table *tables; /* one per (service, port) */
    size_t n_tables;
    const rete_authz_policy *authz; /* only policies that select this workload */
    size_t n_authz;
    const rete_rate_limit_policy *rate_limits; /* only policies that select this workload */
    size_t n_rate_limits;
    /* The documents this snapshot was decoded from (in its arena), so that
     * rete_config_rebuild can decode them again with new externalName
     * addresses. */
    const struct rete_ynode *const *docs;
    size_t n_docs;
} rete_config;

#endif
