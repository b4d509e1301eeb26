/* Local rate limits (docs/traffic.md): token buckets on the requests of
 * an outbound route rule (`rateLimit`) and on the inbound requests of the
 * workload (HTTPLocalRateLimitPolicy: in total and per caller identity,
 * with overrides per identity). A request over a limit is answered 429
 * with retry-after (gRPC: RESOURCE_EXHAUSTED, 8) and counted in
 * rete_proxy_rate_limited_total{limit}.
 *
 * Buckets are shared by every worker of the proxy and take no lock: each
 * is one atomic "theoretical arrival time" (GCRA, the token bucket written
 * as a time): a request is let through when tat - now <= one second -
 * interval, and moves tat to max(tat, now) + interval with one compare-
 * and-swap (retried only when another worker moved it meanwhile). So a
 * bucket refills at its rate and holds one second's worth of requests (its
 * burst), and counts are exact across workers. A bucket's rate comes from
 * the configuration at each check (not stored), so a reload changes a rate
 * without resetting what was spent.
 *
 * Where buckets live: two fixed tables of the process (open addressing by
 * a 64-bit hash of the limit's name, and the identity), never freed:
 * - limits (routes' rules and policies' totals): RETE_RL_LIMIT_SLOTS; past
 *   it (that many rate-limited rules and policies) the rest share the last
 *   slot;
 * - identities: RETE_RL_IDENTITY_SLOTS, probed RETE_RL_PROBE deep; an
 *   identity that finds no slot shares its policy's overflow bucket (a
 *   limit slot at the identity's rate): past the cap, new callers are
 *   limited together, never let through unlimited. */
#include "filter.h"
#include "config.h"
#include "hash.h"
#include "slots.h"
#include "log.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define RETE_RL_LIMIT_SLOTS 4096u    /* 64 KiB */
#define RETE_RL_IDENTITY_SLOTS 8192u /* 128 KiB */
#define RETE_RL_PROBE 32u

typedef struct rl_bucket {
    _Atomic uint64_t key; /* hash | 1; 0: free */
    _Atomic uint64_t tat; /* uv_hrtime ns; 0: full */
} rl_bucket;

static rl_bucket limit_slots[RETE_RL_LIMIT_SLOTS];
static rl_bucket identity_slots[RETE_RL_IDENTITY_SLOTS];

enum { LIMIT_ROUTE, LIMIT_TOTAL, LIMIT_IDENTITY };

static rl_bucket *find(rl_bucket *t, uint32_t n, uint32_t probe, uint64_t key)
{
    size_t at = rete_slot_claim(t, n, sizeof(*t), probe, key | 1);
    return at < n ? &t[at] : NULL;
}

static rl_bucket *limit_bucket(uint64_t key)
{
    rl_bucket *b = find(limit_slots, RETE_RL_LIMIT_SLOTS, RETE_RL_LIMIT_SLOTS, key);
    return b ? b : &limit_slots[RETE_RL_LIMIT_SLOTS - 1];
}

/* Take one request from bucket b at `rps`: 0 when it may go, else the
 * nanoseconds until it could. */
static uint64_t take(rl_bucket *b, uint32_t rps, uint64_t now)
{
    const uint64_t sec = 1000000000u;
    uint64_t interval = sec / rps;
    uint64_t tolerance = sec - interval;
    uint64_t tat = atomic_load_explicit(&b->tat, memory_order_relaxed);
    for (;;) {
        uint64_t t = tat > now ? tat : now;
        if (t - now > tolerance)
            return t - now - tolerance;
        if (atomic_compare_exchange_weak_explicit(&b->tat, &tat, t + interval,
                                                  memory_order_relaxed, memory_order_relaxed))
            return 0;
    }
}

static uint64_t key_of(const char *a, const char *b, const char *c, uint64_t n)
{
    uint64_t h = rete_fnv1a_str(RETE_FNV1A_INIT, a);
    h = rete_fnv1a_str(h ^ 0x2f, b);
    h = rete_fnv1a_str(h ^ 0x2f, c);
    return rete_fmix64(h ^ n);
}

