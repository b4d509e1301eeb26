/* The field tables of the workload and route kinds (Proxy, Service, Workload,
 * HTTPRoute, GRPCRoute, TCPRoute) and the validators of single values every
 * table uses: one cfg_field table and cfg_schema per YAML mapping with the
 * whole-object checks that go with it. The policy kinds are in
 * config_fields_policy.c.
 *
 * Separate from the loader (config.c) and the resolution pass
 * (config_resolve.c) because it describes the resources rather than driving
 * a load: a field is added or changed here alone, and its table is where its
 * parsing, its error messages and its documentation come from
 * (config_schema.h). */
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

/* ---- field validators --------------------------------------------------------- */

/* RFC 1123 subdomain, as Kubernetes requires of names and namespaces. */
rete_rc cfg_check_dns_name(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    const char *s = *(const char **)value;
    size_t len = strlen(s);
    bool ok = len > 0 && len <= 253;
    for (size_t i = 0; ok && i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        ok = alnum || ((c == '-' || c == '.') && i > 0 && i + 1 < len);
    }
    return ok ? RETE_OK
              : cfg_fail(ctx, "must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.'; at most "
                              "253 characters; starting and ending alphanumeric)");
}

static rete_rc check_ip(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    return cfg_is_ip(*(const char **)value) ? RETE_OK : cfg_fail(ctx, "must be an IP literal");
}

rete_rc cfg_check_cidr(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    rete_cidr c;
    return rete_cidr_parse(*(const char **)value, &c)
               ? RETE_OK
               : cfg_fail(ctx, "must be an IPv4 or IPv6 CIDR (ADDRESS/PREFIX, no bits set past "
                               "the prefix)");
}

/* Gateway API HTTPHeaderName: an RFC 7230 token. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

rete_rc cfg_check_header_name(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    return is_token(*(const char **)value)
               ? RETE_OK
               : cfg_fail(ctx, "must be a valid header name (RFC 7230 token)");
}

static rete_rc check_header_value(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    for (const char *s = *(const char **)value; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return cfg_fail(ctx, "must not contain control characters");
    return RETE_OK;
}

/* Gateway API HTTPPathModifier / path values: absolute, no dot segments, no '//'. */
static bool path_ok(const char *p)
{
    if (p[0] != '/')
        return false;
    static const char *const bad[] = {"//", "/./", "/../", "%2f", "%2F", "#"};
    for (size_t i = 0; i < CFG_ARRAY_LEN(bad); i++)
        if (strstr(p, bad[i]))
            return false;
    size_t len = strlen(p);
    return !(len >= 2 && strcmp(p + len - 2, "/.") == 0) &&
           !(len >= 3 && strcmp(p + len - 3, "/..") == 0);
}

static rete_rc check_path(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    const char *p = *(const char **)value;
    if (p[0] != '/')
        return cfg_fail(ctx, "must start with /");
    return path_ok(p) ? RETE_OK
                      : cfg_fail(ctx, "must not contain '//', '/./', '/../', '%%2f' or '#'");
}

static rete_rc check_method(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",  "DELETE",
                                          "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    for (size_t i = 0; i < CFG_ARRAY_LEN(methods); i++)
        if (strcmp(methods[i], *(const char **)value) == 0)
            return RETE_OK;
    return cfg_fail(ctx,
                    "must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH");
}

static rete_rc check_scheme(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    const char *s = *(const char **)value;
    return strcmp(s, "http") == 0 || strcmp(s, "https") == 0
               ? RETE_OK
               : cfg_fail(ctx, "must be one of http, https");
}

static rete_rc check_hostname(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    const char *s = *(const char **)value;
    bool ok = *s && strlen(s) <= 253;
    for (; ok && *s; s++)
        ok = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.' ||
             (*s == '*' && s == *(const char **)value && s[1] == '.');
    return ok ? RETE_OK
              : cfg_fail(ctx, "must be a lowercase hostname (RFC 1123, optional leading \"*.\")");
}

/* An egress host of a Workload or MeshConfig (Istio Sidecar's
 * "namespace/name" form): NS/NAME where NS is a namespace, "." (the
 * workload's own) or "*", and NAME a Service name or "*". */
rete_rc cfg_check_egress_host(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    const char *s = *(const char **)value;
    const char *slash = strchr(s, '/');
    bool ok = slash && slash > s && slash[1] && !strchr(slash + 1, '/');
    for (const char *c = s; ok && *c; c++)
        ok = c == slash || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
             *c == '.' || *c == '*';
    if (ok) {
        size_t nl = (size_t)(slash - s);
        ok = (nl == 1 && (s[0] == '*' || s[0] == '.')) || !memchr(s, '*', nl);
        ok = ok && (strcmp(slash + 1, "*") == 0 || !strchr(slash + 1, '*'));
    }
    return ok ? RETE_OK
              : cfg_fail(ctx, "must be \"NAMESPACE/NAME\": NAMESPACE a namespace, \".\" (the "
                              "workload's own) or \"*\"; NAME a Service name or \"*\"");
}

static rete_rc check_group(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    const char *s = *(const char **)value;
    return s[0] == '\0' || strcmp(s, "core") == 0
               ? RETE_OK
               : cfg_fail(ctx, "must be \"\" or \"core\" (only Service references are supported)");
}

static rete_rc check_kind_service(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    return strcmp(*(const char **)value, "Service") == 0
               ? RETE_OK
               : cfg_fail(ctx, "must be Service (GAMMA: routes attach to and send to Services)");
}

rete_rc cfg_check_prime(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    uint32_t v;
    memcpy(&v, value, sizeof(v));
    for (uint32_t d = 2; (uint64_t)d * d <= v; d++)
        if (v % d == 0)
            return cfg_fail(ctx, "must be a prime number");
    return v >= 2 ? RETE_OK : cfg_fail(ctx, "must be a prime number");
}

/* ---- metadata ------------------------------------------------------------------- */

static const cfg_field meta_fields[] = {
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_meta, name), .check = cfg_check_dns_name,
     .doc = "resource name (RFC 1123)"},
    {"namespace", CFG_STR, 0, CFG_AT(raw_meta, ns), .def = "default", .check = cfg_check_dns_name},
    {"labels", CFG_LABELS, 0, CFG_AT(raw_meta, labels), CFG_CNT(raw_meta, n_labels)},
    {"annotations", CFG_LABELS, CFG_IGNORED, .doc = "accepted and ignored"},
    /* Written by reted on what it stores; a document read back with
     * `retectl get -o yaml` can be applied again as it is. */
    {"resourceVersion", CFG_STR, CFG_IGNORED, .doc = "set by reted; on apply, the version the update expects (optimistic concurrency)"},
    {"creationTimestamp", CFG_STR, CFG_IGNORED, .doc = "set by reted"},
    {"uid", CFG_STR, CFG_IGNORED, .doc = "accepted and ignored"},
};
const cfg_schema cfg_meta_schema = CFG_SCHEMA("metadata", raw_meta, meta_fields, NULL);

/* ---- Proxy ---------------------------------------------------------------------- */

static const cfg_enum app_protocol_enum[] = {{"HTTP", RETE_PROTO_HTTP},
                                             {"HTTP2", RETE_PROTO_HTTP2},
                                             {"GRPC", RETE_PROTO_GRPC},
                                             {"TCP", RETE_PROTO_TCP},
                                             {NULL, 0}};

static const cfg_field upstream_fields[] = {
    {"listen", CFG_ADDR, CFG_REQUIRED, CFG_AT(raw_upstream, listen),
     .doc = "local address the app connects to"},
    {"service", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_upstream, service),
     .doc = "\"name\" or \"name.namespace\" (short names are in the proxy's namespace)"},
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(raw_upstream, port), .min = 1, .max = 65535,
     .doc = "a port of that service"},
};
static const cfg_schema upstream_schema =
    CFG_SCHEMA("upstream", raw_upstream, upstream_fields, NULL);

static const cfg_field inbound_port_fields[] = {
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(rete_inbound_port, port), .min = 1, .max = 65535},
    {"protocol", CFG_ENUM, 0, CFG_AT(rete_inbound_port, protocol), .en = app_protocol_enum,
     .def = "HTTP"},
};
static const cfg_schema inbound_port_schema =
    CFG_SCHEMA("inboundPort", rete_inbound_port, inbound_port_fields, NULL);

