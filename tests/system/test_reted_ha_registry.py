"""Registrations on replicas sharing a real 3-member etcd cluster (issue 14):
each proxy's registration names the replica holding its config stream and
lives under that replica's etcd lease, so a replica that merely lost a
proxy's stream never removes the proxy's Workload, the leader removes the
Workloads of proxies whose replica died and that did not re-register
elsewhere, and a proxy's readiness is known to every replica.

The replicas run with --grace 2s (the registry's tick is 15 s, the lease
10 s: every wait is bounded well above their sum). Each test has its own
key prefix."""
import json
import os
import signal
import urllib.request

from controlplane import curl, curl_status, reted_metric, start_cp_proxy
from etcd import cluster, replicas, route_tag, tagged  # noqa: F401 (cluster: a fixture)
from helpers import fresh_host, free_port, start_echo, wait_for
from mesh import service
from test_control_plane_health import readiness_doc
from controlplane import snapshot_docs
from test_reted_ha import NS, ha_proxy, home, leader_of

GRACE = ("--grace", "2s")


def workload(r, name):
    """Workload ha/name through replica r, or None."""
    st, j = r.get("workload", NS, name)
    return j if st == 200 else None


def echo_service(rs):
    host = fresh_host()
    _, addr = start_echo("--quiet", name="echo", host=host)
    port = int(addr.rsplit(":", 1)[1])
    rs[0].apply_ok([service("echo", NS, [(80, "HTTP", port)])])
    return host, port


def test_a_proxy_that_moved_is_never_deregistered_by_the_replica_it_left(cluster, tmp_path):
    a, b, c = rs = replicas(tmp_path, cluster.endpoints, "/t-moved/", args=GRACE)
    host, port = echo_service(rs)
    start_cp_proxy(c, tmp_path, "echo-0", NS, "echo", host=host, inbound=[(port, "HTTP")], labels={"app": "echo"})
    # client-0 and gone-0 on A only; A stays up and loses both streams:
    # client-0 restarts pointing at B only, gone-0 dies (SIGKILL: no drain)
    client = start_cp_proxy(a, tmp_path, "client-0", NS, "client", labels={"app": "client"})
    gone = start_cp_proxy(a, tmp_path, "gone-0", NS, "client", labels={"app": "client"})
    wait_for(lambda: curl_status(client.outbound, "echo") == 200, 30, 0.3, "echo through client-0")
    client.stop()
    gone.stop(signal.SIGKILL)
    client.args[client.args.index("--control-plane") + 1] = b.xds
    client.start()
    b.wait_synced("client-0", NS)
    # A forgets client-0 (its registration names B now) rather than expiring it
    wait_for(lambda: a.proxy("client-0", NS) is None, 30, 0.3, "A forgets client-0")
    assert "re-registered on replica" in a.log()
    # A expires gone-0 after its grace period, at its registry tick: by then
    # it had the same chance to expire client-0, whose Workload stays
    wait_for(lambda: workload(b, "gone-0") is None, 40, 0.5, "A expires gone-0's Workload")
    for r in rs:
        assert workload(r, "client-0") is not None, r.api
    # and it still gets config, through B
    c.apply_ok([route_tag("tag", "after-move")])
    wait_for(lambda: tagged(client, "after-move"), 30, 0.3, "client-0 routes a change after its move")
    assert b.proxy("client-0", NS)["status"] == "SYNCED"


def test_the_leader_expires_the_proxies_of_a_dead_replica_that_did_not_rehome(cluster, tmp_path):
    rs = replicas(tmp_path, cluster.endpoints, "/t-dead/", args=GRACE)
    host, port = echo_service(rs)
    # moved-0 knows every replica; lost-0 only the one moved-0 picked
    moved = ha_proxy(rs, tmp_path, "moved-0", "client", labels={"app": "client"})
    x = home(moved, rs)
    lost = start_cp_proxy(x, tmp_path, "lost-0", NS, "client", labels={"app": "client"})
    live = [r for r in rs if r is not x]
    wait_for(lambda: all(workload(r, n) for r in live for n in ("moved-0", "lost-0")), 20, 0.3,
             "both Workloads on every replica")
    # the replica and lost-0 die together
    lost.stop(signal.SIGKILL)
    x.kill()
    wait_for(lambda: home(moved, live), 20, 0.2, "moved-0 re-homes")
    # x's lease expires (10 s), a live leader sees lost-0 held by nobody for
    # the grace period at its tick (15 s): its Workload goes; moved-0's stays
    wait_for(lambda: workload(live[0], "lost-0") is None, 60, 0.5, "the leader expires lost-0")
    assert workload(live[1], "lost-0") is None
    for r in live:
        assert workload(r, "moved-0") is not None, r.api
    leader = wait_for(lambda: leader_of(live), 20, 0.2, "a leader")
    assert reted_metric(leader, "rete_reted_registrations_expired_total") >= 1
    assert "held by no replica" in leader.log()
    assert home(moved, live) is not None


def readiness_mesh(rs, tmp_path, on):
    """Service echo with two sidecars echo-0 and echo-1 whose apps answer
    /ready, each on the replica `on` says (that replica only)."""
    hosts = [fresh_host(), fresh_host()]
    port = free_port(hosts[0])
    apps = [start_echo("--quiet", name=f"echo-{i}", host=h, port=port) for i, h in enumerate(hosts)]
    rs[0].apply_ok([service("echo", NS, [(80, "HTTP", port)])])
    readiness = {"httpGet": {"path": "/ready", "port": port}, "period": "200ms", "timeout": "150ms",
                 "failureThreshold": 2, "successThreshold": 1}
    for i, h in enumerate(hosts):
        name = f"echo-{i}"
        data = os.path.join(str(tmp_path), f"proxy-{name}.{NS}")
        doc = readiness_doc(tmp_path, name, h, data, port, readiness)
        # the health module's document is in its namespace: this one's
        with open(doc) as f:
            d = json.load(f)
        d["metadata"]["namespace"] = NS
        with open(doc, "w") as f:
            json.dump(d, f)
        start_cp_proxy(on[i], tmp_path, name, NS, "echo", host=h, data_dir=data, labels={"app": "echo"},
                       extra=["--config", doc])
    return [a for _, a in apps]


