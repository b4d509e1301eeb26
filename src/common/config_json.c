/* The effective configuration as JSON (the proxy's admin /config, retectl
 * proxy-config): a read-only view of a resolved snapshot (config-t.h). */
#include "config.h"
#include "config_schema.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const proto_names[] = {"HTTP", "HTTP2", "GRPC", "TCP"};
static const char *const lb_names[] = {"PEAK_EWMA", "ROUND_ROBIN", "LEAST_REQUEST",
                                       "RANDOM",    "RING_HASH",   "MAGLEV"};
static const char *const hash_names[] = {"NONE", "HEADER", "COOKIE", "SOURCE_IP"};
static const char *const mtls_names[] = {"STRICT", "PERMISSIVE", "DISABLE"};
static const char *const action_names[] = {"ALLOW", "DENY", "AUDIT"};
static const char *const match_names[] = {"Exact", "PathPrefix", "RegularExpression"};
static const char *const filter_names[] = {"RequestHeaderModifier", "ResponseHeaderModifier",
                                           "RequestRedirect", "URLRewrite",
                                           "RequestMirror"};

#define NAME_OF(tbl, v) ((size_t)(v) < CFG_ARRAY_LEN(tbl) ? (tbl)[(size_t)(v)] : "?")

static json_t *json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *json_addr(const rete_socket_addr *a)
{
    char buf[80];
    snprintf(buf, sizeof(buf), strchr(a->host, ':') ? "[%s]:%u" : "%s:%u", a->host, a->port);
    return json_string(buf);
}

static json_t *json_strs(const char *const *s, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_string(s[i]));
    return arr;
}

static json_t *json_u16s(const uint16_t *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(v[i]));
    return arr;
}

static json_t *json_labels(const rete_label *l, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++)
        json_object_set_new(o, l[i].key, json_string(l[i].value));
    return o;
}

static json_t *json_svc_name(const rete_service *s)
{
    return json_pack("s++", s->ns, "/", s->name);
}

static json_t *json_string_match(const rete_string_match *m)
{
    json_t *o = json_pack("{s:s, s:s}", "type", NAME_OF(match_names, m->kind), "value", m->value);
    if (m->name)
        json_object_set_new(o, "name", json_string(m->name));
    return o;
}

static json_t *json_backends(const rete_backend_ref *b, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:o, s:i, s:i}", "service", json_svc_name(b[i].service), "port",
                           (json_int_t)b[i].port, "weight", (json_int_t)b[i].weight));
    return arr;
}

static json_t *json_parents(const rete_service *const *p, const uint16_t *ports, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:o, s:i}", "service", json_svc_name(p[i]), "port",
                                             (json_int_t)(ports ? ports[i] : 0)));
    return arr;
}

static json_t *json_header_mod(const rete_header_modifier *h)
{
    json_t *set = json_object(), *add = json_object();
    for (size_t i = 0; i < h->n_set; i++)
        json_object_set_new(set, h->set[i].name, json_string(h->set[i].value));
    for (size_t i = 0; i < h->n_add; i++)
        json_object_set_new(add, h->add[i].name, json_string(h->add[i].value));
    return json_pack("{s:o, s:o, s:o}", "set", set, "add", add, "remove",
                     json_strs(h->remove, h->n_remove));
}

