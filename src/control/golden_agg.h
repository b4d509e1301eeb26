/* Golden metrics in reted (docs/observability.md, "Golden metrics"): the
 * proxies' "stats" summaries (src/common/golden.h) summed into sliding
 * windows, per (reporter, route, service, source -> destination workload),
 * and read back grouped by service, workload, route or edge with success
 * rate, requests per second and latency percentiles.
 *
 * Windows: every combination keeps a ring of RETED_GOLDEN_SLOTS buckets of
 * `bucket_s` seconds (default RETE_GOLDEN_PERIOD_S: 10 s), a report landing
 * in the bucket of the time it arrives. The short window is the last
 * RETED_GOLDEN_SHORT buckets (1 m by default), the long one all of them
 * (10 m). A combination nothing was reported for in the long window is
 * forgotten: a proxy that stops reporting ages out.
 *
 * Memory: RETED_GOLDEN_SLOTS * sizeof(reted_golden_slot) (60 * 68 bytes,
 * about 4 KiB) plus its label text per combination, at most
 * RETED_GOLDEN_MAX_KEYS combinations (about 17 MiB at the bound); an entry
 * of a new combination beyond it is dropped and counted.
 *
 * Trust: a proxy speaks for its own half of an edge only. An entry whose
 * reporter is "source" must name the reporting proxy as its source
 * workload, one whose reporter is "destination" as its destination;
 * anything else is refused and counted.
 *
 * Threading: reted's loop thread only. Times are passed in (seconds on a
 * monotonic clock), so the windows are testable without waiting. */
#ifndef RETE_CONTROL_GOLDEN_AGG_H
#define RETE_CONTROL_GOLDEN_AGG_H

#include "golden.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define RETED_GOLDEN_SLOTS 60   /* the long window, in buckets */
#define RETED_GOLDEN_SHORT 6    /* the short window, in buckets */
#define RETED_GOLDEN_MAX_KEYS 4096

typedef struct reted_golden_slot {
    uint32_t bucket;            /* time / bucket_s; 0: empty */
    uint32_t requests, failures;
    uint32_t hist[RETE_GOLDEN_NBUCKETS];
} reted_golden_slot;

typedef struct reted_golden_key {
    char *labels[RETE_GL_KEY_N];
    uint32_t newest;            /* the newest bucket written */
    reted_golden_slot slots[RETED_GOLDEN_SLOTS];
} reted_golden_key;

typedef struct reted_golden {
    uint32_t bucket_s;
    json_t *index;              /* joined labels -> position in keys */
    reted_golden_key **keys;
    size_t n_keys, cap_keys;
    uint32_t swept;             /* the bucket of the last sweep */
} reted_golden;

/* What one report did, for reted's counters. */
typedef struct reted_golden_result {
    uint64_t accepted, refused, dropped; /* entries; dropped: by the proxy or RETED_GOLDEN_MAX_KEYS */
} reted_golden_result;

void reted_golden_init(reted_golden *g, uint32_t bucket_s);
void reted_golden_free(reted_golden *g);

/* Add a "stats" message from the proxy ns/name at time now_s. Malformed
 * entries are refused one by one; false only when the message itself has
 * no entries array. */
bool reted_golden_ingest(reted_golden *g, const json_t *msg, const char *ns, const char *name, int64_t now_s,
                         reted_golden_result *res);

typedef enum reted_golden_by {
    RETED_GOLDEN_BY_SERVICE,
    RETED_GOLDEN_BY_WORKLOAD,
    RETED_GOLDEN_BY_ROUTE,
    RETED_GOLDEN_BY_EDGE,
} reted_golden_by;

typedef struct reted_golden_query {
    reted_golden_by by;
    bool long_window;           /* 10 m (else 1 m) */
    const char *reporter;       /* "source", "destination"; NULL: the grouping's default */
    const char *ns;             /* NULL: all namespaces */
    const char *name;           /* NULL: every name */
} reted_golden_query;

/* The rows of a query at now_s: {"by","window","windowSeconds","reporter",
 * "items":[...]} (docs/observability.md gives the fields), rows sorted by
 * namespace and name, rows without requests left out. */
json_t *reted_golden_query_run(reted_golden *g, const reted_golden_query *q, int64_t now_s);

/* Forget what has aged out of the long window (also done as reports come). */
void reted_golden_sweep(reted_golden *g, int64_t now_s);

#endif