def pushed_workload(r, proxy, name):
    """The Workload `name` as replica r sends it to `proxy`."""
    st, cfg = r.proxy_config(NS, proxy)
    assert st == 200, (st, cfg)
    return next(d for d in snapshot_docs(cfg["resources"]) if d["kind"] == "Workload" and d["metadata"]["name"] == name)


def instances(client, n):
    seen = []
    for _ in range(n):
        r = curl(client.outbound, "echo", timeout=5)
        seen.append(json.loads(r.stdout)["instance"] if r.returncode == 0 and r.stdout else "error")
    return seen


def test_a_proxys_readiness_reported_to_one_replica_reaches_proxies_on_the_others(cluster, tmp_path):
    a, b, c = rs = replicas(tmp_path, cluster.endpoints, "/t-ready/", args=GRACE)
    addrs = readiness_mesh(rs, tmp_path, on=[a, c])
    client = start_cp_proxy(b, tmp_path, "client-0", NS, "client", labels={"app": "client"})
    wait_for(lambda: set(instances(client, 20)) == set(addrs), 30, 0.3, "both endpoints take traffic")
    # echo-0 (on A) stops being ready: client-0 (on B) sends it nothing
    urllib.request.urlopen(f"http://{addrs[0]}/ready?set=0", timeout=5).read()
    wait_for(lambda: set(instances(client, 10)) == {addrs[1]}, 15, 0.2, "client-0 stops sending to echo-0")
    seen = instances(client, 30)
    assert seen == [addrs[1]] * 30, seen
    # B pushes echo-0 as not ready (it learnt it from A through etcd): waited
    # for, since the traffic check above can pass before B's view is read.
    wait_for(lambda: pushed_workload(b, "client-0", "echo-0")["spec"].get("ready") is False, 15, 0.2,
             "B pushes echo-0 as not ready")
    assert b.proxy("echo-0", NS) is None  # B never held echo-0's stream
    assert b.proxy("client-0", NS)["status"] == "SYNCED"
    # ready again: traffic comes back
    urllib.request.urlopen(f"http://{addrs[0]}/ready?set=1", timeout=5).read()
    wait_for(lambda: addrs[0] in instances(client, 20), 15, 0.2, "echo-0 takes traffic again")


def workload_names(r):
    """The names of the Workloads in namespace ha, through replica r."""
    st, j = r.get("workload", NS)
    assert st == 200, (st, j)
    return {it["metadata"]["name"] for it in j["items"]}


def test_the_leader_expires_hundreds_of_orphans_at_once_and_keeps_every_held_one(cluster, tmp_path):
    """300 proxy-registered Workloads that no replica holds (as if their
    replica died with their proxies) go at one sweep, in transactions of 64
    expiries each; the Workloads of proxies live replicas hold, and the
    operator's, stay."""
    rs = replicas(tmp_path, cluster.endpoints, "/t-many/", args=GRACE)
    host, port = echo_service(rs)
    start_cp_proxy(rs[0], tmp_path, "echo-0", NS, "echo", host=host, inbound=[(port, "HTTP")], labels={"app": "echo"})
    held = [start_cp_proxy(r, tmp_path, f"held-{i}", NS, "client", labels={"app": "client"})
            for i, r in enumerate(rs)]
    for p in held:
        wait_for(lambda p=p: curl_status(p.outbound, "echo") == 200, 30, 0.3, f"echo through {p.name}")

    def wl(name, by_proxy):
        meta = {"name": name, "namespace": NS}
        if by_proxy:
            meta["annotations"] = {"rete.dev/registered-by": "proxy"}
        return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "Workload", "metadata": meta,
                "spec": {"address": "127.0.0.1", "serviceAccount": "client", "labels": {"app": "gone"}}}

    orphans = {f"orphan-{i:03d}" for i in range(300)}
    docs = [wl(n, True) for n in sorted(orphans)] + [wl(f"declared-{i}", False) for i in range(5)]
    for i in range(0, len(docs), 100):  # etcd takes 128 writes per apply
        rs[i // 100 % 3].apply_ok(docs[i:i + 100])
    assert orphans <= workload_names(rs[0])
    # the leader sees them held by nobody at a tick (15 s) and expires them
    # at the next one past the grace period (2 s)
    wait_for(lambda: not orphans & workload_names(rs[1]), 60, 0.5, "the leader expires the 300 orphans")
    for r in rs:
        wait_for(lambda r=r: not orphans & workload_names(r), 20, 0.3, f"{r.api} sees the orphans gone")
        names = workload_names(r)
        assert {"echo-0", *(f"held-{i}" for i in range(3))} <= names, (r.api, names)
        assert {f"declared-{i}" for i in range(5)} <= names, (r.api, names)
    expired = sum(reted_metric(r, "rete_reted_registrations_expired_total") for r in rs)
    assert expired == 300, expired
    for r in rs:
        assert "too many operations" not in r.log(), r.api
    # the held proxies still get config
    rs[2].apply_ok([route_tag("tag", "after-sweep")])
    for p in held:
        wait_for(lambda p=p: tagged(p, "after-sweep"), 30, 0.3, f"{p.name} routes a change after the sweep")
