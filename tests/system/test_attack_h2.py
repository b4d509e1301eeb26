"""Attack suite, HTTP/2 (issue 13): floods and resource games against the
sidecar's HTTP/2 listeners: the outbound listener (h2c, prior knowledge),
the inbound listener (plaintext under PERMISSIVE) and the mesh listener
(15008, mTLS with ALPN h2, a client certificate of the mesh).

Each attack runs under attack.under_attack: a canary sends ordinary
requests client sidecar -> mesh -> echo sidecar -> echo throughout (every
one must succeed within attack.CANARY_BOUND), the attacked proxy's RSS stays
under baseline + a stated bound, and the attack is counted in
rete_proxy_h2_abuse_total{reason} (or the counter named by the test).

The sustained rapid-reset churn (CVE-2023-44487, many connections for 12 s)
and the per-stream timeouts are in test_security_h2.py; this module adds
the bursts and the floods nghttp2 bounds itself, which were not counted
before. Every attack is bounded in frames, connections and time."""
import socket
import struct
import time

import hpack
import pytest

from attack import (ACK, CANCEL, CONTINUATION, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, PREFACE,
                    PRIORITY, RST_STREAM, SETTINGS, WINDOW_UPDATE, frame, hpack_request, probe_http,
                    read_frames, scrape, settings, sidecar_pair, under_attack, value)
from helpers import fresh_host, wait_for
from mesh import stop_and_check_proxies

MAX_STREAMS = 16
LIMITS = {"drainTimeout": "2s", "maxStreams": MAX_STREAMS, "responseWriteTimeout": "1s",
          "requestHeaderTimeout": "2s"}
# RSS growth allowed for the attacked proxy during one attack (ASan build,
# quarantine kept at 16 MB by small_asan_quarantine).
MEM_MIB = 64
TARGETS = ["outbound", "inbound", "mesh"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    t = sidecar_pair(tmp_path_factory.mktemp("attack-h2"), LIMITS)
    client_host, echo_host = t["client_host"], t["echo_host"]
    e = {"mesh": t["mesh"], "tls": t["mesh_tls"], "client": t["client"], "server": t["server"],
         "addr": {"outbound": (client_host, 15001), "inbound": (echo_host, 15006), "mesh": (echo_host, 15008)},
         "admin": {"outbound": f"{client_host}:15000", "inbound": f"{echo_host}:15000",
                   "mesh": f"{echo_host}:15000"},
         "canary": probe_http(f"{client_host}:15001", "echo")}
    yield e
    stop_and_check_proxies(e["mesh"])


def connect(env, target):
    """A socket to `target` that has sent the client preface and SETTINGS."""
    s = socket.create_connection(env["addr"][target], timeout=10, source_address=(fresh_host(), 0))
    if target == "mesh":
        s = env["tls"].wrap_socket(s)
        assert s.selected_alpn_protocol() == "h2"
    s.sendall(PREFACE + settings())
    return s


def pid(env, target):
    return (env["client"] if target == "outbound" else env["server"]).pid


def abuse(env, target, reason):
    return value(scrape(env["admin"][target]), "rete_proxy_h2_abuse_total", reason=reason)


def send_until_closed(s, chunks, bound=20.0):
    """Send `chunks` (an iterable of bytes) until the peer stops taking
    them or `bound` seconds pass; then read what it answers. Returns
    (frames received, closed by the peer, bytes sent)."""
    deadline = time.monotonic() + bound
    sent = 0
    try:
        for c in chunks:
            s.sendall(c)
            sent += len(c)
            if time.monotonic() > deadline:
                break
    except OSError:
        pass
    frames, closed = read_frames(s, 10)
    return frames, closed, sent


def hpack_int(n, prefix_bits, flags):
    """An HPACK integer (RFC 7541 §5.1) with its first byte's high bits `flags`."""
    top = (1 << prefix_bits) - 1
    if n < top:
        return bytes([flags | n])
    out, n = [flags | top], n - top
    while n >= 128:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(out + [n])


def goaway_code(frames):
    for t, _, _, payload in frames:
        if t == GOAWAY:
            return struct.unpack(">I", payload[4:8])[0]
    return None


@pytest.mark.parametrize("target", TARGETS)
def test_rapid_reset_burst_closes_the_connection(env, target):
    """CVE-2023-44487 in bursts: each of 4 connections sends 2,000 requests,
    each cancelled at once, in one write. The proxy answers GOAWAY
    (ENHANCE_YOUR_CALM) and closes; counted as rapid_reset."""
    before = abuse(env, target, "rapid_reset")
    block = hpack_request()
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        for _ in range(4):
            s = connect(env, target)
            burst = b"".join(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, block)
                             + frame(RST_STREAM, 0, 2 * i + 1, struct.pack(">I", CANCEL)) for i in range(2000))
            frames, closed, _ = send_until_closed(s, [burst[i:i + 16384] for i in range(0, len(burst), 16384)])
            s.close()
            assert closed, frames[-3:]
            assert goaway_code(frames) == 0xB, frames[-3:]  # ENHANCE_YOUR_CALM
    assert abuse(env, target, "rapid_reset") >= before + 4


