/* The operator API on 15014 (docs/control-plane.md): apply, get, delete,
 * tokens, proxy status and config, check, identity, metrics, and the
 * dashboard's page. Every request but /healthz, /version, /metrics and
 * /dashboard/ needs the admin token. */
#include "api.h"

#include "alloc.h"
#include "analyze.h"
#include "compiler.h"
#include "dashboard.h"
#include "datadir.h"
#include "log.h"
#include "mesh_index.h"
#include "push.h"
#include "registry.h"
#include "replica.h"
#include "resources.h"
#include "reted.h"
#include "tap_relay.h"
#include "spiffe.h"
#include "token.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void respond_error(rete_http_req *req, int status, const char *msg)
{
    rete_http_respond_jobj(req, status, json_pack("{s:s}", "error", msg));
}

/* A store that failed (etcd unreachable, quorum lost) is the service being
 * unavailable, not a bug of the request: 503 and the store's name, so that
 * a client retries later and an operator knows where to look. */
static void respond_store_error(rete_http_req *req, const reted *r, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s: the %s store is unavailable; retry when it is back (reted's log says why)",
             what, r->store->ops->name);
    respond_error(req, 503, msg);
}

static bool authorized(const reted *r, const rete_http_req *req)
{
    rete_view h = rete_http_header_get(req, "authorization");
    static const char bearer[] = "Bearer ";
    if (h.len <= sizeof(bearer) - 1 || memcmp(h.p, bearer, sizeof(bearer) - 1) != 0)
        return false;
    rete_view tok = rete_view_make(h.p + 7, h.len - 7);
    size_t n = strlen(r->admin_token);
    return tok.len == n && CRYPTO_memcmp(tok.p, r->admin_token, n) == 0;
}

/* Split "/api/v1/resources/kind/ns/name" into up to 3 segments after the prefix. */
static size_t segments(rete_view path, size_t skip, char out[][256], size_t max)
{
    size_t n = 0, i = skip;
    while (i < path.len && n < max) {
        while (i < path.len && path.p[i] == '/')
            i++;
        size_t start = i;
        while (i < path.len && path.p[i] != '/')
            i++;
        if (i > start) {
            size_t len = i - start < 255 ? i - start : 255;
            memcpy(out[n], path.p + start, len);
            out[n][len] = '\0';
            n++;
        }
    }
    return n;
}

static void view_str(rete_view v, char *out, size_t size)
{
    size_t n = v.len < size - 1 ? v.len : size - 1;
    if (n)
        memcpy(out, v.p, n);
    out[n] = '\0';
}

/* ---- apply ---- */

static double thread_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void apply(reted *r, rete_http_req *req);

/* POST /api/v1/apply; its loop-thread CPU is observed whatever the answer. */
static void api_apply(reted *r, rete_http_req *req)
{
    double t0 = thread_cpu_seconds();
    apply(r, req);
    reted_observe(&r->stats, r->stats.apply_cpu, thread_cpu_seconds() - t0);
}