static const cfg_field listeners_fields[] = {
    {"outbound", CFG_ADDR, 0, CFG_AT(raw_proxy, p.outbound), CFG_HAS(raw_proxy, has_outbound),
     .docdef = "*address*:" RETE_STR(RETE_PORT_OUTBOUND), .doc = "the app's outgoing traffic"},
    {"inbound", CFG_ADDR, 0, CFG_AT(raw_proxy, p.inbound), CFG_HAS(raw_proxy, has_inbound),
     .docdef = "*address*:" RETE_STR(RETE_PORT_INBOUND), .doc = "transparent inbound (plaintext, permissive mode)"},
    {"mesh", CFG_ADDR, 0, CFG_AT(raw_proxy, p.mesh), CFG_HAS(raw_proxy, has_mesh),
     .docdef = "*address*:" RETE_STR(RETE_PORT_MESH), .doc = "mTLS from other proxies"},
    {"admin", CFG_ADDR, 0, CFG_AT(raw_proxy, p.admin), CFG_HAS(raw_proxy, has_admin),
     .docdef = "*address*:" RETE_STR(RETE_PORT_ADMIN) " when *address* is a loopback address, else 127.0.0.1:" RETE_STR(RETE_PORT_ADMIN),
     .doc = "everything: /config, /clusters, /stats, POST /logging, and /metrics, /ready, /live. "
            "Must be a loopback address"},
    {"stats", CFG_ADDR, 0, CFG_AT(raw_proxy, p.stats), CFG_HAS(raw_proxy, has_stats),
     .docdef = "*address*:" RETE_STR(RETE_PORT_STATS),
     .doc = "/metrics, /ready, /live only (anything else 404): may face the network for "
            "Prometheus and probes"},
};
static const cfg_schema listeners_schema =
    CFG_SCHEMA("listeners", raw_proxy, listeners_fields, NULL);

static const cfg_field tls_fields[] = {
    {"certFile", CFG_FILE, 0, CFG_AT(raw_proxy, p.cert_file),
     .doc = "PEM workload certificate chain"},
    {"keyFile", CFG_FILE, 0, CFG_AT(raw_proxy, p.key_file), .doc = "PEM private key"},
    {"caFile", CFG_FILE, 0, CFG_AT(raw_proxy, p.ca_file),
     .doc = "PEM trust bundle (one or more roots)"},
    {"serverCertFile", CFG_FILE, 0, CFG_AT(raw_proxy, p.server_cert_file),
     .doc = "optional certificate for TLS from the app"},
    {"serverKeyFile", CFG_FILE, 0, CFG_AT(raw_proxy, p.server_key_file)},
};
static const cfg_schema tls_schema = CFG_SCHEMA("tls", raw_proxy, tls_fields, NULL);

#define LIMIT_INT(n, m, lo, hi, d, txt)                                                            \
    {                                                                                              \
        n, CFG_INT, 0, CFG_AT(rete_limits, m), .min = lo, .max = hi, .def = d, .doc = txt          \
    }
#define LIMIT_DUR(n, m, d, txt)                                                                    \
    {                                                                                              \
        n, CFG_DURATION, 0, CFG_AT(rete_limits, m), .def = d, .doc = txt                           \
    }
/* A timeout that defends against slow clients cannot be switched off. */
#define LIMIT_DUR_ON(n, m, d, txt)                                                                 \
    {                                                                                              \
        n, CFG_DURATION, 0, CFG_AT(rete_limits, m), .min = 1, .def = d, .doc = txt                 \
    }
static const cfg_field limits_fields[] = {
    LIMIT_INT("maxRequestLine", max_request_line, 64, 1u << 20, "8192", "bytes"),
    LIMIT_INT("maxHeaderBytes", max_header_bytes, 256, 16u << 20, "65536", "bytes, all headers"),
    LIMIT_INT("maxHeaders", max_headers, 1, 10000, "100", "header fields per message"),
    LIMIT_INT("maxBodyBuffer", max_body_buffer, 1024, 1u << 30, "65536",
              "bytes buffered per direction per stream"),
    LIMIT_INT("maxConnections", max_connections, 1, 10000000, "10000",
              "downstream, per worker, every listener but admin (also bounded by the file limit)"),
    LIMIT_INT("maxAdminConnections", max_admin_connections, 1, 10000, "32",
              "admin listener, apart from maxConnections so /ready answers when data is full"),
    LIMIT_INT("maxStreams", max_streams, 1, 1u << 20, "256",
              "HTTP/2 concurrent streams per connection"),
    LIMIT_DUR("detectTimeout", detect_timeout_ms, "5s", "protocol detection"),
    LIMIT_DUR("idleTimeout", idle_timeout_ms, "5m", "downstream idle"),
    LIMIT_DUR_ON("requestHeaderTimeout", request_header_timeout_ms, "10s",
                 "whole request head: HTTP/1.1 from accept (first request) or its first byte, 408; "
                 "HTTP/2 from the stream's HEADERS frame, connection closed"),
    LIMIT_DUR_ON("requestBodyTimeout", request_body_timeout_ms, "30s",
                 "request body: no byte for this long while the proxy reads (HTTP/2: until the "
                 "response starts; not gRPC, whose client streams streamIdleTimeout bounds); 408"),
    LIMIT_DUR_ON("responseWriteTimeout", response_write_timeout_ms, "60s",
                 "a client that takes no response byte for this long is closed (HTTP/2: a stream "
                 "whose response waits for flow-control credit this long is reset)"),
    LIMIT_DUR_ON("streamIdleTimeout", stream_idle_timeout_ms, "5m",
                 "HTTP/2 stream, response started (or a gRPC request), request body not ended: "
                 "nothing received or sent on it for this long; reset"),
    LIMIT_DUR_ON("tcpIdleTimeout", tcp_idle_timeout_ms, "1h",
                 "opaque TCP from a downstream: no byte either way for this long; closed"),
    LIMIT_DUR("drainTimeout", drain_timeout_ms, "5s", "grace period on SIGTERM"),
    LIMIT_INT("maxMirrorsInFlight", max_mirrors_in_flight, 0, 100000, "64",
              "RequestMirror copies in flight, per proxy (all workers); past it a request is not "
              "copied (skipped_limit); 0: no copies"),
    LIMIT_INT("maxMirrorBody", max_mirror_body, 0, 1u << 30, "65536",
              "request body bytes a RequestMirror copy carries; a request declaring more is not "
              "copied, one sending more has its copy cut (skipped_body)"),
};
static const cfg_schema limits_schema = CFG_SCHEMA("limits", rete_limits, limits_fields, NULL);

/* spec.dns: the sidecar's DNS for unmodified apps (docs/proxy.md, DNS). */
static const cfg_field dns_fields[] = {
    {"listen", CFG_ADDR, 0, CFG_AT(raw_proxy, p.dns.listen), CFG_HAS(raw_proxy, has_dns_listen),
     .docdef = "none: no DNS listener",
     .doc = "UDP and TCP address of the DNS listener, a loopback address (never an open "
            "resolver); `rete-proxy init --dns-port` redirects the app's port 53 to its port "
            "(e.g. 127.0.0.1:15053)"},
    {"upstreams", CFG_STRLIST, 0, CFG_AT(raw_proxy, p.dns.upstreams),
     CFG_CNT(raw_proxy, p.dns.n_upstreams), .max = 8, .check = check_ip,
     .docdef = "the nameservers of resolvConf",
     .doc = "resolvers (IP literals, port 53) other names are forwarded to, in turn"},
    {"resolvConf", CFG_STR, 0, CFG_AT(raw_proxy, p.dns.resolv_conf), .def = "/etc/resolv.conf",
     .doc = "read once at start for its `nameserver` lines (at most 3) when no upstreams are given"},
    {"maxInFlight", CFG_INT, 0, CFG_AT(raw_proxy, p.dns.max_in_flight), .min = 1, .max = 4096,
     .def = "256",
     .doc = "forwarded queries awaiting an upstream answer; past it a query is answered REFUSED "
            "(counted as result=\"overload\")"},
    {"timeout", CFG_DURATION, 0, CFG_AT(raw_proxy, p.dns.timeout_ms), .min = 100,
     .max = 60000, .def = "5s",
     .doc = "for an upstream answer (then SERVFAIL, result=\"timeout\"); also how long a TCP "
            "client may stay without sending a whole query"},
    {"maxTCPConnections", CFG_INT, 0, CFG_AT(raw_proxy, p.dns.max_tcp_connections), .min = 1,
     .max = 1024, .def = "16", .doc = "DNS-over-TCP clients at once; more are closed at accept"},
    {"ttl", CFG_DURATION, 0, CFG_AT(raw_proxy, p.dns.ttl_s), .min = 0, .max = 86400000,
     .def = "30s", .doc = "TTL of the mesh answers (whole seconds)"},
};
static const cfg_schema dns_schema = CFG_SCHEMA("dns", raw_proxy, dns_fields, NULL);

static bool is_loopback_ip(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

static const cfg_field http_get_fields[] = {
    {"path", CFG_STR, 0, CFG_AT(raw_proxy, p.readiness.path), .def = "/",
     .doc = "GET this path; a status 200..399 is a success (Kubernetes' rule)"},
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(raw_proxy, p.readiness.port), .min = 1, .max = 65535,
     .doc = "on appAddress"},
};
static const cfg_schema http_get_schema = CFG_SCHEMA("httpGet", raw_proxy, http_get_fields, NULL);

static const cfg_field tcp_socket_fields[] = {
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(raw_proxy, p.readiness.port), .min = 1, .max = 65535,
     .doc = "on appAddress: a connect that completes is a success"},
};
static const cfg_schema tcp_socket_schema =
    CFG_SCHEMA("tcpSocket", raw_proxy, tcp_socket_fields, NULL);

