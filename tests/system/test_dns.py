"""The sidecar's DNS for unmodified apps (Proxy spec.dns), in network
namespaces the test creates (netns.py): the client host's resolv.conf names
a resolver on another host of the topology (tiny_dns.py, authoritative for
one outside name); `rete-proxy init --dns-port` sends the app's port-53
traffic to the sidecar, which answers mesh names with the Service's
clusterIP and forwards the rest to that resolver (read from resolv.conf at
start). dig and curl know nothing of the mesh."""
import ipaddress
import json
import os
import subprocess

from helpers import build_path, fresh_host, wait_for
from mesh import Mesh, service, workload
from netns import topology  # noqa: F401 (the fixture)
from test_intercept import ECHO_PORT, ECHO_VIP, PROXY_GID, init, metrics, series, start_app

DNS_PORT = 15053
OUTSIDE_NAME = "outside.example"
OUTSIDE_IP = "192.0.2.7"
BIG_NAME, BIG_FIRST, BIG_N = "big.example", "198.51.100.1", 40  # 40 A records: over 512 bytes
HERE = os.path.dirname(os.path.abspath(__file__))


def start_sidecar(host, m, name, sa, dns=None, **kw):
    spec = {"listeners": {"outbound": "127.0.0.1:15001"}}
    if dns is not None:
        spec["dns"] = dict({"listen": f"127.0.0.1:{DNS_PORT}"}, **dns)
    path = m.write_config(name, sa, host.addr, extra_spec=spec, **kw)
    return host.start(["setpriv", f"--regid={PROXY_GID}", "--clear-groups", build_path("rete-proxy"),
                       "--config", path, "--log-level", "info"], r"ready:")


def dns_mesh(topology, tmp_path, dns=None):
    """client (sidecar with DNS, init with --dns-port), server (rete-echo and
    its sidecar), resolver (tiny_dns on port 53, UDP and TCP, the client's
    nameserver). `dns`: spec.dns, or a function of the three hosts giving it."""
    client, server, resolver = (topology.add_host(n) for n in ("client", "server", "resolver"))
    topology.assert_isolated()
    if callable(dns):
        dns = dns(client, server, resolver)
    client.resolv_conf(f"nameserver {resolver.addr}\n")
    resolver.start(["/usr/bin/python3", os.path.join(HERE, "tiny_dns.py"), resolver.addr, "53",
                    f"{OUTSIDE_NAME}={OUTSIDE_IP}", f"{BIG_NAME}={BIG_FIRST}*{BIG_N}"],
                   r"tiny_dns ready")
    m = Mesh(tmp_path)
    echo = service("echo", m.ns, [(80, "HTTP", ECHO_PORT)])
    echo["spec"]["clusterIP"] = ECHO_VIP
    m.add(echo,
          workload("echo-0", m.ns, server.addr, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client.addr, "client", {"app": "client"}))
    start_app(server)
    start_sidecar(server, m, "echo-0", "echo", inbound=[(ECHO_PORT, "HTTP")])
    start_sidecar(client, m, "client-0", "client", dns=dns or {})
    for h, extra in ((client, [f"--dns-port={DNS_PORT}"]), (server, [])):
        r = init(h, f"--proxy-gid={PROXY_GID}", f"--address={h.addr}", *extra)
        assert r.returncode == 0, r.stderr
    return client, server, resolver


def dig(host, *args):
    r = host.run(["dig", "+time=3", "+tries=1", *args], timeout=20)
    return r


