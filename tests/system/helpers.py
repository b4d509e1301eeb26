"""Shared helpers for system tests: locate binaries, pick addresses, start a
process and wait for its ready line, and stop everything a test started.

Processes write stdout+stderr to a log file, never to a pipe: a pipe that no
one drains fills up and blocks the child mid-test. The log stays readable as
`proc.log_path` (and `read_log(proc)`) for assertions and failure messages.

Sanitizer reports are fatal. Under `make test` our binaries are the
ASan+UBSan build; a report goes to the process's stderr (its log here), and
UBSan with halt_on_error exits 1 rather than aborting, so the exit code alone
does not tell. Every process started with start_process() is stopped at the
end of its test (or its module, for persistent ones) with SIGTERM first, so
LeakSanitizer runs at exit, and SIGKILL only if it has not exited within
STOP_TIMEOUT; then its whole log is scanned and any report fails the test
naming the process. A process a test killed on purpose (SIGKILL) is scanned
all the same: a report written before the kill is real. Output of commands
run with subprocess.run is checked with check_sanitizer_output().
"""
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_procs = []  # processes of the current test, reaped by cleanup_processes()
_persistent = []  # processes shared by several tests (module fixtures), reaped at module end

# What a sanitizer report contains: "ERROR: AddressSanitizer", "LeakSanitizer",
# "UndefinedBehaviorSanitizer", and UBSan's "file:line:col: runtime error: ...".
SANITIZER_MARKERS = ("Sanitizer", "runtime error:")
# How long a process gets to exit on SIGTERM at the end of a test before it is
# killed. A rete-proxy drains for at most drainTimeout (2s in mesh.py's
# configurations, 5s by default); a test's clients are gone by then.
STOP_TIMEOUT = 8
# Exit by one of these signals is a crash, whatever the log says.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


def sanitizer_report(text):
    """The sanitizer report in `text` (from a little before the first marker
    line, at most 6000 characters), or None."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKERS):
            return "\n".join(lines[max(0, i - 2):])[:6000]
    return None


def check_sanitizer_output(text, what):
    """Fail (AssertionError naming `what`) if `text`, the output of a process
    we ran, holds a sanitizer report."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    rep = sanitizer_report(text or "")
    assert rep is None, f"sanitizer report from {what}:\n{rep}"


def build_dir():
    """The build tree under test: $RETE_BUILD, default <repo>/build."""
    return Path(os.environ.get("RETE_BUILD", REPO / "build"))


def build_path(name):
    """Path of an executable built by Meson (e.g. "rete-echo"), wherever in the
    build tree it lives."""
    root = build_dir()
    for sub in ("", "examples", "src/proxy", "src/control", "src/ctl"):
        p = root / sub / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    for p in root.rglob(name):
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    raise FileNotFoundError(f"{name} not found under {root} (set RETE_BUILD or run make build)")


# Addresses. Every process a test starts listens on an address of its own, so
# tests can run in parallel (pytest-xdist, `make test` runs `-n`) and next to
# another run of the suite on the same machine. xdist worker N (gwN; 0 when not
# under xdist) owns the eight /16s 127.(8N+1).0.0 .. 127.(8N+8).0.0 and hands its addresses out in
# order from a random start, so no two tests of one run ever share an address
# and two runs rarely do. 127.0.0.0/16 is left to tests that need fixed
# addresses (test_demo.py) and to nothing shared: no test binds 127.0.0.1.
HOST_BLOCKS_PER_WORKER = 8


def worker_index():
    """This xdist worker's number (PYTEST_XDIST_WORKER=gwN), 0 without xdist."""
    m = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(m.group(1)) if m else 0


_host_seq = None  # next address index of this worker (hosts_per_worker of them)


def fresh_host():
    """A 127.x.y.z address that no other test of this run uses (nor, barring a
    1-in-500000 chance, a concurrent run of the suite)."""
    global _host_seq
    per_block = 256 * 253  # third octet 0-255, fourth 2-254
    total = HOST_BLOCKS_PER_WORKER * per_block
    if _host_seq is None:
        _host_seq = random.randrange(total)
    i = _host_seq % total
    _host_seq += 1
    block, rest = divmod(i, per_block)
    second = (worker_index() * HOST_BLOCKS_PER_WORKER) % 248 + 1 + block  # 1..255, never 0
    return f"127.{second}.{rest // 253}.{rest % 253 + 2}"


def loopback_host():
    """Same as fresh_host() (kept for the tests that call it by this name)."""
    return fresh_host()


