/* The field tables of the policy kinds: DestinationRule, PeerAuthentication,
 * AuthorizationPolicy, HTTPLocalRateLimitPolicy and MeshConfig (what applies
 * to traffic rather than naming it). The workload and route kinds, the
 * Proxy document and the validators of single values they share are in
 * config_fields.c; how a table drives parsing, errors and the reference
 * documentation is config_schema.h. */
#include "config_raw.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "arena.h"
#include "cidr.h"
#include "defaults.h"

/* ---- DestinationRule (Istio networking/v1) --------------------------------------- */

enum { LB_SIMPLE_UNSET = -1, LB_SIMPLE_PASSTHROUGH = -2 };
static const cfg_enum lb_simple_enum[] = {{"UNSPECIFIED", LB_SIMPLE_UNSET},
                                          {"ROUND_ROBIN", RETE_LB_ROUND_ROBIN},
                                          {"LEAST_REQUEST", RETE_LB_LEAST_REQUEST},
                                          {"LEAST_CONN", RETE_LB_LEAST_REQUEST},
                                          {"RANDOM", RETE_LB_RANDOM},
                                          {"PASSTHROUGH", LB_SIMPLE_PASSTHROUGH},
                                          {NULL, 0}};

static const cfg_field cookie_fields[] = {
    {"name", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_dr, cookie_name)},
    {"ttl", CFG_DURATION, 0, CFG_AT(raw_dr, cookie_ttl_ms), .docdef = "session cookie"},
};
static const cfg_schema cookie_schema = CFG_SCHEMA("HTTPCookie", raw_dr, cookie_fields, NULL);

static const cfg_field ring_fields[] = {
    {"minimumRingSize", CFG_INT, 0, CFG_AT(raw_dr, p.ring_size), .min = 1, .max = 8388608,
     .def = "1024"},
};
static const cfg_schema ring_schema = CFG_SCHEMA("RingHash", raw_dr, ring_fields, NULL);

static const cfg_field maglev_fields[] = {
    {"tableSize", CFG_INT, 0, CFG_AT(raw_dr, p.maglev_table_size), .min = 2, .max = 5000011,
     .def = "65537", .check = cfg_check_prime, .doc = "a prime"},
};
static const cfg_schema maglev_schema = CFG_SCHEMA("MagLev", raw_dr, maglev_fields, NULL);

static rete_rc hash_check(cfg_ctx *ctx, void *obj)
{
    raw_dr *r = obj;
    int keys = r->has_header + r->has_cookie + r->has_source_ip;
    if (keys != 1)
        return cfg_fail(ctx, "exactly one of httpHeaderName, httpCookie, useSourceIp is required");
    if (r->has_source_ip && !r->source_ip)
        return cfg_fail_at(ctx, "useSourceIp", "must be true when set");
    if (r->has_ring && r->has_maglev)
        return cfg_fail(ctx, "ringHash and maglev cannot both be set");
    r->p.hash_on = r->has_header   ? RETE_HASH_HEADER
                   : r->has_cookie ? RETE_HASH_COOKIE
                                   : RETE_HASH_SOURCE_IP;
    r->p.hash_key = r->has_header ? r->hash_header : r->has_cookie ? r->cookie_name : NULL;
    return RETE_OK;
}

static const cfg_field hash_fields[] = {
    {"httpHeaderName", CFG_STR, 0, CFG_AT(raw_dr, hash_header), CFG_HAS(raw_dr, has_header),
     .check = cfg_check_header_name},
    {"httpCookie", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, has_cookie),
     .sub = &cookie_schema},
    {"useSourceIp", CFG_BOOL, 0, CFG_AT(raw_dr, source_ip), CFG_HAS(raw_dr, has_source_ip)},
    {"ringHash", CFG_OBJ, 0, .off = 0, CFG_HAS(raw_dr, has_ring), .sub = &ring_schema,
     .doc = "the default hash algorithm"},
    {"maglev", CFG_OBJ, 0, .off = 0, CFG_HAS(raw_dr, has_maglev), .sub = &maglev_schema},
};
static const cfg_schema hash_schema =
    CFG_SCHEMA("ConsistentHashLB", raw_dr, hash_fields, hash_check);

static rete_rc lb_check(cfg_ctx *ctx, void *obj)
{
    raw_dr *r = obj;
    if (r->has_simple && r->has_hash)
        return cfg_fail(ctx, "simple and consistentHash cannot both be set");
    if (r->has_simple && r->simple == LB_SIMPLE_PASSTHROUGH)
        return cfg_fail_at(ctx, "simple", "PASSTHROUGH is not supported");
    if (r->has_hash)
        r->p.lb = r->has_maglev ? RETE_LB_MAGLEV : RETE_LB_RING_HASH;
    else if (r->has_simple && r->simple >= 0)
        r->p.lb = (rete_lb_kind)r->simple;
    /* Slow start ramps the weights the weighted balancers read at each pick;
     * the hash-based ones keep a table built once per snapshot, and
     * RANDOM/peak-EWMA draw on fixed prefix sums: refused with them. */
    if (r->has_warmup && r->p.warmup_ms && r->p.lb != RETE_LB_ROUND_ROBIN &&
        r->p.lb != RETE_LB_LEAST_REQUEST)
        return cfg_fail_at(ctx, "warmupDurationSecs",
                           "slow start is applied by simple: ROUND_ROBIN and LEAST_REQUEST "
                           "only, not by %s (docs/traffic.md)",
                           r->has_hash ? "consistentHash" : r->has_simple ? "this simple" :
                           "the default (peak-EWMA)");
    return RETE_OK;
}

static const cfg_field failover_fields[] = {
    {"from", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(rete_locality_failover, from),
     .doc = "the caller's region"},
    {"to", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(rete_locality_failover, to),
     .doc = "the region preferred when `from` has no healthy endpoint"},
};
static const cfg_schema failover_schema =
    CFG_SCHEMA("LocalityLoadBalancerSetting.Failover", rete_locality_failover, failover_fields, NULL);