def test_mesh_names_answered_other_names_forwarded(topology, tmp_path):
    client, _, resolver = dns_mesh(topology, tmp_path)
    # the app asks its resolv.conf's resolver; init sends the query to the sidecar
    for name in ("echo", "echo.test", "echo.test.svc", "echo.test.svc.cluster.local",
                 "ECHO.Test.svc.cluster.local."):
        for transport in ("+notcp", "+tcp"):
            r = dig(client, transport, "+short", name, "A")
            assert r.returncode == 0 and r.stdout.split() == [ECHO_VIP], (name, transport, r.stdout, r.stderr)
    # answered by the sidecar itself: authoritative, the TTL of spec.dns.ttl
    r = dig(client, "+noall", "+answer", "+comments", "echo", "A")
    assert "flags: qr aa rd ra" in r.stdout and f"30\tIN\tA\t{ECHO_VIP}" in r.stdout, r.stdout
    # no IPv6 clusterIP: an empty answer, not a forwarded one
    r = dig(client, "+comments", "echo.test", "AAAA")
    assert "status: NOERROR" in r.stdout and "ANSWER: 0" in r.stdout, r.stdout
    # another name: forwarded to the resolver of resolv.conf, its answer relayed
    for transport in ("+notcp", "+tcp"):
        r = dig(client, transport, "+short", OUTSIDE_NAME, "A")
        assert r.stdout.split() == [OUTSIDE_IP], (transport, r.stdout, r.stderr)
    r = dig(client, "+comments", "nosuch.example", "A")
    assert "status: NXDOMAIN" in r.stdout, r.stdout
    # a mesh name of another namespace is not one of this proxy's
    r = dig(client, "+comments", "echo.other", "A")
    assert "status: NXDOMAIN" in r.stdout, r.stdout
    text = metrics(client)
    assert series(text, "rete_proxy_dns_queries_total", result="mesh") == 12, text
    assert series(text, "rete_proxy_dns_queries_total", result="forwarded") == 4, text
    # never an open resolver: the listener is on the client's loopback only
    r = dig(resolver, f"@{client.addr}", "-p", str(DNS_PORT), "+short", "echo.test")
    assert r.returncode != 0 and ECHO_VIP not in r.stdout, r.stdout
    topology.assert_isolated()


def test_curl_by_plain_name_is_meshed(topology, tmp_path):
    """curl http://echo/ with no proxy setting and no --resolve: glibc asks
    the resolver of resolv.conf, the sidecar answers the clusterIP, the
    connection to it is intercepted and routed to the echo Service over
    mTLS (the app sees the client's identity)."""
    client, _, _ = dns_mesh(topology, tmp_path)
    r = client.run(["curl", "-sS", "-m", "10", "http://echo/hello"])
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["headers"]["x-forwarded-client-cert"] == (
        "By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/client")
    text = metrics(client)
    assert series(text, "istio_requests_total", reporter="source", destination_service_name="echo",
                  response_code="200", connection_security_policy="mutual_tls") == 1, text
    topology.assert_isolated()


def test_tcp_queries_forwarded_over_tcp(topology, tmp_path):
    """A query that comes over TCP goes upstream over TCP (RFC 7766): an
    answer too large for UDP reaches the client whole. Over UDP the
    resolver truncates it (TC, no records), the sidecar relays that, and the
    client retries over TCP; were the TCP query forwarded over UDP, the
    retry would get the truncated answer again."""
    client, _, _ = dns_mesh(topology, tmp_path)
    big = [str(ipaddress.IPv4Address(BIG_FIRST) + i) for i in range(BIG_N)]
    # over UDP alone (no retry): the truncated answer, relayed as it is
    r = dig(client, "+notcp", "+ignore", "+comments", BIG_NAME, "A")
    assert " tc" in r.stdout.split("flags:")[1].split(";")[0] and "ANSWER: 0" in r.stdout, r.stdout
    # UDP, then dig's own retry over TCP on TC: the whole answer
    r = dig(client, "+notcp", "+short", BIG_NAME, "A")
    assert sorted(r.stdout.split()) == sorted(big), (r.stdout, r.stderr)
    # TCP from the start; several queries on one connection, mesh and not
    r = dig(client, "+tcp", "+keepopen", "+short", BIG_NAME, "A", "echo", "A", OUTSIDE_NAME, "A",
            "nosuch.example", "A")
    assert r.returncode == 0 and sorted(r.stdout.split()) == sorted(big + [ECHO_VIP, OUTSIDE_IP]), (
        r.stdout, r.stderr)
    text = metrics(client)
    assert series(text, "rete_proxy_dns_queries_total", result="forwarded") == 6, text
    assert series(text, "rete_proxy_dns_queries_total", result="upstream_error") == 0, text
    topology.assert_isolated()


