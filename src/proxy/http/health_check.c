/* Active health checks (health_check.h).
 *
 * References (read, not copied): Envoy's health_check.proto (interval,
 * timeout, unhealthy_threshold, healthy_threshold, http/tcp/grpc checkers,
 * interval jitter); the gRPC health checking protocol,
 * grpc/doc/health-checking.md and grpc/health/v1/health.proto
 * (HealthCheckRequest{string service = 1}, HealthCheckResponse{ServingStatus
 * status = 1}, SERVING = 1); gRPC over HTTP/2, PROTOCOL-HTTP2.md (the 5-byte
 * message prefix, grpc-status in trailers or a trailers-only response).
 *
 * Lifetimes: a check is an exchange like a mirror's copy (filter_mirror.c):
 * its downstream side is check_ops, which lets go from the exchange's timer
 * (no codec on the stack) or where the exchange allows it; its state (struct
 * rete_hc_check) lives in its arena and holds its own reference on the
 * endpoint's slot, so a snapshot swap while it runs changes nothing for it;
 * its outcome is applied by the check chain's finish stage, once. */
#include "health_check.h"

#include "alloc.h"
#include "config.h"
#include "lb.h"
#include "log.h"
#include "outlier.h"
#include "retry.h"
#include "telemetry.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_MS 1000000ull
/* An endpoint's first check, drawn in [0, min(interval, this)). */
#define FIRST_CHECK_SPREAD_MS 1000u
/* The gRPC answer's bytes kept: the prefix and a HealthCheckResponse. */
#define GRPC_KEEP 32u

typedef struct rete_hc_check {
    rete_outlier *o;          /* the endpoint's slot, our own reference */
    const rete_service *svc;  /* of the check's generation (the exchange holds it) */
    int idx;                  /* the endpoint, in svc->endpoints */
    uint32_t epoch;           /* the target table the check was started from */
    uint32_t target;
    uint64_t deadline;        /* uv_hrtime ns: the check's timeout */
    bool timed_out;
    bool grpc_end;            /* the gRPC answer is complete */
    uint8_t grpc[GRPC_KEEP];  /* its first bytes */
    uint32_t n_grpc;
} rete_hc_check;

/* One endpoint to check in the current snapshot. */
typedef struct hc_target {
    uint32_t svc, idx;   /* indexes in worker 0's w->gen->cfg */
    rete_outlier *o;     /* its slot (a reference) */
    uint64_t next_ns;    /* the next check is due */
    bool busy;           /* a check of it runs */
} hc_target;

/* The checker: worker 0's, touched on its thread only (its first build
 * runs on the main thread before the worker's thread starts). */
static struct {
    rete_worker *w;
    uv_timer_t tick;
    bool inited, ticking;
    hc_target *t;
    size_t n;
    size_t cursor;    /* where the next tick starts looking: no target starves */
    uint32_t epoch;
    uint32_t in_flight;
} hc;

static const char *const result_names[RETE_HC_RESULT_N] = {
    [RETE_HC_SUCCESS] = "success",
    [RETE_HC_FAILURE] = "failure",
    [RETE_HC_TIMEOUT] = "timeout",
    [RETE_HC_ERROR] = "error",
};

/* ---- the check's downstream side: nobody ---- */

static void check_timer(uv_timer_t *t);

static void check_arm(rete_exchange *c, uint64_t ms)
{
    c->timer_active = true;
    rete_ex_timer_start(c, check_timer, ms);
}

static void check_release(rete_exchange *c)
{
    if (c->attached[RETE_DOWNSTREAM])
        rete_ex_detach(c, RETE_DOWNSTREAM);
}

/* The answer is all there is to know: a tunnel's head (the connect went
 * through, or not), or any other's complete response. */
static bool answered(const rete_exchange *c)
{
    return c->head_sent && (c->tunnel || c->resp_body.end);
}

/* From the loop, no codec on the stack: drop the response body that came
 * (its producer gets its credit back); end the check when it is answered
 * or over its timeout. */