static const cfg_field distribute_fields[] = {
    {"from", CFG_STR, 0, CFG_AT(raw_distribute, from), .doc = "region/zone/subzone, `*` wildcards"},
    {"to", CFG_LABELS, 0, CFG_AT(raw_distribute, to), CFG_CNT(raw_distribute, n_to),
     .doc = "locality -> weight"},
};
static const cfg_schema distribute_schema =
    CFG_SCHEMA("LocalityLoadBalancerSetting.Distribute", raw_distribute, distribute_fields, NULL);

static const cfg_field locality_fields[] = {
    {"enabled", CFG_BOOL, 0, CFG_AT(raw_dr, locality_enabled), .def = "true",
     .doc = "locality-aware balancing by the Workloads' topology.kubernetes.io/region, "
     "topology.kubernetes.io/zone and topology.istio.io/subzone labels; takes effect only "
     "with outlierDetection (as in Istio)"},
    {"failover", CFG_LIST, 0, CFG_AT(raw_dr, p.failover), CFG_CNT(raw_dr, p.n_failover),
     .max = 64, .sub = &failover_schema, .docdef = "none",
     .doc = "after the caller's region, the region to prefer before every other"},
    {"distribute", CFG_LIST, CFG_UNAPPLIED, .off = 0, .sub = &distribute_schema,
     .doc = "traffic shares by locality"},
    {"failoverPriority", CFG_STRLIST, CFG_UNAPPLIED, .off = 0, .doc = "failover by labels"},
};
static const cfg_schema locality_schema =
    CFG_SCHEMA("LocalityLoadBalancerSetting", raw_dr, locality_fields, NULL);

static const cfg_field lb_fields[] = {
    {"simple", CFG_ENUM, 0, CFG_AT(raw_dr, simple), CFG_HAS(raw_dr, has_simple),
     .en = lb_simple_enum, .docdef = "peak-EWMA least request (Linkerd)",
     .doc = "PASSTHROUGH is refused"},
    {"consistentHash", CFG_OBJ, 0, .off = 0, CFG_HAS(raw_dr, has_hash), .sub = &hash_schema},
    {"localityLbSetting", CFG_OBJ, 0, .off = 0, CFG_HAS(raw_dr, has_locality),
     .sub = &locality_schema},
    {"warmupDurationSecs", CFG_DURATION, 0, CFG_AT(raw_dr, p.warmup_ms),
     CFG_HAS(raw_dr, has_warmup), .min = 0, .max = 3600000, .def = "0s", .docdef = "none",
     .doc = "slow start (Istio's field, a duration): a new endpoint, or one back from an "
     "ejection or a failed healthCheck, gets its weight ramped linearly from 10% over this "
     "window; ROUND_ROBIN and LEAST_REQUEST only (refused with the others)"},
};
static const cfg_schema lb_schema = CFG_SCHEMA("LoadBalancerSettings", raw_dr, lb_fields, lb_check);

static const cfg_field pool_tcp_fields[] = {
    {"maxConnections", CFG_INT, 0, CFG_AT(raw_dr, p.max_connections), .min = 1,
     .max = UINT32_MAX, .def = "1024",
     .doc = "upstream connections open to the service's endpoints, counted across every "
     "worker of the proxy; at it a request waits for a connection (http1MaxPendingRequests)"},
    {"connectTimeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.connect_timeout_ms), .min = 1,
     .def = "10s",
     .doc = "each TCP connect to an endpoint (or its sidecar); then 503 `connect timeout`, "
     "retried as a connect failure"},
};
static const cfg_schema pool_tcp_schema = CFG_SCHEMA("TCPSettings", raw_dr, pool_tcp_fields, NULL);

static const cfg_field pool_http_fields[] = {
    {"http1MaxPendingRequests", CFG_INT, 0, CFG_AT(raw_dr, p.max_pending_requests), .min = 1,
     .max = UINT32_MAX, .def = "1024",
     .doc = "requests waiting for a connection (at maxConnections), per proxy, in a FIFO per "
     "worker; over it: 503 `UO`"},
    {"pendingTimeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.pending_timeout_ms), .min = 1,
     .max = 600000, .def = "1s",
     .doc = "rete extension: how long a request waits for a connection; then 503 `UO`"},
    {"http2MaxRequests", CFG_INT, 0, CFG_AT(raw_dr, p.max_requests), .min = 1, .max = UINT32_MAX,
     .def = "1024",
     .doc = "requests in flight to the service, counted across every worker of the proxy; "
     "over it: 503 `UO`"},
    {"maxRequestsPerConnection", CFG_INT, 0, CFG_AT(raw_dr, p.max_requests_per_connection),
     .min = 0, .max = UINT32_MAX, .def = "0",
     .doc = "0 = unbounded; an upstream connection is retired (closed once idle) after this "
     "many requests"},
    {"maxRetries", CFG_INT, 0, CFG_AT(raw_dr, p.max_retries), .min = 0, .max = UINT32_MAX,
     .def = "4294967295", .docdef = "4294967295 (unbounded, Istio's)",
     .doc = "retries in flight to the service, per proxy; a retry over it is not made "
     "(the retry budget bounds retries too)"},
    {"idleTimeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.idle_timeout_ms), .min = 1,
     .def = "1h", .docdef = "1h (Istio's)",
     .doc = "an upstream connection with no request for this long is closed (HTTP/2: GOAWAY)"},
    {"responseHeaderTimeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.response_header_timeout_ms),
     .def = "0s", .docdef = "none",
     .doc = "rete extension: from the request sent (its body's end reached the proxy, or the "
     "try's start if later) to the response head; then 504 (gRPC: DEADLINE_EXCEEDED), retried "
     "like a per-try timeout"},
    {"streamIdleTimeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.stream_idle_timeout_ms),
     .def = "0s", .docdef = "none",
     .doc = "rete extension (Envoy's stream_idle_timeout, upstream): no byte either way on a "
     "try for this long; then 504 (gRPC: DEADLINE_EXCEEDED) before the response head, reset "
     "after"},
};
static const cfg_schema pool_http_schema =
    CFG_SCHEMA("HTTPSettings", raw_dr, pool_http_fields, NULL);