def test_tcp_upstream_refusing_tcp_gets_servfail(topology, tmp_path):
    """An upstream that refuses the TCP connection (here the server host,
    which serves no DNS): SERVFAIL at once, counted upstream_error; the
    client's connection stays usable (a mesh name is answered after it)."""
    client, _, _ = dns_mesh(topology, tmp_path, dns=lambda c, s, r: {"upstreams": [s.addr]})
    r = dig(client, "+tcp", "+keepopen", "+comments", OUTSIDE_NAME, "A", "echo", "A")
    assert "status: SERVFAIL" in r.stdout and f"\t{ECHO_VIP}" in r.stdout, r.stdout
    text = metrics(client)
    assert series(text, "rete_proxy_dns_queries_total", result="upstream_error") == 1, text
    assert series(text, "rete_proxy_dns_queries_total", result="mesh") == 1, text
    topology.assert_isolated()


TCP_BOUNDS = r"""
import socket, struct, sys, time
addr = (sys.argv[1], 53)
def q(name, qid):
    body = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    body += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
    return struct.pack(">H", len(body)) + body
def closed(s, wait):
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
held = [socket.create_connection(addr) for _ in range(2)]
for i, s in enumerate(held):  # both served, one query each
    s.sendall(q("echo", i))
    assert len(s.recv(4096)) > 2
third = socket.create_connection(addr)
print("third closed", closed(third, 3))
held[0].sendall(struct.pack(">H", 5000))  # over 4096 bytes announced: closed
print("oversize closed", closed(held[0], 3))
t0 = time.monotonic()
print("idle closed", closed(held[1], 6), round(time.monotonic() - t0))
"""


def test_tcp_clients_are_bounded(topology, tmp_path):
    """maxTCPConnections (2 here) clients at once, the next one closed; a
    query announced over 4096 bytes closes its connection; a client that
    sends nothing for `timeout` (2s) is closed."""
    client, _, resolver = dns_mesh(topology, tmp_path, dns={"maxTCPConnections": 2, "timeout": "2s"})
    r = client.run(["/usr/bin/python3", "-c", TCP_BOUNDS, resolver.addr], timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["third closed True", "oversize closed True"], r.stdout
    assert lines[2].startswith("idle closed True"), r.stdout
    text = metrics(client)
    assert series(text, "rete_proxy_dns_queries_total", result="overload") == 1, text
    assert series(text, "rete_proxy_dns_queries_total", result="malformed") == 1, text
    topology.assert_isolated()


FLOOD = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(sys.argv[1])
for i in range(n):
    name = b"".join(bytes([len(l)]) + l for l in (b"q%d" % i, b"blackhole", b"example")) + b"\0"
    s.sendto(struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1", (sys.argv[2], 53))
print("sent", n)
"""


def test_query_flood_is_bounded(topology, tmp_path):
    """Queries for other names to an upstream that never answers: at most
    maxInFlight wait for it (then SERVFAIL after the timeout), the rest are
    refused at once and counted; mesh names are still answered meanwhile."""
    client, _, resolver = dns_mesh(topology, tmp_path, dns={"maxInFlight": 8, "timeout": "2s",
                                                            "upstreams": ["10.250.0.250"]})
    r = client.run(["/usr/bin/python3", "-c", FLOOD, "500", resolver.addr])
    assert r.returncode == 0 and "sent 500" in r.stdout, r.stderr
    r = dig(client, "+short", "echo", "A")
    assert r.stdout.split() == [ECHO_VIP], r.stdout
    text = metrics(client)
    overload = series(text, "rete_proxy_dns_queries_total", result="overload")
    # the kernel may drop datagrams past the socket buffer; never more than 500 - 8 are refused
    assert 100 <= overload <= 492, text
    # the ones in flight time out (SERVFAIL) within the bound
    def timed_out():
        return series(metrics(client), "rete_proxy_dns_queries_total", result="timeout") == 8
    wait_for(timed_out, timeout=10)
    topology.assert_isolated()


def test_dns_listener_must_be_loopback(tmp_path):
    m = Mesh(tmp_path)
    path = m.write_config("p", "p", fresh_host(), extra_spec={"dns": {"listen": "10.250.0.9:53"}})
    r = subprocess.run([build_path("rete-proxy"), "--config", path], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and "spec.dns.listen" in r.stderr and "not a loopback address" in r.stderr, r.stderr
