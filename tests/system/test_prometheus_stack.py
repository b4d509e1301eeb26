"""What operators plug in (issue 12): the Prometheus scrape configuration
and the Grafana dashboard shipped in deploy/, tested against a real
Prometheus (Debian's `prometheus`) scraping a real mesh.

reted serves Prometheus' HTTP service discovery (GET
/api/v1/prometheus/targets, behind the admin token); the shipped
deploy/prometheus/prometheus.yml finds every connected sidecar through it
and scrapes reted itself. The test runs that file with only reted's address
and token path replaced (and the intervals shortened), sends a known mix
through the mesh, then runs:
- the PromQL of Istio's standard service dashboard (request rate, success
  rate, p50/p90/p99 from istio_request_duration_milliseconds_bucket),
- every query of every panel of deploy/grafana/rete-mesh.json, with its
  variables given values: each must evaluate, and each panel fed by the
  mix must return a series;
and, against `make demo` itself, Istio's service and workload dashboards'
queries for the demo's own traffic.
Nothing is timed: every wait is a bounded poll."""
import http.client
import json
import math
import os
import pathlib
import subprocess
import urllib.parse

import pytest

from controlplane import echo_service_mesh, start_reted
from helpers import free_port, start_process, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "rete-mesh.json"
OK, FAILED = 40, 10
NS = "demo"

# Panels the mix does not feed (no opaque TCP, no retries, no pool limit
# refusals): their queries must evaluate, and may be empty.
QUIET_PANELS = {"TCP bytes sent and received", "Retries by cluster and reason",
                "Circuit-breaker refusals by limit"}


