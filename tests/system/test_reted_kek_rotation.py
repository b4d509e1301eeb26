"""Rotating the key-encryption key of the CA shared through etcd (issue 14),
on a real 3-member etcd cluster with 3 reted replicas and proxies under
traffic, as docs/operations.md ("Rotating the KEK") tells an operator:

1. restart the replicas one by one with --ca-kek NEW --ca-kek-previous OLD
   (the record stays sealed with OLD, even when a replica that already has
   NEW publishes a CA rotation step: a replica still on OLD alone reads it);
2. `reted rekey --ca-kek NEW --ca-kek-previous OLD`: one compare-and-put;
   every replica loads it (rete_reted_ca_kek{use="write"} becomes 1);
3. restart them one by one with --ca-kek NEW alone; remove OLD's file.

Meanwhile no request fails and the proxies keep renewing their
certificates. A replica holding only a key the record is not sealed with
refuses to start, naming the id it needs."""
import json
import os

import pytest

from controlplane import Reted, finish_traffic, reted_metric, start_traffic
from etcd import cluster, kek_file, replicas, values  # noqa: F401 (cluster: a fixture)
from helpers import wait_for
from test_reted_ca_shared import reted_run, roots, verifies
from test_reted_ha import home, mesh

PREFIX = "/t-rekey/"


def record(cluster):
    return json.loads(dict(values(cluster, PREFIX))[PREFIX + "meta/ca"])


def sealed_with(rec):
    """The KEK ids of the record and of every sealed value in it."""
    return {rec["kekId"]} | {f["sealed"]["kekId"] for f in rec["files"].values() if "sealed" in f}


def kek_gauge(r, kek, use):
    return reted_metric(r, "rete_reted_ca_kek", f'kek="{kek}",use="{use}"')


def restart_with(r, rs, proxies, *kek_args):
    """Restart replica r with these --ca-kek flags instead of its own; every
    proxy SYNCED on a live replica before the next one goes."""
    a = r.args
    keep = [x for i, x in enumerate(a) if not x.startswith("--ca-kek") and
            not (i and a[i - 1].startswith("--ca-kek"))]
    r.args = keep + list(kek_args)
    r.stop()
    r.start()
    for p in proxies:
        wait_for(lambda p=p: home(p, rs), 20, 0.2, f"{p.name} SYNCED after {r.api} restarted")


def renewals(p):
    return sum(log.count("renewed certificate") for log in (*p.logs, p.log()))