static void apply(reted *r, rete_http_req *req)
{
    char source[256] = "-";
    rete_view src = rete_http_query_get(req, "source");
    if (src.len)
        view_str(src, source, sizeof(source));
    reted_doc *docs;
    size_t n;
    json_t *err = NULL;
    if (reted_parse_docs(req->body, req->body_len, source, &docs, &n, &err) < 0) {
        reted_count(&r->stats, r->stats.applies_rejected);
        rete_http_respond_jobj(req, 422, err);
        return;
    }
    /* Two documents for the same resource in one request are ambiguous. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(docs[i].kind, docs[j].kind) == 0 && strcmp(docs[i].ns, docs[j].ns) == 0 &&
                strcmp(docs[i].name, docs[j].name) == 0) {
                reted_count(&r->stats, r->stats.applies_rejected);
                rete_http_respond_jobj(req, 422,
                            json_pack("{s:s,s:[{s:s,s:i,s:s,s:s}]}", "error", "invalid resource",
                                      "details", "source", source, "document", docs[i].index, "path",
                                      "metadata.name", "reason", "the same resource appears twice"));
                reted_docs_free(docs, n);
                return;
            }
    /* clusterIPs are assigned against every stored Service: without a
     * current index (before the first build, after a store-wide change) a
     * fresh one is read */
    const reted_index *ix = reted_index_current(r);
    reted_index fresh = {0};
    if (!ix && reted_index_build(&fresh, r->store) == RETE_OK)
        ix = &fresh;
    if (!ix) {
        reted_count(&r->stats, r->stats.applies_rejected);
        respond_store_error(req, r, "apply");
        reted_docs_free(docs, n);
        return;
    }
    json_t *verr = reted_assign_cluster_ips(docs, n, source, ix);
    reted_index_free(&fresh);
    if (!verr)
        verr = reted_validate(r, docs, n, source, reted_index_current(r));
    if (verr) {
        reted_count(&r->stats, r->stats.applies_rejected);
        rete_http_respond_jobj(req, 422, verr);
        reted_docs_free(docs, n);
        return;
    }
    rete_store_write *w = rete_calloc(n ? n : 1, sizeof(*w));
    char **texts = rete_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        texts[i] = json_dumps(docs[i].json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        w[i] = (rete_store_write){docs[i].kind, docs[i].ns, docs[i].name, texts[i],
                                  docs[i].expected_version};
    }
    size_t failed = 0;
    rete_rc rc = r->store->ops->apply(r->store, w, n, &failed);
    if (rc == RETE_ECONFLICT) {
        reted_count(&r->stats, r->stats.applies_rejected);
        char msg[1024];
        snprintf(msg, sizeof(msg),
                 "%s %s/%s: resourceVersion %llu is not the current one; get it again and retry",
                 docs[failed].kind, docs[failed].ns, docs[failed].name,
                 (unsigned long long)docs[failed].expected_version);
        respond_error(req, 409, msg);
    } else if (rc == RETE_ELIMIT) {
        reted_count(&r->stats, r->stats.applies_rejected);
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "an apply of %zu resources is more than the %s store writes in one transaction "
                 "(etcd: 128, its --max-txn-ops); apply them in smaller parts",
                 n, r->store->ops->name);
        respond_error(req, 413, msg);
    } else if (rc == RETE_EIO) {
        reted_count(&r->stats, r->stats.applies_rejected);
        respond_store_error(req, r, "apply");
    } else if (rc < 0) {
        respond_error(req, 500, "store write failed");
    } else {
        reted_count(&r->stats, r->stats.applies_ok);
        json_t *results = json_array();
        for (size_t i = 0; i < n; i++) {
            char rv[24];
            snprintf(rv, sizeof(rv), "%llu", (unsigned long long)w[i].new_version);
            json_array_append_new(
                results, json_pack("{s:s,s:s,s:s,s:s,s:s}", "kind", docs[i].kind, "namespace",
                                   docs[i].ns, "name", docs[i].name, "resourceVersion", rv, "action",
                                   w[i].unchanged ? "unchanged" : w[i].created ? "created" : "configured"));
            if (!w[i].unchanged)
                reted_changed(r, docs[i].kind, docs[i].ns, docs[i].name);
        }
        rete_http_respond_jobj(req, 200, json_pack("{s:o}", "results", results));
    }
    for (size_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    free(w);
    reted_docs_free(docs, n);
}

/* ---- get / list / delete ---- */

static bool collect(const rete_store_resource *res, void *arg)
{
    json_array_append_new(arg, reted_resource_json(res));
    return true;
}

