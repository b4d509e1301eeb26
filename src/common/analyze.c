/* Configuration analysers (analyze.h). Each finding has a code, a level,
 * the resource and a fix hint.
 *
 * Everything reted refuses at apply (a route to an unknown Service or port,
 * a DestinationRule for an unknown host, a dangling delete) never reaches
 * the store, so these analysers look for what it accepts and is still
 * wrong: rules that send nowhere or can never match, selectors that pick
 * nothing, policies that contradict each other, proxies that refuse or miss
 * their configuration, certificates about to expire. */
#include "analyze.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "defaults.h"

const char *const rete_analyze_kinds[RETE_AN_PROXIES] = {
    "services", "workloads", "httproutes", "grpcroutes", "authorizationpolicies", "peerauthentications"};

/* A proxy certificate expiring within the hour (what `retectl diagnose`
 * calls a finding too). Not "within a day": with the default 24 h lifetime
 * and renewal at half-life, every healthy proxy would be flagged always. */
#define CERT_WARN_S 3600

typedef struct findings {
    json_t *list;  /* [{code, level, resource: {kind, namespace, name}, message, hint}] */
    bool errors;
} findings;

static void add(findings *f, const char *code, bool error, const char *kind, const char *ns, const char *name,
                const char *hint, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void add(findings *f, const char *code, bool error, const char *kind, const char *ns, const char *name,
                const char *hint, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_array_append_new(f->list, json_pack("{s:s,s:s,s:{s:s,s:s,s:s},s:s,s:s}", "code", code, "level",
                                             error ? "Error" : "Warning", "resource", "kind", kind,
                                             "namespace", ns, "name", name, "message", msg, "hint", hint));
    f->errors |= error;
}

static const char *meta(const json_t *r, const char *key)
{
    const char *v = json_string_value(json_object_get(json_object_get(r, "metadata"), key));
    return v ? v : (strcmp(key, "namespace") == 0 ? "default" : "?");
}

static json_t *spec(const json_t *r)
{
    return json_object_get(r, "spec");
}

/* Whether every label of `sel` (an object) is on the workload. */
static bool selects(const json_t *sel, const json_t *wl)
{
    const json_t *labels = json_object_get(spec(wl), "labels");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)sel, k, v)
    {
        const char *have = json_string_value(json_object_get(labels, k));
        if (!have || !json_is_string(v) || strcmp(have, json_string_value(v)) != 0)
            return false;
    }
    return true;
}

/* How many workloads `sel` picks among those of namespace ns (NULL: all). */
static size_t picked(const json_t *sel, const char *ns, const json_t *workloads)
{
    size_t n = 0, i;
    json_t *wl;
    json_array_foreach(workloads, i, wl)
        n += (!ns || strcmp(meta(wl, "namespace"), ns) == 0) && selects(sel, wl);
    return n;
}

/* RT0001, RT0002: route rules that send nowhere or never match. */
static void analyze_routes(findings *f, const char *kind, const json_t *routes)
{
    size_t i;
    json_t *r;
    json_array_foreach(routes, i, r)
    {
        const json_t *rules = json_object_get(spec(r), "rules");
        for (size_t j = 0; j < json_array_size(rules); j++) {
            const json_t *rule = json_array_get(rules, j), *refs = json_object_get(rule, "backendRefs");
            long long weight = 0;
            for (size_t k = 0; k < json_array_size(refs); k++) {
                const json_t *w = json_object_get(json_array_get(refs, k), "weight");
                weight += w ? json_integer_value(w) : 1;
            }
            if (json_array_size(refs) && weight == 0)
                add(f, "RT0001", true, kind, meta(r, "namespace"), meta(r, "name"),
                    "give one backendRef a weight above 0, or remove the rule",
                    "spec.rules[%zu]: every backendRef has weight 0: its requests are answered 500", j);
            /* a match equal to one of an earlier rule of the route: that
             * rule wins every tie (same precedence, earlier rule) */
            const json_t *matches = json_object_get(rule, "matches");
            for (size_t m = 0; m < json_array_size(matches); m++)
                for (size_t e = 0; e < j; e++) {
                    const json_t *earlier = json_object_get(json_array_get(rules, e), "matches");
                    for (size_t n = 0; n < json_array_size(earlier); n++)
                        if (json_equal(json_array_get(matches, m), json_array_get(earlier, n)))
                            add(f, "RT0002", false, kind, meta(r, "namespace"), meta(r, "name"),
                                "remove the match, or make it differ from the earlier rule's",
                                "spec.rules[%zu].matches[%zu] is the same as spec.rules[%zu].matches[%zu]: "
                                "the earlier rule takes every request it would match",
                                j, m, e, n);
                }
        }
    }
}

