"""Transparent interception (rete-proxy init) in network namespaces the test
creates (netns.py): hosts on a bridge, an app and its sidecar in each, the
rules of `rete-proxy init` in the workloads' namespaces. The apps (curl,
rete-echo) know nothing of the mesh: no proxy setting, no sidecar port.

Each test asserts the topology cannot reach anything outside itself."""
import json
import re

import pytest

from helpers import build_path, start_echo  # noqa: F401 (start_echo: deps scan of rete-echo)
from mesh import Mesh, service, workload
from netns import topology  # noqa: F401 (the fixture)

PROXY_GID = 1337  # the sidecar runs with this group; init leaves its sockets alone
ECHO_PORT = 8080
REDIS_PORT = 6379
# The Services' virtual addresses: inside the bridge's subnet, so the app's
# kernel has a route for them (the connection is redirected to the sidecar
# before any packet leaves); no host has them.
ECHO_VIP = "10.250.0.200"
REDIS_VIP = "10.250.0.201"


def init(host, *args):
    return host.run([build_path("rete-proxy"), "init", *args])


def ruleset(host):
    r = host.run(["nft", "list", "ruleset"], check=True)
    return r.stdout


def peer_authn(mode):
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "test"}, "spec": {"mtls": {"mode": mode}}}


def start_sidecar(host, m, name, sa, **kw):
    """rete-proxy in `host`, as group PROXY_GID, outbound listener on loopback
    (where REDIRECT sends the app's connections)."""
    spec = {"listeners": {"outbound": "127.0.0.1:15001"}}
    path = m.write_config(name, sa, host.addr, extra_spec=spec, **kw)
    return host.start(["setpriv", f"--regid={PROXY_GID}", "--clear-groups", build_path("rete-proxy"),
                       "--config", path, "--log-level", "info"], r"ready:")


def start_app(host, name="echo"):
    return host.start([build_path("rete-echo"), "--listen", f"{host.addr}:{ECHO_PORT}", "--name", name],
                      rf"rete-echo {name} listening on")


def metrics(host):
    return host.run(["curl", "-sS", "-m", "5", "http://127.0.0.1:15000/metrics"], check=True).stdout


def series(text, name, **labels):
    """The sum of the series of `name` carrying every label=value given."""
    total = 0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def mesh_config(outbound_mode):
    return {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig", "metadata": {"name": "mesh"},
            "spec": {"outboundTrafficPolicy": {"mode": outbound_mode}}}


def mesh_pair(topology, tmp_path, mode=None, outbound_mode=None, redis=False):
    """client (curl + sidecar) and server (rete-echo + sidecar), both
    intercepted; an outsider host with neither. The echo Service has
    clusterIP ECHO_VIP; with `redis`, redis-server runs beside rete-echo
    behind Service redis (opaque TCP, clusterIP REDIS_VIP)."""
    client, server, outsider = (topology.add_host(n) for n in ("client", "server", "outsider"))
    topology.assert_isolated()
    m = Mesh(tmp_path)
    echo = service("echo", m.ns, [(80, "HTTP", ECHO_PORT)])
    echo["spec"]["clusterIP"] = ECHO_VIP
    m.add(echo,
          workload("echo-0", m.ns, server.addr, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client.addr, "client", {"app": "client"}))
    inbound = [(ECHO_PORT, "HTTP")]
    if redis:
        r = service("redis", m.ns, [(REDIS_PORT, "TCP")], selector={"app": "echo"})
        r["spec"]["clusterIP"] = REDIS_VIP
        m.add(r)
        inbound.append((REDIS_PORT, "TCP"))
        server.start(["redis-server", "--bind", server.addr, "--port", str(REDIS_PORT), "--save", "",
                      "--appendonly", "no", "--protected-mode", "no"], r"Ready to accept connections")
    if mode:
        m.add(peer_authn(mode))
    if outbound_mode:
        m.add(mesh_config(outbound_mode))
    start_app(server)
    start_sidecar(server, m, "echo-0", "echo", inbound=inbound)
    start_sidecar(client, m, "client-0", "client")
    for h in (client, server):
        r = init(h, f"--proxy-gid={PROXY_GID}", f"--address={h.addr}")
        assert r.returncode == 0, r.stderr
    return client, server, outsider


def test_topology_is_isolated_and_connected(topology):
    a, b = topology.add_host("a"), topology.add_host("b")
    topology.assert_isolated()
    start_app(b)
    r = a.run(["curl", "-sS", "-m", "5", f"http://{b.addr}:{ECHO_PORT}/x"])
    assert r.returncode == 0 and json.loads(r.stdout)["path"] == "/x", r.stderr
    r = a.run(["curl", "-sS", "-m", "5", f"http://[{b.addr6}]:{ECHO_PORT}/x"])
    assert r.returncode == 7, r.stderr  # reached b over IPv6: nothing listens there


