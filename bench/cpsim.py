#!/usr/bin/python3
"""Control-plane scale scenario: N simulated proxies speaking reted's real
protocol (docs/control-plane.md) from one asyncio process.

    bench/cpsim.py [--proxies 1000 --services 1000 --workloads 10000] [--egress K] [--json OUT]

Starts reted on a temporary data directory (--cert-ttl 24h), applies S
Services and W Workloads through the operator API, creates one join token per
namespace/service account (uses -1), then for every simulated proxy: an
ECDSA P-256 key and CSR, a certificate from POST /ca/v1/certificates (the
end-to-end issuance measurement), an mTLS config stream, a hello registering
its own Workload (sim-N, namespace simK, 127.0.X.Y; nothing listens there),
and an ACK for every config push. Then one HTTPRoute weight change: for each
proxy, the time from the apply request's response to the arrival (last byte)
of the first config push whose version is at least the route's new
resourceVersion. With --egress K every proxy's Workload names K Services as
its egress (svc-0, the changed route's parent, and K-1 others), as sidecars
scoped with Istio's Sidecar resource are; without it every proxy gets the
whole mesh. reted's CPU (/proc/PID/stat) and RSS (VmRSS) are sampled
before the proxies connect, once all are connected, and after the change.
With --perf, `perf record -g` runs on reted during the change's push.

With --replicas R --store etcd: a local 3-member etcd cluster (127.0.0.1,
its own ports and data under the work directory) and R reted replicas on it
sharing the CA through --ca-kek; proxy n takes its certificate from and
streams to replica n % R; the route change is applied through replica 0.
RSS and CPU are the replicas' sums. With --restart (any store): after the
change every replica is stopped (SIGTERM) and started again on the same
ports, and each proxy reconnects (resuming from the version it holds,
to its replica or, when refused, the next, backoff 0.2-2 s with jitter):
the reconnect storm's time is from the restart (every replica listening)
until every proxy has a config again.

Every simulated proxy pings every 15 s from its first config on, as
rete-proxy does (reted closes a stream silent for 45 s). After the change,
the stats phase (--stats-window S, default 60; 0 skips it; bench/run.py
skips it): reted's CPU (/proc) over S seconds with the proxies silent but
for their pings, then over S seconds with every proxy also sending the
golden-metrics `stats` summary rete-proxy's agent sends (src/proxy/agent/
cp_golden.c) every --stats-interval seconds (default 10, the real period)
from a random phase: --stats-entries entries (default 4: two edges it
calls, two that call it, so both ends report every edge; 20-400 requests
each, ~1% failing, a latency histogram on the real bounds). No
configuration change happens in either window (checked).

Prints one JSON object (and writes it to --json). Debian's python3 with
python3-cryptography. Exit 1 on any error (a refused certificate, a refused
or closed stream, a NACK, a proxy that never gets the change).
"""
import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from procstat import cpu_seconds, rss_kb, stop as stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("RETE_BUILD", os.path.join(ROOT, "build"))


def reted_binary():
    for p in (os.path.join(BUILD, "reted"), os.path.join(BUILD, "src", "control", "reted")):
        if os.path.exists(p):
            return p
    raise RuntimeError(f"reted not built under {BUILD}")


def log(msg):
    print(f"[cpsim {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p / 100 * len(v) // 1)) - 1))
    return v[k]


# ---------------------------------------------------------------- HTTP/1.1

async def http_request(reader, writer, method, path, body=b"", headers=None):
    """One request on a keep-alive connection; returns (status, body bytes)."""
    h = {"host": "reted", "content-length": str(len(body))}
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    writer.write(head.encode() + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError(f"{method} {path}: connection closed")
    status = int(status_line.split()[1])
    length = None
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    data = await reader.readexactly(length) if length else b""
    return status, data


class Api:
    """The operator API (plain HTTP on loopback), one keep-alive connection."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    async def request(self, method, path, body=b"", ctype="application/json"):
        headers = {"authorization": f"Bearer {self.token}", "content-type": ctype}
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 26)
            try:
                st, data = await http_request(*self.conn, method, path, body, headers)
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                # reted closes a kept-alive connection idle past --idle-timeout
                # (60 s): open a new one, once.
                self.conn[1].close()
                self.conn = None
                if fresh or attempt:
                    raise
        try:
            return st, json.loads(data) if data else None
        except ValueError:
            return st, data.decode(errors="replace")

    async def metrics(self):
        """reted's own gauges, {name: value} (labels dropped, last sample wins)."""
        st, text = await self.request("GET", "/metrics")
        out = {}
        for line in (text if isinstance(text, str) else "").splitlines():
            m = re.match(r"^([a-z_]+)(?:\{[^}]*\})? (\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    chunk = 0  # etcd: at most this many documents per apply (one transaction: etcd's 128 operations)

    async def apply(self, docs):
        if self.chunk and len(docs) > self.chunk:
            out = None
            for lo in range(0, len(docs), self.chunk):
                out = await self.apply(docs[lo:lo + self.chunk])
            return out
        body = "".join("---\n" + json.dumps(d, separators=(",", ":")) + "\n" for d in docs).encode()
        st, j = await self.request("POST", "/api/v1/apply", body, "application/yaml")
        if st != 200:
            raise RuntimeError(f"apply refused ({st}): {str(j)[:600]}")
        return j

    def close(self):
        if self.conn:
            self.conn[1].close()


# ---------------------------------------------------------------- resources

def namespace(i, namespaces):
    return f"sim{i % namespaces}"


def service_doc(i, namespaces):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i}", "namespace": namespace(i, namespaces)},
            "spec": {"selector": {"app": f"svc-{i}"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "HTTP"}]}}


