"""Active health checks run by the calling proxy (DestinationRule
trafficPolicy.healthCheck, a rete extension) and slow start
(loadBalancer.warmupDurationSecs), against a real rete-proxy sidecar with
two workers (`concurrency: 2`) and real backends: rete-echo instances (their
/ready answers 503 after /ready?set=0, asked of the instance directly) and a
python3-grpcio server implementing grpc.health.v1.Health by hand (Debian has
no grpcio-health-checking: the service is a generic handler and the
messages are encoded here, HealthCheckResponse{status: SERVING} being the
two bytes 08 01).

No outlier detection is configured: only the checks can take an endpoint out,
so a request reaching a failing endpoint after its checks failed would show.
Waits are on conditions the admin listener's /clusters shows, bounded."""
import json
import time
import urllib.request
from concurrent import futures

import grpc
import pytest

from controlplane import proxy_metric
from helpers import free_port, start_echo, wait_for
from mesh import Mesh, destination_rule, fresh_host, meshes, service, stop_and_check_proxies, workload
from web_net import APP_PORT, NS, WebNet

FAST = {"interval": "200ms", "timeout": "150ms", "unhealthyThreshold": 2, "healthyThreshold": 2}


class Net(WebNet):
    """n endpoints, each echo started with `echo_args`; the DestinationRule's
    healthCheck and loadBalancer (round robin unless `lb`)."""

    def __init__(self, tmp_path, n, health_check=None, lb=None, echo_args=()):
        policy = {"loadBalancer": lb or {"simple": "ROUND_ROBIN"}}
        if health_check:
            policy["healthCheck"] = health_check
        super().__init__(tmp_path, [(echo_args, {})] * n, policy)

    def set_ready(self, i, ready):
        url = f"http://{self.hosts[i]}:{APP_PORT}/ready?set={1 if ready else 0}"
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()

    def failing(self, i):
        return self.endpoints()[self.hosts[i]]["healthCheckFailing"]


@pytest.fixture
def net(tmp_path):
    yield from meshes(tmp_path, Net)


def both(seen, hosts):
    """Every request served, by both endpoints (each worker balances on its
    own: round robin per worker, fresh connections land on either)."""
    assert sum(seen.values()) == seen[(200, hosts[0])] + seen[(200, hosts[1])], seen
    assert seen[(200, hosts[0])] >= 5 and seen[(200, hosts[1])] >= 5, seen


def checks(n, result):
    import re
    text = n.metrics_text()
    return sum(float(v) for v in re.findall(
        rf'^rete_proxy_health_checks_total{{[^}}]*result="{result}"[^}}]*}} (\S+)$', text, re.M))


def test_http_check_takes_a_failing_endpoint_out_and_back(net):
    """/ready failing on one of two echos: after unhealthyThreshold (2)
    failed checks it gets no request from either worker; after it recovers
    and passes healthyThreshold (2) checks it gets its share again. Without
    the checks every second request would still go to it (its / answers)."""
    n = net(2, {**FAST, "http": {"path": "/ready"}})
    both(n.responses(20), n.hosts)
    wait_for(lambda: checks(n, "success") >= 4, 10, 0.1, "first checks")
    assert not n.failing(1)
    n.set_ready(1, False)
    wait_for(lambda: n.failing(1), 10, 0.05, "endpoint 1 out")
    ep = n.endpoints()[n.hosts[1]]
    assert ep["healthCheckStreak"] <= -2, ep
    assert checks(n, "failure") >= 2
    assert n.metric("rete_proxy_health_check_endpoints_unhealthy") == 1
    # Both workers skip it (fresh connections land on either).
    assert n.responses(40) == {(200, n.hosts[0]): 40}
    n.set_ready(1, True)
    wait_for(lambda: not n.failing(1), 10, 0.05, "endpoint 1 back")
    assert n.endpoints()[n.hosts[1]]["healthCheckStreak"] >= 2
    assert n.metric("rete_proxy_health_check_endpoints_unhealthy") == 0
    seen = n.responses(40)
    assert seen[(200, n.hosts[1])] >= 15, seen


