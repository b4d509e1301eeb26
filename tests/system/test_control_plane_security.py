"""Security through the control plane (issue 3, "Done means"): CA rotation
under traffic with no failed request, authorization matrices for HTTP, gRPC
and TCP applied with reted's API and pushed to the proxies, PeerAuthentication
DISABLE. Every test starts its own reted on a temporary data dir; loopback
only, conditions polled with generous bounds."""
import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from controlplane import (TRUST_DOMAIN, snapshot_docs, apply_and_push, ca_connection, curl, curl_status, echo_service_mesh,
                          finish_traffic, log_has, make_csr, openssl, proxy_metric, request_certificate,
                          reted_metric, start_cp_proxy, start_reted, start_traffic, wait_for)
from helpers import free_port, read_log, start_process
from mesh import s_client, fresh_host, service

PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", re.S)


@pytest.fixture
def reted(tmp_path):
    return start_reted(tmp_path)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _certs(pem):
    """The certificates of a PEM bundle, each normalised to end in a newline."""
    if isinstance(pem, str):
        pem = pem.encode()
    return [c if c.endswith(b"\n") else c + b"\n" for c in PEM_CERT.findall(pem)]


def _verifies(cert_path, root_pem, tmp_path):
    """`openssl verify` of cert_path against exactly the roots in root_pem."""
    fd, ca = tempfile.mkstemp(suffix=".pem", dir=str(tmp_path))
    with os.fdopen(fd, "wb") as f:
        f.write(root_pem)
    r = openssl("verify", "-CAfile", ca, cert_path)
    os.unlink(ca)
    return r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr


def _rotate(reted, phase):
    return reted.request("POST", "/api/v1/ca/rotate", {"phase": phase})


# ---------------------------------------------------------------- CA rotation


def test_ca_rotation_under_traffic_without_a_failed_request(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    proxies = (m["server"], m["client"])
    old_root = _read(os.path.join(reted.data, "ca", "root.pem"))
    assert _certs(_read(reted.bundle)) == [old_root]
    first = {p.name: _read(p.cert_path) for p in proxies}
    for p in proxies:
        assert _verifies(p.cert_path, old_root, tmp_path)[0]

    traffic = start_traffic(m["client"].outbound, rate=20, duration=45)
    wait_for(lambda: curl_status(m["client"].outbound, "echo") == 200, 20, 0.3, "traffic flowing")

    # begin: a second root joins the bundle; every proxy gets it and renews from the new root
    st, body = _rotate(reted, "begin")
    assert st == 200 and body["phase"] == "begin" and body["rotating"] is True, (st, body)
    bundle = _certs(body["trustBundle"])
    assert len(bundle) == 2 and old_root in bundle, body
    new_root = next(c for c in bundle if c != old_root)
    assert _certs(_read(reted.bundle)) == bundle
    for p in proxies:
        wait_for(lambda: len(_certs(_read(os.path.join(p.data, "bundle.pem")))) == 2, 30, 0.2,
                 f"{p.name} holds the two-root bundle")
        wait_for(lambda: _read(p.cert_path) != first[p.name] and _verifies(p.cert_path, new_root, tmp_path)[0],
                 60, 0.3, f"{p.name} renewed from the new root")
        log_has(p.log, r"the CA asks for new certificates; renewing")

    # finish: reted refuses (409) while a connected proxy still reports an
    # old-root certificate; retry within a bound
    last = {}

    def finished():
        st, body = _rotate(reted, "finish")
        last["r"] = (st, body)
        assert st in (200, 409), (st, body)
        return st == 200 and body
    try:
        body = wait_for(finished, 60, 0.5, "rotation finish accepted")
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer {last.get('r')}; proxies {reted.proxies()}\n"
                             f"reted log:\n{reted.log()[-3000:]}")
    assert body["phase"] == "finish" and body["rotating"] is False, body
    assert _certs(body["trustBundle"]) == [new_root]
    assert _read(os.path.join(reted.data, "ca", "root.pem")) == new_root
    assert _certs(_read(reted.bundle)) == [new_root]
    for p in proxies:
        wait_for(lambda: _certs(_read(os.path.join(p.data, "bundle.pem"))) == [new_root], 30, 0.2,
                 f"{p.name} holds only the new root")

    # traffic still flows after the old root left every bundle (fresh connections too)
    assert curl_status(m["client"].outbound, "echo") == 200
    rc, out = finish_traffic(traffic, timeout=120)
    assert rc == 0, out
    assert " err=0 " in out, out
    after = start_traffic(m["client"].outbound, rate=20, duration=3)
    rc, out = finish_traffic(after, timeout=60)
    assert rc == 0 and " err=0 " in out, out

    for p in proxies:
        ok, why = _verifies(p.cert_path, new_root, tmp_path)
        assert ok, why
        r = openssl("verify", "-CAfile", os.path.join(p.data, "bundle.pem"), p.cert_path)
        assert r.returncode == 0, r.stdout + r.stderr
        ok, why = _verifies(p.cert_path, old_root, tmp_path)
        assert not ok, f"{p.name}'s certificate still verifies against the old root: {why}"
        assert reted.wait_synced(p.name)["error"] == ""
    # reted's own certificate (15012) is from the new root too
    assert _verifies(os.path.join(reted.data, "server.pem"), new_root, tmp_path)[0]


