"""The mesh listener's admission rules and PeerAuthentication modes, proved
with peers nobody here wrote: `openssl s_client` against the server proxy's
mesh port (15008) and curl through the client proxy or straight at the
inbound listener (15006).

Every refusal is checked twice: on the wire (the handshake or the first read
fails, no HTTP/2 response) and at the app (rete-echo logs one line per
request; it must have logged none for the probe)."""
import json
import re
import subprocess
import time
import urllib.request

import pytest

import certs
from helpers import read_log, start_echo, wait_for
from mesh import Mesh, fresh_host, s_client, service, workload

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
PROBE_PATH = "/probe-must-not-arrive"


def authz(name, action, rules, app="echo"):
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": action, "rules": rules}}


def peer_authn(mode):
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "test"}, "spec": {"mtls": {"mode": mode}}}


def h2_get(path, authority="echo", extra=()):
    """The preface, an empty SETTINGS and a HEADERS frame for GET `path`
    (HPACK literals without indexing, no Huffman): enough that a proxy which
    wrongly admitted the peer would forward a request the app logs."""
    def lit(name, value):
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    block = b"\x82\x86" + lit(b":path", path.encode()) + lit(b":authority", authority.encode())
    for name, value in extra:
        block += lit(name.encode(), value.encode())
    headers = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    return H2_PREFACE + H2_EMPTY_SETTINGS + headers


def echo_requests(env):
    return [l for l in read_log(env["echo"]).splitlines() if re.search(r" (GET|POST|HEAD|PUT) /", l)]


