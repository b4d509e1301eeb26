"""The control plane end to end (issue 3, "Done means"): reted with its
embedded store and CA, rete-proxy in control-plane mode, the operator API.
Every test starts its own reted on a temporary data dir and loopback ports."""
import json
import os
import signal
import stat
import time

import pytest

from controlplane import (READY_PROXY, CPProxy, StreamClient, snapshot_docs, cert_sans, curl, curl_json, curl_status,
                          echo_service_mesh, finish_traffic, log_has, openssl, proxy_metric, reted_metric,
                          start_cp_proxy,
                          start_reted, start_traffic, wait_for)
from helpers import read_log
from mesh import service


@pytest.fixture
def reted(tmp_path):
    return start_reted(tmp_path)


# ---------------------------------------------------------------- bootstrap and mTLS


def test_bootstrap_certificates_verify_and_carry_only_the_spiffe_id(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    for p in (m["server"], m["client"]):
        r = openssl("verify", "-CAfile", reted.bundle, p.cert_path)
        assert r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr
        assert cert_sans(p.cert_path) == [f"URI:{p.spiffe}"]
        assert stat.S_IMODE(os.stat(p.key_path).st_mode) == 0o600
    body = curl_json(m["client"].outbound, "echo", "/hello")
    assert body["service"] == "echo" and body["path"] == "/hello"
    assert body["headers"]["x-forwarded-client-cert"] == (
        f"By={m['server'].spiffe};URI={m['client'].spiffe}")


# ---------------------------------------------------------------- join tokens


def _cert_refused(p, timeout=30):
    """The proxy's certificate request was refused and it did not become ready."""
    m = log_has(p.log, r"certificate request refused \((\d+)\): ([^\n]*)", timeout)
    assert "ready:" not in p.log()
    assert p.proc.poll() is None  # it keeps retrying with backoff, it does not crash
    return m


def test_single_use_token_refused_the_second_time(reted, tmp_path):
    tok = reted.token("demo", "web")  # uses defaults to 1
    first = start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", token=tok)
    assert cert_sans(first.cert_path) == ["URI:spiffe://cluster.local/ns/demo/sa/web"]
    second = CPProxy(reted, tmp_path, "web-1", "demo", "web", token=tok).start(ready=r"control plane")
    m = _cert_refused(second)
    assert m.group(1) == "403" and "used up" in m.group(2), m.group(0)
    assert not os.path.exists(second.cert_path)
    assert "refused a certificate request" in reted.log()
    assert reted.proxy("web-1") is None and reted.proxy("web-0")["status"] == "SYNCED"


def test_token_with_two_uses_serves_two_proxies_then_no_more(reted, tmp_path):
    tok = reted.token("demo", "web", uses=2)
    start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", token=tok)
    start_cp_proxy(reted, tmp_path, "web-1", "demo", "web", token=tok)
    third = CPProxy(reted, tmp_path, "web-2", "demo", "web", token=tok).start(ready=r"control plane")
    _cert_refused(third)


def test_expired_token_refused(reted, tmp_path):
    tok = reted.token("demo", "web", ttl=1)
    time.sleep(2.2)  # the TTL running out is what is under test (not synchronisation)
    p = CPProxy(reted, tmp_path, "web-0", "demo", "web", token=tok).start(ready=r"control plane")
    m = _cert_refused(p)
    assert m.group(1) == "403" and "expired" in m.group(2), m.group(0)
    assert reted.proxy("web-0") is None


def test_unknown_token_refused(reted, tmp_path):
    p = CPProxy(reted, tmp_path, "web-0", "demo", "web", token="not-a-token").start(ready=r"control plane")
    assert _cert_refused(p).group(1) == "403"


def test_token_scope_wins_over_the_claimed_identity_and_the_stream_is_refused(reted, tmp_path):
    """A token for demo/web used by a proxy that claims other/admin: the
    certificate names demo/web whatever the CSR asked; the hello then claims
    other/admin, so reted refuses the stream and sends no configuration."""
    tok = reted.token("demo", "web")
    p = CPProxy(reted, tmp_path, "sneaky-0", "other", "admin", token=tok).start(ready=r"control plane")
    wait_for(lambda: os.path.exists(p.cert_path), 30, 0.1, "the certificate")
    assert cert_sans(p.cert_path) == ["URI:spiffe://cluster.local/ns/demo/sa/web"]
    log_has(p.log, r"reted refused the stream: hello names other/admin but the certificate is "
                   r"spiffe://cluster.local/ns/demo/sa/web")
    log_has(reted.log, r"refusing stream .*hello names other/admin")
    assert "ready:" not in p.log() and "configuration version" not in p.log()
    assert reted.proxies() == []
    assert not os.path.exists(os.path.join(p.data, "config.json"))
    st, _ = reted.get("workload", "other", "sneaky-0")
    assert st == 404
    st, _ = reted.get("workload", "demo", "sneaky-0")
    assert st == 404


# ---------------------------------------------------------------- rotation and outages


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_rotation_with_30_second_certificates_under_traffic(tmp_path):
    reted = start_reted(tmp_path, "--cert-ttl", "30s")
    m = echo_service_mesh(reted, tmp_path)
    proxies = (m["server"], m["client"])
    first = {p.name: _read(p.cert_path) for p in proxies}
    traffic = start_traffic(m["client"].outbound, rate=20, duration=40)
    rc, out = finish_traffic(traffic, timeout=120)
    assert rc == 0, out
    assert " err=0 " in out, out
    for p in proxies:
        assert _read(p.cert_path) != first[p.name], f"{p.name} never renewed:\n{p.log()[-3000:]}"
        assert "renewed certificate" in p.log()
        r = openssl("verify", "-CAfile", reted.bundle, p.cert_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert cert_sans(p.cert_path) == [f"URI:{p.spiffe}"]
        assert stat.S_IMODE(os.stat(p.key_path).st_mode) == 0o600
    # both proxies still in sync, with a certificate valid in the future
    for p in proxies:
        st = reted.wait_synced(p.name)
        assert st["certExpiresAt"] > time.time()


def test_reted_killed_under_traffic_then_proxies_reconnect(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    traffic = start_traffic(m["client"].outbound, rate=20, duration=20)
    served = lambda: proxy_metric(m["echo_host"], "istio_requests_total")  # noqa: E731 (at the app's sidecar)
    wait_for(lambda: served() >= 20, 30, 0.2, "traffic flowing")
    reted.kill(signal.SIGKILL)
    for p in (m["server"], m["client"]):
        log_has(p.log, r"config stream to .* closed; serving version")
    # reted stays down while the mesh keeps serving (two more seconds' worth)
    down_at = served()
    wait_for(lambda: served() >= down_at + 40, 30, 0.2, "traffic served while reted is down")
    reted.start()
    for p in (m["server"], m["client"]):
        reted.wait_synced(p.name, timeout=60)
    rc, out = finish_traffic(traffic, timeout=90)
    assert rc == 0, out
    assert curl_status(m["client"].outbound, "echo") == 200


def test_proxy_restarted_while_reted_is_down_serves_its_saved_config(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    client = m["client"]
    reted.kill(signal.SIGKILL)
    assert client.stop() == 0
    client.start()  # no reted: it must come up from its data dir
    assert "serving the saved configuration version" in client.log()
    body = curl_json(client.outbound, "echo", "/after-restart")
    assert body["path"] == "/after-restart"
    assert body["headers"]["x-forwarded-client-cert"].endswith(f"URI={client.spiffe}")
    reted.start()
    reted.wait_synced("client-0", timeout=60)
    reted.wait_synced("echo-0", timeout=60)
    assert curl_status(client.outbound, "echo") == 200


# ---------------------------------------------------------------- NACK


def _local_proxy_doc(tmp_path, p_name, ns, sa, host, data, upstream_service, listen):
    import json
    doc = {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy", "metadata": {"name": p_name, "namespace": ns},
           "spec": {"serviceAccount": sa, "address": host,
                    "tls": {"certFile": f"{data}/cert.pem", "keyFile": f"{data}/key.pem",
                            "caFile": f"{data}/bundle.pem"},
                    "upstreams": [{"listen": listen, "service": upstream_service, "port": 80}]}}
    path = os.path.join(str(tmp_path), f"{p_name}.proxy.yaml")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def test_proxy_registers_the_mesh_port_of_its_own_proxy_document(reted, tmp_path):
    """The mesh listener is configurable (spec.listeners.mesh): a
    control-plane proxy registers the port it serves, not 15008, even when
    its Proxy document names a Service reted has not sent yet."""
    import json
    from mesh import fresh_host
    host = fresh_host()
    data = os.path.join(str(tmp_path), "proxy-mp-0")
    cfg = _local_proxy_doc(tmp_path, "mp-0", "demo", "mp", host, data, "notyet", f"{host}:9191")
    with open(cfg) as f:
        doc = json.load(f)
    doc["spec"]["listeners"] = {"mesh": f"{host}:16008"}
    with open(cfg, "w") as f:
        json.dump(doc, f)
    CPProxy(reted, tmp_path, "mp-0", "demo", "mp", host=host, data_dir=data,
            extra=["--config", cfg]).start(ready=r"rejected configuration version")
    st, body = reted.get("workload", "demo", "mp-0")
    assert st == 200, body
    assert body["spec"]["meshPort"] == 16008, body


def test_reted_accepts_every_short_name_retectl_does(reted):
    """One kinds table: `ap` and `mc` (retectl's) resolve in reted's API too."""
    for word in ("ap", "mc", "authz", "pa", "wg", "wl", "svc", "dr"):
        st, body = reted.get(word, "demo")
        assert st == 200, (word, body)


def test_nacked_config_is_visible_and_the_proxy_keeps_its_last_good_one(reted, tmp_path):
    """A proxy whose own Proxy document has an upstream to Service `extra`:
    fine while reted has `extra`; once `extra` is deleted, the pushed snapshot
    no longer loads, the proxy NACKs it with the loader's error, keeps
    serving the previous one, and reted shows NACK and the error."""
    from mesh import fresh_host
    m = echo_service_mesh(reted, tmp_path)
    reted.apply_ok([service("extra", "demo", [(80, "HTTP", m["echo_port"])], {"app": "echo"})])
    host = fresh_host()
    data = os.path.join(str(tmp_path), "proxy-up-0")
    cfg = _local_proxy_doc(tmp_path, "up-0", "demo", "up", host, data, "extra", f"{host}:9191")
    up = start_cp_proxy(reted, tmp_path, "up-0", "demo", "up", host=host, data_dir=data,
                        extra=["--config", cfg])
    wait_for(lambda: curl_status(f"{host}:9191", "anything") == 200, 30, 0.3, "upstream listener to extra")
    good = reted.proxy("up-0")["ackedVersion"]
    st, body = reted.delete("service", "demo", "extra")
    assert st == 200, body
    entry = reted.wait_status("up-0", "NACK")
    assert "extra" in entry["error"] and "upstreams[0].service" in entry["error"], entry
    assert entry["ackedVersion"] == good and entry["sentVersion"] > good
    log_has(up.log, rf"rejected configuration version {entry['sentVersion']}: .*keeping version {good}")
    log_has(reted.log, r"xds: demo/up-0 rejected version")
    # still serving the last good snapshot, which has `extra`
    assert curl_status(f"{host}:9191", "anything") == 200
    assert curl_status(up.outbound, "echo") == 200
    # other proxies were not affected
    assert reted.proxy("client-0")["status"] == "SYNCED"
    # once the config is acceptable again, the proxy takes it
    reted.apply_ok([service("extra", "demo", [(80, "HTTP", m["echo_port"])], {"app": "echo"})])
    synced = reted.wait_synced("up-0")
    assert synced["error"] == "" and synced["ackedVersion"] > entry["sentVersion"] - 1


def test_first_config_nacked_leaves_the_proxy_unready_and_visible(reted, tmp_path):
    """With no last good configuration there is nothing to serve: the proxy
    stays unready, NACKs, and reted shows the loader's error."""
    from mesh import fresh_host
    host = fresh_host()
    data = os.path.join(str(tmp_path), "proxy-up-0")
    cfg = _local_proxy_doc(tmp_path, "up-0", "demo", "up", host, data, "nosuch", f"{host}:9191")
    up = CPProxy(reted, tmp_path, "up-0", "demo", "up", host=host, data_dir=data,
                 extra=["--config", cfg]).start(ready=r"rejected configuration version")
    entry = reted.wait_status("up-0", "NACK")
    assert "nosuch" in entry["error"], entry
    assert "ready:" not in up.log()
    assert up.proc.poll() is None
    st, _ = reted.get("workload", "demo", "up-0")
    assert st == 200  # registered: it is connected, just not configured


# ---------------------------------------------------------------- PeerAuthentication


def _peer_auth(ns, mode):
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": ns}, "spec": {"mtls": {"mode": mode}}}


def _wait_acked(reted, name, version, timeout=30):
    """Until proxy `name` has ACKed a snapshot at least as new as `version`."""
    return wait_for(lambda: (lambda p: p if p and p["status"] == "SYNCED" and p["ackedVersion"] >= version
                             else None)(reted.proxy(name)), timeout, 0.2, f"{name} acked {version}")


def _plaintext_inbound(host):
    """curl straight to the inbound listener (15006), outside the mesh."""
    r = curl(f"{host}:15006", "echo", "/plain", "-o", "/dev/null", "-w", "%{http_code}", timeout=5)
    return r.returncode, r.stdout.decode()


def test_peer_authentication_strict_refuses_plaintext_permissive_accepts(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    host = m["echo_host"]
    res = reted.apply_ok([_peer_auth("demo", "PERMISSIVE")])
    _wait_acked(reted, "echo-0", int(res["results"][0]["resourceVersion"]))
    assert _plaintext_inbound(host) == (0, "200")
    res = reted.apply_ok([_peer_auth("demo", "STRICT")])
    _wait_acked(reted, "echo-0", int(res["results"][0]["resourceVersion"]))
    rc, code = _plaintext_inbound(host)
    assert rc != 0 and code in ("", "000"), (rc, code)
    # mTLS from the mesh still works under STRICT
    assert curl_status(m["client"].outbound, "echo") == 200
    res = reted.apply_ok([_peer_auth("demo", "PERMISSIVE")])
    _wait_acked(reted, "echo-0", int(res["results"][0]["resourceVersion"]))
    assert _plaintext_inbound(host) == (0, "200")
    assert curl_status(m["client"].outbound, "echo") == 200


# ---------------------------------------------------------------- operator API: credential


API_ENDPOINTS = [
    ("POST", "/api/v1/apply", "kind: Service\n"),
    ("GET", "/api/v1/resources/service", None),
    ("GET", "/api/v1/resources/service?namespace=demo", None),
    ("GET", "/api/v1/resources/service/demo/echo", None),
    ("DELETE", "/api/v1/resources/service/demo/echo", None),
    ("POST", "/api/v1/tokens", {"namespace": "demo", "serviceAccount": "x"}),
    ("GET", "/api/v1/proxies", None),
    ("GET", "/api/v1/proxies/demo/echo-0/config", None),
    ("GET", "/api/v1/check", None),
    ("POST", "/api/v1/identity", {"token": "x", "csr": "x"}),
    ("GET", "/api/v1/nosuch", None),
]


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic YWRtaW46YWRtaW4=", "Bearer ", "bearer-of-the-token",
                                  "token+1"], ids=["none", "wrong", "basic", "empty", "raw", "longer"])
def test_operator_api_needs_the_admin_credential(reted, auth):
    reted.apply_ok([service("echo", "demo", [(80, "HTTP", 8080)])])
    rev = reted.revision()
    if auth == "bearer-of-the-token":
        auth = reted.admin_token  # the token without "Bearer "
    elif auth == "token+1":
        auth = f"Bearer {reted.admin_token}x"
    for method, path, body in API_ENDPOINTS:
        st, j = reted.request(method, path, body, auth=auth or False)
        assert st == 401, (method, path, st, j)
        assert "admin token" in j["error"]
    assert reted.revision() == rev
    assert reted.get("service", "demo", "echo")[0] == 200
    # open, as istiod's monitoring port is: liveness, version, metrics
    for path in ("/healthz", "/version", "/metrics"):
        st, body = reted.request("GET", path, auth=False)
        assert st == 200, path


# ---------------------------------------------------------------- apply validation


def _svc(spec, name="a", **meta):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns1", **meta},
            "spec": spec}


def _wl(spec):
    return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": "w", "namespace": "ns1"}, "spec": spec}


def _route(spec, kind="HTTPRoute", api="gateway.networking.k8s.io/v1"):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "r", "namespace": "ns1"}, "spec": spec}


