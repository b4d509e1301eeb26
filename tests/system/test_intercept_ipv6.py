"""The mesh over IPv6 only, end to end, in network namespaces the test
creates (netns.py): the Workloads' addresses are the hosts' IPv6 addresses,
the echo Service's clusterIP is an IPv6 address, rete-echo listens on its
host's IPv6 address only, and the app (curl -6) calls the Service by name
(resolved to the clusterIP by curl itself) or by clusterIP. `rete-proxy
init` installs the ip6 rules on both hosts; the client sidecar recovers the
original destination (IP6T_SO_ORIGINAL_DST) and calls the server sidecar's
mesh port over IPv6 with mTLS. The client's only nameserver is an IPv6
address: its queries are redirected to the sidecar's DNS on ::1, which
answers the mesh name's AAAA with the clusterIP and forwards the rest to
that nameserver over IPv6."""
import json
import os

from helpers import build_path
from mesh import Mesh, service, workload
from netns import topology  # noqa: F401 (the fixture)
from test_dns import DNS_PORT, HERE, OUTSIDE_IP, OUTSIDE_NAME
from test_intercept import (ECHO_PORT, PROXY_GID, REDIS_PORT, init, metrics, peer_authn, series, start_app,
                            start_sidecar)

# In the hosts' /64 (so the app's kernel has a route for them), held by no host.
VIP6 = "fd00:250::c8"
REDIS_VIP6 = "fd00:250::c9"
XFCC = "By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/client"


def start_sidecar6(host, m, name, sa, dns=False, **kw):
    """rete-proxy in `host` as group PROXY_GID, its workload address the
    host's IPv6 one, the outbound listener on ::1 (where the ip6 REDIRECT
    sends the app's connections), with `dns` its DNS on ::1 too."""
    spec = {"listeners": {"outbound": "[::1]:15001"}}
    if dns:
        spec["dns"] = {"listen": f"[::1]:{DNS_PORT}"}
    path = m.write_config(name, sa, host.addr6, extra_spec=spec, **kw)
    return host.start(["setpriv", f"--regid={PROXY_GID}", "--clear-groups", build_path("rete-proxy"),
                       "--config", path, "--log-level", "info"], r"ready:")


def ipv6_mesh(topology, tmp_path, mode="STRICT"):
    """client (curl, its sidecar with DNS), server (rete-echo and
    redis-server on its IPv6 address, their sidecar), resolver (tiny_dns on
    its IPv6 address: the client's only nameserver), outsider (nothing)."""
    client, server, resolver, outsider = (topology.add_host(n)
                                          for n in ("client", "server", "resolver", "outsider"))
    topology.assert_isolated()
    client.resolv_conf(f"nameserver {resolver.addr6}\n")
    resolver.start(["/usr/bin/python3", os.path.join(HERE, "tiny_dns.py"), resolver.addr6, "53",
                    f"{OUTSIDE_NAME}={OUTSIDE_IP}"], r"tiny_dns ready")
    m = Mesh(tmp_path)
    echo = service("echo", m.ns, [(80, "HTTP", ECHO_PORT)])
    echo["spec"]["clusterIP"] = VIP6
    m.add(echo,
          workload("echo-0", m.ns, server.addr6, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client.addr6, "client", {"app": "client"}),
          peer_authn(mode))
    redis = service("redis", m.ns, [(REDIS_PORT, "TCP")], selector={"app": "echo"})
    redis["spec"]["clusterIP"] = REDIS_VIP6
    m.add(redis)
    server.start([build_path("rete-echo"), "--listen", f"[{server.addr6}]:{ECHO_PORT}", "--name", "echo"],
                 r"rete-echo echo listening on")
    server.start(["redis-server", "--bind", server.addr6, "--port", str(REDIS_PORT), "--save", "",
                  "--appendonly", "no", "--protected-mode", "no"], r"Ready to accept connections")
    start_sidecar6(server, m, "echo-0", "echo", inbound=[(ECHO_PORT, "HTTP"), (REDIS_PORT, "TCP")])
    start_sidecar6(client, m, "client-0", "client", dns=True)
    for h, extra in ((client, [f"--dns-port={DNS_PORT}"]), (server, [])):
        r = init(h, f"--proxy-gid={PROXY_GID}", f"--address={h.addr6}", *extra)
        assert r.returncode == 0, r.stderr
    return client, server, outsider


