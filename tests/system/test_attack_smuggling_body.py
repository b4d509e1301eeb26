"""Attack suite, request smuggling in the chunked body (issue 13). The
head-level cases (CL+TE, TE obfuscations, duplicate CL, bare LF, obs-fold:
tests/system/smuggling_cases.py) are refused before anything is forwarded;
these are found only in the body, after the head went on. Each request
carries a second request behind its malformed chunk; through the mesh
(client sidecar -> mesh -> echo sidecar -> rete-echo, which echoes what it
received) the smuggled request must never be answered by the echo."""
import re
import socket

import pytest

from attack import probe_http, read_to_close, scrape, under_attack, value
from mesh import echo_mesh, stop_and_check_proxies

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n"
HEAD = b"POST /first HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n"
BAD_BODIES = {
    "size_overflow": b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "size_plus": b"+5\r\nhello\r\n0\r\n\r\n",
    "size_hex_prefix": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size_space_inside": b"5 5\r\nhello\r\n0\r\n\r\n",
    "size_empty": b"\r\nhello\r\n0\r\n\r\n",
    "size_bare_lf": b"5\nhello\r\n0\r\n\r\n",
    "data_longer_than_size": b"3\r\nhello\r\n0\r\n\r\n",
    "data_no_crlf": b"5\r\nhelloXX0\r\n\r\n",
    "last_chunk_bare_lf": b"5\r\nhello\r\n0\n\n",
    "ext_bad_char": b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
    "trailer_obs_fold": b"0\r\nX-T: a\r\n b\r\n\r\n",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = echo_mesh(tmp_path_factory.mktemp("attack-smuggling"), persistent=True)
    yield e
    stop_and_check_proxies(e["mesh"])


def exchange(addr, raw):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(raw)
        s.settimeout(10)
        return read_to_close(s)


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_malformed_chunk_never_smuggles_a_request(env, name):
    """The malformed body ends the exchange (400 to the client, or the
    request cut) and the connection; the request behind it is never
    answered by the echo, and the parse error is counted."""
    before = value(scrape(env["admin"]), "rete_proxy_http_parse_errors_total")
    with under_attack(probe_http(env["outbound"]), env["client"].pid, mib=32):
        out = exchange(env["outbound"], HEAD + BAD_BODIES[name] + SMUGGLED)
    assert b'"path":"/smuggled"' not in out, out[:600]
    statuses = [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert len(statuses) <= 1, out[:600]
    assert statuses and statuses[0] == 400, out[:600]
    assert value(scrape(env["admin"]), "rete_proxy_http_parse_errors_total") > before
