#include "worker.h"
#include "alloc.h"
#include "codec.h"
#include "config.h"
#include "conn.h"
#include "io.h"
#include "lb.h"
#include "log.h"
#include "proxy.h"
#include "route.h"
#include "exchange.h"
#include "upstream_wait.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- generations ---- */

rete_gen *rete_gen_new(rete_config *cfg, rete_tls_set *tls)
{
    rete_gen *g = rete_calloc(1, sizeof(*g));
    g->cfg = rete_config_ref(cfg);
    g->tls = tls;
    atomic_fetch_add(&tls->refs, 1);
    g->lbs = rete_calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*g->lbs));
    g->limits = rete_calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*g->limits));
    g->users = 1; /* the worker's own reference */
    const rete_proxy_spec *ps = &cfg->proxy;
    for (size_t i = 0; i < cfg->n_workloads && !g->self; i++)
        if (ps->name && ps->ns && strcmp(cfg->workloads[i].name, ps->name) == 0 &&
            strcmp(cfg->workloads[i].ns, ps->ns) == 0)
            g->self = &cfg->workloads[i];
    for (size_t i = 0; i < cfg->n_services && g->self && !g->self_service; i++)
        for (size_t k = 0; k < cfg->services[i].n_endpoints; k++)
            if (cfg->services[i].endpoints[k] == g->self)
                g->self_service = &cfg->services[i];
    return g;
}

void rete_tls_set_unref(rete_tls_set *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    rete_tls_ctx_unref(s->mesh_server);
    rete_tls_ctx_unref(s->mesh_client);
    if (s->app_server)
        rete_tls_ctx_unref(s->app_server);
    for (size_t i = 0; i < s->n_originate; i++)
        rete_tls_ctx_unref(s->originate[i]);
    free(s->originate);
    free(s);
}

void rete_gen_hold(rete_gen *g)
{
    g->users++;
}

void rete_gen_release(rete_worker *w, rete_gen *g)
{
    (void)w;
    if (--g->users > 0)
        return;
    for (size_t i = 0; i < g->cfg->n_services; i++)
        if (g->lbs[i])
            rete_lb_free(&g->lbs[i]);
    free(g->lbs);
    free(g->limits);
    const rete_request_path *rp = rete_request_path_get();
    if (rp && rp->gen_free)
        rp->gen_free(g);
    rete_config_unref(g->cfg);
    rete_tls_set_unref(g->tls);
    free(g);
}

struct rete_lb *rete_gen_lb(rete_gen *g, const rete_service *svc)
{
    size_t i = (size_t)(svc - g->cfg->services);
    if (i >= g->cfg->n_services)
        return NULL;
    if (!g->lbs[i]) {
        rete_lb_shared *sh = NULL;
        if (rete_lb_shared_build(svc, &sh) < 0)
            return NULL;
        g->lbs[i] = rete_lb_new_at(sh, g->self, (uint64_t)(uintptr_t)g ^ (i * 0x9E3779B97F4A7C15ULL));
        rete_lb_shared_unref(&sh);
    }
    return g->lbs[i];
}

const rete_upstream_limits *rete_gen_limits(rete_gen *g, const rete_service *svc)
{
    size_t i = (size_t)(svc - g->cfg->services);
    if (i >= g->cfg->n_services)
        return NULL;
    rete_upstream_limits *l = &g->limits[i];
    if (!l->breaker) {
        const rete_traffic_policy *p = &svc->policy;
        *l = (rete_upstream_limits){
            .breaker = rete_breaker_of(svc->fqdn),
            .max_connections = p->max_connections,
            .max_pending = p->max_pending_requests,
            .pending_timeout_ms = p->pending_timeout_ms,
            .max_requests_per_connection = p->max_requests_per_connection,
            .idle_timeout_ms = p->idle_timeout_ms,
            .cluster = svc->fqdn,
        };
    }
    return l;
}

/* ---- pools ---- */

