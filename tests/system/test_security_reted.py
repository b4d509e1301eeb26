"""reted's own limits (issue 8, items 6 and 10): work an unauthenticated
client can make reted hold, connection caps, timeouts, memory after bursts,
deep nesting, and where reted writes its context.json. Every test starts its
own reted; loopback only; every flood is bounded in count and time;
conditions are polled, never timed."""
import json
import os
import socket
import ssl
import threading
import time

import pytest

from controlplane import Reted, ca_connection, reted_metric, start_reted, wait_for
from helpers import rss_kb, build_path, fresh_host, read_log, start_process, stop_process
from mesh import service




def _recv_all(sock, timeout):
    """Everything `sock` receives until EOF, a reset or `timeout` seconds of
    silence."""
    sock.settimeout(timeout)
    out = b""
    while True:
        try:
            data = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return out
        if not data:
            return out
        out += data


def _refused(reted, reason, listener):
    return reted_metric(reted, "rete_reted_http_refused_total",
                        f'listener="{listener}",reason="{reason}"') or 0


def _healthz_api(reted, timeout=5):
    st, body = reted.request("GET", "/healthz", auth=False, timeout=timeout)
    return st == 200 and body == "ok\n"


def _tls_ctx(reted):
    ctx = ssl.create_default_context(cafile=reted.bundle)
    ctx.check_hostname = False
    return ctx


# ---- credentials at the head, per-route body bounds ----

def test_unauthenticated_apply_body_refused_at_headers(tmp_path):
    """A POST to the operator API without the admin token announcing 8 MB is
    answered 401 once its head is in, before the body is sent; the body is
    never buffered."""
    reted = start_reted(tmp_path)
    s = socket.create_connection((reted.host, reted.api_port), timeout=10)
    s.sendall(b"POST /api/v1/apply HTTP/1.1\r\nhost: reted\r\ncontent-type: application/yaml\r\n"
              b"content-length: 8388608\r\n\r\n" + b"#" * 65536)
    # The client has sent 64 KB of 8 MB: reted must answer now, not when
    # the rest arrives (which it never will).
    answer = _recv_all(s, 10)
    s.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert _refused(reted, "unauthorized", "api") >= 1
    # The right token still works, and the apply route's bound is a flag.
    st, _ = reted.request("GET", "/api/v1/check")
    assert st == 200


def test_authenticated_bodies_bounded_per_route(tmp_path):
    """An apply may be large; a token request may not: over its route's
    bound a request is refused 413 from its head."""
    reted = start_reted(tmp_path, "--max-request-body", "4096")
    s = socket.create_connection((reted.host, reted.api_port), timeout=10)
    s.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nhost: reted\r\nauthorization: Bearer "
              + reted.admin_token.encode() + b"\r\ncontent-length: 100000\r\n\r\n{")
    answer = _recv_all(s, 10)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"4096" in answer
    assert _refused(reted, "body_too_large", "api") >= 1
    # An apply of 100 KB is fine (its bound is --max-apply-body, 16 MiB).
    docs = "".join(f"# comment line {i:06d} padding padding padding padding\n" for i in range(2000))
    st, body = reted.apply(docs + "---\n" + json.dumps(service("a", "demo", [(80, "HTTP")])) + "\n")
    assert st == 200, (st, body)


def test_proxy_api_refuses_large_unauthenticated_bodies_at_headers(tmp_path):
    """On 15012 a certificate request is small (a CSR and a token): one
    announcing 900 KB is refused 413 from its head, and an unknown endpoint
    404 from its head, neither after reading the body."""
    reted = start_reted(tmp_path)
    for path, want in ((b"/ca/v1/certificates", b"413"), (b"/nowhere", b"404")):
        raw = socket.create_connection((reted.host, reted.xds_port), timeout=10)
        s = _tls_ctx(reted).wrap_socket(raw)
        s.sendall(b"POST " + path + b" HTTP/1.1\r\nhost: reted\r\ncontent-length: 921600\r\n\r\n"
                  + b"x" * 16384)
        answer = _recv_all(s, 10)
        s.close()
        assert answer.startswith(b"HTTP/1.1 " + want), (path, answer[:200])
    assert _refused(reted, "body_too_large", "xds") >= 1
    # A stream request without a client certificate: 401 from the head,
    # even with a body announced.
    raw = socket.create_connection((reted.host, reted.xds_port), timeout=10)
    s = _tls_ctx(reted).wrap_socket(raw)
    s.sendall(b"GET /xds/v1/stream HTTP/1.1\r\nhost: reted\r\ncontent-length: 500000\r\n\r\n")
    answer = _recv_all(s, 10)
    s.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert _refused(reted, "unauthorized", "xds") >= 1


# ---- timeouts ----

