#!/usr/bin/python3
"""rete side-by-side benchmark: direct path, HAProxy pair, nginx pair, rete pair.

Starts every process on 127.0.0.x loopback addresses, measures latency at fixed
rates (rete-loadgen, open loop; HTTP/1.1, h2c and gRPC), maximum throughput
(wrk, h2load), memory (VmRSS idle and with 1000 idle downstream connections),
CPU per 1000 requests and mTLS handshakes per second, then writes
bench/REPORT.md and PNG plots.

    bench/run.py            full run (about 8 minutes), writes bench/REPORT.md
    bench/run.py --smoke    30-second subset; exit 1 on a crash or any error

Debian's python3 standard library only; matplotlib is used when installed.
Every process this script starts is stopped in a finally block.
"""
import argparse
import fcntl
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from procstat import cpu_seconds, rss_kb, stop as stop_process

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.environ.get("RETE_BUILD", os.path.join(ROOT, "build"))
LOADGEN = os.path.join(BUILD, "bench", "rete-loadgen")
ECHO = os.path.join(BUILD, "examples", "rete-echo")
RETE_PROXY = os.environ.get("RETE_PROXY", os.path.join(BUILD, "rete-proxy"))
if not os.path.exists(RETE_PROXY):
    RETE_PROXY = os.path.join(BUILD, "src", "proxy", "rete-proxy")

HOST_HEADER = "echo.bench:8080"
# gRPC: rete-echo answers any method as a unary echo on its second port, which
# rete declares GRPC (h2c to the app) and the other pairs route by this prefix.
GRPC_SERVICE_PREFIX = "/rete.echo.Echo/"
GRPC_METHOD = GRPC_SERVICE_PREFIX + "Echo"
GRPC_HOST = "echo.bench:8081"
TRUST_DOMAIN = "cluster.local"

# Addresses: the echo workload and its rete sidecar share 127.0.0.10 (a
# sidecar lives at its workload's address); every other proxy has its own.
ECHO_ADDR = ("127.0.0.10", 8080)
ECHO_GRPC_ADDR = ("127.0.0.10", 8081)
ADDR = {
    "haproxy": ("127.0.0.21", "127.0.0.22"),
    "nginx": ("127.0.0.31", "127.0.0.32"),
    "rete": ("127.0.0.11", "127.0.0.10"),
}
SCALE_ADDR = "127.0.0.12"
FRONT_PORT, FRONT_H2C_PORT, MESH_PORT = 10000, 10001, 15008
TARGETS = ["direct", "haproxy", "nginx", "rete"]

FULL = dict(rates=[500, 1000, 2000, 8000], duration=15, warmup=3, connections=16, h2_rate=2000, h2_connections=4, grpc_rate=2000, slices=3, profile_seconds=8,
            wrk_duration=10, h2_duration=10, idle_conns=1000, hs_seconds=3, speed_seconds=3)
