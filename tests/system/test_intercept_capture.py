"""What crosses the wire between intercepted hosts is TLS: tcpdump on the
server host's port of the topology's bridge (netns.py) while an unmodified curl in the client host
calls the echo Service by plain name (test_dns.dns_mesh: the sidecar answers
DNS, init redirects the connection). Every TCP payload between the client
and server hosts, each direction's byte stream reassembled by sequence
number, is a run of TLS records (type 0x14..0x17, version 0x03 0x0N, a
length), and none of the plaintext HTTP the app sent or received appears.

The capture is checked against a control in the same run: a host with no
sidecar calls the server's app directly (PERMISSIVE, the default, serves
it plaintext), and the same parser finds that flow is plaintext HTTP — so
a capture that saw nothing, or a parser that sees TLS everywhere, fails."""
import json
import os
import signal
import struct
import subprocess

from helpers import wait_for
from netns import topology  # noqa: F401 (the fixture)
from test_dns import dns_mesh
from test_intercept import ECHO_PORT

TCPDUMP = "tcpdump"
MARKER = "capture-marker-7f3a"  # in the request path and a header: plaintext would show it


def start_capture(topo, host, path):
    """tcpdump on `host`'s port of the bridge (in the switch namespace: every
    frame to or from the host crosses it), every TCP packet in full,
    written as it comes (-U) to `path`; returns (process, stderr file)."""
    err = open(f"{path}.err", "w+")
    out = open(path, "wb")
    p = subprocess.Popen(["ip", "netns", "exec", topo.switch, TCPDUMP, "-i", host.switch_port, "-nn", "-U", "--immediate-mode", "-s", "0",
                          "-w", "-", "tcp"], stdout=out, stderr=err)
    out.close()

    def listening():
        err.seek(0)
        return f"listening on {host.switch_port}" in err.read() or p.poll() is not None
    wait_for(listening, timeout=10)
    assert p.poll() is None, f"tcpdump exited: {open(f'{path}.err').read()}"
    return p, err


def stop_capture(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=10)


def tcp_streams(pcap):
    """{(src, sport, dst, dport): bytes} from a pcap of Ethernet frames
    (IPv4 and IPv6): each direction's payload in sequence order, every byte
    once (retransmissions and overlaps dropped)."""
    magic = struct.unpack("<I", pcap[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", pcap[20:24])[0]
    assert linktype == 1, f"link type {linktype}, not Ethernet"
    segs = {}
    off = 24
    while off + 16 <= len(pcap):
        incl = struct.unpack(endian + "I", pcap[off + 8:off + 12])[0]
        frame = pcap[off + 16:off + 16 + incl]
        off += 16 + incl
        ethertype = struct.unpack(">H", frame[12:14])[0]
        ip = frame[14:]
        if ethertype == 0x0800 and ip[9] == 6:
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
            tcp = ip[ihl:total]
        elif ethertype == 0x86DD and ip[6] == 6:
            plen = struct.unpack(">H", ip[4:6])[0]
            src, dst = ip[8:24].hex(), ip[24:40].hex()
            tcp = ip[40:40 + plen]
        else:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        data = tcp[(tcp[12] >> 4) * 4:]
        if data:
            segs.setdefault((src, sport, dst, dport), {}).setdefault(seq, data)
    streams = {}
    for key, by_seq in segs.items():
        seqs = sorted(by_seq)
        base, out, next_seq = seqs[0], bytearray(), seqs[0]
        for s in seqs:  # offsets modulo 2^32: a random ISN may wrap
            rel = (s - base) % (1 << 32)  # relative to the lowest sequence number seen
            data = by_seq[s]
            have = (next_seq - base) % (1 << 32)
            if rel + len(data) <= have:
                continue
            out += data[have - rel:] if rel < have else data
            next_seq = (base + rel + len(data)) % (1 << 32)
        streams[key] = bytes(out)
    return streams


def tls_problem(stream):
    """None when `stream` is whole TLS records (a last one may be cut by the
    capture's end), else what is not."""
    i = 0
    while i < len(stream):
        head = stream[i:i + 5]
        if len(head) < 5:
            return None if len(head) and head[0] in (0x14, 0x15, 0x16, 0x17) else f"{len(head)} stray bytes"
        if head[0] not in (0x14, 0x15, 0x16, 0x17) or head[1] != 0x03 or head[2] > 0x04:
            return f"not a TLS record at byte {i}: {stream[i:i + 40]!r}"
        i += 5 + struct.unpack(">H", head[3:5])[0]
    return None


def test_only_tls_between_hosts(topology, tmp_path):
    client, server, outsider = dns_mesh(topology, tmp_path)
    pcap = os.path.join(str(tmp_path), "br0.pcap")
    cap, _ = start_capture(topology, server, pcap)
    try:
        for i in range(3):  # a few calls: new and pooled connections alike
            r = client.run(["curl", "-sS", "-m", "10", "-H", f"x-marker: {MARKER}",
                            "-d", f"body-{MARKER}", f"http://echo/{MARKER}/{i}"])
            assert r.returncode == 0, r.stderr
            body = json.loads(r.stdout)
            assert body["path"] == f"/{MARKER}/{i}" and body["headers"]["x-marker"] == MARKER
            assert body["headers"]["x-forwarded-client-cert"].endswith("/sa/client")
        # the control: a host without a sidecar calls the app directly (PERMISSIVE: served, plaintext)
        r = outsider.run(["curl", "-sS", "-m", "10", f"http://{server.addr}:{ECHO_PORT}/control-{MARKER}"])
        assert r.returncode == 0, r.stderr
        # written as captured (--immediate-mode -U): the control's request is the last payload
        wait_for(lambda: f"GET /control-{MARKER}".encode() in open(pcap, "rb").read(), timeout=10)
    finally:
        stop_capture(cap)
    streams = tcp_streams(open(pcap, "rb").read())

    between = {k: v for k, v in streams.items() if {k[0], k[2]} == {client.addr, server.addr}}
    assert between, f"no TCP payload between {client.addr} and {server.addr}: {list(streams)}"
    assert any(k[3] == 15008 for k in between), f"no connection to the mesh port: {list(between)}"
    total = 0
    for key, data in between.items():
        assert tls_problem(data) is None, f"{key}: {tls_problem(data)}"
        assert MARKER.encode() not in data and b"HTTP/1.1" not in data, key
        total += len(data)
    assert total > 2000, total  # handshakes and three requests, not an empty capture

    control = {k: v for k, v in streams.items() if {k[0], k[2]} == {outsider.addr, server.addr}}
    sent = [v for k, v in control.items() if k[0] == outsider.addr]
    assert sent and sent[0].startswith(b"GET /control-" + MARKER.encode()), control
    assert tls_problem(sent[0]) is not None  # the parser sees plaintext for what it is
    topology.assert_isolated()
