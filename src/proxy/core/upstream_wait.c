/* The per-worker FIFO of requests waiting for an upstream connection; see
 * upstream_wait.h. */
#include "upstream_wait.h"

#include "breaker.h"
#include "exchange.h"
#include "alloc.h"
#include "log.h"
#include "mesh_metrics.h"
#include "proxy.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>

static void wait_unlink(rete_exchange *ex)
{
    rete_worker *w = ex->worker;
    if (ex->wait_prev)
        ex->wait_prev->wait_next = ex->wait_next;
    else
        w->wait_head = ex->wait_next;
    if (ex->wait_next)
        ex->wait_next->wait_prev = ex->wait_prev;
    else
        w->wait_tail = ex->wait_prev;
    ex->wait_next = ex->wait_prev = NULL;
    ex->waiting = false;
    rete_breaker_give(&ex->wait_target.limits->breaker->pending);
}

static void wait_noop(rete_exchange *ex)
{
    (void)ex;
}

static void wait_drained(rete_exchange *ex, size_t consumed)
{
    (void)ex;
    (void)consumed;
}

/* The client went away (or the request timed out) while waiting. */
static void wait_abort(rete_exchange *ex)
{
    if (ex->waiting)
        wait_unlink(ex);
    rete_ex_detach(ex, RETE_UPSTREAM);
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops wait_ops = {
    .name = "pending",
    .on_head = wait_noop,
    .on_data = wait_noop,
    .on_drained = wait_drained,
    .on_abort = wait_abort,
};

static void on_poll(uv_timer_t *t);

void rete_upstream_release_idle(rete_worker *w)
{
    for (int i = 0; i < RETE_CODEC_N; i++) {
        const rete_codec *k = rete_codec_at((rete_codec_id)i);
        if (k && k->release_idle)
            k->release_idle(w);
    }
}

/* Ask every worker, this one included, to let go of its idle connections
 * that hold a slot someone waits for. */
static void release_everywhere(rete_worker *w)
{
    rete_proxy *p = w->proxy;
    for (unsigned i = 0; p && i < p->concurrency; i++) {
        rete_worker *o = &p->workers[i];
        if (o == w) {
            rete_upstream_release_idle(w);
        } else if (!atomic_load(&o->drain_requested) && !atomic_load(&o->stopped) &&
                   !atomic_exchange(&o->release_idle, true)) {
            uv_async_send(&o->wakeup);
        }
    }
}

static void wait_arm(rete_worker *w, uint64_t ms)
{
    uv_timer_start(&w->wait_timer, on_poll, ms, 0);
}

bool rete_upstream_wait(rete_exchange *ex, rete_codec_id id, const rete_upstream_target *t)
{
    const rete_upstream_limits *l = t->limits;
    rete_worker *w = ex->worker;
    if (!rete_breaker_take(&l->breaker->pending, l->max_pending)) {
        rete_stat(w, w->ms.cb_rejections[RETE_BREAKER_MAX_PENDING], 1);
        char why[96];
        snprintf(why, sizeof(why), "maxConnections (%u) reached and %u requests pending "
                 "(http1MaxPendingRequests)", l->max_connections, l->max_pending);
        rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_OVERFLOW, why);
        return false;
    }
    if (!ex->wait_deadline)
        ex->wait_deadline = uv_hrtime() + (uint64_t)l->pending_timeout_ms * 1000000u;
    ex->wait_codec = id;
    ex->wait_target = *t;
    ex->waiting = true;
    ex->wait_prev = w->wait_tail;
    ex->wait_next = NULL;
    if (w->wait_tail)
        w->wait_tail->wait_next = ex;
    else
        w->wait_head = ex;
    w->wait_tail = ex;
    ex->ops[RETE_UPSTREAM] = &wait_ops;
    ex->side[RETE_UPSTREAM] = ex;
    ex->attached[RETE_UPSTREAM] = true;
    if (!uv_is_active((uv_handle_t *)&w->wait_timer)) {
        wait_arm(w, RETE_UPSTREAM_WAIT_POLL_MS);
        release_everywhere(w);
    }
    return true;
}

