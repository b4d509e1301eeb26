/* Raw TCP sides of tunnel exchanges: a downstream connection carrying opaque
 * bytes (TCP service ports, explicit TCP upstreams, unrecognised protocols)
 * and an upstream TCP connection to an app port or an endpoint outside the
 * mesh. Half-closes travel end to end: EOF on one side ends its pipe, and
 * the other side shuts its write half once the pipe is drained. */
#include "tcp.h"
#include "alloc.h"
#include "conn.h"
#include "exchange.h"
#include "io.h"
#include "log.h"
#include "tls_hello.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

typedef struct tcp_side {
    rete_io own_io;         /* upstream role owns its io */
    rete_io *io;
    rete_conn *conn;        /* downstream role */
    rete_exchange *ex;
    rete_side role;
    bool connected;
    bool paused;
    bool wrote_eof;
    uint64_t last_active;   /* downstream role: loop ms of the last byte either way */
} tcp_side;

static void tcp_pump(tcp_side *t);

static void tcp_close(tcp_side *t)
{
    rete_io_close(t->io);
}

static void tcp_release(tcp_side *t)
{
    rete_exchange *ex = t->ex;
    if (!ex)
        return;
    t->ex = NULL;
    rete_ex_detach(ex, t->role);
}

/* Write what the other side produced; shut our write half at its end. */
static void tcp_pump(tcp_side *t)
{
    rete_exchange *ex = t->ex;
    if (!ex || !t->connected)
        return;
    while (t->io->queued < 256 * 1024) {
        const char *d;
        size_t n = rete_ex_peek(ex, t->role, &d);
        if (n == 0)
            break;
        uv_buf_t b = uv_buf_init((char *)d, (unsigned)n);
        if (rete_io_write(t->io, &b, 1) < 0) {
            tcp_close(t);
            return;
        }
        rete_stat(ex->worker, ex->worker->ms.tcp_out, n);
        t->last_active = uv_now(&ex->worker->loop);
        rete_ex_consume(ex, t->role, n);
        if (!t->ex)
            return;
    }
    rete_pipe *in = rete_ex_in(ex, t->role);
    if (in->end && !in->head && !t->wrote_eof) {
        t->wrote_eof = true;
        rete_io_shutdown(t->io);
        rete_pipe *out = t->role == RETE_UPSTREAM ? &ex->resp_body : &ex->req_body;
        if (out->end) {
            tcp_release(t);
            tcp_close(t);
        }
    }
}

static void tcp_on_data(rete_io *io, const char *data, size_t len)
{
    tcp_side *t = io->owner;
    if (!t->ex)
        return;
    rete_stat(t->ex->worker, t->ex->worker->ms.tcp_in, len);
    t->last_active = uv_now(&t->ex->worker->loop);
    if (rete_ex_push(t->ex, t->role, data, len)) {
        t->paused = true;
        rete_io_read_stop(io);
    }
}

static void tcp_on_eof(rete_io *io)
{
    tcp_side *t = io->owner;
    if (!t->ex) {
        tcp_close(t);
        return;
    }
    rete_exchange *ex = t->ex;
    rete_ex_end(ex, t->role);
    if (t->ex && t->wrote_eof) {
        tcp_release(t);
        tcp_close(t);
    }
}

static void tcp_on_error(rete_io *io, const char *why)
{
    tcp_side *t = io->owner;
    rete_exchange *ex = t->ex;
    t->ex = NULL;
    if (ex)
        rete_ex_fail(ex, t->role, t->connected ? RETE_EXE_UPSTREAM_RESET : RETE_EXE_CONNECT, why);
    tcp_close(t);
}

