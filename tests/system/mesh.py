"""Building small meshes for system tests: certificates from a test CA,
static proxy configurations, and the processes (rete-echo apps and their
rete-proxy sidecars) on their own 127.x.y.z addresses (helpers.fresh_host).

Configurations are written as JSON documents in a YAML stream (JSON is YAML),
so no YAML library is needed here."""
import json
import os
import subprocess

import certs
from helpers import build_path, fresh_host, read_log, sanitizer_report, start_echo, start_process, stop_process  # noqa: F401 (fresh_host re-exported)

TRUST_DOMAIN = "cluster.local"


def service(name, ns, ports, selector=None):
    """ports: [(port, protocol)] or [(port, protocol, targetPort)]."""
    spec_ports = []
    for p in ports:
        d = {"name": f"p{p[0]}", "port": p[0], "protocol": p[1]}
        if len(p) > 2:
            d["targetPort"] = p[2]
        spec_ports.append(d)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"ports": spec_ports, "selector": selector or {"app": name}}}


def workload(name, ns, address, sa, labels, **spec):
    return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"address": address, "serviceAccount": sa, "labels": labels, **spec}}


class Mesh:
    """A CA, a set of shared resources, and the proxies started from them."""

    def __init__(self, tmp_path, ns="test"):
        self.dir = str(tmp_path)
        self.ns = ns
        self.ca = certs.make_ca(self.dir, "mesh-root")
        self.resources = []
        self.proxies = {}

    def cert(self, sa, ns=None, **kw):
        return certs.make_workload_cert(self.dir, self.ca, TRUST_DOMAIN, ns or self.ns, sa, **kw)

    def add(self, *docs):
        self.resources.extend(docs)

    def write_config(self, name, sa, address, inbound=(), upstreams=(), cert=None, ca_file=None,
                     extra_spec=None, extra_docs=(), ns=None):
        ns = ns or self.ns
        crt, key = cert or self.cert(sa, ns)
        spec = {"serviceAccount": sa, "address": address,
                "tls": {"certFile": crt, "keyFile": key, "caFile": ca_file or self.ca[0]},
                "inbound": [{"port": p, "protocol": proto} for p, proto in inbound],
                "upstreams": [{"listen": l, "service": s, "port": p} for l, s, p in upstreams],
                "limits": {"drainTimeout": "2s"}}
        spec.update(extra_spec or {})
        proxy = {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy",
                 "metadata": {"name": name, "namespace": ns}, "spec": spec}
        path = os.path.join(self.dir, f"{name}.yaml")
        with open(path, "w") as f:
            f.write("\n---\n".join(json.dumps(d, indent=1) for d in [proxy, *self.resources, *extra_docs]))
            f.write("\n")
        return path

    def start_proxy(self, name, sa, address, *args, persistent=False, **kw):
        path = self.write_config(name, sa, address, **kw)
        proc = start_process([build_path("rete-proxy"), "--config", path, *args], r"ready:",
                             timeout=15, persistent=persistent)
        proc.config_path = path
        proc.address = address
        self.proxies[name] = proc
        return proc


def _ref(name, ns=None, port=None, weight=None, kind="Service"):
    d = {"kind": kind, "name": name}
    if ns:
        d["namespace"] = ns
    if port is not None:
        d["port"] = port
    if weight is not None:
        d["weight"] = weight
    return d


def backend(name, port=80, weight=None, ns=None):
    """A backendRef to Service `name` (port 80 unless told)."""
    return _ref(name, ns, port, weight)


def http_route(name, ns, parent, rules, kind="HTTPRoute", parent_port=None):
    """A Gateway API route (HTTPRoute, GRPCRoute or TCPRoute) attached to
    Service `parent` (GAMMA); `rules` are Gateway API rule objects."""
    api = "gateway.networking.k8s.io/v1alpha2" if kind == "TCPRoute" else "gateway.networking.k8s.io/v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [_ref(parent, port=parent_port)], "rules": rules}}


