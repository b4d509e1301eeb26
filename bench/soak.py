"""make soak: a long run of mixed traffic through a small mesh under reted,
with configuration pushes, short-lived certificates and backend churn,
watching every rete process's memory and file descriptors.

    /usr/bin/python3 bench/soak.py [--minutes N] [--build DIR] [--out DIR]

The mesh (loopback, reted --cert-ttl 30s): Service echo (HTTP), echogrpc (GRPC) and
echotcp (TCP) with two endpoints, each a rete-echo app behind its sidecar
(echo-0, echo-1); Service ws (HTTP) with a python3-websockets echo app
behind ws-0; a client sidecar client-0 with explicit upstream listeners for
gRPC, WebSocket and TCP. Traffic, each kind in its own loop:

  http1  HTTP/1.1 GET on keep-alive connections (Python http.client)
  http2  h2c with prior knowledge (nghttp, 20 requests multiplexed on a connection)
  grpc   unary calls (python3-grpcio) through an upstream listener
  ws     WebSocket sessions (python3-websockets): 10 messages each
  tcp    opaque TCP (an HTTP/1.0 request as bytes, through the echotcp Service)

Faults and changes: an HTTPRoute pushed every PUSH_S seconds (its header
value changes); certificates renew every ~20 s (30 s TTL); every CHURN_S
seconds echo-1's sidecar is drained (SIGTERM) and started again, and every
second time its app is SIGKILLed and started again too. An error counts as
injected when it falls in a churn window (from the fault to GRACE_S after
the restarted process is ready); any other error fails the run.

Every SAMPLE_S seconds: RSS (VmRSS) and open fds (/proc/PID/fd) of reted
and every rete-proxy. After the warm-up (WARMUP_S, or a fifth of the run if
shorter), for each process that lived through the whole run (reted,
client-0, echo-0, ws-0): the RSS slope (least squares) must be under
SLOPE_BOUND_KIB per 10 minutes, and the median fd count of the last fifth
of the samples at most FD_SLACK above the median of the first fifth.

Writes OUT/soak.json (every sample, every count) and OUT/soak.png; prints
a Markdown section for bench/REPORT.md. Exit status 0 when every assertion
holds, 1 otherwise."""
import argparse
import asyncio
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "system"))
from procstat import rss_kb as rss_kib  # noqa: E402 (bench/, next to this file)

PUSH_S = 5
CHURN_S = 60
GRACE_S = 3
SAMPLE_S = 5
WARMUP_S = 120
SLOPE_BOUND_KIB = 1024  # per 10 minutes
FD_SLACK = 4
CERT_TTL = "30s"


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_10min(points):
    """Least-squares slope of [(t seconds, value)] in value per 600 s."""
    n = len(points)
    if n < 3:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 600 * sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


async def _ws_handler(ws, path=None):
    async for msg in ws:
        await ws.send(msg)


def ws_server(host, port):
    """A python3-websockets echo server (the ws Service's app)."""
    import websockets

    async def main():
        async with websockets.serve(_ws_handler, host, int(port)):
            print(f"ws-echo listening on {host}:{port}", flush=True)
            await asyncio.Future()
    asyncio.run(main())


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.errors = []  # (t, kind, text)

    def good(self, kind, n=1):
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + n

    def bad(self, kind, text):
        with self.lock:
            self.errors.append((time.monotonic(), kind, text[:200]))