static json_t *json_rule(const rete_http_rule *r)
{
    json_t *matches = json_array(), *filters = json_array();
    for (size_t i = 0; i < r->n_matches; i++) {
        const rete_http_match *m = &r->matches[i];
        json_t *headers = json_array(), *query = json_array();
        for (size_t h = 0; h < m->n_headers; h++)
            json_array_append_new(headers, json_string_match(&m->headers[h]));
        for (size_t q = 0; q < m->n_query; q++)
            json_array_append_new(query, json_string_match(&m->query[q]));
        json_array_append_new(matches,
                              json_pack("{s:o, s:o, s:o, s:o}", "path", json_string_match(&m->path),
                                        "headers", headers, "queryParams", query, "method",
                                        json_str_or_null(m->method)));
    }
    for (size_t i = 0; i < r->n_filters; i++) {
        const rete_http_filter *f = &r->filters[i];
        json_t *o = json_pack("{s:s}", "type", NAME_OF(filter_names, f->kind));
        if (f->kind == RETE_FILTER_REQUEST_HEADER || f->kind == RETE_FILTER_RESPONSE_HEADER)
            json_object_set_new(o, "headers", json_header_mod(&f->headers));
        if (f->kind == RETE_FILTER_REDIRECT) {
            json_object_set_new(o, "scheme", json_str_or_null(f->scheme));
            json_object_set_new(o, "port", json_integer(f->port));
            json_object_set_new(o, "statusCode", json_integer(f->status_code));
        }
        if (f->kind == RETE_FILTER_REDIRECT || f->kind == RETE_FILTER_URL_REWRITE) {
            json_object_set_new(o, "hostname", json_str_or_null(f->hostname));
            json_object_set_new(o, "path", json_str_or_null(f->path));
            json_object_set_new(o, "pathType",
                                json_string(f->path_kind == RETE_PATH_FULL ? "ReplaceFullPath"
                                            : f->path_kind == RETE_PATH_PREFIX
                                                ? "ReplacePrefixMatch"
                                                : "Keep"));
        }
        if (f->kind == RETE_FILTER_MIRROR && f->mirror_service) {
            json_object_set_new(o, "backendRef",
                                json_pack("{s:s, s:s, s:i}", "namespace", f->mirror_service->ns,
                                          "name", f->mirror_service->name, "port",
                                          (json_int_t)f->mirror_port));
            json_object_set_new(o, "ppm", json_integer(f->mirror_ppm));
        }
        json_array_append_new(filters, o);
    }
    return json_pack("{s:o, s:o, s:o, s:i, s:i, s:{s:i, s:i, s:o, s:b}, s:{s:o, s:o}}", "matches",
                     matches, "filters", filters, "backendRefs",
                     json_backends(r->backends, r->n_backends), "timeoutMs",
                     (json_int_t)r->timeout_ms, "backendTimeoutMs",
                     (json_int_t)r->backend_timeout_ms, "retry", "attempts",
                     (json_int_t)r->retry.attempts, "backoffMs", (json_int_t)r->retry.backoff_ms,
                     "codes", json_u16s(r->retry.codes, r->retry.n_codes), "nonIdempotent",
                     (int)r->retry.non_idempotent, "circuitBreaker", "maxRequests",
                     r->limit_requests ? json_integer(r->max_requests) : json_null(), "maxRetries",
                     r->limit_retries ? json_integer(r->max_retries) : json_null());
}

static json_t *json_policy(const rete_traffic_policy *p)
{
    json_t *j = json_pack(
        "{s:s, s:s, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "lb",
        NAME_OF(lb_names, p->lb), "hashOn", NAME_OF(hash_names, p->hash_on), "hashKey",
        json_str_or_null(p->hash_key), "ringSize", (json_int_t)p->ring_size, "maglevTableSize",
        (json_int_t)p->maglev_table_size, "maxConnections", (json_int_t)p->max_connections,
        "connectTimeoutMs", (json_int_t)p->connect_timeout_ms, "maxPendingRequests",
        (json_int_t)p->max_pending_requests, "maxRequests", (json_int_t)p->max_requests,
        "maxRequestsPerConnection", (json_int_t)p->max_requests_per_connection, "maxRetries",
        (json_int_t)p->max_retries, "pendingTimeoutMs", (json_int_t)p->pending_timeout_ms,
        "consecutive5xx", (json_int_t)p->consecutive_5xx, "intervalMs",
        (json_int_t)p->outlier_interval_ms, "baseEjectionMs", (json_int_t)p->base_ejection_ms,
        "maxEjectionPercent", (json_int_t)p->max_ejection_percent);
    json_t *fo = json_array();
    for (size_t i = 0; i < p->n_failover; i++)
        json_array_append_new(fo, json_pack("{s:s, s:s}", "from", p->failover[i].from, "to",
                                            p->failover[i].to));
    json_object_set_new(j, "consecutiveGatewayErrors", json_integer(p->consecutive_gateway));
    json_object_set_new(j, "minHealthPercent", json_integer(p->min_health_percent));
    json_object_set_new(j, "idleTimeoutMs", json_integer(p->idle_timeout_ms));
    json_object_set_new(j, "responseHeaderTimeoutMs", json_integer(p->response_header_timeout_ms));
    json_object_set_new(j, "streamIdleTimeoutMs", json_integer(p->stream_idle_timeout_ms));
    json_object_set_new(j, "retryConstraint",
                        json_pack("{s:i, s:i, s:i, s:i}", "budgetPercent", (json_int_t)p->budget_percent,
                                  "budgetIntervalMs", (json_int_t)p->budget_interval_ms,
                                  "minRetryCount", (json_int_t)p->min_retry_count,
                                  "minRetryIntervalMs", (json_int_t)p->min_retry_interval_ms));
    json_object_set_new(j, "locality", json_boolean(p->locality));
    json_object_set_new(j, "failover", fo);
    json_object_set_new(j, "warmupMs", json_integer(p->warmup_ms));
    if (p->hc_kind != RETE_HC_NONE) {
        static const char *const kinds[] = {[RETE_HC_HTTP] = "http", [RETE_HC_TCP] = "tcp",
                                            [RETE_HC_GRPC] = "grpc"};
        json_t *hc = json_pack("{s:s, s:i, s:i, s:i, s:i}", "kind", kinds[p->hc_kind],
                               "intervalMs", (json_int_t)p->hc_interval_ms, "timeoutMs",
                               (json_int_t)p->hc_timeout_ms, "unhealthyThreshold",
                               (json_int_t)p->hc_unhealthy_threshold, "healthyThreshold",
                               (json_int_t)p->hc_healthy_threshold);
        if (p->hc_kind == RETE_HC_HTTP) {
            json_object_set_new(hc, "path", json_string(p->hc_path));
            json_object_set_new(hc, "expectedStatuses", json_u16s(p->hc_statuses, p->n_hc_statuses));
        } else if (p->hc_kind == RETE_HC_GRPC) {
            json_object_set_new(hc, "service", json_string(p->hc_grpc_service ? p->hc_grpc_service : ""));
        }
        json_object_set_new(j, "healthCheck", hc);
    }
    return j;
}

