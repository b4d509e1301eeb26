#include "io.h"
#include "alloc.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A queued write: the bytes the kernel did not take at once. */
typedef struct io_write {
    uv_write_t req;
    rete_io *io;
    size_t len;
    char data[];
} io_write;

static void io_fail(rete_io *io, const char *why)
{
    if (io->closing)
        return;
    io->cbs->on_error(io, why);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    rete_io *io = h->data;
    /* One read buffer per loop: data is handed up synchronously and copied
     * by whoever keeps it, so idle connections hold no read buffer at all. */
    buf->base = io->iol->readbuf;
    buf->len = sizeof(io->iol->readbuf);
}

static void on_write_done(uv_write_t *req, int status)
{
    io_write *wr = (io_write *)req;
    rete_io *io = wr->io;
    io->queued -= wr->len;
    io->write_progress = uv_now(io->iol->loop);
    free(wr);
    if (status < 0) {
        if (status != UV_ECANCELED)
            io_fail(io, uv_strerror(status));
        return;
    }
    if (io->want_drain && io->queued <= io->low_water && !io->closing) {
        io->want_drain = false;
        if (io->cbs->on_drain)
            io->cbs->on_drain(io);
    }
}

/* Write raw bytes (ciphertext or plaintext) to the socket. */
static rete_rc io_write_raw(rete_io *io, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return RETE_OK;
    size_t skip = 0;
    if (io->queued == 0) {
        int r = uv_try_write((uv_stream_t *)&io->tcp, bufs, n);
        if (r >= 0)
            skip = (size_t)r;
        else if (r != UV_EAGAIN)
            return RETE_EIO;
        if (skip == total)
            return RETE_OK;
    }
    io_write *wr = rete_malloc(sizeof(*wr) + total - skip);
    wr->io = io;
    wr->len = total - skip;
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *p = bufs[i].base;
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        p += skip;
        len -= skip;
        skip = 0;
        memcpy(wr->data + off, p, len);
        off += len;
    }
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
    int r = uv_write(&wr->req, (uv_stream_t *)&io->tcp, &b, 1, on_write_done);
    if (r < 0) {
        free(wr);
        return RETE_EIO;
    }
    if (io->queued == 0)
        io->write_progress = uv_now(io->iol->loop); /* a stall is measured from here */
    io->queued += wr->len;
    io->want_drain = true;
    return RETE_OK;
}

/* Move whatever the TLS engine produced onto the socket. */
static rete_rc io_flush_tls(rete_io *io)
{
    while (rete_tls_pending_out(io->tls) > 0) {
        /* Not tlsbuf: that one may hold the plaintext being handed up. */
        size_t n = rete_tls_take_out(io->tls, io->iol->tlsout, sizeof(io->iol->tlsout));
        if (n == 0)
            break;
        uv_buf_t b = uv_buf_init(io->iol->tlsout, (unsigned)n);
        RETE_GUARD(io_write_raw(io, &b, 1));
    }
    return RETE_OK;
}