def test_kek_rotation_under_running_replicas_and_traffic(cluster, tmp_path):
    old = kek_file(tmp_path, "kek-old")
    old_bytes = open(old, "rb").read()
    new = kek_file(tmp_path, "kek-new")
    rs = replicas(tmp_path, cluster.endpoints, PREFIX, args=("--cert-ttl", "30s"), kek=old)
    old_id = record(cluster)["kekId"]
    assert all(kek_gauge(r, old_id, "write") == 1 for r in rs)
    admin = rs[0].admin_token
    server, client = mesh(rs, tmp_path)
    traffic = start_traffic(client.outbound, rate=10, duration=60)
    renewed_at_start = renewals(client)

    # a replica given NEW alone refuses to start while the record is under OLD
    lone = Reted(os.path.join(str(tmp_path), "lone"), "--store", f"etcd://{cluster.endpoints}",
                 "--etcd-prefix", PREFIX, "--ca-kek", new)
    with pytest.raises(RuntimeError) as e:
        lone.start()
    assert f"sealed with the key-encryption key {old_id}" in str(e.value), e.value
    assert f"KEK file of id {old_id}" in str(e.value)

    # 1. NEW for writing, OLD for reading, one replica after the other
    restart_with(rs[0], rs, (server, client), "--ca-kek", new, "--ca-kek-previous", old)
    new_id = next(line.split('kek="')[1].split('"')[0] for line in rs[0].request("GET", "/metrics", auth=False)[1]
                  .splitlines() if line.startswith('rete_reted_ca_kek{') and 'use="write"' in line)
    assert new_id != old_id
    assert kek_gauge(rs[0], new_id, "write") == 0 and kek_gauge(rs[0], old_id, "read") == 1
    assert "run `reted rekey` once every replica holds " + new_id in rs[0].log()
    # a CA rotation step through it while rs[2] holds OLD alone: sealed with
    # OLD still, and rs[2] loads it
    st, body = rs[0].request("POST", "/api/v1/ca/rotate", {"phase": "begin"})
    assert st == 200, body
    assert sealed_with(record(cluster)) == {old_id}
    wait_for(lambda: roots(rs[2].bundle) == 2, 20, 0.2, "the replica on OLD alone has the new root")
    restart_with(rs[1], rs, (server, client), "--ca-kek", new, "--ca-kek-previous", old)
    restart_with(rs[2], rs, (server, client), "--ca-kek", new, "--ca-kek-previous", old)
    assert all(kek_gauge(r, new_id, "write") == 0 for r in rs)

    # 2. the re-seal: one compare-and-put, loaded by every running replica
    rev = cluster.revision()
    r = reted_run("rekey", "--store", f"etcd://{cluster.endpoints}", "--etcd-prefix", PREFIX,
                  "--ca-kek", new, "--ca-kek-previous", old)
    assert r.returncode == 0, r.stderr
    assert f"re-sealed the CA record from KEK {old_id} to KEK {new_id}" in r.stdout, r.stdout
    rec = record(cluster)
    assert sealed_with(rec) == {new_id}
    assert cluster.revision() == rev + 1
    for x in rs:
        wait_for(lambda x=x: kek_gauge(x, new_id, "write") == 1, 20, 0.2, f"{x.api} loaded the re-sealed record")
        assert kek_gauge(x, old_id, "read") == 0
        assert "the shared CA record changed its KEK" in x.log()
    r = reted_run("rekey", "--store", f"etcd://{cluster.endpoints}", "--etcd-prefix", PREFIX, "--ca-kek", new)
    assert r.returncode == 0 and "already: nothing to do" in r.stdout, (r.stdout, r.stderr)
    assert cluster.revision() == rev + 1

    # 3. OLD gone: its file removed, every replica restarted with NEW alone
    os.unlink(old)
    for x in rs:
        restart_with(x, rs, (server, client), "--ca-kek", new)
        assert x.admin_token == admin
        assert kek_gauge(x, new_id, "write") == 1
    # the proxies kept renewing, and still do, with certificates every
    # replica's bundle verifies
    n = renewals(client)
    assert n > renewed_at_start
    wait_for(lambda: renewals(client) > n, 40, 0.5, "client-0 renews after the rotation")
    for x in rs:
        assert verifies(client.cert_path, x.bundle)
    rc, out = finish_traffic(traffic, timeout=90)
    assert rc == 0 and " err=0 " in out, out

    # a replica with OLD alone now refuses, naming NEW's id; nothing written
    again = kek_file(tmp_path, "kek-old-again", old_bytes)
    d = os.path.join(str(tmp_path), "on-old")
    late = Reted(d, "--store", f"etcd://{cluster.endpoints}", "--etcd-prefix", PREFIX, "--ca-kek", again)
    with pytest.raises(RuntimeError) as e:
        late.start()
    assert f"KEK file of id {new_id}" in str(e.value), e.value
    assert not os.path.exists(os.path.join(d, "ca", "root-key.pem"))
    # the record never held a key in clear
    for k, v in values(cluster, PREFIX):
        assert b"PRIVATE KEY" not in v and admin.encode() not in v, k


def test_kek_flags_are_checked(cluster, tmp_path):
    k = kek_file(tmp_path, "k")
    store = ("--store", f"etcd://{cluster.endpoints}", "--etcd-prefix", "/t-rekey-flags/")
    d = ("--data-dir", os.path.join(str(tmp_path), "d"))
    r = reted_run(*d, *store, "--ca-kek-previous", k)
    assert r.returncode == 2 and "--ca-kek-previous needs --ca-kek" in r.stderr, r.stderr
    r = reted_run(*d, *store, "--ca-kek", k, "--ca-kek-previous", k)
    assert r.returncode == 1 and "is given already" in r.stderr, r.stderr
    many = [a for i in range(5) for a in ("--ca-kek-previous", kek_file(tmp_path, f"p{i}"))]
    r = reted_run(*d, *store, "--ca-kek", k, *many)
    assert r.returncode == 2 and "at most 4 --ca-kek-previous" in r.stderr, r.stderr
    # rekey on a prefix with no CA record, and on SQLite
    r = reted_run("rekey", *store, "--ca-kek", k)
    assert r.returncode == 1 and "no shared CA record" in r.stderr, r.stderr
    r = reted_run("rekey", "--store", "sqlite:" + os.path.join(str(tmp_path), "s.db"), "--ca-kek", k)
    assert r.returncode == 2 and "on etcd" in r.stderr, r.stderr
