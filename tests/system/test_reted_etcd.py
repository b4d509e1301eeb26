"""reted replicas sharing a real 3-member etcd cluster (issue 14, first
slice): the store backend, every replica following every change through
etcd's watch, conflicts and join tokens decided by etcd transactions.

Every replica has its own data directory; the CA is the same on all of
them because replicas B and C start from copies of A's CA files (reted
without --ca-kek; the CA shared through etcd under a key-encryption key is
test_reted_ca_shared.py's). Each test has its own key prefix."""
import concurrent.futures

from controlplane import curl_status, issue_identity, reted_metric, start_cp_proxy
from etcd import EtcdCluster, cluster, replicas, route_tag, tagged  # noqa: F401 (cluster: a fixture)
from helpers import fresh_host, start_echo, wait_for
from mesh import service

NS = "ha"


def echo_on(a, tmp_path):
    """Service echo through replica a, its app and sidecar echo-0 on a."""
    host = fresh_host()
    _, addr = start_echo("--quiet", name="echo", host=host)
    port = int(addr.rsplit(":", 1)[1])
    a.apply_ok([service("echo", NS, [(80, "HTTP", port)])])
    return start_cp_proxy(a, tmp_path, "echo-0", NS, "echo", host=host, inbound=[(port, "HTTP")],
                          labels={"app": "echo"})


def test_a_route_applied_through_a_reaches_proxies_on_b_and_c(cluster, tmp_path):
    a, b, c = replicas(tmp_path, cluster.endpoints, "/t-route/")
    echo_on(a, tmp_path)
    # clients on B and C: their join tokens, WorkloadGroups and registrations
    # go through B and C; echo-0's Workload (written by A) reaches them by the watch
    cb = start_cp_proxy(b, tmp_path, "client-b", NS, "client", labels={"app": "client-b"})
    cc = start_cp_proxy(c, tmp_path, "client-c", NS, "client", labels={"app": "client-c"})
    for p in (cb, cc):
        wait_for(lambda p=p: curl_status(p.outbound, "echo") == 200, 30, 0.3, f"echo through {p.name}")
    a.apply_ok([route_tag("tag", "via-a")])
    for p in (cb, cc):
        wait_for(lambda p=p: tagged(p, "via-a"), 30, 0.3, f"{p.name} routes the new HTTPRoute")
    # a change through C reaches B's proxy too
    c.apply_ok([route_tag("tag", "via-c")])
    wait_for(lambda: tagged(cb, "via-c"), 30, 0.3, "client-b routes C's change")
    # every replica reads the same resource at the same version (etcd's mod_revision)
    versions = {r.get("httproute", NS, "tag")[1]["metadata"]["resourceVersion"] for r in (a, b, c)}
    assert len(versions) == 1, versions
    # B and C learnt of the changes from the watch; A's own came back and were skipped
    assert reted_metric(b, "rete_reted_store_watch_changes_total", 'origin="remote"') >= 2
    assert reted_metric(a, "rete_reted_store_watch_changes_total", 'origin="own"') >= 1
    assert all(k.startswith("/t-route/") for k in cluster.keys("/t-route/"))


def svc(name, port, rv=None):
    d = service(name, NS, [(port, "HTTP")])
    if rv is not None:
        d["metadata"]["resourceVersion"] = rv
    return d


def test_conflicting_writes_on_two_replicas_one_gets_409(cluster, tmp_path):
    a, b = replicas(tmp_path, cluster.endpoints, "/t-conflict/", n=2)
    v = a.apply_ok([svc("oc", 80)])["results"][0]["resourceVersion"]
    assert b.get("service", NS, "oc")[1]["metadata"]["resourceVersion"] == v
    # the same expected version, one after the other on two replicas
    assert a.apply([svc("oc", 81, v)])[0] == 200
    st, body = b.apply([svc("oc", 82, v)])
    assert st == 409 and "resourceVersion" in body["error"], body
    # at the same time: exactly one wins, every round
    pool = concurrent.futures.ThreadPoolExecutor(2)
    for i in range(5):
        v = a.get("service", NS, "oc")[1]["metadata"]["resourceVersion"]
        futs = [pool.submit(r.apply, [svc("oc", 90 + 2 * i + k, v)]) for k, r in enumerate((a, b))]
        codes = sorted(f.result()[0] for f in futs)
        assert codes == [200, 409], codes
    pool.shutdown()


