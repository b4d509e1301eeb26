/* Request mirroring: Gateway API's RequestMirror rule filter, applied at
 * the calling proxy (docs/traffic.md, "Mirroring", is the user's view).
 *
 * A request the filter picks (the rule's share, drawn from the worker's
 * PRNG) gets a copy: a second exchange with no downstream connection (its
 * downstream side is copy_ops below: it discards the response and lets go
 * quietly), the request's head copied into its own arena with `-shadow`
 * appended to the host of :authority (Envoy's shadowAppendedHost: before
 * the port when there is one), sent through rete_route_try to an endpoint
 * of the mirror Service (its balancer, circuit breaker and pool limits, as
 * any request to it). The request body is copied as it passes this
 * filter's body stage, chunk by chunk, into the copy's request pipe.
 *
 * Fire-and-forget: nothing of the copy reaches the request it copies. Its
 * response, status and failures are only counted; the request is never
 * paused for it (a copy whose pipe is full is cut, not waited for); the
 * copy may outlive the request (its body then complete) or be cut when the
 * request ends first (a client gone mid-body).
 *
 * A rule may have several RequestMirror filters (Gateway API allows it;
 * the loader bounds them, RETE_MIRRORS_PER_RULE_MAX): each draws its share
 * and makes its own copy, and the request keeps its copies in a list.
 *
 * Bounds: the Proxy's limits.maxMirrorsInFlight copies per proxy (one
 * atomic count, shared by every worker); limits.maxMirrorBody bytes of body
 * per copy (a request that declares more is not mirrored, one that sends
 * more has its copy cut); each copy lives at most the rule's
 * timeouts.request, else RETE_MIRROR_TIMEOUT_MS (Envoy's default route
 * timeout).
 *
 * Safety of the calls between the two exchanges: the request's body stage
 * pushes into the copy's pipe, whose consumer is the copy's upstream,
 * another codec stream than anything on the stack (the producer is the
 * request's downstream); the copy's own upstream codec may be on the stack
 * when its response arrives, so the copy lets go synchronously only where
 * the exchange allows it (its request and response complete, or its
 * upstream already gone), and otherwise from its own timer, run by the
 * loop with no codec on the stack. The shared state (struct rete_mirror)
 * lives in the copy's arena; the request drops its pointer to it when it
 * cuts the copy or ends, and the copy unlinks the request when it ends
 * first, so neither exchange ever follows a pointer to the other after its
 * end. */
#include "filter.h"
#include "alloc.h"
#include "config.h"
#include "log.h"
#include "retry.h"
#include "worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* A copy's lifetime when its rule has no timeouts.request (Envoy's default
 * route timeout, which its shadows share): then it is cut (result failed). */
#define RETE_MIRROR_TIMEOUT_MS 15000u

#define RESULT_NONE RETE_MIRROR_RESULT_N

typedef struct rete_mirror {
    rete_exchange *main;   /* the request copied, while it lives and is linked */
    struct rete_mirror *next; /* main's next copy */
    rete_exchange *copy;
    size_t body;           /* body bytes copied */
    uint64_t deadline;     /* uv_hrtime ns: the copy is cut then */
    int cut;               /* a RETE_MIRROR_* result to end with, RESULT_NONE: none */
} rete_mirror;

static _Atomic uint32_t in_flight;

/* Take st off its request's list of copies: the two exchanges no longer
 * know each other. */
static void unlink_copy(rete_mirror *st)
{
    if (!st->main)
        return;
    for (rete_mirror **p = &st->main->mirror; *p; p = &(*p)->next)
        if (*p == st) {
            *p = st->next;
            break;
        }
    st->main = NULL;
    st->next = NULL;
}

/* ---- the copy's downstream side: nobody ---- */

static void copy_timer(uv_timer_t *t);

static void copy_arm(rete_exchange *c, uint64_t ms)
{
    c->timer_active = true;
    rete_ex_timer_start(c, copy_timer, ms);
}

/* Let go of the copy: from its timer, or where the exchange allows it. */
static void copy_release(rete_exchange *c)
{
    if (c->attached[RETE_DOWNSTREAM])
        rete_ex_detach(c, RETE_DOWNSTREAM);
}

/* From the loop, no codec on the stack: discard the response body that
 * came (its producer gets its credit back), and end the copy when it is
 * cut, over its deadline, or has its whole response. */
