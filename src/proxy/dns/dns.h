/* The sidecar's DNS (Proxy spec.dns; docs/proxy.md, "DNS"): on the main
 * loop, UDP and TCP on a loopback address, it answers A/AAAA for mesh names
 * (relative to the proxy's namespace) from the current snapshot and
 * forwards every other query to upstream resolvers (spec.dns.upstreams or
 * the nameservers of resolvConf, read once at start), relaying their
 * answers, by the transport the query came by (a TCP query over one TCP
 * connection of its own, RFC 7766). Bounds: maxInFlight forwarded queries (then REFUSED), timeout
 * per query (then SERVFAIL), maxTCPConnections, one query at a time per TCP
 * client, queries over TCP at most RETE_DNS_TCP_MAX bytes.
 * Counted in rete_proxy_dns_queries_total{result}. Memory: one slot of about
 * 600 bytes per maxInFlight, 128 KiB of ID map, 4 KiB per TCP client,
 * 4 KiB per query forwarded over TCP plus its answer (<= 64 KiB). */
#ifndef RETE_PROXY_DNS_H
#define RETE_PROXY_DNS_H

#include "error.h"
#include "proxy.h"

enum { RETE_DNS_TCP_MAX = 4096 };

typedef struct rete_dns rete_dns;

/* Bind the listeners of p->cfg's spec.dns (which must be enabled) on
 * p->loop and start serving. NULL with err on failure (a bind that fails,
 * no usable upstream is only a warning: such queries get SERVFAIL). */
rete_dns *rete_dns_start(rete_proxy *p, rete_error *err);
/* Close every handle; the memory goes once the loop has run their close
 * callbacks. NULL is fine. */
void rete_dns_stop(rete_dns *d);

/* The nameservers of a resolv.conf (`nameserver ADDR` lines, at most `max`,
 * IPv6 zone suffixes dropped) into out[i] (INET6_ADDRSTRLEN each). Returns
 * how many, or -1 when the file cannot be read. */
int rete_dns_read_resolv_conf(const char *path, char (*out)[46], int max);

#endif
