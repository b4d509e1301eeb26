/* Scrape-time values of reted's /metrics (scrape.h). */
#include "scrape.h"

#include "alloc.h"
#include "ca_shared.h"
#include "compiler.h"
#include "log.h"
#include "registry.h"
#include "reted.h"
#include "stats.h"

#include <stdlib.h>
#include <string.h>

/* What a probe reads. */
enum {
    P_PROXIES,        /* i: reted_proxy_state */
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
    P_LEADER,
    P_CA_KEK,          /* i: 0 the current KEK, 1.. the previous ones */
};

static rete_http_server *listener(const reted *r, unsigned i)
{
    return i == 0 ? r->api : r->xds;
}

static uint64_t proxies_in(const reted *r, reted_proxy_state state)
{
    uint64_t n = 0;
    for (const reted_proxy *x = r->registry.proxies; x; x = x->next) {
        switch (state) {
        case RETED_PROXY_CONNECTED: n += x->stream != NULL; break;
        case RETED_PROXY_SYNCED:
            n += x->stream && !x->nacked && x->acked_version == x->sent_version;
            break;
        case RETED_PROXY_NACKED: n += x->stream && x->nacked; break;
        case RETED_PROXY_REGISTERED: n++; break;
        default: break;
        }
    }
    return n;
}

static uint64_t probe_value(void *arg)
{
    const reted_probe *p = arg;
    reted *r = p->r;
    switch (p->what) {
    case P_PROXIES: return proxies_in(r, (reted_proxy_state)p->i);
    case P_STORE_REVISION: return r->store->ops->revision(r->store);
    case P_LEADER: return r->leading;
    case P_STREAM_QUEUED:
    case P_STREAM_BUFFERED:
    case P_STREAM_SHARED:
    case P_STREAM_BEHIND: {
        rete_http_stream_stats ss;
        rete_http_server_stream_stats(r->xds, &ss);
        return p->what == P_STREAM_QUEUED   ? ss.queued_msgs
               : p->what == P_STREAM_SHARED ? ss.shared_bytes
               : p->what == P_STREAM_BEHIND ? ss.closed_behind
               : p->i == 0                  ? ss.buffered_bytes
                                            : ss.max_buffered_bytes;
    }
    case P_HTTP_CONNS:
    case P_HTTP_REFUSED:
    case P_HTTP_IDLE: {
        rete_http_server_stats hs;
        rete_http_server_stats_get(listener(r, p->i), &hs);
        return p->what == P_HTTP_CONNS  ? hs.conns
               : p->what == P_HTTP_IDLE ? hs.idle_closed
                                        : hs.refused[p->k];
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
    case P_CA_KEK: {
        const reted_keyring *ring = r->ca_kek;
        const reted_kek *k = p->i == 0 ? &ring->current : &ring->previous[p->i - 1];
        return strcmp(k->id, ring->record_kek) == 0;
    }
    default: return 0;
    }
}

static double probe_gauge(void *arg)
{
    const reted_probe *p = arg;
    if (p->what == P_CA_EXPIRY)
        return (double)rete_ca_not_after(p->r->ca);
    return (double)probe_value(arg);
}

static void bind_probe(reted *r, rete_metric m, bool counter, unsigned what, unsigned i, unsigned k)
{
    reted_scrape *sc = &r->scrape;
    if (sc->n == RETED_MAX_PROBES) {
        rete_err("reted: metrics: RETED_MAX_PROBES is too small");
        abort();
    }
    reted_probe *p = &sc->probes[sc->n++];
    *p = (reted_probe){.r = r, .what = what, .i = i, .k = k};
    rete_rc rc = counter ? rete_metrics_counter_fn(r->stats.reg, m, probe_value, p)
                         : rete_metrics_gauge_fn(r->stats.reg, m, probe_gauge, p);
    if (rc != RETE_OK) {
        rete_err("reted: metrics: cannot bind a scrape-time value");
        abort();
    }
}

/* rete_reted_ca_kek: a series per key of the ring. */
static void bind_kek(reted *r)
{
    const reted_keyring *ring = r->ca_kek;
    for (unsigned i = 0; i <= ring->n_previous; i++) {
        rete_view v[2] = {rete_view_cstr(i == 0 ? ring->current.id : ring->previous[i - 1].id),
                          rete_view_cstr(i == 0 ? "write" : "read")};
        rete_metric m;
        if (rete_metrics_series(r->stats.reg, r->stats.ca_kek, v, 2, &m) != RETE_OK) {
            rete_err("reted: metrics: cannot declare rete_reted_ca_kek");
            abort();
        }
        bind_probe(r, m, false, P_CA_KEK, i, 0);
    }
}

void reted_scrape_bind(reted *r)
{
    reted_stats *s = &r->stats;
    if (r->ca_kek)
        bind_kek(r);
    for (unsigned i = 0; i < RETED_PROXY_STATES; i++)
        bind_probe(r, s->proxies[i], false, P_PROXIES, i, 0);
    bind_probe(r, s->store_revision, false, P_STORE_REVISION, 0, 0);
    bind_probe(r, s->leader, false, P_LEADER, 0, 0);
    bind_probe(r, s->ca_expiry, false, P_CA_EXPIRY, 0, 0);
    bind_probe(r, s->stream_queued, false, P_STREAM_QUEUED, 0, 0);
    for (unsigned i = 0; i < 2; i++)
        bind_probe(r, s->stream_buffered[i], false, P_STREAM_BUFFERED, i, 0);
    bind_probe(r, s->stream_shared, false, P_STREAM_SHARED, 0, 0);
    bind_probe(r, s->streams_closed_behind, true, P_STREAM_BEHIND, 0, 0);
    for (unsigned i = 0; i < 2; i++) {
        bind_probe(r, s->http_conns[i], false, P_HTTP_CONNS, i, 0);
        bind_probe(r, s->http_limit[i], false, P_HTTP_LIMIT, i, 0);
        for (unsigned k = 0; k < RETE_HTTP_REFUSED_N; k++)
            bind_probe(r, s->http_refused[i][k], true, P_HTTP_REFUSED, i, k);
        bind_probe(r, s->http_idle[i], true, P_HTTP_IDLE, i, 0);
    }
    bind_probe(r, s->snapshots, false, P_SNAPSHOTS, 0, 0);
    bind_probe(r, s->snapshot_bytes, false, P_SNAPSHOT_BYTES, 0, 0);
    bind_probe(r, s->index_resources, false, P_INDEX, 0, 0);
    bind_probe(r, s->heap_bytes, false, P_HEAP, 0, 0);
}
