/* The configuration loader: YAML resources -> one immutable rete_config.
 *
 * Three passes over a stream, all allocating from the snapshot's arena:
 *   1. decode every document through its kind's field table (config_schema.h)
 *      into a "raw" resource that still names other resources by string;
 *   2. resolve: services get their endpoints and traffic policy, routes
 *      their parent and backend services, the proxy its upstreams, mTLS mode
 *      and the authorization policies that select it;
 *   3. rete_route_build_tables (route.c) sorts the routing per service port.
 * The first error stops everything; nothing partial escapes. */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "arena.h"
#include "config_schema.h"
#include "route.h"
#include "yaml_doc.h"

#define ROOT_NAMESPACE "rete-system"
#define CLUSTER_DOMAIN "cluster.local"
#define CONFIG_MAX_FILE (64u << 20)

/* ---- raw resources: what the tables decode into ---------------------------- */

typedef struct kind_def kind_def;

typedef struct raw_meta {
    const char *name;
    const char *ns;
    const rete_label *labels;
    size_t n_labels;
} raw_meta;

/* Every raw resource starts with this header. */
typedef struct raw_res {
    const kind_def *kind;
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
    bool has_inbound_ports;
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

typedef struct raw_filter {
    rete_http_filter f;
    int type;
    raw_path_mod redirect_path, rewrite_path;
    bool has_req, has_resp, has_redirect, has_rewrite, has_redirect_path, has_rewrite_path;
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

typedef struct raw_rule {
    rete_http_rule r;
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
} raw_mesh;

/* ---- field validators --------------------------------------------------------- */

/* RFC 1123 subdomain, as Kubernetes requires of names and namespaces. */
static rete_rc check_dns_name(cfg_ctx *ctx, const rete_ynode *n, void *value)
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

static rete_rc check_header_name(cfg_ctx *ctx, const rete_ynode *n, void *value)
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
static rete_rc check_egress_host(cfg_ctx *ctx, const rete_ynode *n, void *value)
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

static rete_rc check_prime(cfg_ctx *ctx, const rete_ynode *n, void *value)
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
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_meta, name), .check = check_dns_name,
     .doc = "resource name (RFC 1123)"},
    {"namespace", CFG_STR, 0, CFG_AT(raw_meta, ns), .def = "default", .check = check_dns_name},
    {"labels", CFG_LABELS, 0, CFG_AT(raw_meta, labels), CFG_CNT(raw_meta, n_labels)},
    {"annotations", CFG_LABELS, CFG_IGNORED, .doc = "accepted and ignored"},
    /* Written by reted on what it stores; a document read back with
     * `retectl get -o yaml` can be applied again as it is. */
    {"resourceVersion", CFG_STR, CFG_IGNORED, .doc = "set by reted; on apply, the version the update expects (optimistic concurrency)"},
    {"creationTimestamp", CFG_STR, CFG_IGNORED, .doc = "set by reted"},
    {"uid", CFG_STR, CFG_IGNORED, .doc = "accepted and ignored"},
};
static const cfg_schema meta_schema = CFG_SCHEMA("metadata", raw_meta, meta_fields, NULL);

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
     .docdef = "*address*:15001", .doc = "the app's outgoing traffic"},
    {"inbound", CFG_ADDR, 0, CFG_AT(raw_proxy, p.inbound), CFG_HAS(raw_proxy, has_inbound),
     .docdef = "*address*:15006", .doc = "transparent inbound (plaintext, permissive mode)"},
    {"mesh", CFG_ADDR, 0, CFG_AT(raw_proxy, p.mesh), CFG_HAS(raw_proxy, has_mesh),
     .docdef = "*address*:15008", .doc = "mTLS from other proxies"},
    {"admin", CFG_ADDR, 0, CFG_AT(raw_proxy, p.admin), CFG_HAS(raw_proxy, has_admin),
     .docdef = "*address*:15000", .doc = "/metrics, /ready, /config ..."},
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
static const cfg_field limits_fields[] = {
    LIMIT_INT("maxRequestLine", max_request_line, 64, 1u << 20, "8192", "bytes"),
    LIMIT_INT("maxHeaderBytes", max_header_bytes, 256, 16u << 20, "65536", "bytes, all headers"),
    LIMIT_INT("maxHeaders", max_headers, 1, 10000, "100", "header fields per message"),
    LIMIT_INT("maxBodyBuffer", max_body_buffer, 1024, 1u << 30, "65536",
              "bytes buffered per direction per stream"),
    LIMIT_INT("maxConnections", max_connections, 1, 10000000, "10000", "downstream, per worker"),
    LIMIT_INT("maxStreams", max_streams, 1, 1u << 20, "256",
              "HTTP/2 concurrent streams per connection"),
    LIMIT_DUR("detectTimeout", detect_timeout_ms, "5s", "protocol detection"),
    LIMIT_DUR("idleTimeout", idle_timeout_ms, "5m", "downstream idle"),
    LIMIT_DUR("drainTimeout", drain_timeout_ms, "5s", "grace period on SIGTERM"),
};
static const cfg_schema limits_schema = CFG_SCHEMA("limits", rete_limits, limits_fields, NULL);