def run(args):
    os.environ.setdefault("RETE_BUILD", args.build)
    import grpc
    import websockets
    from controlplane import apply_and_push, start_cp_proxy, start_reted
    from helpers import free_port, start_echo, start_process, stop_process, wait_for
    from mesh import backend, destination_rule, fresh_host, http_route, service

    work = tempfile.mkdtemp(prefix="rete-soak-")
    duration = args.minutes * 60
    warmup = min(WARMUP_S, duration / 5)
    reted = start_reted(work, "--cert-ttl", CERT_TTL)
    ns = "soak"
    hosts = [fresh_host(), fresh_host()]
    hport, tport, gport = free_port(hosts[0]), free_port(hosts[0]), free_port(hosts[0])
    ws_host = fresh_host()
    ws_port = free_port(ws_host)
    reted.apply_ok([service("echo", ns, [(80, "HTTP", hport)]),
                    service("echotcp", ns, [(81, "TCP", tport)], {"app": "echo"}),
                    service("echogrpc", ns, [(82, "GRPC", gport)], {"app": "echo"}),
                    service("ws", ns, [(80, "HTTP", ws_port)]),
                    destination_rule("echo", ns, "echo", loadBalancer={"simple": "ROUND_ROBIN"})])

    def start_app(i):
        return start_echo("--quiet", "--listen", f"{hosts[i]}:{tport}", "--listen", f"{hosts[i]}:{gport}", name=f"echo-{i}", host=hosts[i],
                          port=hport)[0]

    apps = [start_app(0), start_app(1)]
    sidecars = [start_cp_proxy(reted, work, f"echo-{i}", ns, "echo", host=hosts[i],
                               inbound=[(hport, "HTTP"), (tport, "TCP"), (gport, "GRPC")], labels={"app": "echo"})
                for i in range(2)]
    ws_app = start_process([sys.executable, os.path.abspath(__file__), "ws-server", ws_host, str(ws_port)],
                           r"ws-echo listening")
    ws_side = start_cp_proxy(reted, work, "ws-0", ns, "ws", host=ws_host, inbound=[(ws_port, "HTTP")],
                             labels={"app": "ws"})
    ch = fresh_host()
    up = {k: f"{ch}:{free_port(ch)}" for k in ("grpc", "ws", "tcp")}
    client = start_cp_proxy(reted, work, "client-0", ns, "client", host=ch, labels={"app": "client"},
                            upstreams=[(up["grpc"], "echogrpc", 82), (up["ws"], "ws", 80), (up["tcp"], "echotcp", 81)])
    out_host, out_port = client.outbound.rsplit(":", 1)

    def h1_ok():
        c = http.client.HTTPConnection(out_host, int(out_port), timeout=5)
        try:
            c.request("GET", "/", headers={"Host": "echo"})
            return c.getresponse().status == 200
        except OSError:
            return False
        finally:
            c.close()
    wait_for(h1_ok, 30, 0.3, "echo through the mesh")

    counts = Counts()
    stop = threading.Event()
    churn_windows = []  # [start, end]

    def loop(kind, body, pause):
        while not stop.is_set():
            try:
                n = body()
                counts.good(kind, n)
            except Exception as e:  # every failure is counted, whatever its kind
                counts.bad(kind, f"{type(e).__name__}: {e}")
            stop.wait(pause)

    h1 = {"c": None}

    def http1():
        if h1["c"] is None:
            h1["c"] = http.client.HTTPConnection(out_host, int(out_port), timeout=10)
        try:
            h1["c"].request("GET", "/?size=512", headers={"Host": "echo"})
            r = h1["c"].getresponse()
            r.read()
        except Exception:
            h1["c"].close()
            h1["c"] = None
            raise
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
        return 1

    def http2():
        # nghttp, not curl: Debian's curl 7.88 fails reusing an h2c
        # connection when given a Host header (curl error 16 before the 2nd
        # request is sent; nghttp multiplexes the same requests fine)
        urls = [f"http://{client.outbound}/?n={i}" for i in range(20)]
        r = subprocess.run(["nghttp", "-n", "-s", "-t", "20", "-H", ":authority: echo", *urls],
                           capture_output=True, text=True, timeout=30)
        codes = [l.split()[4] for l in r.stdout.splitlines() if re.match(r"\s*\d+\s+\+", l)]
        if r.returncode != 0 or codes != ["200"] * 20:
            raise RuntimeError(f"nghttp rc={r.returncode} codes={codes} {r.stderr[-200:]}")
        return 20

    channel = grpc.insecure_channel(up["grpc"])
    unary = channel.unary_unary("/rete.echo.Echo/Echo", request_serializer=None, response_deserializer=None)

    def grpc_call():
        if unary(b"soak", timeout=10) != b"soak":
            raise RuntimeError("gRPC answer differs")
        return 1

    def ws_session():
        async def session():
            async with websockets.connect(f"ws://{up['ws']}/", open_timeout=10, close_timeout=5) as w:
                for i in range(10):
                    await w.send(f"m{i}")
                    got = await asyncio.wait_for(w.recv(), 10)
                    if got != f"m{i}":
                        raise RuntimeError(f"ws echo {got!r}")
        asyncio.run(session())
        return 1

    def tcp_session():
        host, port = up["tcp"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.") or b" 200 " not in data.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"tcp answer {data[:60]!r}")
        return 1

    def pusher():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                apply_and_push(reted, [http_route("echo", ns, "echo", [{
                    "backendRefs": [backend("echo")],
                    "filters": [{"type": "RequestHeaderModifier",
                                 "requestHeaderModifier": {"set": [{"name": "x-soak", "value": str(n)}]}}]}])],
                               [client])
                counts.good("push")
            except Exception as e:
                counts.bad("push", f"{type(e).__name__}: {e}")
            stop.wait(PUSH_S)

    def churner():
        k = 0
        while not stop.wait(CHURN_S):
            k += 1
            start = time.monotonic()
            window = [start, None]
            churn_windows.append(window)
            try:
                if k % 2 == 0:
                    apps[1].send_signal(signal.SIGKILL)
                    apps[1].wait(10)
                    apps[1] = start_app(1)
                stop_process(sidecars[1].proc)
                sidecars[1].start()
                reted.wait_synced("echo-1", timeout=60)
                counts.good("churn")
            except Exception as e:
                counts.bad("churn", f"{type(e).__name__}: {e}")
            window[1] = time.monotonic() + GRACE_S

    def procs():
        ps = {"reted": reted.proc, "client-0": client.proc, "echo-0": sidecars[0].proc,
              "ws-0": ws_side.proc, "echo-1 (churned)": sidecars[1].proc}
        return {k: p for k, p in ps.items() if p.poll() is None}

    threads = [threading.Thread(target=loop, args=a, daemon=True) for a in
               (("http1", http1, 0.02), ("http2", http2, 0.2), ("grpc", grpc_call, 0.05),
                ("ws", ws_session, 0.2), ("tcp", tcp_session, 0.1))]
    threads += [threading.Thread(target=pusher, daemon=True), threading.Thread(target=churner, daemon=True)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples = []  # {t, name: {rss, fds}}
    print(f"soak: {args.minutes} min, work dir {work}", flush=True)
    while time.monotonic() - t0 < duration:
        s = {"t": round(time.monotonic() - t0, 1)}
        for name, p in procs().items():
            try:
                s[name] = {"rss_kib": rss_kib(p.pid), "fds": fd_count(p.pid)}
            except OSError:
                pass
        samples.append(s)
        if len(samples) % 12 == 0:
            print(f"soak t={s['t']:.0f}s ok={counts.ok} errors={len(counts.errors)} "
                  + " ".join(f"{k}={v['rss_kib']}KiB/{v['fds']}fd" for k, v in s.items() if k != "t"), flush=True)
        time.sleep(SAMPLE_S)
    stop.set()
    for t in threads:
        t.join(60)
    channel.close()

    def injected(t):
        return any(a <= t <= (b if b is not None else float("inf")) for a, b in churn_windows)
    err_real = [e for e in counts.errors if not injected(e[0])]
    err_injected = [e for e in counts.errors if injected(e[0])]

    steady = ("reted", "client-0", "echo-0", "ws-0")
    verdict, problems = {}, []
    for name in steady:
        pts = [(s["t"], s[name]["rss_kib"]) for s in samples if name in s and s["t"] >= warmup]
        fds = [s[name]["fds"] for s in samples if name in s and s["t"] >= warmup]
        fifth = max(1, len(fds) // 5)
        v = {"rss_first_kib": pts[0][1], "rss_last_kib": pts[-1][1],
             "rss_max_kib": max(p[1] for p in pts), "rss_slope_kib_per_10min": round(slope_per_10min(pts), 1),
             "fds_first": statistics.median(fds[:fifth]), "fds_last": statistics.median(fds[-fifth:]),
             "fds_max": max(fds)}
        verdict[name] = v
        if v["rss_slope_kib_per_10min"] >= SLOPE_BOUND_KIB:
            problems.append(f"{name}: RSS slope {v['rss_slope_kib_per_10min']} KiB/10min >= {SLOPE_BOUND_KIB}")
        if v["fds_last"] > v["fds_first"] + FD_SLACK:
            problems.append(f"{name}: fds {v['fds_first']} -> {v['fds_last']} (slack {FD_SLACK})")
    if err_real:
        problems.append(f"{len(err_real)} errors outside churn windows: {err_real[:5]}")
    renewals = {p.name: p.log().count("renewed certificate") for p in (client, sidecars[0], ws_side)}
    result = {"minutes": args.minutes, "warmup_s": warmup, "sample_s": SAMPLE_S, "push_s": PUSH_S,
              "churn_s": CHURN_S, "cert_ttl": CERT_TTL, "slope_bound_kib_per_10min": SLOPE_BOUND_KIB,
              "fd_slack": FD_SLACK, "ok": counts.ok, "errors_injected": len(err_injected),
              "errors_other": len(err_real), "error_samples": [e[1:] for e in counts.errors[:20]],
              "churns": len(churn_windows), "renewals": renewals, "verdict": verdict,
              "problems": problems, "samples": samples}

    for p in (client, ws_side, *sidecars):
        stop_process(p.proc)
    for p in (*apps, ws_app):
        stop_process(p)
    reted.stop()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(args.out, "soak.png"))
    print(markdown(result))
    write_report_section(os.path.join(args.out, "REPORT.md"), result)
    for p in problems:
        print("soak: FAIL:", p)
    return 1 if problems else 0


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted({k for s in result["samples"] for k in s if k != "t"})
    fig, (a, b) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for n in names:
        pts = [(s["t"] / 60, s[n]) for s in result["samples"] if n in s]
        a.plot([p[0] for p in pts], [p[1]["rss_kib"] / 1024 for p in pts], label=n)
        b.plot([p[0] for p in pts], [p[1]["fds"] for p in pts], label=n)
    for ax in (a, b):
        ax.axvline(result["warmup_s"] / 60, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
    a.set_ylabel("RSS (MiB)")
    b.set_ylabel("open fds")
    b.set_xlabel("minutes")
    a.legend(fontsize=8)
    a.set_title(f"soak: {result['minutes']} min, mixed traffic, pushes every {result['push_s']} s, "
                f"cert TTL {result['cert_ttl']}, churn every {result['churn_s']} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def report_section(r):
    """The `## Soak` section of bench/REPORT.md."""
    return "\n".join([
        "## Soak", "",
        "`make soak` (bench/soak.py; not in `make test`), on the release build: mixed HTTP/1.1, HTTP/2 "
        "(nghttp, h2c), gRPC (grpcio), WebSocket (websockets) and TCP traffic through a small mesh under "
        f"reted (two echo endpoints and a WebSocket app, each behind its sidecar, and a client sidecar), an "
        f"HTTPRoute pushed every {r['push_s']} s, certificates of {r['cert_ttl']} TTL, and every "
        f"{r['churn_s']} s echo-1's sidecar drained and restarted (every second time its app SIGKILLed and "
        f"restarted too). RSS and open fds of every rete process sampled every {r['sample_s']} s.", "",
        markdown(r), "", "![soak](soak.png)", ""])


def write_report_section(path, r):
    """Replace (or append) the `## Soak` section of REPORT.md at `path`."""
    text = open(path).read() if os.path.exists(path) else ""
    section = report_section(r)
    start = text.find("\n## Soak\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + (text[end + 1:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(text)


def markdown(r):
    lines = [f"Run: {r['minutes']} min; warm-up {r['warmup_s']:.0f} s; bound: RSS slope < "
             f"{r['slope_bound_kib_per_10min']} KiB per 10 min, fds (median of the last fifth) at most "
             f"{r['fd_slack']} above the first fifth.", "",
             "| process | RSS after warm-up (KiB) | RSS at end | RSS max | slope (KiB/10 min) | fds first | fds last | fds max |",
             "|---|---|---|---|---|---|---|---|"]
    for n, v in r["verdict"].items():
        lines.append(f"| {n} | {v['rss_first_kib']} | {v['rss_last_kib']} | {v['rss_max_kib']} | "
                     f"{v['rss_slope_kib_per_10min']} | {v['fds_first']} | {v['fds_last']} | {v['fds_max']} |")
    lines += ["", "Completed: " + ", ".join(f"{k} {v}" for k, v in sorted(r["ok"].items())) + ".",
              f"Errors: {r['errors_injected']} in churn windows (injected), {r['errors_other']} others. "
              f"Churns: {r['churns']}. Certificate renewals: "
              + ", ".join(f"{k} {v}" for k, v in r["renewals"].items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ws-server":
        ws_server(*sys.argv[2:4])
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 30)))
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--out", default=HERE)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        sys.exit(run(ap.parse_args()))
    finally:
        from helpers import cleanup_processes
        try:
            cleanup_processes(everything=True)  # whatever an early end left running
        except AssertionError as e:
            print("soak:", e)
