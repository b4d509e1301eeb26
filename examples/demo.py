#!/usr/bin/python3
"""rete demo: a mesh run by its control plane on this machine, as a small
cluster of network namespaces when it may (root), else on loopback addresses.

    reted      the control plane: store, CA, configuration pushed to every sidecar
               (operator API 127.0.0.1:15014 for retectl, proxy API 127.0.0.1:15012)
    frontend   rete-echo (its app) + rete-client (its outgoing traffic) + sidecar
    backend    v1 and v2, each rete-echo --version-label vN + its own sidecar,
               behind an HTTPRoute that sends 90% to v1 and 10% to v2
    ratings    rete-echo + sidecar; its AuthorizationPolicy lets backend call it, and
               frontend only GET /public/* (anything else: 403)

Two modes (RETE_DEMO_MODE=loopback|netns, or --mode; default: netns when it
has the privileges: root, `ip netns` works, nft is installed):

  netns     each workload, reted and an "outside" host in a network namespace
            of its own (rete-demo-<name>), with its own address on a bridge
            (10.251.0.0/24 in namespaces only: no route out, checked at start;
            examples/nettopo.py). `rete-proxy init` in each workload's
            namespace sends the app's connections (and DNS) through its
            sidecar: the apps run with no proxy setting and call
            http://backend/hello by plain name (the sidecar answers DNS with
            the Service's clusterIP, assigned by reted from MeshConfig
            serviceCIDR 10.251.0.128/25), and a direct call to an app from
            another namespace lands on the sidecar (STRICT: refused).
  loopback  each workload on its own loopback address (127.0.0.41 .. .44 by
            default); the apps reach the mesh through their sidecar's port
            15001 (rete-client --proxy, curl -H 'Host: backend').

Each workload has its app on :8080 and its sidecar on the standard ports
(15001 outbound, 15006 inbound, 15008 mesh, 15000 admin, 15020 stats).
.demo/workloads.json describes them for scripts (name, namespace, network
namespace, address, app ports, sidecar ports). The sidecars run `rete-proxy
--control-plane`: each trades a single-use join token (`retectl token create`)
for its certificate (SPIFFE ID spiffe://cluster.local/ns/demo/sa/<account>),
registers its Workload and gets its configuration from reted. The Services,
the route and the policy are applied with `retectl apply -f examples/demo/`.

    make demo                      # or: /usr/bin/python3 examples/demo.py
    examples/demo.py --duration 8  # stop by itself after 8 s (tests)

Runs in the foreground until Ctrl-C (or SIGTERM), then stops every process it
started (rete-client, the sidecars, which drain, the apps, reted last),
deletes its namespaces (their bridge and rules go with them) and exits 0. A
topology left by a killed demo is deleted at the next start.
Every run starts afresh: reted's data dir (.demo/reted/), the proxies' data
dirs, the tokens and the logs under .demo/ are wiped at start. Standard
library only.
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
import urllib.error
import urllib.request
from pathlib import Path

import nettopo  # examples/nettopo.py: hosts as network namespaces on a bridge

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "examples" / "demo"

NS = "demo"
TRUST_DOMAIN = "cluster.local"
APP_PORT = 8080  # every app listens on <its address>:8080
PROXY_PORTS = {"outbound": 15001, "inbound": 15006, "mesh": 15008, "admin": 15000}
STATS_PORT, DNS_PORT = 15020, 15053  # netns mode: stats on the workload address, DNS on loopback
API_PORT, XDS_PORT = 15014, 15012
WEIGHTS = {"v1": 90, "v2": 10}
READY_LINE = "rete demo is ready"
MODES = ("loopback", "netns")

# netns mode: the topology's addresses (a /24 inside the namespaces only) and
# the Services' virtual addresses, assigned by reted from the upper half.
NETNS_PREFIX = "rete-demo"
NETNS_SUBNET, NETNS_SUBNET6 = "10.251.0", "fd00:251::"
SERVICE_CIDR = "10.251.0.128/25"
# The sidecars' user and group in netns mode: unprivileged, with no login
# (numeric, so nothing is added to the machine's users); init leaves their
# own connections alone by both.
PROXY_UID = PROXY_GID = 1337
OUTSIDE = "outside"  # a host with no sidecar: the direct call from another namespace

# name, service account, app (rete-echo --name), version, labels
WORKLOADS = [
    ("frontend-0", "frontend", "frontend", "v1", {"app": "frontend", "version": "v1"}),
    ("backend-v1-0", "backend", "backend", "v1", {"app": "backend", "version": "v1"}),
    ("backend-v2-0", "backend", "backend", "v2", {"app": "backend", "version": "v2"}),
    ("ratings-0", "ratings", "ratings", "v1", {"app": "ratings", "version": "v1"}),
]

# What each workload calls (rete-proxy --egress): reted sends each sidecar
# only those Services and the ones it serves. ratings names none: it gets
# the whole mesh, the default.
EGRESS = {"frontend-0": ["./backend", "./ratings"], "backend-v1-0": ["./ratings"],
          "backend-v2-0": ["./ratings"]}

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
    for sub in ("", "examples", "src/proxy", "src/control", "src/ctl"):  # build/retectl first
        p = build / sub / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    fail(f"{name} not found under {build}: run `make build` first")


def shown(path):
    """A path as the user would type it from the current directory."""
    path = Path(os.path.abspath(path))  # not resolve(): keep build/retectl, not its target
    try:
        rel = path.relative_to(Path.cwd())
        return str(rel) if str(rel) != "." else "."
    except ValueError:
        return str(path)


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


def check_ports(endpoints, demo_dir):
    """Every address:port the demo will listen on must be free. A plain bind
    (no SO_REUSEPORT) fails even when the holder used SO_REUSEPORT, which a
    second rete-proxy would not notice on its own."""
    busy = []
    for host, port in endpoints:
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
    """(status, body); an HTTP error status is an answer too, not an exception."""
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url, host=None, timeout=15, want=200):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(url, host)
            if status == want:
                return body
            last = f"status {status}"
        except Exception as e:  # noqa: BLE001 (any failure: retry until the deadline)
            last = str(e)
        time.sleep(0.1)
    fail(f"{url} (Host: {host or '-'}) did not answer {want} within {timeout}s: {last}")


# ---- the guide --------------------------------------------------------------

def guide(hosts, reted_host, demo_dir, retectl, user_context):
    fe, be, ra = hosts["frontend-0"], hosts["backend-v1-0"], hosts["ratings-0"]
    ctl = shown(retectl)
    ex = shown(RESOURCES)
    rows = [("reted", "control plane", f"{reted_host}:{API_PORT} (API)", f"{reted_host}:{XDS_PORT} (proxies)", "")]
    for name, sa, app, version, _ in WORKLOADS:
        what = "rete-echo + rete-client" if app == "frontend" else f"rete-echo {version}" if app == "backend" \
            else "rete-echo"
        rows.append((name, what, f"{hosts[name]}:{APP_PORT}",
                     f"{hosts[name]}:{PROXY_PORTS['outbound']}/{PROXY_PORTS['inbound']}/"
                     f"{PROXY_PORTS['mesh']}/{PROXY_PORTS['admin']}", sa))
    out = ["", "=" * 78,
           f"{READY_LINE}: reted, 4 workloads with their sidecars, mTLS between them", "=" * 78, ""]
    out.append(f"  {'workload':<14}{'app':<25}{'app address':<23}{'sidecar out/in/mesh/admin':<37}account")
    for r in rows:
        out.append(f"  {r[0]:<14}{r[1]:<25}{r[2]:<23}{r[3]:<37}{r[4]}".rstrip())
    base = shown(demo_dir.parent)
    base = "this directory" if base == "." else base
    where = f"from {base} or below (it finds {demo_dir.name}/reted/context.json)"
    if user_context:
        where += ", or from anywhere (~/.config/rete/context.json)"
    out += [
        "",
        "  rete-client sends steady traffic to http://backend/hello through the frontend sidecar;",
        f"  the HTTPRoute backend-split sends {WEIGHTS['v1']}% to backend v1 and {WEIGHTS['v2']}% to v2.",
        "  ratings' AuthorizationPolicy ratings-allow-backend lets backend call anything and frontend",
        f"  only GET /public/* (identities: spiffe://{TRUST_DOMAIN}/ns/{NS}/sa/<account>).",
        f"  Resources: {ex}/*.yaml. Sidecars got their certificates with single-use join tokens",
        f"  ({shown(demo_dir / 'tokens')}/) and registered their Workloads themselves, with the labels",
        f"  and egress their WorkloadGroups admit ({ex}/05-workload-groups.yaml).",
        "  Each sidecar's config is scoped to what it calls (--egress: frontend -> backend, ratings;",
        "  backend -> ratings) and what it serves; ratings declares nothing and sees the whole mesh.",
        "",
        f"Dashboard: http://{reted_host}:{API_PORT}/dashboard/  (topology, golden metrics, workloads)",
        "  sign in with reted's admin token (it stays in the browser tab; without it reted refuses",
        "  the dashboard's data calls), which this prints:",
        f"  cat {shown(demo_dir / 'reted' / 'admin.token')}",
        "",
        f"retectl, {where}:",
        "",
        f"  {ctl} get svc -n {NS}",
        f"  {ctl} get wl -n {NS} -o wide",
        f"  {ctl} get httproute backend-split -n {NS} -o yaml",
        f"  {ctl} get authorizationpolicy -n {NS} -o yaml",
        f"  {ctl} proxy-status",
        f"  {ctl} proxy-config frontend-0 -n {NS}",
        f"  {ctl} check",
        "",
        "  # the traffic, without Prometheus: golden metrics, live requests, what is wrong",
        f"  {ctl} stat service -n {NS}",
        f"  {ctl} stat edge -n {NS}",
        f"  {ctl} top service backend -n {NS} --once --duration 5s",
        f"  {ctl} tap service backend -n {NS} --max 5",
        f"  {ctl} diagnose backend -n {NS}",
        f"  {ctl} analyze -n {NS}",
        "",
        "  # change the split to 50/50 (watch the traffic line below), then back to 90/10",
        f"  {ctl} apply -f {ex}/split/50-50.yaml",
        f"  {ctl} apply -f {ex}/20-backend-split.yaml",
        "  # or edit the weights in one line",
        f"  sed 's/weight: 90/weight: 0/; s/weight: 10/weight: 100/' {ex}/20-backend-split.yaml"
        f" | {ctl} apply -f -",
        "",
        "  # a join token for one more proxy (single use, 1 hour)",
        f"  {ctl} token create --namespace {NS} --service-account backend",
        "",
        "curl, as the apps would (the sidecar's outbound port; Host names the service):",
        "",
        "  # frontend -> backend: the answer shows the version and the caller's SPIFFE ID",
        f"  curl -s -H 'Host: backend' http://{fe}:15001/hello",
        "",
        "  # frontend -> ratings: 403 (RBAC: access denied), except GET /public/*",
        f"  curl -si -H 'Host: ratings' http://{fe}:15001/",
        f"  curl -s -H 'Host: ratings' http://{fe}:15001/public/stars",
        "",
        "  # backend -> ratings (through backend v1's sidecar): allowed, any path",
        f"  curl -s -H 'Host: ratings' http://{be}:15001/",
        "",
        "  # the split, counted over 100 requests",
        f"  for i in $(seq 100); do curl -s -H 'Host: backend' http://{fe}:15001/; echo; done"
        " | grep -o '\"version\":\"v[12]\"' | sort | uniq -c",
        "",
        "  # metrics and the effective configuration (admin port)",
        f"  curl -s http://{fe}:15000/metrics | grep rete_proxy_requests_total",
        f"  curl -s http://{ra}:15000/metrics | grep rete_proxy_authz_denied_total",
        f"  curl -s http://{reted_host}:{API_PORT}/metrics | grep -E '^rete_reted_(proxies|config_pushes)'",
        "",
        f"Files: {shown(demo_dir)}/ (reted/ data dir, proxies/ data dirs, tokens/, logs/); wiped at the",
        "next start, so every run begins with a new CA, store and tokens. Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(out)


def guide_netns(net, demo_dir, retectl):
    """The guide of netns mode: every command runs in one of the demo's
    namespaces (`ip netns exec`; as root, as the demo itself)."""
    ctl, ex = shown(retectl), shown(RESOURCES)
    h = net.hosts
    ns = {n: net.netns(n) for n in net.names}
    sw = net.topo.switch
    x = "ip netns exec"
    out = ["", "=" * 78,
           f"{READY_LINE}: reted, 4 workloads with their sidecars, mTLS between them",
           "(netns mode: each in its own network namespace, traffic intercepted by rete-proxy init)",
           "=" * 78, ""]
    out.append(f"  {'host':<14}{'network namespace':<26}{'address':<14}runs")
    out.append(f"  {'reted':<14}{ns['reted']:<26}{h['reted']:<14}reted (API 127.0.0.1:{API_PORT} in its namespace, "
               f"proxies :{XDS_PORT})")
    for name, sa, app, version, _ in WORKLOADS:
        what = f"rete-echo {app}" + (f" {version}" if app == "backend" else "") + \
            (" + rete-client" if app == "frontend" else "") + f" :{APP_PORT}, sidecar (sa {sa})"
        out.append(f"  {name:<14}{ns[name]:<26}{h[name]:<14}{what}")
    out.append(f"  {OUTSIDE:<14}{ns[OUTSIDE]:<26}{h[OUTSIDE]:<14}nothing: a machine outside the mesh")
    out.append(f"  {'(switch)':<14}{sw:<26}{'':<14}the bridge br0 joining them ({net.topo.subnet_cidr}, no route out)")
    out += [
        "",
        "  The apps run with no proxy setting: rete-client in frontend-0 calls http://backend/hello by",
        "  plain name. The sidecar answers the DNS query (spec.dns) with backend's clusterIP (reted",
        f"  assigned it from MeshConfig serviceCIDR {SERVICE_CIDR}), init's rules send the connection",
        "  to the sidecar (15001), which calls backend's sidecar over mTLS (15008). Inbound, every",
        "  connection to an app port lands on its sidecar (15006): PeerAuthentication STRICT refuses",
        f"  plaintext. The HTTPRoute backend-split sends {WEIGHTS['v1']}% to v1 and {WEIGHTS['v2']}% to v2;",
        "  ratings lets backend call anything and frontend only GET /public/*.",
        f"  Workloads for scripts: {shown(demo_dir / 'workloads.json')}. Run these as root (sudo):",
        "",
        "an app, unmodified, calling by name (curl in frontend-0's namespace):",
        "",
        f"  {x} {ns['frontend-0']} curl -s http://backend/hello",
        f"  {x} {ns['frontend-0']} curl -si http://ratings/            # 403: frontend may only GET /public/*",
        f"  {x} {ns['frontend-0']} curl -s http://ratings/public/stars",
        f"  {x} {ns['backend-v1-0']} curl -s http://ratings/",
        f"  {x} {ns['frontend-0']} getent hosts backend                # the clusterIP, answered by the sidecar",
        "",
        "a direct call to an app from outside the mesh: refused (STRICT), the app never sees it:",
        "",
        f"  {x} {ns[OUTSIDE]} curl -sv -m 3 http://{h['ratings-0']}:{APP_PORT}/direct",
        f"  {x} {ns['ratings-0']} nft list table inet rete              # the rules doing it",
        "",
        "the packets between hosts are TLS (no plaintext HTTP on the bridge):",
        "",
        f"  {x} {sw} tcpdump -i {net.h['backend-v1-0'].switch_port} -nn -c 20 -A tcp"
        "      # backend-v1-0's port of the bridge",
        "",
        f"metrics and health (stats port {STATS_PORT} on each workload address, from any host):",
        "",
        f"  {x} {ns[OUTSIDE]} curl -s http://{h['frontend-0']}:{STATS_PORT}/metrics | grep istio_requests_total",
        f"  {x} {ns[OUTSIDE]} curl -s http://{h['ratings-0']}:{STATS_PORT}/metrics | grep -E "
        "'rete_proxy_(authz_denied|mesh_refused)_total'",
        f"  {x} {ns[OUTSIDE]} curl -s http://{h['backend-v1-0']}:{STATS_PORT}/ready",
        f"  {x} {ns['frontend-0']} curl -s http://127.0.0.1:{PROXY_PORTS['admin']}/config   "
        "# admin: its own namespace only",
        "",
        f"retectl, in reted's namespace, from {shown(demo_dir.parent) if shown(demo_dir.parent) != '.' else 'this directory'}"
        f" (it finds {demo_dir.name}/reted/context.json):",
        "",
        f"  {x} {ns['reted']} {ctl} get svc -n {NS}",
        f"  {x} {ns['reted']} {ctl} get svc backend -n {NS} -o yaml      # spec.clusterIP",
        f"  {x} {ns['reted']} {ctl} get wl -n {NS} -o wide",
        f"  {x} {ns['reted']} {ctl} proxy-status",
        f"  {x} {ns['reted']} {ctl} proxy-config frontend-0 -n {NS}",
        f"  {x} {ns['reted']} {ctl} check",
        f"  {x} {ns['reted']} {ctl} stat service -n {NS}          # golden metrics; also: stat edge",
        f"  {x} {ns['reted']} {ctl} top service backend -n {NS} --once --duration 5s",
        f"  {x} {ns['reted']} {ctl} tap service backend -n {NS} --max 5",
        f"  {x} {ns['reted']} {ctl} diagnose backend -n {NS}",
        f"  {x} {ns['reted']} {ctl} apply -f {ex}/split/50-50.yaml      # then back: {ex}/20-backend-split.yaml",
        "",
        f"Files: {shown(demo_dir)}/ (reted/, proxies/, tokens/, logs/), wiped at the next start. Stop with",
        "Ctrl-C: the processes stop, then the namespaces (bridge, rules) are deleted.",
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


# ---- reted and retectl --------------------------------------------------------

def child_env():
    """The environment of every process the demo starts: no RETE_SERVER or
    RETE_TOKEN_FILE from the user's shell (they would send retectl elsewhere)."""
    env = dict(os.environ)
    env.pop("RETE_SERVER", None)
    env.pop("RETE_TOKEN_FILE", None)
    return env