rete_pool_entry *rete_pool_get(rete_worker *w, const char *key)
{
    for (rete_pool_entry *p = w->pools; p; p = p->next)
        if (strcmp(p->key, key) == 0)
            return p;
    rete_pool_entry *p = rete_calloc(1, sizeof(*p));
    snprintf(p->key, sizeof(p->key), "%s", key);
    p->next = w->pools;
    w->pools = p;
    return p;
}

/* ---- listeners ---- */

static void on_connection(uv_stream_t *server, int status)
{
    rete_listener *l = server->data;
    if (status < 0) {
        /* accept(2) failed. On EMFILE/ENFILE libuv has already used its
         * reserve descriptor to accept and close the pending connections
         * (so the loop does not spin on a readable listener); count them. */
        rete_worker *w = l->worker;
        rete_stat(w, w->ms.conns_refused[l->kind][RETE_REFUSE_ACCEPT_ERROR], 1);
        rete_debug("%s listener: accept failed: %s", l->name, uv_strerror(status));
        return;
    }
    rete_conn_accept(l);
}

/* Bind with SO_REUSEPORT so every worker has its own accept queue (libuv
 * 1.44 has no flag for it, so the socket is made by hand). */
static int bind_socket(const rete_socket_addr *a, bool reuseport)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    int family = AF_INET;
    if (uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&ss) != 0) {
        if (uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&ss) != 0)
            return -EINVAL;
        family = AF_INET6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int open_listener(rete_worker *w, rete_listener *l, const rete_socket_addr *a,
                         rete_listener_kind kind, const char *name, size_t index)
{
    l->worker = w;
    l->kind = kind;
    l->name = name;
    l->upstream_index = index;
    int fd = bind_socket(a, !rete_listener_is_local(kind));
    if (fd < 0) {
        rete_err("%s listener: cannot bind %s:%u: %s", name, a->host, a->port, strerror(-fd));
        return -1;
    }
    uv_tcp_init(&w->loop, &l->tcp);
    l->tcp.data = l;
    if (uv_tcp_open(&l->tcp, fd) != 0 || uv_listen((uv_stream_t *)&l->tcp, 511, on_connection) != 0) {
        rete_err("%s listener: cannot listen on %s:%u", name, a->host, a->port);
        uv_close((uv_handle_t *)&l->tcp, NULL);
        return -1;
    }
    l->open = true;
    if (w->id == 0)
        rete_info("%s listener on %s:%u", name, a->host, a->port);
    return 0;
}

/* The other family's loopback of an outbound listener on 127.0.0.1 or ::1,
 * same port: `rete-proxy init` redirects the app's IPv4 connections to
 * 127.0.0.1 and its IPv6 ones to ::1, so a dual-stack app needs both. Not
 * bound (only a notice) where that address does not exist: a host without
 * IPv6, or without IPv4 loopback. */
static void open_outbound_twin(rete_worker *w, rete_listener *l, const rete_socket_addr *a, size_t *k)
{
    rete_socket_addr twin = *a;
    const char *other = strcmp(a->host, "127.0.0.1") == 0 ? "::1"
                        : strcmp(a->host, "::1") == 0     ? "127.0.0.1"
                                                          : NULL;
    if (!other)
        return;
    snprintf(twin.host, sizeof(twin.host), "%s", other);
    int fd = bind_socket(&twin, true);
    if (fd < 0) {
        if (w->id == 0)
            rete_info("outbound listener: no %s:%u beside %s (%s)", other, a->port, a->host, strerror(-fd));
        return;
    }
    close(fd);
    (*k)++; /* the slot is used even when this fails: its handle may be closing */
    (void)open_listener(w, l, &twin, RETE_L_OUTBOUND, "outbound", 0);
}

