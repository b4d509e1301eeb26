"""Retries, retry budgets, per-try and request timeouts and the connect
timeout (issue 11, first slice), against real rete-proxy sidecars and
rete-echo backends that fail on purpose (--failure-rate with a fixed --seed,
?status=, --latency).

Attempts are counted at the backend (its sidecar's rete_proxy_requests_total:
every try reaches it as one request) and, per request, by the
rete-attempt-count response header the client asks for. Bounds are
behavioural (counts), never timings."""
import concurrent.futures
import http.client
import socket
import time

import pytest

import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)

from controlplane import proxy_metric, wait_for
from test_proxy_traffic_filters import metric as proxy_metric_labelled
from helpers import start_echo
from mesh import (meshes, Mesh, backend, destination_rule, fresh_host, http_route, service,
                  stop_and_check_proxies, workload)

APP_PORT = 18080
NS = "test"
ATTEMPTS = "rete-attempt-count"


class Net:
    """Service `web` with the given echo instances (each behind its sidecar
    unless in_mesh is False), and a client sidecar carrying `docs`."""

    def __init__(self, tmp_path, instances, docs, protocol="HTTP"):
        self.mesh = m = Mesh(tmp_path, ns=NS)
        self.hosts = []
        m.add(service("web", NS, [(80, protocol, APP_PORT)], {"app": "web"}))
        for i, (echo_args, in_mesh) in enumerate(instances):
            host = fresh_host()
            start_echo("--quiet", *echo_args, name="web", host=host, port=APP_PORT)
            spec = {} if in_mesh else {"inMesh": False}
            m.add(workload(f"web-{i}", NS, host, "web", {"app": "web"}, **spec))
            if in_mesh:
                m.start_proxy(f"web-{i}", "web", host, inbound=[(APP_PORT, protocol)])
            self.hosts.append(host)
        self.scrapes = 0
        self.client_host = fresh_host()
        m.add(workload("client-0", NS, self.client_host, "client", {"app": "client"}))
        m.start_proxy("client-0", "client", self.client_host, extra_docs=docs)

    def backend_requests(self, i=0):
        """Requests the backend's sidecar received, less the metric scrapes
        (its admin listener's requests are counted too, this one included)."""
        self.scrapes += 1
        return proxy_metric(self.hosts[i], "rete_proxy_requests_total") - self.scrapes

    def client_metric(self, name):
        return proxy_metric(self.client_host, name)


def request(host, path, method="GET", body=None, headers=None, timeout=30):
    """One request on a fresh connection: (status, headers dict, body)."""
    c = http.client.HTTPConnection(host, 15001, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Host": "web", ATTEMPTS: "1", **(headers or {})})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def retry_route(**retry):
    rule = {"backendRefs": [backend("web")], "retry": {"backoff": "5ms", **retry}}
    return http_route("web", NS, "web", [rule])


def route_with(**rule_extra):
    return http_route("web", NS, "web", [{"backendRefs": [backend("web")], **rule_extra}])


@pytest.fixture
def net(tmp_path):
    yield from meshes(tmp_path, Net)


def test_partial_failure_retried_away(net):
    """A backend failing 30% with 503 (deterministic: one backend, one
    request at a time, a fixed seed): with 4 tries the client sees < 1%."""
    n = net([(("--failure-rate", "0.3", "--seed", "7"), True)], [retry_route(attempts=3)])
    total, failed, tries = 200, 0, 0
    for _ in range(total):
        status, h, _ = request(n.client_host, "/")
        failed += status != 200
        tries += int(h[ATTEMPTS])
        assert status in (200, 503)
    assert failed <= total // 100, failed
    retries = n.client_metric("rete_proxy_retries_total")
    assert retries == tries - total > 0.2 * total  # ~30% of requests retried at least once
    # Every try reached the backend once: attempts counted there.
    assert n.backend_requests() == tries
    assert tries <= 4 * total


def test_budget_holds_against_total_failure(net):
    """A backend failing every request: retries stop at the budget (20% of
    requests + 10/s over the 10 s window) and the client gets the 503s."""
    n = net([(("--failure-rate", "1"), True)], [retry_route(attempts=3)])
    total = 600

    def one(_):
        return request(n.client_host, "/")[0]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(total)))
    elapsed = time.monotonic() - t0
    assert statuses == [503] * total
    attempts = n.backend_requests()
    window = max(10, elapsed + 1)
    assert total < attempts <= 1.2 * total + 10 * window, (attempts, elapsed)
    assert n.client_metric("rete_proxy_retry_budget_exhausted_total") > 0