def test_init_twice_is_once_and_remove_restores(topology):
    h = topology.add_host("w")
    topology.assert_isolated()
    before = ruleset(h)
    args = ["--proxy-gid=1337", "--proxy-uid=1337", f"--address={h.addr}", f"--address={h.addr6}",
            "--exclude-outbound-cidr=10.0.0.0/8", "--exclude-outbound-port=22", "--dns-port=15053"]
    assert init(h, *args).returncode == 0
    once = ruleset(h)
    assert "table inet rete" in once and "redirect to :15001" in once and "redirect to :15006" in once
    assert init(h, *args).returncode == 0
    assert ruleset(h) == once
    # --dry-run prints and changes nothing
    r = init(h, *args, "--dry-run")
    assert r.returncode == 0 and "table inet rete {" in r.stdout
    assert ruleset(h) == once
    # a rule of someone else's survives --remove
    h.run(["nft", "add", "table", "inet", "other"], check=True)
    assert init(h, "--remove").returncode == 0
    assert "rete" not in ruleset(h) and "table inet other" in ruleset(h)
    h.run(["nft", "delete", "table", "inet", "other"], check=True)
    assert ruleset(h) == before
    assert init(h, "--remove").returncode == 0  # nothing to remove: still fine
    assert ruleset(h) == before


@pytest.mark.parametrize("backend", ["iptables", "iptables-legacy"])
def test_iptables_backend_twice_and_remove(topology, backend):
    h = topology.add_host("w")
    save = [f"{backend}-save", "-t", "nat"]

    def state():
        return re.sub(r"(?m)^#.*\n|\[\d+:\d+\]", "", h.run(save, check=True).stdout)

    before = state()
    assert init(h, f"--backend={backend}", "--proxy-uid=1337").returncode == 0
    once = state()
    assert "-A OUTPUT -j RETE_OUTPUT" in once and "--uid-owner 1337" in once
    assert init(h, f"--backend={backend}", "--proxy-uid=1337").returncode == 0
    assert state() == once
    assert init(h, f"--backend={backend}", "--remove").returncode == 0
    assert "RETE" not in state()
    if backend == "iptables-legacy":
        assert state() == before


