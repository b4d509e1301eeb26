/* Metrics registry: see metrics.h for the model, the threading contract and
 * the exposition rules. Everything here except rete_metrics_observe,
 * rete_metrics_gauge_set and the shard cache hit path runs under reg->mu. */
#include "metrics.h"
#include "alloc.h"
#include "hash.h"
#include "oatable.h"
#include "vec.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double rete_metrics_default_buckets[] = {RETE_METRICS_DEFAULT_BUCKETS};
const size_t rete_metrics_default_nbuckets =
    sizeof(rete_metrics_default_buckets) / sizeof(rete_metrics_default_buckets[0]);

#define MAX_CELLS ((uint64_t)RETE_METRICS_MAX_SEGS * RETE_METRICS_SEG_CELLS)
#define SEG_MASK (RETE_METRICS_SEG_CELLS - 1)
#define DROPPED_NAME "rete_metrics_series_dropped_total"

/* A series' label values are kept encoded as one key: for each value a
 * 4-byte length (host order) then its bytes. Keys are immutable and live as
 * long as the registry, so shard caches may point at them. */
typedef struct series {
    uint32_t cell;
    uint32_t fam;
    uint64_t hash;
    char *key;
    size_t keylen;
    bool visible; /* rendered once handed out (or incremented, for dropped) */
    rete_metrics_gauge_cb fn;
    rete_metrics_counter_cb cfn;
    void *arg;
} series;

typedef struct family {
    char *name;
    char *help;
    rete_metric_type type;
    char **labels;
    size_t nlabels;
    double *bounds;
    size_t nb;
    uint32_t max_series;
    uint32_t ncells; /* per series */
    uint32_t *ids;   /* regular series, creation order */
    size_t nids, capids;
    uint32_t *table; /* open addressing: series id + 1, 0 empty; holds overflow too */
    size_t tcap;
    uint32_t overflow; /* series id */
    bool has_dropped;
    uint32_t dropped; /* series id in the dropped family */
} family;

typedef struct cache_ent {
    uint64_t hash;
    uint32_t fam;
    const char *key; /* registry-owned */
    size_t keylen;
    rete_metric m;
} cache_ent;

struct rete_metrics_shard {
    struct rete_metrics_cells cells; /* first: the inlines cast to it */
    rete_metrics *reg;
    rete_metrics_shard *next;
    cache_ent *cache; /* owner thread only */
    size_t ccap, cn;
};

struct rete_metrics {
    pthread_mutex_t mu;
    family *fam[RETE_METRICS_MAX_FAMILIES];
    size_t nfam;
    series *series;
    size_t nseries, capseries;
    uint64_t next_cell;
    size_t nsegs;               /* segments allocated in every shard */
    rete_metrics_shard *shards; /* workers */
    rete_metrics_shard base;    /* folded counts of freed shards, dropped counters */
    rete_metrics_shard global;  /* gauge_set values (double bits) */
    rete_metric_family dropped_fam;
};

/* ---- small helpers ------------------------------------------------------- */

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static uint64_t load(_Atomic uint64_t *p)
{
    return atomic_load_explicit(p, memory_order_relaxed);
}

/* Label values are cut to RETE_METRICS_MAX_VALUE_LEN bytes everywhere they
 * are hashed, compared or stored, so a long header value costs bounded memory. */
static size_t vlen(rete_view v)
{
    return v.len < RETE_METRICS_MAX_VALUE_LEN ? v.len : RETE_METRICS_MAX_VALUE_LEN;
}

static uint64_t hash_values(const rete_view *v, size_t n)
{
    uint64_t h = RETE_FNV1A_INIT;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)vlen(v[i]);
        h = rete_fnv1a(rete_fnv1a(h, &len, sizeof(len)), v[i].p, len);
    }
    return h;
}

static bool key_eq(const char *key, size_t keylen, const rete_view *v, size_t n)
{
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        if (keylen - off < sizeof(len))
            return false;
        memcpy(&len, key + off, sizeof(len));
        off += sizeof(len);
        if (len != vlen(v[i]) || keylen - off < len)
            return false;
        if (len && memcmp(key + off, v[i].p, len) != 0)
            return false;
        off += len;
    }
    return off == keylen;
}

