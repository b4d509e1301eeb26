/* The app's readiness probe (app_probe.h). */
#include "app_probe.h"

#include "alloc.h"
#include "io.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One probe: a connection and its timeout; freed when both are closed. */
typedef struct probe_try {
    rete_io io;
    uv_timer_t timer;
    rete_proxy *p;
    char head[16];      /* the answer's first bytes: "HTTP/1.1 200" */
    size_t got;
    bool http;
    bool decided;
    unsigned open;      /* handles not closed yet */
} probe_try;

static struct {
    uv_timer_t tick;
    bool inited;
    uint32_t period_ms; /* the running tick's, 0 when stopped */
    probe_try *cur;     /* the probe in flight */
    uint32_t fails, oks; /* in a row */
} pr;

static void set_ready(rete_proxy *p, bool ready, const char *why)
{
    if (atomic_exchange(&p->app_ready, ready) == ready)
        return;
    if (ready)
        rete_info("readiness: the app is ready");
    else
        rete_warn("readiness: the app is not ready (%s)", why);
    if (p->on_app_ready)
        p->on_app_ready(p, ready);
}

static void try_closed(uv_handle_t *h)
{
    probe_try *t = h->data;
    if (--t->open == 0)
        free(t);
}

static void io_closed(rete_io *io)
{
    probe_try *t = io->owner;
    if (--t->open == 0)
        free(t);
}

/* Close the probe's handles, once (it is freed when both are closed). */
static bool finish(probe_try *t)
{
    if (t->decided)
        return false;
    t->decided = true;
    if (pr.cur == t)
        pr.cur = NULL;
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, try_closed);
    rete_io_close(&t->io);
    return true;
}

/* The probe's outcome, once; then its handles close. */
static void decide(probe_try *t, bool ok, const char *why)
{
    if (!finish(t))
        return;
    const rete_readiness_probe *rp = &t->p->cfg->proxy.readiness;
    if (!rp->enabled)
        return; /* a reload took the probe away meanwhile: ready (sync) */
    if (ok) {
        pr.fails = 0;
        if (++pr.oks >= rp->success_threshold)
            set_ready(t->p, true, NULL);
    } else {
        pr.oks = 0;
        rete_debug("readiness: probe failed: %s", why);
        if (++pr.fails >= rp->failure_threshold)
            set_ready(t->p, false, why);
    }
}

static void on_timeout(uv_timer_t *tm)
{
    decide(tm->data, false, "timeout");
}

static void on_ready_io(rete_io *io, int status, const char *why)
{
    probe_try *t = io->owner;
    if (status < 0) {
        decide(t, false, why ? why : "connect failed");
        return;
    }
    if (!t->http) {
        decide(t, true, NULL);
        return;
    }
    const rete_proxy_spec *ps = &t->p->cfg->proxy;
    char req[1200];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUser-Agent: rete-proxy-probe\r\n"
                     "Connection: close\r\n\r\n",
                     ps->readiness.path, ps->app_address, ps->readiness.port);
    uv_buf_t b = uv_buf_init(req, (unsigned)(n < (int)sizeof(req) ? n : (int)sizeof(req) - 1));
    if (rete_io_write(io, &b, 1) != RETE_OK) {
        decide(t, false, "write failed");
        return;
    }
    rete_io_read_start(io);
}

static void on_data(rete_io *io, const char *data, size_t len)
{
    probe_try *t = io->owner;
    size_t take = len < sizeof(t->head) - t->got ? len : sizeof(t->head) - t->got;
    memcpy(t->head + t->got, data, take);
    t->got += take;
    if (t->got < 12)
        return;
    /* "HTTP/1.x NNN": a status 200..399 is a success (Kubernetes' rule). */
    const char *h = t->head;
    bool digits = h[9] >= '0' && h[9] <= '9' && h[10] >= '0' && h[10] <= '9' && h[11] >= '0' && h[11] <= '9';
    int status = digits ? (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0') : 0;
    if (memcmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' || !digits) {
        decide(t, false, "not an HTTP/1.x answer");
        return;
    }
    char why[32];
    snprintf(why, sizeof(why), "status %d", status);
    decide(t, status >= 200 && status < 400, why);
}

static void on_eof(rete_io *io)
{
    decide(io->owner, false, "closed before an answer");
}

static void on_error(rete_io *io, const char *why)
{
    decide(io->owner, false, why ? why : "error");
}

static const rete_io_cbs probe_cbs = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_ready = on_ready_io,
    .on_close = io_closed,
};

static void on_tick(uv_timer_t *tm)
{
    rete_proxy *p = tm->data;
    const rete_proxy_spec *ps = &p->cfg->proxy;
    if (pr.cur || !ps->readiness.enabled || atomic_load(&p->draining))
        return;
    probe_try *t = rete_calloc(1, sizeof(*t));
    t->p = p;
    t->http = ps->readiness.http;
    if (rete_io_connect(&t->io, &p->iol, ps->app_address, ps->readiness.port, NULL, &probe_cbs, t) !=
        RETE_OK) {
        free(t);
        pr.oks = 0;
        if (++pr.fails >= ps->readiness.failure_threshold)
            set_ready(p, false, "cannot connect");
        return;
    }
    t->open = 2;
    pr.cur = t;
    uv_timer_init(p->loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, on_timeout, ps->readiness.timeout_ms, 0);
}

void rete_app_probe_sync(rete_proxy *p)
{
    const rete_readiness_probe *rp = p->cfg ? &p->cfg->proxy.readiness : NULL;
    if (!pr.inited) {
        uv_timer_init(p->loop, &pr.tick);
        pr.tick.data = p;
        pr.inited = true;
        /* With a probe the app starts not ready: nothing is reported
         * before the first answer. */
        atomic_store(&p->app_ready, !(rp && rp->enabled));
    }
    if (!rp || !rp->enabled) {
        uv_timer_stop(&pr.tick);
        pr.period_ms = 0;
        set_ready(p, true, NULL);
        return;
    }
    if (pr.period_ms == rp->period_ms)
        return;
    pr.period_ms = rp->period_ms;
    pr.fails = pr.oks = 0;
    uv_timer_start(&pr.tick, on_tick, 0, rp->period_ms);
}

void rete_app_probe_close(rete_proxy *p)
{
    (void)p;
    if (pr.cur)
        finish(pr.cur); /* not counted: the process is going */
    if (pr.inited) {
        uv_timer_stop(&pr.tick);
        uv_close((uv_handle_t *)&pr.tick, NULL);
        pr.inited = false;
    }
}
