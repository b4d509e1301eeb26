"""The chaos suite's side (tests/system/test_chaos_*.py): steady traffic
that counts every request's outcome, a two-endpoint mesh through reted, and
the per-fault report (a table in the test's output and a JSON artefact in
its tmp dir).

Traffic is a Python loop on one keep-alive connection to the client's
sidecar (reconnecting after an error), paced at `rate` requests per second
and bounded in requests and time; each request's send time, end time and
outcome (HTTP status, or 0 and the error) is recorded, so failures and
recovery are measured against the moment a fault was injected."""
import http.client
import json
import os
import threading
import time

from controlplane import curl_status, start_cp_proxy, wait_for
from helpers import free_port, start_echo
from mesh import destination_rule, fresh_host, service


# A request slower than this (seconds) counts as hit by the fault when the
# recovery time is measured; normal requests here take a few milliseconds.
SLOW = 0.5
# Traffic has recovered from a fault when the last TAIL requests of its window succeeded.
TAIL = 20


class Traffic:
    """Steady GET requests to `host` through the sidecar at `outbound`
    ("ip:port"): at most `rate` per second, for at most `duration` seconds
    and `max_requests` requests; each waits at most `timeout` seconds."""

    def __init__(self, outbound, host="echo", path="/", rate=40, duration=30, max_requests=5000,
                 timeout=10, headers=None):
        self.addr, port = outbound.rsplit(":", 1)
        self.port = int(port)
        self.host, self.path, self.rate, self.timeout = host, path, rate, timeout
        self.duration, self.max_requests = duration, max_requests
        self.headers = {"Host": host, **(headers or {})}
        self.records = []  # (sent, done, status, error, body)
        self.faults = []  # (name, time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = None

    def start(self):
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self):
        conn = None
        deadline = self.t0 + self.duration
        for i in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            due = self.t0 + i / self.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            sent = time.monotonic()
            status, err, body = 0, "", b""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.addr, self.port, timeout=self.timeout)
                conn.request("GET", self.path, headers=self.headers)
                r = conn.getresponse()
                status, body = r.status, r.read()
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                err = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            self.records.append((sent, time.monotonic(), status, err, body))
        if conn is not None:
            conn.close()

    def mark(self, name):
        """Note that fault `name` is injected now."""
        t = time.monotonic()
        self.faults.append((name, t))
        return t

    def wait_requests(self, n, timeout=30):
        """Until at least `n` more requests have completed than now."""
        goal = len(self.records) + n
        wait_for(lambda: len(self.records) >= goal or not self._thread.is_alive(), timeout, 0.05,
                 f"{n} more requests")
        assert len(self.records) >= goal, "traffic ended early"

    def stop(self):
        self._stop.set()
        self._thread.join(self.timeout + 5)
        assert not self._thread.is_alive(), "traffic loop did not stop"
        return self

    def join(self):
        self._thread.join(self.duration + self.timeout + 5)
        assert not self._thread.is_alive(), "traffic loop did not end within its bound"
        return self

    def instances(self, since=0.0, until=None):
        """The echo hosts that answered requests sent in [since, until)."""
        return {json.loads(r[4])["instance"].rsplit(":", 1)[0] for r in self.records
                if r[0] >= since and (until is None or r[0] < until) and r[2] == 200}

    def failures(self, since=0.0, until=None):
        return [r for r in self.records if r[0] >= since and (until is None or r[0] < until) and r[2] != 200]

    def figures(self, name, since, until=None, bound=0, slow=SLOW):
        """One report row for requests sent in [since, until): how many,
        how many failed (`bound`: how many may), the recovery time (from
        `since` to the end of the last request that failed or took longer
        than `slow` seconds, i.e. until traffic was normal again; 0 when
        none did) and the slowest request's time (what the fault cost the
        requests that did not fail: a per-try or connect timeout, a retry)."""
        rows = [r for r in self.records if r[0] >= since and (until is None or r[0] < until)]
        failed = [r for r in rows if r[2] != 200]
        hit = [r for r in rows if r[2] != 200 or r[1] - r[0] > slow]
        recovery = max((r[1] for r in hit), default=since) - since
        return {"fault": name, "requests": len(rows), "failed": len(failed), "bound": bound,
                "recovery_s": round(recovery, 3),
                "recovered": all(r[2] == 200 for r in rows[-TAIL:]),
                "slowest_s": round(max((r[1] - r[0] for r in rows), default=0.0), 3),
                "failures": sorted({f"{r[2]} {r[3]} {r[4][:80].decode(errors='replace')}".strip()
                                    for r in failed})[:5]}