static void check_timer(uv_timer_t *t)
{
    rete_exchange *c = t->data;
    c->timer_active = false;
    if (!c->attached[RETE_DOWNSTREAM] || c->done)
        return;
    const char *d;
    size_t n;
    if (c->head_sent && !c->tunnel)
        while ((n = rete_ex_peek(c, RETE_DOWNSTREAM, &d)) > 0)
            rete_ex_consume(c, RETE_DOWNSTREAM, n);
    if (!c->attached[RETE_DOWNSTREAM] || c->done)
        return;
    uint64_t now = uv_hrtime();
    if (!answered(c) && now >= c->hc->deadline)
        c->hc->timed_out = true;
    if (c->hc->timed_out || answered(c)) {
        check_release(c);
        return;
    }
    check_arm(c, (c->hc->deadline - now + NS_PER_MS - 1) / NS_PER_MS);
}

static void check_on_head(rete_exchange *c)
{
    if (c->tunnel)
        check_arm(c, 0); /* the connect's answer is the check's: let go */
}

static void check_on_data(rete_exchange *c)
{
    if (c->tunnel) {
        check_arm(c, 0);
        return;
    }
    /* Complete, or a local answer (the upstream failed and let go):
     * letting go now only marks the side. Else the timer does it: the
     * upstream codec is on the stack. */
    if (c->resp_body.end && (c->req_body.end || rete_ex_upstream_is_local(c))) {
        check_release(c);
        return;
    }
    check_arm(c, 0);
}

static void check_on_abort(rete_exchange *c)
{
    check_release(c); /* the upstream has let go already */
}

static const rete_side_ops check_ops = {
    .name = "health-check",
    .on_head = check_on_head,
    .on_data = check_on_data,
    .on_drained = NULL, /* the request is complete before it is sent */
    .on_abort = check_on_abort,
};

/* ---- judging an answer ---- */

static bool status_passes(const rete_traffic_policy *p, int status)
{
    if (!p->n_hc_statuses)
        return status >= 200 && status < 400;
    for (size_t i = 0; i < p->n_hc_statuses; i++)
        if (p->hc_statuses[i] == status)
            return true;
    return false;
}

/* A protobuf varint at b[*i..n); false when cut short. */
static bool varint(const uint8_t *b, uint32_t n, uint32_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *i < n && shift < 64; shift += 7) {
        uint8_t x = b[(*i)++];
        *v |= (uint64_t)(x & 0x7f) << shift;
        if (!(x & 0x80))
            return true;
    }
    return false;
}

/* grpc-status 0 and a HealthCheckResponse whose status is SERVING (1). */
static bool grpc_serving(const rete_exchange *c)
{
    const rete_hc_check *st = c->hc;
    rete_view gs = rete_msg_get(&c->resp_body.trailers, RETE_VIEW_LIT("grpc-status"));
    if (!gs.len)
        gs = rete_msg_get(&c->resp, RETE_VIEW_LIT("grpc-status")); /* trailers-only */
    if (!rete_view_eq(gs, RETE_VIEW_LIT("0")) || st->n_grpc < 5 || st->grpc[0] != 0)
        return false; /* not OK, no message, or a compressed one (never asked for) */
    uint32_t len = (uint32_t)st->grpc[1] << 24 | (uint32_t)st->grpc[2] << 16 |
                   (uint32_t)st->grpc[3] << 8 | st->grpc[4];
    uint32_t end = 5 + len < st->n_grpc ? 5 + len : st->n_grpc;
    uint64_t status = 0; /* absent: UNKNOWN */
    for (uint32_t i = 5; i < end;) {
        uint64_t key, v;
        if (!varint(st->grpc, end, &i, &key))
            return false;
        if ((key & 7) == 0) {
            if (!varint(st->grpc, end, &i, &v))
                return false;
            if (key >> 3 == 1)
                status = v;
        } else if ((key & 7) == 2) {
            if (!varint(st->grpc, end, &i, &v) || v > end - i)
                return false;
            i += (uint32_t)v;
        } else {
            return false;
        }
    }
    return status == 1;
}

