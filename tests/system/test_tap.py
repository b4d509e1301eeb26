"""Tap, top and diagnose (issue 12): `retectl tap` streams live requests
from the proxies through reted while they happen; the proxies capture only
while someone taps (rete_proxy_tap_active) and stop when the client leaves;
`retectl top` counts them by path; `retectl diagnose` names a fault.

The mesh is controlplane.echo_service_mesh: client-0 -> Service echo ->
echo-0 (rete-echo), all through reted."""
import http.client
import json
import os
import subprocess
import threading

from controlplane import apply_and_push, echo_service_mesh, proxy_metric, start_reted
from helpers import build_path, run_tool, wait_for
from mesh import http_route


def ctl_env(reted, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETE_")}
    env["HOME"] = str(tmp_path)
    tok = tmp_path / "admin.token"
    tok.write_text(reted.admin_token)
    return [build_path("retectl"), "--server", reted.api, "--token-file", str(tok)], env


def retectl(reted, tmp_path, *args, timeout=60):
    cmd, env = ctl_env(reted, tmp_path)
    return run_tool([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)


class Tap:
    """retectl tap in the background: its stdout lines gathered by a
    thread; started() waits for "tap: on at N proxies" on stderr."""

    def __init__(self, reted, tmp_path, *args):
        cmd, env = ctl_env(reted, tmp_path)
        self.proc = subprocess.Popen(cmd + ["tap", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.out, self.err = [], []
        self.threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(f, into):
        for line in f:
            into.append(line.rstrip("\n"))

    def started(self):
        wait_for(lambda: any(line.startswith("tap: on at") or "(shared)" in line for line in self.err), 30, 0.1,
                 f"the tap to start: {self.err}")

    def events(self):
        return [json.loads(line) for line in list(self.out)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=20)
        for t in self.threads:
            t.join(timeout=10)


def send(outbound, paths, method="GET", headers=None):
    host, port = outbound.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    out = []
    try:
        for p in paths:
            conn.request(method, p, headers={"Host": "echo", **(headers or {})})
            r = conn.getresponse()
            r.read()
            out.append(r.status)
    finally:
        conn.close()
    return out


def test_tap_filters_max_redaction_and_stop(tmp_path):
    reted = start_reted(tmp_path)
    try:
        m = echo_service_mesh(reted, tmp_path)
        client, server = m["client"], m["server"]
        # nobody taps: nothing is on, nothing captured
        assert proxy_metric(client.host, "rete_proxy_tap_active") == 0
        send(client.outbound, ["/before"])

        tap = Tap(reted, tmp_path, "deploy", "echo", "-n", "demo", "--path", "/tapped", "-o", "json")
        try:
            tap.started()
            assert proxy_metric(server.host, "rete_proxy_tap_active") == 1
            assert proxy_metric(client.host, "rete_proxy_tap_active") == 0  # not in the target
            send(client.outbound, ["/other", "/tapped/a", "/tapped/b?status=503"],
                 headers={"X-Secret": "s3cr3t", "Authorization": "Bearer hunter2"})
            evs = wait_for(lambda: (lambda e: e if len(e) >= 2 else None)(tap.events()), 30, 0.2,
                           "two tapped requests")
            assert sorted(e["path"] for e in evs) == ["/tapped/a", "/tapped/b?status=503"]
            a = next(e for e in evs if e["path"] == "/tapped/a")
            b = next(e for e in evs if e["path"] != "/tapped/a")
            assert (a["status"], b["status"]) == (200, 503)
            assert a["direction"] == "inbound" and a["method"] == "GET" and a["proxy"] == "demo/echo-0"
            assert a["source"]["workload"] == "client-0" and a["destination"]["workload"] == "echo-0"
            assert a["source"]["principal"].endswith("/ns/demo/sa/client")
            assert a["service"] == "echo.demo.svc.cluster.local"
            assert a["latencyMs"] >= 0 and a["time"].endswith("Z")
            # header values redacted without --headers; Authorization always
            hdrs = dict(a["headers"])
            assert hdrs.get("x-secret") == "REDACTED" and hdrs.get("authorization") == "REDACTED"
            assert "s3cr3t" not in json.dumps(evs) and "hunter2" not in json.dumps(evs)
            assert not any(e["path"] in ("/before", "/other") for e in tap.events())
        finally:
            tap.stop()
        # the client left: the proxy stops capturing within seconds
        wait_for(lambda: proxy_metric(server.host, "rete_proxy_tap_active") == 0, 15, 0.2,
                 "the tap stopped at the proxy")
        captured = proxy_metric(server.host, "rete_proxy_tap_events_total")
        send(client.outbound, ["/tapped/after"])
        assert proxy_metric(server.host, "rete_proxy_tap_events_total") == captured

        # --headers: values shown, Authorization and Cookie never; --method, --status; --max ends it
        tap = Tap(reted, tmp_path, "service", "echo", "-n", "demo", "--headers", "--status", "503",
                  "--method", "GET", "--max", "2", "-o", "json")
        try:
            tap.started()
            assert proxy_metric(client.host, "rete_proxy_tap_active") == 1  # a Service: both sides
            send(client.outbound, ["/x", "/y?status=503", "/z?status=503"],
                 headers={"X-Secret": "s3cr3t", "Authorization": "Bearer hunter2", "Cookie": "c=1"})
            send(client.outbound, ["/p?status=503"], method="POST")
            assert tap.proc.wait(timeout=30) == 0, tap.err
            tap.stop()
            evs = tap.events()
            assert len(evs) == 2, evs
            assert all(e["status"] == 503 and e["method"] == "GET" for e in evs)
            hdrs = dict(evs[0]["headers"])
            assert hdrs["x-secret"] == "s3cr3t"
            assert hdrs["authorization"] == "REDACTED" and hdrs["cookie"] == "REDACTED"
        finally:
            tap.stop()
        for p in (client, server):
            wait_for(lambda p=p: proxy_metric(p.host, "rete_proxy_tap_active") == 0, 15, 0.2,
                     "--max ended the tap at the proxies")

        # bad input: a clear error; no token: 401
        r = retectl(reted, tmp_path, "tap", "pods", "echo")
        assert r.returncode == 2 and "deploy|service|workload" in r.stderr
        st, body = reted.request("GET", "/api/v1/tap?kind=deploy&name=echo&namespace=demo&path=nope")
        assert st == 400 and "path" in body["error"]
        st, _ = reted.request("GET", "/api/v1/tap?kind=deploy&name=echo&namespace=demo", auth=False)
        assert st == 401
    finally:
        reted.stop()


def test_top_counts_by_path(tmp_path):
    reted = start_reted(tmp_path)
    try:
        m = echo_service_mesh(reted, tmp_path)
        client = m["client"]
        cmd, env = ctl_env(reted, tmp_path)
        top = subprocess.Popen([*cmd, "top", "service", "echo", "-n", "demo", "--once", "--duration", "8s",
                                "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
        # both sidecars tap once the proxies started it
        wait_for(lambda: proxy_metric(client.host, "rete_proxy_tap_active") == 1 and
                 proxy_metric(m["server"].host, "rete_proxy_tap_active") == 1, 30, 0.1, "top's tap started")
        send(client.outbound, ["/a"] * 5 + ["/b?status=500"] * 3 + ["/a?x=1"] * 2)
        out, err = top.communicate(timeout=60)
        assert top.returncode == 0, err
        rows = {(r["method"], r["path"]): r for r in json.loads(out)["items"]}
        # one count per request, though both sidecars report each
        assert rows[("GET", "/a")]["count"] == 7 and rows[("GET", "/a")]["successRate"] == 1
        assert rows[("GET", "/b")]["count"] == 3 and rows[("GET", "/b")]["failures"] == 3
    finally:
        reted.stop()


def test_diagnose_names_an_injected_fault(tmp_path):
    reted = start_reted(tmp_path, "--stats-bucket", "1s")
    try:
        m = echo_service_mesh(reted, tmp_path, client_extra=["--stats-interval", "1"],
                              echo_extra=["--stats-interval", "1"])
        client, server = m["client"], m["server"]
        rule = {"backendRefs": [{"name": "echo", "port": 80}],
                "fault": {"abort": {"percentage": {"value": 50}, "httpStatus": 503}}}
        apply_and_push(reted, [http_route("echo-route", "demo", "echo", [rule])], [client, server])
        stop = threading.Event()

        def traffic():
            for _ in range(600):  # bounded: about 30 s at most
                if stop.is_set():
                    return
                send(client.outbound, ["/"] * 10)
                stop.wait(0.5)
        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        try:
            wait_for(lambda: proxy_metric(client.host, "rete_proxy_faults_injected_total") >= 10, 30, 0.3,
                     "faults injected")
            r = retectl(reted, tmp_path, "diagnose", "echo", "-n", "demo", "--duration", "4s")
        finally:
            stop.set()
            t.join(timeout=30)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "FI" in r.stdout and "fault injected" in r.stdout, r.stdout
        assert "Verdict: demo/echo is failing" in r.stdout and "503" in r.stdout, r.stdout
        assert "demo/echo-0" in r.stdout and "SYNCED" in r.stdout, r.stdout
    finally:
        reted.stop()
