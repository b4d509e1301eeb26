/* The admin listener (15000, loopback by default): /ready, /live, /metrics
 * (Prometheus text), /config (the effective snapshot as JSON), /stats,
 * /clusters (each Service's endpoints with their outlier state). Every
 * answer is a local response on the exchange, so admin requests use the
 * same bounded HTTP/1.1 codec as everything else. */
#include "alloc.h"
#include "config.h"
#include "dispatch.h"
#include "exchange.h"
#include "h1_out.h"
#include "lb.h"
#include "log.h"
#include "proxy.h"
#include "worker.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* /clusters: every Service of the snapshot, its endpoints, and what outlier
 * detection and active health checks (proxy-wide: every worker sees the
 * same), locality and slow start say of each. Read through this worker's
 * balancers. */
static char *clusters_json(rete_gen *g)
{
    uint64_t now = uv_hrtime();
    json_t *list = json_array();
    for (size_t i = 0; i < g->cfg->n_services; i++) {
        const rete_service *svc = &g->cfg->services[i];
        struct rete_lb *lb = rete_gen_lb(g, svc);
        json_t *eps = json_array();
        size_t n_ejected = 0;
        for (size_t k = 0; lb && k < svc->n_endpoints; k++) {
            rete_lb_endpoint_stats es;
            if (!rete_lb_get_endpoint_stats(lb, (int)k, now, &es))
                continue;
            n_ejected += es.ejected;
            const rete_workload *w = svc->endpoints[k];
            json_array_append_new(
                eps, json_pack("{s:s, s:s, s:i, s:b, s:i, s:b, s:I, s:i, s:i, s:i, s:I, s:I}", "name",
                               w->name ? w->name : "", "address", w->address ? w->address : "",
                               "weight", (json_int_t)w->weight, "ready", w->ready, "localityLevel",
                               (json_int_t)es.level, "ejected", es.ejected, "ejectedForMs",
                               (json_int_t)es.ejected_ms, "timesEjected",
                               (json_int_t)es.times_ejected, "consecutive5xx",
                               (json_int_t)es.consecutive_5xx, "consecutiveGatewayErrors",
                               (json_int_t)es.consecutive_gateway, "failures",
                               (json_int_t)es.failures, "ejections", (json_int_t)es.ejections));
            json_t *ep = json_array_get(eps, json_array_size(eps) - 1);
            if (svc->policy.hc_kind != RETE_HC_NONE && ep) {
                /* healthCheck: failing now, and the checks in a row (> 0 passed, < 0 failed) */
                json_object_set_new(ep, "healthCheckFailing", json_boolean(es.hc_down));
                json_object_set_new(ep, "healthCheckStreak", json_integer(es.hc_streak));
            }
            if (svc->policy.warmup_ms && ep) /* slow start: the share of its weight it has now */
                json_object_set_new(ep, "weightPercent", json_integer(es.weight_percent));
        }
        json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:b, s:o}", "name",
                                              svc->fqdn ? svc->fqdn : "", "lb",
                                              rete_lb_kind_name(svc->policy.lb), "ejectedNow",
                                              (json_int_t)n_ejected, "locality",
                                              svc->policy.locality, "endpoints", eps));
    }
    json_t *root = json_pack("{s:o}", "clusters", list);
    char *s = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
    json_decref(root);
    return s ? s : rete_strdup("{\"error\": \"out of memory\"}\n");
}

