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
import urllib.request

import pytest

from controlplane import proxy_metric, wait_for
from helpers import start_echo
from mesh import Mesh, backend, fresh_host, http_route, service, stop_and_check_proxies, workload

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
    """Service `web` (rete-echo behind its sidecar) and a client sidecar
    carrying `docs`."""

    def __init__(self, tmp_path, docs, echo_args=()):
        self.mesh = m = Mesh(tmp_path, ns=NS)
        m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}))
        self.web_host = fresh_host()
        start_echo("--quiet", *echo_args, name="web", host=self.web_host, port=APP_PORT)
        m.add(workload("web-0", NS, self.web_host, "web", {"app": "web"}))
        m.start_proxy("web-0", "web", self.web_host, inbound=[(APP_PORT, "HTTP")])
        self.client_host = fresh_host()
        m.add(workload("client-0", NS, self.client_host, "client", {"app": "client"}))
        m.start_proxy("client-0", "client", self.client_host, extra_docs=docs)
        self.scrapes = 0

    def backend_requests(self):
        """Requests the backend's sidecar received, less the metric scrapes."""
        self.scrapes += 1
        return proxy_metric(self.web_host, "rete_proxy_requests_total") - self.scrapes


@pytest.fixture
def net(tmp_path):
    nets = []

    def make(*args, **kw):
        d = tmp_path / str(len(nets))
        d.mkdir()
        n = Net(d, *args, **kw)
        nets.append(n)
        return n
    yield make
    for n in nets:
        stop_and_check_proxies(n.mesh)


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
