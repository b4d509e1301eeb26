/* The operator API (api.c, --api, plain HTTP on loopback by default):
 * apply, resources, tokens, proxies, check, identity, CA rotation, and the
 * open /healthz, /version, /metrics. docs/control-plane.md. */
#ifndef RETE_CONTROL_API_H
#define RETE_CONTROL_API_H

#include "http.h"

void reted_api_handle(rete_http_req *req, void *arg);
/* Admission from the head (http.h): the admin token and each route's body bound. */
void reted_api_admit(const rete_http_req *head, void *arg, rete_http_admit *out);

#endif
