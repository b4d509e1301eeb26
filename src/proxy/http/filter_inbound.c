/* Inbound (mesh listener 15008 and plaintext 15006): which app port a
 * request or tunnel is for (the x-rete-target-port header a peer proxy
 * sends, a CONNECT's ip:port, the original destination, or the only
 * declared port), and, after authorization, the app itself: only ports this
 * workload declared (never a relay), the caller's identity in
 * x-forwarded-client-cert, then HTTP/1.1, h2c or TCP to the app. */
#include "filter.h"
#include "config.h"
#include "log.h"
#include "telemetry.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>

static bool parse_port(rete_view v, uint16_t *port)
{
    uint64_t n;
    if (!rete_view_to_u64(v, &n) || n == 0 || n > 65535)
        return false;
    *port = (uint16_t)n;
    return true;
}

static rete_filter_verdict inbound_port(rete_exchange *ex)
{
    const rete_proxy_spec *p = &ex->gen->cfg->proxy;
    uint16_t port = 0;
    if (rete_tunnel_is_raw(ex) && ex->req.authority.len) {
        ptrdiff_t colon = -1;
        for (size_t i = 0; i < ex->req.authority.len; i++)
            if (ex->req.authority.p[i] == ':')
                colon = (ptrdiff_t)i;
        if (colon < 0 || !parse_port(rete_view_sub(ex->req.authority, (size_t)colon + 1,
                                                   ex->req.authority.len), &port)) {
            rete_filter_local_text(ex, 400, "CONNECT authority must be ip:port");
            return RETE_FILTER_DONE;
        }
    } else {
        rete_view h = rete_msg_get(&ex->req, RETE_VIEW_LIT(RETE_TARGET_PORT_HEADER));
        if (h.p && !parse_port(h, &port)) {
            rete_filter_local_text(ex, 400, "bad " RETE_TARGET_PORT_HEADER);
            return RETE_FILTER_DONE;
        }
        rete_msg_remove(&ex->req, RETE_VIEW_LIT(RETE_TARGET_PORT_HEADER));
    }
    rete_telemetry_peer_read(ex);
    if (!port)
        port = ex->target_port;
    if (!port && p->n_inbound_ports == 1)
        port = p->inbound_ports[0].port;
    ex->target_port = port;
    return RETE_FILTER_NEXT;
}

static void app(rete_exchange *ex)
{
    const rete_proxy_spec *p = &ex->gen->cfg->proxy;
    uint16_t port = ex->target_port;
    const rete_inbound_port *ip = NULL;
    for (size_t i = 0; i < p->n_inbound_ports; i++)
        if (p->inbound_ports[i].port == port)
            ip = &p->inbound_ports[i];
    if (!ip) {
        /* Never a relay: only ports this workload declared. */
        ex->error = RETE_EXE_NO_ROUTE;
        rete_filter_local_text(ex, 404, "workload %s/%s serves no port %u", p->ns, p->name, port);
        return;
    }
    if (rete_tunnel_is_raw(ex) && !ex->peer_id[0] && ip->protocol != RETE_PROTO_TCP) {
        /* From outside the mesh, an HTTP port gets HTTP: raw bytes would
         * reach the app with whatever headers they carry. (From a peer
         * proxy, a tunnel to an HTTP port is an upgrade it has vetted.) */
        ex->error = RETE_EXE_BAD_REQUEST;
        rete_filter_local_text(ex, 400, "port %u speaks HTTP: send HTTP requests, not a tunnel", port);
        return;
    }
    /* Only this proxy vouches for a caller: whatever the client claimed is
     * dropped (Envoy's SANITIZE_SET), on plaintext and on tunnels alike. */
    rete_msg_remove(&ex->req, RETE_VIEW_LIT("x-forwarded-client-cert"));
    /* What proxies tell each other stays between them: any x-rete-* field
     * still here (one this version does not read, from a newer peer or a
     * peer that is not a sidecar but holds a mesh certificate) is dropped
     * before the app (test_attack_spoofing.py). */
    for (uint32_t i = 0; i < ex->req.n_headers;) {
        if (rete_is_internal_header(ex->req.headers[i].name))
            rete_msg_remove(&ex->req, ex->req.headers[i].name);
        else
            i++;
    }
    if (ex->peer_id[0] && !ex->tunnel) {
        /* Tell the app who called, as Envoy's XFCC does. */
        char xfcc[400];
        snprintf(xfcc, sizeof(xfcc), "By=%s;URI=%s", p->spiffe_id, ex->peer_id);
        rete_msg_set(ex, &ex->req, RETE_VIEW_LIT("x-forwarded-client-cert"),
                     rete_ex_dup(ex, rete_view_cstr(xfcc)));
    }
    if (ex->tunnel) {
        rete_telemetry_tunnel_open(ex);
        rete_filter_upstream(ex, RETE_CODEC_TCP, p->app_address, port, false, NULL,
                             RETE_APP_CONNECT_TIMEOUT_MS);
    } else if (ip->protocol == RETE_PROTO_HTTP2 || ip->protocol == RETE_PROTO_GRPC)
        rete_filter_upstream(ex, RETE_CODEC_H2, p->app_address, port, false, NULL,
                             RETE_APP_CONNECT_TIMEOUT_MS);
    else if (ip->protocol == RETE_PROTO_TCP)
        rete_filter_local_text(ex, 400, "port %u is a TCP port", port);
    else
        rete_filter_upstream(ex, RETE_CODEC_H1_CLIENT, p->app_address, port, false, NULL,
                             RETE_APP_CONNECT_TIMEOUT_MS);
}

static rete_filter_verdict app_request(rete_exchange *ex)
{
    app(ex);
    return RETE_FILTER_DONE;
}

const rete_filter rete_filter_inbound_port = {
    .name = "inbound-port",
    .on_request = inbound_port,
};

const rete_filter rete_filter_app = {
    .name = "app",
    .on_request = app_request,
};