static rete_hc_result judge(const rete_exchange *c)
{
    const rete_hc_check *st = c->hc;
    if (st->timed_out)
        return RETE_HC_TIMEOUT;
    if (c->error != RETE_EXE_NONE || !c->head_sent)
        return c->error == RETE_EXE_TIMEOUT ? RETE_HC_TIMEOUT : RETE_HC_ERROR;
    const rete_traffic_policy *p = &st->svc->policy;
    switch (p->hc_kind) {
    case RETE_HC_TCP:
        return c->resp.status >= 200 && c->resp.status < 300 ? RETE_HC_SUCCESS : RETE_HC_FAILURE;
    case RETE_HC_HTTP:
        return status_passes(p, c->resp.status) ? RETE_HC_SUCCESS : RETE_HC_FAILURE;
    case RETE_HC_GRPC:
        return st->grpc_end && grpc_serving(c) ? RETE_HC_SUCCESS : RETE_HC_FAILURE;
    case RETE_HC_NONE:
    default:
        return RETE_HC_ERROR;
    }
}

/* Apply one outcome to the endpoint's slot: the streak, and the change of
 * state when a threshold is reached. The checker is the only writer. */
static void apply(rete_worker *w, rete_hc_check *st, rete_hc_result r)
{
    const rete_traffic_policy *p = &st->svc->policy;
    rete_outlier *o = st->o;
    const rete_workload *wl = st->svc->endpoints[st->idx];
    rete_telemetry_health_check(w, st->svc, result_names[r]);
    if (!o)
        return;
    int32_t s = atomic_load_explicit(&o->hc_streak, memory_order_relaxed);
    bool down = atomic_load_explicit(&o->hc_down, memory_order_relaxed);
    if (r == RETE_HC_SUCCESS) {
        s = s > 0 ? (s < INT32_MAX ? s + 1 : s) : 1;
        if (down && (uint32_t)s >= p->hc_healthy_threshold) {
            /* Back: slow start, when on, ramps it from now. */
            atomic_store_explicit(&o->joined_ns, uv_hrtime(), memory_order_relaxed);
            atomic_store_explicit(&o->hc_down, 0, memory_order_relaxed);
            rete_info("health check: %s (%s) of %s passes again: back in the balancer",
                      wl->name ? wl->name : "-", wl->address ? wl->address : "-", st->svc->fqdn);
        }
    } else {
        s = s < 0 ? (s > INT32_MIN ? s - 1 : s) : -1;
        if (!down && (uint32_t)-(int64_t)s >= p->hc_unhealthy_threshold) {
            atomic_store_explicit(&o->hc_down, 1, memory_order_relaxed);
            rete_warn("health check: %s (%s) of %s failed %d checks in a row (%s): out of the "
                      "balancer", wl->name ? wl->name : "-", wl->address ? wl->address : "-",
                      st->svc->fqdn, -s, result_names[r]);
        }
    }
    atomic_store_explicit(&o->hc_streak, s, memory_order_relaxed);
}

/* ---- the check chain ---- */

static void hc_response_body(rete_exchange *c, const rete_filter_body *b)
{
    rete_hc_check *st = c->hc;
    if (!st)
        return;
    if (b->len) {
        uint32_t room = GRPC_KEEP - st->n_grpc;
        uint32_t take = b->len < room ? (uint32_t)b->len : room;
        memcpy(st->grpc + st->n_grpc, b->data, take);
        st->n_grpc += take;
    }
    if (b->end)
        st->grpc_end = true;
}

static void hc_finish(rete_exchange *c, const rete_filter_end *end)
{
    (void)end;
    rete_hc_check *st = c->hc;
    if (!st)
        return;
    rete_hc_result r = judge(c);
    if (r != RETE_HC_SUCCESS)
        rete_debug("health check of %s endpoint %d: %s (status %d%s%s)", st->svc->fqdn, st->idx,
                   result_names[r], c->resp.status, c->error_detail[0] ? ", " : "",
                   c->error_detail);
    apply(c->worker, st, r);
    if (st->epoch == hc.epoch && st->target < hc.n)
        hc.t[st->target].busy = false;
    hc.in_flight--;
    rete_outlier_unref(st->o);
    st->o = NULL;
    c->hc = NULL;
}