static const cfg_field readiness_fields[] = {
    {"httpGet", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_proxy, has_http_get), .sub = &http_get_schema,
     .doc = "exactly one of httpGet and tcpSocket"},
    {"tcpSocket", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_proxy, has_tcp_socket),
     .sub = &tcp_socket_schema},
    {"period", CFG_DURATION, 0, CFG_AT(raw_proxy, p.readiness.period_ms), .min = 100, .max = 3600000,
     .def = "10s", .doc = "between probes (the first runs at start)"},
    {"timeout", CFG_DURATION, 0, CFG_AT(raw_proxy, p.readiness.timeout_ms), .min = 10,
     .max = 600000, .def = "1s", .doc = "for a probe's answer; then it failed. At most period"},
    {"failureThreshold", CFG_INT, 0, CFG_AT(raw_proxy, p.readiness.failure_threshold), .min = 1,
     .max = 1000, .def = "3", .doc = "failures in a row that make the workload not ready"},
    {"successThreshold", CFG_INT, 0, CFG_AT(raw_proxy, p.readiness.success_threshold), .min = 1,
     .max = 1000, .def = "1", .doc = "successes in a row that make it ready again"},
};
static const cfg_schema readiness_schema =
    CFG_SCHEMA("readiness", raw_proxy, readiness_fields, NULL);

static rete_rc proxy_check(cfg_ctx *ctx, void *obj)
{
    raw_proxy *r = obj;
    rete_proxy_spec *p = &r->p;
    p->dns.enabled = r->has_dns_listen;
    p->dns.ttl_s /= 1000;
    p->readiness.http = r->has_http_get;
    if (p->readiness.enabled) {
        if (r->has_http_get == r->has_tcp_socket)
            return cfg_fail_at(ctx, "readiness", "exactly one of httpGet and tcpSocket is required");
        if (p->readiness.timeout_ms > p->readiness.period_ms)
            return cfg_fail_at(ctx, "readiness.timeout", "longer than readiness.period");
    }
    if (p->dns.enabled && !is_loopback_ip(p->dns.listen.host))
        return cfg_fail_at(ctx, "dns.listen",
                           "%s is not a loopback address: the DNS listener answers and forwards "
                           "any query, so it is bound to 127.0.0.0/8 or ::1 (never an open "
                           "resolver)",
                           p->dns.listen.host);
    if (!r->has_app_address)
        p->app_address = r->address;
    static const struct {
        size_t addr, has;
        uint16_t port;
    } listeners[] = {
        {offsetof(raw_proxy, p.outbound), offsetof(raw_proxy, has_outbound), RETE_PORT_OUTBOUND},
        {offsetof(raw_proxy, p.inbound), offsetof(raw_proxy, has_inbound), RETE_PORT_INBOUND},
        {offsetof(raw_proxy, p.mesh), offsetof(raw_proxy, has_mesh), RETE_PORT_MESH},
        {offsetof(raw_proxy, p.admin), offsetof(raw_proxy, has_admin), RETE_PORT_ADMIN},
        {offsetof(raw_proxy, p.stats), offsetof(raw_proxy, has_stats), RETE_PORT_STATS},
    };
    for (size_t i = 0; i < CFG_ARRAY_LEN(listeners); i++) {
        if (*((bool *)((unsigned char *)r + listeners[i].has)))
            continue;
        rete_socket_addr *a = (rete_socket_addr *)((unsigned char *)r + listeners[i].addr);
        snprintf(a->host, sizeof(a->host), "%s", r->address);
        a->port = listeners[i].port;
    }
    /* The admin listener shows the configuration and changes the log level:
     * only processes of the workload's own host (or network namespace) may
     * reach it. */
    if (!r->has_admin && !is_loopback_ip(p->admin.host))
        snprintf(p->admin.host, sizeof(p->admin.host), "127.0.0.1");
    if (!is_loopback_ip(p->admin.host))
        return cfg_fail_at(ctx, "listeners.admin",
                           "%s is not a loopback address: the admin listener serves the "
                           "configuration and changes state, so it is bound to 127.0.0.0/8 or ::1",
                           p->admin.host);
    if (!p->cert_file != !p->key_file)
        return cfg_fail_at(ctx, p->cert_file ? "tls.keyFile" : "tls.certFile",
                           "required together with %s", p->cert_file ? "certFile" : "keyFile");
    if (!p->server_cert_file != !p->server_key_file)
        return cfg_fail_at(ctx, p->server_cert_file ? "tls.serverKeyFile" : "tls.serverCertFile",
                           "required together with %s",
                           p->server_cert_file ? "serverCertFile" : "serverKeyFile");
    for (size_t i = 0; i < p->n_inbound_ports; i++)
        for (size_t j = 0; j < i; j++)
            if (p->inbound_ports[i].port == p->inbound_ports[j].port) {
                char sub[64];
                snprintf(sub, sizeof(sub), "inbound[%zu].port", i);
                return cfg_fail_at(ctx, sub, "duplicate port %u", p->inbound_ports[i].port);
            }
    return RETE_OK;
}

static const cfg_field proxy_fields[] = {
    {"serviceAccount", CFG_STR, CFG_REQUIRED, CFG_AT(raw_proxy, p.service_account),
     .check = cfg_check_dns_name,
     .doc = "identity: `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`"},
    {"trustDomain", CFG_STR, CFG_NONEMPTY, CFG_AT(raw_proxy, p.trust_domain),
     CFG_HAS(raw_proxy, has_trust_domain), .docdef = "MeshConfig's, else cluster.local"},
    {"address", CFG_STR, 0, CFG_AT(raw_proxy, address), .def = "127.0.0.1", .check = check_ip,
     .doc = "default bind IP of every listener"},
    {"appAddress", CFG_STR, 0, CFG_AT(raw_proxy, p.app_address),
     CFG_HAS(raw_proxy, has_app_address), .check = check_ip, .docdef = "*address*",
     .doc = "where the local app listens"},
    {"listeners", CFG_OBJ, 0, .off = 0, .sub = &listeners_schema},
    {"upstreams", CFG_LIST, 0, CFG_AT(raw_proxy, upstreams), CFG_CNT(raw_proxy, n_upstreams),
     .max = 64, .sub = &upstream_schema, .doc = "explicit upstream listeners (Consul style)"},
    {"inbound", CFG_LIST, 0, CFG_AT(raw_proxy, p.inbound_ports),
     CFG_CNT(raw_proxy, p.n_inbound_ports), CFG_HAS(raw_proxy, has_inbound_ports), .max = 64,
     .sub = &inbound_port_schema, .docdef = "target ports of the Services selecting this workload",
     .doc = "app ports this sidecar fronts"},
    {"tls", CFG_OBJ, 0, .off = 0, .sub = &tls_schema,
     .doc = "relative paths are relative to the config file's directory"},
    {"concurrency", CFG_INT, 0, CFG_AT(raw_proxy, p.concurrency), .min = 1, .max = 256, .def = "1",
     .doc = "worker threads"},
    {"limits", CFG_OBJ, 0, .off = offsetof(raw_proxy, p.limits), .sub = &limits_schema},
    {"dns", CFG_OBJ, 0, .off = 0, .sub = &dns_schema,
     .doc = "the sidecar answers A/AAAA for mesh names and forwards the rest (docs/proxy.md, DNS)"},
    {"readiness", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_proxy, p.readiness.enabled),
     .sub = &readiness_schema,
     .doc = "the app's readiness probe, run by the sidecar (Kubernetes readinessProbe's shape): "
            "while it fails, /ready answers 503 and reted takes the workload out of other "
            "proxies' endpoints (docs/traffic.md, Readiness)"},
    {"externalNameRefresh", CFG_DURATION, 0, CFG_AT(raw_proxy, p.external_refresh_ms),
     .min = 1000, .max = 3600000, .def = "30s",
     .doc = "how often the proxy resolves again the DNS names of Services with `externalName` "
            "(1s..1h); a failed resolution keeps the last addresses"},
};
const cfg_schema cfg_spec_proxy = CFG_SCHEMA("Proxy", raw_proxy, proxy_fields, proxy_check);

/* ---- Service -------------------------------------------------------------------- */

static const cfg_enum app_protocol_k8s_enum[] = {
    {"http", RETE_PROTO_HTTP}, {"http2", RETE_PROTO_HTTP2}, {"kubernetes.io/h2c", RETE_PROTO_HTTP2},
    {"grpc", RETE_PROTO_GRPC}, {"tcp", RETE_PROTO_TCP},     {NULL, 0}};

static rete_rc svc_port_check(cfg_ctx *ctx, void *obj)
{
    raw_svc_port *r = obj;
    if (!r->has_target)
        r->p.target_port = r->p.port;
    r->p.protocol = r->has_app_protocol ? (rete_app_protocol)r->app_protocol
                    : r->has_protocol   ? (rete_app_protocol)r->protocol
                                        : RETE_PROTO_HTTP;
    return RETE_OK;
}