def _sequential_failures(n, total):
    """`total` requests one at a time against a backend failing all of them:
    the attempts that reached it."""
    for _ in range(total):
        assert request(n.client_host, "/")[0] == 503
    return n.backend_requests()


def test_budget_configured(net):
    """DestinationRule retryConstraint (GEP-3388's shape) sets the budget:
    50% of requests over 60 s plus one retry a minute lets about half the
    requests retry (the default 20% + 10/s would let all 100 retry three
    times within the window)."""
    total = 100
    dr = destination_rule("web", NS, "web", retryConstraint={
        "budget": {"percent": 50, "interval": "60s"},
        "minRetryRate": {"count": 1, "interval": "60s"}})
    n = net([(("--failure-rate", "1"), True)], [retry_route(attempts=3), dr])
    attempts = _sequential_failures(n, total)
    # One at a time: a retry is allowed while retries <= requests / 2 + 1.
    assert total + total // 2 - 2 <= attempts <= total + total // 2 + 2, attempts
    assert n.client_metric("rete_proxy_retry_budget_exhausted_total") > 0


def test_budget_zero_stops_every_retry(net):
    """percent 0 and minRetryRate.count 0: no retry is ever made, and each
    one refused is counted."""
    total = 30
    dr = destination_rule("web", NS, "web", retryConstraint={
        "budget": {"percent": 0}, "minRetryRate": {"count": 0}})
    n = net([(("--failure-rate", "1"), True)], [retry_route(attempts=3), dr])
    assert _sequential_failures(n, total) == total
    assert n.client_metric("rete_proxy_retries_total") == 0
    assert n.client_metric("rete_proxy_retry_budget_exhausted_total") == total


def test_route_circuit_breaker_limits_requests_per_rule(net):
    """A rule's circuitBreaker.maxRequests: 2 slow requests of rule /slow
    hold its two places; four more get a fast 503 naming the limit (counted
    with limit="route_maxRequests"), while rule / of the same Service is
    not limited."""
    slow = {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
            "backendRefs": [backend("web")], "circuitBreaker": {"maxRequests": 2}}
    rest = {"backendRefs": [backend("web")]}
    n = net([((), True)], [http_route("web", NS, "web", [slow, rest])])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        held = [pool.submit(request, n.client_host, "/slow?delay=4000") for _ in range(2)]
        time.sleep(1)  # the two are in flight for 4 s: well inside that
        refused = [request(n.client_host, "/slow") for _ in range(4)]
        others = [request(n.client_host, "/other")[0] for _ in range(4)]
        assert [f.result()[0] for f in held] == [200, 200]
    assert [r[0] for r in refused] == [503] * 4
    assert all(b"circuitBreaker.maxRequests" in r[2] for r in refused)
    assert others == [200] * 4
    assert proxy_metric_labelled(n.client_host, "rete_proxy_circuit_breaker_rejections_total",
                                 limit="route_maxRequests") == 4
    assert request(n.client_host, "/slow")[0] == 200  # given back at the ends