# The smoke run (CI, `make test`): every scenario briefly, about 30 s; it
# fails on a crash or an error, never on a figure.
SMOKE = dict(rates=[500], duration=1, warmup=0.5, connections=16, h2_rate=500, h2_connections=4,
             grpc_rate=500, slices=1, wrk_duration=1, h2_duration=1, idle_conns=100, hs_seconds=0.5,
             speed_seconds=0)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(argv, timeout, check=True):
    """Run a bounded command; return stdout."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return p.stdout + p.stderr if not check else p.stdout


# ---------------------------------------------------------------- processes

class Procs:
    """Every long-running process of the run, stopped by stop_all()."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = {}

    def start(self, name, argv, ports):
        logf = open(os.path.join(self.workdir, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=self.workdir)
        logf.close()
        self.procs[name] = p
        deadline = time.time() + 10
        for host, port in ports:
            while True:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited {p.returncode}: {self.tail(name)}")
                try:
                    socket.create_connection((host, port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError(f"{name} not listening on {host}:{port}: {self.tail(name)}")
                    time.sleep(0.05)
        return p

    def tail(self, name):
        try:
            with open(os.path.join(self.workdir, f"{name}.log")) as f:
                return f.read()[-800:].strip()
        except OSError:
            return ""

    def pid(self, name):
        return self.procs[name].pid

    def stop(self, name):
        stop_process(self.procs.pop(name))

    def crashed(self):
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 3
        for p in self.procs.values():
            stop_process(p, max(0.1, deadline - time.time()))


# ---------------------------------------------------------------- certificates

def make_certs(d):
    """ECDSA P-256 CA and leaf certificates with SPIFFE URI SANs (and the DNS
    name echo.bench on the server side, which HAProxy and nginx check)."""
    def sh(*argv):
        run(list(argv), 30)

    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key)
    sh("openssl", "req", "-x509", "-new", "-key", ca_key, "-out", ca, "-days", "2",
       "-subj", "/O=rete-bench/CN=rete bench CA",
       "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, sa, extra in (("client", "client", ""), ("server", "echo", ",DNS:echo.bench,IP:127.0.0.10")):
        key, csr, crt = (os.path.join(d, f"{name}.{e}") for e in ("key", "csr", "pem"))
        ext = os.path.join(d, f"{name}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName=URI:spiffe://{TRUST_DOMAIN}/ns/bench/sa/{sa}{extra}\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
        sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        sh("openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/O=rete-bench/CN={sa}")
        sh("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
           "-days", "2", "-extfile", ext, "-out", crt)
        # HAProxy wants certificate and key in one file.
        with open(os.path.join(d, f"{name}.bundle.pem"), "w") as out:
            for part in (crt, key):
                with open(part) as f:
                    out.write(f.read())
    return d


# ---------------------------------------------------------------- configs

def render(template, out, **values):
    with open(template) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace("@" + k.upper() + "@", str(v))
    with open(out, "w") as f:
        f.write(text)
    return out


def start_targets(procs, work, certs, threads, notes):
    """Start backend and proxy pairs; return {target: info}."""
    info = {}
    if os.path.exists(ECHO):
        procs.start("echo", [ECHO, "--listen", f"{ECHO_ADDR[0]}:{ECHO_ADDR[1]}", "--listen",
                             f"{ECHO_GRPC_ADDR[0]}:{ECHO_GRPC_ADDR[1]}", "--name", "echo"],
                    [ECHO_ADDR, ECHO_GRPC_ADDR])
        notes["backend"] = "rete-echo (examples/echo.c)"
    else:
        # Until examples/echo.c is on the branch: nginx answering a fixed body.
        conf = render(os.path.join(HERE, "nginx", "echo.conf.in"), os.path.join(work, "echo.conf"),
                      work=work, addr=f"{ECHO_ADDR[0]}:{ECHO_ADDR[1]}")
        procs.start("echo", ["nginx", "-p", work, "-c", conf, "-e", os.path.join(work, "echo.err")],
                    [ECHO_ADDR])
        notes["backend"] = ("nginx returning a fixed 13-byte body (build/examples/rete-echo "
                            "was not built)")
        notes["grpc"] = "no gRPC backend: rete-echo was not built, so the gRPC scenario did not run"
    # rete-echo speaks HTTP/2 with prior knowledge on its one port; the
    # stand-in has a second port for it.
    h2c_port = ECHO_ADDR[1] if os.path.exists(ECHO) else ECHO_ADDR[1] + 1
    info["direct"] = dict(url=f"http://{ECHO_ADDR[0]}:{ECHO_ADDR[1]}/",
                          h2c=f"http://{ECHO_ADDR[0]}:{h2c_port}/", pids={"echo": procs.pid("echo")})
    # gRPC goes in where h2c does (the fronts' h2c listeners), directly to
    # the echo's gRPC port.
    grpc = os.path.exists(ECHO)
    if grpc:
        info["direct"]["grpc"] = f"http://{ECHO_GRPC_ADDR[0]}:{ECHO_GRPC_ADDR[1]}/"

    vals = dict(work=work, certs=certs, echo=f"{ECHO_ADDR[0]}:{ECHO_ADDR[1]}", threads=threads,
                front_port=FRONT_PORT, h2c_port=FRONT_H2C_PORT, mesh_port=MESH_PORT,
                echo_grpc=f"{ECHO_GRPC_ADDR[0]}:{ECHO_GRPC_ADDR[1]}", grpc_prefix=GRPC_SERVICE_PREFIX)

    a, b = ADDR["haproxy"]
    for side, addr in (("b", b), ("a", a)):
        conf = render(os.path.join(HERE, "haproxy", f"{side}.cfg.in"),
                      os.path.join(work, f"haproxy-{side}.cfg"), addr=addr, peer=b, **vals)
        ports = [(addr, MESH_PORT)] if side == "b" else [(addr, FRONT_PORT), (addr, FRONT_H2C_PORT)]
        procs.start(f"haproxy-{side}", ["haproxy", "-db", "-f", conf], ports)
    info["haproxy"] = dict(url=f"http://{a}:{FRONT_PORT}/", h2c=f"http://{a}:{FRONT_H2C_PORT}/",
                           mesh=(b, MESH_PORT), alpn=["h2"],
                           pids={"A": procs.pid("haproxy-a"), "B": procs.pid("haproxy-b")})
    if grpc:
        info["haproxy"]["grpc"] = info["haproxy"]["h2c"]

    a, b = ADDR["nginx"]
    for side, addr in (("b", b), ("a", a)):
        d = os.path.join(work, f"nginx-{side}")
        os.makedirs(d, exist_ok=True)
        conf = render(os.path.join(HERE, "nginx", f"{side}.conf.in"),
                      os.path.join(d, "nginx.conf"), addr=addr, peer=b, **dict(vals, work=d))
        ports = [(addr, MESH_PORT)] if side == "b" else [(addr, FRONT_PORT), (addr, FRONT_H2C_PORT)]
        procs.start(f"nginx-{side}", ["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                    ports)
    info["nginx"] = dict(url=f"http://{a}:{FRONT_PORT}/", h2c=f"http://{a}:{FRONT_H2C_PORT}/",
                         mesh=(b, MESH_PORT), alpn=["http/1.1"],
                         pids={"A": procs.pid("nginx-a"), "B": procs.pid("nginx-b")})
    if grpc:
        info["nginx"]["grpc"] = info["nginx"]["h2c"]

    a, b = ADDR["rete"]
    if not os.path.exists(RETE_PROXY):
        notes["rete"] = f"rete-proxy not built ({RETE_PROXY} does not exist): rete pair skipped"
    else:
        try:
            for side, addr, sa, cert in (("b", b, "echo", "server"), ("a", a, "client", "client")):
                conf = render(os.path.join(HERE, "rete", f"proxy-{side}.yaml.in"),
                              os.path.join(work, f"rete-{side}.yaml"), addr=addr, sa=sa,
                              cert=os.path.join(certs, f"{cert}.pem"),
                              key=os.path.join(certs, f"{cert}.key"),
                              ca=os.path.join(certs, "ca.pem"), echo_addr=ECHO_ADDR[0],
                              echo_port=ECHO_ADDR[1], echo_grpc_port=ECHO_GRPC_ADDR[1])
                ports = [(addr, MESH_PORT)] if side == "b" else [(addr, 15001)]
                procs.start(f"rete-{side}", [RETE_PROXY, "--config", conf], ports)
            info["rete"] = dict(url=f"http://{a}:15001/", h2c=f"http://{a}:15001/",
                                mesh=(b, MESH_PORT), alpn=["h2"],
                                pids={"A": procs.pid("rete-a"), "B": procs.pid("rete-b")})
            if grpc:
                info["rete"]["grpc"] = info["rete"]["h2c"]
        except RuntimeError as e:
            notes["rete"] = f"rete-proxy did not start: {e}"
    return info


def write_scale_config(base, out, services, per_service):
    """The Proxy document of `base` plus `services` Services with
    `per_service` Workloads each (addresses in 127.128.0.0/9, never contacted):
    the proxy's memory with a large mesh in its configuration."""
    with open(base) as f:
        docs = [f.read().split("\n---\n")[0]]
    for s in range(services):
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{s}\n  namespace: scale\n"
                    f"spec:\n  ports:\n    - name: http\n      port: 8080\n      protocol: HTTP\n"
                    f"  selector:\n    app: svc-{s}")
        for w in range(per_service):
            n = s * per_service + w
            docs.append(f"apiVersion: networking.rete.dev/v1alpha1\nkind: Workload\nmetadata:\n"
                        f"  name: svc-{s}-{w}\n  namespace: scale\n  labels:\n    app: svc-{s}\n"
                        f"spec:\n  address: 127.{128 + n // 65536}.{(n // 256) % 256}.{n % 256}\n"
                        f"  serviceAccount: svc-{s}")
    with open(out, "w") as f:
        f.write("\n---\n".join(docs) + "\n")
    return out


def scale_rss(procs, work, certs):
    """Idle RSS of a third rete-proxy whose configuration holds 1000 services
    and 10000 workloads."""
    base = render(os.path.join(HERE, "rete", "proxy-a.yaml.in"), os.path.join(work, "rete-scale-base.yaml"),
                  addr=SCALE_ADDR, sa="client", cert=os.path.join(certs, "client.pem"),
                  key=os.path.join(certs, "client.key"), ca=os.path.join(certs, "ca.pem"),
                  echo_addr=ECHO_ADDR[0], echo_port=ECHO_ADDR[1], echo_grpc_port=ECHO_GRPC_ADDR[1])
    conf = write_scale_config(base, os.path.join(work, "rete-scale.yaml"), 1000, 10)
    t0 = time.time()
    procs.start("rete-scale", [RETE_PROXY, "--config", conf], [(SCALE_ADDR, 15001)])
    ready_s = time.time() - t0
    time.sleep(1)
    kb = rss_kb(procs.pid("rete-scale"))
    procs.stop("rete-scale")
    return {"services": 1000, "workloads": 10000, "rss_kb": kb, "ready_s": ready_s}


# ---------------------------------------------------------------- measurements

# rete-loadgen's arguments and Host/:authority per protocol.
PROTOCOL_ARGS = {"http/1.1": ([], HOST_HEADER), "h2c": (["--http2", "--streams", "100"], HOST_HEADER),
                 "grpc": (["--grpc", GRPC_METHOD, "--streams", "100"], GRPC_HOST)}


def loadgen(url, rate, duration, connections, protocol="http/1.1", prefix=()):
    """One rete-loadgen run; `prefix` runs it elsewhere (ip netns exec NS)."""
    args, host = PROTOCOL_ARGS[protocol]
    out = run([*prefix, LOADGEN, "--url", url, "--host", host, "--rate", str(rate),
               "--duration", str(duration), "--connections", str(connections), "--timeout", "5"] + args,
              timeout=duration + 30)
    return json.loads(out)


def multiplexed_latency(info, targets, protocol, rate, duration, connections, failures, warmup=0):
    """One open-loop run per target over HTTP/2 streams (`protocol` "h2c" or
    "grpc", the info key of the URL to load), after `warmup` seconds of the
    same load whose result is discarded: {target: result without its
    histogram}, {"failed": why} for a target that could not be measured."""
    res = {}
    for t in targets:
        if protocol not in info[t]:
            # A target that cannot be loaded this way is a failure, never a
            # gap in the report (the smoke exists to catch exactly that).
            res[t] = {"failed": f"no {protocol} endpoint"}
            failures.append(f"{t} {protocol}: not measured (no {protocol} endpoint)")
            log(f"{t:8s} {protocol}: n/a (no endpoint)")
            continue
        try:
            if warmup:
                loadgen(info[t][protocol], rate, warmup, connections, protocol)
            r = loadgen(info[t][protocol], rate, duration, connections, protocol)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            r = {"failed": str(e)[:300]}
        r.pop("histogram", None)
        res[t] = r
        if "failed" in r:
            log(f"{t:8s} {protocol} {rate} req/s: n/a ({r['failed']})")
            failures.append(f"{t} {protocol} at {rate} req/s: not measured: {r['failed']}")
            continue
        if not r.get("ok"):
            failures.append(f"{t} {protocol} at {rate} req/s: no request answered")
        tally = f", grpc-status {r['grpc_status']}" if "grpc_status" in r else ""
        log(f"{t:8s} {protocol} {rate:5d} req/s: p50 {r['p50']} p99 {r['p99']} p99.9 {r['p999']} "
            f"max {r['max']} us, ok {r['ok']}, errors {r['errors']}, non2xx {r['non2xx']}{tally}")
        if r["errors"] or r["non2xx"]:
            failures.append(f"{t} {protocol} at {rate} req/s: {r['errors']} errors, {r['non2xx']} non-2xx{tally}")
    return res


SPECTRUM = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100]


def merge_runs(runs):
    """One result from several rete-loadgen runs of the same target and rate:
    counters summed, histograms merged, percentiles read from the merged
    histogram the way hdr.c reads them (highest equivalent value, never above
    the maximum)."""
    counts = {}
    for r in runs:
        for v, c in r["histogram"]:
            counts[v] = counts.get(v, 0) + c
    total = sum(counts.values())
    mx = max(r["max"] for r in runs)
    values = sorted(counts)

    def pct(p):
        if total == 0:
            return 0
        if p >= 100:
            return mx
        rank = max(1, math.ceil(p / 100 * total))
        seen = 0
        for v in values:
            seen += counts[v]
            if seen >= rank:
                return min(v, mx)
        return mx

    out = {k: sum(r[k] for r in runs) for k in ("scheduled", "sent", "ok", "errors", "non2xx",
                                                  "unanswered", "connect_errors")}
    dur = sum(r["duration"] for r in runs)
    done = out["ok"] + out["non2xx"]
    out.update(rate=runs[0]["rate"], duration=dur, connections=runs[0]["connections"],
               slices=len(runs), p50=pct(50), p90=pct(90), p99=pct(99), p999=pct(99.9), max=mx,
               min=min(r["min"] for r in runs),
               mean=sum(r["mean"] * (r["ok"] + r["non2xx"]) for r in runs) / max(1, done),
               achieved_rate=sum(r["achieved_rate"] * r["duration"] for r in runs) / dur,
               spectrum=[[p, pct(p)] for p in SPECTRUM])
    return out


def check_path(url):
    """One request through the path, so a broken configuration fails fast with
    a readable message instead of a run full of errors."""
    host, port = url.split("/")[2].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST_HEADER}\r\n\r\n".encode())
        s.settimeout(5)
        head = s.recv(65536).split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in head + " ":
        raise RuntimeError(f"{url} answered {head!r}")


def wrk(url, duration):
    out = run(["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", "-H", f"Host: {HOST_HEADER}", url],
              timeout=duration + 30)
    res = {"rps": 0.0, "non2xx": 0, "socket_errors": 0, "requests": 0}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            scale = {"us": 1, "ms": 1000, "s": 1000000}[m.group(2)]
            res[f"p{pct}"] = float(m.group(1)) * scale
    return res


def h2load(url, duration):
    """h2c prior knowledge, 32 connections, 10 streams each."""
    try:
        out = run(["h2load", "-D", str(duration), "-c32", "-t2", "-m10",
                   "-H", f":authority: {HOST_HEADER}", url], timeout=duration + 30, check=False)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", out)
    s = re.search(r"status codes: (\d+) 2xx", out)
    if not m or not r or int(r.group(4)) == 0:
        return None
    return {"rps": float(m.group(1)), "succeeded": int(r.group(4)), "failed": int(r.group(5)),
            "errored": int(r.group(6)), "ok2xx": int(s.group(1)) if s else 0,
            "output": out[-2000:]}


def h2load_problems(h):
    """Why an h2load result is not a clean run ("" when it is): no result at
    all, failed or errored requests, or answers other than 2xx."""
    if h is None:
        return "not measured (h2load gave no result)"
    bad = []
    if h["failed"] or h["errored"]:
        bad.append(f"{h['failed']} failed, {h['errored']} errored")
    if h["ok2xx"] < h["succeeded"]:
        bad.append(f"{h['succeeded'] - h['ok2xx']} non-2xx")
    return "; ".join(bad)


def idle_connections(url, n):
    """Open n keep-alive connections to the front, one request on each, and
    hold them idle. Returns the open sockets (the caller closes them)."""
    host, port = url.split("/")[2].split(":")
    socks = []
    req = f"GET / HTTP/1.1\r\nHost: {HOST_HEADER}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(req)
        socks.append(s)
    for s in socks:
        s.settimeout(5)
        data = b""
        # Read the head and the Content-Length body (fixed-size echo replies).
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return socks


def handshakes(addr, certs, alpn, seconds, threads=2):
    """New-connection mTLS handshakes per second against a mesh listener:
    TLS 1.3, client certificate, no session resumption, a fresh TCP
    connection each time. Python's ssl module (OpenSSL underneath; the
    handshake itself releases the GIL) on `threads` threads."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(os.path.join(certs, "ca.pem"))
    ctx.load_cert_chain(os.path.join(certs, "client.pem"), os.path.join(certs, "client.key"))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(alpn)
    counts = [0] * threads
    errors = [0] * threads
    stop_at = time.time() + seconds

    def worker(i):
        while time.time() < stop_at:
            try:
                with socket.create_connection(addr, timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="echo.bench") as s:
                        s.do_handshake()
                counts[i] += 1
            except (OSError, ssl.SSLError):
                errors[i] += 1

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"per_second": sum(counts) / (time.time() - t0), "errors": sum(errors)}


def profile(pids, load_argv, seconds, work, name):
    """Where a pair spends its CPU: `perf record` on both proxies while
    `load_argv` (a load generator run of about `seconds` + 1 s) drives them;
    the top symbols by self time. None when perf is missing or not
    permitted."""
    if not shutil.which("perf"):
        return None
    data = os.path.join(work, f"perf-{name}.data")
    lg = subprocess.Popen(load_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        subprocess.run(["perf", "record", "-F", "999", "-g", "-o", data, "-p", ",".join(map(str, pids)),
                        "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=seconds + 30)
    finally:
        lg.wait(seconds + 30)
    try:
        out = run(["perf", "report", "--stdio", "--no-children", "-g", "none", "--sort", "comm,dso,symbol",
                   "--percent-limit", "0.8", "-i", data], timeout=120)
    except (RuntimeError, subprocess.TimeoutExpired):
        return None
    top = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
        if m:
            top.append({"pct": float(m.group(1)), "comm": m.group(2), "dso": m.group(3),
                        "symbol": re.split(r"\s{2,}", m.group(4))[0]})
    return top[:20] or None


def loadgen_argv(url, rate, seconds):
    return [LOADGEN, "--url", url, "--host", HOST_HEADER, "--rate", str(rate), "--duration", str(seconds),
            "--connections", "16"]


def wrk_argv(url, seconds):
    return ["wrk", "-t2", "-c32", f"-d{seconds}s", "-H", f"Host: {HOST_HEADER}", url]


def syscalls_per_request(pids, url, rate, seconds):
    """System calls (every kind: reads, writes, epoll, timers...) the pair
    makes per request at a fixed rate: `perf stat -e raw_syscalls:sys_enter`
    on its processes while rete-loadgen sends rate x seconds requests. None
    without perf."""
    if not shutil.which("perf"):
        return None
    lg = subprocess.Popen(loadgen_argv(url, rate, seconds + 1), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)
        st = subprocess.run(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p",
                             ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                            capture_output=True, text=True, timeout=seconds + 30)
    finally:
        lg.communicate(timeout=seconds + 30)
    m = re.search(r"^(\d+),", st.stderr, re.M)
    return int(m.group(1)) / (rate * seconds) if m else None


def rss_breakdown(pid, top=8):
    """Resident memory of a process by mapping (/proc/PID/smaps): anonymous
    mappings (heap, arenas, stacks) apart, files by name; kB, largest first."""
    groups = {}
    name = None
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    path = parts[5] if len(parts) > 5 else ""
                    name = ("[heap]" if path == "[heap]" else "[stack]" if path.startswith("[stack")
                            else "anonymous (arenas, thread stacks, mmap)" if not path or path.startswith("[")
                            else os.path.basename(path))
                elif parts and parts[0] == "Rss:" and name:
                    groups[name] = groups.get(name, 0) + int(parts[1])
    except OSError:
        return []
    return sorted(([k, v] for k, v in groups.items() if v), key=lambda kv: -kv[1])[:top]


def openssl_speed(seconds):
    out = run(["openssl", "speed", "-seconds", str(seconds), "ecdsap256", "ecdhp256"],
              timeout=seconds * 4 + 30)
    res = {}
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)", out)
    if m:
        res["ecdsa_sign"], res["ecdsa_verify"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"256 bits ecdh \(nistp256\)\s+[\d.]+s\s+([\d.]+)", out)
    if m:
        res["ecdh"] = float(m.group(1))
    if len(res) == 3:
        # Server side of one full mTLS 1.3 handshake with P-256: one ECDSA
        # signature (CertificateVerify), two ECDSA verifications (client leaf;
        # the CA's signature on it), one ECDHE key generation and one derivation
        # (counted as two ECDH operations). Per core, ignoring everything else.
        per = 1 / res["ecdsa_sign"] + 2 / res["ecdsa_verify"] + 2 / res["ecdh"]
        res["handshake_limit_per_core"] = 1 / per
    return res


# ---------------------------------------------------------------- control plane

CP_FULL = dict(proxies=1000, services=1000, workloads=10000, perf=True, timeout=120, connect_timeout=240)
CP_SMOKE = dict(proxies=20, services=50, workloads=200, perf=False, timeout=30, connect_timeout=30)


def ca_core():
    """reted's CA on one core, from its unit micro-benchmark (tests/unit/test_ca.c)."""
    exe = os.path.join(BUILD, "tests", "unit", "test_ca")
    if not os.path.exists(exe):
        return None
    out = run([exe], 120, check=False)
    res = {}
    m = re.search(r"CA issuance: (\d+) certificates/s of CPU time", out)
    if m:
        res["certs_per_cpu_s"] = int(m.group(1))
    m = re.search(r"sign (\d+)/s, verify (\d+)/s, sign\+verify (\d+)/s", out)
    if m:
        res.update(sign=int(m.group(1)), verify=int(m.group(2)), sign_verify=int(m.group(3)))
    return res or None


# ---------------------------------------------------------------- transparent

def only_scenario(name, cfg, work, outdir, keep):
    """bench/run.py --only NAME (transparent, retry-cost, tracing): the scenario alone,
    merged into the last full run's results.json, and its section of
    REPORT.md replaced (the rest of the report, hand-written sections
    included, unchanged)."""
    key, run_it = {"transparent": ("transparent", transparent),
                   "retry-cost": ("retry_cost", retry_cost),
                   "tracing": ("tracing", tracing)}[name]
    path = os.path.join(outdir, "results.json")
    with open(path) as f:
        results = json.load(f)
    failures = []
    try:
        certs = os.path.join(work, "certs")
        os.makedirs(certs)
        make_certs(certs)
        prev = results.get(key) or {}
        results[key] = run_it(cfg, work, certs, failures)
        if key == "tracing" and "ratio" in results[key]:
            # the spread between runs is part of the answer: the last runs' ratios are kept
            earlier = [{k: prev[k] for k in ("when", "loadavg", "ratio") if k in prev}] if "ratio" in prev else []
            results[key]["earlier"] = (earlier + prev.get("earlier", []))[:TRACING_RUNS_KEPT - 1]
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        log(f"FAIL: {f}")
    if failures or "skipped" in results[key]:
        return 1
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    import report
    rpath = os.path.join(outdir, "REPORT.md")
    text = open(rpath).read() if os.path.exists(rpath) else ""
    with open(rpath, "w") as f:
        f.write(report.splice_scenario(text, key, results))
    log(f"wrote the {name} section of {rpath}")
    return 0


# The "transparent" scenario: the rete pair (client sidecar A, echo's sidecar
# B, rete-echo) in two network namespaces on a bridge (examples/nettopo.py),
# `rete-proxy init` in the client's. The load generator runs in the client's
# namespace and loads the same pair two ways in interleaved slices: explicit
# (to A's outbound listener 127.0.0.1:15001, as the rete scenario does) and
# transparent (to the echo Service's clusterIP:8080, redirected by init to
# 15001; A recovers the original destination). The difference is what
# interception costs: issue 10 allows +10 us at p50.
TRANSPARENT_SUBNET = "10.252.0"
TRANSPARENT_VIP = "10.252.0.200"  # the Service's clusterIP: in the subnet (routable), nobody's address
TRANSPARENT_RATE = 1000
PROXY_GID = 1337  # A runs with this group; init leaves its own connections alone


def transparent(cfg, work, certs, failures):
    """{"rate", "explicit": result, "transparent": result, "p50_delta_us",
    "p99_delta_us"}, or {"skipped": why} without root."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import nettopo
    if not nettopo.have_netns() or not shutil.which("nft"):
        why = "needs root, `ip netns` and nft (run bench/run.py as root)"
        log(f"transparent: skipped: {why}")
        return {"skipped": why}
    topo = nettopo.Topology(f"rbench{os.getpid()}", TRANSPARENT_SUBNET, "fd00:252::")
    procs = Procs(work)
    try:
        client, server = topo.add_host("client"), topo.add_host("server")
        topo.check_isolated()
        confs = {}
        for side, h, sa, cert in (("b", server, "echo", "server"), ("a", client, "client", "client")):
            conf = render(os.path.join(HERE, "rete", f"proxy-{side}.yaml.in"),
                          os.path.join(work, f"transparent-{side}.yaml"), addr=h.addr, sa=sa,
                          cert=os.path.join(certs, f"{cert}.pem"), key=os.path.join(certs, f"{cert}.key"),
                          ca=os.path.join(certs, "ca.pem"), echo_addr=server.addr,
                          echo_port=ECHO_ADDR[1], echo_grpc_port=ECHO_GRPC_ADDR[1])
            confs[side] = conf
        # A: the outbound listener on loopback (where init's redirect sends
        # the app), the Service with its clusterIP
        text = open(confs["a"]).read()
        text = text.replace(f"  address: {client.addr}\n",
                            f"  address: {client.addr}\n  listeners: {{outbound: \"127.0.0.1:15001\"}}\n", 1)
        text = text.replace("  namespace: bench\nspec:\n  ports:",
                            f"  namespace: bench\nspec:\n  clusterIP: {TRANSPARENT_VIP}\n  ports:", 1)
        assert "127.0.0.1:15001" in text and TRANSPARENT_VIP in text, "proxy-a.yaml.in changed shape"
        open(confs["a"], "w").write(text)
        procs.start("transparent-echo", server.cmd([ECHO, "--listen", f"{server.addr}:{ECHO_ADDR[1]}",
                                                    "--name", "echo"]), [])
        procs.start("transparent-b", server.cmd([RETE_PROXY, "--config", confs["b"]]), [])
        procs.start("transparent-a", client.cmd(["setpriv", f"--regid={PROXY_GID}", "--clear-groups",
                                                 RETE_PROXY, "--config", confs["a"]]), [])
        r = client.run([RETE_PROXY, "init", f"--proxy-gid={PROXY_GID}", f"--address={client.addr}"])
        if r.returncode != 0:
            raise RuntimeError(f"rete-proxy init: {r.stderr.strip()}")
        urls = {"explicit": "http://127.0.0.1:15001/", "transparent": f"http://{TRANSPARENT_VIP}:{ECHO_ADDR[1]}/"}
        for name, url in urls.items():  # each path answers, within a bound
            deadline = time.time() + 15
            while True:
                r = client.run(["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                                "-H", f"Host: {HOST_HEADER}", url])
                if r.stdout == "200":
                    break
                if time.time() > deadline or procs.crashed():
                    raise RuntimeError(f"{name} path {url} does not answer 200: {r.stdout} {r.stderr.strip()} "
                                       f"{procs.tail('transparent-a')}")
                time.sleep(0.1)
        prefix = client.cmd([])
        for url in urls.values():  # warm-up, discarded
            loadgen(url, TRANSPARENT_RATE, cfg["warmup"], cfg["connections"], prefix=prefix)
        runs = {k: [] for k in urls}
        for _ in range(max(2, cfg["slices"])):
            for k, url in urls.items():
                runs[k].append(loadgen(url, TRANSPARENT_RATE, cfg["duration"] / max(2, cfg["slices"]),
                                       cfg["connections"], prefix=prefix))
        res = {"rate": TRANSPARENT_RATE, "loadavg": round(os.getloadavg()[0], 2)}
        for k in urls:
            m = merge_runs(runs[k])
            m.pop("histogram", None)
            res[k] = m
            log(f"transparent ({k:11s}) {TRANSPARENT_RATE} req/s: p50 {m['p50']} p99 {m['p99']} "
                f"p99.9 {m['p999']} us, ok {m['ok']}, errors {m['errors']}, non2xx {m['non2xx']}")
            if m["errors"] or m["non2xx"] or not m["ok"]:
                failures.append(f"transparent {k}: {m['ok']} ok, {m['errors']} errors, {m['non2xx']} non-2xx")
        res["p50_delta_us"] = res["transparent"]["p50"] - res["explicit"]["p50"]
        res["p99_delta_us"] = res["transparent"]["p99"] - res["explicit"]["p99"]
        log(f"transparent: interception adds {res['p50_delta_us']} us at p50, {res['p99_delta_us']} us at p99")
        crashed = procs.crashed()
        if crashed:
            failures.append(f"transparent: processes exited during the run: {crashed}")
        return res
    finally:
        procs.stop_all()
        for e in topo.delete():
            failures.append(f"transparent: {e}")


# ---------------------------------------------------------------- retry cost

# Issue 11: a request that succeeds on its first try costs no more with a
# route that may retry it. Two client sidecars in front of the same B and
# echo: A as in the rete pair, and A' whose configuration adds an HTTPRoute
# with `retry` and `timeouts` (so every request gets a try state, a
# per-try deadline, a budget deposit and the replay copy of its body).
# Loaded in interleaved slices at one rate; p50/p99 and A's CPU per 1000
# requests for each.
RETRY_COST_ADDR = "127.0.0.13"  # A' (A is ADDR["rete"][0])
RETRY_COST_RATE = 2000
RETRY_ROUTE = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo-retry
  namespace: bench
spec:
  parentRefs: [{kind: Service, name: echo, port: @PORT@}]
  rules:
  - backendRefs: [{name: echo, port: @PORT@}]
    timeouts: {request: 10s, backendRequest: 5s}
    retry: {attempts: 2, backoff: 25ms, codes: [502, 503, 504]}
"""


def retry_cost(cfg, work, certs, failures, running=None):
    """{"rate", "plain": result, "retry": result, "p50_delta_us", "cpu_delta_pct"}.
    `running`: the full run's Procs with echo and the rete pair up (then only
    A' is started here), else everything is started and stopped here."""
    procs = Procs(work)
    a, b = ADDR["rete"]
    sides = [("a", RETRY_COST_ADDR, "client", "client", "retry")]
    if running is None:
        procs.start("echo", [ECHO, "--listen", f"{ECHO_ADDR[0]}:{ECHO_ADDR[1]}", "--listen",
                             f"{ECHO_GRPC_ADDR[0]}:{ECHO_GRPC_ADDR[1]}", "--name", "echo"],
                    [ECHO_ADDR, ECHO_GRPC_ADDR])
        sides = [("b", b, "echo", "server", "rete-b"), ("a", a, "client", "client", "rete-a")] + sides
    pids = {}
    try:
        for side, addr, sa, cert, name in sides:
            conf = render(os.path.join(HERE, "rete", f"proxy-{side}.yaml.in"),
                          os.path.join(work, f"retry-cost-{name}.yaml"), addr=addr, sa=sa,
                          cert=os.path.join(certs, f"{cert}.pem"), key=os.path.join(certs, f"{cert}.key"),
                          ca=os.path.join(certs, "ca.pem"), echo_addr=ECHO_ADDR[0],
                          echo_port=ECHO_ADDR[1], echo_grpc_port=ECHO_GRPC_ADDR[1])
            if name == "retry":
                with open(conf, "a") as f:
                    f.write(RETRY_ROUTE.replace("@PORT@", str(ECHO_ADDR[1])))
            ports = [(addr, MESH_PORT)] if side == "b" else [(addr, 15001)]
            procs.start(name, [RETE_PROXY, "--config", conf], ports)
        pids = {"plain": (running or procs).pid("rete-a"), "retry": procs.pid("retry")}
        urls = {"plain": f"http://{a}:15001/", "retry": f"http://{RETRY_COST_ADDR}:15001/"}
        for url in urls.values():
            check_path(url)
            loadgen(url, RETRY_COST_RATE, cfg["warmup"], cfg["connections"])  # warm-up, discarded
        runs = {k: [] for k in urls}
        cpu = {k: 0.0 for k in urls}
        slices = max(2, cfg["slices"])
        for _ in range(slices):
            for k, url in urls.items():
                pid = pids[k]
                c0 = cpu_seconds(pid)
                runs[k].append(loadgen(url, RETRY_COST_RATE, cfg["duration"] / slices, cfg["connections"]))
                cpu[k] += cpu_seconds(pid) - c0
        res = {"rate": RETRY_COST_RATE, "loadavg": round(os.getloadavg()[0], 2)}
        for k in urls:
            m = merge_runs(runs[k])
            m.pop("histogram", None)
            m["cpu_ms_per_1000"] = round(cpu[k] * 1e6 / max(1, m["ok"]), 1)
            res[k] = m
            log(f"retry cost ({k:5s}) {RETRY_COST_RATE} req/s: p50 {m['p50']} p99 {m['p99']} us, "
                f"A's CPU {m['cpu_ms_per_1000']} ms per 1000 requests, ok {m['ok']}, errors {m['errors']}")
            if m["errors"] or m["non2xx"] or not m["ok"]:
                failures.append(f"retry cost {k}: {m['ok']} ok, {m['errors']} errors, {m['non2xx']} non-2xx")
        res["p50_delta_us"] = res["retry"]["p50"] - res["plain"]["p50"]
        res["cpu_delta_pct"] = round(100.0 * (res["retry"]["cpu_ms_per_1000"] / max(0.001, res["plain"]["cpu_ms_per_1000"]) - 1), 1)
        crashed = procs.crashed()
        if crashed:
            failures.append(f"retry cost: processes exited during the run: {crashed}")
        return res
    finally:
        procs.stop_all()


# ---------------------------------------------------------------- tracing
# The "tracing" scenario (issue 12): what tracing costs the rete pair. Four
# pairs side by side, alike but for the MeshConfig both proxies get: no
# tracing (off: no collector) twice -- "off" and its A/A control "off2",
# whose difference from "off" is the measurement's own noise --, sampling
# 1% and 100%, all exporting OTLP/HTTP JSON to one discard collector (a
# Python http.server in this process, whose CPU is not the proxies'). Each
# pair has its own addresses (A 127.0.0.4x, B at the echo workload's
# address 127.0.0.5x, where one rete-echo listens for all of them); the
# levels are loaded at TRACING_RATE each, all at once, in slices: outside
# load lands on every level alike (levels loaded one after the other, the
# earlier design, met different outside load: its A/A pairs differed by up
# to 40% in a slice on this shared machine).
# CPU of A + B per 1000 requests: every thread's run time in nanoseconds
# (/proc/PID/task/*/schedstat; /proc/PID/stat's utime + stime count 10 ms
# ticks, +-2.5% of a 4-s slice's CPU); the exporter thread ("rete-trace")
# is also read alone. A level's cost is its CPU against off's in the same
# slice, a ratio per slice: the median and the range across slices are
# reported next to the pooled ratio, and off2/off says what a ratio of two
# identical pairs looks like on the machine at that moment.
TRACING_LEVELS = [("off", None), ("off2", None), ("1%", 1), ("100%", 100)]
TRACING_NAMES = {"off": "off", "off2": "off2", "1%": "1pct", "100%": "100pct"}  # in file and process names
TRACING_RATE = 1000
TRACING_ONLY_SLICES = 20  # --only tracing: 20 slices of 4 s, every level in each (about 2 minutes)
TRACING_ONLY_SLICE_S = 4
TRACING_RUNS_KEPT = 6  # --only tracing: this run's and the 5 before it in results.json and REPORT.md


def task_cpu_ns(pid):
    """(all threads, the trace exporter thread): on-CPU nanoseconds of a
    process from /proc/PID/task/*/schedstat (the first field is the time
    the thread has run). Threads that exit take their time with them: the
    proxy's threads live as long as it does."""
    total = exporter = 0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"{base}/{tid}/comm") as f:
                comm = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue  # the thread has gone
        total += ns
        if comm == "rete-trace":
            exporter += ns
    return total, exporter


# The tracing code's functions in rete-proxy (filter_trace.c, trace_ctx.c;
# the static helpers the compiler inlines are counted in their caller).
TRACE_SYMBOLS = re.compile(r"^(trace_request|trace_decide|start_span|trace_finish|read_ctx|find_trace_hdrs|draw_ppm|rnd|rnd_bytes|"
                           r"propagate|set_hex|proto_version|rete_trace_\w+)(\.\w+)*$")  # not spiffe_ns: telemetry.c has one


def tracing_profile(pids, seconds, work):
    """Where the tracing pair's CPU goes, read directly rather than as a
    difference of two noisy totals: `perf record` (cpu-clock) on its proxies
    for `seconds` while they carry the load; the share of their samples in
    the tracing code's own functions on the worker threads (self time: what
    they call in libc, e.g. a sampled request's snprintf, is not counted),
    and in the exporter thread (rete-trace, all of it). None without perf."""
    if not shutil.which("perf"):
        return None
    data = os.path.join(work, "perf-tracing.data")
    r = subprocess.run(["perf", "record", "-F", "2999", "-o", data, "-p", ",".join(map(str, pids)),
                        "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=seconds + 30)
    if r.returncode != 0:
        return None
    try:
        out = run(["perf", "report", "--stdio", "--no-children", "--sort", "comm,symbol", "--percent-limit", "0",
                   "-i", data], timeout=120)
    except (RuntimeError, subprocess.TimeoutExpired):
        return None
    code, exporter, funcs = 0.0, 0.0, {}
    m = re.search(r"# Samples: ([\d.]+)([KM]?)", out)
    for line in out.splitlines():
        mm = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)", line)
        if not mm:
            continue
        pct, comm, sym = float(mm.group(1)), mm.group(2), mm.group(3)
        if comm == "rete-trace":
            exporter += pct
        elif TRACE_SYMBOLS.match(sym):
            code += pct
            funcs[sym] = round(funcs.get(sym, 0) + pct, 3)
    return {"seconds": seconds, "samples": int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6}[m.group(2)]) if m else None, "code_pct": round(code, 3),
            "exporter_pct": round(exporter, 3), "functions": funcs}


def ratio_stats(xs):
    """{"median", "min", "max", "n"} of a list of ratios (None when empty)."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return {"median": round(med, 4), "min": round(xs[0], 4), "max": round(xs[-1], 4), "n": n}


class DiscardCollector:
    """Accepts OTLP/HTTP POSTs and throws the bodies away (200 {})."""

    def __init__(self, host):
        import http.server
        outer = self
        self.posts = self.bytes = 0

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                outer.posts += 1
                outer.bytes += n
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), H)
        self.addr = f"{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def proxy_metric(addr, name):
    """A counter's value from a proxy's admin /metrics (0 when absent)."""
    import urllib.request
    with urllib.request.urlopen(f"http://{addr}:15000/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def tracing(cfg, work, certs, failures):
    """{"rate", "slices", "slice_s", "levels": {level: {latency result, "cpu": {"A","B","sum",
    "exporter"} (ms per 1000 requests), "spans": {"exported","dropped","failed"}}},
    "per_slice": [{level: ms per 1000}], "ratio": {level: {"pooled", "median", "min",
    "max", "n"}} (against off, per slice), "collector": {...}}."""
    procs = Procs(work)
    col = DiscardCollector("127.0.0.1")
    try:
        pairs = {}
        for i, (level, sampling) in enumerate(TRACING_LEVELS):
            a, b = f"127.0.0.{40 + i}", f"127.0.0.{50 + i}"
            pairs[level] = (a, b)
        procs.start("tracing-echo", [ECHO, *[x for lv in pairs.values() for x in ("--listen", f"{lv[1]}:{ECHO_ADDR[1]}")],
                                     "--name", "echo"], [(lv[1], ECHO_ADDR[1]) for lv in pairs.values()])
        for level, sampling in TRACING_LEVELS:
            a, b = pairs[level]
            for side, addr, sa, cert in (("b", b, "echo", "server"), ("a", a, "client", "client")):
                conf = render(os.path.join(HERE, "rete", f"proxy-{side}.yaml.in"),
                              os.path.join(work, f"tracing-{TRACING_NAMES[level]}-{side}.yaml"), addr=addr, sa=sa,
                              cert=os.path.join(certs, f"{cert}.pem"), key=os.path.join(certs, f"{cert}.key"),
                              ca=os.path.join(certs, "ca.pem"), echo_addr=b,
                              echo_port=ECHO_ADDR[1], echo_grpc_port=ECHO_GRPC_ADDR[1])
                if sampling is not None:
                    with open(conf, "a") as f:
                        f.write("---\napiVersion: rete.dev/v1alpha1\nkind: MeshConfig\n"
                                "metadata: {name: mesh, namespace: rete-system}\n"
                                f"spec:\n  tracing: {{collector: \"{col.addr}\", format: otlp, sampling: {sampling}}}\n")
                name = f"tracing-{TRACING_NAMES[level]}-{side}"
                procs.start(name, [RETE_PROXY, "--config", conf], [(addr, MESH_PORT if side == "b" else 15001)])
        urls = {level: f"http://{a}:15001/" for level, (a, b) in pairs.items()}
        for url in urls.values():
            check_path(url)
            loadgen(url, TRACING_RATE, cfg["warmup"], cfg["connections"])  # warm-up, discarded
        time.sleep(0.5)  # the warm-up's spans leave the exporters (200 ms flush)
        before_spans = {lv: {k: proxy_metric(a, f"rete_proxy_spans_{k}_total") + proxy_metric(b, f"rete_proxy_spans_{k}_total")
                             for k in ("exported", "dropped", "failed")} for lv, (a, b) in pairs.items()}
        slices = max(2, cfg.get("tracing_slices", cfg["slices"]))
        slice_s = cfg.get("tracing_slice_s", cfg["duration"] / slices)
        runs = {lv: [] for lv in urls}
        cpu = {lv: {"A": 0, "B": 0, "exporter": 0} for lv in urls}  # ns
        per_slice = []  # [{level: CPU ms of A + B per 1000 answered}]
        order = list(urls)
        pids = {lv: {k: procs.pid(f"tracing-{TRACING_NAMES[lv]}-{k.lower()}") for k in ("A", "B")} for lv in urls}
        for j in range(slices):
            # All levels at once (one rete-loadgen each, started in turn from
            # another level every slice): whatever else runs on the machine
            # during a slice runs during every level's share of it.
            before = {lv: {k: task_cpu_ns(p) for k, p in pids[lv].items()} for lv in urls}
            got, errs = {}, []

            def load(lv):
                try:
                    got[lv] = loadgen(urls[lv], TRACING_RATE, slice_s, cfg["connections"])
                except Exception as e:  # noqa: BLE001 (reported below, the slice is not counted)
                    errs.append(f"{lv}: {e}")
            threads = [threading.Thread(target=load, args=(lv,))
                       for lv in order[j % len(order):] + order[:j % len(order)]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = {lv: {k: task_cpu_ns(p) for k, p in pids[lv].items()} for lv in urls}
            if errs:
                raise RuntimeError("tracing: rete-loadgen failed: " + "; ".join(errs))
            this = {}
            for lv in order:
                runs[lv].append(got[lv])
                ns = 0
                for k in ("A", "B"):
                    d = after[lv][k][0] - before[lv][k][0]
                    cpu[lv][k] += d
                    cpu[lv]["exporter"] += after[lv][k][1] - before[lv][k][1]
                    ns += d
                this[lv] = ns / 1e6 * 1000 / max(1, got[lv]["ok"] + got[lv]["non2xx"])
            per_slice.append({lv: round(v, 3) for lv, v in this.items()})
            log(f"tracing slice {j + 1}/{slices}: CPU ms/1000 req " +
                ", ".join(f"{lv} {this[lv]:.1f}" for lv in order) +
                f"; 1%/off {this['1%'] / (this['off'] or 1e-9):.3f}, off2/off {this['off2'] / (this['off'] or 1e-9):.3f}")
        prof = None
        if cfg.get("profile_seconds"):  # not in the smoke
            ps = cfg["profile_seconds"]
            loads = [subprocess.Popen(loadgen_argv(urls[lv], TRACING_RATE, ps + 1), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for lv in order]
            try:
                time.sleep(0.5)
                prof = tracing_profile(list(pids["1%"].values()), ps, work)
            finally:
                for p in loads:
                    p.wait(ps + 30)
            if prof:
                log(f"tracing 1% pair profiled {ps} s ({prof['samples']} samples): tracing code on the workers "
                    f"{prof['code_pct']:.2f}%, exporter thread {prof['exporter_pct']:.2f}% of its CPU; {prof['functions']}")
        time.sleep(0.5)  # the exporters' last batches (200 ms flush)
        res = {"rate": TRACING_RATE, "slices": slices, "profile_1pct": prof, "when": time.strftime("%Y-%m-%d %H:%M"), "slice_s": slice_s,
               "loadavg": round(os.getloadavg()[0], 2), "levels": {}, "per_slice": per_slice, "ratio": {}}
        for lv, (a, b) in pairs.items():
            m = merge_runs(runs[lv])
            m.pop("histogram", None)
            answered = max(1, m["ok"] + m["non2xx"])
            m["cpu"] = {k: v / 1e6 * 1000 / answered for k, v in cpu[lv].items()}  # ms per 1000
            m["cpu"]["sum"] = m["cpu"]["A"] + m["cpu"]["B"]
            m["spans"] = {k: int(proxy_metric(a, f"rete_proxy_spans_{k}_total") + proxy_metric(b, f"rete_proxy_spans_{k}_total")
                                 - before_spans[lv][k]) for k in ("exported", "dropped", "failed")}
            res["levels"][lv] = m
            log(f"tracing {lv:5s} {TRACING_RATE} req/s: p50 {m['p50']} p99 {m['p99']} us, "
                f"CPU/1000 req {m['cpu']['sum']:.1f} ms (exporter thread {m['cpu']['exporter']:.2f}), "
                f"spans {m['spans']}, ok {m['ok']}, errors {m['errors']}")
            if m["errors"] or m["non2xx"] or not m["ok"]:
                failures.append(f"tracing {lv}: {m['ok']} ok, {m['errors']} errors, {m['non2xx']} non-2xx")
        off = res["levels"]["off"]["cpu"]["sum"] or 1e-9
        for lv in order[1:]:
            st = ratio_stats([s[lv] / s["off"] for s in per_slice if s.get("off")]) or {}
            st["pooled"] = round(res["levels"][lv]["cpu"]["sum"] / off, 4)
            res["ratio"][lv] = st
            log(f"tracing {lv}/off: pooled {st['pooled']:.3f}, per slice median {st.get('median', 0):.3f} "
                f"(min {st.get('min', 0):.3f}, max {st.get('max', 0):.3f}, {st.get('n', 0)} slices)")
        if res["levels"]["100%"]["spans"]["exported"] == 0:
            failures.append("tracing 100%: no span exported")
        res["collector"] = {"posts": col.posts, "bytes": col.bytes}
        crashed = procs.crashed()
        if crashed:
            failures.append(f"tracing: processes exited during the run: {crashed}")
        return res
    finally:
        procs.stop_all()
        col.close()


def control_plane(smoke):
    """The control-plane scale scenario (bench/cpsim.py): reted with N
    simulated proxies, S services and W workloads; one route change. Twice
    in the full run: every proxy scoped to the 5 Services it calls (Workload
    egress, as Istio's Sidecar resource), then every proxy seeing the whole
    mesh (the default). The smoke run does the scoped one, small."""
    import cpsim
    out = {"runs": {}}
    for name, egress in (("scoped", 5), ("whole mesh", 0)):
        if smoke and egress == 0:
            continue
        cp = dict(CP_SMOKE if smoke else CP_FULL, egress=egress)
        if egress == 0:
            cp["perf"] = False  # the scoped run's profile is the one reported
        res = {}
        try:
            cpsim.run(res=res, **cp)
        except Exception as e:  # reported in the section, and a failure of the run
            res["failed"] = f"{type(e).__name__}: {e}"
            out["failed"] = f"{name}: {res['failed']}"
        out["runs"][name] = res
    if not smoke:
        out["ca_core"] = ca_core()
    return out


# ---------------------------------------------------------------- the run

def machine():
    m = {"cpu": "?", "cores": os.cpu_count(), "kernel": platform.release()}
    try:
        out = run(["lscpu"], 10)
        mm = re.search(r"Model name:\s*(.+)", out)
        if mm:
            m["cpu"] = mm.group(1).strip()
    except (RuntimeError, OSError):
        pass
    try:
        with open("/proc/meminfo") as f:
            m["mem_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    m["haproxy"] = run(["haproxy", "-v"], 10).splitlines()[0]
    m["nginx"] = run(["nginx", "-v"], 10, check=False).strip().splitlines()[-1]
    m["openssl"] = run(["openssl", "version"], 10).strip()
    m["wrk"] = "wrk " + (run(["wrk", "-v"], 10, check=False).split()[1:2] or ["?"])[0]
    m["h2load"] = run(["h2load", "--version"], 10, check=False).strip().splitlines()[0]
    return m


def one_run_at_a_time(wait_s=0):
    """The targets listen on fixed loopback addresses: a second run at the
    same time would talk to the first one's processes (or fail to bind) and
    measure nonsense. Hold a lock for the whole run; the kernel releases it
    when this process ends, however it ends. `wait_s`: how long to wait for
    a run that holds it (the smoke, run by `make test`, waits for another
    checkout's smoke instead of failing; a full run does not wait)."""
    f = open(os.path.join(tempfile.gettempdir(), "rete-bench.lock"), "w")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                sys.exit("bench: another bench/run.py is running on this machine (its targets use the "
                         "same addresses); wait for it to finish")
            time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="30-second subset, fails only on errors")
    ap.add_argument("--threads", type=int, default=1, help="worker threads per proxy (default 1)")
    ap.add_argument("--out", default=None, help="report directory (default bench/, smoke: temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--rates", help="comma-separated request rates (override)")
    ap.add_argument("--duration", type=float, help="seconds per fixed-rate run (override)")
    ap.add_argument("--only", choices=["transparent", "retry-cost", "tracing"],
                    help="run this scenario alone at full settings; its result replaces the one in "
                         "bench/results.json and REPORT.md is written again from it")
    ap.add_argument("--short", action="store_true",
                    help="full pipeline and report with every run cut to 2 s (development)")
    args = ap.parse_args()
    lock = one_run_at_a_time(wait_s=300 if args.smoke else 0)  # noqa: F841 (held until exit)
    cfg = dict(SMOKE if args.smoke else FULL)
    if args.short:
        cfg.update(duration=2, warmup=1, slices=2, profile_seconds=2, wrk_duration=2, h2_duration=2, hs_seconds=1, speed_seconds=1)
    if args.rates:
        cfg["rates"] = [int(r) for r in args.rates.split(",")]
    if args.duration:
        cfg["duration"] = args.duration
    if not os.path.exists(LOADGEN):
        sys.exit(f"bench: {LOADGEN} missing; run `make build` first")

    # 1000 idle connections plus the proxies' own sockets need descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="rete-bench-")
    outdir = args.out or (work if args.smoke else HERE)
    if args.only == "tracing" and not args.short:
        cfg.update(tracing_slices=TRACING_ONLY_SLICES, tracing_slice_s=TRACING_ONLY_SLICE_S, profile_seconds=20)
    if args.only:
        return only_scenario(args.only, cfg, work, outdir, args.keep)
    os.makedirs(outdir, exist_ok=True)
    procs = Procs(work)
    t_start = time.time()
    results = {"config": dict(cfg, threads=args.threads, host=HOST_HEADER), "notes": {},
               "when_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "latency": {}, "cpu": {}, "wrk": {}, "h2load": {}, "memory": {}, "handshakes": {}, "loadavg": [], "h2latency": {}}
    failures = []

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)

    try:
        results["machine"] = machine()
        certs = os.path.join(work, "certs")
        os.makedirs(certs)
        make_certs(certs)
        info = start_targets(procs, work, certs, args.threads, results["notes"])
        targets = [t for t in TARGETS if t in info]
        log(f"targets up: {', '.join(targets)}; work dir {work}")
        # A target that did not come up (rete first of all) is measured in no
        # scenario: a failure, not a note in the report.
        for t in TARGETS:
            if t not in info:
                failures.append(f"{t}: not measured: {results['notes'].get(t, 'did not start')}")
        if "grpc" in results["notes"]:
            failures.append(f"gRPC: not measured: {results['notes']['grpc']}")

        # Memory first, on proxies that have carried no load yet, so pools
        # filled by the load runs do not hide the per-connection cost.
        for t in targets:
            if t != "direct":
                results["memory"][t] = {"idle_kb": {s: rss_kb(p) for s, p in info[t]["pids"].items()},
                                        "idle_breakdown": rss_breakdown(info[t]["pids"]["A"])}
        # One request first, so the delta below holds no one-time cost (the
        # upstream mTLS connection, lazily built tables).
        for t in targets:
            check_path(info[t]["url"])
        for t in targets:
            if t == "direct":
                continue
            front = info[t]["pids"]["A"]
            before = rss_kb(front)
            socks = idle_connections(info[t]["url"], cfg["idle_conns"])
            try:
                time.sleep(1)
                with_conns = rss_kb(front)
            finally:
                for s in socks:
                    s.close()
            m = results["memory"][t]
            m.update(front_before_kb=before, front_with_conns_kb=with_conns,
                     per_conn_kb=(with_conns - before) / cfg["idle_conns"])
            log(f"{t:8s} RSS idle {m['idle_kb']} kB; front {before} -> {with_conns} kB with "
                f"{cfg['idle_conns']} conns ({m['per_conn_kb']:.1f} kB/conn)")

        for t in targets:
            loadgen(info[t]["url"], 1000, cfg["warmup"], cfg["connections"])  # warm-up, discarded

        # Each rate is measured in `slices` interleaved slices per target, so
        # a burst of outside load on the shared machine lands on every
        # target alike instead of on whichever ran at that moment; the
        # slices' histograms are merged.
        for rate in cfg["rates"]:
            runs = {t: [] for t in targets}
            cpu = {t: {s: 0.0 for s in info[t]["pids"]} for t in targets}
            for _ in range(cfg["slices"]):
                for t in targets:
                    before = {s: cpu_seconds(p) for s, p in info[t]["pids"].items()}
                    results["loadavg"].append(os.getloadavg()[0])
                    runs[t].append(loadgen(info[t]["url"], rate, cfg["duration"] / cfg["slices"],
                                           cfg["connections"]))
                    for s, p in info[t]["pids"].items():
                        cpu[t][s] += cpu_seconds(p) - before[s]
            for t in targets:
                r = merge_runs(runs[t])
                results["latency"].setdefault(str(rate), {})[t] = r
                answered = max(1, r["ok"] + r["non2xx"])
                results["cpu"].setdefault(str(rate), {})[t] = {s: v * 1000 / answered for s, v in cpu[t].items()}
                log(f"{t:8s} {rate:5d} req/s: p50 {r['p50']} p99 {r['p99']} p99.9 {r['p999']} "
                    f"max {r['max']} us, ok {r['ok']}, errors {r['errors']}, non2xx {r['non2xx']}")
                if r["errors"] or r["non2xx"]:
                    failures.append(f"{t} at {rate} req/s: {r['errors']} errors, {r['non2xx']} non-2xx")

        # Open-loop HTTP/2 (h2c prior knowledge) through the fronts' h2c
        # ports, then gRPC unary calls the same way. gRPC has connections of its own
        # behind the fronts (nginx's grpc_pass pool, HAProxy B's and rete
        # B's h2c to the echo), so it is warmed up first like HTTP/1.1.
        results["h2latency"] = multiplexed_latency(info, targets, "h2c", cfg["h2_rate"], cfg["duration"],
                                                   cfg["h2_connections"], failures)
        if "grpc_rate" in cfg:
            results["grpclatency"] = multiplexed_latency(info, targets, "grpc", cfg["grpc_rate"],
                                                         cfg["duration"], cfg["h2_connections"], failures,
                                                         warmup=cfg["warmup"])

        for t in targets:
            results["loadavg"].append(os.getloadavg()[0])
            w = wrk(info[t]["url"], cfg["wrk_duration"])
            results["wrk"][t] = w
            log(f"{t:8s} wrk: {w['rps']:.0f} req/s, non2xx {w['non2xx']}, socket errors {w['socket_errors']}")
            if w["non2xx"] or w["socket_errors"] or w["requests"] == 0:
                failures.append(f"{t} wrk: {w['non2xx']} non-2xx, {w['socket_errors']} socket errors")
        for t in targets:
            h = h2load(info[t]["h2c"], cfg["h2_duration"])
            results["h2load"][t] = h
            log(f"{t:8s} h2load: {h['rps']:.0f} req/s" if h else f"{t:8s} h2load: n/a (no h2c)")
            why = h2load_problems(h)
            if why:
                failures.append(f"{t} h2load: {why}" + (f"\n{h['output']}" if h else ""))
            if h:
                h.pop("output")

        if not args.smoke:
            # The profiles behind the targets: at a fixed rate (latency) and
            # under wrk (throughput), with the system calls each request costs.
            for t in ("haproxy", "rete"):
                if t in info:
                    pids = list(info[t]["pids"].values())
                    seconds = cfg["profile_seconds"]
                    p = profile(pids, loadgen_argv(info[t]["url"], 2000, seconds + 1), seconds, work, t)
                    results.setdefault("profiles", {})[t] = p
                    p = profile(pids, wrk_argv(info[t]["url"], seconds + 1), seconds, work, t + "-wrk")
                    results.setdefault("profiles_wrk", {})[t] = p
                    sc = syscalls_per_request(pids, info[t]["url"], 2000, 3)
                    results.setdefault("syscalls", {})[t] = sc
                    log(f"{t:8s} profiles: {len(p) if p else 'no'} symbols under wrk; "
                        f"{sc if sc is None else round(sc, 1)} syscalls/request")

        if "rete" in info and not args.smoke:
            try:
                results["memory"]["rete"]["scale"] = scale_rss(procs, work, certs)
                log(f"rete     with 1000 services / 10000 workloads: {results['memory']['rete']['scale']}")
            except RuntimeError as e:
                results["notes"]["scale"] = f"rete-proxy with 1000 services did not start: {e}"

        for t in targets:
            if "mesh" in info[t]:
                h = handshakes(info[t]["mesh"], certs, info[t]["alpn"], cfg["hs_seconds"])
                results["handshakes"][t] = h
                log(f"{t:8s} mTLS handshakes: {h['per_second']:.0f}/s ({h['errors']} errors)")
                if h["errors"] or not h["per_second"]:
                    failures.append(f"{t} mTLS handshakes: {h['errors']} failed, {h['per_second']:.0f}/s")
        if cfg["speed_seconds"]:
            results["speed"] = openssl_speed(cfg["speed_seconds"])
            log(f"openssl speed: {results['speed']}")

        for t in targets:
            if t != "direct":
                results["memory"][t]["loaded_kb"] = {s: rss_kb(p) for s, p in info[t]["pids"].items()}

        if "rete" in info:  # bounded in the smoke too: cfg's warmup and duration
            try:
                results["retry_cost"] = retry_cost(cfg, work, certs, failures, running=procs)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                results["retry_cost"] = {"failed": str(e)[:500]}
                failures.append(f"retry cost: not measured: {e}")
        if True:  # bounded in the smoke too: cfg's warmup and duration
            try:
                results["transparent"] = transparent(cfg, work, certs, failures)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                results["transparent"] = {"failed": str(e)[:500]}
                failures.append(f"transparent: not measured: {e}")

        if "rete" in info and os.path.exists(ECHO):
            try:
                results["tracing"] = tracing(cfg, work, certs, failures)
            except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
                results["tracing"] = {"failed": str(e)[:500]}
                failures.append(f"tracing: not measured: {e}")

        # The data-plane targets sit idle from here on.
        log("control plane: reted with simulated proxies (bench/cpsim.py)")
        results["control_plane"] = control_plane(args.smoke)
        if "failed" in results["control_plane"]:
            failures.append(f"control plane: {results['control_plane']['failed']}")
        crashed = procs.crashed()
        if crashed:
            failures.append(f"processes exited during the run: {crashed}")
        results["info"] = {t: {k: v for k, v in i.items() if k != "pids"} for t, i in info.items()}
    except KeyboardInterrupt:
        log("interrupted; stopping every process")
        failures.append("interrupted")
    except Exception as e:  # report, stop everything, fail
        failures.append(f"{type(e).__name__}: {e}")
        log(f"error: {e}")
    finally:
        crashed = procs.crashed()
        procs.stop_all()
    results["elapsed_s"] = time.time() - t_start
    results["failures"] = failures

    with open(os.path.join(outdir, "results.json" if not args.smoke else "smoke.json"), "w") as f:
        json.dump(results, f, indent=1)
    if not args.smoke and "interrupted" not in failures:
        import report
        report.write(results, outdir)
        log(f"wrote {os.path.join(outdir, 'REPORT.md')} in {results['elapsed_s']:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    for f in failures:
        log(f"FAIL: {f}")
    if args.smoke:
        log(f"smoke {'failed' if failures else 'passed'} in {results['elapsed_s']:.0f} s")
        return 1 if failures else 0
    return 1 if crashed or "interrupted" in failures else 0


if __name__ == "__main__":
    sys.exit(main())