def test_ca_rotation_phases_out_of_order_are_409(reted):
    st, body = _rotate(reted, "finish")
    assert st == 409 and "no CA rotation in progress" in body["error"], (st, body)
    st, body = _rotate(reted, "begin")
    assert st == 200 and body["rotating"] is True, (st, body)
    bundle = _read(reted.bundle)
    st, body = _rotate(reted, "begin")
    assert st == 409 and "already in progress" in body["error"], (st, body)
    assert _read(reted.bundle) == bundle and len(_certs(bundle)) == 2
    st, body = _rotate(reted, "finish")  # no proxies: nothing to wait for
    assert st == 200 and body["rotating"] is False, (st, body)
    assert len(_certs(_read(reted.bundle))) == 1
    st, body = _rotate(reted, "finish")
    assert st == 409, (st, body)
    for bad in ({"phase": "middle"}, {}, "not json"):
        st, body = reted.request("POST", "/api/v1/ca/rotate", bad)
        assert st == 400, (bad, st, body)


# ---------------------------------------------------------------- authorization through reted


def _authz(name, action, rules, app, ns="demo"):
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": action, "rules": rules}}


def _principal(sa, ns="demo"):
    return f"{TRUST_DOMAIN}/ns/{ns}/sa/{sa}"


def _denied(host):
    return proxy_metric(host, "rete_proxy_authz_denied_total")


def _http(outbound, path, method="GET"):
    r = curl(outbound, "echo", path, "-i", "--path-as-is", "-X", method)
    out = r.stdout.decode(errors="replace")
    m = re.match(r"HTTP/1\.1 (\d+)", out)
    return (int(m.group(1)) if m else 0), out + r.stderr.decode(errors="replace")


