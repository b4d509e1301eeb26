/* reted's /metrics: every family declared once on the shared registry
 * (src/common/metrics.h), counters incremented where things happen, values
 * other modules keep (the registry's proxies, the snapshot cache, the
 * listeners, the store, the CA) read by callbacks at scrape time.
 *
 * Threading: reted runs one loop thread; it owns the one shard, so an
 * increment is two plain moves. Scrapes run on the same thread. */
#ifndef RETE_CONTROL_STATS_H
#define RETE_CONTROL_STATS_H

#include "metrics.h"

#include <stddef.h>

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

/* What a scrape-time probe reads (stats.c's callbacks; the values stay in
 * their modules). */
typedef struct reted_stats_probe {
    struct reted *r;
    unsigned what;
    unsigned i, k;
} reted_stats_probe;

#define RETED_STATS_MAX_PROBES 64

typedef struct reted_stats {
    rete_metrics *reg;
    rete_metrics_shard *shard; /* the loop thread's */
    rete_metric pushes;        /* rete_reted_config_pushes_total */
    rete_metric compiles;      /* rete_reted_config_compiles_total */
    rete_metric acks, nacks;   /* rete_reted_config_responses_total{result} */
    rete_metric certs_issued, certs_refused;
    rete_metric applies_ok, applies_rejected;
    rete_metric closed_cert_expired;
    rete_metric registrations_ok;
    rete_metric registrations_refused[RETED_REG_N];
    reted_stats_probe probes[RETED_STATS_MAX_PROBES];
    size_t n_probes;
} reted_stats;

/* Declares every family of reted on a new registry, binds the scrape-time
 * probes to r (which must outlive the registry). Aborts on a declaration
 * error: the families are fixed, so that is a bug, not a condition. */
void reted_stats_init(reted_stats *s, struct reted *r);
void reted_stats_free(reted_stats *s);

/* One more of counter m. */
static inline void reted_count(reted_stats *s, rete_metric m)
{
    rete_metrics_inc(s->shard, m, 1);
}

/* The exposition text (malloc'ed, *len set). */
char *reted_stats_render(reted_stats *s, size_t *len);

/* The reason label's values, by reted_reg_reason. */
extern const char *const reted_reg_reason_names[RETED_REG_N];

#endif