class Ctl:
    """retectl with reted's address and admin token given explicitly."""

    def __init__(self, binary, api, token_file, prefix=()):
        self.argv = [*prefix, binary, "--server", api, "--token-file", str(token_file)]

    def __call__(self, *args, what=None, stdin=None):
        r = subprocess.run([*self.argv, *args], capture_output=True, text=True, env=child_env(), timeout=30,
                           input=stdin)
        if r.returncode != 0:
            fail(f"`retectl {' '.join(args)}` failed ({r.returncode}) while {what or 'starting'}:\n"
                 f"{tail(r.stdout + r.stderr)}")
        return r.stdout


def wait_synced(ctl, names, timeout=20):
    """Until reted says every proxy in `names` acknowledged its latest config."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = ctl("proxy-status", "-o", "json", what="waiting for the proxies to sync")
        items = json.loads(out)
        items = items.get("items", items) if isinstance(items, dict) else items
        status = {p.get("name"): str(p.get("status", "")) for p in items}
        if all(status.get(n) == "SYNCED" for n in names):
            return
        last = status
        time.sleep(0.2)
    fail(f"proxies not SYNCED after {timeout}s: {last}")


# ---- where the workloads run: loopback addresses or network namespaces ----------

def ns_get(argv_prefix, url, timeout=2):
    """(status, body) of `curl URL` run with `argv_prefix` (ip netns exec NS);
    status 0 when curl got no HTTP answer."""
    r = subprocess.run([*argv_prefix, "curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", url],
                       capture_output=True, text=True, timeout=timeout + 10)
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


class LoopbackNet:
    """Today's demo: every workload on a 127.0.0.x address of this namespace;
    the apps reach the mesh through their sidecar's port 15001."""
    mode = "loopback"

    def __init__(self, args):
        self.hosts = {w[0]: f"127.0.0.{args.ip_base + i}" for i, w in enumerate(WORKLOADS)}
        if args.reted_ip in self.hosts.values():
            fail(f"--reted-ip {args.reted_ip} is one of the workloads' addresses")
        self.reted_ip = args.reted_ip
        self.api = self.xds = None
        self.api, self.xds = f"{args.reted_ip}:{API_PORT}", f"{args.reted_ip}:{XDS_PORT}"

    def check(self, demo_dir):
        endpoints = [(self.reted_ip, API_PORT), (self.reted_ip, XDS_PORT)]
        endpoints += [(h, p) for h in self.hosts.values() for p in (APP_PORT, *PROXY_PORTS.values())]
        check_ports(endpoints, demo_dir)

    def build(self):
        pass

    def prefix(self, _name):
        return []

    def netns(self, _name):
        return None

    def sidecar(self, bins, name, common, _proxy_dir):
        return [bins["rete-proxy"], *common, "--inbound", f"{APP_PORT}/HTTP"]

    def call(self, frm, service, path="/", want=200):
        """What `frm`'s app gets calling `service` through the mesh."""
        return wait_http(f"http://{self.hosts[frm]}:{PROXY_PORTS['outbound']}{path}", host=service, want=want)

    def ready(self, name):
        wait_http(f"http://{self.hosts[name]}:{PROXY_PORTS['admin']}/ready")

    def client(self, bins, rate):
        return [bins["rete-client"], "--url", "http://backend/hello", "--proxy",
                f"{self.hosts['frontend-0']}:{PROXY_PORTS['outbound']}", "--rate", str(rate)]

    def sidecar_ports(self):
        return dict(PROXY_PORTS, stats=STATS_PORT)

    def close(self):
        pass


