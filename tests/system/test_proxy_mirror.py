"""Request mirroring (issue 11): an HTTPRoute rule's RequestMirror filter
at the client's sidecar, against real rete-proxy sidecars and rete-echo
backends (docs/traffic.md, "Mirroring").

Copies are counted where they arrive: the mirror echo's log (one line per
request, with its host and body digest) and the client sidecar's
rete_proxy_mirror_requests_total{result}. Nothing is timed: a hung mirror
is shown not to hold the main path by completing every main request while
its copies are still in flight. Every load loop is bounded in requests and
time."""
import hashlib
import http.client
import os
import re
import time

import pytest

from controlplane import wait_for
from helpers import read_log, start_echo
from mesh import Mesh, backend, fresh_host, http_route, meshes, service, workload
from test_proxy_traffic_filters import load, metric

APP_PORT = 18080
NS = "test"


class Net:
    """Service `web` (rete-echo web-0 behind its sidecar), Service `shadow`
    (rete-echo shadow-0, logging every request, behind its own sidecar, or
    nothing at all when `shadow_up` is false: a refused connection), and
    the client's sidecar carrying `rules` on an HTTPRoute of web (and
    `limits` in its Proxy spec). `second`: also Service `shadow-b`, a
    second logging mirror."""

    def __init__(self, tmp_path, rules, shadow_args=(), shadow_up=True, limits=None, second=False):
        self.mesh = m = Mesh(tmp_path, ns=NS)
        m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}))
        m.add(service("shadow", NS, [(80, "HTTP", APP_PORT)], {"app": "shadow"}))
        self.web_host, self.shadow_host, self.client_host = fresh_host(), fresh_host(), fresh_host()
        start_echo("--quiet", name="web", host=self.web_host, port=APP_PORT)
        self.shadow = None
        if shadow_up:
            self.shadow, _ = start_echo(*shadow_args, name="shadow", host=self.shadow_host,
                                        port=APP_PORT)
        m.add(workload("web-0", NS, self.web_host, "web", {"app": "web"}))
        m.add(workload("shadow-0", NS, self.shadow_host, "shadow", {"app": "shadow"}))
        m.add(workload("client-0", NS, self.client_host, "client", {"app": "client"}))
        m.start_proxy("web-0", "web", self.web_host, inbound=[(APP_PORT, "HTTP")])
        if shadow_up:
            m.start_proxy("shadow-0", "shadow", self.shadow_host, inbound=[(APP_PORT, "HTTP")])
        if second:
            m.add(service("shadow-b", NS, [(80, "HTTP", APP_PORT)], {"app": "shadow-b"}))
            self.shadow_b_host = fresh_host()
            self.shadow_b, _ = start_echo(name="shadow-b", host=self.shadow_b_host, port=APP_PORT)
            m.add(workload("shadow-b-0", NS, self.shadow_b_host, "shadow-b", {"app": "shadow-b"}))
            m.start_proxy("shadow-b-0", "shadow-b", self.shadow_b_host, inbound=[(APP_PORT, "HTTP")])
        m.start_proxy("client-0", "client", self.client_host,
                      extra_docs=[http_route("web", NS, "web", rules)],
                      extra_spec={"limits": {"drainTimeout": "2s", **(limits or {})}})

    def shadow_lines(self, path_prefix="/", echo=None):
        """The mirror echo's request lines (method, path, then host= ...)."""
        pat = re.compile(r" (GET|POST|PUT) (" + re.escape(path_prefix) + r"\S*) (\d+) \S+ host=(\S+) "
                         r"body_bytes=(\d+)(?: body_sha256=([0-9a-f]+))?")
        return [m.groups() for m in pat.finditer(read_log(echo or self.shadow))]

    def mirror(self, result):
        return metric(self.client_host, "rete_proxy_mirror_requests_total", result=result)


@pytest.fixture
def net(tmp_path):
    yield from meshes(tmp_path, Net)