static void tcp_on_ready(rete_io *io, int status, const char *why)
{
    tcp_side *t = io->owner;
    if (status < 0) {
        rete_exchange *ex = t->ex;
        if (ex && io->connect_timed_out) {
            t->ex = NULL;
            rete_ex_fail(ex, t->role, RETE_EXE_CONNECT_TIMEOUT, why);
            tcp_close(t);
            return;
        }
        tcp_on_error(io, why);
        return;
    }
    t->connected = true;
    if (t->role == RETE_UPSTREAM && t->ex) {
        /* The tunnel is open: tell the downstream (CONNECT 200). */
        t->ex->resp.status = 200;
        t->ex->resp.content_length = -1;
        rete_ex_response_ready(t->ex);
        tcp_pump(t);
    }
}

static void tcp_on_drain(rete_io *io)
{
    tcp_pump(io->owner);
}

static void tcp_on_close(rete_io *io)
{
    tcp_side *t = io->owner;
    rete_exchange *ex = t->ex;
    t->ex = NULL;
    if (ex)
        rete_ex_fail(ex, t->role, RETE_EXE_UPSTREAM_RESET, "connection closed");
    rete_conn *c = t->conn;
    free(t);
    if (c)
        rete_conn_closed(c);
}

/* one io callback table per owner of a connection (io.h): the same shape by design. */
static const rete_io_cbs tcp_io_cbs = {
    .on_data = tcp_on_data,
    .on_eof = tcp_on_eof,
    .on_error = tcp_on_error,
    .on_ready = tcp_on_ready,
    .on_drain = tcp_on_drain,
    .on_close = tcp_on_close,
};

/* ---- exchange ops, shared by both roles ---- */

static void tcp_ex_on_head(rete_exchange *ex)
{
    /* downstream: the tunnel's answer; a failure closes the connection */
    tcp_side *t = ex->side[RETE_DOWNSTREAM];
    if (ex->resp.status / 100 != 2) {
        tcp_release(t);
        tcp_close(t);
        return;
    }
    tcp_pump(t);
}

static void tcp_ex_on_data_ds(rete_exchange *ex)
{
    tcp_pump(ex->side[RETE_DOWNSTREAM]);
}

static void tcp_ex_on_data_us(rete_exchange *ex)
{
    tcp_pump(ex->side[RETE_UPSTREAM]);
}

static void tcp_resume(tcp_side *t, rete_pipe *out)
{
    if (t->paused && !out->paused) {
        t->paused = false;
        rete_io_read_start(t->io);
    }
}

static void tcp_ex_on_drained_ds(rete_exchange *ex, size_t n)
{
    (void)n;
    tcp_resume(ex->side[RETE_DOWNSTREAM], &ex->req_body);
}

static void tcp_ex_on_drained_us(rete_exchange *ex, size_t n)
{
    (void)n;
    tcp_resume(ex->side[RETE_UPSTREAM], &ex->resp_body);
}

static void tcp_ex_on_abort_ds(rete_exchange *ex)
{
    tcp_side *t = ex->side[RETE_DOWNSTREAM];
    tcp_release(t);
    tcp_close(t);
}

static void tcp_ex_on_abort_us(rete_exchange *ex)
{
    tcp_side *t = ex->side[RETE_UPSTREAM];
    tcp_release(t);
    tcp_close(t);
}

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops tcp_ds_ops = {
    .name = "tcp-server",
    .on_head = tcp_ex_on_head,
    .on_data = tcp_ex_on_data_ds,
    .on_drained = tcp_ex_on_drained_ds,
    .on_abort = tcp_ex_on_abort_ds,
};

static void tcp_ex_on_head_us(rete_exchange *ex) { (void)ex; }

/* one side table per codec side (exchange.h): the same shape by design. */
static const rete_side_ops tcp_us_ops = {
    .name = "tcp-client",
    .on_head = tcp_ex_on_head_us,
    .on_data = tcp_ex_on_data_us,
    .on_drained = tcp_ex_on_drained_us,
    .on_abort = tcp_ex_on_abort_us,
};

/* limits.tcpIdleTimeout (Envoy's tcp_proxy idle_timeout): a downstream
 * tunnel with no byte either way is closed, with its upstream. Bytes only
 * move a timestamp; the timer re-arms for what is left when it fires. */