static void api_resources(reted *r, rete_http_req *req)
{
    char seg[4][256];
    size_t n = segments(req->path, strlen("/api/v1/resources"), seg, 4);
    if (n == 0 || n == 2 || n > 3) {
        respond_error(req, 404, "use /api/v1/resources/{kind}[/{namespace}/{name}]");
        return;
    }
    const char *kind = reted_kind_canonical(seg[0]);
    if (!kind) {
        char msg[400];
        snprintf(msg, sizeof(msg), "unknown kind %s", seg[0]);
        respond_error(req, 404, msg);
        return;
    }
    bool get = rete_view_eq(req->method, RETE_VIEW_LIT("GET"));
    bool del = rete_view_eq(req->method, RETE_VIEW_LIT("DELETE"));
    if (n == 1) {
        if (!get) {
            respond_error(req, 405, "GET only");
            return;
        }
        char ns[256] = "";
        rete_view q = rete_http_query_get(req, "namespace");
        if (q.len)
            view_str(q, ns, sizeof(ns));
        json_t *items = json_array();
        if (r->store->ops->list(r->store, kind, ns[0] ? ns : NULL, collect, items) < 0) {
            json_decref(items);
            respond_store_error(req, r, "list");
            return;
        }
        rete_http_respond_jobj(req, 200, json_pack("{s:o}", "items", items));
        return;
    }
    rete_store_resource res;
    rete_rc rc = r->store->ops->get(r->store, kind, seg[1], seg[2], &res);
    if (rc == RETE_ENOTFOUND) {
        char msg[900];
        snprintf(msg, sizeof(msg), "%s %s/%s not found", kind, seg[1], seg[2]);
        respond_error(req, 404, msg);
        return;
    }
    if (rc < 0) {
        respond_store_error(req, r, "get");
        return;
    }
    if (get) {
        rete_http_respond_jobj(req, 200, reted_resource_json(&res));
        return;
    }
    if (!del) {
        respond_error(req, 405, "GET or DELETE");
        return;
    }
    uint64_t expected = 0;
    rete_view q = rete_http_query_get(req, "resourceVersion");
    if (q.len) {
        char v[32];
        view_str(q, v, sizeof(v));
        expected = strtoull(v, NULL, 10);
    }
    /* Deleting must leave a set every proxy accepts (no dangling reference). */
    reted_doc d = {NULL, kind, seg[1], seg[2], expected};
    json_t *verr = reted_validate(r, &d, 1, "delete", reted_index_current(r));
    if (verr) {
        rete_http_respond_jobj(req, 409, verr);
        return;
    }
    rete_store_write w = {kind, seg[1], seg[2], NULL, expected};
    size_t failed;
    rc = r->store->ops->apply(r->store, &w, 1, &failed);
    if (rc == RETE_ECONFLICT) {
        respond_error(req, 409, "resourceVersion is not the current one");
        return;
    }
    if (rc == RETE_EIO) {
        respond_store_error(req, r, "delete");
        return;
    }
    if (rc < 0) {
        respond_error(req, rc == RETE_ENOTFOUND ? 404 : 500, "delete failed");
        return;
    }
    rete_http_respond_jobj(req, 200, json_pack("{s:s,s:s,s:s,s:s}", "kind", kind, "namespace", seg[1], "name",
                                    seg[2], "action", "deleted"));
    reted_changed(r, kind, seg[1], seg[2]);
}

/* ---- tokens ---- */

static void api_tokens(reted *r, rete_http_req *req)
{
    json_error_t je;
    json_t *in = json_loadb(req->body, req->body_len, 0, &je);
    const char *ns = NULL, *sa = NULL;
    json_int_t ttl = 3600, uses = 1;
    if (!in || json_unpack(in, "{s:s,s:s,s?I,s?I}", "namespace", &ns, "serviceAccount", &sa,
                           "ttlSeconds", &ttl, "uses", &uses) != 0 ||
        ttl <= 0 || ttl > 365 * 86400 || uses == 0 || uses < -1) {
        json_decref(in);
        respond_error(req, 400,
                      "body: {\"namespace\", \"serviceAccount\", \"ttlSeconds\" (1..31536000), "
                      "\"uses\" (-1 = unlimited)}");
        return;
    }
    char token[128], id[33];
    uint8_t hash[32];
    if (rete_token_new(token, sizeof(token), id, hash) < 0) {
        json_decref(in);
        respond_error(req, 500, "no randomness for a token");
        return;
    }
    rete_store_token t = {0};
    snprintf(t.id, sizeof(t.id), "%s", id);
    snprintf(t.ns, sizeof(t.ns), "%s", ns);
    snprintf(t.sa, sizeof(t.sa), "%s", sa);
    t.expires_unix = reted_now() + ttl;
    t.uses_left = (int32_t)uses;
    json_decref(in);
    if (r->store->ops->token_put(r->store, &t, hash) < 0) {
        respond_store_error(req, r, "token");
        return;
    }
    rete_http_respond_jobj(req, 200, json_pack("{s:s,s:I,s:s,s:s}", "token", token, "expiresAt",
                                    (json_int_t)t.expires_unix, "namespace", t.ns,
                                    "serviceAccount", t.sa));
}