static void copy_timer(uv_timer_t *t)
{
    rete_exchange *c = t->data;
    c->timer_active = false;
    if (!c->attached[RETE_DOWNSTREAM] || c->done)
        return;
    rete_mirror *st = c->mirror;
    const char *d;
    size_t n;
    if (c->head_sent)
        while ((n = rete_ex_peek(c, RETE_DOWNSTREAM, &d)) > 0)
            rete_ex_consume(c, RETE_DOWNSTREAM, n);
    if (!c->attached[RETE_DOWNSTREAM] || c->done)
        return; /* a producer's on_drained ended it */
    uint64_t now = uv_hrtime();
    if (st->cut == RESULT_NONE && now >= st->deadline) {
        st->cut = RETE_MIRROR_FAILED;
        rete_debug("mirror: copy of %.*s cut at its deadline", (int)c->req.path.len, c->req.path.p);
    }
    if (st->cut != RESULT_NONE || (c->head_sent && c->resp_body.end)) {
        copy_release(c);
        return;
    }
    copy_arm(c, (st->deadline - now + 999999u) / 1000000u);
}

static void copy_on_head(rete_exchange *c)
{
    (void)c; /* the status is in c->resp, counted at the end */
}

static void copy_on_data(rete_exchange *c)
{
    /* The whole exchange done, or a local answer (the upstream failed and
     * let go): letting go now only marks the side. Anything else waits
     * for the timer: the upstream codec is on the stack. */
    if (c->resp_body.end && (c->req_body.end || rete_ex_upstream_is_local(c))) {
        copy_release(c);
        return;
    }
    copy_arm(c, 0);
}