/* RT0003: Services whose selector picks no workload. */
static void analyze_services(findings *f, const json_t *services, const json_t *workloads)
{
    size_t i;
    json_t *s;
    json_array_foreach(services, i, s)
    {
        const json_t *sel = json_object_get(spec(s), "selector");
        if (json_is_object(sel) && json_object_size(sel) && !picked(sel, meta(s, "namespace"), workloads))
            add(f, "RT0003", false, "Service", meta(s, "namespace"), meta(s, "name"),
                "check the selector against the Workloads' labels (retectl get wl -n NS -o wide)",
                "its selector picks no Workload: calls to it get 503 (no healthy endpoint)");
    }
}

/* RT0004: policies whose selector picks no workload. */
static void analyze_selectors(findings *f, const char *kind, const json_t *policies, const json_t *workloads)
{
    size_t i;
    json_t *p;
    json_array_foreach(policies, i, p)
    {
        const json_t *sel = json_object_get(json_object_get(spec(p), "selector"), "matchLabels");
        const char *ns = meta(p, "namespace");
        if (json_is_object(sel) && json_object_size(sel) &&
            !picked(sel, strcmp(ns, RETE_ROOT_NS) == 0 ? NULL : ns, workloads))
            add(f, "RT0004", false, kind, ns, meta(p, "name"),
                "check spec.selector.matchLabels against the Workloads' labels",
                "spec.selector picks no Workload: the policy applies to nothing");
    }
}

static const char *pa_mode(const json_t *pa)
{
    const char *m = json_string_value(json_object_get(json_object_get(spec(pa), "mtls"), "mode"));
    return m ? m : "UNSET";
}

/* RT0005: PeerAuthentications that contradict each other: two
 * namespace-wide ones in one namespace, or two selecting the same workload
 * with different modes (which one wins is not something to leave to
 * chance). */
static void analyze_peer_authn(findings *f, const json_t *pas, const json_t *workloads)
{
    for (size_t i = 0; i < json_array_size(pas); i++) {
        const json_t *a = json_array_get(pas, i);
        const json_t *sa = json_object_get(json_object_get(spec(a), "selector"), "matchLabels");
        for (size_t j = i + 1; j < json_array_size(pas); j++) {
            const json_t *b = json_array_get(pas, j);
            const json_t *sb = json_object_get(json_object_get(spec(b), "selector"), "matchLabels");
            if (strcmp(meta(a, "namespace"), meta(b, "namespace")) != 0)
                continue;
            bool wide_a = !json_object_size(sa), wide_b = !json_object_size(sb);
            bool clash = false;
            if (wide_a && wide_b) {
                clash = true;
            } else if (!wide_a && !wide_b && strcmp(pa_mode(a), pa_mode(b)) != 0) {
                size_t k;
                json_t *wl;
                json_array_foreach(workloads, k, wl) clash |=
                    strcmp(meta(wl, "namespace"), meta(a, "namespace")) == 0 && selects(sa, wl) && selects(sb, wl);
            }
            if (clash)
                add(f, "RT0005", true, "PeerAuthentication", meta(b, "namespace"), meta(b, "name"),
                    "keep one namespace-wide policy, and one workload policy per workload",
                    "conflicts with PeerAuthentication %s/%s (%s): %s", meta(a, "namespace"), meta(a, "name"),
                    wide_a && wide_b ? "both apply to the whole namespace" : "both select a workload",
                    wide_a && wide_b ? "which mode holds is undefined"
                                     : "with different mtls modes");
        }
    }
}