static rete_filter_verdict refuse(rete_exchange *ex, int limit, uint64_t wait_ns, const char *what)
{
    rete_stat(ex->worker, ex->worker->ms.rate_limited[limit], 1);
    ex->error = RETE_EXE_RATE_LIMITED;
    uint64_t s = (wait_ns + 999999999u) / 1000000000u;
    char secs[24];
    snprintf(secs, sizeof(secs), "%llu", (unsigned long long)(s ? s : 1));
    const rete_view hdrs[2] = {RETE_VIEW_LIT("retry-after"), rete_ex_dup(ex, rete_view_cstr(secs))};
    char body[320];
    int n = snprintf(body, sizeof(body), "local rate limit: %s\n", what);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    rete_ex_local_response_with(ex, 429, 8 /* RESOURCE_EXHAUSTED */, false, hdrs, 2,
                                "text/plain; charset=utf-8", body, (size_t)n);
    return RETE_FILTER_DONE;
}

/* An outbound rule's rateLimit. */
static rete_filter_verdict outbound(rete_exchange *ex, uint64_t now)
{
    const rete_route_entry *e = ex->route;
    if (!e || !e->rule->rate_limit_rps)
        return RETE_FILTER_NEXT;
    const rete_http_route *r = e->route;
    uint64_t idx = (uint64_t)(e->rule - r->rules);
    uint64_t wait = take(limit_bucket(key_of("route", r->ns, r->name, idx)),
                         e->rule->rate_limit_rps, now);
    if (!wait)
        return RETE_FILTER_NEXT;
    char what[256];
    snprintf(what, sizeof(what), "route %s/%s rule %llu: %u requests per second", r->ns, r->name,
             (unsigned long long)idx, e->rule->rate_limit_rps);
    return refuse(ex, LIMIT_ROUTE, wait, what);
}

/* The caller's bucket of policy p (its override's rate, or identity's). */
static uint64_t take_identity(const rete_rate_limit_policy *p, const char *id, uint64_t now,
                              uint32_t *rps)
{
    *rps = p->identity_rps;
    for (size_t i = 0; i < p->n_overrides; i++)
        if (strcmp(p->overrides[i].identity, id) == 0)
            *rps = p->overrides[i].rps;
    if (!*rps)
        return 0;
    rl_bucket *b = find(identity_slots, RETE_RL_IDENTITY_SLOTS, RETE_RL_PROBE,
                        key_of("identity", p->ns, p->name, rete_fnv1a_str(RETE_FNV1A_INIT, id)));
    if (!b) {
        b = limit_bucket(key_of("overflow", p->ns, p->name, 0));
        *rps = p->identity_rps ? p->identity_rps : *rps;
    }
    return take(b, *rps, now);
}

/* The workload's HTTPLocalRateLimitPolicies for the request's port. */
static rete_filter_verdict inbound(rete_exchange *ex, uint64_t now)
{
    const rete_config *cfg = ex->gen->cfg;
    const char *id = ex->peer_id; /* "" for a plaintext caller: they share one bucket */
    for (size_t i = 0; i < cfg->n_rate_limits; i++) {
        const rete_rate_limit_policy *p = &cfg->rate_limits[i];
        if (p->port && p->port != ex->target_port)
            continue;
        uint32_t rps = 0;
        uint64_t wait = take_identity(p, id, now, &rps);
        char what[320];
        if (wait) {
            snprintf(what, sizeof(what), "policy %s/%s: %u requests per second for %s", p->ns,
                     p->name, rps, id[0] ? id : "plaintext callers");
            return refuse(ex, LIMIT_IDENTITY, wait, what);
        }
        if (p->total_rps &&
            (wait = take(limit_bucket(key_of("total", p->ns, p->name, 0)), p->total_rps, now))) {
            snprintf(what, sizeof(what), "policy %s/%s: %u requests per second in total", p->ns,
                     p->name, p->total_rps);
            return refuse(ex, LIMIT_TOTAL, wait, what);
        }
    }
    return RETE_FILTER_NEXT;
}

static rete_filter_verdict rate_limit_request(rete_exchange *ex)
{
    if (ex->tunnel)
        return RETE_FILTER_NEXT;
    if (ex->inbound)
        return ex->gen->cfg->n_rate_limits ? inbound(ex, uv_hrtime()) : RETE_FILTER_NEXT;
    return ex->route && ex->route->rule->rate_limit_rps ? outbound(ex, uv_hrtime())
                                                        : RETE_FILTER_NEXT;
}

const rete_filter rete_filter_rate_limit = {
    .name = "rate-limit",
    .on_request = rate_limit_request,
};