/* ---- proxies ---- */

static json_t *proxy_json(const reted_proxy *p)
{
    const char *status = !p->stream ? "DISCONNECTED"
                         : p->nacked ? "NACK"
                         : p->acked_version == p->sent_version ? "SYNCED"
                                                               : "STALE";
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:b,s:I,s:I,s:b}", "name", p->name,
                          "namespace", p->ns, "spiffeId", p->spiffe_id, "address", p->address,
                          "sentVersion", (json_int_t)p->sent_version, "ackedVersion",
                          (json_int_t)p->acked_version, "status", status, "error", p->nack_error ? p->nack_error : "",
                          "connected", p->stream != NULL, "certExpiresAt", (json_int_t)p->cert.not_after,
                          "lastSeen", (json_int_t)p->last_seen_unix, "ready", p->ready);
    /* The certificate as reted knows it (verified on the stream, or issued
     * by reted at its renewal), not as the proxy says. */
    static const char hex[] = "0123456789abcdef";
    char serial[2 * RETE_CERT_SERIAL_MAX + 1];
    for (size_t i = 0; i < p->cert.serial_len; i++) {
        serial[2 * i] = hex[p->cert.serial[i] >> 4];
        serial[2 * i + 1] = hex[p->cert.serial[i] & 15];
    }
    serial[2 * p->cert.serial_len] = '\0';
    json_object_set_new(o, "certSerial", json_string(serial));
    json_object_set_new(o, "certIssuedAt", json_integer((json_int_t)p->cert.not_before));
    /* What its balancers hold out now, as it last said (outlier detection,
     * health checks); [] when it said nothing is. */
    json_object_set_new(o, "endpointsOut", p->endpoints_out ? json_incref(p->endpoints_out) : json_array());
    /* Retries its retry budgets refused since it started, by Service. */
    json_object_set_new(o, "retryBudgetExhausted",
                        p->budget_exhausted ? json_incref(p->budget_exhausted) : json_object());
    if (p->sent) {
        /* What the proxy was sent: its egress in force and how much that is. */
        json_t *egress = json_array();
        for (const char *e = reted_strs_first(&p->sent->egress); e; e = reted_strs_next(&p->sent->egress, e))
            json_array_append_new(egress, json_string(e));
        json_int_t services = 0;
        for (size_t i = 0; i < p->sent->n_entries; i++)
            services += strcmp(p->sent->entries[i].doc->kind, "Service") == 0;
        json_object_set_new(o, "scope", json_pack("{s:o,s:b,s:I,s:I}", "egress", egress, "wholeMesh",
                                                   p->sent->all, "services", services, "resources",
                                                   (json_int_t)p->sent->n_entries));
    }
    return o;
}

static void api_proxies(reted *r, rete_http_req *req)
{
    char seg[4][256];
    size_t n = segments(req->path, strlen("/api/v1/proxies"), seg, 4);
    if (n == 0) {
        json_t *items = json_array();
        for (reted_proxy *p = r->registry.proxies; p; p = p->next)
            json_array_append_new(items, proxy_json(p));
        rete_http_respond_jobj(req, 200, json_pack("{s:o}", "items", items));
        return;
    }
    if (n == 3 && strcmp(seg[2], "config") == 0) {
        reted_proxy *p = reted_proxy_find(r, seg[0], seg[1]);
        if (!p || !p->sent) {
            respond_error(req, 404, "no such proxy, or no configuration sent to it yet");
            return;
        }
        size_t len;
        char *text = reted_snapshot_entries(p->sent, &len);
        json_t *entries = json_loadb(text, len, 0, NULL);
        free(text);
        rete_http_respond_jobj(req, 200, json_pack("{s:o,s:I,s:o}", "proxy", proxy_json(p), "version",
                                        (json_int_t)p->sent_version, "resources", entries));
        return;
    }
    respond_error(req, 404, "use /api/v1/proxies or /api/v1/proxies/{namespace}/{name}/config");
}