/* RT0006..RT0008: what reted knows of its proxies. */
static void analyze_proxies(findings *f, const json_t *proxies, time_t now)
{
    size_t i;
    json_t *p;
    json_array_foreach(proxies, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        const char *ns = json_string_value(json_object_get(p, "namespace"));
        const char *status = json_string_value(json_object_get(p, "status"));
        name = name ? name : "?";
        ns = ns ? ns : "?";
        status = status ? status : "?";
        if (strcmp(status, "NACK") == 0) {
            const char *err = json_string_value(json_object_get(p, "error"));
            add(f, "RT0006", true, "Proxy", ns, name,
                "fix the resource the error names; the proxy serves its last good configuration meanwhile",
                "rejects its configuration: %s", err && *err ? err : "(no reason given)");
        } else if (strcmp(status, "SYNCED") != 0) {
            add(f, "RT0007", false, "Proxy", ns, name,
                "see retectl proxy-status; a DISCONNECTED proxy reconnects with backoff",
                "not in sync with reted: %s", status);
        }
        json_int_t exp = json_integer_value(json_object_get(p, "certExpiresAt"));
        if (exp > 0 && exp - (json_int_t)now <= CERT_WARN_S && json_is_true(json_object_get(p, "connected")))
            add(f, "RT0008", exp <= (json_int_t)now, "Proxy", ns, name,
                "check that the proxy reaches reted's proxy API (renewal happens at half-life)",
                "its certificate %s in %lld s", exp <= (json_int_t)now ? "expired" : "expires",
                (long long)(exp - (json_int_t)now));
    }
}

json_t *rete_analyze(json_t *const in[RETE_AN_N], const char *only_ns, time_t now, bool *errors)
{
    json_t *got[RETE_AN_N];
    for (size_t i = 0; i < RETE_AN_N; i++)
        got[i] = json_is_array(in[i]) ? json_incref(in[i]) : json_array();
    /* -n: only that namespace's resources (and proxies) */
    if (only_ns)
        for (size_t i = 0; i < RETE_AN_N; i++) {
            json_t *keep = json_array();
            size_t k;
            json_t *r;
            json_array_foreach(got[i], k, r)
            {
                const char *ns =
                    i == RETE_AN_PROXIES ? json_string_value(json_object_get(r, "namespace")) : meta(r, "namespace");
                /* root-namespace policies apply everywhere: analysed with any namespace */
                if ((ns && strcmp(ns, only_ns) == 0) ||
                    (i >= RETE_AN_AUTHZ && i < RETE_AN_PROXIES && ns && strcmp(ns, RETE_ROOT_NS) == 0))
                    json_array_append(keep, r);
            }
            if (i != RETE_AN_WORKLOADS) { /* workloads stay whole: selectors in the root namespace look at all */
                json_decref(got[i]);
                got[i] = keep;
            } else {
                json_decref(keep);
            }
        }
    findings f = {json_array(), false};
    analyze_routes(&f, "HTTPRoute", got[2]);
    analyze_routes(&f, "GRPCRoute", got[3]);
    analyze_services(&f, got[0], got[1]);
    analyze_selectors(&f, "AuthorizationPolicy", got[4], got[1]);
    analyze_selectors(&f, "PeerAuthentication", got[5], got[1]);
    analyze_peer_authn(&f, got[5], got[1]);
    analyze_proxies(&f, got[RETE_AN_PROXIES], now);
    for (size_t i = 0; i < RETE_AN_N; i++)
        json_decref(got[i]);
    *errors = f.errors;
    return f.list;
}