static char *key_encode(const rete_view *v, size_t n, size_t *keylen)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += sizeof(uint32_t) + vlen(v[i]);
    char *key = rete_malloc(total);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)vlen(v[i]);
        memcpy(key + off, &len, sizeof(len));
        off += sizeof(len);
        if (len)
            memcpy(key + off, v[i].p, len);
        off += len;
    }
    *keylen = total;
    return key;
}

/* Next value of an encoded key at *off. */
static rete_view key_next(const char *key, size_t *off)
{
    uint32_t len;
    memcpy(&len, key + *off, sizeof(len));
    rete_view v = rete_view_make(key + *off + sizeof(len), len);
    *off += sizeof(len) + len;
    return v;
}

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a > b && memcmp(s + a - b, suf, b) == 0;
}

/* ---- cells and shards ---------------------------------------------------- */

static void shard_grow(rete_metrics_shard *s, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        _Atomic uint64_t *seg = rete_calloc(RETE_METRICS_SEG_CELLS, sizeof(*seg));
        atomic_store_explicit(&s->cells.seg[i], seg, memory_order_release);
    }
}

static void shard_release_segs(rete_metrics_shard *s, size_t nsegs)
{
    for (size_t i = 0; i < nsegs; i++) {
        _Atomic uint64_t *seg = atomic_load_explicit(&s->cells.seg[i], memory_order_relaxed);
        free((void *)seg);
        atomic_store_explicit(&s->cells.seg[i], NULL, memory_order_relaxed);
    }
}

/* Reserve n consecutive cells inside one segment, growing every shard. */
static rete_rc alloc_cells(rete_metrics *reg, uint32_t n, uint32_t *cell)
{
    uint64_t c = reg->next_cell;
    if ((c & SEG_MASK) + n > RETE_METRICS_SEG_CELLS)
        c = (c | SEG_MASK) + 1;
    if (n > RETE_METRICS_SEG_CELLS || c + n > MAX_CELLS)
        return RETE_ELIMIT;
    size_t need = (size_t)((c + n + SEG_MASK) >> RETE_METRICS_SEG_SHIFT);
    if (need > reg->nsegs) {
        shard_grow(&reg->base, reg->nsegs, need);
        shard_grow(&reg->global, reg->nsegs, need);
        for (rete_metrics_shard *s = reg->shards; s; s = s->next)
            shard_grow(s, reg->nsegs, need);
        reg->nsegs = need;
    }
    reg->next_cell = c + n;
    *cell = (uint32_t)c;
    return RETE_OK;
}

static rete_rc series_new(rete_metrics *reg, uint32_t fi, const rete_view *v, size_t n,
                          uint64_t hash, uint32_t *id)
{
    family *f = reg->fam[fi];
    uint32_t cell;
    RETE_GUARD(alloc_cells(reg, f->ncells, &cell));
    RETE_GROW(reg->series, reg->capseries, reg->nseries + 1, 64);
    series *s = &reg->series[reg->nseries];
    *s = (series){.cell = cell, .fam = fi, .hash = hash};
    s->key = key_encode(v, n, &s->keylen);
    *id = (uint32_t)reg->nseries++;
    return RETE_OK;
}

/* A series id + 1 in a family's table; the hash is the series'. */
static bool table_slot_hash(const void *slot, const void *ctx, uint64_t *h)
{
    uint32_t v = *(const uint32_t *)slot;
    if (v)
        *h = ((const rete_metrics *)ctx)->series[v - 1].hash;
    return v != 0;
}

static void table_insert(rete_metrics *reg, family *f, uint32_t id)
{
    RETE_OA_RESERVE(f->table, f->tcap, f->nids + 2, 16, table_slot_hash, reg);
    size_t j = RETE_OA_FIRST(reg->series[id].hash, f->tcap);
    while (f->table[j])
        j = RETE_OA_NEXT(j, f->tcap);
    f->table[j] = id + 1;
}

