"""Identity spoofing through rete's internal request fields (issue 13's
attack suite): every field only a proxy may set — x-rete-peer (the calling
workload's metadata: source_workload), x-rete-target-port (which app port a
mesh request is for), x-forwarded-client-cert (the caller identity the app
trusts), and any other x-rete-* — sent by the app outbound or by a client
outside the mesh on the inbound plaintext listener (PERMISSIVE), over
HTTP/1.1 (head and chunked trailers, any letter case) and HTTP/2 (prior
knowledge), must never reach the app as sent (rete-echo answers with the
fields it received), never change the destination's metrics labels
(source_workload) and never change an authorization decision. A peer with
a valid mesh certificate that is not a sidecar may set x-rete-* (that is
the mesh protocol, checked by test_proxy_mesh_security.py), but none of
them reaches the app, and x-forwarded-client-cert is the receiving proxy's
own."""
import json
import re
import socket
import subprocess
import urllib.request

from helpers import read_log, wait_for
from mesh import s_client
from test_proxy_mesh_security import authz, h2_get, peer_authn, secure_mesh

# Only sa/admin may call /admin-only; nobody here has that identity.
ADMIN_ONLY = authz("echo-admin-only", "DENY", [{"from": [{"source": {"notPrincipals": [
    "cluster.local/ns/test/sa/admin"]}}], "to": [{"operation": {"paths": ["/admin-only"]}}]}])

ADMIN_XFCC = "By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/admin"
SPOOFS = [
    ("x-forwarded-client-cert", ADMIN_XFCC),
    ("x-rete-peer", "workload=evil-0;namespace=test;app=evil"),
    ("x-rete-target-port", "1"),
    ("x-rete-anything", "spoofed"),
    ("X-Rete-Peer", "workload=evil-1;namespace=test;app=evil"),
    ("X-Forwarded-Client-Cert", ADMIN_XFCC),
]
SPOOF_VALUES = ("evil-", "sa/admin", "spoofed")
CLIENT_XFCC = "By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/client"


def _env(tmp_path):
    e = secure_mesh(tmp_path, [ADMIN_ONLY], mode="PERMISSIVE")
    e["inbound"] = f"{e['echo_host']}:15006"
    return e


def _curl(*args):
    r = subprocess.run(["curl", "-sS", "-m", "10", *args], capture_output=True, timeout=15)
    return r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def _spoof_args():
    out = []
    for name, value in SPOOFS:
        out += ["-H", f"{name}: {value}"]
    return out


def _assert_clean(headers, xfcc, what):
    """What the app received: no x-rete-* field, no spoofed value anywhere,
    and x-forwarded-client-cert only as the receiving proxy made it."""
    low = {k.lower(): v for k, v in headers.items()}
    assert not [k for k in low if k.startswith("x-rete-")], f"{what}: {headers}"
    assert low.get("x-forwarded-client-cert") == xfcc, f"{what}: {headers}"
    text = json.dumps(headers)
    assert not any(v in text for v in SPOOF_VALUES), f"{what}: {headers}"


def _echo(out, what):
    body = out.split("\r\n\r\n", 1)[1] if out.startswith("HTTP/") else out
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError(f"{what}: not the echo's answer: {out!r}")


def _source_workloads(env):
    with urllib.request.urlopen(f"http://{env['server_admin']}/metrics", timeout=5) as r:
        text = r.read().decode()
    return set(re.findall(r'^istio_requests_total{[^}]*reporter="destination"[^}]*source_workload="([^"]*)"',
                          text, re.M))