void rete_upstream_wait_kick(rete_worker *w)
{
    if (w->wait_head)
        wait_arm(w, 0);
}

/* Start every waiting request again, oldest first; those still without a
 * connection queue up again behind, in the same order. A request past its
 * pendingTimeout is answered 503 UO. */
static void on_poll(uv_timer_t *t)
{
    rete_worker *w = t->data;
    rete_exchange *head = w->wait_head;
    if (!head)
        return;
    rete_exchange *last = w->wait_tail;
    uint64_t now = uv_hrtime();
    for (rete_exchange *ex = head, *next; ex; ex = next) {
        bool end = ex == last;
        next = end ? NULL : ex->wait_next;
        rete_codec_id id = ex->wait_codec;
        rete_upstream_target target = ex->wait_target;
        wait_unlink(ex);
        ex->attached[RETE_UPSTREAM] = false;
        ex->side[RETE_UPSTREAM] = NULL;
        if (now >= ex->wait_deadline) {
            rete_stat(w, w->ms.cb_rejections[RETE_BREAKER_PENDING_TIMEOUT], 1);
            char why[96];
            snprintf(why, sizeof(why), "no connection within pendingTimeout (%u ms)",
                     target.limits->pending_timeout_ms);
            rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_OVERFLOW, why);
        } else {
            rete_codec_get(id)->upstream_start(ex, &target);
        }
        if (end)
            break;
    }
    if (w->wait_head) {
        wait_arm(w, RETE_UPSTREAM_WAIT_POLL_MS);
        release_everywhere(w);
    }
}

void rete_upstream_wait_init(rete_worker *w)
{
    uv_timer_init(&w->loop, &w->wait_timer);
    w->wait_timer.data = w;
}

/* ---- connectionPool.http.idleTimeout ---- */

static void pool_idle_timer_free(uv_handle_t *h)
{
    free(h);
}

static void pool_idle_check(uv_timer_t *t)
{
    rete_pool_idle *pi = t->data;
    if (!pi || !pi->since)
        return; /* freed, or busy: its next idle start arms it again */
    uint64_t now = uv_now(t->loop);
    if (now - pi->since < pi->ms) {
        uv_timer_start(t, pool_idle_check, pi->ms - (now - pi->since), 0);
        return;
    }
    pi->since = 0;
    if (pi->cluster) {
        rete_view v[2] = {rete_view_cstr(pi->cluster), RETE_VIEW_LIT("connection_idle")};
        rete_metric m;
        if (rete_metrics_shard_series(pi->worker->shard, pi->worker->mm->upstream_timeouts_total,
                                      v, 2, &m) == RETE_OK)
            rete_metrics_inc(pi->worker->shard, m, 1);
    }
    pi->expire(pi->owner);
}

void rete_pool_idle_init(rete_pool_idle *pi, rete_worker *w, const rete_upstream_limits *lim,
                         void (*expire)(void *owner), void *owner)
{
    *pi = (rete_pool_idle){.worker = w, .expire = expire, .owner = owner};
    if (!lim || !lim->idle_timeout_ms)
        return;
    pi->ms = lim->idle_timeout_ms;
    pi->cluster = lim->cluster ? rete_strdup(lim->cluster) : NULL;
    pi->timer = rete_malloc(sizeof(*pi->timer));
    uv_timer_init(&w->loop, pi->timer);
    pi->timer->data = pi;
}

void rete_pool_idle_start(rete_pool_idle *pi)
{
    if (!pi->timer)
        return;
    pi->since = uv_now(pi->timer->loop);
    if (!pi->since)
        pi->since = 1;
    if (!uv_is_active((uv_handle_t *)pi->timer))
        uv_timer_start(pi->timer, pool_idle_check, pi->ms, 0);
}

void rete_pool_idle_free(rete_pool_idle *pi)
{
    if (pi->timer) {
        pi->timer->data = NULL;
        if (!uv_is_closing((uv_handle_t *)pi->timer))
            uv_close((uv_handle_t *)pi->timer, pool_idle_timer_free);
        pi->timer = NULL;
    }
    free(pi->cluster);
    pi->cluster = NULL;
}