def report(tmp_path, scenario, rows):
    """Print the per-fault table into the test's output and write the
    figures to TMP/chaos-<scenario>.json; returns the JSON path."""
    lines = [f"chaos {scenario}:",
             f"  {'fault':<40} {'requests':>8} {'failed':>6} {'bound':>5} {'recovery_s':>10} {'slowest_s':>9}"]
    for r in rows:
        lines.append(f"  {r['fault']:<40} {r['requests']:>8} {r['failed']:>6} {r['bound']:>5}"
                     f" {r['recovery_s']:>10.3f} {r['slowest_s']:>9.3f}")
        for f in r["failures"]:
            lines.append(f"      {f}")
    print("\n".join(lines))
    path = os.path.join(str(tmp_path), f"chaos-{scenario}.json")
    with open(path, "w") as f:
        json.dump({"scenario": scenario, "faults": rows}, f, indent=1)
    return path


def assert_within(rows):
    """Every row's failures within its bound, and traffic back to normal by
    its end (its last TAIL requests succeeded)."""
    for r in rows:
        assert r["failed"] <= r["bound"], f"{r['fault']}: {r['failed']} failed requests > bound {r['bound']}: {r}"
        assert r["recovered"], f"{r['fault']}: one of the last {TAIL} requests failed: {r}"


def two_endpoint_mesh(reted, tmp_path, ns="demo", docs=(), **policy):
    """Service echo (port 80) with two endpoints through reted: rete-echo
    apps echo-0 and echo-1 (same port, hosts of their own), each behind its
    sidecar (service account echo), and a client sidecar client-0. A
    DestinationRule balances ROUND_ROBIN (the default peak-EWMA balancer
    would send nearly everything to the faster endpoint, and a fault on the
    other would go unseen), with `policy`'s other trafficPolicy fields;
    `docs` (routes) are applied with it. Returns a dict."""
    hosts = [fresh_host(), fresh_host()]
    port = free_port(hosts[0])
    rule = destination_rule("echo", ns, "echo", loadBalancer={"simple": "ROUND_ROBIN"}, **policy)
    reted.apply_ok([service("echo", ns, [(80, "HTTP", port)]), rule, *docs], "echo.yaml")
    apps, sidecars = [], []
    for i, h in enumerate(hosts):
        proc, _ = start_echo("--quiet", name=f"echo-{i}", host=h, port=port)
        apps.append(proc)
        sidecars.append(start_cp_proxy(reted, tmp_path, f"echo-{i}", ns, "echo", host=h,
                                       inbound=[(port, "HTTP")], labels={"app": "echo"}))
    client = start_cp_proxy(reted, tmp_path, "client-0", ns, "client", labels={"app": "client"})
    m = {"ns": ns, "hosts": hosts, "port": port, "apps": apps, "sidecars": sidecars, "client": client}
    wait_for(lambda: served_by(m, 20) == set(hosts), 30, 0.3, "both endpoints serving through the mesh")
    return m


def served_by(m, n):
    """The set of echo hosts that answered `n` fresh requests through the client sidecar."""
    seen = set()
    addr, port = m["client"].outbound.rsplit(":", 1)
    for _ in range(n):
        c = http.client.HTTPConnection(addr, int(port), timeout=10)
        try:
            c.request("GET", "/", headers={"Host": "echo"})
            r = c.getresponse()
            body = r.read()
            if r.status == 200:
                seen.add(json.loads(body)["instance"].rsplit(":", 1)[0])
        except (OSError, http.client.HTTPException, ValueError):
            pass
        finally:
            c.close()
    return seen


__all__ = ["Traffic", "report", "assert_within", "two_endpoint_mesh", "served_by", "curl_status"]


def records_from_json(path):
    """The records a `chaos.py traffic` run wrote (bodies as bytes)."""
    with open(path) as f:
        return [(s, d, st, e, b.encode()) for s, d, st, e, b in json.load(f)]


def main(argv):
    """`chaos.py traffic OUTBOUND HOST RATE DURATION OUT.json`: a Traffic
    run as a process of its own (inside a network namespace, where the
    test's own process cannot connect), writing its records to OUT.json
    when done; SIGTERM ends it early. Times are CLOCK_MONOTONIC, which the
    test's process shares."""
    import signal
    _, outbound, host, rate, duration, out = argv
    t = Traffic(outbound, host, rate=float(rate), duration=float(duration))
    signal.signal(signal.SIGTERM, lambda *_: t._stop.set())
    t.start()
    print("chaos traffic started", flush=True)
    shown = 0
    while t._thread.is_alive():
        t._thread.join(0.2)
        if len(t.records) >= shown + 40:
            shown = len(t.records)
            print(f"chaos traffic at {shown} requests", flush=True)
    with open(out + ".tmp", "w") as f:
        json.dump([(s, d, st, e, b[:4000].decode(errors="replace")) for s, d, st, e, b in t.records], f)
    os.rename(out + ".tmp", out)
    print(f"chaos traffic done: {len(t.records)} requests", flush=True)


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