const rete_filter rete_filter_health_check = {
    .name = "health-check",
    .on_response_body = hc_response_body,
    .on_finish = hc_finish,
};

/* ---- starting checks ---- */

/* The port checked: the Service's first; for gRPC its first GRPC (else
 * HTTP2) port when it has one. */
static const rete_service_port *check_port(const rete_service *svc)
{
    if (svc->policy.hc_kind == RETE_HC_GRPC) {
        for (size_t i = 0; i < svc->n_ports; i++)
            if (svc->ports[i].protocol == RETE_PROTO_GRPC)
                return &svc->ports[i];
        for (size_t i = 0; i < svc->n_ports; i++)
            if (svc->ports[i].protocol == RETE_PROTO_HTTP2)
                return &svc->ports[i];
    }
    return svc->n_ports ? &svc->ports[0] : NULL;
}

static void start_check(rete_worker *w, size_t ti, uint64_t now)
{
    hc_target *t = &hc.t[ti];
    const rete_service *svc = &w->gen->cfg->services[t->svc];
    const rete_traffic_policy *p = &svc->policy;
    const rete_service_port *sp = check_port(svc);
    rete_exchange *c = rete_ex_new(w, &check_ops, NULL);
    rete_hc_check *st = rete_arena_alloc(c->arena, sizeof(*st));
    *st = (rete_hc_check){.o = t->o,
                          .svc = svc,
                          .idx = (int)t->idx,
                          .epoch = hc.epoch,
                          .target = (uint32_t)ti,
                          .deadline = now + (uint64_t)p->hc_timeout_ms * NS_PER_MS};
    rete_outlier_hold(st->o); /* the check's own reference */
    c->hc = st;
    c->listener = "health-check";
    c->path_normalized = true;
    t->busy = true;
    hc.in_flight++;
    switch (p->hc_kind) {
    case RETE_HC_TCP:
        c->tunnel = true;
        c->req.method = RETE_VIEW_LIT("CONNECT");
        break;
    case RETE_HC_GRPC: {
        /* HealthCheckRequest{service}: field 1, length-delimited. */
        size_t sl = p->hc_grpc_service ? strlen(p->hc_grpc_service) : 0;
        if (sl > 127)
            sl = 127; /* one-byte length; service names are short (config bounds them) */
        uint8_t msg[5 + 2 + 127];
        size_t n = 0;
        if (sl) {
            msg[5] = 0x0a;
            msg[6] = (uint8_t)sl;
            memcpy(msg + 7, p->hc_grpc_service, sl);
            n = 2 + sl;
        }
        msg[0] = 0;
        msg[1] = msg[2] = msg[3] = 0;
        msg[4] = (uint8_t)n;
        c->req.method = RETE_VIEW_LIT("POST");
        c->req.scheme = RETE_VIEW_LIT("http");
        c->req.authority = rete_view_cstr(svc->fqdn);
        c->req.path = RETE_VIEW_LIT("/grpc.health.v1.Health/Check");
        c->req.content_length = (int64_t)(5 + n);
        rete_msg_add(c, &c->req, RETE_VIEW_LIT("content-type"), RETE_VIEW_LIT("application/grpc"));
        rete_msg_add(c, &c->req, RETE_VIEW_LIT("te"), RETE_VIEW_LIT("trailers"));
        rete_msg_add(c, &c->req, RETE_VIEW_LIT("user-agent"), RETE_VIEW_LIT("rete-health-check"));
        rete_ex_push(c, RETE_DOWNSTREAM, (const char *)msg, 5 + n);
        rete_ex_end(c, RETE_DOWNSTREAM);
        break;
    }
    case RETE_HC_HTTP:
    case RETE_HC_NONE:
    default:
        c->req.method = RETE_VIEW_LIT("GET");
        c->req.scheme = RETE_VIEW_LIT("http");
        c->req.authority = rete_view_cstr(svc->fqdn);
        c->req.path = rete_view_cstr(p->hc_path ? p->hc_path : "/");
        c->req.content_length = 0;
        rete_msg_add(c, &c->req, RETE_VIEW_LIT("user-agent"), RETE_VIEW_LIT("rete-health-check"));
        rete_ex_end(c, RETE_DOWNSTREAM);
        break;
    }
    check_arm(c, p->hc_timeout_ms);
    /* May end the check at once (a bad address): its finish applies it. */
    rete_route_send(c, svc, sp, (int)t->idx);
}

