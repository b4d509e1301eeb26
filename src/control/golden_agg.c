/* Golden metrics in reted: see golden_agg.h. */
#include "golden_agg.h"
#include "alloc.h"
#include "vec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LABEL_MAX 253 /* a label value of an entry (a DNS name, a Kubernetes name) */

void reted_golden_init(reted_golden *g, uint32_t bucket_s)
{
    *g = (reted_golden){.bucket_s = bucket_s ? bucket_s : RETE_GOLDEN_PERIOD_S, .index = json_object()};
}

static void key_free(reted_golden_key *k)
{
    for (size_t i = 0; i < RETE_GL_KEY_N; i++)
        free(k->labels[i]);
    free(k);
}

void reted_golden_free(reted_golden *g)
{
    for (size_t i = 0; i < g->n_keys; i++)
        key_free(g->keys[i]);
    free(g->keys);
    json_decref(g->index);
    *g = (reted_golden){0};
}

/* Bucket numbers start at 1 (0 marks an empty slot). */
static uint32_t bucket_of(const reted_golden *g, int64_t now_s)
{
    return (uint32_t)((now_s < 0 ? 0 : now_s) / g->bucket_s) + 1;
}

static size_t join(const char *const *v, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < RETE_GL_KEY_N; i++) {
        size_t len = strlen(v[i]);
        memcpy(out + n, v[i], len);
        n += len;
        out[n++] = '\x1f';
    }
    return n;
}

void reted_golden_sweep(reted_golden *g, int64_t now_s)
{
    uint32_t now = bucket_of(g, now_s);
    g->swept = now;
    for (size_t i = 0; i < g->n_keys;) {
        reted_golden_key *k = g->keys[i];
        if (now - k->newest < RETED_GOLDEN_SLOTS) {
            i++;
            continue;
        }
        char key[RETE_GL_KEY_N * (LABEL_MAX + 1)];
        json_object_deln(g->index, key, join((const char *const *)k->labels, key));
        key_free(k);
        g->keys[i] = g->keys[--g->n_keys];
        if (i < g->n_keys) {
            reted_golden_key *moved = g->keys[i];
            json_object_setn_new(g->index, key, join((const char *const *)moved->labels, key),
                                 json_integer((json_int_t)i));
        }
    }
}

