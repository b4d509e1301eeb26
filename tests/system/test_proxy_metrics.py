"""Istio's standard metrics from two rete-proxy sidecars: istio_requests_total
and istio_request_duration_milliseconds (Istio's names, units and labels) for HTTP and gRPC,
reported by the client sidecar (reporter="source") and by the server sidecar
(reporter="destination"), and the TCP families for a tunnel. Every /metrics
passes promtool with one accepted complaint (the Istio histogram's unit)."""
import re
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures

import pytest

from helpers import free_port, promtool_findings, read_log
from mesh import Mesh, echo_mesh, fresh_host, service, stop_and_check_proxies, workload

NS = "test"
CLIENT_ID = "spiffe://cluster.local/ns/test/sa/client"
T = 30


def metrics(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=T) as r:
        return r.read().decode()


def series(text, name):
    """[(labels dict, value)] of every sample of `name`."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        assert m, f"malformed sample line: {line!r}"
        if m.group(1) == name:
            out.append((dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or "")),
                        float(m.group(4))))
    return out


def total(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for l, v in series(text, name) if all(l.get(k) == w for k, w in labels.items()))


def promtool_clean(text):
    """promtool finds nothing to say but the one accepted line (helpers.py)."""
    assert promtool_findings(text) == []


def get(env, path, host="echo"):
    req = urllib.request.Request(f"http://{env['outbound']}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=T) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_for(pred, what, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(what)


@pytest.fixture
def env(tmp_path):
    e = echo_mesh(tmp_path)
    yield e
    stop_and_check_proxies(e["mesh"])


N, M = 5, 3


def test_http_requests_reported_by_both_sidecars(env):
    for _ in range(N):
        assert get(env, "/ok?status=200") == 200
    for _ in range(M):
        assert get(env, "/fail?status=503") == 503
    assert get(env, "/", host="no-such-service") == 404

    common = dict(destination_service="echo.test.svc.cluster.local",
                  destination_service_name="echo", destination_service_namespace=NS,
                  destination_workload="echo-0", destination_workload_namespace=NS,
                  destination_principal="spiffe://cluster.local/ns/test/sa/echo",
                  destination_app="echo", destination_version="unknown",
                  source_principal=CLIENT_ID, source_workload_namespace=NS,
                  request_protocol="http", grpc_response_status="", response_flags="-",
                  connection_security_policy="mutual_tls")

    client = metrics(env["admin"])
    src = dict(common, reporter="source", source_workload="client-0", source_app="client",
               source_version="unknown")
    # the full Istio label set, exactly
    got = [l for l, _ in series(client, "istio_requests_total") if l.get("response_code") == "200"]
    assert got == [dict(src, response_code="200")], got
    assert total(client, "istio_requests_total", response_code="200", **src) == N
    assert total(client, "istio_requests_total", response_code="503", **src) == M
    assert total(client, "istio_request_duration_milliseconds_count", response_code="200", **src) == N
    assert total(client, "istio_request_duration_milliseconds_bucket", response_code="503", le="+Inf",
                 **src) == M
    assert total(client, "istio_request_duration_milliseconds_sum", response_code="200", **src) > 0
    assert total(client, "istio_response_bytes_count", response_code="200", **src) == N
    # a local answer: no route, no destination
    assert total(client, "istio_requests_total", reporter="source", response_code="404",
                 response_flags="NR", destination_service="unknown") == 1
    # the proxy's own families are still there
    assert total(client, "rete_proxy_responses_total", code_class="5xx") >= M
    promtool_clean(client)

    server = metrics(env["server_admin"])
    # the client sidecar's peer metadata names the source (x-rete-peer)
    dst = dict(common, reporter="destination", source_workload="client-0", source_app="client",
               source_version="unknown")
    assert total(server, "istio_requests_total", response_code="200", **dst) == N
    assert total(server, "istio_requests_total", response_code="503", **dst) == M
    assert total(server, "istio_request_duration_milliseconds_count", response_code="503", **dst) == M
    assert total(server, "istio_requests_total", reporter="source") == 0
    promtool_clean(server)


def test_request_series_follow_a_reload(env):
    """The request series of a label combination are kept per configuration
    generation (telemetry.c): after a reload that changes the endpoint's
    labels, requests land in the series the new labels name, and the counts
    of an unchanged combination carry on."""
    for _ in range(2):
        assert get(env, "/?status=200") == 200
        assert get(env, "/?status=404") == 404
    m = env["mesh"]
    m.resources = [workload("echo-0", NS, env["echo_host"], "echo", {"app": "echo", "version": "v2"})
                   if r["kind"] == "Workload" and r["metadata"]["name"] == "echo-0" else r
                   for r in m.resources]
    m.write_config("client-0", "client", env["client_host"])
    env["client"].send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration version 2 in use" in read_log(env["client"]), "the reload")
    for _ in range(3):
        assert get(env, "/?status=200") == 200
    assert get(env, "/?status=404") == 404
    client = metrics(env["admin"])
    src = dict(reporter="source", destination_workload="echo-0", response_flags="-")
    assert total(client, "istio_requests_total", response_code="200", destination_version="unknown",
                 **src) == 2
    assert total(client, "istio_requests_total", response_code="200", destination_version="v2",
                 **src) == 3
    assert total(client, "istio_requests_total", response_code="404", destination_version="v2",
                 **src) == 1
    assert total(client, "istio_response_bytes_count", response_code="404", **src) == 3
    server = metrics(env["server_admin"])
    assert total(server, "istio_requests_total", reporter="destination", response_code="200") == 5
    assert total(server, "istio_requests_total", reporter="destination", response_code="404") == 3
    promtool_clean(client)


# ---- gRPC ------------------------------------------------------------------

import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)
SVC_PORT = 50051


def _ident(b):
    return b


def _unary(req, context):
    if req == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return b"hello " + req


@pytest.fixture
def grpc_env(tmp_path):
    m = Mesh(tmp_path)
    client_host, server_host = fresh_host(), fresh_host()
    app_port = free_port(server_host)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("greeter.Greeter", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, request_deserializer=_ident,
                                                     response_serializer=_ident)}),))
    assert server.add_insecure_port(f"{server_host}:{app_port}") == app_port
    server.start()
    try:
        m.add(service("greeter", NS, [(SVC_PORT, "GRPC", app_port)]),
              workload("greeter-0", NS, server_host, "greeter", {"app": "greeter", "version": "v2"}),
              workload("client-0", NS, client_host, "client", {"app": "client"}))
        m.start_proxy("greeter-0", "greeter", server_host, inbound=[(app_port, "GRPC")])
        m.start_proxy("client-0", "client", client_host)
        yield {"mesh": m, "client_host": client_host, "server_host": server_host}
        stop_and_check_proxies(m)
    finally:
        server.stop(0)


def test_grpc_protocol_and_status(grpc_env):
    ch = grpc.insecure_channel(f"{grpc_env['client_host']}:15001",
                               options=[("grpc.default_authority", f"greeter.test:{SVC_PORT}")])
    grpc.channel_ready_future(ch).result(timeout=T)
    unary = ch.unary_unary("/greeter.Greeter/Unary", request_serializer=_ident,
                           response_deserializer=_ident)
    for _ in range(3):
        assert unary(b"world", timeout=T) == b"hello world"
    with pytest.raises(grpc.RpcError) as e:
        unary(b"missing", timeout=T)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    ch.close()

    for reporter, admin in (("source", grpc_env["client_host"]), ("destination", grpc_env["server_host"])):
        text = metrics(f"{admin}:15000")
        lab = dict(reporter=reporter, request_protocol="grpc", response_code="200",
                   destination_service="greeter.test.svc.cluster.local", destination_app="greeter",
                   destination_version="v2", source_principal=CLIENT_ID)
        assert total(text, "istio_requests_total", grpc_response_status="0", **lab) == 3, reporter
        assert total(text, "istio_requests_total", grpc_response_status="5", **lab) == 1, reporter
        promtool_clean(text)


# ---- TCP -------------------------------------------------------------------

def _echo_server(host, port, stop):
    ls = socket.create_server((host, port))
    ls.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
    ls.close()


def test_tcp_tunnel_bytes_and_connections(tmp_path):
    m = Mesh(tmp_path)
    client_host, server_host = fresh_host(), fresh_host()
    app_port = free_port(server_host)
    stop = threading.Event()
    t = threading.Thread(target=_echo_server, args=(server_host, app_port, stop), daemon=True)
    t.start()
    try:
        m.add(service("raw", NS, [(7000, "TCP", app_port)]),
              workload("raw-0", NS, server_host, "raw", {"app": "raw"}),
              workload("client-0", NS, client_host, "client", {"app": "client"}))
        up_port = free_port(client_host)
        m.start_proxy("raw-0", "raw", server_host, inbound=[(app_port, "TCP")])
        m.start_proxy("client-0", "client", client_host,
                      upstreams=[(f"{client_host}:{up_port}", "raw", 7000)])
        payload = b"x" * 100000
        with socket.create_connection((client_host, up_port), timeout=T) as s:
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                d = s.recv(65536)
                assert d, "tunnel closed early"
                got += d
            assert got == payload
            s.shutdown(socket.SHUT_WR)
            assert s.recv(1) == b""
        for reporter, host in (("source", client_host), ("destination", server_host)):
            lab = dict(reporter=reporter, request_protocol="tcp", destination_service="raw.test.svc.cluster.local",
                       destination_workload="raw-0", source_principal=CLIENT_ID,
                       connection_security_policy="mutual_tls")
            wait_for(lambda: total(metrics(f"{host}:15000"), "istio_tcp_connections_closed_total", **lab) == 1,
                     f"{reporter}: tunnel close not counted")
            text = metrics(f"{host}:15000")
            assert total(text, "istio_tcp_connections_opened_total", **lab) == 1, reporter
            assert total(text, "istio_tcp_received_bytes_total", **lab) == len(payload), reporter
            assert total(text, "istio_tcp_sent_bytes_total", **lab) == len(payload), reporter
            assert not [l for l, _ in series(text, "istio_tcp_sent_bytes_total") if "response_code" in l]
            promtool_clean(text)
        stop_and_check_proxies(m)
    finally:
        stop.set()
        t.join(timeout=5)