static const cfg_field svc_port_fields[] = {
    {"name", CFG_STR, 0, CFG_AT(raw_svc_port, p.name), .check = cfg_check_dns_name,
     .doc = "required when there is more than one port"},
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(raw_svc_port, p.port), .min = 1, .max = 65535},
    {"targetPort", CFG_INT, 0, CFG_AT(raw_svc_port, p.target_port),
     CFG_HAS(raw_svc_port, has_target), .min = 1, .max = 65535, .docdef = "*port*",
     .doc = "numeric only"},
    {"protocol", CFG_ENUM, 0, CFG_AT(raw_svc_port, protocol), CFG_HAS(raw_svc_port, has_protocol),
     .en = app_protocol_enum, .docdef = "HTTP (detected at runtime)"},
    {"appProtocol", CFG_ENUM, 0, CFG_AT(raw_svc_port, app_protocol),
     CFG_HAS(raw_svc_port, has_app_protocol), .en = app_protocol_k8s_enum,
     .doc = "wins over protocol"},
};
static const cfg_schema svc_port_schema =
    CFG_SCHEMA("ServicePort", raw_svc_port, svc_port_fields, svc_port_check);

/* externalName: a DNS name (RFC 1123, lowercase) or an IP literal. */
static rete_rc check_external_name(cfg_ctx *ctx, const rete_ynode *n, void *value)
{
    return cfg_is_ip(*(const char **)value) ? RETE_OK : cfg_check_dns_name(ctx, n, value);
}

static rete_rc service_check(cfg_ctx *ctx, void *obj)
{
    raw_service *r = obj;
    char sub[64];
    if (r->external_name && r->n_selector)
        return cfg_fail_at(ctx, "selector",
                           "must be empty with externalName (its endpoints are the host's "
                           "addresses)");
    for (size_t i = 0; i < r->n_ports; i++) {
        const rete_service_port *p = &r->ports[i].p;
        snprintf(sub, sizeof(sub), "ports[%zu].name", i);
        if (r->n_ports > 1 && !p->name)
            return cfg_fail_at(ctx, sub, "required when a Service has more than one port");
        for (size_t j = 0; j < i; j++) {
            if (p->name && r->ports[j].p.name && strcmp(p->name, r->ports[j].p.name) == 0)
                return cfg_fail_at(ctx, sub, "duplicate port name %s", p->name);
            if (p->port == r->ports[j].p.port) {
                snprintf(sub, sizeof(sub), "ports[%zu].port", i);
                return cfg_fail_at(ctx, sub, "duplicate port %u", p->port);
            }
        }
    }
    return RETE_OK;
}

static const cfg_field service_fields[] = {
    {"ports", CFG_LIST, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_service, ports),
     CFG_CNT(raw_service, n_ports), .max = 64, .sub = &svc_port_schema},
    {"selector", CFG_LABELS, 0, CFG_AT(raw_service, selector), CFG_CNT(raw_service, n_selector),
     .doc = "workloads (same namespace) whose labels include all of these are endpoints; "
            "empty selects none"},
    {"clusterIP", CFG_STR, 0, CFG_AT(raw_service, cluster_ip), .check = check_ip, .docdef = "none",
     .doc = "the Service's virtual address (IPv4 or IPv6 literal, unique in the mesh): an "
            "intercepted connection to clusterIP:port is routed to this Service (docs/proxy.md, "
            "Transparent mode). Omitted, reted assigns one from MeshConfig serviceCIDR and stores "
            "it in the Service (kept when the Service is applied again without one); given, it "
            "must lie inside serviceCIDR when that is set"},
    {"externalName", CFG_STR, 0, CFG_AT(raw_service, external_name), .check = check_external_name,
     .docdef = "none (a mesh Service)",
     .doc = "a host outside the mesh (Istio's ServiceEntry, Kubernetes' ExternalName): a "
            "lowercase DNS name or an IP literal. Its endpoints are the host's addresses, which "
            "each calling proxy resolves off its event loop with the system resolver and again "
            "every Proxy `spec.externalNameRefresh`; they are reached directly (plaintext, or "
            "TLS with a DestinationRule `trafficPolicy.tls` SIMPLE) at each port's targetPort. "
            "No selector with it"},
};
const cfg_schema cfg_spec_service =
    CFG_SCHEMA("Service", raw_service, service_fields, service_check);

/* ---- Workload ------------------------------------------------------------------- */

static const cfg_field workload_fields[] = {
    {"address", CFG_STR, CFG_REQUIRED, CFG_AT(raw_workload, w.address), .check = check_ip,
     .doc = "IP literal of the workload and its sidecar"},
    {"labels", CFG_LABELS, 0, CFG_AT(raw_workload, w.labels), CFG_CNT(raw_workload, w.n_labels)},
    {"serviceAccount", CFG_STR, 0, CFG_AT(raw_workload, w.service_account), .def = "default",
     .check = cfg_check_dns_name},
    {"ports", CFG_PORTMAP, CFG_IGNORED, .doc = "port name -> number; validated, not used yet"},
    {"weight", CFG_INT, 0, CFG_AT(raw_workload, w.weight), .min = 0, .max = 1000000, .def = "1"},
    {"meshPort", CFG_INT, 0, CFG_AT(raw_workload, w.mesh_port), .min = 1, .max = 65535,
     .def = RETE_STR(RETE_PORT_MESH), .doc = "its sidecar's mesh listener"},
    {"inMesh", CFG_BOOL, 0, CFG_AT(raw_workload, w.in_mesh), .def = "true",
     .doc = "false: plaintext straight to address:targetPort"},
    {"ready", CFG_BOOL, 0, CFG_AT(raw_workload, w.ready), .def = "true",
     .doc = "false: no proxy sends it traffic (it stays in the configuration, weight 0). reted "
            "sets it false in what it pushes while the workload's sidecar reports not ready; an "
            "operator may write false to take a workload out of rotation (docs/traffic.md, "
            "Readiness)"},
    {"egress", CFG_STRLIST, 0, CFG_AT(raw_workload, egress), CFG_CNT(raw_workload, n_egress),
     .max = 64, .check = cfg_check_egress_host, .docdef = "MeshConfig's defaultEgress",
     .doc = "the Services its sidecar may reach, as `NAMESPACE/NAME` (`.` = own namespace, `*` = "
            "any): reted sends the sidecar only these, the Services it serves and what their "
            "routes name, and recompiles it only when one of those changes (Istio's Sidecar "
            "egress hosts)"},
};
const cfg_schema cfg_spec_workload =
    CFG_SCHEMA("Workload", raw_workload, workload_fields, NULL);

/* ---- HTTPRoute, GRPCRoute, TCPRoute (Gateway API v1, GAMMA) ----------------------- */

static const cfg_field parent_ref_fields[] = {
    {"group", CFG_STR, 0, CFG_AT(raw_ref, group), .check = check_group, .doc = "\"\" or core"},
    {"kind", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, kind), .check = check_kind_service,
     .doc = "Service (GAMMA)"},
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, name), .check = cfg_check_dns_name},
    {"namespace", CFG_STR, 0, CFG_AT(raw_ref, ns), .check = cfg_check_dns_name,
     .docdef = "the route's namespace"},
    {"port", CFG_INT, 0, CFG_AT(raw_ref, port), .min = 1, .max = 65535,
     .docdef = "every port of the Service"},
};
static const cfg_schema parent_ref_schema =
    CFG_SCHEMA("ParentReference", raw_ref, parent_ref_fields, NULL);

static const cfg_field backend_ref_fields[] = {
    {"group", CFG_STR, 0, CFG_AT(raw_ref, group), .check = check_group, .doc = "\"\" or core"},
    {"kind", CFG_STR, 0, CFG_AT(raw_ref, kind), .def = "Service", .check = check_kind_service},
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, name), .check = cfg_check_dns_name},
    {"namespace", CFG_STR, 0, CFG_AT(raw_ref, ns), .check = cfg_check_dns_name,
     .docdef = "the route's namespace"},
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(raw_ref, port), .min = 1, .max = 65535,
     .doc = "a port of the Service"},
    {"weight", CFG_INT, 0, CFG_AT(raw_ref, weight), .min = 0, .max = 1000000, .def = "1"},
};
static const cfg_schema backend_ref_schema =
    CFG_SCHEMA("BackendRef", raw_ref, backend_ref_fields, NULL);

static const cfg_enum path_match_enum[] = {{"Exact", RETE_MATCH_EXACT},
                                           {"PathPrefix", RETE_MATCH_PREFIX},
                                           {"RegularExpression", RETE_MATCH_REGEX},
                                           {NULL, 0}};
static const cfg_enum value_match_enum[] = {
    {"Exact", RETE_MATCH_EXACT}, {"RegularExpression", RETE_MATCH_REGEX}, {NULL, 0}};

/* A string match is ready to use: length known, regex compiled. */
static rete_rc string_match_finish(cfg_ctx *ctx, rete_string_match *m)
{
    m->value_len = strlen(m->value);
    if (m->kind != RETE_MATCH_REGEX)
        return RETE_OK;
    size_t mark = cfg_path_key(ctx, "value");
    RETE_GUARD(cfg_compile_regex(ctx, m->value, &m->re));
    cfg_path_pop(ctx, mark);
    return RETE_OK;
}

static rete_rc path_match_check(cfg_ctx *ctx, void *obj)
{
    rete_string_match *m = obj;
    if (m->kind != RETE_MATCH_REGEX) {
        if (m->value[0] != '/')
            return cfg_fail_at(ctx, "value", "must start with /");
        if (!path_ok(m->value))
            return cfg_fail_at(ctx, "value", "must not contain '//', '/./', '/../', '%%2f' or '#'");
    }
    return string_match_finish(ctx, m);
}

