"""The CA shared through etcd under a key-encryption key (issue 14, third
slice): replicas started with the same --ca-kek file and no copied CA
files share one CA; etcd never holds a private key or the admin token in
clear; a rotation through any replica reaches every replica; a replica with
another KEK refuses to start. Also `reted migrate` between SQLite and etcd
and backup/restore of both stores. Each test has its own key prefix."""
import json
import os
import shutil
import sqlite3
import subprocess

import pytest

from controlplane import CPProxy, READY_PROXY, Reted, issue_identity, openssl, reted_metric
from etcd import cluster, kek_file, replicas, values  # noqa: F401 (cluster: a fixture)
from helpers import build_path, wait_for
from mesh import service

NS = "ha"


def verifies(cert, bundle):
    r = openssl("verify", "-CAfile", bundle, cert)
    return r.returncode == 0 and ": OK" in r.stdout


def roots(bundle):
    with open(bundle) as f:
        return f.read().count("BEGIN CERTIFICATE")


def no_secret_in_etcd(cluster, prefix, admin_token):
    vals = values(cluster, prefix)
    assert any(k == prefix + "meta/ca" for k, _ in vals), [k for k, _ in vals]
    for k, v in vals:
        assert b"PRIVATE KEY" not in v, k
        assert admin_token.encode() not in v, k
    rec = json.loads(dict(vals)[prefix + "meta/ca"])
    sealed = {n for n, f in rec["files"].items() if "sealed" in f}
    assert {"ca/root-key.pem", "admin.token"} <= sealed, sealed
    return rec


def reted_run(*args, timeout=60):
    return subprocess.run([build_path("reted"), *args], capture_output=True, text=True, timeout=timeout)


def test_replicas_share_the_ca_through_etcd_sealed_with_the_kek(cluster, tmp_path):
    kek = kek_file(tmp_path)
    rs = replicas(tmp_path, cluster.endpoints, "/t-kek/", kek=kek)
    # no file was copied: B and C hold A's CA and admin token from etcd
    assert all(r.admin_token == rs[0].admin_token for r in rs)
    rec = no_secret_in_etcd(cluster, "/t-kek/", rs[0].admin_token)
    assert rec["format"] == 1 and rec["kekId"] and rec["trustDomain"]
    # a certificate from each replica verifies with every other's bundle
    certs = []
    for i, r in enumerate(rs):
        st, body, cert, _ = issue_identity(r, tmp_path, f"w{i}", r.token(NS, f"sa{i}"))
        assert st == 200, body
        certs.append(cert)
    for cert in certs:
        for r in rs:
            assert verifies(cert, r.bundle), (cert, r.data)

    # a rotation through B reaches A and C (their bundles hold both roots)
    st, body = rs[1].request("POST", "/api/v1/ca/rotate", {"phase": "begin"})
    assert st == 200, body
    for r in (rs[0], rs[2]):
        wait_for(lambda r=r: roots(r.bundle) == 2, 20, 0.2, f"{r.data} has the new root")
        assert reted_metric(r, "rete_reted_ca_reloads_total") >= 1
    # new certificates from A and C chain to the new root, verify on B
    for i in (0, 2):
        st, body, cert, _ = issue_identity(rs[i], tmp_path, f"n{i}", rs[i].token(NS, f"n{i}"))
        assert st == 200, body
        assert verifies(cert, rs[1].bundle)
    new_bundle = open(rs[1].bundle).read()
    st, body = rs[2].request("POST", "/api/v1/ca/rotate", {"phase": "finish"})
    assert st == 200, body
    for r in (rs[0], rs[1]):
        wait_for(lambda r=r: roots(r.bundle) == 1, 20, 0.2, f"{r.data} dropped the old root")
    # the old root is gone everywhere, the new one stays: a certificate of the
    # old root no longer verifies, one of the new root does
    assert not verifies(certs[0], rs[0].bundle)
    assert open(rs[0].bundle).read().split("-----END CERTIFICATE-----")[0] in new_bundle
    rec = no_secret_in_etcd(cluster, "/t-kek/", rs[0].admin_token)

    # a replica with another KEK refuses to start, changing nothing
    other = kek_file(tmp_path, "other-kek", b"a passphrase that is long enough\n")
    d = os.path.join(str(tmp_path), "reted-wrong")
    r = Reted(d, "--store", f"etcd://{cluster.endpoints}", "--etcd-prefix", "/t-kek/", "--ca-kek", other)
    with pytest.raises(RuntimeError) as e:
        r.start()
    assert "key-encryption key" in str(e.value) and f"KEK file of id {rec['kekId']}" in str(e.value)
    assert not os.path.exists(os.path.join(d, "ca", "root-key.pem"))


