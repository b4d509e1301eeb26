/* The golden-metrics summary (docs/control-plane.md, "Stats summaries"):
 * every --stats-interval seconds (default RETE_GOLDEN_PERIOD_S) the agent
 * reads how much rete_proxy_route_requests_total and
 * rete_proxy_route_request_duration_seconds grew since its last reading
 * and sends it to reted on the config stream as one "stats" message, per
 * (reporter, route, service, source -> destination workload): requests,
 * failures and the latency histogram on RETE_GOLDEN_BOUNDS_MS.
 *
 * Nothing on the request path: the workers count in those two families
 * anyway (telemetry.c); this reads the registry on the main loop (one walk
 * of each family under the registry mutex, every interval).
 *
 * Memory: the last reading, 8 bytes per series of the count family and
 * 8 * RETE_GOLDEN_NBUCKETS per series of the duration family (the registry
 * bounds both at RETE_METRICS_DEFAULT_MAX_SERIES series: at most ~1.2 MB),
 * and per reading a table of the combinations that grew. A report holds at
 * most RETE_GOLDEN_MAX_ENTRIES entries and RETE_GOLDEN_MAX_REPORT_BYTES of
 * JSON, the busiest first; the rest is counted in its "dropped". While the
 * stream is down readings are taken and thrown away: a report always covers
 * one interval. */
#include "alloc.h"
#include "cp_state.h"
#include "golden.h"
#include "outlier.h"
#include "vec.h"

#include <stdlib.h>
#include <string.h>

typedef struct acc {
    json_t *labels; /* the RETE_GL_KEY_N values */
    uint64_t requests, failures;
    uint64_t hist[RETE_GOLDEN_NBUCKETS];
} acc;

typedef struct hrow {
    uint64_t b[RETE_GOLDEN_NBUCKETS];
} hrow;

struct cp_golden {
    uint64_t *last_req;  /* per series of the count family, by creation index */
    size_t cap_req;
    hrow *last_dur;      /* per series of the duration family */
    size_t cap_dur;
    /* one reading */
    json_t *index;       /* key -> position in accs */
    acc *accs;
    size_t n_accs, cap_accs;
};

/* The reading's entry for a combination of RETE_GL_KEY_N label values. */
static acc *acc_of(cp_golden *g, const rete_view *v)
{
    char key[RETE_GL_KEY_N * 256];
    size_t n = 0;
    for (size_t i = 0; i < RETE_GL_KEY_N; i++) {
        size_t len = v[i].len < 250 ? v[i].len : 250;
        memcpy(key + n, v[i].p, len);
        n += len;
        key[n++] = '\x1f';
    }
    json_t *at = json_object_getn(g->index, key, n);
    if (at)
        return &g->accs[json_integer_value(at)];
    RETE_GROW(g->accs, g->cap_accs, g->n_accs + 1, 16);
    acc *a = &g->accs[g->n_accs];
    memset(a, 0, sizeof(*a));
    a->labels = json_array();
    for (size_t i = 0; i < RETE_GL_KEY_N; i++)
        json_array_append_new(a->labels, json_stringn(v[i].p, v[i].len));
    json_object_setn_new(g->index, key, n, json_integer((json_int_t)g->n_accs));
    return &g->accs[g->n_accs++];
}

static uint64_t grew(uint64_t now, uint64_t *last)
{
    uint64_t d = now >= *last ? now - *last : now; /* never backwards; a reset counts from 0 */
    *last = now;
    return d;
}

static void walk_requests(void *arg, size_t index, const rete_view *v, size_t n, const uint64_t *counts,
                          size_t nc)
{
    cp_golden *g = arg;
    if (n != RETE_GL_N || nc != 1)
        return;
    if (index >= g->cap_req) {
        size_t old = g->cap_req;
        RETE_GROW(g->last_req, g->cap_req, index + 1, 64);
        memset(g->last_req + old, 0, (g->cap_req - old) * sizeof(*g->last_req));
    }
    uint64_t d = grew(counts[0], &g->last_req[index]);
    if (!d)
        return;
    acc *a = acc_of(g, v);
    a->requests += d;
    if (rete_view_eq(v[RETE_GL_CLASSIFICATION], RETE_VIEW_LIT("failure")))
        a->failures += d;
}

