"""Shared helpers for system tests: locate binaries, pick addresses, start a
process and wait for its ready line, and stop everything a test started.

Processes write stdout+stderr to a log file, never to a pipe: a pipe that no
one drains fills up and blocks the child mid-test. The log stays readable as
`proc.log_path` (and `read_log(proc)`) for assertions and failure messages.
"""
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_procs = []  # every process start_process made, reaped by cleanup_processes()


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


def loopback_host():
    """A random 127.0.0.x address, so parallel or repeated tests rarely meet."""
    return f"127.0.0.{random.randint(2, 250)}"


def free_port(host="127.0.0.1"):
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_log(proc):
    with open(proc.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def start_process(args, ready_regex, timeout=10, env=None, cwd=None):
    """Start `args` and wait until `ready_regex` matches its output (stderr or
    stdout). Returns the Popen, with `.log_path` and `.ready_match` added.
    Raises RuntimeError (with the log) if it exits or times out first."""
    fd, log_path = tempfile.mkstemp(prefix=Path(args[0]).name + "-", suffix=".log")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=full_env, cwd=cwd)
    os.close(fd)
    proc.log_path = log_path
    proc.ready_match = None
    _procs.append(proc)
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


def cleanup_processes():
    """Kill whatever a test left running and delete the logs."""
    while _procs:
        proc = _procs.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            os.unlink(proc.log_path)
        except OSError:
            pass


def start_echo(*extra, name="echo", host=None, timeout=10):
    """Start rete-echo on a fresh loopback address; returns (proc, "host:port")."""
    host = host or loopback_host()
    port = free_port(host)
    addr = f"{host}:{port}"
    proc = start_process(
        [build_path("rete-echo"), "--listen", addr, "--name", name, *extra],
        rf"rete-echo {re.escape(name)} listening on {re.escape(addr)}",
        timeout=timeout,
    )
    return proc, addr
