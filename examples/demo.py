#!/usr/bin/python3
"""rete demo: two services in a small mesh on this machine, no root needed.

    frontend   rete-echo (its app) + rete-client (its outgoing traffic) + sidecar
    backend    v1 and v2, each rete-echo --version-label vN + its own sidecar,
               behind an HTTPRoute that sends 90% to v1 and 10% to v2

Every workload has its own loopback address (127.0.0.41, .42, .43 by default;
bench/run.py uses .10-.32)
and its sidecar listens on the standard ports there: 15001 outbound, 15008 mesh
(mTLS between sidecars), 15006 inbound, 15000 admin. Certificates come from a
demo CA (ECDSA P-256) made with the openssl CLI; each sidecar has a SPIFFE ID
spiffe://cluster.local/ns/demo/sa/<service>.

    make demo                      # or: /usr/bin/python3 examples/demo.py
    examples/demo.py --duration 8  # stop by itself after 8 s (tests)

Runs in the foreground until Ctrl-C (or SIGTERM), then stops every process it
started (SIGTERM, wait) and exits 0. Files (certificates, configurations, logs)
go to .demo/ in the checkout. Standard library only.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system"))
import certs  # noqa: E402  (the openssl-CLI CA helpers shared with the system tests)

NS = "demo"
TRUST_DOMAIN = "cluster.local"
APP_PORT = 8080  # every app listens on <its address>:8080
SERVICE_PORT = 80  # the port callers use (http://backend/ = port 80)
PROXY_PORTS = {"outbound": 15001, "inbound": 15006, "mesh": 15008, "admin": 15000}
WEIGHTS = {"v1": 90, "v2": 10}
READY_LINE = "rete demo is ready"

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Child side of Popen: get SIGTERM if the demo itself dies (even by
    SIGKILL), so no sidecar outlives it; own process group, so a Ctrl-C in
    the terminal reaches only the demo, which then stops things in order."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def say(msg=""):
    print(msg, flush=True)


def fail(msg):
    print("demo: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def build_binary(build, name):
    for sub in ("examples", "src/proxy", ""):
        p = build / sub / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    fail(f"{name} not found under {build}: run `make build` first")


# ---- resources ------------------------------------------------------------

def resources(hosts):
    """The documents every sidecar shares: Services, Workloads, the split."""
    def svc(name, selector):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
                "spec": {"ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "HTTP",
                                    "targetPort": APP_PORT}], "selector": selector}}

    def wl(name, sa, address, labels):
        return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "Workload",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"address": address, "serviceAccount": sa, "labels": labels}}

    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "backend-split", "namespace": NS},
             "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "backend",
                                      "port": SERVICE_PORT}],
                      "rules": [{"backendRefs": [
                          {"name": f"backend-{v}", "port": SERVICE_PORT, "weight": w}
                          for v, w in WEIGHTS.items()]}]}}
    return [
        svc("frontend", {"app": "frontend"}),
        svc("backend", {"app": "backend"}),
        svc("backend-v1", {"app": "backend", "version": "v1"}),
        svc("backend-v2", {"app": "backend", "version": "v2"}),
        wl("frontend-0", "frontend", hosts["frontend"], {"app": "frontend", "version": "v1"}),
        wl("backend-v1-0", "backend", hosts["backend-v1"], {"app": "backend", "version": "v1"}),
        wl("backend-v2-0", "backend", hosts["backend-v2"], {"app": "backend", "version": "v2"}),
        route,
    ]


def proxy_doc(name, sa, address, cert, key, ca):
    return {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"serviceAccount": sa, "address": address,
                     "tls": {"certFile": cert, "keyFile": key, "caFile": ca},
                     "inbound": [{"port": APP_PORT, "protocol": "HTTP"}],
                     "limits": {"drainTimeout": "2s"}}}


def write_yaml(path, docs):
    # JSON documents in a YAML stream: JSON is YAML, no YAML library needed.
    with open(path, "w") as f:
        f.write("\n---\n".join(json.dumps(d, indent=1) for d in docs) + "\n")


# ---- ports ----------------------------------------------------------------

def port_owner(host, port):
    """Best effort: the process listening on host:port, from `ss -ltnp`."""
    if not shutil.which("ss"):
        return ""
    r = subprocess.run(["ss", "-Hltnp", f"( sport = :{port} )"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if f"{host}:{port}" in line or f"*:{port}" in line or f"0.0.0.0:{port}" in line:
            m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
            if m:
                return f" by {m.group(1)} (pid {m.group(2)})"
    return ""


def check_ports(hosts, demo_dir):
    """Every address:port the demo will listen on must be free. A plain bind
    (no SO_REUSEPORT) fails even when the holder used SO_REUSEPORT, which a
    second rete-proxy would not notice on its own."""
    busy = []
    for host in hosts.values():
        for port in [APP_PORT, *PROXY_PORTS.values()]:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
            try:
                s.bind((host, port))
                s.listen(1)
            except OSError as e:
                busy.append(f"{host}:{port} ({e.strerror}){port_owner(host, port)}")
            finally:
                s.close()
    if busy:
        hint = "Another process listens on what the demo needs:\n  " + "\n  ".join(busy) + "\n"
        pid = read_pid(demo_dir / "demo.pid")
        if pid:
            hint += (f"A previous demo is still running (pid {pid}): press Ctrl-C in its terminal, "
                     f"or `kill {pid}` (it stops its processes and exits).\n")
        else:
            hint += ("If that is a previous demo, press Ctrl-C in its terminal (or kill its "
                     "examples/demo.py process); or pick other addresses with --ip-base N.\n")
        fail("port in use, not starting.\n" + hint)


def read_pid(path):
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"demo.py" in cmd else None


# ---- processes ------------------------------------------------------------

class Proc:
    def __init__(self, name, args, log_dir, ready):
        self.name, self.args = name, args
        self.log = log_dir / f"{name}.log"
        self.ready = re.compile(ready) if ready else None
        self.fh = open(self.log, "wb")
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.fh, stderr=subprocess.STDOUT,
                                  start_new_session=True, preexec_fn=_die_with_parent)

    def text(self):
        return self.log.read_bytes().decode(errors="replace")

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            if self.ready.search(self.text()):
                return
            if self.p.poll() is not None:
                fail(f"{self.name} exited with {self.p.returncode} while starting:\n"
                     f"  {' '.join(self.args)}\n{tail(self.text())}")
            if time.monotonic() > deadline:
                fail(f"{self.name} not ready after {timeout}s; log {self.log}:\n{tail(self.text())}")
            time.sleep(0.05)

    def stop(self, timeout=10):
        """SIGTERM, wait; SIGKILL only if it ignores us. Returns its exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
            say(f"  {self.name}: did not stop within {timeout}s, killed")
        self.fh.close()
        return rc


