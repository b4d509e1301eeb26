"""etcd's own backup of reted's data (issue 14): `etcdctl snapshot save` from
a running 3-member cluster with reted replicas on it (resources, a join
token, the CA sealed with a KEK, a proxy connected), `etcdctl snapshot
restore` into a NEW 3-member cluster (new data directories, new loopback
addresses, a new cluster token), a reted started there with the same KEK
and an empty data directory: every resource with its resourceVersion, the
token, the admin token and the CA are there, the proxy's certificate
verifies against the restored CA, a new proxy joins with the token made
before the snapshot, the restored replica leads once the old replicas'
leases expire, and the proxy moved to it (holding a config newer than the
snapshot) is brought to the restored store and follows it. Debian's etcd 3.4 ships etcdctl (save, restore,
status), no etcdutl. The commands are those of docs/operations.md
("etcd snapshots")."""
import json
import os
import subprocess

from controlplane import CPProxy, READY_PROXY, Reted, issue_identity, reted_metric
from etcd import ETCDCTL, EtcdCluster, cluster, kek_file, replicas  # noqa: F401 (cluster: a fixture)
from helpers import wait_for
from mesh import service
from test_reted_ca_shared import verifies

NS = "ha"
PREFIX = "/t-snap/"


def etcdctl(*args):
    r = subprocess.run([ETCDCTL, *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "ETCDCTL_API": "3"})
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def everything(r):
    """(kind, name) -> resourceVersion of the kinds the test makes, through r."""
    out = {}
    for kind in ("service", "workloadgroup"):
        st, j = r.get(kind, NS)
        assert st == 200, (st, j)
        for it in j["items"]:
            out[(kind, it["metadata"]["name"])] = it["metadata"]["resourceVersion"]
    return out


def test_snapshot_save_and_restore_into_a_new_cluster(cluster, tmp_path):
    kek = kek_file(tmp_path)
    rs = replicas(tmp_path, cluster.endpoints, PREFIX, kek=kek)
    rs[0].apply_ok([service(f"s{i}", NS, [(80 + i, "HTTP")]) for i in range(40)])
    token = rs[1].token(NS, "late", uses=2)
    client = CPProxy(rs[2], tmp_path, "client-0", NS, "client", labels={"app": "client"}).start(READY_PROXY)
    rs[2].wait_synced("client-0", NS)
    before = everything(rs[0])
    assert len(before) >= 41
    # the history before now is compacted: a snapshot holds the keys, not it
    cluster.compact(cluster.revision())

    snap = os.path.join(str(tmp_path), "etcd.snapshot")
    etcdctl("--endpoints", cluster.endpoint(1), "snapshot", "save", snap)
    status = json.loads(etcdctl("snapshot", "status", snap, "-w", "json"))
    # a change after the snapshot is not in the restore
    rs[0].apply_ok([service("after", NS, [(80, "HTTP")])])

    new = EtcdCluster(tmp_path / "restored")
    for m in new.members:
        etcdctl("snapshot", "restore", snap, "--name", m["name"],
                "--data-dir", os.path.join(new.tmp, f"etcd-{m['name']}"),
                "--initial-cluster", new.initial, "--initial-cluster-token", new.token,
                "--initial-advertise-peer-urls", f"http://{m['host']}:{m['peer']}")
    try:
        new.start()
        # the revision comes along: resourceVersions stay what proxies hold
        assert new.revision() == status["revision"], (new.revision(), status)
        d = os.path.join(str(tmp_path), "restored-reted")
        rr = Reted(d, "--store", f"etcd://{new.endpoints}", "--etcd-prefix", PREFIX, "--ca-kek", kek).start()
        try:
            assert rr.admin_token == rs[0].admin_token
            for f in ("root.pem", "bundle.pem"):
                assert open(os.path.join(d, "ca", f)).read() == open(os.path.join(rs[0].data, "ca", f)).read()
            assert everything(rr) == before
            st, _ = rr.get("service", NS, "after")
            assert st == 404
            # the proxy's certificate verifies against the restored CA
            assert verifies(client.cert_path, rr.bundle)
            # the token made before the snapshot: a new proxy joins the
            # restored replica with it
            late = CPProxy(rr, tmp_path, "late-0", NS, "late", token=token).start(READY_PROXY)
            rr.wait_synced("late-0", NS)
            assert verifies(late.cert_path, rs[0].bundle)
            late.stop()
            st, body, _, _ = issue_identity(rr, tmp_path, "late-1", token)
            assert st == 200, body
            st, body, _, _ = issue_identity(rr, tmp_path, "late-2", token)
            assert st != 200, body  # two uses: spent
            # the old replicas' leases (the leader key) expire: the restored
            # replica leads within the lease TTL (10 s) and a margin
            wait_for(lambda: reted_metric(rr, "rete_reted_leader") == 1, 30, 0.5, "the restored replica leads")
            # the proxy moved to the restored replica holds a config newer
            # than the snapshot (service "after"): it gets the restored
            # store's whole snapshot, then every later change
            held = rs[2].proxy("client-0", NS)["ackedVersion"]
            assert held > status["revision"]
            client.stop()
            client.args[client.args.index("--control-plane") + 1] = rr.xds
            client.start(READY_PROXY)
            rr.wait_synced("client-0", NS)
            rr.apply_ok([service("post-restore", NS, [(80, "HTTP")])])
            rev = rr.revision()
            wait_for(lambda: (rr.proxy("client-0", NS) or {}).get("ackedVersion", 0) >= rev and
                     rr.proxy("client-0", NS)["status"] == "SYNCED", 30, 0.2, "client-0 takes a change after the restore")
        finally:
            rr.stop()
    finally:
        new.stop()
    client.stop()