def test_shipped_files_are_valid():
    r = subprocess.run(["promtool", "check", "config", str(SCRAPE_CONFIG)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "rete-mesh"
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and all(e.strip() for e in exprs)
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "namespace", "service"}


class Prom:
    def __init__(self, addr):
        self.addr = addr

    def get(self, path):
        host, port = self.addr.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            c.close()

    def query(self, expr):
        st, body = self.get("/api/v1/query?query=" + urllib.parse.quote(expr))
        assert st == 200 and body["status"] == "success", (expr, st, body)
        return body["data"]["result"]

    def value(self, expr):
        res = self.query(expr)
        assert len(res) == 1, (expr, res)
        return float(res[0]["value"][1])


def send_mix(outbound, ok=OK, failed=FAILED):
    """ok requests answered 200 and `failed` answered 500, interleaved."""
    host, port = outbound.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for i in range(ok + failed):
            fail = i * failed // (ok + failed) != (i + 1) * failed // (ok + failed)
            c.request("GET", "/fail?status=500" if fail else "/ok", headers={"Host": "echo"})
            r = c.getresponse()
            r.read()
            assert r.status == (500 if fail else 200)
    finally:
        c.close()


def grafana_expr(expr):
    """A panel query as Grafana sends it with namespace = demo, service = All."""
    return (expr.replace("$__rate_interval", "1m").replace('=~"$namespace"', f'=~"{NS}"')
            .replace('=~"$service"', '=~".*"'))


@pytest.fixture
def stack(tmp_path):
    reted = start_reted(tmp_path)
    m = echo_service_mesh(reted, tmp_path)
    token = tmp_path / "admin.token"
    token.write_text(reted.admin_token)
    os.chmod(token, 0o600)
    cfg = SCRAPE_CONFIG.read_text()
    for old, new in (("127.0.0.1:15014", reted.api), ("/var/lib/reted/admin.token", str(token)),
                     ("scrape_interval: 15s", "scrape_interval: 1s"),
                     ("evaluation_interval: 15s", "evaluation_interval: 1s"),
                     ("refresh_interval: 30s", "refresh_interval: 1s")):
        assert old in cfg, old
        cfg = cfg.replace(old, new)
    path = tmp_path / "prometheus.yml"
    path.write_text(cfg)
    host = reted.host
    port = free_port(host)
    start_process(["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address={host}:{port}"],
                  r"Server is ready to receive web requests", timeout=60)
    yield reted, m, Prom(f"{host}:{port}")


def test_prometheus_finds_the_mesh_and_istio_dashboard_queries_answer(stack):
    reted, m, prom = stack
    # reted's service discovery lists both sidecars at their stats listeners
    st, groups = reted.request("GET", "/api/v1/prometheus/targets")
    assert st == 200
    targets = {g["labels"]["__meta_rete_proxy"]: g["targets"] for g in groups}
    assert targets == {"echo-0": [f"{m['echo_host']}:15020"], "client-0": [f"{m['client'].host}:15020"]}
    st, _ = reted.request("GET", "/api/v1/prometheus/targets", auth=False)
    assert st == 401

    def all_up():
        st, body = prom.get("/api/v1/targets")
        active = body["data"]["activeTargets"] if st == 200 else []
        jobs = sorted((t["labels"]["job"], t["labels"].get("proxy", "")) for t in active
                      if t["health"] == "up")
        return jobs == [("rete-proxies", "client-0"), ("rete-proxies", "echo-0"), ("reted", "")]
    # the series of both codes exist before the mix (a series' first value
    # is not an increase for rate()): one request of each, then scrapes
    send_mix(m["client"].outbound, ok=1, failed=1)
    wait_for(all_up, 60, 1, "Prometheus scraping reted and both sidecars (HTTP SD)")
    dst = f'reporter="destination", destination_service_name="echo", destination_service_namespace="{NS}"'
    wait_for(lambda: prom.query(f'istio_requests_total{{{dst}, response_code="500"}}'), 60, 1,
             "the first 500 scraped")

    send_mix(m["client"].outbound)
    # counters first: exact
    wait_for(lambda: prom.query(f"sum(istio_requests_total{{{dst}}}) >= {OK + FAILED + 2}"), 60, 1,
             "the mix scraped")
    total = prom.value(f"sum(istio_requests_total{{{dst}}})")
    failed = prom.value(f'sum(istio_requests_total{{{dst}, response_code="500"}})')
    assert failed == FAILED + 1 and total >= OK + FAILED + 2  # + the set-up's requests
    # source labels are real on the destination side (peer metadata)
    edges = prom.query(f"sum by (source_workload) (istio_requests_total{{{dst}}})")
    assert {e["metric"]["source_workload"] for e in edges} == {"client-0"}
    # Istio's service dashboard: rate, success rate, percentiles
    rate = prom.value(f"sum(irate(istio_requests_total{{{dst}}}[1m])) or vector(0)")
    assert rate >= 0
    wait_for(lambda: prom.query(
        f'sum(rate(istio_requests_total{{{dst}, response_code!~"5.*"}}[1m])) / '
        f"sum(rate(istio_requests_total{{{dst}}}[1m])) > 0"), 30, 1, "a success rate")
    success = prom.value(f'sum(rate(istio_requests_total{{{dst}, response_code!~"5.*"}}[1m])) / '
                         f"sum(rate(istio_requests_total{{{dst}}}[1m]))")
    assert 0.5 < success < 1, success
    quantiles = []
    for q in (0.5, 0.9, 0.99):
        v = prom.value(f"histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket"
                       f"{{{dst}}}[1m])) by (le))")
        assert not math.isnan(v) and v > 0, (q, v)
        quantiles.append(v)
    assert quantiles == sorted(quantiles)

    # every panel of the shipped Grafana dashboard
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = grafana_expr(t["expr"])
            assert "$" not in expr, expr
            res = prom.query(expr)
            if panel["title"] not in QUIET_PANELS:
                assert res, (panel["title"], expr)
    # the dashboard's variable queries (label_values) have their values
    st, body = prom.get("/api/v1/label/destination_service_namespace/values")
    assert st == 200 and NS in body["data"]


def test_prometheus_scrapes_the_demo(tmp_path):
    """`make demo` (loopback mode) scraped by the shipped configuration: the
    four sidecars found through reted's service discovery, reted itself, and
    the PromQL of Istio's standard service and workload dashboards answering
    for the demo's traffic (frontend -> backend -> v1/v2)."""
    import random
    import signal

    from helpers import fresh_host
    from test_demo import read, run_demo
    from test_demo import wait_for as wait_demo
    base = random.randint(100, 240)
    p, log, _ = run_demo(tmp_path, duration=90, base=base)
    try:
        wait_demo(p, log, r"press Ctrl-C to stop", 90)
        api = f"127.0.0.{base + 4}:15014"
        token = tmp_path / ".demo" / "reted" / "admin.token"
        cfg = SCRAPE_CONFIG.read_text()
        for old, new in (("127.0.0.1:15014", api), ("/var/lib/reted/admin.token", str(token)),
                         ("scrape_interval: 15s", "scrape_interval: 1s"),
                         ("evaluation_interval: 15s", "evaluation_interval: 1s"),
                         ("refresh_interval: 30s", "refresh_interval: 1s")):
            cfg = cfg.replace(old, new)
        path = tmp_path / "prometheus.yml"
        path.write_text(cfg)
        host = fresh_host()
        port = free_port(host)
        start_process(["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       f"--web.listen-address={host}:{port}"],
                      r"Server is ready to receive web requests", timeout=60)
        prom = Prom(f"{host}:{port}")

        def up():
            st, body = prom.get("/api/v1/targets")
            active = body["data"]["activeTargets"] if st == 200 else []
            return sorted(t["labels"].get("proxy", t["labels"]["job"]) for t in active if t["health"] == "up")
        wait_for(lambda: up() == ["backend-v1-0", "backend-v2-0", "frontend-0", "ratings-0", "reted"], 60, 1,
                 "Prometheus scraping reted and the demo's four sidecars")

        svc = 'reporter="destination", destination_service_name="backend", destination_service_namespace="demo"'
        # Istio's service dashboard: request rate, success rate, latency
        wait_for(lambda: prom.query(f"sum(rate(istio_requests_total{{{svc}}}[1m])) > 0"), 60, 1,
                 "a request rate for backend")
        assert prom.value(f'sum(rate(istio_requests_total{{{svc}, response_code!~"5.*"}}[1m])) / '
                          f"sum(rate(istio_requests_total{{{svc}}}[1m]))") == 1.0
        for q in (0.5, 0.9, 0.99):
            v = prom.value(f"histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket"
                           f"{{{svc}}}[1m])) by (le))")
            assert v > 0, (q, v)
        # Istio's workload dashboard: a destination workload and who calls it
        wl = ('reporter="destination", destination_workload=~"backend-v1-0", '
              'destination_workload_namespace=~"demo"')
        wait_for(lambda: prom.query(f"sum(irate(istio_requests_total{{{wl}}}[1m])) > 0"), 60, 1,
                 "a request rate for backend-v1-0")
        callers = prom.query(f"sum by (source_workload) (rate(istio_requests_total{{{wl}}}[1m]))")
        assert {c["metric"]["source_workload"] for c in callers} == {"frontend-0"}, callers
        # reted's own series
        assert prom.value('sum(rete_reted_proxies{state="synced"})') == 4
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
    assert "all 10 processes stopped;" in read(log), read(log)
