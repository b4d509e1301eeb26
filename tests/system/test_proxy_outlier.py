"""Outlier detection shared by every worker of a proxy, the panic
threshold, and locality-aware balancing with zone failover (DestinationRule
outlierDetection and loadBalancer.localityLbSetting; issue 11), against
real rete-proxy sidecars (`concurrency: 2`: two workers, connections
spread over them by the kernel) and rete-echo backends outside the mesh
(a killed echo is a connect failure, a `--failure-rate 1` one answers 503).

Proxy-wide state is proven by counts: with per-worker state each worker
would need its own streak of failures and would eject on its own, so the
client would see up to twice the failures and rete_proxy_lb_ejections_total
would reach 2 for one endpoint. Ejection times are read from the admin
listener's /clusters (ejectedForMs), not measured."""
import collections
import http.client
import time

import pytest

from helpers import stop_process, wait_for
from mesh import destination_rule, meshes
from web_net import NS, WebNet


def zone_labels(region, zone):
    return {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}


class Net(WebNet):
    """Endpoints given as (echo args, extra labels); the DestinationRule's
    outlierDetection and loadBalancer (round robin unless `lb`)."""

    def __init__(self, tmp_path, endpoints, outlier, lb=None, client_labels=None):
        super().__init__(tmp_path, endpoints,
                         {"outlierDetection": outlier, "loadBalancer": lb or {"simple": "ROUND_ROBIN"}},
                         client_labels)


@pytest.fixture
def net(tmp_path):
    yield from meshes(tmp_path, Net)


def test_dead_endpoint_ejected_for_both_workers_then_readmitted_with_doubled_time(net):
    """consecutiveGatewayErrors 3 over two workers: a killed endpoint costs
    the client exactly 3 failures in all (one streak, counted by both
    workers), is ejected once, then no request of either worker reaches it;
    after baseEjectionTime it is tried again, and the second ejection lasts
    twice as long."""
    n = net([((), {}), ((), {}), ((), {})],
            {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 3, "interval": "30s",
             "baseEjectionTime": "2s", "maxEjectionPercent": 50})
    dead = n.hosts[2]
    assert n.statuses(12) == {200: 12}
    n.kill(2)
    seen = n.statuses(60)
    assert seen[503] == 3, seen  # one streak for the proxy, not one per worker
    assert n.metric("rete_proxy_lb_ejections_total") == 1
    assert n.metric("rete_proxy_lb_endpoints_ejected") == 1
    eps, web = n.clusters()
    assert eps[dead]["ejected"] and eps[dead]["timesEjected"] == 1, eps[dead]
    assert 0 < eps[dead]["ejectedForMs"] <= 2000, eps[dead]
    assert web["ejectedNow"] == 1
    # Both workers skip it: 40 more requests on fresh connections, all served.
    assert n.instances(40).keys() <= {n.hosts[0], n.hosts[1]}
    # Readmitted after the ejection time: it is tried (and fails) again.
    wait_for(lambda: not n.endpoints()[dead]["ejected"], 10, 0.1, "readmission")
    assert n.metric("rete_proxy_lb_endpoints_ejected") == 0
    seen = n.statuses(30)
    assert seen[503] == 3, seen
    eps, _ = n.clusters()
    assert eps[dead]["timesEjected"] == 2, eps[dead]
    assert 2000 < eps[dead]["ejectedForMs"] <= 4000, eps[dead]  # base x 2
    assert n.metric("rete_proxy_lb_ejections_total") == 2
    # Back, it is readmitted and served.
    n.revive(2)
    wait_for(lambda: not n.endpoints()[dead]["ejected"], 10, 0.1, "second readmission")
    assert n.instances(30)[dead] >= 5


def test_max_ejection_percent_holds_across_workers(net):
    """Three of four endpoints failing every request, maxEjectionPercent 25:
    one ejected, never more, whichever worker saw the failures."""
    fail = (("--failure-rate", "1"), {})
    n = net([((), {}), fail, fail, fail],
            {"consecutive5xxErrors": 2, "baseEjectionTime": "5m", "maxEjectionPercent": 25,
             "minHealthPercent": 0})
    seen = n.statuses(80)
    assert seen[503] > 20, seen  # the two not ejected keep failing
    assert n.metric("rete_proxy_lb_ejections_total") == 1
    assert n.metric("rete_proxy_lb_endpoints_ejected") == 1
    assert n.clusters()[1]["ejectedNow"] == 1


@pytest.mark.parametrize("min_health", [0, 50])
def test_panic_threshold(net, min_health):
    """Two of three failing, maxEjectionPercent 100: both are ejected. With
    minHealthPercent 50, one healthy of three is below it: panic, every
    endpoint gets traffic again (503s come back); with 0, never."""
    fail = (("--failure-rate", "1"), {})
    n = net([((), {}), fail, fail],
            {"consecutive5xxErrors": 2, "baseEjectionTime": "5m", "maxEjectionPercent": 100,
             "minHealthPercent": min_health})
    n.statuses(30)
    assert n.metric("rete_proxy_lb_ejections_total") == 2
    assert n.metric("rete_proxy_lb_endpoints_ejected") == 2
    seen = n.statuses(60)
    if min_health:
        assert 20 <= seen[503] <= 55 and seen[200] >= 5, seen  # all three serve
    else:
        assert seen == {200: 60}, seen