def test_expected_statuses(net):
    """expectedStatuses [503]: the echo's /ready answering 200 fails the
    check; both out means panic (every endpoint serves, as Envoy does)."""
    n = net(2, {**FAST, "http": {"path": "/ready", "expectedStatuses": [503]}})
    wait_for(lambda: n.failing(0) and n.failing(1), 10, 0.05, "both out")
    seen = n.responses(20)
    assert sum(seen.values()) == 20 and all(s == 200 for s, _ in seen), seen  # panic: all serve
    n.set_ready(0, False)
    wait_for(lambda: not n.failing(0), 10, 0.05, "endpoint 0 passes with 503")
    assert n.responses(30) == {(200, n.hosts[0]): 30}


def test_tcp_check_against_a_closed_port(net):
    """tcp: {}: a stopped echo (its port closed) is out after two failed
    connects, and the client never sees it fail (no outlier detection: only
    the check protects); started again, it is back."""
    n = net(2, {**FAST, "tcp": {}})
    wait_for(lambda: checks(n, "success") >= 4, 10, 0.1, "first checks")
    n.kill(1)
    wait_for(lambda: n.failing(1), 10, 0.05, "dead endpoint out")
    assert checks(n, "error") >= 2
    assert n.responses(40) == {(200, n.hosts[0]): 40}
    n.revive(1)
    wait_for(lambda: not n.failing(1), 10, 0.05, "endpoint back")
    assert n.responses(40)[(200, n.hosts[1])] >= 15


def test_check_timeout(net):
    """A check without its answer within `timeout` fails as `timeout`:
    /ready?delay=... is slower than the check's 100ms timeout."""
    n = net(2, {"interval": "200ms", "timeout": "100ms", "unhealthyThreshold": 2,
                "healthyThreshold": 1, "http": {"path": "/?delay=500"}})
    wait_for(lambda: n.failing(0) and n.failing(1), 10, 0.05, "both out")
    assert checks(n, "timeout") >= 4
    assert checks(n, "success") == 0


# ---- gRPC: grpc.health.v1 ----

HEALTH = "grpc.health.v1.Health"


class Health:
    """grpc.health.v1.Health/Check by hand: answers SERVING (1) or
    NOT_SERVING (2) for every service name, as `serving` says."""

    def __init__(self):
        self.serving = True
        self.services = []

    def check(self, req, context):
        # HealthCheckRequest{string service = 1}
        self.services.append(req[2:].decode() if req[:1] == b"\x0a" else "")
        return b"\x08\x01" if self.serving else b"\x08\x02"


def grpc_server(host, port, health):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HEALTH, {
        "Check": grpc.unary_unary_rpc_method_handler(health.check, request_deserializer=None,
                                                     response_serializer=None)}),))
    assert server.add_insecure_port(f"{host}:{port}") == port
    server.start()
    return server


