/* Serving the embedded dashboard (dashboard.h). The assets are constant
 * arrays in the binary: nothing is read from disk, nothing allocated. */
#include "dashboard.h"

#include <string.h>

/* The page may load its own scripts and styles and talk to its own origin,
 * nothing else: no CDN, no inline script, no framing. uPlot and cytoscape
 * set style attributes from script (allowed: CSP's style-src governs
 * markup, not the CSSOM), the login form posts nowhere. */
#define DASHBOARD_HEADERS                                                                                     \
    "cache-control: no-cache\r\n"                                                                             \
    "x-content-type-options: nosniff\r\n"                                                                     \
    "referrer-policy: no-referrer\r\n"                                                                        \
    "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'\r\n"

static const rete_view prefix = RETE_VIEW_LIT("/dashboard/");

bool reted_dashboard_path(rete_view path)
{
    return rete_view_eq(path, RETE_VIEW_LIT("/dashboard")) || rete_view_has_prefix(path, prefix);
}

static const reted_asset *find(rete_view name)
{
    if (name.len == 0)
        name = RETE_VIEW_LIT("index.html");
    for (size_t i = 0; i < reted_dashboard_n_assets; i++)
        if (rete_view_eq(name, rete_view_make(reted_dashboard_assets[i].name,
                                              strlen(reted_dashboard_assets[i].name))))
            return &reted_dashboard_assets[i];
    return NULL;
}

void reted_dashboard_serve(rete_http_req *req)
{
    static const char not_found[] = "{\"error\":\"no such dashboard asset\"}";
    if (!rete_view_eq(req->method, RETE_VIEW_LIT("GET"))) {
        static const char body[] = "{\"error\":\"GET only\"}";
        rete_http_respond(req, 405, "application/json", body, sizeof(body) - 1, "allow: GET\r\n");
        return;
    }
    if (!rete_view_has_prefix(req->path, prefix)) {
        rete_http_respond(req, 308, "text/plain", "", 0, "location: /dashboard/\r\n");
        return;
    }
    const reted_asset *a = find(rete_view_make(req->path.p + prefix.len, req->path.len - prefix.len));
    if (!a) {
        rete_http_respond(req, 404, "application/json", not_found, sizeof(not_found) - 1, NULL);
        return;
    }
    rete_http_respond(req, 200, a->content_type, (const char *)a->data, a->len, DASHBOARD_HEADERS);
}