static rete_rc value_match_check(cfg_ctx *ctx, void *obj)
{
    return string_match_finish(ctx, obj);
}

static const cfg_field path_match_fields[] = {
    {"type", CFG_ENUM, 0, CFG_AT(rete_string_match, kind), .en = path_match_enum,
     .def = "PathPrefix",
     .doc = "PathPrefix matches whole path elements; RegularExpression is PCRE2, anchored"},
    {"value", CFG_STR, 0, CFG_AT(rete_string_match, value), .def = "/"},
};
static const cfg_schema path_match_schema =
    CFG_SCHEMA("HTTPPathMatch", rete_string_match, path_match_fields, path_match_check);

static const cfg_field header_match_fields[] = {
    {"type", CFG_ENUM, 0, CFG_AT(rete_string_match, kind), .en = value_match_enum, .def = "Exact"},
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(rete_string_match, name), .check = cfg_check_header_name,
     .doc = "case-insensitive"},
    {"value", CFG_STR, CFG_REQUIRED, CFG_AT(rete_string_match, value), .check = check_header_value},
};
static const cfg_schema header_match_schema =
    CFG_SCHEMA("HTTPHeaderMatch", rete_string_match, header_match_fields, value_match_check);

static const cfg_field query_match_fields[] = {
    {"type", CFG_ENUM, 0, CFG_AT(rete_string_match, kind), .en = value_match_enum, .def = "Exact"},
    {"name", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(rete_string_match, name),
     .doc = "case-sensitive"},
    {"value", CFG_STR, CFG_REQUIRED, CFG_AT(rete_string_match, value)},
};
static const cfg_schema query_match_schema =
    CFG_SCHEMA("HTTPQueryParamMatch", rete_string_match, query_match_fields, value_match_check);

static rete_rc http_match_check(cfg_ctx *ctx, void *obj)
{
    rete_http_match *m = obj;
    m->path.value_len = strlen(m->path.value); /* the default "/" when absent */
    return RETE_OK;
}

static const cfg_field http_match_fields[] = {
    {"path", CFG_OBJ, 0, .off = offsetof(rete_http_match, path), CFG_HAS(rete_http_match, has_path),
     .sub = &path_match_schema},
    {"headers", CFG_LIST, 0, CFG_AT(rete_http_match, headers), CFG_CNT(rete_http_match, n_headers),
     .max = 16, .sub = &header_match_schema},
    {"queryParams", CFG_LIST, 0, CFG_AT(rete_http_match, query), CFG_CNT(rete_http_match, n_query),
     .max = 16, .sub = &query_match_schema},
    {"method", CFG_STR, 0, CFG_AT(rete_http_match, method), .check = check_method, .docdef = "any"},
};
static const cfg_schema http_match_schema =
    CFG_SCHEMA("HTTPRouteMatch", rete_http_match, http_match_fields, http_match_check);

/* filters */
enum { PATH_MOD_FULL = 1, PATH_MOD_PREFIX = 2 };
static const cfg_enum path_mod_enum[] = {
    {"ReplaceFullPath", PATH_MOD_FULL}, {"ReplacePrefixMatch", PATH_MOD_PREFIX}, {NULL, 0}};

static rete_rc path_mod_check(cfg_ctx *ctx, void *obj)
{
    raw_path_mod *m = obj;
    if (m->type == PATH_MOD_FULL && !m->has_full)
        return cfg_fail_at(ctx, "replaceFullPath", "required when type is ReplaceFullPath");
    if (m->type == PATH_MOD_PREFIX && !m->has_prefix)
        return cfg_fail_at(ctx, "replacePrefixMatch", "required when type is ReplacePrefixMatch");
    if (m->type == PATH_MOD_FULL && m->has_prefix)
        return cfg_fail_at(ctx, "replacePrefixMatch",
                           "only allowed when type is ReplacePrefixMatch");
    if (m->type == PATH_MOD_PREFIX && m->has_full)
        return cfg_fail_at(ctx, "replaceFullPath", "only allowed when type is ReplaceFullPath");
    return RETE_OK;
}

static const cfg_field path_mod_fields[] = {
    {"type", CFG_ENUM, CFG_REQUIRED, CFG_AT(raw_path_mod, type), .en = path_mod_enum},
    {"replaceFullPath", CFG_STR, 0, CFG_AT(raw_path_mod, full), CFG_HAS(raw_path_mod, has_full),
     .check = check_path},
    {"replacePrefixMatch", CFG_STR, 0, CFG_AT(raw_path_mod, prefix),
     CFG_HAS(raw_path_mod, has_prefix), .check = check_path, .doc = "only with PathPrefix matches"},
};
static const cfg_schema path_mod_schema =
    CFG_SCHEMA("HTTPPathModifier", raw_path_mod, path_mod_fields, path_mod_check);

static const cfg_field header_kv_fields[] = {
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(rete_header_kv, name), .check = cfg_check_header_name},
    {"value", CFG_STR, CFG_REQUIRED, CFG_AT(rete_header_kv, value), .check = check_header_value},
};
static const cfg_schema header_kv_schema =
    CFG_SCHEMA("HTTPHeader", rete_header_kv, header_kv_fields, NULL);

static const cfg_field header_mod_fields[] = {
    {"set", CFG_LIST, 0, CFG_AT(rete_header_modifier, set), CFG_CNT(rete_header_modifier, n_set),
     .max = 16, .sub = &header_kv_schema, .doc = "replace"},
    {"add", CFG_LIST, 0, CFG_AT(rete_header_modifier, add), CFG_CNT(rete_header_modifier, n_add),
     .max = 16, .sub = &header_kv_schema, .doc = "append"},
    {"remove", CFG_STRLIST, 0, CFG_AT(rete_header_modifier, remove),
     CFG_CNT(rete_header_modifier, n_remove), .max = 16, .check = cfg_check_header_name},
};
static const cfg_schema header_mod_schema =
    CFG_SCHEMA("HTTPHeaderFilter", rete_header_modifier, header_mod_fields, NULL);

static const cfg_field redirect_fields[] = {
    {"scheme", CFG_STR, 0, CFG_AT(raw_filter, f.scheme), .check = check_scheme, .docdef = "keep"},
    {"hostname", CFG_STR, 0, CFG_AT(raw_filter, f.hostname), .check = check_hostname,
     .docdef = "keep"},
    {"port", CFG_INT, 0, CFG_AT(raw_filter, f.port), .min = 1, .max = 65535, .docdef = "keep"},
    {"statusCode", CFG_INT, 0, CFG_AT(raw_filter, f.status_code), .min = 301, .max = 302,
     .def = "302"},
    {"path", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, redirect_path),
     CFG_HAS(raw_filter, has_redirect_path), .sub = &path_mod_schema, .docdef = "keep"},
};
static const cfg_schema redirect_schema =
    CFG_SCHEMA("HTTPRequestRedirectFilter", raw_filter, redirect_fields, NULL);

static const cfg_field rewrite_fields[] = {
    {"hostname", CFG_STR, 0, CFG_AT(raw_filter, f.hostname), .check = check_hostname,
     .docdef = "keep"},
    {"path", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, rewrite_path),
     CFG_HAS(raw_filter, has_rewrite_path), .sub = &path_mod_schema, .docdef = "keep"},
};
static const cfg_schema rewrite_schema =
    CFG_SCHEMA("HTTPURLRewriteFilter", raw_filter, rewrite_fields, NULL);

/* RequestMirror (Gateway API HTTPRequestMirrorFilter): applied by
 * http/filter_mirror.c; docs/traffic.md "Mirroring". */
static const cfg_field mirror_ref_fields[] = {
    {"group", CFG_STR, 0, CFG_AT(raw_ref, group), .check = check_group, .doc = "\"\" or core"},
    {"kind", CFG_STR, 0, CFG_AT(raw_ref, kind), .def = "Service", .check = check_kind_service},
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, name), .check = cfg_check_dns_name},
    {"namespace", CFG_STR, 0, CFG_AT(raw_ref, ns), .check = cfg_check_dns_name,
     .docdef = "the route's namespace"},
    {"port", CFG_INT, CFG_REQUIRED, CFG_AT(raw_ref, port), .min = 1, .max = 65535,
     .doc = "a port of the Service"},
};
static const cfg_schema mirror_ref_schema =
    CFG_SCHEMA("BackendObjectReference", raw_ref, mirror_ref_fields, NULL);

static rete_rc fraction_check(cfg_ctx *ctx, void *obj)
{
    raw_fraction *f = obj;
    if (f->numerator > f->denominator)
        return cfg_fail_at(ctx, "numerator", "must not be greater than denominator");
    return RETE_OK;
}

static const cfg_field fraction_fields[] = {
    {"numerator", CFG_INT, CFG_REQUIRED, CFG_AT(raw_fraction, numerator), .min = 0,
     .max = 1000000},
    {"denominator", CFG_INT, 0, CFG_AT(raw_fraction, denominator), .min = 1, .max = 1000000,
     .def = "100"},
};
static const cfg_schema fraction_schema =
    CFG_SCHEMA("Fraction", raw_fraction, fraction_fields, fraction_check);

