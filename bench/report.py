"""Turn bench/run.py's results into bench/REPORT.md and PNG plots.

Also usable alone: `python3 bench/report.py bench/results.json` rewrites the
report from a saved run.
"""
import json
import math
import os
import sys
import time

TARGETS = ["direct", "haproxy", "nginx", "rete"]
LABEL = {"direct": "direct", "haproxy": "HAProxy pair", "nginx": "nginx pair", "rete": "rete pair"}
PCTS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]
TARGET_RATE = "1000"


def fmt_us(v):
    return "n/a" if v is None else f"{v:,.0f}"


def fmt(v, spec=",.0f", none="n/a"):
    return none if v is None else format(v, spec)


def added(res, rate, target, key):
    lat = res["latency"].get(rate, {})
    if target not in lat or "direct" not in lat:
        return None
    return lat[target][key] - lat["direct"][key]


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def targets_table(res):
    """Issue 2's targets beside the measured figures."""
    rows = []
    have_rete = "rete" in res["latency"].get(TARGET_RATE, {})
    hap_p50 = added(res, TARGET_RATE, "haproxy", "p50")
    hap_p99 = added(res, TARGET_RATE, "haproxy", "p99")
    hap_rps = res["wrk"].get("haproxy", {}).get("rps")

    def line(goal, limit_text, measure, limit, cmp):
        ok = None if measure is None or limit is None else cmp(measure, limit)
        rows.append(f"| {goal} | {limit_text} | {measure if isinstance(measure, str) else fmt(measure, ',.1f')} "
                    f"| {verdict(ok)} |")

    # Outside load can make the pair's added latency come out zero or
    # negative; a ratio of that is meaningless, so no verdict then.
    def goal(v):
        return None if v is None or v <= 0 else 0.75 * v

    rete_p50 = added(res, TARGET_RATE, "rete", "p50") if have_rete else None
    rete_p99 = added(res, TARGET_RATE, "rete", "p99") if have_rete else None
    line("added latency p50 at 1000 req/s (us)", f"<= 0.75 x HAProxy's {fmt(hap_p50)} = "
         f"{fmt(goal(hap_p50), ',.1f', 'no goal (not positive: noise)')}", rete_p50,
         goal(hap_p50), lambda m, l: m <= l)
    line("added latency p99 at 1000 req/s (us)", f"<= 0.75 x HAProxy's {fmt(hap_p99)} = "
         f"{fmt(goal(hap_p99), ',.1f', 'no goal (not positive: noise)')}", rete_p99,
         goal(hap_p99), lambda m, l: m <= l)
    rete_rps = res["wrk"].get("rete", {}).get("rps")
    line("max throughput, wrk 32 conns (req/s)", f">= 1.2 x HAProxy's {fmt(hap_rps)} = "
         f"{fmt(None if hap_rps is None else 1.2 * hap_rps)}", rete_rps,
         None if hap_rps is None else 1.2 * hap_rps, lambda m, l: m >= l)
    mem = res["memory"].get("rete")
    idle = max(mem["idle_kb"].values()) / 1024 if mem else None
    line("idle RSS per proxy (MB, larger of A and B)", "<= 4 MB", idle, 4.0, lambda m, l: m <= l)
    per = mem.get("per_conn_kb") if mem else None
    line("RSS per idle downstream connection (KB)", "<= 16 KB", per, 16.0, lambda m, l: m <= l)
    out = ["| target (issue 2) | goal | rete measured | verdict |", "| --- | --- | --- | --- |"] + rows
    if not have_rete:
        out.append("")
        out.append("rete was not measured in this run (" +
                   res["notes"].get("rete", "no figures") + "), so every verdict is n/a. For "
                   "reference, the same figures for the other pairs are in the tables below.")
    return out


def latency_section(res):
    out = []
    for rate in sorted(res["latency"], key=int):
        lat = res["latency"][rate]
        out.append(f"### {int(rate):,} requests/s")
        out.append("")
        out.append("Latency in microseconds from the intended send time; in brackets the latency "
                   "added over the direct path at the same percentile.")
        out.append("")
        out.append("| target | " + " | ".join(n for _, n in PCTS) +
                   " | achieved req/s | ok | errors | non-2xx |")
        out.append("| --- " * (len(PCTS) + 5) + "|")
        for t in TARGETS:
            if t not in lat:
                continue
            r = lat[t]
            cells = []
            for k, _ in PCTS:
                a = added(res, rate, t, k)
                cells.append(fmt_us(r[k]) + ("" if t == "direct" or a is None else f" (+{a:,.0f})"
                                             if a >= 0 else f" ({a:,.0f})"))
            out.append(f"| {LABEL[t]} | " + " | ".join(cells) +
                       f" | {r['achieved_rate']:,.0f} | {r['ok']:,} | {r['errors']:,} | {r['non2xx']:,} |")
        out.append("")
    return out


def multiplexed_table(rows, grpc=False):
    """Open-loop results over HTTP/2 streams, one row per target, with the
    latency added over the direct path in brackets. gRPC rows also say
    which grpc-status values came back other than 0."""
    extra = " | grpc-status != 0 |" if grpc else " |"
    out = ["| target | " + " | ".join(n for _, n in PCTS) + " | ok | errors | non-2xx" + extra,
           "| --- " * (len(PCTS) + 4 + grpc) + "|"]
    d = rows.get("direct") if rows.get("direct") and "failed" not in rows.get("direct") else None
    for t in TARGETS:
        r = rows.get(t)
        if not r:
            continue
        if "failed" in r:
            out.append(f"| {LABEL[t]} | " + " | ".join("n/a" for _ in PCTS) + " | n/a | n/a | n/a" +
                       (" | n/a |" if grpc else " |"))
            continue
        cells = [fmt_us(r[k]) + ("" if t == "direct" or not d else f" ({r[k] - d[k]:+,.0f})") for k, _ in PCTS]
        tail = " |"
        if grpc:
            bad = {k: v for k, v in r.get("grpc_status", {}).items() if k != "0"}
            tail = " | " + (", ".join(f"{k}: {v:,}" for k, v in bad.items()) or "none") + " |"
        out.append(f"| {LABEL[t]} | " + " | ".join(cells) + f" | {r['ok']:,} | {r['errors']:,} | {r['non2xx']:,}"
                   + tail)
    return out


