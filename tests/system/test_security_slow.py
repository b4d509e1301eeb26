"""Slow and greedy clients against the sidecar (security issue 8, item 7):
slowloris heads, stalled request bodies, clients that never read their
response, a detection phase that receives one byte, connection floods that
fill the data listeners, and a file-descriptor limit reached by accepts.

Every test bounds its loops in count and time, and waits on a condition (a
closed socket, a metric) rather than on a duration: the timeouts in the
static configuration are short so the conditions come quickly, but nothing
asserts how quickly."""
import functools
import re
import socket
import struct
import time

import pytest

from helpers import wait_for as _wait_for, build_path, read_log, start_echo, start_process
from mesh import Mesh, destination_rule, fresh_host, service, stop_and_check_proxies, workload

# Deadlines under test fire after a second or more on a loaded machine.
wait_for = functools.partial(_wait_for, timeout=30)

# The client sidecar's limits: short timeouts so a test sees them fire, and a
# small connection cap so filling it is cheap.
CAP = 40
LIMITS = {"drainTimeout": "2s", "maxConnections": CAP, "requestHeaderTimeout": "1s",
          "requestBodyTimeout": "1s", "responseWriteTimeout": "1s", "detectTimeout": "500ms",
          "tcpIdleTimeout": "1s"}
# The circuit-breaker budget of the echo service seen from the client.
CB_BUDGET = 3


def _addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)




def http(addr, path, host="echo", timeout=15):
    """(status, body) of one GET on a fresh connection, or (None, why)."""
    try:
        with socket.create_connection(_addr(addr), timeout=timeout) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
    except OSError as e:
        return None, str(e)
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", out)
    if not m:
        return None, out[:200]
    return int(m.group(1)), out.partition(b"\r\n\r\n")[2]


def metrics(env):
    status, body = http(env["admin"], "/metrics", host="admin")
    assert status == 200, body
    return body.decode()


def sample(text, series):
    """The value of one series line (`name{labels}`), 0 when absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def active(env, listener="outbound"):
    return sample(metrics(env), f'rete_proxy_downstream_connections_active{{listener="{listener}"}}')


def reset(s):
    """Close with a reset: a plain close is only a half-close to the proxy,
    which still answers a request it has read (RFC 9112 §9.6)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def read_until_close(s, bound=30):
    """Read until the peer closes (or resets), at most `bound` seconds.
    Returns (bytes read, closed)."""
    s.settimeout(0.5)
    out = b""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return out, True
        if not chunk:
            return out, True
        out += chunk
    return out, False


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    m = Mesh(tmp)
    client_host, echo_host = fresh_host(), fresh_host()
    echo_proc, echo_addr = start_echo(name="echo", host=echo_host, persistent=True)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    m.add(service("echo", m.ns, [(80, "HTTP", echo_port), (81, "TCP", echo_port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}),
          destination_rule("echo", m.ns, "echo", connectionPool={"http": {"http2MaxRequests": CB_BUDGET}}))
    m.start_proxy("echo-0", "echo", echo_host, inbound=[(echo_port, "HTTP")], persistent=True)
    m.start_proxy("client-0", "client", client_host, extra_spec={"limits": LIMITS}, persistent=True,
                  upstreams=[(f"{client_host}:9191", "echo", 81)])
    e = {"tcp_upstream": f"{client_host}:9191","mesh": m, "outbound": f"{client_host}:15001", "inbound": f"{client_host}:15006",
         "admin": f"{client_host}:15000", "echo": echo_proc, "client_host": client_host}
    yield e
    stop_and_check_proxies(m)


@pytest.fixture(autouse=True)
def quiet_listener(env):
    """Each test starts with no connection left over on the data listeners."""
    wait_for(lambda: active(env) == 0, what="outbound connections of the previous test to close")
    yield


@pytest.mark.parametrize("listener", ["outbound", "inbound", "admin"])
def test_partial_request_head_is_closed_with_408(env, listener):
    """Slowloris: a head that stops half-way gets 408 and a close once
    limits.requestHeaderTimeout has passed, instead of staying open, on
    every listener that reads HTTP/1.1 heads."""
    before = sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="request_header"}')
    with socket.create_connection(_addr(env[listener])) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: echo\r\nX-Slow: ")
        out, closed = read_until_close(s)
    assert closed, "a partial request head is still open"
    assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    assert sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="request_header"}') > before


