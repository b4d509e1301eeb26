"""reted replicas when etcd itself fails (issue 14): one member of three down
changes nothing (applies, pushes, certificates for new proxies); quorum lost
(two of three down) makes applies answer 503 naming the store while proxies
keep serving what they hold, and once etcd is back a change reaches every
proxy again. Each test starts its own 3-member cluster (they stop members).

Traffic is steady and bounded (rete-client, --expect-status 200): exit 0
means not one request failed."""
from controlplane import finish_traffic, start_cp_proxy, start_traffic
from etcd import EtcdCluster, replicas, route_tag, tagged
from helpers import wait_for
from test_reted_ha import NS, home, mesh


def test_one_etcd_member_down_changes_nothing(tmp_path):
    etcd = EtcdCluster(tmp_path / "etcd").start()
    try:
        rs = replicas(tmp_path, etcd.endpoints, "/t-one/")
        server, client = mesh(rs, tmp_path)
        traffic = start_traffic(client.outbound, rate=20, duration=25)
        etcd.stop_member(0)  # the first member every replica dials
        # applies through every replica, pushed to both proxies
        for i, r in enumerate(rs):
            r.apply_ok([route_tag("tag", f"one-down-{i}")])
            for p in (server, client):
                wait_for(lambda p=p, i=i: tagged(p, f"one-down-{i}"), 30, 0.3, f"{p.name} routes change {i}")
        # a new proxy: join token, certificate, registration, config
        late = start_cp_proxy(rs[1], tmp_path, "late-0", NS, "client", labels={"app": "late"})
        wait_for(lambda: tagged(late, "one-down-2"), 30, 0.3, "late-0 routes through the mesh")
        rc, out = finish_traffic(traffic, timeout=90)
        assert rc == 0 and " err=0 " in out, out
    finally:
        etcd.stop()


def test_etcd_quorum_lost_refuses_applies_keeps_proxies_serving_and_converges_after(tmp_path):
    etcd = EtcdCluster(tmp_path / "etcd").start()
    try:
        rs = replicas(tmp_path, etcd.endpoints, "/t-quorum/")
        server, client = mesh(rs, tmp_path)
        rs[0].apply_ok([route_tag("tag", "before")])
        wait_for(lambda: tagged(client, "before"), 30, 0.3, "client routes the first HTTPRoute")
        traffic = start_traffic(client.outbound, rate=20, duration=40)
        etcd.stop_member(1)
        etcd.stop_member(2)
        # no quorum: an apply answers 503 naming the store, on every replica
        for r in rs:
            st, body = r.apply([route_tag("tag", "during")])
            assert st == 503, (st, body)
            assert "the etcd store is unavailable" in body["error"], body
        # the proxies serve what they hold
        assert tagged(client, "before")
        # etcd back: a change applied now reaches every proxy
        etcd.start_member(1)
        etcd.start_member(2)
        for i in range(3):
            wait_for(lambda i=i: etcd.healthy(i), 30, 0.2, f"etcd member {i} back")
        wait_for(lambda: rs[1].apply([route_tag("tag", "after")])[0] == 200, 30, 0.5, "an apply succeeds again")
        for p in (server, client):
            wait_for(lambda p=p: tagged(p, "after"), 30, 0.3, f"{p.name} routes the change made after recovery")
            assert home(p, rs) is not None
        for r in rs:
            assert r.get("httproute", NS, "tag")[0] == 200
        rc, out = finish_traffic(traffic, timeout=90)
        assert rc == 0 and " err=0 " in out, out
    finally:
        etcd.stop()
