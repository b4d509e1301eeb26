"""TLS the app opens itself, under interception (netns.py hosts): the client
sidecar does not terminate it; it passes through as opaque TCP over the
mesh, routed by the ClientHello's server name (SNI) when that names a mesh
Service, else by the original destination address."""
import json  # noqa: F401
import re

from netns import topology  # noqa: F401 (the fixture)
from mesh import Mesh, service, workload
from test_intercept import PROXY_GID, init, metrics, series, start_app, start_sidecar
from tlsca import issue, make_ca

TLS_PORT = 8443
SECURE_VIP = "10.250.0.202"
NOWHERE = "10.250.0.222"  # on the bridge's subnet, no host has it


def tls_pair(topology, tmp_path):
    """client (curl, sidecar) and server (openssl s_server -www on TLS_PORT
    and rete-echo, sidecar); Service `secure` port 443 (TCP) -> TLS_PORT,
    clusterIP SECURE_VIP; the server's certificate names the Service's
    hosts and comes from a CA only the client's curl knows."""
    client, server = topology.add_host("client"), topology.add_host("server")
    topology.assert_isolated()
    ca = make_ca(str(tmp_path))
    cert, key = issue(str(tmp_path), ca, "secure", ["secure.test.svc", "secure", "tls.example"])
    m = Mesh(tmp_path)
    secure = service("secure", m.ns, [(443, "TCP", TLS_PORT)], selector={"app": "echo"})
    secure["spec"]["clusterIP"] = SECURE_VIP
    m.add(secure, service("echo", m.ns, [(80, "HTTP", 8080)]),
          workload("echo-0", m.ns, server.addr, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client.addr, "client", {"app": "client"}))
    server.start(["openssl", "s_server", "-accept", f"{server.addr}:{TLS_PORT}", "-cert", cert, "-key", key,
                  "-www", "-naccept", "100"], r"ACCEPT")
    start_app(server)
    start_sidecar(server, m, "echo-0", "echo", inbound=[(8080, "HTTP"), (TLS_PORT, "TCP")])
    start_sidecar(client, m, "client-0", "client")
    for h in (client, server):
        r = init(h, f"--proxy-gid={PROXY_GID}", f"--address={h.addr}")
        assert r.returncode == 0, r.stderr
    return client, server, ca[0]


def _curl(client, ca, host, addr):
    return client.run(["curl", "-sS", "-m", "10", "--cacert", ca, "--resolve", f"{host}:443:{addr}",
                       f"https://{host}/"])


def test_tls_passes_through_routed_by_sni(topology, tmp_path):
    """curl speaks TLS to `secure.test.svc`, resolved to an address nobody
    has: the sidecar cannot terminate it, reads the server name from the
    ClientHello and tunnels the bytes over mTLS to the secure Service's
    workload. curl verifies the app's own certificate against its CA: the
    TLS session is the app's, end to end."""
    client, _, ca = tls_pair(topology, tmp_path)
    r = _curl(client, ca, "secure.test.svc", NOWHERE)
    assert r.returncode == 0 and "s_server" in r.stdout, r.stdout[:300] + r.stderr
    text = metrics(client)
    assert series(text, "istio_tcp_connections_opened_total", reporter="source",
                  destination_service_name="secure", connection_security_policy="mutual_tls") == 1, text
    assert re.search(r'rete_proxy_outbound_unknown_destination_total\{action="passthrough"\} 0', text), text
    topology.assert_isolated()


def test_tls_without_a_mesh_name_routes_by_address(topology, tmp_path):
    """openssl s_client with no SNI to the Service's clusterIP: routed by
    the original address; an SNI that names no Service (a name of the
    certificate only) also falls back to the address."""
    client, _, ca = tls_pair(topology, tmp_path)
    r = client.run(["openssl", "s_client", "-connect", f"{SECURE_VIP}:443", "-noservername", "-CAfile", ca,
                    "-verify_return_error", "-verify_hostname", "secure.test.svc"], input="", timeout=20)
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout[-800:] + r.stderr
    r = _curl(client, ca, "tls.example", SECURE_VIP)
    assert r.returncode == 0 and "s_server" in r.stdout, r.stderr
    text = metrics(client)
    assert series(text, "istio_tcp_connections_opened_total", reporter="source",
                  destination_service_name="secure", connection_security_policy="mutual_tls") == 2, text
    topology.assert_isolated()
