"""Connection-pool limits (DestinationRule connectionPool, issue 11, second
slice), counted across every worker of the proxy: maxConnections with the
pending queue (http1MaxPendingRequests, pendingTimeout), http2MaxRequests,
maxRequestsPerConnection and maxRetries, against real rete-proxy sidecars
(`concurrency: 2`: two workers) and rete-echo backends.

Connections are counted at the backend: rete-echo's `peer` (the client
address of the connection a request came on) for endpoints outside the
mesh, the backend sidecar's mesh listener for those inside; rete-echo's
--max-connections refuses (closes) a connection beyond its bound, so a
proxy that opened more than its limit would see upstream failures that are
not 503 UO. Bounds are counts; the one time bound (a refused request is
answered before the backend's delay has passed) is 4x wide."""
import concurrent.futures
import http.client
import json
import re
import time
import urllib.request

import pytest

from controlplane import proxy_metric
from helpers import start_echo
from mesh import Mesh, backend, destination_rule, fresh_host, http_route, meshes, service, workload

APP_PORT = 18080
NS = "test"


class Net:
    """Service `web` on one rete-echo (behind its sidecar when in_mesh), and
    a client sidecar with `workers` worker threads carrying the
    DestinationRule's connectionPool `pool` and `docs`."""

    def __init__(self, tmp_path, pool, echo_args=(), in_mesh=False, workers=2, docs=()):
        self.mesh = m = Mesh(tmp_path, ns=NS)
        m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}))
        self.host = fresh_host()
        start_echo("--quiet", *echo_args, name="web", host=self.host, port=APP_PORT)
        m.add(workload("web-0", NS, self.host, "web", {"app": "web"},
                       **({} if in_mesh else {"inMesh": False})))
        if in_mesh:
            m.start_proxy("web-0", "web", self.host, inbound=[(APP_PORT, "HTTP")])
        m.add(destination_rule("web", NS, "web", connectionPool=pool))
        self.client = fresh_host()
        m.add(workload("client-0", NS, self.client, "client", {"app": "client"}))
        self.proc = m.start_proxy("client-0", "client", self.client,
                                  extra_spec={"concurrency": workers}, extra_docs=docs)


@pytest.fixture
def net(tmp_path):
    yield from meshes(tmp_path, Net)