static json_t *json_proxy(const rete_proxy_spec *p)
{
    json_t *ups = json_array(), *in = json_array();
    for (size_t i = 0; i < p->n_upstreams; i++)
        json_array_append_new(ups, json_pack("{s:o, s:o, s:i}", "listen",
                                             json_addr(&p->upstreams[i].listen), "service",
                                             json_svc_name(p->upstreams[i].service), "port",
                                             (json_int_t)p->upstreams[i].port));
    for (size_t i = 0; i < p->n_inbound_ports; i++)
        json_array_append_new(in, json_pack("{s:i, s:s}", "port",
                                            (json_int_t)p->inbound_ports[i].port, "protocol",
                                            NAME_OF(proto_names, p->inbound_ports[i].protocol)));
    const rete_limits *l = &p->limits;
    json_t *limits = json_pack(
        "{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "maxRequestLine",
        (json_int_t)l->max_request_line, "maxHeaderBytes", (json_int_t)l->max_header_bytes,
        "maxHeaders", (json_int_t)l->max_headers, "maxBodyBuffer", (json_int_t)l->max_body_buffer,
        "maxConnections", (json_int_t)l->max_connections, "maxStreams", (json_int_t)l->max_streams,
        "detectTimeoutMs", (json_int_t)l->detect_timeout_ms, "idleTimeoutMs",
        (json_int_t)l->idle_timeout_ms, "drainTimeoutMs", (json_int_t)l->drain_timeout_ms);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "name", p->name, "namespace", p->ns,
                          "serviceAccount", p->service_account, "trustDomain", p->trust_domain,
                          "spiffeId", p->spiffe_id, "appAddress", p->app_address);
    json_object_set_new(o, "listeners",
                        json_pack("{s:o, s:o, s:o, s:o, s:o}", "outbound", json_addr(&p->outbound),
                                  "inbound", json_addr(&p->inbound), "mesh", json_addr(&p->mesh),
                                  "admin", json_addr(&p->admin), "stats", json_addr(&p->stats)));
    json_object_set_new(o, "upstreams", ups);
    json_object_set_new(o, "inbound", in);
    json_object_set_new(
        o, "tls",
        json_pack("{s:o, s:o, s:o, s:o, s:o}", "certFile", json_str_or_null(p->cert_file),
                  "keyFile", json_str_or_null(p->key_file), "caFile", json_str_or_null(p->ca_file),
                  "serverCertFile", json_str_or_null(p->server_cert_file), "serverKeyFile",
                  json_str_or_null(p->server_key_file)));
    json_object_set_new(o, "concurrency", json_integer(p->concurrency));
    json_object_set_new(o, "limits", limits);
    return o;
}

