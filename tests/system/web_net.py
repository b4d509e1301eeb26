"""Service `web` on rete-echo instances outside the mesh (a killed echo is
a connect failure) and a client sidecar with two workers (`concurrency: 2`:
connections spread over them by the kernel), for the tests of how a proxy
balances and takes endpoints out: test_proxy_healthcheck.py,
test_proxy_outlier.py. Each module's `net` fixture is
`yield from mesh.meshes(tmp_path, Net)` with its own Net(WebNet); the echos
are stopped with the test's other processes."""
import collections
import http.client
import json
import urllib.request

from controlplane import proxy_metric
from helpers import start_echo, stop_process
from mesh import Mesh, destination_rule, fresh_host, service, workload

APP_PORT = 18080
NS = "test"


class WebNet:
    """`endpoints`: one (echo args, extra labels) per endpoint web-<i>;
    `policy`: the DestinationRule's trafficPolicy; the client's Workload
    labelled `client_labels`."""

    def __init__(self, tmp_path, endpoints, policy, client_labels=None):
        self.mesh = m = Mesh(tmp_path, ns=NS)
        m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}))
        self.hosts, self.echos, self.args = [], [], []
        for i, (args, labels) in enumerate(endpoints):
            host = fresh_host()
            self.hosts.append(host)
            self.args.append(args)
            self.echos.append(self._start(i))
            m.add(workload(f"web-{i}", NS, host, "web", {"app": "web", **labels}, inMesh=False))
        m.add(destination_rule("web", NS, "web", **policy))
        self.client = fresh_host()
        m.add(workload("client-0", NS, self.client, "client", {"app": "client", **(client_labels or {})}))
        self.proc = m.start_proxy("client-0", "client", self.client, extra_spec={"concurrency": 2})

    def _start(self, i):
        return start_echo("--quiet", *self.args[i], name="web", host=self.hosts[i], port=APP_PORT)[0]

    def kill(self, i):
        stop_process(self.echos[i])

    def revive(self, i):
        self.echos[i] = self._start(i)

    def request(self):
        """One GET on a fresh connection (so on either worker): (status, instance host or None)."""
        c = http.client.HTTPConnection(self.client, 15001, timeout=20)
        try:
            c.request("GET", "/", headers={"Host": "web"})
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        inst = json.loads(body)["instance"].rsplit(":", 1)[0] if r.status == 200 else None
        return r.status, inst

    def responses(self, n):
        """n requests: how many of each (status, instance host)."""
        return collections.Counter(self.request() for _ in range(n))

    def statuses(self, n):
        return collections.Counter(self.request()[0] for _ in range(n))

    def instances(self, n):
        return collections.Counter(self.request()[1] for _ in range(n))

    def clusters(self):
        """The admin listener's /clusters for web: ({address: endpoint}, the cluster)."""
        with urllib.request.urlopen(f"http://{self.client}:15000/clusters", timeout=10) as r:
            doc = json.load(r)
        web = [c for c in doc["clusters"] if c["name"].startswith("web.")][0]
        return {e["address"]: e for e in web["endpoints"]}, web

    def endpoints(self):
        return self.clusters()[0]

    def metric(self, name):
        return proxy_metric(self.client, name)

    def metrics_text(self):
        with urllib.request.urlopen(f"http://{self.client}:15000/metrics", timeout=10) as r:
            return r.read().decode()