static bool table_find(rete_metrics *reg, family *f, const rete_view *v, size_t n, uint64_t h,
                       uint32_t *id)
{
    if (!f->tcap)
        return false;
    for (size_t j = RETE_OA_FIRST(h, f->tcap); f->table[j]; j = RETE_OA_NEXT(j, f->tcap)) {
        series *s = &reg->series[f->table[j] - 1];
        if (s->hash == h && key_eq(s->key, s->keylen, v, n)) {
            *id = f->table[j] - 1;
            return true;
        }
    }
    return false;
}

static rete_metric handle_of(rete_metrics *reg, uint32_t id)
{
    return (rete_metric){.cell = reg->series[id].cell, .family = reg->series[id].fam};
}

/* Resolve under the mutex to a series id. *overflow tells the caller the
 * combination was dropped into the overflow series (not to be cached). */
static rete_rc resolve_locked(rete_metrics *reg, rete_metric_family fam, const rete_view *v,
                              size_t n, uint64_t h, uint32_t *out, bool *overflow)
{
    if (fam.id >= reg->nfam || n != reg->fam[fam.id]->nlabels || (n && !v))
        return RETE_EINVAL;
    family *f = reg->fam[fam.id];
    uint32_t id;
    bool found = table_find(reg, f, v, n, h, &id);
    if (!found && f->nids < f->max_series && series_new(reg, fam.id, v, n, h, &id) == RETE_OK) {
        RETE_GROW(f->ids, f->capids, f->nids + 1, 16);
        f->ids[f->nids++] = id;
        table_insert(reg, f, id);
        found = true;
    }
    *overflow = !found;
    if (!found) {
        id = f->overflow;
        if (f->has_dropped) {
            reg->series[f->dropped].visible = true;
            rete_metrics_inc(&reg->base, handle_of(reg, f->dropped), 1);
        }
    }
    reg->series[id].visible = true;
    *out = id;
    return RETE_OK;
}

rete_rc rete_metrics_series(rete_metrics *reg, rete_metric_family f, const rete_view *values,
                            size_t n, rete_metric *out)
{
    uint64_t h = hash_values(values, n);
    uint32_t id;
    bool overflow;
    pthread_mutex_lock(&reg->mu);
    rete_rc rc = resolve_locked(reg, f, values, n, h, &id, &overflow);
    if (rc == RETE_OK)
        *out = handle_of(reg, id);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static bool cache_slot_hash(const void *slot, const void *ctx, uint64_t *h)
{
    (void)ctx;
    const cache_ent *e = slot;
    *h = e->hash;
    return e->key != NULL;
}

static void cache_insert(rete_metrics_shard *s, cache_ent e)
{
    RETE_OA_RESERVE(s->cache, s->ccap, s->cn + 1, 64, cache_slot_hash, NULL);
    size_t j = RETE_OA_FIRST(e.hash, s->ccap);
    while (s->cache[j].key)
        j = RETE_OA_NEXT(j, s->ccap);
    s->cache[j] = e;
    s->cn++;
}

rete_rc rete_metrics_shard_series(rete_metrics_shard *s, rete_metric_family f,
                                  const rete_view *values, size_t n, rete_metric *out)
{
    bool stable;
    return rete_metrics_shard_series_stable(s, f, values, n, out, &stable);
}

rete_rc rete_metrics_shard_series_stable(rete_metrics_shard *s, rete_metric_family f,
                                         const rete_view *values, size_t n, rete_metric *out,
                                         bool *stable)
{
    *stable = false;
    uint64_t h = hash_values(values, n);
    uint64_t ch = h ^ ((uint64_t)f.id * 0x9e3779b97f4a7c15ull);
    for (size_t j = s->ccap ? RETE_OA_FIRST(ch, s->ccap) : 0; s->ccap && s->cache[j].key;
         j = RETE_OA_NEXT(j, s->ccap)) {
        cache_ent *e = &s->cache[j];
        if (e->hash == ch && e->fam == f.id && key_eq(e->key, e->keylen, values, n)) {
            *out = e->m;
            *stable = true;
            return RETE_OK;
        }
    }
    rete_metrics *reg = s->reg;
    uint32_t id;
    bool overflow;
    cache_ent e = {.hash = ch, .fam = f.id};
    pthread_mutex_lock(&reg->mu);
    rete_rc rc = resolve_locked(reg, f, values, n, h, &id, &overflow);
    if (rc == RETE_OK) {
        e.m = *out = handle_of(reg, id);
        e.key = reg->series[id].key; /* never NULL: key_encode allocates at least 1 byte */
        e.keylen = reg->series[id].keylen;
    }
    pthread_mutex_unlock(&reg->mu);
    RETE_GUARD(rc);
    if (!overflow)
        cache_insert(s, e);
    *stable = !overflow;
    return RETE_OK;
}

/* ---- declaration --------------------------------------------------------- */

static void family_free(family *f)
{
    if (!f)
        return;
    free(f->name);
    free(f->help);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->labels);
    free(f->bounds);
    free(f->ids);
    free(f->table);
    free(f);
}