char *rete_config_to_json(const rete_config *cfg)
{
    json_t *root = json_object();
    json_object_set_new(root, "version", json_integer((json_int_t)cfg->version));
    json_object_set_new(root, "source", json_string(cfg->source));
    json_object_set_new(root, "proxy", json_proxy(&cfg->proxy));
    json_object_set_new(root, "mtlsMode", json_string(NAME_OF(mtls_names, cfg->mtls_mode)));

    json_t *ws = json_array();
    for (size_t i = 0; i < cfg->n_workloads; i++) {
        const rete_workload *w = &cfg->workloads[i];
        json_array_append_new(
            ws, json_pack("{s:s, s:s, s:s, s:s, s:o, s:i, s:i, s:b, s:b}", "name", w->name, "namespace",
                          w->ns, "address", w->address, "spiffeId", w->spiffe_id, "labels",
                          json_labels(w->labels, w->n_labels), "meshPort", (json_int_t)w->mesh_port,
                          "weight", (json_int_t)w->weight, "inMesh", w->in_mesh, "ready", w->ready));
    }
    json_object_set_new(root, "workloads", ws);

    json_t *ss = json_array();
    for (size_t i = 0; i < cfg->n_services; i++) {
        const rete_service *s = &cfg->services[i];
        json_t *ports = json_array(), *eps = json_array();
        for (size_t p = 0; p < s->n_ports; p++)
            json_array_append_new(ports, json_pack("{s:o, s:i, s:i, s:s}", "name",
                                                   json_str_or_null(s->ports[p].name), "port",
                                                   (json_int_t)s->ports[p].port, "targetPort",
                                                   (json_int_t)s->ports[p].target_port, "protocol",
                                                   NAME_OF(proto_names, s->ports[p].protocol)));
        for (size_t e = 0; e < s->n_endpoints; e++)
            json_array_append_new(
                eps, json_pack("s++", s->endpoints[e]->ns, "/", s->endpoints[e]->name));
        json_array_append_new(ss, json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "name", s->name,
                                            "namespace", s->ns, "fqdn", s->fqdn, "ports", ports,
                                            "selector", json_labels(s->selector, s->n_selector),
                                            "endpoints", eps, "policy", json_policy(&s->policy)));
    }
    json_object_set_new(root, "services", ss);

    json_t *hr = json_array();
    for (size_t i = 0; i < cfg->n_http_routes; i++) {
        const rete_http_route *r = &cfg->http_routes[i];
        json_t *rules = json_array();
        for (size_t k = 0; k < r->n_rules; k++)
            json_array_append_new(rules, json_rule(&r->rules[k]));
        json_array_append_new(hr, json_pack("{s:s, s:s, s:s, s:o, s:o, s:i, s:o}", "kind",
                                            r->grpc ? "GRPCRoute" : "HTTPRoute", "name", r->name,
                                            "namespace", r->ns, "parentRefs",
                                            json_parents(r->parents, r->parent_ports, r->n_parents),
                                            "hostnames", json_strs(r->hostnames, r->n_hostnames),
                                            "order", (json_int_t)r->order, "rules", rules));
    }
    json_object_set_new(root, "httpRoutes", hr);

    json_t *tr = json_array();
    for (size_t i = 0; i < cfg->n_tcp_routes; i++) {
        const rete_tcp_route *r = &cfg->tcp_routes[i];
        json_array_append_new(tr,
                              json_pack("{s:s, s:s, s:o, s:o}", "name", r->name, "namespace", r->ns,
                                        "parentRefs", json_parents(&r->parent, &r->parent_port, 1),
                                        "backendRefs", json_backends(r->backends, r->n_backends)));
    }
    json_object_set_new(root, "tcpRoutes", tr);

    json_t *az = json_array();
    for (size_t i = 0; i < cfg->n_authz; i++) {
        const rete_authz_policy *p = &cfg->authz[i];
        json_t *rules = json_array();
        for (size_t k = 0; k < p->n_rules; k++) {
            const rete_authz_rule *r = &p->rules[k];
            json_array_append_new(
                rules, json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "principals",
                                 json_strs(r->principals, r->n_principals), "notPrincipals",
                                 json_strs(r->not_principals, r->n_not_principals), "namespaces",
                                 json_strs(r->namespaces, r->n_namespaces), "notNamespaces",
                                 json_strs(r->not_namespaces, r->n_not_namespaces), "methods",
                                 json_strs(r->methods, r->n_methods), "notMethods",
                                 json_strs(r->not_methods, r->n_not_methods), "paths",
                                 json_strs(r->paths, r->n_paths), "notPaths",
                                 json_strs(r->not_paths, r->n_not_paths), "ports",
                                 json_u16s(r->ports, r->n_ports), "notPorts",
                                 json_u16s(r->not_ports, r->n_not_ports)));
        }
        json_array_append_new(az, json_pack("{s:s, s:s, s:s, s:o}", "name", p->name, "namespace",
                                            p->ns, "action", NAME_OF(action_names, p->action),
                                            "rules", rules));
    }
    json_object_set_new(root, "authorizationPolicies", az);

    json_t *tables = json_array();
    for (size_t i = 0; i < cfg->n_tables; i++)
        json_array_append_new(tables, json_pack("{s:o, s:i, s:i, s:i}", "service",
                                                json_svc_name(cfg->tables[i].service), "port",
                                                (json_int_t)cfg->tables[i].port, "entries",
                                                (json_int_t)cfg->tables[i].n_entries, "tcpBackends",
                                                (json_int_t)cfg->tables[i].n_tcp_backends));
    json_object_set_new(root, "routeTables", tables);

    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

