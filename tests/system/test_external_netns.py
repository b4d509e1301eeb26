"""externalName re-resolution in network namespaces the test creates
(netns.py): the client host's resolv.conf names a resolver on another host
(tiny_dns.py); the external name first resolves to one TLS server, then,
the resolver answering differently, to another, and the sidecar's
periodic re-resolution (spec.externalNameRefresh) moves the traffic there,
with TLS originated and verified all along."""
import os

import tlsca
from helpers import build_path, wait_for
from mesh import Mesh, destination_rule, workload
from netns import topology  # noqa: F401 (the fixture)
from test_external import NS, external_service

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "api.external.test"
PORT = 8443


def start_resolver(host, ip):
    return host.start(["/usr/bin/python3", os.path.join(HERE, "tiny_dns.py"), host.addr, "53",
                       f"{NAME}={ip}"], r"tiny_dns ready")


def test_re_resolution_moves_traffic_to_the_new_address(topology, tmp_path):
    client, ext1, ext2, resolver = (topology.add_host(n) for n in ("client", "ext1", "ext2", "resolver"))
    topology.assert_isolated()
    client.resolv_conf(f"nameserver {resolver.addr}\n")
    ca = tlsca.make_ca(str(tmp_path), "ext-ca")
    cert = tlsca.issue(str(tmp_path), ca, "api", dns_names=[NAME])
    for h in (ext1, ext2):
        h.start(["/usr/bin/python3", os.path.join(HERE, "tls_http_server.py"), h.addr, str(PORT),
                 cert[0], cert[1], h.name], r"tls_http_server ready")
    dns = start_resolver(resolver, ext1.addr)

    m = Mesh(tmp_path, ns=NS)
    m.add(external_service("api", NAME, 80, PORT),
          destination_rule("api", NS, "api", tls={"mode": "SIMPLE", "caCertificates": ca[0]}),
          workload("client-0", NS, client.addr, "client", {"app": "client"}))
    path = m.write_config("client-0", "client", client.addr,
                          extra_spec={"listeners": {"outbound": "127.0.0.1:15001"},
                                      "externalNameRefresh": "1s"})
    client.start([build_path("rete-proxy"), "--config", path, "--log-level", "info"], r"ready:")

    def served_by():
        r = client.run(["curl", "-s", "-m", "5", "-H", "Host: api", "http://127.0.0.1:15001/"], timeout=20)
        return r.stdout.strip()

    wait_for(lambda: served_by() == "ext1", timeout=15, what="api served by ext1")
    dns.terminate()
    dns.wait(timeout=10)
    start_resolver(resolver, ext2.addr)
    wait_for(lambda: served_by() == "ext2", timeout=15, what="api served by ext2 after re-resolution")
    assert all(served_by() == "ext2" for _ in range(5))
    topology.assert_isolated()