def workload_doc(j, services, namespaces):
    i = j % services
    return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "Workload",
            "metadata": {"name": f"wl-{j}", "namespace": namespace(i, namespaces)},
            "spec": {"address": f"10.{1 + j // 62500}.{j // 250 % 250}.{1 + j % 250}",
                     "serviceAccount": f"sa{i % namespaces}", "labels": {"app": f"svc-{i}"}}}


def route_doc(namespaces, w1):
    # parent svc-0, backends svc-N and svc-2N: all in namespace sim0.
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "split", "namespace": "sim0"},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "svc-0", "port": 80}],
                     "rules": [{"backendRefs": [
                         {"name": f"svc-{namespaces}", "port": 80, "weight": w1},
                         {"name": f"svc-{2 * namespaces}", "port": 80, "weight": 100 - w1}]}]}}


# ---------------------------------------------------------------- proxies

class SimProxy(asyncio.Protocol):
    """One simulated proxy's config stream: counts pushes, ACKs each, records
    the arrival time of every version."""

    def __init__(self, sim, n, resume=0, snapshot=None):
        self.sim, self.n, self.resume = sim, n, resume
        self.snapshot = snapshot  # the hash of the snapshot held, sent in the hello as rete-proxy does
        self.transport = None
        self.chunks = []
        self.header_done = False
        self.versions = []      # (version, arrival monotonic, bytes)
        self.closed = None
        self.connected = asyncio.get_running_loop().create_future()
        self.error = None

    def connection_made(self, transport):
        self.transport = transport

    # ---- pings (src/proxy/agent/cp_stream.c): reted closes a stream silent
    # for 45 s, so a proxy pings every 15 s, from its first config on
    PING_S = 15

    def start_pings(self):
        import random
        self.ping_timer = asyncio.get_running_loop().call_later(random.Random(self.n).uniform(0, self.PING_S),
                                                                self.ping_tick)

    def ping_tick(self):
        self.ping_timer = asyncio.get_running_loop().call_later(self.PING_S, self.ping_tick)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b'{"type":"ping"}\n')

    # ---- the golden-metrics summary (src/proxy/agent/cp_golden.c)

    def start_stats(self, period, entries, rng):
        """Send a `stats` line every `period` seconds from a random phase
        (each real proxy's timer starts with the proxy), as rete-proxy's
        agent does; the first tick also sends the (empty) `endpoints`
        message an agent sends once per stream."""
        self.stats_period, self.stats_entries, self.rng = period, entries, rng
        self.stats_sent = 0
        self.endpoints_sent = False
        self.stats_timer = asyncio.get_running_loop().call_later(rng.uniform(0, period), self.stats_tick)

    def stop_stats(self):
        if getattr(self, "stats_timer", None):
            self.stats_timer.cancel()
            self.stats_timer = None

    def stats_tick(self):
        self.stats_timer = asyncio.get_running_loop().call_later(self.stats_period, self.stats_tick)
        if self.transport is None or self.transport.is_closing():
            return
        msg = self.sim.stats_message(self.n, self.stats_entries, self.stats_period, self.rng)
        self.transport.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        self.stats_sent += 1
        if not self.endpoints_sent:
            self.endpoints_sent = True
            self.transport.write(b'{"type":"endpoints","out":[],"dropped":0,"retryBudgetExhausted":{}}\n')

    def data_received(self, data):
        now = time.monotonic()
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                if start < len(data):
                    self.chunks.append(data[start:] if start else data)
                return
            piece = data[start:nl]
            line = b"".join(self.chunks) + piece if self.chunks else piece
            self.chunks = []
            start = nl + 1
            self.line(line, now)

    def line(self, line, now):
        if not self.header_done:
            if line.startswith(b"HTTP/1.1 "):
                if not line.startswith(b"HTTP/1.1 200"):
                    self.fail(f"stream refused: {line[:100]!r}")
                return
            if line.strip() == b"":
                self.header_done = True
                hello = {"type": "hello", "version": self.resume, "workload": self.sim.workload(self.n)}
                if self.snapshot:
                    hello["snapshot"] = self.snapshot
                self.transport.write(json.dumps(hello).encode() + b"\n")
            return
        if not line.strip():
            return
        # A config line is megabytes of JSON: find the top-level fields
        # without parsing it. reted writes the head first
        # ({"type":..,"version":..,"nonce":..,...}), so the first '"version":'
        # and '"nonce":"' are the message's own, never an entry's.
        head = line[:64]
        # config (whole snapshot) or delta (what changed): both carry a
        # version and a nonce to acknowledge
        if (b'"type":"config"' in line[:200] or b'"type":"delta"' in line[:200]
                or b'"config"' in head or b'"delta"' in head):
            mv = re.search(rb'"version":(\d+)', line[:200]) or re.search(rb'"version":(\d+)', line)
            i = line.find(b'"nonce":"')
            if not mv or i < 0:
                self.fail(f"config without version/nonce: {line[:200]!r}")
                return
            nonce = line[i + 9:line.index(b'"', i + 9)]
            v = int(mv.group(1))
            ms = re.search(rb'"snapshot":"([0-9a-f]+)"', line[:300])
            if ms:
                self.snapshot = ms.group(1).decode()
            self.versions.append((v, now, len(line) + 1))
            if self.sim.change_version is not None and v >= self.sim.change_version:
                self.sim.change_seen.add(self.n)
            self.transport.write(b'{"type":"ack","nonce":"' + nonce + b'","version":' + str(v).encode() + b"}\n")
            self.sim.on_config(self, v, now, len(line) + 1)
            if not self.connected.done():
                self.connected.set_result(True)
                self.start_pings()
        elif b'"ping"' in head:
            return
        else:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"raw": line[:200].decode(errors="replace")}
            self.fail(f"unexpected message: {str(msg)[:300]}")

    def fail(self, why):
        if self.error is None:
            self.error = why
            self.sim.errors.append(f"sim-{self.n}: {why}")
        if not self.connected.done():
            self.connected.set_exception(RuntimeError(why))

    def connection_lost(self, exc):
        self.closed = time.monotonic()
        self.stop_stats()
        if getattr(self, "ping_timer", None):
            self.ping_timer.cancel()
            self.ping_timer = None
        if self.sim.storm is not None:
            if self.connected.done():
                self.sim.storm.lost(self)
            else:  # a reconnection attempt that failed: its loop tries again
                self.connected.set_exception(RuntimeError("closed"))
                self.connected.exception()
        elif not self.sim.stopping:
            self.fail(f"stream closed by reted ({exc})")