def h2_latency_section(res):
    c = res["config"]
    return [f"rete-loadgen `--http2`: h2c with prior knowledge to the front's h2c listener, "
            f"{c.get('h2_connections', 4)} connections with up to 100 streams each, open loop at "
            f"{c.get('h2_rate', 2000):,} req/s for {c['duration']} s. Microseconds; in brackets the "
            "latency added over the direct path (the echo speaking h2c itself).", ""] + \
        multiplexed_table(res.get("h2latency", {}))


def grpc_latency_section(res):
    c = res["config"]
    notes = res.get("notes", {})
    out = [f"rete-loadgen `--grpc /rete.echo.Echo/Echo`: unary calls (HTTP/2 POST, `content-type: "
           "application/grpc`, `te: trailers`, one 12-byte length-prefixed message) to the front's h2c "
           f"listener, {c.get('h2_connections', 4)} connections with up to 100 streams each, open loop at "
           f"{c.get('grpc_rate', 2000):,} calls/s for {c['duration']} s, after {c['warmup']} s of the same "
           "load (discarded). A call is OK only with HTTP 200 "
           "and the trailer `grpc-status: 0`; a failed call counts as an error and its grpc-status is "
           "listed. The backend is rete-echo's gRPC echo on its second port, 127.0.0.10:8081 (h2c). "
           "gRPC needs HTTP/2 on every hop, so each pair carries it as HTTP/2 from end to end: HAProxy B "
           "sends `content-type: application/grpc` to an h2c server line (`proto h2`); nginx uses "
           "`grpc_pass` (HTTP/2 over mTLS with ALPN h2 between A and B, h2c to the echo) for the "
           "service's path prefix; rete declares the service port `GRPC` (h2c to the app) and routes "
           "`:authority echo.bench:8081` to it. Microseconds; in brackets the latency added over the "
           "direct path.", ""]
    if notes.get("grpc"):
        out += [f"**gRPC:** {notes['grpc']}.", ""]
    return out + multiplexed_table(res.get("grpclatency", {}), grpc=True)


def cpu_section(res):
    out = ["CPU seconds (user + system, from /proc/PID/stat) consumed per 1000 requests "
           "during each fixed-rate run, per process and summed over the pair. The direct row "
           "is the echo backend alone.", "",
           "| rate (req/s) | " + " | ".join(LABEL[t] + " A / B / sum" if t != "direct" else "direct (echo)"
                                         for t in TARGETS if any(t in v for v in res["cpu"].values())) + " |"]
    present = [t for t in TARGETS if any(t in v for v in res["cpu"].values())]
    out.append("| --- " * (len(present) + 1) + "|")
    for rate in sorted(res["cpu"], key=int):
        cells = []
        for t in present:
            c = res["cpu"][rate].get(t)
            if not c:
                cells.append("n/a")
            elif t == "direct":
                cells.append(f"{c['echo']:.3f}")
            else:
                cells.append(f"{c['A']:.3f} / {c['B']:.3f} / {c['A'] + c['B']:.3f}")
        out.append(f"| {int(rate):,} | " + " | ".join(cells) + " |")
    return out


def throughput_section(res):
    out = ["| target | wrk req/s (HTTP/1.1, 32 conns) | wrk p50 / p99 (us, closed loop) | "
           "h2load req/s (h2c, 32 conns x 10 streams) |", "| --- | --- | --- | --- |"]
    for t in TARGETS:
        w = res["wrk"].get(t)
        if not w:
            continue
        h = res["h2load"].get(t)
        out.append(f"| {LABEL[t]} | {w['rps']:,.0f} | {fmt(w.get('p50'))} / {fmt(w.get('p99'))} | "
                   f"{'n/a' if not h else format(h['rps'], ',.0f')} |")
    return out


def memory_section(res):
    n = res["config"]["idle_conns"]
    out = [f"| target | idle RSS A (KB) | idle RSS B (KB) | front RSS before / with {n} idle "
           f"connections (KB) | per connection (KB) | RSS after the run A / B (KB) |",
           "| --- | --- | --- | --- | --- | --- |"]
    for t in TARGETS:
        m = res["memory"].get(t)
        if not m:
            continue
        loaded = m.get("loaded_kb", {})
        out.append(f"| {LABEL[t]} | {m['idle_kb']['A']:,} | {m['idle_kb']['B']:,} | "
                   f"{fmt(m.get('front_before_kb'))} / {fmt(m.get('front_with_conns_kb'))} | "
                   f"{fmt(m.get('per_conn_kb'), '.1f')} | {fmt(loaded.get('A'))} / {fmt(loaded.get('B'))} |")
    return out


def scale_line(res):
    sc = res["memory"].get("rete", {}).get("scale")
    if sc:
        return [f"rete-proxy with {sc['services']:,} services and {sc['workloads']:,} workloads in its "
                f"static configuration: idle RSS {sc['rss_kb']:,} KB, listening {sc['ready_s']:.2f} s "
                "after start.", ""]
    why = res["notes"].get("scale") or res["notes"].get("rete") or "not measured"
    return [f"RSS with 1,000 services and 10,000 workloads in the configuration (rete only): n/a ({why}).", ""]


def handshake_section(res):
    out = ["| target (mesh-side listener) | mTLS handshakes/s | errors |", "| --- | --- | --- |"]
    for t in TARGETS:
        h = res["handshakes"].get(t)
        if h:
            out.append(f"| {LABEL[t]} B | {h['per_second']:,.0f} | {h['errors']} |")
    sp = res.get("speed")
    if sp:
        out += ["", "`openssl speed -seconds 3 ecdsap256 ecdhp256` on this machine (one core):", "",
                "| ECDSA P-256 sign/s | ECDSA P-256 verify/s | ECDH P-256 op/s | "
                "server-side handshake limit per core |", "| --- | --- | --- | --- |",
                f"| {fmt(sp.get('ecdsa_sign'))} | {fmt(sp.get('ecdsa_verify'))} | {fmt(sp.get('ecdh'))} | "
                f"{fmt(sp.get('handshake_limit_per_core'))} |"]
    return out


