/* Names and numbers every binary agrees on: the root namespace, reted's own
 * identity and the well-known ports (Istio's numbers, so operators recognise
 * them; DESIGN.md "Data plane"). Each is a default: the listeners' ports come
 * from the Proxy document, reted's from --api/--xds. RETE_STR turns a number
 * into the string literal usage texts and docs print. */
#ifndef RETE_COMMON_DEFAULTS_H
#define RETE_COMMON_DEFAULTS_H

/* Policies here apply to every namespace; reted's identity lives here. */
#define RETE_ROOT_NS "rete-system"
/* reted's service account (in RETE_ROOT_NS): proxies expect this identity
 * on the certificate of the proxy API. */
#define RETE_CONTROL_SA "reted"
/* The trust domain of a mesh whose MeshConfig names none. */
#define RETE_DEFAULT_TRUST_DOMAIN "cluster.local"
/* The DNS domain of Service names: name.ns.svc.cluster.local. */
#define RETE_CLUSTER_DOMAIN "cluster.local"

/* rete-proxy listeners */
#define RETE_PORT_ADMIN 15000    /* 127.0.0.1 only */
#define RETE_PORT_OUTBOUND 15001 /* the app's outgoing traffic */
#define RETE_PORT_INBOUND 15006  /* transparent inbound, plaintext */
#define RETE_PORT_MESH 15008     /* mTLS from other proxies */
#define RETE_PORT_STATS 15020    /* /metrics, /ready, /live (may face the network) */
/* reted */
#define RETE_PORT_PROXY_API 15012    /* mTLS: proxies and the CA (--xds) */
#define RETE_PORT_OPERATOR_API 15014 /* plain HTTP on loopback: retectl, metrics (--api) */

#define RETE_STR_(x) #x
#define RETE_STR(x) RETE_STR_(x)

#endif