class Sim:
    def __init__(self, args):
        self.a = args
        self.errors = []
        self.stopping = False
        self.proxies = []
        self.waiters = []       # (min_version, future) for the change
        self.last_config = time.monotonic()
        self.bytes_received = 0
        self.configs_received = 0
        self.storm = None       # a Storm while the replicas restart
        self.change_version = None  # while the change is timed: its version,
        self.change_seen = set()    # and the proxies that have it

    def workload(self, n):
        ns = namespace(n, self.a.namespaces)
        wl = {"name": f"sim-{n}", "namespace": ns, "serviceAccount": f"sa{n % self.a.namespaces}",
              "address": f"127.0.{1 + n // 250}.{1 + n % 250}", "meshPort": 15008,
              "labels": {"app": f"svc-{n % self.a.services}"},
              "ports": [{"port": 8080, "protocol": "HTTP"}]}
        if self.a.egress:
            # Every proxy calls svc-0 (the changed route's parent, so the
            # change still reaches all of them) and egress-1 other Services.
            callees = [0] + [(n * 7919 + 13 * j) % self.a.services for j in range(1, self.a.egress)]
            wl["egress"] = [f"{namespace(i, self.a.namespaces)}/svc-{i}" for i in callees]
        return wl

    # The golden-metrics labels (src/common/golden.h): reporter, route name,
    # route namespace, destination service, source workload and namespace,
    # destination workload and namespace.
    STATS_CALLEES = (1, 7, 31, 101, 307, 1009)

    def stats_entry(self, reporter, src, dst, rng):
        dst_svc = dst % self.a.services
        svc = f"svc-{dst_svc}.{namespace(dst_svc, self.a.namespaces)}.svc.cluster.local"
        if reporter == "source":  # the caller matched a route (or a port's default rule)
            route, route_ns = ("split", "sim0") if dst_svc == 0 else ("default", namespace(dst_svc, self.a.namespaces))
        else:                     # the called side knows no route
            route, route_ns = "unknown", "unknown"
        # 10 s of a few requests per second: mostly fast, a tail, ~1% failing
        req = rng.randint(20, 400)
        fail = sum(1 for _ in range(req) if rng.random() < 0.01)
        hist = [0] * 14  # rete_golden_bounds_ms: 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, +Inf
        for _ in range(req):
            r = rng.random()
            hist[0 if r < 0.35 else 1 if r < 0.7 else 2 if r < 0.85 else 3 if r < 0.95 else
                 4 if r < 0.99 else 5 if r < 0.998 else 7] += 1
        return [reporter, route, route_ns, svc, f"sim-{src}", namespace(src, self.a.namespaces),
                f"sim-{dst}", namespace(dst, self.a.namespaces), req, fail, hist]

    def stats_message(self, n, entries, period, rng):
        """What proxy sim-n's agent sends: `entries` entries, half as the
        caller of sim-(n+d) (reporter source), half as the callee of
        sim-(n-d) (destination), so both halves of every edge are reported
        by its two ends; busiest first, as cp_golden.c orders them."""
        N = self.a.proxies
        out = []
        for k in range(entries):
            d = self.STATS_CALLEES[(k // 2) % len(self.STATS_CALLEES)] % max(1, N) or 1
            if k % 2 == 0:
                out.append(self.stats_entry("source", n, (n + d) % N, rng))
            else:
                out.append(self.stats_entry("destination", (n - d) % N, n, rng))
        out.sort(key=lambda e: -e[8])
        return {"type": "stats", "interval": period, "entries": out, "dropped": 0}

    def on_config(self, p, v, now, nbytes):
        self.last_config = now
        self.bytes_received += nbytes
        self.configs_received += 1


async def quiet(sim, seconds, timeout):
    """Wait until no config push has arrived for `seconds`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() - sim.last_config < seconds:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pushes still arriving after {timeout} s")
        await asyncio.sleep(0.1)


async def labelled(api, name):
    """{label value: sample} of one of reted's single-label families."""
    st, text = await api.request("GET", "/metrics")
    out = {}
    for m in re.finditer(r"^" + name + r'\{[a-z_]+="([^"]*)"\} (\S+)$', text if isinstance(text, str) else "", re.M):
        out[m.group(1)] = float(m.group(2))
    return out


async def stats_phase(sim, api, cpu_all, rss_kb_all, a, res):
    """reted's CPU over a steady window of --stats-window seconds with every
    proxy silent but for its ACKs (stats off), then over another with every
    proxy sending a `stats` summary of --stats-entries entries every
    --stats-interval seconds (on; after one interval of warm-up, so every
    combination exists). No configuration change happens in either window
    (checked: no push arrives)."""
    import random
    rng = random.Random(12)
    res["stats"] = {"proxies": len(sim.proxies), "entries_per_report": a.stats_entries,
                    "interval_s": a.stats_interval, "window_s": a.stats_window}
    await quiet(sim, 1.0, a.timeout)

    async def window(label):
        pushes0 = sim.configs_received
        m0 = await api.metrics()
        ent0 = await labelled(api, "rete_reted_stats_entries_total")
        cpu0, t0 = cpu_all(), time.monotonic()
        await asyncio.sleep(a.stats_window)
        cpu, dt = cpu_all() - cpu0, time.monotonic() - t0
        m1 = await api.metrics()
        ent1 = await labelled(api, "rete_reted_stats_entries_total")
        if sim.errors:
            raise RuntimeError(f"stats {label}: {len(sim.errors)} proxy errors: {sim.errors[:3]}")
        if sim.configs_received != pushes0:
            raise RuntimeError(f"stats {label}: {sim.configs_received - pushes0} config pushes during the window")
        w = {"reted_cpu_s": cpu, "seconds": dt, "core_pct": 100 * cpu / dt, "rss_kb": rss_kb_all(),
             "heap_bytes": m1.get("rete_reted_heap_bytes"), "loadavg": os.getloadavg()[0],
             "reports": m1.get("rete_reted_stats_reports_total", 0) - m0.get("rete_reted_stats_reports_total", 0),
             "entries": {k: ent1.get(k, 0) - ent0.get(k, 0) for k in ("accepted", "refused", "dropped")}}
        log(f"stats {label}: reted CPU {cpu:.2f} s over {dt:.0f} s = {w['core_pct']:.2f}% of a core; "
            f"{w['reports']:.0f} reports, entries {w['entries']}; reted RSS {w['rss_kb']} kB, "
            f"load average {w['loadavg']:.1f}")
        return w

    res["stats"]["off"] = await window("off")
    for p in sim.proxies:
        p.start_stats(a.stats_interval, a.stats_entries, rng)
    await asyncio.sleep(a.stats_interval + 2)  # every proxy has reported once: the combinations exist
    try:
        res["stats"]["on"] = await window("on")
        t = time.monotonic()
        st, j = await api.request("GET", "/api/v1/stats?by=edge&window=1m")
        res["stats"]["edge_query"] = {"seconds": time.monotonic() - t, "status": st,
                                      "rows": len(j.get("items", [])) if isinstance(j, dict) else None}
    finally:
        for p in sim.proxies:
            p.stop_stats()
    on, off = res["stats"]["on"], res["stats"]["off"]
    res["stats"]["delta_core_pct"] = on["core_pct"] - off["core_pct"]
    log(f"stats summaries cost reted {res['stats']['delta_core_pct']:.2f}% of a core "
        f"({on['core_pct']:.2f}% on, {off['core_pct']:.2f}% off); /api/v1/stats?by=edge: "
        f"{res['stats']['edge_query']['rows']} rows in {1000 * res['stats']['edge_query']['seconds']:.0f} ms")
    if on["entries"]["refused"] or not on["entries"]["accepted"]:
        raise RuntimeError(f"stats entries not accepted: {on['entries']}")


def perf_start(pid, out):
    if not shutil.which("perf"):
        return None
    return subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", out, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def perf_stop(p, out):
    if p is None:
        return None
    p.send_signal(2)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        return None
    try:
        r = subprocess.run(["perf", "report", "--stdio", "--no-children", "-g", "none", "--sort", "dso,symbol",
                            "--percent-limit", "0.8", "-i", out], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    top = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            top.append({"pct": float(m.group(1)), "dso": m.group(2),
                        "symbol": re.split(r"\s{2,}", m.group(3))[0]})
    return top[:20] or None


def start_etcd(work):
    """A 3-member etcd cluster on 127.0.0.1 under work/; (endpoints, procs)."""
    ms = [(f"m{i}", free_port(), free_port()) for i in range(3)]
    initial = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, _, peer in ms)
    procs = []
    for n, client, peer in ms:
        lf = open(os.path.join(work, f"etcd-{n}.log"), "w")
        procs.append(subprocess.Popen(
            ["etcd", "--name", n, "--data-dir", os.path.join(work, f"etcd-{n}"),
             "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls",
             f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", initial,
             "--initial-cluster-token", "cpsim", "--initial-cluster-state", "new",
             "--quota-backend-bytes", str(4 << 30)],
            stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True))
        lf.close()
    eps = ",".join(f"127.0.0.1:{c}" for _, c, _ in ms)
    deadline = time.time() + 30
    while True:
        try:
            r = subprocess.run(["etcdctl", "--endpoints", eps, "endpoint", "health"], capture_output=True,
                               text=True, timeout=10, env=dict(os.environ, ETCDCTL_API="3"))
            if r.returncode == 0:
                break
        except subprocess.TimeoutExpired:
            pass
        if time.time() > deadline:
            raise RuntimeError("etcd not healthy")
        time.sleep(0.3)
    return eps, procs


class Replica:
    """One reted (restartable on the same data directory and ports)."""

    def __init__(self, work, i, a, store_args):
        self.i, self.a, self.store_args = i, a, store_args
        self.data = os.path.join(work, f"reted-{i}")
        self.log = os.path.join(work, f"reted-{i}.log")
        self.api_port, self.xds_port = free_port(), free_port()
        self.proc = None

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [reted_binary(), "--data-dir", self.data, "--api", f"127.0.0.1:{self.api_port}",
             "--xds", f"127.0.0.1:{self.xds_port}", "--cert-ttl", "24h", "--log-level", os.environ.get("CPSIM_RETED_LOG_LEVEL", "warn"),
             # The certificate requests all come from 127.0.0.1: lift
             # the per-source cap (default 1024) above them.
             "--xds-max-connections-per-source", str(2 * self.a.proxies + self.a.ca_connections + 64),
             *self.store_args],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env=dict(os.environ, RETED_NO_USER_CONTEXT="1"), start_new_session=True)
        logf.close()
        return self

    async def listening(self):
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"reted {self.i} exited {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.api_port), 0.5).close()
                socket.create_connection(("127.0.0.1", self.xds_port), 0.5).close()
                return
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"reted {self.i} not listening")
                await asyncio.sleep(0.05)


