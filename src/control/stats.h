/* reted's /metrics: every family declared once on the shared registry
 * (src/common/metrics.h). Counters are incremented where things happen
 * (reted_count); series whose value another module keeps (the registry's
 * proxies, the snapshot cache, the listeners, the store, the CA) are read at
 * scrape time by callbacks that scrape.c binds. This module knows no other
 * reted module: any of them may count.
 *
 * Threading: reted runs one loop thread; it owns the one shard, so an
 * increment is two plain moves. Scrapes run on the same thread. */
#ifndef RETE_CONTROL_STATS_H
#define RETE_CONTROL_STATS_H

#include "http.h"
#include "metrics.h"

#include <stddef.h>

/* The states of rete_reted_proxies, in the order rendered. */
typedef enum reted_proxy_state {
    RETED_PROXY_CONNECTED,
    RETED_PROXY_SYNCED,   /* connected, acknowledged what it was last sent */
    RETED_PROXY_NACKED,   /* connected, refused what it was last sent */
    RETED_PROXY_REGISTERED, /* known, connected or within the grace period */
    RETED_PROXY_STATES
} reted_proxy_state;

/* The listener label's values, by index of http_conns etc. */
extern const char *const reted_listener_names[2];

/* Why a config stream's hello was refused (the reason label of
 * rete_reted_registrations_refused_total; docs/control-plane.md). */
typedef enum reted_reg_reason {
    RETED_REG_MALFORMED, /* no name or address, a second hello on a stream */
    RETED_REG_IDENTITY,  /* certificate not a workload identity, or another ns/sa named */
    RETED_REG_OWNER,     /* the record belongs to another identity */
    RETED_REG_ADDRESS,   /* not the connection's address, or not the operator's record's */
    RETED_REG_LABELS,    /* labels beyond what the operator admits */
    RETED_REG_EGRESS,    /* egress beyond what the operator admits */
    RETED_REG_INVALID,   /* the Workload fails validation, or the store failed */
    RETED_REG_N
} reted_reg_reason;

typedef struct reted_stats {
    rete_metrics *reg;
    rete_metrics_shard *shard; /* the loop thread's */
    rete_metric pushes;        /* rete_reted_config_pushes_total */
    rete_metric resumes;       /* rete_reted_config_resumes_total */
    rete_metric compiles;      /* rete_reted_config_compiles_total */
    rete_metric patches;       /* rete_reted_config_patches_total */
    rete_metric acks, nacks;   /* rete_reted_config_responses_total{result} */
    rete_metric certs_issued, certs_refused;
    rete_metric applies_ok, applies_rejected;
    /* rete_reted_store_watch_changes_total{origin}, rete_reted_store_relists_total */
    rete_metric store_changes_own, store_changes_remote, store_relists;
    rete_metric ca_reloads;         /* rete_reted_ca_reloads_total */
    rete_metric_family ca_kek;      /* rete_reted_ca_kek{kek,use}: its series made at start (scrape.c) */
    rete_metric apply_cpu;         /* histogram: loop-thread CPU seconds per apply */
    rete_metric closed_cert_expired;
    rete_metric golden_reports;                /* rete_reted_stats_reports_total */
    rete_metric golden_entries[3];             /* rete_reted_stats_entries_total{result}: accepted, refused, dropped */
    rete_metric registrations_ok;
    rete_metric registrations_refused[RETED_REG_N];
    rete_metric registrations_expired; /* rete_reted_registrations_expired_total (the leader's sweep) */
    /* read at scrape time (scrape.c binds them) */
    rete_metric proxies[RETED_PROXY_STATES];   /* rete_reted_proxies{state} */
    rete_metric store_revision, ca_expiry;
    rete_metric leader; /* rete_reted_leader */
    rete_metric stream_queued, stream_buffered[2], stream_shared; /* [0] all, [1] max */
    rete_metric streams_closed_behind;
    rete_metric http_conns[2], http_limit[2], http_idle[2]; /* by listener: api, xds */
    rete_metric http_refused[2][RETE_HTTP_REFUSED_N];
    rete_metric snapshots, snapshot_bytes, index_resources, heap_bytes;
} reted_stats;

/* Declares every family of reted on a new registry and resolves every
 * series (a series is rendered from then on, 0 until counted or bound).
 * Aborts on a declaration error: the families are fixed, so that is a bug,
 * not a condition. */
void reted_stats_init(reted_stats *s);
void reted_stats_free(reted_stats *s);

/* One more of counter m. */
static inline void reted_count(reted_stats *s, rete_metric m)
{
    rete_metrics_inc(s->shard, m, 1);
}

static inline void reted_observe(reted_stats *s, rete_metric m, double v)
{
    rete_metrics_observe(s->shard, m, v);
}

/* The exposition text (malloc'ed, *len set). */
char *reted_stats_render(reted_stats *s, size_t *len);

/* The reason label's values, by reted_reg_reason. */
extern const char *const reted_reg_reason_names[RETED_REG_N];

#endif
