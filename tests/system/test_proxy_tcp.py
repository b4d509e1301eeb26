"""Opaque TCP through two rete-proxy sidecars with mTLS between them:
Debian's redis-server as a TCP service behind proxy B, reached with
redis-cli (and a raw socket) through an explicit upstream listener on proxy
A. Between the proxies the connection is an HTTP/2 CONNECT tunnel."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from helpers import free_port, start_process
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload

# Debian redis-server and redis-tools, in DEB_PACKAGES: absent, the tests fail.
REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"

T = 30  # generous on a loaded 2-core machine
SVC_PORT = 6379


@pytest.fixture
def tcp_mesh(tmp_path):
    m = Mesh(tmp_path)
    client_host, server_host = fresh_host(), fresh_host()
    app_port = free_port(server_host)
    redis = start_process([REDIS_SERVER, "--port", str(app_port), "--bind", server_host, "--save", "",
                           "--appendonly", "no", "--dir", str(tmp_path)],
                          r"Ready to accept connections", timeout=15)
    m.add(service("redis", m.ns, [(SVC_PORT, "TCP", app_port)]),
          workload("redis-0", m.ns, server_host, "redis", {"app": "redis"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}))
    up_port = free_port(client_host)
    server = m.start_proxy("redis-0", "redis", server_host, inbound=[(app_port, "TCP")])
    client = m.start_proxy("client-0", "client", client_host,
                           upstreams=[(f"{client_host}:{up_port}", "redis", SVC_PORT)])
    yield {"host": client_host, "port": up_port, "server_host": server_host, "app_port": app_port,
            "client": client, "server": server, "redis": redis}
    stop_and_check_proxies(m)


def cli(env, *args, stdin=None):
    r = subprocess.run([REDIS_CLI, "-h", env["host"], "-p", str(env["port"]), *args], input=stdin,
                       capture_output=True, timeout=T)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def recv_until(s, predicate):
    data = b""
    while not predicate(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_set_get(tcp_mesh):
    assert cli(tcp_mesh, "SET", "greeting", "hello mesh") == b"OK\n"
    assert cli(tcp_mesh, "GET", "greeting") == b"hello mesh\n"
    assert cli(tcp_mesh, "PING") == b"PONG\n"


def test_one_megabyte_value(tcp_mesh):
    value = os.urandom(512 * 1024).hex().encode()  # 1 MiB of printable bytes
    assert cli(tcp_mesh, "-x", "SET", "big", stdin=value) == b"OK\n"
    assert cli(tcp_mesh, "STRLEN", "big") == b"%d\n" % len(value)
    # read it back exactly, as RESP over a raw socket
    s = socket.create_connection((tcp_mesh["host"], tcp_mesh["port"]), timeout=T)
    s.sendall(b"GET big\r\n")
    want = b"$%d\r\n" % len(value) + value + b"\r\n"
    got = recv_until(s, lambda d: len(d) >= len(want))
    s.close()
    assert got == want


def test_hundred_pipelined_commands(tcp_mesh):
    resp = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\nk%d\r\n$%d\r\nv%d\r\n" % (len(b"k%d" % i), i, len(b"v%d" % i), i)
                    for i in range(100))
    out = cli(tcp_mesh, "--pipe", stdin=resp).decode()
    assert "errors: 0, replies: 100" in out, out
    assert cli(tcp_mesh, "GET", "k99") == b"v99\n"
    # -r repeats a command on one connection
    cli(tcp_mesh, "-r", "100", "INCR", "counter")
    assert cli(tcp_mesh, "GET", "counter") == b"100\n"
    # and 100 commands in one write from a raw socket
    s = socket.create_connection((tcp_mesh["host"], tcp_mesh["port"]), timeout=T)
    s.sendall(b"PING\r\n" * 100)
    got = recv_until(s, lambda d: d.count(b"+PONG\r\n") >= 100)
    s.close()
    assert got == b"+PONG\r\n" * 100


def test_half_close_still_gets_the_answer(tcp_mesh):
    """The client shuts its write half after the request: the FIN travels to
    redis, and the answer still travels back before the connection ends."""
    s = socket.create_connection((tcp_mesh["host"], tcp_mesh["port"]), timeout=T)
    s.sendall(b"PING\r\n")
    s.shutdown(socket.SHUT_WR)
    got = recv_until(s, lambda d: False)  # until the proxy closes
    s.close()
    assert got == b"+PONG\r\n"


def test_many_connections_then_proxies_keep_working(tcp_mesh):
    socks = [socket.create_connection((tcp_mesh["host"], tcp_mesh["port"]), timeout=T) for _ in range(30)]
    for i, s in enumerate(socks):
        s.sendall(b"INCR many\r\n")
    got = sorted(int(recv_until(s, lambda d: d.endswith(b"\r\n"))[1:-2]) for s in socks)
    for s in socks:
        s.close()
    assert got == list(range(1, 31))
    assert cli(tcp_mesh, "GET", "many") == b"30\n"


def test_outbound_non_http_without_original_destination_is_closed(tcp_mesh):
    """Bytes that are not HTTP, on 15001, with no iptables redirect: there is
    nowhere to send them, so the proxy answers 400 (they go to the strict
    HTTP/1.1 parser, the best guess for an app talking to its sidecar) and
    closes, rather than hangs; nothing is forwarded."""
    s = socket.create_connection((tcp_mesh["host"], 15001), timeout=5)
    s.sendall(b"\x00\x01\x02 not http at all\r\n")
    try:
        data = recv_until(s, lambda d: False)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        pytest.fail("proxy kept a non-HTTP connection without original destination open")
    finally:
        s.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 400 ")
    # and the listener still serves
    assert cli(tcp_mesh, "PING") == b"PONG\n"


def test_outbound_silent_client_without_original_destination_is_closed(tcp_mesh):
    """A client that sends nothing is taken for a server-first protocol after
    the detection timeout (5 s by default); with no original destination the
    proxy then closes it."""
    s = socket.create_connection((tcp_mesh["host"], 15001), timeout=T)
    t = time.monotonic()
    try:
        data = recv_until(s, lambda d: False)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        pytest.fail(f"silent connection still open after {time.monotonic() - t:.0f}s")
    finally:
        s.close()
    assert data == b""


def test_http_connect_from_the_app_to_a_tcp_service(tcp_mesh):
    """An app that speaks HTTP CONNECT to the outbound listener gets the
    proxy's 200 and then a raw tunnel to the service."""
    s = socket.create_connection((tcp_mesh["host"], 15001), timeout=T)
    s.sendall(b"CONNECT redis.test:6379 HTTP/1.1\r\nHost: redis.test:6379\r\n\r\n")
    head = recv_until(s, lambda d: b"\r\n\r\n" in d)
    assert head.startswith(b"HTTP/1.1 200"), head
    rest = head.split(b"\r\n\r\n", 1)[1]
    s.sendall(b"PING\r\n")
    got = rest + recv_until(s, lambda d: (rest + d).endswith(b"\r\n"))
    s.close()
    assert got == b"+PONG\r\n"
