/* reted's metric families on src/common/metrics.c (stats.h). Names, labels
 * and help texts are part of the interface: docs/operations.md lists them,
 * the system tests and bench/cpsim.py read them. */
#include "stats.h"

#include "alloc.h"
#include "log.h"
#include "reted.h"
#include "snapshot.h"

#include <stdlib.h>

const char *const reted_reg_reason_names[RETED_REG_N] = {
    [RETED_REG_MALFORMED] = "malformed", [RETED_REG_IDENTITY] = "identity",
    [RETED_REG_OWNER] = "owner",         [RETED_REG_ADDRESS] = "address",
    [RETED_REG_LABELS] = "labels",       [RETED_REG_EGRESS] = "egress",
    [RETED_REG_INVALID] = "invalid",
};

/* What a probe reads. */
enum {
    P_PROXIES,        /* i: 0 connected, 1 synced, 2 nacked, 3 registered */
    P_STORE_REVISION,
    P_CA_EXPIRY,
    P_STREAM_QUEUED,
    P_STREAM_BUFFERED, /* i: 0 all, 1 max */
    P_STREAM_SHARED,
    P_STREAM_BEHIND,
    P_HTTP_CONNS,      /* i: listener */
    P_HTTP_LIMIT,
    P_HTTP_REFUSED,    /* i: listener, k: reason */
    P_HTTP_IDLE,
    P_SNAPSHOTS,
    P_SNAPSHOT_BYTES,
    P_INDEX,
    P_HEAP,
};

static const char *const listener_names[2] = {"api", "xds"};

static rete_http_server *listener(const reted *r, unsigned i)
{
    return i == 0 ? r->api : r->xds;
}

static uint64_t probe_value(void *arg)
{
    const reted_stats_probe *p = arg;
    reted *r = p->r;
    switch (p->what) {
    case P_PROXIES: {
        uint64_t n = 0;
        for (reted_proxy *x = r->registry.proxies; x; x = x->next) {
            if (p->i == 3)
                n++;
            else if (x->stream)
                n += p->i == 0   ? 1
                     : p->i == 1 ? !x->nacked && x->acked_version == x->sent_version
                                 : x->nacked;
        }
        return n;
    }
    case P_STORE_REVISION: return r->store->ops->revision(r->store);
    case P_STREAM_QUEUED:
    case P_STREAM_BUFFERED:
    case P_STREAM_SHARED:
    case P_STREAM_BEHIND: {
        rete_http_stream_stats ss;
        rete_http_server_stream_stats(r->xds, &ss);
        return p->what == P_STREAM_QUEUED    ? ss.queued_msgs
               : p->what == P_STREAM_SHARED  ? ss.shared_bytes
               : p->what == P_STREAM_BEHIND  ? ss.closed_behind
               : p->i == 0                   ? ss.buffered_bytes
                                             : ss.max_buffered_bytes;
    }
    case P_HTTP_CONNS:
    case P_HTTP_REFUSED:
    case P_HTTP_IDLE: {
        rete_http_server_stats hs;
        rete_http_server_stats_get(listener(r, p->i), &hs);
        return p->what == P_HTTP_CONNS ? hs.conns : p->what == P_HTTP_IDLE ? hs.idle_closed : hs.refused[p->k];
    }
    case P_HTTP_LIMIT: return (p->i == 0 ? r->api_limits : r->xds_limits).max_conns;
    case P_SNAPSHOTS:
    case P_SNAPSHOT_BYTES: {
        size_t n, bytes;
        reted_snapshot_stats(r, &n, &bytes);
        return p->what == P_SNAPSHOTS ? n : bytes;
    }
    case P_INDEX: return r->index.n;
    case P_HEAP: return rete_alloc_in_use();
    default: return 0;
    }
}

static double probe_gauge(void *arg)
{
    const reted_stats_probe *p = arg;
    if (p->what == P_CA_EXPIRY)
        return (double)rete_ca_not_after(p->r->ca);
    return (double)probe_value(arg);
}

static void must(rete_rc rc, const char *what)
{
    if (rc != RETE_OK) {
        rete_err("reted: metrics: cannot declare %s", what);
        abort();
    }
}

