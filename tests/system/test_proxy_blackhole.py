"""A black-holed endpoint (issue 11, Tests): in network namespaces the test
creates (netns.py), one of two hosts behind Service `web` drops every
packet to its app port with an nftables rule in its own namespace (`tc
netem` is not in this kernel), so a connect to it hangs as to a dead
machine's address, not refused. The client's sidecar (connectTimeout 500ms,
consecutiveGatewayErrors 1) pays at most the connect timeout once, answers
503 naming it, ejects the endpoint and sends everything after to the other
host. Without the connect timer the request would wait for the kernel's SYN
retries (over two minutes)."""
import json
import time

from helpers import build_path, wait_for
from mesh import Mesh, destination_rule, service, workload
from netns import topology  # noqa: F401 (the fixture)

NS = "test"
APP_PORT = 18080


def test_black_holed_endpoint_costs_one_connect_timeout_then_is_ejected(topology, tmp_path):
    client, good, dead = (topology.add_host(n) for n in ("client", "good", "dead"))
    topology.assert_isolated()
    for h in (good, dead):
        h.start([build_path("rete-echo"), "--quiet", "--listen", f"{h.addr}:{APP_PORT}", "--name", h.name],
                r"listening on")
    # the app answers from its own namespace; from the bridge, nothing
    assert dead.run(["curl", "-s", "-m", "3", f"http://{dead.addr}:{APP_PORT}/"]).returncode == 0
    for rule in (["add", "table", "inet", "blackhole"],
                 ["add", "chain", "inet", "blackhole", "in",
                  "{ type filter hook input priority 0; policy accept; }"],
                 ["add", "rule", "inet", "blackhole", "in", "iifname", "eth0", "tcp", "dport",
                  str(APP_PORT), "drop"]):
        r = dead.run(["nft", *rule])
        assert r.returncode == 0, r.stderr
    hung = client.run(["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                       f"http://{dead.addr}:{APP_PORT}/"], timeout=10)
    assert hung.returncode == 28, hung  # curl: operation timed out, not refused

    m = Mesh(tmp_path, ns=NS)
    m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}),
          workload("web-good", NS, good.addr, "web", {"app": "web"}, inMesh=False),
          workload("web-dead", NS, dead.addr, "web", {"app": "web"}, inMesh=False),
          workload("client-0", NS, client.addr, "client", {"app": "client"}),
          destination_rule("web", NS, "web",
                           connectionPool={"tcp": {"connectTimeout": "500ms"}},
                           loadBalancer={"simple": "ROUND_ROBIN"},
                           outlierDetection={"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 1,
                                             "baseEjectionTime": "5m", "maxEjectionPercent": 50}))
    path = m.write_config("client-0", "client", client.addr,
                          extra_spec={"listeners": {"outbound": "127.0.0.1:15001"}})
    client.start([build_path("rete-proxy"), "--config", path], r"ready:")

    def call():
        t0 = time.monotonic()
        r = client.run(["curl", "-s", "-m", "20", "-H", "Host: web", "-w", "\n%{http_code}",
                        "http://127.0.0.1:15001/"], timeout=30)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body, time.monotonic() - t0

    results = [call() for _ in range(20)]
    failed = [(c, b, t) for c, b, t in results if c != 200]
    assert len(failed) == 1, failed  # one try reached the dead host, then it was ejected
    code, body, took = failed[0]
    assert code == 503 and "connect timeout" in body, failed
    assert took < 10, took  # the connect timeout (500 ms), far from the kernel's SYN timeout
    served = {json.loads(b)["instance"].rsplit(":", 1)[0] for c, b, _ in results if c == 200}
    assert served == {good.addr}

    def ejected():
        r = client.run(["curl", "-s", "-m", "5", "http://127.0.0.1:15000/clusters"])
        web = [c for c in json.loads(r.stdout)["clusters"] if c["name"].startswith("web.")][0]
        return {e["address"]: e["ejected"] for e in web["endpoints"]}
    state = wait_for(ejected, 10, 0.2, "the /clusters view")
    assert state == {good.addr: False, dead.addr: True}, state
    topology.assert_isolated()