def plots(res, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    files = []
    colors = {"direct": "#555555", "haproxy": "#1f77b4", "nginx": "#2ca02c", "rete": "#d62728"}
    for rate in sorted(res["latency"], key=int):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for t in TARGETS:
            r = res["latency"][rate].get(t)
            if not r or "spectrum" not in r:
                continue
            pts = [(p, v) for p, v in r["spectrum"] if p < 100 and v > 0]
            xs = [-math.log10(1 - p / 100) for p, _ in pts]
            ax.plot(xs, [v / 1000 for _, v in pts], marker="o", ms=3, label=LABEL[t], color=colors[t])
        ticks = [0, 50, 90, 99, 99.9, 99.99, 99.999]
        ax.set_xticks([-math.log10(1 - p / 100) for p in ticks])
        ax.set_xticklabels([f"{p:g}" for p in ticks])
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(f"Latency by percentile at {int(rate):,} req/s (open loop)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        name = f"latency_{rate}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, name), dpi=100)
        plt.close(fig)
        files.append(name)

    present = [t for t in TARGETS if t in res["wrk"]]
    if present:
        fig, ax = plt.subplots(figsize=(7, 4))
        w = 0.38
        xs = range(len(present))
        ax.bar([x - w / 2 for x in xs], [res["wrk"][t]["rps"] for t in present], w, label="wrk HTTP/1.1")
        ax.bar([x + w / 2 for x in xs], [(res["h2load"].get(t) or {}).get("rps", 0) for t in present], w,
               label="h2load h2c")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([LABEL[t] for t in present])
        ax.set_ylabel("requests/s")
        ax.set_title("Maximum throughput (closed loop, 32 connections)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "throughput.png"), dpi=100)
        plt.close(fig)
        files.append("throughput.png")

    present = [t for t in TARGETS if t in res["memory"]]
    if present:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
        w = 0.38
        xs = range(len(present))
        a1.bar([x - w / 2 for x in xs], [res["memory"][t]["idle_kb"]["A"] / 1024 for t in present], w, label="A")
        a1.bar([x + w / 2 for x in xs], [res["memory"][t]["idle_kb"]["B"] / 1024 for t in present], w, label="B")
        a1.axhline(4, color="red", ls="--", label="target 4 MB")
        a1.set_xticks(list(xs))
        a1.set_xticklabels([LABEL[t] for t in present], fontsize=8)
        a1.set_ylabel("MB")
        a1.set_title("Idle RSS per proxy")
        a1.legend(fontsize=8)
        a2.bar(list(xs), [res["memory"][t].get("per_conn_kb") or 0 for t in present])
        a2.axhline(16, color="red", ls="--", label="target 16 KB")
        a2.set_xticks(list(xs))
        a2.set_xticklabels([LABEL[t] for t in present], fontsize=8)
        a2.set_ylabel("KB")
        a2.set_title(f"RSS per idle downstream connection")
        a2.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "memory.png"), dpi=100)
        plt.close(fig)
        files.append("memory.png")
    return files


def profile_table(p):
    return (["| self % | process | object | symbol |", "| --- | --- | --- | --- |"] +
            [f"| {e['pct']:.1f} | {e['comm']} | {e['dso']} | `{e['symbol']}` |" for e in p] + [""])


def profile_section(res):
    """The profiles behind the targets: a fixed rate (latency), wrk (throughput)."""
    profs = res.get("profiles") or {}
    wrk_profs = res.get("profiles_wrk") or {}
    secs = res["config"].get("profile_seconds", 8)
    out = []
    for t in ("rete", "haproxy"):
        p = profs.get(t)
        if t == "rete" and not p:
            out += ["rete: not profiled in this run (" + (res["notes"].get("rete") or "perf unavailable") +
                    "). When the rete pair runs, this section lists its top functions under load, "
                    "the profile behind every target missed.", ""]
            continue
        if not p:
            continue
        out += [f"{LABEL[t]}: `perf record -F 999 -g` on both processes for {secs} s at 2,000 req/s "
                "(the latency targets); top symbols by self time (percent of all samples of the pair).", ""]
        out += profile_table(p)
        if wrk_profs.get(t):
            out += [f"{LABEL[t]} under `wrk -t2 -c32` (the throughput target), the same way:", ""]
            out += profile_table(wrk_profs[t][:12])
    sc = res.get("syscalls") or {}
    if any(v is not None for v in sc.values()):
        out += ["System calls per request, both proxies of the pair together (`perf stat -e "
                "raw_syscalls:sys_enter` while rete-loadgen sends 2,000 req/s for 3 s over 16 keep-alive "
                "connections): " + ", ".join(f"{LABEL[t]} {v:.1f}" for t, v in sc.items() if v is not None) +
                ". Each one is a trip into the kernel, and at this rate most of a proxy's CPU is the "
                "kernel's (task switches and socket wakeups dominate every profile above).", ""]
    return out


def misses_section(res):
    """For every target missed, where the profile says the time or memory goes."""
    out = []
    mem = res["memory"].get("rete") or {}
    hap = res["memory"].get("haproxy") or {}
    bd = mem.get("idle_breakdown")
    if bd:
        out += ["**Idle RSS** (rete A right after start, by mapping, /proc/PID/smaps; HAProxy A for "
                "comparison):", "",
                "| mapping | rete A (kB) | | mapping | HAProxy A (kB) |", "| --- | --- | --- | --- | --- |"]
        hb = hap.get("idle_breakdown") or []
        for i in range(max(len(bd), len(hb))):
            r = bd[i] if i < len(bd) else ["", None]
            h = hb[i] if i < len(hb) else ["", None]
            out.append(f"| {r[0]} | {fmt(r[1])} | | {h[0]} | {fmt(h[1])} |")
        out.append("")
    out += MISS_NOTES + [""]
    return out


# What the profiles above have shown, and what is known about each target
# missed. Written by hand from the profiles of the runs that led here
# (bench/README.md has the method); the tables above are this run's.
MISS_NOTES = [
    "- **Added latency at 1000 req/s** (p50 and p99 within a few microseconds of their goals in recent "
    "runs, on either side): at this rate the pair's added time is mostly kernel round trips, the task "
    "switches and socket wakeups at the top of every profile above. rete already makes fewer system calls "
    "per request than HAProxy (the count above); what is left in user space is per-request formatting "
    "(`snprintf` for request ids and addresses, `vfprintf` in the profile) and a malloc per body chunk "
    "and HTTP/2 stream.",
    "- **Idle RSS**: rete's own memory (heap, anonymous mappings, its binary) is about 1.1 MB; the rest "
    "of VmRSS is resident pages of shared libraries, libcrypto alone about 3.9 MB (the same pages "
    "HAProxy shows), shared by every process of the machine that maps them. Under 4 MB of VmRSS needs "
    "OpenSSL to touch fewer of its pages at start (configuration and error-string loading); not done.",
    "- **Certificates per second**: see the control-plane section: the CA signs on reted's loop thread "
    "at about two thirds of the ECDSA sign+verify ceiling measured beside it.",
]