def tail(text, n=15):
    return "\n".join("    " + line for line in text.strip().splitlines()[-n:])


def http_get(url, host=None, timeout=2):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy
    with opener.open(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_http(url, host=None, timeout=15):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(url, host)
            if status == 200:
                return body
            last = f"status {status}"
        except Exception as e:  # noqa: BLE001 (any failure: retry until the deadline)
            last = str(e)
        time.sleep(0.1)
    fail(f"{url} (Host: {host or '-'}) did not answer 200 within {timeout}s: {last}")


# ---- the guide --------------------------------------------------------------

def guide(hosts, demo_dir):
    fe, v1, v2 = hosts["frontend"], hosts["backend-v1"], hosts["backend-v2"]
    rows = [("frontend", "rete-echo + rete-client", fe), ("backend v1", "rete-echo v1", v1),
            ("backend v2", "rete-echo v2", v2)]
    out = ["", "=" * 78, f"{READY_LINE}: 3 workloads, 3 sidecars, mTLS between them", "=" * 78, ""]
    out.append(f"  {'service':<12}{'app':<26}{'app address':<18}sidecar (outbound / mesh / admin)")
    for name, app, h in rows:
        out.append(f"  {name:<12}{app:<26}{h + ':' + str(APP_PORT):<18}"
                   f"{h}:{PROXY_PORTS['outbound']} / :{PROXY_PORTS['mesh']} / :{PROXY_PORTS['admin']}")
    ca = demo_dir / "certs" / "demo-ca.crt"
    out += [
        "",
        f"  rete-client (the frontend's outgoing traffic) sends 20 req/s to http://backend/hello",
        f"  through the frontend sidecar {fe}:15001; the HTTPRoute backend-split sends",
        f"  {WEIGHTS['v1']}% to backend-v1 and {WEIGHTS['v2']}% to backend-v2. Identities: "
        f"spiffe://{TRUST_DOMAIN}/ns/{NS}/sa/<frontend|backend>",
        "",
        "Try, from another terminal (as the frontend app would):",
        "",
        "  # call backend through the frontend's sidecar (HTTP/1.1, Host header names the service);",
        "  # the answer shows the version and the caller's SPIFFE ID (x-forwarded-client-cert)",
        f"  curl -s -H 'Host: backend' http://{fe}:15001/hello",
        "",
        "  # the sidecar as an HTTP proxy (absolute-form), and HTTP/2 from the app",
        f"  curl -s -x http://{fe}:15001 http://backend.demo/",
        f"  curl -s --http2-prior-knowledge -H 'Host: backend' http://{fe}:15001/h2",
        "",
        "  # the 90/10 split, counted over 100 requests",
        f"  for i in $(seq 100); do curl -s -H 'Host: backend' http://{fe}:15001/; echo; done"
        " | grep -o '\"version\":\"v[12]\"' | sort | uniq -c",
        "",
        "  # a host the mesh does not know: 404 with the reason",
        f"  curl -si -H 'Host: nosuch' http://{fe}:15001/",
        "",
        "  # metrics and the effective configuration (admin port)",
        f"  curl -s http://{fe}:15000/metrics | grep rete_proxy_requests_total",
        f"  curl -s http://{v1}:15000/metrics | grep -E 'rete_proxy_(requests_total|mesh_refused)'",
        f"  curl -s http://{fe}:15000/config | python3 -m json.tool | less",
        "",
        "  # the mesh port (mTLS, ALPN h2) wants a client certificate from the mesh CA; without",
        "  # one the handshake is refused ('alert certificate required'), counted in",
        "  # rete_proxy_mesh_refused_total and logged in logs/backend-v1-sidecar.log",
        f"  openssl s_client -connect {v1}:15008 -alpn h2 -CAfile {ca} -brief </dev/null 2>&1"
        " | grep -E 'Verification|alert'",
        "",
        f"Files: {demo_dir}/ (certs/, *.yaml configs, logs/). Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(out)


# ---- traffic summary --------------------------------------------------------

CLIENT_LINE = re.compile(r"^ok=\d+ err=\d+ .*$", re.M)
ECHO_REQ = re.compile(r"^\S+ info +\S+ [A-Z]+ \S+ \d{3} ", re.M)


class Split:
    """Counts the requests each backend version logged since the last call."""

    def __init__(self, procs):
        self.procs = procs
        self.offsets = {name: 0 for name in procs}

    def delta(self):
        counts = {}
        for name, proc in self.procs.items():
            with open(proc.log, "rb") as f:
                f.seek(self.offsets[name])
                data = f.read()
            cut = data.rfind(b"\n") + 1
            self.offsets[name] += cut
            counts[name] = len(ECHO_REQ.findall(data[:cut].decode(errors="replace")))
        return counts


def summary_line(client, split, every):
    lines = CLIENT_LINE.findall(client.text())
    c = lines[-1] if lines else "(no summary yet)"
    d = split.delta()
    total = sum(d.values()) or 1
    parts = "  ".join(f"{v} {n} ({round(100 * n / total)}%)" for v, n in d.items())
    return f"[traffic] rete-client: {c} | backend, last {every}s: {parts}"


# ---- main -------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=0, help="stop after S seconds (default: Ctrl-C)")
    ap.add_argument("--ip-base", type=int, default=41,
                    help="workloads use 127.0.0.N, N+1, N+2 (default 41)")
    ap.add_argument("--dir", default=str(REPO / ".demo"), help="demo directory (default .demo/)")
    ap.add_argument("--rate", type=int, default=20, help="rete-client requests per second (default 20)")
    ap.add_argument("--every", type=int, default=5, help="seconds between traffic summaries (default 5)")
    ap.add_argument("--build", default=os.environ.get("RETE_BUILD", str(REPO / "build")),
                    help="build tree (default build/ or $RETE_BUILD)")
    args = ap.parse_args()
    if not 2 <= args.ip_base <= 250:
        fail("--ip-base must be 2..250")

    build = Path(args.build)
    proxy_bin = build_binary(build, "rete-proxy")
    echo_bin = build_binary(build, "rete-echo")
    client_bin = build_binary(build, "rete-client")
    if not shutil.which(certs.OPENSSL):
        fail("the openssl command is needed (Debian: apt-get install openssl; `make deps`)")

    demo_dir = Path(args.dir).resolve()
    hosts = {"frontend": f"127.0.0.{args.ip_base}", "backend-v1": f"127.0.0.{args.ip_base + 1}",
             "backend-v2": f"127.0.0.{args.ip_base + 2}"}
    demo_dir.mkdir(parents=True, exist_ok=True)
    check_ports(hosts, demo_dir)

    stop_requested = []

    def on_signal(signum, _frame):
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    (demo_dir / "demo.pid").write_text(f"{os.getpid()}\n")

    # Fresh certificates and configurations every run.
    cert_dir, log_dir = demo_dir / "certs", demo_dir / "logs"
    for d in (cert_dir, log_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    say(f"demo: making a CA and workload certificates in {cert_dir} (openssl, ECDSA P-256)")
    ca = certs.make_ca(str(cert_dir), "demo ca")
    shared = resources(hosts)
    workloads = [("frontend", "frontend", "v1"), ("backend-v1", "backend", "v1"),
                 ("backend-v2", "backend", "v2")]
    configs = {}
    for name, sa, _ in workloads:
        crt, key = certs.make_workload_cert(str(cert_dir), ca, TRUST_DOMAIN, NS, sa, name=name)
        path = demo_dir / f"{name}.yaml"
        write_yaml(path, [proxy_doc(name, sa, hosts[name], crt, key, ca[0]), *shared])
        r = subprocess.run([proxy_bin, "--check-config", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"configuration {path} rejected: {r.stderr.strip()}")
        configs[name] = path

    procs = []  # in start order; stopped in reverse

    def start(name, argv, ready):
        p = Proc(name, argv, log_dir, ready)
        procs.append(p)
        return p

    rc = 0
    try:
        say("demo: starting the apps and their sidecars")
        apps = {}
        for name, sa, version in workloads:
            addr = f"{hosts[name]}:{APP_PORT}"
            apps[name] = start(f"{name}-app", [echo_bin, "--listen", addr, "--name", sa,
                                               "--version-label", version],
                               rf"rete-echo {sa} listening on {re.escape(addr)}")
        sidecars = {}
        for name, _, _ in workloads:
            sidecars[name] = start(f"{name}-sidecar", [proxy_bin, "--config", str(configs[name])],
                                   r"ready:")
        for p in procs:
            p.wait_ready()
        for name in sidecars:
            wait_http(f"http://{hosts[name]}:{PROXY_PORTS['admin']}/ready")
        # end to end, through mTLS, until both versions have answered once
        seen = set()
        deadline = time.monotonic() + 20
        while seen != set(WEIGHTS) and time.monotonic() < deadline and not stop_requested:
            body = wait_http(f"http://{hosts['frontend']}:{PROXY_PORTS['outbound']}/", host="backend")
            seen.add(json.loads(body)["version"])
        if seen != set(WEIGHTS) and not stop_requested:
            fail(f"only {sorted(seen)} of backend answered through the mesh")

        client = start("frontend-client",
                       [client_bin, "--url", "http://backend/hello", "--proxy",
                        f"{hosts['frontend']}:{PROXY_PORTS['outbound']}", "--rate", str(args.rate)],
                       r"ok=\d+")
        if not stop_requested:
            client.wait_ready()
        split = Split({"v1": apps["backend-v1"], "v2": apps["backend-v2"]})
        split.delta()  # start counting from here

        if not stop_requested:
            say(guide(hosts, demo_dir))
            say(f"demo: traffic summary every {args.every}s; press Ctrl-C to stop")
        started = time.monotonic()
        next_summary = started + args.every
        while not stop_requested:
            time.sleep(0.2)
            now = time.monotonic()
            dead = [p for p in procs if p.p.poll() is not None]
            if dead:
                for p in dead:
                    say(f"demo: {p.name} exited unexpectedly ({p.p.returncode}); log {p.log}:\n"
                        f"{tail(p.text())}")
                rc = 1
                break
            if now >= next_summary:
                say(summary_line(client, split, args.every))
                next_summary += args.every
            if args.duration and now - started >= args.duration:
                say(f"demo: --duration {args.duration:g}s reached")
                break
        if stop_requested:
            say(f"\ndemo: {signal.Signals(stop_requested[0]).name} received")
    finally:
        # Stop the traffic first, then the sidecars (they drain), then the apps.
        say("demo: stopping (SIGTERM, then wait for each process)")
        for p in reversed(procs):
            code = p.stop()
            if p.name == "frontend-client":
                done = [l for l in p.text().splitlines() if l.startswith("done ")]
                if done:
                    say(f"[traffic] rete-client {done[-1]}")
            # rete-client exits 1 when a request was cut short by the stop: not a failure here
            if code != 0 and p.name != "frontend-client":
                say(f"  {p.name} exited with {code}; log {p.log}")
                rc = 1
        try:
            if read_pid(demo_dir / "demo.pid") in (None, os.getpid()):
                (demo_dir / "demo.pid").unlink()
        except OSError:
            pass
    say(f"demo: all {len(procs)} processes stopped" + ("" if rc == 0 else " (with errors)") +
        f"; logs are in {log_dir}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
