"""HTTP/1.1 strictness of the proxy's outbound listener: every malformed
request of smuggling_cases.py, sent raw to the client sidecar, gets the
parser's status and a closed connection, and never reaches the app (rete-echo
logs one line per request it serves, and its log stays unchanged)."""
import re
import socket
import time

import pytest

from mesh import echo_mesh
from smuggling_cases import SMUGGLING_CASES


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return echo_mesh(tmp_path_factory.mktemp("smuggling"), persistent=True)


def _addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def raw_exchange(addr, payload, timeout=15):
    """Send raw bytes and read until the server closes. Returns (bytes read,
    closed): a reset after the answer counts as closed, and a send that fails
    because the server already answered and closed is not an error."""
    with socket.create_connection(_addr(addr), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out, True
            except socket.timeout:
                return out, False
            if not chunk:
                return out, True
            out += chunk


def http_get(addr, path, timeout=15):
    with socket.create_connection(_addr(addr), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def parse_errors(env):
    m = re.search(r"^rete_proxy_http_parse_errors_total (\d+)", http_get(env["admin"], "/metrics"), re.M)
    assert m, "rete_proxy_http_parse_errors_total missing from /metrics"
    return int(m.group(1))


def echo_log(env):
    with open(env["echo"].log_path, "rb") as f:
        return f.read()


_barriers = 0


def echo_barrier(env):
    """The echo's log once a well-formed request sent now has reached it:
    anything forwarded before (over the client sidecar's one pooled mesh
    connection, in order) has had its chance to arrive; bounded (10 s)."""
    global _barriers
    _barriers += 1
    path = b"/barrier-%d" % _barriers
    out, _ = raw_exchange(env["outbound"], b"GET %s HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n" % path)
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    deadline = time.monotonic() + 10
    while path not in echo_log(env) and time.monotonic() < deadline:
        time.sleep(0.02)
    log = echo_log(env)
    assert path in log, "the barrier request never reached the echo"
    return log


def without_barriers(log):
    return b"\n".join(l for l in log.split(b"\n") if b"/barrier-" not in l)


def assert_refused(env, raw, status):
    """`raw` gets exactly one response, with `status`, then a close; the echo
    saw nothing and the parse error counter moved."""
    before_log, before_err = echo_log(env), parse_errors(env)
    out, closed = raw_exchange(env["outbound"], raw)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:300]
    assert closed, "connection left open after a refused request"
    assert out.count(b"HTTP/1.1 ") == 1, out[:600]
    # The refusal never reached the app: nothing was forwarded to rete-echo.
    seen = without_barriers(echo_barrier(env)[len(before_log):])
    assert seen.strip() == b"", seen
    assert parse_errors(env) > before_err
    return out


@pytest.mark.parametrize("name,raw,status", SMUGGLING_CASES, ids=[c[0] for c in SMUGGLING_CASES])
def test_smuggling_case_refused_never_forwarded(env, name, raw, status):
    # The cases use "Host: a"; an unknown host would be 404, so any 404 here
    # means the proxy parsed the request as valid and routed it.
    assert_refused(env, raw, status)


@pytest.mark.parametrize("raw", [
    b"GET /ctl-get HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
    b"POST /ctl-post HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"POST /ctl-chunked HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
], ids=["get", "post_content_length", "post_chunked"])
def test_well_formed_control_request_is_forwarded(env, raw):
    """The harness itself works: a well-formed request reaches the echo and
    leaves a line in its log."""
    before = echo_log(env)
    out, closed = raw_exchange(env["outbound"], raw)
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    assert closed
    path = raw.split(b" ")[1]
    assert b'"path":"%s"' % path in out
    deadline = time.monotonic() + 10
    while path not in echo_log(env)[len(before):] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path in echo_log(env)[len(before):]


def test_request_line_of_16k_is_414(env):
    assert_refused(env, b"GET /" + b"a" * 16384 + b" HTTP/1.1\r\nHost: echo\r\n\r\n", 414)


def test_headers_of_100k_are_431(env):
    fields = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 5000) for i in range(20))
    assert_refused(env, b"GET / HTTP/1.1\r\nHost: echo\r\n" + fields + b"\r\n", 431)


def test_200_header_fields_are_431(env):
    fields = b"".join(b"X-F-%d: v\r\n" % i for i in range(200))
    assert_refused(env, b"GET / HTTP/1.1\r\nHost: echo\r\n" + fields + b"\r\n", 431)


def test_refusal_closes_even_with_pipelined_requests_behind_it(env):
    """A malformed request followed by well-formed ones on the same
    connection: one refusal, then close; the ones behind are never served."""
    good = b"GET /pipelined-after HTTP/1.1\r\nHost: echo\r\n\r\n"
    bad = b"POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    out = assert_refused(env, bad + good + good, 400)
    assert b"pipelined-after" not in out


def test_good_then_bad_pipelined_serves_first_and_refuses_second(env):
    good = b"GET /pipelined-first HTTP/1.1\r\nHost: echo\r\n\r\n"
    bad = b"GET / HTTP/1.1\r\nHost: echo\r\nX: a\r\n b\r\n\r\n"  # obs-fold
    after = b"GET /pipelined-never HTTP/1.1\r\nHost: echo\r\n\r\n"
    before = echo_log(env)
    out, closed = raw_exchange(env["outbound"], good + bad + after)
    assert closed
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
    assert statuses == [b"200", b"400"], out[:1000]
    seen = echo_barrier(env)[len(before):]
    assert b"pipelined-first" in seen
    assert b"pipelined-never" not in seen


def test_refused_requests_leave_nothing_behind(tmp_path):
    """Regression: a refused request handed its connection to the lingering
    close without the parser's state, which was never freed (about 200 bytes
    per malformed request: memory an attacker could grow at will). A proxy
    that has only refused requests exits with no LeakSanitizer report (under
    `make test` proxies are the ASan build; with another build this checks
    only that it exits cleanly)."""
    from helpers import read_log, stop_process
    m = echo_mesh(tmp_path)
    for i in range(50):
        out, closed = raw_exchange(m["outbound"], b"GET / HTTP/1.1\r\nHost: echo\r\nX: a\r\n b\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400 ") and closed, out[:200]
    # bytes still arriving while the refusal lingers, then the peer goes
    for i in range(20):
        with socket.create_connection(_addr(m["outbound"]), timeout=10) as s:
            s.sendall(b"BAD\x01 / HTTP/1.1\r\n\r\n")
            s.sendall(b"more bytes the proxy must discard")
    # until every lingering close has ended (the linger is 2 s), so the
    # exit below runs with none left to clean up
    deadline = time.monotonic() + 15
    active = 'rete_proxy_downstream_connections_active{listener="outbound"} '
    while time.monotonic() < deadline:
        line = [l for l in http_get(m["admin"], "/metrics").splitlines() if l.startswith(active)]
        if line and float(line[0].split()[-1]) == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("lingering connections still open after 15 s")
    proc = m["client"]
    assert stop_process(proc) == 0
    log = read_log(proc)
    assert "Sanitizer" not in log and "runtime error" not in log, log[-4000:]