def request(host, path="/", timeout=30):
    """One request on a fresh connection: (status, body bytes, seconds)."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, 15001, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "web"})
        r = c.getresponse()
        return r.status, r.read(), time.monotonic() - t0
    finally:
        c.close()


def burst(host, n, path):
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: request(host, path), range(n)))


def rejections(host, limit):
    """rete_proxy_circuit_breaker_rejections_total{limit=...} (0 when absent)."""
    with urllib.request.urlopen(f"http://{host}:15000/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf'^rete_proxy_circuit_breaker_rejections_total{{limit="{limit}"}} (\S+)$',
                  text, re.M)
    return float(m.group(1)) if m else 0


def rss_kib(proc):
    with open(f"/proc/{proc.pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def test_max_connections_and_pending_across_workers(net):
    """maxConnections 2 and 2 pending, two workers: a burst of 24 slow
    requests gets 200 for the 2 in service and the 2 waiting, a fast 503 UO
    naming the limit for the rest, and never a third connection at the
    backend (rete-echo refuses beyond 4, two more than the limit, for
    closes it has not seen yet): no other failure. Memory stays flat over
    repeated bursts: nothing queues beyond the bound."""
    delay_ms = 1500
    n = net({"tcp": {"maxConnections": 2},
             "http": {"http1MaxPendingRequests": 2, "pendingTimeout": "10s"}},
            echo_args=("--max-connections", "4"))
    assert request(n.client)[0] == 200
    rss = None
    for round_ in range(4):
        results = burst(n.client, 24, f"/?delay={delay_ms}")
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 503]
        assert len(ok) + len(refused) == len(results), [(s, b) for s, b, _ in results]
        assert 4 <= len(ok) <= 6, len(ok)  # 2 served + 2 pending (+ a burst straggler)
        for _, body, took in refused:
            assert b"upstream UO" in body and b"http1MaxPendingRequests" in body, body
            assert took < delay_ms / 1000 * 0.75 * 4 / 3  # before the backend's delay passed
        if round_ == 0:
            rss = rss_kib(n.proc)
    assert rejections(n.client, "http1MaxPendingRequests") >= 4 * 16
    assert rss_kib(n.proc) - rss < 16 * 1024, (rss, rss_kib(n.proc))


def test_pending_timeout(net):
    """One connection held by a slow request: the next waits pendingTimeout
    and is answered 503 UO naming it, counted."""
    n = net({"tcp": {"maxConnections": 1},
             "http": {"http1MaxPendingRequests": 4, "pendingTimeout": "300ms"}}, workers=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(request, n.client, "/?delay=3000")
        deadline = time.monotonic() + 10
        while True:  # the slow request holds the connection once the echo sees it
            status, body, _ = request(n.client, "/")
            if status == 503:
                break
            assert time.monotonic() < deadline, "the slow request never held the connection"
        assert b"upstream UO" in body and b"pendingTimeout (300 ms)" in body, body
        assert slow.result()[0] == 200
    assert rejections(n.client, "pendingTimeout") >= 1
    assert request(n.client)[0] == 200


def test_max_requests_across_workers(net):
    """http2MaxRequests 2 with two workers: of a burst of 16 slow requests
    at most 2 are in flight at once across the proxy, the rest 503 UO."""
    n = net({"http": {"http2MaxRequests": 2}}, in_mesh=True)
    results = burst(n.client, 16, "/?delay=1500")
    ok = sum(r[0] == 200 for r in results)
    assert 1 <= ok <= 2, [(s, b) for s, b, _ in results]
    assert all(b"http2MaxRequests" in b for s, b, _ in results if s == 503)
    assert rejections(n.client, "http2MaxRequests") == 16 - ok


def test_max_requests_per_connection_h1(net):
    """maxRequestsPerConnection 3, HTTP/1.1 to an endpoint outside the
    mesh: 9 sequential requests come on 3 connections at the backend."""
    n = net({"http": {"maxRequestsPerConnection": 3}}, workers=1)
    peers = []
    for _ in range(9):
        status, body, _ = request(n.client)
        assert status == 200
        peers.append(json.loads(body)["peer"])
    assert len(set(peers)) == 3, peers
    assert [len(set(peers[i:i + 3])) for i in range(0, 9, 3)] == [1, 1, 1], peers


def test_max_requests_per_connection_mesh(net):
    """The same over the mesh (HTTP/2 to the peer sidecar): 9 requests open
    3 mesh connections at the backend's sidecar."""
    n = net({"http": {"maxRequestsPerConnection": 3}}, in_mesh=True, workers=1)

    def mesh_conns():
        with urllib.request.urlopen(f"http://{n.host}:15000/metrics", timeout=10) as r:
            text = r.read().decode()
        m = re.search(r'^rete_proxy_downstream_connections_total{listener="mesh"} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0
    before = mesh_conns()
    for _ in range(9):
        assert request(n.client)[0] == 200
    assert mesh_conns() - before == 3


def test_max_retries_in_flight(tmp_path, net):
    """maxRetries 0: no retry is ever made (a backend failing everything
    sees one try per request), each refusal counted."""
    route = http_route("web", NS, "web", [{"backendRefs": [backend("web")],
                                           "retry": {"attempts": 3, "backoff": "1ms"}}])
    n = net({"http": {"maxRetries": 0}}, echo_args=("--failure-rate", "1"), docs=[route])
    for _ in range(10):
        assert request(n.client)[0] == 503
    assert rejections(n.client, "maxRetries") == 10
    assert proxy_metric(n.client, "rete_proxy_retries_total") == 0