/* GET /api/v1/analyze[?namespace=NS]: the configuration analysers
 * (analyze.h, the ones `retectl analyze` runs) over the store and the
 * registry: {"findings": [...], "errors": B}. For the dashboard, which
 * polls it; the cost is one list of six kinds and a pass over them. */
static void api_analyze(reted *r, rete_http_req *req)
{
    if (!rete_view_eq(req->method, RETE_VIEW_LIT("GET"))) {
        respond_error(req, 405, "GET only");
        return;
    }
    char ns[256] = "";
    rete_view q = rete_http_query_get(req, "namespace");
    if (q.len)
        view_str(q, ns, sizeof(ns));
    json_t *in[RETE_AN_N] = {0};
    bool ok = true;
    for (size_t i = 0; i < RETE_AN_PROXIES && ok; i++) {
        in[i] = json_array();
        ok = r->store->ops->list(r->store, reted_kind_canonical(rete_analyze_kinds[i]), NULL, collect, in[i]) >= 0;
    }
    if (ok) {
        in[RETE_AN_PROXIES] = json_array();
        for (reted_proxy *p = r->registry.proxies; p; p = p->next)
            json_array_append_new(in[RETE_AN_PROXIES], proxy_json(p));
    }
    bool errors = false;
    json_t *found = ok ? rete_analyze(in, ns[0] ? ns : NULL, time(NULL), &errors) : NULL;
    for (size_t i = 0; i < RETE_AN_N; i++)
        json_decref(in[i]);
    if (!found) {
        respond_store_error(req, r, "list");
        return;
    }
    rete_http_respond_jobj(req, 200, json_pack("{s:o,s:b}", "findings", found, "errors", errors));
}

/* GET /api/v1/stats?by=service|workload|route|edge[&window=1m|10m]
 * [&reporter=source|destination][&namespace=NS][&name=NAME]: the golden
 * metrics (golden_agg.h). */
static void api_stats(reted *r, rete_http_req *req)
{
    static const char *const bys[] = {"service", "workload", "route", "edge"};
    char by[32] = "", window[16] = "1m", reporter[32] = "", ns[256] = "", name[256] = "";
    view_str(rete_http_query_get(req, "by"), by, sizeof(by));
    rete_view w = rete_http_query_get(req, "window");
    if (w.len)
        view_str(w, window, sizeof(window));
    view_str(rete_http_query_get(req, "reporter"), reporter, sizeof(reporter));
    view_str(rete_http_query_get(req, "namespace"), ns, sizeof(ns));
    view_str(rete_http_query_get(req, "name"), name, sizeof(name));
    reted_golden_query q = {.ns = ns[0] ? ns : NULL, .name = name[0] ? name : NULL};
    size_t i = 0;
    while (i < 4 && strcmp(by, bys[i]) != 0)
        i++;
    if (i == 4) {
        respond_error(req, 400, "by: service, workload, route or edge");
        return;
    }
    q.by = (reted_golden_by)i;
    if (strcmp(window, "1m") != 0 && strcmp(window, "10m") != 0) {
        respond_error(req, 400, "window: 1m or 10m");
        return;
    }
    q.long_window = strcmp(window, "10m") == 0;
    if (reporter[0]) {
        if (strcmp(reporter, "source") != 0 && strcmp(reporter, "destination") != 0) {
            respond_error(req, 400, "reporter: source or destination");
            return;
        }
        q.reporter = reporter;
    }
    rete_http_respond_jobj(req, 200, reted_golden_query_run(&r->golden, &q, (int64_t)(uv_now(r->loop) / 1000)));
}

