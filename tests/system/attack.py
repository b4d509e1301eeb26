"""The attack suite's shared instruments (tests/system/test_attack_*.py).

Every attack test asserts three things while it runs:
- a canary (`Canary`) keeps making ordinary requests through the target
  from an address of its own and every one of them (or a stated share)
  succeeds within a generous bound (`CANARY_BOUND` seconds: behaviour, not
  a micro-timing);
- the target's memory (`MemoryProbe`: VmRSS from /proc/PID/status, sampled
  through the attack) stays under baseline + a stated bound;
- the attack is counted in a metric (`scrape`, `value`).

`under_attack` bundles the first two:

    with under_attack(probe_http(addr, "echo"), proxy.pid, mib=64) as canary:
        ... attack ...
    # on leaving: canary served, RSS under the bound (AssertionError otherwise)

Attacks are bounded in connections, bytes and time; nothing here sleeps for
a result, every wait is a helpers.wait_for on a condition."""
import contextlib
import os
import re
import socket
import ssl
import struct
import threading
import time

from helpers import fresh_host, rss_kb, start_echo, wait_for
from mesh import Mesh, service, workload

# Every canary request must complete within this many seconds. Generous on
# purpose: two shared cores run an ASan build and the attacker.
CANARY_BOUND = 5.0


def _addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def http_get(addr, path="/", host="echo", timeout=CANARY_BOUND, tls=None, source=None):
    """(status, body) of one GET on a fresh connection (`tls`: an
    ssl.SSLContext), or (None, why). Reads to the end (Connection: close)."""
    try:
        raw = socket.create_connection(_addr(addr), timeout=timeout,
                                       source_address=(source, 0) if source else None)
    except OSError as e:
        return None, str(e)
    try:
        s = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (OSError, ssl.SSLError) as e:
        return None, str(e)
    finally:
        raw.close()
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", out)
    if not m:
        return None, out[:200]
    return int(m.group(1)), out.partition(b"\r\n\r\n")[2]


def probe_http(addr, host="echo", path="/", want=200, tls=None):
    """A canary probe: one GET through `addr` from the canary's own source
    address; True when it answers `want`."""
    src = fresh_host() if not addr.startswith("[") else None

    def probe():
        status, body = http_get(addr, path, host, tls=tls, source=src)
        return status == want or (status, body)
    return probe


class Canary:
    """A thread calling `probe()` (True on success, anything else is the
    failure's description) every `interval` seconds until stop(); records
    each call's outcome and duration. At most `max_requests` calls."""

    def __init__(self, probe, interval=0.1, max_requests=2000):
        self.probe, self.interval, self.max_requests = probe, interval, max_requests
        self.results = []  # (ok, seconds, failure or None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and len(self.results) < self.max_requests:
            t0 = time.monotonic()
            try:
                r = self.probe()
            except Exception as e:  # noqa: BLE001 (a failure to record, not to raise in a thread)
                r = repr(e)
            dt = time.monotonic() - t0
            self.results.append((r is True, dt, None if r is True else r))
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(CANARY_BOUND * 3)

    def check(self, min_share=1.0, bound=CANARY_BOUND, at_least=3):
        """Assert: at least `at_least` calls were made, `min_share` of them
        succeeded, and every successful one took under `bound` seconds."""
        n = len(self.results)
        ok = sum(1 for r in self.results if r[0])
        slow = [round(r[1], 2) for r in self.results if r[0] and r[1] >= bound]
        failures = [r[2] for r in self.results if not r[0]][:5]
        assert n >= at_least, f"canary made only {n} requests"
        assert ok >= min_share * n, f"canary: {ok}/{n} succeeded, first failures: {failures}"
        assert not slow, f"canary: {len(slow)} requests took over {bound}s: {slow[:10]}"
        return ok, n


class MemoryProbe:
    """VmRSS of `pid`, sampled every `interval` s in a thread; `peak` is the
    highest seen. The baseline is taken when started."""

    def __init__(self, pid, interval=0.1):
        self.pid, self.interval = pid, interval
        self.baseline = rss_kb(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, AssertionError):
                return
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def check(self, mib):
        growth = (self.peak - self.baseline) / 1024
        assert growth < mib, f"RSS of pid {self.pid} grew {growth:.1f} MiB (bound {mib} MiB): " \
                             f"{self.baseline} KB -> peak {self.peak} KB"
        return growth