def changes_section():
    """What the measurements changed (newest first)."""
    return ["Changes made because of what this benchmark measured (commits on main):", ""] + \
        [f"- {c}" for c in CHANGES] + [""]


CHANGES = [
    "**reted: scoped snapshots and incremental recompilation** (`mesh_index.c`, `compiler.c`). The control-"
    "plane profile showed every change recompiling every proxy's whole-mesh snapshot. Snapshots are now "
    "scoped to what a proxy calls and serves (Workload `egress`), shared per scope, and a change recompiles "
    "only the scopes it touches, from an in-memory index with a label table. Route change to 1,000 proxies, "
    "p99: 427 ms -> 88 ms scoped, 135 ms whole mesh.",
    "**reted: memory per proxy** (heaptrack): snapshots share the index's documents (reference counted) "
    "instead of copying them, are sized exactly, drop their encoded message bodies once pushes calm down "
    "(then `malloc_trim`), and no longer keep delta bases alive; config streams send shared bodies in "
    "48 KB chunks instead of a full ciphertext copy per proxy. 1,356 KB -> 38.7 KB per proxy scoped, "
    "28.9 KB whole mesh.",
    "**Loader: endpoints by namespace.** The same profile (reted validates every apply with the proxy's "
    "loader) showed `resolve_services` matching every Service against every Workload of the mesh "
    "(ten million comparisons and 88 MB of arena at 1,000 Services and 10,000 Workloads); it now looks at "
    "the Service's own namespace only. A rete-proxy holding that mesh: 113.6 MB -> 31.3 MB idle RSS.",
    "**Proxy: request metrics resolved once per label set** (the wrk profile had `hash_values` at 6%: 19 "
    "Istio labels hashed four times per request), **pooled exchanges**, and **one write for an HTTP/1.1 "
    "response's head and body** (they went out as two). Pair CPU per request 38 -> 29 us; wrk through "
    "the pair 22.7k -> 33.7k req/s (HAProxy 26-32k in the same runs).",
    "**Proxy: 192 KB less idle RSS** from a `memset` that made a static struct's unused buffers resident.",
    "**reted: one compile per namespace and revision, deltas, shared push bodies** (an earlier round): "
    "reted compiled and JSON-encoded the whole store once per proxy per change and kept a private copy per "
    "proxy, so memory and push time grew with proxies x mesh size.",
    "**Loader: duplicate check by hash** (an earlier round): an O(n^2) `strcmp` over documents of a kind was "
    "57% of reted's CPU while proxies connected (each hello validated the whole store); hellos now validate "
    "the Workload alone.",
    "**h2: connection-window credit on stream close.** With manual flow control, bytes consumed after "
    "their stream closed were never returned as connection window; a busy connection stalled after about "
    "4 MB. h2load through the rete pair: 4.3k -> 41k req/s.",
    "**HTTP/1.1 upstream pool**: the app-side pool closed busy connections past 64 idle, so wrk at 32 "
    "connections churned TCP connections; the idle bound is now 256 and counts idle ones only.",
]