static void copy_on_abort(rete_exchange *c)
{
    copy_release(c); /* the upstream has let go already (rete_ex_fail) */
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops copy_ops = {
    .name = "mirror",
    .on_head = copy_on_head,
    .on_data = copy_on_data,
    .on_drained = NULL, /* nobody produces the copy's request but the filter */
    .on_abort = copy_on_abort,
};

/* ---- the request ---- */

/* authority with "-shadow" after its host, before ":port" when present. */
static rete_view shadow_authority(rete_exchange *c, rete_view a)
{
    static const char suffix[] = "-shadow";
    size_t host = a.len;
    for (size_t i = a.len; i > 0; i--) {
        char ch = a.p[i - 1];
        if (ch == ':') {
            host = i - 1;
            break;
        }
        if (ch < '0' || ch > '9')
            break;
    }
    if (host == 0)
        return rete_ex_dup(c, a);
    size_t len = a.len + sizeof(suffix) - 1;
    char *out = rete_arena_alloc(c->arena, len + 1);
    memcpy(out, a.p, host);
    memcpy(out + host, suffix, sizeof(suffix) - 1);
    memcpy(out + host + sizeof(suffix) - 1, a.p + host, a.len - host);
    out[len] = '\0';
    return rete_view_make(out, len);
}

static void copy_msg(rete_exchange *c, rete_msg *to, const rete_msg *from)
{
    for (uint32_t i = 0; i < from->n_headers; i++)
        rete_msg_add(c, to, from->headers[i].name, from->headers[i].value);
}

/* Stop copying into st's copy: it ends from its timer with `result`. */
static void cut(rete_mirror *st, int result)
{
    unlink_copy(st);
    if (st->cut == RESULT_NONE)
        st->cut = result;
    copy_arm(st->copy, 0);
}

static void count(rete_worker *w, int result)
{
    rete_stat(w, w->ms.mirror[result], 1);
}

/* Copy ex's request to the Service of RequestMirror filter f. */
static void start_copy(rete_exchange *ex, const rete_http_filter *f)
{
    rete_worker *w = ex->worker;
    const rete_limits *lim = &ex->gen->cfg->proxy.limits;
    if (f->mirror_ppm < 1000000u && rete_worker_rand(w) % 1000000u >= f->mirror_ppm)
        return;
    if (ex->req.content_length > (int64_t)lim->max_mirror_body) {
        count(w, RETE_MIRROR_SKIPPED_BODY);
        return;
    }
    if (atomic_fetch_add_explicit(&in_flight, 1, memory_order_relaxed) >= lim->max_mirrors_in_flight) {
        atomic_fetch_sub_explicit(&in_flight, 1, memory_order_relaxed);
        count(w, RETE_MIRROR_SKIPPED_LIMIT);
        return;
    }
    rete_exchange *c = rete_ex_new(w, &copy_ops, NULL);
    /* The copy lives in the request's generation: the rule and the mirror
     * Service it names are that snapshot's. */
    if (c->gen != ex->gen) {
        rete_gen_release(w, c->gen);
        c->gen = ex->gen;
        rete_gen_hold(c->gen);
    }
    c->body_limit = ex->body_limit;
    c->mirror_copy = true;
    c->listener = "mirror";
    rete_mirror *st = rete_arena_alloc(c->arena, sizeof(*st));
    uint32_t life_ms = ex->route->rule->timeout_ms ? ex->route->rule->timeout_ms
                                                   : RETE_MIRROR_TIMEOUT_MS;
    *st = (rete_mirror){.main = ex,
                        .next = ex->mirror,
                        .copy = c,
                        .deadline = uv_hrtime() + (uint64_t)life_ms * 1000000u,
                        .cut = RESULT_NONE};
    c->mirror = st;
    ex->mirror = st;
    rete_metrics_gauge_add(w->shard, w->ms.mirror_in_flight, 1);

    c->req.method = rete_ex_dup(c, ex->req.method);
    c->req.scheme = rete_ex_dup(c, ex->req.scheme);
    c->req.authority = shadow_authority(c, ex->req.authority);
    c->req.path = rete_ex_dup(c, ex->req.path);
    c->req.protocol = rete_ex_dup(c, ex->req.protocol);
    c->req.content_length = ex->req.content_length;
    c->path_normalized = true; /* the request's, normalised already */
    copy_msg(c, &c->req, &ex->req);
    snprintf(c->downstream_addr, sizeof(c->downstream_addr), "%s", ex->downstream_addr);
    /* Body bytes that entered the pipe before routing (none today: codecs
     * route on the head), then its end when it came with the head. */
    for (const rete_chunk *k = ex->req_body.head; k; k = k->next) {
        st->body += k->len - k->off;
        rete_ex_push(c, RETE_DOWNSTREAM, k->data + k->off, k->len - k->off);
    }
    if (ex->req_body.end) {
        copy_msg(c, &c->req_body.trailers, &ex->req_body.trailers);
        rete_ex_end(c, RETE_DOWNSTREAM);
    }
    copy_arm(c, life_ms);
    rete_debug("mirror: copy of %.*s %.*s to %s/%s port %u", (int)ex->req.method.len,
               ex->req.method.p, (int)ex->req.path.len, ex->req.path.p, f->mirror_service->ns,
               f->mirror_service->name, f->mirror_port);
    /* May end the copy at once (no endpoint, breaker open): it unlinks. */
    rete_route_try(c, f->mirror_service, f->mirror_port, -1);
}

static rete_filter_verdict mirror_request(rete_exchange *ex)
{
    if (ex->tunnel || !ex->route || ex->mirror_copy)
        return RETE_FILTER_NEXT;
    const rete_http_rule *rule = ex->route->rule;
    for (size_t i = 0; i < rule->n_filters; i++)
        if (rule->filters[i].kind == RETE_FILTER_MIRROR && rule->filters[i].mirror_service)
            start_copy(ex, &rule->filters[i]);
    return RETE_FILTER_NEXT;
}

static void mirror_request_body(rete_exchange *ex, const rete_filter_body *b)
{
    if (ex->mirror_copy)
        return;
    uint32_t body_max = ex->gen->cfg->proxy.limits.max_mirror_body;
    rete_mirror *next;
    /* A push may end its copy (its upstream failed), which unlinks that
     * copy only: the next one is kept before. */
    for (rete_mirror *st = ex->mirror; st; st = next) {
        next = st->next;
        rete_exchange *c = st->copy;
        if (b->len) {
            if (st->body + b->len > body_max) {
                cut(st, RETE_MIRROR_SKIPPED_BODY);
                continue;
            }
            st->body += b->len;
            bool full = rete_ex_push(c, RETE_DOWNSTREAM, b->data, b->len);
            if (full && st->main == ex)
                cut(st, RETE_MIRROR_ABORTED); /* never pause the request for its copy */
            continue;
        }
        if (b->trailers)
            copy_msg(c, &c->req_body.trailers, b->trailers);
        rete_ex_end(c, RETE_DOWNSTREAM);
    }
}

static void mirror_finish(rete_exchange *ex, const rete_filter_end *end)
{
    (void)end;
    if (!ex->mirror_copy) {
        /* The request ended: a copy still waiting for body is cut, the
         * others go on alone. */
        while (ex->mirror) {
            rete_mirror *st = ex->mirror;
            if (!st->copy->req_body.end)
                cut(st, RETE_MIRROR_ABORTED);
            else
                unlink_copy(st);
        }
        return;
    }
    rete_mirror *st = ex->mirror;
    if (!st)
        return;
    unlink_copy(st);
    int result = st->cut != RESULT_NONE                          ? st->cut
                 : ex->error != RETE_EXE_NONE || !ex->head_sent ? RETE_MIRROR_FAILED
                                                                 : RETE_MIRROR_SENT;
    count(ex->worker, result);
    rete_metrics_gauge_add(ex->worker->shard, ex->worker->ms.mirror_in_flight, -1);
    atomic_fetch_sub_explicit(&in_flight, 1, memory_order_relaxed);
}

const rete_filter rete_filter_mirror = {
    .name = "mirror",
    .on_request = mirror_request,
    .on_request_body = mirror_request_body,
    .on_finish = mirror_finish,
};