static const cfg_field pool_fields[] = {
    {"tcp", CFG_OBJ, 0, .off = 0, .sub = &pool_tcp_schema},
    {"http", CFG_OBJ, 0, .off = 0, .sub = &pool_http_schema},
};
static const cfg_schema pool_schema =
    CFG_SCHEMA("ConnectionPoolSettings", raw_dr, pool_fields, NULL);

static const cfg_field success_rate_fields[] = {
    {"minimumHosts", CFG_INT, 0, CFG_AT(raw_dr, p.sr_minimum_hosts), .min = 1, .max = 100000,
     .def = "5", .doc = "endpoints with at least requestVolume requests in the interval needed "
     "for an evaluation (fewer: nobody is ejected for its success rate)"},
    {"requestVolume", CFG_INT, 0, CFG_AT(raw_dr, p.sr_request_volume), .min = 1,
     .max = 100000000, .def = "100",
     .doc = "requests an endpoint needs in the interval to be evaluated"},
    {"stdevFactor", CFG_INT, 0, CFG_AT(raw_dr, p.sr_stdev_factor), .min = 0, .max = 100000,
     .def = "1900", .doc = "in thousandths: an endpoint is ejected when its success rate is "
     "below mean - stdevFactor/1000 x standard deviation of the evaluated endpoints' rates"},
};
static const cfg_schema success_rate_schema =
    CFG_SCHEMA("OutlierDetection.SuccessRate", raw_dr, success_rate_fields, NULL);

static const cfg_field outlier_fields[] = {
    {"consecutive5xxErrors", CFG_INT, 0, CFG_AT(raw_dr, p.consecutive_5xx), .min = 0,
     .max = UINT32_MAX, .def = "5",
     .doc = "0 = off; any 5xx, connect failure, reset or timeout in a row, across the proxy's "
     "workers (never a 503 the proxy answers itself: UO, RL, FI)"},
    {"interval", CFG_DURATION, 0, CFG_AT(raw_dr, p.outlier_interval_ms), .min = 1, .def = "10s",
     .doc = "the ejection multiplier drops by one per interval admitted; a streak ejects at once"},
    {"baseEjectionTime", CFG_DURATION, 0, CFG_AT(raw_dr, p.base_ejection_ms), .min = 1,
     .def = "30s", .doc = "x the times ejected, at most 300s; counted across the proxy's workers"},
    {"maxEjectionPercent", CFG_INT, 0, CFG_AT(raw_dr, p.max_ejection_percent), .min = 0, .max = 100,
     .def = "10", .doc = "of the Service's endpoints, ejected at once (at least one is ejectable)"},
    {"consecutiveGatewayErrors", CFG_INT, 0, CFG_AT(raw_dr, p.consecutive_gateway), .min = 0,
     .max = UINT32_MAX, .def = "0",
     .doc = "0 = off; 502, 503, 504, connect failures, resets and timeouts in a row"},
    {"minHealthPercent", CFG_INT, 0, CFG_AT(raw_dr, p.min_health_percent), .min = 0, .max = 100,
     .def = "50", .docdef = "50 (Envoy's healthy_panic_threshold; Istio's is 0)",
     .doc = "panic threshold: below this share of healthy endpoints, ejections are ignored"},
    {"successRate", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, p.sr_on), .sub = &success_rate_schema,
     .docdef = "off", .doc = "rete extension (Envoy's success-rate outlier detection): every "
     "interval, endpoints whose success rate is a statistical outlier among the Service's are "
     "ejected (same ejection time, multiplier and maxEjectionPercent as the consecutive errors)"},
};
static const cfg_schema outlier_schema =
    CFG_SCHEMA("OutlierDetection", raw_dr, outlier_fields, NULL);

/* The retry budget's window is a ring of one-second counters
 * (filter_retry.c), hence whole seconds and a bound on its length. */
static rete_rc budget_check(cfg_ctx *ctx, void *obj)
{
    raw_dr *r = obj;
    if (r->p.budget_interval_ms % 1000)
        return cfg_fail_at(ctx, "interval", "must be whole seconds (the budget counts per second)");
    return RETE_OK;
}

static const cfg_field budget_fields[] = {
    {"percent", CFG_INT, 0, CFG_AT(raw_dr, p.budget_percent), .min = 0, .max = 100, .def = "20",
     .doc = "retries may be at most this share of the Service's requests (of rules with `retry`) "
     "over `interval`, on top of `minRetryRate`; 0: only `minRetryRate`"},
    {"interval", CFG_DURATION, 0, CFG_AT(raw_dr, p.budget_interval_ms), .min = 1000, .max = 60000,
     .def = "10s", .doc = "the window requests and retries are counted over; whole seconds, 1s..60s"},
};
static const cfg_schema budget_schema = CFG_SCHEMA("BudgetDetails", raw_dr, budget_fields, budget_check);

static const cfg_field min_retry_rate_fields[] = {
    {"count", CFG_INT, 0, CFG_AT(raw_dr, p.min_retry_count), .min = 0, .max = 1000000, .def = "10",
     .doc = "retries always allowed per `interval`, whatever the request count (a quiet Service "
     "can still retry)"},
    {"interval", CFG_DURATION, 0, CFG_AT(raw_dr, p.min_retry_interval_ms), .min = 1000,
     .max = 60000, .def = "1s", .doc = "the period `count` is given for"},
};
static const cfg_schema min_retry_rate_schema =
    CFG_SCHEMA("RequestRate", raw_dr, min_retry_rate_fields, NULL);

