#!/usr/bin/env python3
"""The layer rule of src/, written once (docs/architecture.md, "Layers").

Every directory of src/ is a layer with a rank; a file may include headers of
its own layer and of layers below it, never of a layer above it. Among files
of different layers the rule alone rules out a cycle; the check also refuses
an include cycle among headers of one layer. Headers are included by bare
name (meson puts every layer directory on the include path), so a name is
resolved to the one file of src/ that carries it. Exits 1 on a violation.
"""
import collections
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"

# Directory (relative to src/) -> rank. Higher may include lower, not the
# other way. Programs (control, ctl) sit above common and beside each other.
LAYERS = {
    "common": 0,
    "proxy/policy": 1,   # decisions without I/O: authorization, load balancing
    "proxy/init": 1,     # `rete-proxy init`: interception rules (nft/iptables), common only
    "proxy/core": 2,     # workers, generations, connections, the exchange, codec table
    "proxy/codec": 3,    # wire protocols, reached through the codec table
    "proxy/http": 4,     # the request path: dispatch, telemetry, admin
    "proxy/dns": 4,      # the sidecar's DNS, on the main loop (reads the proxy's snapshot)
    "proxy/agent": 5,    # the control-plane client
    "proxy": 6,          # main.c: wiring only
    "control": 1,
    "ctl": 1,
}
# Layers of equal rank in different programs must not include each other.
PROGRAM = {"control": "control", "ctl": "ctl"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(path):
    rel = path.parent.relative_to(ROOT).as_posix()
    if rel not in LAYERS:
        raise SystemExit(f"check_layers: {path.relative_to(ROOT.parent)} is in no layer; "
                         f"add {rel!r} to LAYERS in tests/check_layers.py")
    return rel


def main():
    files = sorted(p for p in ROOT.rglob("*") if p.suffix in (".c", ".h"))
    by_name = collections.defaultdict(list)
    for p in files:
        by_name[p.name].append(p)
    errors = []
    edges = collections.defaultdict(set)
    for p in files:
        src_layer = layer_of(p)
        for name in INCLUDE.findall(p.read_text(errors="replace")):
            cands = by_name.get(pathlib.PurePath(name).name, [])
            # a header of the includer's own directory wins (the compiler's rule)
            same = [c for c in cands if c.parent == p.parent]
            targets = same or cands
            if not targets:
                continue  # a system or generated header
            if len(targets) > 1:
                errors.append(f"{p.relative_to(ROOT.parent)}: {name} is ambiguous: "
                              + ", ".join(str(t.relative_to(ROOT.parent)) for t in targets))
                continue
            t = targets[0]
            dst_layer = layer_of(t)
            edges[p].add(t)
            up = LAYERS[dst_layer] > LAYERS[src_layer]
            sideways = (LAYERS[dst_layer] == LAYERS[src_layer] and dst_layer != src_layer)
            other_program = (PROGRAM.get(dst_layer) and PROGRAM.get(src_layer) != PROGRAM.get(dst_layer))
            if up or sideways or other_program:
                errors.append(f"{p.relative_to(ROOT.parent)} ({src_layer}) includes {name} "
                              f"({dst_layer}): a layer may include only its own and lower layers")
    # include cycles (headers including each other, in any layer)
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if m == n:
                continue
            if state.get(m) == 1:
                cyc = stack[stack.index(m):] + [m]
                errors.append("include cycle: " + " -> ".join(str(x.relative_to(ROOT.parent)) for x in cyc))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for p in files:
        if p not in state:
            visit(p)
    for e in errors:
        print("check_layers:", e, file=sys.stderr)
    if errors:
        return 1
    print(f"check_layers: {len(files)} files, {sum(len(v) for v in edges.values())} includes, "
          f"no include goes up a layer, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
