#include "dispatch.h"
#include "filter.h"
#include "alloc.h"
#include "codec.h"
#include "config.h"
#include "health_check.h"
#include "log.h"
#include "path_norm.h"
#include "retry.h"
#include "telemetry.h"
#include "worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rete_filter_local_text(rete_exchange *ex, int status, const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof(body) - 2)
        n = sizeof(body) - 2;
    body[n++] = '\n';
    if (ex->tunnel) {
        /* Nothing to answer on a raw connection: close it. */
        rete_ex_fail(ex, RETE_UPSTREAM, ex->error ? ex->error : RETE_EXE_NO_ROUTE, body);
        return;
    }
    rete_ex_local_response(ex, status, "text/plain; charset=utf-8", body, (size_t)n);
}

void rete_filter_upstream(rete_exchange *ex, rete_codec_id id, const char *ip, uint16_t port, bool tls,
                          const char *expected_id, uint32_t connect_timeout_ms)
{
    const rete_upstream_target t = {.ip = ip,
                                    .port = port,
                                    .tls = tls,
                                    .expected_id = expected_id,
                                    .connect_timeout_ms = connect_timeout_ms,
                                    .limits = ex->limits};
    rete_codec_get(id)->upstream_start(ex, &t);
}

/* ---- the chains (filter.h) ---- */

static const rete_filter *const outbound_filters[] = {
    &rete_filter_trace,     &rete_filter_route,      &rete_filter_rate_limit, &rete_filter_fault,
    &rete_filter_mirror,    &rete_filter_backend,    &rete_filter_retry,      &rete_filter_telemetry,
    &rete_filter_access_log, &rete_filter_tap,
};
static const rete_filter *const inbound_filters[] = {
    &rete_filter_trace, &rete_filter_inbound_port, &rete_filter_authz,     &rete_filter_rate_limit,
    &rete_filter_app,   &rete_filter_telemetry,    &rete_filter_access_log, &rete_filter_tap,
};
/* The admin listener answers from admin.c; its exchanges are only counted
 * and logged. */
static const rete_filter *const admin_filters[] = {&rete_filter_telemetry, &rete_filter_access_log};
/* A mirror's copy (filter_mirror.c) is started by the mirror filter, not
 * routed: only its finish stages run (the endpoint's breaker slot and
 * balancer report, the mirror's count). Nobody called it: it is neither
 * in the proxy's request metrics nor in its access log. */
static const rete_filter *const mirror_filters[] = {&rete_filter_route, &rete_filter_mirror};
/* An active health check (health_check.c): not routed, not counted as a
 * request, not logged; its one filter reads the answer and applies it. */
static const rete_filter *const health_filters[] = {&rete_filter_health_check};