static void walk_durations(void *arg, size_t index, const rete_view *v, size_t n, const uint64_t *counts,
                           size_t nc)
{
    cp_golden *g = arg;
    if (n != RETE_GL_KEY_N || nc != RETE_GOLDEN_NBUCKETS)
        return;
    if (index >= g->cap_dur) {
        size_t old = g->cap_dur;
        RETE_GROW(g->last_dur, g->cap_dur, index + 1, 64);
        memset(g->last_dur + old, 0, (g->cap_dur - old) * sizeof(*g->last_dur));
    }
    uint64_t d[RETE_GOLDEN_NBUCKETS], any = 0;
    for (size_t b = 0; b < RETE_GOLDEN_NBUCKETS; b++)
        any |= d[b] = grew(counts[b], &g->last_dur[index].b[b]);
    if (!any)
        return;
    acc *a = acc_of(g, v);
    for (size_t b = 0; b < RETE_GOLDEN_NBUCKETS; b++)
        a->hist[b] += d[b];
}

static int busiest_first(const void *x, const void *y)
{
    const acc *a = x, *b = y;
    return a->requests < b->requests ? 1 : a->requests > b->requests ? -1 : 0;
}

json_t *cp_golden_read(cp_golden *g, rete_proxy *p, uint32_t interval_s)
{
    g->index = json_object();
    g->n_accs = 0;
    rete_metrics_walk(p->metrics, p->mm->route_requests_total, walk_requests, g);
    rete_metrics_walk(p->metrics, p->mm->route_request_duration_seconds, walk_durations, g);
    if (g->n_accs)
        qsort(g->accs, g->n_accs, sizeof(*g->accs), busiest_first);
    json_t *entries = json_array();
    size_t bytes = 0, dropped = 0;
    for (size_t i = 0; i < g->n_accs; i++) {
        acc *a = &g->accs[i];
        json_t *hist = json_array();
        for (size_t b = 0; b < RETE_GOLDEN_NBUCKETS; b++)
            json_array_append_new(hist, json_integer((json_int_t)a->hist[b]));
        json_t *e = a->labels;
        a->labels = NULL;
        json_array_append_new(e, json_integer((json_int_t)a->requests));
        json_array_append_new(e, json_integer((json_int_t)a->failures));
        json_array_append_new(e, hist);
        size_t len = json_dumpb(e, NULL, 0, JSON_COMPACT) + 1;
        if (json_array_size(entries) >= RETE_GOLDEN_MAX_ENTRIES || bytes + len > RETE_GOLDEN_MAX_REPORT_BYTES) {
            dropped++;
            json_decref(e);
            continue;
        }
        bytes += len;
        json_array_append_new(entries, e);
    }
    json_decref(g->index);
    g->index = NULL;
    if (json_array_size(entries) == 0 && dropped == 0) {
        json_decref(entries);
        return NULL;
    }
    return json_pack("{s:s,s:I,s:o,s:I}", "type", "stats", "interval", (json_int_t)interval_s, "entries", entries,
                     "dropped", (json_int_t)dropped);
}

cp_golden *cp_golden_new(void)
{
    return rete_calloc(1, sizeof(cp_golden));
}

void cp_golden_free(cp_golden **gp)
{
    cp_golden *g = *gp;
    if (!g)
        return;
    free(g->last_req);
    free(g->last_dur);
    free(g->accs);
    free(g);
    *gp = NULL;
}

/* rete_proxy_retry_budget_exhausted_total, cluster -> count since start. */
static void walk_budget(void *arg, size_t index, const rete_view *v, size_t n, const uint64_t *counts,
                        size_t nc)
{
    (void)index;
    if (n != 1 || nc != 1 || !counts[0] || json_object_size(arg) >= RETE_GOLDEN_MAX_OUT_ENDPOINTS)
        return;
    char cluster[300];
    size_t len = v[0].len < sizeof(cluster) - 1 ? v[0].len : sizeof(cluster) - 1;
    memcpy(cluster, v[0].p, len);
    cluster[len] = '\0';
    json_object_set_new(arg, cluster, json_integer((json_int_t)counts[0]));
}

