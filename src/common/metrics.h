/* Metrics registry with Prometheus text exposition (format 0.0.4), shared by
 * rete-proxy and reted.
 *
 * Model
 * - A registry (`rete_metrics`) holds metric families. A family is declared
 *   once at start-up: name, help, type, a fixed list of label names, and for a
 *   histogram its bucket upper bounds (default: Envoy/Istio's
 *   RETE_METRICS_DEFAULT_BUCKETS, in the family's unit).
 * - A series is one combination of label values. It is resolved ONCE into a
 *   `rete_metric` handle (a cell index plus the family id, 8 bytes, passed by
 *   value): by the registry (`rete_metrics_series`, takes the registry mutex),
 *   or through a worker's shard cache (`rete_metrics_shard_series`, lock-free
 *   when the combination was seen before by that worker). Callers on the
 *   request path keep handles, e.g. per (route, destination) at config time.
 * - Each worker thread owns a shard (`rete_metrics_shard_new`). Counters and
 *   histograms are per shard and summed on scrape. A shard is written only by
 *   its owning thread: an increment is a relaxed atomic load, an add and a
 *   relaxed atomic store (plain moves on x86-64 and arm64; no lock, no atomic
 *   read-modify-write, no shared cache line with another worker).
 *
 * Storage and growth
 * - Every series owns a run of 64-bit cells at the same index in every shard
 *   (counter: 1; gauge: 1; histogram: one per bucket incl. +Inf, then the sum).
 *   A shard's cells live in segments of RETE_METRICS_SEG_CELLS cells reached
 *   through a fixed table of RETE_METRICS_MAX_SEGS segment pointers. Segments
 *   are allocated when series creation first needs them (under the registry
 *   mutex, in every shard at once), published with a release store, and never
 *   moved or freed before the shard is: the scraper and the writer never see a
 *   cell move. A series never straddles two segments.
 *
 * Gauges
 * - A gauge's value is `set value + sum over shards of add deltas`:
 *   `rete_metrics_gauge_set` stores a double in a registry-global cell (any
 *   thread, relaxed atomic store; for values one owner sets, e.g. a version),
 *   `rete_metrics_gauge_add` adds a signed delta to the caller's shard (single
 *   writer, for up/down counts such as active connections). Use one style per
 *   series. `rete_metrics_gauge_fn` binds a callback evaluated at scrape time
 *   instead (config version, cert expiry, pool sizes): it runs on the scraping
 *   thread with the registry mutex held and must not call into the registry.
 *   `rete_metrics_counter_fn` does the same for a counter kept elsewhere.
 *
 * Bounds
 * - Each family holds at most `max_series` series (default
 *   RETE_METRICS_DEFAULT_MAX_SERIES). Beyond it, or when the cell space
 *   (RETE_METRICS_MAX_SEGS * RETE_METRICS_SEG_CELLS cells) is exhausted, a new
 *   combination resolves to the family's overflow series, whose label values
 *   are all "overflow", and `rete_metrics_series_dropped_total{family=...}` is
 *   incremented (once per resolution that fell into overflow, not once per
 *   distinct combination; the dropped counter is rendered once non-zero).
 *   Overflow cells are reserved when the family is declared, so resolution
 *   never fails for a declared family. Overflow results are not cached in
 *   shards (the cache stays bounded by the series count): resolving a dropped
 *   combination takes the registry mutex each time.
 * - Label values longer than RETE_METRICS_MAX_VALUE_LEN bytes are cut to that
 *   length. Resolution waits for a scrape in progress (one mutex): resolve at
 *   config time, not per request, wherever the label values allow.
 *
 * Exposition
 * - `rete_metrics_render` writes families sorted by name, # HELP and # TYPE
 *   once per family, series in creation order, label values escaped (\\, \",
 *   \n; invalid UTF-8 replaced by U+FFFD), histograms as cumulative
 *   _bucket{le=...} ending with le="+Inf", then _sum and _count. Counter
 *   family names must end in "_total" (checked at declaration) and are
 *   exposed as declared. A series with labels appears once it has been
 *   resolved; a family without labels always shows its single series.
 *   A scrape is not a snapshot across cells: a histogram's _sum may trail its
 *   _count by in-flight observations; buckets and _count are consistent.
 * - When a shard is freed its counts are folded into the registry, so
 *   counters never go backwards when a worker exits.
 */