/* Interval +- RETE_HC_JITTER_PERCENT, so checks of many endpoints spread. */
static uint64_t next_due(rete_worker *w, const rete_traffic_policy *p, uint64_t now)
{
    uint64_t iv = (uint64_t)p->hc_interval_ms * NS_PER_MS;
    uint64_t j = iv * RETE_HC_JITTER_PERCENT / 100;
    return now + iv - j + (j ? rete_worker_rand(w) % (2 * j + 1) : 0);
}

static void on_tick(uv_timer_t *tm)
{
    rete_worker *w = tm->data;
    if (w->draining) {
        uv_timer_stop(&hc.tick);
        hc.ticking = false;
        return;
    }
    uint64_t now = uv_hrtime();
    for (size_t k = 0; k < hc.n && hc.in_flight < RETE_HC_MAX_IN_FLIGHT; k++) {
        size_t i = (hc.cursor + k) % hc.n;
        hc_target *t = &hc.t[i];
        if (t->busy || now < t->next_ns)
            continue;
        t->next_ns = next_due(w, &w->gen->cfg->services[t->svc].policy, now);
        start_check(w, i, now);
        hc.cursor = (i + 1) % hc.n;
    }
}

void rete_health_check_gen_installed(rete_worker *w)
{
    if (w->id != 0)
        return;
    if (!hc.inited) {
        uv_timer_init(&w->loop, &hc.tick);
        hc.tick.data = w;
        hc.inited = true;
        hc.w = w;
    }
    for (size_t i = 0; i < hc.n; i++)
        rete_outlier_unref(hc.t[i].o);
    rete_free(&hc.t);
    hc.n = 0;
    hc.cursor = 0;
    hc.epoch++;
    const rete_config *cfg = w->gen->cfg;
    size_t want = 0;
    for (size_t i = 0; i < cfg->n_services; i++)
        if (cfg->services[i].policy.hc_kind != RETE_HC_NONE && cfg->services[i].n_ports)
            want += cfg->services[i].n_endpoints;
    if (want)
        hc.t = rete_calloc(want, sizeof(*hc.t));
    uint64_t now = uv_hrtime();
    for (size_t i = 0; i < cfg->n_services; i++) {
        const rete_service *svc = &cfg->services[i];
        if (svc->policy.hc_kind == RETE_HC_NONE || !svc->n_ports)
            continue;
        char name[300];
        rete_outlier_service_name(svc, name, sizeof name);
        uint32_t spread = svc->policy.hc_interval_ms < FIRST_CHECK_SPREAD_MS
                              ? svc->policy.hc_interval_ms
                              : FIRST_CHECK_SPREAD_MS;
        for (size_t k = 0; k < svc->n_endpoints; k++) {
            const rete_workload *wl = svc->endpoints[k];
            if (!wl->ready || !wl->weight || !wl->address)
                continue; /* takes no traffic anyway */
            char key[96];
            rete_outlier_endpoint_key(wl, key, sizeof key);
            hc.t[hc.n++] = (hc_target){
                .svc = (uint32_t)i,
                .idx = (uint32_t)k,
                .o = rete_outlier_ref(name, key),
                .next_ns = now + (rete_worker_rand(w) % ((uint64_t)spread + 1)) * NS_PER_MS,
            };
        }
    }
    if (hc.n && !hc.ticking && !w->draining) {
        uv_timer_start(&hc.tick, on_tick, RETE_HC_TICK_MS, RETE_HC_TICK_MS);
        hc.ticking = true;
    } else if (!hc.n && hc.ticking) {
        uv_timer_stop(&hc.tick);
        hc.ticking = false;
    }
    if (hc.n)
        rete_debug("health check: %zu endpoints to check", hc.n);
}
