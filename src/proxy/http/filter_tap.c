/* The tap filter and the tap table (tap.h): at the end of every exchange,
 * while a tap is on, a fixed record of it for each tap it matches, bounded
 * in rate and in queue; nothing but one atomic load otherwise. */
#include "alloc.h"
#include "filter.h"
#include "mesh_metrics.h"
#include "tap.h"
#include "telemetry.h"
#include "worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static atomic_uint tap_on; /* taps on: the filter's one check */

static struct {
    pthread_mutex_t mu;
    rete_tap_match taps[RETE_TAP_MAX];
    size_t n_taps;
    rete_tap_record *ring; /* RETE_TAP_QUEUE records while a tap is on */
    size_t head, len;
    uint64_t tat_ns;        /* the rate bound's (take_token) */
    uint64_t captured, dropped_rate, dropped_queue;
} tap = {.mu = PTHREAD_MUTEX_INITIALIZER};

rete_rc rete_tap_start(const rete_tap_match *m, rete_error *err)
{
    pthread_mutex_lock(&tap.mu);
    size_t i = 0;
    while (i < tap.n_taps && strcmp(tap.taps[i].id, m->id) != 0)
        i++;
    if (i == tap.n_taps && tap.n_taps == RETE_TAP_MAX) {
        pthread_mutex_unlock(&tap.mu);
        return rete_error_set(err, RETE_ELIMIT, "%d taps are on already", RETE_TAP_MAX);
    }
    if (!tap.ring) {
        tap.ring = calloc(RETE_TAP_QUEUE, sizeof(*tap.ring));
        if (!tap.ring) {
            pthread_mutex_unlock(&tap.mu);
            return rete_error_set(err, RETE_ENOMEM, "no memory for the tap's queue");
        }
        tap.head = tap.len = 0;
    }
    tap.taps[i] = *m;
    tap.taps[i].id[RETE_TAP_ID_MAX - 1] = '\0';
    if (i == tap.n_taps)
        tap.n_taps++;
    atomic_store(&tap_on, (unsigned)tap.n_taps);
    pthread_mutex_unlock(&tap.mu);
    return RETE_OK;
}

void rete_tap_stop(const char *id)
{
    pthread_mutex_lock(&tap.mu);
    for (size_t i = 0; i < tap.n_taps;) {
        if (!id || strcmp(tap.taps[i].id, id) == 0)
            tap.taps[i] = tap.taps[--tap.n_taps];
        else
            i++;
    }
    atomic_store(&tap_on, (unsigned)tap.n_taps);
    if (!tap.n_taps && tap.len == 0)
        rete_free(&tap.ring);
    pthread_mutex_unlock(&tap.mu);
}

size_t rete_tap_active(void)
{
    return atomic_load(&tap_on);
}

size_t rete_tap_take(rete_tap_record *out, size_t max)
{
    pthread_mutex_lock(&tap.mu);
    size_t n = 0;
    while (n < max && tap.len) {
        out[n++] = tap.ring[tap.head];
        tap.head = (tap.head + 1) % RETE_TAP_QUEUE;
        tap.len--;
    }
    if (!tap.n_taps && tap.len == 0)
        rete_free(&tap.ring);
    pthread_mutex_unlock(&tap.mu);
    return n;
}

void rete_tap_counts(uint64_t *captured, uint64_t *dropped_rate, uint64_t *dropped_queue)
{
    pthread_mutex_lock(&tap.mu);
    *captured = tap.captured;
    *dropped_rate = tap.dropped_rate;
    *dropped_queue = tap.dropped_queue;
    pthread_mutex_unlock(&tap.mu);
}

#define PUT(f, v) put((f).p, sizeof((f).p), &(f).len, (v))
static void put(char *p, size_t cap, uint16_t *len, rete_view v)
{
    size_t n = v.len < cap ? v.len : cap;
    if (n)
        memcpy(p, v.p, n);
    *len = (uint16_t)n;
}

/* Header values an operator never sees, --headers or not. */
static bool secret_header(rete_view name)
{
    return rete_view_eq(name, RETE_VIEW_LIT("authorization")) ||
           rete_view_eq(name, RETE_VIEW_LIT("proxy-authorization")) ||
           rete_view_eq(name, RETE_VIEW_LIT("cookie")) || rete_view_eq(name, RETE_VIEW_LIT("set-cookie")) ||
           rete_view_eq(name, RETE_VIEW_LIT(RETE_PEER_HEADER));
}