def test_route_circuit_breaker_limits_retries_per_rule(net):
    """circuitBreaker.maxRetries: 0 on a rule with retry: its requests are
    never retried (each refusal counted, limit="route_maxRetries"), though
    the Service's own maxRetries is unbounded."""
    rule = {"backendRefs": [backend("web")], "retry": {"attempts": 3, "backoff": "5ms"},
            "circuitBreaker": {"maxRetries": 0}}
    n = net([(("--failure-rate", "1"), True)], [http_route("web", NS, "web", [rule])])
    total = 20
    assert _sequential_failures(n, total) == total
    assert proxy_metric_labelled(n.client_host, "rete_proxy_circuit_breaker_rejections_total",
                                 limit="route_maxRetries") == total


def test_status_retry_and_methods(net):
    """?status=503 always fails: GET is tried 1 + attempts times, POST once
    unless nonIdempotent, and a body over the 64 KiB replay buffer is never
    retried (a small one is, body intact)."""
    docs = [http_route("web", NS, "web", [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/any"}}],
         "backendRefs": [backend("web")],
         "retry": {"attempts": 2, "backoff": "1ms", "nonIdempotent": True}},
        {"backendRefs": [backend("web")], "retry": {"attempts": 2, "backoff": "1ms"}}])]
    n = net([((), True)], docs)
    h = n.client_host
    status, hd, _ = request(h, "/?status=503")
    assert (status, hd[ATTEMPTS]) == (503, "3")
    status, hd, _ = request(h, "/?status=404")  # not a listed code
    assert (status, hd[ATTEMPTS]) == (404, "1")
    status, hd, _ = request(h, "/?status=503", method="POST", body=b"x" * 10)
    assert (status, hd[ATTEMPTS]) == (503, "1")
    status, hd, _ = request(h, "/any?status=503", method="POST", body=b"x" * 10)
    assert (status, hd[ATTEMPTS]) == (503, "3")
    status, hd, _ = request(h, "/?status=503", method="PUT", body=b"y" * 1000)
    assert (status, hd[ATTEMPTS]) == (503, "3")
    status, hd, _ = request(h, "/?status=503", method="PUT", body=b"z" * (100 * 1024))
    assert (status, hd[ATTEMPTS]) == (503, "1")
    # A replayed body arrives whole: the echo reports what it received.
    status, hd, body = request(h, "/any?echo=1", method="POST", body=b"q" * 5000)
    assert status == 200 and body == b"q" * 5000
    before = n.backend_requests()
    request(h, "/?status=503")
    assert n.backend_requests() - before == 3


def test_per_try_timeout_retries_on_another_endpoint(net):
    """One endpoint hangs (--latency 5000): the per-try timeout cuts it and
    the retry goes to the other one; with no retry left the client gets a
    504 that names timeouts.backendRequest."""
    docs = [http_route("web", NS, "web", [{
        "backendRefs": [backend("web")], "timeouts": {"backendRequest": "300ms"},
        "retry": {"attempts": 1, "backoff": "1ms"}}])]
    n = net([(("--latency", "5000"), True), ((), True)], docs)
    retried = 0
    for _ in range(12):
        status, hd, body = request(n.client_host, "/")
        assert status == 200, body
        retried += hd[ATTEMPTS] == "2"
    assert retried > 0
    assert n.client_metric("rete_proxy_retries_total") == retried
    assert n.client_metric("rete_proxy_upstream_timeouts_total") >= retried
    # Both tries hang: the per-try timeout answers.
    status, _, body = request(n.client_host, "/?delay=5000")
    assert status == 504 and b"timeouts.backendRequest" in body, body


def test_request_timeout_names_itself(net):
    n = net([((), True)], [route_with(timeouts={"request": "300ms"})])
    status, _, body = request(n.client_host, "/?delay=3000")
    assert status == 504 and b"timeouts.request" in body, body
    assert request(n.client_host, "/")[0] == 200


