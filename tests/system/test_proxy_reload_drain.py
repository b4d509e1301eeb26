"""Paths of the proxy's lifecycle that test_proxy_lifecycle.py does not
reach: a static-config proxy picking up new certificate files on SIGHUP (and
refusing a broken pair while it keeps serving the old one), and draining with
HTTP/2 streams in flight, both within drainTimeout and past it.

Waits are bounded polls on a log line, a metric or a process exit."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import h2.config
import h2.connection
import h2.events

import certs
from helpers import wait_for, read_log, stop_process
from mesh import echo_mesh, stop_and_check_proxies




def metrics(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def sample(text, name):
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def served_cert_fingerprint(env):
    """SHA-256 fingerprint of the certificate echo's sidecar presents on
    15008 (openssl s_client with the client's identity)."""
    m = env["mesh"]
    crt, key = m.cert("client")
    p = subprocess.run(["openssl", "s_client", "-connect", f"{env['echo_host']}:15008", "-CAfile", m.ca[0],
                        "-cert", crt, "-key", key, "-alpn", "h2", "-tls1_3"],
                       input=b"", capture_output=True, timeout=20)
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
    assert pem, p.stdout.decode(errors="replace")[-2000:]
    return fingerprint_pem(pem.group(0))


def fingerprint_pem(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem,
                         capture_output=True, check=True).stdout
    return out.decode().strip().split("=", 1)[1]


def fingerprint_file(path):
    with open(path, "rb") as f:
        return fingerprint_pem(f.read())


def mesh_get(env, path):
    r = subprocess.run(["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: echo",
                        f"http://{env['outbound']}{path}"], capture_output=True, text=True, timeout=20)
    return int(r.stdout or 0)


def server_cert_paths(env):
    spec = open(env["server"].config_path).read()
    crt = re.search(r'"certFile": "([^"]+)"', spec).group(1)
    key = re.search(r'"keyFile": "([^"]+)"', spec).group(1)
    return crt, key


def hup_and_wait(proc, admin, result):
    before = metrics(admin)
    n = sum(float(v) for v in re.findall(rf'^rete_proxy_config_reloads_total\{{result="{result}"\}} (\S+)$',
                                           before, re.M))
    proc.send_signal(signal.SIGHUP)

    def moved():
        t = metrics(admin)
        return sum(float(v) for v in re.findall(
            rf'^rete_proxy_config_reloads_total\{{result="{result}"\}} (\S+)$', t, re.M)) > n
    wait_for(moved, what=f"a reload counted as {result}")


# ---- certificates on SIGHUP ----------------------------------------------------


def test_sighup_picks_up_rewritten_certificate_files(tmp_path):
    """The operator (or cert-manager) rewrites certFile/keyFile in place and
    sends SIGHUP: the new certificate is the one served on 15008 and its
    notAfter is the one exported; the mesh keeps working. Fails if a reload
    keeps the certificate loaded at start."""
    env = echo_mesh(tmp_path)
    crt, key = server_cert_paths(env)
    old_fp = fingerprint_file(crt)
    assert served_cert_fingerprint(env) == old_fp
    old_expiry = sample(metrics(env["server_admin"]), "rete_proxy_cert_expiry_timestamp_seconds")

    newdir = tmp_path / "renewed"
    newdir.mkdir()
    ncrt, nkey = certs.make_workload_cert(str(newdir), env["mesh"].ca, "cluster.local", "test", "echo", days=3)
    shutil.copy(nkey, key)
    shutil.copy(ncrt, crt)
    new_fp = fingerprint_file(crt)
    assert new_fp != old_fp
    hup_and_wait(env["server"], env["server_admin"], "ok")

    assert served_cert_fingerprint(env) == new_fp
    assert sample(metrics(env["server_admin"]), "rete_proxy_cert_expiry_timestamp_seconds") > old_expiry
    assert mesh_get(env, "/after-renewal") == 200
    stop_and_check_proxies(env["mesh"])


def test_sighup_with_mismatched_key_keeps_serving_old_certificate(tmp_path):
    """A half-written renewal (new certificate, old key) is rejected whole:
    the reload is counted as rejected and the old certificate is still the
    one served. Fails if a reload installs a pair it has not checked."""
    env = echo_mesh(tmp_path)
    crt, key = server_cert_paths(env)
    old_fp = fingerprint_file(crt)
    saved = tmp_path / "saved.crt"
    shutil.copy(crt, saved)
    newdir = tmp_path / "renewed"
    newdir.mkdir()
    ncrt, _ = certs.make_workload_cert(str(newdir), env["mesh"].ca, "cluster.local", "test", "echo", days=3)
    shutil.copy(ncrt, crt)  # the key is not rewritten
    hup_and_wait(env["server"], env["server_admin"], "rejected")
    assert served_cert_fingerprint(env) == old_fp
    assert mesh_get(env, "/after-rejected-renewal") == 200
    os.replace(saved, crt)
    stop_and_check_proxies(env["mesh"])


# ---- drain with HTTP/2 streams in flight ---------------------------------------


class H2Streams:
    """`n` concurrent h2c GETs of `path` on one connection to `addr`, read in
    a thread; .results maps stream id to status (None if reset/cut)."""

    def __init__(self, addr, path, n, authority="echo"):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.ids = []
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", authority),
                                         (":path", path)], end_stream=True)
            self.ids.append(sid)
        self.sock.sendall(self.conn.data_to_send())
        self.results = {sid: None for sid in self.ids}
        self.ended = set()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        try:
            while len(self.ended) < len(self.ids):
                data = self.sock.recv(65536)
                if not data:
                    return
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        self.results[ev.stream_id] = int(dict(ev.headers)[b":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self.ended.add(ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        self.results[ev.stream_id] = None
                        self.ended.add(ev.stream_id)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
                self.sock.sendall(self.conn.data_to_send())
        except OSError:
            return
        finally:
            self.sock.close()

    def join(self, timeout=60):
        self.t.join(timeout)
        assert not self.t.is_alive(), "h2 streams still running"
        return self.results


def restart_client(env, drain):
    stop_process(env["client"])
    env["client"] = env["mesh"].start_proxy("client-0", "client", env["client_host"],
                                            extra_spec={"limits": {"drainTimeout": drain}})
    return env["client"]


def wait_requests_seen(env, n):
    wait_for(lambda: sample(metrics(env["admin"]), "rete_proxy_requests_total") >= n,
             what=f"{n} requests seen by the client sidecar")


def test_sigterm_drains_h2_streams_in_flight(tmp_path):
    """Four HTTP/2 streams on one h2c connection, each waiting 1.5 s at the
    app, when the client sidecar gets SIGTERM: all four complete with 200,
    then the proxy exits 0 with no sanitizer report. Fails if a drain resets
    HTTP/2 streams (a GOAWAY with last-stream-id 0, or closing the
    connection) instead of letting them finish."""
    env = echo_mesh(tmp_path)
    client = restart_client(env, "20s")
    base = sample(metrics(env["admin"]), "rete_proxy_requests_total")
    streams = H2Streams(env["outbound"], "/?delay=1500", 4)
    wait_requests_seen(env, base + 4)
    client.send_signal(signal.SIGTERM)
    results = streams.join()
    assert list(results.values()) == [200] * 4, results
    assert client.wait(timeout=30) == 0, read_log(client)[-3000:]
    log = read_log(client)
    assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
    del env["mesh"].proxies["client-0"]
    stop_and_check_proxies(env["mesh"])


def test_drain_timeout_expiring_cuts_streams_and_exits(tmp_path):
    """The same with drainTimeout 1s and streams that would take 30 s: the
    proxy does not wait for them; it exits 0 (well before the app would
    answer), the streams end without a 200, and nothing leaks. Fails if the
    drain ignores drainTimeout (the exit waits for the app) or if cutting
    streams mid-exchange leaks or crashes (a sanitizer report)."""
    env = echo_mesh(tmp_path)
    client = restart_client(env, "1s")
    base = sample(metrics(env["admin"]), "rete_proxy_requests_total")
    streams = H2Streams(env["outbound"], "/?delay=30000", 3)
    wait_requests_seen(env, base + 3)
    client.send_signal(signal.SIGTERM)
    # 20 s bound: the app answers only after 30 s, so an exit inside it is
    # the drain timeout at work, whatever the machine's speed
    assert client.wait(timeout=20) == 0, read_log(client)[-3000:]
    results = streams.join(timeout=20)
    assert 200 not in results.values(), results
    log = read_log(client)
    assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
    del env["mesh"].proxies["client-0"]
    stop_and_check_proxies(env["mesh"])


# ---- drain with a tunnel in flight ---------------------------------------------


def open_tunnel(env):
    """A CONNECT tunnel through the client sidecar to Service echo's TCP port
    (rete-echo behind it speaks HTTP/1.1 over the raw bytes)."""
    host, port = env["outbound"].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(b"CONNECT echo.test:80 HTTP/1.1\r\nHost: echo.test:80\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def tunnel_get(s, path):
    """One keep-alive GET through the tunnel; returns the response bytes."""
    s.sendall(b"GET %s HTTP/1.1\r\nHost: echo\r\n\r\n" % path.encode())
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            if len(body) >= n:
                return data
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk


def test_drain_keeps_a_tunnel_until_it_closes_then_exits(tmp_path):
    """A tunnel open when SIGTERM arrives keeps carrying bytes while the
    proxy drains, and closing it ends the drain: the proxy exits 0 long
    before its 60 s drainTimeout. Fails if a drain cuts tunnels at once, or
    if a closed tunnel (or the idle mesh connection it used) holds the drain
    up to the timeout."""
    env = echo_mesh(tmp_path, echo_protocol="TCP")
    client = restart_client(env, "60s")
    s = open_tunnel(env)
    assert b'"path":"/before"' in tunnel_get(s, "/before")
    client.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in read_log(client), what="the drain to start")
    assert b'"path":"/during"' in tunnel_get(s, "/during")
    s.close()
    # bound well under drainTimeout: an exit in it means the closed tunnel ended the drain
    assert client.wait(timeout=30) == 0, read_log(client)[-3000:]
    log = read_log(client)
    assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
    del env["mesh"].proxies["client-0"]
    stop_and_check_proxies(env["mesh"])


def test_drain_timeout_cuts_an_open_tunnel(tmp_path):
    """A tunnel left open past drainTimeout (1s) is cut: the proxy exits 0
    and the app's side of the tunnel sees the close. Fails if tunnels hold
    the exit forever or cutting them leaks."""
    env = echo_mesh(tmp_path, echo_protocol="TCP")
    client = restart_client(env, "1s")
    s = open_tunnel(env)
    assert b'"path":"/before"' in tunnel_get(s, "/before")
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=20) == 0, read_log(client)[-3000:]
    s.settimeout(10)
    try:
        rest = s.recv(65536)
    except ConnectionResetError:
        rest = b""
    assert rest == b"", rest
    s.close()
    log = read_log(client)
    assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
    del env["mesh"].proxies["client-0"]
    stop_and_check_proxies(env["mesh"])


# ---- drain with gRPC calls in flight -------------------------------------------


def test_sigterm_drains_grpc_calls_in_flight(tmp_path):
    """Three unary gRPC calls that sleep 1.5 s at the app are in flight on the
    client sidecar's upstream listener when it gets SIGTERM: each returns OK
    (message and grpc-status trailer through the drain), then the proxy exits
    0. Fails if a drain resets streams or drops trailers."""
    import grpc

    from test_proxy_grpc import MSG_OPTS, _grpc_mesh, _stubs

    gen = _grpc_mesh(tmp_path, limits={"drainTimeout": "20s"})
    env = next(gen)
    try:
        m = env["mesh"]
        client = m.proxies["client-0"]
        admin = f"{env['client_host']}:15000"
        ch = grpc.insecure_channel(env["upstream"], options=MSG_OPTS)
        grpc.channel_ready_future(ch).result(timeout=20)
        unary = _stubs(ch)[0]
        base = sample(metrics(admin), "rete_proxy_requests_total")
        calls = [unary.future(b"sleep:1.5", timeout=30) for _ in range(3)]
        wait_for(lambda: sample(metrics(admin), "rete_proxy_requests_total") >= base + 3,
                 what="3 calls seen by the client sidecar")
        client.send_signal(signal.SIGTERM)
        assert [c.result(timeout=30) for c in calls] == [b"woke"] * 3
        assert all(c.code() == grpc.StatusCode.OK for c in calls)
        ch.close()
        assert client.wait(timeout=30) == 0, read_log(client)[-3000:]
        log = read_log(client)
        assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
        del m.proxies["client-0"]
    finally:
        next(gen, None)  # the greeter's sidecar stopped and checked, the app stopped
