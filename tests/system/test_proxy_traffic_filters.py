"""Fault injection, local rate limits and mirroring (issue 11): the
request-path filters of docs/traffic.md, against real rete-proxy sidecars
and rete-echo backends.

Shares are counted, never timed: faults at the client's sidecar
(rete_proxy_faults_injected_total) and in the statuses the client sees;
requests that reached the backend at its sidecar. Every load loop is
bounded in requests and time."""
import concurrent.futures
import http.client
import re
import threading
import time
import urllib.request

import pytest

import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)

from controlplane import proxy_metric, wait_for
from helpers import start_echo
from mesh import Mesh, backend, fresh_host, http_route, meshes, service, workload

APP_PORT = 18080
NS = "test"


def metric(host, name, **labels):
    """Sum of the samples of family `name` whose labels include `labels`."""
    with urllib.request.urlopen(f"http://{host}:15000/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


class Net:
    """Service `web` (rete-echo behind its sidecar web-0, carrying
    `server_docs`) and client sidecars, one per service account of
    `clients`, carrying `docs`."""

    def __init__(self, tmp_path, docs, echo_args=(), server_docs=(), protocol="HTTP",
                 clients=("client",)):
        self.mesh = m = Mesh(tmp_path, ns=NS)
        m.add(service("web", NS, [(80, protocol, APP_PORT)], {"app": "web"}))
        self.web_host = fresh_host()
        start_echo("--quiet", *echo_args, name="web", host=self.web_host, port=APP_PORT)
        m.add(workload("web-0", NS, self.web_host, "web", {"app": "web"}))
        self.client_hosts = []
        for i, sa in enumerate(clients):
            host = fresh_host()
            m.add(workload(f"{sa}-{i}", NS, host, sa, {"app": sa}))
            self.client_hosts.append(host)
        m.start_proxy("web-0", "web", self.web_host, inbound=[(APP_PORT, protocol)],
                      extra_docs=server_docs)
        for i, sa in enumerate(clients):
            m.start_proxy(f"{sa}-{i}", sa, self.client_hosts[i], extra_docs=docs)
        self.client_host = self.client_hosts[0]
        self.scrapes = 0

    def backend_requests(self):
        """Requests the backend's sidecar received, less the metric scrapes."""
        self.scrapes += 1
        return proxy_metric(self.web_host, "rete_proxy_requests_total") - self.scrapes


@pytest.fixture
def net(tmp_path):
    yield from meshes(tmp_path, Net)


def load(host, paths, workers=4, timeout=30):
    """Send every path of `paths` through the client sidecar, `workers`
    keep-alive connections at a time; returns the list of (status, body)."""
    lock = threading.Lock()
    todo = list(enumerate(paths))
    out = [None] * len(paths)

    def worker():
        c = http.client.HTTPConnection(host, 15001, timeout=timeout)
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    i, path = todo.pop()
                c.request("GET", path, headers={"Host": "web"})
                r = c.getresponse()
                out[i] = (r.status, r.read())
                if r.getheader("connection", "").lower() == "close":
                    c.close()
                    c = http.client.HTTPConnection(host, 15001, timeout=timeout)
        finally:
            c.close()
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        for f in [ex.submit(worker) for _ in range(workers)]:
            f.result(timeout=300)
    return out


# ---- fault injection ----

def test_fault_delay_and_abort_at_ten_percent(net):
    """fault {delay 10%, abort 10% with 503} over 2000 requests: each is
    injected at 10% +-3%; aborted requests never reach the backend; the
    delay (1 ms, small to bound the test) is counted per delayed request."""
    rule = {"backendRefs": [backend("web")],
            "fault": {"delay": {"percentage": {"value": 10}, "fixedDelay": "1ms"},
                      "abort": {"percentage": {"value": 10}, "httpStatus": 503}}}
    n = net([http_route("web", NS, "web", [rule])])
    total = 2000
    res = load(n.client_host, ["/"] * total)
    aborted = [b for s, b in res if s == 503]
    assert all(b == b"fault filter abort\n" for b in aborted)
    assert all(s in (200, 503) for s, _ in res)
    assert 0.07 * total <= len(aborted) <= 0.13 * total, len(aborted)
    assert metric(n.client_host, "rete_proxy_faults_injected_total", kind="abort") == len(aborted)
    delayed = metric(n.client_host, "rete_proxy_faults_injected_total", kind="delay")
    assert 0.07 * total <= delayed <= 0.13 * total, delayed
    assert n.backend_requests() == total - len(aborted)


def test_fault_delay_holds_one_request_not_the_worker(net):
    """A request held by a long delay (100%, 1 h on /held) does not hold the
    proxy: 200 requests of another rule complete while it is still held,
    then its client gives up and the proxy drops it."""
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/held"}}],
              "backendRefs": [backend("web")],
              "fault": {"delay": {"percentage": {"value": 100}, "fixedDelay": "1h"}}},
             {"backendRefs": [backend("web")]}]
    n = net([http_route("web", NS, "web", rules)])
    held = http.client.HTTPConnection(n.client_host, 15001, timeout=60)
    held.request("GET", "/held", headers={"Host": "web"})
    wait_for(lambda: metric(n.client_host, "rete_proxy_faults_injected_total", kind="delay") == 1,
             timeout=10)
    res = load(n.client_host, ["/"] * 200, workers=2)
    assert all(s == 200 for s, _ in res)
    assert n.backend_requests() == 200
    # Its client leaves: the proxy lets the held exchange go (its timer
    # stopped; stop_and_check_proxies checks for leaks and errors).
    held.close()
    assert load(n.client_host, ["/"], workers=1)[0][0] == 200