class Storm:
    """The proxies reconnecting after every replica restarted: each lost
    stream retries its replica, then the next, with jittered backoff."""

    def __init__(self, sim, ctxs, ports, handshakes):
        self.sim, self.ctxs, self.ports = sim, ctxs, ports
        # At most this many TLS handshakes in flight: 10,000 proxies are
        # 10,000 machines, each doing its own; this one Python thread doing
        # them all at once finished none for ~20 s (reted then closed many
        # as stalled past its header timeout, and they retried). Queued
        # here, each handshake runs at the simulator's own pace.
        self.handshakes = asyncio.Semaphore(handshakes)
        self.open = asyncio.Event()   # set once the replicas listen again
        self.done = {}                # n -> monotonic time of its first config after the restart
        self.tasks = []
        self.attempts = 0

    def lost(self, p):
        if not getattr(p, "replaced", False):
            p.replaced = True
            self.tasks.append(asyncio.ensure_future(self.reconnect(p)))

    async def reconnect(self, old):
        import random
        n = old.n
        resume = old.versions[-1][0] if old.versions else 0
        snapshot = old.snapshot
        await self.open.wait()
        delay = 0.2
        for attempt in range(200):
            port = self.ports[(n + attempt) % len(self.ports)]
            self.attempts += 1
            try:
                async with self.handshakes:
                    tr, p = await asyncio.get_running_loop().create_connection(
                        lambda: SimProxy(self.sim, n, resume, snapshot), "127.0.0.1", port, ssl=self.ctxs[n],
                        server_hostname="reted", local_addr=(self.sim.workload(n)["address"], 0))
                    tr.write(b"GET /xds/v1/stream HTTP/1.1\r\nhost: reted\r\n\r\n")
                await asyncio.wait_for(asyncio.shield(p.connected), 30)
                self.done[n] = time.monotonic()
                self.sim.proxies[self.sim.proxies.index(old)] = p
                return
            except (OSError, RuntimeError, asyncio.TimeoutError, ssl.SSLError):
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(2.0, delay * 2)
        self.sim.errors.append(f"sim-{n}: never reconnected")


