"""rete-echo, the backend of every other system test, checked with clients
nobody here wrote: curl (HTTP/1.1 and h2c prior knowledge), nghttp and
Python's http.client."""
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from helpers import read_log, start_echo, stop_process

PATTERN = b"0123456789abcdef"


def pattern_bytes(n):
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def curl(*args, timeout=60):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def conn(addr, timeout=30):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def get(addr, path, method="GET", body=None, headers=None):
    c = conn(addr)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def raw_exchange(addr, payload, timeout=10):
    """Send raw bytes, read until the server closes."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


@pytest.fixture
def echo():
    proc, addr = start_echo("--version-label", "v7", name="orders")
    yield addr
    assert stop_process(proc) == 0


def test_json_describes_service_and_request(echo):
    r, data = get(echo, "/a/b?x=1&y=2", headers={"X-Rep": "one", "x-rep": "two", "X-Mixed-Case": "v"})
    assert r.status == 200
    assert r.getheader("content-type") == "application/json"
    assert r.getheader("x-echo-service") == "orders"
    assert r.getheader("x-echo-version") == "v7"
    doc = json.loads(data)
    assert doc["service"] == "orders"
    assert doc["version"] == "v7"
    assert doc["instance"] == echo
    assert doc["protocol"] == "HTTP/1.1"
    assert doc["method"] == "GET"
    assert doc["path"] == "/a/b"
    assert doc["query"] == "x=1&y=2"
    assert doc["headers"]["x-rep"] == "one, two"
    assert doc["headers"]["x-mixed-case"] == "v"
    assert doc["headers"]["host"] == echo
    assert doc["body_bytes"] == 0
    assert doc["peer"].startswith("127.0.0.1:")


def test_curl_http11_and_h2_prior_knowledge(echo):
    d1 = json.loads(curl(f"http://{echo}/p?q=1"))
    assert d1["protocol"] == "HTTP/1.1" and d1["path"] == "/p" and d1["query"] == "q=1"
    out = curl("--http2-prior-knowledge", "-D", "-", f"http://{echo}/h2path?z=9")
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/2 200")
    assert b"x-echo-service: orders" in head
    d2 = json.loads(body)
    assert d2["protocol"] == "HTTP/2"
    assert d2["path"] == "/h2path" and d2["query"] == "z=9"
    assert d2["headers"]["host"] == echo  # from :authority


def test_nghttp(echo):
    r = subprocess.run(["nghttp", "-v", f"http://{echo}/ng"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert ":status: 200" in out
    assert "x-echo-version: v7" in out
    body = out[out.index('{"service"'):]
    doc = json.loads(body[: body.index("}", body.index('"status"')) + 1])
    assert doc["protocol"] == "HTTP/2" and doc["path"] == "/ng"


@pytest.mark.parametrize("h2", [False, True])
def test_delay_waits_at_least(echo, h2):
    t0 = time.monotonic()
    body = curl(*(["--http2-prior-knowledge"] if h2 else []), f"http://{echo}/d?delay=300")
    assert time.monotonic() - t0 >= 0.3
    assert json.loads(body)["query"] == "delay=300"


def test_latency_flag_adds_delay():
    proc, addr = start_echo("--latency", "200")
    t0 = time.monotonic()
    r, _ = get(addr, "/")
    assert r.status == 200 and time.monotonic() - t0 >= 0.2
    assert stop_process(proc) == 0


def test_status_switch_and_validation(echo):
    r, data = get(echo, "/?status=418")
    assert r.status == 418 and json.loads(data)["status"] == 418
    out = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", f"http://{echo}/?status=503")
    assert out == b"503"
    for bad in ("99", "100", "600", "abc", ""):
        r, data = get(echo, f"/?status={bad}")
        assert r.status == 400, bad
        assert "status" in json.loads(data)["error"]


def test_status_204_has_no_body(echo):
    r, data = get(echo, "/?status=204")
    assert r.status == 204 and data == b""


def test_size_exact_length(echo):
    r, data = get(echo, "/s?size=12345")
    assert r.status == 200
    assert r.getheader("content-length") == "12345"
    assert data == pattern_bytes(12345)
    r, data = get(echo, "/s?size=0")
    assert r.status == 200 and data == b""
    r, _ = get(echo, f"/s?size={(1 << 30) + 1}")
    assert r.status == 400


@pytest.mark.parametrize("h2", [False, True])
def test_size_10mib_streamed(echo, h2):
    n = 10 * 1024 * 1024
    body = curl(*(["--http2-prior-knowledge"] if h2 else []), f"http://{echo}/big?size={n}")
    assert len(body) == n
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern_bytes(n)).digest()


def test_echo_1mib_chunked_upload_http11(echo):
    payload = os.urandom(1 << 20)

    def gen():
        for i in range(0, len(payload), 7000):  # odd chunk sizes on purpose
            yield payload[i : i + 7000]

    c = conn(echo)
    c.request("POST", "/up?echo=1", body=gen(), encode_chunked=True)
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.status == 200
    assert data == payload


def test_echo_upload_curl_both_protocols(echo, tmp_path):
    payload = os.urandom(1 << 20)
    f = tmp_path / "up.bin"
    f.write_bytes(payload)
    assert curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{f}", f"http://{echo}/e?echo=1") == payload
    assert curl("--http2-prior-knowledge", "--data-binary", f"@{f}", f"http://{echo}/e?echo=1") == payload


@pytest.mark.parametrize("h2", [False, True])
def test_body_counted_and_hashed(echo, tmp_path, h2):
    payload = os.urandom(300000)
    f = tmp_path / "b.bin"
    f.write_bytes(payload)
    doc = json.loads(curl(*(["--http2-prior-knowledge"] if h2 else []), "--data-binary", f"@{f}", f"http://{echo}/b"))
    assert doc["method"] == "POST"
    assert doc["body_bytes"] == len(payload)
    assert doc["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_trailer_over_h2_with_nghttp(echo):
    r = subprocess.run(["nghttp", "-v", f"http://{echo}/t?trailer=X-Check:done"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    # The trailer arrives in a HEADERS frame after the DATA.
    data_at = out.index("recv DATA frame")
    assert out.index("x-check: done", data_at) > data_at


def test_trailer_http11_with_te_trailers(echo):
    out = raw_exchange(
        echo,
        b"GET /t?size=5&trailer=X-Check:done HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"5\r\n01234\r\n0\r\nx-check: done\r\n\r\n"


def test_response_header_switch(echo):
    r, _ = get(echo, "/?header=X-One:1&header=X-Two:two%20words")
    assert r.getheader("x-one") == "1" and r.getheader("x-two") == "two words"
    r, _ = get(echo, "/?header=Content-Length:5")
    assert r.status == 400  # framing fields are refused


def test_head(echo):
    r, data = get(echo, "/h", method="HEAD")
    assert r.status == 200 and data == b""
    assert int(r.getheader("content-length")) > 0
    r, data = get(echo, "/h?size=777", method="HEAD")
    assert r.getheader("content-length") == "777" and data == b""


def test_keep_alive_reuse(echo):
    c = conn(echo)
    peers = set()
    for i in range(5):
        c.request("GET", f"/k{i}")
        r = c.getresponse()
        doc = json.loads(r.read())
        assert doc["path"] == f"/k{i}"
        peers.add(doc["peer"])
    c.close()
    assert len(peers) == 1


def test_pipelined_requests_answered_in_order(echo):
    out = raw_exchange(
        echo,
        b"GET /first?delay=100 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b'"/first"') < out.index(b'"/second"') < out.index(b'"/third"')


def test_malformed_request_gets_400_and_close(echo):
    out = raw_exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in out.lower()
    out = raw_exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


def test_failure_rate_one_gives_503():
    proc, addr = start_echo("--failure-rate", "1.0")
    for _ in range(3):
        r, data = get(addr, "/")
        assert r.status == 503
        assert "failure" in json.loads(data)["error"]
    assert curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", f"http://{addr}/") == b"503"
    assert stop_process(proc) == 0


def test_failure_rate_is_deterministic_by_seed():
    def codes(seed):
        proc, addr = start_echo("--failure-rate", "0.5", "--seed", str(seed), "--quiet")
        c = conn(addr)
        out = []
        for _ in range(40):
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            out.append(r.status)
        c.close()
        assert stop_process(proc) == 0
        return out

    a = codes(42)
    assert a == codes(42)
    assert 200 in a and 503 in a


def test_sigterm_exits_zero_with_open_connections(echo):
    proc, addr = start_echo()
    idle = conn(addr)
    idle.request("GET", "/")
    idle.getresponse().read()  # an idle keep-alive connection stays open
    assert stop_process(proc, signal.SIGTERM) == 0
    proc, addr = start_echo()
    assert stop_process(proc, signal.SIGINT) == 0


def test_ready_line_and_two_listeners():
    from helpers import build_path, free_port, start_process, loopback_host

    h = loopback_host()
    a1, a2 = f"{h}:{free_port(h)}", f"{h}:{free_port(h)}"
    proc = start_process(
        [build_path("rete-echo"), "--listen", a1, "--listen", a2, "--name", "two"],
        rf"rete-echo two listening on {a2}",
    )
    assert f"rete-echo two listening on {a1}" in read_log(proc)
    assert json.loads(get(a1, "/")[1])["instance"] == a1
    assert json.loads(get(a2, "/")[1])["instance"] == a2
    assert stop_process(proc) == 0


def test_max_connections_bound():
    proc, addr = start_echo("--max-connections", "1")
    held = conn(addr)
    held.request("GET", "/")
    held.getresponse().read()
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert s.recv(100) == b""  # accepted, then closed at once
        except ConnectionResetError:
            pass
    held.request("GET", "/")
    assert held.getresponse().status == 200
    held.close()
    assert stop_process(proc) == 0