def test_http_authorization_matrix_through_reted(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    server, client = m["server"], m["client"]
    intruder = start_cp_proxy(reted, tmp_path, "intruder-0", "demo", "intruder", labels={"app": "intruder"})
    # before any policy, every caller gets through
    wait_for(lambda: curl_status(intruder.outbound, "echo") == 200, 30, 0.3, "intruder reaches echo")
    apply_and_push(reted, [
        _authz("allow-client", "ALLOW", [{"from": [{"source": {"principals": [_principal("client")]}}],
                                          "to": [{"operation": {"methods": ["GET"], "paths": ["/public/*"]}},
                                                 {"operation": {"paths": ["/audited", "/admin/*"]}}]}], "echo"),
        _authz("deny-admin", "DENY", [{"to": [{"operation": {"paths": ["/admin/*"]}}]}], "echo"),
        _authz("audit-audited", "AUDIT", [{"to": [{"operation": {"paths": ["/audited"]}}]}], "echo"),
    ], (server, client, intruder), "authz.yaml")
    # the policies reached the echo sidecar (reted sends a proxy every policy
    # of its namespace; its loader keeps those whose selector matches)
    st, cfg = reted.proxy_config("demo", "echo-0")
    assert st == 200, cfg
    names = {d["metadata"]["name"] for d in snapshot_docs(cfg["resources"])}
    assert {"allow-client", "deny-admin"} <= names, names

    before = _denied(server.host)
    refused_before = proxy_metric(server.host, "rete_proxy_mesh_refused_total")
    matrix = [  # (method, path, status, policy named in the 403)
        ("GET", "/public/a", 200, None),
        ("GET", "/public/../public/b", 200, None),
        ("POST", "/public/a", 403, "demo/allow-client"),    # method not allowed: no ALLOW rule matches
        ("GET", "/private", 403, "demo/allow-client"),      # path no ALLOW rule names
        ("GET", "/admin/users", 403, "demo/deny-admin"),    # DENY beats the ALLOW that names it
        ("GET", "/public/../admin/x", 403, "demo/deny-admin"),
        ("GET", "/audited", 200, None),                     # AUDIT logs, never blocks
    ]
    for method, path, want, policy in matrix:
        got, out = _http(client.outbound, path, method)
        assert got == want, (method, path, out)
        if policy:
            assert f"RBAC: access denied by policy {policy}" in out, (method, path, out)
    denials = sum(1 for c in matrix if c[2] == 403)
    wait_for(lambda: _denied(server.host) == before + denials, 10, 0.2, "denials counted")
    log_has(server.log, r"authz: audit policy demo/audit-audited matched GET /audited")
    log_has(server.log, r"authz: denied")

    # an identity no ALLOW policy admits, on the mesh connection it opened
    # before the policy existed: every request is denied by the destination
    got, out = _http(intruder.outbound, "/public/a")
    assert got == 403 and "RBAC: access denied by policy demo/allow-client" in out, out
    denials += 1
    wait_for(lambda: _denied(server.host) == before + denials, 10, 0.2, "the intruder's denial counted")
    # the same identity on a new connection: refused at the destination's
    # mesh listener, answered 403 by the caller's own proxy
    late = start_cp_proxy(reted, tmp_path, "intruder-1", "demo", "intruder", labels={"app": "intruder"})
    wait_for(lambda: _http(late.outbound, "/public/a")[0] == 403, 30, 0.3, "intruder-1 knows echo")
    got, out = _http(late.outbound, "/public/a")
    assert got == 403 and "refused this workload's identity" in out, out
    wait_for(lambda: proxy_metric(server.host, "rete_proxy_mesh_refused_total") > refused_before, 10, 0.2,
             "the refusal counted at the destination")
    assert _denied(server.host) == before + denials

    # deleting the DENY policy through the API: /admin/* is allowed again for client
    st, body = reted.delete("authorizationpolicy", "demo", "deny-admin")
    assert st == 200, body
    wait_for(lambda: _http(client.outbound, "/admin/users")[0] == 200, 30, 0.3, "deny-admin withdrawn")
    # and with every policy gone, the intruder is admitted again
    for name in ("allow-client", "audit-audited"):
        assert reted.delete("authorizationpolicy", "demo", name)[0] == 200
    for p in (intruder, late):
        wait_for(lambda: curl_status(p.outbound, "echo", "/public/a") == 200, 30, 0.3, f"{p.name} admitted")


# ---------------------------------------------------------------- gRPC


GRPC_PORT = 50051


def test_grpc_authorization_matrix_through_reted(reted, tmp_path):
    import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)
    from concurrent import futures
    from test_proxy_grpc import SERVICE, _handler, _ident
    server_host, client_host = fresh_host(), fresh_host()
    app_port = free_port(server_host)
    app = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    app.add_generic_rpc_handlers((_handler(),))
    assert app.add_insecure_port(f"{server_host}:{app_port}") == app_port
    app.start()
    ch = None
    try:
        reted.apply_ok([service("greeter", "demo", [(GRPC_PORT, "GRPC", app_port)])])
        server = start_cp_proxy(reted, tmp_path, "greeter-0", "demo", "greeter", host=server_host,
                                inbound=[(app_port, "GRPC")], labels={"app": "greeter"})
        upstream = f"{client_host}:{free_port(client_host)}"
        client = start_cp_proxy(reted, tmp_path, "client-0", "demo", "client", host=client_host,
                                labels={"app": "client"}, upstreams=[(upstream, "greeter", GRPC_PORT)])
        ch = grpc.insecure_channel(upstream)
        kw = dict(request_serializer=_ident, response_deserializer=_ident)
        unary = ch.unary_unary(f"/{SERVICE}/Unary", **kw)
        server_stream = ch.unary_stream(f"/{SERVICE}/ServerStream", **kw)
        client_stream = ch.stream_unary(f"/{SERVICE}/ClientStream", **kw)
        bidi = ch.stream_stream(f"/{SERVICE}/Bidi", **kw)

        def reachable():
            try:
                return unary(b"x", timeout=5) == b"hello x"
            except grpc.RpcError:
                return False
        wait_for(reachable, 30, 0.3, "greeter reachable through the mesh")
        apply_and_push(reted, [
            _authz("greeter-allow", "ALLOW",
                   [{"from": [{"source": {"principals": [_principal("client")]}}],
                     "to": [{"operation": {"paths": [f"/{SERVICE}/Unary", f"/{SERVICE}/Bidi",
                                                     f"/{SERVICE}/ServerStream"]}}]}], "greeter"),
            _authz("greeter-deny-bidi", "DENY", [{"to": [{"operation": {"paths": [f"/{SERVICE}/Bidi"]}}]}],
                   "greeter"),
        ], (server, client))
        before = _denied(server_host)
        # allowed (on the connection the channel opened before the push)
        assert unary(b"world", timeout=30) == b"hello world"
        assert len(list(server_stream(b"3,10", timeout=30))) == 3

        def code_of(call):
            with pytest.raises(grpc.RpcError) as e:
                r = call()
                list(r) if hasattr(r, "__iter__") and not isinstance(r, bytes) else r
            return e.value.code(), e.value.details()
        # DENY beats ALLOW
        code, details = code_of(lambda: bidi(iter([b"a", b"b"]), timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (code, details)
        assert "demo/greeter-deny-bidi" in (details or ""), details
        # no ALLOW rule names ClientStream
        code, details = code_of(lambda: client_stream(iter([b"a"]), timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (code, details)
        assert "demo/greeter-allow" in (details or ""), details
        wait_for(lambda: _denied(server_host) == before + 2, 10, 0.2, "gRPC denials counted")
        # the channel still works after denials
        assert unary(b"again", timeout=30) == b"hello again"
    finally:
        if ch is not None:
            ch.close()
        app.stop(0)


# ---------------------------------------------------------------- TCP


# Debian redis-server and redis-tools, in DEB_PACKAGES: absent, the test fails.
REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"


def test_tcp_authorization_through_reted(reted, tmp_path):
    server_host, client_host, other_host = fresh_host(), fresh_host(), fresh_host()
    app_port = free_port(server_host)
    redis = start_process([REDIS_SERVER, "--port", str(app_port), "--bind", server_host, "--save", "",
                           "--appendonly", "no", "--dir", str(tmp_path)], r"Ready to accept connections", timeout=15)
    try:
        reted.apply_ok([service("redis", "demo", [(6379, "TCP", app_port)])])
        server = start_cp_proxy(reted, tmp_path, "redis-0", "demo", "redis", host=server_host,
                                inbound=[(app_port, "TCP")], labels={"app": "redis"})
        ups = {}
        callers = {}
        for name, sa, host in (("client-0", "client", client_host), ("other-0", "other", other_host)):
            ups[sa] = (host, free_port(host))
            callers[sa] = start_cp_proxy(reted, tmp_path, name, "demo", sa, host=host, labels={"app": sa},
                                         upstreams=[(f"{host}:{ups[sa][1]}", "redis", 6379)])
        apply_and_push(reted, [
            _authz("redis-allow", "ALLOW", [{"from": [{"source": {"principals": [_principal("client"),
                                                                                 _principal("other")]}}]}], "redis"),
            _authz("redis-deny-other", "DENY", [{"from": [{"source": {"principals": [_principal("other")]}}],
                                                 "to": [{"operation": {"ports": [str(app_port)]}}]}], "redis"),
        ], (server, *callers.values()))

        def cli(sa, *args):
            h, p = ups[sa]
            return subprocess.run([REDIS_CLI, "-h", h, "-p", str(p), *args], capture_output=True, timeout=30)

        def direct_stats():
            r = subprocess.run([REDIS_CLI, "-h", server_host, "-p", str(app_port), "INFO", "stats"],
                               capture_output=True, text=True, timeout=30)
            return {k: int(v) for k, v in re.findall(r"^(total_connections_received|total_commands_processed):(\d+)",
                                                     r.stdout, re.M)}
        wait_for(lambda: cli("client", "PING").stdout == b"PONG\n", 30, 0.3, "client reaches redis")
        assert cli("client", "SET", "k", "v").stdout == b"OK\n"
        before_denied = _denied(server_host)
        s0 = direct_stats()
        # the denied principal: its connection is closed, redis sees nothing
        s = socket.create_connection(ups["other"], timeout=30)
        s.sendall(b"PING\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        assert data == b"", data
        r = cli("other", "GET", "k")
        assert b"v" not in r.stdout, r
        wait_for(lambda: _denied(server_host) >= before_denied + 2, 10, 0.2, "TCP denials counted")
        s1 = direct_stats()
        # only our own INFO connection and command reached redis
        assert s1["total_connections_received"] == s0["total_connections_received"] + 1, (s0, s1)
        assert s1["total_commands_processed"] == s0["total_commands_processed"] + 1, (s0, s1)
        assert cli("client", "GET", "k").stdout == b"v\n"
    finally:
        redis.terminate()
        redis.wait(timeout=10)


# ---------------------------------------------------------------- PeerAuthentication DISABLE


def test_peer_authentication_disable_through_reted(reted, tmp_path):
    """DISABLE, pushed by reted, serves plaintext on the inbound listener
    (15006) like PERMISSIVE; it does not turn mTLS off between sidecars
    (docs/architecture.md): the mesh listener still demands a client
    certificate and the client proxy still presents its identity."""
    m = echo_service_mesh(reted, tmp_path)
    host = m["echo_host"]
    pa = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "demo"}, "spec": {"mtls": {"mode": "DISABLE"}}}
    apply_and_push(reted, [pa], (m["server"],))
    r = curl(f"{host}:15006", "echo", "/plain", "-o", "/dev/null", "-w", "%{http_code}", timeout=10)
    assert (r.returncode, r.stdout.decode()) == (0, "200"), r
    # 15008 without a client certificate: refused in the handshake
    # (stdin kept open: with an immediate EOF s_client may leave before the
    # TLS 1.3 alert, which follows the client's Finished, arrives)
    _, out = s_client(host, reted.bundle, None, b"", wait=5)
    assert "alert certificate required" in out or "alert number 116" in out, out
    body = curl(m["client"].outbound, "echo", "/via-mesh")
    import json
    xfcc = json.loads(body.stdout)["headers"]["x-forwarded-client-cert"]
    assert xfcc == f"By={m['server'].spiffe};URI={m['client'].spiffe}", xfcc


# ---------------------------------------------------------------- join tokens under concurrency


@pytest.mark.parametrize("uses", [1, 3])
def test_a_limited_token_issues_exactly_its_uses_under_concurrent_requests(reted, tmp_path, uses):
    """Sixteen clients present the same join token at once, each on its own
    TLS connection (already established, so the requests arrive together):
    exactly `uses` certificates are issued, every other request is refused
    as used up, and the issued ones carry the token's identity."""
    import threading
    tok = reted.token("demo", "web", uses=uses)
    csrs = [make_csr(tmp_path, f"racer-{i}")[1] for i in range(16)]
    conns = [ca_connection(reted) for _ in csrs]
    for c in conns:
        c.connect()
    go = threading.Barrier(len(conns))
    results = [None] * len(conns)

    def race(i):
        go.wait()
        results[i] = request_certificate(conns[i], csrs[i], tok)
    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in conns:
        c.close()
    issued = [body for st, body in results if st == 200]
    refused = [body for st, body in results if st != 200]
    assert len(issued) == uses, results
    assert all(st == 403 and "used up" in body["error"] for st, body in results if st != 200), refused
    assert {b["spiffeId"] for b in issued} == {f"spiffe://{TRUST_DOMAIN}/ns/demo/sa/web"}
    assert reted_metric(reted, "rete_reted_certificates_total", 'result="issued"') == uses
    assert reted_metric(reted, "rete_reted_certificates_total", 'result="refused"') == 16 - uses
    # used up for good, on a new connection too
    c = ca_connection(reted)
    try:
        st, body = request_certificate(c, csrs[0], tok)
    finally:
        c.close()
    assert st == 403 and "used up" in body["error"], (st, body)
