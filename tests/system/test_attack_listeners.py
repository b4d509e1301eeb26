"""Attack suite, slow and greedy clients on every listener (issue 13):
slowloris (a request head trickled a byte at a time), slow read (a client
that never reads a large response), half-open TLS (a partial ClientHello,
or a TCP connect and silence), connection floods past the cap.

Listeners: the sidecar's outbound, inbound (plaintext, PERMISSIVE), mesh
(15008, mTLS) and admin listeners, and reted's operator API and proxy API
(TLS). Timeouts are short in these configurations so the conditions come
quickly; nothing asserts how quickly. Each attack runs under
attack.under_attack (canary served, RSS bounded) and checks its counter."""
import socket
import ssl
import time

import pytest

from attack import (END_HEADERS, HEADERS, PREFACE, frame, hpack_request, http_get, probe_http, scrape, settings,
                    sidecar_pair, small_asan_quarantine, under_attack, value)
from controlplane import Reted
from helpers import fresh_host, wait_for
from mesh import stop_and_check_proxies

CAP = 40
LIMITS = {"drainTimeout": "2s", "maxConnections": CAP, "requestHeaderTimeout": "1s",
          "requestBodyTimeout": "1s", "responseWriteTimeout": "1s", "detectTimeout": "500ms",
          "idleTimeout": "2s"}
MEM_MIB = 64
SLOW = 20  # attacking connections per test
LISTENERS = ["outbound", "inbound", "mesh", "admin", "reted-api", "reted-xds"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attack-listeners")
    t = sidecar_pair(tmp, LIMITS)
    m, client, server, client_host, echo_host = t["mesh"], t["client"], t["server"], t["client_host"], t["echo_host"]
    (tmp / "reted").mkdir()
    with small_asan_quarantine():
        reted = Reted(tmp / "reted", "--header-timeout", "1s", "--body-timeout", "1s", "--idle-timeout", "2s",
                      "--api-max-connections", str(CAP), persistent=True).start()
    reted_tls = ssl.create_default_context(cafile=reted.bundle)
    reted_tls.check_hostname = False
    outbound = f"{client_host}:15001"
    e = {"mesh": m, "client": client, "server": server, "reted": reted, "outbound": outbound,
         "addr": {"outbound": outbound, "inbound": f"{echo_host}:15006", "mesh": f"{echo_host}:15008",
                  "admin": f"{client_host}:15000", "reted-api": reted.api, "reted-xds": reted.xds},
         "tls": {"mesh": t["mesh_tls"], "reted-xds": reted_tls},
         "pid": {"outbound": client.pid, "admin": client.pid, "inbound": server.pid, "mesh": server.pid,
                 "reted-api": reted.proc.pid, "reted-xds": reted.proc.pid}}
    yield e
    reted.stop()
    stop_and_check_proxies(m)


def canary(env, listener):
    """The canary for an attack on `listener`: through the sidecars for the
    sidecar's listeners, reted's /healthz for reted's."""
    if listener.startswith("reted"):
        return probe_http(env["reted"].api, "reted", "/healthz")
    return probe_http(env["outbound"], "echo")


def timeouts_counted(env, listener):
    """The counter an attack on `listener` that times out must move: the
    sidecar's downstream timeouts (detect, request_header; idle on the mesh
    listener, where a frame that never completes does not reset
    limits.idleTimeout) or reted's
    refusals (header_timeout)."""
    if listener.startswith("reted"):
        st, text = env["reted"].request("GET", "/metrics", auth=False)
        assert st == 200
        return value(text, "rete_reted_http_refused_total", listener=listener[6:], reason="header_timeout")
    admin = env["addr"]["admin"] if listener in ("outbound", "admin") else env["addr"]["inbound"].replace(
        ":15006", ":15000")
    text = scrape(admin)
    return sum(value(text, "rete_proxy_downstream_timeouts_total", timeout=t)
               for t in ("detect", "request_header", "idle"))


def open_conn(env, listener, tls=True):
    host, port = env["addr"][listener].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10, source_address=(fresh_host(), 0))
    ctx = env["tls"].get(listener)
    if ctx and tls:
        s = ctx.wrap_socket(s)
    return s


