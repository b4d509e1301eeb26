/* Accepting downstream connections and detecting what they speak.
 *
 * Detection looks at the first bytes only (RFC 9113 §3.4 preface, a TLS
 * ClientHello, an HTTP/1.x method token) and gives up after the listener's
 * detection timeout: a silent client is then treated as opaque TCP, which is
 * what server-first protocols (MySQL, SMTP) need. */
#include "conn.h"
#include "alloc.h"
#include "authz.h"
#include "codec.h"
#include "config.h"
#include "exchange.h"
#include "log.h"
#include "tls.h"
#include "worker.h"

#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

typedef enum detect_result { DETECT_MORE, DETECT_H1, DETECT_H2, DETECT_TLS, DETECT_TCP } detect_result;

static detect_result detect(const char *p, size_t n)
{
    if (n == 0)
        return DETECT_MORE;
    bool more = false;
    if ((unsigned char)p[0] == 0x16 && rete_tls_looks_like_client_hello((const uint8_t *)p, n, &more))
        return DETECT_TLS;
    if ((unsigned char)p[0] == 0x16 && more)
        return DETECT_MORE;
    size_t k = n < sizeof(h2_preface) - 1 ? n : sizeof(h2_preface) - 1;
    if (memcmp(p, h2_preface, k) == 0)
        return k == sizeof(h2_preface) - 1 ? DETECT_H2 : DETECT_MORE;
    /* HTTP/1.x: a method token (RFC 9110 §9.1; we accept upper-case letters
     * and '-', which covers every registered method) then one space. */
    for (size_t i = 0; i < n && i < 24; i++) {
        char c = p[i];
        if (c == ' ')
            return i > 0 ? DETECT_H1 : DETECT_TCP;
        if (!((c >= 'A' && c <= 'Z') || c == '-'))
            return DETECT_TCP;
    }
    return n < 24 ? DETECT_MORE : DETECT_TCP;
}

/* A burst of connections (a flood of pending TLS handshakes costs ~44 KB
 * each) leaves freed memory that glibc keeps: once a worker is back to a
 * quarter of a peak of at least TRIM_PEAK connections, give it back to the
 * system. malloc_trim walks the heap, so this runs once per burst, not per
 * close. */
#define TRIM_PEAK 512

static void conn_timer_closed(uv_handle_t *h)
{
    rete_conn *c = h->data;
    rete_worker *w = c->worker;
    rete_metrics_gauge_add(w->shard, w->ms.conns_active[c->listener->kind], -1);
    if (rete_listener_is_local(c->listener->kind))
        w->local_conns[c->listener->kind == RETE_L_STATS]--;
    else
        w->active_conns--;
    rete_gen_release(w, c->gen);
    free(c);
    if (w->peak_conns >= TRIM_PEAK && w->active_conns <= w->peak_conns / 4) {
        rete_alloc_trim();
        w->peak_conns = w->active_conns;
    }
}

void rete_conn_closed(rete_conn *c)
{
    /* The io is closed; close the timer, then free (libuv handles are freed
     * only in their close callbacks). */
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
}

/* ---- idle timeout ---- */

static void timer_fired(uv_timer_t *t)
{
    rete_conn *c = t->data;
    if (c->on_timer)
        c->on_timer(c);
}

void rete_conn_timer_start(rete_conn *c, uint64_t ms, void (*on_timer)(rete_conn *c))
{
    c->on_timer = on_timer;
    uv_timer_start(&c->timer, timer_fired, ms, 0);
}

void rete_conn_idle_start(rete_conn *c, void (*on_idle)(rete_conn *c))
{
    uint32_t ms = c->gen->cfg->proxy.limits.idle_timeout_ms;
    if (!ms)
        return;
    rete_conn_timer_start(c, ms, on_idle);
}

void rete_conn_idle_stop(rete_conn *c)
{
    c->on_timer = NULL;
    uv_timer_stop(&c->timer);
}

void rete_conn_count_timeout(rete_conn *c, rete_timeout_kind kind)
{
    rete_stat(c->worker, c->worker->ms.timeouts[kind], 1);
}

/* ---- lingering close ---- */

