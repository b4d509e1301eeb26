"""gRPC deadlines (grpc-timeout honoured at the calling sidecar and
decremented for the next hop), the upstream response-header and stream idle
timeouts, and the pooled connection idle timeout (issue 11, timeouts), against
real rete-proxy sidecars and rete-echo backends (--latency, ?delay=, ?echo).

Each test checks what the client gets (status, body, grpc-status), what the
backend received (rete-echo echoes the request headers and its peer address),
and the timeout's label of rete_proxy_upstream_timeouts_total; never
timings."""
import http.client
import json
import re
import urllib.request

import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)

from controlplane import wait_for
from mesh import backend, destination_rule, http_route
from test_proxy_resilience import NS, net, request, route_with  # noqa: F401 (net: fixture)

GRPC_PATH = "/rete.echo.Echo/Echo"
GRPC_HELLO = b"\x00\x00\x00\x00\x04\x0a\x02hi"  # one gRPC message: field 1 = "hi"


def timeouts(host, label):
    """rete_proxy_upstream_timeouts_total{timeout=label} on the proxy at host."""
    with urllib.request.urlopen(f"http://{host}:15000/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(
        r'^rete_proxy_upstream_timeouts_total\{[^}]*timeout="' + re.escape(label) + r'"[^}]*\} (\S+)$',
        text, re.M))


def grpc_over_h1(host, headers, timeout=30):
    """A gRPC unary call written by hand over HTTP/1.1 to the sidecar's
    outbound listener (it speaks gRPC over HTTP/2 on the mesh): (status,
    headers, body). Lets a test send a grpc-timeout with no client-side
    deadline, so whatever answers at the deadline is the sidecar."""
    c = http.client.HTTPConnection(host, 15001, timeout=timeout)
    try:
        c.request("POST", GRPC_PATH, body=GRPC_HELLO,
                  headers={"Host": "web", "content-type": "application/grpc", "te": "trailers",
                           **headers})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def parse_grpc_timeout_ns(v):
    units = {"H": 3600e9, "M": 60e9, "S": 1e9, "m": 1e6, "u": 1e3, "n": 1}
    assert re.fullmatch(r"[0-9]{1,8}[HMSmun]", v), v
    return int(v[:-1]) * units[v[-1]]


def test_grpc_timeout_deadline_exceeded_at_the_sidecar(net):
    """A gRPC request whose grpc-timeout passes while the backend is slow:
    the calling sidecar answers DEADLINE_EXCEEDED (HTTP 200, trailers-only,
    grpc-status 4) naming grpc-timeout, and counts timeout="grpc_timeout".
    Without the code the request would wait the backend's 5 s and succeed."""
    n = net([(("--latency", "5000"), True)], [], protocol="GRPC")
    status, hd, body = grpc_over_h1(n.client_host, {"grpc-timeout": "300m"})
    assert status == 200 and hd.get("grpc-status") == "4", (status, hd, body)
    assert "grpc-timeout" in hd.get("grpc-message", ""), hd
    assert timeouts(n.client_host, "grpc_timeout") == 1
    # The smaller of grpc-timeout and timeouts.request binds: here the rule's.
    # python3-grpcio sends grpc-timeout itself (timeout=) and gets the same code.
    ch = grpc.insecure_channel(f"{n.client_host}:15001",
                               options=[("grpc.default_authority", "web.test:80")])
    try:
        call = ch.unary_unary(GRPC_PATH, request_serializer=None, response_deserializer=None)
        try:
            call(b"\x0a\x02hi", timeout=0.5)
            assert False, "the call outlived its deadline"
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
    finally:
        ch.close()


def test_grpc_timeout_smaller_request_timeout_binds(net):
    n = net([(("--latency", "5000"), True)],
            [http_route("web", NS, "web", [{"backendRefs": [backend("web")],
                                             "timeouts": {"request": "300ms"}}], kind="GRPCRoute")],
            protocol="GRPC")
    status, hd, _ = grpc_over_h1(n.client_host, {"grpc-timeout": "60S"})
    assert status == 200 and hd.get("grpc-status") == "4", hd
    assert "timeouts.request" in hd.get("grpc-message", ""), hd
    assert timeouts(n.client_host, "request") == 1 and timeouts(n.client_host, "grpc_timeout") == 0


def test_grpc_timeout_decremented_for_the_next_hop(net):
    """What the app received: grpc-timeout rewritten with the time left
    (less than what the client sent, never more); a malformed one and one on
    a request that is not gRPC pass unchanged and bound nothing."""
    n = net([((), True)], [])

    def app_saw(headers):
        status, _, body = request(n.client_host, "/", method="POST", body=b"x", headers=headers)
        assert status == 200, body
        return json.loads(body)["headers"].get("grpc-timeout")

    sent = 5 * 10**9
    got = app_saw({"content-type": "application/grpc", "grpc-timeout": "5S"})
    assert got is not None and 0 < parse_grpc_timeout_ns(got) < sent, got
    assert app_saw({"content-type": "application/grpc", "grpc-timeout": "5x"}) == "5x"
    assert app_saw({"content-type": "application/grpc", "grpc-timeout": "123456789m"}) == "123456789m"
    assert app_saw({"content-type": "text/plain", "grpc-timeout": "5S"}) == "5S"
    assert timeouts(n.client_host, "grpc_timeout") == 0