static void tcp_idle_check(rete_conn *c)
{
    tcp_side *t = c->io.owner;
    uint64_t ms = c->gen->cfg->proxy.limits.tcp_idle_timeout_ms;
    uint64_t now = uv_now(&c->worker->loop);
    if (now - t->last_active < ms) {
        rete_conn_timer_start(c, ms - (now - t->last_active), tcp_idle_check);
        return;
    }
    rete_conn_count_timeout(c, RETE_TIMEOUT_IDLE);
    rete_debug("tcp: %s idle for %llu ms: closed", c->peer_addr, (unsigned long long)ms);
    tcp_release(t);
    tcp_close(t);
}

void rete_tcp_server_start(rete_conn *c, const char *data, size_t len)
{
    tcp_side *t = rete_calloc(1, sizeof(*t));
    t->conn = c;
    t->io = &c->io;
    t->role = RETE_DOWNSTREAM;
    t->connected = true;
    t->last_active = uv_now(&c->worker->loop);
    c->io.cbs = &tcp_io_cbs;
    c->io.owner = t;
    rete_conn_timer_start(c, c->gen->cfg->proxy.limits.tcp_idle_timeout_ms, tcp_idle_check);
    rete_exchange *ex = rete_conn_new_exchange(c, &tcp_ds_ops, t);
    t->ex = ex;
    ex->tunnel = true;
    ex->req.method = RETE_VIEW_LIT("CONNECT");
    if (c->orig_port) {
        /* The tunnel's authority routes it (filter_route.c): an intercepted
         * TLS connection whose ClientHello names a host (SNI) asks for that
         * host on the port the app dialled, so SNI naming a mesh Service
         * routes to it wherever the app's address pointed; otherwise (or
         * when the name is no Service) the original address decides. */
        char a[300];
        rete_view sni = RETE_VIEW_NULL;
        if (len && (unsigned char)data[0] == 0x16 &&
            rete_tls_hello_sni((const uint8_t *)data, len, &sni) == RETE_HELLO_SNI)
            snprintf(a, sizeof(a), "%.*s:%u", (int)sni.len, sni.p, c->orig_port);
        else
            snprintf(a, sizeof(a), strchr(c->orig_ip, ':') ? "[%s]:%u" : "%s:%u", c->orig_ip,
                     c->orig_port);
        ex->req.authority = rete_ex_dup(ex, rete_view_cstr(a));
    }
    if (len)
        rete_ex_push(ex, RETE_DOWNSTREAM, data, len);
    rete_io_read_start(&c->io);
    rete_ex_request_ready(ex);
}

void rete_tcp_upstream_start(rete_exchange *ex, const char *ip, uint16_t port,
                             uint32_t connect_timeout_ms)
{
    tcp_side *t = rete_calloc(1, sizeof(*t));
    t->io = &t->own_io;
    t->role = RETE_UPSTREAM;
    t->ex = ex;
    ex->ops[RETE_UPSTREAM] = &tcp_us_ops;
    ex->side[RETE_UPSTREAM] = t;
    ex->attached[RETE_UPSTREAM] = true;
    if (rete_io_connect(t->io, &ex->worker->iol, ip, port, NULL, &tcp_io_cbs, t) < 0) {
        t->ex = NULL;
        ex->attached[RETE_UPSTREAM] = false;
        free(t);
        rete_ex_fail(ex, RETE_UPSTREAM, RETE_EXE_CONNECT, "bad upstream address");
        return;
    }
    rete_io_connect_timeout(t->io, connect_timeout_ms);
}

static void upstream_start(rete_exchange *ex, const rete_upstream_target *t)
{
    rete_tcp_upstream_start(ex, t->ip, t->port, t->connect_timeout_ms);
}

const rete_codec rete_codec_tcp = {
    .name = "tcp",
    .server_start = rete_tcp_server_start,
    .upstream_start = upstream_start,
};