static void linger_on_data(rete_io *io, const char *d, size_t n)
{
    (void)io;
    (void)d;
    (void)n;
}
static void linger_on_eof(rete_io *io)
{
    rete_io_close(io);
}
static void linger_on_error(rete_io *io, const char *why)
{
    (void)why;
    rete_io_close(io);
}
static void linger_on_ready(rete_io *io, int s, const char *w)
{
    (void)io;
    (void)s;
    (void)w;
}
static void linger_on_close(rete_io *io)
{
    rete_conn *c = io->owner;
    if (c->linger_release)
        c->linger_release(c->codec);
    c->linger_release = NULL;
    c->codec = NULL;
    rete_conn_closed(c);
}
/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs linger_cbs = {
    .on_data = linger_on_data,
    .on_eof = linger_on_eof,
    .on_error = linger_on_error,
    .on_ready = linger_on_ready,
    .on_drain = NULL,
    .on_close = linger_on_close,
};

static void linger_timeout(uv_timer_t *t)
{
    rete_conn *c = t->data;
    rete_io_close(&c->io);
}

void rete_conn_linger(rete_conn *c, void (*release)(void *codec), void *codec)
{
    /* From now on the connection belongs to this small state machine: its
     * old codec never hears of it again (its on_close will not run), so
     * what it leaves behind is freed through `release` at the close. */
    c->linger_release = release;
    c->codec = codec;
    c->on_timer = NULL;
    c->io.cbs = &linger_cbs;
    c->io.owner = c;
    rete_io_shutdown(&c->io);
    rete_io_read_start(&c->io);
    uv_timer_start(&c->timer, linger_timeout, 2000, 0);
}

/* ---- detection ---- */

static void detect_close(rete_conn *c)
{
    rete_io_close(&c->io);
}

/* An inbound connection (not from a peer proxy) for a port the workload
 * declared as an HTTP protocol (the redirected port, else its only port). */
static bool inbound_http_port(const rete_conn *c)
{
    const rete_proxy_spec *p = &c->gen->cfg->proxy;
    uint16_t port = c->orig_port;
    if (!port && p->n_inbound_ports == 1)
        port = p->inbound_ports[0].port;
    for (size_t i = 0; i < p->n_inbound_ports; i++)
        if (p->inbound_ports[i].port == port)
            return p->inbound_ports[i].protocol != RETE_PROTO_TCP;
    return false;
}

static void dispatch_protocol(rete_conn *c, detect_result r, const char *data, size_t len)
{
    uv_timer_stop(&c->timer);
    switch (r) {
    case DETECT_H1:
        rete_codec_get(RETE_CODEC_H1_SERVER)->server_start(c, data, len);
        return;
    case DETECT_H2:
        rete_codec_get(RETE_CODEC_H2)->server_start(c, data, len);
        return;
    case DETECT_TCP:
        if (c->listener->kind == RETE_L_OUTBOUND && !c->orig_port) {
            /* Not redirected, so the app meant to speak HTTP to us: let the
             * strict HTTP/1.1 parser refuse the bytes with its status (a
             * request line starting with CRLF or a bad method token is a
             * 400, not a silent close). Silence or TLS: nothing to say. */
            if (len > 0 && (unsigned char)data[0] != 0x16) {
                rete_codec_get(RETE_CODEC_H1_SERVER)->server_start(c, data, len);
                return;
            }
            rete_debug("outbound: unroutable non-HTTP connection from %s", c->peer_addr);
            detect_close(c);
            return;
        }
        if (c->listener->kind == RETE_L_INBOUND && inbound_http_port(c)) {
            /* The port speaks HTTP, and raw bytes would be refused there
             * (filter_inbound.c) with a silent close: the bytes so far (a
             * head that arrives slowly, or garbage) go to the HTTP/1.1
             * parser, bounded by limits.requestHeaderTimeout and answered
             * 408 or 400; silence is a detect timeout. */
            if (len > 0 && (unsigned char)data[0] != 0x16) {
                rete_codec_get(RETE_CODEC_H1_SERVER)->server_start(c, data, len);
                return;
            }
            rete_conn_count_timeout(c, RETE_TIMEOUT_DETECT);
            detect_close(c);
            return;
        }
        rete_codec_get(RETE_CODEC_TCP)->server_start(c, data, len);
        return;
    case DETECT_TLS:
    case DETECT_MORE:
    default:
        detect_close(c);
        return;
    }
}

static void detect_on_data(rete_io *io, const char *data, size_t len);