static const cfg_field mirror_fields[] = {
    {"backendRef", CFG_OBJ, CFG_REQUIRED, .off = offsetof(raw_filter, mirror_ref),
     .sub = &mirror_ref_schema, .doc = "the Service the copies go to (one of its endpoints, "
     "picked by its balancer)"},
    {"percent", CFG_INT, 0, CFG_AT(raw_filter, mirror_percent),
     CFG_HAS(raw_filter, has_mirror_percent), .min = 0, .max = 100, .docdef = "100",
     .doc = "share of the rule's requests copied; at most one of percent and fraction"},
    {"fraction", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, mirror_fraction),
     CFG_HAS(raw_filter, has_mirror_fraction), .sub = &fraction_schema, .docdef = "-",
     .doc = "the share as numerator/denominator (parts per million at the finest)"},
};
static const cfg_schema mirror_schema =
    CFG_SCHEMA("HTTPRequestMirrorFilter", raw_filter, mirror_fields, NULL);

static const cfg_enum filter_enum[] = {{"RequestHeaderModifier", RETE_FILTER_REQUEST_HEADER},
                                       {"ResponseHeaderModifier", RETE_FILTER_RESPONSE_HEADER},
                                       {"RequestRedirect", RETE_FILTER_REDIRECT},
                                       {"URLRewrite", RETE_FILTER_URL_REWRITE},
                                       {"RequestMirror", RETE_FILTER_MIRROR},
                                       {NULL, 0}};
static const cfg_enum grpc_filter_enum[] = {{"RequestHeaderModifier", RETE_FILTER_REQUEST_HEADER},
                                            {"ResponseHeaderModifier", RETE_FILTER_RESPONSE_HEADER},
                                            {NULL, 0}};

/* Gateway API CEL rules: the field named by `type` must be set, and no other. */
static rete_rc filter_check(cfg_ctx *ctx, void *obj)
{
    raw_filter *r = obj;
    static const struct {
        const char *field, *type;
        size_t has;
    } by_kind[] = {
        [RETE_FILTER_REQUEST_HEADER] = {"requestHeaderModifier", "RequestHeaderModifier",
                                        offsetof(raw_filter, has_req)},
        [RETE_FILTER_RESPONSE_HEADER] = {"responseHeaderModifier", "ResponseHeaderModifier",
                                         offsetof(raw_filter, has_resp)},
        [RETE_FILTER_REDIRECT] = {"requestRedirect", "RequestRedirect",
                                  offsetof(raw_filter, has_redirect)},
        [RETE_FILTER_URL_REWRITE] = {"urlRewrite", "URLRewrite", offsetof(raw_filter, has_rewrite)},
        [RETE_FILTER_MIRROR] = {"requestMirror", "RequestMirror", offsetof(raw_filter, has_mirror)},
    };
    for (size_t k = 0; k < CFG_ARRAY_LEN(by_kind); k++) {
        bool has = *((bool *)((unsigned char *)r + by_kind[k].has));
        if ((int)k == r->type && !has)
            return cfg_fail_at(ctx, by_kind[k].field, "required when type is %s", by_kind[k].type);
        if ((int)k != r->type && has)
            return cfg_fail_at(ctx, by_kind[k].field, "only allowed when type is %s",
                               by_kind[k].type);
    }
    r->f.kind = (rete_filter_kind)r->type;
    if (r->f.kind == RETE_FILTER_MIRROR) {
        if (r->has_mirror_percent && r->has_mirror_fraction)
            return cfg_fail_at(ctx, "requestMirror", "at most one of percent and fraction");
        r->f.mirror_port = r->mirror_ref.port;
        r->f.mirror_ppm =
            r->has_mirror_percent ? r->mirror_percent * 10000u
            : r->has_mirror_fraction
                ? (uint32_t)((uint64_t)r->mirror_fraction.numerator * 1000000u /
                             r->mirror_fraction.denominator)
                : 1000000u;
    }
    const raw_path_mod *pm = r->has_redirect_path  ? &r->redirect_path
                             : r->has_rewrite_path ? &r->rewrite_path
                                                   : NULL;
    r->f.path_kind = !pm                         ? RETE_PATH_KEEP
                     : pm->type == PATH_MOD_FULL ? RETE_PATH_FULL
                                                 : RETE_PATH_PREFIX;
    r->f.path = !pm ? NULL : pm->type == PATH_MOD_FULL ? pm->full : pm->prefix;
    return RETE_OK;
}

static const cfg_field filter_fields[] = {
    {"type", CFG_ENUM, CFG_REQUIRED, CFG_AT(raw_filter, type), .en = filter_enum},
    {"requestHeaderModifier", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, f.headers),
     CFG_HAS(raw_filter, has_req), .sub = &header_mod_schema},
    {"responseHeaderModifier", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, f.headers),
     CFG_HAS(raw_filter, has_resp), .sub = &header_mod_schema},
    {"requestRedirect", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_filter, has_redirect),
     .sub = &redirect_schema},
    {"urlRewrite", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_filter, has_rewrite),
     .sub = &rewrite_schema},
    {"requestMirror", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_filter, has_mirror),
     .sub = &mirror_schema, .doc = "copies of requests, fire-and-forget, responses discarded "
     "(docs/traffic.md, Mirroring); at most one per rule"},
};
static const cfg_schema filter_schema =
    CFG_SCHEMA("HTTPRouteFilter", raw_filter, filter_fields, filter_check);

static const cfg_field grpc_filter_fields[] = {
    {"type", CFG_ENUM, CFG_REQUIRED, CFG_AT(raw_filter, type), .en = grpc_filter_enum},
    {"requestHeaderModifier", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, f.headers),
     CFG_HAS(raw_filter, has_req), .sub = &header_mod_schema},
    {"responseHeaderModifier", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_filter, f.headers),
     CFG_HAS(raw_filter, has_resp), .sub = &header_mod_schema},
};
static const cfg_schema grpc_filter_schema =
    CFG_SCHEMA("GRPCRouteFilter", raw_filter, grpc_filter_fields, filter_check);

static const cfg_field timeouts_fields[] = {
    {"request", CFG_DURATION, 0, CFG_AT(raw_rule, r.timeout_ms), .docdef = "none",
     .doc = "whole request, retries included; 0s = none"},
    {"backendRequest", CFG_DURATION, 0, CFG_AT(raw_rule, r.backend_timeout_ms), .docdef = "none",
     .doc = "one try; must not exceed request"},
};
static const cfg_schema timeouts_schema =
    CFG_SCHEMA("HTTPRouteTimeouts", raw_rule, timeouts_fields, NULL);

static const cfg_field retry_fields[] = {
    {"attempts", CFG_INT, 0, CFG_AT(raw_rule, r.retry.attempts), .min = 0, .max = 10, .def = "1",
     .doc = "retries after the first try"},
    {"backoff", CFG_DURATION, 0, CFG_AT(raw_rule, r.retry.backoff_ms), .def = "25ms",
     .doc = "base of the jittered exponential backoff"},
    {"codes", CFG_INTLIST, 0, CFG_AT(raw_rule, r.retry.codes), CFG_CNT(raw_rule, r.retry.n_codes),
     CFG_HAS(raw_rule, has_codes), .elem = sizeof(uint16_t), .min = 400, .max = 599,
     .docdef = "[502, 503, 504]", .doc = "HTTP statuses that are retried; 504 also retries a "
     "try cut by timeouts.backendRequest"},
    {"nonIdempotent", CFG_BOOL, 0, CFG_AT(raw_rule, r.retry.non_idempotent), .def = "false",
     .doc = "rete extension: also retry POST, PATCH and other non-idempotent methods on a status "
     "or reset (a connect failure is retried for every method: nothing was sent)"},
};
static const cfg_schema retry_schema = CFG_SCHEMA("HTTPRouteRetry", raw_rule, retry_fields, NULL);

/* fault (Istio HTTPFaultInjection, as a rule field) */

/* Istio's Percent: a number 0..100 with at most 4 decimals (1e-4 % is one
 * part per million, the PRNG's grain). */
static rete_rc pct_check(cfg_ctx *ctx, void *obj)
{
    raw_pct *p = obj;
    const char *s = p->value;
    uint64_t whole = 0, frac = 0;
    int digits = 0, fdigits = 0;
    while (*s >= '0' && *s <= '9' && digits < 4)
        whole = whole * 10 + (uint64_t)(*s++ - '0'), digits++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9' && fdigits < 5; fdigits++)
            frac = frac * 10 + (uint64_t)(*s++ - '0');
    if (!digits || *s || fdigits > 4 || whole > 100 || (whole == 100 && frac))
        return cfg_fail_at(ctx, "value", "must be a number from 0 to 100 with at most 4 decimals");
    while (fdigits++ < 4)
        frac *= 10;
    p->ppm = (uint32_t)(whole * 10000 + frac);
    return RETE_OK;
}

static const cfg_field pct_fields[] = {
    {"value", CFG_STR, CFG_REQUIRED, CFG_AT(raw_pct, value),
     .doc = "percent of requests, 0..100, at most 4 decimals"},
};
static const cfg_schema pct_schema = CFG_SCHEMA("Percent", raw_pct, pct_fields, pct_check);