static const cfg_field retry_constraint_fields[] = {
    {"budget", CFG_OBJ, 0, .off = 0, .sub = &budget_schema},
    {"minRetryRate", CFG_OBJ, 0, .off = 0, .sub = &min_retry_rate_schema},
};
static const cfg_schema retry_constraint_schema =
    CFG_SCHEMA("RetryConstraint", raw_dr, retry_constraint_fields, NULL);
/* A request target sent as is: origin-form, visible ASCII, no fragment. */
static rete_rc hc_path_check(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    (void)n;
    const char *p = *(const char **)value;
    if (p[0] != '/')
        return cfg_fail(ctx, "must start with /");
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
            return cfg_fail(ctx, "must be visible ASCII without spaces or '#'");
    return RETE_OK;
}

static const cfg_field hc_http_fields[] = {
    {"path", CFG_STR, CFG_NONEMPTY, CFG_AT(raw_dr, p.hc_path), .def = "/",
     .check = hc_path_check, .doc = "GET it (Host: the Service's FQDN) on the Service's first "
     "port, through the same upstream as requests (over the mesh: to the endpoint's sidecar)"},
    {"expectedStatuses", CFG_INTLIST, CFG_NONEMPTY, CFG_AT(raw_dr, p.hc_statuses),
     CFG_CNT(raw_dr, p.n_hc_statuses), .elem = sizeof(uint16_t), .min = 100, .max = 599,
     .docdef = "200..399", .doc = "statuses that pass, at most 32"},
};
static const cfg_schema hc_http_schema =
    CFG_SCHEMA("HealthCheck.HTTP", raw_dr, hc_http_fields, NULL);

/* tcp: {} has no field. */
static const cfg_schema hc_tcp_schema = {"HealthCheck.TCP", sizeof(raw_dr), NULL, 0, NULL};

static const cfg_field hc_grpc_fields[] = {
    {"service", CFG_STR, 0, CFG_AT(raw_dr, p.hc_grpc_service), .def = "", .docdef = "\"\"",
     .doc = "the HealthCheckRequest's service; empty: the whole server"},
};
static const cfg_schema hc_grpc_schema =
    CFG_SCHEMA("HealthCheck.GRPC", raw_dr, hc_grpc_fields, NULL);

static rete_rc hc_check(cfg_ctx *ctx, void *obj)
{
    raw_dr *r = obj;
    if (r->has_hc_http + r->has_hc_tcp + r->has_hc_grpc != 1)
        return cfg_fail(ctx, "exactly one of http, tcp and grpc is required");
    if (r->p.hc_timeout_ms > r->p.hc_interval_ms)
        return cfg_fail_at(ctx, "timeout", "must not be longer than interval");
    if (r->p.n_hc_statuses > 32)
        return cfg_fail_at(ctx, "http.expectedStatuses", "at most 32 statuses");
    r->p.hc_kind = r->has_hc_http ? RETE_HC_HTTP : r->has_hc_tcp ? RETE_HC_TCP : RETE_HC_GRPC;
    return RETE_OK;
}

static const cfg_field hc_fields[] = {
    {"interval", CFG_DURATION, 0, CFG_AT(raw_dr, p.hc_interval_ms), .min = 100, .max = 3600000,
     .def = "10s", .doc = "between two checks of an endpoint, jittered by +-10%; 100ms..1h"},
    {"timeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.hc_timeout_ms), .min = 10, .max = 600000,
     .def = "1s", .doc = "a check without its answer by then fails; at most interval"},
    {"unhealthyThreshold", CFG_INT, 0, CFG_AT(raw_dr, p.hc_unhealthy_threshold), .min = 1,
     .max = 1000, .def = "3", .doc = "failed checks in a row that take the endpoint out"},
    {"healthyThreshold", CFG_INT, 0, CFG_AT(raw_dr, p.hc_healthy_threshold), .min = 1,
     .max = 1000, .def = "2", .doc = "passed checks in a row that put it back"},
    {"http", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, has_hc_http), .sub = &hc_http_schema,
     .docdef = "-", .doc = "an HTTP check; exactly one of http, tcp and grpc"},
    {"tcp", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, has_hc_tcp), .sub = &hc_tcp_schema,
     .docdef = "-", .doc = "`{}`: a connect to the endpoint (over the mesh: a CONNECT tunnel "
     "through its sidecar to the app port, which its sidecar opens before answering)"},
    {"grpc", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, has_hc_grpc), .sub = &hc_grpc_schema,
     .docdef = "-", .doc = "grpc.health.v1 Health/Check on the Service's first GRPC (else "
     "first) port; SERVING passes"},
};
static const cfg_schema hc_schema = CFG_SCHEMA("HealthCheck", raw_dr, hc_fields, hc_check);

/* tls (Istio ClientTLSSettings): SIMPLE and DISABLE are applied; the modes
 * that present a client certificate are refused rather than ignored. */
static const cfg_enum tls_mode_enum[] = {{"DISABLE", RETE_TLS_ORIG_DISABLE},
                                         {"SIMPLE", RETE_TLS_ORIG_SIMPLE},
                                         {"MUTUAL", -1},
                                         {"ISTIO_MUTUAL", -2},
                                         {NULL, 0}};

static rete_rc check_tls_mode(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    (void)n;
    return *(int *)value >= 0
               ? RETE_OK
               : cfg_fail(ctx, "%s is not supported: only SIMPLE (TLS to a server outside the "
                               "mesh) and DISABLE; mesh endpoints always get the sidecars' mTLS",
                          *(int *)value == -1 ? "MUTUAL" : "ISTIO_MUTUAL");
}