void rete_admin_handle(rete_exchange *ex)
{
    rete_proxy *p = rete_the_proxy;
    rete_view path = ex->req.path;
    ptrdiff_t q = rete_view_find(path, '?');
    if (q >= 0)
        path.len = (size_t)q;
    if (rete_view_eq(path, RETE_VIEW_LIT("/ready"))) {
        bool ready = atomic_load(&p->ready) && !atomic_load(&p->draining) && atomic_load(&p->app_ready);
        const char *body = ready ? "ready\n" : "not ready\n";
        rete_ex_local_response(ex, ready ? 200 : 503, "text/plain", body, strlen(body));
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/live"))) {
        rete_ex_local_response(ex, 200, "text/plain", "live\n", 5);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/metrics")) || rete_view_eq(path, RETE_VIEW_LIT("/stats/prometheus"))) {
        size_t len;
        char *text = rete_metrics_render(p->metrics, &len);
        rete_ex_local_response(ex, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/config"))) {
        char *json = rete_config_to_json(ex->gen->cfg);
        rete_ex_local_response(ex, 200, "application/json", json, strlen(json));
        free(json);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/clusters"))) {
        char *json = clusters_json(ex->gen);
        rete_ex_local_response(ex, 200, "application/json", json, strlen(json));
        free(json);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/stats"))) {
        char body[1024];
        int n = snprintf(body, sizeof(body),
                         "{\"requests\":%llu,\"parse_errors\":%llu,\"mesh_refused\":%llu,"
                         "\"config_version\":%llu,\"reloads_ok\":%llu,\"reloads_failed\":%llu,"
                         "\"last_reload_error\":\"%s\",\"workers\":%u}\n",
                         (unsigned long long)rete_metrics_counter_value(p->metrics, p->ms.requests),
                         (unsigned long long)rete_metrics_counter_value(p->metrics, p->ms.parse_errors),
                         (unsigned long long)rete_metrics_counter_value(p->metrics, p->ms.mesh_refused),
                         (unsigned long long)ex->gen->cfg->version,
                         (unsigned long long)rete_metrics_counter_value(p->metrics, p->ms.reloads_ok),
                         (unsigned long long)rete_metrics_counter_value(p->metrics,
                                                                        p->ms.reloads_rejected),
                         p->last_reload_error[0] ? "see log" : "", p->concurrency);
        rete_ex_local_response(ex, 200, "application/json", body, (size_t)n);
        return;
    }
    if (rete_view_eq(path, RETE_VIEW_LIT("/logging"))) {
        /* Reading is GET; a change is POST only (as Envoy's admin), so no
         * link, image or redirect a browser or a probe follows can change
         * the level (error would silence the authorization log). */
        rete_view qs = q >= 0 ? rete_view_sub(ex->req.path, (size_t)q + 1, ex->req.path.len) : RETE_VIEW_NULL;
        bool post = rete_view_eq(ex->req.method, RETE_VIEW_LIT("POST"));
        if (!post && !rete_view_eq(ex->req.method, RETE_VIEW_LIT("GET")) &&
            !rete_view_eq(ex->req.method, RETE_VIEW_LIT("HEAD"))) {
            rete_ex_local_response(ex, 405, "text/plain", "GET or POST\n", 12);
            return;
        }
        if (!post && qs.len) {
            const char *m = "changing the log level takes POST /logging?level=LEVEL\n";
            rete_ex_local_response(ex, 405, "text/plain", m, strlen(m));
            return;
        }
        if (rete_view_has_prefix(qs, RETE_VIEW_LIT("level="))) {
            char lvl[16] = "";
            size_t n = qs.len - 6 < sizeof(lvl) - 1 ? qs.len - 6 : sizeof(lvl) - 1;
            memcpy(lvl, qs.p + 6, n);
            int l = rete_log_level_parse(lvl);
            if (l < 0) {
                rete_ex_local_response(ex, 400, "text/plain", "unknown level\n", 14);
                return;
            }
            rete_log_level = l;
        }
        char body[64];
        int n = snprintf(body, sizeof(body), "level=%s\n", rete_log_level_name(rete_log_level));
        rete_ex_local_response(ex, 200, "text/plain", body, (size_t)n);
        return;
    }
    const char *help = "rete-proxy admin: /ready /live /metrics /config /stats /clusters; POST /logging?level=\n";
    rete_ex_local_response(ex, 404, "text/plain", help, strlen(help));
}