static const cfg_field fault_delay_fields[] = {
    {"percentage", CFG_OBJ, CFG_REQUIRED, .off = offsetof(raw_rule, delay_pct), .sub = &pct_schema},
    {"fixedDelay", CFG_DURATION, CFG_REQUIRED, CFG_AT(raw_rule, r.fault.delay_ms), .min = 1,
     .max = 3600000, .doc = "1ms..1h; a timer on the exchange, the worker goes on"},
};
static const cfg_schema fault_delay_schema =
    CFG_SCHEMA("HTTPFaultInjection.Delay", raw_rule, fault_delay_fields, NULL);

/* google.rpc.Code names (grpc/doc/statuscodes.md). */
static const cfg_enum grpc_code_enum[] = {
    {"OK", 0}, {"CANCELLED", 1}, {"UNKNOWN", 2}, {"INVALID_ARGUMENT", 3}, {"DEADLINE_EXCEEDED", 4},
    {"NOT_FOUND", 5}, {"ALREADY_EXISTS", 6}, {"PERMISSION_DENIED", 7}, {"RESOURCE_EXHAUSTED", 8},
    {"FAILED_PRECONDITION", 9}, {"ABORTED", 10}, {"OUT_OF_RANGE", 11}, {"UNIMPLEMENTED", 12},
    {"INTERNAL", 13}, {"UNAVAILABLE", 14}, {"DATA_LOSS", 15}, {"UNAUTHENTICATED", 16}, {NULL, 0}};

static const cfg_field fault_abort_fields[] = {
    {"percentage", CFG_OBJ, CFG_REQUIRED, .off = offsetof(raw_rule, abort_pct), .sub = &pct_schema},
    {"httpStatus", CFG_INT, 0, CFG_AT(raw_rule, abort_http), CFG_HAS(raw_rule, has_abort_http),
     .min = 400, .max = 599, .docdef = "-", .doc = "the answer's status; exactly one of httpStatus "
     "and grpcStatus (a gRPC request gets its gRPC mapping, e.g. 503 -> 14 UNAVAILABLE)"},
    {"grpcStatus", CFG_ENUM, 0, CFG_AT(raw_rule, abort_grpc), CFG_HAS(raw_rule, has_abort_grpc),
     .en = grpc_code_enum, .docdef = "-",
     .doc = "answer HTTP 200 with this grpc-status (trailers-only)"},
};
static const cfg_schema fault_abort_schema =
    CFG_SCHEMA("HTTPFaultInjection.Abort", raw_rule, fault_abort_fields, NULL);

static const cfg_field fault_fields[] = {
    {"delay", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_rule, has_delay),
     .sub = &fault_delay_schema, .docdef = "no delay"},
    {"abort", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_rule, has_abort),
     .sub = &fault_abort_schema, .docdef = "no abort"},
};
static const cfg_schema fault_schema =
    CFG_SCHEMA("HTTPFaultInjection", raw_rule, fault_fields, NULL);

static rete_rc fault_finish(cfg_ctx *ctx, raw_rule *r)
{
    rete_fault_policy *f = &r->r.fault;
    f->abort_grpc = -1;
    if (r->has_delay)
        f->delay_ppm = r->delay_pct.ppm;
    else
        f->delay_ms = 0;
    if (!r->has_abort)
        return RETE_OK;
    if (r->has_abort_http == r->has_abort_grpc)
        return cfg_fail_at(ctx, "fault.abort", "exactly one of httpStatus and grpcStatus is required");
    f->abort_ppm = r->abort_pct.ppm;
    f->abort_http = r->has_abort_http ? (uint16_t)r->abort_http : 0;
    f->abort_grpc = r->has_abort_grpc ? (int8_t)r->abort_grpc : -1;
    return RETE_OK;
}

/* rateLimit (a rule's local rate limit, outbound) */
static const cfg_field route_rate_fields[] = {
    {"requestsPerSecond", CFG_INT, CFG_REQUIRED, CFG_AT(raw_rule, r.rate_limit_rps), .min = 1,
     .max = 1000000, .doc = CFG_RPS_DOC},
};
static const cfg_schema route_rate_schema =
    CFG_SCHEMA("LocalRateLimit", raw_rule, route_rate_fields, NULL);

/* The rule's own pool limits, beyond Istio and Envoy (whose limits are per
 * destination): one rule of a Service cannot take the Service's whole
 * http2MaxRequests. */
static const cfg_field route_breaker_fields[] = {
    {"maxRequests", CFG_INT, 0, CFG_AT(raw_rule, r.max_requests), CFG_HAS(raw_rule, r.limit_requests),
     .min = 1, .max = UINT32_MAX, .docdef = "unbounded",
     .doc = "requests of this rule in flight at once (from the route's match to the response's "
     "end, retries included), counted across the proxy's workers; over it: 503 `UO`"},
    {"maxRetries", CFG_INT, 0, CFG_AT(raw_rule, r.max_retries), CFG_HAS(raw_rule, r.limit_retries),
     .min = 0, .max = UINT32_MAX, .docdef = "unbounded",
     .doc = "retries of this rule in flight at once, per proxy; a retry over it is not made"},
};
static const cfg_schema route_breaker_schema =
    CFG_SCHEMA("RouteCircuitBreaker", raw_rule, route_breaker_fields, NULL);

/* Rule-level Gateway API rules shared by HTTP and gRPC rules. */
static rete_rc rule_check_common(cfg_ctx *ctx, raw_rule *r)
{
    char sub[64];
    unsigned seen[RETE_FILTER_KIND_N] = {0};
    rete_http_filter *filters = rete_arena_alloc(ctx->arena, (r->n_filters + 1) * sizeof(*filters));
    for (size_t i = 0; i < r->n_filters; i++) {
        filters[i] = r->filters[i].f;
        snprintf(sub, sizeof(sub), "filters[%zu].type", i);
        if (filters[i].kind == RETE_FILTER_MIRROR) {
            if (++seen[RETE_FILTER_MIRROR] > RETE_MIRRORS_PER_RULE_MAX)
                return cfg_fail_at(ctx, sub, "at most %d RequestMirror filters per rule",
                                   RETE_MIRRORS_PER_RULE_MAX);
        } else if (seen[filters[i].kind]++) {
            return cfg_fail_at(ctx, sub, "at most one filter of each type per rule (RequestMirror "
                               "excepted)");
        }
        if (filters[i].path_kind == RETE_PATH_PREFIX)
            for (size_t m = 0; m < r->r.n_matches; m++)
                if (r->r.matches[m].path.kind != RETE_MATCH_PREFIX) {
                    snprintf(sub, sizeof(sub), "filters[%zu]", i);
                    return cfg_fail_at(ctx, sub,
                                       "ReplacePrefixMatch requires every match to "
                                       "use a PathPrefix path");
                }
    }
    if (seen[RETE_FILTER_REDIRECT] && seen[RETE_FILTER_URL_REWRITE])
        return cfg_fail_at(ctx, "filters", "RequestRedirect and URLRewrite cannot both be set");
    if (seen[RETE_FILTER_REDIRECT] && r->n_backends)
        return cfg_fail_at(ctx, "backendRefs",
                           "must be empty when a RequestRedirect filter is set");
    r->r.filters = filters;
    r->r.n_filters = r->n_filters;
    if (r->r.timeout_ms && r->r.backend_timeout_ms > r->r.timeout_ms)
        return cfg_fail_at(ctx, "timeouts.backendRequest",
                           "must not be greater than timeouts.request");
    if (r->has_retry && !r->has_codes) {
        static const uint16_t default_codes[] = {502, 503, 504};
        r->r.retry.codes = default_codes;
        r->r.retry.n_codes = CFG_ARRAY_LEN(default_codes);
    }
    r->r.retry.on_connect_failure = true;
    return fault_finish(ctx, r);
}

static rete_rc http_rule_check(cfg_ctx *ctx, void *obj)
{
    return rule_check_common(ctx, obj);
}

static const cfg_field http_rule_fields[] = {
    {"matches", CFG_LIST, 0, CFG_AT(raw_rule, r.matches), CFG_CNT(raw_rule, r.n_matches), .max = 64,
     .sub = &http_match_schema, .docdef = "match everything"},
    {"filters", CFG_LIST, 0, CFG_AT(raw_rule, filters), CFG_CNT(raw_rule, n_filters), .max = 16,
     .sub = &filter_schema},
    {"backendRefs", CFG_LIST, 0, CFG_AT(raw_rule, backends), CFG_CNT(raw_rule, n_backends),
     .max = 16, .sub = &backend_ref_schema, .doc = "none (and no redirect): 500"},
    {"timeouts", CFG_OBJ, 0, .off = 0, .sub = &timeouts_schema},
    {"retry", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_rule, has_retry), .sub = &retry_schema,
     .docdef = "no retries", .doc = "experimental Gateway API HTTPRouteRetry"},    {"fault", CFG_OBJ, CFG_NODEF, .off = 0, .sub = &fault_schema, .docdef = "none",
     .doc = "rete extension: Istio's HTTPFaultInjection (delay, abort) for chaos drills"},
    {"rateLimit", CFG_OBJ, CFG_NODEF, .off = 0, .sub = &route_rate_schema, .docdef = "none",
     .doc = "rete extension: a token bucket on the rule's requests at this (the calling) proxy"},
    {"circuitBreaker", CFG_OBJ, 0, .off = 0, .sub = &route_breaker_schema,
     .doc = "rete extension: the rule's own limits on requests and retries in flight"},
};
static const cfg_schema http_rule_schema =
    CFG_SCHEMA("HTTPRouteRule", raw_rule, http_rule_fields, http_rule_check);