static const cfg_field client_tls_fields[] = {
    {"mode", CFG_ENUM, 0, CFG_AT(raw_dr, p.tls_mode), .en = tls_mode_enum, .def = "DISABLE",
     .check = check_tls_mode,
     .doc = "SIMPLE: the calling proxy originates TLS to the Service's endpoints outside the mesh "
            "(an externalName or inMesh: false Workloads), so the app speaks plain HTTP; DISABLE: "
            "plaintext. MUTUAL and ISTIO_MUTUAL are refused. Endpoints in the mesh always get the "
            "sidecars' mTLS"},
    {"caCertificates", CFG_FILE, 0, CFG_AT(raw_dr, p.tls_ca), .docdef = "the system's roots",
     .doc = "PEM file of the roots the server's certificate must chain to"},
    {"sni", CFG_STR, 0, CFG_AT(raw_dr, p.tls_sni), .check = cfg_check_dns_name,
     .docdef = "the Service's externalName, else the endpoint's address",
     .doc = "the name sent as SNI and checked against the server certificate's subjectAltNames"},
};
static const cfg_schema client_tls_schema =
    CFG_SCHEMA("ClientTLSSettings", raw_dr, client_tls_fields, NULL);

static const cfg_field policy_fields[] = {
    {"loadBalancer", CFG_OBJ, 0, .off = 0, .sub = &lb_schema},
    {"connectionPool", CFG_OBJ, 0, .off = 0, .sub = &pool_schema},
    {"outlierDetection", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, has_outlier),
     .sub = &outlier_schema, .docdef = "off"},
    {"retryConstraint", CFG_OBJ, 0, .off = 0, .sub = &retry_constraint_schema,
     .doc = "rete extension in Gateway API's shape (GEP-3388, BackendTrafficPolicy "
     "retryConstraint): the Service's retry budget, kept by each calling proxy across its "
     "workers"},
    {"healthCheck", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_dr, has_hc), .sub = &hc_schema,
     .docdef = "off", .doc = "rete extension (Envoy's and Consul's shape): active health "
     "checks of each endpoint by the calling proxy; failing endpoints leave the balancer"},
    {"tls", CFG_OBJ, 0, .off = 0, .sub = &client_tls_schema},
};

/* Istio: locality balancing is on by default, and takes effect only with
 * outlier detection (without it an unhealthy zone would keep its traffic). */
static rete_rc policy_check(cfg_ctx *ctx, void *obj)
{
    (void)ctx;
    raw_dr *r = obj;
    r->p.locality = r->has_outlier && (!r->has_locality || r->locality_enabled);
    return RETE_OK;
}
const cfg_schema cfg_policy_schema = CFG_SCHEMA("TrafficPolicy", raw_dr, policy_fields, policy_check);

static const cfg_field dr_fields[] = {
    {"host", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_dr, host),
     .doc = "a Service: name (in the rule's namespace), name.ns, name.ns.svc or the FQDN"},
    {"trafficPolicy", CFG_OBJ, 0, .off = 0, .sub = &cfg_policy_schema},
};
const cfg_schema cfg_spec_dr = CFG_SCHEMA("DestinationRule", raw_dr, dr_fields, NULL);

/* ---- PeerAuthentication, AuthorizationPolicy, MeshConfig (Istio security/v1) -------- */

static const cfg_field selector_fields[] = {
    {"matchLabels", CFG_LABELS, 0, CFG_AT(raw_selector, labels), CFG_CNT(raw_selector, n_labels)},
};
static const cfg_schema selector_schema =
    CFG_SCHEMA("WorkloadSelector", raw_selector, selector_fields, NULL);

static const cfg_enum mtls_enum[] = {{"UNSET", MTLS_UNSET},
                                     {"STRICT", RETE_MTLS_STRICT},
                                     {"PERMISSIVE", RETE_MTLS_PERMISSIVE},
                                     {"DISABLE", RETE_MTLS_DISABLE},
                                     {NULL, 0}};
static const cfg_enum mesh_mtls_enum[] = {{"STRICT", RETE_MTLS_STRICT},
                                          {"PERMISSIVE", RETE_MTLS_PERMISSIVE},
                                          {"DISABLE", RETE_MTLS_DISABLE},
                                          {NULL, 0}};

static const cfg_field mtls_fields[] = {
    {"mode", CFG_ENUM, 0, CFG_AT(raw_peer_authn, mode), .en = mtls_enum, .def = "UNSET",
     .doc = "UNSET inherits from the next broader policy. DISABLE serves plaintext on the inbound listener (15006) like PERMISSIVE but keeps mTLS between sidecars (unlike Istio; see architecture.md, Security)"},
};
static const cfg_schema mtls_schema = CFG_SCHEMA("MutualTLS", raw_peer_authn, mtls_fields, NULL);

static const cfg_field peer_authn_fields[] = {
    {"selector", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_peer_authn, selector),
     CFG_HAS(raw_peer_authn, has_selector), .sub = &selector_schema, .docdef = "whole namespace"},
    {"mtls", CFG_OBJ, 0, .off = 0, .sub = &mtls_schema},
};
const cfg_schema cfg_spec_peer_authn =
    CFG_SCHEMA("PeerAuthentication", raw_peer_authn, peer_authn_fields, NULL);

static const cfg_field authz_source_fields[] = {
    {"principals", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, principals),
     CFG_CNT(rete_authz_rule, n_principals),
     .doc = "SPIFFE IDs without spiffe://, e.g. cluster.local/ns/demo/sa/web; * prefix/suffix"},
    {"notPrincipals", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, not_principals),
     CFG_CNT(rete_authz_rule, n_not_principals)},
    {"namespaces", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, namespaces),
     CFG_CNT(rete_authz_rule, n_namespaces)},
    {"notNamespaces", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, not_namespaces),
     CFG_CNT(rete_authz_rule, n_not_namespaces)},
};
static const cfg_schema authz_source_schema =
    CFG_SCHEMA("Source", rete_authz_rule, authz_source_fields, NULL);