static bool counts_ok(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static uint32_t add32(uint32_t a, uint64_t b)
{
    uint64_t s = a + b;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* One entry: 8 label strings, requests, failures, the histogram. */
static int ingest_entry(reted_golden *g, const json_t *e, const char *ns, const char *name, uint32_t now)
{
    if (!json_is_array(e) || json_array_size(e) != RETE_GL_KEY_N + 3)
        return -1;
    const char *v[RETE_GL_KEY_N];
    for (size_t i = 0; i < RETE_GL_KEY_N; i++) {
        v[i] = json_string_value(json_array_get(e, i));
        if (!v[i] || !v[i][0] || strlen(v[i]) > LABEL_MAX || strchr(v[i], '\x1f'))
            return -1;
    }
    uint64_t req, fail, h[RETE_GOLDEN_NBUCKETS], hsum = 0;
    const json_t *hist = json_array_get(e, RETE_GL_KEY_N + 2);
    if (!counts_ok(json_array_get(e, RETE_GL_KEY_N), &req) ||
        !counts_ok(json_array_get(e, RETE_GL_KEY_N + 1), &fail) || fail > req || !json_is_array(hist) ||
        json_array_size(hist) != RETE_GOLDEN_NBUCKETS)
        return -1;
    for (size_t b = 0; b < RETE_GOLDEN_NBUCKETS; b++) {
        if (!counts_ok(json_array_get(hist, b), &h[b]))
            return -1;
        hsum += h[b];
    }
    (void)hsum; /* a request still timing may be counted before its duration: not checked */
    /* A proxy speaks for its own half of the edge only. */
    bool src = strcmp(v[RETE_GL_REPORTER], "source") == 0;
    if (!src && strcmp(v[RETE_GL_REPORTER], "destination") != 0)
        return -1;
    size_t wl = src ? RETE_GL_SRC_WORKLOAD : RETE_GL_DST_WORKLOAD;
    size_t wns = src ? RETE_GL_SRC_NAMESPACE : RETE_GL_DST_NAMESPACE;
    if (strcmp(v[wl], name) != 0 || strcmp(v[wns], ns) != 0)
        return -1;

    char key[RETE_GL_KEY_N * (LABEL_MAX + 1)];
    size_t klen = join(v, key);
    json_t *at = json_object_getn(g->index, key, klen);
    reted_golden_key *k;
    if (at) {
        k = g->keys[json_integer_value(at)];
    } else {
        if (g->n_keys >= RETED_GOLDEN_MAX_KEYS)
            return 0;
        k = rete_calloc(1, sizeof(*k));
        for (size_t i = 0; i < RETE_GL_KEY_N; i++)
            k->labels[i] = rete_strndup(v[i], strlen(v[i]));
        RETE_GROW(g->keys, g->cap_keys, g->n_keys + 1, 64);
        json_object_setn_new(g->index, key, klen, json_integer((json_int_t)g->n_keys));
        g->keys[g->n_keys++] = k;
    }
    reted_golden_slot *s = &k->slots[now % RETED_GOLDEN_SLOTS];
    if (s->bucket != now)
        *s = (reted_golden_slot){.bucket = now};
    s->requests = add32(s->requests, req);
    s->failures = add32(s->failures, fail);
    for (size_t b = 0; b < RETE_GOLDEN_NBUCKETS; b++)
        s->hist[b] = add32(s->hist[b], h[b]);
    k->newest = now;
    return 1;
}

bool reted_golden_ingest(reted_golden *g, const json_t *msg, const char *ns, const char *name, int64_t now_s,
                         reted_golden_result *res)
{
    *res = (reted_golden_result){0};
    const json_t *entries = json_object_get(msg, "entries");
    if (!json_is_array(entries))
        return false;
    uint32_t now = bucket_of(g, now_s);
    if (now != g->swept)
        reted_golden_sweep(g, now_s);
    const json_t *d = json_object_get(msg, "dropped");
    if (json_is_integer(d) && json_integer_value(d) > 0)
        res->dropped += (uint64_t)json_integer_value(d);
    size_t i;
    const json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (i >= RETE_GOLDEN_MAX_ENTRIES) {
            res->refused += json_array_size(entries) - i;
            break;
        }
        int r = ingest_entry(g, e, ns, name, now);
        if (r > 0)
            res->accepted++;
        else if (r == 0)
            res->dropped++;
        else
            res->refused++;
    }
    return true;
}

/* ---- queries ------------------------------------------------------------- */

typedef struct row {
    char key[4 * (LABEL_MAX + 1)];
    const reted_golden_key *first; /* its labels name the row */
    uint64_t requests, failures;
    uint64_t hist[RETE_GOLDEN_NBUCKETS];
    json_t *services;              /* by edge: the destination Services' FQDNs, each once */
} row;

/* "name.ns.svc..." -> name, ns (an FQDN without dots: name only). */
static void split_fqdn(const char *fqdn, char *name, char *ns, size_t len)
{
    const char *dot = strchr(fqdn, '.');
    size_t n = dot ? (size_t)(dot - fqdn) : strlen(fqdn);
    snprintf(name, len, "%.*s", (int)(n < len ? n : len - 1), fqdn);
    ns[0] = '\0';
    if (dot) {
        const char *d2 = strchr(dot + 1, '.');
        size_t m = d2 ? (size_t)(d2 - dot - 1) : strlen(dot + 1);
        snprintf(ns, len, "%.*s", (int)(m < len ? m : len - 1), dot + 1);
    }
}

/* The row's namespace and name as the grouping sees them. */
static void row_id(reted_golden_by by, const reted_golden_key *k, char *ns, char *name, size_t len)
{
    switch (by) {
    case RETED_GOLDEN_BY_SERVICE:
        split_fqdn(k->labels[RETE_GL_SERVICE], name, ns, len);
        break;
    case RETED_GOLDEN_BY_WORKLOAD:
    case RETED_GOLDEN_BY_EDGE: /* an edge by its destination */
        snprintf(ns, len, "%s", k->labels[RETE_GL_DST_NAMESPACE]);
        snprintf(name, len, "%s", k->labels[RETE_GL_DST_WORKLOAD]);
        break;
    case RETED_GOLDEN_BY_ROUTE:
        snprintf(ns, len, "%s", k->labels[RETE_GL_ROUTE_NAMESPACE]);
        snprintf(name, len, "%s", k->labels[RETE_GL_ROUTE_NAME]);
        break;
    default:
        ns[0] = name[0] = '\0';
        break;
    }
}

static size_t group_key(reted_golden_by by, const reted_golden_key *k, char *out)
{
    const char *const *l = (const char *const *)k->labels;
    const char *parts[4] = {NULL};
    switch (by) {
    case RETED_GOLDEN_BY_SERVICE:
        parts[0] = l[RETE_GL_SERVICE];
        break;
    case RETED_GOLDEN_BY_WORKLOAD:
        parts[0] = l[RETE_GL_DST_NAMESPACE], parts[1] = l[RETE_GL_DST_WORKLOAD];
        break;
    case RETED_GOLDEN_BY_ROUTE:
        parts[0] = l[RETE_GL_ROUTE_NAMESPACE], parts[1] = l[RETE_GL_ROUTE_NAME], parts[2] = l[RETE_GL_SERVICE];
        break;
    case RETED_GOLDEN_BY_EDGE:
    default:
        parts[0] = l[RETE_GL_SRC_NAMESPACE], parts[1] = l[RETE_GL_SRC_WORKLOAD];
        parts[2] = l[RETE_GL_DST_NAMESPACE], parts[3] = l[RETE_GL_DST_WORKLOAD];
        break;
    }
    size_t n = 0;
    for (size_t i = 0; i < 4 && parts[i]; i++) {
        size_t len = strlen(parts[i]);
        memcpy(out + n, parts[i], len);
        n += len;
        out[n++] = '\x1f';
    }
    out[n] = '\0';
    return n;
}

static json_t *ms_or_null(double v)
{
    return v < 0 ? json_null() : json_real(round(v * 1000) / 1000);
}

static json_t *row_json(reted_golden_by by, const row *r, uint32_t window_s)
{
    const char *const *l = (const char *const *)r->first->labels;
    char ns[LABEL_MAX + 1], name[LABEL_MAX + 1];
    row_id(by, r->first, ns, name, sizeof(ns));
    json_t *o = json_pack("{s:s,s:s}", "namespace", ns, "name", name);
    switch (by) {
    case RETED_GOLDEN_BY_SERVICE:
        json_object_set_new(o, "service", json_string(l[RETE_GL_SERVICE]));
        break;
    case RETED_GOLDEN_BY_ROUTE:
        json_object_set_new(o, "service", json_string(l[RETE_GL_SERVICE]));
        break;
    case RETED_GOLDEN_BY_EDGE:
        json_object_set_new(o, "source", json_pack("{s:s,s:s}", "namespace", l[RETE_GL_SRC_NAMESPACE], "workload",
                                                   l[RETE_GL_SRC_WORKLOAD]));
        json_object_set_new(o, "destination", json_pack("{s:s,s:s}", "namespace", l[RETE_GL_DST_NAMESPACE],
                                                        "workload", l[RETE_GL_DST_WORKLOAD]));
        json_object_set(o, "services", r->services);
        break;
    case RETED_GOLDEN_BY_WORKLOAD:
    default:
        break;
    }
    json_object_set_new(o, "requests", json_integer((json_int_t)r->requests));
    json_object_set_new(o, "failures", json_integer((json_int_t)r->failures));
    json_object_set_new(o, "successRate", json_real((double)(r->requests - r->failures) / (double)r->requests));
    json_object_set_new(o, "rps", json_real(round((double)r->requests / window_s * 1000) / 1000));
    json_object_set_new(o, "latencyMs",
                        json_pack("{s:o,s:o,s:o}", "p50", ms_or_null(rete_golden_quantile(r->hist, 0.50)), "p95",
                                  ms_or_null(rete_golden_quantile(r->hist, 0.95)), "p99",
                                  ms_or_null(rete_golden_quantile(r->hist, 0.99))));
    return o;
}

static int row_cmp(const void *a, const void *b)
{
    return strcmp(((const row *)a)->key, ((const row *)b)->key);
}

static bool has_string(const json_t *arr, const char *s)
{
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
        if (strcmp(json_string_value(v), s) == 0)
            return true;
    return false;
}

static const char *const by_names[] = {"service", "workload", "route", "edge"};

json_t *reted_golden_query_run(reted_golden *g, const reted_golden_query *q, int64_t now_s)
{
    uint32_t now = bucket_of(g, now_s);
    uint32_t nslots = q->long_window ? RETED_GOLDEN_SLOTS : RETED_GOLDEN_SHORT;
    const char *reporter = q->reporter ? q->reporter : q->by == RETED_GOLDEN_BY_ROUTE ? "source" : "destination";
    json_t *groups = json_object();
    row *rows = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < g->n_keys; i++) {
        const reted_golden_key *k = g->keys[i];
        if (strcmp(k->labels[RETE_GL_REPORTER], reporter) != 0 || now - k->newest >= nslots)
            continue;
        char ns[LABEL_MAX + 1], name[LABEL_MAX + 1];
        row_id(q->by, k, ns, name, sizeof(ns));
        if ((q->ns && strcmp(q->ns, ns) != 0) || (q->name && strcmp(q->name, name) != 0))
            continue;
        char gk[4 * (LABEL_MAX + 1)];
        size_t gl = group_key(q->by, k, gk);
        json_t *at = json_object_getn(groups, gk, gl);
        row *r;
        if (at) {
            r = &rows[json_integer_value(at)];
        } else {
            RETE_GROW(rows, cap, n + 1, 16);
            r = &rows[n];
            memset(r, 0, sizeof(*r));
            memcpy(r->key, gk, gl + 1);
            r->first = k;
            json_object_setn_new(groups, gk, gl, json_integer((json_int_t)n++));
            if (q->by == RETED_GOLDEN_BY_EDGE)
                r->services = json_array();
        }
        if (r->services && !has_string(r->services, k->labels[RETE_GL_SERVICE]))
            json_array_append_new(r->services, json_string(k->labels[RETE_GL_SERVICE]));
        for (uint32_t b = 0; b < nslots; b++) {
            const reted_golden_slot *s = &k->slots[(now - b) % RETED_GOLDEN_SLOTS];
            if (s->bucket != now - b)
                continue;
            r->requests += s->requests;
            r->failures += s->failures;
            for (size_t h = 0; h < RETE_GOLDEN_NBUCKETS; h++)
                r->hist[h] += s->hist[h];
        }
    }
    json_decref(groups);
    if (n)
        qsort(rows, n, sizeof(*rows), row_cmp);
    uint32_t window_s = nslots * g->bucket_s;
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        if (rows[i].requests)
            json_array_append_new(items, row_json(q->by, &rows[i], window_s));
    for (size_t i = 0; i < n; i++)
        json_decref(rows[i].services);
    free(rows);
    return json_pack("{s:s,s:s,s:I,s:s,s:o}", "by", by_names[q->by], "window", q->long_window ? "10m" : "1m",
                     "windowSeconds", (json_int_t)window_s, "reporter", reporter, "items", items);
}