static int open_listeners(rete_worker *w)
{
    const rete_proxy_spec *p = &w->gen->cfg->proxy;
    w->n_listeners = 4 + p->n_upstreams + 2;
    w->listeners = rete_calloc(w->n_listeners, sizeof(*w->listeners));
    size_t k = 0;
    if (open_listener(w, &w->listeners[k++], &p->outbound, RETE_L_OUTBOUND, "outbound", 0) < 0)
        return -1;
    open_outbound_twin(w, &w->listeners[k], &p->outbound, &k);
    if (open_listener(w, &w->listeners[k++], &p->inbound, RETE_L_INBOUND, "inbound", 0) < 0 ||
        open_listener(w, &w->listeners[k++], &p->mesh, RETE_L_MESH, "mesh", 0) < 0)
        return -1;
    for (size_t i = 0; i < p->n_upstreams; i++)
        if (open_listener(w, &w->listeners[k++], &p->upstreams[i].listen, RETE_L_UPSTREAM,
                          "upstream", i) < 0)
            return -1;
    if (w->id == 0 &&
        (open_listener(w, &w->listeners[k++], &p->admin, RETE_L_ADMIN, "admin", 0) < 0 ||
         open_listener(w, &w->listeners[k++], &p->stats, RETE_L_STATS, "stats", 0) < 0))
        return -1;
    w->n_listeners = k;
    return 0;
}

/* ---- the file limit ---- */

/* Descriptors kept out of the data connections' share: listeners, the
 * loops' epoll and eventfds, the control-plane stream, log and certificate
 * files, libuv's EMFILE reserve. */
#define RETE_FD_RESERVE 64

/* The data connections one worker may hold within RLIMIT_NOFILE. Each
 * downstream connection may need one upstream (an HTTP/1.1 connection to
 * the app, a TCP tunnel), so it counts twice; the admin listener's cap and
 * a fixed reserve come off the top. The soft limit is raised to the hard
 * one first (as Go's runtime and nginx's worker_rlimit_nofile do). */
static unsigned fd_cap(const rete_worker *w)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return UINT32_MAX;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return UINT32_MAX;
    const rete_proxy_spec *p = &w->gen->cfg->proxy;
    uint64_t reserve = RETE_FD_RESERVE + 2 * (uint64_t)p->limits.max_admin_connections;
    unsigned workers = w->proxy->concurrency ? w->proxy->concurrency : 1;
    uint64_t share = rl.rlim_cur > reserve ? (rl.rlim_cur - reserve) / 2 / workers : 0;
    if (share == 0)
        share = 1;
    if (share < p->limits.max_connections && w->id == 0)
        rete_warn("file limit %llu allows %llu downstream connections per worker, below "
                  "limits.maxConnections (%u): raise `ulimit -n` to use the configured cap",
                  (unsigned long long)rl.rlim_cur, (unsigned long long)share,
                  p->limits.max_connections);
    return share > UINT32_MAX ? UINT32_MAX : (unsigned)share;
}

/* ---- the worker thread ---- */