static const cfg_field authz_op_fields[] = {
    {"methods", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, methods),
     CFG_CNT(rete_authz_rule, n_methods)},
    {"notMethods", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, not_methods),
     CFG_CNT(rete_authz_rule, n_not_methods)},
    {"paths", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, paths), CFG_CNT(rete_authz_rule, n_paths),
     .doc = "exact, \"prefix*\" or \"*suffix\""},
    {"notPaths", CFG_STRLIST, 0, CFG_AT(rete_authz_rule, not_paths),
     CFG_CNT(rete_authz_rule, n_not_paths)},
    {"ports", CFG_INTLIST, CFG_STRINT, CFG_AT(rete_authz_rule, ports),
     CFG_CNT(rete_authz_rule, n_ports), .elem = sizeof(uint16_t), .min = 1, .max = 65535,
     .doc = "\"8080\" or 8080"},
    {"notPorts", CFG_INTLIST, CFG_STRINT, CFG_AT(rete_authz_rule, not_ports),
     CFG_CNT(rete_authz_rule, n_not_ports), .elem = sizeof(uint16_t), .min = 1, .max = 65535},
};
static const cfg_schema authz_op_schema =
    CFG_SCHEMA("Operation", rete_authz_rule, authz_op_fields, NULL);

static const cfg_field authz_from_fields[] = {
    {"source", CFG_OBJ, CFG_REQUIRED, .off = 0, .sub = &authz_source_schema},
};
static const cfg_schema authz_from_schema =
    CFG_SCHEMA("Rule.From", rete_authz_rule, authz_from_fields, NULL);

static const cfg_field authz_to_fields[] = {
    {"operation", CFG_OBJ, CFG_REQUIRED, .off = 0, .sub = &authz_op_schema},
};
static const cfg_schema authz_to_schema =
    CFG_SCHEMA("Rule.To", rete_authz_rule, authz_to_fields, NULL);

static const cfg_field authz_rule_fields[] = {
    {"from", CFG_LIST, 0, CFG_AT(raw_authz_rule, from), CFG_CNT(raw_authz_rule, n_from), .max = 64,
     .sub = &authz_from_schema, .docdef = "any source", .doc = "OR of sources"},
    {"to", CFG_LIST, 0, CFG_AT(raw_authz_rule, to), CFG_CNT(raw_authz_rule, n_to), .max = 64,
     .sub = &authz_to_schema, .docdef = "any operation", .doc = "OR of operations"},
};
static const cfg_schema authz_rule_schema =
    CFG_SCHEMA("Rule", raw_authz_rule, authz_rule_fields, NULL);

static const cfg_enum authz_action_enum[] = {
    {"ALLOW", RETE_AUTHZ_ALLOW}, {"DENY", RETE_AUTHZ_DENY}, {"AUDIT", RETE_AUTHZ_AUDIT}, {NULL, 0}};

static const cfg_field authz_fields[] = {
    {"selector", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_authz, selector),
     CFG_HAS(raw_authz, has_selector), .sub = &selector_schema, .docdef = "whole namespace"},
    {"action", CFG_ENUM, 0, CFG_AT(raw_authz, action), .en = authz_action_enum, .def = "ALLOW"},
    {"rules", CFG_LIST, 0, CFG_AT(raw_authz, rules), CFG_CNT(raw_authz, n_rules), .max = 256,
     .sub = &authz_rule_schema, .docdef = "none: matches nothing",
     .doc = "OR of rules; a rule is (any from) AND (any to)"},
};
const cfg_schema cfg_spec_authz =
    CFG_SCHEMA("AuthorizationPolicy", raw_authz, authz_fields, NULL);

/* ---- HTTPLocalRateLimitPolicy (Linkerd policy.linkerd.io/v1alpha1) ---- */

static const cfg_enum client_ref_kind_enum[] = {{"ServiceAccount", 1}, {NULL, 0}};
static const cfg_field client_ref_fields[] = {
    {"kind", CFG_ENUM, 0, CFG_AT(raw_client_ref, kind), .en = client_ref_kind_enum,
     .def = "ServiceAccount"},
    {"name", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_client_ref, name)},
    {"namespace", CFG_STR, CFG_NONEMPTY, CFG_AT(raw_client_ref, ns),
     .docdef = "the policy's namespace"},
};
static const cfg_schema client_ref_schema =
    CFG_SCHEMA("ClientRef", raw_client_ref, client_ref_fields, NULL);

static const cfg_field rl_override_fields[] = {
    {"requestsPerSecond", CFG_INT, CFG_REQUIRED, CFG_AT(raw_rl_override, rps), .min = 1,
     .max = 1000000, .doc = "the bucket of each identity listed, instead of identity's"},
    {"clientRefs", CFG_LIST, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_rl_override, refs),
     CFG_CNT(raw_rl_override, n_refs), .max = 64, .sub = &client_ref_schema},
};
static const cfg_schema rl_override_schema =
    CFG_SCHEMA("Override", raw_rl_override, rl_override_fields, NULL);

static const cfg_field rl_total_fields[] = {
    {"requestsPerSecond", CFG_INT, CFG_REQUIRED, CFG_AT(raw_rate_limit, total_rps), .min = 1,
     .max = 1000000, .doc = CFG_RPS_DOC},
};
static const cfg_schema rl_total_schema = CFG_SCHEMA("Limit", raw_rate_limit, rl_total_fields, NULL);
static const cfg_field rl_identity_fields[] = {
    {"requestsPerSecond", CFG_INT, CFG_REQUIRED, CFG_AT(raw_rate_limit, identity_rps), .min = 1,
     .max = 1000000, .doc = CFG_RPS_DOC "; one bucket per caller identity"},
};
static const cfg_schema rl_identity_schema =
    CFG_SCHEMA("Limit", raw_rate_limit, rl_identity_fields, NULL);

static rete_rc rate_limit_check(cfg_ctx *ctx, void *obj)
{
    const raw_rate_limit *r = obj;
    if (!r->has_total && !r->has_identity && !r->n_overrides)
        return cfg_fail(ctx, "one of total, identity or overrides is required");
    return RETE_OK;
}

