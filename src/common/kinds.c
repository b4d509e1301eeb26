#include "kinds.h"

#include <string.h>
#include <strings.h>

#include "config_schema.h"

/* Short names: a word reted or retectl accepted before this table is never
 * dropped (both resolve through rete_kind_lookup now). */
const rete_kind rete_kinds[RETE_KIND_COUNT] = {
    [RETE_KIND_PROXY] = {RETE_KIND_PROXY,
                         "Proxy",
                         "proxies",
                         {NULL},
                         {"rete.dev/v1alpha1"},
                         &cfg_spec_proxy,
                         RETE_KC_NONE,
                         "This proxy's identity and listeners. Exactly one per configuration; "
                         "metadata.name and metadata.namespace name the proxy's own workload."},
    [RETE_KIND_SERVICE] = {RETE_KIND_SERVICE,
                           "Service",
                           "services",
                           {"svc", NULL},
                           {"v1"},
                           &cfg_spec_service,
                           RETE_KC_SERVICE,
                           "A Kubernetes Service subset: ports with an application protocol and a "
                           "label selector over Workloads in the same namespace."},
    [RETE_KIND_WORKLOAD] = {RETE_KIND_WORKLOAD,
                            "Workload",
                            "workloads",
                            {"wl", "workloadentry", NULL},
                            {"networking.rete.dev/v1alpha1"},
                            &cfg_spec_workload,
                            RETE_KC_WORKLOAD,
                            "One instance of a service (Istio WorkloadEntry shape)."},
    [RETE_KIND_HTTP_ROUTE] = {RETE_KIND_HTTP_ROUTE,
                              "HTTPRoute",
                              "httproutes",
                              {NULL},
                              {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"},
                              &cfg_spec_http_route,
                              RETE_KC_ROUTE,
                              "Gateway API HTTPRoute attached to Services (GAMMA)."},
    [RETE_KIND_GRPC_ROUTE] = {RETE_KIND_GRPC_ROUTE,
                              "GRPCRoute",
                              "grpcroutes",
                              {NULL},
                              {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"},
                              &cfg_spec_grpc_route,
                              RETE_KC_ROUTE,
                              "Gateway API GRPCRoute, compiled into the HTTP route shape."},
    [RETE_KIND_TCP_ROUTE] = {RETE_KIND_TCP_ROUTE,
                             "TCPRoute",
                             "tcproutes",
                             {NULL},
                             {"gateway.networking.k8s.io/v1alpha2"},
                             &cfg_spec_tcp_route,
                             RETE_KC_ROUTE,
                             "Gateway API TCPRoute: weighted opaque TCP backends."},
    [RETE_KIND_DESTINATION_RULE] = {RETE_KIND_DESTINATION_RULE,
                                    "DestinationRule",
                                    "destinationrules",
                                    {"dr", NULL},
                                    {"networking.istio.io/v1", "networking.istio.io/v1beta1",
                                     "networking.istio.io/v1alpha3"},
                                    &cfg_spec_dr,
                                    RETE_KC_DR,
                                    "Istio DestinationRule: the traffic policy of one Service (at "
                                    "most one per Service)."},
    [RETE_KIND_PEER_AUTHN] = {RETE_KIND_PEER_AUTHN,
                              "PeerAuthentication",
                              "peerauthentications",
                              {"pa", NULL},
                              {"security.istio.io/v1", "security.istio.io/v1beta1"},
                              &cfg_spec_peer_authn,
                              RETE_KC_POLICY,
                              "Istio PeerAuthentication: inbound mTLS mode."},
    [RETE_KIND_AUTHZ] = {RETE_KIND_AUTHZ,
                         "AuthorizationPolicy",
                         "authorizationpolicies",
                         {"authz", "ap", NULL},
                         {"security.istio.io/v1", "security.istio.io/v1beta1"},
                         &cfg_spec_authz,
                         RETE_KC_POLICY,
                         "Istio AuthorizationPolicy (ALLOW, DENY, AUDIT)."},
    [RETE_KIND_RATE_LIMIT] = {RETE_KIND_RATE_LIMIT,
                              "HTTPLocalRateLimitPolicy",
                              "httplocalratelimitpolicies",
                              {"rl", NULL},
                              {"policy.linkerd.io/v1alpha1"},
                              &cfg_spec_rate_limit,
                              RETE_KC_POLICY,
                              "Linkerd's HTTPLocalRateLimitPolicy: token buckets on the inbound "
                              "requests of the workloads it selects, in total and per caller "
                              "identity (docs/traffic.md)."},
    [RETE_KIND_MESH] = {RETE_KIND_MESH,
                        "MeshConfig",
                        "meshconfigs",
                        {"mc", NULL},
                        {"rete.dev/v1alpha1"},
                        &cfg_spec_mesh,
                        RETE_KC_MESH,
                        "Mesh-wide defaults. At most one."},
    [RETE_KIND_WORKLOAD_GROUP] = {RETE_KIND_WORKLOAD_GROUP,
                                  "WorkloadGroup",
                                  "workloadgroups",
                                  {"wg", NULL},
                                  {"networking.rete.dev/v1alpha1"},
                                  &cfg_spec_workload_group,
                                  RETE_KC_GROUP,
                                  "What the proxies of one service account may register on the "
                                  "config stream (Istio WorkloadGroup shape): the labels and "
                                  "egress they may claim. Read by reted only; proxies ignore it."},
};

const rete_kind *rete_kind_by_name(const char *kind)
{
    for (size_t i = 0; kind && i < RETE_KIND_COUNT; i++)
        if (strcmp(kind, rete_kinds[i].kind) == 0)
            return &rete_kinds[i];
    return NULL;
}

const rete_kind *rete_kind_lookup(const char *word)
{
    for (size_t i = 0; word && i < RETE_KIND_COUNT; i++) {
        const rete_kind *k = &rete_kinds[i];
        if (k->index_class == RETE_KC_NONE)
            continue;
        if (strcasecmp(word, k->kind) == 0 || strcasecmp(word, k->plural) == 0)
            return k;
        for (size_t a = 0; a < RETE_KIND_MAX_SHORT && k->short_names[a]; a++)
            if (strcasecmp(word, k->short_names[a]) == 0)
                return k;
    }
    return NULL;
}

int rete_resource_key_cmp(const char *kind_a, const char *ns_a, const char *name_a, const char *kind_b,
                          const char *ns_b, const char *name_b)
{
    int c = strcmp(kind_a, kind_b);
    if (c == 0)
        c = strcmp(ns_a, ns_b);
    if (c == 0)
        c = strcmp(name_a, name_b);
    return c;
}
