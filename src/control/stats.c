/* reted's metric families on src/common/metrics.c (stats.h). Names, labels
 * and help texts are part of the interface: docs/operations.md lists them,
 * the system tests and bench/cpsim.py read them. */
#include "stats.h"

#include "log.h"

#include <stdlib.h>

const char *const reted_reg_reason_names[RETED_REG_N] = {
    [RETED_REG_MALFORMED] = "malformed", [RETED_REG_IDENTITY] = "identity",
    [RETED_REG_OWNER] = "owner",         [RETED_REG_ADDRESS] = "address",
    [RETED_REG_LABELS] = "labels",       [RETED_REG_EGRESS] = "egress",
    [RETED_REG_INVALID] = "invalid",
};

const char *const reted_listener_names[2] = {"api", "xds"};

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

static rete_metric gauge1(reted_stats *s, const char *name, const char *help)
{
    return series(s, family(s, name, help, RETE_METRIC_GAUGE, NULL), NULL, NULL);
}

void reted_stats_init(reted_stats *s)
{
    *s = (reted_stats){.reg = rete_metrics_new()};
    s->shard = rete_metrics_shard_new(s->reg);
    rete_metric_family f;

    f = family(s, "rete_reted_proxies", "Proxies reted knows, by state.", RETE_METRIC_GAUGE, "state");
    static const char *const states[RETED_PROXY_STATES] = {"connected", "synced", "nacked", "registered"};
    for (unsigned i = 0; i < RETED_PROXY_STATES; i++)
        s->proxies[i] = series(s, f, states[i], NULL);

    f = family(s, "rete_reted_config_pushes_total", "Configuration snapshots sent to proxies.",
               RETE_METRIC_COUNTER, NULL);
    s->pushes = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_config_resumes_total",
               "New streams answered with an empty delta: the proxy held this replica's current snapshot.",
               RETE_METRIC_COUNTER, NULL);
    s->resumes = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_config_compiles_total",
               "Snapshots compiled (one per proxy scope a change touched).", RETE_METRIC_COUNTER, NULL);
    s->compiles = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_config_patches_total",
               "Snapshots patched instead of compiled again: a change that kept its resource's scope "
               "(a route's weights) puts its new text in each snapshot holding it; a Workload created, "
               "deleted or changed enters, leaves or is rewritten in the snapshots of its Services.",
               RETE_METRIC_COUNTER, NULL);
    s->patches = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_config_responses_total", "Proxy answers to pushes, by result.",
               RETE_METRIC_COUNTER, "result");
    s->acks = series(s, f, "ack", NULL);
    s->nacks = series(s, f, "nack", NULL);
    f = family(s, "rete_reted_stats_reports_total", "Golden-metrics summaries received from proxies.",
               RETE_METRIC_COUNTER, NULL);
    s->golden_reports = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_stats_entries_total",
               "Entries of golden-metrics summaries, by result: accepted, refused (malformed, or not the "
               "reporting proxy's own edge), dropped (by the proxy's report bound or reted's key bound).",
               RETE_METRIC_COUNTER, "result");
    s->golden_entries[0] = series(s, f, "accepted", NULL);
    s->golden_entries[1] = series(s, f, "refused", NULL);
    s->golden_entries[2] = series(s, f, "dropped", NULL);
    f = family(s, "rete_reted_certificates_total", "Certificate requests, by result.", RETE_METRIC_COUNTER,
               "result");
    s->certs_issued = series(s, f, "issued", NULL);
    s->certs_refused = series(s, f, "refused", NULL);
    f = family(s, "rete_reted_applies_total", "Apply requests, by result.", RETE_METRIC_COUNTER, "result");
    s->applies_ok = series(s, f, "ok", NULL);
    s->applies_rejected = series(s, f, "rejected", NULL);
    f = family(s, "rete_reted_store_watch_changes_total",
               "Changes the replicated store's watch delivered, by origin: this replica's own writes "
               "(already applied) or another replica's.",
               RETE_METRIC_COUNTER, "origin");
    s->store_changes_own = series(s, f, "own", NULL);
    s->store_changes_remote = series(s, f, "remote", NULL);
    f = family(s, "rete_reted_store_relists_total",
               "Reloads of every resource because the store's watch could not follow (compaction, overflow).",
               RETE_METRIC_COUNTER, NULL);
    s->store_relists = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_ca_reloads_total",
               "Loads of a CA another replica published to the store (--ca-kek: a rotation step elsewhere).",
               RETE_METRIC_COUNTER, NULL);
    s->ca_reloads = series(s, f, NULL, NULL);
    family2(s, &s->ca_kek, "rete_reted_ca_kek",
            "The key-encryption keys this replica holds (--ca-kek: use write, --ca-kek-previous: use read), "
            "by id: 1 for the one the shared CA record is sealed with as last read, else 0.",
            RETE_METRIC_GAUGE, "kek", "use");
    {
        /* What one apply costs the loop: the target is <= 10 ms at
         * 12,000 resources stored (docs/control-plane.md). */
        static const double b[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                   0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
        rete_metric_desc d = {.name = "rete_reted_apply_cpu_seconds",
                              .help = "CPU time of reted's loop thread per apply request (parse, "
                                      "validation, store write), in seconds.",
                              .type = RETE_METRIC_HISTOGRAM,
                              .buckets = b,
                              .nbuckets = sizeof(b) / sizeof(b[0])};
        rete_metric_family fa;
        must(rete_metrics_declare(s->reg, &d, &fa), d.name);
        s->apply_cpu = series(s, fa, NULL, NULL);
    }
    s->store_revision = gauge1(s, "rete_reted_store_revision", "The store's revision counter.");
    s->leader = gauge1(s, "rete_reted_leader",
                       "1 while this replica leads the jobs that run once (always 1 on SQLite), else 0.");
    s->ca_expiry = gauge1(s, "rete_reted_ca_expiry_timestamp_seconds", "When the signing CA certificate expires.");

    s->stream_queued = gauge1(s, "rete_reted_stream_messages_queued",
           "Config stream messages not yet written, all streams.");
    f = family(s, "rete_reted_stream_buffered_bytes",
               "Bytes config streams hold of their own (queued copies, ciphertext the kernel has not "
               "taken), by stream: all, or the one holding most.",
               RETE_METRIC_GAUGE, "stream");
    s->stream_buffered[0] = series(s, f, "all", NULL);
    s->stream_buffered[1] = series(s, f, "max", NULL);
    f = family(s, "rete_reted_stream_buffered_bytes_limit",
               "The most one stream may hold before it is closed as too far behind.", RETE_METRIC_GAUGE,
               NULL);
    rete_metrics_gauge_set(s->reg, series(s, f, NULL, NULL), (double)RETE_HTTP_STREAM_LIMIT);
    s->stream_shared = gauge1(s, "rete_reted_stream_shared_bytes_pending",
           "Bytes of shared snapshot bodies still to send (held once per snapshot, not per stream).");
    f = family(s, "rete_reted_streams_closed_behind_total",
               "Config streams closed because their reader fell too far behind.", RETE_METRIC_COUNTER, NULL);
    s->streams_closed_behind = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_streams_closed_cert_expired_total",
               "Config streams closed because the proxy's newest certificate reted knows of had expired.",
               RETE_METRIC_COUNTER, NULL);
    s->closed_cert_expired = series(s, f, NULL, NULL);

    f = family(s, "rete_reted_http_connections", "Open connections, by listener.", RETE_METRIC_GAUGE,
               "listener");
    for (unsigned i = 0; i < 2; i++)
        s->http_conns[i] = series(s, f, reted_listener_names[i], NULL);
    f = family(s, "rete_reted_http_connections_limit", "The most open connections a listener takes.",
               RETE_METRIC_GAUGE, "listener");
    for (unsigned i = 0; i < 2; i++)
        s->http_limit[i] = series(s, f, reted_listener_names[i], NULL);
    family2(s, &f, "rete_reted_http_refused_total",
            "Connections and requests refused before a handler saw them, by listener and reason.",
            RETE_METRIC_COUNTER, "listener", "reason");
    for (unsigned i = 0; i < 2; i++)
        for (unsigned k = 0; k < RETE_HTTP_REFUSED_N; k++)
            s->http_refused[i][k] = series(s, f, reted_listener_names[i], rete_http_refusal_names[k]);
    f = family(s, "rete_reted_http_idle_closed_total",
               "Kept-alive connections closed after the idle timeout.", RETE_METRIC_COUNTER, "listener");
    for (unsigned i = 0; i < 2; i++)
        s->http_idle[i] = series(s, f, reted_listener_names[i], NULL);

    s->snapshots = gauge1(s, "rete_reted_snapshots", "Compiled snapshots cached (one per proxy scope in use).");
    s->snapshot_bytes = gauge1(s, "rete_reted_snapshot_bytes",
           "Bytes of every compiled snapshot alive (entries, scopes, message bodies; documents are "
           "shared with the index and not counted).");
    s->index_resources = gauge1(s, "rete_reted_index_resources", "Resources in reted's in-memory index of the store.");
    s->heap_bytes = gauge1(s, "rete_reted_heap_bytes", "Heap memory in use (allocated and not freed), all of reted.");

    f = family(s, "rete_reted_registrations_total",
               "Config stream hellos that registered or attached a Workload.", RETE_METRIC_COUNTER, NULL);
    s->registrations_ok = series(s, f, NULL, NULL);
    f = family(s, "rete_reted_registrations_refused_total", "Config stream hellos refused, by reason.",
               RETE_METRIC_COUNTER, "reason");
    for (unsigned i = 0; i < RETED_REG_N; i++)
        s->registrations_refused[i] = series(s, f, reted_reg_reason_names[i], NULL);
    f = family(s, "rete_reted_registrations_expired_total",
               "Proxy-registered Workloads the leader removed because no replica held their proxy's stream "
               "for the grace period.",
               RETE_METRIC_COUNTER, NULL);
    s->registrations_expired = series(s, f, NULL, NULL);
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