def test_response_header_timeout(net):
    """DestinationRule connectionPool.http.responseHeaderTimeout: a backend
    that takes longer to answer gets 504 naming it; a gRPC request gets
    DEADLINE_EXCEEDED; a fast one is untouched."""
    dr = destination_rule("web", NS, "web", connectionPool={"http": {"responseHeaderTimeout": "300ms"}})
    n = net([((), True)], [dr])
    status, _, body = request(n.client_host, "/?delay=5000")
    assert status == 504 and b"connectionPool.http.responseHeaderTimeout" in body, body
    assert timeouts(n.client_host, "response_header") == 1
    assert request(n.client_host, "/")[0] == 200
    status, hd, _ = request(n.client_host, "/?delay=5000", method="POST", body=GRPC_HELLO,
                            headers={"content-type": "application/grpc"})
    assert status == 200 and hd.get("grpc-status") == "4", hd
    assert "responseHeaderTimeout" in hd.get("grpc-message", ""), hd


def test_response_header_timeout_is_retried(net):
    """With a retry whose codes hold 504, the try cut by the response-header
    timeout is retried (the backend counts both tries)."""
    dr = destination_rule("web", NS, "web", connectionPool={"http": {"responseHeaderTimeout": "200ms"}})
    n = net([((), True)], [dr, route_with(retry={"attempts": 1, "backoff": "5ms", "codes": [504]})])
    before = n.backend_requests()
    status, hd, body = request(n.client_host, "/?delay=3000")
    assert status == 504 and b"responseHeaderTimeout" in body, body
    assert hd.get("rete-attempt-count") == "2", hd
    wait_for(lambda: n.backend_requests() - before >= 2, timeout=10)
    assert timeouts(n.client_host, "response_header") == 2


def test_stream_idle_timeout(net):
    """DestinationRule connectionPool.http.streamIdleTimeout: a backend that
    sends nothing gets 504 naming it. (After the response head, the reset of
    both sides is answer_timeout's path, as for timeouts.request; rete-echo
    has no switch that sends a head and then stalls.)"""
    dr = destination_rule("web", NS, "web", connectionPool={"http": {"streamIdleTimeout": "400ms"}})
    n = net([((), True)], [dr])
    status, _, body = request(n.client_host, "/?delay=5000")
    assert status == 504 and b"connectionPool.http.streamIdleTimeout" in body, body
    assert timeouts(n.client_host, "stream_idle") == 1
    # A fast request is untouched.
    assert request(n.client_host, "/")[0] == 200
    assert timeouts(n.client_host, "stream_idle") == 1


def _mesh_conns(host):
    with urllib.request.urlopen(f"http://{host}:15000/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^rete_proxy_downstream_connections_active\{[^}]*listener="mesh"[^}]*\} (\S+)$',
                  text, re.M)
    return float(m.group(1)) if m else 0


def test_idle_pooled_mesh_connection_closed(net):
    """connectionPool.http.idleTimeout (Istio's): the pooled mesh connection
    the client sidecar opened to the backend's sidecar is closed once idle
    for that long: the backend's sidecar sees its mesh connection go, and
    the client's counts timeout="connection_idle". The next request opens a
    new one and works."""
    dr = destination_rule("web", NS, "web", connectionPool={"http": {"idleTimeout": "500ms"}})
    n = net([((), True)], [dr])
    assert request(n.client_host, "/")[0] == 200
    # The client sidecar's pooled connection outlives the request...
    assert _mesh_conns(n.hosts[0]) == 1
    # ...until idleTimeout.
    wait_for(lambda: _mesh_conns(n.hosts[0]) == 0, timeout=10)
    assert timeouts(n.client_host, "connection_idle") == 1
    assert request(n.client_host, "/")[0] == 200


def test_idle_pooled_http1_connection_closed(net):
    """Outside the mesh (HTTP/1.1 to the endpoint itself): requests back to
    back reuse one connection (the echo sees one peer address); after
    idleTimeout the pooled connection is closed and the next request comes
    from a new one."""
    dr = destination_rule("web", NS, "web", connectionPool={"http": {"idleTimeout": "500ms"}})
    n = net([((), False)], [dr])

    def peer():
        status, _, body = request(n.client_host, "/")
        assert status == 200, body
        return json.loads(body)["peer"]
    first = peer()
    assert peer() == first
    wait_for(lambda: timeouts(n.client_host, "connection_idle") == 1, timeout=10)
    assert peer() != first
