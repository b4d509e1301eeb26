"""Client-side peer verification: the *called* sidecar must prove it is the
workload the caller meant to reach.

The client sidecar (sa client) calls Service echo, whose one Workload says
serviceAccount echo. What answers on that Workload's mesh port (15008) is an
impostor written here: a TLS server that presents a certificate of our
choosing, and, if the caller goes on after the handshake, serves HTTP/2 and
answers 200 "impostor" while recording every request it got.

Each wrong identity -- (a) another service account, (b) another trust
domain, (c) another CA, (d) an expired certificate -- must end in a 502/503
to the app, counted in the client sidecar's metrics, and the impostor must
have received no request. The control case (the right certificate) proves
the harness can see a request arrive: with it the same call gets 200 from the
impostor. A proxy that stopped passing the expected SPIFFE ID to the mesh
client (h2_client_get with NULL) fails (a) and (b); one that stopped
verifying the chain fails (c) and (d)."""
import re
import socket
import ssl
import subprocess
import threading
import urllib.request

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

import certs
from helpers import free_port
from mesh import TRUST_DOMAIN, Mesh, fresh_host, service, stop_and_check_proxies, workload

PROBE = "/peer-probe-must-not-arrive"


class Impostor:
    """A TLS + HTTP/2 server on host:15008 presenting `cert`; records the
    paths of the requests it receives and answers each with 200."""

    def __init__(self, host, cert):
        self.requests = []
        self.handshakes = 0
        self.errors = []  # why connections ended (for failure messages)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_server((host, 15008))
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._conn, args=(raw,), daemon=True).start()

    def _conn(self, raw):
        raw.settimeout(5)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as tls:
                self.handshakes += 1
                conn = h2.connection.H2Connection(h2.config.H2Configuration(
                    client_side=False, validate_inbound_headers=False))  # this h2 wants :path on CONNECT
                conn.initiate_connection()
                tls.sendall(conn.data_to_send())
                while not self.stopping:
                    data = tls.recv(65536)
                    if not data:
                        return
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.RequestReceived):
                            h = dict(ev.headers)  # CONNECT (a TCP tunnel) has no :path
                            self.requests.append((h.get(b":path") or h.get(b":authority", b"")).decode())
                            connect = h.get(b":method") == b"CONNECT"  # a 2xx to CONNECT has no length
                            conn.send_headers(ev.stream_id, [(":status", "200")] +
                                              ([] if connect else [("content-length", "8")]))
                            conn.send_data(ev.stream_id, b"impostor", end_stream=True)
                    tls.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError) as e:
            self.errors.append(repr(e))

    def close(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


def client_metrics(host):
    with urllib.request.urlopen(f"http://{host}:15000/metrics", timeout=5) as r:
        return r.read().decode()


def responses(text, code):
    """The client sidecar's requests to echo answered `code` because the
    upstream connection failed (response_flags UF), summed over labels."""
    return sum(float(m.group(1)) for m in re.finditer(
        rf'^istio_requests_total\{{[^}}]*destination_service_name="echo"[^}}]*response_flags="UF"'
        rf'[^}}]*response_code="{code}"[^}}]*\}} (\S+)$', text, re.M))


def tcp_failures(text):
    """TCP connections to echo the client sidecar closed because the
    upstream connection failed (response_flags UF)."""
    return sum(float(m.group(1)) for m in re.finditer(
        r'^istio_tcp_connections_closed_total\{[^}]*destination_service_name="echo"[^}]*response_flags="UF"'
        r'[^}]*\} (\S+)$', text, re.M))


def call(client_host, path=PROBE):
    r = subprocess.run(["curl", "-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}", "-H", "Host: echo",
                        f"http://{client_host}:15001{path}"], capture_output=True, text=True, timeout=20)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def wrong_cert(m, case):
    """The certificate the impostor presents in each case."""
    if case == "other-service-account":
        return m.cert("other")
    if case == "other-trust-domain":
        return certs.make_workload_cert(m.dir, m.ca, "evil.local", m.ns, "echo", name="evil.echo")
    if case == "other-ca":
        other_ca = certs.make_ca(m.dir, "other-root")
        return certs.make_workload_cert(m.dir, other_ca, TRUST_DOMAIN, m.ns, "echo", name="otherca.echo")
    if case == "expired":
        return m.cert("echo", expired=True)
    assert case == "right"
    return m.cert("echo")


def tcp_call(addr):
    """Bytes read back from a TCP connection to the client sidecar's upstream
    listener for Service echo's TCP port, after sending a line, until the
    proxy closes it."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"hello\n")
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return out
            if not chunk:
                return out
            out += chunk


def run_case(tmp_path, case, protocol="HTTP"):
    m = Mesh(tmp_path)
    client_host, echo_host = fresh_host(), fresh_host()
    m.add(service("echo", m.ns, [(80, protocol, 8080)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}))
    impostor = Impostor(echo_host, wrong_cert(m, case))
    upstream = f"{client_host}:{free_port(client_host)}"
    try:
        m.start_proxy("client-0", "client", client_host, "--log-level", "info",
                      upstreams=[(upstream, "echo", 80)] if protocol == "TCP" else ())
        before = client_metrics(client_host)
        if protocol == "TCP":
            code, body = None, tcp_call(upstream).decode(errors="replace")
        else:
            code, body = call(client_host)
        after = client_metrics(client_host)
        stop_and_check_proxies(m)
    finally:
        impostor.close()
    return code, body, impostor, before, after


@pytest.mark.parametrize("case", ["other-service-account", "other-trust-domain", "other-ca", "expired"])
def test_client_sidecar_refuses_wrong_server_identity(tmp_path, case):
    code, body, impostor, before, after = run_case(tmp_path, case)
    assert impostor.requests == [], f"the impostor ({case}) was sent {impostor.requests}"
    assert code in (502, 503), (code, body)
    assert "impostor" not in body
    assert responses(after, code) == responses(before, code) + 1, after


def test_client_sidecar_reaches_the_right_identity(tmp_path):
    """Control: with the expected certificate the same impostor does get the
    request (so an empty request list above means refusal, not a blind harness)."""
    code, body, impostor, _, _ = run_case(tmp_path, "right")
    assert (code, body) == (200, "impostor")
    assert impostor.requests == [PROBE]



@pytest.mark.parametrize("case", ["other-service-account", "other-trust-domain", "other-ca", "expired"])
def test_client_sidecar_refuses_wrong_server_identity_for_tcp_tunnel(tmp_path, case):
    """The same matrix for a TCP service: the mesh hop is an HTTP/2 CONNECT
    tunnel, and the impostor must never see the CONNECT (nor the app's bytes);
    the app's connection is closed with nothing read."""
    _, body, impostor, before, after = run_case(tmp_path, case, protocol="TCP")
    assert impostor.requests == [], f"the impostor ({case}) was sent {impostor.requests}"
    assert body == "", body
    assert tcp_failures(after) == tcp_failures(before) + 1, after


def test_client_sidecar_reaches_the_right_identity_for_tcp_tunnel(tmp_path):
    _, body, impostor, _, _ = run_case(tmp_path, "right", protocol="TCP")
    assert body == "impostor"
    assert impostor.requests == ["echo.test.svc.cluster.local:80"] or len(impostor.requests) == 1, impostor.requests