static rete_metric_family family(reted_stats *s, const char *name, const char *help, rete_metric_type t,
                                 const char *label)
{
    const char *labels[1] = {label};
    rete_metric_desc d = {.name = name, .help = help, .type = t, .labels = labels, .nlabels = label != NULL};
    rete_metric_family f;
    must(rete_metrics_declare(s->reg, &d, &f), name);
    return f;
}

static void family2(reted_stats *s, rete_metric_family *f, const char *name, const char *help,
                           rete_metric_type t, const char *l1, const char *l2)
{
    const char *labels[2] = {l1, l2};
    rete_metric_desc d = {.name = name, .help = help, .type = t, .labels = labels, .nlabels = 2};
    must(rete_metrics_declare(s->reg, &d, f), name);
}

/* The series of f with label values v1, v2 (NULL: fewer labels). */
static rete_metric series(reted_stats *s, rete_metric_family f, const char *v1, const char *v2)
{
    rete_view v[2] = {rete_view_cstr(v1 ? v1 : ""), rete_view_cstr(v2 ? v2 : "")};
    rete_metric m;
    must(rete_metrics_series(s->reg, f, v, v2 ? 2 : v1 ? 1 : 0, &m), "a series");
    return m;
}

/* A series read at scrape time. */
static void probe(reted_stats *s, reted *r, rete_metric m, bool counter, unsigned what, unsigned i,
                  unsigned k)
{
    if (s->n_probes == RETED_STATS_MAX_PROBES) {
        rete_err("reted: metrics: RETED_STATS_MAX_PROBES too small");
        abort();
    }
    reted_stats_probe *p = &s->probes[s->n_probes++];
    *p = (reted_stats_probe){.r = r, .what = what, .i = i, .k = k};
    must(counter ? rete_metrics_counter_fn(s->reg, m, probe_value, p)
                 : rete_metrics_gauge_fn(s->reg, m, probe_gauge, p),
         "a probe");
}

static void gauge1(reted_stats *s, reted *r, const char *name, const char *help, unsigned what)
{
    probe(s, r, series(s, family(s, name, help, RETE_METRIC_GAUGE, NULL), NULL, NULL), false, what, 0, 0);
}

