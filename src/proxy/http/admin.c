/* The admin listener (15000, loopback only) and the stats listener (15020,
 * may face the network), as Istio splits Envoy's admin from the agent's
 * merged port. Admin: /ready, /live, /metrics (Prometheus text), /config
 * (the effective snapshot as JSON), /stats, /clusters (each Service's
 * endpoints with their outlier state), /logging (a change by POST only).
 * Stats: /metrics, /ready, /live and nothing else, so what reads the
 * configuration or changes state is never reachable from another host.
 * Every answer is a local response on the exchange, so admin requests use
 * the same bounded HTTP/1.1 codec as everything else. */
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

static bool method_is(const rete_exchange *ex, const char *m)
{
    return rete_view_eq(ex->req.method, rete_view_cstr(m));
}

/* 405 with the Allow header RFC 9110 §15.5.6 requires. */
static void not_allowed(rete_exchange *ex, const char *allow, const char *msg)
{
    static const rete_view allow_name = RETE_VIEW_LIT("allow");
    rete_view h[2] = {allow_name, rete_view_cstr(allow)};
    rete_ex_local_response_with(ex, 405, -1, false, h, 2, "text/plain", msg, strlen(msg));
}

static void ep_ready(rete_exchange *ex, rete_view qs)
{
    (void)qs;
    rete_proxy *p = rete_the_proxy;
    bool ready = atomic_load(&p->ready) && !atomic_load(&p->draining) && atomic_load(&p->app_ready);
    const char *body = ready ? "ready\n" : "not ready\n";
    rete_ex_local_response(ex, ready ? 200 : 503, "text/plain", body, strlen(body));
}

static void ep_live(rete_exchange *ex, rete_view qs)
{
    (void)qs;
    rete_ex_local_response(ex, 200, "text/plain", "live\n", 5);
}

static void ep_metrics(rete_exchange *ex, rete_view qs)
{
    (void)qs;
    size_t len;
    char *text = rete_metrics_render(rete_the_proxy->metrics, &len);
    rete_ex_local_response(ex, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void ep_config(rete_exchange *ex, rete_view qs)
{
    (void)qs;
    char *json = rete_config_to_json(ex->gen->cfg);
    rete_ex_local_response(ex, 200, "application/json", json, strlen(json));
    free(json);
}

static void ep_clusters(rete_exchange *ex, rete_view qs)
{
    (void)qs;
    char *json = clusters_json(ex->gen);
    rete_ex_local_response(ex, 200, "application/json", json, strlen(json));
    free(json);
}

static void ep_stats(rete_exchange *ex, rete_view qs)
{
    (void)qs;
    rete_proxy *p = rete_the_proxy;
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
                     (unsigned long long)rete_metrics_counter_value(p->metrics, p->ms.reloads_rejected),
                     p->last_reload_error[0] ? "see log" : "", p->concurrency);
    rete_ex_local_response(ex, 200, "application/json", body, (size_t)n);
}

/* GET reads the level; POST ?level= changes it (as Envoy's admin), so no
 * link, image or redirect a browser or a probe follows can change it
 * (error would silence the authorization log). */
static void ep_logging(rete_exchange *ex, rete_view qs)
{
    bool post = method_is(ex, "POST");
    if (!post && qs.len) {
        not_allowed(ex, "POST", "changing the log level takes POST /logging?level=LEVEL\n");
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
    } else if (post) {
        rete_ex_local_response(ex, 400, "text/plain", "POST /logging?level=LEVEL\n", 26);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof(body), "level=%s\n", rete_log_level_name(rete_log_level));
    rete_ex_local_response(ex, 200, "text/plain", body, (size_t)n);
}

/* The endpoints. `stats`: also served on the stats listener (read-only,
 * nothing secret: counters and health). `post`: changes state, so POST
 * changes and GET/HEAD only read; the others take GET and HEAD only. */
static const struct admin_endpoint {
    const char *path;
    void (*handle)(rete_exchange *ex, rete_view qs);
    bool stats;
    bool post;
} endpoints[] = {
    {"/ready", ep_ready, true, false},
    {"/live", ep_live, true, false},
    {"/metrics", ep_metrics, true, false},
    {"/stats/prometheus", ep_metrics, false, false},
    {"/config", ep_config, false, false},
    {"/clusters", ep_clusters, false, false},
    {"/stats", ep_stats, false, false},
    {"/logging", ep_logging, false, true},
};

void rete_admin_handle(rete_exchange *ex)
{
    rete_view path = ex->req.path;
    ptrdiff_t q = rete_view_find(path, '?');
    if (q >= 0)
        path.len = (size_t)q;
    rete_view qs = q >= 0 ? rete_view_sub(ex->req.path, (size_t)q + 1, ex->req.path.len) : RETE_VIEW_NULL;
    const struct admin_endpoint *e = NULL;
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]) && !e; i++)
        if (rete_view_eq(path, rete_view_cstr(endpoints[i].path)) && (endpoints[i].stats || !ex->stats_only))
            e = &endpoints[i];
    if (!e) {
        const char *help = ex->stats_only
                               ? "rete-proxy stats: /metrics /ready /live\n"
                               : "rete-proxy admin: /ready /live /metrics /config /stats /clusters; "
                                 "POST /logging?level=\n";
        rete_ex_local_response(ex, 404, "text/plain", help, strlen(help));
        return;
    }
    bool read = method_is(ex, "GET") || method_is(ex, "HEAD");
    if (!read && !(e->post && method_is(ex, "POST"))) {
        not_allowed(ex, e->post ? "GET, HEAD, POST" : "GET, HEAD",
                    e->post ? "GET reads, POST changes\n" : "GET or HEAD\n");
        return;
    }
    e->handle(ex, qs);
}