static void io_tls_input(rete_io *io, const char *data, size_t len)
{
    if (rete_tls_feed(io->tls, data, len) < 0) {
        io_fail(io, "tls: input rejected");
        return;
    }
    if (!io->tls_ready) {
        rete_rc rc = rete_tls_handshake(io->tls);
        if (io_flush_tls(io) < 0) {
            io_fail(io, "write failed");
            return;
        }
        if (rc == RETE_EAGAIN)
            return;
        if (rc < 0) {
            const char *why = rete_tls_session_error(io->tls);
            io->cbs->on_ready(io, -1, why ? why : "tls handshake failed");
            return;
        }
        io->tls_ready = true;
        io->cbs->on_ready(io, 0, NULL);
        if (io->closing)
            return;
    }
    /* Decrypt into the worker's TLS buffer: the read buffer still holds the
     * ciphertext we are consuming. */
    for (;;) {
        size_t n = 0;
        rete_rc rc = rete_tls_read(io->tls, io->iol->tlsbuf, sizeof(io->iol->tlsbuf), &n);
        if (rc == RETE_EAGAIN || (rc == RETE_OK && n == 0))
            break;
        if (rc < 0) {
            io_fail(io, rete_tls_session_error(io->tls) ? rete_tls_session_error(io->tls)
                                                         : "tls read failed");
            return;
        }
        io->cbs->on_data(io, io->iol->tlsbuf, n);
        if (io->closing || !io->reading)
            break;
    }
    if (io_flush_tls(io) < 0) { /* key updates, session tickets */
        io_fail(io, "write failed");
        return;
    }
    if (rete_tls_peer_closed(io->tls) && !io->eof) {
        io->eof = true;
        io->cbs->on_eof(io);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    rete_io *io = s->data;
    if (nread == 0 || io->closing)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            io->eof = true;
            uv_read_stop(s);
            io->reading = false;
            io->cbs->on_eof(io);
        } else {
            io_fail(io, uv_strerror((int)nread));
        }
        return;
    }
    if (io->tls)
        io_tls_input(io, buf->base, (size_t)nread);
    else
        io->cbs->on_data(io, buf->base, (size_t)nread);
}

static void io_init(rete_io *io, rete_io_loop *iol, const rete_io_cbs *cbs, void *owner)
{
    memset(io, 0, sizeof(*io));
    io->iol = iol;
    io->cbs = cbs;
    io->owner = owner;
    io->low_water = 16384;
    uv_tcp_init(iol->loop, &io->tcp);
    io->tcp.data = io;
}

rete_rc rete_io_accept(rete_io *io, rete_io_loop *iol, uv_stream_t *server, const rete_io_cbs *cbs,
                       void *owner)
{
    io_init(io, iol, cbs, owner);
    if (uv_accept(server, (uv_stream_t *)&io->tcp) < 0)
        return RETE_EIO;
    uv_tcp_nodelay(&io->tcp, 1);
    return RETE_OK;
}

static void connect_timer_free(uv_handle_t *h)
{
    free(h);
}

/* The connect completed, failed or the io closes: the timer goes. */
static void connect_timer_stop(rete_io *io)
{
    if (!io->connect_timer)
        return;
    uv_close((uv_handle_t *)io->connect_timer, connect_timer_free);
    io->connect_timer = NULL;
}

static void on_connect_timeout(uv_timer_t *t)
{
    rete_io *io = t->data;
    connect_timer_stop(io);
    if (io->closing)
        return;
    io->connect_timed_out = true;
    io->cbs->on_ready(io, -1, "connect timeout");
}

