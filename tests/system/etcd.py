"""A real etcd cluster for the tests of reted on etcd: N members (3 by
default) on loopback addresses of this worker's own (fresh_host), data
directories under the test's tmp directory, stopped always (the fixture's
finally, and the suite's process cleanup behind it)."""
import base64
import json
import os
import shutil
import subprocess
import urllib.request

import pytest

from controlplane import Reted, curl_json
from helpers import fresh_host, free_port, start_process, stop_process, wait_for
from mesh import http_route

ETCD = "etcd"
ETCDCTL = "etcdctl"


class EtcdCluster:
    def __init__(self, tmp_dir, n=3, persistent=False):
        self.tmp = str(tmp_dir)
        self.persistent = persistent
        self.members = []
        for i in range(n):
            host = fresh_host()
            self.members.append({"name": f"m{i}", "host": host, "client": free_port(host),
                                 "peer": free_port(host), "proc": None})
        self.token = "rete-test-" + os.path.basename(self.tmp)
        self.initial = ",".join(f"{m['name']}=http://{m['host']}:{m['peer']}" for m in self.members)

    def endpoint(self, i):
        m = self.members[i]
        return f"{m['host']}:{m['client']}"

    @property
    def endpoints(self):
        return ",".join(self.endpoint(i) for i in range(len(self.members)))

    def start_member(self, i, state="new"):
        m = self.members[i]
        args = ["--name", m["name"], "--data-dir", os.path.join(self.tmp, f"etcd-{m['name']}"),
                "--listen-client-urls", f"http://{m['host']}:{m['client']}",
                "--advertise-client-urls", f"http://{m['host']}:{m['client']}",
                "--listen-peer-urls", f"http://{m['host']}:{m['peer']}",
                "--initial-advertise-peer-urls", f"http://{m['host']}:{m['peer']}",
                "--initial-cluster", self.initial, "--initial-cluster-token", self.token,
                "--initial-cluster-state", state, "--heartbeat-interval", "50", "--election-timeout", "500"]
        # the version line comes first, before the member needs its peers
        m["proc"] = start_process([ETCD, *args], r"etcd Version", timeout=20, persistent=self.persistent)

    def start(self):
        for i in range(len(self.members)):
            self.start_member(i)
        for i in range(len(self.members)):
            wait_for(lambda i=i: self.healthy(i), 30, 0.2, f"etcd member {i} serving")
        return self

    def healthy(self, i):
        try:
            self.kv("range", {"key": b64("health")}, i)
            return True
        except OSError:
            return False

    def stop_member(self, i):
        m = self.members[i]
        if m["proc"] is not None and m["proc"].poll() is None:
            stop_process(m["proc"])

    def stop(self):
        for i in range(len(self.members)):
            self.stop_member(i)

    def kv(self, op, body, i=0):
        """One JSON-gateway call (/v3/kv/<op>) on member i; the parsed answer."""
        req = urllib.request.Request(f"http://{self.endpoint(i)}/v3/kv/{op}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def revision(self, i=0):
        return int(self.kv("range", {"key": b64("x")}, i)["header"]["revision"])

    def compact(self, revision, i=0):
        """Compact the history up to `revision` (etcdctl, physically)."""
        subprocess.run([ETCDCTL, "--endpoints", self.endpoint(i), "compaction", "--physical", str(revision)],
                       check=True, capture_output=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})

    def keys(self, prefix, i=0):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        kvs = self.kv("range", {"key": b64(prefix), "range_end": b64(end), "keys_only": True}, i).get("kvs", [])
        return [base64.b64decode(kv["key"]).decode() for kv in kvs]


def b64(s):
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 3-member cluster for a test module (each module that imports it its own)."""
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"), persistent=True)
    try:
        yield c.start()
    finally:
        c.stop()


# ---- reted replicas on a cluster (test_reted_etcd.py, test_reted_ha.py)

def replicas(tmp_path, endpoints, prefix, n=3, per_replica_endpoints=None, args=(), kek=None):
    """n reted replicas on etcd under `prefix`; the first makes the CA and
    admin token, the others start from copies of them, or (kek: a KEK
    file) from the CA the first publishes to etcd, with no file copied."""
    out = []
    if kek:
        args = (*args, "--ca-kek", kek)
    for i in range(n):
        d = os.path.join(str(tmp_path), f"reted-{i}")
        if i and not kek:
            os.makedirs(d)
            shutil.copytree(os.path.join(out[0].data, "ca"), os.path.join(d, "ca"))
            for f in ("admin.token", "trust-domain"):
                shutil.copy2(os.path.join(out[0].data, f), os.path.join(d, f))
        eps = per_replica_endpoints[i] if per_replica_endpoints else endpoints
        out.append(Reted(d, "--store", f"etcd://{eps}", "--etcd-prefix", prefix, *args).start())
    return out


def route_tag(name, value, ns="ha"):
    """HTTPRoute `name` for Service echo setting header x-rule: value."""
    return http_route(name, ns, "echo", [{
        "filters": [{"type": "RequestHeaderModifier",
                     "requestHeaderModifier": {"set": [{"name": "x-rule", "value": value}]}}],
        "backendRefs": [{"name": "echo", "port": 80}]}])


def tagged(proxy, value):
    """Whether a request to echo through `proxy` carries x-rule: value."""
    try:
        return curl_json(proxy.outbound, "echo", "/r")["headers"].get("x-rule") == value
    except (AssertionError, ValueError):
        return False


def kek_file(tmp_path, name="kek", data=None):
    """A key-encryption key file (32 random bytes unless data), mode 0600."""
    p = os.path.join(str(tmp_path), name)
    with open(p, "wb") as f:
        f.write(os.urandom(32) if data is None else data)
    os.chmod(p, 0o600)
    return p


def values(cluster, prefix):
    """Every (key, value) under prefix, decoded."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    kvs = cluster.kv("range", {"key": b64(prefix), "range_end": b64(end)}).get("kvs", [])
    return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", ""))) for kv in kvs]