static rete_rc proxy_check(cfg_ctx *ctx, void *obj)
{
    raw_proxy *r = obj;
    rete_proxy_spec *p = &r->p;
    if (!r->has_app_address)
        p->app_address = r->address;
    static const struct {
        size_t addr, has;
        uint16_t port;
    } listeners[] = {
        {offsetof(raw_proxy, p.outbound), offsetof(raw_proxy, has_outbound), 15001},
        {offsetof(raw_proxy, p.inbound), offsetof(raw_proxy, has_inbound), 15006},
        {offsetof(raw_proxy, p.mesh), offsetof(raw_proxy, has_mesh), 15008},
        {offsetof(raw_proxy, p.admin), offsetof(raw_proxy, has_admin), 15000},
    };
    for (size_t i = 0; i < CFG_ARRAY_LEN(listeners); i++) {
        if (*((bool *)((unsigned char *)r + listeners[i].has)))
            continue;
        rete_socket_addr *a = (rete_socket_addr *)((unsigned char *)r + listeners[i].addr);
        snprintf(a->host, sizeof(a->host), "%s", r->address);
        a->port = listeners[i].port;
    }
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
     .check = check_dns_name,
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
};
static const cfg_schema proxy_schema = CFG_SCHEMA("Proxy", raw_proxy, proxy_fields, proxy_check);

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
    {"name", CFG_STR, 0, CFG_AT(raw_svc_port, p.name), .check = check_dns_name,
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

static rete_rc service_check(cfg_ctx *ctx, void *obj)
{
    raw_service *r = obj;
    char sub[64];
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
};
static const cfg_schema service_schema =
    CFG_SCHEMA("Service", raw_service, service_fields, service_check);

/* ---- Workload ------------------------------------------------------------------- */

static const cfg_field workload_fields[] = {
    {"address", CFG_STR, CFG_REQUIRED, CFG_AT(raw_workload, w.address), .check = check_ip,
     .doc = "IP literal of the workload and its sidecar"},
    {"labels", CFG_LABELS, 0, CFG_AT(raw_workload, w.labels), CFG_CNT(raw_workload, w.n_labels)},
    {"serviceAccount", CFG_STR, 0, CFG_AT(raw_workload, w.service_account), .def = "default",
     .check = check_dns_name},
    {"ports", CFG_PORTMAP, CFG_IGNORED, .doc = "port name -> number; validated, not used yet"},
    {"weight", CFG_INT, 0, CFG_AT(raw_workload, w.weight), .min = 0, .max = 1000000, .def = "1"},
    {"meshPort", CFG_INT, 0, CFG_AT(raw_workload, w.mesh_port), .min = 1, .max = 65535,
     .def = "15008", .doc = "its sidecar's mesh listener"},
    {"inMesh", CFG_BOOL, 0, CFG_AT(raw_workload, w.in_mesh), .def = "true",
     .doc = "false: plaintext straight to address:targetPort"},
    {"egress", CFG_STRLIST, 0, CFG_AT(raw_workload, egress), CFG_CNT(raw_workload, n_egress),
     .max = 64, .check = check_egress_host, .docdef = "MeshConfig's defaultEgress",
     .doc = "the Services its sidecar may reach, as `NAMESPACE/NAME` (`.` = own namespace, `*` = "
            "any): reted sends the sidecar only these, the Services it serves and what their "
            "routes name, and recompiles it only when one of those changes (Istio's Sidecar "
            "egress hosts)"},
};
static const cfg_schema workload_schema =
    CFG_SCHEMA("Workload", raw_workload, workload_fields, NULL);

/* ---- HTTPRoute, GRPCRoute, TCPRoute (Gateway API v1, GAMMA) ----------------------- */

static const cfg_field parent_ref_fields[] = {
    {"group", CFG_STR, 0, CFG_AT(raw_ref, group), .check = check_group, .doc = "\"\" or core"},
    {"kind", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, kind), .check = check_kind_service,
     .doc = "Service (GAMMA)"},
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, name), .check = check_dns_name},
    {"namespace", CFG_STR, 0, CFG_AT(raw_ref, ns), .check = check_dns_name,
     .docdef = "the route's namespace"},
    {"port", CFG_INT, 0, CFG_AT(raw_ref, port), .min = 1, .max = 65535,
     .docdef = "every port of the Service"},
};
static const cfg_schema parent_ref_schema =
    CFG_SCHEMA("ParentReference", raw_ref, parent_ref_fields, NULL);

static const cfg_field backend_ref_fields[] = {
    {"group", CFG_STR, 0, CFG_AT(raw_ref, group), .check = check_group, .doc = "\"\" or core"},
    {"kind", CFG_STR, 0, CFG_AT(raw_ref, kind), .def = "Service", .check = check_kind_service},
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(raw_ref, name), .check = check_dns_name},
    {"namespace", CFG_STR, 0, CFG_AT(raw_ref, ns), .check = check_dns_name,
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
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(rete_string_match, name), .check = check_header_name,
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
    {"name", CFG_STR, CFG_REQUIRED, CFG_AT(rete_header_kv, name), .check = check_header_name},
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
     CFG_CNT(rete_header_modifier, n_remove), .max = 16, .check = check_header_name},
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

static const cfg_enum filter_enum[] = {{"RequestHeaderModifier", RETE_FILTER_REQUEST_HEADER},
                                       {"ResponseHeaderModifier", RETE_FILTER_RESPONSE_HEADER},
                                       {"RequestRedirect", RETE_FILTER_REDIRECT},
                                       {"URLRewrite", RETE_FILTER_URL_REWRITE},
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
     .docdef = "[502, 503, 504]", .doc = "HTTP statuses that are retried"},
};
static const cfg_schema retry_schema = CFG_SCHEMA("HTTPRouteRetry", raw_rule, retry_fields, NULL);

/* Rule-level Gateway API rules shared by HTTP and gRPC rules. */
static rete_rc rule_check_common(cfg_ctx *ctx, raw_rule *r)
{
    char sub[64];
    bool seen[4] = {false};
    rete_http_filter *filters = rete_arena_alloc(ctx->arena, (r->n_filters + 1) * sizeof(*filters));
    for (size_t i = 0; i < r->n_filters; i++) {
        filters[i] = r->filters[i].f;
        snprintf(sub, sizeof(sub), "filters[%zu].type", i);
        if (seen[filters[i].kind])
            return cfg_fail_at(ctx, sub, "at most one filter of each type per rule");
        seen[filters[i].kind] = true;
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
    return RETE_OK;
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
     .docdef = "no retries", .doc = "experimental Gateway API HTTPRouteRetry"},
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
static const cfg_schema http_route_schema =
    CFG_SCHEMA("HTTPRoute", raw_route, http_route_fields, NULL);

static const cfg_field grpc_route_fields[] = {
    ROUTE_COMMON_FIELDS,
    {"hostnames", CFG_STRLIST, 0, CFG_AT(raw_route, hostnames), CFG_CNT(raw_route, n_hostnames),
     .max = 16, .check = check_hostname},
    {"rules", CFG_LIST, 0, CFG_AT(raw_route, rules), CFG_CNT(raw_route, n_rules), .max = 16,
     .sub = &grpc_rule_schema},
};
static const cfg_schema grpc_route_schema =
    CFG_SCHEMA("GRPCRoute", raw_route, grpc_route_fields, NULL);

static const cfg_field tcp_route_fields[] = {
    ROUTE_COMMON_FIELDS,
    {"rules", CFG_LIST, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_route, rules),
     CFG_CNT(raw_route, n_rules), .max = 1, .sub = &tcp_rule_schema, .doc = "exactly one rule"},
};
static const cfg_schema tcp_route_schema =
    CFG_SCHEMA("TCPRoute", raw_route, tcp_route_fields, NULL);

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
     .def = "65537", .check = check_prime, .doc = "a prime"},
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
     .check = check_header_name},
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
    return RETE_OK;
}

static const cfg_field lb_fields[] = {
    {"simple", CFG_ENUM, 0, CFG_AT(raw_dr, simple), CFG_HAS(raw_dr, has_simple),
     .en = lb_simple_enum, .docdef = "peak-EWMA least request (Linkerd)",
     .doc = "PASSTHROUGH is refused"},
    {"consistentHash", CFG_OBJ, 0, .off = 0, CFG_HAS(raw_dr, has_hash), .sub = &hash_schema},
};
static const cfg_schema lb_schema = CFG_SCHEMA("LoadBalancerSettings", raw_dr, lb_fields, lb_check);

static const cfg_field pool_tcp_fields[] = {
    {"maxConnections", CFG_INT, 0, CFG_AT(raw_dr, p.max_connections), .min = 1, .max = UINT32_MAX,
     .def = "1024"},
    {"connectTimeout", CFG_DURATION, 0, CFG_AT(raw_dr, p.connect_timeout_ms), .min = 1,
     .def = "10s"},
};
static const cfg_schema pool_tcp_schema = CFG_SCHEMA("TCPSettings", raw_dr, pool_tcp_fields, NULL);