async def scenario(a, work, res):
    res["config"] = {"proxies": a.proxies, "services": a.services, "workloads": a.workloads, "egress": a.egress,
                     "namespaces": a.namespaces, "ca_connections": a.ca_connections,
                     "connect_concurrency": a.connect_concurrency}
    res["config"].update({"replicas": a.replicas, "store": a.store})
    sim = Sim(a)
    etcd_procs = []
    store_args = []
    if a.store == "etcd":
        eps, etcd_procs = start_etcd(work)
        kek = os.path.join(work, "ca.kek")
        with open(kek, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(kek, 0o600)
        store_args = ["--store", f"etcd://{eps}", "--etcd-prefix", "/cpsim/", "--ca-kek", kek]
    reps = [Replica(work, i, a, store_args) for i in range(a.replicas)]
    pids = []

    def rss_kb_all():
        return sum(rss_kb(p) for p in pids)

    def cpu_all():
        return sum(cpu_seconds(p) for p in pids)

    api = None
    try:
        # the first replica publishes the CA (etcd), then the others start
        await reps[0].start().listening()
        for r in reps[1:]:
            r.start()
        for r in reps[1:]:
            await r.listening()
        pids[:] = [r.proc.pid for r in reps]
        pid = pids[0]
        reted = reps[0].proc
        data = reps[0].data
        with open(os.path.join(data, "admin.token")) as f:
            api = Api(reps[0].api_port, f.read().strip())
        api.chunk = 100 if a.store == "etcd" else 0
        res["reted_idle"] = {"rss_kb": rss_kb_all(), "cpu_s": cpu_all()}

        # ---- the mesh: services, hand-applied workloads, one route
        t = time.monotonic()
        await api.apply([service_doc(i, a.namespaces) for i in range(a.services)])
        res["apply_services_s"] = time.monotonic() - t
        t = time.monotonic()
        for lo in range(0, a.workloads, 2500):
            await api.apply([workload_doc(j, a.services, a.namespaces)
                             for j in range(lo, min(a.workloads, lo + 2500))])
        res["apply_workloads_s"] = time.monotonic() - t
        await api.apply([route_doc(a.namespaces, 90)])
        # What the simulated proxies may register: reted admits a proxy's
        # labels only within a WorkloadGroup of its service account (one
        # group per label set; no egress set, so the whole mesh).
        groups = sorted({(w["namespace"], w["serviceAccount"], w["labels"]["app"])
                         for w in map(sim.workload, range(a.proxies))})
        await api.apply([{"apiVersion": "networking.rete.dev/v1alpha1", "kind": "WorkloadGroup",
                          "metadata": {"name": f"sim-{app}-{sa}", "namespace": ns},
                          "spec": {"serviceAccount": sa, "labels": {"app": app}}}
                         for ns, sa, app in groups])
        log(f"applied {a.services} services ({res['apply_services_s']:.1f} s), {a.workloads} workloads "
            f"({res['apply_workloads_s']:.1f} s), 1 route")

        # ---- identities: keys and CSRs (client side, not measured), tokens
        tokens = {}
        for k in range(min(a.namespaces, a.proxies)):
            st, j = await api.request("POST", "/api/v1/tokens", json.dumps(
                {"namespace": f"sim{k}", "serviceAccount": f"sa{k}", "ttlSeconds": 3600, "uses": -1}).encode())
            if st != 200:
                raise RuntimeError(f"token refused: {j}")
            tokens[k] = j["token"]
        t = time.monotonic()
        keys, csrs = [], []
        for n in range(a.proxies):
            key = ec.generate_private_key(ec.SECP256R1())
            csr = x509.CertificateSigningRequestBuilder().subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sim-{n}")])).sign(key, hashes.SHA256())
            keys.append(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            csrs.append(csr.public_bytes(serialization.Encoding.PEM).decode())
        res["keygen_s"] = time.monotonic() - t

        # ---- certificates through the real CA endpoint
        bundle = os.path.join(data, "ca", "bundle.pem")
        ca_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca_ctx.load_verify_locations(bundle)
        ca_ctx.check_hostname = False
        certdir = os.path.join(work, "ids")
        os.makedirs(certdir)
        queue = list(range(a.proxies))
        cpu0 = cpu_all()

        async def ca_worker(k):
            r, w = await asyncio.open_connection("127.0.0.1", reps[k % len(reps)].xds_port, ssl=ca_ctx,
                                                 limit=1 << 20)
            try:
                while queue:
                    n = queue.pop()
                    body = json.dumps({"csr": csrs[n], "token": tokens[n % a.namespaces]}).encode()
                    st, out = await http_request(r, w, "POST", "/ca/v1/certificates", body,
                                                 {"content-type": "application/json"})
                    if st != 200:
                        raise RuntimeError(f"certificate for sim-{n} refused ({st}): {out[:300]!r}")
                    j = json.loads(out)
                    with open(os.path.join(certdir, f"{n}.pem"), "w") as f:
                        f.write(j["certChain"])
                    with open(os.path.join(certdir, f"{n}.key"), "wb") as f:
                        f.write(keys[n])
            finally:
                w.close()

        t = time.monotonic()
        await asyncio.gather(*(ca_worker(k) for k in range(a.ca_connections)))
        dt = time.monotonic() - t
        res["certs"] = {"issued": a.proxies, "seconds": dt, "per_second": a.proxies / dt,
                        "reted_cpu_s": cpu_all() - cpu0,
                        "per_cpu_second": a.proxies / max(1e-9, cpu_all() - cpu0)}
        log(f"{a.proxies} certificates in {dt:.2f} s: {a.proxies / dt:.0f}/s end to end "
            f"({res['certs']['per_cpu_second']:.0f}/s per reted CPU second)")

        # ---- connect every proxy
        await asyncio.sleep(0.5)
        res["reted_before"] = {"rss_kb": rss_kb_all(), "cpu_s": cpu_all(),
                               "heap_bytes": (await api.metrics()).get("rete_reted_heap_bytes")}
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(a.connect_concurrency)
        ctxs = {}

        async def connect(n):
            xds_port = reps[n % len(reps)].xds_port
            async with sem:
                # The context is made inside the semaphore: made for every
                # proxy up front, 10,000 of them held the simulator's loop
                # for seconds while the first handshakes waited, and reted
                # closed those as stalled.
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.load_verify_locations(bundle)
                ctx.check_hostname = False
                ctx.load_cert_chain(os.path.join(certdir, f"{n}.pem"), os.path.join(certdir, f"{n}.key"))
                ctxs[n] = ctx
                # From the address it registers, as rete-proxy does (reted
                # checks a hello's address against the connection's).
                tr, p = await loop.create_connection(lambda: SimProxy(sim, n), "127.0.0.1", xds_port,
                                                     ssl=ctx, server_hostname="reted",
                                                     local_addr=(sim.workload(n)["address"], 0))
                tr.write(b"GET /xds/v1/stream HTTP/1.1\r\nhost: reted\r\n\r\n")
                sim.proxies.append(p)
                await asyncio.wait_for(p.connected, a.timeout)

        t = time.monotonic()
        res["connect_progress"] = []

        def configured():
            return sum(1 for p in sim.proxies if ok(p))

        def ok(p):
            return p.connected.done() and not p.connected.cancelled() and p.connected.exception() is None

        async def progress():
            while True:
                await asyncio.sleep(10)
                res["connect_progress"].append([round(time.monotonic() - t, 1), configured(), rss_kb_all()])
                log(f"  {time.monotonic() - t:5.0f} s: {configured()} proxies configured, reted RSS {rss_kb_all()} kB")

        prog = asyncio.ensure_future(progress())
        incomplete = None
        try:
            await asyncio.wait_for(asyncio.gather(*(connect(n) for n in range(a.proxies))), a.connect_timeout)
        except asyncio.TimeoutError:
            # Out of time: carry on with the proxies that have their
            # config, so the change is still measured (on fewer proxies),
            # and say so. The others are dropped (their streams closed).
            incomplete = f"only {configured()} of {a.proxies} proxies configured after {a.connect_timeout:.0f} s"
            res["connect_incomplete"] = {"configured": configured(), "seconds": time.monotonic() - t,
                                         "rss_kb": rss_kb_all(), "cpu_s": cpu_all() - res["reted_before"]["cpu_s"],
                                         "pushes": sim.configs_received, "bytes": sim.bytes_received}
            log(incomplete + "; measuring the change on those")
            sim.stopping = True
            keep = []
            for p in sim.proxies:
                if ok(p):
                    keep.append(p)
                elif p.transport:
                    p.transport.abort()
            sim.proxies = keep
            await asyncio.sleep(0.5)
            sim.stopping = False
        finally:
            prog.cancel()
        res["connect_s"] = time.monotonic() - t
        res["connected"] = len(sim.proxies)
        log(f"{len(sim.proxies)} proxies connected and configured in {res['connect_s']:.1f} s; waiting for quiet")
        await quiet(sim, 1.0, a.timeout)
        res["connect_settle_s"] = time.monotonic() - t
        res["connect_pushes"] = sim.configs_received
        res["connect_bytes"] = sim.bytes_received
        await asyncio.sleep(0.5)
        res["reted_connected"] = {"rss_kb": rss_kb_all(), "cpu_s": cpu_all(),
                                  "rss_kb_each": [rss_kb(p) for p in pids]}
        mt = await api.metrics()
        res["reted_connected"].update(
            {k: mt.get(f"rete_reted_{k}") for k in ("heap_bytes", "snapshots", "snapshot_bytes",
                                                     "index_resources")})
        res["rss_per_proxy_kb"] = (res["reted_connected"]["rss_kb"] - res["reted_before"]["rss_kb"]) / len(sim.proxies)
        res["connect_cpu_s"] = res["reted_connected"]["cpu_s"] - res["reted_before"]["cpu_s"]
        log(f"settled after {res['connect_settle_s']:.1f} s: {sim.configs_received} pushes, "
            f"{sim.bytes_received / 1e6:.0f} MB; reted RSS {res['reted_before']['rss_kb']} -> "
            f"{res['reted_connected']['rss_kb']} kB ({res['rss_per_proxy_kb']:.1f} kB/proxy); heap in use "
            f"{(res['reted_connected']['heap_bytes'] or 0) / 1e6:.1f} MB, {res['reted_connected']['snapshots'] or 0:.0f} "
            f"snapshots cached, {(res['reted_connected']['snapshot_bytes'] or 0) / 1e6:.1f} MB of snapshots")
        if sim.errors:
            raise RuntimeError(f"{len(sim.errors)} proxy errors: {sim.errors[:3]}")

        # ---- one route change
        before_counts = {p.n: len(p.versions) for p in sim.proxies}
        sim.bytes_received = sim.configs_received = 0
        perf_data = os.path.join(work, "perf-reted.data")
        perf = perf_start(pid, perf_data) if a.perf else None
        if perf:
            await asyncio.sleep(0.5)
        m0 = await api.metrics()
        cpu0 = cpu_all()
        sim_cpu0 = time.process_time()
        j = await api.apply([route_doc(a.namespaces, 50)])
        t0 = time.monotonic()
        new_rev = int(j["results"][0]["resourceVersion"])
        deadline = t0 + a.timeout
        # Count arrivals as they come (SimProxy.line) rather than scanning
        # 10,000 proxies every 10 ms: the scan took the simulator's thread
        # from the very pushes it times. Those that arrived before the
        # apply's answer are counted once here; no callback runs in between.
        sim.change_seen = {p.n for p in sim.proxies
                           if any(v >= new_rev for v, _, _ in p.versions[before_counts[p.n]:])}
        sim.change_version = new_rev
        while len(sim.change_seen) < len(sim.proxies) and not sim.errors:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(sim.proxies) - len(sim.change_seen)} proxies never got version {new_rev}")
            await asyncio.sleep(0.01)
        sim.change_version = None
        t_all = time.monotonic() - t0
        await quiet(sim, 0.5, a.timeout)
        change_cpu = cpu_all() - cpu0
        sim_cpu = time.process_time() - sim_cpu0
        # The apply alone (parse, validation, store write), from reted's own
        # histogram of its loop thread's CPU per apply: this one apply.
        m1 = await api.metrics()
        apply_ms = 1000 * (m1.get("rete_reted_apply_cpu_seconds_sum", 0) - m0.get("rete_reted_apply_cpu_seconds_sum", 0))
        res["profile"] = perf_stop(perf, perf_data) if perf else None
        lat = []
        sizes = []
        for p in sim.proxies:
            for v, when, nb in p.versions[before_counts[p.n]:]:
                if v >= new_rev:
                    lat.append((when - t0) * 1000)
                    sizes.append(nb)
                    break
        res["change"] = {"version": new_rev, "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90),
                         "p99_ms": pct(lat, 99), "max_ms": max(lat), "min_ms": min(lat),
                         "all_s": t_all, "pushes": sim.configs_received, "bytes": sim.bytes_received,
                         "snapshot_bytes": max(sizes), "reted_cpu_s": change_cpu, "sim_cpu_s": sim_cpu,
                         "apply_cpu_ms": apply_ms}
        res["reted_after"] = {"rss_kb": rss_kb_all(), "cpu_s": cpu_all()}
        log(f"route change: p50 {res['change']['p50_ms']:.0f} ms, p99 {res['change']['p99_ms']:.0f} ms, "
            f"max {res['change']['max_ms']:.0f} ms; {sim.configs_received} pushes of "
            f"{max(sizes) / 1e6:.2f} MB, {sim.bytes_received / 1e6:.0f} MB; reted CPU {change_cpu:.2f} s "
            f"(the apply itself {apply_ms:.1f} ms), "
            f"simulator CPU {sim_cpu:.2f} s")
        if sim.errors:
            raise RuntimeError(f"{len(sim.errors)} proxy errors: {sim.errors[:3]}")
        if reted.poll() is not None:
            raise RuntimeError(f"reted exited {reted.returncode}")
        if incomplete:
            raise RuntimeError(incomplete)

        # ---- golden-metrics summaries: reted's CPU with the proxies' stats off, then on
        if a.stats_window:
            await stats_phase(sim, api, cpu_all, rss_kb_all, a, res)
            if reted.poll() is not None:
                raise RuntimeError(f"reted exited {reted.returncode}")

        # ---- the reconnect storm: every replica restarts
        if a.restart:
            storm = Storm(sim, ctxs, [r.xds_port for r in reps], 4 * a.connect_concurrency)
            sim.storm = storm
            for r in reps:
                stop_process(r.proc, 5)
            for r in reps:
                r.start()
            for r in reps:
                await r.listening()
            pids[:] = [r.proc.pid for r in reps]
            reted = reps[0].proc
            api.close()
            api.conn = None
            t0 = time.monotonic()
            storm.open.set()
            deadline = t0 + a.timeout
            while len(storm.done) < len(sim.proxies) and not sim.errors:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(storm.done)} of {len(sim.proxies)} proxies reconnected")
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            sim.storm = None
            when = sorted(v - t0 for v in storm.done.values())
            # every replica's count (each resumed the proxies it holds)
            resumes = 0.0
            for rep in reps:
                ra = Api(rep.api_port, api.token)
                resumes += (await ra.metrics()).get("rete_reted_config_resumes_total", 0.0)
                ra.close()
            res["restart"] = {"all_s": when[-1], "p50_s": pct(when, 50), "p99_s": pct(when, 99),
                              "attempts": storm.attempts, "rss_kb": rss_kb_all(), "resumes": resumes}
            log(f"restart of {len(reps)} replicas: {len(when)} proxies configured again in {when[-1]:.1f} s "
                f"(p50 {res['restart']['p50_s']:.1f} s, p99 {res['restart']['p99_s']:.1f} s), "
                f"{storm.attempts} connection attempts, {resumes:.0f} resumed with an empty delta")
            if sim.errors:
                raise RuntimeError(f"{len(sim.errors)} proxy errors: {sim.errors[:3]}")
    except Exception:
        try:
            with open(reps[0].log) as f:
                tail = f.read()[-1500:]
            if tail.strip():
                log("reted log tail:\n" + tail)
        except OSError:
            pass
        raise
    finally:
        sim.stopping = True
        for p in sim.proxies:
            if p.transport:
                p.transport.abort()
        if api:
            api.close()
        for r in reps:
            if r.proc:
                stop_process(r.proc, 5)
        for p in etcd_procs:
            stop_process(p, 5)
    return res


