"""What callers' balancers hold out, visible without Prometheus (issues 11
and 12): each sidecar tells reted, on its config stream, which endpoints
its outlier detection has ejected or its health checks fail, and how many
retries its retry budgets refused ("endpoints" message, sent when that
changes); reted shows it per proxy (`endpointsOut`, `retryBudgetExhausted`
in /api/v1/proxies and `retectl proxy-config`), and `retectl diagnose`
names them. Real reted, sidecars and rete-echo apps,
one of which fails every request."""
import json

from controlplane import curl_status, start_cp_proxy, start_reted
from helpers import free_port, start_echo, wait_for
from mesh import destination_rule, fresh_host, http_route, service
from test_tap import retectl

NS = "demo"


def test_ejected_endpoint_shown_by_reted_proxy_config_and_diagnose(tmp_path):
    reted = start_reted(tmp_path)
    hosts = [fresh_host(), fresh_host()]
    port = free_port(hosts[0])
    start_echo("--quiet", name="echo-0", host=hosts[0], port=port)
    start_echo("--quiet", "--failure-rate", "1", name="echo-1", host=hosts[1], port=port)
    reted.apply_ok([service("echo", NS, [(80, "HTTP", port)]),
                    destination_rule("echo", NS, "echo", loadBalancer={"simple": "ROUND_ROBIN"},
                                     outlierDetection={"consecutive5xxErrors": 2, "baseEjectionTime": "5m",
                                                       "maxEjectionPercent": 50},
                                     # no retry is ever allowed: each one wanted is refused and counted
                                     retryConstraint={"budget": {"percent": 0}, "minRetryRate": {"count": 0}}),
                    http_route("echo", NS, "echo", [{"backendRefs": [{"name": "echo", "port": 80}],
                                                     "retry": {"attempts": 2, "codes": [503]}}])],
                   "echo.yaml")
    for i, h in enumerate(hosts):
        start_cp_proxy(reted, tmp_path, f"echo-{i}", NS, "echo", host=h, inbound=[(port, "HTTP")],
                       labels={"app": "echo"})
    client = start_cp_proxy(reted, tmp_path, "client-0", NS, "client", labels={"app": "client"},
                            extra=["--stats-interval", "1"])
    wait_for(lambda: curl_status(client.outbound, "echo") in (200, 503), 30, 0.3, "the mesh serves echo")
    assert reted.proxy("client-0", NS)["endpointsOut"] == []

    statuses = [curl_status(client.outbound, "echo") for _ in range(20)]
    assert statuses.count(503) == 2, statuses  # one streak of two, then echo-1 is out

    def out():
        return reted.proxy("client-0", NS)["endpointsOut"]
    held = wait_for(out, 15, 0.3, "client-0 reports what it holds out")
    assert len(held) == 1, held
    e = held[0]
    assert (e["cluster"], e["endpoint"], e["address"]) == (f"echo.{NS}.svc.cluster.local", "echo-1", hosts[1])
    assert e["ejected"] is True and e["timesEjected"] == 1 and 0 < e["ejectedForMs"] <= 300000
    assert e["healthCheckFailing"] is False
    # the other sidecars hold nothing out (they never called echo)
    assert reted.proxy("echo-0", NS)["endpointsOut"] == []
    # each 503 wanted a retry the budget refused
    assert reted.proxy("client-0", NS)["retryBudgetExhausted"] == {f"echo.{NS}.svc.cluster.local": 2}

    r = retectl(reted, tmp_path, "proxy-config", "client-0", "-n", NS, "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["proxy"]["endpointsOut"][0]["endpoint"] == "echo-1"

    r = retectl(reted, tmp_path, "diagnose", "echo", "-n", NS, "--duration", "1s")
    assert "Endpoints held out by callers" in r.stdout, r.stdout
    assert f"echo-1 ({hosts[1]}) out at {NS}/client-0: ejected by outlier detection" in r.stdout, r.stdout
    assert (f"{NS}/client-0: 2 retries refused by its retry budget for echo.{NS}.svc.cluster.local"
            in r.stdout), r.stdout
    assert r.returncode == 1, r.stdout  # a problem found
