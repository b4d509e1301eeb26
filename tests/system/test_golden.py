"""Golden metrics without Prometheus (issue 12): proxies send reted a
summary of their traffic on the config stream; reted serves success rate,
requests/s and latency percentiles per service, workload, route and edge on
GET /api/v1/stats, and `retectl stat` prints them.

reted runs with --stats-bucket 1s (its windows are 6 and 60 buckets: 6 s
and 60 s instead of 1 m and 10 m) and the proxies with --stats-interval 1,
so a report and its ageing take seconds. A known mix goes client-0 ->
echo (HTTPRoute echo-route): OK requests and ?status=500 ones."""
import http.client
import json
import os
import re
import urllib.request

from controlplane import apply_and_push, echo_service_mesh, proxy_metric, start_reted
from helpers import build_path, promtool_findings, run_tool, wait_for
from mesh import http_route

OK, FAILED = 30, 10


def send_mix(outbound, ok=OK, failed=FAILED):
    host, port = outbound.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for i in range(ok + failed):
            path = "/ok" if i < ok else "/fail?status=500"
            conn.request("GET", path, headers={"Host": "echo"})
            r = conn.getresponse()
            r.read()
            assert r.status == (200 if i < ok else 500), (path, r.status)
    finally:
        conn.close()


def stats(reted, by, window="10m", **q):
    qs = "&".join(f"{k}={v}" for k, v in {"by": by, "window": window, **q}.items())
    st, body = reted.request("GET", f"/api/v1/stats?{qs}")
    assert st == 200, body
    return body


def item(body, **match):
    for it in body["items"]:
        if all(it.get(k) == v for k, v in match.items()):
            return it
    return None


def retectl(reted, tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETE_")}
    env["HOME"] = str(tmp_path)
    tok = tmp_path / "admin.token"
    tok.write_text(reted.admin_token)
    return run_tool([build_path("retectl"), "--server", reted.api, "--token-file", str(tok), *args],
                    capture_output=True, text=True, env=env, timeout=30)


def test_golden_metrics_by_service_route_edge_and_ageing(tmp_path):
    reted = start_reted(tmp_path, "--stats-bucket", "1s")
    try:
        m = echo_service_mesh(reted, tmp_path, client_extra=["--stats-interval", "1"],
                              echo_extra=["--stats-interval", "1"])
        client, server = m["client"], m["server"]
        apply_and_push(reted, [http_route("echo-route", "demo", "echo",
                                          [{"backendRefs": [{"name": "echo", "port": 80}]}])], [client, server])
        # what echo_service_mesh sent while waiting for the mesh (before the
        # route) is in the windows too: echo-0 counted it
        before = proxy_metric(server.host, "rete_proxy_route_requests_total")
        send_mix(client.outbound)
        expect = before + OK + FAILED

        def service_counted():
            it = item(stats(reted, "service"), name="echo", namespace="demo")
            return it if it and it["requests"] >= expect else None
        svc = wait_for(service_counted, 30, 0.3, "the mix counted per service")
        assert svc["requests"] == expect
        assert svc["failures"] == FAILED
        assert svc["service"] == "echo.demo.svc.cluster.local"
        assert 0 < svc["successRate"] < 1
        assert svc["latencyMs"]["p50"] is not None and svc["latencyMs"]["p99"] >= svc["latencyMs"]["p50"]

        # per route: the callers' view, the HTTPRoute by name; exactly the mix
        rt = wait_for(lambda: (lambda r: r if r and r["requests"] >= OK + FAILED else None)(
            item(stats(reted, "route"), name="echo-route")), 30, 0.3, "the mix counted per route")
        assert (rt["requests"], rt["failures"], rt["namespace"]) == (OK + FAILED, FAILED, "demo")
        assert rt["successRate"] == OK / (OK + FAILED)
        # per edge, with the real source workload (the destination's view: peer metadata)
        edge = item(stats(reted, "edge"), source={"namespace": "demo", "workload": "client-0"},
                    destination={"namespace": "demo", "workload": "echo-0"})
        assert edge and edge["requests"] == svc["requests"] and edge["failures"] == svc["failures"]
        # and the source's view of the same edge agrees (once its report is in)
        edge_src = wait_for(lambda: (lambda e: e if e and e["requests"] == svc["requests"] else None)(
            item(stats(reted, "edge", reporter="source"), source={"namespace": "demo", "workload": "client-0"})),
            30, 0.3, "the client's view of the edge")
        assert edge_src["destination"] == {"namespace": "demo", "workload": "echo-0"}
        assert edge_src["failures"] == svc["failures"]
        wl = item(stats(reted, "workload", namespace="demo", name="echo-0"), name="echo-0")
        assert wl and wl["requests"] == svc["requests"]

        # retectl stat: the same numbers
        r = retectl(reted, tmp_path, "stat", "route", "echo-route", "-n", "demo", "--window", "10m", "-o", "json")
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)["items"]
        assert [(i["name"], i["requests"], i["failures"]) for i in got] == [("echo-route", OK + FAILED, FAILED)]
        r = retectl(reted, tmp_path, "stat", "route", "-n", "demo", "--window", "10m")
        assert r.returncode == 0, r.stderr
        assert re.search(r"^demo\s+echo-route\s+echo\.demo\.svc\.cluster\.local\s+75\.00%", r.stdout, re.M), r.stdout
        r = retectl(reted, tmp_path, "stat", "edge", "-n", "demo", "--window", "10m")
        assert r.returncode == 0, r.stderr
        assert re.search(r"^demo/client-0\s+demo/echo-0\s", r.stdout, re.M), r.stdout
        r = retectl(reted, tmp_path, "stat", "pods")
        assert r.returncode == 2 and "service|workload|route|edge" in r.stderr

        # the credential guards it like the rest of the API
        st, _ = reted.request("GET", "/api/v1/stats?by=service", auth=False)
        assert st == 401
        st, body = reted.request("GET", "/api/v1/stats?by=pods")
        assert st == 400 and "by:" in body["error"]

        # reted counted what it accepted, refused nothing
        assert reted_counter(reted, 'rete_reted_stats_entries_total{result="accepted"}') > 0
        assert reted_counter(reted, 'rete_reted_stats_entries_total{result="refused"}') == 0

        # the proxies' route families: promtool-clean, route_name labelled
        with urllib.request.urlopen(f"http://{client.host}:15000/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert promtool_findings(text) == []
        assert re.search(r'rete_proxy_route_requests_total\{reporter="source",route_name="echo-route",'
                         r'route_namespace="demo",.*classification="failure"\} 10$', text, re.M), text

        # a proxy that stops reporting ages out of the window (the short one: 6 s)
        client.stop()
        wait_for(lambda: item(stats(reted, "route", window="1m"), name="echo-route") is None, 30, 0.5,
                 "the stopped client's route aged out of the short window")
    finally:
        reted.stop()


def reted_counter(reted, series):
    with urllib.request.urlopen(f"http://{reted.api}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0