def destination_rule(name, ns, host, **traffic_policy):
    """An Istio DestinationRule for Service `host`: keyword arguments are
    trafficPolicy fields (loadBalancer=..., outlierDetection=...)."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": host, "trafficPolicy": traffic_policy}}


def echo_mesh(tmp_path, echo_protocol="HTTP", echo_args=(), client_args=(), persistent=False):
    """The smallest useful mesh: an echo app with its sidecar, and a client
    sidecar that reaches it by service name. Returns a dict with the client
    proxy's outbound address ("ip:15001"), the echo address and the Mesh.
    `persistent` processes outlive the test (for module-scoped fixtures)."""
    m = Mesh(tmp_path)
    client_host, echo_host = fresh_host(), fresh_host()
    echo_proc, echo_addr = start_echo(*echo_args, name="echo", host=echo_host, persistent=persistent)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    m.add(service("echo", m.ns, [(80, echo_protocol, echo_port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}))
    server = m.start_proxy("echo-0", "echo", echo_host, *client_args, inbound=[(echo_port, echo_protocol)],
                           persistent=persistent)
    client = m.start_proxy("client-0", "client", client_host, *client_args, persistent=persistent)
    return {"mesh": m, "outbound": f"{client_host}:15001", "client_host": client_host,
            "echo_host": echo_host, "echo_addr": echo_addr, "echo_port": echo_port,
            "client": client, "server": server, "echo": echo_proc,
            "admin": f"{client_host}:15000", "server_admin": f"{echo_host}:15000"}


def meshes(tmp_path, cls):
    """The body of a fixture that builds meshes: `make(*args, **kw)` makes a
    cls(dir, *args, **kw) in a directory of its own under tmp_path (cls has
    a `.mesh`); every mesh made is stopped and checked when the test ends.
        @pytest.fixture
        def net(tmp_path):
            yield from meshes(tmp_path, Net)
    """
    made = []

    def make(*args, **kw):
        d = tmp_path / str(len(made))
        d.mkdir()
        n = cls(d, *args, **kw)
        made.append(n)
        return n
    yield make
    for n in made:
        stop_and_check_proxies(n.mesh)


def stop_and_check_proxies(m):
    """End of a test: every proxy of `m` is still running, exits cleanly on
    SIGTERM, and logged no sanitizer report, leaks at exit included (under
    `make test` the proxies are the ASan+UBSan build, and a report in a
    proxy's log would otherwise go unseen)."""
    problems = []
    for name, proc in m.proxies.items():
        if proc.poll() is not None:
            problems.append(f"{name} exited early with {proc.returncode}:\n{read_log(proc)[-4000:]}")
            continue
        rc = stop_process(proc)
        log = read_log(proc)
        if rc != 0 or sanitizer_report(log):
            problems.append(f"{name} exited with {rc} on SIGTERM:\n{sanitizer_report(log) or log[-4000:]}")
    assert not problems, "\n".join(problems)


def s_client(host, ca_file, cert=None, payload=b"", wait=3.0, tls13_only=True):
    """Run `openssl s_client` (TLS 1.3 unless `tls13_only` is false, then
    whatever the two sides negotiate; ALPN h2) against host:15008, send
    `payload` and keep reading (-ign_eof) until the server closes or `wait`
    seconds pass. Returns (closed_by_server, stdout+stderr text)."""
    args = ["openssl", "s_client", "-connect", f"{host}:15008", "-CAfile", ca_file, "-alpn", "h2",
            *(["-tls1_3"] if tls13_only else []), "-ign_eof"]
    if cert:
        args += ["-cert", cert[0], "-key", cert[1]]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    p.stdin.write(payload)
    p.stdin.flush()
    try:
        out, _ = p.communicate(timeout=wait)
        closed = True
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        closed = False
    return closed, out.decode(errors="replace")
