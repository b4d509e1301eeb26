"""A tiny authoritative DNS server for the netns tests: UDP only, one
question per query. `python3 tiny_dns.py ADDR PORT NAME=IP...` answers A
queries for each NAME (lower-case, no trailing dot) with its IP, every other
name with NXDOMAIN, and prints a ready line. Stands in for the resolver of
a host's /etc/resolv.conf inside a topology with no route out."""
import socket
import struct
import sys


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
    rr = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    return struct.pack(">HHHHHH", qid, 0x8400 | rd, 1, 1, 0, 0) + question + rr


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    table = dict(a.split("=", 1) for a in sys.argv[3:])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    print(f"tiny_dns ready on {addr}:{port}", flush=True)
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(msg, table), peer)
        except (IndexError, struct.error):
            pass


if __name__ == "__main__":
    main()