def control_plane_section(res):
    """Issue 3's targets, measured by bench/cpsim.py, scoped and whole mesh."""
    cp = res.get("control_plane")
    if not cp or not cp.get("runs"):
        return ["Not run."]
    runs = cp["runs"]
    first = next(iter(runs.values()))
    c = first.get("config", {})
    n = c.get("proxies", 0)
    out = []
    if cp.get("failed"):
        out += [f"**Problem:** {cp['failed']}.", ""]
    out += [f"reted (one process, its own temporary data dir, `--cert-ttl 24h`) with {c.get('services', 0):,} "
            f"Services and {c.get('workloads', 0):,} Workloads applied through the operator API, then "
            f"{n:,} simulated proxies (bench/cpsim.py, one Python process on {first.get('sim_loop', 'asyncio')} "
            "speaking the real protocol "
            "of docs/control-plane.md): each gets its own certificate from `POST /ca/v1/certificates` with a "
            "join token, opens an mTLS config stream, says hello with its own Workload (registered by "
            f"reted: {n:,} more Workloads) and ACKs every push. Then one HTTPRoute weight change (90/10 -> "
            "50/50) on svc-0: per proxy, the time from the apply response to the arrival (last byte) of the "
            "first push whose version includes it. Two runs: **scoped**, every proxy's Workload names 5 "
            "Services as its egress (svc-0, so that the change reaches every proxy, and 4 others; as "
            "sidecars scoped with Istio's Sidecar resource are), and **whole mesh**, no egress (every proxy "
            "gets every Service and Workload, Istio's and rete's default). reted RSS per proxy = (RSS with "
            "every proxy connected and pushes settled - RSS before the first connected) / proxies.", ""]
    core = cp.get("ca_core") or {}
    rows = []

    def row(what, goal, measured, ok):
        rows.append(f"| {what} | {goal} | {measured} | {verdict(ok)} |")

    for name, r in runs.items():
        ch = r.get("change") or {}
        connected = r.get("connected", n if ch else 0)
        p99 = ch.get("p99_ms")
        row(f"{name}: route change reaches every connected proxy, p99 ({connected:,} of {n:,})", "< 250 ms",
            "n/a" if p99 is None else f"{p99:,.0f} ms (p50 {ch['p50_ms']:,.0f}, max {ch['max_ms']:,.0f})",
            None if p99 is None else (p99 < 250 and connected >= 1000))
        apply_ms = ch.get("apply_cpu_ms")
        stored = (r.get("reted_connected") or {}).get("index_resources") or 0
        row(f"{name}: applying the route (one HTTPRoute, {stored:,.0f} resources stored), reted loop CPU",
            "<= 10 ms",
            "n/a" if apply_ms is None else f"{apply_ms:.1f} ms", None if apply_ms is None else apply_ms <= 10)
        per = r.get("rss_per_proxy_kb")
        row(f"{name}: reted RSS per connected proxy", "<= 50 KB", "n/a" if per is None else f"{per:,.1f} KB",
            None if per is None else per <= 50)
    certs = first.get("certs") or {}
    e2e = certs.get("per_second")
    row("certificates per second, end to end (8 keep-alive TLS connections, Python client)", ">= 8,000",
        "n/a" if e2e is None else f"{e2e:,.0f}/s ({certs.get('per_cpu_second', 0):,.0f} per reted CPU second)",
        None if e2e is None else e2e >= 8000)
    cc = core.get("certs_per_cpu_s")
    row("CA core on one core (`build/tests/unit/test_ca`)", ">= 8,000", "n/a" if cc is None else f"{cc:,}/s",
        None if cc is None else cc >= 8000)
    # The issue states its goal against a sign+verify ceiling of about
    # 13,000/s; this machine's ceiling moves from run to run, so the same
    # goal as a share of the ceiling measured beside it:
    sv = core.get("sign_verify")
    if cc and sv:
        row("CA core as a share of the sign+verify ceiling measured in the same run", ">= 8,000 / 13,000 = 62%",
            f"{100 * cc / sv:.0f}% ({cc:,} of {sv:,}/s)", cc / sv >= 8000 / 13000)
    out += ["| target (issue 3) | goal | measured | verdict |", "| --- | --- | --- | --- |"] + rows + [""]
    sp = res.get("speed") or {}
    if core or sp:
        out += ["ECDSA P-256 ceilings: " + ", ".join(
            x for x in (f"test_ca sign {core['sign']:,}/s, verify {core['verify']:,}/s, one sign + one verify "
                        f"{core['sign_verify']:,}/s" if "sign" in core else "",
                        f"`openssl speed` sign {sp['ecdsa_sign']:,.0f}/s, verify {sp['ecdsa_verify']:,.0f}/s"
                        if "ecdsa_sign" in sp else "") if x) +
                ". An issuance is one CSR signature verification plus one certificate signature.", ""]
    out += ["| reted | scoped RSS / heap in use | whole mesh RSS / heap in use |", "| --- | --- | --- |"]

    def mem(r, key):
        m = r.get(key) or {}
        heap = m.get("heap_bytes")
        return f"{m.get('rss_kb', 0):,} kB / " + ("n/a" if heap is None else f"{heap / 1024:,.0f} kB")
    sc, wm = runs.get("scoped", {}), runs.get("whole mesh", {})
    for label, key in (("idle, empty store", "reted_idle"),
                       ("mesh applied, certificates issued, no proxy connected", "reted_before"),
                       (f"{n:,} proxies connected, pushes settled", "reted_connected")):
        out.append(f"| {label} | {mem(sc, key)} | {mem(wm, key)} |")
    out.append("")
    for name, r in runs.items():
        rc = r.get("reted_connected") or {}
        ch = r.get("change") or {}
        bits = [f"**{name}**: connecting took {r.get('connect_s', 0):.1f} s ({r.get('connect_pushes', 0):,} "
                f"pushes, {r.get('connect_bytes', 0) / 1e6:,.0f} MB received by the simulator)"]
        if rc.get("snapshots") is not None:
            bits.append(f"{rc['snapshots']:,.0f} compiled snapshots cached ({(rc.get('snapshot_bytes') or 0) / 1024:,.0f} "
                        f"kB besides the documents they share with the index of {rc.get('index_resources') or 0:,.0f} "
                        "resources)")
        if ch:
            bits.append(f"the change: {ch['pushes']:,} pushes of {ch['snapshot_bytes'] / 1e3:.1f} kB each "
                        f"(a delta), reted {ch['reted_cpu_s']:.2f} CPU s "
                        f"({ch['reted_cpu_s'] * 1000 / max(1, ch['pushes']):.2f} ms per proxy), of which the "
                        f"apply itself {ch.get('apply_cpu_ms', 0):.1f} ms")
        inc = r.get("connect_incomplete")
        if inc:
            bits.append(f"connecting did not finish: {inc['configured']:,} of {n:,} proxies had their first "
                        f"config after {inc['seconds']:.0f} s; the change was measured on those")
        out += ["; ".join(bits) + ".", ""]
    prof = (runs.get("scoped") or {}).get("profile")
    if prof:
        out += ["reted during the scoped run's change (`perf record -F 999 -g`, from just before the apply "
                "to the last push, so the apply's validation is in it), top symbols by self time:", "",
                "| self % | object | symbol |", "| --- | --- | --- |"]
        out += [f"| {e['pct']:.1f} | {e['dso']} | `{e['symbol']}` |" for e in prof[:12]]
        out.append("")
    out += cp_analysis()
    return out


def cp_analysis():
    """What the profiles of reted showed, and what is left (see bench/README.md)."""
    return ["Where reted's time and memory go (perf with DWARF call graphs, heaptrack):", "",
            "- **A change costs the proxies it touches.** The API and the registry name the keys they change; "
            "an in-memory index of the store is refreshed from them, and only the snapshots that held a "
            "changed resource, or whose scope takes in its new version, are compiled again (from the index "
            "and a label table: no store scan, no JSON parse). A route change recompiles the scopes that "
            "include its parent and pushes each proxy a delta of one document.",
            "- **An apply is validated with the proxy's own loader against what it can break**: the "
            "changed documents and the stored resources that name them, picked from the in-memory index "
            "(`resources.c`, `pick_affected`), not the whole store; reted's own histogram "
            "`rete_reted_apply_cpu_seconds` measures it (the 'applying the route' row). Most of a change's "
            "CPU is now the push: compiling the touched scopes and writing 1,000 deltas through TLS.",
            "- **Memory per proxy** is one config stream (OpenSSL's session and connection state, about 20 KB "
            "with released buffers), the proxy record, and its snapshot's references; documents are shared "
            "by the index and every snapshot, whole-message bodies are encoded on demand and dropped once "
            "pushes calm down, and glibc is asked to give freed memory back then.",
            "- **Certificates** are signed on the loop thread; ECDSA verification of the CSR and the signature "
            "are about two thirds of an issuance, and the Python client shares the two cores. 8,000/s end to "
            "end needs signing on worker threads (the CA is read-only between rotations); not done.", ""]