static rete_rc validate(rete_metrics *reg, const rete_metric_desc *d)
{
    if (!d || !valid_name(d->name, true) || !d->help)
        return RETE_EINVAL;
    switch (d->type) {
    case RETE_METRIC_COUNTER:
        if (!has_suffix(d->name, "_total"))
            return RETE_EINVAL;
        break;
    case RETE_METRIC_GAUGE:
        break;
    case RETE_METRIC_HISTOGRAM:
        if (d->nbuckets > RETE_METRICS_MAX_BUCKETS || (d->nbuckets && !d->buckets))
            return RETE_EINVAL;
        for (size_t i = 0; i < d->nbuckets; i++)
            if (!isfinite(d->buckets[i]) || (i && d->buckets[i] <= d->buckets[i - 1]))
                return RETE_EINVAL;
        break;
    default:
        return RETE_EINVAL;
    }
    if (d->nlabels > RETE_METRICS_MAX_LABELS)
        return RETE_ELIMIT;
    if (d->nlabels && !d->labels)
        return RETE_EINVAL;
    for (size_t i = 0; i < d->nlabels; i++) {
        const char *l = d->labels[i];
        if (!valid_name(l, false) || strncmp(l, "__", 2) == 0 || strcmp(l, "le") == 0)
            return RETE_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (strcmp(l, d->labels[k]) == 0)
                return RETE_EINVAL;
    }
    for (size_t i = 0; i < reg->nfam; i++)
        if (strcmp(reg->fam[i]->name, d->name) == 0)
            return RETE_EINVAL;
    if (reg->nfam == RETE_METRICS_MAX_FAMILIES)
        return RETE_ELIMIT;
    return RETE_OK;
}

static rete_rc declare_locked(rete_metrics *reg, const rete_metric_desc *d, rete_metric_family *out)
{
    RETE_GUARD(validate(reg, d));
    family *f = rete_calloc(1, sizeof(*f));
    f->name = rete_strdup(d->name);
    f->help = rete_strdup(d->help);
    f->type = d->type;
    f->nlabels = d->nlabels;
    f->labels = rete_calloc(d->nlabels, sizeof(*f->labels));
    for (size_t i = 0; i < d->nlabels; i++)
        f->labels[i] = rete_strdup(d->labels[i]);
    f->max_series = d->max_series ? d->max_series : RETE_METRICS_DEFAULT_MAX_SERIES;
    f->ncells = 1;
    if (d->type == RETE_METRIC_HISTOGRAM) {
        const double *b = d->buckets ? d->buckets : rete_metrics_default_buckets;
        f->nb = d->buckets ? d->nbuckets : rete_metrics_default_nbuckets;
        f->bounds = rete_calloc(f->nb, sizeof(*f->bounds));
        if (f->nb)
            memcpy(f->bounds, b, f->nb * sizeof(*b));
        f->ncells = (uint32_t)f->nb + 2; /* buckets, +Inf, sum */
    }
    uint32_t fi = (uint32_t)reg->nfam;
    reg->fam[fi] = f;
    reg->nfam++;

    /* The overflow series ("overflow" for every label), or for a family
     * without labels its only series: reserved now so resolution never fails. */
    rete_view ov[RETE_METRICS_MAX_LABELS];
    for (size_t i = 0; i < f->nlabels; i++)
        ov[i] = RETE_VIEW_LIT("overflow");
    uint64_t h = hash_values(ov, f->nlabels);
    rete_rc rc = series_new(reg, fi, ov, f->nlabels, h, &f->overflow);
    if (rc < 0)
        goto fail;
    table_insert(reg, f, f->overflow);
    if (f->nlabels == 0)
        reg->series[f->overflow].visible = true;

    if (reg->nfam > 1 && f->nlabels) { /* family 0 is the dropped counter itself */
        rete_view name = rete_view_cstr(f->name);
        bool overflow;
        rc = resolve_locked(reg, reg->dropped_fam, &name, 1, hash_values(&name, 1), &f->dropped,
                            &overflow);
        if (rc < 0)
            goto fail;
        reg->series[f->dropped].visible = false;
        f->has_dropped = true;
    }
    *out = (rete_metric_family){fi};
    return RETE_OK;
fail:
    /* Series already created for this family keep their cells (unreachable). */
    reg->nfam--;
    reg->fam[fi] = NULL;
    family_free(f);
    return rc;
}