class NetnsNet:
    """A small cluster: reted, each workload and an outside host in network
    namespaces of their own on a bridge; `rete-proxy init` in each workload's
    namespace; the apps know nothing of the mesh."""
    mode = "netns"

    def __init__(self, args):
        self.prefix_name = args.netns_prefix
        self.topo = None
        names = ["reted", *[w[0] for w in WORKLOADS], OUTSIDE]
        # the addresses nettopo gives, in order of add_host: .2, .3, ...
        self.hosts = {n: f"{NETNS_SUBNET}.{i + 2}" for i, n in enumerate(names)}
        self.names = names
        self.reted_ip = self.hosts["reted"]
        # the operator API on reted's own loopback: retectl runs in its namespace
        self.api, self.xds = f"127.0.0.1:{API_PORT}", f"{self.reted_ip}:{XDS_PORT}"

    def check(self, demo_dir):
        pid = read_pid(demo_dir / "demo.pid")
        if pid and pid != os.getpid():
            fail(f"a previous demo is still running (pid {pid}): press Ctrl-C in its terminal, or `kill {pid}`")
        stale = nettopo.clean_stale(self.prefix_name)
        if stale:
            say(f"demo: removed the namespaces a previous demo left: {' '.join(stale)}")

    def build(self):
        say(f"demo: network namespaces {self.prefix_name}-* on a bridge, {NETNS_SUBNET}.0/24 "
            "(no route out)")
        self.topo = nettopo.Topology(self.prefix_name, NETNS_SUBNET, NETNS_SUBNET6)
        self.h = {}
        for n in self.names:
            self.h[n] = self.topo.add_host(n)
            assert self.h[n].addr == self.hosts[n]
        self.topo.check_isolated()
        # The apps' resolver: an address on the bridge nobody has (routable,
        # so the kernel sends the query, which init redirects to the sidecar).
        for n, *_ in WORKLOADS:
            self.h[n].resolv_conf(f"nameserver {NETNS_SUBNET}.1\noptions timeout:1 attempts:1\n")

    def prefix(self, name):
        return self.h[name].cmd([])

    def netns(self, name):
        return self.h[name].ns

    def sidecar(self, bins, name, common, proxy_dir):
        """rete-proxy as the unprivileged PROXY_UID:PROXY_GID with its own
        Proxy document: outbound and DNS listeners on loopback, where init's
        redirect sends the app. What it reads and writes is handed to that
        user: its data directory, its join token and a copy of the CA bundle
        (reted's data directory stays root's)."""
        sa = next(w[1] for w in WORKLOADS if w[0] == name)
        data = proxy_dir / name
        if getattr(self, "unprivileged", None) is None:
            self.unprivileged = self.own_user(proxy_dir)
        if not self.unprivileged:
            return self.sidecar_as_root(bins, name, common, proxy_dir, sa, data)
        data.mkdir(mode=0o700, exist_ok=True)
        os.chown(data, PROXY_UID, PROXY_GID)
        proxy_dir.chmod(0o711)  # traversable, not listable
        common = list(common)
        token = Path(common[common.index("--token-file") + 1])
        token.parent.chmod(0o711)
        os.chown(token, PROXY_UID, PROXY_GID)
        at = common.index("--ca-file") + 1
        bundle = data / "initial-bundle.pem"
        shutil.copyfile(common[at], bundle)
        os.chown(bundle, PROXY_UID, PROXY_GID)
        common[at] = str(bundle)
        path = self.proxy_doc(proxy_dir, name, sa, data)
        path.chmod(0o644)
        return ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_GID}", "--clear-groups", "--pdeathsig=TERM",
                bins["rete-proxy"], "--config", str(path), *common]

    @staticmethod
    def own_user(proxy_dir):
        """Whether the sidecars can run as PROXY_UID: every directory above
        proxy_dir lets others through (a checkout under /root does not; the
        sidecars then run as root with group PROXY_GID, and the demo says so)."""
        for d in proxy_dir.parents:
            if not os.stat(d).st_mode & 0o001:
                say(f"demo: {d} is closed to other users: the sidecars run as root with group "
                    f"{PROXY_GID} instead of the unprivileged uid {PROXY_UID}")
                return False
        return True

    def sidecar_as_root(self, bins, name, common, proxy_dir, sa, data):
        path = self.proxy_doc(proxy_dir, name, sa, data)
        return ["setpriv", f"--regid={PROXY_GID}", "--clear-groups", "--pdeathsig=TERM", bins["rete-proxy"],
                "--config", str(path), *common]

    def proxy_doc(self, proxy_dir, name, sa, data):
        """The sidecar's Proxy document: outbound and DNS listeners on loopback."""
        doc = {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy", "metadata": {"name": name, "namespace": NS},
               "spec": {"serviceAccount": sa, "address": self.hosts[name],
                        "inbound": [{"port": APP_PORT, "protocol": "HTTP"}],
                        "tls": {"certFile": f"{data}/cert.pem", "keyFile": f"{data}/key.pem",
                                "caFile": f"{data}/bundle.pem"},
                        "listeners": {"outbound": f"127.0.0.1:{PROXY_PORTS['outbound']}"},
                        "dns": {"listen": f"127.0.0.1:{DNS_PORT}"}}}
        path = proxy_dir / f"{name}.proxy.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path

    def init(self, bins, name):
        h = self.h[name]
        r = h.run([bins["rete-proxy"], "init", f"--proxy-uid={PROXY_UID}", f"--proxy-gid={PROXY_GID}",
                   f"--address={h.addr}",
                   f"--address={h.addr6}", f"--dns-port={DNS_PORT}"])
        if r.returncode != 0:
            fail(f"rete-proxy init in {h.ns} failed ({r.returncode}):\n{tail(r.stdout + r.stderr)}")

    def call(self, frm, service, path="/", want=200, timeout=15):
        """What `frm`'s app gets calling http://SERVICE/PATH by plain name."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, body = ns_get(self.prefix(frm), f"http://{service}{path}")
            if status == want:
                return body.encode()
            last = f"status {status}"
            time.sleep(0.1)
        fail(f"http://{service}{path} from {frm} did not answer {want} within {timeout}s: {last}")

    def direct_refused(self, target):
        """The outside host's plaintext call to `target`'s app port: no HTTP answer."""
        status, _ = ns_get(self.prefix(OUTSIDE), f"http://{self.hosts[target]}:{APP_PORT}/", timeout=3)
        return status == 0

    def ready(self, name):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if ns_get(self.prefix(name), f"http://127.0.0.1:{PROXY_PORTS['admin']}/ready")[0] == 200:
                return
            time.sleep(0.1)
        fail(f"{name}'s sidecar not ready within 15s")

    def client(self, bins, rate):
        return [bins["rete-client"], "--url", "http://backend/hello", "--rate", str(rate)]

    def sidecar_ports(self):
        return dict(PROXY_PORTS, stats=STATS_PORT, dns=DNS_PORT)

    def close(self):
        if self.topo:
            errors = self.topo.delete()
            for e in errors:
                say(f"  {e}")
            say(f"demo: network namespaces {self.prefix_name}-* deleted" + (" (with errors)" if errors else ""))
            self.topo = None


def choose_net(args):
    """The mode asked for (--mode, RETE_DEMO_MODE), else netns when it can."""
    why_not = None
    if os.geteuid() != 0:
        why_not = "not root"
    elif not nettopo.have_netns():
        why_not = "`ip netns` does not work here"
    elif not shutil.which("nft"):
        why_not = "nft (package nftables) is not installed"
    if args.mode == "netns" and why_not:
        fail(f"RETE_DEMO_MODE=netns needs root, `ip netns` and nft: {why_not}. "
             "Run as root (sudo make demo), or RETE_DEMO_MODE=loopback")
    if args.mode == "loopback" or why_not:
        if not args.mode:
            say(f"demo: loopback mode ({why_not}): every workload on a 127.0.0.x address, the apps "
                "talk to their sidecar's port; as root the demo runs each in a network namespace "
                "with transparent interception")
        return LoopbackNet(args)
    return NetnsNet(args)


def write_workloads(path, net):
    """.demo/workloads.json: what a script needs to reach each workload."""
    items = []
    for name, sa, app, version, labels in WORKLOADS:
        items.append({"name": name, "namespace": NS, "serviceAccount": sa, "labels": labels,
                      "netns": net.netns(name), "address": net.hosts[name], "appPorts": [APP_PORT],
                      "sidecarPorts": net.sidecar_ports()})
    doc = {"mode": net.mode, "workloads": items,
           "reted": {"netns": net.netns("reted") if net.mode == "netns" else None,
                     "address": net.reted_ip, "api": net.api, "xds": net.xds}}
    if net.mode == "netns":
        doc["outside"] = {"netns": net.netns(OUTSIDE), "address": net.hosts[OUTSIDE]}
        doc["bridge"] = {"netns": net.topo.switch, "interface": "br0", "subnet": net.topo.subnet_cidr,
                         "serviceCIDR": SERVICE_CIDR}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


# ---- main -------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=0, help="stop after S seconds (default: Ctrl-C)")
    ap.add_argument("--mode", choices=MODES, default=os.environ.get("RETE_DEMO_MODE") or None,
                    help="loopback or netns (default $RETE_DEMO_MODE, else netns when root, else loopback)")
    ap.add_argument("--ip-base", type=int, default=41,
                    help="loopback mode: workloads use 127.0.0.N .. N+3 (default 41)")
    ap.add_argument("--reted-ip", default="127.0.0.1",
                    help=f"loopback mode: reted listens on IP:{API_PORT} and IP:{XDS_PORT} (default 127.0.0.1)")
    ap.add_argument("--netns-prefix", default=NETNS_PREFIX,
                    help=f"netns mode: the namespaces are PREFIX-<host> (default {NETNS_PREFIX})")
    ap.add_argument("--dir", default=str(REPO / ".demo"),
                    help="demo directory (default .demo/ in the checkout; retectl finds "
                         ".demo/reted/context.json from the directory holding it)")
    ap.add_argument("--rate", type=int, default=20, help="rete-client requests per second (default 20)")
    ap.add_argument("--every", type=int, default=5, help="seconds between traffic summaries (default 5)")
    ap.add_argument("--build", default=os.environ.get("RETE_BUILD", str(REPO / "build")),
                    help="build tree (default build/ or $RETE_BUILD)")
    args = ap.parse_args()
    if args.mode and args.mode not in MODES:
        fail(f"RETE_DEMO_MODE={args.mode}: want loopback or netns")
    if not 2 <= args.ip_base <= 250:
        fail("--ip-base must be 2..250")
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,15}", args.netns_prefix):
        fail("--netns-prefix: 1 to 16 of a-z, 0-9 and -, starting with a letter")

    build = Path(args.build)
    bins = {n: build_binary(build, n) for n in ("reted", "retectl", "rete-proxy", "rete-echo", "rete-client")}

    demo_dir = Path(args.dir).resolve()
    net = choose_net(args)
    hosts = net.hosts
    demo_dir.mkdir(parents=True, exist_ok=True)
    net.check(demo_dir)

    stop_requested = []

    def on_signal(signum, _frame):
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    (demo_dir / "demo.pid").write_text(f"{os.getpid()}\n")

    # Every run starts afresh: join tokens are single-use and the proxies'
    # certificates come from this run's CA. Only what the demo makes is wiped.
    reted_dir, proxy_dir = demo_dir / "reted", demo_dir / "proxies"
    token_dir, log_dir = demo_dir / "tokens", demo_dir / "logs"
    for d in (reted_dir, proxy_dir, token_dir, log_dir):
        shutil.rmtree(d, ignore_errors=True)
    for d in (proxy_dir, token_dir, log_dir):
        d.mkdir(mode=0o700)
    (demo_dir / "workloads.json").unlink(missing_ok=True)
    api, xds = net.api, net.xds
    user_context = not os.environ.get("RETED_NO_USER_CONTEXT")

    procs = []  # in start order; stopped in reverse

    def start(name, argv, ready, where=None):
        p = Proc(name, [*net.prefix(where), *argv] if where else argv, log_dir, ready)
        procs.append(p)
        return p

    rc = 0
    try:
        net.build()
        say(f"demo: starting reted (data dir {shown(reted_dir)}, API {api}, proxy API {xds})")
        reted = start("reted", [bins["reted"], "--data-dir", str(reted_dir), "--api", api, "--xds", xds],
                      r"ready: api ", where="reted")
        reted.wait_ready()
        ctl = Ctl(bins["retectl"], api, reted_dir / "admin.token", net.prefix("reted"))

        if net.mode == "netns":
            # before the Services: reted assigns each its clusterIP from the range
            say(f"demo: MeshConfig serviceCIDR {SERVICE_CIDR} (the Services' virtual addresses)")
            mc = {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
                  "metadata": {"name": "mesh", "namespace": "rete-system"}, "spec": {"serviceCIDR": SERVICE_CIDR}}
            ctl("apply", "-f", "-", stdin=json.dumps(mc), what="applying the MeshConfig")
        say(f"demo: retectl apply -f {shown(RESOURCES)}/")
        for line in ctl("apply", "-f", str(RESOURCES), what="applying the demo's resources").splitlines():
            say("  " + line)

        say(f"demo: join tokens (retectl token create) in {shown(token_dir)}/")
        tokens = {}
        for name, sa, *_ in WORKLOADS:
            tok = ctl("token", "create", "--namespace", NS, "--service-account", sa,
                      what=f"creating a token for {name}").strip()
            path = token_dir / f"{name}.token"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(tok + "\n")
            tokens[name] = path

        if net.mode == "netns":
            say(f"demo: rete-proxy init in each workload's namespace (sidecars run as the unprivileged "
                f"uid:gid {PROXY_UID}:{PROXY_GID})")
            for name, *_ in WORKLOADS:
                net.init(bins, name)
        say("demo: starting the apps and their sidecars (rete-proxy --control-plane)")
        apps = {}
        for name, _, app, version, _ in WORKLOADS:
            addr = f"{hosts[name]}:{APP_PORT}"
            apps[name] = start(f"{name}-app", [bins["rete-echo"], "--listen", addr, "--name", app,
                                               "--version-label", version],
                               rf"rete-echo {app} listening on {re.escape(addr)}", where=name)
        for name, sa, _, _, labels in WORKLOADS:
            common = ["--control-plane", xds, "--token-file", str(tokens[name]),
                      "--ca-file", str(reted_dir / "ca" / "bundle.pem"),
                      "--data-dir", str(proxy_dir / name), "--namespace", NS, "--service-account", sa,
                      "--name", name, "--address", hosts[name]]
            for k, v in labels.items():
                common += ["--label", f"{k}={v}"]
            for host in EGRESS.get(name, ()):
                common += ["--egress", host]
            start(f"{name}-sidecar", net.sidecar(bins, name, common, proxy_dir), r"ready:", where=name)
        for p in procs:
            if not stop_requested:
                p.wait_ready(timeout=20)
        for name, *_ in WORKLOADS:
            if not stop_requested:
                net.ready(name)
        if not stop_requested:
            wait_synced(ctl, [w[0] for w in WORKLOADS])

        # end to end, through mTLS: both versions of backend, ratings' policy both ways
        seen = set()
        deadline = time.monotonic() + 20
        while seen != set(WEIGHTS) and time.monotonic() < deadline and not stop_requested:
            body = net.call("frontend-0", "backend")
            seen.add(json.loads(body)["version"])
        if seen != set(WEIGHTS) and not stop_requested:
            fail(f"only {sorted(seen)} of backend answered through the mesh")
        if not stop_requested:
            net.call("backend-v1-0", "ratings")
            net.call("frontend-0", "ratings", want=403)
            net.call("frontend-0", "ratings", "/public/stars")
        if net.mode == "netns" and not stop_requested and not net.direct_refused("ratings-0"):
            fail(f"a direct call from {OUTSIDE} to ratings' app port got an answer: the interception "
                 "rules are not in place")

        client = start("frontend-client", net.client(bins, args.rate), r"ok=\d+", where="frontend-0")
        if not stop_requested:
            client.wait_ready()
        split = Split({"v1": apps["backend-v1-0"], "v2": apps["backend-v2-0"]})
        split.delta()  # start counting from here
        write_workloads(demo_dir / "workloads.json", net)

        if not stop_requested:
            if net.mode == "netns":
                say(guide_netns(net, demo_dir, bins["retectl"]))
            else:
                say(guide(hosts, args.reted_ip, demo_dir, bins["retectl"], user_context))
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
        # The traffic first, then the sidecars (they drain and deregister),
        # then the apps, reted last; then the namespaces.
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
        net.close()
        (demo_dir / "workloads.json").unlink(missing_ok=True)
        try:
            if read_pid(demo_dir / "demo.pid") in (None, os.getpid()):
                (demo_dir / "demo.pid").unlink()
        except OSError:
            pass
    say(f"demo: all {len(procs)} processes stopped" + ("" if rc == 0 else " (with errors)") +
        f"; logs are in {shown(log_dir)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