#ifndef RETE_METRICS_H
#define RETE_METRICS_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "result.h"
#include "view.h"

#define RETE_METRICS_MAX_FAMILIES 256
#define RETE_METRICS_MAX_LABELS 24
#define RETE_METRICS_MAX_BUCKETS 64
#define RETE_METRICS_MAX_VALUE_LEN 1024 /* label values are cut to this many bytes */
#define RETE_METRICS_DEFAULT_MAX_SERIES 10000
#define RETE_METRICS_SEG_SHIFT 12
#define RETE_METRICS_SEG_CELLS (1u << RETE_METRICS_SEG_SHIFT) /* 32 KiB per segment */
#define RETE_METRICS_MAX_SEGS 1024                            /* 4 Mi cells per shard */

/* Envoy's default histogram buckets, used by Istio for
 * istio_request_duration_milliseconds, istio_request_bytes and
 * istio_response_bytes. */
#define RETE_METRICS_DEFAULT_BUCKETS                                                               \
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,   \
        1800000, 3600000
extern const double rete_metrics_default_buckets[];
extern const size_t rete_metrics_default_nbuckets;

typedef enum rete_metric_type {
    RETE_METRIC_COUNTER,
    RETE_METRIC_GAUGE,
    RETE_METRIC_HISTOGRAM,
} rete_metric_type;

typedef struct rete_metrics rete_metrics;
typedef struct rete_metrics_shard rete_metrics_shard;

/* A declared family. */
typedef struct rete_metric_family {
    uint32_t id;
} rete_metric_family;

/* One series: its first cell and its family. Valid for the registry's life. */
typedef struct rete_metric {
    uint32_t cell;
    uint32_t family;
} rete_metric;

typedef struct rete_metric_desc {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*; counters end in "_total" */
    const char *help;
    rete_metric_type type;
    const char *const *labels; /* [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix, no "le" */
    size_t nlabels;            /* <= RETE_METRICS_MAX_LABELS */
    const double *buckets;     /* histograms: strictly increasing finite bounds; NULL: default */
    size_t nbuckets;           /* <= RETE_METRICS_MAX_BUCKETS */
    uint32_t max_series;       /* 0: RETE_METRICS_DEFAULT_MAX_SERIES */
} rete_metric_desc;

typedef double (*rete_metrics_gauge_cb)(void *arg);
typedef uint64_t (*rete_metrics_counter_cb)(void *arg);

/* Registry lifetime. Aborts on out-of-memory (alloc.h policy). The registry
 * copies every string it keeps. rete_metrics_free also frees shards still
 * attached: only once their threads have stopped. */
rete_metrics *rete_metrics_new(void);
void rete_metrics_free(rete_metrics *reg);

/* Declare a family. RETE_EINVAL: bad name, label, bucket list or type;
 * RETE_ELIMIT: too many families or labels, or no cells left for its
 * overflow series. Duplicate names are RETE_EINVAL. Thread-safe (mutex). */
RETE_MUST_CHECK rete_rc rete_metrics_declare(rete_metrics *reg, const rete_metric_desc *d,
                                             rete_metric_family *out);

/* Resolve label values (n must equal the family's label count; values are
 * copied) to a series handle, creating the series on first use. Returns
 * RETE_OK (possibly with the overflow series, see Bounds) or RETE_EINVAL for
 * a bad family or count. Takes the registry mutex. */
RETE_MUST_CHECK rete_rc rete_metrics_series(rete_metrics *reg, rete_metric_family f,
                                            const rete_view *values, size_t n, rete_metric *out);

/* Same, through the calling worker's shard cache: no lock when this worker
 * resolved the combination before. Call only from the shard's owner thread. */
RETE_MUST_CHECK rete_rc rete_metrics_shard_series(rete_metrics_shard *s, rete_metric_family f,
                                                  const rete_view *values, size_t n,
                                                  rete_metric *out);

/* Same, and *stable tells whether the handle is this combination's own
 * series (true) or the family's overflow series (false: the family is full;
 * a caller that keeps handles must resolve such a combination again next
 * time, so every drop is counted). */
RETE_MUST_CHECK rete_rc rete_metrics_shard_series_stable(rete_metrics_shard *s,
                                                         rete_metric_family f,
                                                         const rete_view *values, size_t n,
                                                         rete_metric *out, bool *stable);