/* GET /api/v1/prometheus/targets: Prometheus' HTTP service discovery
 * (http_sd_configs, Prometheus >= 2.28): one target group per connected
 * proxy, its stats listener (address:RETE_PORT_STATS, where /metrics faces
 * the network) with the proxy's name, namespace and service account as
 * labels. deploy/prometheus/prometheus.yml uses it; a proxy whose
 * spec.listeners.stats is not the default port is listed at the default
 * (reted is not told the proxy's listeners). */
static void api_prometheus_targets(reted *r, rete_http_req *req)
{
    json_t *groups = json_array();
    for (reted_proxy *p = r->registry.proxies; p; p = p->next) {
        if (!p->stream || !p->address[0])
            continue;
        char target[96];
        bool v6 = strchr(p->address, ':') != NULL;
        snprintf(target, sizeof(target), "%s%s%s:%u", v6 ? "[" : "", p->address, v6 ? "]" : "",
                 (unsigned)RETE_PORT_STATS);
        json_array_append_new(groups, json_pack("{s:[s],s:{s:s,s:s,s:s}}", "targets", target,
                                                "labels", "__meta_rete_proxy", p->name,
                                                "__meta_rete_namespace", p->ns,
                                                "__meta_rete_service_account", p->sa));
    }
    rete_http_respond_jobj(req, 200, groups);
}

static void api_check(reted *r, rete_http_req *req)
{
    json_t *checks = json_array();
    bool ok = true;
    uint64_t rev = r->store->ops->revision(r->store);
    /* a replicated store: one read says whether it answers (bounded by
     * --etcd-timeout; this blocks the loop like any store call) */
    bool store_ok = !r->store->ops->health || r->store->ops->health(r->store) == RETE_OK;
    ok &= store_ok;
    json_array_append_new(checks, json_pack("{s:s,s:b,s:s}", "name", "store", "ok", store_ok, "detail",
                                            store_ok ? r->store->ops->name : "etcd does not answer"));
    int64_t ca_exp = rete_ca_not_after(r->ca);
    bool ca_ok = ca_exp - reted_now() > 30 * 86400;
    ok &= ca_ok;
    char d[128];
    snprintf(d, sizeof(d), "root valid until %lld", (long long)ca_exp);
    json_array_append_new(checks, json_pack("{s:s,s:b,s:s}", "name", "certificate authority", "ok",
                                            ca_ok, "detail", d));
    int total = 0, synced = 0;
    for (reted_proxy *p = r->registry.proxies; p; p = p->next) {
        if (!p->stream)
            continue;
        total++;
        synced += !p->nacked && p->acked_version == p->sent_version;
    }
    snprintf(d, sizeof(d), "%d of %d connected proxies in sync", synced, total);
    ok &= synced == total;
    json_array_append_new(checks, json_pack("{s:s,s:b,s:s}", "name", "proxies", "ok", synced == total,
                                            "detail", d));
    rete_http_respond_jobj(req, 200,
                           json_pack("{s:b,s:I,s:I,s:o,s:{s:s,s:s,s:b,s:s}}", "ok", ok, "revision", (json_int_t)rev,
                                     "time", (json_int_t)reted_now(), "checks", checks, "replica", "id",
                                     r->replica_id, "store", r->store->ops->name, "leader", r->leading,
                                     "leaderId", r->leader));
}

