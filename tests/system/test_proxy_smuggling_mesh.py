"""Smuggling through the whole mesh, beyond the outbound listener that
test_proxy_smuggling.py covers:

- the inbound listener (15006, plaintext under PERMISSIVE): every malformed
  request of smuggling_cases.py is refused there too, never forwarded;
- HTTP/2 to HTTP/1.1 downgrade (H2.CL, H2.TE): an h2c request to the client
  sidecar whose content-length disagrees with its DATA, or that carries a
  transfer-encoding header, must not reach the HTTP/1.1 app as anything but
  a whole, well-framed request (the body bytes never become a request);
- malformed responses from the app (garbage, conflicting Content-Length,
  bad chunking, Content-Length with Transfer-Encoding): the caller gets a
  502 (or, once the head has gone out, a cut-off response), never the bytes
  the app smuggled after its body.

The apps log what they receive; "never reached" is checked on their logs
after a request that must be seen (a sentinel), not after a sleep."""
import hashlib
import re
import socket
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from helpers import wait_for, free_port, start_echo
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload
from smuggling_cases import SMUGGLING_CASES
from test_proxy_smuggling import raw_exchange

SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Smuggled: yes\r\n\r\nsmuggled!"


class RawApp:
    """An HTTP/1.1 'app' on host:port that reads one request per connection,
    logs its request line, and answers with RESPONSES[path] verbatim (a
    well-formed 200 for other paths), then closes."""

    RESPONSES = {
        "/bad/garbage": b"this is not HTTP at all\r\n\r\n",
        "/bad/cl-conflict": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 79\r\n\r\nhello" + SMUGGLED,
        "/bad/cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 79\r\n\r\nhello" + SMUGGLED,
        "/bad/cl-and-te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\n" + SMUGGLED),
        "/bad/chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "/bad/status-line": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        "/bad/obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    }

    def __init__(self, host):
        self.host = host
        self.port = free_port(host)
        self.lines = []
        self.sock = socket.create_server((host, self.port))
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        c.settimeout(5)
        with c:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                line = data.split(b"\r\n", 1)[0].decode(errors="replace")
                self.lines.append(line)
                path = line.split(" ")[1] if line.count(" ") >= 2 else ""
                resp = self.RESPONSES.get(path, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                c.sendall(resp)
            except OSError:
                return

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


def metric(admin, name):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return int(m.group(1))




@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """client sidecar -> mesh -> echo's sidecar -> rete-echo (HTTP), plus a
    RawApp behind its own sidecar (Service raw); PERMISSIVE, so the echo
    sidecar's inbound listener 15006 takes plaintext."""
    m = Mesh(tmp_path_factory.mktemp("smuggling-mesh"))
    client_host, echo_host, raw_host = fresh_host(), fresh_host(), fresh_host()
    echo_proc, echo_addr = start_echo(name="echo", host=echo_host, persistent=True)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    raw = RawApp(raw_host)
    m.add(service("echo", m.ns, [(80, "HTTP", echo_port)]),
          service("raw", m.ns, [(80, "HTTP", raw.port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("raw-0", m.ns, raw_host, "raw", {"app": "raw"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}),
          {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": "default", "namespace": m.ns}, "spec": {"mtls": {"mode": "PERMISSIVE"}}})
    m.start_proxy("echo-0", "echo", echo_host, inbound=[(echo_port, "HTTP")], persistent=True)
    m.start_proxy("raw-0", "raw", raw_host, inbound=[(raw.port, "HTTP")], persistent=True)
    m.start_proxy("client-0", "client", client_host, persistent=True)
    yield {"mesh": m, "client_host": client_host, "echo_host": echo_host, "echo": echo_proc, "raw": raw,
           "inbound": f"{echo_host}:15006", "server_admin": f"{echo_host}:15000"}
    raw.close()
    stop_and_check_proxies(m)


def echo_log(env):
    with open(env["echo"].log_path, "rb") as f:
        return f.read()


def sentinel(env, addr, tag):
    """A well-formed request after the probes: once the app has logged it,
    anything the probes would have forwarded has been logged too (one
    connection per probe, the app logs in order of arrival)."""
    path = f"/sentinel-{tag}-{time.monotonic_ns()}"
    out, _ = raw_exchange(addr, b"GET %s HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n" % path.encode())
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    wait_for(lambda: path.encode() in echo_log(env), what="the sentinel at the app")


# ---- the inbound listener (15006) ----------------------------------------------


@pytest.mark.parametrize("name,raw,status", SMUGGLING_CASES, ids=[c[0] for c in SMUGGLING_CASES])
def test_inbound_smuggling_case_refused_never_forwarded(env, name, raw, status):
    before_log = echo_log(env)
    before_err = metric(env["server_admin"], "rete_proxy_http_parse_errors_total")
    out, closed = raw_exchange(env["inbound"], raw)
    assert closed, out[:300]
    if out:
        assert out.startswith(b"HTTP/1.1 %d " % status) and out.count(b"HTTP/1.1 ") == 1, out[:600]
        assert metric(env["server_admin"], "rete_proxy_http_parse_errors_total") > before_err
    # else: bytes that do not sniff as HTTP (a leading CRLF, a bad method
    # token) are opaque TCP on 15006, and a plaintext tunnel to an HTTP port
    # is refused (dispatch.c) -- closed, and never forwarded either way.
    sentinel(env, env["inbound"], name)
    seen = echo_log(env)[len(before_log):]
    assert len(seen.splitlines()) == 1, seen  # the sentinel alone


# ---- HTTP/2 to HTTP/1.1 downgrade ----------------------------------------------


def h2_post(addr, headers, chunks, timeout=10):
    """One h2c request (prior knowledge) with `headers` and DATA `chunks`
    (END_STREAM on the last). Returns (status or None, body, reset)."""
    host, port = addr.rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                                                normalize_outbound_headers=False))
    status, body, reset = None, b"", False
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not chunks)
        for i, c in enumerate(chunks):
            conn.send_data(sid, c, end_stream=i == len(chunks) - 1)
        s.sendall(conn.data_to_send())
        deadline = time.monotonic() + timeout
        done = False
        while not done and time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not data:
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                break
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    reset, done = True, True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    reset, done = True, True
            s.sendall(conn.data_to_send())
    return status, body, reset


SMUGGLE_REQ = b"GET /h2-smuggled HTTP/1.1\r\nHost: echo\r\n\r\n"


def base_headers(path, *extra):
    return [(":method", "POST"), (":scheme", "http"), (":authority", "echo"), (":path", path), *extra]


@pytest.mark.parametrize("name,headers,chunks", [
    # H2.CL: content-length shorter than the DATA; the rest would be a request
    ("cl_shorter", [("content-length", "5")], [b"hello" + SMUGGLE_REQ]),
    ("cl_zero", [("content-length", "0")], [SMUGGLE_REQ]),
    # content-length longer than the DATA: the stream ends short
    ("cl_longer", [("content-length", "200")], [b"hello"]),
    # H2.TE: a transfer-encoding header (connection-specific, forbidden in HTTP/2)
    ("te_chunked", [("transfer-encoding", "chunked")], [b"0\r\n\r\n" + SMUGGLE_REQ]),
    ("te_chunked_with_cl", [("content-length", str(5 + len(SMUGGLE_REQ))), ("transfer-encoding", "chunked")],
     [b"0\r\n\r\n" + SMUGGLE_REQ]),
    # other connection-specific fields
    ("connection_keep_alive", [("connection", "keep-alive")], [b"hello"]),
    ("header_crlf_injection", [("x-a", "a\r\nContent-Length: 0\r\n\r\nGET /h2-smuggled HTTP/1.1")], [b"hello"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_h2_downgrade_smuggling_never_reaches_app(env, name, headers, chunks):
    """An h2c request from the app to its sidecar, carried to echo's sidecar
    and downgraded to HTTP/1.1 for rete-echo: refused (400 or a stream
    reset), and nothing of its body ever parsed by the app as a request."""
    before = echo_log(env)
    status, body, reset = h2_post(f"{env['client_host']}:15001", base_headers(f"/h2-{name}", *headers), chunks)
    assert status in (None, 400) or reset, (status, body[:300])
    assert b"smuggled" not in body
    sentinel(env, f"{env['client_host']}:15001", name)
    seen = echo_log(env)[len(before):]
    assert b"/h2-smuggled" not in seen, seen
    if not name.startswith("cl_"):
        # a malformed header section is refused before anything is sent on;
        # a content-length broken only by the DATA may have had its head
        # streamed to the app already (then the app sees a cut-off request)
        assert b"/h2-%s" % name.encode() not in seen, seen


def test_h2_downgrade_well_formed_post_is_forwarded(env):
    """Control: a well-formed h2c POST with a matching content-length reaches
    the app, whole."""
    status, body, reset = h2_post(f"{env['client_host']}:15001",
                                  base_headers("/h2-good", ("content-length", "10")), [b"hello", b"world"])
    assert status == 200 and not reset, (status, body)
    assert b'"path":"/h2-good"' in body, body
    assert hashlib.sha256(b"helloworld").hexdigest().encode() in body, body


# ---- malformed responses from the app ------------------------------------------


def call_raw(env, path):
    out, closed = raw_exchange(f"{env['client_host']}:15001",
                               b"GET %s HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n" % path.encode())
    return out, closed


@pytest.mark.parametrize("path", [p for p in RawApp.RESPONSES])
def test_malformed_upstream_response_is_502_nothing_smuggled(env, path):
    out, closed = call_raw(env, path)
    assert closed
    assert b"smuggled" not in out.lower(), out[:600]
    head = out.split(b"\r\n", 1)[0]
    if head.startswith(b"HTTP/1.1 200 "):
        # Only acceptable if the head had already gone out when the body
        # turned bad: then the response must be cut short, never complete.
        assert path == "/bad/chunk-size", out[:600]
        assert not out.endswith(b"0\r\n\r\n"), out[:600]
    else:
        assert head.startswith(b"HTTP/1.1 502 "), out[:600]
    assert path in env["raw"].lines[-1] or any(path in l for l in env["raw"].lines)


def test_well_formed_upstream_response_passes(env):
    """Control: the raw app's ordinary answer arrives whole."""
    out, closed = call_raw(env, "/fine")
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"ok"), out[:600]