def mirror_filter(to="shadow", **share):
    return {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": to, "port": 80}, **share}}


def mirror_rule(**share):
    return {"backendRefs": [backend("web")], "filters": [mirror_filter(**share)]}


def post(host, path, body, timeout=30):
    c = http.client.HTTPConnection(host, 15001, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers={"Host": "web:80", "Content-Type": "application/octet-stream"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_mirror_receives_its_share_with_the_shadow_host(net):
    """percent: 50 over 400 requests: the mirror receives 50% +-10% of
    them, each with Host `web-shadow` (Envoy's -shadow suffix), counted as
    sent; every main request is answered by web."""
    n = net([mirror_rule(percent=50)])
    total = 400
    res = load(n.client_host, [f"/share/{i}" for i in range(total)])
    assert all(s == 200 for s, _ in res)
    assert all(b'"service":"web"' in b for _, b in res)
    wait_for(lambda: n.mirror("sent") + n.mirror("failed") >= 0.4 * total and
             len(n.shadow_lines("/share/")) == n.mirror("sent"), timeout=20)
    lines = n.shadow_lines("/share/")
    assert 0.4 * total <= len(lines) <= 0.6 * total, len(lines)
    assert n.mirror("failed") == 0 and n.mirror("skipped_limit") == 0
    assert {host for _, _, _, host, _, _ in lines} == {"web-shadow"}
    assert len({path for _, path, _, _, _, _ in lines}) == len(lines)  # each copied once


def test_mirror_fraction_and_bodies_intact(net):
    """fraction 1/1 (every request): POST bodies of 0 B to 64 KiB arrive
    whole at the mirror (echo's body_bytes and sha256); a body over the
    copy bound (64 KiB) is not copied (skipped_body) and its request is
    served all the same; the host keeps its port (web-shadow:80)."""
    n = net([mirror_rule(fraction={"numerator": 1, "denominator": 1})])
    bodies = [b"", b"x", os.urandom(1000), os.urandom(65536)]
    for i, body in enumerate(bodies):
        status, out = post(n.client_host, f"/body/{i}", body)
        assert status == 200, out
    wait_for(lambda: len(n.shadow_lines("/body/")) == len(bodies), timeout=20)
    by_path = {path: (host, int(nbytes), sha) for _, path, _, host, nbytes, sha in n.shadow_lines("/body/")}
    for i, body in enumerate(bodies):
        host, nbytes, sha = by_path[f"/body/{i}"]
        assert host == "web-shadow:80"
        assert nbytes == len(body)
        if body:
            assert sha == hashlib.sha256(body).hexdigest()
    big = os.urandom(65537)
    status, out = post(n.client_host, "/body/big", big)
    assert status == 200 and f'"body_bytes":{len(big)}'.encode() in out
    assert n.mirror("skipped_body") == 1
    assert n.mirror("sent") == len(bodies)
    time.sleep(0.5)  # a copy wrongly sent would have reached the echo by now
    assert "/body/big" not in read_log(n.shadow)


def test_hung_mirror_holds_nothing_and_the_in_flight_bound_holds(net):
    """The mirror answers only after 20 s (--latency): 100 main requests,
    one at a time, all complete while their copies are still pending (the
    mirror has logged none of them); 64 copies are in flight (the bound),
    the other 36 skipped and counted."""
    n = net([mirror_rule()], shadow_args=("--latency", "20000"))
    total = 100
    res = load(n.client_host, [f"/hung/{i}" for i in range(total)], workers=1)
    assert all(s == 200 for s, _ in res)
    assert n.shadow_lines("/hung/") == []  # no copy answered yet: all pending
    in_flight = metric(n.client_host, "rete_proxy_mirror_requests_in_flight")
    assert in_flight == 64, in_flight
    assert n.mirror("skipped_limit") == total - 64
    assert n.mirror("sent") + n.mirror("failed") == 0
    # The copies reach the mirror's app (they are pending there, not lost):
    # the mirror's sidecar has them in flight.
    assert metric(n.shadow_host, "rete_proxy_requests_total") >= 64


def test_mirror_refusing_connections_changes_nothing_for_the_client(net):
    """The mirror Service's only endpoint refuses connections (nothing
    listens there): 100 main requests all succeed; the copies fail and are
    counted as failed."""
    n = net([mirror_rule()], shadow_up=False)
    total = 100
    res = load(n.client_host, [f"/refused/{i}" for i in range(total)])
    assert all(s == 200 for s, _ in res), [s for s, _ in res if s != 200][:5]
    assert all(b'"service":"web"' in b for _, b in res)
    wait_for(lambda: n.mirror("failed") == total, timeout=20)
    assert n.mirror("sent") == 0
    assert metric(n.client_host, "rete_proxy_mirror_requests_in_flight") == 0


def test_mirror_percent_zero_sends_nothing(net):
    """percent: 0: no copy, nothing counted."""
    n = net([mirror_rule(percent=0)])
    res = load(n.client_host, ["/none"] * 50)
    assert all(s == 200 for s, _ in res)
    assert sum(n.mirror(r) for r in ("sent", "failed", "aborted", "skipped_limit", "skipped_body")) == 0
    assert n.shadow_lines("/none") == []


def test_mirror_copy_cut_when_the_body_outgrows_it_or_the_client_leaves(net):
    """A chunked POST (no content-length) of 100 KiB: its copy is cut once
    past 64 KiB (skipped_body) while the request itself arrives whole at
    web; a client that leaves mid-body gets its copy cut (aborted). Neither
    copy is answered at the mirror."""
    n = net([mirror_rule()])
    body = os.urandom(100 * 1024)
    c = http.client.HTTPConnection(n.client_host, 15001, timeout=30)
    c.request("POST", "/cut/chunked", body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
              headers={"Host": "web"}, encode_chunked=True)
    r = c.getresponse()
    out = r.read()
    c.close()
    assert r.status == 200 and f'"body_bytes":{len(body)}'.encode() in out
    assert f'"body_sha256":"{hashlib.sha256(body).hexdigest()}"'.encode() in out
    wait_for(lambda: n.mirror("skipped_body") == 1, timeout=10)

    import socket
    s = socket.create_connection((n.client_host, 15001), timeout=10)
    s.sendall(b"POST /cut/gone HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    wait_for(lambda: metric(n.client_host, "rete_proxy_mirror_requests_in_flight") == 1, timeout=10)
    s.close()
    wait_for(lambda: n.mirror("aborted") == 1, timeout=10)
    assert metric(n.client_host, "rete_proxy_mirror_requests_in_flight") == 0
    assert n.mirror("sent") == 0
    # A request sent after them has its copy answered: nothing is stuck.
    assert post(n.client_host, "/cut/after", b"ok")[0] == 200
    wait_for(lambda: n.mirror("sent") == 1, timeout=10)
    assert [p for _, p, *_ in n.shadow_lines("/cut/")] == ["/cut/after"]


def test_two_mirrors_each_get_their_copy(net):
    """Two RequestMirror filters on one rule (Gateway API allows repeats):
    every request is copied to both Services, bodies whole at each; a
    client leaving mid-body cuts both copies."""
    rule = {"backendRefs": [backend("web")], "filters": [mirror_filter(), mirror_filter("shadow-b")]}
    n = net([rule], second=True)
    bodies = [b"", os.urandom(3000), os.urandom(65536)]
    for i, body in enumerate(bodies):
        assert post(n.client_host, f"/two/{i}", body)[0] == 200
    wait_for(lambda: len(n.shadow_lines("/two/")) == len(bodies) and
             len(n.shadow_lines("/two/", n.shadow_b)) == len(bodies), timeout=20)
    for echo, host in ((n.shadow, "web-shadow:80"), (n.shadow_b, "web-shadow:80")):
        got = {path: (h, int(nb), sha) for _, path, _, h, nb, sha in n.shadow_lines("/two/", echo)}
        for i, body in enumerate(bodies):
            h, nb, sha = got[f"/two/{i}"]
            assert h == host and nb == len(body)
            if body:
                assert sha == hashlib.sha256(body).hexdigest()
    assert n.mirror("sent") == 2 * len(bodies)

    import socket
    s = socket.create_connection((n.client_host, 15001), timeout=10)
    s.sendall(b"POST /two/gone HTTP/1.1\r\nHost: web\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    wait_for(lambda: metric(n.client_host, "rete_proxy_mirror_requests_in_flight") == 2, timeout=10)
    s.close()
    wait_for(lambda: n.mirror("aborted") == 2, timeout=10)
    assert metric(n.client_host, "rete_proxy_mirror_requests_in_flight") == 0


def test_mirror_bounds_from_the_proxy_limits(net):
    """limits.maxMirrorsInFlight: 5 against a hung mirror: 5 copies in
    flight, the other requests not copied (skipped_limit);
    limits.maxMirrorBody: 1000: a 2000-byte body is not copied
    (skipped_body), a 1000-byte one is (its copy waits at the hung mirror)."""
    n = net([mirror_rule()], shadow_args=("--latency", "20000"),
            limits={"maxMirrorsInFlight": 5, "maxMirrorBody": 1000})
    assert post(n.client_host, "/bound/big", os.urandom(2000))[0] == 200
    assert n.mirror("skipped_body") == 1
    assert post(n.client_host, "/bound/fits", os.urandom(1000))[0] == 200
    total = 20
    res = load(n.client_host, [f"/bound/{i}" for i in range(total)], workers=1)
    assert all(s == 200 for s, _ in res)
    assert metric(n.client_host, "rete_proxy_mirror_requests_in_flight") == 5
    assert n.mirror("skipped_limit") == total + 1 - 5
