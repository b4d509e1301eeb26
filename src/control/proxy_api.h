/* The proxy API (proxy_api.c, --xds, TLS): certificate issuance, the
 * config streams, and registration into the registry. Protocol:
 * docs/control-plane.md. */
#ifndef RETE_CONTROL_PROXY_API_H
#define RETE_CONTROL_PROXY_API_H

#include "http.h"

struct reted;

void reted_xds_handle(rete_http_req *req, void *arg);
/* Admission from the head: known routes only, a client certificate for the
 * stream, small bodies. */
void reted_xds_admit(const rete_http_req *head, void *arg, rete_http_admit *out);
/* Every 15 s: pings, streams whose certificate expired or that went silent,
 * registry expiry, join token pruning. */
void reted_tick(struct reted *r);

#endif