static void api_identity(reted *r, rete_http_req *req)
{
    json_error_t je;
    json_t *in = json_loadb(req->body, req->body_len, 0, &je);
    const char *token = NULL, *csr = NULL;
    if (!in || json_unpack(in, "{s:s,s:s}", "token", &token, "csr", &csr) != 0) {
        json_decref(in);
        respond_error(req, 400, "body: {\"token\", \"csr\"}");
        return;
    }
    char id[33];
    uint8_t hash[32];
    rete_store_token t;
    rete_rc used = rete_token_parse(token, id, hash) < 0 ? RETE_ENOTFOUND
                                                         : r->store->ops->token_use(r->store, id, hash, reted_now(), &t);
    if (used == RETE_EIO) {
        json_decref(in);
        respond_store_error(req, r, "identity");
        return;
    }
    if (used < 0) {
        json_decref(in);
        reted_count(&r->stats, r->stats.certs_refused);
        respond_error(req, 403, "token unknown, expired or used up");
        return;
    }
    char spiffe[1024];
    rete_error err = {0};
    rete_spiffe_format(spiffe, sizeof(spiffe), r->trust_domain, t.ns, t.sa);
    int64_t not_after = 0;
    char *chain =
        rete_ca_sign_csr(r->ca, csr, strlen(csr), spiffe, reted_cert_ttl(r), &not_after, &err);
    json_decref(in);
    if (!chain) {
        reted_count(&r->stats, r->stats.certs_refused);
        respond_error(req, 400, err.msg);
        return;
    }
    reted_count(&r->stats, r->stats.certs_issued);
    rete_http_respond_jobj(req, 200, json_pack("{s:s,s:s,s:I,s:s}", "certChain", chain, "trustBundle",
                                    rete_ca_bundle_pem(r->ca), "expiresAt", (json_int_t)not_after,
                                    "spiffeId", spiffe));
    free(chain);
}

/* CA rotation, in two steps with no outage (docs/operations.md):
 * begin: a new root joins the bundle, every proxy receives the bundle with
 *        both roots and renews from the new root; reted's own certificate
 *        is reissued from it;
 * finish: once every proxy holds a new-root certificate, the old root
 *        leaves the bundle. */
static void api_ca_rotate(reted *r, rete_http_req *req)
{
    json_error_t je;
    json_t *in = json_loadb(req->body, req->body_len, 0, &je);
    char phase_buf[16] = "";
    const char *p_in = json_string_value(json_object_get(in, "phase"));
    if (p_in)
        snprintf(phase_buf, sizeof(phase_buf), "%s", p_in);
    const char *phase = p_in ? phase_buf : NULL;
    rete_error err = {0};
    char cadir[4096];
    snprintf(cadir, sizeof(cadir), "%s/ca", r->data_dir);
    rete_rc rc;
    if (phase && strcmp(phase, "begin") == 0) {
        rc = rete_ca_rotate_begin(r->ca, cadir, &err);
        if (rc == RETE_OK)
            r->renew_issued_before = reted_now() + 1;
        r->ca_generation++;
    } else if (phase && strcmp(phase, "finish") == 0) {
        /* Every connected proxy's certificate must chain to the new root:
         * the one its stream was verified with, or the one reted issued at
         * its renewal. A certificate reted cannot place (no verified chain)
         * counts as the old root's: finishing would cut that proxy off. */
        uint8_t signing[RETE_CERT_ROOT_ID_LEN] = {0};
        bool rotating = rete_ca_rotating(r->ca); /* else rete_ca_rotate_finish says 409 */
        if (rotating && !rete_ca_signing_root_id(r->ca, signing)) {
            json_decref(in);
            respond_error(req, 500, "cannot identify the new root");
            return;
        }
        for (reted_proxy *p = r->registry.proxies; p && rotating; p = p->next)
            if (p->stream && (!p->cert.has_root || memcmp(p->cert.root_id, signing, sizeof(signing)) != 0)) {
                json_decref(in);
                char msg[700];
                snprintf(msg, sizeof(msg),
                         "%s/%s still holds a certificate from the old root; wait for it to renew",
                         p->ns, p->name);
                respond_error(req, 409, msg);
                return;
            }
        rc = rete_ca_rotate_finish(r->ca, cadir, &err);
        r->ca_generation++;
    } else {
        json_decref(in);
        respond_error(req, 400, "body: {\"phase\": \"begin\" | \"finish\"}");
        return;
    }
    json_decref(in);
    if (rc < 0) {
        respond_error(req, rc == RETE_ESTATE ? 409 : 500, err.msg[0] ? err.msg : "rotation failed");
        return;
    }
    if (r->ca_kek && reted_replica_ca_publish(r, &err) < 0) {
        respond_error(req, err.code == RETE_ECONFLICT ? 409 : 503, err.msg);
        return;
    }
    reted_datadir_server_tls_renew(r);
    rete_info("ca rotation: %s done; pushing the bundle to every proxy", phase);
    reted_changed(r, NULL, NULL, NULL);
    rete_http_respond_jobj(req, 200, json_pack("{s:s,s:b,s:s}", "phase", phase, "rotating", rete_ca_rotating(r->ca),
                                    "trustBundle", rete_ca_bundle_pem(r->ca)));
}