def test_kek_file_checks(cluster, tmp_path):
    d = os.path.join(str(tmp_path), "r")
    short = kek_file(tmp_path, "short", b"too short\n")
    r = reted_run("--data-dir", d, "--store", f"etcd://{cluster.endpoints}", "--etcd-prefix", "/t-kekf/",
                  "--ca-kek", short)
    assert r.returncode == 1 and "passphrase of at least 16" in r.stderr, r.stderr
    loose = kek_file(tmp_path, "loose")
    os.chmod(loose, 0o644)
    r = reted_run("--data-dir", d, "--store", f"etcd://{cluster.endpoints}", "--ca-kek", loose)
    assert r.returncode == 1 and "chmod 600" in r.stderr, r.stderr
    r = reted_run("--data-dir", d, "--ca-kek", kek_file(tmp_path, "k2"))
    assert r.returncode == 2 and "needs --store etcd://" in r.stderr, r.stderr


def populated_sqlite(tmp_path):
    """A SQLite reted with resources and a join token, stopped. Returns
    (data dir, token, {(kind, ns, name): resource JSON})."""
    d = os.path.join(str(tmp_path), "single")
    a = Reted(d).start()
    a.apply_ok([service(f"svc{i}", NS, [(80 + i, "HTTP")]) for i in range(150)])
    token = a.token(NS, "client", uses=5)
    a.stop()
    db = sqlite3.connect(os.path.join(d, "store.db"))
    rows = {(k, n, m): j for k, n, m, j in db.execute("SELECT kind, ns, name, json FROM resources")}
    db.close()
    return d, token, rows


def etcd_resources(cluster, prefix):
    out = {}
    for k, v in values(cluster, prefix + "resources/"):
        kind, ns, name = k[len(prefix + "resources/"):].split("/")
        out[(kind, ns, name)] = v.split(b',"resource":', 1)[1][:-1].decode()  # the text, verbatim
    return out


def test_migrate_sqlite_to_etcd_then_a_proxy_joins_with_the_migrated_token(cluster, tmp_path):
    d, token, rows = populated_sqlite(tmp_path)
    assert len(rows) >= 150
    kek = kek_file(tmp_path)
    store = f"etcd://{cluster.endpoints}"
    r = reted_run("migrate", "--from", "sqlite:" + os.path.join(d, "store.db"), "--to", store,
                  "--etcd-prefix", "/t-mig/", "--data-dir", d, "--ca-kek", kek)
    assert r.returncode == 0, r.stderr
    assert f"wrote {len(rows)} resources, 1 join tokens and the CA" in r.stdout
    # every resource, byte for byte
    assert etcd_resources(cluster, "/t-mig/") == rows
    # into a store that is not empty: refused, nothing written twice
    r = reted_run("migrate", "--from", "sqlite:" + os.path.join(d, "store.db"), "--to", store,
                  "--etcd-prefix", "/t-mig/", "--data-dir", d, "--ca-kek", kek)
    assert r.returncode == 1 and "is not empty" in r.stderr, r.stderr

    rs = replicas(tmp_path, cluster.endpoints, "/t-mig/", kek=kek)
    old_admin = open(os.path.join(d, "admin.token")).read().strip()
    assert all(x.admin_token == old_admin for x in rs)
    # the migrated token on a replica: a certificate chaining to the migrated CA
    p = CPProxy(rs[1], tmp_path, "client-0", NS, "client", token=token)
    p.start(READY_PROXY)
    rs[1].wait_synced("client-0", NS)
    assert verifies(p.cert_path, os.path.join(d, "ca", "bundle.pem"))
    p.stop()

    # and back: etcd -> a new SQLite store and data directory
    back = os.path.join(str(tmp_path), "back")
    os.makedirs(back)
    r = reted_run("migrate", "--from", store, "--etcd-prefix", "/t-mig/", "--to",
                  "sqlite:" + os.path.join(back, "store.db"), "--data-dir", back, "--ca-kek", kek)
    assert r.returncode == 0, r.stderr
    b = Reted(back).start()
    st, got = b.get("service", NS, "svc7")
    assert st == 200 and got["spec"]["ports"][0]["port"] == 87, got
    assert b.admin_token == old_admin
    assert open(os.path.join(back, "ca", "root.pem")).read() == open(os.path.join(d, "ca", "root.pem")).read()
    b.stop()


