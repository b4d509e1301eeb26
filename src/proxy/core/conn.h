/* A downstream connection: the socket a listener accepted, its protocol
 * detection, and then the codec that owns it (HTTP/1.1 server, HTTP/2
 * server, raw TCP). The rete_io stays where it is for the connection's whole
 * life; codecs take it over by pointing io.cbs/io.owner at themselves, and
 * call rete_conn_closed from their on_close. */
#ifndef RETE_PROXY_CONN_H
#define RETE_PROXY_CONN_H

#include "io.h"
#include "worker.h"

struct rete_exchange;
struct rete_side_ops;

typedef struct rete_conn {
    rete_io io;
    rete_listener *listener;
    rete_worker *worker;
    rete_gen *gen;                   /* held for the connection's life */
    uv_timer_t timer;                /* detection, then the codec's deadlines, or a linger */
    uint64_t accepted_ms;            /* loop time of the accept */
    bool timer_open;
    char peek[64];                   /* first bytes, while detecting */
    size_t peek_len;
    bool tls_terminated;             /* app TLS was unwrapped (then detect again) */
    uint16_t orig_port;              /* SO_ORIGINAL_DST port, 0 when not redirected */
    char orig_ip[48];
    char peer_id[160];               /* mesh: the verified SPIFFE ID */
    char peer_addr[64];
    const rete_route_table *fixed;   /* explicit upstream listener: its service port */
    void (*on_timer)(struct rete_conn *c);
    void *codec;                     /* the codec's state, for on_timer */
    void (*linger_release)(void *codec); /* frees the codec's state once a linger ends */
} rete_conn;

void rete_conn_accept(rete_listener *l);
/* Half-close, discard input until the peer closes or a short linger
 * timer fires, then close: an error answer is not lost to a reset. A codec
 * that hands its connection over mid-callback (its state still on the
 * stack above) passes `release` and its state: they are freed when the
 * connection closes, not before. NULL when there is nothing to free. */
void rete_conn_linger(rete_conn *c, void (*release)(void *codec), void *codec);
/* Idle timeout (limits.idleTimeout): the codec starts it when the
 * connection has nothing in flight and stops it when work arrives; when it
 * fires, on_idle runs (it closes the connection, gracefully if it can). */
void rete_conn_idle_start(rete_conn *c, void (*on_idle)(rete_conn *c));
void rete_conn_idle_stop(rete_conn *c);
/* The connection's one timer, for a codec that keeps its own deadlines
 * (h1_server.c): `on_timer` runs after `ms`; it replaces the idle timer. */
void rete_conn_timer_start(rete_conn *c, uint64_t ms, void (*on_timer)(rete_conn *c));
/* Count a downstream timeout on rete_proxy_downstream_timeouts_total. */
void rete_conn_count_timeout(rete_conn *c, rete_timeout_kind kind);

/* The one constructor of a downstream exchange, for every codec: the
 * exchange takes the worker's current generation, and everything it learns
 * from the connection (listener, direction, the explicit upstream's route
 * table looked up again in that generation, peer identity and address) is
 * set here, so no codec can pair a table of one generation with another
 * generation's counters (that crashed the proxy after a reload). */
struct rete_exchange *rete_conn_new_exchange(rete_conn *c, const struct rete_side_ops *ops,
                                             void *side);

/* The codec is done with the connection's memory. */
void rete_conn_closed(rete_conn *c);

#endif
