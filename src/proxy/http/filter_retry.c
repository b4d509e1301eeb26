/* Retries with a budget, and the per-try and request timeouts of outbound
 * requests (retry.h has the contract, docs/traffic.md the user's view).
 *
 * State lives in the exchange (ex->try_state, arena), only for requests of
 * a rule with `retry` or `timeouts`; the replay copy of the request body is
 * malloc'd, only for a rule with `retry`, grows to the body's size up to
 * RETE_RETRY_REPLAY_MAX and is freed at finish (or as soon as the body
 * outgrows it). The exchange's one timer carries every deadline: the
 * request's, the try's and the backoff's; it is re-armed for the nearest.
 *
 * The retry budget is per Service and per proxy: a table of per-second
 * counters (requests, retries) in atomics, written by every worker. A slot
 * is recycled by the first worker to see its second change; a count racing
 * that reset may be lost, so the budget is approximate by a request or two
 * at a second's boundary (never by more). */
#include "retry.h"
#include "filter.h"
#include "alloc.h"
#include "breaker.h"
#include "codec.h"
#include "config.h"
#include "hash.h"
#include "slots.h"
#include "log.h"
#include "telemetry.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the budget ---- */

typedef struct budget_sec {
    _Atomic uint32_t sec; /* monotonic second + 1 this slot counts; 0: never */
    _Atomic uint32_t requests;
    _Atomic uint32_t retries;
} budget_sec;

typedef struct budget {
    _Atomic uint64_t key; /* FQDN hash | 1; 0: free */
    budget_sec win[RETE_RETRY_BUDGET_WINDOW_MAX_S];
} budget;

static budget budgets[RETE_RETRY_BUDGET_SLOTS];

static budget *budget_of(const rete_service *svc)
{
    uint64_t key = rete_fmix64(rete_fnv1a_str(RETE_FNV1A_INIT, svc->fqdn)) | 1;
    size_t at = rete_slot_claim(budgets, RETE_RETRY_BUDGET_SLOTS, sizeof(*budgets), RETE_RETRY_BUDGET_SLOTS, key);
    return &budgets[at < RETE_RETRY_BUDGET_SLOTS ? at : RETE_RETRY_BUDGET_SLOTS - 1];
}

static budget_sec *budget_now(budget *b, uint32_t sec)
{
    budget_sec *s = &b->win[sec % RETE_RETRY_BUDGET_WINDOW_MAX_S];
    uint32_t old = atomic_load_explicit(&s->sec, memory_order_acquire);
    if (old != sec && atomic_compare_exchange_strong(&s->sec, &old, sec)) {
        atomic_store_explicit(&s->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&s->retries, 0, memory_order_relaxed);
    }
    return s;
}

static uint32_t now_sec(uint64_t now_ns)
{
    return (uint32_t)(now_ns / 1000000000u) + 1;
}

static void budget_deposit(budget *b, uint64_t now_ns)
{
    atomic_fetch_add_explicit(&budget_now(b, now_sec(now_ns))->requests, 1, memory_order_relaxed);
}

/* Take one retry from the budget of a Service with policy `p`; false when
 * it is spent. */
static bool budget_withdraw(budget *b, const rete_traffic_policy *p, uint64_t now_ns)
{
    uint32_t sec = now_sec(now_ns);
    uint32_t window = p->budget_interval_ms / 1000;
    if (window < 1 || window > RETE_RETRY_BUDGET_WINDOW_MAX_S) /* the loader's bounds */
        window = window < 1 ? 1 : RETE_RETRY_BUDGET_WINDOW_MAX_S;
    budget_sec *cur = budget_now(b, sec);
    /* Take first, then look: two workers racing for the last retry cannot
     * both have it (one may give it back for nothing). */
    atomic_fetch_add_explicit(&cur->retries, 1, memory_order_acq_rel);
    uint64_t requests = 0, retries = 0;
    for (uint32_t i = 0; i < RETE_RETRY_BUDGET_WINDOW_MAX_S; i++) {
        const budget_sec *s = &b->win[i];
        uint32_t at = atomic_load_explicit(&s->sec, memory_order_acquire);
        if (at && at + window > sec) {
            requests += atomic_load_explicit(&s->requests, memory_order_relaxed);
            retries += atomic_load_explicit(&s->retries, memory_order_acquire);
        }
    }
    uint64_t min_interval = p->min_retry_interval_ms ? p->min_retry_interval_ms : 1000;
    uint64_t allowed = requests * p->budget_percent / 100 +
                       (uint64_t)p->min_retry_count * window * 1000 / min_interval;
    if (retries > allowed) {
        atomic_fetch_sub_explicit(&cur->retries, 1, memory_order_acq_rel);
        return false;
    }
    return true;
}

