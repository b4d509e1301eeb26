"""rete-client, the demo's traffic source, against rete-echo."""
import json
import re
import subprocess

from helpers import build_path, free_port, fresh_host, start_echo, stop_process, run_tool

LINE = re.compile(r"ok=(\d+) err=(\d+) codes=\{([^}]*)\} p50=([\d.]+)ms p99=([\d.]+)ms")


def run_client(*args, timeout=60):
    return run_tool([build_path("rete-client"), *args], capture_output=True, text=True, timeout=timeout)


def summary(stdout):
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("done "), stdout
    m = LINE.search(last)
    assert m, last
    codes = dict(kv.split(":") for kv in m.group(3).split(",")) if m.group(3) else {}
    return int(m.group(1)), int(m.group(2)), {int(k): int(v) for k, v in codes.items()}, float(m.group(4)), float(m.group(5))


def test_client_count_and_rate():
    proc, addr = start_echo("--quiet")
    r = run_client("--url", f"http://{addr}/hello", "--count", "50", "--rate", "100/s", "--expect-status", "200")
    assert r.returncode == 0, r.stdout + r.stderr
    ok, err, codes, p50, p99 = summary(r.stdout)
    assert (ok, err, codes) == (50, 0, {200: 50})
    assert 0 <= p50 <= p99
    assert stop_process(proc) == 0


def test_client_via_proxy_address_json_and_expect_status():
    # --proxy connects elsewhere than the URL's host; the Host field stays the URL's.
    proc, addr = start_echo("--quiet", "--failure-rate", "1.0")
    r = run_client("--url", "http://orders.example:8080/x", "--proxy", addr, "--count", "5", "--rate", "0",
                   "--concurrency", "2", "--json", "--expect-status", "200")
    assert r.returncode != 0  # every answer was 503
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["done"] and last["ok"] == 5 and last["codes"] == {"503": 5} and last["unexpected"] == 5
    assert stop_process(proc) == 0


def test_client_duration_bound():
    proc, addr = start_echo("--quiet")
    r = run_client("--url", f"http://{addr}/d", "--duration", "1.5", "--rate", "20", "--concurrency", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    ok, err, _, _, _ = summary(r.stdout)
    assert err == 0 and 20 <= ok <= 40
    assert stop_process(proc) == 0


def test_client_connection_refused_is_an_error():
    host = fresh_host()
    port = free_port(host)
    r = run_client("--url", f"http://{host}:{port}/", "--count", "3", "--rate", "50")
    assert r.returncode != 0
    ok, err, _, _, _ = summary(r.stdout)
    assert ok == 0 and err == 3