rete_rc rete_metrics_declare(rete_metrics *reg, const rete_metric_desc *d, rete_metric_family *out)
{
    pthread_mutex_lock(&reg->mu);
    rete_rc rc = declare_locked(reg, d, out);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

rete_metrics *rete_metrics_new(void)
{
    rete_metrics *reg = rete_calloc(1, sizeof(*reg));
    pthread_mutex_init(&reg->mu, NULL);
    reg->base.reg = reg;
    reg->global.reg = reg;
    static const char *const dropped_labels[] = {"family"};
    rete_metric_desc d = {
        .name = DROPPED_NAME,
        .help = "Series not created because their family reached its series bound; their "
                "samples are counted in the family's overflow series.",
        .type = RETE_METRIC_COUNTER,
        .labels = dropped_labels,
        .nlabels = 1,
        .max_series = RETE_METRICS_MAX_FAMILIES,
    };
    rete_rc rc = declare_locked(reg, &d, &reg->dropped_fam);
    if (rc < 0) {
        fprintf(stderr, "rete: metrics registry: %s\n", rete_rc_str(rc));
        abort();
    }
    /* Its own overflow series can never be used: keep it out of the output. */
    reg->series[reg->fam[0]->overflow].visible = false;
    return reg;
}

void rete_metrics_free(rete_metrics *reg)
{
    if (!reg)
        return;
    while (reg->shards) {
        rete_metrics_shard *s = reg->shards;
        rete_metrics_shard_free(&s);
    }
    shard_release_segs(&reg->base, reg->nsegs);
    shard_release_segs(&reg->global, reg->nsegs);
    for (size_t i = 0; i < reg->nseries; i++)
        free(reg->series[i].key);
    free(reg->series);
    for (size_t i = 0; i < reg->nfam; i++)
        family_free(reg->fam[i]);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

rete_metrics_shard *rete_metrics_shard_new(rete_metrics *reg)
{
    rete_metrics_shard *s = rete_calloc(1, sizeof(*s));
    s->reg = reg;
    pthread_mutex_lock(&reg->mu);
    shard_grow(s, 0, reg->nsegs);
    s->next = reg->shards;
    reg->shards = s;
    pthread_mutex_unlock(&reg->mu);
    return s;
}

void rete_metrics_shard_free(rete_metrics_shard **sp)
{
    rete_metrics_shard *s = *sp;
    if (!s)
        return;
    rete_metrics *reg = s->reg;
    pthread_mutex_lock(&reg->mu);
    for (size_t i = 0; i < reg->nseries; i++) {
        const series *se = &reg->series[i];
        const family *f = reg->fam[se->fam];
        if (!f)
            continue;
        uint32_t ncount = f->type == RETE_METRIC_HISTOGRAM ? f->ncells - 1 : 1;
        for (uint32_t k = 0; k < ncount; k++)
            rete_metrics__add(rete_metrics__cell(&reg->base, se->cell + k),
                              load(rete_metrics__cell(s, se->cell + k)));
        if (f->type == RETE_METRIC_HISTOGRAM) {
            _Atomic uint64_t *dst = rete_metrics__cell(&reg->base, se->cell + ncount);
            double sum =
                double_of(load(dst)) + double_of(load(rete_metrics__cell(s, se->cell + ncount)));
            atomic_store_explicit(dst, bits_of(sum), memory_order_relaxed);
        }
    }
    for (rete_metrics_shard **pp = &reg->shards; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    shard_release_segs(s, reg->nsegs);
    pthread_mutex_unlock(&reg->mu);
    free(s->cache);
    free(s);
    *sp = NULL;
}

/* ---- hot path (out of line) ---------------------------------------------- */

void rete_metrics_observe(rete_metrics_shard *s, rete_metric m, double value)
{
    const family *f = s->reg->fam[m.family];
    size_t i = 0;
    while (i < f->nb && !(value <= f->bounds[i])) /* le is inclusive; NaN lands in +Inf */
        i++;
    _Atomic uint64_t *c = rete_metrics__cell(s, m.cell); /* a series never straddles segments */
    rete_metrics__add(&c[i], 1);
    _Atomic uint64_t *sum = &c[f->nb + 1];
    atomic_store_explicit(sum, bits_of(double_of(load(sum)) + value), memory_order_relaxed);
}

void rete_metrics_gauge_set(rete_metrics *reg, rete_metric m, double value)
{
    atomic_store_explicit(rete_metrics__cell(&reg->global, m.cell), bits_of(value),
                          memory_order_relaxed);
}

/* Binds fn (gauge) or cfn (counter) to the series m of a family of type t. */
static rete_rc bind_cb(rete_metrics *reg, rete_metric m, rete_metric_type t, rete_metrics_gauge_cb fn,
                       rete_metrics_counter_cb cfn, void *arg)
{
    rete_rc rc = RETE_EINVAL;
    pthread_mutex_lock(&reg->mu);
    if (m.family < reg->nfam && reg->fam[m.family]->type == t && (fn || cfn)) {
        for (size_t i = 0; i < reg->nseries; i++) {
            if (reg->series[i].cell == m.cell && reg->series[i].fam == m.family) {
                reg->series[i].fn = fn;
                reg->series[i].cfn = cfn;
                reg->series[i].arg = arg;
                reg->series[i].visible = true;
                rc = RETE_OK;
                break;
            }
        }
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

rete_rc rete_metrics_gauge_fn(rete_metrics *reg, rete_metric m, rete_metrics_gauge_cb fn, void *arg)
{
    return fn ? bind_cb(reg, m, RETE_METRIC_GAUGE, fn, NULL, arg) : RETE_EINVAL;
}

rete_rc rete_metrics_counter_fn(rete_metrics *reg, rete_metric m, rete_metrics_counter_cb fn,
                                void *arg)
{
    return fn ? bind_cb(reg, m, RETE_METRIC_COUNTER, NULL, fn, arg) : RETE_EINVAL;
}

/* ---- exposition ---------------------------------------------------------- */

typedef rete_buf sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    rete_buf_reserve(b, n, 4096); /* a scrape is kilobytes: start there */
    rete_buf_append(b, s, n);
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(sbuf *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    sb_put(b, tmp, (size_t)n);
}

/* Shortest round-trip representation in the spelling of Go's
 * strconv.FormatFloat(v, 'g', -1, 64), which the Prometheus client libraries
 * and Envoy use: exponent form when the exponent is < -4 or >= 6, so bucket
 * bounds read le="1.8e+06" exactly as on an Istio proxy. */
static void sb_double(sbuf *b, double v)
{
    if (isnan(v)) {
        sb_str(b, "NaN");
        return;
    }
    if (isinf(v)) {
        sb_str(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[48];
    int prec = 0, n = 0;
    for (; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof(tmp), "%.*e", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    int exp = atoi(strchr(tmp, 'e') + 1);
    if (exp >= -4 && exp < 6)
        n = snprintf(tmp, sizeof(tmp), "%.*f", prec > exp ? prec - exp : 0, v);
    sb_put(b, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t len;
    uint32_t min, cp;
    if ((p[0] & 0xE0) == 0xC0) {
        len = 2, min = 0x80, cp = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3, min = 0x800, cp = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* Label value escaping (text format 0.0.4): \\, \" and \n; invalid UTF-8
 * bytes become U+FFFD. HELP text escapes only \\ and \n. */
static void sb_escaped(sbuf *b, rete_view v, bool quote)
{
    const unsigned char *p = (const unsigned char *)v.p;
    size_t i = 0;
    while (i < v.len) {
        unsigned char c = p[i];
        if (c == '\\') {
            sb_put(b, "\\\\", 2);
        } else if (c == '\n') {
            sb_put(b, "\\n", 2);
        } else if (c == '"' && quote) {
            sb_put(b, "\\\"", 2);
        } else {
            size_t n = utf8_len(p + i, v.len - i);
            if (n == 0) {
                sb_put(b, "\xEF\xBF\xBD", 3);
                n = 1;
            } else {
                sb_put(b, (const char *)p + i, n);
            }
            i += n;
            continue;
        }
        i++;
    }
}

/* `name{labels[,le="x"]} ` */
static void sb_series_name(sbuf *b, const family *f, const series *s, const char *suffix,
                           const char *le)
{
    sb_str(b, f->name);
    sb_str(b, suffix);
    if (f->nlabels || le) {
        sb_put(b, "{", 1);
        size_t off = 0;
        for (size_t i = 0; i < f->nlabels; i++) {
            if (i)
                sb_put(b, ",", 1);
            sb_str(b, f->labels[i]);
            sb_put(b, "=\"", 2);
            sb_escaped(b, key_next(s->key, &off), true);
            sb_put(b, "\"", 1);
        }
        if (le) {
            if (f->nlabels)
                sb_put(b, ",", 1);
            sb_str(b, "le=\"");
            sb_str(b, le);
            sb_put(b, "\"", 1);
        }
        sb_put(b, "}", 1);
    }
    sb_put(b, " ", 1);
}

static uint64_t sum_cell(rete_metrics *reg, uint32_t cell)
{
    uint64_t v = load(rete_metrics__cell(&reg->base, cell));
    for (rete_metrics_shard *s = reg->shards; s; s = s->next)
        v += load(rete_metrics__cell(s, cell));
    return v;
}

static double sum_cell_double(rete_metrics *reg, uint32_t cell)
{
    double v = double_of(load(rete_metrics__cell(&reg->base, cell)));
    for (rete_metrics_shard *s = reg->shards; s; s = s->next)
        v += double_of(load(rete_metrics__cell(s, cell)));
    return v;
}

uint64_t rete_metrics_counter_value(rete_metrics *reg, rete_metric m)
{
    uint64_t v = 0;
    pthread_mutex_lock(&reg->mu);
    if (m.family < reg->nfam && reg->fam[m.family]->type == RETE_METRIC_COUNTER)
        v = sum_cell(reg, m.cell);
    pthread_mutex_unlock(&reg->mu);
    return v;
}

void rete_metrics_walk(rete_metrics *reg, rete_metric_family fam, rete_metrics_walk_cb cb, void *arg)
{
    pthread_mutex_lock(&reg->mu);
    if (fam.id < reg->nfam && reg->fam[fam.id]->type != RETE_METRIC_GAUGE) {
        const family *f = reg->fam[fam.id];
        size_t nc = f->type == RETE_METRIC_HISTOGRAM ? f->nb + 1 : 1;
        uint64_t counts[RETE_METRICS_MAX_BUCKETS + 1];
        rete_view v[RETE_METRICS_MAX_LABELS];
        for (size_t i = 0; i < f->nids; i++) {
            const series *s = &reg->series[f->ids[i]];
            size_t off = 0;
            for (size_t l = 0; l < f->nlabels; l++)
                v[l] = key_next(s->key, &off);
            for (size_t c = 0; c < nc; c++)
                counts[c] = sum_cell(reg, s->cell + (uint32_t)c);
            cb(arg, i, v, f->nlabels, counts, nc);
        }
    }
    pthread_mutex_unlock(&reg->mu);
}

static void render_series(sbuf *b, rete_metrics *reg, const family *f, const series *s)
{
    switch (f->type) {
    case RETE_METRIC_COUNTER:
        sb_series_name(b, f, s, "", NULL);
        sb_u64(b, s->cfn ? s->cfn(s->arg) : sum_cell(reg, s->cell));
        sb_put(b, "\n", 1);
        break;
    case RETE_METRIC_GAUGE: {
        double v;
        if (s->fn)
            v = s->fn(s->arg);
        else
            v = double_of(load(rete_metrics__cell(&reg->global, s->cell))) +
                (double)(int64_t)sum_cell(reg, s->cell);
        sb_series_name(b, f, s, "", NULL);
        sb_double(b, v);
        sb_put(b, "\n", 1);
        break;
    }
    case RETE_METRIC_HISTOGRAM: {
        uint64_t acc = 0;
        for (size_t i = 0; i <= f->nb; i++) {
            acc += sum_cell(reg, s->cell + (uint32_t)i);
            char le[40] = "+Inf";
            if (i < f->nb) {
                sbuf t = {0};
                sb_double(&t, f->bounds[i]);
                snprintf(le, sizeof(le), "%s", t.p);
                free(t.p);
            }
            sb_series_name(b, f, s, "_bucket", le);
            sb_u64(b, acc);
            sb_put(b, "\n", 1);
        }
        sb_series_name(b, f, s, "_sum", NULL);
        sb_double(b, sum_cell_double(reg, s->cell + (uint32_t)f->nb + 1));
        sb_put(b, "\n", 1);
        sb_series_name(b, f, s, "_count", NULL);
        sb_u64(b, acc);
        sb_put(b, "\n", 1);
        break;
    }
    default:
        break;
    }
}

static int cmp_family(const void *a, const void *b)
{
    const family *fa = *(const family *const *)a, *fb = *(const family *const *)b;
    return strcmp(fa->name, fb->name);
}

static const char *type_name(rete_metric_type t)
{
    switch (t) {
    case RETE_METRIC_COUNTER:
        return "counter";
    case RETE_METRIC_GAUGE:
        return "gauge";
    case RETE_METRIC_HISTOGRAM:
        return "histogram";
    default:
        return "untyped";
    }
}

char *rete_metrics_render(rete_metrics *reg, size_t *len)
{
    sbuf b = {0};
    sb_put(&b, "", 0);
    pthread_mutex_lock(&reg->mu);
    family *sorted[RETE_METRICS_MAX_FAMILIES];
    size_t nf = reg->nfam;
    memcpy(sorted, reg->fam, nf * sizeof(*sorted));
    qsort(sorted, nf, sizeof(*sorted), cmp_family);
    for (size_t i = 0; i < nf; i++) {
        const family *f = sorted[i];
        bool any = reg->series[f->overflow].visible;
        for (size_t k = 0; k < f->nids && !any; k++)
            any = reg->series[f->ids[k]].visible;
        if (!any && f == reg->fam[0])
            continue; /* nothing dropped: keep the dropped counter out of the output */
        sb_str(&b, "# HELP ");
        sb_str(&b, f->name);
        sb_put(&b, " ", 1);
        sb_escaped(&b, rete_view_cstr(f->help), false);
        sb_str(&b, "\n# TYPE ");
        sb_str(&b, f->name);
        sb_put(&b, " ", 1);
        sb_str(&b, type_name(f->type));
        sb_put(&b, "\n", 1);
        for (size_t k = 0; k < f->nids; k++)
            if (reg->series[f->ids[k]].visible)
                render_series(&b, reg, f, &reg->series[f->ids[k]]);
        if (reg->series[f->overflow].visible)
            render_series(&b, reg, f, &reg->series[f->overflow]);
    }
    pthread_mutex_unlock(&reg->mu);
    if (len)
        *len = b.len;
    return b.p;
}