static const cfg_field pool_http_fields[] = {
    {"http1MaxPendingRequests", CFG_INT, 0, CFG_AT(raw_dr, p.max_pending_requests), .min = 1,
     .max = UINT32_MAX, .def = "1024"},
    {"http2MaxRequests", CFG_INT, 0, CFG_AT(raw_dr, p.max_requests), .min = 1, .max = UINT32_MAX,
     .def = "1024"},
    {"maxRequestsPerConnection", CFG_INT, 0, CFG_AT(raw_dr, p.max_requests_per_connection),
     .min = 0, .max = UINT32_MAX, .def = "0", .doc = "0 = unlimited"},
    {"maxRetries", CFG_INT, 0, CFG_AT(raw_dr, p.max_retries), .min = 0, .max = UINT32_MAX,
     .def = "3", .doc = "concurrent retries to the service"},
};
static const cfg_schema pool_http_schema =
    CFG_SCHEMA("HTTPSettings", raw_dr, pool_http_fields, NULL);

static const cfg_field pool_fields[] = {
    {"tcp", CFG_OBJ, 0, .off = 0, .sub = &pool_tcp_schema},
    {"http", CFG_OBJ, 0, .off = 0, .sub = &pool_http_schema},
};
static const cfg_schema pool_schema =
    CFG_SCHEMA("ConnectionPoolSettings", raw_dr, pool_fields, NULL);

static const cfg_field outlier_fields[] = {
    {"consecutive5xxErrors", CFG_INT, 0, CFG_AT(raw_dr, p.consecutive_5xx), .min = 0,
     .max = UINT32_MAX, .def = "5", .doc = "0 = off"},
    {"interval", CFG_DURATION, 0, CFG_AT(raw_dr, p.outlier_interval_ms), .min = 1, .def = "10s"},
    {"baseEjectionTime", CFG_DURATION, 0, CFG_AT(raw_dr, p.base_ejection_ms), .min = 1,
     .def = "30s"},
    {"maxEjectionPercent", CFG_INT, 0, CFG_AT(raw_dr, p.max_ejection_percent), .min = 0, .max = 100,
     .def = "10"},
};
static const cfg_schema outlier_schema =
    CFG_SCHEMA("OutlierDetection", raw_dr, outlier_fields, NULL);

static const cfg_field policy_fields[] = {
    {"loadBalancer", CFG_OBJ, 0, .off = 0, .sub = &lb_schema},
    {"connectionPool", CFG_OBJ, 0, .off = 0, .sub = &pool_schema},
    {"outlierDetection", CFG_OBJ, CFG_NODEF, .off = 0, .sub = &outlier_schema, .docdef = "off"},
};
static const cfg_schema policy_schema = CFG_SCHEMA("TrafficPolicy", raw_dr, policy_fields, NULL);

static const cfg_field dr_fields[] = {
    {"host", CFG_STR, CFG_REQUIRED | CFG_NONEMPTY, CFG_AT(raw_dr, host),
     .doc = "a Service: name (in the rule's namespace), name.ns, name.ns.svc or the FQDN"},
    {"trafficPolicy", CFG_OBJ, 0, .off = 0, .sub = &policy_schema},
};
static const cfg_schema dr_schema = CFG_SCHEMA("DestinationRule", raw_dr, dr_fields, NULL);

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
static const cfg_schema peer_authn_schema =
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
static const cfg_schema authz_schema =
    CFG_SCHEMA("AuthorizationPolicy", raw_authz, authz_fields, NULL);

static const cfg_field mesh_fields[] = {
    {"trustDomain", CFG_STR, CFG_NONEMPTY, CFG_AT(raw_mesh, trust_domain),
     .docdef = "cluster.local"},
    {"defaultMtlsMode", CFG_ENUM, 0, CFG_AT(raw_mesh, default_mtls), .en = mesh_mtls_enum,
     .def = "PERMISSIVE", .doc = "when no PeerAuthentication applies"},
    {"defaultEgress", CFG_STRLIST, 0, CFG_AT(raw_mesh, default_egress),
     CFG_CNT(raw_mesh, n_default_egress), .max = 64, .check = check_egress_host,
     .docdef = "[\"*/*\"] (the whole mesh)",
     .doc = "egress of every Workload that sets none (see Workload `egress`)"},
    {"workloadCertificateTTL", CFG_DURATION, 0, CFG_AT(raw_mesh, cert_ttl_ms), .min = 10000,
     .max = 30u * 24 * 3600 * 1000, .docdef = "reted --cert-ttl (24h)",
     .doc = "lifetime of the workload certificates reted issues (10s to 30 days); proxies renew "
            "at about half of it"},
};
static const cfg_schema mesh_schema = CFG_SCHEMA("MeshConfig", raw_mesh, mesh_fields, NULL);

/* ---- kinds ------------------------------------------------------------------------ */

enum kind_id {
    K_PROXY,
    K_SERVICE,
    K_WORKLOAD,
    K_HTTP_ROUTE,
    K_GRPC_ROUTE,
    K_TCP_ROUTE,
    K_DESTINATION_RULE,
    K_PEER_AUTHN,
    K_AUTHZ,
    K_MESH,
    K_COUNT
};

struct kind_def {
    enum kind_id id;
    const char *kind;
    const char *api_versions[4];
    const cfg_schema *spec;
    size_t raw_size;
    const char *doc;
};