json_t *cp_golden_endpoints(const rete_proxy *p, uint64_t now_ns)
{
    json_t *out = json_array();
    size_t dropped = 0;
    const rete_config *cfg = p->cfg;
    for (size_t i = 0; cfg && i < cfg->n_services; i++) {
        const rete_service *svc = &cfg->services[i];
        const rete_traffic_policy *pol = &svc->policy;
        if (!pol->consecutive_5xx && !pol->consecutive_gateway && !pol->sr_on && pol->hc_kind == RETE_HC_NONE)
            continue; /* nothing takes its endpoints out */
        char name[300], key[96];
        rete_outlier_service_name(svc, name, sizeof name);
        for (size_t k = 0; k < svc->n_endpoints; k++) {
            rete_outlier_endpoint_key(svc->endpoints[k], key, sizeof key);
            const rete_outlier *o = rete_outlier_find(name, key);
            bool ejected = rete_outlier_ejected(o, now_ns), hc_down = rete_outlier_hc_down(o);
            if (!ejected && !hc_down)
                continue;
            if (json_array_size(out) >= RETE_GOLDEN_MAX_OUT_ENDPOINTS) {
                dropped++;
                continue;
            }
            uint64_t until = atomic_load_explicit(&o->ejected_until_ns, memory_order_relaxed);
            const rete_workload *w = svc->endpoints[k];
            json_array_append_new(
                out, json_pack("{s:s,s:s,s:s,s:b,s:I,s:I,s:b}", "cluster", name, "endpoint",
                               w->name ? w->name : "", "address", w->address ? w->address : "",
                               "ejected", ejected, "ejectedForMs",
                               (json_int_t)(ejected ? (until - now_ns) / 1000000u : 0), "timesEjected",
                               (json_int_t)atomic_load_explicit(&o->times_ejected, memory_order_relaxed),
                               "healthCheckFailing", hc_down));
        }
    }
    json_t *budget = json_object();
    if (p->metrics)
        rete_metrics_walk(p->metrics, p->mm->retry_budget_exhausted_total, walk_budget, budget);
    return json_pack("{s:s,s:o,s:I,s:o}", "type", "endpoints", "out", out, "dropped", (json_int_t)dropped,
                     "retryBudgetExhausted", budget);
}

/* The endpoints this proxy's balancers hold out, sent when they changed
 * since the last message reted got (and after every reconnection). */
static void send_endpoints(rete_cp *cp)
{
    json_t *m = cp_golden_endpoints(cp->p, uv_hrtime());
    json_t *out = json_object_get(m, "out");
    /* ejectedForMs changes every time: compare what is out, not for how long */
    json_t *shape = json_array();
    for (size_t i = 0; i < json_array_size(out); i++) {
        json_t *e = json_array_get(out, i);
        json_array_append_new(shape, json_pack("[O,O,O,O]", json_object_get(e, "cluster"),
                                               json_object_get(e, "address"), json_object_get(e, "ejected"),
                                               json_object_get(e, "healthCheckFailing")));
    }
    json_array_append(shape, json_object_get(m, "retryBudgetExhausted"));
    char *text = json_dumps(shape, JSON_COMPACT);
    json_decref(shape);
    if (text && cp->endpoints_sent && strcmp(text, cp->endpoints_sent) == 0) {
        free(text);
        json_decref(m);
        return;
    }
    free(cp->endpoints_sent);
    cp->endpoints_sent = text;
    cp_stream_send(cp, m);
}

static void on_stats(uv_timer_t *t)
{
    rete_cp *cp = t->data;
    json_t *m = cp_golden_read(cp->golden, cp->p, cp->o->stats_interval_s);
    if (m && cp->connected && !cp->draining)
        cp_stream_send(cp, m);
    else
        json_decref(m);
    if (cp->connected && !cp->draining) {
        send_endpoints(cp);
    } else {
        free(cp->endpoints_sent); /* a new stream hears the whole state again */
        cp->endpoints_sent = NULL;
    }
}

void cp_golden_start(rete_cp *cp)
{
    if (!cp->o->stats_interval_s)
        return;
    cp->golden = cp_golden_new();
    cp->stats_timer.data = cp;
    uint64_t ms = (uint64_t)cp->o->stats_interval_s * 1000;
    uv_timer_start(&cp->stats_timer, on_stats, ms, ms);
}