def free_port(host=None):
    """A TCP port free on `host` (default: a fresh address of this test's own).
    Binding port 0 and releasing it races with other binders of the same
    address; on a fresh_host() address there are none."""
    host = host or fresh_host()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=20, interval=0.05, what="condition"):
    """Poll `cond()` until it returns something truthy; return it, or raise
    AssertionError naming `what` after `timeout` seconds. The one way tests
    wait for something to happen: never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def rss_kb(pid):
    """Resident memory of process `pid` in KB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def read_log(proc):
    with open(proc.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def run_tool(args, **kw):
    """subprocess.run for one of our binaries (build_path(...)), whose output
    is captured: a sanitizer report in it fails the test, whatever the exit
    code (UBSan exits 1, LeakSanitizer 23, and a test expecting a refusal
    would take either for one)."""
    p = subprocess.run(args, **kw)
    out = [x for x in (p.stdout, p.stderr) if x]
    check_sanitizer_output(b"".join(x if isinstance(x, bytes) else x.encode() for x in out),
                           " ".join(str(a) for a in args[:3]))
    return p


def start_process(args, ready_regex, timeout=10, env=None, cwd=None, persistent=False):
    """Start `args` and wait until `ready_regex` matches its output (stderr or
    stdout). Returns the Popen, with `.log_path` and `.ready_match` added.
    Raises RuntimeError (with the log) if it exits or times out first.
    A `persistent` process outlives the test (for module- or session-scoped
    fixtures) and is reaped only by cleanup_processes(everything=True)."""
    fd, log_path = tempfile.mkstemp(prefix=Path(args[0]).name + "-", suffix=".log")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=full_env, cwd=cwd)
    os.close(fd)
    proc.log_path = log_path
    proc.ready_match = None
    (_persistent if persistent else _procs).append(proc)
    pattern = re.compile(ready_regex)
    deadline = time.monotonic() + timeout
    while True:
        m = pattern.search(read_log(proc))
        if m:
            proc.ready_match = m
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"{args[0]} exited with {proc.returncode} before ready:\n{read_log(proc)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{args[0]} not ready after {timeout}s:\n{read_log(proc)}")
        time.sleep(0.02)


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Signal `proc` and wait for it; returns its exit code (kills it, and
    raises, if it does not exit in time)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{proc.args[0]} ignored signal {sig} for {timeout}s:\n{read_log(proc)}")


def cleanup_processes(everything=False):
    """Stop whatever a test left running (SIGTERM, SIGKILL after
    STOP_TIMEOUT), scan every log for sanitizer reports and crashes, and
    delete the logs; with `everything`, the persistent processes too. The
    persistent processes that keep running are scanned as well (so a report
    fails the test during which it appeared). Raises AssertionError naming
    each process with a report, after every process is reaped."""
    problems = []
    lists = [_procs, _persistent] if everything else [_procs]
    doomed = [p for procs in lists for p in procs]
    for procs in lists:
        procs.clear()
    # SIGTERM to all first, then wait: the processes drain in parallel, so a
    # test waits at most STOP_TIMEOUT in all, not per process.
    for proc in doomed:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in reversed(doomed):  # the last started first, as before
        problem = _reap(proc, max(0.0, deadline - time.monotonic()))
        if problem:
            problems.append(problem)
    if not everything:
        for proc in _persistent:
            problem = _scan(proc)
            if problem:
                problems.append(problem)
    assert not problems, "\n\n".join(problems)


def _describe(proc):
    return f"{' '.join(str(a) for a in proc.args[:4])} (pid {proc.pid})"


def _scan(proc):
    """A problem report for `proc` (a sanitizer report in its log, or a
    crash), or None. A process killed by SIGKILL is not a crash: tests do
    that on purpose; its log is scanned all the same."""
    if getattr(proc, "sanitizer_checked", False):
        return None
    try:
        rep = sanitizer_report(read_log(proc))
    except OSError:
        rep = None
    if rep:
        proc.sanitizer_checked = True  # report once
        return f"sanitizer report from {_describe(proc)}:\n{rep}"
    rc = proc.poll()
    if rc is not None and rc < 0 and -rc in _CRASH_SIGNALS:
        proc.sanitizer_checked = True
        return f"{_describe(proc)} died of signal {-rc}:\n{read_log(proc)[-4000:]}"
    return None


def _reap(proc, timeout=STOP_TIMEOUT):
    """Stop `proc` (SIGTERM, SIGKILL after `timeout`), scan its log, delete
    it; returns a problem report or None."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Not a failure (a test may have left a long drain running), but
            # said: its exit-time leak check did not run.
            warnings.warn(f"{_describe(proc)} still running {STOP_TIMEOUT}s after SIGTERM; "
                          "killed, so its exit-time leak check did not run")
            proc.kill()
            proc.wait()
    problem = _scan(proc)
    try:
        os.unlink(proc.log_path)
    except OSError:
        pass
    return problem


def start_echo(*extra, name="echo", host=None, port=None, timeout=10, persistent=False):
    """Start rete-echo on a fresh loopback address (and `port`, default a free
    one); returns (proc, "host:port")."""
    host = host or loopback_host()
    port = port or free_port(host)
    addr = f"{host}:{port}"
    proc = start_process(
        [build_path("rete-echo"), "--listen", addr, "--name", name, *extra],
        rf"rete-echo {re.escape(name)} listening on {re.escape(addr)}",
        timeout=timeout,
        persistent=persistent,
    )
    return proc, addr


# The one complaint promtool may make of a proxy's /metrics: Istio's own
# duration histogram keeps Istio's name and unit for its dashboards
# (src/proxy/core/mesh_metrics.h says why).
PROMTOOL_ACCEPTED = 'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'


def promtool_findings(text):
    """What `promtool check metrics` says of `text`, less the accepted line.
    promtool (Debian prometheus, in DEB_PACKAGES) missing fails
    (FileNotFoundError); it never passes silently."""
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=60)
    lines = [l for l in (r.stdout + r.stderr).decode().splitlines() if l.strip() and l.strip() != PROMTOOL_ACCEPTED]
    if r.returncode not in (0, 3):  # 3: lint findings only; anything else failed outright
        lines.append(f"promtool exited {r.returncode}")
    return lines