def test_dripping_request_head_is_closed(env):
    """The header timeout bounds the whole head: a byte every 100 ms does not
    keep it alive (an idle timer reset by every read would)."""
    head = b"GET / HTTP/1.1\r\nHost: echo\r\n" + b"X-Drip: " + b"a" * 4000
    with socket.create_connection(_addr(env["outbound"])) as s:
        s.settimeout(0.1)
        closed = False
        out = b""
        for b in head[:400]:  # at most ~40 s of dripping
            try:
                s.send(bytes([b]))
                chunk = s.recv(4096)
                out += chunk
                if not chunk:
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    assert closed, "a dripping request head kept its connection open"
    assert out == b"" or out.startswith(b"HTTP/1.1 408 "), out[:200]


def test_one_byte_then_silence_is_bounded(env):
    """Protocol detection sees one byte and then nothing: the connection is
    closed (detection timeout, then the header timeout) rather than held."""
    with socket.create_connection(_addr(env["outbound"])) as s:
        s.sendall(b"G")
        out, closed = read_until_close(s)
    assert closed, "one byte then silence held the connection open"
    assert out == b"" or out.startswith(b"HTTP/1.1 408 "), out[:200]


def test_idle_tcp_tunnel_is_closed(env):
    """Opaque TCP (an explicit upstream to a TCP service port): a tunnel with
    no byte either way for limits.tcpIdleTimeout is closed, with its
    upstream; one that carries bytes works."""
    with socket.create_connection(_addr(env["tcp_upstream"])) as s:
        s.sendall(b"GET /tcp HTTP/1.1\r\nHost: echo\r\n\r\n")
        s.settimeout(15)
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    before = sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="idle"}')
    with socket.create_connection(_addr(env["tcp_upstream"])) as s:
        out, closed = read_until_close(s)
    assert closed, "an idle TCP tunnel is still open"
    assert sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="idle"}') > before


def test_many_partial_heads_do_not_hold_the_listener(env):
    """A bounded slowloris flood: every partial head is closed by the
    proxy, and normal requests are served afterwards."""
    socks = []
    try:
        for i in range(CAP - 5):
            s = socket.create_connection(_addr(env["outbound"]))
            s.sendall(b"GET /flood-%d HTTP/1.1\r\nHost: echo\r\n" % i)
            socks.append(s)
        wait_for(lambda: active(env) == 0, what="partial heads to be closed by the proxy")
    finally:
        for s in socks:
            s.close()
    assert http(env["outbound"], "/after-flood")[0] == 200


def test_stalled_request_body_gets_408_and_frees_the_budget(env):
    """Slow bodies hold the service's circuit-breaker budget only until
    limits.requestBodyTimeout: then 408 and a close, and normal requests get
    through again."""
    socks = []
    try:
        for i in range(CB_BUDGET):
            s = socket.create_connection(_addr(env["outbound"]))
            s.sendall(b"POST /slow-body-%d HTTP/1.1\r\nHost: echo\r\nContent-Length: 1000\r\n\r\nabc" % i)
            socks.append(s)
        results = [read_until_close(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    for out, closed in results:
        assert closed, "a stalled request body is still open"
        assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    wait_for(lambda: http(env["outbound"], "/after-slow-bodies")[0] == 200, what="the budget to be freed")
    assert sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="request_body"}') >= CB_BUDGET


def test_stalled_request_body_blocked_the_budget_before(env):
    """The harness reproduces the defect's effect: while CB_BUDGET bodies are
    stalled (before their timeout) a normal request is refused by the circuit
    breaker, so the test above really measures the body timeout."""
    socks = []
    try:
        for i in range(CB_BUDGET):
            s = socket.create_connection(_addr(env["outbound"]))
            s.sendall(b"POST /hold-%d HTTP/1.1\r\nHost: echo\r\nContent-Length: 1000\r\n\r\n" % i)
            socks.append(s)
        # Keep them alive below the body timeout while the check runs.
        wait_for(lambda: active(env) >= CB_BUDGET, what="the stalled bodies to be accepted")
        seen = set()
        for _ in range(40):
            for s in socks:
                s.send(b"x")
            st = http(env["outbound"], "/while-held")[0]
            seen.add(st)
            if st == 503:
                break
            time.sleep(0.05)
        assert 503 in seen, seen
    finally:
        for s in socks:
            s.close()


def test_client_that_never_reads_is_closed(env):
    """Slow read: a client that never reads a large response is closed
    after limits.responseWriteTimeout without progress, and the exchange
    (upstream connection, budget) goes with it."""
    before = sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="response_write"}')
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(_addr(env["outbound"]))
        s.sendall(b"GET /?size=200000000 HTTP/1.1\r\nHost: echo\r\n\r\n")
        wait_for(lambda: active(env) == 0, what="the non-reading client to be closed")
    finally:
        s.close()
    assert sample(metrics(env), 'rete_proxy_downstream_timeouts_total{timeout="response_write"}') > before
    assert http(env["outbound"], "/after-slow-read")[0] == 200