def test_backup_wipe_restore_etcd_and_sqlite(cluster, tmp_path):
    # etcd: a logical dump of the prefix (sealed CA included)
    kek = kek_file(tmp_path)
    rs = replicas(tmp_path, cluster.endpoints, "/t-bak/", n=1, kek=kek)
    rs[0].apply_ok([service(f"b{i}", NS, [(80, "HTTP")]) for i in range(20)])
    tok = rs[0].token(NS, "client")
    rs[0].stop()
    store = f"etcd://{cluster.endpoints}"
    before = dict(values(cluster, "/t-bak/"))
    out = os.path.join(str(tmp_path), "etcd.dump")
    r = reted_run("backup", "--store", store, "--etcd-prefix", "/t-bak/", "--out", out)
    assert r.returncode == 0, r.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in open(out, "rb").read()
    subprocess.run(["etcdctl", "--endpoints", cluster.endpoint(0), "del", "--prefix", "/t-bak/"], check=True,
                   capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})
    assert values(cluster, "/t-bak/") == []
    r = reted_run("restore", "--store", store, "--etcd-prefix", "/t-bak/", "--from", out)
    assert r.returncode == 0, r.stderr
    after = dict(values(cluster, "/t-bak/"))
    assert after.keys() == before.keys()
    assert after["/t-bak/meta/ca"] == before["/t-bak/meta/ca"]
    for k in before:
        if "/resources/" in k:
            assert after[k].split(b',"resource":')[1] == before[k].split(b',"resource":')[1], k
    # a fresh replica on the restored prefix: the same admin token, the token works
    fresh = Reted(os.path.join(str(tmp_path), "fresh"), "--store", store, "--etcd-prefix", "/t-bak/",
                  "--ca-kek", kek).start()
    assert fresh.admin_token == rs[0].admin_token
    st, body, _, _ = issue_identity(fresh, tmp_path, "restored", tok)
    assert st == 200, body
    fresh.stop()

    # SQLite: the online backup API, while reted runs
    d, _, rows = populated_sqlite(tmp_path)
    a = Reted(d).start()
    bak = os.path.join(str(tmp_path), "store.bak")
    r = reted_run("backup", "--store", "sqlite:" + os.path.join(d, "store.db"), "--out", bak)
    assert r.returncode == 0, r.stderr
    a.stop()
    os.unlink(os.path.join(d, "store.db"))
    for suffix in ("-wal", "-shm"):
        if os.path.exists(os.path.join(d, "store.db" + suffix)):
            os.unlink(os.path.join(d, "store.db" + suffix))
    r = reted_run("restore", "--store", "sqlite:" + os.path.join(d, "store.db"), "--from", bak)
    assert r.returncode == 0, r.stderr
    # into an existing file: refused
    r = reted_run("restore", "--store", "sqlite:" + os.path.join(d, "store.db"), "--from", bak)
    assert r.returncode == 1 and "new path" in r.stderr, r.stderr
    a.start()
    for (kind, ns, name) in list(rows)[:5]:
        st, got = a.get(kind.lower(), ns, name)
        assert st == 200, (kind, ns, name, got)
    a.stop()
    shutil.rmtree(d)