static void detect_on_eof(rete_io *io)
{
    rete_io_close(io);
}
static void detect_on_error(rete_io *io, const char *why)
{
    (void)why;
    rete_io_close(io);
}
static void detect_on_close(rete_io *io)
{
    rete_conn_closed(io->owner);
}

static void detect_on_ready(rete_io *io, int status, const char *why)
{
    rete_conn *c = io->owner;
    if (status < 0) {
        rete_stat(c->worker, c->worker->ms.mesh_refused, 1);
        rete_info("%s: TLS handshake with %s refused: %s", c->listener->name, c->peer_addr,
                  why && *why ? why : "handshake failed");
        rete_conn_linger(c, NULL, NULL); /* let the alert out before the close (no RST over it) */
        return;
    }
    if (c->listener->kind == RETE_L_MESH) {
        const rete_config *cfg = c->gen->cfg;
        const char *policy = NULL;
        if (rete_tls_peer_spiffe_id(io->tls, c->peer_id, sizeof(c->peer_id)) < 0) {
            rete_stat(c->worker, c->worker->ms.mesh_refused, 1);
            rete_info("mesh: refused %s: no usable SPIFFE ID", c->peer_addr);
            c->peer_id[0] = '\0';
            rete_conn_linger(c, NULL, NULL);
            return;
        }
        if (!rete_authz_admit_peer(cfg, c->peer_id, &policy)) {
            /* Closed before any byte is read: nothing reaches the app. */
            rete_stat(c->worker, c->worker->ms.mesh_refused, 1);
            if (policy)
                rete_info("mesh: refused %s: identity %s is not admitted by authorization policy %s",
                          c->peer_addr, c->peer_id, policy);
            else
                rete_info("mesh: refused %s: identity %s is outside trust domain %s", c->peer_addr,
                          c->peer_id, cfg->proxy.trust_domain);
            rete_conn_linger(c, NULL, NULL); /* close_notify, discard what the peer sent, then close */
            return;
        }
        uv_timer_stop(&c->timer);
        rete_codec_get(RETE_CODEC_H2)->server_start(c, NULL, 0);
        return;
    }
    /* App TLS terminated: detect again on the plaintext. */
    c->tls_terminated = true;
    c->peek_len = 0;
    const char *alpn = rete_tls_alpn(io->tls);
    if (alpn && strcmp(alpn, "h2") == 0)
        dispatch_protocol(c, DETECT_H2, NULL, 0);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs detect_cbs = {
    .on_data = detect_on_data,
    .on_eof = detect_on_eof,
    .on_error = detect_on_error,
    .on_ready = detect_on_ready,
    .on_drain = NULL,
    .on_close = detect_on_close,
};

static void detect_on_data(rete_io *io, const char *data, size_t len)
{
    rete_conn *c = io->owner;
    char *joined = NULL;
    const char *p = data;
    size_t n = len;
    if (c->peek_len) {
        joined = rete_malloc(c->peek_len + len);
        memcpy(joined, c->peek, c->peek_len);
        memcpy(joined + c->peek_len, data, len);
        p = joined;
        n = c->peek_len + len;
    }
    detect_result r = detect(p, n);
    if (r == DETECT_MORE) {
        if (n <= sizeof(c->peek)) {
            memmove(c->peek, p, n);
            c->peek_len = n;
            free(joined);
            return;
        }
        r = DETECT_TCP;
    }
    c->peek_len = 0;
    if (r == DETECT_TLS) {
        rete_tls_ctx *ctx = c->gen->tls ? c->gen->tls->app_server : NULL;
        if (ctx && !c->tls_terminated) {
            rete_tls_session *s = rete_tls_session_new_server(ctx);
            if (!s)
                detect_close(c);
            else
                rete_io_start_tls(io, s, p, n);
            free(joined);
            return;
        }
        r = DETECT_TCP; /* TLS we do not terminate passes through as opaque bytes */
    }
    dispatch_protocol(c, r, p, n);
    free(joined);
}

static void detect_timeout(uv_timer_t *t)
{
    rete_conn *c = t->data;
    if (c->listener->kind == RETE_L_MESH || c->io.tls) {
        /* A handshake that never finished, or silence inside TLS. */
        rete_conn_count_timeout(c, RETE_TIMEOUT_DETECT);
        rete_io_close(&c->io);
        return;
    }
    if (c->listener->kind == RETE_L_OUTBOUND && !c->orig_port &&
        (c->peek_len == 0 || (unsigned char)c->peek[0] == 0x16))
        rete_conn_count_timeout(c, RETE_TIMEOUT_DETECT); /* closed below: nothing to route */
    /* Otherwise the bytes so far go on as HTTP/1.1 (bounded from now by
     * limits.requestHeaderTimeout, counted from the accept) or as opaque
     * TCP: a server-first protocol (MySQL, SMTP) starts with silence. */
    dispatch_protocol(c, DETECT_TCP, c->peek, c->peek_len);
}

/* The address a connection redirected by `rete-proxy init` (nat REDIRECT)
 * was sent to: SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6, same
 * number, SOL_IPV6) asks conntrack. Left unset when the connection was not
 * redirected (its original destination is the listener itself) or the
 * socket has no conntrack entry. */
static void original_dst(rete_conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->io.tcp, &fd) != 0)
        return;
    struct sockaddr_storage local, dst;
    socklen_t llen = sizeof(local), len = sizeof(dst);
    if (getsockname(fd, (struct sockaddr *)&local, &llen) != 0)
        return;
    if (local.ss_family == AF_INET6) {
        if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0)
            return;
        const struct sockaddr_in6 *l6 = (const struct sockaddr_in6 *)&local;
        const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&dst;
        if (memcmp(&l6->sin6_addr, &d6->sin6_addr, 16) == 0 && l6->sin6_port == d6->sin6_port)
            return; /* not redirected */
        uv_ip6_name(d6, c->orig_ip, sizeof(c->orig_ip));
        c->orig_port = ntohs(d6->sin6_port);
        return;
    }
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0)
        return;
    const struct sockaddr_in *l4 = (const struct sockaddr_in *)&local;
    const struct sockaddr_in *d4 = (const struct sockaddr_in *)&dst;
    if (l4->sin_addr.s_addr == d4->sin_addr.s_addr && l4->sin_port == d4->sin_port)
        return; /* not redirected */
    uv_ip4_name(d4, c->orig_ip, sizeof(c->orig_ip));
    c->orig_port = ntohs(d4->sin_port);
}