def test_admin_reachable_when_data_listener_is_full(env):
    """CAP requests in flight fill the outbound listener's connection cap:
    one more data connection is refused (counted), yet the admin listener
    still answers /ready and /metrics."""
    socks = []
    try:
        for i in range(CAP):
            s = socket.create_connection(_addr(env["outbound"]))
            s.sendall(b"GET /held-%d?delay=60000 HTTP/1.1\r\nHost: echo\r\n\r\n" % i)
            socks.append(s)
        wait_for(lambda: active(env) >= CAP, what="the listener to fill")
        refused_before = sample(metrics(env),
                                'rete_proxy_downstream_connections_refused_total{listener="outbound",reason="max_connections"}')
        with socket.create_connection(_addr(env["outbound"])) as extra:
            extra.sendall(b"GET /over-cap HTTP/1.1\r\nHost: echo\r\n\r\n")
            out, closed = read_until_close(extra, bound=20)
        assert closed and b"200" not in out[:20], out[:200]
        status, body = http(env["admin"], "/ready", host="admin")
        assert status == 200, body
        text = metrics(env)
        assert sample(text, 'rete_proxy_downstream_connections_refused_total{listener="outbound",'
                            'reason="max_connections"}') > refused_before
    finally:
        for s in socks:
            reset(s)


def test_admin_has_its_own_cap(env):
    """The admin listener is exempt from the data cap but has its own:
    idle admin connections beyond limits.maxAdminConnections (32) are
    refused, and the admin port answers again once they go."""
    socks = []
    try:
        for _ in range(40):
            socks.append(socket.create_connection(_addr(env["admin"])))
        # The ones over the cap were accepted and closed at once.
        closed = 0
        for s in socks[32:]:
            s.settimeout(10)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, socket.timeout):
                closed += 1
        assert closed > 0
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: http(env["admin"], "/ready", host="admin")[0] == 200, what="admin to answer again")
    assert sample(metrics(env), 'rete_proxy_downstream_connections_refused_total{'
                                'listener="admin",reason="max_connections"}') > 0


def test_fd_limit_keeps_admin_reachable(tmp_path):
    """A proxy whose file limit is lower than its connection cap: a flood
    of connections never makes accept fail with EMFILE for the admin port
    (data connections are refused first, counted with reason fd_limit),
    and the loop does not spin."""
    m = Mesh(tmp_path)
    host = fresh_host()
    m.add(workload("lim-0", m.ns, host, "lim", {"app": "lim"}))
    nofile = 96

    path = m.write_config("lim-0", "lim", host, extra_spec={"limits": {"drainTimeout": "2s"}})
    proc = start_process(["prlimit", f"--nofile={nofile}:{nofile}", build_path("rete-proxy"), "--config", path],
                         r"ready:", timeout=15)
    m.proxies["lim-0"] = proc
    env = {"admin": f"{host}:15000"}
    socks = []
    try:
        for _ in range(2 * nofile):
            try:
                socks.append(socket.create_connection((host, 15001), timeout=5))
            except OSError:
                break
        status, body = http(env["admin"], "/ready", host="admin")
        assert status == 200, (status, body, read_log(proc)[-2000:])
        text = metrics(env)
        assert sample(text, 'rete_proxy_downstream_connections_refused_total{listener="outbound",'
                            'reason="fd_limit"}') > 0, text
    finally:
        for s in socks:
            s.close()
    stop_and_check_proxies(m)