static const cfg_field rate_limit_fields[] = {
    {"selector", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_rate_limit, selector),
     CFG_HAS(raw_rate_limit, has_selector), .sub = &selector_schema, .docdef = "whole namespace",
     .doc = "rete: the workloads it applies to (Linkerd's targetRef names a Server)"},
    {"port", CFG_INT, 0, CFG_AT(raw_rate_limit, port), .min = 1, .max = 65535,
     .docdef = "every inbound port", .doc = "rete: the inbound (target) port it applies to"},
    {"total", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_rate_limit, has_total),
     .sub = &rl_total_schema, .docdef = "none", .doc = "one bucket for every caller"},
    {"identity", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_rate_limit, has_identity),
     .sub = &rl_identity_schema, .docdef = "none",
     .doc = "a bucket per caller identity (mTLS SPIFFE ID; plaintext callers share one)"},
    {"overrides", CFG_LIST, 0, CFG_AT(raw_rate_limit, overrides),
     CFG_CNT(raw_rate_limit, n_overrides), .max = 64, .sub = &rl_override_schema},
};
const cfg_schema cfg_spec_rate_limit =
    CFG_SCHEMA("HTTPLocalRateLimitPolicy", raw_rate_limit, rate_limit_fields, rate_limit_check);

static const cfg_enum path_norm_enum[] = {
    {"NONE", RETE_PATH_NORM_NONE},
    {"BASE", RETE_PATH_NORM_BASE},
    {"MERGE_SLASHES", RETE_PATH_NORM_MERGE_SLASHES},
    {"DECODE_AND_MERGE_SLASHES", RETE_PATH_NORM_DECODE_AND_MERGE_SLASHES},
    {NULL, 0}};

/* Istio MeshConfig.ProxyPathNormalization. */
static const cfg_field path_norm_fields[] = {
    {"normalization", CFG_ENUM, 0, CFG_AT(raw_mesh, path_norm), .en = path_norm_enum,
     .def = "BASE",
     .doc = "how sidecars normalise request paths before routing, authorization and forwarding: "
            "NONE (as received), BASE (RFC 3986 dot segments, decoded unreserved escapes), "
            "MERGE_SLASHES (BASE and // merged), DECODE_AND_MERGE_SLASHES (MERGE_SLASHES and "
            "%2F, %5C, \\ as /). Every mode refuses (400) fragments, NUL, control bytes; "
            "all but NONE refuse bad escapes, ..;/ segments, and (but the last) %2F, %5C, \\. "
            "See docs/security.md"},
};
static const cfg_schema path_norm_schema =
    CFG_SCHEMA("ProxyPathNormalization", raw_mesh, path_norm_fields, NULL);

static const cfg_enum outbound_policy_enum[] = {
    {"ALLOW_ANY", RETE_OUTBOUND_ALLOW_ANY}, {"REGISTRY_ONLY", RETE_OUTBOUND_REGISTRY_ONLY}, {NULL, 0}};

/* Istio MeshConfig.OutboundTrafficPolicy. */
static const cfg_field outbound_policy_fields[] = {
    {"mode", CFG_ENUM, 0, CFG_AT(raw_mesh, outbound_policy), .en = outbound_policy_enum,
     .def = "ALLOW_ANY",
     .doc = "an intercepted outbound connection whose original destination is no Service "
            "(clusterIP or endpoint address; for HTTP, after the Host header): ALLOW_ANY passes "
            "it through to that destination unmeshed (plaintext as sent), REGISTRY_ONLY refuses "
            "it (HTTP 502, a tunnel is closed). Both are counted in "
            "rete_proxy_outbound_unknown_destination_total{action}"},
};
static const cfg_schema outbound_policy_schema =
    CFG_SCHEMA("OutboundTrafficPolicy", raw_mesh, outbound_policy_fields, NULL);

/* MeshConfig tracing (rete's own shape; Istio spreads the same over
 * defaultConfig.tracing.sampling and an extensionProvider). */
static const cfg_enum trace_format_enum[] = {
    {"otlp", RETE_TRACE_OTLP}, {"zipkin", RETE_TRACE_ZIPKIN}, {NULL, 0}};

/* "host:port": a DNS name or an IP literal ([v6] in brackets), port 1..65535. */
static rete_rc check_collector(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    (void)n;
    const char *s = *(const char **)value;
    const char *colon = strrchr(s, ':');
    bool ok = colon && colon > s && colon[1] && strlen(s) < 200;
    unsigned long port = 0;
    for (const char *c = ok ? colon + 1 : ""; ok && *c; c++) {
        ok = *c >= '0' && *c <= '9';
        port = port * 10 + (unsigned long)(*c - '0');
        ok = ok && port <= 65535;
    }
    for (const char *c = s; ok && c < colon; c++)
        ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
             *c == '-' || *c == '.' || *c == ':' || *c == '[' || *c == ']';
    return ok && port ? RETE_OK
                      : cfg_fail(ctx, "must be \"HOST:PORT\" (a DNS name or an IP address, port "
                                      "1..65535; plain HTTP/1.1 over TCP)");
}

/* tracing.sampling: a percentage 0..100 with at most 4 decimals (1e-4 %
 * is one part per million, the sampler's grain). */
static rete_rc tracing_check(cfg_ctx *ctx, void *obj)
{
    raw_mesh *m = obj;
    const char *s = m->trace_sampling ? m->trace_sampling : "1";
    uint64_t whole = 0, frac = 0;
    int digits = 0, fdigits = 0;
    while (*s >= '0' && *s <= '9' && digits < 4)
        whole = whole * 10 + (uint64_t)(*s++ - '0'), digits++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9' && fdigits < 5; fdigits++)
            frac = frac * 10 + (uint64_t)(*s++ - '0');
    if (!digits || *s || fdigits > 4 || whole > 100 || (whole == 100 && frac))
        return cfg_fail_at(ctx, "sampling", "must be a percentage from 0 to 100 with at most 4 "
                                            "decimals");
    while (fdigits++ < 4)
        frac *= 10;
    m->trace_ppm = (uint32_t)(whole * 10000 + frac);
    return RETE_OK;
}

