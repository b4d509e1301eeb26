"""A tiny authoritative DNS server for the netns tests: UDP and TCP (RFC
1035 4.2.2, length-prefixed, several queries per connection), one question
per query. `python3 tiny_dns.py ADDR PORT NAME=IP...` (ADDR IPv4 or IPv6)
answers A queries for each NAME (lower-case, no trailing dot) with its IP,
`NAME=IP*N` with N records (IP, IP+1, ...), every other name with
NXDOMAIN, and prints a ready line. An answer over UDP longer than 512 bytes
is truncated as RFC 1035 4.2.1 says: the TC bit and no records, so the
client retries over TCP, where it comes whole. Stands in for the resolver
of a host's /etc/resolv.conf inside a topology with no route out."""
import ipaddress
import socket
import struct
import sys
import threading

UDP_MAX = 512


def parse_name(msg, off):
    labels = []
    while True:
        n = msg[off]
        off += 1
        if n == 0:
            return ".".join(labels).lower(), off
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n


def answer(msg, table):
    qid, flags, qd = struct.unpack(">HHH", msg[:6])
    name, off = parse_name(msg, 12)
    qtype, _ = struct.unpack(">HH", msg[off:off + 4])
    question = msg[12:off + 4]
    ip = table.get(name)
    rd = flags & 0x0100
    if ip is None:
        return struct.pack(">HHHHHH", qid, 0x8400 | rd | 3, 1, 0, 0, 0) + question
    if qtype != 1:
        return struct.pack(">HHHHHH", qid, 0x8400 | rd, 1, 0, 0, 0) + question
    first, _, n = ip.partition("*")
    base = ipaddress.IPv4Address(first)
    rrs = b"".join(struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + (base + i).packed
                   for i in range(int(n or 1)))
    return struct.pack(">HHHHHH", qid, 0x8400 | rd, 1, int(n or 1), 0, 0) + question + rrs


def serve_udp(s, table):
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            out = answer(msg, table)
        except (IndexError, struct.error, ValueError):
            continue
        if len(out) > UDP_MAX:  # truncated: TC, no records (RFC 1035 4.2.1)
            qid, flags = struct.unpack(">HH", out[:4])
            qend = out.index(b"\0", 12) + 5
            out = struct.pack(">HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + out[12:qend]
        s.sendto(out, peer)


def serve_tcp_client(conn, table):
    with conn:
        while True:
            hdr = conn.recv(2, socket.MSG_WAITALL)
            if len(hdr) < 2:
                return
            (n,) = struct.unpack(">H", hdr)
            msg = conn.recv(n, socket.MSG_WAITALL)
            if len(msg) < n:
                return
            try:
                out = answer(msg, table)
            except (IndexError, struct.error, ValueError):
                return
            conn.sendall(struct.pack(">H", len(out)) + out)


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    table = dict(a.split("=", 1) for a in sys.argv[3:])
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((addr, port))
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port))
    t.listen(16)
    threading.Thread(target=serve_udp, args=(u, table), daemon=True).start()
    print(f"tiny_dns ready on {addr}:{port}", flush=True)
    while True:
        conn, _ = t.accept()
        threading.Thread(target=serve_tcp_client, args=(conn, table), daemon=True).start()


if __name__ == "__main__":
    main()
