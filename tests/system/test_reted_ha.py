"""Failover between reted replicas on a real 3-member etcd cluster (issue 14,
second slice): proxies given every replica (--control-plane a,b,c) move to
another when theirs dies or restarts, keep serving meanwhile, resume from
what they hold, renew their certificates through whichever replica they
reach; retectl's context lists every replica; one replica leads the jobs
that must run once (an etcd lease).

Every replica has its own data directory; B and C start from copies of
A's CA files (etcd.replicas). Each test has its own key prefix."""
import json
import os
import re

from controlplane import CPProxy, READY_PROXY, curl_status, finish_traffic, reted_metric, start_traffic
from etcd import cluster, replicas, route_tag, tagged  # noqa: F401 (cluster: a fixture)
from helpers import build_path, fresh_host, run_tool, start_echo, wait_for
from mesh import service

NS = "ha"


def ha_proxy(rs, tmp_path, name, sa, **kw):
    """A proxy given every replica of rs (its join token and WorkloadGroup
    from the first); started, and SYNCED on whichever replica it picked."""
    p = CPProxy(rs[0], tmp_path, name, NS, sa, **kw)
    i = p.args.index("--control-plane")
    p.args[i + 1] = ",".join(r.xds for r in rs)
    p.start(READY_PROXY)
    wait_for(lambda: home(p, rs), 30, 0.2, f"{name} synced on a replica")
    return p


def home(p, rs):
    """The replica p's config stream is on (SYNCED there), or None."""
    for r in rs:
        if r.proc is None or r.proc.poll() is not None:
            continue
        try:
            e = r.proxy(p.name, NS)
        except OSError:
            continue
        if e and e["status"] == "SYNCED":
            return r
    return None


def mesh(rs, tmp_path):
    """Service echo, its app and sidecar echo-0, a client sidecar client-0:
    both proxies given every replica."""
    host = fresh_host()
    _, addr = start_echo("--quiet", name="echo", host=host)
    port = int(addr.rsplit(":", 1)[1])
    rs[0].apply_ok([service("echo", NS, [(80, "HTTP", port)])])
    server = ha_proxy(rs, tmp_path, "echo-0", "echo", host=host, inbound=[(port, "HTTP")], labels={"app": "echo"})
    client = ha_proxy(rs, tmp_path, "client-0", "client", labels={"app": "client"})
    wait_for(lambda: curl_status(client.outbound, "echo") == 200, 30, 0.3, "echo through client-0")
    return server, client


def test_sigkill_of_a_proxys_replica_under_traffic_rehomes_it_without_a_failed_request(cluster, tmp_path):
    rs = replicas(tmp_path, cluster.endpoints, "/t-kill/", args=("--cert-ttl", "30s"))
    server, client = mesh(rs, tmp_path)
    rs[0].apply_ok([route_tag("tag", "before")])
    wait_for(lambda: tagged(client, "before"), 30, 0.3, "client routes the first HTTPRoute")
    old = home(client, rs)
    traffic = start_traffic(client.outbound, rate=20, duration=25)
    old.kill()
    live = [r for r in rs if r is not old]
    # re-homed within a few seconds (the first retry comes within 0.5 s)
    new = wait_for(lambda: home(client, live), 8, 0.1, "client-0 SYNCED on another replica")
    assert "trying replica" in client.log()
    # what it held was the new replica's snapshot too: resumed, not resent whole
    assert reted_metric(new, "rete_reted_config_resumes_total") >= 1
    # a change through another replica reaches it
    other = next(r for r in live if r is not new)
    other.apply_ok([route_tag("tag", "after-kill")])
    wait_for(lambda: tagged(client, "after-kill"), 30, 0.3, "client routes a change made after the kill")
    # its certificate (30 s) renews through a live replica
    n = client.log().count("renewed certificate")
    wait_for(lambda: client.log().count("renewed certificate") > n, 40, 0.5, "client-0 renews after the kill")
    rc, out = finish_traffic(traffic, timeout=90)
    assert rc == 0 and " err=0 " in out, out


def resources(r):
    """Every resource (kind, ns, name) -> resourceVersion, through replica r."""
    out = {}
    for kind in ("service", "httproute", "workload", "workloadgroup"):
        st, j = r.get(kind, NS)
        assert st == 200, (st, j)
        for it in j["items"]:
            key = (kind, it["metadata"]["name"])
            assert key not in out, f"duplicated {key}"
            out[key] = it["metadata"]["resourceVersion"]
    return out