static void take_incoming(rete_worker *w)
{
    rete_gen *g = atomic_exchange(&w->incoming, NULL);
    if (!g)
        return;
    rete_gen *old = w->gen;
    w->gen = g;
    if (old) {
        old->retired = true;
        rete_gen_release(w, old);
    }
    const rete_request_path *rp = rete_request_path_get();
    if (rp && rp->gen_installed)
        rp->gen_installed(w);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* A TCP handle that is not one of our listeners is a connection's rete_io:
 * close it through the io, so its owner (downstream codec, pooled upstream
 * connection) runs its close callback and frees its state. */
static void close_io_walk(uv_handle_t *h, void *arg)
{
    rete_worker *w = arg;
    if (h->type != UV_TCP || uv_is_closing(h))
        return;
    for (size_t i = 0; i < w->n_listeners; i++)
        if (h == (uv_handle_t *)&w->listeners[i].tcp)
            return;
    rete_io_close(h->data);
}

static void count_closing(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        ++*(unsigned *)arg;
}

static void finish_drain(rete_worker *w)
{
    uv_timer_stop(&w->drain_timer);
    uv_stop(&w->loop);
}

/* Draining ends when nothing has been in flight for a quiet period (a
 * request already on its way on a connection accepted before the signal
 * is still served), or at the deadline. */
#define DRAIN_QUIET_MS 250

static void drain_tick(uv_timer_t *t)
{
    rete_worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    if (w->active_exchanges > 0)
        w->drain_quiet_since = 0;
    else if (!w->drain_quiet_since)
        w->drain_quiet_since = now;
    if ((w->drain_quiet_since && now - w->drain_quiet_since >= DRAIN_QUIET_MS) ||
        now >= w->drain_deadline)
        finish_drain(w);
}

static void on_wakeup(uv_async_t *a)
{
    rete_worker *w = a->data;
    take_incoming(w);
    if (atomic_exchange(&w->release_idle, false))
        rete_upstream_release_idle(w);
    if (atomic_load(&w->drain_requested) && !w->draining) {
        w->draining = true;
        for (size_t i = 0; i < w->n_listeners; i++)
            if (w->listeners[i].open && !rete_listener_is_local(w->listeners[i].kind)) {
                w->listeners[i].open = false;
                uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
            }
        w->drain_deadline = uv_now(&w->loop) + w->gen->cfg->proxy.limits.drain_timeout_ms;
        uv_timer_start(&w->drain_timer, drain_tick, 0, 50);
    }
}

static void worker_main(void *arg)
{
    rete_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Drained or stopped: close the connections first, through their owners,
     * and let the close callbacks (and the closes they start) run; then every
     * other handle. A bare uv_close on a connection's handle would leak what
     * its owner holds (nghttp2 sessions, TLS sessions, generations). */
    uv_walk(&w->loop, close_io_walk, w);
    for (int round = 0; round < 100; round++) {
        unsigned closing = 0;
        uv_walk(&w->loop, count_closing, &closing);
        if (!closing)
            break;
        uv_run(&w->loop, UV_RUN_NOWAIT);
    }
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    rete_ex_pool_free(w);
    rete_route_thread_cleanup();
    for (int i = 0; i < RETE_CODEC_N; i++) {
        const rete_codec *k = rete_codec_at((rete_codec_id)i);
        if (k && k->thread_cleanup)
            k->thread_cleanup();
    }
    rete_metrics_shard_free(&w->shard); /* its counts fold into the registry */
    atomic_store(&w->stopped, true);
}

/* Every codec writes what it queued this turn (the table's order). */
static void flush_codecs(rete_worker *w)
{
    for (int i = 0; i < RETE_CODEC_N; i++) {
        const rete_codec *k = rete_codec_at((rete_codec_id)i);
        if (k && k->flush_all)
            k->flush_all(w);
    }
}

static void on_flush_check(uv_check_t *c)
{
    flush_codecs(c->data);
}

static void on_flush_prepare(uv_prepare_t *p)
{
    flush_codecs(p->data);
    rete_ex_reap(p->data);
}

int rete_worker_start(rete_worker *w)
{
    w->shard = rete_metrics_shard_new(w->proxy->metrics);
    w->mm = w->proxy->mm;
    w->ms = w->proxy->ms;
    uv_loop_init(&w->loop);
    w->iol.loop = &w->loop;
    w->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)w->id << 32) ^ uv_hrtime();
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    rete_upstream_wait_init(w);
    uv_check_init(&w->loop, &w->flush_check);
    w->flush_check.data = w;
    uv_check_start(&w->flush_check, on_flush_check);
    uv_prepare_init(&w->loop, &w->flush_prepare);
    w->flush_prepare.data = w;
    uv_prepare_start(&w->flush_prepare, on_flush_prepare);
    take_incoming(w);
    w->fd_cap = fd_cap(w);
    if (open_listeners(w) < 0)
        return -1;
    return uv_thread_create(&w->thread, worker_main, w) == 0 ? 0 : -1;
}

void rete_worker_post_gen(rete_worker *w, rete_gen *g)
{
    rete_gen *prev = atomic_exchange(&w->incoming, g);
    if (prev) {
        /* never installed: drop it here (its users count is only ours) */
        prev->users = 1;
        rete_gen_release(w, prev);
    }
    uv_async_send(&w->wakeup);
}

void rete_worker_drain(rete_worker *w)
{
    atomic_store(&w->drain_requested, true);
    uv_async_send(&w->wakeup);
}