def closed(s):
    """True once the peer has closed `s` (EOF or reset); reads what it sent."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except (OSError, ssl.SSLError):
        return True
    finally:
        s.setblocking(True)


@pytest.mark.parametrize("listener", LISTENERS)
def test_slowloris_is_cut_by_the_header_timeout(env, listener):
    """SLOW connections trickle one byte of a request head every 0.2 s (a
    head that never ends). Each is closed by the listener's header timeout
    (the sidecar's limits.requestHeaderTimeout; on the mesh listener,
    HTTP/2 only, limits.idleTimeout, which a frame that never completes does
    not reset; reted's --header-timeout) long before its head could end,
    and counted; the canary is served throughout. On the inbound listener
    the first bytes arrive after limits.detectTimeout: before the fix they
    went on as raw TCP, which an HTTP port refuses with a silent, uncounted
    close; now the HTTP/1.1 parser takes them (408, counted)."""
    before = timeouts_counted(env, listener)
    head = b"GET / HTTP/1.1\r\nHost: echo\r\nX-Slow: " + b"a" * 4000
    if listener == "mesh":  # HTTP/2 only (ALPN h2): the preface, SETTINGS, a header block
        head = PREFACE + settings() + frame(HEADERS, END_HEADERS, 1, hpack_request() + b"\x40\x01x\x7f" * 1000)
    with under_attack(canary(env, listener), env["pid"][listener], MEM_MIB):
        conns = [open_conn(env, listener) for _ in range(SLOW)]
        live = {s: 0 for s in conns}
        deadline = time.monotonic() + 30
        while live and time.monotonic() < deadline:
            for s in list(live):
                try:
                    s.sendall(head[live[s]:live[s] + 1])
                    live[s] += 1
                except (OSError, ssl.SSLError):
                    live.pop(s)
                    continue
                if closed(s):
                    live.pop(s)
            time.sleep(0.2)
        for s in conns:
            s.close()
        assert not live, f"{len(live)} slowloris connections still open after 30 s"
    wait_for(lambda: timeouts_counted(env, listener) >= before + SLOW, timeout=15,
             what="every slowloris connection counted")


# The mesh listener speaks HTTP/2 only: its slow readers are the zero-window
# streams of test_attack_h2.py.
@pytest.mark.parametrize("listener", ["outbound", "inbound"])
def test_slow_read_is_cut_by_the_write_timeout(env, listener):
    """SLOW clients ask for 64 MiB each and never read (receive buffer 4
    KB). Each is closed once limits.responseWriteTimeout passes without a
    byte taken, counted as timeout="response_write", and the proxy holds a
    bounded amount for them (its per-connection buffers, not 64 MiB)."""
    admin = env["addr"]["admin"] if listener == "outbound" else env["addr"]["inbound"].replace(":15006", ":15000")
    before = value(scrape(admin), "rete_proxy_downstream_timeouts_total", timeout="response_write")
    with under_attack(canary(env, listener), env["pid"][listener], MEM_MIB):
        conns = []
        for _ in range(SLOW):
            s = open_conn(env, listener)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /?size=67108864 HTTP/1.1\r\nHost: echo\r\n\r\n")
            conns.append(s)
        wait_for(lambda: value(scrape(admin), "rete_proxy_downstream_timeouts_total", timeout="response_write")
                 >= before + SLOW, timeout=30, what="every slow reader timed out")
        for s in conns:
            s.close()


def partial_client_hello():
    """The first 60 bytes of a real TLS ClientHello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="x")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[0] == 0x16 and len(hello) > 60
    return hello[:60]


@pytest.mark.parametrize("listener", ["mesh", "reted-xds"])
def test_half_open_tls_is_cut_by_the_handshake_timeout(env, listener):
    """Half-open TLS: SLOW connections, half with 60 bytes of a ClientHello
    and then silence, half a bare TCP connect. Each is closed by the
    handshake timeout (the sidecar's detectTimeout on the mesh listener,
    reted's --header-timeout) and counted."""
    before = timeouts_counted(env, listener)
    hello = partial_client_hello()
    with under_attack(canary(env, listener), env["pid"][listener], MEM_MIB):
        conns = []
        for i in range(SLOW):
            s = open_conn(env, listener, tls=False)
            if i % 2:
                s.sendall(hello)
            conns.append(s)
        wait_for(lambda: all(closed(s) for s in conns), timeout=30, what="every half-open handshake closed")
        for s in conns:
            s.close()
    wait_for(lambda: timeouts_counted(env, listener) >= before + SLOW, timeout=15,
             what="every half-open handshake counted")


@pytest.mark.parametrize("listener", ["outbound", "reted-api"])
def test_connection_flood_past_the_cap_is_refused_and_counted(env, listener):
    """CAP + 20 connections, each holding a partial request head: the cap
    (the sidecar's limits.maxConnections, reted's --api-max-connections)
    holds, the ones past it are closed at once and counted, the other
    listener of the same process stays served (the admin listener's /ready,
    reted's proxy API), and once the heads time out the listener serves
    again."""
    if listener == "outbound":
        other = probe_http(env["addr"]["admin"], "admin", "/ready")

        def refused():
            return value(scrape(env["addr"]["admin"]), "rete_proxy_downstream_connections_refused_total",
                         listener="outbound", reason="max_connections")
    else:
        other = probe_http(env["reted"].xds, "reted", "/healthz", tls=env["tls"]["reted-xds"])

        def refused():
            st, text = env["reted"].request("GET", "/metrics", auth=False)
            return value(text, "rete_reted_http_refused_total", listener="api", reason="connection_limit")
    before = refused()
    with under_attack(other, env["pid"][listener], MEM_MIB):
        conns = []
        for _ in range(CAP + 20):
            try:
                s = open_conn(env, listener)
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                conns.append(s)
            except OSError:
                pass
        # Every connection past the cap is closed by the listener at once.
        wait_for(lambda: sum(closed(s) for s in conns) >= 20, timeout=15, what="the connections past the cap closed")
        for s in conns:
            s.close()
    wait_for(lambda: refused() >= before + 20, timeout=15, what="the connections past the cap counted")
    if listener == "outbound":
        wait_for(lambda: http_get(env["outbound"])[0] == 200, timeout=15, what="outbound serving again")
    else:
        wait_for(lambda: env["reted"].request("GET", "/healthz", auth=False)[0] == 200, timeout=15,
                 what="reted's API serving again")
