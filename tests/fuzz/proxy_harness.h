/* What the proxy-side fuzz targets (fuzz_h2_server, fuzz_h1h2_headers)
 * share: one worker that never runs its own threads, a generation from a
 * small configuration, and a downstream connection whose socket is one end
 * of a socketpair (the other end is drained and thrown away), handed to a
 * real codec (HTTP/2 server, HTTP/1.1 server) with the fuzzer's bytes as
 * its first read. The request path above the core is the target's own
 * (rete_request_path_set): it sees every request head exactly as a codec
 * put it in the exchange, checks it, and answers locally, so no upstream is
 * ever dialled. fh_close closes the connection and runs the loop until
 * every handle is closed: then no exchange and no connection may be left. */
#ifndef RETE_FUZZ_PROXY_HARNESS_H
#define RETE_FUZZ_PROXY_HARNESS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec.h"
#include "codecs.h"
#include "config.h"
#include "conn.h"
#include "dispatch.h"
#include "exchange.h"
#include "h1_server.h"
#include "h2.h"
#include "log.h"
#include "proxy.h"
#include "worker.h"
#include "fuzz.h"

typedef struct fh_world {
    rete_proxy proxy;
    rete_worker w;
    rete_tls_set tls;
    rete_listener listener;
    int peer_fd; /* the client's end: drained */
} fh_world;

static fh_world fh;

static const char fh_yaml[] =
    "apiVersion: rete.dev/v1alpha1\nkind: Proxy\nmetadata: {name: web-0, namespace: demo}\n"
    "spec:\n  serviceAccount: web\n  inbound: [{port: 8080}]\n";

/* Once per process; `rp` is the target's request path, of which the
 * proxy's own path normalisation, share release and generation cleanup
 * are taken from the real request path (dispatch.c), so that a codec sees
 * the same answers there as in rete-proxy. */
static void fh_init(rete_request_path *rp, rete_listener_kind kind)
{
    rete_log_level = -1; /* quiet: the codecs warn about what the fuzzer sends */
    rete_codecs_register();
    rete_http_register();
    const rete_request_path *real = rete_request_path_get();
    rp->normalize_path = real->normalize_path;
    rp->release_share = real->release_share;
    rp->gen_free = real->gen_free;
    rete_request_path_set(rp);
    rete_proxy_metrics_init(&fh.proxy);
    fh.w.proxy = &fh.proxy;
    fh.w.shard = rete_metrics_shard_new(fh.proxy.metrics);
    fh.w.mm = fh.proxy.mm;
    fh.w.ms = fh.proxy.ms;
    fh.w.rng = 42;
    CHECK(uv_loop_init(&fh.w.loop) == 0);
    fh.w.iol.loop = &fh.w.loop;
    atomic_init(&fh.tls.refs, 1);
    rete_config_error err;
    rete_config *cfg = rete_config_load_buffer(fh_yaml, sizeof(fh_yaml) - 1, "fuzz.yaml", 1, &err);
    CHECK(cfg);
    fh.w.gen = rete_gen_new(cfg, &fh.tls);
    rete_config_unref(cfg);
    fh.listener.worker = &fh.w;
    fh.listener.kind = kind;
    fh.listener.name = kind == RETE_L_MESH ? "mesh" : "outbound";
}

static void fh_drain_peer(void)
{
    char buf[65536];
    while (read(fh.peer_fd, buf, sizeof(buf)) > 0)
        ;
}

/* A downstream connection as rete_conn_accept leaves it before detection. */
static rete_conn *fh_conn(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    fh.peer_fd = sv[1];
    rete_worker *w = &fh.w;
    rete_conn *c = calloc(1, sizeof(*c));
    CHECK(c);
    c->listener = &fh.listener;
    c->worker = w;
    c->gen = w->gen;
    c->accepted_ms = uv_now(&w->loop);
    rete_gen_hold(c->gen);
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    w->active_conns++;
    CHECK(uv_tcp_init(&w->loop, &c->io.tcp) == 0);
    CHECK(uv_tcp_open(&c->io.tcp, sv[0]) == 0);
    c->io.tcp.data = &c->io;
    c->io.iol = &w->iol;
    c->io.owner = c;
    c->io.low_water = 16384;
    snprintf(c->peer_addr, sizeof(c->peer_addr), "10.0.0.9:4444");
    if (fh.listener.kind == RETE_L_MESH)
        snprintf(c->peer_id, sizeof(c->peer_id), "spiffe://cluster.local/ns/demo/sa/client");
    return c;
}

/* Write what the codecs made and run what they queued, a bounded number of
 * rounds. */
static void fh_pump(void)
{
    for (int i = 0; i < 8; i++) {
        rete_h2_flush_all(&fh.w);
        rete_h1_flush_all(&fh.w);
        rete_ex_reap(&fh.w);
        uv_run(&fh.w.loop, UV_RUN_NOWAIT);
        fh_drain_peer();
    }
}

/* Close the connection (the codec's on_close frees its state, fails what
 * is still open) and run until the loop has no handle left: every stream
 * ended, every exchange recycled, the connection freed. */
static void fh_close(rete_conn *c)
{
    fh_pump();
    if (fh.w.active_conns) /* the codec may have closed it already (HTTP/1.0, an error) */
        rete_io_close(&c->io);
    close(fh.peer_fd);
    for (int i = 0; i < 16 && uv_loop_alive(&fh.w.loop); i++) {
        rete_h2_flush_all(&fh.w);
        rete_h1_flush_all(&fh.w);
        rete_ex_reap(&fh.w);
        uv_run(&fh.w.loop, UV_RUN_NOWAIT);
    }
    rete_ex_reap(&fh.w);
    CHECK(!uv_loop_alive(&fh.w.loop));
    CHECK(fh.w.active_exchanges == 0);
    CHECK(fh.w.active_conns == 0);
    CHECK(fh.w.gen->users == 1);
}

/* Whether a field name is what rete's exchange promises to everything
 * above the codecs: a non-empty lowercase token, not a pseudo-header. */
static bool fh_name_ok(rete_view n)
{
    if (!n.len)
        return false;
    for (size_t i = 0; i < n.len; i++) {
        unsigned char ch = (unsigned char)n.p[i];
        if (ch >= 'A' && ch <= 'Z')
            return false;
        if (ch <= ' ' || ch == ':' || ch >= 0x7f)
            return false;
    }
    return true;
}

static bool fh_connection_specific(rete_view n)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (rete_view_ieq(n, rete_view_cstr(names[i])))
            return true;
    return false;
}

static void fh_nop(rete_exchange *ex) { (void)ex; }

#endif