def test_bad_options_exit_2(topology):
    h = topology.add_host("w")
    for args, msg in [(["--proxy-gid=1", "--exclude-outbound-cidr=10.0.0.1/8"], "--exclude-outbound-cidr"),
                      (["--proxy-gid=1", "--exclude-inbound-port=0"], "not a port"),
                      ([], "--proxy-uid or --proxy-gid"),
                      (["--proxy-gid=1", "--backend=pf"], "--backend pf")]:
        r = init(h, *args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
    assert "rete" not in ruleset(h)


def test_unmodified_curl_goes_through_the_mesh(topology, tmp_path):
    """curl in the client's namespace calls the echo Service by name (the
    name resolved to the server's address by curl itself: no DNS here) with
    no proxy setting: its connection is redirected to the client sidecar,
    which calls the server sidecar over mTLS (the app sees the mesh
    identity in x-forwarded-client-cert). The sidecars' own connections
    (client -> server:15008, server -> app:8080) are not redirected, or
    they would loop into their own listeners."""
    client, server, _ = mesh_pair(topology, tmp_path)
    r = client.run(["curl", "-sS", "-m", "10", "--resolve", f"echo:80:{server.addr}", "http://echo/hello"])
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["path"] == "/hello"
    assert body["headers"]["x-forwarded-client-cert"] == (
        "By=spiffe://cluster.local/ns/test/sa/echo;URI=spiffe://cluster.local/ns/test/sa/client")
    text = metrics(server)
    assert re.search(r'connection_security_policy="mutual_tls"', text), text
    topology.assert_isolated()


def _direct(outsider, server):
    return outsider.run(["curl", "-sS", "-m", "5", "-i", f"http://{server.addr}:{ECHO_PORT}/direct"])


def test_direct_call_refused_under_strict(topology, tmp_path):
    """A plaintext connection from a host outside the mesh to the app's own
    port lands on the server sidecar's inbound listener: STRICT closes it,
    the app never sees it."""
    _, server, outsider = mesh_pair(topology, tmp_path, mode="STRICT")
    r = _direct(outsider, server)
    assert r.returncode != 0 and "HTTP/1.1 200" not in r.stdout, r.stdout
    assert re.search(r"(?m)^rete_proxy_mesh_refused_total [1-9]", metrics(server))
    # without the rules the same call reaches the app: the rules did it
    assert init(server, "--remove").returncode == 0
    r = _direct(outsider, server)
    assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200"), r.stdout + r.stderr


def test_direct_call_served_unmeshed_under_permissive(topology, tmp_path):
    _, server, outsider = mesh_pair(topology, tmp_path, mode="PERMISSIVE")
    r = _direct(outsider, server)
    assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200"), r.stdout + r.stderr
    body = json.loads(r.stdout.split("\n\n", 1)[1])
    assert "x-forwarded-client-cert" not in body["headers"]
    text = metrics(server)
    assert series(text, "istio_requests_total", reporter="destination", response_code="200",
                  connection_security_policy="none") == 1, text


def _xfcc_client(body):
    return body["headers"].get("x-forwarded-client-cert", "").endswith("URI=spiffe://cluster.local/ns/test/sa/client")


def test_curl_by_cluster_ip_and_by_workload_address(topology, tmp_path):
    """No name at all: curl to the Service's clusterIP, and to the server
    workload's own address and app port. The client sidecar recovers the
    original destination (SO_ORIGINAL_DST) and maps it to the echo Service;
    the call is meshed (mTLS, the client's identity reaches the app)."""
    client, server, _ = mesh_pair(topology, tmp_path)
    for url in (f"http://{ECHO_VIP}/by-vip", f"http://{server.addr}:{ECHO_PORT}/by-address"):
        r = client.run(["curl", "-sS", "-m", "10", url])
        assert r.returncode == 0, (url, r.stderr)
        body = json.loads(r.stdout)
        assert _xfcc_client(body), body
    text = metrics(client)
    assert series(text, "istio_requests_total", reporter="source", destination_service_name="echo",
                  response_code="200", connection_security_policy="mutual_tls") == 2, text
    topology.assert_isolated()


def test_opaque_tcp_by_cluster_ip(topology, tmp_path):
    """redis-cli, a plain TCP client, reaches redis-server by the redis
    Service's clusterIP through both sidecars (an HBONE tunnel over mTLS)."""
    client, server, _ = mesh_pair(topology, tmp_path, redis=True)
    r = client.run(["redis-cli", "-h", REDIS_VIP, "-p", str(REDIS_PORT), "ping"])
    assert r.returncode == 0 and r.stdout.strip() == "PONG", r.stdout + r.stderr
    text = metrics(client)
    assert series(text, "istio_tcp_connections_opened_total", reporter="source",
                  destination_service_name="redis", connection_security_policy="mutual_tls") == 1, text


def _unknown(text, action):
    m = re.search(rf'^rete_proxy_outbound_unknown_destination_total\{{action="{action}"\}} (\d+)$', text, re.M)
    assert m, text
    return int(m.group(1))


def test_allow_any_passes_an_unknown_destination(topology, tmp_path):
    """The outsider is no Service: under ALLOW_ANY (the default) the client
    sidecar passes the call through, unmeshed, and counts it."""
    client, _, outsider = mesh_pair(topology, tmp_path)
    start_app(outsider, "outside")
    r = client.run(["curl", "-sS", "-m", "10", f"http://{outsider.addr}:{ECHO_PORT}/out"])
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["path"] == "/out" and "x-forwarded-client-cert" not in body["headers"]
    assert _unknown(metrics(client), "passthrough") == 1
    assert _unknown(metrics(client), "refused") == 0


def test_registry_only_refuses_an_unknown_destination(topology, tmp_path):
    client, _, outsider = mesh_pair(topology, tmp_path, outbound_mode="REGISTRY_ONLY")
    outside = start_app(outsider, "outside")
    r = client.run(["curl", "-sS", "-m", "10", "-i", f"http://{outsider.addr}:{ECHO_PORT}/out"])
    assert r.stdout.startswith("HTTP/1.1 502"), r.stdout + r.stderr
    assert "REGISTRY_ONLY" in r.stdout
    # an opaque connection is closed without a byte
    r = client.run(["redis-cli", "-h", outsider.addr, "-p", str(ECHO_PORT), "ping"])
    assert "PONG" not in r.stdout
    assert _unknown(metrics(client), "refused") == 2
    # the mesh still works
    r = client.run(["curl", "-sS", "-m", "10", f"http://{ECHO_VIP}/in-mesh"])
    assert r.returncode == 0, r.stderr
    from helpers import read_log
    assert "/out" not in read_log(outside)


def test_stats_port_faces_the_network_admin_does_not(topology, tmp_path):
    """The admin split under STRICT interception: from another host the
    server sidecar's stats listener (its workload address, :15020, never
    redirected by init) answers /metrics and /ready for Prometheus and
    probes, and 404s /config; the admin listener (/config, /logging) is
    bound to 127.0.0.1 only, so the same host cannot reach it at all,
    while a process in the server's own namespace can."""
    _, server, outsider = mesh_pair(topology, tmp_path, mode="STRICT")
    stats = f"http://{server.addr}:15020"
    r = outsider.run(["curl", "-sS", "-m", "5", f"{stats}/metrics"])
    assert r.returncode == 0 and "rete_proxy_requests_total" in r.stdout, r.stderr
    r = outsider.run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", f"{stats}/ready"])
    assert r.stdout == "200", r.stdout + r.stderr
    r = outsider.run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", f"{stats}/config"])
    assert r.stdout == "404", r.stdout + r.stderr
    r = outsider.run(["curl", "-sS", "-m", "5", f"http://{server.addr}:15000/config"])
    assert r.returncode == 7, r.stdout + r.stderr  # connection refused: nothing there
    r = server.run(["curl", "-sS", "-m", "5", "http://127.0.0.1:15000/config"])
    assert r.returncode == 0 and json.loads(r.stdout)["proxy"]["listeners"]["stats"], r.stderr
    topology.assert_isolated()