def transparent_section(res):
    t = res.get("transparent")
    if not t:
        return ["Not measured in this run (bench/run.py --only transparent measures it alone).", ""]
    if "skipped" in t or "failed" in t:
        return [f"Not measured: {t.get('skipped') or t.get('failed')}.", ""]
    out = [f"The rete pair in two network namespaces on a bridge (examples/nettopo.py), `rete-proxy init` "
           f"in the client's; rete-loadgen in the client's namespace at {t['rate']:,} requests/s, "
           f"{res['config']['connections']} connections, the two paths in interleaved slices: **explicit** "
           "to A's outbound listener (127.0.0.1:15001, as the rete scenario), **transparent** to the echo "
           "Service's clusterIP:8080, which init's nft rule redirects to 15001 (A recovers the original "
           "destination with SO_ORIGINAL_DST). Both then cross the same veth pair and bridge, mTLS to B.", "",
           "| path | p50 (us) | p90 | p99 | p99.9 | max | ok | errors | non-2xx |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in ("explicit", "transparent"):
        r = t[k]
        out.append(f"| {k} | {r['p50']} | {r['p90']} | {r['p99']} | {r['p999']} | {r['max']} | {r['ok']:,} | "
                   f"{r['errors']} | {r['non2xx']} |")
    ok = t["p50_delta_us"] <= 10
    out += ["", f"Interception adds **{t['p50_delta_us']:+} us at p50** ({t['p99_delta_us']:+} us at p99; the "
            "p99 of a shared 2-core machine moves by more than that between slices). Issue 10's goal: at most "
            f"+10 us at p50: {verdict(ok)}"
            + (f" (load average {t['loadavg']} on the machine at the end of the run: other work shared "
               "its cores, so one run cannot resolve a few microseconds: repeat on an idle machine)"
               if t.get("loadavg", 0) > 1.5
               else "") + ".", ""]
    return out


TRANSPARENT_HEADING = "## Transparent interception (issue 10)"
RETRY_COST_HEADING = "## What a route that may retry costs (issue 11)"


def retry_cost_section(res):
    t = res.get("retry_cost")
    if not t:
        return ["Not measured in this run (bench/run.py --only retry-cost measures it alone).", ""]
    if "failed" in t:
        return [f"Not measured: {t['failed']}.", ""]
    out = [f"Two client sidecars in front of the same sidecar B and rete-echo, loaded in interleaved slices "
           f"at {t['rate']:,} requests/s, {res['config']['connections']} connections: **plain** is the rete "
           "pair's A; **retry** is the same A with an HTTPRoute whose rule has `retry` (2 attempts) and "
           "`timeouts` (request 10 s, backendRequest 5 s), so every request gets a try state, a per-try "
           "deadline, a retry-budget deposit and a replay copy of its (empty) body. Every request succeeds "
           "on its first try. CPU is A's (user + system) per 1000 requests.", "",
           "| client sidecar | p50 (us) | p90 | p99 | p99.9 | A's CPU per 1000 requests (ms) | ok | errors |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in ("plain", "retry"):
        r = t[k]
        out.append(f"| {k} | {r['p50']} | {r['p90']} | {r['p99']} | {r['p999']} | {r['cpu_ms_per_1000']} | "
                   f"{r['ok']:,} | {r['errors']} |")
    out += ["", f"A route that may retry costs **{t['p50_delta_us']:+} us at p50** and **{t['cpu_delta_pct']:+}% "
            "CPU** per request that succeeds first time (issue 11: no more than today, within noise; load "
            f"average {t.get('loadavg', 'n/a')} at the end of the run).", ""]
    return out




def splice_scenario(text, key, res):
    """`text` (a REPORT.md) with scenario `key`'s section replaced by this
    result's, or inserted before "## CPU per 1000 requests" (else at the end)."""
    heading, body = SECTIONS[key]
    section = "\n".join([heading, ""] + body(res)) + "\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        end = len(text) if end < 0 else end + 1
        return text[:start] + section + text[end:]
    at = text.find("## CPU per 1000 requests\n")
    if at < 0:
        return text + ("\n" if text and not text.endswith("\n") else "") + section
    return text[:at] + section + text[at:]


def tracing_section(res):
    t = res.get("tracing")
    if not t:
        return ["Not measured in this run (bench/run.py --only tracing measures it alone).", ""]
    if "failed" in t:
        return [f"Not measured: {t['failed']}.", ""]
    lv = t["levels"]
    if "ratio" not in t:  # a results.json from before per-slice ratios
        return ["Measured by an older bench/run.py: run `bench/run.py --only tracing` again.", ""]
    rt = t["ratio"]
    out = [f"Four rete pairs side by side, alike but for the MeshConfig both proxies of a pair get: no "
           "tracing (**off**: no collector) twice, **off** and **off2** (an A/A control: two identical pairs, "
           "whose ratio is the measurement's own noise), head sampling **1%** (the default rate) and "
           "**100%**, OTLP/HTTP JSON to one discard collector (a Python http.server in bench/run.py; its CPU is "
           f"not counted). One rete-loadgen per pair at {t['rate']:,} requests/s, {res['config']['connections']} "
           f"connections, the four pairs loaded at once in {t['slices']} slices of {t['slice_s']:g} s (at once: "
           "whatever else the shared machine runs lands on every level alike). CPU: the on-CPU time of every thread of A and B (/proc/PID/task/*/schedstat, nanoseconds) "
           "per 1000 answered requests, the exporter thread included (and shown alone). A level's cost is "
           "its ratio to **off** in the same slice: the median and the range over the slices are the "
           "figures to read; pooled is total CPU over total CPU.", "",
           "| sampling | p50 (us) | p99 | CPU per 1000 req (ms) A / B / sum | of which exporter thread | "
           "vs off: per-slice median (min to max) | pooled | spans exported | dropped | failed | ok | errors |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in lv:
        r = lv[k]
        c = r["cpu"]
        q = rt.get(k)
        med = (f"{(q['median'] - 1) * 100:+.1f}% ({(q['min'] - 1) * 100:+.1f}% to {(q['max'] - 1) * 100:+.1f}%)"
               if q and "median" in q else "")
        pooled = f"{(q['pooled'] - 1) * 100:+.1f}%" if q else ""
        out.append(f"| {k} | {r['p50']} | {r['p99']} | {c['A']:.1f} / {c['B']:.1f} / {c['sum']:.1f} | "
                   f"{c.get('exporter', 0):.2f} | {med} | {pooled} | {r['spans']['exported']:,} | "
                   f"{r['spans']['dropped']} | {r['spans']['failed']} | {r['ok']:,} | {r['errors']} |")
    out += ["", "Per slice, CPU of A + B per 1000 requests (ms):", "",
            "| slice | " + " | ".join(lv) + " | 1%/off | off2/off |",
            "| --- " * (len(lv) + 3) + "|"]
    for i, s in enumerate(t["per_slice"]):
        off = s.get("off") or 1e-9
        out.append(f"| {i + 1} | " + " | ".join(f"{s[k]:.1f}" for k in lv) +
                   f" | {s['1%'] / off:.3f} | {s['off2'] / off:.3f} |")
    one, aa, full = rt["1%"], rt["off2"], rt["100%"]
    c100, off = lv["100%"]["cpu"]["sum"], lv["off"]["cpu"]["sum"]
    out += ["", f"At 1%: **{(one['median'] - 1) * 100:+.1f}%** CPU per request against off (median of "
            f"{one['n']} slices; range {(one['min'] - 1) * 100:+.1f}% to {(one['max'] - 1) * 100:+.1f}%). The A/A "
            f"control off2/off: {(aa['median'] - 1) * 100:+.1f}% (range {(aa['min'] - 1) * 100:+.1f}% to "
            f"{(aa['max'] - 1) * 100:+.1f}%): two identical pairs differ by that much on this machine. "
            f"Issue 12 asks for 1% within 3% of no tracing. At 100% every request makes two spans (about "
            f"1.6 KiB copied into the exporter's ring per span, then formatted as JSON and POSTed in batches "
            f"by the exporter thread): {(full['median'] - 1) * 100:+.1f}% per slice at the median "
            f"({(c100 - off) / 2:.1f} us of CPU per span, pooled), p50 {lv['100%']['p50'] - lv['off']['p50']:+} us, "
            f"p99 {lv['100%']['p99'] - lv['off']['p99']:+} us." +
            (f" Load average {t['loadavg']} at the end: other work shared the cores." if t.get("loadavg", 0) > 1.5
             else ""), ""]
    runs = [t] + t.get("earlier", [])
    if len(runs) > 1:
        def pct(q, k):
            return f"{(q[k] - 1) * 100:+.1f}%" if q and k in q else "n/a"
        out += ["Run to run (`bench/run.py --only tracing`, the latest first): the per-slice median and range "
                "of each ratio.", "",
                "| run | load average at the end | 1%/off median (min to max) | off2/off (A/A) median (min to max) | "
                "100%/off median |", "| --- | --- | --- | --- | --- |"]
        for r in runs:
            q1, qa, q100 = (r["ratio"].get(k) for k in ("1%", "off2", "100%"))
            out.append(f"| {r.get('when', '?')} | {r.get('loadavg', '?')} | {pct(q1, 'median')} ({pct(q1, 'min')} to "
                       f"{pct(q1, 'max')}) | {pct(qa, 'median')} ({pct(qa, 'min')} to {pct(qa, 'max')}) | "
                       f"{pct(q100, 'median')} |")
        out.append("")
    pr = t.get("profile_1pct")
    if pr:
        fn = ", ".join(f"`{k}` {v:.2f}%" for k, v in sorted(pr["functions"].items(), key=lambda kv: -kv[1]))
        out += [f"Read directly rather than as a difference: `perf record` (cpu-clock, {pr['seconds']} s, "
                f"{pr['samples']:,} samples) on the 1% pair under the same load puts **{pr['code_pct']:.2f}%** of "
                f"its CPU in the tracing code's own functions on the worker threads ({fn or 'none sampled'}; "
                "self time: the libc a sampled request calls is not in it) and "
                f"**{pr['exporter_pct']:.2f}%** in the exporter thread; the exporter thread's CPU per level is "
                "the table's column (off and off2 have an idle one too: it exists from start-up).", ""]
    return out


TRACING_HEADING = "## Tracing cost (issue 12)"

# The scenarios bench/run.py --only runs alone: results.json key -> their
# REPORT.md section (splice_scenario).
SECTIONS = {"transparent": (TRANSPARENT_HEADING, transparent_section),
            "retry_cost": (RETRY_COST_HEADING, retry_cost_section),
            "tracing": (TRACING_HEADING, tracing_section)}


def loadavg_summary(res):
    la = sorted(res.get("loadavg", []))
    if not la:
        return "n/a"
    return f"min {la[0]:.1f}, median {la[len(la) // 2]:.1f}, max {la[-1]:.1f}"


def write(res, outdir):
    m = res.get("machine", {})
    c = res["config"]
    notes = res.get("notes", {})
    pngs = plots(res, outdir)
    L = ["# rete benchmark report", "",
         f"Written by `make bench` (bench/run.py) on {res.get('when_utc') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
         f"the run took {res.get('elapsed_s', 0):.0f} s. Every figure below comes from that one run, "
         "side by side: same machine, certificates, backend and load. How to read each figure: "
         "bench/README.md.", ""]
    la = res.get("loadavg", [])
    if la and max(la) > (m.get("cores") or 1):
        L += [f"**Warning: the machine was busy with other work during this run** (1-minute load "
              f"average up to {max(la):.1f} on {m.get('cores')} cores when a measurement started). "
              "Every target was measured under the same conditions, interleaved, but absolute "
              "figures, tails and throughput are depressed and noisy; rerun `make bench` on a quiet "
              "machine for figures to publish.", ""]
    if res.get("failures"):
        L += ["**Problems during this run:**", ""] + [f"- {f}" for f in res["failures"]] + [""]
    L += ["## Setup", "",
          f"- Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('mem_gb', '?')} GB, "
          f"Linux {m.get('kernel', '?')}.",
          f"- Versions: {m.get('haproxy', '?')}; {m.get('nginx', '?')}; {m.get('openssl', '?')}; "
          f"{m.get('wrk', '?')}; {m.get('h2load', '?')}.",
          f"- 1-minute load average when each measurement started: {loadavg_summary(res)} (other work "
          "on the machine shows up as noise, mostly in the tail percentiles).",
          "- **No CPU pinning.** The backend, both proxies of the pair under test, the idle "
          "processes of the other pairs and the load generator all share the machine's "
          f"{m.get('cores', '?')} cores, as they would on a small node; proxies with more work to do "
          "compete with the load generator for CPU, which shows up in their latency.",
          f"- Backend: {notes.get('backend', '?')}, on 127.0.0.10:8080.",
          f"- Worker threads: {c['threads']} per proxy (HAProxy `nbthread`, nginx one process "
          "with `master_process off`, rete `--concurrency` default 1).",
          f"- All requests: `GET /` with `Host: {c['host']}`, HTTP/1.1 keep-alive from the client.",
          "- Certificates: one ECDSA P-256 CA made with the openssl CLI; client leaf "
          "`spiffe://cluster.local/ns/bench/sa/client`, server leaf `spiffe://cluster.local/ns/bench/sa/echo` "
          "(also DNS `echo.bench`, which HAProxy and nginx verify; they do not check SPIFFE URIs).", "",
          "| target | path | mesh hop |", "| --- | --- | --- |",
          "| direct | loadgen -> echo 127.0.0.10:8080 | none |",
          "| HAProxy pair | loadgen -> HAProxy A 127.0.0.21:10000 -> HAProxy B 127.0.0.22:15008 -> echo | "
          "TLS 1.3, client certificate required, **HTTP/2 (ALPN h2)**, `http-reuse always` |",
          "| nginx pair | loadgen -> nginx A 127.0.0.31:10000 -> nginx B 127.0.0.32:15008 -> echo | "
          "TLS 1.3, `ssl_verify_client on`, **HTTP/1.1** over TLS with a keep-alive upstream pool "
          "(nginx cannot speak HTTP/2 to an upstream) |",
          "| rete pair | loadgen -> rete-proxy A 127.0.0.11:15001 (outbound) -> rete-proxy B "
          "127.0.0.10:15008 -> echo | mesh mTLS 1.3, ALPN h2, SPIFFE IDs checked |", ""]
    if "rete" in notes:
        L += [f"**rete:** {notes['rete']}.", ""]
    L += ["Settings:", "",
          f"- Latency: rete-loadgen, open loop, constant rate {', '.join(str(r) for r in c['rates'])} req/s, "
          f"{c['duration']} s per target and rate, as {c.get('slices', 1)} interleaved slices "
          f"(direct, HAProxy, nginx, rete, direct, ...) whose histograms are merged, so outside "
          f"load hits every target alike; {c['connections']} keep-alive connections, latency from the "
          f"intended send time; each target warmed up {c['warmup']} s at 1000 req/s first (discarded).",
          f"- Throughput: `wrk -t2 -c32 -d{c['wrk_duration']}s`; `h2load -D {c['h2_duration']} -c32 -t2 -m10` "
          "with HTTP/2 prior knowledge (h2c) to the front proxy's h2c port (HAProxy `proto h2`, nginx "
          "`listen ... http2`, rete's outbound listener detects the preface).",
          f"- Memory: VmRSS from /proc/PID/status right after start-up (idle, before any request), then "
          f"of the front proxy A after one request (before) and 1 s after opening {c['idle_conns']} "
          "keep-alive connections to it, each having carried one request (with); per connection = "
          f"(with - before) / {c['idle_conns']}. Measured before any load run, so no pool is pre-filled.",
          f"- mTLS handshakes: a Python ssl client (2 threads, {c['hs_seconds']} s) opening new TCP+TLS 1.3 "
          "connections with a client certificate and no session resumption against the B proxy's mesh "
          "listener. Python-limited: the client does about as much crypto as the server and shares the "
          "same cores, so these are lower bounds on what the listeners can do.", "",
          "## Targets from issue 2", ""] + targets_table(res) + [""]
    L += ["## Added latency at fixed rates", ""] + latency_section(res)
    L += [f"![latency]({p})" for p in pngs if p.startswith("latency_")] + [""]
    if res.get("h2latency"):
        L += ["## HTTP/2 latency at a fixed rate", ""] + h2_latency_section(res) + [""]
    if res.get("grpclatency") or res.get("notes", {}).get("grpc"):
        L += ["## gRPC latency at a fixed rate", ""] + grpc_latency_section(res) + [""]
    L += [TRANSPARENT_HEADING, ""] + transparent_section(res)
    L += [RETRY_COST_HEADING, ""] + retry_cost_section(res)
    L += [TRACING_HEADING, ""] + tracing_section(res)
    L += ["## CPU per 1000 requests", ""] + cpu_section(res) + [""]
    L += ["## Maximum throughput", ""] + throughput_section(res) + [""]
    if "throughput.png" in pngs:
        L += ["![throughput](throughput.png)", ""]
    L += ["## Memory", ""] + memory_section(res) + [""] + scale_line(res)
    if "memory.png" in pngs:
        L += ["![memory](memory.png)", ""]
    L += ["## mTLS handshakes", ""] + handshake_section(res) + [""]
    L += ["## Where the time goes", ""] + profile_section(res)
    L += ["## The targets missed", ""] + misses_section(res)
    L += ["## What changed as a result", ""] + changes_section()
    L += ["## Control plane scale", ""] + control_plane_section(res)
    L += hand_sections(outdir)
    L += soak_section(outdir)
    if not pngs:
        L += ["(No plots: python3-matplotlib is not installed.)", ""]
    with open(os.path.join(outdir, "REPORT.md"), "w") as f:
        f.write("\n".join(L))


def hand_sections(outdir):
    """The sections measured by hand, not by `make bench` (cpsim at scale,
    on etcd, before/after comparisons): bench/report.d/*.md in name order,
    kept across runs. The first may continue "Control plane scale" with a
    ### subsection."""
    d = os.path.join(outdir, "report.d")
    if not os.path.isdir(d):
        return []
    L = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".md"):
            with open(os.path.join(d, name)) as f:
                L += f.read().rstrip("\n").split("\n") + [""]
    return L


def soak_section(outdir):
    """The soak section (make soak, bench/soak.py) from its soak.json, kept
    across `make bench` runs; nothing when no soak has run."""
    path = os.path.join(outdir, "soak.json")
    if not os.path.exists(path):
        return []
    import soak
    with open(path) as f:
        return soak.report_section(json.load(f)).split("\n")


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results.json")
    with open(path) as f:
        write(json.load(f), os.path.dirname(os.path.abspath(path)))
