/* One byte stream over a libuv TCP handle, plaintext or TLS (Redis's
 * ConnectionType idea: the codecs above never know which).
 *
 * The owner embeds a rete_io in its own struct and gets plaintext through
 * callbacks. Reads land in the worker's shared read buffer: a callee that
 * needs bytes past the callback copies them (that is what keeps an idle
 * connection small). Writes are attempted at once with uv_try_write; only
 * what the kernel does not take is copied into a queued write request.
 *
 * Lifetime: rete_io_close() starts closing; on_close is the last callback,
 * after which the owner may free the memory holding the rete_io. */
#ifndef RETE_IO_H
#define RETE_IO_H

#include "result.h"
#include "tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct rete_io rete_io;

#define RETE_IO_BUF 65536

/* What every io on one loop shares: the loop and its scratch buffers
 * (one per thread: the proxy's workers each have one, reted has one). */
typedef struct rete_io_loop {
    uv_loop_t *loop;
    char readbuf[RETE_IO_BUF];  /* socket reads land here */
    char tlsbuf[RETE_IO_BUF];   /* decrypted input being handed up */
    char tlsout[RETE_IO_BUF];   /* ciphertext on its way to a socket */
} rete_io_loop;

typedef struct rete_io_cbs {
    /* Plaintext received. */
    void (*on_data)(rete_io *io, const char *data, size_t len);
    /* The peer finished sending (TCP FIN or TLS close_notify). */
    void (*on_eof)(rete_io *io);
    /* A read/write/TLS error; the owner should close. */
    void (*on_error)(rete_io *io, const char *why);
    /* Client: TCP connected and, with TLS, the handshake and peer checks
     * done (status 0), or failed (status < 0, why set). Server with TLS:
     * called once the handshake is done. */
    void (*on_ready)(rete_io *io, int status, const char *why);
    /* Queued write bytes dropped below the low-water mark. */
    void (*on_drain)(rete_io *io);
    /* The handle is closed: last callback. */
    void (*on_close)(rete_io *io);
} rete_io_cbs;

struct rete_io {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    rete_io_loop *iol;
    const rete_io_cbs *cbs;
    void *owner;
    rete_tls_session *tls;
    size_t queued;          /* bytes in flight in uv_write requests */
    uint64_t write_progress; /* loop ms of the last write the kernel took while queued > 0 */
    size_t low_water;       /* on_drain fires when queued falls to this */
    bool reading;
    bool closing;
    bool tls_ready;         /* handshake complete */
    bool eof;
    bool shut_wr;
    bool want_drain;
    bool connect_timed_out; /* the connect timer fired before the TCP connect completed */
    uv_timer_t *connect_timer; /* rete_io_connect_timeout: allocated only while connecting */
};

/* Server side: accept from `server` onto io. */
RETE_MUST_CHECK rete_rc rete_io_accept(rete_io *io, rete_io_loop *iol, uv_stream_t *server,
                                       const rete_io_cbs *cbs, void *owner);
/* Client side: connect to ip:port; with `tls`, handshake after connect. */
RETE_MUST_CHECK rete_rc rete_io_connect(rete_io *io, rete_io_loop *iol, const char *ip,
                                        uint16_t port, rete_tls_session *tls,
                                        const rete_io_cbs *cbs, void *owner);
/* The same from a given source address (an IP literal; port chosen by the
 * kernel): a proxy's control-plane connection comes from its workload
 * address, which reted checks. When the address cannot be bound (not
 * local: behind NAT), a warning and a connection from the default address. */
RETE_MUST_CHECK rete_rc rete_io_connect_from(rete_io *io, rete_io_loop *iol, const char *src_ip,
                                             const char *ip, uint16_t port, rete_tls_session *tls,
                                             const rete_io_cbs *cbs, void *owner);
/* Bound the TCP connect just started (rete_io_connect): when it has not
 * completed within `ms`, on_ready(-1, "connect timeout") and
 * io->connect_timed_out is set (the owner closes the io, as for any failed
 * connect). The timer is allocated only while the connect is pending: a
 * connected io carries a NULL pointer. ms == 0: no bound (the kernel's SYN
 * retries, about two minutes on Linux). Call it at once after a successful
 * rete_io_connect, on the same loop iteration. */
void rete_io_connect_timeout(rete_io *io, uint64_t ms);
/* Turn an accepted plaintext io into a TLS server; `initial` holds bytes
 * already read (the ClientHello the detector peeked). Takes ownership of tls. */
void rete_io_start_tls(rete_io *io, rete_tls_session *tls, const char *initial,
                       size_t len);
void rete_io_read_start(rete_io *io);
void rete_io_read_stop(rete_io *io);
/* Write all of bufs (copied when the kernel does not take them at once). */
RETE_MUST_CHECK rete_rc rete_io_write(rete_io *io, const uv_buf_t *bufs, unsigned n);
/* Half-close our side once queued writes are out (TLS: close_notify first). */
void rete_io_shutdown(rete_io *io);
void rete_io_close(rete_io *io);
/* Peer address as "ip:port". */
void rete_io_peer(const rete_io *io, char *out, size_t len);

#endif