def test_mesh_call_by_name_over_ipv6_only(topology, tmp_path):
    client, server, outsider = ipv6_mesh(topology, tmp_path)
    # the name from the sidecar's DNS (the app asked its IPv6 nameserver)
    r = client.run(["dig", "+time=3", "+tries=1", "+short", "echo", "AAAA"])
    assert r.stdout.split() == [VIP6], r.stdout + r.stderr
    for transport in ("+notcp", "+tcp"):  # forwarded to the IPv6 upstream, by the same transport
        r = client.run(["dig", "+time=3", "+tries=1", transport, "+short", OUTSIDE_NAME, "A"])
        assert r.stdout.split() == [OUTSIDE_IP], (transport, r.stdout, r.stderr)
    for args in (["http://echo/by-dns"],
                 ["--resolve", f"echo:80:[{VIP6}]", "http://echo/by-name"],
                 [f"http://[{VIP6}]/by-vip"],
                 [f"http://[{server.addr6}]:{ECHO_PORT}/by-address"]):
        r = client.run(["curl", "-6", "-sS", "-m", "10", *args])
        assert r.returncode == 0, (args, r.stderr)
        body = json.loads(r.stdout)
        assert body["headers"]["x-forwarded-client-cert"] == XFCC, body
    text = metrics(client)
    assert series(text, "istio_requests_total", reporter="source", destination_service_name="echo",
                  response_code="200", connection_security_policy="mutual_tls") == 4, text
    # opaque TCP by the IPv6 clusterIP
    r = client.run(["redis-cli", "-h", REDIS_VIP6, "-p", str(REDIS_PORT), "ping"])
    assert r.returncode == 0 and r.stdout.strip() == "PONG", r.stdout + r.stderr
    assert series(metrics(client), "istio_tcp_connections_opened_total", reporter="source",
                  destination_service_name="redis", connection_security_policy="mutual_tls") == 1
    # STRICT: a direct call from outside the mesh over IPv6 never reaches the app
    r = outsider.run(["curl", "-6", "-sS", "-m", "5", "-i", f"http://[{server.addr6}]:{ECHO_PORT}/direct"])
    assert r.returncode != 0 and "HTTP/1.1 200" not in r.stdout, r.stdout
    topology.assert_isolated()


def test_dual_stack_app_over_ipv6_to_an_ipv4_mesh(topology, tmp_path):
    """The sidecars listen where the docs say (outbound 127.0.0.1:15001,
    DNS 127.0.0.1:15053) and the mesh is IPv4 (the Workloads' addresses),
    but the app speaks IPv6: its only nameserver is an IPv6 address and the
    Service `echo6` has an IPv6 clusterIP. init's ip6 rules send its query
    to ::1:15053 and its connection to [::1]:15001, where the sidecar
    listens too (the loopback twins); the call reaches the IPv4 endpoint
    over mTLS. Without the twins the query and the connection are refused."""
    client, server, resolver = (topology.add_host(n) for n in ("client", "server", "resolver"))
    topology.assert_isolated()
    client.resolv_conf(f"nameserver {resolver.addr6}\n")
    resolver.start(["/usr/bin/python3", os.path.join(HERE, "tiny_dns.py"), resolver.addr6, "53",
                    f"{OUTSIDE_NAME}={OUTSIDE_IP}"], r"tiny_dns ready")
    m = Mesh(tmp_path)
    echo6 = service("echo6", m.ns, [(80, "HTTP", ECHO_PORT)], selector={"app": "echo"})
    echo6["spec"]["clusterIP"] = VIP6
    m.add(echo6,
          workload("echo-0", m.ns, server.addr, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client.addr, "client", {"app": "client"}))
    start_app(server)
    start_sidecar(server, m, "echo-0", "echo", inbound=[(ECHO_PORT, "HTTP")])
    spec = {"listeners": {"outbound": "127.0.0.1:15001"}, "dns": {"listen": f"127.0.0.1:{DNS_PORT}"}}
    path = m.write_config("client-0", "client", client.addr, extra_spec=spec)
    client.start(["setpriv", f"--regid={PROXY_GID}", "--clear-groups", build_path("rete-proxy"),
                  "--config", path], r"ready:")
    for h, extra in ((client, [f"--dns-port={DNS_PORT}"]), (server, [])):
        r = init(h, f"--proxy-gid={PROXY_GID}", f"--address={h.addr}", *extra)
        assert r.returncode == 0, r.stderr
    r = client.run(["curl", "-6", "-sS", "-m", "10", "http://echo6/dual"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["headers"]["x-forwarded-client-cert"] == XFCC
    for transport in ("+notcp", "+tcp"):
        r = client.run(["dig", "+time=3", "+tries=1", transport, "+short", OUTSIDE_NAME, "A"])
        assert r.stdout.split() == [OUTSIDE_IP], (transport, r.stdout, r.stderr)
    topology.assert_isolated()
