"""retectl analyze against the real reted: every analyser has a resource set
that triggers it and one that does not (issue 12). reted refuses what a
proxy could not load (routes to unknown Services...), so these are the
mistakes it accepts: a rule that sends nowhere or never matches, selectors
that pick nothing, contradicting PeerAuthentications, proxies that reject or
miss their configuration, certificates about to expire (reted runs with
--cert-ttl 1h, so every proxy's certificate expires within the hour). reted's
GET /api/v1/analyze (the same analysers, for the dashboard) answers the
same findings."""
import json
import os

from controlplane import StreamClient, start_reted, wait_for, workload_group
from helpers import build_path, run_tool


def analyze(reted, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETE_")}
    env["HOME"] = str(tmp_path)
    tok = tmp_path / "admin.token"
    tok.write_text(reted.admin_token)
    return run_tool([build_path("retectl"), "--server", reted.api, "--token-file", str(tok), "analyze", *args],
                    capture_output=True, text=True, env=env, timeout=30)


def svc(name, ns, app):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}


def wl(name, ns, app, address):
    return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"address": address, "serviceAccount": app, "labels": {"app": app}}}


def route(name, ns, rules):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"kind": "Service", "name": "web", "port": 80}], "rules": rules}}


def authz(name, ns, app):
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": "DENY",
                     "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}


def peer_authn(name, ns, mode, app=None):
    spec = {"mtls": {"mode": mode}}
    if app:
        spec["selector"] = {"matchLabels": {"app": app}}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def backend(name, weight=None):
    b = {"name": name, "port": 80}
    if weight is not None:
        b["weight"] = weight
    return b


def good(ns):
    return [svc("web", ns, "web"), wl("web-1", ns, "web", "10.1.0.1"),
            route("split", ns, [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/a"}}], "backendRefs": [backend("web")]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/b"}}], "backendRefs": [backend("web", 0), backend("web", 1)]}]),
            authz("deny-admin", ns, "web"), peer_authn("mesh", ns, "STRICT"),
            peer_authn("web-only", ns, "STRICT", app="web")]


def findings(p):
    return [(f["code"], f["level"], f["resource"]["kind"], f["resource"]["name"])
            for f in json.loads(p.stdout)["findings"]]


def test_analyze_clean_and_each_finding(tmp_path):
    reted = start_reted(tmp_path, "--cert-ttl", "1h")
    try:
        reted.apply_ok(good("good"))
        p = analyze(reted, tmp_path, "-n", "good")
        assert p.returncode == 0 and p.stdout == "No issues found.\n", (p.returncode, p.stdout, p.stderr)
        assert json.loads(analyze(reted, tmp_path, "-n", "good", "-o", "json").stdout) == {"findings": []}

        bad = [svc("web", "bad", "web"), wl("web-1", "bad", "web", "10.1.0.2"),
               svc("lonely", "bad", "nobody"),
               route("nowhere", "bad", [{"backendRefs": [backend("web", 0)]}]),
               route("shadow", "bad", [
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/x"}}], "backendRefs": [backend("web")]},
                   {"matches": [{"path": {"type": "PathPrefix", "value": "/x"}}], "backendRefs": [backend("web")]}]),
               authz("stray", "bad", "nobody"),
               peer_authn("one", "bad", "STRICT"), peer_authn("two", "bad", "PERMISSIVE"),
               peer_authn("web-strict", "bad", "STRICT", app="web"),
               peer_authn("web-off", "bad", "DISABLE", app="web")]
        reted.apply_ok(bad)
        p = analyze(reted, tmp_path, "-n", "bad", "-o", "json")
        assert p.returncode == 1, (p.stdout, p.stderr)  # errors among the findings
        got = set(findings(p))
        assert got == {
            ("RT0001", "Error", "HTTPRoute", "nowhere"),
            ("RT0002", "Warning", "HTTPRoute", "shadow"),
            ("RT0003", "Warning", "Service", "lonely"),
            ("RT0004", "Warning", "AuthorizationPolicy", "stray"),
            ("RT0005", "Error", "PeerAuthentication", "two"),
            ("RT0005", "Error", "PeerAuthentication", "web-strict"),  # named on the later of the two (by name)
        }, got
        # reted runs the same analysers (src/common/analyze.c) for the
        # dashboard: GET /api/v1/analyze answers the same findings, behind
        # the admin token
        st, doc = reted.request("GET", "/api/v1/analyze?namespace=bad")
        assert st == 200 and doc["errors"] is True, (st, doc)
        assert doc["findings"] == json.loads(p.stdout)["findings"]
        st, doc = reted.request("GET", "/api/v1/analyze?namespace=good")
        assert st == 200 and doc == {"findings": [], "errors": False}, doc
        st, doc = reted.request("GET", "/api/v1/analyze")  # every namespace
        assert st == 200 and set(
            (f["code"], f["level"], f["resource"]["kind"], f["resource"]["name"]) for f in doc["findings"]
            if f["resource"]["namespace"] == "bad") == got
        assert reted.request("GET", "/api/v1/analyze", auth=False)[0] == 401
        assert reted.request("POST", "/api/v1/analyze", body={})[0] == 405
        # the table names each with its hint
        table = analyze(reted, tmp_path, "-n", "bad").stdout
        assert "Error [RT0001] HTTPRoute bad/nowhere: spec.rules[0]" in table and "    hint: " in table
        # the good namespace is still clean with the bad one beside it
        assert analyze(reted, tmp_path, "-n", "good").returncode == 0

        # proxies: one rejects its configuration, one never acknowledges;
        # both hold 1 h certificates
        reted.apply_ok([workload_group("wg-px", "px", "px")])
        nack = StreamClient(reted, tmp_path, "nack-0", "px", "px")
        msg = nack.message()
        nack.send({"type": "nack", "nonce": msg["nonce"], "version": msg["version"],
                   "error": "control-plane: document 3: spec.x: bad"})
        stale = StreamClient(reted, tmp_path, "stale-0", "px", "px")
        stale.message()  # read, never acknowledged
        wait_for(lambda: ("RT0006", "Error", "Proxy", "nack-0") in findings(analyze(reted, tmp_path, "-n", "px", "-o", "json")),
                 20, 0.2, "the NACK reported")
        p = analyze(reted, tmp_path, "-n", "px", "-o", "json")
        got = set(findings(p))
        assert ("RT0007", "Warning", "Proxy", "stale-0") in got, got
        assert {("RT0008", "Warning", "Proxy", "nack-0"), ("RT0008", "Warning", "Proxy", "stale-0")} <= got, got
        assert "spec.x: bad" in p.stdout
        nack.close()
        stale.close()
    finally:
        reted.stop()