/* One shard per worker thread. The shard is written only by that thread. */
rete_metrics_shard *rete_metrics_shard_new(rete_metrics *reg);
/* Fold the shard's counts into the registry, then free it; *sp becomes NULL. */
void rete_metrics_shard_free(rete_metrics_shard **sp);

/* Bind a scrape-time callback to a gauge series (replaces set/add values).
 * RETE_EINVAL if the series is not a gauge. */
RETE_MUST_CHECK rete_rc rete_metrics_gauge_fn(rete_metrics *reg, rete_metric m,
                                              rete_metrics_gauge_cb fn, void *arg);

/* Bind a scrape-time callback to a counter series whose count another
 * module keeps (a listener's refusals, say): the callback's value is
 * rendered instead of the shards' sum and must never go down. Same rules as
 * rete_metrics_gauge_fn (scraping thread, registry mutex held, no calls into
 * the registry). RETE_EINVAL if the series is not a counter. */
RETE_MUST_CHECK rete_rc rete_metrics_counter_fn(rete_metrics *reg, rete_metric m,
                                                rete_metrics_counter_cb fn, void *arg);

/* Histogram observation: linear scan of the bounds (<= 64, le is inclusive),
 * then two relaxed load/store pairs (bucket, sum). Owner thread only. */
void rete_metrics_observe(rete_metrics_shard *s, rete_metric m, double value);

/* Set a gauge's registry-global value. Any thread. */
void rete_metrics_gauge_set(rete_metrics *reg, rete_metric m, double value);

/* A counter's current total over all shards (for JSON status pages, tests).
 * Takes the registry mutex. 0 for a series that is not a counter; for one
 * bound to rete_metrics_counter_fn, the shards' sum (ask its owner). */
uint64_t rete_metrics_counter_value(rete_metrics *reg, rete_metric m);

/* One series as rete_metrics_walk hands it over: its position in the
 * family's creation order (a series keeps it for the registry's life), its
 * label values, and its counts summed over shards (a counter: one value; a
 * histogram: one per bucket, +Inf included, not cumulative; no sum). */
typedef void (*rete_metrics_walk_cb)(void *arg, size_t index, const rete_view *values, size_t n,
                                     const uint64_t *counts, size_t ncounts);

/* Call cb for every series of a counter or histogram family (not its
 * overflow series), in creation order; nothing for a gauge. Runs with the
 * registry mutex held: cb must not call into the registry. Costs one sum
 * over the shards per cell. For readers off the request path (the proxy's
 * golden-metrics summary). */
void rete_metrics_walk(rete_metrics *reg, rete_metric_family f, rete_metrics_walk_cb cb, void *arg);

/* Render the whole registry. Returns a NUL-terminated malloc'ed buffer (free
 * with free()), its length without the NUL in *len. Takes the registry mutex. */
char *rete_metrics_render(rete_metrics *reg, size_t *len);

/* ---- hot path, inline ---------------------------------------------------- */

/* The part of a shard the inlines need: a shard starts with this struct. */
struct rete_metrics_cells {
    _Atomic(_Atomic uint64_t *) seg[RETE_METRICS_MAX_SEGS];
};

static inline _Atomic uint64_t *rete_metrics__cell(rete_metrics_shard *s, uint32_t cell)
{
    struct rete_metrics_cells *c = (struct rete_metrics_cells *)(void *)s;
    _Atomic uint64_t *seg =
        atomic_load_explicit(&c->seg[cell >> RETE_METRICS_SEG_SHIFT], memory_order_acquire);
    return &seg[cell & (RETE_METRICS_SEG_CELLS - 1)];
}

/* Single-writer add: relaxed load + relaxed store, no read-modify-write. */
static inline void rete_metrics__add(_Atomic uint64_t *p, uint64_t delta)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

/* Counter increment. Owner thread only. Cost: segment-pointer load, cell
 * load, add, cell store: 8 instructions, no lock prefix, on x86-64 gcc -O2. */
static inline void rete_metrics_inc(rete_metrics_shard *s, rete_metric m, uint64_t delta)
{
    rete_metrics__add(rete_metrics__cell(s, m.cell), delta);
}

/* Shard-local gauge delta (summed on scrape). Owner thread only. */
static inline void rete_metrics_gauge_add(rete_metrics_shard *s, rete_metric m, int64_t delta)
{
    rete_metrics__add(rete_metrics__cell(s, m.cell), (uint64_t)delta);
}

#endif