def test_a_rolling_restart_of_every_replica_under_traffic_fails_no_request_and_loses_nothing(cluster, tmp_path):
    rs = replicas(tmp_path, cluster.endpoints, "/t-roll/")
    server, client = mesh(rs, tmp_path)
    rs[1].apply_ok([route_tag("tag", "before")])
    wait_for(lambda: tagged(client, "before"), 30, 0.3, "client routes the HTTPRoute")
    before = resources(rs[0])
    traffic = start_traffic(client.outbound, rate=20, duration=30)
    for r in rs:
        r.stop()
        r.start()
        # both proxies home on a live replica before the next one goes
        for p in (server, client):
            wait_for(lambda p=p: home(p, rs), 20, 0.2, f"{p.name} SYNCED after {r.api} restarted")
    rc, out = finish_traffic(traffic, timeout=90)
    assert rc == 0 and " err=0 " in out, out
    for r in rs:
        assert resources(r) == before
    rs[2].apply_ok([route_tag("tag", "after")])
    wait_for(lambda: tagged(client, "after"), 30, 0.3, "client routes a change after the restarts")


def retectl(context_dir, *args):
    """retectl run where `context_dir`/.demo/reted/context.json is found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETE_")}
    env["HOME"] = str(context_dir)
    return run_tool([build_path("retectl"), *args], capture_output=True, text=True, env=env, cwd=str(context_dir),
                    timeout=60)


def leader_of(rs):
    """The one live replica whose rete_reted_leader is 1 (None when none is, or more than one)."""
    leading = [r for r in rs if r.proc.poll() is None and reted_metric(r, "rete_reted_leader") == 1]
    return leading[0] if len(leading) == 1 else None


def test_retectl_with_every_replica_in_its_context_fails_over_and_checks_each(cluster, tmp_path):
    rs = replicas(tmp_path, cluster.endpoints, "/t-ctl/")
    ctx = tmp_path / "ctx"
    os.makedirs(ctx / ".demo" / "reted")
    # the list form; the first replica down from the start
    with open(ctx / ".demo" / "reted" / "context.json", "w") as f:
        json.dump({"api": [r.api for r in rs], "tokenFile": os.path.join(rs[0].data, "admin.token")}, f)
    rs[1].apply_ok([service("s1", NS, [(80, "HTTP")])])
    rs[0].kill()
    p = retectl(ctx, "get", "services", "-n", NS)
    assert p.returncode == 0 and "s1" in p.stdout, (p.stdout, p.stderr)
    assert f"reted at {rs[0].api} unreachable" in p.stderr, p.stderr
    wait_for(lambda: leader_of(rs[1:]), 20, 0.3, "a leader among the live replicas")
    p = retectl(ctx, "check")
    assert f"{rs[0].api} unreachable" in p.stdout, p.stdout
    for r in rs[1:]:
        assert re.search(rf"{re.escape(r.api)}: replica \S+, store etcd answering, revision \d+", p.stdout), p.stdout
    assert "2 of 3 replicas answer" in p.stdout, p.stdout
    assert p.stdout.count("the leader") == 1, p.stdout
    # the single-string form still reads, a comma list too
    with open(ctx / ".demo" / "reted" / "context.json", "w") as f:
        json.dump({"api": f"{rs[0].api},{rs[2].api}", "tokenFile": os.path.join(rs[0].data, "admin.token")}, f)
    p = retectl(ctx, "get", "services", "-n", NS)
    assert p.returncode == 0 and "s1" in p.stdout, (p.stdout, p.stderr)


def test_sigkill_of_the_leader_hands_leadership_over_within_the_lease_ttl(cluster, tmp_path):
    rs = replicas(tmp_path, cluster.endpoints, "/t-lead/")
    first = wait_for(lambda: leader_of(rs), 20, 0.2, "one leader")
    ids = {r.api: r.request("GET", "/api/v1/check")[1]["replica"] for r in rs}
    # every replica names the same leader
    assert len({i["leaderId"] for i in ids.values()}) == 1, ids
    assert ids[first.api]["leader"] and ids[first.api]["leaderId"] == ids[first.api]["id"]
    first.kill()
    live = [r for r in rs if r is not first]
    # the lease is 10 s; renewals every 2 s: another leads within 10 s + 2 s + a margin
    second = wait_for(lambda: leader_of(live), 16, 0.2, "another replica leads")
    assert second.request("GET", "/api/v1/check")[1]["replica"]["leaderId"] != ids[first.api]["id"]
    assert "this replica leads" in second.log()
    # a clean stop resigns: the last one leads at once (well within the TTL)
    second.stop()
    third = next(r for r in live if r is not second)
    wait_for(lambda: leader_of([third]), 6, 0.2, "the last replica leads after a clean stop")