def test_fault_grpc_status(net):
    """abort.grpcStatus answers HTTP 200 with that grpc-status."""
    rule = {"backendRefs": [backend("web")],
            "fault": {"abort": {"percentage": {"value": 100}, "grpcStatus": "UNAVAILABLE"}}}
    n = net([http_route("web", NS, "web", [rule])])
    c = http.client.HTTPConnection(n.client_host, 15001, timeout=10)
    c.request("POST", "/pkg.Svc/Call", body=b"", headers={"Host": "web", "content-type": "application/grpc"})
    r = c.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("grpc-status") == "14"
    c.close()
    assert n.backend_requests() == 0


# ---- local rate limits ----

def burst(host, count, path="/", deadline_s=60):
    """`count` requests one after the other on one keep-alive connection
    (bounded by deadline_s): (statuses, retry-after values, seconds from
    the first to the last)."""
    c = http.client.HTTPConnection(host, 15001, timeout=30)
    statuses, retry_after = [], []
    start = time.monotonic()
    try:
        for _ in range(count):
            if time.monotonic() - start > deadline_s:
                break
            c.request("GET", path, headers={"Host": "web"})
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
            if r.status == 429:
                retry_after.append(r.getheader("retry-after"))
    finally:
        c.close()
    return statuses, retry_after, time.monotonic() - start


def test_route_rate_limit_at_the_configured_rate(net):
    """rateLimit 40/s on the rule, requests as fast as one connection goes
    for a bounded window (about 3 s): accepted = the burst (one second's
    worth) + 40/s over the window, +-10%; every refusal is 429 with
    retry-after, counted; refused requests never reach the backend."""
    rule = {"backendRefs": [backend("web")], "rateLimit": {"requestsPerSecond": 40}}
    n = net([http_route("web", NS, "web", [rule])])
    statuses, retry_after, _ = [], [], 0
    start = time.monotonic()
    while time.monotonic() - start < 3:
        s, ra, _ = burst(n.client_host, 50)
        statuses += s
        retry_after += ra
    window = time.monotonic() - start
    ok = statuses.count(200)
    expected = 40 + 40 * window
    assert statuses.count(429) == len(statuses) - ok > ok, (ok, len(statuses))
    assert 0.9 * expected <= ok <= 1.1 * expected, (ok, expected, window)
    assert all(ra is not None and int(ra) >= 1 for ra in retry_after)
    assert metric(n.client_host, "rete_proxy_rate_limited_total", limit="route") == statuses.count(429)
    assert n.backend_requests() == ok