/* Whether worker `w` takes one more connection on `l`: the admin and the
 * stats listener each have their own small cap, so /ready and /metrics
 * answer while the data listeners are full, and a flood of the stats port
 * (which may face the network) leaves the loopback admin port reachable; data connections stop at limits.maxConnections or at
 * the worker's share of the file limit, whichever is lower, so accept(2)
 * never reaches EMFILE for the admin port's sake. Counts the refusal. */
static bool conn_admit(rete_worker *w, const rete_listener *l, const rete_limits *lim)
{
    if (rete_listener_is_local(l->kind)) {
        if (w->local_conns[l->kind == RETE_L_STATS] <= lim->max_admin_connections)
            return true;
        rete_stat(w, w->ms.conns_refused[l->kind][RETE_REFUSE_MAX_CONNECTIONS], 1);
        return false;
    }
    if (w->active_conns > lim->max_connections) {
        rete_stat(w, w->ms.conns_refused[l->kind][RETE_REFUSE_MAX_CONNECTIONS], 1);
        return false;
    }
    if (w->active_conns > w->fd_cap) {
        rete_stat(w, w->ms.conns_refused[l->kind][RETE_REFUSE_FD_LIMIT], 1);
        return false;
    }
    return true;
}

void rete_conn_accept(rete_listener *l)
{
    rete_worker *w = l->worker;
    rete_conn *c = rete_calloc(1, sizeof(*c));
    c->listener = l;
    c->worker = w;
    c->gen = w->gen;
    c->accepted_ms = uv_now(&w->loop);
    rete_gen_hold(c->gen);
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    if (rete_listener_is_local(l->kind))
        w->local_conns[l->kind == RETE_L_STATS]++;
    else if (++w->active_conns > w->peak_conns)
        w->peak_conns = w->active_conns;
    rete_metrics_gauge_add(w->shard, w->ms.conns_active[l->kind], 1);
    if (rete_io_accept(&c->io, &w->iol, (uv_stream_t *)&l->tcp, &detect_cbs, c) < 0) {
        rete_stat(w, w->ms.conns_refused[l->kind][RETE_REFUSE_ACCEPT_ERROR], 1);
        rete_io_close(&c->io);
        return;
    }
    rete_stat(w, w->ms.conns_total[l->kind], 1);
    rete_io_peer(&c->io, c->peer_addr, sizeof(c->peer_addr));
    const rete_config *cfg = c->gen->cfg;
    const rete_limits *lim = &cfg->proxy.limits;

    if (w->draining || !conn_admit(w, l, lim)) {
        /* Accepted and closed at once (Envoy's downstream_cx_overflow):
         * libuv cannot pause one listener's accepts, and a connection left
         * in the backlog would only wait longer for the same answer. */
        rete_io_close(&c->io);
        return;
    }
    switch (l->kind) {
    case RETE_L_ADMIN:
    case RETE_L_STATS:
        rete_codec_get(RETE_CODEC_H1_SERVER)->server_start(c, NULL, 0);
        return;
    case RETE_L_MESH: {
        rete_tls_session *s = rete_tls_session_new_server(c->gen->tls->mesh_server);
        if (!s) {
            rete_io_close(&c->io);
            return;
        }
        rete_io_start_tls(&c->io, s, NULL, 0);
        rete_io_read_start(&c->io);
        uv_timer_start(&c->timer, detect_timeout, lim->detect_timeout_ms, 0);
        /* a handshake that never finishes is closed by the timer path */
        return;
    }
    case RETE_L_INBOUND:
        if (cfg->mtls_mode == RETE_MTLS_STRICT) {
            rete_stat(w, w->ms.mesh_refused, 1);
            rete_debug("inbound: STRICT mTLS refuses plaintext from %s", c->peer_addr);
            rete_io_close(&c->io);
            return;
        }
        original_dst(c);
        break;
    case RETE_L_UPSTREAM: {
        const rete_upstream_listener *u = &cfg->proxy.upstreams[l->upstream_index];
        c->fixed = rete_config_table_for(cfg, u->service, u->port);
        for (size_t i = 0; i < u->service->n_ports; i++)
            if (u->service->ports[i].port == u->port && u->service->ports[i].protocol == RETE_PROTO_TCP) {
                rete_codec_get(RETE_CODEC_TCP)->server_start(c, NULL, 0);
                return;
            }
        break;
    }
    case RETE_L_OUTBOUND:
        original_dst(c);
        break;
    default:
        break;
    }
    rete_io_read_start(&c->io);
    uv_timer_start(&c->timer, detect_timeout, lim->detect_timeout_ms, 0);
}

