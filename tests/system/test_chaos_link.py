"""Chaos: a link cut between network-namespace hosts under steady traffic.

In namespaces the test creates (netns.py; no route out, asserted), Service
web has two backend hosts, b1 and b2 (rete-echo on each), called from a
client host through its sidecar. The traffic loop runs on the client host
(`chaos.py traffic`, 40 requests per second). Then b2's cable is cut: its
veth's end in the switch goes down (`ip link set pN down`), so packets to
b2 vanish — no RST, no ICMP, as with a pulled cable.

The route retries once on 502/503/504 with a 1 s per-try timeout, the
DestinationRule has a 500 ms connect timeout and ejects an endpoint after
one gateway error (`consecutiveGatewayErrors: 1`). A request whose first
try goes to b2 (on a pooled connection: it waits the per-try timeout; on a
new one: the connect timeout) is retried on b1; after the first such try
b2 is ejected and everything goes to b1. The bound: a request fails only
if its retry fails too, and b1 is healthy: we allow 2 (one per worker
of the client sidecar that may try b2 before its ejection reaches it) and
expect 0. The recovery time reported is from the cut to the first success
after the last failure (0 when none failed)."""
import json
import os
import re
import subprocess

from chaos import Traffic, assert_within, records_from_json, report
from helpers import build_path, wait_for
from mesh import Mesh, destination_rule, http_route, backend, service, workload
from netns import topology  # noqa: F401 (the fixture)

NS = "test"
APP_PORT = 18080
HERE = os.path.dirname(os.path.abspath(__file__))
BOUND = 2


def test_link_cut_to_a_backend_host_bounded_failures_and_recovery(topology, tmp_path):
    client, b1, b2 = (topology.add_host(n) for n in ("client", "b1", "b2"))
    topology.assert_isolated()
    for h in (b1, b2):
        h.start([build_path("rete-echo"), "--quiet", "--listen", f"{h.addr}:{APP_PORT}", "--name", h.name],
                r"listening on")
    m = Mesh(tmp_path, ns=NS)
    m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}),
          workload("web-b1", NS, b1.addr, "web", {"app": "web"}, inMesh=False),
          workload("web-b2", NS, b2.addr, "web", {"app": "web"}, inMesh=False),
          workload("client-0", NS, client.addr, "client", {"app": "client"}),
          http_route("web", NS, "web", [{"backendRefs": [backend("web")],
                                         "timeouts": {"backendRequest": "1s"},
                                         "retry": {"attempts": 1, "codes": [502, 503, 504]}}]),
          destination_rule("web", NS, "web",
                           connectionPool={"tcp": {"connectTimeout": "500ms"}},
                           loadBalancer={"simple": "ROUND_ROBIN"},
                           outlierDetection={"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 1,
                                             "baseEjectionTime": "5m", "maxEjectionPercent": 50}))
    path = m.write_config("client-0", "client", client.addr,
                          extra_spec={"listeners": {"outbound": "127.0.0.1:15001"}})
    client.start([build_path("rete-proxy"), "--config", path], r"ready:")

    def served():
        seen = set()
        for _ in range(10):
            r = client.run(["curl", "-s", "-m", "5", "-H", "Host: web", "http://127.0.0.1:15001/"], timeout=15)
            try:
                seen.add(json.loads(r.stdout)["instance"].rsplit(":", 1)[0])
            except ValueError:
                pass
        return seen
    wait_for(lambda: served() == {b1.addr, b2.addr}, 20, 0.3, "both backend hosts serving")

    out = os.path.join(str(tmp_path), "traffic.json")
    loop = client.start(["/usr/bin/python3", os.path.join(HERE, "chaos.py"), "traffic", "127.0.0.1:15001",
                         "web", "40", "16", out], r"chaos traffic started")
    t = Traffic("127.0.0.1:1")  # the figures' side only: the loop runs in the client's namespace
    def done():
        with open(loop.log_path) as f:
            return max([int(n) for n in re.findall(r"chaos traffic at (\d+) requests", f.read())] or [0])
    wait_for(lambda: done() >= 80, 20, 0.1, "80 requests before the cut")
    cut = t.mark("link cut to b2")
    r = subprocess.run(["ip", "-n", topology.switch, "link", "set", b2.switch_port, "down"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    hung = client.run(["curl", "-s", "-m", "2", f"http://{b2.addr}:{APP_PORT}/"], timeout=10)
    assert hung.returncode == 28, hung  # cut: a connect times out, nothing refuses it
    loop.wait(timeout=40)
    assert loop.returncode == 0, open(loop.log_path).read()
    t.records = records_from_json(out)
    assert t.instances(until=cut) == {b1.addr, b2.addr}, "both hosts served before the cut"
    rows = [t.figures("link cut (veth down) to backend host b2", cut, bound=BOUND)]
    report(tmp_path, "link-cut", rows)
    assert_within(rows)
    after = [r for r in t.records if r[0] >= cut]
    assert len(after) >= 100, len(after)
    assert {json.loads(r[4])["instance"].rsplit(":", 1)[0] for r in after[-20:]} == {b1.addr}
    topology.assert_isolated()