def test_inbound_rate_limit_per_identity(net):
    """HTTPLocalRateLimitPolicy at the backend: 3/s per identity, 30/s for
    client `vip` (an override). Each identity has its own bucket: once
    `a` is refused, `b` still gets its burst, and `vip` its larger one."""
    policy = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "HTTPLocalRateLimitPolicy",
              "metadata": {"name": "web-rl", "namespace": NS},
              "spec": {"selector": {"matchLabels": {"app": "web"}},
                       "identity": {"requestsPerSecond": 3},
                       "overrides": [{"requestsPerSecond": 30,
                                      "clientRefs": [{"kind": "ServiceAccount", "name": "vip"}]}]}}
    n = net([], server_docs=[policy], clients=("a", "b", "vip"))
    a, ra, ta = burst(n.client_hosts[0], 30)
    b, _, tb = burst(n.client_hosts[1], 30)
    vip, _, tv = burst(n.client_hosts[2], 60)
    # The burst (one second's worth) + what refilled meanwhile; the other
    # identities' requests never take from it.
    assert 3 <= a.count(200) <= 3 + 3 * ta + 1, (a.count(200), ta)
    assert 3 <= b.count(200) <= 3 + 3 * tb + 1, (b.count(200), tb)
    assert 30 <= vip.count(200) <= 30 + 30 * tv + 1, (vip.count(200), tv)
    assert set(a + b + vip) == {200, 429}
    assert all(int(x) >= 1 for x in ra)
    refused = a.count(429) + b.count(429) + vip.count(429)
    assert metric(n.web_host, "rete_proxy_rate_limited_total", limit="identity") == refused


def test_inbound_rate_limit_grpc_resource_exhausted(net):
    """A gRPC caller over the inbound total limit gets RESOURCE_EXHAUSTED."""
    policy = {"apiVersion": "policy.linkerd.io/v1alpha1", "kind": "HTTPLocalRateLimitPolicy",
              "metadata": {"name": "web-rl", "namespace": NS},
              "spec": {"total": {"requestsPerSecond": 2}}}
    route = http_route("web", NS, "web", [{"backendRefs": [backend("web")]}], kind="GRPCRoute")
    n = net([route], server_docs=[policy], protocol="GRPC")
    ch = grpc.insecure_channel(f"{n.client_host}:15001",
                               options=[("grpc.default_authority", "web.test:80")])
    call = ch.unary_unary("/rete.echo.Echo/Echo", request_serializer=None,
                          response_deserializer=None)
    ok = exhausted = 0
    try:
        for _ in range(20):
            try:
                assert call(b"\x0a\x02hi", timeout=30) == b"\x0a\x02hi"
                ok += 1
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                exhausted += 1
    finally:
        ch.close()
    assert ok >= 2 and exhausted >= 10, (ok, exhausted)
    assert metric(n.web_host, "rete_proxy_rate_limited_total", limit="total") == exhausted


def test_fault_delayed_request_body_arrives_whole(net):
    """A POST held by a delay keeps its body (it waits in the request pipe,
    bounded, its client held by flow control) and delivers all of it after."""
    import hashlib
    import json
    rule = {"backendRefs": [backend("web")],
            "fault": {"delay": {"percentage": {"value": 100}, "fixedDelay": "200ms"}}}
    n = net([http_route("web", NS, "web", [rule])])
    body = bytes(range(256)) * 1024  # 256 KiB: more than one pipe's worth
    c = http.client.HTTPConnection(n.client_host, 15001, timeout=30)
    c.request("POST", "/", body=body, headers={"Host": "web"})
    r = c.getresponse()
    echo = json.loads(r.read())
    c.close()
    assert r.status == 200
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
