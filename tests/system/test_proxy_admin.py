"""The proxy's admin listener (15000): /ready, /live, /config, /stats,
/logging, /metrics (checked by promtool, and scraped by a real Prometheus when
one is installed), and a 404 that lists the endpoints; the stats listener
(15020): /metrics, /ready, /live and nothing else."""
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from helpers import free_port, promtool_findings, start_process
from mesh import echo_mesh


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return echo_mesh(tmp_path_factory.mktemp("admin"), persistent=True)


def get(addr, path, timeout=15, method="GET"):
    """(status, headers, body text) of a GET (or `method`), whatever the status."""
    req = urllib.request.Request(f"http://{addr}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def via_proxy(env, path, timeout=15):
    req = urllib.request.Request(f"http://{env['outbound']}{path}", headers={"Host": "echo"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(addr):
    status, headers, body = get(addr, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    return body


def sample(text, name, labels=None):
    """The value of one sample of the exposition `text` (labels as a dict,
    matched exactly), or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, f"malformed sample line: {line!r}"
        if m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if got == (labels or {}):
            return float(m.group(4))
    return None


def test_ready_and_live(env):
    status, _, body = get(env["admin"], "/ready")
    assert status == 200, body
    status, _, _ = get(env["admin"], "/live")
    assert status == 200


def test_config_is_json_with_identity_and_services(env):
    status, headers, body = get(env["admin"], "/config")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    cfg = json.loads(body)
    # the client sidecar's identity ...
    proxy = cfg["proxy"]
    assert proxy["name"] == "client-0" and proxy["namespace"] == "test"
    assert proxy["serviceAccount"] == "client"
    assert proxy["spiffeId"] == "spiffe://cluster.local/ns/test/sa/client"
    assert proxy["listeners"]["outbound"]
    assert cfg["version"] >= 1
    # ... and the service it can reach, with its endpoint
    echo = [s for s in cfg["services"] if s["name"] == "echo"]
    assert echo and echo[0]["namespace"] == "test"
    assert echo[0]["ports"][0]["port"] == 80
    assert echo[0]["endpoints"] == ["test/echo-0"]


def test_stats_is_json(env):
    status, _, body = get(env["admin"], "/stats")
    assert status == 200
    stats = json.loads(body)
    assert stats["workers"] == 1
    assert stats["config_version"] >= 1


def test_logging_level_can_be_changed_by_post(env):
    status, _, body = get(env["admin"], "/logging?level=debug", method="POST")
    assert status == 200 and "level=debug" in body
    status, _, body = get(env["admin"], "/logging")
    assert status == 200 and "level=debug" in body
    status, _, body = get(env["admin"], "/logging?level=nonsense", method="POST")
    assert status == 400
    status, _, body = get(env["admin"], "/logging?level=info", method="POST")
    assert status == 200 and "level=info" in body


def test_logging_level_is_not_changed_by_get(env):
    """Security defect: GET /logging?level=error from any local process (or a
    browser following a link) silenced the authorization log."""
    status, headers, body = get(env["admin"], "/logging?level=error")
    assert status == 405 and "POST" in body
    assert headers["allow"] == "POST"
    status, _, body = get(env["admin"], "/logging")
    assert status == 200 and "level=info" in body, body
    status, _, body = get(env["admin"], "/logging?level=error", method="PUT")
    assert status == 405


def test_unknown_admin_path_is_404_listing_endpoints(env):
    status, _, body = get(env["admin"], "/no-such-endpoint")
    assert status == 404
    for ep in ("/ready", "/live", "/metrics", "/config", "/stats", "/logging"):
        assert ep in body, body


def test_read_endpoints_take_get_only(env):
    for path in ("/config", "/clusters", "/stats", "/metrics"):
        status, headers, _ = get(env["admin"], path, method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD", path


def stats_addr(env):
    return f"{env['client_host']}:15020"


def test_stats_listener_serves_metrics_ready_live_only(env):
    """The stats listener (Istio's 15020 role) may face the network: it
    answers /metrics, /ready and /live and 404s everything that reads the
    configuration or changes state, whatever the method."""
    addr = stats_addr(env)
    status, _, body = get(addr, "/ready")
    assert status == 200 and body == "ready\n"
    assert get(addr, "/live")[0] == 200
    text = metrics(addr)
    assert "rete_proxy_requests_total" in text
    # its own connection series
    assert sample(text, "rete_proxy_downstream_connections_total", {"listener": "stats"}) >= 1
    for path in ("/config", "/clusters", "/stats", "/stats/prometheus", "/logging", "/logging?level=error"):
        for method in ("GET", "POST"):
            status, _, body = get(addr, path, method=method)
            assert status == 404, (path, method, status)
            assert "/config" not in body and "/logging" not in body
    status, _, body = get(env["admin"], "/logging")
    assert "level=info" in body  # the POSTs above changed nothing


@pytest.mark.parametrize("which", ["admin", "server_admin"])
def test_metrics_pass_promtool_with_only_the_accepted_complaint(env, which):
    via_proxy(env, "/for-promtool")  # so that every family has seen traffic
    assert promtool_findings(metrics(env[which])) == []


def test_counters_move_after_traffic(env):
    before = metrics(env["admin"])
    n = 5
    for i in range(n):
        assert via_proxy(env, f"/count?i={i}")[0] == 200
    assert via_proxy(env, "/count?status=503")[0] == 503
    assert via_proxy(env, "/count?status=404")[0] == 404
    after = metrics(env["admin"])

    def delta(name, labels=None):
        a, b = sample(after, name, labels), sample(before, name, labels)
        assert a is not None and b is not None, f"{name}{labels or ''} missing"
        return a - b

    assert delta("rete_proxy_requests_total") >= n + 2
    assert delta("rete_proxy_responses_total", {"code_class": "2xx"}) >= n
    assert delta("rete_proxy_responses_total", {"code_class": "5xx"}) >= 1
    assert delta("rete_proxy_responses_total", {"code_class": "4xx"}) >= 1
    assert delta("rete_proxy_request_duration_seconds_count") >= n + 2
    assert delta("rete_proxy_request_duration_seconds_bucket", {"le": "+Inf"}) >= n + 2
    assert delta("rete_proxy_request_duration_seconds_sum") > 0
    assert delta("rete_proxy_downstream_connections_total", {"listener": "outbound"}) >= n + 2
    assert delta("rete_proxy_http_received_bytes_total") > 0
    assert delta("rete_proxy_http_sent_bytes_total") > 0
    # the server sidecar counted them on its mesh listener
    server = metrics(env["server_admin"])
    assert sample(server, "rete_proxy_downstream_connections_total", {"listener": "mesh"}) >= 1
    assert sample(server, "rete_proxy_requests_total") >= n + 2


def test_histogram_buckets_are_cumulative(env):
    via_proxy(env, "/hist")
    text = metrics(env["admin"])
    buckets = [(l.split('le="')[1].split('"')[0], float(l.split()[-1]))
               for l in text.splitlines() if l.startswith("rete_proxy_request_duration_seconds_bucket")]
    assert buckets[-1][0] == "+Inf"
    values = [v for _, v in buckets]
    assert values == sorted(values)
    assert values[-1] == sample(text, "rete_proxy_request_duration_seconds_count")


def test_prometheus_scrapes_the_proxy(env, tmp_path):
    """A real Prometheus, loopback only, scraping the client sidecar's admin
    every second; its API then has rete_proxy_requests_total."""
    via_proxy(env, "/for-prometheus")
    host = env["client_host"]
    port = free_port(host)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: rete-proxy\n"
        f"    static_configs:\n      - targets: ['{env['admin']}']\n")
    start_process(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                   f"--web.listen-address={host}:{port}"],
                  r"Server is ready to receive web requests", timeout=60)
    q = urllib.parse.quote("rete_proxy_requests_total")
    deadline = time.monotonic() + 60
    result = []
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            status, _, body = get(f"{host}:{port}", f"/api/v1/query?query={q}", timeout=10)
        except OSError:
            continue
        if status == 200:
            result = json.loads(body)["data"]["result"]
            if result:
                break
    assert result, "Prometheus never scraped rete_proxy_requests_total"
    assert float(result[0]["value"][1]) >= 1
    status, _, body = get(f"{host}:{port}", "/api/v1/targets", timeout=10)
    targets = json.loads(body)["data"]["activeTargets"]
    assert targets and targets[0]["health"] == "up", targets