/* ---- the try state ---- */

typedef struct rete_try_state {
    const rete_http_rule *rule;
    const rete_service *svc;
    uint16_t port;
    bool retry;           /* the rule has `retry` */
    bool any_method;      /* the method may be retried on more than a connect failure */
    bool grpc;            /* a gRPC request: grpc-status is retried too */
    bool want_count;      /* the client asked for the attempt count */
    bool replay_over;     /* the body outgrew the replay buffer: no more retries */
    bool pending;         /* a retry is scheduled (backoff_due) */
    bool failed_try;      /* the try that led to the pending retry failed (balancer) */
    uint32_t tries;       /* tries started */
    int exclude;          /* the endpoint of the last failed try, -1 */
    char *replay;
    size_t replay_len, replay_cap;
    uint64_t req_deadline, try_deadline, backoff_due; /* uv_hrtime ns, 0: none */
    /* grpc-timeout: the request came with a valid one; grpc_binds: its
     * deadline is req_deadline (it is sooner than timeouts.request). */
    bool grpc_timeout, grpc_binds;
    uint32_t grpc_timeout_ms;   /* as received, rounded up (messages) */
    /* DestinationRule connectionPool.http.responseHeaderTimeout and
     * streamIdleTimeout of the Service (0: none). */
    uint32_t header_ms, idle_ms;
    uint64_t header_deadline;   /* the try's: armed once its request is sent */
    uint64_t last_active;       /* the try's last byte either way (ns) */
    budget *budget;
    rete_breaker *breaker; /* holds one of its `retries` while retry_held */
    rete_breaker *rule_breaker; /* the rule's circuitBreaker: one of its `retries` too, when set */
    bool retry_held;
} rete_try_state;

/* The request header a client sends to get the attempt count back, in the
 * response header of the same name (docs/traffic.md). Removed before the
 * request goes upstream. */
#define ATTEMPT_COUNT_HEADER "rete-attempt-count"