def run(proxies=1000, services=1000, workloads=10000, namespaces=10, perf=False, timeout=240, work=None,
        connect_timeout=None, res=None, egress=0, replicas=1, store="sqlite", restart=False,
        stats_window=0, stats_entries=4, stats_interval=10, sim_loop="uvloop"):
    """Run the scenario; returns the results dict (raises on any error; what
    was measured before the error is in `res` when the caller passes one)."""
    a = argparse.Namespace(proxies=proxies, services=services, workloads=workloads, namespaces=namespaces,
                           perf=perf, timeout=timeout, ca_connections=8, connect_concurrency=64, egress=egress,
                           connect_timeout=connect_timeout or timeout, replicas=replicas, store=store,
                           restart=restart, stats_window=stats_window, stats_entries=stats_entries,
                           stats_interval=stats_interval)
    if store == "sqlite" and replicas != 1:
        raise ValueError("several replicas need --store etcd")
    res = {} if res is None else res
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    own = work is None
    work = work or tempfile.mkdtemp(prefix="rete-cpsim-")
    # The simulator's own event loop: one Python thread doing what 10,000
    # proxies would each do in C on their own machine, on the cores reted
    # runs on, so its CPU delays the pushes it times. uvloop (Debian's
    # python3-uvloop) took 18% less CPU than asyncio receiving the 10,000
    # pushes of a route change (0.42 s against 0.51 s).
    res["sim_loop"] = sim_loop
    if sim_loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        return asyncio.run(scenario(a, work, res))
    finally:
        asyncio.set_event_loop_policy(None)
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxies", type=int, default=1000)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--workloads", type=int, default=10000)
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--perf", action="store_true", help="perf record reted during the change's push")
    ap.add_argument("--timeout", type=float, default=240, help="seconds for each phase")
    ap.add_argument("--connect-timeout", type=float, help="seconds for connecting every proxy (default --timeout)")
    ap.add_argument("--egress", type=int, default=0,
                    help="each proxy names this many Services as its egress (0: none, the whole mesh)")
    ap.add_argument("--replicas", type=int, default=1, help="reted replicas (more than 1: --store etcd)")
    ap.add_argument("--store", choices=("sqlite", "etcd"), default="sqlite",
                    help="etcd: a local 3-member etcd cluster started here")
    ap.add_argument("--restart", action="store_true",
                    help="after the change, restart every replica and time the proxies' reconnection")
    ap.add_argument("--stats-window", type=float, default=60,
                    help="seconds of each window of the stats phase: reted's CPU with the proxies' golden-metrics "
                         "summaries off, then on (0: no stats phase)")
    ap.add_argument("--stats-entries", type=int, default=4, choices=range(1, 13), metavar="1..12",
                    help="entries per summary: half outbound edges, half inbound (default 4)")
    ap.add_argument("--stats-interval", type=int, default=10,
                    help="seconds between a proxy's summaries (rete-proxy's --stats-interval, default 10)")
    ap.add_argument("--sim-loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="the simulator's event loop (default uvloop: python3-uvloop)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rete-cpsim-")
    res = {}
    rc = 0
    try:
        run(args.proxies, args.services, args.workloads, args.namespaces, args.perf, args.timeout, work,
            args.connect_timeout, res, args.egress, args.replicas, args.store, args.restart,
            args.stats_window, args.stats_entries, args.stats_interval, args.sim_loop)
    except Exception as e:
        import traceback
        log(f"FAIL: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        res["failed"] = f"{type(e).__name__}: {e}"
        rc = 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work dir {work}")
    out = json.dumps(res, indent=1)
    print(out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