def _black_hole():
    """A listening socket whose accept queue is full and never drained: the
    kernel drops further SYNs, so a connect to it hangs as one to a
    black-holed address does (no namespace or firewall rule needed)."""
    host = fresh_host()
    ls = socket.socket()
    ls.bind((host, APP_PORT))
    ls.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, APP_PORT))
        fillers.append(s)
    time.sleep(0.2)
    probe = socket.socket()
    probe.settimeout(1.0)
    try:
        probe.connect((host, APP_PORT))
        hung = False
    except (socket.timeout, TimeoutError):
        hung = True
    finally:
        probe.close()
    return host, ls, fillers, hung


def test_connect_timeout(tmp_path):
    """An endpoint outside the mesh whose SYNs go unanswered: the connect
    timeout (DestinationRule connectionPool.tcp.connectTimeout) answers 503
    naming it, counted; with a retry the other endpoint serves."""
    host, ls, fillers, hung = _black_hole()
    # Linux drops a SYN to a full accept queue (tcp_abort_on_overflow=0): a
    # kernel that answers it cannot host this test, and says so by failing.
    assert hung, "a connect to a full accept queue did not hang: no black hole to test against"
    try:
        m = Mesh(tmp_path, ns=NS)
        good = fresh_host()
        start_echo("--quiet", name="web", host=good, port=APP_PORT)
        m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}),
              workload("web-hole", NS, host, "web", {"app": "web"}, inMesh=False),
              workload("web-good", NS, good, "web", {"app": "web"}, inMesh=False),
              destination_rule("web", NS, "web", connectionPool={"tcp": {"connectTimeout": "300ms"}},
                               loadBalancer={"simple": "ROUND_ROBIN"}))
        client = fresh_host()
        m.add(workload("client-0", NS, client, "client", {"app": "client"}))
        m.start_proxy("client-0", "client", client)
        seen = set()
        for _ in range(4):
            status, _, body = request(client, "/")
            seen.add(status)
            if status == 503:
                assert b"connect timeout" in body, body
        assert seen == {200, 503}
        assert proxy_metric(client, "rete_proxy_upstream_timeouts_total") >= 1
        stop_and_check_proxies(m)
        (tmp_path / "retry").mkdir()
        m2 = Mesh(tmp_path / "retry", ns=NS)
        m2.add(*m.resources, http_route("web", NS, "web", [{
            "backendRefs": [backend("web")], "retry": {"attempts": 1, "backoff": "1ms"}}]))
        c2 = fresh_host()
        m2.add(workload("client-1", NS, c2, "client", {"app": "client"}))
        m2.start_proxy("client-1", "client", c2)
        for _ in range(4):
            status, hd, body = request(c2, "/")
            assert status == 200, body
        assert proxy_metric(c2, "rete_proxy_retries_total") >= 1
        stop_and_check_proxies(m2)
    finally:
        for s in fillers:
            s.close()
        ls.close()


def test_grpc_retry_on_unavailable(net):
    """rete-echo's gRPC mode failing 30% with UNAVAILABLE (trailers-only),
    a GRPCRoute with retry, python3-grpcio as the client."""
    route = http_route("web", NS, "web", [{"backendRefs": [backend("web")],
                                           "retry": {"attempts": 3, "backoff": "5ms"}}],
                       kind="GRPCRoute")
    n = net([(("--failure-rate", "0.3", "--seed", "3"), True)], [route], protocol="GRPC")
    ch = grpc.insecure_channel(f"{n.client_host}:15001",
                               options=[("grpc.default_authority", "web.test:80")])
    call = ch.unary_unary("/rete.echo.Echo/Echo", request_serializer=None,
                          response_deserializer=None)
    failed = 0
    try:
        for i in range(100):
            try:
                assert call(b"\x0a\x02hi", timeout=30) == b"\x0a\x02hi"
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1
    finally:
        ch.close()
    assert failed <= 1, failed
    wait_for(lambda: n.client_metric("rete_proxy_retries_total") > 10, timeout=5)
