"""HTTP through two rete-proxy sidecars with mTLS between them, driven by
peers nobody here wrote: curl (HTTP/1.1, HTTP/2 prior knowledge, as an HTTP
proxy) and nghttp. The backend is rete-echo, which reports the request it saw."""
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from helpers import free_port
from mesh import Mesh, echo_mesh, fresh_host, service, stop_and_check_proxies, workload


def curl(*args, timeout=20):
    r = subprocess.run(["curl", "-sS", "-m", str(timeout), *args], capture_output=True, timeout=timeout + 5)
    return r


def curl_json(*args):
    r = curl(*args)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout)


@pytest.fixture
def env(tmp_path):
    return echo_mesh(tmp_path)


def test_origin_form_by_host_reaches_echo_over_mtls(env):
    body = curl_json("-H", "Host: echo", f"http://{env['outbound']}/hello?x=1")
    assert body["service"] == "echo"
    assert body["path"] == "/hello" and body["query"] == "x=1"
    assert body["protocol"] == "HTTP/1.1"
    h = body["headers"]
    # the server-side proxy saw the client's SPIFFE identity and says so
    assert h["x-forwarded-client-cert"] == (
        "By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/client")
    assert len(h["x-request-id"]) == 36
    assert "x-rete-target-port" not in h


@pytest.mark.parametrize("host", ["echo", "echo:80", "echo.test", "echo.test:80", "echo.test.svc",
                                  "echo.test.svc.cluster.local", "ECHO.Test.svc.cluster.local:80"])
def test_every_service_name_form(env, host):
    assert curl_json("-H", f"Host: {host}", f"http://{env['outbound']}/")["service"] == "echo"


def test_unknown_host_is_404_with_reason_not_a_hang(env):
    r = curl("-i", "-H", "Host: nosuch", f"http://{env['outbound']}/", timeout=5)
    assert r.returncode == 0
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 404")
    assert "nosuch" in out


def test_http_proxy_absolute_form(env):
    body = curl_json("-x", f"http://{env['outbound']}", "http://echo.test/via-proxy?q=2")
    assert body["path"] == "/via-proxy" and body["query"] == "q=2"
    r = subprocess.run(["curl", "-sS", "-m", "10", "http://echo/env-proxy"], capture_output=True,
                       env={**os.environ, "http_proxy": f"http://{env['outbound']}"})
    assert json.loads(r.stdout)["path"] == "/env-proxy"


def test_http2_prior_knowledge_from_the_app(env):
    body = curl_json("--http2-prior-knowledge", "-H", "Host: echo", f"http://{env['outbound']}/h2")
    assert body["path"] == "/h2"


def test_nghttp_client(env):
    r = subprocess.run(["nghttp", "-v", "-H", ":authority: echo", f"http://{env['outbound']}/nghttp"],
                       capture_output=True, timeout=20)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert ":status: 200" in out
    assert '"path":"/nghttp"' in out


def test_status_passes_through(env):
    r = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: echo", f"http://{env['outbound']}/?status=503")
    assert r.stdout == b"503"