def test_grpc_health_check(tmp_path):
    """Two grpcio servers (port protocol GRPC, outside the mesh: h2c): the
    one answering NOT_SERVING is out after two checks, back after it serves
    again; the HealthCheckRequest carries grpc.service."""
    m = Mesh(tmp_path, ns=NS)
    hosts = [fresh_host(), fresh_host()]
    port = free_port(hosts[0])
    healths = [Health(), Health()]
    servers = []
    try:
        for i, h in enumerate(hosts):
            servers.append(grpc_server(h, port, healths[i]))
            m.add(workload(f"greeter-{i}", NS, h, "greeter", {"app": "greeter"}, inMesh=False))
        m.add(service("greeter", NS, [(50051, "GRPC", port)], {"app": "greeter"}))
        m.add(destination_rule("greeter", NS, "greeter", loadBalancer={"simple": "ROUND_ROBIN"},
                               healthCheck={**FAST, "grpc": {"service": "greeter.v1"}}))
        client = fresh_host()
        m.add(workload("client-0", NS, client, "client", {"app": "client"}))
        m.start_proxy("client-0", "client", client, extra_spec={"concurrency": 2})

        def eps():
            with urllib.request.urlopen(f"http://{client}:15000/clusters", timeout=10) as r:
                doc = json.load(r)
            c = [c for c in doc["clusters"] if c["name"].startswith("greeter.")][0]
            return {e["address"]: e for e in c["endpoints"]}

        wait_for(lambda: all(e["healthCheckStreak"] >= 2 for e in eps().values()), 10, 0.05,
                 "both pass")
        assert set(healths[0].services) == {"greeter.v1"}, healths[0].services
        healths[1].serving = False
        wait_for(lambda: eps()[hosts[1]]["healthCheckFailing"], 10, 0.05, "NOT_SERVING out")
        assert not eps()[hosts[0]]["healthCheckFailing"]
        assert proxy_metric(client, "rete_proxy_health_check_endpoints_unhealthy") == 1
        healths[1].serving = True
        wait_for(lambda: not eps()[hosts[1]]["healthCheckFailing"], 10, 0.05, "SERVING back")
    finally:
        for s in servers:
            s.stop(0)
        stop_and_check_proxies(m)


# ---- slow start ----

def test_slow_start_ramps_a_new_endpoint(net, tmp_path):
    """warmupDurationSecs 4s, ROUND_ROBIN: a third endpoint added by a
    reload starts at a small share and grows window after window to its
    full third. Shares are counted over windows of requests, not times:
    each window is 60 requests; the windows follow each other as fast as
    the client goes (the ramp is slow beside them). The endpoints there at
    the proxy's start ramp too (from the start), together: their ramp ends
    before the third comes."""
    n = net(2, lb={"simple": "ROUND_ROBIN", "warmupDurationSecs": "4s"})
    # The first two joined at the proxy's start: their own ramp ends first.
    n.responses(4)
    wait_for(lambda: all(e["weightPercent"] == 100 for e in n.endpoints().values()), 15, 0.1,
             "the first endpoints warmed up")
    both(n.responses(20), n.hosts)
    new = fresh_host()
    n.echos.append(start_echo("--quiet", name="web", host=new, port=APP_PORT)[0])
    n.mesh.add(workload("web-2", NS, new, "web", {"app": "web"}, inMesh=False))
    n.mesh.write_config("client-0", "client", n.client, extra_spec={"concurrency": 2})
    import signal
    n.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: new in n.endpoints(), 10, 0.05, "the new endpoint")
    shares, percents = [], []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        percents.append(n.endpoints()[new]["weightPercent"])
        seen = n.responses(60)
        shares.append(seen[(200, new)] / 60)
        if percents[-1] == 100:
            break
    print("slow start: weight percent", percents, "shares", shares)
    assert percents[-1] == 100, percents
    assert len(shares) >= 3, shares
    assert shares[0] < 0.15, shares          # starts well under its third (10%: 1/21)
    assert shares[-1] >= 0.25, shares        # ends at (about) its third
    # it grows: the first half of the windows takes less than the second
    half = len(shares) // 2
    assert sum(shares[:half]) / half < sum(shares[half:]) / (len(shares) - half), shares


def test_metrics_promtool_clean(net):
    """The new families pass promtool."""
    from helpers import promtool_findings
    n = net(2, {**FAST, "http": {"path": "/ready"}})
    wait_for(lambda: checks(n, "success") >= 2, 10, 0.1, "checks")
    text = n.metrics_text()
    assert "rete_proxy_health_checks_total{" in text
    assert "rete_proxy_health_check_endpoints_unhealthy " in text
    assert promtool_findings(text) == [], promtool_findings(text)