static bool open_path(rete_view p)
{
    return rete_view_eq(p, RETE_VIEW_LIT("/healthz")) || rete_view_eq(p, RETE_VIEW_LIT("/metrics")) ||
           rete_view_eq(p, RETE_VIEW_LIT("/version")) || reted_dashboard_path(p);
}

/* The token is checked at the head: a client without it never makes reted
 * read (and hold) a body, whatever length it announces. Only an apply may
 * be large (a whole mesh's resources); tokens, identity and rotation
 * requests are small JSON. */
void reted_api_admit(const rete_http_req *head, void *arg, rete_http_admit *out)
{
    const reted *r = arg;
    out->max_body = r->max_request_body;
    if (open_path(head->path))
        return;
    if (!authorized(r, head)) {
        out->status = 401;
        out->reason = RETE_HTTP_REFUSED_UNAUTHORIZED;
        out->error = "missing or wrong admin token (Authorization: Bearer)";
        out->extra_headers = "www-authenticate: Bearer\r\n";
        return;
    }
    if (rete_view_eq(head->path, RETE_VIEW_LIT("/api/v1/apply")))
        out->max_body = r->max_apply_body;
}

void reted_api_handle(rete_http_req *req, void *arg)
{
    reted *r = arg;
    rete_view p = req->path;
    if (rete_view_eq(p, RETE_VIEW_LIT("/healthz"))) {
        rete_http_respond(req, 200, "text/plain", "ok\n", 3, NULL);
        return;
    }
    /* Metrics and version are open, as istiod's are on its monitoring port:
     * Prometheus scrapes without the admin credential, and the API listens
     * on loopback unless the operator says otherwise. */
    if (rete_view_eq(p, RETE_VIEW_LIT("/metrics"))) {
        size_t len;
        char *m = reted_stats_render(&r->stats, &len);
        rete_http_respond(req, 200, "text/plain; version=0.0.4", m, len, NULL);
        free(m);
        return;
    }
    if (rete_view_eq(p, RETE_VIEW_LIT("/version"))) {
        rete_http_respond_json(req, 200, "{\"reted\":\"" RETE_VERSION "\"}");
        return;
    }
    /* The dashboard's page and assets hold no data: its data requests
     * carry the token (dashboard.h). */
    if (reted_dashboard_path(p)) {
        reted_dashboard_serve(req);
        return;
    }
    if (!authorized(r, req)) {
        static const char body[] = "{\"error\":\"missing or wrong admin token (Authorization: Bearer)\"}";
        rete_http_respond(req, 401, "application/json", body, sizeof(body) - 1, "www-authenticate: Bearer\r\n");
        return;
    }
    bool post = rete_view_eq(req->method, RETE_VIEW_LIT("POST"));
    if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/apply")) && post)
        api_apply(r, req);
    else if (rete_view_has_prefix(p, RETE_VIEW_LIT("/api/v1/resources/")))
        api_resources(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/tokens")) && post)
        api_tokens(r, req);
    else if (rete_view_has_prefix(p, RETE_VIEW_LIT("/api/v1/proxies")))
        api_proxies(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/stats")))
        api_stats(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/analyze")))
        api_analyze(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/tap")) && rete_view_eq(req->method, RETE_VIEW_LIT("GET")))
        reted_tap_api(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/check")))
        api_check(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/prometheus/targets")))
        api_prometheus_targets(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/identity")) && post)
        api_identity(r, req);
    else if (rete_view_eq(p, RETE_VIEW_LIT("/api/v1/ca/rotate")) && post)
        api_ca_rotate(r, req);
    else {
        respond_error(req, 404, "unknown endpoint");
    }
}