def test_local_overflow_is_not_an_endpoint_failure(net, tmp_path):
    """503 UO answered by the proxy's own pool limit (a request picked the
    endpoint, then waited past pendingTimeout) never counts against it."""
    n = net([((), {})], {"consecutive5xxErrors": 1, "baseEjectionTime": "5m"})
    # A second client config with a one-connection pool: restart the proxy with it.
    n.mesh.proxies.pop("client-0")
    stop_process(n.proc)
    n.mesh.add(destination_rule("web-pool", NS, "web.test.svc.cluster.local",
                                outlierDetection={"consecutive5xxErrors": 1, "baseEjectionTime": "5m"},
                                connectionPool={"tcp": {"maxConnections": 1},
                                                "http": {"http1MaxPendingRequests": 8,
                                                         "pendingTimeout": "100ms"}}))
    n.mesh.resources = [d for d in n.mesh.resources
                        if not (d["kind"] == "DestinationRule" and d["metadata"]["name"] == "web")]
    n.proc = n.mesh.start_proxy("client-0", "client", n.client, extra_spec={"concurrency": 1})
    import concurrent.futures

    def slow():
        c = http.client.HTTPConnection(n.client, 15001, timeout=20)
        try:
            c.request("GET", "/?delay=1000", headers={"Host": "web"})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: slow(), range(6)))
    uo = [b for s, b in results if s == 503]
    assert uo and all(b"upstream UO" in b for b in uo), results
    assert n.metric("rete_proxy_lb_ejections_total") == 0
    assert n.statuses(5) == {200: 5}


def test_zone_failover_and_back(net):
    """Two endpoints in the caller's zone, two in another zone of its region:
    traffic stays home; when both home endpoints die it moves to the other
    zone (after one streak each), and comes back once they are readmitted."""
    a, b = zone_labels("r1", "a"), zone_labels("r1", "b")
    n = net([((), a), ((), a), ((), b), ((), b)],
            {"consecutiveGatewayErrors": 2, "baseEjectionTime": "2s", "maxEjectionPercent": 100},
            client_labels=a)
    home, away = set(n.hosts[:2]), set(n.hosts[2:])
    seen = n.instances(40)
    assert set(seen) == home, seen
    eps, web = n.clusters()
    assert web["locality"] and {eps[h]["localityLevel"] for h in home} == {0}
    assert {eps[h]["localityLevel"] for h in away} == {2}
    n.kill(0)
    n.kill(1)
    seen = n.instances(40)
    assert seen[None] <= 4, seen  # two failures per home endpoint, then ejected
    assert set(seen) - {None} == away, seen
    assert n.instances(30).keys() == away
    n.revive(0)
    n.revive(1)
    wait_for(lambda: not any(n.endpoints()[h]["ejected"] for h in home), 10, 0.1, "readmission")
    assert set(n.instances(30)) == home


def _until(n, done, max_requests=4000, max_s=30):
    """Requests on fresh connections until done() holds (bounded); their statuses."""
    seen = collections.Counter()
    t0 = time.monotonic()
    while sum(seen.values()) < max_requests and time.monotonic() - t0 < max_s and not done():
        seen.update(n.statuses(20))
    return seen


def test_success_rate_outlier_ejected(net):
    """successRate (rete extension, Envoy's): of four endpoints one fails
    half its requests (503, a fixed seed); consecutive errors are off, so
    only the success-rate evaluation can eject it. Every interval (1 s) the
    rates of endpoints with >= 10 requests are compared: 0.5 against three
    1.0 is below mean - 1.0 x stdev (0.875 - 0.217), so it is ejected, and
    the healthy ones never are."""
    flaky = (("--failure-rate", "0.5", "--seed", "3"), {})
    n = net([((), {}), ((), {}), ((), {}), flaky],
            {"consecutive5xxErrors": 0, "interval": "1s", "baseEjectionTime": "5m",
             "maxEjectionPercent": 50,
             "successRate": {"minimumHosts": 4, "requestVolume": 10, "stdevFactor": 1000}})
    bad = n.hosts[3]
    _until(n, lambda: n.metric("rete_proxy_lb_ejections_total") >= 1)
    assert n.metric("rete_proxy_lb_ejections_total") == 1
    eps, _ = n.clusters()
    assert eps[bad]["ejected"], eps[bad]
    assert not any(eps[h]["ejected"] for h in n.hosts[:3])
    # neither worker sends it anything now
    assert n.instances(40).keys() <= set(n.hosts[:3])
    assert n.statuses(40) == {200: 40}


def test_success_rate_needs_minimum_hosts(net):
    """The same flaky endpoint with minimumHosts 5 of 4 endpoints: several
    intervals of traffic and nobody is ejected (too few to judge by)."""
    flaky = (("--failure-rate", "0.5", "--seed", "3"), {})
    n = net([((), {}), ((), {}), ((), {}), flaky],
            {"consecutive5xxErrors": 0, "interval": "1s", "baseEjectionTime": "5m",
             "maxEjectionPercent": 50,
             "successRate": {"minimumHosts": 5, "requestVolume": 10, "stdevFactor": 1000}})
    t0 = time.monotonic()
    seen = _until(n, lambda: time.monotonic() - t0 > 3.5)
    assert seen[503] > 0  # the flaky one kept its share
    assert n.metric("rete_proxy_lb_ejections_total") == 0