/* The body stages are gathered by rete_filter_chain_prepare at start-up. */
#define CHAIN(a) {.filters = (a), .n = sizeof(a) / sizeof((a)[0])}
#define FITS(a)                                                                                    \
    _Static_assert(sizeof(a) / sizeof((a)[0]) <= RETE_FILTER_CHAIN_MAX, #a " is too long")
FITS(outbound_filters);
FITS(inbound_filters);
FITS(admin_filters);
FITS(mirror_filters);
FITS(health_filters);
rete_filter_chain rete_chain_outbound = CHAIN(outbound_filters);
rete_filter_chain rete_chain_inbound = CHAIN(inbound_filters);
static rete_filter_chain chain_admin = CHAIN(admin_filters);
static rete_filter_chain chain_mirror = CHAIN(mirror_filters);
static rete_filter_chain chain_health = CHAIN(health_filters);

bool rete_filter_chain_prepare(rete_filter_chain *c)
{
    if (c->n > RETE_FILTER_CHAIN_MAX) {
        /* Only a test can build one: the chains here are checked above. */
        fprintf(stderr, "filter chain of %zu filters (at most %d)\n", c->n, RETE_FILTER_CHAIN_MAX);
        abort();
    }
    c->n_request_body = c->n_response_body = 0;
    for (size_t i = 0; i < c->n; i++) {
        const rete_filter *f = c->filters[i];
        if (f->on_request_body)
            c->request_body[c->n_request_body++] = f->on_request_body;
        if (f->on_response_body)
            c->response_body[c->n_response_body++] = f->on_response_body;
    }
    return c->n_request_body || c->n_response_body;
}

size_t rete_filter_chain_body(const rete_filter_chain *c, rete_exchange *ex, rete_side producer,
                              const char *data, size_t len, bool end)
{
    bool request = producer == RETE_DOWNSTREAM;
    size_t n = request ? c->n_request_body : c->n_response_body;
    if (n == 0)
        return 0;
    const rete_filter_body_stage *stage = request ? c->request_body : c->response_body;
    const rete_pipe *p = request ? &ex->req_body : &ex->resp_body;
    const rete_filter_body b = {
        .data = data,
        .len = len,
        .end = end,
        .trailers = end && p->trailers.n_headers ? &p->trailers : NULL,
    };
    for (size_t i = 0; i < n; i++)
        stage[i](ex, &b);
    return n;
}

const rete_filter_chain *rete_filter_chain_of(const rete_exchange *ex)
{
    if (ex->admin)
        return &chain_admin;
    if (ex->mirror_copy)
        return &chain_mirror;
    if (ex->hc)
        return &chain_health;
    return ex->inbound ? &rete_chain_inbound : &rete_chain_outbound;
}

/* ---- the sequencer ---- */

bool rete_dispatch_normalize_path(rete_exchange *ex)
{
    if (ex->path_normalized)
        return ex->path_refused == RETE_PATH_OK;
    ex->path_normalized = true;
    if (!ex->req.path.p)
        return true; /* CONNECT (authority-form) and raw TCP have no path */
    rete_view in = ex->req.path;
    /* The result is never longer than the input (path_norm.h). */
    char *out = rete_arena_alloc(ex->arena, in.len ? in.len : 1);
    size_t n = 0;
    rete_path_norm_result r = rete_path_normalize(in, ex->gen->cfg->path_norm, out, in.len, &n);
    if (r != RETE_PATH_OK) {
        ex->path_refused = (uint8_t)r;
        rete_stat(ex->worker, ex->worker->ms.path_rejected[r], 1);
        rete_debug("path refused (%s) on %s from %s", rete_path_norm_reason(r),
                   ex->listener ? ex->listener : "-", ex->downstream_addr);
        return false;
    }
    ex->req.path = rete_view_make(out, n);
    return true;
}

void rete_dispatch(rete_exchange *ex)
{
    if (!rete_dispatch_normalize_path(ex)) {
        /* Nothing downstream of here may see a path other than the one
         * authorised: refuse what cannot be normalised safely. */
        ex->error = RETE_EXE_BAD_REQUEST;
        rete_filter_local_text(ex, 400, "bad request path: %s",
                               rete_path_norm_reason((rete_path_norm_result)ex->path_refused));
        return;
    }
    if (ex->admin) {
        rete_admin_handle(ex);
        return;
    }
    const rete_filter_chain *c = rete_filter_chain_of(ex);
    for (size_t i = 0; i < c->n; i++)
        if (c->filters[i]->on_request && c->filters[i]->on_request(ex) == RETE_FILTER_DONE)
            return;
}

void rete_filter_chain_resume(rete_exchange *ex, const rete_filter *after)
{
    if (ex->done)
        return;
    const rete_filter_chain *c = rete_filter_chain_of(ex);
    size_t i = 0;
    while (i < c->n && c->filters[i] != after)
        i++;
    for (i++; i < c->n; i++)
        if (c->filters[i]->on_request && c->filters[i]->on_request(ex) == RETE_FILTER_DONE)
            return;
}

void rete_dispatch_response_filters(rete_exchange *ex)
{
    const rete_filter_chain *c = rete_filter_chain_of(ex);
    for (size_t i = 0; i < c->n; i++)
        if (c->filters[i]->on_response)
            c->filters[i]->on_response(ex);
}

/* The exchange's body stages entry (rete_request_path.body). */
static void dispatch_body(rete_exchange *ex, rete_side producer, const char *data, size_t len,
                          bool end)
{
    rete_filter_chain_body(rete_filter_chain_of(ex), ex, producer, data, len, end);
}

void rete_dispatch_release_share(rete_exchange *ex)
{
    if (ex->ds_held && ex->in_flight)
        (*ex->ds_held)--;
    ex->ds_held = NULL;
}

void rete_dispatch_finish(rete_exchange *ex)
{
    if (ex->done)
        return;
    ex->done = true;
    if (ex->timer_active) {
        uv_timer_stop(&ex->timer);
        ex->timer_active = false;
    }
    uint64_t now = uv_hrtime();
    rete_filter_end end = {.status = ex->head_sent ? ex->resp.status : 0,
                           .duration_ns = now - ex->start_ns,
                           .now_ns = now};
    const rete_filter_chain *c = rete_filter_chain_of(ex);
    for (size_t i = 0; i < c->n; i++)
        if (c->filters[i]->on_finish)
            c->filters[i]->on_finish(ex, &end);
}

static void gen_free(rete_gen *g)
{
    rete_telemetry_cache_free(&g->tel);
    rete_free(&g->peer_meta);
}

static rete_request_path request_path = {
    .request = rete_dispatch,
    .normalize_path = rete_dispatch_normalize_path,
    .response = rete_dispatch_response_filters,
    .body = NULL, /* rete_http_register: dispatch_body when a chain has a body stage */
    .upstream_failed = rete_retry_upstream_failed,
    .upstream_response = rete_retry_upstream_response,
    .finish = rete_dispatch_finish,
    .release_share = rete_dispatch_release_share,
    .gen_free = gen_free,
    .gen_installed = rete_health_check_gen_installed,
};

void rete_http_register(void)
{
    bool body = rete_filter_chain_prepare(&rete_chain_outbound);
    body |= rete_filter_chain_prepare(&rete_chain_inbound);
    body |= rete_filter_chain_prepare(&chain_admin);
    body |= rete_filter_chain_prepare(&chain_mirror);
    body |= rete_filter_chain_prepare(&chain_health);
    request_path.body = body ? dispatch_body : NULL;
    rete_request_path_set(&request_path);
}