static bool idempotent(rete_view m)
{
    static const char *const ok[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (rete_view_eq(m, rete_view_cstr(ok[i])))
            return true;
    return false;
}

static void arm(rete_exchange *ex);

/* ---- grpc-timeout (grpc/doc/PROTOCOL-HTTP2.md) ---- */

#define GRPC_TIMEOUT_HEADER "grpc-timeout"

/* "TimeoutValue TimeoutUnit": 1 to 8 ASCII digits, then one of H M S m u
 * n. Returns false for anything else (the caller ignores the header, as
 * gRPC's C core and Envoy do). */
static bool grpc_timeout_parse(rete_view v, uint64_t *ns)
{
    if (v.len < 2 || v.len > 9)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    uint64_t unit;
    switch (v.p[v.len - 1]) {
    case 'H': unit = 3600000000000ull; break;
    case 'M': unit = 60000000000ull; break;
    case 'S': unit = 1000000000ull; break;
    case 'm': unit = 1000000ull; break;
    case 'u': unit = 1000ull; break;
    case 'n': unit = 1ull; break;
    default: return false;
    }
    *ns = n * unit; /* at most 99999999 H: fits in 64 bits */
    return true;
}

/* The remaining `ns` as a grpc-timeout value: the finest unit whose value
 * fits in 8 digits, rounded up, at least 1. */
static size_t grpc_timeout_format(uint64_t ns, char *out, size_t cap)
{
    static const struct { uint64_t unit; char c; } units[] = {
        {1ull, 'n'}, {1000ull, 'u'}, {1000000ull, 'm'}, {1000000000ull, 'S'},
        {60000000000ull, 'M'}, {3600000000000ull, 'H'}};
    size_t i = 0;
    uint64_t v = ns;
    for (; i < sizeof(units) / sizeof(units[0]); i++) {
        v = (ns + units[i].unit - 1) / units[i].unit;
        if (v <= 99999999u)
            break;
    }
    if (i == sizeof(units) / sizeof(units[0])) {
        i--;
        v = 99999999u;
    }
    if (!v)
        v = 1;
    int n = snprintf(out, cap, "%llu%c", (unsigned long long)v, units[i].c);
    return n > 0 ? (size_t)n : 0;
}

/* A gRPC request's grpc-timeout: set ts->req_deadline to the sooner of it
 * and timeouts.request. */
static void grpc_timeout_begin(rete_exchange *ex, rete_try_state *ts, rete_view v, uint64_t now)
{
    uint64_t ns;
    if (!grpc_timeout_parse(v, &ns)) {
        rete_debug("grpc-timeout \"%.*s\" of %.*s is malformed: ignored", (int)v.len, v.p,
                   (int)ex->req.path.len, ex->req.path.p);
        return;
    }
    ts->grpc_timeout = true;
    uint64_t ms = ns / 1000000u + (ns % 1000000u != 0);
    ts->grpc_timeout_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    uint64_t due = now + ns < now ? UINT64_MAX : now + ns;
    if (!ts->req_deadline || due < ts->req_deadline) {
        ts->req_deadline = due;
        ts->grpc_binds = true;
    }
}

static void replay_add(rete_try_state *ts, const char *data, size_t len)
{
    if (ts->replay_over || !len)
        return;
    if (ts->replay_len + len > RETE_RETRY_REPLAY_MAX) {
        free(ts->replay);
        ts->replay = NULL;
        ts->replay_len = ts->replay_cap = 0;
        ts->replay_over = true;
        return;
    }
    if (ts->replay_len + len > ts->replay_cap) {
        size_t cap = ts->replay_cap ? ts->replay_cap : 1024;
        while (cap < ts->replay_len + len)
            cap *= 2;
        if (cap > RETE_RETRY_REPLAY_MAX)
            cap = RETE_RETRY_REPLAY_MAX;
        ts->replay = rete_realloc(ts->replay, cap);
        ts->replay_cap = cap;
    }
    memcpy(ts->replay + ts->replay_len, data, len);
    ts->replay_len += len;
}

void rete_retry_begin(rete_exchange *ex, const rete_http_rule *rule, const rete_service *svc,
                      uint16_t port)
{
    bool retry = rule->retry.attempts > 0;
    rete_view ask = rete_msg_get(&ex->req, RETE_VIEW_LIT(ATTEMPT_COUNT_HEADER));
    if (ask.p)
        rete_msg_remove(&ex->req, RETE_VIEW_LIT(ATTEMPT_COUNT_HEADER));
    const rete_traffic_policy *pol = &svc->policy;
    rete_view grpc_to = rete_msg_get(&ex->req, RETE_VIEW_LIT(GRPC_TIMEOUT_HEADER));
    bool grpc = (ex->route && ex->route->route->grpc) ||
                rete_view_has_prefix(rete_msg_get(&ex->req, RETE_VIEW_LIT("content-type")),
                                     RETE_VIEW_LIT("application/grpc"));
    if (!grpc)
        grpc_to = RETE_VIEW_NULL; /* only gRPC requests carry a deadline in it */
    if (!retry && !rule->timeout_ms && !rule->backend_timeout_ms && !ask.p && !grpc_to.p &&
        !pol->response_header_timeout_ms && !pol->stream_idle_timeout_ms)
        return;
    rete_try_state *ts = rete_arena_alloc(ex->arena, sizeof(*ts));
    memset(ts, 0, sizeof(*ts));
    ts->rule = rule;
    ts->svc = svc;
    ts->port = port;
    ts->retry = retry;
    ts->want_count = ask.p != NULL;
    ts->exclude = -1;
    ts->grpc = grpc;
    ts->header_ms = pol->response_header_timeout_ms;
    ts->idle_ms = pol->stream_idle_timeout_ms;
    ts->any_method = rule->retry.non_idempotent || ts->grpc || idempotent(ex->req.method);
    uint64_t now = uv_hrtime();
    if (rule->timeout_ms)
        ts->req_deadline = now + (uint64_t)rule->timeout_ms * 1000000u;
    if (grpc_to.p)
        grpc_timeout_begin(ex, ts, grpc_to, now);
    if (retry) {
        ts->budget = budget_of(svc);
        budget_deposit(ts->budget, now);
        /* Body bytes that entered the pipe before routing (none today:
         * codecs route on the head) are in the replay copy too. */
        for (const rete_chunk *c = ex->req_body.head; c; c = c->next)
            replay_add(ts, c->data + c->off, c->len - c->off);
    }
    ex->try_state = ts;
}

void rete_retry_try_started(rete_exchange *ex)
{
    rete_try_state *ts = ex->try_state;
    ts->tries++;
    uint64_t now = uv_hrtime();
    ts->try_deadline = ts->rule->backend_timeout_ms
                           ? now + (uint64_t)ts->rule->backend_timeout_ms * 1000000u
                           : 0;
    /* responseHeaderTimeout counts from the request's end: now when the
     * body is all here (or there is none), else when it ends. */
    ts->header_deadline =
        ts->header_ms && ex->req_body.end ? now + (uint64_t)ts->header_ms * 1000000u : 0;
    ts->last_active = now;
    if (ts->grpc_timeout && ts->req_deadline) {
        /* The next hop sees what is left of the request's deadline. */
        char v[16];
        size_t n = grpc_timeout_format(ts->req_deadline > now ? ts->req_deadline - now : 0, v,
                                       sizeof(v));
        rete_msg_set(ex, &ex->req, RETE_VIEW_LIT(GRPC_TIMEOUT_HEADER),
                     rete_ex_dup(ex, rete_view_make(v, n)));
    }
    arm(ex);
}

int rete_retry_exclude(const rete_exchange *ex)
{
    return ex->try_state ? ex->try_state->exclude : -1;
}

/* The retry in flight ends: its counts go back. */
static void give_retry(rete_try_state *ts)
{
    if (!ts->retry_held)
        return;
    rete_breaker_give(&ts->breaker->retries);
    if (ts->rule_breaker)
        rete_breaker_give(&ts->rule_breaker->retries);
    ts->rule_breaker = NULL;
    ts->retry_held = false;
}

/* Whether one more try may be made for `reason` (counted when it may, or
 * when the budget refused it). */
static bool may_retry(rete_exchange *ex, bool needs_method, const char *reason)
{
    rete_try_state *ts = ex->try_state;
    if (!ts || !ts->retry || ts->replay_over || ts->tries > ts->rule->retry.attempts)
        return false;
    if (needs_method && !ts->any_method)
        return false;
    uint64_t now = uv_hrtime();
    if (ts->req_deadline && now >= ts->req_deadline)
        return false;
    /* DestinationRule connectionPool.http.maxRetries: retries in flight to
     * the Service, across the proxy. A retry is in flight from here until
     * the request's next retry decision or its end. */
    give_retry(ts);
    const rete_upstream_limits *lim = rete_gen_limits(ex->gen, ts->svc);
    if (!rete_breaker_take(&lim->breaker->retries, ts->svc->policy.max_retries)) {
        rete_stat(ex->worker, ex->worker->ms.cb_rejections[RETE_BREAKER_MAX_RETRIES], 1);
        return false;
    }
    /* The rule's own circuitBreaker.maxRetries, the same way. */
    rete_breaker *rb = NULL;
    if (ts->rule->limit_retries && ex->route) {
        const rete_http_route *r = ex->route->route;
        rb = rete_breaker_of_rule(r->ns, r->name, (size_t)(ts->rule - r->rules));
        if (!rete_breaker_take(&rb->retries, ts->rule->max_retries)) {
            rete_breaker_give(&lim->breaker->retries);
            rete_stat(ex->worker, ex->worker->ms.cb_rejections[RETE_BREAKER_ROUTE_MAX_RETRIES], 1);
            return false;
        }
    }
    if (!budget_withdraw(ts->budget, &ts->svc->policy, now)) {
        rete_breaker_give(&lim->breaker->retries);
        if (rb)
            rete_breaker_give(&rb->retries);
        rete_telemetry_retry_budget_exhausted(ex->worker, ts->svc);
        return false;
    }
    ts->breaker = lim->breaker;
    ts->rule_breaker = rb;
    ts->retry_held = true;
    rete_telemetry_retry(ex->worker, ts->svc, reason);
    return true;
}

/* Schedule the next try after the backoff; the current one ended. */
static void schedule(rete_exchange *ex, bool failed)
{
    rete_try_state *ts = ex->try_state;
    ts->exclude = ex->endpoint;
    ts->failed_try = failed;
    rete_route_try_end(ex, failed);
    uint64_t base = (uint64_t)ts->rule->retry.backoff_ms * 1000000u;
    uint64_t d = base;
    for (uint32_t i = 1; i < ts->tries && d < base * RETE_RETRY_BACKOFF_CAP_X; i++)
        d *= 2;
    if (d > base * RETE_RETRY_BACKOFF_CAP_X)
        d = base * RETE_RETRY_BACKOFF_CAP_X;
    uint64_t wait = d / 2 + (d ? rete_worker_rand(ex->worker) % (d / 2 + 1) : 0);
    ts->pending = true;
    ts->try_deadline = 0;
    ts->backoff_due = uv_hrtime() + wait;
    rete_debug("retry %u of %s %.*s to %s in %llu us", ts->tries, ex->service->fqdn,
               (int)ex->req.path.len, ex->req.path.p, ts->svc->fqdn,
               (unsigned long long)(wait / 1000));
    arm(ex);
}

bool rete_retry_upstream_failed(rete_exchange *ex)
{
    if (ex->error == RETE_EXE_CONNECT_TIMEOUT && ex->service)
        rete_telemetry_upstream_timeout(ex->worker, ex->service, "connect");
    rete_try_state *ts = ex->try_state;
    if (!ts)
        return false;
    if (ts->pending)
        return true; /* the held response's upstream let go: the retry is on its way */
    bool connect = ex->error == RETE_EXE_CONNECT || ex->error == RETE_EXE_CONNECT_TIMEOUT;
    if (!connect && ex->error != RETE_EXE_UPSTREAM_RESET)
        return false;
    if (!may_retry(ex, !connect, connect ? "connect_failure" : "reset"))
        return false;
    schedule(ex, true);
    return true;
}

static bool retryable_status(const rete_try_state *ts, int status)
{
    for (size_t i = 0; i < ts->rule->retry.n_codes; i++)
        if (ts->rule->retry.codes[i] == status)
            return true;
    return false;
}

/* CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE. */
static bool retryable_grpc(const rete_exchange *ex)
{
    rete_view g = rete_msg_get(&ex->resp, RETE_VIEW_LIT("grpc-status"));
    if (g.len != 1 && g.len != 2)
        return false;
    int code = 0;
    for (size_t i = 0; i < g.len; i++) {
        if (g.p[i] < '0' || g.p[i] > '9')
            return false;
        code = code * 10 + (g.p[i] - '0');
    }
    return code == 1 || code == 4 || code == 8 || code == 14;
}

bool rete_retry_upstream_response(rete_exchange *ex)
{
    rete_try_state *ts = ex->try_state;
    if (!ts)
        return false;
    if (!ts->pending) {
        ts->header_deadline = 0;
        ts->last_active = uv_hrtime();
    }
    if (!ts->retry)
        return false;
    if (ts->pending)
        return true; /* a late answer of a try already given up (per-try timeout) */
    const char *reason = NULL;
    if (retryable_status(ts, ex->resp.status))
        reason = "status";
    else if (ts->grpc && retryable_grpc(ex))
        reason = "grpc_status";
    if (!reason || !may_retry(ex, true, reason))
        return false;
    schedule(ex, ex->resp.status >= 500);
    return true;
}

/* ---- the timer ---- */

/* A timeout fired: 504 naming it (gRPC: DEADLINE_EXCEEDED, trailers-only,
 * the text in grpc-message) before the response head, else both sides
 * reset. `label` is the metric's timeout label. */
static void answer_timeout(rete_exchange *ex, const char *which, const char *label,
                           const char *field, uint32_t ms)
{
    ex->error = RETE_EXE_TIMEOUT;
    snprintf(ex->error_detail, sizeof(ex->error_detail), "%s timeout", which);
    if (ex->service)
        rete_telemetry_upstream_timeout(ex->worker, ex->service, label);
    if (ex->head_sent || !ex->attached[RETE_DOWNSTREAM]) {
        /* Too late for a 504: abort both sides. */
        if (ex->attached[RETE_UPSTREAM])
            ex->ops[RETE_UPSTREAM]->on_abort(ex);
        if (ex->attached[RETE_DOWNSTREAM])
            ex->ops[RETE_DOWNSTREAM]->on_abort(ex);
        return;
    }
    if (ex->attached[RETE_UPSTREAM])
        ex->ops[RETE_UPSTREAM]->on_abort(ex);
    if (!ex->attached[RETE_DOWNSTREAM])
        return;
    if (ex->try_state->grpc && !ex->tunnel) {
        char body[160];
        int n = snprintf(body, sizeof(body), "upstream %s timeout (%s %u ms)", which, field, ms);
        rete_ex_local_response_with(ex, 504, 4 /* DEADLINE_EXCEEDED */, true, NULL, 0,
                                    "text/plain; charset=utf-8", body,
                                    n > 0 && (size_t)n < sizeof(body) ? (size_t)n : 0);
        return;
    }
    rete_filter_local_text(ex, 504, "upstream %s timeout (%s %u ms)", which, field, ms);
}

/* streamIdleTimeout: the try's upstream is there, its response not
 * complete, and no byte went either way for idle_ms. */
static bool stream_idle_watched(const rete_exchange *ex)
{
    const rete_try_state *ts = ex->try_state;
    return ts->idle_ms && !ts->pending && ex->attached[RETE_UPSTREAM] && !ex->waiting &&
           !ex->resp_body.end && !rete_ex_upstream_is_local(ex);
}

static bool stream_idle(const rete_exchange *ex, uint64_t now)
{
    const rete_try_state *ts = ex->try_state;
    return stream_idle_watched(ex) && now - ts->last_active >= (uint64_t)ts->idle_ms * 1000000u;
}

static void on_timer(uv_timer_t *t)
{
    rete_exchange *ex = t->data;
    rete_try_state *ts = ex->try_state;
    ex->timer_active = false;
    if (!ts || ex->done)
        return;
    uint64_t now = uv_hrtime();
    if (ts->req_deadline && now >= ts->req_deadline) {
        ts->pending = false;
        if (ts->grpc_binds)
            answer_timeout(ex, "request", "grpc_timeout", "grpc-timeout", ts->grpc_timeout_ms);
        else
            answer_timeout(ex, "request", "request", "timeouts.request", ts->rule->timeout_ms);
        return;
    }
    if (ts->pending && now >= ts->backoff_due) {
        ts->pending = false;
        ts->backoff_due = 0;
        rete_ex_retry_reset(ex, ts->replay, ts->replay_len);
        rete_route_try(ex, ts->svc, ts->port, ts->exclude);
        return; /* rete_retry_try_started re-armed the timer */
    }
    bool per_try = ts->try_deadline && now >= ts->try_deadline;
    bool header = ts->header_deadline && now >= ts->header_deadline;
    if (!ts->pending && (per_try || header)) {
        ts->try_deadline = ts->header_deadline = 0;
        const char *label = per_try ? "per_try" : "response_header";
        if (!ex->head_sent && ex->attached[RETE_DOWNSTREAM] && retryable_status(ts, 504) &&
            may_retry(ex, true, per_try ? "per_try_timeout" : "response_header_timeout")) {
            if (ex->service)
                rete_telemetry_upstream_timeout(ex->worker, ex->service, label);
            schedule(ex, true);
            if (ex->attached[RETE_UPSTREAM]) /* a timer: no codec on the stack */
                ex->ops[RETE_UPSTREAM]->on_abort(ex);
            return;
        }
        if (per_try)
            answer_timeout(ex, "per-try", label, "timeouts.backendRequest",
                           ts->rule->backend_timeout_ms);
        else
            answer_timeout(ex, "response header", label,
                           "connectionPool.http.responseHeaderTimeout", ts->header_ms);
        return;
    }
    if (stream_idle(ex, now)) {
        answer_timeout(ex, "stream idle", "stream_idle", "connectionPool.http.streamIdleTimeout",
                       ts->idle_ms);
        return;
    }
    arm(ex);
}

/* Arm the exchange's timer for the nearest deadline. */
static void arm(rete_exchange *ex)
{
    rete_try_state *ts = ex->try_state;
    uint64_t due = 0;
    const uint64_t d[4] = {
        ts->req_deadline, ts->pending ? ts->backoff_due : ts->try_deadline,
        ts->pending ? 0 : ts->header_deadline,
        /* armed from the try's start, before its upstream attaches */
        ts->idle_ms && !ts->pending && !ex->resp_body.end
            ? ts->last_active + (uint64_t)ts->idle_ms * 1000000u
            : 0};
    for (int i = 0; i < 4; i++)
        if (d[i] && (!due || d[i] < due))
            due = d[i];
    if (!due) {
        if (ex->timer_active)
            uv_timer_stop(&ex->timer);
        ex->timer_active = false;
        return;
    }
    uint64_t now = uv_hrtime();
    uint64_t ms = due > now ? (due - now + 999999u) / 1000000u : 0;
    ex->timer_active = true;
    rete_ex_timer_start(ex, on_timer, ms);
}

/* ---- the filter ---- */

static void retry_request_body(rete_exchange *ex, const rete_filter_body *b)
{
    rete_try_state *ts = ex->try_state;
    if (!ts)
        return;
    if (ts->retry && b->len)
        replay_add(ts, b->data, b->len);
    if (ts->idle_ms)
        ts->last_active = uv_hrtime();
    if (b->end && ts->header_ms && !ts->pending && ex->attached[RETE_UPSTREAM] && !ex->done) {
        ts->header_deadline = uv_hrtime() + (uint64_t)ts->header_ms * 1000000u;
        arm(ex);
    }
}

static void retry_response_body(rete_exchange *ex, const rete_filter_body *b)
{
    (void)b;
    rete_try_state *ts = ex->try_state;
    if (ts && ts->idle_ms)
        ts->last_active = uv_hrtime();
}

static void retry_response(rete_exchange *ex)
{
    rete_try_state *ts = ex->try_state;
    if (!ts || !ts->want_count)
        return;
    char n[12];
    snprintf(n, sizeof(n), "%u", ts->tries);
    rete_msg_set(ex, &ex->resp, RETE_VIEW_LIT(ATTEMPT_COUNT_HEADER),
                 rete_ex_dup(ex, rete_view_cstr(n)));
}

static void retry_finish(rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    rete_try_state *ts = ex->try_state;
    if (!ts)
        return;
    give_retry(ts);
    free(ts->replay);
    ts->replay = NULL;
    ts->replay_len = ts->replay_cap = 0;
    ts->replay_over = true; /* no body stage runs after finish; nothing to keep */
}

const rete_filter rete_filter_retry = {
    .name = "retry",
    .on_request_body = retry_request_body,
    .on_response_body = retry_response_body,
    .on_response = retry_response,
    .on_finish = retry_finish,
};