def test_a_join_token_used_concurrently_on_two_replicas_works_once(cluster, tmp_path):
    a, b, c = replicas(tmp_path, cluster.endpoints, "/t-token/")
    pool = concurrent.futures.ThreadPoolExecutor(2)
    for i in range(4):
        token = a.token(NS, "web", uses=1)
        futs = [pool.submit(issue_identity, r, tmp_path, f"id{i}-{r.api_port}", token) for r in (b, c)]
        codes = sorted(f.result()[0] for f in futs)
        assert codes == [200, 403], codes
    # a two-use token: twice, on different replicas, then never again
    token = a.token(NS, "web", uses=2)
    assert issue_identity(b, tmp_path, "two-1", token)[0] == 200
    assert issue_identity(c, tmp_path, "two-2", token)[0] == 200
    assert issue_identity(a, tmp_path, "two-3", token)[0] == 403
    pool.shutdown()


def test_a_restarted_replica_relists_and_its_proxy_gets_what_changed_meanwhile(cluster, tmp_path):
    a, b = replicas(tmp_path, cluster.endpoints, "/t-restart/", n=2)
    echo_on(a, tmp_path)
    cb = start_cp_proxy(b, tmp_path, "client-b", NS, "client", labels={"app": "client-b"})
    wait_for(lambda: curl_status(cb.outbound, "echo") == 200, 30, 0.3, "echo through client-b")
    b.stop()
    a.apply_ok([route_tag("tag", "while-b-was-down")])
    b.start()
    wait_for(lambda: tagged(cb, "while-b-was-down"), 40, 0.3, "client-b routes the change made while B was down")
    # and B follows changes again after its restart
    a.apply_ok([route_tag("tag", "after")])
    wait_for(lambda: tagged(cb, "after"), 30, 0.3, "client-b routes a change after B's restart")


def test_etcd_unreachable_answers_503_and_recovers(tmp_path):
    one = EtcdCluster(tmp_path / "etcd1", n=1).start()
    try:
        (a,) = replicas(tmp_path, one.endpoints, "/t-down/", n=1)
        a.apply_ok([svc("s", 80)])
        one.stop()
        st, body = a.apply([svc("s", 81)])
        assert st == 503 and "etcd store is unavailable" in body["error"], (st, body)
        assert a.get("service", NS, "s")[0] == 503
        one.start_member(0, state="existing")
        wait_for(lambda: one.healthy(0), 30, 0.2, "etcd back")
        wait_for(lambda: a.apply([svc("s", 82)])[0] == 200, 30, 0.3, "applies work again")
    finally:
        one.stop()


def test_compaction_while_a_replica_cannot_watch_relists_and_misses_nothing(tmp_path):
    own = EtcdCluster(tmp_path / "etcd3").start()
    try:
        # replica B talks to member m2 only; A to m0 and m1
        a, b = replicas(tmp_path, None, "/t-compact/", n=2,
                        per_replica_endpoints=[f"{own.endpoint(0)},{own.endpoint(1)}", own.endpoint(2)])
        echo_on(a, tmp_path)
        cb = start_cp_proxy(b, tmp_path, "client-b", NS, "client", labels={"app": "client-b"})
        wait_for(lambda: curl_status(cb.outbound, "echo") == 200, 30, 0.3, "echo through client-b")
        own.stop_member(2)  # B's member is down: quorum holds (2 of 3), B's watch cannot follow
        for i in range(3):
            a.apply_ok([route_tag("tag", f"v{i}")])
        own.compact(own.revision(0), 0)  # the history B would resume from is gone
        own.start_member(2, state="existing")
        wait_for(lambda: reted_metric(b, "rete_reted_store_relists_total") >= 1, 40, 0.3, "B relists")
        wait_for(lambda: tagged(cb, "v2"), 30, 0.3, "client-b has the last change")
    finally:
        own.stop()


def test_an_apply_over_etcds_transaction_limit_is_refused_whole(cluster, tmp_path):
    (a,) = replicas(tmp_path, cluster.endpoints, "/t-limit/", n=1)
    st, body = a.apply([svc(f"s{i}", 80) for i in range(129)])
    assert st == 413 and "128" in body["error"] and "smaller parts" in body["error"], (st, body)
    assert a.get("service", NS)[1]["items"] == []
    assert cluster.keys("/t-limit/resources/") == []  # (the leader key lives beside them)
    # 128 is one transaction: all written, one revision
    res = a.apply_ok([svc(f"s{i}", 80) for i in range(128)])["results"]
    assert len({r["resourceVersion"] for r in res}) == 1
    assert len(cluster.keys("/t-limit/resources/")) == 128
