"""`make demo`'s script, examples/demo.py, end to end: reted, four workloads
with control-plane sidecars; it prints its guide, the curl and retectl commands
in the guide work (retectl run as printed, finding reted through
.demo/reted/context.json), the 90/10 split holds (v2 near 10% of the demo's traffic),
ratings' policy answers 403 to frontend, and the demo stops by itself
(--duration) with exit 0 and no process left. Nothing is written to ~/.config
(RETED_NO_USER_CONTEXT, and HOME is the test's directory).

Both modes: loopback (RETE_DEMO_MODE=loopback, today's demo) and netns (a
small cluster of network namespaces with transparent interception; its own
namespace prefix, so a user's demo on the machine is left alone)."""
import json
import os
import random
import re
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import REPO, build_dir, check_sanitizer_output
from netns import have_netns  # also puts examples/ on sys.path, for nettopo

import nettopo  # noqa: E402

DEMO = REPO / "examples" / "demo.py"


@pytest.fixture(autouse=True, scope="module")
def _one_demo_on_this_machine():
    """The demo binds fixed ports on 127.0.0.x addresses (15001/15008/15012/
    15014 ...), the only tests that do; other tests take their addresses from
    helpers.fresh_host, never in 127.0.0.0/16. Within one run this module's
    tests run one after the other (make test spreads modules, not tests, over
    workers); this lock also keeps two runs on one machine (two checkouts,
    two CI jobs) from starting demos on the same random addresses at once."""
    import fcntl
    import tempfile
    with open(os.path.join(tempfile.gettempdir(), f"rete-test-demo-{os.getuid()}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def guide_command(guide, start):
    """The first printed command line starting with `start` (shell syntax)."""
    for line in guide.splitlines():
        line = line.strip()
        if line.startswith(start):
            return line
    raise AssertionError(f"no command starting with {start!r} in the guide:\n{guide}")


def children_alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def demo_children(pid):
    """The processes demo.py started: they run in their own sessions, so find
    them by parent pid."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def run_demo(tmp_path, duration, base=None, mode="loopback", prefix=None):
    log = open(tmp_path / "demo.out", "w+")
    env = dict(os.environ, RETED_NO_USER_CONTEXT="1", HOME=str(tmp_path), RETE_DEMO_MODE=mode)
    env.pop("RETE_SERVER", None)
    env.pop("RETE_TOKEN_FILE", None)
    where = ["--ip-base", str(base), "--reted-ip", f"127.0.0.{base + 4}"] if base else []
    if prefix:
        where += ["--netns-prefix", prefix]
    p = subprocess.Popen([sys.executable, str(DEMO), "--duration", str(duration), *where,
                          "--dir", str(tmp_path / ".demo"), "--build", str(build_dir()), "--every", "2"],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    return p, log, env


def sh(cmd, tmp_path, env):
    """A guide command, run as printed by a shell from the directory holding .demo/."""
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20, cwd=tmp_path, env=env)


def read(log):
    log.seek(0)
    return log.read()


def wait_for(p, log, pattern, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read(log)
        if re.search(pattern, text):
            return text
        if p.poll() is not None:
            raise AssertionError(f"demo exited with {p.returncode} before {pattern!r}:\n{text}")
        time.sleep(0.1)
    p.kill()
    raise AssertionError(f"no {pattern!r} within {timeout}s:\n{read(log)}")


def test_demo_runs_guide_commands_and_stops_cleanly(tmp_path):
    base = random.randint(100, 240)
    p, log, env = run_demo(tmp_path, duration=25, base=base)  # the guide's commands fit in it
    try:
        guide = wait_for(p, log, r"press Ctrl-C to stop", 90)
        assert "rete demo is ready" in guide
        pids = demo_children(p.pid)
        assert len(pids) == 10, pids  # reted, 4 apps, 4 sidecars, rete-client
        fe, be = f"127.0.0.{base}", f"127.0.0.{base + 1}"

        # curl commands, run as printed
        r = sh(guide_command(guide, f"curl -s -H 'Host: backend' http://{fe}:15001/hello"), tmp_path, env)
        body = json.loads(r.stdout)
        assert body["service"] == "backend" and body["version"] in ("v1", "v2")
        assert body["headers"]["x-forwarded-client-cert"] == (
            "By=spiffe://cluster.local/ns/demo/sa/backend;URI=spiffe://cluster.local/ns/demo/sa/frontend")

        r = sh(guide_command(guide, f"curl -si -H 'Host: ratings' http://{fe}:15001/"), tmp_path, env)
        assert r.stdout.startswith("HTTP/1.1 403"), r.stdout
        assert "ratings-allow-backend" in r.stdout

        r = sh(guide_command(guide, f"curl -s -H 'Host: ratings' http://{be}:15001/"), tmp_path, env)
        body = json.loads(r.stdout)
        assert body["service"] == "ratings" and body["status"] == 200, body
        assert body["headers"]["x-forwarded-client-cert"].endswith("URI=spiffe://cluster.local/ns/demo/sa/backend")

        # the dashboard: its address and the token's file, as printed
        m = re.search(r"^Dashboard: (http://\S+/dashboard/)", guide, re.M)
        assert m, guide
        page = subprocess.run(["curl", "-sS", "-m", "10", m.group(1)], capture_output=True, text=True)
        assert 'src="dashboard.js"' in page.stdout, page.stdout + page.stderr
        r = sh(guide_command(guide, "cat "), tmp_path, env)
        token = r.stdout.strip()
        assert token and subprocess.run(
            ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {token}",
             m.group(1).replace("/dashboard/", "/api/v1/stats?by=service")], capture_output=True, text=True).stdout == "200"

        # retectl commands, run as printed: reted found with no flags
        r = sh(guide_command(guide, f"{build_dir()}/retectl proxy-status"), tmp_path, env)
        assert r.returncode == 0, r.stderr
        rows = [l.split() for l in r.stdout.splitlines()[1:] if l.strip()]
        assert sorted(row[0] for row in rows) == ["backend-v1-0", "backend-v2-0", "frontend-0", "ratings-0"], r.stdout
        assert all(row[4] == "SYNCED" for row in rows), r.stdout

        r = sh(guide_command(guide, f"{build_dir()}/retectl get svc -n demo"), tmp_path, env)
        assert r.returncode == 0, r.stderr
        assert {"frontend", "backend", "backend-v1", "backend-v2", "ratings"} <= {
            l.split()[0] for l in r.stdout.splitlines()[1:] if l.strip()}, r.stdout

        # the observability verbs, as printed: live requests of the demo's traffic
        r = sh(guide_command(guide, f"{build_dir()}/retectl top service backend -n demo --once"), tmp_path, env)
        assert r.returncode == 0 and "GET" in r.stdout, (r.stdout, r.stderr)
        r = sh(guide_command(guide, f"{build_dir()}/retectl diagnose backend -n demo"), tmp_path, env)
        assert "Verdict:" in r.stdout, (r.stdout, r.stderr)

        # the split: both versions answered, mostly v1
        counts = {"v1": 0, "v2": 0}
        for _ in range(60):
            out = subprocess.run(["curl", "-s", "-m", "5", "-H", "Host: backend", f"http://{fe}:15001/"],
                                 capture_output=True, text=True).stdout
            counts[json.loads(out)["version"]] += 1
            if counts["v2"] and counts["v1"] > counts["v2"]:
                break
        assert counts["v1"] > counts["v2"] > 0, counts

        assert p.wait(timeout=60) == 0, read(log)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
    out = read(log)
    assert re.search(r"\[traffic\] rete-client: ok=\d+ .* v1 \d+ \(\d+%\)  v2 \d+", out), out
    # The 90/10 split, over all of the demo's own traffic (rete-client at 20
    # requests/s, counted at the backends): v2's share within 4.5 standard
    # deviations of 10% (a false failure about once in 10^5 runs; an even
    # split, or all to one version, fails).
    split = [(int(a), int(b)) for a, b in re.findall(r"v1 (\d+) \(\d+%\)  v2 (\d+)", out)]
    v1, v2 = sum(a for a, _ in split), sum(b for _, b in split)
    n = v1 + v2
    assert n >= 100, (v1, v2, out)
    assert abs(v2 / n - 0.1) <= 4.5 * (0.09 / n) ** 0.5, f"v1 {v1}, v2 {v2}: not a 90/10 split"
    assert "[traffic] rete-client done ok=" in out
    assert "all 10 processes stopped" in out
    # the demo's processes are ours too: their logs hold no sanitizer report
    logs = sorted((tmp_path / ".demo" / "logs").glob("*.log"))
    assert len(logs) >= 9, logs
    for f in logs:
        check_sanitizer_output(f.read_bytes(), f"the demo's {f.name}")
    deadline = time.monotonic() + 10  # reaped by the demo before it exits; bounded all the same
    while children_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_alive(pids) == [], out
    assert not (tmp_path / ".config").exists()


def test_demo_refuses_busy_port(tmp_path):
    import socket

    # A base whose mesh port is free to take here (another run on this
    # machine may hold one: take the next, a bounded number of times).
    s = socket.socket()
    for _ in range(50):
        base = random.randint(100, 240)
        try:
            s.bind((f"127.0.0.{base + 1}", 15008))
            break
        except OSError:
            continue
    else:
        raise AssertionError("no free 127.0.0.x:15008 to hold in 50 tries")
    s.listen(1)
    try:
        p, log, _ = run_demo(tmp_path, duration=1, base=base)
        assert p.wait(timeout=30) == 1
        out = read(log)
        assert f"127.0.0.{base + 1}:15008" in out and "port in use" in out, out
    finally:
        s.close()


# ---- netns mode -----------------------------------------------------------------

def _netns_with(prefix):
    return [ns for ns in nettopo.netns_names() if ns.startswith(prefix + "-")]


def test_demo_netns_mode_intercepts_and_tears_down(tmp_path):
    """RETE_DEMO_MODE=netns: each workload in its own namespace behind
    `rete-proxy init`; curl in frontend's namespace reaches backend by plain
    name over mTLS (the sidecar answered DNS, the connection was
    intercepted), a direct call from the outside host to ratings' app port
    gets no answer (STRICT), workloads.json describes it all, nothing can
    leave the topology; a stale namespace of an earlier (killed) demo is
    removed at start; SIGTERM leaves no namespace, /etc/netns entry, rule
    or process, and the namespace the test runs in is untouched."""
    if not have_netns():
        pytest.fail("the demo's netns mode needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): run make test as root")
    prefix = f"rdt{os.getpid() % 100000}"
    ruleset_before = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    # what a killed demo leaves: a namespace of its prefix, a process in it
    nettopo.ip("netns", "add", f"{prefix}-stale")
    stale_proc = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-stale", "sleep", "60"])
    # the sidecars run as an unprivileged uid when other users can reach the
    # demo's files (pytest's own tmp dir is closed to them)
    tmp_path = Path(tempfile.mkdtemp(prefix="rete-demo-test-", dir="/tmp"))
    tmp_path.chmod(0o711)
    p, log, env = run_demo(tmp_path, duration=60, mode="netns", prefix=prefix)
    try:
        guide = wait_for(p, log, r"press Ctrl-C to stop", 120)
        assert f"removed the namespaces a previous demo left: {prefix}-stale" in guide
        assert stale_proc.wait(timeout=10) != 0  # killed by the demo's cleanup
        pids = demo_children(p.pid)
        assert len(pids) == 10, pids
        assert "closed to other users" not in guide, guide
        uids = [int(line.split()[1]) for pid in pids for line in open(f"/proc/{pid}/status")
                if line.startswith("Uid:") and "rete-proxy" in open(f"/proc/{pid}/cmdline").read()]
        assert uids == [1337] * 4, uids  # the four sidecars, none root

        wl = json.loads((tmp_path / ".demo" / "workloads.json").read_text())
        assert wl["mode"] == "netns"
        names = [w["name"] for w in wl["workloads"]]
        assert names == ["frontend-0", "backend-v1-0", "backend-v2-0", "ratings-0"], names
        addrs = {w["name"]: w["address"] for w in wl["workloads"]}
        for w in wl["workloads"]:
            assert w["namespace"] == "demo" and w["netns"] == f"{prefix}-{w['name']}", w
            assert w["appPorts"] == [8080]
            assert w["sidecarPorts"] == {"outbound": 15001, "inbound": 15006, "mesh": 15008, "admin": 15000,
                                         "stats": 15020, "dns": 15053}, w
            # the app listens on that address, in that namespace
            out = nettopo.ip("-n", w["netns"], "-o", "addr", "show", "dev", "eth0").stdout
            assert f"inet {w['address']}/24" in out, out
        assert len(set(addrs.values())) == 4
        hosts = {w["name"]: w["netns"] for w in wl["workloads"]}
        hosts.update(reted=wl["reted"]["netns"], outside=wl["outside"]["netns"])
        assert wl["bridge"]["netns"] == f"{prefix}-sw"
        assert nettopo.isolation_problems(wl["bridge"]["netns"], hosts) == []

        fe, outside = hosts["frontend-0"], hosts["outside"]
        # an unmodified curl, by plain name, as the guide prints it
        r = sh(guide_command(guide, f"ip netns exec {fe} curl -s http://backend/hello"), tmp_path, env)
        body = json.loads(r.stdout)
        assert body["service"] == "backend" and body["version"] in ("v1", "v2"), body
        assert body["headers"]["x-forwarded-client-cert"] == (
            "By=spiffe://cluster.local/ns/demo/sa/backend;URI=spiffe://cluster.local/ns/demo/sa/frontend")
        r = sh(guide_command(guide, f"ip netns exec {fe} getent hosts backend"), tmp_path, env)
        vip = r.stdout.split()[0]
        assert vip.startswith("10.251.0.") and int(vip.rsplit(".", 1)[1]) >= 129, r.stdout
        r = sh(guide_command(guide, f"ip netns exec {fe} curl -si http://ratings/"), tmp_path, env)
        assert r.stdout.startswith("HTTP/1.1 403"), r.stdout
        # a direct call to an app from another namespace: refused, no answer
        r = sh(guide_command(guide, f"ip netns exec {outside} curl -sv -m 3 http://{addrs['ratings-0']}:8080/direct"),
               tmp_path, env)
        assert r.returncode != 0 and "< HTTP/1.1" not in r.stderr, r.stdout + r.stderr
        assert "/direct" not in (tmp_path / ".demo" / "logs" / "ratings-0-app.log").read_text()
        # the stats port answers from another namespace; retectl in reted's
        r = sh(guide_command(guide, f"ip netns exec {outside} curl -s http://{addrs['ratings-0']}:15020/metrics"),
               tmp_path, env)
        assert re.search(r"(?m)^rete_proxy_mesh_refused_total [1-9]", r.stdout), r.stdout
        r = sh(guide_command(guide, f"ip netns exec {hosts['reted']} {build_dir()}/retectl proxy-status"),
               tmp_path, env)
        rows = [l.split() for l in r.stdout.splitlines()[1:] if l.strip()]
        assert sorted(row[0] for row in rows) == sorted(names) and all(row[4] == "SYNCED" for row in rows), \
            r.stdout + r.stderr
        # rete-client's traffic flows (by name, no proxy setting)
        wait_for(p, log, r"\[traffic\] rete-client: ok=[1-9]\d* err=0 .* v1 \d+", 30)

        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0, read(log)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            nettopo.clean_stale(prefix)
        if stale_proc.poll() is None:
            stale_proc.kill()
            stale_proc.wait()
            nettopo.clean_stale(prefix)
    out = read(log)
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert "SIGTERM received" in out and f"network namespaces {prefix}-* deleted" in out, out
    assert "all 10 processes stopped;" in out, out
    assert _netns_with(prefix) == [], out
    assert not [d for d in os.listdir("/etc/netns") if d.startswith(prefix + "-")] \
        if os.path.isdir("/etc/netns") else True
    assert subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout == ruleset_before
    assert not (tmp_path / ".demo" / "workloads.json").exists()
    for f in sorted((tmp_path / ".demo" / "logs").glob("*.log")):
        check_sanitizer_output(f.read_bytes(), f"the demo's {f.name}")
    deadline = time.monotonic() + 10
    while children_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_alive(pids) == [], out


def test_demo_netns_mode_without_privileges_is_a_clear_error(tmp_path):
    """RETE_DEMO_MODE=netns as a user who cannot make namespaces: exit 1
    naming what is missing, nothing started."""
    env = dict(os.environ, RETE_DEMO_MODE="netns", HOME=str(tmp_path))
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, str(DEMO),
                        "--dir", str(tmp_path / ".demo"), "--build", str(build_dir())],
                       capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "RETE_DEMO_MODE=netns needs root" in r.stderr and "not root" in r.stderr, r.stderr
    assert not (tmp_path / ".demo").exists()