static void put_headers(rete_tap_record *r, const rete_msg *m, bool values)
{
    size_t n = 0, cap = sizeof(r->hdr.p);
    r->n_headers = 0;
    for (uint32_t i = 0; i < m->n_headers; i++) {
        rete_view name = m->headers[i].name, value = m->headers[i].value;
        if (!values || secret_header(name))
            value = RETE_VIEW_LIT("REDACTED");
        if (n + name.len + value.len + 2 > cap)
            break;
        memcpy(r->hdr.p + n, name.p, name.len);
        n += name.len;
        r->hdr.p[n++] = '\0';
        memcpy(r->hdr.p + n, value.p, value.len);
        n += value.len;
        r->hdr.p[n++] = '\0';
        r->n_headers++;
    }
    r->hdr.len = (uint16_t)n;
}

/* At most RETE_TAP_RATE records per second, with bursts of one second's
 * worth (GCRA: tat is the bucket's theoretical arrival time). */
static bool take_token(uint64_t now)
{
    const uint64_t per = 1000000000ull / RETE_TAP_RATE;
    if (tap.tat_ns < now)
        tap.tat_ns = now;
    if (tap.tat_ns + per - now > 1000000000ull)
        return false;
    tap.tat_ns += per;
    return true;
}

static bool matches(const rete_tap_match *m, const rete_exchange *ex, rete_view service, int status)
{
    return (!m->service[0] || rete_view_eq(service, rete_view_cstr(m->service))) &&
           (!m->path[0] || rete_view_has_prefix(ex->req.path, rete_view_cstr(m->path))) &&
           (!m->method[0] || rete_view_eq(ex->req.method, rete_view_cstr(m->method))) &&
           (!m->status || m->status == status || (m->status == -1 && status == 0));
}

static void tap_finish(rete_exchange *ex, const rete_filter_end *end)
{
    if (!atomic_load_explicit(&tap_on, memory_order_relaxed) || ex->admin || ex->tunnel)
        return;
    rete_view v[RETE_MESH_TCP_NLABELS];
    rete_telemetry_edge(ex, v);
    rete_view service = v[RETE_MESH_L_DESTINATION_SERVICE];
    pthread_mutex_lock(&tap.mu);
    for (size_t i = 0; i < tap.n_taps && tap.ring; i++) {
        const rete_tap_match *m = &tap.taps[i];
        if (!matches(m, ex, service, end->status))
            continue;
        if (!take_token(end->now_ns)) {
            tap.dropped_rate++;
            continue;
        }
        if (tap.len == RETE_TAP_QUEUE) {
            tap.dropped_queue++;
            continue;
        }
        rete_tap_record *r = &tap.ring[(tap.head + tap.len) % RETE_TAP_QUEUE];
        memcpy(r->id, m->id, sizeof(r->id));
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        r->latency_us = end->duration_ns / 1000;
        r->start_unix_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - (int64_t)(r->latency_us / 1000);
        r->status = end->status;
        r->inbound = ex->inbound;
        r->headers = m->headers;
        PUT(r->method, ex->req.method);
        PUT(r->authority, ex->req.authority);
        PUT(r->path, ex->req.path);
        const rete_http_route *route = ex->route ? ex->route->route : NULL;
        char rn[300];
        int rl = route ? snprintf(rn, sizeof(rn), "%s/%s", route->ns, route->name) : 0;
        PUT(r->route, rete_view_make(rn, rl > 0 ? (size_t)rl : 0));
        PUT(r->flags, v[RETE_MESH_L_RESPONSE_FLAGS]);
        PUT(r->request_id, rete_msg_get(&ex->req, RETE_VIEW_LIT("x-request-id")));
        PUT(r->service, service);
        PUT(r->src_wl, v[RETE_MESH_L_SOURCE_WORKLOAD]);
        PUT(r->src_ns, v[RETE_MESH_L_SOURCE_WORKLOAD_NAMESPACE]);
        PUT(r->src_principal, v[RETE_MESH_L_SOURCE_PRINCIPAL]);
        PUT(r->dst_wl, v[RETE_MESH_L_DESTINATION_WORKLOAD]);
        PUT(r->dst_ns, v[RETE_MESH_L_DESTINATION_WORKLOAD_NAMESPACE]);
        PUT(r->dst_principal, v[RETE_MESH_L_DESTINATION_PRINCIPAL]);
        const rete_workload *wl = ex->service && ex->endpoint >= 0 ? ex->service->endpoints[ex->endpoint] : NULL;
        char up[80];
        int ul = wl ? snprintf(up, sizeof(up), "%s:%u", wl->address, ex->target_port) : 0;
        PUT(r->upstream, rete_view_make(up, ul > 0 ? (size_t)ul : 0));
        put_headers(r, &ex->req, m->headers);
        tap.len++;
        tap.captured++;
    }
    pthread_mutex_unlock(&tap.mu);
}

const rete_filter rete_filter_tap = {
    .name = "tap",
    .on_finish = tap_finish,
};