/* The connection's table points into its own generation's config; an
 * exchange indexes its generation's (per-service counters, load balancers)
 * with it, so the service port is looked up again there. Listeners never
 * change across a reload (one that would is refused), so the index names
 * the same upstream in every generation. */
static const rete_route_table *fixed_table(const rete_conn *c, const rete_gen *g)
{
    if (!c->fixed || g == c->gen)
        return c->fixed;
    const rete_config *cfg = g->cfg;
    size_t i = c->listener->upstream_index;
    if (i >= cfg->proxy.n_upstreams)
        return NULL;
    const rete_upstream_listener *u = &cfg->proxy.upstreams[i];
    return rete_config_table_for(cfg, u->service, u->port);
}

rete_exchange *rete_conn_new_exchange(rete_conn *c, const rete_side_ops *ops, void *side)
{
    rete_exchange *ex = rete_ex_new(c->worker, ops, side);
    rete_listener_kind kind = c->listener->kind;
    ex->listener = c->listener->name;
    ex->inbound = kind == RETE_L_MESH || kind == RETE_L_INBOUND;
    ex->admin = rete_listener_is_local(kind);
    ex->stats_only = kind == RETE_L_STATS;
    ex->table = fixed_table(c, ex->gen);
    ex->target_port = c->orig_port;
    if (c->orig_port && kind == RETE_L_OUTBOUND) {
        ex->orig_port = c->orig_port;
        memcpy(ex->orig_ip, c->orig_ip, sizeof(ex->orig_ip));
    }
    snprintf(ex->peer_id, sizeof(ex->peer_id), "%s", c->peer_id);
    snprintf(ex->downstream_addr, sizeof(ex->downstream_addr), "%s", c->peer_addr);
    return ex;
}
