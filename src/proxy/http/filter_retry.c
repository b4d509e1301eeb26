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
    budget_sec win[RETE_RETRY_BUDGET_WINDOW_S];
} budget;

static budget budgets[RETE_RETRY_BUDGET_SLOTS];

static budget *budget_of(const rete_service *svc)
{
    uint64_t key = rete_fmix64(rete_fnv1a_str(RETE_FNV1A_INIT, svc->fqdn)) | 1;
    for (uint32_t i = 0; i < RETE_RETRY_BUDGET_SLOTS; i++) {
        budget *b = &budgets[(key + i) % RETE_RETRY_BUDGET_SLOTS];
        uint64_t k = atomic_load_explicit(&b->key, memory_order_acquire);
        if (k == key)
            return b;
        if (k == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(&b->key, &zero, key) || zero == key)
                return b;
        }
    }
    return &budgets[RETE_RETRY_BUDGET_SLOTS - 1];
}

static budget_sec *budget_now(budget *b, uint32_t sec)
{
    budget_sec *s = &b->win[sec % RETE_RETRY_BUDGET_WINDOW_S];
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

/* Take one retry from the budget; false when it is spent. */
static bool budget_withdraw(budget *b, uint64_t now_ns)
{
    uint32_t sec = now_sec(now_ns);
    budget_sec *cur = budget_now(b, sec);
    /* Take first, then look: two workers racing for the last retry cannot
     * both have it (one may give it back for nothing). */
    atomic_fetch_add_explicit(&cur->retries, 1, memory_order_acq_rel);
    uint64_t requests = 0, retries = 0;
    for (uint32_t i = 0; i < RETE_RETRY_BUDGET_WINDOW_S; i++) {
        const budget_sec *s = &b->win[i];
        uint32_t at = atomic_load_explicit(&s->sec, memory_order_acquire);
        if (at && at + RETE_RETRY_BUDGET_WINDOW_S > sec) {
            requests += atomic_load_explicit(&s->requests, memory_order_relaxed);
            retries += atomic_load_explicit(&s->retries, memory_order_acquire);
        }
    }
    uint64_t allowed = requests * RETE_RETRY_BUDGET_PERCENT / 100 +
                       (uint64_t)RETE_RETRY_BUDGET_MIN_PER_S * RETE_RETRY_BUDGET_WINDOW_S;
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
    budget *budget;
    rete_breaker *breaker; /* holds one of its `retries` while retry_held */
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
    if (!retry && !rule->timeout_ms && !rule->backend_timeout_ms && !ask.p)
        return;
    rete_try_state *ts = rete_arena_alloc(ex->arena, sizeof(*ts));
    memset(ts, 0, sizeof(*ts));
    ts->rule = rule;
    ts->svc = svc;
    ts->port = port;
    ts->retry = retry;
    ts->want_count = ask.p != NULL;
    ts->exclude = -1;
    ts->grpc = (ex->route && ex->route->route->grpc) ||
               rete_view_has_prefix(rete_msg_get(&ex->req, RETE_VIEW_LIT("content-type")),
                                    RETE_VIEW_LIT("application/grpc"));
    ts->any_method = rule->retry.non_idempotent || ts->grpc || idempotent(ex->req.method);
    uint64_t now = uv_hrtime();
    if (rule->timeout_ms)
        ts->req_deadline = now + (uint64_t)rule->timeout_ms * 1000000u;
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
    arm(ex);
}

int rete_retry_exclude(const rete_exchange *ex)
{
    return ex->try_state ? ex->try_state->exclude : -1;
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
    if (ts->retry_held) {
        rete_breaker_give(&ts->breaker->retries);
        ts->retry_held = false;
    }
    const rete_upstream_limits *lim = rete_gen_limits(ex->gen, ts->svc);
    if (!rete_breaker_take(&lim->breaker->retries, ts->svc->policy.max_retries)) {
        rete_stat(ex->worker, ex->worker->ms.cb_rejections[RETE_BREAKER_MAX_RETRIES], 1);
        return false;
    }
    if (!budget_withdraw(ts->budget, now)) {
        rete_breaker_give(&lim->breaker->retries);
        rete_telemetry_retry_budget_exhausted(ex->worker, ts->svc);
        return false;
    }
    ts->breaker = lim->breaker;
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
    if (!ts || !ts->retry)
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

static void answer_timeout(rete_exchange *ex, const char *which, const char *field, uint32_t ms)
{
    ex->error = RETE_EXE_TIMEOUT;
    snprintf(ex->error_detail, sizeof(ex->error_detail), "%s timeout", which);
    if (ex->service)
        rete_telemetry_upstream_timeout(ex->worker, ex->service,
                                        strcmp(which, "request") == 0 ? "request" : "per_try");
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
    if (ex->attached[RETE_DOWNSTREAM])
        rete_filter_local_text(ex, 504, "upstream %s timeout (%s %u ms)", which, field, ms);
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
        answer_timeout(ex, "request", "timeouts.request", ts->rule->timeout_ms);
        return;
    }
    if (ts->pending && now >= ts->backoff_due) {
        ts->pending = false;
        ts->backoff_due = 0;
        rete_ex_retry_reset(ex, ts->replay, ts->replay_len);
        rete_route_try(ex, ts->svc, ts->port, ts->exclude);
        return; /* rete_retry_try_started re-armed the timer */
    }
    if (!ts->pending && ts->try_deadline && now >= ts->try_deadline) {
        ts->try_deadline = 0;
        if (!ex->head_sent && ex->attached[RETE_DOWNSTREAM] &&
            retryable_status(ts, 504) && may_retry(ex, true, "per_try_timeout")) {
            if (ex->service)
                rete_telemetry_upstream_timeout(ex->worker, ex->service, "per_try");
            schedule(ex, true);
            if (ex->attached[RETE_UPSTREAM]) /* a timer: no codec on the stack */
                ex->ops[RETE_UPSTREAM]->on_abort(ex);
            return;
        }
        answer_timeout(ex, "per-try", "timeouts.backendRequest", ts->rule->backend_timeout_ms);
        return;
    }
    arm(ex);
}

/* Arm the exchange's timer for the nearest deadline. */
static void arm(rete_exchange *ex)
{
    rete_try_state *ts = ex->try_state;
    uint64_t due = 0;
    const uint64_t d[3] = {ts->req_deadline, ts->pending ? ts->backoff_due : ts->try_deadline, 0};
    for (int i = 0; i < 2; i++)
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
    if (ts && ts->retry && b->len)
        replay_add(ts, b->data, b->len);
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
    if (ts->retry_held) {
        rete_breaker_give(&ts->breaker->retries);
        ts->retry_held = false;
    }
    free(ts->replay);
    ts->replay = NULL;
    ts->replay_len = ts->replay_cap = 0;
    ts->replay_over = true; /* no body stage runs after finish; nothing to keep */
}

const rete_filter rete_filter_retry = {
    .name = "retry",
    .on_request_body = retry_request_body,
    .on_response = retry_response,
    .on_finish = retry_finish,
};