@pytest.mark.parametrize("target", TARGETS)
def test_continuation_flood_is_cut(env, target):
    """CVE-2024-27316 family: a HEADERS frame without END_HEADERS followed
    by CONTINUATION frames that never end the block (each a piece of one
    long header value, each frame 1 KB). nghttp2 allows 8 CONTINUATIONs per
    block (H2_MAX_CONTINUATIONS); the connection is closed, counted as
    continuation_flood, and nothing is buffered without bound."""
    before = abuse(env, target, "continuation_flood")
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        for _ in range(3):
            s = connect(env, target)
            # :method GET, :scheme http, :path /, then a literal header whose
            # value claims 60,000 bytes (under nghttp2's 64 KB per field) and
            # arrives in CONTINUATION pieces of 1 KB.
            head = b"\x82\x86\x84" + b"\x40\x05x-big" + hpack_int(60000, 7, 0)
            chunks = [frame(HEADERS, END_STREAM, 1, head)]
            chunks += [frame(CONTINUATION, 0, 1, b"a" * 1024) for _ in range(50)]
            frames, closed, _ = send_until_closed(s, chunks)
            s.close()
            assert closed, frames[-3:]
    assert abuse(env, target, "continuation_flood") >= before + 3


@pytest.mark.parametrize("target", TARGETS)
def test_hpack_bomb_is_refused_with_431(env, target):
    """An HPACK bomb: one 4,000-byte header value goes into the dynamic
    table, then every stream's block references it 4,000 times (one byte
    each: 16 MB of header per 4 KB frame). The header bounds
    (limits.maxHeaderBytes, maxHeaders) refuse each stream with 431 while
    the bytes decoded are only counted, never kept; counted in
    rete_proxy_http_parse_errors_total."""
    admin = env["admin"][target]
    before = value(scrape(admin), "rete_proxy_http_parse_errors_total")
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        s = connect(env, target)
        # Literal with incremental indexing, new name (RFC 7541 §6.2.1):
        # 0x40, name length, name, value length (4000 = 127 + 3873), value.
        insert = b"\x40\x06x-bomb" + hpack_int(4000, 7, 0) + b"b" * 4000
        blocks = [hpack_request() + insert + b"\xbe" * 4000]
        blocks += [hpack_request() + b"\xbe" * 8000 for _ in range(40)]
        chunks = [frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, b) for i, b in enumerate(blocks)]
        frames, _, _ = send_until_closed(s, chunks)
        s.close()
        dec = hpack.Decoder()
        statuses = [dict(dec.decode(f[3])).get(":status") for f in frames if f[0] == HEADERS]
        # Every stream answered is a 431. How many are answered before the
        # connection ends depends on scheduling (streams still open past
        # maxStreams end it: a busy machine answers fewer in time), so only
        # "some, and all 431" is behaviour.
        assert statuses and set(statuses) == {"431"}, statuses
    assert value(scrape(admin), "rete_proxy_http_parse_errors_total") >= before + 1


@pytest.mark.parametrize("target", TARGETS)
def test_dynamic_table_size_beyond_the_setting_is_a_compression_error(env, target):
    """HPACK table-size games: a dynamic table size update to 2^30, beyond
    the 4,096 bytes the proxy allows (RFC 7541 §6.3), is a connection
    error (GOAWAY COMPRESSION_ERROR), counted as protocol_error."""
    before = abuse(env, target, "protocol_error")
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        s = connect(env, target)
        update = hpack_int(1 << 30, 5, 0x20)
        frames, closed, _ = send_until_closed(s, [frame(HEADERS, END_STREAM | END_HEADERS, 1,
                                                        update + hpack_request())])
        s.close()
        assert closed and goaway_code(frames) == 0x9, frames[-3:]  # COMPRESSION_ERROR
    assert abuse(env, target, "protocol_error") >= before + 1