static const kind_def kinds[K_COUNT] = {
    [K_PROXY] =
        {K_PROXY,
         "Proxy",
         {"rete.dev/v1alpha1"},
         &proxy_schema,
         sizeof(raw_proxy),
         "This proxy's identity and listeners. Exactly one per configuration; metadata.name "
         "and metadata.namespace name the proxy's own workload."},
    [K_SERVICE] = {K_SERVICE,
                   "Service",
                   {"v1"},
                   &service_schema,
                   sizeof(raw_service),
                   "A Kubernetes Service subset: ports with an application protocol and a label "
                   "selector over Workloads in the same namespace."},
    [K_WORKLOAD] = {K_WORKLOAD,
                    "Workload",
                    {"networking.rete.dev/v1alpha1"},
                    &workload_schema,
                    sizeof(raw_workload),
                    "One instance of a service (Istio WorkloadEntry shape)."},
    [K_HTTP_ROUTE] = {K_HTTP_ROUTE,
                      "HTTPRoute",
                      {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"},
                      &http_route_schema,
                      sizeof(raw_route),
                      "Gateway API HTTPRoute attached to Services (GAMMA)."},
    [K_GRPC_ROUTE] = {K_GRPC_ROUTE,
                      "GRPCRoute",
                      {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"},
                      &grpc_route_schema,
                      sizeof(raw_route),
                      "Gateway API GRPCRoute, compiled into the HTTP route shape."},
    [K_TCP_ROUTE] = {K_TCP_ROUTE,
                     "TCPRoute",
                     {"gateway.networking.k8s.io/v1alpha2"},
                     &tcp_route_schema,
                     sizeof(raw_route),
                     "Gateway API TCPRoute: weighted opaque TCP backends."},
    [K_DESTINATION_RULE] = {K_DESTINATION_RULE,
                            "DestinationRule",
                            {"networking.istio.io/v1", "networking.istio.io/v1beta1",
                             "networking.istio.io/v1alpha3"},
                            &dr_schema,
                            sizeof(raw_dr),
                            "Istio DestinationRule: the traffic policy of one Service (at most one "
                            "per Service)."},
    [K_PEER_AUTHN] = {K_PEER_AUTHN,
                      "PeerAuthentication",
                      {"security.istio.io/v1", "security.istio.io/v1beta1"},
                      &peer_authn_schema,
                      sizeof(raw_peer_authn),
                      "Istio PeerAuthentication: inbound mTLS mode."},
    [K_AUTHZ] = {K_AUTHZ,
                 "AuthorizationPolicy",
                 {"security.istio.io/v1", "security.istio.io/v1beta1"},
                 &authz_schema,
                 sizeof(raw_authz),
                 "Istio AuthorizationPolicy (ALLOW, DENY, AUDIT)."},
    [K_MESH] = {K_MESH,
                "MeshConfig",
                {"rete.dev/v1alpha1"},
                &mesh_schema,
                sizeof(raw_mesh),
                "Mesh-wide defaults. At most one."},
};

/* ---- pass 1: documents ------------------------------------------------------------ */

typedef struct loader {
    cfg_ctx ctx;
    rete_config *cfg;
    raw_res *head[K_COUNT];
    raw_res *tail[K_COUNT];
    size_t count[K_COUNT];
    /* Every decoded resource by (kind, namespace, name), open addressing:
     * the duplicate check in O(1) instead of a scan of the kind's list
     * (O(n^2) over a snapshot of 10000 workloads). malloc'ed, freed with
     * the loader. */
    raw_res **idx;
    size_t idx_cap;
    size_t idx_n;
} loader;

static size_t res_hash(int kind, const char *ns, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)kind;
    for (const char *s = ns; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    h = (h ^ 0xff) * 0x100000001b3ULL;
    for (const char *s = name; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return (size_t)(h ^ (h >> 29));
}

/* The resource already decoded with r's kind, namespace and name, or NULL. */
static raw_res *res_index_find(const loader *l, const raw_res *r)
{
    if (!l->idx_cap)
        return NULL;
    size_t mask = l->idx_cap - 1;
    for (size_t i = res_hash(r->kind->id, r->meta.ns, r->meta.name) & mask;; i = (i + 1) & mask) {
        raw_res *o = l->idx[i];
        if (!o)
            return NULL;
        if (o->kind == r->kind && strcmp(o->meta.name, r->meta.name) == 0 &&
            strcmp(o->meta.ns, r->meta.ns) == 0)
            return o;
    }
}

static void res_index_add(loader *l, raw_res *r)
{
    if ((l->idx_n + 1) * 2 > l->idx_cap) {
        size_t cap = l->idx_cap ? l->idx_cap * 2 : 256;
        raw_res **slots = rete_calloc(cap, sizeof(*slots));
        for (size_t j = 0; j < l->idx_cap; j++) {
            raw_res *o = l->idx[j];
            if (!o)
                continue;
            size_t i = res_hash(o->kind->id, o->meta.ns, o->meta.name) & (cap - 1);
            while (slots[i])
                i = (i + 1) & (cap - 1);
            slots[i] = o;
        }
        free(l->idx);
        l->idx = slots;
        l->idx_cap = cap;
    }
    size_t i = res_hash(r->kind->id, r->meta.ns, r->meta.name) & (l->idx_cap - 1);
    while (l->idx[i])
        i = (i + 1) & (l->idx_cap - 1);
    l->idx[i] = r;
    l->idx_n++;
}

static void kind_names(char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < K_COUNT && used < size; k++) {
        int w = snprintf(buf + used, size - used, "%s%s", k ? ", " : "", kinds[k].kind);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static const rete_ynode *doc_get(const rete_ynode *doc, const char *key)
{
    for (size_t i = 0; i < doc->n; i++)
        if (doc->pairs[i].key->kind == RETE_YNODE_SCALAR &&
            strcmp(doc->pairs[i].key->str, key) == 0)
            return doc->pairs[i].value;
    return NULL;
}

static rete_rc decode_document(loader *l, const rete_ynode *doc)
{
    cfg_ctx *ctx = &l->ctx;
    static const char *const top[] = {"apiVersion", "kind", "metadata", "spec"};
    if (doc->kind != RETE_YNODE_MAP)
        return cfg_fail(ctx, "a resource must be a mapping, not %s",
                        doc->kind == RETE_YNODE_SEQ ? "a list" : "a scalar");
    for (size_t i = 0; i < doc->n; i++) {
        const rete_ynode *k = doc->pairs[i].key;
        size_t t = 0;
        while (t < CFG_ARRAY_LEN(top) &&
               !(k->kind == RETE_YNODE_SCALAR && strcmp(k->str, top[t]) == 0))
            t++;
        if (t == CFG_ARRAY_LEN(top))
            return cfg_fail_at(ctx, k->kind == RETE_YNODE_SCALAR ? k->str : "?", "unknown field");
        for (size_t j = 0; j < i; j++)
            if (strcmp(doc->pairs[j].key->str, k->str) == 0)
                return cfg_fail_at(ctx, k->str, "duplicate field");
    }
    const rete_ynode *kind_n = doc_get(doc, "kind"), *api_n = doc_get(doc, "apiVersion");
    if (!kind_n)
        return cfg_fail_at(ctx, "kind", "required");
    const kind_def *kd = NULL;
    for (size_t k = 0; k < K_COUNT && kind_n->kind == RETE_YNODE_SCALAR; k++)
        if (strcmp(kinds[k].kind, kind_n->str) == 0)
            kd = &kinds[k];
    if (!kd) {
        char names[256];
        kind_names(names, sizeof(names));
        return cfg_fail_at(ctx, "kind", "must be one of %s", names);
    }
    if (!api_n)
        return cfg_fail_at(ctx, "apiVersion", "required");
    bool api_ok = false;
    for (size_t i = 0; i < CFG_ARRAY_LEN(kd->api_versions) && kd->api_versions[i]; i++)
        api_ok |= api_n->kind == RETE_YNODE_SCALAR && strcmp(api_n->str, kd->api_versions[i]) == 0;
    if (!api_ok)
        return cfg_fail_at(ctx, "apiVersion", "must be %s for kind %s%s", kd->api_versions[0],
                           kd->kind, kd->api_versions[1] ? " (or an older version of it)" : "");
    const rete_ynode *meta_n = doc_get(doc, "metadata");
    if (!meta_n)
        return cfg_fail_at(ctx, "metadata", "required");

    raw_res *r = rete_arena_alloc(ctx->arena, kd->raw_size);
    r->kind = kd;
    r->doc = ctx->doc;
    size_t mark = cfg_path_key(ctx, "metadata");
    RETE_GUARD(cfg_decode(ctx, &meta_schema, meta_n, &r->meta));
    cfg_path_pop(ctx, mark);
    if (kd->id == K_SERVICE && strchr(r->meta.name, '.'))
        return cfg_fail_at(ctx, "metadata.name", "a Service name must not contain '.'");
    const raw_res *o = res_index_find(l, r);
    if (o)
        return cfg_fail_at(ctx, "metadata.name", "duplicate %s %s/%s (first in document %d)",
                           kd->kind, r->meta.ns, r->meta.name, o->doc);
    if ((kd->id == K_PROXY || kd->id == K_MESH) && l->head[kd->id])
        return cfg_fail_at(ctx, "kind", "only one %s document is allowed (first in document %d)",
                           kd->kind, l->head[kd->id]->doc);
    mark = cfg_path_key(ctx, "spec");
    RETE_GUARD(cfg_decode(ctx, kd->spec, doc_get(doc, "spec"), r));
    cfg_path_pop(ctx, mark);

    if (l->tail[kd->id])
        l->tail[kd->id]->next = r;
    else
        l->head[kd->id] = r;
    l->tail[kd->id] = r;
    l->count[kd->id]++;
    res_index_add(l, r);
    return RETE_OK;
}

/* ---- pass 2: resolution ----------------------------------------------------------- */

static rete_rc res_fail(loader *l, int doc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static rete_rc res_fail(loader *l, int doc, const char *path, const char *fmt, ...)
{
    va_list ap;
    l->ctx.err->document = doc;
    snprintf(l->ctx.err->path, sizeof(l->ctx.err->path), "%s", path);
    va_start(ap, fmt);
    vsnprintf(l->ctx.err->reason, sizeof(l->ctx.err->reason), fmt, ap);
    va_end(ap);
    return RETE_EINVAL;
}

static bool labels_select(const rete_label *sel, size_t n_sel, const rete_label *labels, size_t n)
{
    for (size_t i = 0; i < n_sel; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = strcmp(sel[i].key, labels[j].key) == 0 &&
                    strcmp(sel[i].value, labels[j].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

static bool view_ieq_cstr(rete_view v, const char *s)
{
    return rete_view_ieq(v, rete_view_cstr(s));
}

/* A service by the host a client (or a resource) names it with: "name", "name.ns",
 * "name.ns.svc", "name.ns.svc.cluster.local", any case, optional trailing dot. */
static const rete_service *service_by_host(const rete_service *svcs, size_t n, rete_view host,
                                           const char *default_ns)
{
    if (host.len && host.p[host.len - 1] == '.')
        host.len--;
    rete_view suffixes[] = {RETE_VIEW_LIT(".svc." CLUSTER_DOMAIN), RETE_VIEW_LIT(".svc")};
    for (size_t i = 0; i < CFG_ARRAY_LEN(suffixes); i++)
        if (rete_view_ihas_suffix(host, suffixes[i])) {
            host.len -= suffixes[i].len;
            if (rete_view_find(host, '.') < 0)
                return NULL; /* "name.svc" is not a form we accept */
            break;
        }
    ptrdiff_t dot = rete_view_find(host, '.');
    rete_view name = dot < 0 ? host : rete_view_sub(host, 0, (size_t)dot);
    rete_view ns =
        dot < 0 ? rete_view_cstr(default_ns) : rete_view_sub(host, (size_t)dot + 1, host.len);
    if (name.len == 0 || rete_view_find(ns, '.') >= 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (view_ieq_cstr(name, svcs[i].name) && view_ieq_cstr(ns, svcs[i].ns))
            return &svcs[i];
    return NULL;
}

static const rete_service *service_by_name(const rete_config *cfg, const char *ns, const char *name)
{
    for (size_t i = 0; i < cfg->n_services; i++)
        if (strcmp(cfg->services[i].name, name) == 0 && strcmp(cfg->services[i].ns, ns) == 0)
            return &cfg->services[i];
    return NULL;
}

static bool service_has_port(const rete_service *s, uint16_t port)
{
    for (size_t i = 0; i < s->n_ports; i++)
        if (s->ports[i].port == port)
            return true;
    return false;
}

static char *arena_printf(rete_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static char *arena_printf(rete_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = rete_arena_alloc(a, (size_t)(n > 0 ? n : 0) + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void resolve_workloads(loader *l, const char *trust_domain)
{
    rete_workload *w = rete_arena_alloc(l->ctx.arena, (l->count[K_WORKLOAD] + 1) * sizeof(*w));
    size_t i = 0;
    for (raw_res *r = l->head[K_WORKLOAD]; r; r = r->next, i++) {
        w[i] = ((raw_workload *)r)->w;
        w[i].name = r->meta.name;
        w[i].ns = r->meta.ns;
        w[i].spiffe_id = arena_printf(l->ctx.arena, "spiffe://%s/ns/%s/sa/%s", trust_domain,
                                      w[i].ns, w[i].service_account);
    }
    l->cfg->workloads = w;
    l->cfg->n_workloads = i;
}

/* Workloads ordered by namespace, then by their place in the configuration
 * (they are one array): a Service's endpoints keep the document order the
 * balancers (ring hash, Maglev) were built on. */
static int workload_ns_cmp(const void *a, const void *b)
{
    const rete_workload *x = *(const rete_workload *const *)a, *y = *(const rete_workload *const *)b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : (x < y ? -1 : x > y);
}

/* [*first, *end) of the workloads of namespace ns in by_ns. */
static void ns_range(const rete_workload *const *by_ns, size_t n, const char *ns, size_t *first, size_t *end)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(by_ns[mid]->ns, ns) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *first = lo;
    for (hi = n; lo < hi;) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(by_ns[mid]->ns, ns) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *end = lo;
}

static rete_rc resolve_services(loader *l)
{
    rete_config *cfg = l->cfg;
    rete_arena *a = l->ctx.arena;
    raw_dr defaults = {0};
    RETE_GUARD(cfg_decode(&l->ctx, &policy_schema, NULL, &defaults));

    rete_service *s = rete_arena_alloc(a, (l->count[K_SERVICE] + 1) * sizeof(*s));
    /* Workloads by namespace, so that each Service looks at its own
     * namespace's only (a mesh of 1000 Services and 10000 Workloads made
     * ten million comparisons here). */
    const rete_workload **by_ns = rete_malloc((cfg->n_workloads + 1) * sizeof(*by_ns));
    const rete_workload **scratch = rete_malloc((cfg->n_workloads + 1) * sizeof(*scratch));
    for (size_t w = 0; w < cfg->n_workloads; w++)
        by_ns[w] = &cfg->workloads[w];
    qsort(by_ns, cfg->n_workloads, sizeof(*by_ns), workload_ns_cmp);
    size_t i = 0;
    for (raw_res *r = l->head[K_SERVICE]; r; r = r->next, i++) {
        const raw_service *rs = (const raw_service *)r;
        s[i].name = r->meta.name;
        s[i].ns = r->meta.ns;
        s[i].fqdn = arena_printf(a, "%s.%s.svc." CLUSTER_DOMAIN, s[i].name, s[i].ns);
        rete_service_port *ports = rete_arena_alloc(a, rs->n_ports * sizeof(*ports));
        for (size_t p = 0; p < rs->n_ports; p++)
            ports[p] = rs->ports[p].p;
        s[i].ports = ports;
        s[i].n_ports = rs->n_ports;
        s[i].selector = rs->selector;
        s[i].n_selector = rs->n_selector;
        s[i].policy = defaults.p;
        /* Endpoints: the Workloads of the Service's namespace (a range of
         * by_ns) whose labels it selects. */
        size_t w = 0, end = 0, n_eps = 0;
        if (rs->n_selector)
            ns_range(by_ns, cfg->n_workloads, s[i].ns, &w, &end);
        for (; w < end; w++)
            if (labels_select(rs->selector, rs->n_selector, by_ns[w]->labels, by_ns[w]->n_labels))
                scratch[n_eps++] = by_ns[w];
        const rete_workload **eps = rete_arena_alloc(a, (n_eps + 1) * sizeof(*eps));
        memcpy(eps, scratch, n_eps * sizeof(*eps));
        s[i].endpoints = eps;
        s[i].n_endpoints = n_eps;
    }
    free(by_ns);
    free(scratch);
    cfg->services = s;
    cfg->n_services = i;

    int *dr_doc = rete_arena_alloc(a, (i + 1) * sizeof(*dr_doc));
    for (raw_res *r = l->head[K_DESTINATION_RULE]; r; r = r->next) {
        const raw_dr *dr = (const raw_dr *)r;
        const rete_service *svc = service_by_host(s, i, rete_view_cstr(dr->host), r->meta.ns);
        if (!svc)
            return res_fail(l, r->doc, "spec.host", "unknown service %s (from namespace %s)",
                            dr->host, r->meta.ns);
        size_t idx = (size_t)(svc - s);
        if (dr_doc[idx])
            return res_fail(l, r->doc, "spec.host",
                            "service %s/%s already has a DestinationRule (document %d)", svc->ns,
                            svc->name, dr_doc[idx] - 1);
        dr_doc[idx] = r->doc + 1;
        s[idx].policy = dr->p;
    }
    return RETE_OK;
}

/* parentRefs[] or backendRefs[] entry -> service (+ port check). */
static rete_rc resolve_ref(loader *l, const raw_res *route, const raw_ref *ref, const char *path,
                           bool port_required, const rete_service **out)
{
    const char *ns = ref->ns ? ref->ns : route->meta.ns;
    const rete_service *svc = service_by_name(l->cfg, ns, ref->name);
    char p[160];
    if (!svc) {
        snprintf(p, sizeof(p), "%s.name", path);
        return res_fail(l, route->doc, p, "unknown service %s/%s", ns, ref->name);
    }
    if ((ref->port || port_required) && !service_has_port(svc, ref->port)) {
        snprintf(p, sizeof(p), "%s.port", path);
        return res_fail(l, route->doc, p, "service %s/%s has no port %u", ns, ref->name, ref->port);
    }
    *out = svc;
    return RETE_OK;
}

static rete_rc resolve_parents(loader *l, const raw_route *rr, const rete_service *const **out,
                               const uint16_t **ports_out, size_t *n)
{
    const rete_service **parents = rete_arena_alloc(l->ctx.arena, rr->n_parents * sizeof(*parents));
    uint16_t *ports = rete_arena_alloc(l->ctx.arena, rr->n_parents * sizeof(*ports));
    for (size_t i = 0; i < rr->n_parents; i++) {
        char path[64];
        snprintf(path, sizeof(path), "spec.parentRefs[%zu]", i);
        RETE_GUARD(resolve_ref(l, &rr->hdr, &rr->parents[i], path, false, &parents[i]));
        ports[i] = rr->parents[i].port;
    }
    *out = parents;
    *ports_out = ports;
    *n = rr->n_parents;
    return RETE_OK;
}

static rete_rc resolve_backends(loader *l, const raw_route *rr, size_t rule,
                                const rete_backend_ref **out, size_t *n, uint32_t *total)
{
    const raw_rule *raw = &rr->rules[rule];
    rete_backend_ref *b = rete_arena_alloc(l->ctx.arena, (raw->n_backends + 1) * sizeof(*b));
    *total = 0;
    for (size_t i = 0; i < raw->n_backends; i++) {
        char path[96];
        snprintf(path, sizeof(path), "spec.rules[%zu].backendRefs[%zu]", rule, i);
        RETE_GUARD(resolve_ref(l, &rr->hdr, &raw->backends[i], path, true, &b[i].service));
        b[i].port = raw->backends[i].port;
        b[i].weight = raw->backends[i].weight;
        *total += b[i].weight;
    }
    *out = b;
    *n = raw->n_backends;
    return RETE_OK;
}

static rete_rc resolve_routes(loader *l)
{
    rete_arena *a = l->ctx.arena;
    size_t n_http = l->count[K_HTTP_ROUTE] + l->count[K_GRPC_ROUTE];
    rete_http_route *routes = rete_arena_alloc(a, (n_http + 1) * sizeof(*routes));
    size_t n = 0;
    /* merge HTTPRoutes and GRPCRoutes back into document order */
    raw_res *h = l->head[K_HTTP_ROUTE], *g = l->head[K_GRPC_ROUTE];
    while (h || g) {
        raw_res *r = (!g || (h && h->doc < g->doc)) ? h : g;
        if (r == h)
            h = h->next;
        else
            g = g->next;
        const raw_route *rr = (const raw_route *)r;
        rete_http_route *out = &routes[n++];
        out->name = r->meta.name;
        out->ns = r->meta.ns;
        out->grpc = r->kind->id == K_GRPC_ROUTE;
        out->hostnames = rr->hostnames;
        out->n_hostnames = rr->n_hostnames;
        out->order = (uint64_t)r->doc;
        RETE_GUARD(resolve_parents(l, rr, &out->parents, &out->parent_ports, &out->n_parents));
        rete_http_rule *rules = rete_arena_alloc(a, (rr->n_rules + 1) * sizeof(*rules));
        for (size_t i = 0; i < rr->n_rules; i++) {
            rules[i] = rr->rules[i].r;
            RETE_GUARD(resolve_backends(l, rr, i, &rules[i].backends, &rules[i].n_backends,
                                        &rules[i].total_weight));
        }
        out->rules = rules;
        out->n_rules = rr->n_rules;
    }
    l->cfg->http_routes = routes;
    l->cfg->n_http_routes = n;

    /* the model has one parent per TCP route: one entry per parentRef */
    size_t n_tcp = 0;
    for (raw_res *r = l->head[K_TCP_ROUTE]; r; r = r->next)
        n_tcp += ((const raw_route *)r)->n_parents;
    rete_tcp_route *tcp = rete_arena_alloc(a, (n_tcp + 1) * sizeof(*tcp));
    n = 0;
    for (raw_res *r = l->head[K_TCP_ROUTE]; r; r = r->next) {
        const raw_route *rr = (const raw_route *)r;
        const rete_service *const *parents;
        const uint16_t *ports;
        size_t n_parents;
        const rete_backend_ref *backends;
        size_t n_backends;
        uint32_t total;
        RETE_GUARD(resolve_parents(l, rr, &parents, &ports, &n_parents));
        RETE_GUARD(resolve_backends(l, rr, 0, &backends, &n_backends, &total));
        for (size_t i = 0; i < n_parents; i++, n++)
            tcp[n] = (rete_tcp_route){.name = r->meta.name,
                                      .ns = r->meta.ns,
                                      .parent = parents[i],
                                      .parent_port = ports[i],
                                      .backends = backends,
                                      .n_backends = n_backends,
                                      .order = (uint64_t)r->doc};
    }
    l->cfg->tcp_routes = tcp;
    l->cfg->n_tcp_routes = n;
    return RETE_OK;
}

static const rete_workload *self_workload(const rete_config *cfg)
{
    for (size_t i = 0; i < cfg->n_workloads; i++)
        if (strcmp(cfg->workloads[i].name, cfg->proxy.name) == 0 &&
            strcmp(cfg->workloads[i].ns, cfg->proxy.ns) == 0)
            return &cfg->workloads[i];
    return NULL;
}

static rete_rc resolve_proxy(loader *l, const raw_proxy *rp)
{
    rete_config *cfg = l->cfg;
    rete_proxy_spec *p = &cfg->proxy;
    const rete_workload *self = self_workload(cfg);

    rete_upstream_listener *ups =
        rete_arena_alloc(l->ctx.arena, (rp->n_upstreams + 1) * sizeof(*ups));
    for (size_t i = 0; i < rp->n_upstreams; i++) {
        const raw_upstream *u = &rp->upstreams[i];
        char path[64];
        ups[i].listen = u->listen;
        ups[i].port = u->port;
        ups[i].service =
            service_by_host(cfg->services, cfg->n_services, rete_view_cstr(u->service), p->ns);
        if (!ups[i].service) {
            snprintf(path, sizeof(path), "spec.upstreams[%zu].service", i);
            return res_fail(l, rp->hdr.doc, path, "unknown service %s (from namespace %s)",
                            u->service, p->ns);
        }
        if (!service_has_port(ups[i].service, u->port)) {
            snprintf(path, sizeof(path), "spec.upstreams[%zu].port", i);
            return res_fail(l, rp->hdr.doc, path, "service %s/%s has no port %u",
                            ups[i].service->ns, ups[i].service->name, u->port);
        }
    }
    p->upstreams = ups;
    p->n_upstreams = rp->n_upstreams;

    if (!rp->has_inbound_ports && self) { /* the target ports of the services selecting us */
        rete_inbound_port *in = NULL;
        size_t n = 0, cap = 0;
        for (size_t s = 0; s < cfg->n_services; s++)
            for (size_t e = 0; e < cfg->services[s].n_endpoints; e++) {
                if (cfg->services[s].endpoints[e] != self)
                    continue;
                for (size_t k = 0; k < cfg->services[s].n_ports; k++) {
                    const rete_service_port *sp = &cfg->services[s].ports[k];
                    bool dup = false;
                    for (size_t j = 0; j < n && !dup; j++)
                        dup = in[j].port == sp->target_port;
                    if (dup)
                        continue;
                    if (n == cap) {
                        cap = cap ? cap * 2 : 8;
                        rete_inbound_port *grown =
                            rete_arena_alloc(l->ctx.arena, cap * sizeof(*grown));
                        if (n)
                            memcpy(grown, in, n * sizeof(*in));
                        in = grown;
                    }
                    in[n++] = (rete_inbound_port){sp->target_port, sp->protocol};
                }
            }
        p->inbound_ports = in;
        p->n_inbound_ports = n;
    }
    return RETE_OK;
}

/* Effective PeerAuthentication: workload selector > namespace > root namespace > MeshConfig. */
static void resolve_mtls(loader *l, const rete_workload *self, rete_mtls_mode mesh_default)
{
    const rete_config *cfg = l->cfg;
    int level_mode[3] = {MTLS_UNSET, MTLS_UNSET, MTLS_UNSET}; /* workload, namespace, mesh */
    for (raw_res *r = l->head[K_PEER_AUTHN]; r; r = r->next) {
        const raw_peer_authn *pa = (const raw_peer_authn *)r;
        int level;
        if (strcmp(r->meta.ns, cfg->proxy.ns) == 0 && pa->has_selector)
            level = self && labels_select(pa->selector.labels, pa->selector.n_labels, self->labels,
                                          self->n_labels)
                        ? 0
                        : -1;
        else if (strcmp(r->meta.ns, cfg->proxy.ns) == 0)
            level = 1;
        else if (strcmp(r->meta.ns, ROOT_NAMESPACE) == 0 && !pa->has_selector)
            level = 2;
        else
            level = -1;
        if (level >= 0 && level_mode[level] == MTLS_UNSET) /* the first one (oldest) wins */
            level_mode[level] = pa->mode;
    }
    l->cfg->mtls_mode = mesh_default;
    for (int i = 2; i >= 0; i--)
        if (level_mode[i] != MTLS_UNSET)
            l->cfg->mtls_mode = (rete_mtls_mode)level_mode[i];
}

/* Istio semantics: a rule matches when any from[] matches (or there is none) and
 * any to[] matches (or there is none). The model's rete_authz_rule is one source AND
 * one operation, so each rule expands into the product from[] x to[], OR'd. */
static void resolve_authz(loader *l, const rete_workload *self)
{
    rete_config *cfg = l->cfg;
    rete_authz_policy *pol = rete_arena_alloc(l->ctx.arena, (l->count[K_AUTHZ] + 1) * sizeof(*pol));
    size_t n = 0;
    static const rete_authz_rule any = {0};
    for (raw_res *r = l->head[K_AUTHZ]; r; r = r->next) {
        const raw_authz *ap = (const raw_authz *)r;
        bool here = strcmp(r->meta.ns, cfg->proxy.ns) == 0;
        bool root = strcmp(r->meta.ns, ROOT_NAMESPACE) == 0;
        bool selects = !ap->has_selector
                           ? (here || root)
                           : (here || root) && self &&
                                 labels_select(ap->selector.labels, ap->selector.n_labels,
                                               self->labels, self->n_labels);
        if (!selects)
            continue;
        size_t total = 0;
        for (size_t i = 0; i < ap->n_rules; i++)
            total += (ap->rules[i].n_from ? ap->rules[i].n_from : 1) *
                     (ap->rules[i].n_to ? ap->rules[i].n_to : 1);
        rete_authz_rule *rules = rete_arena_alloc(l->ctx.arena, (total + 1) * sizeof(*rules));
        size_t k = 0;
        for (size_t i = 0; i < ap->n_rules; i++) {
            const raw_authz_rule *ar = &ap->rules[i];
            for (size_t f = 0; f < (ar->n_from ? ar->n_from : 1); f++)
                for (size_t t = 0; t < (ar->n_to ? ar->n_to : 1); t++) {
                    const rete_authz_rule *src = ar->n_from ? &ar->from[f] : &any;
                    const rete_authz_rule *op = ar->n_to ? &ar->to[t] : &any;
                    rete_authz_rule *out = &rules[k++];
                    *out = *src; /* source half */
                    out->methods = op->methods;
                    out->n_methods = op->n_methods;
                    out->not_methods = op->not_methods;
                    out->n_not_methods = op->n_not_methods;
                    out->paths = op->paths;
                    out->n_paths = op->n_paths;
                    out->not_paths = op->not_paths;
                    out->n_not_paths = op->n_not_paths;
                    out->ports = op->ports;
                    out->n_ports = op->n_ports;
                    out->not_ports = op->not_ports;
                    out->n_not_ports = op->n_not_ports;
                }
        }
        pol[n++] =
            (rete_authz_policy){r->meta.name, r->meta.ns, (rete_authz_action)ap->action, rules, k};
    }
    cfg->authz = pol;
    cfg->n_authz = n;
}

static rete_rc resolve(loader *l)
{
    rete_config *cfg = l->cfg;
    if (!l->head[K_PROXY])
        return res_fail(l, -1, "", "a Proxy document (apiVersion rete.dev/v1alpha1) is required");
    const raw_proxy *rp = (const raw_proxy *)l->head[K_PROXY];
    const raw_mesh *mesh = (const raw_mesh *)l->head[K_MESH];
    cfg->proxy = rp->p;
    cfg->proxy.name = rp->hdr.meta.name;
    cfg->proxy.ns = rp->hdr.meta.ns;
    if (!rp->has_trust_domain)
        cfg->proxy.trust_domain = mesh && mesh->trust_domain ? mesh->trust_domain : CLUSTER_DOMAIN;
    cfg->proxy.spiffe_id =
        arena_printf(l->ctx.arena, "spiffe://%s/ns/%s/sa/%s", cfg->proxy.trust_domain,
                     cfg->proxy.ns, cfg->proxy.service_account);
    resolve_workloads(l, cfg->proxy.trust_domain);
    RETE_GUARD(resolve_services(l));
    RETE_GUARD(resolve_routes(l));
    RETE_GUARD(resolve_proxy(l, rp));
    const rete_workload *self = self_workload(cfg);
    resolve_mtls(l, self, mesh ? (rete_mtls_mode)mesh->default_mtls : RETE_MTLS_PERMISSIVE);
    resolve_authz(l, self);
    rete_rc rc = rete_route_build_tables(cfg, l->ctx.arena);
    if (rc)
        return res_fail(l, -1, "", "building route tables: %s", rete_rc_str(rc));
    return RETE_OK;
}

/* ---- public API ------------------------------------------------------------------- */

static void free_regexes(cfg_regex_node *n)
{
    for (; n; n = n->next)
        pcre2_code_free(n->re);
}

static void free_match_regexes(const rete_string_match *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].re)
            pcre2_code_free(m[i].re);
}

void rete_config_unref(rete_config *cfg)
{
    if (!cfg || atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t r = 0; r < cfg->n_http_routes; r++)
        for (size_t i = 0; i < cfg->http_routes[r].n_rules; i++) {
            const rete_http_rule *rule = &cfg->http_routes[r].rules[i];
            for (size_t m = 0; m < rule->n_matches; m++) {
                free_match_regexes(&rule->matches[m].path, 1);
                free_match_regexes(rule->matches[m].headers, rule->matches[m].n_headers);
                free_match_regexes(rule->matches[m].query, rule->matches[m].n_query);
            }
        }
    rete_arena_free(cfg->arena); /* cfg itself lives in its arena */
}

void rete_config_error_format(const rete_config_error *err, char *buf, size_t size)
{
    char doc[32] = "";
    if (err->document >= 0)
        snprintf(doc, sizeof(doc), "document %d: ", err->document);
    snprintf(buf, size, "%s: %s%s%s%s", err->file[0] ? err->file : "<config>", doc, err->path,
             err->path[0] ? ": " : "", err->reason);
}

rete_config *rete_config_load_buffer(const char *data, size_t len, const char *source_name,
                                     uint64_t version, rete_config_error *err)
{
    memset(err, 0, sizeof(*err));
    err->document = -1;
    snprintf(err->file, sizeof(err->file), "%s", source_name ? source_name : "");

    rete_arena *arena = rete_arena_new(65536);
    rete_config *cfg = rete_arena_alloc(arena, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    cfg->arena = arena;
    cfg->version = version;
    snprintf(cfg->source, sizeof(cfg->source), "%s", source_name ? source_name : "");

    loader l = {.ctx = {.arena = arena, .err = err, .doc = -1, .base_dir = ""}, .cfg = cfg};
    const char *slash = source_name ? strrchr(source_name, '/') : NULL;
    if (slash)
        l.ctx.base_dir = slash == source_name ? "/"
                                              : rete_arena_strndup(arena, source_name,
                                                                   (size_t)(slash - source_name));

    rete_ystream stream;
    char yerr[256];
    int ydoc;
    rete_rc rc = rete_yaml_parse(data, len, arena, &stream, yerr, sizeof(yerr), &ydoc);
    if (rc) {
        err->document = ydoc;
        snprintf(err->reason, sizeof(err->reason), "invalid YAML: %s", yerr);
        goto fail;
    }
    for (size_t i = 0; i < stream.n_docs; i++) {
        if (!stream.docs[i])
            continue;
        l.ctx.doc = (int)i;
        cfg_path_pop(&l.ctx, 0);
        rc = decode_document(&l, stream.docs[i]);
        if (rc)
            goto fail;
    }
    l.ctx.doc = -1;
    rc = resolve(&l);
    free(l.idx);
    l.idx = NULL;
    if (rc)
        goto fail;
    return cfg;

fail:
    free(l.idx);
    free_regexes(l.ctx.regexes);
    rete_arena_free(arena);
    return NULL;
}

rete_config *rete_config_load_file(const char *path, uint64_t version, rete_config_error *err)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        goto io_error;
    for (;;) {
        if (len == cap) {
            if (cap >= CONFIG_MAX_FILE) {
                fclose(f);
                rete_free(&data);
                memset(err, 0, sizeof(*err));
                err->document = -1;
                snprintf(err->file, sizeof(err->file), "%s", path);
                snprintf(err->reason, sizeof(err->reason), "larger than %u bytes", CONFIG_MAX_FILE);
                return NULL;
            }
            cap = cap ? cap * 2 : 65536;
            data = rete_realloc(data, cap);
        }
        size_t got = fread(data + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed)
        goto io_error;
    rete_config *cfg = rete_config_load_buffer(data, len, path, version, err);
    rete_free(&data);
    return cfg;

io_error : {
    int e = errno;
    rete_free(&data);
    memset(err, 0, sizeof(*err));
    err->document = -1;
    snprintf(err->file, sizeof(err->file), "%s", path);
    snprintf(err->reason, sizeof(err->reason), "cannot read: %s", strerror(e));
    return NULL;
}
}

const rete_route_table *rete_config_table_for(const rete_config *cfg, const rete_service *svc,
                                              uint16_t port)
{
    for (size_t i = 0; i < cfg->n_tables; i++)
        if (cfg->tables[i].service == svc && cfg->tables[i].port == port)
            return &cfg->tables[i];
    return NULL;
}

const rete_route_table *rete_config_find_table(const rete_config *cfg, rete_view authority,
                                               uint16_t default_port)
{
    rete_view host = authority;
    uint64_t port = 0;
    ptrdiff_t colon = -1;
    for (size_t i = authority.len; i-- > 0;)
        if (authority.p[i] == ':') {
            colon = (ptrdiff_t)i;
            break;
        }
    if (colon >= 0) {
        if (!rete_view_to_u64(rete_view_sub(authority, (size_t)colon + 1, authority.len), &port) ||
            port == 0 || port > 65535)
            return NULL; /* also IPv6 literals: never a service name */
        host = rete_view_sub(authority, 0, (size_t)colon);
    }
    const rete_service *svc = service_by_host(cfg->services, cfg->n_services, host, cfg->proxy.ns);
    if (!svc || svc->n_ports == 0)
        return NULL;
    if (port)
        return rete_config_table_for(cfg, svc, (uint16_t)port);
    if (default_port && service_has_port(svc, default_port))
        return rete_config_table_for(cfg, svc, default_port);
    if (service_has_port(svc, 80))
        return rete_config_table_for(cfg, svc, 80);
    if (svc->n_ports == 1)
        return rete_config_table_for(cfg, svc, svc->ports[0].port);
    for (size_t i = 0; i < svc->n_ports; i++)
        if (svc->ports[i].protocol != RETE_PROTO_TCP)
            return rete_config_table_for(cfg, svc, svc->ports[i].port);
    return NULL;
}

/* ---- reference documentation ------------------------------------------------------ */

void rete_config_write_reference(FILE *out)
{
    fprintf(out, "### metadata (every kind)\n\n| field | type | required | default | notes |\n"
                 "| --- | --- | --- | --- | --- |\n");
    cfg_schema_markdown(out, &meta_schema, "metadata");
    fprintf(out, "\n");
    for (size_t k = 0; k < K_COUNT; k++) {
        const kind_def *kd = &kinds[k];
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