def metric(env, name):
    with urllib.request.urlopen(f"http://{env['server_admin']}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return int(m.group(1))


def curl(*args, timeout=10):
    return subprocess.run(["curl", "-sS", "-m", str(timeout), *args], capture_output=True,
                          timeout=timeout + 5)


def secure_mesh(tmp_path, policies=(), mode=None):
    """echo (sa echo) behind its sidecar, and a client sidecar (sa client),
    with `policies` and an optional PeerAuthentication in namespace test."""
    m = Mesh(tmp_path)
    client_host, echo_host = fresh_host(), fresh_host()
    echo_proc, echo_addr = start_echo(name="echo", host=echo_host)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    m.add(service("echo", m.ns, [(80, "HTTP", echo_port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}),
          *policies)
    if mode:
        m.add(peer_authn(mode))
    server = m.start_proxy("echo-0", "echo", echo_host, "--log-level", "info",
                           inbound=[(echo_port, "HTTP")])
    client = m.start_proxy("client-0", "client", client_host)
    return {"mesh": m, "outbound": f"{client_host}:15001", "echo_host": echo_host,
            "echo_port": echo_port, "echo": echo_proc, "server": server, "client": client,
            "server_admin": f"{echo_host}:15000", "dir": str(tmp_path)}


ALLOW_CLIENT = authz("echo-allow-client", "ALLOW",
                     [{"from": [{"source": {"principals": ["cluster.local/ns/test/sa/client"]}}]}])
DENY_ADMIN = authz("echo-deny-admin", "DENY", [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}])
AUDIT_AUDITED = authz("echo-audit", "AUDIT", [{"to": [{"operation": {"paths": ["/audited"]}}]}])


@pytest.fixture
def env(tmp_path):
    return secure_mesh(tmp_path, [ALLOW_CLIENT, DENY_ADMIN, AUDIT_AUDITED])


def _server_bytes_after_handshake(out):
    """What s_client printed between the end of its session summary and its
    final error line: the data the server sent (and we must see none)."""
    tail = out.split("Verify return code", 1)[1].split("---\n", 1)[1]
    return "\n".join(l for l in tail.splitlines() if not re.search(r":error:|^DONE$|^closed$", l)).strip()


def _refusal(env, cert, reason_regex, wire_regex):
    m = env["mesh"]
    before_req = len(echo_requests(env))
    before_refused = metric(env, "rete_proxy_mesh_refused_total")
    closed, out = s_client(env["echo_host"], m.ca[0], cert, h2_get(PROBE_PATH))
    assert closed, "the server kept a refused peer's connection open:\n" + out
    # The server's answer is an alert or a bare close, never a byte of HTTP/2
    # (and the app saw nothing).
    assert re.search(wire_regex, out), out
    assert _server_bytes_after_handshake(out) == "", out
    # Once the refusal is counted the connection is gone: nothing of it can
    # reach the app later, so the app's log is final (no sleep needed).
    deadline = time.monotonic() + 10
    while metric(env, "rete_proxy_mesh_refused_total") < before_refused + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(env, "rete_proxy_mesh_refused_total") == before_refused + 1
    assert len(echo_requests(env)) == before_req, read_log(env["echo"])
    assert PROBE_PATH not in read_log(env["echo"])
    assert re.search(reason_regex, read_log(env["server"])), read_log(env["server"])
    return out


def test_valid_cert_negotiates_tls13_alpn_h2(env):
    m = env["mesh"]
    cert = m.cert("client")
    # The client offers TLS 1.2 and 1.3 (no -tls1_3): the server chooses 1.3.
    closed, out = s_client(env["echo_host"], m.ca[0], cert, H2_PREFACE + H2_EMPTY_SETTINGS, wait=2,
                           tls13_only=False)
    assert "ALPN protocol: h2" in out, out
    assert re.search(r"New, TLSv1\.3, Cipher is|Protocol\s*:\s*TLSv1\.3", out), out
    assert "Verify return code: 0 (ok)" in out, out
    assert not closed, "an admitted peer should keep its HTTP/2 connection:\n" + out


def test_allowed_path_through_proxy_a_is_200(env):
    r = curl("-i", "-H", "Host: echo", f"http://{env['outbound']}/ok")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out + r.stderr.decode()
    assert any(" /ok " in l for l in echo_requests(env))


def test_denied_path_through_proxy_a_is_403_naming_policy(env):
    before = metric(env, "rete_proxy_authz_denied_total")
    for path in ("/admin", "/admin/users?x=1", "/x/../admin", "/%61dmin"):
        r = curl("-i", "--path-as-is", "-H", "Host: echo", f"http://{env['outbound']}{path}")
        out = r.stdout.decode()
        assert out.startswith("HTTP/1.1 403"), path + ": " + out + r.stderr.decode()
        assert "RBAC: access denied by policy test/echo-deny-admin" in out, out
    assert metric(env, "rete_proxy_authz_denied_total") == before + 4
    assert not any("admin" in l for l in echo_requests(env)), read_log(env["echo"])
    assert "authz: denied" in read_log(env["server"])


def test_audit_does_not_block(env):
    r = curl("-i", "-H", "Host: echo", f"http://{env['outbound']}/audited")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out
    assert any(" /audited " in l for l in echo_requests(env))
    assert re.search(r"authz: audit policy test/echo-audit matched GET /audited", read_log(env["server"]))


def test_refuses_no_client_certificate(env):
    _refusal(env, None, r"mesh: TLS handshake with .* refused: .*peer did not return a certificate", r"alert certificate required.*alert number 116")


def test_refuses_certificate_from_another_ca(env):
    other = certs.make_ca(env["dir"], "other-root")
    cert = certs.make_workload_cert(env["dir"], other, "cluster.local", "test", "client", name="other-ca")
    _refusal(env, cert, r"refused: .*unable to get local issuer certificate", r"alert unknown ca.*alert number 48")


def test_refuses_expired_certificate(env):
    cert = env["mesh"].cert("client", expired=True)
    _refusal(env, cert, r"refused: .*certificate has expired", r"alert certificate expired.*alert number 45")


def test_refuses_spiffe_id_no_policy_admits(env):
    cert = env["mesh"].cert("intruder")
    _refusal(env, cert, r"identity spiffe://cluster.local/ns/test/sa/intruder is not admitted by "
                        r"authorization policy echo-allow-client", r"(?m)^closed$")


def test_refuses_other_trust_domain_same_ca(env):
    cert = certs.make_workload_cert(env["dir"], env["mesh"].ca, "evil.local", "test", "client")
    _refusal(env, cert, r"identity spiffe://evil.local/ns/test/sa/client is outside trust domain cluster.local",
             r"(?m)^closed$")


def test_admitted_peer_still_gets_per_request_denial_over_h2(env):
    """A peer admitted at the connection (client) asking for a denied path
    over its own mTLS connection: the stream is answered 403 and the app sees
    nothing (nghttp-free: the 403 is visible in the raw s_client output)."""
    cert = env["mesh"].cert("client")
    closed, out = s_client(env["echo_host"], env["mesh"].ca[0], cert, h2_get("/admin/raw"), wait=2)
    assert "RBAC: access denied by policy test/echo-deny-admin" in out, out
    assert not any("/admin/raw" in l for l in echo_requests(env))


def _requests_from(env, workload):
    with urllib.request.urlopen(f"http://{env['server_admin']}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(
        rf'^istio_requests_total{{[^}}]*reporter="destination"[^}}]*source_workload="{workload}"[^}}]*}} (\S+)$',
        text, re.M))