void rete_io_connect_timeout(rete_io *io, uint64_t ms)
{
    if (!ms || io->closing || io->connect_timer)
        return;
    io->connect_timer = rete_malloc(sizeof(*io->connect_timer));
    uv_timer_init(io->iol->loop, io->connect_timer);
    io->connect_timer->data = io;
    uv_timer_start(io->connect_timer, on_connect_timeout, ms, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    rete_io *io = req->handle->data;
    connect_timer_stop(io);
    if (io->closing)
        return;
    if (status < 0) {
        io->cbs->on_ready(io, -1, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&io->tcp, 1);
    rete_io_read_start(io);
    if (!io->tls) {
        io->cbs->on_ready(io, 0, NULL);
        return;
    }
    rete_rc rc = rete_tls_handshake(io->tls); /* writes the ClientHello */
    if (rc < 0 && rc != RETE_EAGAIN) {
        io->cbs->on_ready(io, -1, "tls handshake failed to start");
        return;
    }
    if (io_flush_tls(io) < 0)
        io->cbs->on_ready(io, -1, "write failed");
}

static void on_connect_failed_closed(uv_handle_t *h)
{
    /* uv_tcp_connect refused synchronously: report it as a failed connect,
     * from the loop like any other, then the close. */
    rete_io *io = h->data;
    io->cbs->on_ready(io, -1, "connect failed");
    if (io->tls) {
        rete_tls_session_free(io->tls);
        io->tls = NULL;
    }
    io->cbs->on_close(io);
}

rete_rc rete_io_connect(rete_io *io, rete_io_loop *iol, const char *ip, uint16_t port,
                        rete_tls_session *tls, const rete_io_cbs *cbs, void *owner)
{
    return rete_io_connect_from(io, iol, NULL, ip, port, tls, cbs, owner);
}

rete_rc rete_io_connect_from(rete_io *io, rete_io_loop *iol, const char *src_ip, const char *ip,
                             uint16_t port, rete_tls_session *tls, const rete_io_cbs *cbs,
                             void *owner)
{
    struct sockaddr_storage ss, src;
    if (uv_ip4_addr(ip, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&ss) != 0)
        return RETE_EINVAL; /* nothing initialised: the caller frees */
    if (src_ip && uv_ip4_addr(src_ip, 0, (struct sockaddr_in *)&src) != 0 &&
        uv_ip6_addr(src_ip, 0, (struct sockaddr_in6 *)&src) != 0)
        return RETE_EINVAL;
    io_init(io, iol, cbs, owner);
    io->tls = tls;
    int rc = 0;
    if (src_ip) {
        rc = uv_tcp_bind(&io->tcp, (struct sockaddr *)&src, 0);
        if (rc < 0)
            rete_warn("connect to %s:%u from %s: %s; connecting from the default address", ip,
                      (unsigned)port, src_ip, uv_strerror(rc));
    }
    if (uv_tcp_connect(&io->connect_req, &io->tcp, (struct sockaddr *)&ss, on_connect) < 0) {
        io->closing = true;
        uv_close((uv_handle_t *)&io->tcp, on_connect_failed_closed);
    }
    return RETE_OK;
}

void rete_io_start_tls(rete_io *io, rete_tls_session *tls, const char *initial, size_t len)
{
    io->tls = tls;
    io->tls_ready = false;
    if (len > 0) {
        /* `initial` may live in the worker's read buffer: the TLS engine copies it. */
        io_tls_input(io, initial, len);
    }
}

void rete_io_read_start(rete_io *io)
{
    if (io->reading || io->closing || io->eof)
        return;
    if (uv_read_start((uv_stream_t *)&io->tcp, on_alloc, on_read) == 0)
        io->reading = true;
}

void rete_io_read_stop(rete_io *io)
{
    if (!io->reading)
        return;
    uv_read_stop((uv_stream_t *)&io->tcp);
    io->reading = false;
}

rete_rc rete_io_write(rete_io *io, const uv_buf_t *bufs, unsigned n)
{
    if (io->closing)
        return RETE_ESTATE;
    if (!io->tls)
        return io_write_raw(io, bufs, n);
    for (unsigned i = 0; i < n; i++)
        if (bufs[i].len)
            RETE_GUARD(rete_tls_write(io->tls, bufs[i].base, bufs[i].len));
    return io_flush_tls(io);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status;
}

void rete_io_shutdown(rete_io *io)
{
    if (io->shut_wr || io->closing)
        return;
    io->shut_wr = true;
    if (io->tls) {
        if (rete_tls_shutdown(io->tls) < 0)
            return; /* nothing sensible to send: the close that follows ends it */
        if (io_flush_tls(io) < 0)
            return;
    }
    uv_shutdown(&io->shutdown_req, (uv_stream_t *)&io->tcp, on_shutdown);
}

static void on_closed(uv_handle_t *h)
{
    rete_io *io = h->data;
    if (io->tls) {
        rete_tls_session_free(io->tls);
        io->tls = NULL;
    }
    io->cbs->on_close(io);
}

void rete_io_close(rete_io *io)
{
    if (io->closing)
        return;
    io->closing = true;
    io->reading = false;
    connect_timer_stop(io);
    uv_close((uv_handle_t *)&io->tcp, on_closed);
}

void rete_io_peer(const rete_io *io, char *out, size_t len)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    out[0] = '\0';
    if (uv_tcp_getpeername(&io->tcp, (struct sockaddr *)&ss, &n) != 0)
        return;
    char ip[64] = "";
    int port = 0;
    if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    } else {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    snprintf(out, len, "%s:%d", ip, port);
}