@contextlib.contextmanager
def under_attack(probe, pid, mib, min_share=1.0, bound=CANARY_BOUND, interval=0.1):
    """Run a canary (`probe`) and a memory probe on `pid` around the body;
    on a normal exit assert the canary was served (`min_share`, `bound`)
    and RSS stayed under baseline + `mib` MiB. Yields the Canary."""
    mem = MemoryProbe(pid).start()
    canary = Canary(probe, interval=interval).start()
    try:
        yield canary
        # An attack shorter than a few canary calls still gets them (and so
        # does the moment right after it).
        wait_for(lambda: len(canary.results) >= 3 or not canary._thread.is_alive(), timeout=30,
                 what="three canary requests")
    finally:
        canary.stop()
        mem.stop()
    canary.check(min_share, bound)
    mem.check(mib)


# ---- metrics ----

def scrape(admin, host="admin", tls=None, path="/metrics"):
    """The exposition text at http://`admin`/metrics (a proxy's admin
    listener)."""
    status, body = http_get(admin, path, host, timeout=15, tls=tls)
    assert status == 200, (status, body)
    return body.decode()


def value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (0 when
    none): `value(t, "rete_proxy_h2_abuse_total", reason="flood")`."""
    total = 0.0
    for m in re.finditer(r"^" + re.escape(name) + r"(\{[^}]*\})? (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


@contextlib.contextmanager
def small_asan_quarantine():
    """ASan keeps up to 256 MB of freed memory in quarantine, which RSS
    counts: processes started inside keep 16 MB, so an RSS bound means the
    same for the ASan build and the plain one."""
    old = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (old + ":" if old else "") + "quarantine_size_mb=16"
    try:
        yield
    finally:
        if old is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = old


# ---- the target ----

def sidecar_pair(tmp, limits):
    """What most attacks aim at: client-0's sidecar -> mesh -> echo-0's
    sidecar -> a rete-echo, both sidecars with `limits`, persistent (for a
    module fixture) and started under small_asan_quarantine; and an
    attacker's client certificate of the mesh as an ssl context offering
    ALPN h2 (for the mesh listener). A dict: mesh, client, server (the
    sidecars' processes), client_host, echo_host, mesh_tls."""
    m = Mesh(tmp)
    client_host, echo_host = fresh_host(), fresh_host()
    with small_asan_quarantine():
        echo_proc, echo_addr = start_echo(name="echo", host=echo_host, persistent=True)
        echo_port = int(echo_addr.rsplit(":", 1)[1])
        m.add(service("echo", m.ns, [(80, "HTTP", echo_port)]),
              workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
              workload("client-0", m.ns, client_host, "client", {"app": "client"}))
        server = m.start_proxy("echo-0", "echo", echo_host, inbound=[(echo_port, "HTTP")],
                               extra_spec={"limits": limits}, persistent=True)
        client = m.start_proxy("client-0", "client", client_host, extra_spec={"limits": limits}, persistent=True)
    crt, key = m.cert("attacker")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.check_hostname = False
    tls.load_verify_locations(m.ca[0])
    tls.load_cert_chain(crt, key)
    tls.set_alpn_protocols(["h2"])
    return {"mesh": m, "client": client, "server": server, "client_host": client_host, "echo_host": echo_host,
            "mesh_tls": tls}


def read_to_close(s):
    """What the peer sends on `s` until it closes, or until a read fails
    (its timeout included): the bytes read."""
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out


# ---- raw HTTP/2 frames (attackers must be able to misbehave) ----

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 2, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CANCEL = 8


def frame(ftype, flags, stream_id, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id) + payload


def hpack_request(authority="echo", path="/"):
    """A request header block from the HPACK static table: :method GET (2),
    :scheme http (6), then :path and :authority as literals without
    indexing, indexed names 4 and 1 (RFC 7541 §6.2.2)."""
    assert len(path) < 127 and len(authority) < 127
    return (b"\x82\x86" + b"\x04" + bytes([len(path)]) + path.encode()
            + b"\x01" + bytes([len(authority)]) + authority.encode())


def settings(initial_window=None):
    payload = b""
    if initial_window is not None:
        payload += struct.pack(">HI", 4, initial_window)  # SETTINGS_INITIAL_WINDOW_SIZE
    return frame(SETTINGS, 0, 0, payload)


def read_frames(s, bound=10.0):
    """Frames the peer sends until it closes or `bound` seconds of
    silence: [(type, flags, stream, payload)], closed."""
    s.settimeout(bound)
    buf, out = b"", []
    closed = False
    while True:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ssl.SSLError):
            break
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n]))
            buf = buf[9 + n:]
    return out, closed