def test_peer_metadata_names_the_source_workload_only_for_its_own_namespace(env):
    """The calling proxy says which workload it is (x-rete-peer) on the mesh
    hop, so the destination's metrics name the source workload; a peer may
    describe itself, never claim another namespace than its certificate's,
    and the header never reaches the app."""
    cert = env["mesh"].cert("client")  # spiffe://cluster.local/ns/test/sa/client
    # through the client sidecar: the real thing
    r = curl("-s", "-H", "Host: echo", f"http://{env['outbound']}/from-sidecar")
    body = json.loads(r.stdout)
    assert body["path"] == "/from-sidecar", body
    assert not any(h.startswith("x-rete-") for h in body["headers"]), body["headers"]  # never to the app
    wait_for(lambda: _requests_from(env, "client-0") >= 1, 10, 0.1, "source_workload from the peer's metadata")
    # a peer naming another namespace: not believed (the SPIFFE namespace stands)
    s_client(env["echo_host"], env["mesh"].ca[0], cert,
             h2_get("/other-ns", extra=[("x-rete-peer", "workload=evil-0;namespace=other;app=evil")]), wait=2)
    # malformed: not believed either
    s_client(env["echo_host"], env["mesh"].ca[0], cert,
             h2_get("/malformed", extra=[("x-rete-peer", 'workload=a"b;namespace=test')]), wait=2)
    # its own namespace: believed (a workload describes itself, as with Istio)
    s_client(env["echo_host"], env["mesh"].ca[0], cert,
             h2_get("/own-ns", extra=[("x-rete-peer", "workload=batch-7;namespace=test;app=batch")]), wait=2)
    wait_for(lambda: _requests_from(env, "batch-7") == 1, 10, 0.1, "the peer's own-namespace claim")
    wait_for(lambda: _requests_from(env, "unknown") >= 2, 10, 0.1, "the refused claims counted as unknown")
    assert _requests_from(env, "evil-0") == 0
    assert _requests_from(env, 'a"b') == 0
    log = read_log(env["echo"])
    assert "/own-ns" in log and "/other-ns" in log and "/malformed" in log


# ---- PeerAuthentication on the inbound listener (15006) ----------------------