/* gRPC method matches become path matches (GRPCRoute spec: /service/method). */
static rete_rc grpc_method_check(cfg_ctx *ctx, void *obj)
{
    raw_grpc_method *m = obj;
    if (!m->service && !m->method)
        return cfg_fail(ctx, "one of service or method is required");
    const char *parts[2] = {m->service, m->method};
    const char *names[2] = {"service", "method"};
    for (int i = 0; i < 2; i++)
        if (parts[i] && m->type == RETE_MATCH_EXACT && (!*parts[i] || strchr(parts[i], '/')))
            return cfg_fail_at(ctx, names[i], "must be non-empty and must not contain /");
    return RETE_OK;
}

static const cfg_field grpc_method_fields[] = {
    {"type", CFG_ENUM, 0, CFG_AT(raw_grpc_method, type), .en = value_match_enum, .def = "Exact"},
    {"service", CFG_STR, 0, CFG_AT(raw_grpc_method, service), .docdef = "any"},
    {"method", CFG_STR, 0, CFG_AT(raw_grpc_method, method), .docdef = "any"},
};
static const cfg_schema grpc_method_schema =
    CFG_SCHEMA("GRPCMethodMatch", raw_grpc_method, grpc_method_fields, grpc_method_check);

static const cfg_field grpc_match_fields[] = {
    {"method", CFG_OBJ, CFG_NODEF, .off = offsetof(raw_grpc_match, method),
     CFG_HAS(raw_grpc_match, has_method), .sub = &grpc_method_schema,
     .doc = "exact service+method -> exact path; service only -> prefix /service/; regex -> path "
            "regex"},
    {"headers", CFG_LIST, 0, CFG_AT(raw_grpc_match, headers), CFG_CNT(raw_grpc_match, n_headers),
     .max = 16, .sub = &header_match_schema},
};
static const cfg_schema grpc_match_schema =
    CFG_SCHEMA("GRPCRouteMatch", raw_grpc_match, grpc_match_fields, NULL);

static rete_rc grpc_rule_check(cfg_ctx *ctx, void *obj)
{
    raw_rule *r = obj;
    rete_http_match *out = rete_arena_alloc(ctx->arena, (r->n_grpc_matches + 1) * sizeof(*out));
    for (size_t i = 0; i < r->n_grpc_matches; i++) {
        const raw_grpc_match *g = &r->grpc_matches[i];
        rete_http_match *m = &out[i];
        m->headers = g->headers;
        m->n_headers = g->n_headers;
        m->path.kind = RETE_MATCH_PREFIX;
        m->path.value = "/";
        if (g->has_method) {
            const raw_grpc_method *gm = &g->method;
            size_t len =
                (gm->service ? strlen(gm->service) : 8) + (gm->method ? strlen(gm->method) : 8) + 4;
            char *p = rete_arena_alloc(ctx->arena, len);
            m->has_path = true;
            if (gm->type == RETE_MATCH_REGEX) {
                m->path.kind = RETE_MATCH_REGEX;
                snprintf(p, len, "/%s/%s", gm->service ? gm->service : "[^/]+",
                         gm->method ? gm->method : "[^/]+");
            } else if (gm->service && gm->method) {
                m->path.kind = RETE_MATCH_EXACT;
                snprintf(p, len, "/%s/%s", gm->service, gm->method);
            } else if (gm->service) {
                snprintf(p, len, "/%s/", gm->service);
            } else { /* method of any service */
                m->path.kind = RETE_MATCH_REGEX;
                snprintf(p, len, "/[^/]+/\\Q%s\\E", gm->method);
            }
            m->path.value = p;
            char sub[64];
            snprintf(sub, sizeof(sub), "matches[%zu].method", i);
            size_t mark = cfg_path_key(ctx, sub);
            rete_rc rc =
                m->path.kind == RETE_MATCH_REGEX ? cfg_compile_regex(ctx, p, &m->path.re) : RETE_OK;
            cfg_path_pop(ctx, mark);
            RETE_GUARD(rc);
        }
        m->path.value_len = strlen(m->path.value);
    }
    r->r.matches = out;
    r->r.n_matches = r->n_grpc_matches;
    return rule_check_common(ctx, r);
}

static const cfg_field grpc_rule_fields[] = {
    {"matches", CFG_LIST, 0, CFG_AT(raw_rule, grpc_matches), CFG_CNT(raw_rule, n_grpc_matches),
     .max = 64, .sub = &grpc_match_schema, .docdef = "match everything"},
    {"filters", CFG_LIST, 0, CFG_AT(raw_rule, filters), CFG_CNT(raw_rule, n_filters), .max = 16,
     .sub = &grpc_filter_schema},
    {"backendRefs", CFG_LIST, 0, CFG_AT(raw_rule, backends), CFG_CNT(raw_rule, n_backends),
     .max = 16, .sub = &backend_ref_schema},
    {"timeouts", CFG_OBJ, 0, .off = 0, .sub = &timeouts_schema,
     .doc = "rete extension (GRPCRoute has none yet): as HTTPRoute's"},
    {"retry", CFG_OBJ, CFG_NODEF, .off = 0, CFG_HAS(raw_rule, has_retry), .sub = &retry_schema,
     .docdef = "no retries",
     .doc = "rete extension: as HTTPRoute's; also retries the gRPC statuses CANCELLED, "
     "DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and UNAVAILABLE of a trailers-only response"},    {"fault", CFG_OBJ, CFG_NODEF, .off = 0, .sub = &fault_schema, .docdef = "none",
     .doc = "rete extension: Istio's HTTPFaultInjection (delay, abort) for chaos drills"},
    {"rateLimit", CFG_OBJ, CFG_NODEF, .off = 0, .sub = &route_rate_schema, .docdef = "none",
     .doc = "rete extension: a token bucket on the rule's requests at this (the calling) proxy"},
    {"circuitBreaker", CFG_OBJ, 0, .off = 0, .sub = &route_breaker_schema,
     .doc = "rete extension: the rule's own limits on requests and retries in flight"},
};
static const cfg_schema grpc_rule_schema =
    CFG_SCHEMA("GRPCRouteRule", raw_rule, grpc_rule_fields, grpc_rule_check);

static const cfg_field tcp_rule_fields[] = {
    {"backendRefs", CFG_LIST, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_rule, backends),
     CFG_CNT(raw_rule, n_backends), .max = 16, .sub = &backend_ref_schema},
};
static const cfg_schema tcp_rule_schema =
    CFG_SCHEMA("TCPRouteRule", raw_rule, tcp_rule_fields, NULL);

#define ROUTE_COMMON_FIELDS                                                                        \
    {                                                                                              \
        "parentRefs", CFG_LIST, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_route, parents),           \
            CFG_CNT(raw_route, n_parents),                                                         \
            .max = 32, .sub = &parent_ref_schema,                                                  \
            .doc = "the Services (and ports) whose traffic this route takes over"                  \
    }

static const cfg_field http_route_fields[] = {
    ROUTE_COMMON_FIELDS,
    {"hostnames", CFG_STRLIST, 0, CFG_AT(raw_route, hostnames), CFG_CNT(raw_route, n_hostnames),
     .max = 16, .check = check_hostname, .doc = "informational for GAMMA routes"},
    {"rules", CFG_LIST, 0, CFG_AT(raw_route, rules), CFG_CNT(raw_route, n_rules), .max = 16,
     .sub = &http_rule_schema},
};
const cfg_schema cfg_spec_http_route =
    CFG_SCHEMA("HTTPRoute", raw_route, http_route_fields, NULL);

static const cfg_field grpc_route_fields[] = {
    ROUTE_COMMON_FIELDS,
    {"hostnames", CFG_STRLIST, 0, CFG_AT(raw_route, hostnames), CFG_CNT(raw_route, n_hostnames),
     .max = 16, .check = check_hostname},
    {"rules", CFG_LIST, 0, CFG_AT(raw_route, rules), CFG_CNT(raw_route, n_rules), .max = 16,
     .sub = &grpc_rule_schema},
};
const cfg_schema cfg_spec_grpc_route =
    CFG_SCHEMA("GRPCRoute", raw_route, grpc_route_fields, NULL);

static const cfg_field tcp_route_fields[] = {
    ROUTE_COMMON_FIELDS,
    {"rules", CFG_LIST, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_route, rules),
     CFG_CNT(raw_route, n_rules), .max = 1, .sub = &tcp_rule_schema, .doc = "exactly one rule"},
};
const cfg_schema cfg_spec_tcp_route =
    CFG_SCHEMA("TCPRoute", raw_route, tcp_route_fields, NULL);