@pytest.mark.parametrize("proto", [[], ["--http2-prior-knowledge"]])
def test_large_streamed_response(env, proto):
    size = 10 * 1024 * 1024
    r = curl(*proto, "-o", "-", "-H", "Host: echo", f"http://{env['outbound']}/?size={size}", timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == size


@pytest.mark.parametrize("proto", [[], ["--http2-prior-knowledge"]])
def test_chunked_upload_echoed(env, tmp_path, proto):
    data = os.urandom(1024 * 1024)
    f = tmp_path / "up.bin"
    f.write_bytes(data)
    r = curl(*proto, "-H", "Host: echo", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{f}",
             f"http://{env['outbound']}/?echo=1", timeout=60)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_expect_100_continue(env, tmp_path):
    f = tmp_path / "up.bin"
    f.write_bytes(b"x" * 200000)
    r = curl("-v", "-H", "Host: echo", "-H", "Expect: 100-continue", "--data-binary", f"@{f}",
             f"http://{env['outbound']}/upload")
    assert r.returncode == 0
    assert b"HTTP/1.1 100 Continue" in r.stderr
    assert json.loads(r.stdout)["body_bytes"] == 200000


def test_head_has_no_body(env):
    """A HEAD answer announces the GET's length and carries no body: on a
    kept-alive connection the very next bytes after its head are the next
    response's status line (curl -I would never read a body that was sent)."""
    host, port = env["outbound"].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(b"HEAD /?size=1000 HTTP/1.1\r\nHost: echo\r\n\r\n"
                  b"GET /?size=7 HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), data[:500]
    assert b"content-length: 1000" in head.lower(), head
    assert rest.startswith(b"HTTP/1.1 200"), f"bytes after the HEAD answer's head: {rest[:200]!r}"
    second_head, _, second_body = rest.partition(b"\r\n\r\n")
    assert b"content-length: 7" in second_head.lower() and len(second_body) == 7, rest[:500]


def test_keep_alive_reuses_the_connection(env):
    r = curl("-v", "-H", "Host: echo", f"http://{env['outbound']}/a", f"http://{env['outbound']}/b")
    assert r.returncode == 0
    assert b"Re-using existing connection" in r.stderr or b"Reusing existing connection" in r.stderr


def test_slow_response_with_delay(env):
    t = time.monotonic()
    body = curl_json("-H", "Host: echo", f"http://{env['outbound']}/?delay=300")
    assert time.monotonic() - t >= 0.3
    assert body["service"] == "echo"


def test_many_concurrent_requests_share_the_mesh_connection(env):
    procs = [subprocess.Popen(["curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}",
                               "-H", "Host: echo", f"http://{env['outbound']}/?delay=100&i={i}"],
                              stdout=subprocess.PIPE) for i in range(40)]
    codes = [p.communicate()[0] for p in procs]
    assert codes == [b"200"] * 40
    m = curl(f"http://{env['server_admin']}/metrics").stdout.decode()
    # all those requests arrived on very few mesh connections (one pooled per worker)
    mesh_conns = [l for l in m.splitlines() if l.startswith('rete_proxy_downstream_connections_total{listener="mesh"}')]
    assert mesh_conns and int(float(mesh_conns[0].split()[-1])) <= 2


def test_trailers_over_http2(env):
    r = subprocess.run(["nghttp", "-v", "-H", ":authority: echo", "-H", "te: trailers",
                        f"http://{env['outbound']}/?trailer=x-check:ok"], capture_output=True, timeout=20)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    # A trailer, not a header: it arrives in a HEADERS frame after the body's
    # DATA (ending the stream), and not among the response headers.
    first_data = out.find("recv DATA frame")
    assert first_data > 0, out
    assert "x-check: ok" not in out[:first_data], "the trailer was sent as a header:\n" + out
    after = out[first_data:]
    assert "x-check: ok" in after, out
    assert re.search(r"recv HEADERS frame <[^>]*>\s*;\s*END_STREAM", after[after.index("x-check: ok"):]), out


def test_pipelined_requests_answered_in_order(env):
    host, port = env["outbound"].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET /one HTTP/1.1\r\nHost: echo\r\n\r\nGET /two HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.index(b'"/one"') < data.index(b'"/two"')


def h2_request(addr, headers, timeout=10):
    """One HTTP/2 request with python3-h2 over a plain socket (a client that
    sends whatever it is told, unlike curl and nghttp which honour our
    SETTINGS_MAX_HEADER_LIST_SIZE and refuse locally). Returns the status."""
    import h2.config
    import h2.connection
    import h2.events
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, headers, end_stream=True)
    s.sendall(c.data_to_send())
    status = None
    while status is None:
        data = s.recv(65536)
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[":status"])
        s.sendall(c.data_to_send())
    s.close()
    return status


def test_http2_oversize_header_block_gets_431(env):
    base = [(":method", "GET"), (":scheme", "http"), (":authority", "echo"), (":path", "/")]
    big = [(f"x-big-{i}", "x" * 4000) for i in range(20)]
    assert h2_request(env["outbound"], base + big) == 431
    # the proxy keeps serving
    assert h2_request(env["outbound"], base) == 200


def test_circuit_breaker_limits_requests_in_flight(tmp_path):
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "metadata": {"name": "echo", "namespace": "test"},
          "spec": {"host": "echo", "trafficPolicy": {"connectionPool": {"http": {"http2MaxRequests": 2}}}}}
    import mesh as meshmod
    orig = meshmod.Mesh.add
    env = None
    try:
        # the DestinationRule travels with the shared resources of both proxies
        meshmod.Mesh.add = lambda self, *docs: orig(self, *docs, dr)
        env = echo_mesh(tmp_path)
    finally:
        meshmod.Mesh.add = orig
    procs = [subprocess.Popen(["curl", "-sS", "-m", "20", "-w", "\n%{http_code}", "-H", "Host: echo",
                               f"http://{env['outbound']}/?delay=1000&i={i}"], stdout=subprocess.PIPE)
             for i in range(8)]
    outs = [p.communicate()[0].decode() for p in procs]
    codes = [o.rsplit("\n", 1)[1] for o in outs]
    assert codes.count("200") >= 2
    refused = [o for o in outs if o.endswith("503")]
    assert refused, codes
    assert all("circuit breaker open" in o for o in refused)
    m = curl(f"http://{env['admin']}/metrics").stdout.decode()
    assert f'rete_proxy_circuit_breaker_rejections_total{{limit="http2MaxRequests"}} {len(refused)}' in m