def test_strict_refuses_plaintext_on_inbound(tmp_path):
    e = secure_mesh(tmp_path, mode="STRICT")
    r = curl("-i", f"http://{e['echo_host']}:15006/plain", timeout=5)
    assert r.returncode != 0 and not r.stdout, r.stdout.decode()
    assert not any("/plain" in l for l in echo_requests(e))
    assert metric(e, "rete_proxy_mesh_refused_total") >= 1
    # the mesh path still works under STRICT
    r = curl("-i", "-H", "Host: echo", f"http://{e['outbound']}/via-mesh")
    assert r.stdout.decode().startswith("HTTP/1.1 200"), r.stdout.decode()


def test_permissive_accepts_plaintext_on_inbound(tmp_path):
    e = secure_mesh(tmp_path, mode="PERMISSIVE")
    r = curl("-i", f"http://{e['echo_host']}:15006/plain")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out + r.stderr.decode()
    assert any(" /plain " in l for l in echo_requests(e))


def test_plaintext_client_cannot_spoof_xfcc(tmp_path):
    """Regression: under PERMISSIVE a plaintext client's own
    x-forwarded-client-cert reached the app, which trusts it as the caller's
    mesh identity."""
    e = secure_mesh(tmp_path, mode="PERMISSIVE")
    spoof = "By=x;URI=spiffe://cluster.local/ns/test/sa/admin"
    r = curl("-i", "-H", f"x-forwarded-client-cert: {spoof}", f"http://{e['echo_host']}:15006/plain")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out + r.stderr.decode()
    body = json.loads(out.split("\r\n\r\n", 1)[1])
    assert "x-forwarded-client-cert" not in body["headers"], body["headers"]
    # through the mesh the header is the proxy's, not the client's
    r = curl("-H", "Host: echo", "-H", f"x-forwarded-client-cert: {spoof}", f"http://{e['outbound']}/m")
    xfcc = json.loads(r.stdout)["headers"]["x-forwarded-client-cert"]
    assert xfcc == ("By=spiffe://cluster.local/ns/test/sa/echo;"
                    "URI=spiffe://cluster.local/ns/test/sa/client"), xfcc


def test_permissive_plaintext_still_subject_to_identity_policy(tmp_path):
    e = secure_mesh(tmp_path, [ALLOW_CLIENT], mode="PERMISSIVE")
    r = curl("-i", f"http://{e['echo_host']}:15006/plain")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 403"), out
    assert "RBAC: access denied by policy test/echo-allow-client" in out
    assert not any("/plain" in l for l in echo_requests(e))
    r = curl("-i", "-H", "Host: echo", f"http://{e['outbound']}/via-mesh")
    assert r.stdout.decode().startswith("HTTP/1.1 200"), r.stdout.decode()


def test_disable_serves_plaintext_inbound_but_mesh_stays_mtls(tmp_path):
    """rete's DISABLE differs from Istio's on purpose (docs/architecture.md):
    plaintext is served on 15006, but 15008 still demands a client
    certificate and sidecars still talk mTLS."""
    e = secure_mesh(tmp_path, mode="DISABLE")
    r = curl("-i", f"http://{e['echo_host']}:15006/plain")
    assert r.stdout.decode().startswith("HTTP/1.1 200"), r.stdout.decode()
    _refusal(e, None, r"peer did not return a certificate", r"alert certificate required")
    body = json.loads(curl("-H", "Host: echo", f"http://{e['outbound']}/via-mesh").stdout)
    assert body["headers"]["x-forwarded-client-cert"].endswith("URI=spiffe://cluster.local/ns/test/sa/client")


def test_caller_no_policy_admits_gets_403_from_its_own_proxy(env):
    """The destination refuses the identity at the handshake (nothing reaches
    the app); the caller's proxy turns that into a 403 for its app, as Istio
    answers an RBAC denial, instead of a bare 502."""
    m = env["mesh"]
    host = fresh_host()
    m.start_proxy("intruder-0", "intruder", host)
    r = curl("-i", "-H", "Host: echo", f"http://{host}:15001/anything")
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 403"), out + r.stderr.decode()
    assert "refused this workload's identity" in out
    assert not any("/anything" in l for l in echo_requests(env))
