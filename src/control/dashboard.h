/* The dashboard (docs/observability.md, "Dashboard"): a single-page app
 * built from dashboard/ (npm packages bundled by esbuild into
 * dashboard/dist/, committed) and embedded in reted at build time
 * (dashboard/embed.py writes dashboard_assets.c from dist/, a meson
 * custom_target; docs/architecture.md says why).
 *
 * Served on the operator listener under /dashboard/ WITHOUT the admin
 * token: the page and its assets hold no data. Every data request the page
 * makes (/api/v1/stats, /api/v1/proxies) carries the token like any other
 * client, so a browser without it gets 401 and the page's login form. */
#ifndef RETE_CONTROL_DASHBOARD_H
#define RETE_CONTROL_DASHBOARD_H

#include "http.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct reted_asset {
    const char *name;            /* "index.html", "dashboard.js"... (no slash) */
    const char *content_type;
    const unsigned char *data;
    size_t len;
} reted_asset;

/* Written by dashboard/embed.py (the build's dashboard_assets.c). */
extern const reted_asset reted_dashboard_assets[];
extern const size_t reted_dashboard_n_assets;

/* True for /dashboard and every path under /dashboard/: open paths, the
 * admission lets them in without the token. */
bool reted_dashboard_path(rete_view path);

/* Answer a request whose path reted_dashboard_path accepted: GET only;
 * /dashboard redirects to /dashboard/, /dashboard/ is index.html, an
 * unknown asset 404. */
void reted_dashboard_serve(rete_http_req *req);

#endif
