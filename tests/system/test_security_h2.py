"""HTTP/2 abuse against a sidecar (issue 8, items 1 and 7): rapid reset
churn (CVE-2023-44487 and its variant that stays just under nghttp2's own
GOAWAY point), and zero-window streams that hold a destination's
circuit-breaker budget. The attackers speak raw HTTP/2 frames on a plain
socket (they must be able to misbehave); the canaries are curl.

Every attack is bounded in time and in connections; the assertions wait on
conditions with bounds, never on timings."""
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from helpers import rss_kb, read_log
from mesh import echo_mesh, stop_and_check_proxies

from attack import (ACK, CANCEL, DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, RST_STREAM,
                    SETTINGS, WINDOW_UPDATE, frame, hpack_request, settings)


def curl_status(url, *args, timeout=10):
    r = subprocess.run(["curl", "-sS", "-m", str(timeout), "-o", "/dev/null", "-w", "%{http_code}", *args, url],
                       capture_output=True, timeout=timeout + 5)
    try:
        return int(r.stdout)
    except ValueError:
        return 0


def metrics(admin):
    r = subprocess.run(["curl", "-sS", "-m", "10", f"http://{admin}/metrics"], capture_output=True, timeout=15)
    return r.stdout.decode()


def metric_value(text, name_and_labels):
    m = re.search(r"^" + re.escape(name_and_labels) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0




def drain_socket(s):
    """Read and drop whatever the proxy sent, without blocking."""
    while select.select([s], [], [], 0)[0]:
        if not s.recv(1 << 16):
            raise ConnectionResetError("closed by the proxy")


def rapid_reset_churn(addr, deadline, per_conn=990, stats=None, sources=None):
    """Until `deadline`: open a connection, send `per_conn` requests each
    followed at once by RST_STREAM(CANCEL), close, repeat. `sources`: an
    iterator of source IPs, one per connection (a distributed attacker)."""
    host, port = addr.split(":")
    block = hpack_request()
    while time.monotonic() < deadline:
        try:
            src = (next(sources), 0) if sources is not None else None
            s = socket.create_connection((host, int(port)), timeout=5, source_address=src)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            s.sendall(PREFACE + settings())
            sid = 1
            for _ in range(max(1, per_conn // 30)):
                buf = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, sid + 2 * i, block)
                               + frame(RST_STREAM, 0, sid + 2 * i, struct.pack(">I", CANCEL)) for i in range(30))
                sid += 60
                s.sendall(buf)
                drain_socket(s)
                if stats is not None:
                    stats["resets"] += 30
                if time.monotonic() >= deadline:
                    break
        except OSError:
            if stats is not None:
                stats["closed_by_proxy"] += 1
        finally:
            s.close()
        if stats is not None:
            stats["connections"] += 1


def small_asan_quarantine(monkeypatch):
    """ASan keeps up to 256 MB of freed memory in quarantine by default,
    which RSS would count as growth: keep it small for proxies started by
    this test so an RSS bound means the same for both builds."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") + "quarantine_size_mb=16")


def test_h2_rapid_reset_churn_does_not_hang_the_sidecar(tmp_path, monkeypatch):
    """Issue 8 item 1: three clients churn HEADERS+RST_STREAM on the outbound
    h2c listener for 12 s. Through it all, a curl canary through the same
    sidecar gets answers, /ready answers, the client sidecar's RSS stays
    under baseline + 150 MB (ASan build included), the abuse is counted
    in rete_proxy_h2_abuse_total{reason="rapid_reset"}, and SIGTERM under
    attack stops the proxy within drainTimeout (2 s) + 8 s."""
    small_asan_quarantine(monkeypatch)
    env = echo_mesh(tmp_path)
    proxy = env["client"]
    out = env["outbound"]
    assert curl_status(f"http://{out}/", "-H", "Host: echo") == 200
    base_rss = rss_kb(proxy.pid)
    attack_s = 12
    deadline = time.monotonic() + attack_s
    stats = {"resets": 0, "connections": 0, "closed_by_proxy": 0}
    attackers = [threading.Thread(target=rapid_reset_churn, args=(out, deadline), kwargs={"stats": stats},
                                  daemon=True) for _ in range(3)]
    for t in attackers:
        t.start()
    canary, ready, peak_rss = [], [], base_rss
    try:
        while time.monotonic() < deadline:
            canary.append(curl_status(f"http://{out}/?canary=1", "-H", "Host: echo", timeout=10))
            ready.append(curl_status(f"http://{env['admin']}/ready", timeout=10))
            peak_rss = max(peak_rss, rss_kb(proxy.pid))
            time.sleep(0.5)
        # still under attack: the abuse is visible and drain works
        m = metrics(env["admin"])
        abuse = metric_value(m, 'rete_proxy_h2_abuse_total{reason="rapid_reset"}')
        abuse_client = metric_value(m, 'rete_proxy_h2_abuse_total{reason="rapid_reset_client"}')
        t_more = time.monotonic() + 15
        more = [threading.Thread(target=rapid_reset_churn, args=(out, t_more), daemon=True) for _ in range(2)]
        for t in more:
            t.start()
        time.sleep(1)
        peak_rss = max(peak_rss, rss_kb(proxy.pid))
        t0 = time.monotonic()
        proxy.send_signal(signal.SIGTERM)
        try:
            rc = proxy.wait(timeout=2 + 8)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
            rc = None
        stop_s = time.monotonic() - t0
    finally:
        for t in attackers:
            t.join(timeout=30)
    print(f"attack: {stats}, canary={canary}, ready={ready}, rss {base_rss}->{peak_rss} kB, "
          f"abuse={abuse}/{abuse_client}, stop={stop_s:.1f}s rc={rc}")
    assert stats["resets"] > 5000, stats  # the attack did run
    assert canary and all(c == 200 for c in canary), canary
    assert ready and all(c == 200 for c in ready), ready
    assert peak_rss - base_rss < 150 * 1024, (base_rss, peak_rss)
    assert abuse > 0 and abuse_client > 0, [line for line in m.splitlines() if "h2" in line]
    assert rc is not None, "SIGTERM ignored under attack:\n" + read_log(proxy)[-3000:]
    log = read_log(proxy)
    assert "Sanitizer" not in log and "runtime error:" not in log, log[-4000:]
    del env["mesh"].proxies["client-0"]
    stop_and_check_proxies(env["mesh"])


def hold_zero_window_streams(addr, streams, path):
    """One connection with SETTINGS_INITIAL_WINDOW_SIZE 0 and `streams`
    requests for a response body that can then never be sent. Returns the
    socket (kept open by the caller)."""
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    block = hpack_request(path=path)
    s.sendall(PREFACE + settings(initial_window=0)
              + b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, block) for i in range(streams)))
    return s


def count_response_heads(socks, want, timeout):
    """Read every socket until `want` response HEADERS frames arrived in
    all, or `timeout`. Returns {status: count}."""
    bufs = {s: b"" for s in socks}
    statuses = {}
    got = 0
    deadline = time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        for s in select.select(socks, [], [], 0.5)[0]:
            data = s.recv(1 << 16)
            if not data:
                socks = [x for x in socks if x is not s]
                continue
            buf = bufs[s] + data
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                ftype, payload = buf[3], buf[9:9 + length]
                if ftype == HEADERS:
                    got += 1
                    # :status from the static table: 0x88 200, 0x8e 500; others literal
                    key = {0x88: 200, 0x8e: 500}.get(payload[0], "other") if payload else "other"
                    statuses[key] = statuses.get(key, 0) + 1
                buf = buf[9 + length:]
            bufs[s] = buf
        if not socks:
            break
    return statuses, got


def test_h2_zero_window_streams_do_not_take_the_circuit_breaker_budget(tmp_path, monkeypatch):
    """Issue 8 item 7 (HTTP/2 part): 20 connections x 100 streams whose
    responses can never be sent (zero flow-control window) no longer hold
    the whole 1024-request budget of the destination: a connection over its
    share (1024/64) is refused once half the budget is in use, so a normal
    caller still gets 200. The refusals are counted in
    rete_proxy_h2_abuse_total{reason="budget_share"}."""
    small_asan_quarantine(monkeypatch)
    env = echo_mesh(tmp_path)
    out = env["outbound"]
    socks = []
    try:
        for _ in range(20):
            socks.append(hold_zero_window_streams(out, 100, "/?size=2000"))
        statuses, got = count_response_heads(list(socks), 2000, timeout=60)
        print(f"heads: {got} {statuses}")
        code = curl_status(f"http://{out}/?canary=1", "-H", "Host: echo", timeout=10)
        m = metrics(env["admin"])
        assert code == 200, (code, statuses, [l for l in m.splitlines() if "circuit" in l])
        assert metric_value(m, 'rete_proxy_h2_abuse_total{reason="budget_share"}') > 0
    finally:
        for s in socks:
            s.close()
    stop_and_check_proxies(env["mesh"])


def active_downstream(admin, listener):
    m = metrics(admin)
    return metric_value(m, f'rete_proxy_downstream_connections_active{{listener="{listener}"}}')


def echo_mesh_with_route_timeout(tmp_path, timeout):
    """echo_mesh, with an HTTPRoute that gives every request a timeout (so
    each exchange arms its timer)."""
    from helpers import start_echo
    from mesh import Mesh, backend, fresh_host, http_route, service, workload
    m = Mesh(tmp_path)
    client_host, echo_host = fresh_host(), fresh_host()
    echo_proc, echo_addr = start_echo(name="echo", host=echo_host)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [backend("echo")],
            "timeouts": {"request": timeout}}
    m.add(service("echo", m.ns, [(80, "HTTP", echo_port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}),
          http_route("echo", m.ns, "echo", [rule]))
    m.start_proxy("echo-0", "echo", echo_host, inbound=[(echo_port, "HTTP")])
    client = m.start_proxy("client-0", "client", client_host)
    return {"mesh": m, "outbound": f"{client_host}:15001", "admin": f"{client_host}:15000", "client": client}


@pytest.mark.parametrize("route_timeout", [None, "30s"])
def test_h2_distributed_rapid_reset_churn_memory_is_bounded(tmp_path, monkeypatch, route_timeout):
    """Issue 8 item 1 (memory): a distributed rapid-reset attacker — 4
    threads, each connection from the next of 200 source addresses
    (127.1.0.x), each connection resetting 240 streams (just under the
    per-connection rule's 250) so neither the per-connection nor the
    per-client rule trips — churns the outbound h2c listener for 8 s. The
    client sidecar's RSS stays under idle + 64 MB during the attack and
    comes back under idle + 32 MB once the connections are closed.
    Measured on the plain build (build/): under ASan the allocator is ASan's
    own and RSS says nothing about glibc. With a route timeout, every
    exchange has armed its timer (whose handle must be closed before the
    exchange can be freed)."""
    import itertools
    from helpers import REPO
    plain = REPO / "build"
    assert (plain / "rete-proxy").exists(), "make test builds build/ (the plain tree) before the system tests"
    monkeypatch.setenv("RETE_BUILD", str(plain))
    env = echo_mesh_with_route_timeout(tmp_path, route_timeout) if route_timeout else echo_mesh(tmp_path)
    proxy = env["client"]
    out = env["outbound"]
    assert curl_status(f"http://{out}/", "-H", "Host: echo") == 200
    idle = rss_kb(proxy.pid)
    sources = itertools.cycle([f"127.1.0.{i}" for i in range(1, 201)])
    stats = {"resets": 0, "connections": 0, "closed_by_proxy": 0}
    deadline = time.monotonic() + 8
    attackers = [threading.Thread(target=rapid_reset_churn, args=(out, deadline),
                                  kwargs={"per_conn": 240, "stats": stats, "sources": sources}, daemon=True)
                 for _ in range(4)]
    for t in attackers:
        t.start()
    peak = idle
    while any(t.is_alive() for t in attackers):
        peak = max(peak, rss_kb(proxy.pid))
        time.sleep(0.2)
    for t in attackers:
        t.join(timeout=30)
    peak = max(peak, rss_kb(proxy.pid))
    # every attack connection gone, then RSS back near idle
    end = time.monotonic() + 30
    while time.monotonic() < end and active_downstream(env["admin"], "outbound") > 0:
        time.sleep(0.2)
    after = rss_kb(proxy.pid)
    end = time.monotonic() + 15
    while time.monotonic() < end and after - idle >= 32 * 1024:
        time.sleep(0.5)
        after = rss_kb(proxy.pid)
    m = metrics(env["admin"])
    abuse = metric_value(m, 'rete_proxy_h2_abuse_total{reason="rapid_reset"}')
    abuse_client = metric_value(m, 'rete_proxy_h2_abuse_total{reason="rapid_reset_client"}')
    print(f"attack: {stats}, rss idle {idle} peak {peak} after {after} kB, abuse={abuse}/{abuse_client}")
    assert stats["resets"] > 5000, stats  # the attack did run
    assert peak - idle < 64 * 1024, (idle, peak, after)
    assert after - idle < 32 * 1024, (idle, peak, after)
    assert curl_status(f"http://{out}/", "-H", "Host: echo") == 200
    stop_and_check_proxies(env["mesh"])


# ---- HTTP/2 downstream timeouts (issue 8 item 7, HTTP/2 part) ----

# The client sidecar's limits in these tests: short, so a test sees them fire.
H2_LIMITS = {"drainTimeout": "2s", "requestHeaderTimeout": "1s", "requestBodyTimeout": "1s",
             "responseWriteTimeout": "1s", "streamIdleTimeout": "2s"}


@pytest.fixture(scope="module")
def slow_env(tmp_path_factory):
    """echo_mesh with short downstream timeouts on the client sidecar."""
    from helpers import start_echo
    from mesh import Mesh, fresh_host, service, workload
    tmp = tmp_path_factory.mktemp("h2slow")
    m = Mesh(tmp)
    client_host, echo_host = fresh_host(), fresh_host()
    echo_proc, echo_addr = start_echo(name="echo", host=echo_host, persistent=True)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    m.add(service("echo", m.ns, [(80, "HTTP", echo_port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}))
    m.start_proxy("echo-0", "echo", echo_host, inbound=[(echo_port, "HTTP")], persistent=True)
    client = m.start_proxy("client-0", "client", client_host, extra_spec={"limits": H2_LIMITS},
                           persistent=True)
    yield {"mesh": m, "outbound": f"{client_host}:15001", "admin": f"{client_host}:15000",
           "client": client, "echo": echo_proc}
    stop_and_check_proxies(m)


def timeouts(admin, kind):
    return metric_value(metrics(admin), f'rete_proxy_downstream_timeouts_total{{timeout="{kind}"}}')


def read_frames(s, until, timeout):
    """Read frames from `s` until until(frame) is true for one of them, EOF
    or `timeout`. Returns (frames, eof); a frame is (type, flags, stream, payload)."""
    buf, frames = b"", []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([s], [], [], 0.2)[0]:
            continue
        try:
            data = s.recv(1 << 16)
        except (ConnectionResetError, OSError):
            return frames, True
        if not data:
            return frames, True
        buf += data
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length = int.from_bytes(buf[:3], "big")
            f = (buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + length])
            buf = buf[9 + length:]
            frames.append(f)
            if until(f):
                return frames, False
    return frames, False


def h2_connect(addr, initial_window=None):
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(PREFACE + settings(initial_window=initial_window) + frame(SETTINGS, ACK, 0))
    return s


def test_h2_zero_window_stream_is_reset_after_response_write_timeout(slow_env):
    """A stream whose client grants no flow-control window (SETTINGS
    INITIAL_WINDOW_SIZE 0, no WINDOW_UPDATE) while its response body waits
    is reset (RST_STREAM CANCEL) once limits.responseWriteTimeout (1 s here)
    passes without progress, so it stops holding an exchange, its upstream
    and the destination's budget; counted as timeout="response_write".
    Before: the stream stayed open for as long as the client kept the
    connection."""
    before = timeouts(slow_env["admin"], "response_write")
    s = h2_connect(slow_env["outbound"], initial_window=0)
    try:
        s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 1, hpack_request(path="/?size=2000")))
        frames, eof = read_frames(s, lambda f: f[0] == RST_STREAM and f[2] == 1, timeout=15)
        assert any(f[0] == RST_STREAM and f[2] == 1 for f in frames), (eof, [f[:3] for f in frames])
    finally:
        s.close()
    assert timeouts(slow_env["admin"], "response_write") > before


def test_h2_headers_without_continuation_are_timed_out(slow_env):
    """A HEADERS frame without END_HEADERS never followed by its
    CONTINUATION blocks the whole connection (no other frame may come
    between): after limits.requestHeaderTimeout (1 s here) from the
    stream's first HEADERS frame the connection gets GOAWAY and is closed;
    counted as timeout="request_header". Before: held forever (the idle
    timer stops when a stream begins)."""
    before = timeouts(slow_env["admin"], "request_header")
    s = h2_connect(slow_env["outbound"])
    try:
        block = hpack_request(path="/")
        s.sendall(frame(HEADERS, END_STREAM, 1, block[:4]))  # no END_HEADERS, no CONTINUATION
        frames, eof = read_frames(s, lambda f: False, timeout=15)
        assert eof, [f[:3] for f in frames]
        assert any(f[0] == 7 for f in frames), [f[:3] for f in frames]  # GOAWAY
    finally:
        s.close()
    assert timeouts(slow_env["admin"], "request_header") > before


def test_h2_stalled_request_body_is_timed_out(slow_env):
    """A POST stream whose body stops (HEADERS without END_STREAM, one DATA
    frame, then nothing) is answered 408 and reset once
    limits.requestBodyTimeout (1 s here) passes without a body byte while
    the proxy is reading; the upstream request is cancelled. Counted as
    timeout="request_body". Before: the stream (and its upstream) stayed
    open for as long as the client kept the connection."""
    before = timeouts(slow_env["admin"], "request_body")
    s = h2_connect(slow_env["outbound"])
    try:
        block = (b"\x83\x86" + b"\x04\x01/" + b"\x01\x04echo")  # POST http / echo
        s.sendall(frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, 0, 1, b"0123456789"))
        frames, eof = read_frames(s, lambda f: f[0] == RST_STREAM and f[2] == 1, timeout=15)
        heads = [f for f in frames if f[0] == HEADERS and f[2] == 1]
        assert any(f[0] == RST_STREAM and f[2] == 1 for f in frames), (eof, [f[:3] for f in frames])
        assert heads and heads[0][3][:1] != b"\x88", (frames, read_log(slow_env["client"])[-2000:])  # not a 200
    finally:
        s.close()
    assert timeouts(slow_env["admin"], "request_body") > before


def test_h2_idle_stream_after_response_is_reset_by_stream_idle_timeout(slow_env):
    """A stream whose response has started (rete-echo's ?echo=1 answers at
    once and echoes the body as it comes) but whose request body then stops,
    with nothing moving either way, is reset after limits.streamIdleTimeout
    (2 s here; Envoy's stream_idle_timeout, default 5m): requestBodyTimeout
    does not apply once the response is under way (gRPC streams may wait on
    each other for long). Counted as timeout="stream_idle". Before: held
    for as long as the client kept the connection."""
    before = timeouts(slow_env["admin"], "stream_idle")
    s = h2_connect(slow_env["outbound"])
    try:
        block = (b"\x83\x86" + b"\x04\x08/?echo=1" + b"\x01\x04echo")  # POST http /?echo=1 echo
        s.sendall(frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, 0, 1, b"0123456789"))
        frames, eof = read_frames(s, lambda f: f[0] == RST_STREAM and f[2] == 1, timeout=20)
        kinds = [f[:3] for f in frames]
        assert any(f[0] == HEADERS and f[2] == 1 for f in frames), (eof, kinds)  # the response started
        assert any(f[0] == RST_STREAM and f[2] == 1 for f in frames), (eof, kinds)
    finally:
        s.close()
    assert timeouts(slow_env["admin"], "stream_idle") > before


def test_h2_client_that_never_reads_is_closed_and_costs_bounded_memory(slow_env):
    """An HTTP/2 client that grants all the flow-control window it can (so
    flow control never stops the proxy) but never reads its socket: the
    proxy stops producing frames once 1 MiB waits in the socket's write
    queue (memory stays bounded while the upstream has more), and after
    limits.responseWriteTimeout (1 s here) without a byte taken the
    connection is closed; counted as timeout="response_write". Before: no
    write timeout on HTTP/2 connections, and the write queue grew as fast
    as the upstream sent."""
    before = timeouts(slow_env["admin"], "response_write")
    host, port = slow_env["outbound"].split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    proxy = slow_env["client"]
    base = rss_kb(proxy.pid)
    peak = base
    try:
        big = (1 << 31) - 1
        s.sendall(PREFACE + settings(initial_window=big) + frame(SETTINGS, ACK, 0)
                  + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", big - 65535))
                  + b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i,
                                   hpack_request(path="/?size=100000000")) for i in range(4)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and timeouts(slow_env["admin"], "response_write") <= before:
            peak = max(peak, rss_kb(proxy.pid))
            time.sleep(0.2)
        peak = max(peak, rss_kb(proxy.pid))
        print(f"rss {base} -> {peak} kB")
        assert timeouts(slow_env["admin"], "response_write") > before
        assert peak - base < 64 * 1024, (base, peak)
    finally:
        s.close()