void reted_stats_init(reted_stats *s, reted *r)
{
    *s = (reted_stats){.reg = rete_metrics_new()};
    s->shard = rete_metrics_shard_new(s->reg);
    rete_metric_family f;

    f = family(s, "rete_reted_proxies", "Proxies reted knows, by state.", RETE_METRIC_GAUGE, "state");
    static const char *const states[4] = {"connected", "synced", "nacked", "registered"};
    for (unsigned i = 0; i < 4; i++)
        probe(s, r, series(s, f, states[i], NULL), false, P_PROXIES, i, 0);

    f = family(s, "rete_reted_config_pushes_total", "Configuration snapshots sent to proxies.",
               RETE_METRIC_COUNTER, NULL);
    s->pushes = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_config_compiles_total",
               "Snapshots compiled (one per proxy scope a change touched).", RETE_METRIC_COUNTER, NULL);
    s->compiles = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_config_responses_total", "Proxy answers to pushes, by result.",
               RETE_METRIC_COUNTER, "result");
    s->acks = series(s, f, "ack", NULL);
    s->nacks = series(s, f, "nack", NULL);
    f = family(s, "rete_reted_certificates_total", "Certificate requests, by result.", RETE_METRIC_COUNTER,
               "result");
    s->certs_issued = series(s, f, "issued", NULL);
    s->certs_refused = series(s, f, "refused", NULL);
    f = family(s, "rete_reted_applies_total", "Apply requests, by result.", RETE_METRIC_COUNTER, "result");
    s->applies_ok = series(s, f, "ok", NULL);
    s->applies_rejected = series(s, f, "rejected", NULL);
    gauge1(s, r, "rete_reted_store_revision", "The store's revision counter.", P_STORE_REVISION);
    gauge1(s, r, "rete_reted_ca_expiry_timestamp_seconds", "When the signing CA certificate expires.",
           P_CA_EXPIRY);

    gauge1(s, r, "rete_reted_stream_messages_queued",
           "Config stream messages not yet written, all streams.", P_STREAM_QUEUED);
    f = family(s, "rete_reted_stream_buffered_bytes",
               "Bytes config streams hold of their own (queued copies, ciphertext the kernel has not "
               "taken), by stream: all, or the one holding most.",
               RETE_METRIC_GAUGE, "stream");
    probe(s, r, series(s, f, "all", NULL), false, P_STREAM_BUFFERED, 0, 0);
    probe(s, r, series(s, f, "max", NULL), false, P_STREAM_BUFFERED, 1, 0);
    f = family(s, "rete_reted_stream_buffered_bytes_limit",
               "The most one stream may hold before it is closed as too far behind.", RETE_METRIC_GAUGE,
               NULL);
    rete_metrics_gauge_set(s->reg, series(s, f, NULL, NULL), (double)RETE_HTTP_STREAM_LIMIT);
    gauge1(s, r, "rete_reted_stream_shared_bytes_pending",
           "Bytes of shared snapshot bodies still to send (held once per snapshot, not per stream).",
           P_STREAM_SHARED);
    f = family(s, "rete_reted_streams_closed_behind_total",
               "Config streams closed because their reader fell too far behind.", RETE_METRIC_COUNTER, NULL);
    probe(s, r, series(s, f, NULL, NULL), true, P_STREAM_BEHIND, 0, 0);
    f = family(s, "rete_reted_streams_closed_cert_expired_total",
               "Config streams closed because the proxy's newest certificate reted knows of had expired.",
               RETE_METRIC_COUNTER, NULL);
    s->closed_cert_expired = series(s, f, NULL, NULL);

    f = family(s, "rete_reted_http_connections", "Open connections, by listener.", RETE_METRIC_GAUGE,
               "listener");
    for (unsigned i = 0; i < 2; i++)
        probe(s, r, series(s, f, listener_names[i], NULL), false, P_HTTP_CONNS, i, 0);
    f = family(s, "rete_reted_http_connections_limit", "The most open connections a listener takes.",
               RETE_METRIC_GAUGE, "listener");
    for (unsigned i = 0; i < 2; i++)
        probe(s, r, series(s, f, listener_names[i], NULL), false, P_HTTP_LIMIT, i, 0);
    family2(s, &f, "rete_reted_http_refused_total",
            "Connections and requests refused before a handler saw them, by listener and reason.",
            RETE_METRIC_COUNTER, "listener", "reason");
    for (unsigned i = 0; i < 2; i++)
        for (unsigned k = 0; k < RETE_HTTP_REFUSED_N; k++)
            probe(s, r, series(s, f, listener_names[i], rete_http_refusal_names[k]), true, P_HTTP_REFUSED,
                  i, k);
    f = family(s, "rete_reted_http_idle_closed_total",
               "Kept-alive connections closed after the idle timeout.", RETE_METRIC_COUNTER, "listener");
    for (unsigned i = 0; i < 2; i++)
        probe(s, r, series(s, f, listener_names[i], NULL), true, P_HTTP_IDLE, i, 0);

    gauge1(s, r, "rete_reted_snapshots", "Compiled snapshots cached (one per proxy scope in use).",
           P_SNAPSHOTS);
    gauge1(s, r, "rete_reted_snapshot_bytes",
           "Bytes of every compiled snapshot alive (entries, scopes, message bodies; documents are "
           "shared with the index and not counted).",
           P_SNAPSHOT_BYTES);
    gauge1(s, r, "rete_reted_index_resources", "Resources in reted's in-memory index of the store.",
           P_INDEX);
    gauge1(s, r, "rete_reted_heap_bytes", "Heap memory in use (allocated and not freed), all of reted.",
           P_HEAP);

    f = family(s, "rete_reted_registrations_total",
               "Config stream hellos that registered or attached a Workload.", RETE_METRIC_COUNTER, NULL);
    s->registrations_ok = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_registrations_refused_total", "Config stream hellos refused, by reason.",
               RETE_METRIC_COUNTER, "reason");
    for (unsigned i = 0; i < RETED_REG_N; i++)
        s->registrations_refused[i] = series(s, f, reted_reg_reason_names[i], NULL);
}

void reted_stats_free(reted_stats *s)
{
    rete_metrics_shard_free(&s->shard);
    rete_metrics_free(s->reg);
    s->reg = NULL;
}

char *reted_stats_render(reted_stats *s, size_t *len)
{
    return rete_metrics_render(s->reg, len);
}