def test_slow_head_and_body_time_out(tmp_path):
    """A head that never ends and a body that never comes are answered 408
    and closed after --header-timeout / --body-timeout; a connection idle
    between requests is closed after --idle-timeout."""
    reted = start_reted(tmp_path, "--header-timeout", "1s", "--body-timeout", "1s",
                        "--idle-timeout", "1s")
    slow_head = socket.create_connection((reted.host, reted.api_port), timeout=10)
    slow_head.sendall(b"GET /healthz HTTP/1.1\r\nhost: reted\r\n")
    slow_body = socket.create_connection((reted.host, reted.api_port), timeout=10)
    slow_body.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nhost: reted\r\nauthorization: Bearer "
                      + reted.admin_token.encode() + b"\r\ncontent-length: 100\r\n\r\n{")
    idle = socket.create_connection((reted.host, reted.api_port), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nhost: reted\r\n\r\n")
    tls_silent = socket.create_connection((reted.host, reted.xds_port), timeout=10)
    # Bounded: each of these must end within 15 s (the timeouts are 1 s).
    a = _recv_all(slow_head, 15)
    b = _recv_all(slow_body, 15)
    c = _recv_all(idle, 15)
    d = _recv_all(tls_silent, 15)
    for s in (slow_head, slow_body, idle, tls_silent):
        s.close()
    assert a.startswith(b"HTTP/1.1 408"), a[:200]
    assert b.startswith(b"HTTP/1.1 408"), b[:200]
    assert c.startswith(b"HTTP/1.1 200") and c.count(b"HTTP/1.1") == 1, c[:300]
    assert d == b""
    assert _refused(reted, "header_timeout", "api") >= 1
    assert _refused(reted, "body_timeout", "api") >= 1
    assert _refused(reted, "header_timeout", "xds") >= 1
    assert reted_metric(reted, "rete_reted_http_idle_closed_total", 'listener="api"') >= 1


# ---- connection caps ----

def _open_idle(host, port, n, source=None, timeout=30):
    """Up to n plain TCP connections from `source`, bounded in time."""
    socks = []
    source = source or fresh_host()
    deadline = time.monotonic() + timeout
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        s = socket.socket()
        s.settimeout(5)
        s.bind((source, 0))
        try:
            s.connect((host, port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


def test_idle_flood_on_proxy_api_leaves_operator_api_up(tmp_path):
    """400 idle connections to 15012 against a reted whose file limit is
    256: the proxy API's cap is lowered to fit, the operator API keeps its
    share, and retectl's requests and /healthz still answer."""
    data = os.path.join(str(tmp_path), "reted")
    reted = Reted(data)
    reted.proc = start_process(
        ["prlimit", "--nofile=256:256", build_path("reted"), "--data-dir", data, "--api", reted.api,
         "--xds", reted.xds], r"reted .* ready", timeout=20, env={"RETED_NO_USER_CONTEXT": "1"})
    with open(os.path.join(data, "admin.token")) as f:
        reted.admin_token = f.read().strip()
    socks = _open_idle(reted.host, reted.xds_port, 400)
    try:
        assert len(socks) >= 300
        wait_for(lambda: (_refused(reted, "connection_limit", "xds") or 0) >= 1, 30, 0.2,
                 "connections over the cap refused")
        assert _healthz_api(reted)
        st, body = reted.request("GET", "/api/v1/check")
        assert st == 200, (st, body)
        st, body = reted.request("GET", "/api/v1/proxies")
        assert st == 200, (st, body)
        assert "lowered" in reted.log()
    finally:
        for s in socks:
            s.close()
    # Once the flood is gone the proxy API takes connections again.
    def xds_healthz():
        try:
            c = ca_connection(reted)
            c.request("GET", "/healthz")
            return c.getresponse().status == 200
        except OSError:
            return False
    wait_for(xds_healthz, 30, 0.5, "proxy API answering again")
    assert reted.proc.poll() is None


def test_per_source_connection_cap(tmp_path):
    """One source address cannot hold more than --xds-max-connections-per-source
    connections; another source still connects."""
    reted = start_reted(tmp_path, "--xds-max-connections-per-source", "20")
    flood = _open_idle(reted.host, reted.xds_port, 40, source=fresh_host())
    try:
        wait_for(lambda: _refused(reted, "source_limit", "xds") >= 20, 30, 0.2,
                 "20 connections over the per-source cap refused")
        c = ca_connection(reted)
        c.source_address = (fresh_host(), 0)
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
        c.close()
    finally:
        for s in flood:
            s.close()


# ---- memory ----

def test_memory_bounded_during_and_after_unauthenticated_burst(tmp_path):
    """100 TLS connections each sending 900 KB of a body to 15012 (the old
    bound was 1 MB): reted's resident memory may not grow by more than
    40 MB while they are open, nor stay more than 24 MB above where it was
    once they are closed."""
    data = os.path.join(str(tmp_path), "reted")
    reted = Reted(data)
    # ASan keeps freed memory in quarantine (256 MB by default): keep it small
    # so resident memory says what reted holds.
    asan = os.environ.get("ASAN_OPTIONS", "")
    reted.proc = start_process(
        [build_path("reted"), "--data-dir", data, "--api", reted.api, "--xds", reted.xds],
        r"reted .* ready", timeout=20,
        env={"RETED_NO_USER_CONTEXT": "1",
             "ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=8"})
    with open(os.path.join(data, "admin.token")) as f:
        reted.admin_token = f.read().strip()
    ctx = _tls_ctx(reted)
    # Warm up (TLS contexts, the metrics page).
    assert _refused(reted, "body_too_large", "xds") == 0
    before = rss_kb(reted.proc.pid)
    socks = []
    body = b"x" * (921600 - 1)
    try:
        for _ in range(100):
            raw = socket.create_connection((reted.host, reted.xds_port), timeout=10)
            s = ctx.wrap_socket(raw)
            s.settimeout(10)
            try:
                s.sendall(b"POST /ca/v1/certificates HTTP/1.1\r\nhost: reted\r\n"
                          b"content-length: 921600\r\n\r\n" + body)
            except OSError:
                pass  # refused before the body was all sent: what we want
            socks.append(s)
        during = rss_kb(reted.proc.pid)
    finally:
        for s in socks:
            s.close()
    assert during - before < 40 * 1024, (before, during)
    wait_for(lambda: reted_metric(reted, "rete_reted_http_connections", 'listener="xds"') == 0,
             30, 0.2, "every burst connection closed")
    after = rss_kb(reted.proc.pid)
    assert after - before < 24 * 1024, (before, after)


# ---- nesting ----

def test_deeply_nested_document_rejected_quickly(tmp_path):
    """A document 100,000 levels deep is refused with an error naming the
    depth limit, and reted answers /healthz while it is being handled (the
    check runs as the parser goes, before any tree is built)."""
    reted = start_reted(tmp_path)
    result = {}

    def upload():
        result["answer"] = reted.apply("[" * 100000 + "\n", source="deep.yaml")

    t = threading.Thread(target=upload)
    t.start()
    try:
        # During the upload and its handling, the loop is not blocked.
        ok = 0
        for _ in range(5):
            ok += _healthz_api(reted, timeout=5)
    finally:
        t.join(60)
    assert not t.is_alive()
    assert ok == 5
    st, body = result["answer"]
    assert st == 422, (st, body)
    assert "nested deeper than 64 levels" in json.dumps(body), body
    # JSON bodies too (jansson, on 15012): refused as fast.
    c = ca_connection(reted)
    c.request("POST", "/ca/v1/certificates", "[" * 60000, {"content-type": "application/json"})
    r = c.getresponse()
    assert r.status == 400, r.status
    c.close()
    assert _healthz_api(reted)


# ---- context.json ----

def _start_with_home(data, home, api_port=None):
    r = Reted(data, api_port=api_port)
    env = {"HOME": home}
    r.proc = start_process([build_path("reted"), "--data-dir", data, "--api", r.api, "--xds", r.xds],
                           r"reted .* ready", timeout=20, env=env)
    return r


def test_context_json_not_overwritten_by_another_reted(tmp_path):
    """The user's ~/.config/rete/context.json points at the first reted;
    another reted on another data dir does not take it over (it writes its
    own data dir's context.json); a restart of the first one on new ports
    updates it."""
    home = os.path.join(str(tmp_path), "home")
    os.makedirs(home)
    user_ctx = os.path.join(home, ".config", "rete", "context.json")
    a_dir, b_dir = os.path.join(str(tmp_path), "a"), os.path.join(str(tmp_path), "b")
    a = _start_with_home(a_dir, home)
    with open(user_ctx) as f:
        assert json.load(f)["api"] == a.api
    b = _start_with_home(b_dir, home)
    with open(user_ctx) as f:
        ctx = json.load(f)
    assert ctx["api"] == a.api, ctx
    assert ctx["tokenFile"] == os.path.join(os.path.realpath(a_dir), "admin.token")
    with open(os.path.join(b_dir, "context.json")) as f:
        assert json.load(f)["api"] == b.api
    assert "not replacing" in read_log(b.proc)
    stop_process(b.proc)
    stop_process(a.proc)
    a2 = _start_with_home(a_dir, home)
    with open(user_ctx) as f:
        assert json.load(f)["api"] == a2.api
    stop_process(a2.proc)


def test_reted_certificate_sans_as_documented(tmp_path):
    """docs/control-plane.md: reted's certificate carries its SPIFFE ID as
    its only SAN (proxies check that ID, not a host name or address)."""
    from controlplane import cert_sans
    reted = start_reted(tmp_path)
    sans = cert_sans(os.path.join(reted.data, "server.pem"))
    assert sans == ["URI:spiffe://cluster.local/ns/rete-system/sa/reted"], sans


def test_stream_line_from_proxy_bounded(tmp_path):
    """A proxy's lines (hello, ACK, NACK) are small: a 100 KB line closes
    its stream (the bound was 1 MB)."""
    from controlplane import StreamClient
    reted = start_reted(tmp_path)
    sc = StreamClient(reted, tmp_path, "big", "demo", "big")
    sc.ack(sc.message())
    sc.sock.sendall(b'{"type":"health","pad":"' + b"x" * 100000 + b'"}\n')
    sc.sock.settimeout(10)
    with pytest.raises((EOFError, ConnectionResetError, ssl.SSLError)):
        for _ in range(100):  # pings until reted closes
            sc.message()
    sc.close()
    assert "longer than 65536 bytes" in reted.log()