def _dr(spec):
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "d", "namespace": "ns1"}, "spec": spec}


def _authz(spec):
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "ns1"}, "spec": spec}


_PARENT = [{"kind": "Service", "name": "s"}]
_BACKEND = {"name": "s", "port": 80}

# (id, document, field path) — each document follows a valid Service s, so it is document 1
MALFORMED = [
    ("port-zero", _svc({"ports": [{"port": 0, "protocol": "HTTP"}]}), "spec.ports[0].port"),
    ("port-too-big", _svc({"ports": [{"port": 70000, "protocol": "HTTP"}]}), "spec.ports[0].port"),
    ("port-string", _svc({"ports": [{"port": "eighty", "protocol": "HTTP"}]}), "spec.ports[0].port"),
    ("protocol", _svc({"ports": [{"port": 80, "protocol": "SCTP"}]}), "spec.ports[0].protocol"),
    ("unknown-port-field", _svc({"ports": [{"port": 80, "protocol": "HTTP", "bogus": 1}]}), "spec.ports[0].bogus"),
    ("target-port", _svc({"ports": [{"port": 80}, {"port": 81, "targetPort": -1}]}), "spec.ports[1].targetPort"),
    ("selector-scalar", _svc({"selector": "app"}), "spec.selector"),
    ("unknown-metadata-field", _svc({}, colour="red"), "metadata.colour"),
    ("unknown-top-field", {**_svc({}), "status": {}}, "status"),
    ("no-name", {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ns1"}, "spec": {}},
     "metadata.name"),
    ("bad-name", _svc({}, name="Bad_Name"), "metadata.name"),
    ("no-kind", {"apiVersion": "v1", "metadata": {"name": "a"}, "spec": {}}, "kind"),
    ("unknown-kind", {"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "a"}, "spec": {}}, "kind"),
    ("api-version", {**_svc({}), "apiVersion": "v9"}, "apiVersion"),
    ("workload-address", _wl({"address": "not-an-ip", "serviceAccount": "x"}), "spec.address"),
    ("workload-no-address", _wl({"serviceAccount": "x"}), "spec.address"),
    ("backend-port", _route({"parentRefs": _PARENT, "rules": [{"backendRefs": [{"name": "s", "port": 99999}]}]}),
     "spec.rules[0].backendRefs[0].port"),
    ("unknown-parent", _route({"parentRefs": [{"kind": "Service", "name": "nosuch"}],
                               "rules": [{"backendRefs": [_BACKEND]}]}), "spec.parentRefs[0].name"),
    ("unknown-backend", _route({"parentRefs": _PARENT, "rules": [{"backendRefs": [{"name": "nosuch", "port": 80}]}]}),
     "spec.rules[0].backendRefs[0].name"),
    ("no-parent", _route({"rules": []}), "spec.parentRefs"),
    ("path-type", _route({"parentRefs": _PARENT, "rules": [{"matches": [{"path": {"type": "Bogus", "value": "/"}}],
                                                             "backendRefs": [_BACKEND]}]}),
     "spec.rules[0].matches[0].path.type"),
    ("duration", _route({"parentRefs": _PARENT, "rules": [{"timeouts": {"request": "soon"},
                                                            "backendRefs": [_BACKEND]}]}),
     "spec.rules[0].timeouts.request"),
    ("weight", _route({"parentRefs": _PARENT, "rules": [{"backendRefs": [{**_BACKEND, "weight": -3}]}]}),
     "spec.rules[0].backendRefs[0].weight"),
    ("tcp-two-rules", _route({"parentRefs": _PARENT, "rules": [{"backendRefs": [_BACKEND]}] * 2},
                             "TCPRoute", "gateway.networking.k8s.io/v1alpha2"), "spec.rules"),
    ("lb", _dr({"host": "s", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}),
     "spec.trafficPolicy.loadBalancer.simple"),
    ("dr-no-host", _dr({"trafficPolicy": {}}), "spec.host"),
    ("ejection", _dr({"host": "s", "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 101}}}),
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent"),
    ("action", _authz({"action": "MAYBE"}), "spec.action"),
    ("principals-scalar", _authz({"rules": [{"from": [{"source": {"principals": "x"}}]}]}),
     "spec.rules[0].from[0].source.principals"),
    ("authz-port", _authz({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}),
     "spec.rules[0].to[0].operation.ports[0]"),
    ("mtls-mode", {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "p", "namespace": "ns1"}, "spec": {"mtls": {"mode": "SOMETIMES"}}},
     "spec.mtls.mode"),
    ("mesh-mtls", {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
                   "metadata": {"name": "m", "namespace": "rete-system"}, "spec": {"defaultMtlsMode": "LOOSE"}},
     "spec.defaultMtlsMode"),
    ("workload-egress", _wl({"address": "10.0.0.1", "egress": ["./a", "no-namespace"]}), "spec.egress[1]"),
    ("mesh-egress", {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
                     "metadata": {"name": "m", "namespace": "rete-system"}, "spec": {"defaultEgress": ["ns*/a"]}},
     "spec.defaultEgress[0]"),
]


def test_reted_refuses_at_least_twenty_distinct_malformed_documents(shared_reted):
    """reted's answers, not this file's list: at least twenty malformed
    documents each refused (422) with its own field path and reason."""
    valid = _svc({"ports": [{"port": 80, "protocol": "HTTP"}]}, name="s")
    answers = set()
    for case, doc, _ in MALFORMED:
        st, body = shared_reted.apply([valid, doc], source=f"{case}.yaml")
        assert st == 422, (case, body)
        d = body["details"][0]
        answers.add((d["path"], d["reason"]))
    assert len(answers) >= 20, sorted(answers)


@pytest.fixture(scope="module")
def shared_reted(tmp_path_factory):
    r = start_reted(tmp_path_factory.mktemp("reted-shared"), persistent=True)
    yield r
    r.stop()


@pytest.mark.parametrize("doc,path", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_apply_rejects_malformed_document_with_its_field_path(shared_reted, doc, path):
    r = shared_reted
    valid = _svc({"ports": [{"port": 80, "protocol": "HTTP"}]}, name="s")
    rev = r.revision()
    st, body = r.apply([valid, doc], source="bad.yaml")
    assert st == 422, body
    assert body["details"], body
    d = body["details"][0]
    assert (d["source"], d["document"], d["path"]) == ("bad.yaml", 1, path), body
    assert d["reason"], body
    # nothing stored: neither the valid document nor the bad one
    assert r.revision() == rev
    assert r.get("service", "ns1", "s")[0] == 404
    kind = doc.get("kind") if doc.get("kind") != "Gizmo" else None
    if kind:
        name = doc.get("metadata", {}).get("name")
        if name:
            assert r.get(kind, doc["metadata"].get("namespace", "default"), name)[0] == 404


def test_apply_yaml_errors_name_the_document(shared_reted):
    r = shared_reted
    rev = r.revision()
    st, body = r.apply("kind: Service\nmetadata: {name: a}\n---\n- just\n- a list\n", source="list.yaml")
    assert st == 422 and body["details"][0]["document"] == 1 and body["details"][0]["source"] == "list.yaml", body
    st, body = r.apply("apiVersion: v1\nkind: Service\nmetadata: {name: a\n", source="broken.yaml")
    assert st == 422 and body["error"] == "invalid YAML" and "line" in body["details"][0]["reason"], body
    assert r.revision() == rev


def test_apply_is_all_or_nothing(shared_reted):
    r = shared_reted
    rev = r.revision()
    good1 = _svc({"ports": [{"port": 80, "protocol": "HTTP"}]}, name="g1")
    good2 = _svc({"ports": [{"port": 81, "protocol": "HTTP"}]}, name="g2")
    bad = _svc({"ports": [{"port": 80, "protocol": "HTTP", "colour": "red"}]}, name="g3")
    st, body = r.apply([good1, bad, good2], source="mixed.yaml")
    assert st == 422 and body["details"][0]["document"] == 1, body
    assert body["details"][0]["path"] == "spec.ports[0].colour"
    assert r.revision() == rev
    for n in ("g1", "g2", "g3"):
        assert r.get("service", "ns1", n)[0] == 404
    st, body = r.request("GET", "/api/v1/resources/service?namespace=ns1")
    assert st == 200 and body["items"] == []
    # the same two valid documents alone are stored
    st, body = r.apply([good1, good2], source="good.yaml")
    assert st == 200 and [x["action"] for x in body["results"]] == ["created", "created"], body
    for n in ("g1", "g2"):
        assert r.delete("service", "ns1", n)[0] == 200


# ---------------------------------------------------------------- optimistic concurrency


def test_optimistic_concurrency(reted):
    doc = _svc({"ports": [{"port": 80, "protocol": "HTTP"}]}, name="oc")
    res = reted.apply_ok([doc])["results"][0]
    assert res["action"] == "created"
    v1 = res["resourceVersion"]
    st, got = reted.get("service", "ns1", "oc")
    assert st == 200 and got["metadata"]["resourceVersion"] == v1
    # an update naming the current version succeeds
    doc2 = _svc({"ports": [{"port": 81, "protocol": "HTTP"}]}, name="oc", resourceVersion=v1)
    res2 = reted.apply_ok([doc2])["results"][0]
    assert res2["action"] == "configured" and int(res2["resourceVersion"]) > int(v1)
    v2 = res2["resourceVersion"]
    # the same version again is now stale: 409, nothing changes
    rev = reted.revision()
    st, body = reted.apply([_svc({"ports": [{"port": 82, "protocol": "HTTP"}]}, name="oc", resourceVersion=v1)])
    assert st == 409 and "resourceVersion" in body["error"], body
    assert reted.revision() == rev
    assert reted.get("service", "ns1", "oc")[1]["spec"]["ports"][0]["port"] == 81
    # a stale version in a multi-document apply refuses all of it
    ports = {"ports": [{"port": 83, "protocol": "HTTP"}]}
    st, body = reted.apply([_svc(ports, name="fresh"), _svc(ports, name="oc", resourceVersion=v1)])
    assert st == 409, body
    assert reted.get("service", "ns1", "fresh")[0] == 404 and reted.revision() == rev
    # delete with a stale version: 409; with the current one: 200
    st, body = reted.delete("service", "ns1", "oc", resource_version=v1)
    assert st == 409, body
    assert reted.get("service", "ns1", "oc")[0] == 200
    st, body = reted.delete("service", "ns1", "oc", resource_version=v2)
    assert st == 200, body
    assert reted.get("service", "ns1", "oc")[0] == 404
    assert reted.delete("service", "ns1", "oc")[0] == 404


# ---------------------------------------------------------------- registry and proxy status


def _workload(reted, ns, name):
    st, body = reted.get("workload", ns, name)
    return body if st == 200 else None


def test_registry_proxy_workload_registered_and_removed_on_drain(reted, tmp_path):
    p = start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", inbound=[(8080, "HTTP")],
                       labels={"app": "web", "version": "v1"})
    wl = wait_for(lambda: _workload(reted, "demo", "web-0"), 20, 0.2, "Workload demo/web-0")
    assert wl["spec"]["address"] == p.host and wl["spec"]["serviceAccount"] == "web"
    assert wl["spec"]["labels"] == {"app": "web", "version": "v1"}
    assert wl["metadata"]["annotations"]["rete.dev/registered-by"] == "proxy"
    assert p.stop() == 0  # SIGTERM: the proxy drains and says so
    wait_for(lambda: _workload(reted, "demo", "web-0") is None, 20, 0.2, "Workload removed after drain")
    log_has(reted.log, r"xds: demo/web-0 is draining: deregistering")


def test_registry_proxy_gone_past_the_grace_period_is_removed(tmp_path):
    reted = start_reted(tmp_path, "--grace", "2s")
    p = start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", labels={"app": "web"})
    wait_for(lambda: _workload(reted, "demo", "web-0"), 20, 0.2, "Workload demo/web-0")
    p.stop(signal.SIGKILL)  # no drain message
    reted.wait_status("web-0", "DISCONNECTED", timeout=20)
    assert _workload(reted, "demo", "web-0")  # still there within the grace period
    wait_for(lambda: _workload(reted, "demo", "web-0") is None, 40, 0.3, "Workload removed after the grace period")
    wait_for(lambda: reted.proxy("web-0") is None, 20, 0.3, "proxy gone from /api/v1/proxies")
    log_has(reted.log, r"xds: demo/web-0 gone for 2 s: removing it from the registry")


def test_registry_restarted_proxy_within_grace_keeps_its_workload(tmp_path):
    reted = start_reted(tmp_path, "--grace", "60s")
    p = start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", labels={"app": "web"})
    p.stop(signal.SIGKILL)
    reted.wait_status("web-0", "DISCONNECTED", timeout=20)
    p.start()
    reted.wait_synced("web-0")
    assert _workload(reted, "demo", "web-0")
    assert len([x for x in reted.proxies() if x["name"] == "web-0"]) == 1


def test_proxy_status_shows_versions_sync_and_cert_expiry(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    items = {p["name"]: p for p in reted.proxies()}
    assert set(items) == {"echo-0", "client-0"}
    for name, proxy in (("echo-0", m["server"]), ("client-0", m["client"])):
        p = reted.wait_synced(name)
        assert p["namespace"] == "demo" and p["spiffeId"] == proxy.spiffe and p["address"] == proxy.host
        assert p["sentVersion"] > 0 and p["ackedVersion"] == p["sentVersion"]
        assert p["connected"] is True and p["ready"] is True and p["error"] == ""
        # default lifetime 24 h
        assert 23 * 3600 < p["certExpiresAt"] - time.time() <= 24 * 3600 + 60, p
        assert abs(p["lastSeen"] - time.time()) < 120
    # a change moves both the sent and the acked version
    before = reted.proxy("client-0")["ackedVersion"]
    res = reted.apply_ok([service("other", "demo", [(80, "HTTP", 9999)])])
    v = int(res["results"][0]["resourceVersion"])
    p = _wait_acked(reted, "client-0", v)
    assert p["ackedVersion"] > before and p["sentVersion"] == p["ackedVersion"]
    _wait_acked(reted, "echo-0", v)
    st, chk = reted.request("GET", "/api/v1/check")
    assert st == 200 and chk["ok"] is True, chk


# ---------------------------------------------------------------- namespace isolation


def _docs(entries):
    return snapshot_docs(entries)


def test_a_proxy_gets_only_its_own_namespace_policies(reted, tmp_path):
    def policy(ns, name, action="ALLOW"):
        return _authz({"action": action, "rules": [{}]}) | {
            "metadata": {"name": name, "namespace": ns}}

    def pa(ns, mode):
        return {**_peer_auth(ns, mode), "metadata": {"name": f"pa-{ns}", "namespace": ns}}
    reted.apply_ok([policy("team-a", "allow-a"), policy("team-b", "deny-b", "DENY"),
                    policy("rete-system", "mesh-audit", "AUDIT"), pa("team-a", "PERMISSIVE"),
                    pa("team-b", "STRICT")])
    a = start_cp_proxy(reted, tmp_path, "a-0", "team-a", "sa-a")
    b = start_cp_proxy(reted, tmp_path, "b-0", "team-b", "sa-b")
    for proxy, own, other in ((a, "team-a", "team-b"), (b, "team-b", "team-a")):
        # b's registration may still be on its way to a: wait for a settled snapshot
        reted.wait_synced(proxy.name)
        st, cfg = reted.proxy_config(proxy.ns, proxy.name)
        assert st == 200, cfg
        assert cfg["version"] == cfg["proxy"]["sentVersion"]
        docs = _docs(cfg["resources"])
        pols = {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs
                if d["kind"] in ("AuthorizationPolicy", "PeerAuthentication")}
        assert {ns for _, ns, _ in pols} == {own, "rete-system"}, pols
        assert not any(ns == other for _, ns, _ in pols)
        # the snapshot the proxy saved is the one reted sent, with the same policies
        import json
        def saved():
            with open(os.path.join(proxy.data, "config.json")) as f:
                return json.load(f)
        wait_for(lambda: saved()["version"] == reted.proxy_config(proxy.ns, proxy.name)[1]["version"],
                 20, 0.2, f"{proxy.name} saved the snapshot reted sent")
        assert saved()["resources"] == reted.proxy_config(proxy.ns, proxy.name)[1]["resources"]
    # no config for a proxy that does not exist
    assert reted.proxy_config("team-b", "a-0")[0] == 404


def test_apply_error_document_index_counts_empty_documents(shared_reted):
    """Regression: validation errors numbered documents without the empty
    ones, while YAML/shape errors (and the proxy's loader) count every
    document of the stream, so the same position got two different numbers."""
    valid = "apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: ns1}\nspec: {ports: [{port: 80}]}\n"
    for bad, path in (("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns1}\n"
                       "spec: {ports: [{port: 0}]}\n", "spec.ports[0].port"),
                      ("apiVersion: v1\nkind: Gizmo\nmetadata: {name: a}\nspec: {}\n", "kind")):
        st, body = shared_reted.apply(f"---\n{valid}---\n---\n{bad}", source="gaps.yaml")
        assert st == 422, body
        assert (body["details"][0]["document"], body["details"][0]["path"]) == (2, path), body


def test_renewal_due_while_reted_is_down_happens_once_it_is_back(tmp_path):
    """Regression: a renewal attempt that failed (reted down at half-life)
    was never retried, so the certificate expired even after reted had come
    back. 30-second certificates: reted is down across the renewal time and
    back before expiry; the proxies must renew before their certificate ends."""
    reted = start_reted(tmp_path, "--cert-ttl", "30s")
    m = echo_service_mesh(reted, tmp_path)
    proxies = (m["server"], m["client"])
    issued = time.time()
    first = {p.name: _read(p.cert_path) for p in proxies}
    reted.kill(signal.SIGKILL)
    for p in proxies:  # renewal (at 15 s +- 3 s) fails while reted is down
        log_has(p.log, r"certificate renewal failed; retrying", timeout=40)
    reted.start()
    for p in proxies:
        wait_for(lambda: _read(p.cert_path) != first[p.name], 40, 0.3, f"{p.name} renewed after reted came back")
        reted.wait_synced(p.name, timeout=40)
    # time passing is what is under test here (not synchronisation): past
    # the first certificates' end, the proxies serve on the renewed ones
    time.sleep(max(0.0, issued + 32 - time.time()))
    assert curl_status(m["client"].outbound, "echo") == 200
    for p in proxies:
        assert reted.proxy(p.name)["certExpiresAt"] > time.time()


# ---------------------------------------------------------------- deltas


def test_changes_reach_proxies_as_deltas_that_rebuild_the_full_snapshot(reted, tmp_path):
    """After the first (whole) snapshot, a change travels as a delta (the
    documents that changed, the keys removed); the set a proxy rebuilds from
    deltas is exactly the snapshot reted would send whole."""
    m = echo_service_mesh(reted, tmp_path)
    client = m["client"]
    extra = service("extra", "demo", [(81, "HTTP", m["echo_port"])], selector={"app": "echo"})
    reted.apply_ok([extra], "extra.yaml")
    reted.wait_synced("client-0", "demo")
    wait_for(lambda: curl_status(client.outbound, "extra:81") == 200, 30, 0.3, "extra reachable")
    st, j = reted.delete("service", "demo", "extra")
    assert st == 200, j
    reted.wait_synced("client-0", "demo")
    wait_for(lambda: curl_status(client.outbound, "extra:81") == 404, 30, 0.3, "extra gone")
    assert "(delta)" in client.log(), client.log()[-2000:]
    st, cfg = reted.proxy_config("demo", "client-0")
    with open(os.path.join(client.data, "config.json")) as f:
        saved = json.load(f)
    assert saved["resources"] == cfg["resources"]
    assert saved["version"] == cfg["version"]


# ---------------------------------------------------------------- certificate lifetime


def test_mesh_config_sets_the_workload_certificate_lifetime(reted, tmp_path):
    """MeshConfig workloadCertificateTTL wins over reted --cert-ttl (24 h
    here) for every certificate issued after it is applied."""
    mc = {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
          "metadata": {"name": "mesh", "namespace": "rete-system"}, "spec": {"workloadCertificateTTL": "2h"}}
    reted.apply_ok([mc])
    p = start_cp_proxy(reted, tmp_path, "ttl-0", "demo", "web")
    left = reted.proxy("ttl-0")["certExpiresAt"] - time.time()
    assert 2 * 3600 - 120 < left <= 2 * 3600 + 60, left
    end = openssl("x509", "-noout", "-enddate", "-in", p.cert_path).stdout
    assert "notAfter=" in end
    p.stop()
    # out of range: refused with the field path
    st, body = reted.apply(json.dumps({**mc, "spec": {"workloadCertificateTTL": "1s"}}))
    assert st == 422 and body["details"][0]["path"] == "spec.workloadCertificateTTL", body


# ---------------------------------------------------------------- push streams


def _padded_services(ns, n, gen, labels=1):
    """n Services whose documents change with `gen`, each padded with
    `labels` labels of 60 characters (to make snapshots and deltas large)."""
    out = []
    for i in range(n):
        d = service(f"s{i}", ns, [(80, "HTTP", 8080)], selector={"app": f"s{i}"})
        d["metadata"]["labels"] = {"gen": str(gen), **{f"pad{k}": "x" * 60 for k in range(labels)}}
        out.append(d)
    return out


def test_a_large_snapshot_reaches_fast_and_slow_readers_intact(reted, tmp_path):
    """A whole snapshot many times the stream's write chunk goes out in
    chunks from one shared copy: a reader that takes it a few kilobytes at a
    time gets it as intact as one that reads at once."""
    applied = _padded_services("big", 500, 0, labels=30)
    reted.apply_ok(applied, "big.yaml")
    fast = StreamClient(reted, tmp_path, "fast-0", "big", "sa")
    slow = StreamClient(reted, tmp_path, "slow-0", "big", "sa", rcvbuf=4096)
    slow.recv_size = 4096
    for c in (fast, slow):
        msg = c.message()
        assert msg["type"] == "config", msg
        assert len(json.dumps(msg["resources"])) > 1 << 20  # over twenty write chunks
        c.ack(msg)
        docs = snapshot_docs(msg["resources"])
        services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
        assert len(services) == len(applied)
        for want in applied:
            got = services[want["metadata"]["name"]]
            assert got["metadata"]["labels"] == want["metadata"]["labels"]
            assert got["spec"]["ports"] == want["spec"]["ports"]
        c.close()
    assert reted.stop() == 0, reted.log()[-3000:]  # every queued reference released (LeakSanitizer)


def test_a_stalled_reader_is_bounded_then_cut_off_and_resyncs_whole(reted, tmp_path):
    """A proxy that stops reading while changes keep coming: what reted holds
    for its stream never exceeds the published bound; once it is too far
    behind its stream is closed (not queued without end), a proxy that keeps
    reading stays in sync throughout, and the laggard reconnecting gets the
    whole current snapshot."""
    import threading
    reted.apply_ok(_padded_services("big", 300, 0), "big.yaml")
    limit = reted_metric(reted, "rete_reted_stream_buffered_bytes_limit")
    assert limit and limit < 4 << 20
    stalled = StreamClient(reted, tmp_path, "stalled-0", "big", "sa", rcvbuf=4096)
    healthy = StreamClient(reted, tmp_path, "healthy-0", "big", "sa")
    stop = threading.Event()
    seen = []

    reader_errors = []

    def keep_reading():
        try:
            while not stop.is_set():
                msg = healthy.message()
                seen.append(msg["version"])
                healthy.ack(msg)
        except (OSError, EOFError, ValueError) as e:
            # closing the healthy stream at the end ends the read; an error
            # before that is the healthy reader losing its stream: a failure
            if not stop.is_set():
                reader_errors.append(repr(e))
    reader = threading.Thread(target=keep_reading, daemon=True)
    reader.start()
    try:
        reted.wait_synced("healthy-0", "big")
        gen = 0
        while not reted_metric(reted, "rete_reted_streams_closed_behind_total"):
            gen += 1
            assert gen < 400, "the stalled stream was never closed"
            pushes = reted_metric(reted, "rete_reted_config_pushes_total")
            reted.apply_ok(_padded_services("big", 300, gen), "big.yaml")
            wait_for(lambda: reted_metric(reted, "rete_reted_config_pushes_total") > pushes, 20, 0.02,
                     "the change pushed")
            assert reted_metric(reted, "rete_reted_stream_buffered_bytes", 'stream="max"') <= limit
        log_has(reted.log, r"http: stream to .* bytes behind; closing it")
        assert reted.proxy("stalled-0", "big")["status"] == "DISCONNECTED"
        rev = reted.revision()
        wait_for(lambda: (reted.proxy("healthy-0", "big") or {}).get("ackedVersion", 0) >= rev, 30, 0.2,
                 "the healthy reader acked the last change")
        assert reted.proxy("healthy-0", "big")["status"] == "SYNCED"
    finally:
        stop.set()
        healthy.close()
        reader.join(10)
    assert not reader_errors, f"the healthy reader lost its stream: {reader_errors}"
    # the laggard's socket ends after what the kernel already held
    with pytest.raises(EOFError):
        while True:
            stalled.message()
    stalled.close()
    again = StreamClient(reted, tmp_path, "stalled-0", "big", "sa")
    msg = again.message()
    assert msg["type"] == "config", msg  # whole, not a delta
    docs = snapshot_docs(msg["resources"])
    assert {d["metadata"]["labels"]["gen"] for d in docs if d["kind"] == "Service"} == {str(gen)}
    again.ack(msg)
    reted.wait_synced("stalled-0", "big")
    again.close()
    assert reted.stop() == 0, reted.log()[-3000:]  # every queued reference released (LeakSanitizer)