def _chunked_with_trailers(addr, path, host="echo"):
    """An HTTP/1.1 request whose spoofed fields ride in chunked trailers."""
    h, p = addr.rsplit(":", 1)
    trailers = "".join(f"{n}: {v}\r\n" for n, v in SPOOFS)
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n"
           f"Connection: close\r\n\r\n2\r\nhi\r\n0\r\n{trailers}\r\n").encode()
    with socket.create_connection((h, int(p)), timeout=10) as s:
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def _dechunk(resp):
    head, body = resp.split("\r\n\r\n", 1)
    if "chunked" not in head.lower():
        return head, body
    out = ""
    while body:
        size, rest = body.split("\r\n", 1)
        n = int(size.split(";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return head, out


def test_app_outbound_cannot_spoof_internal_fields(tmp_path):
    """From the app through its sidecar to the mesh: HTTP/1.1 head, HTTP/1.1
    trailers, HTTP/2 prior knowledge. The destination sees the client's
    proxy-made identity; metrics name client-0; the admin-only path stays
    closed."""
    e = _env(tmp_path)
    out, err = _curl("-i", "-H", "Host: echo", *_spoof_args(), f"http://{e['outbound']}/h1")
    assert out.startswith("HTTP/1.1 200"), out + err
    _assert_clean(_echo(out, "h1")["headers"], CLIENT_XFCC, "outbound h1")

    out, err = _curl("-i", "--http2-prior-knowledge", "-H", "Host: echo", *_spoof_args(),
                     f"http://{e['outbound']}/h2")
    assert out.startswith("HTTP/2 200"), out + err
    _assert_clean(_echo(out, "h2")["headers"], CLIENT_XFCC, "outbound h2")

    head, body = _dechunk(_chunked_with_trailers(e["outbound"], "/trailers"))
    assert head.startswith("HTTP/1.1 200"), head
    _assert_clean(_echo(body, "trailers")["headers"], CLIENT_XFCC, "outbound trailers")

    # authorization: the spoofed admin identity opens nothing
    for extra in ([], ["--http2-prior-knowledge"]):
        out, err = _curl("-i", *extra, "-H", "Host: echo", *_spoof_args(), f"http://{e['outbound']}/admin-only")
        assert re.match(r"HTTP/[12.]+ 403", out), out + err
        assert "echo-admin-only" in out, out
    assert "/admin-only" not in read_log(e["echo"])

    # metrics: the source is the client's sidecar, never the spoofed workload
    wait_for(lambda: "client-0" in _source_workloads(e), 10, 0.1, "source_workload client-0")
    assert not [w for w in _source_workloads(e) if w.startswith("evil")], _source_workloads(e)


def test_plaintext_inbound_cannot_spoof_internal_fields(tmp_path):
    """A client outside the mesh on the inbound listener under PERMISSIVE:
    no identity at all (no x-forwarded-client-cert reaches the app), the
    target port is not its to choose, metrics say unknown."""
    e = _env(tmp_path)
    out, err = _curl("-i", *_spoof_args(), f"http://{e['inbound']}/plain-h1")
    assert out.startswith("HTTP/1.1 200"), out + err
    _assert_clean(_echo(out, "plain h1")["headers"], None, "inbound h1")

    out, err = _curl("-i", "--http2-prior-knowledge", *_spoof_args(), f"http://{e['inbound']}/plain-h2")
    assert out.startswith("HTTP/2 200"), out + err
    _assert_clean(_echo(out, "plain h2")["headers"], None, "inbound h2")

    head, body = _dechunk(_chunked_with_trailers(e["inbound"], "/plain-trailers"))
    assert head.startswith("HTTP/1.1 200"), head
    _assert_clean(_echo(body, "plain trailers")["headers"], None, "inbound trailers")

    for extra in ([], ["--http2-prior-knowledge"]):
        out, err = _curl("-i", *extra, *_spoof_args(), f"http://{e['inbound']}/admin-only")
        assert re.match(r"HTTP/[12.]+ 403", out), out + err
    assert "/admin-only" not in read_log(e["echo"])

    wait_for(lambda: "unknown" in _source_workloads(e), 10, 0.1, "source_workload unknown")
    assert not [w for w in _source_workloads(e) if w.startswith("evil")], _source_workloads(e)


def test_mesh_peer_cannot_spoof_the_caller_identity(tmp_path):
    """A peer with a valid certificate (sa/client) that is not a sidecar,
    straight at the mesh listener: the x-forwarded-client-cert it sends is
    replaced by the one its certificate proves, and it does not open the
    admin-only path."""
    e = _env(tmp_path)
    m = e["mesh"]
    cert = m.cert("client")
    extra = [("x-forwarded-client-cert", ADMIN_XFCC), ("x-rete-anything", "spoofed")]
    _, out = s_client(e["echo_host"], m.ca[0], cert, h2_get("/peer", extra=extra), wait=2)
    assert '"path":"/peer"' in out.replace(" ", ""), out
    assert '"x-forwarded-client-cert":"' + CLIENT_XFCC + '"' in out.replace(" ", ""), out
    seen = out.split('"headers"', 1)[1]
    assert "sa/admin" not in seen and "x-rete-" not in seen, out
    _, out = s_client(e["echo_host"], m.ca[0], cert, h2_get("/admin-only", extra=extra), wait=2)
    assert "echo-admin-only" in out, out
    assert "/admin-only" not in read_log(e["echo"])