static const cfg_field tracing_fields[] = {
    {"sampling", CFG_STR, 0, CFG_AT(raw_mesh, trace_sampling), .def = "1",
     .doc = "percent of requests that arrive without a sampling decision which a sidecar starts "
            "a trace for (0..100, at most 4 decimals); a request whose traceparent or B3 headers "
            "carry a decision follows it"},
    {"collector", CFG_STR, 0, CFG_AT(raw_mesh, trace_collector), .check = check_collector,
     .docdef = "none: tracing off",
     .doc = "where each proxy's exporter thread POSTs its spans, HOST:PORT (plain HTTP/1.1 over "
            "TCP; an OpenTelemetry collector, Jaeger or Tempo for otlp, Zipkin or Jaeger for "
            "zipkin). Without it no span is made and trace headers pass through untouched"},
    {"format", CFG_ENUM, 0, CFG_AT(raw_mesh, trace_format), .en = trace_format_enum,
     .def = "otlp",
     .doc = "otlp: OTLP/HTTP JSON to /v1/traces; zipkin: Zipkin v2 JSON to /api/v2/spans"},
};
static const cfg_schema tracing_schema = CFG_SCHEMA("Tracing", raw_mesh, tracing_fields, tracing_check);

static const cfg_field mesh_fields[] = {
    {"trustDomain", CFG_STR, CFG_NONEMPTY, CFG_AT(raw_mesh, trust_domain),
     .docdef = RETE_DEFAULT_TRUST_DOMAIN},
    {"defaultMtlsMode", CFG_ENUM, 0, CFG_AT(raw_mesh, default_mtls), .en = mesh_mtls_enum,
     .def = "PERMISSIVE", .doc = "when no PeerAuthentication applies"},
    {"defaultEgress", CFG_STRLIST, 0, CFG_AT(raw_mesh, default_egress),
     CFG_CNT(raw_mesh, n_default_egress), .max = 64, .check = cfg_check_egress_host,
     .docdef = "[\"*/*\"] (the whole mesh)",
     .doc = "egress of every Workload that sets none (see Workload `egress`)"},
    {"workloadCertificateTTL", CFG_DURATION, 0, CFG_AT(raw_mesh, cert_ttl_ms), .min = 10000,
     .max = 30u * 24 * 3600 * 1000, .docdef = "reted --cert-ttl (24h)",
     .doc = "lifetime of the workload certificates reted issues (10s to 30 days); proxies renew "
            "at about half of it"},
    {"pathNormalization", CFG_OBJ, 0, .off = 0, .sub = &path_norm_schema},
    {"outboundTrafficPolicy", CFG_OBJ, 0, .off = 0, .sub = &outbound_policy_schema},
    {"serviceCIDR", CFG_STR, 0, CFG_AT(raw_mesh, service_cidr), .check = cfg_check_cidr,
     .docdef = "none: reted assigns no clusterIP",
     .doc = "the range (IPv4 or IPv6 CIDR) reted assigns Service clusterIPs from, as "
            "Kubernetes' --service-cluster-ip-range; every clusterIP, given or assigned, must "
            "lie inside it (a change that leaves a Service's clusterIP outside is refused naming "
            "the Service); when every address is taken, a Service without clusterIP is refused. "
            "The range's first address (and, for IPv4, its last) is never assigned"},
    {"tracing", CFG_OBJ, 0, .off = 0, .sub = &tracing_schema,
     .doc = "distributed tracing: W3C traceparent and B3 propagated, one client and one server "
            "span per hop (docs/observability.md)"},
};
const cfg_schema cfg_spec_mesh = CFG_SCHEMA("MeshConfig", raw_mesh, mesh_fields, NULL);

/* ---- WorkloadGroup ------------------------------------------------------------------ */

static const cfg_field workload_group_fields[] = {
    {"serviceAccount", CFG_STR, CFG_REQUIRED, CFG_AT(raw_workload_group, service_account),
     .check = cfg_check_dns_name,
     .doc = "the identity it admits: proxies whose certificate names this service account (in "
            "the group's namespace)"},
    {"labels", CFG_LABELS, 0, CFG_AT(raw_workload_group, labels),
     CFG_CNT(raw_workload_group, n_labels), .docdef = "none: only a Workload without labels",
     .doc = "the labels such a proxy may claim when it registers its Workload: it may claim "
            "these or fewer, never another key or value (one group per label set; a proxy is "
            "admitted when one group of its account covers its claim)"},
    {"egress", CFG_STRLIST, 0, CFG_AT(raw_workload_group, egress),
     CFG_CNT(raw_workload_group, n_egress), .max = 64, .check = cfg_check_egress_host,
     .docdef = "MeshConfig's defaultEgress",
     .doc = "the widest egress such a proxy may claim (`NAMESPACE/NAME` patterns, as Workload "
            "`egress`): each host it claims must fall under one of these"},
};
const cfg_schema cfg_spec_workload_group =
    CFG_SCHEMA("WorkloadGroup", raw_workload_group, workload_group_fields, NULL);

/* ---- reference documentation ------------------------------------------------------ */

void rete_config_write_reference(FILE *out)
{
    fprintf(out, "### metadata (every kind)\n\n| field | type | required | default | notes |\n"
                 "| --- | --- | --- | --- | --- |\n");
    cfg_schema_markdown(out, &cfg_meta_schema, "metadata");
    fprintf(out, "\n");
    for (size_t k = 0; k < RETE_KIND_COUNT; k++) {
        const rete_kind *kd = &rete_kinds[k];
        fprintf(out, "### %s\n\n%s\n\n`apiVersion: %s`", kd->kind, kd->doc, kd->api_versions[0]);
        for (size_t i = 1; i < CFG_ARRAY_LEN(kd->api_versions) && kd->api_versions[i]; i++)
            fprintf(out, " (also accepted: `%s`)", kd->api_versions[i]);
        fprintf(
            out,
            "\n\n| field | type | required | default | notes |\n| --- | --- | --- | --- | --- |\n");
        cfg_schema_markdown(out, kd->spec, "spec");
        fprintf(out, "\n");
    }
}