@pytest.mark.parametrize("kind", ["settings", "ping"])
@pytest.mark.parametrize("target", TARGETS)
def test_control_frame_flood_that_never_reads_acks_is_cut(env, target, kind):
    """SETTINGS and PING floods (CVE-2019-9512/9515): 20,000 frames, each
    owing an ACK, from a client that never reads. Past 1,000 queued ACKs
    (H2_MAX_OUTBOUND_ACK) the connection is closed, counted as flood."""
    before = abuse(env, target, "flood")
    one = frame(SETTINGS, 0, 0) if kind == "settings" else frame(PING, 0, 0, b"12345678")
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        for _ in range(2):
            s = connect(env, target)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            frames, closed, _ = send_until_closed(s, [one * 2000] * 10)
            s.close()
            assert closed, frames[-3:]
    assert abuse(env, target, "flood") >= before + 2


@pytest.mark.parametrize("target", ["outbound", "mesh"])
def test_window_update_and_priority_flood_leaves_others_served(env, target):
    """WINDOW_UPDATE (increment 1, connection and stream) and PRIORITY
    floods: 200,000 frames that each cost a few instructions and owe no
    answer. There is nothing to queue, so nothing to bound in memory; the
    assertion is that other clients stay served and the proxy's RSS does
    not move, and that the connection still works afterwards."""
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        s = connect(env, target)
        s.sendall(frame(HEADERS, END_HEADERS, 1, hpack_request(path="/?delay=100")))
        flood = (frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)) + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1))
                 + frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15))) * 1000
        deadline = time.monotonic() + 20
        for _ in range(66):
            s.sendall(flood)
            if time.monotonic() > deadline:
                break
        s.sendall(frame(HEADERS, END_STREAM | END_HEADERS, 5, hpack_request()))
        frames, _ = read_frames(s, 5)
        s.close()
        assert any(f[0] == HEADERS and f[2] == 5 for f in frames), frames[-3:]


# Not "outbound": there the stalled streams' bodies come over one shared
# mesh HTTP/2 connection and the streams time out in a slow cascade
# (docs/security.md, "Known gaps").
@pytest.mark.parametrize("target", ["inbound", "mesh"])
def test_zero_window_stall_is_reset_by_the_write_timeout(env, target):
    """A client that never opens its window (SETTINGS_INITIAL_WINDOW_SIZE 0)
    asks for 256 KiB bodies on every stream (2 connections) it may open: each stream is reset
    after limits.responseWriteTimeout (1 s here), counted in
    rete_proxy_downstream_timeouts_total{timeout="response_write"}, and what
    the proxy holds for it is bounded."""
    admin = env["admin"][target]
    before = value(scrape(admin), "rete_proxy_downstream_timeouts_total", timeout="response_write")
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        conns = []
        for _ in range(2):
            s = connect(env, target)
            s.sendall(settings(initial_window=0) + b"".join(
                frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, hpack_request(path="/?size=262144"))
                for i in range(MAX_STREAMS)))
            conns.append(s)
        wait_for(lambda: value(scrape(admin), "rete_proxy_downstream_timeouts_total", timeout="response_write")
                 >= before + 2 * MAX_STREAMS, timeout=30, what="every stalled stream timed out")
        for s in conns:
            s.close()


@pytest.mark.parametrize("target", TARGETS)
def test_streams_beyond_max_concurrent_end_the_connection(env, target):
    """Stream exhaustion: 4 x MAX_STREAMS requests opened at once on one
    connection, each held by the echo for 3 s, after the client has
    acknowledged SETTINGS_MAX_CONCURRENT_STREAMS (limits.maxStreams). The
    stream past the limit is a protocol error: nghttp2 ends the connection
    (GOAWAY PROTOCOL_ERROR, last stream = the MAX_STREAMS-th), counted as
    protocol_error; other clients are served meanwhile."""
    before = abuse(env, target, "protocol_error")
    with under_attack(env["canary"], pid(env, target), MEM_MIB):
        for _ in range(3):
            s = connect(env, target)
            read_frames(s, 1)  # the proxy's SETTINGS: its limit is in force once acknowledged
            s.sendall(frame(SETTINGS, ACK, 0) + b"".join(
                frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, hpack_request(path="/?delay=3000"))
                for i in range(4 * MAX_STREAMS)))
            frames, closed = read_frames(s, 8)
            s.close()
            assert closed and goaway_code(frames) == 0x1, frames[-3:]
            last = [struct.unpack(">I", f[3][:4])[0] for f in frames if f[0] == GOAWAY][0]
            assert last == 2 * MAX_STREAMS - 1, last
    assert abuse(env, target, "protocol_error") >= before + 3