def test_idle_keep_alive_connections_are_closed_after_idle_timeout(tmp_path):
    from mesh import Mesh, fresh_host
    m = Mesh(tmp_path)
    host = fresh_host()
    p = m.start_proxy("idle-0", "idle", host, extra_spec={"limits": {"idleTimeout": "1s"}})
    for preface in (b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):
        s = socket.create_connection((host, 15001), timeout=10)
        s.sendall(preface)
        t = time.monotonic()
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        assert time.monotonic() - t >= 0.9  # closed by the idle timer, not at once
    assert p.poll() is None


@pytest.fixture
def tls_env(tmp_path):
    """The client proxy also terminates TLS from its app (HTTP/2 and HTTP/1.1
    by ALPN) with a server certificate of its own."""
    import certs
    import mesh as meshmod
    server_cert, server_key = certs.make_workload_cert(str(tmp_path), certs.make_ca(str(tmp_path), "app-ca"),
                                                       "cluster.local", "test", "client-app", name="app-server")
    orig = meshmod.Mesh.write_config

    def write_config(self, name, sa, address, **kw):
        if name == "client-0":
            kw["extra_spec"] = {**kw.get("extra_spec", {}),
                                "tls": {"certFile": self.cert(sa)[0], "keyFile": self.cert(sa)[1],
                                        "caFile": self.ca[0], "serverCertFile": server_cert,
                                        "serverKeyFile": server_key}}
        return orig(self, name, sa, address, **kw)
    meshmod.Mesh.write_config = write_config
    try:
        return echo_mesh(tmp_path)
    finally:
        meshmod.Mesh.write_config = orig


@pytest.mark.parametrize("proto,expect", [("--http2", "HTTP/2"), ("--http1.1", "HTTP/1.1")])
def test_tls_from_the_app_with_alpn(tls_env, proto, expect):
    host, port = tls_env["outbound"].split(":")
    r = curl("-k", proto, "-sS", "-w", "\n%{http_version}", "--resolve", f"echo:{port}:{host}",
             f"https://echo:{port}/tls")
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.decode().rsplit("\n", 1)
    assert json.loads(body)["path"] == "/tls"
    assert version == ("2" if expect == "HTTP/2" else "1.1")


def test_http1_trailers_pass_through_both_proxies(env):
    host, port = env["outbound"].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"GET /?trailer=x-check:ok HTTP/1.1\r\nHost: echo\r\nTE: trailers\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.rstrip(b"\r\n").endswith(b"x-check: ok")


def test_http2_connection_window_is_not_leaked(env):
    """Regression: response bytes still queued when their stream closed were
    never handed back as connection-level window, so a busy mesh connection
    stalled after ~4 MB (its window) of such bytes: h2load hung halfway."""
    r = subprocess.run(["h2load", "-n", "12000", "-c", "1", "-m", "4", "-H", ":authority: echo",
                        f"http://{env['outbound']}/?size=600"], capture_output=True, timeout=120)
    out = r.stdout.decode()
    assert "12000 succeeded" in out, out[-600:]


def _head_then_body_app(sock, head_seen, results):
    """A one-request app: sends the response head, and its body only once the
    client has seen that head (or after 20 s, so a failing test ends)."""
    conn, _ = sock.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\n")
        results["released"] = head_seen.wait(20)
        conn.sendall(b"hello")


def test_response_head_is_not_held_back_for_its_body(tmp_path):
    """The HTTP/1.1 downstream keeps a response head until the end of the
    loop's I/O round so that a body arriving with it leaves in the same write;
    a head whose body is not there yet must still go out on its own."""
    m = Mesh(tmp_path)
    client_host, app_host = fresh_host(), fresh_host()
    port = free_port(app_host)
    app = socket.socket()
    app.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    app.bind((app_host, port))
    app.listen(4)
    head_seen, results = threading.Event(), {}
    t = threading.Thread(target=_head_then_body_app, args=(app, head_seen, results), daemon=True)
    t.start()
    try:
        m.add(service("slow", m.ns, [(80, "HTTP", port)]),
              workload("slow-0", m.ns, app_host, "slow", {"app": "slow"}),
              workload("client-0", m.ns, client_host, "client", {"app": "client"}))
        m.start_proxy("slow-0", "slow", app_host, inbound=[(port, "HTTP")])
        m.start_proxy("client-0", "client", client_host)
        with socket.create_connection((client_host, 15001), timeout=30) as c:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: slow\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                assert chunk, data
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert body == b"", "the body came before the app sent it"
            head_seen.set()
            while len(body) < 5:
                chunk = c.recv(65536)
                assert chunk, body
                body += chunk
            assert body == b"hello"
        t.join(10)
        assert results.get("released") is True
        stop_and_check_proxies(m)
    finally:
        app.close()
