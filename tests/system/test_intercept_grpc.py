"""An unmodified gRPC client (python3-grpcio) reaches a mesh Service by name
through interception (issue 10, Tests): in network namespaces the test
creates, the client's name lookup (grpcio's own resolver, reading
/etc/resolv.conf) is redirected to the sidecar's DNS, which answers the
Service's clusterIP; the connection to it is redirected to the outbound
listener, routed by original destination, carried over mTLS to the server's
sidecar and rete-echo's gRPC echo. The client has no proxy setting, no
sidecar port, and a nameserver in resolv.conf that does not exist."""
from helpers import build_path
from mesh import Mesh, service, workload
from netns import topology  # noqa: F401 (the fixture)
from test_intercept import ECHO_PORT, PROXY_GID, init, metrics, series, start_app

GRPC_PORT = 50051
VIP = "10.250.0.202"
DNS_PORT = 15053
NOBODY = "10.250.0.250"  # the resolv.conf nameserver: no host has it

CLIENT = r"""
import sys
import grpc
ch = grpc.insecure_channel("greeter.test:%d")
call = ch.unary_unary("/rete.echo.Echo/Echo", request_serializer=None, response_deserializer=None)
msg = b"\x0a\x05hello"
out, c = call.with_call(msg, timeout=10)
assert out == msg, out
print("ok", c.code(), dict(c.initial_metadata()).get("x-echo-service"))
"""


def test_unmodified_grpc_client_by_name(topology, tmp_path):
    client, server = (topology.add_host(n) for n in ("client", "server"))
    topology.assert_isolated()
    client.resolv_conf(f"nameserver {NOBODY}\n")
    m = Mesh(tmp_path, ns="test")
    greeter = service("greeter", "test", [(GRPC_PORT, "GRPC", ECHO_PORT)], selector={"app": "echo"})
    greeter["spec"]["clusterIP"] = VIP
    m.add(greeter,
          workload("echo-0", "test", server.addr, "echo", {"app": "echo"}),
          workload("client-0", "test", client.addr, "client", {"app": "client"}))
    start_app(server, name="greeter")
    for host, name, sa, spec, kw in (
            (server, "echo-0", "echo", {}, {"inbound": [(ECHO_PORT, "GRPC")]}),
            (client, "client-0", "client", {"dns": {"listen": f"127.0.0.1:{DNS_PORT}"}}, {})):
        path = m.write_config(name, sa, host.addr,
                              extra_spec={"listeners": {"outbound": "127.0.0.1:15001"}, **spec}, **kw)
        host.start(["setpriv", f"--regid={PROXY_GID}", "--clear-groups", build_path("rete-proxy"),
                    "--config", path], r"ready:")
    for h, extra in ((client, [f"--dns-port={DNS_PORT}"]), (server, [])):
        r = init(h, f"--proxy-gid={PROXY_GID}", f"--address={h.addr}", *extra)
        assert r.returncode == 0, r.stderr

    r = client.run(["/usr/bin/python3", "-c", CLIENT % GRPC_PORT], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["ok", "StatusCode.OK", "greeter"], r.stdout
    # the name was answered by the sidecar, the call crossed mTLS
    text = metrics(client)
    assert series(text, "rete_proxy_dns_queries_total", result="mesh") >= 1, text
    text = metrics(server)
    assert series(text, "istio_requests_total", reporter="destination", destination_service_name="greeter",
                  connection_security_policy="mutual_tls", grpc_response_status="0") >= 1, text
    topology.assert_isolated()
