#!/usr/bin/python3
"""Every Python module and external command the tests, the benchmark and the
demo use must come from a Debian package that `make deps` installs.

A machine where the right package happens to be installed through something
else passes the suite here and fails on a fresh Debian; this check closes
that gap. It parses the Python files of tests/, bench/ and examples/ (it
runs nothing of them) and collects

  - the modules they import (the standard library and the project's own
    modules excepted), and
  - the commands they run (and those the Makefile runs that no Python file
    names: MAKEFILE_COMMANDS): the first element of a list passed to
    subprocess.run/Popen/check_output/..., start_process(), the bench's
    run()/procs.start() (also the first after a starred prefix, as in
    [*host.cmd([]), "tcpdump", ...] run in a network namespace), a name
    given to shutil.which(), and module-level constants holding either;

then finds each module's file (importlib, as /usr/bin/python3 sees it) and
each command's path (PATH), asks `dpkg -S` which package ships it, and fails
naming every one whose package is not in the Makefile's DEB_PACKAGES, not a
hard dependency of one (installed with it), and not Essential (present on
every Debian system: bash, coreutils, util-linux...).
A module or command that is not installed at all fails too.

    tests/check_deps.py          exit 1 and a list when something is missing
    tests/check_deps.py -v       also print what maps to what
"""
import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCAN_DIRS = ["tests", "bench", "examples"]
# Calls whose first argument's first element is a command.
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "start_process", "start"}
# Commands the Makefile itself runs that no Python file names (make
# dashboard, make dashboard-check: npm ci, then node build.mjs).
MAKEFILE_COMMANDS = ["node", "npm"]
# Not commands: shell words that name no program of ours to install.
NOT_COMMANDS = {"", "-", "sudo"}


def deb_packages():
    """DEB_PACKAGES of the Makefile (a `:=` assignment with continuation lines)."""
    text = open(os.path.join(ROOT, "Makefile")).read()
    m = re.search(r"^DEB_PACKAGES\s*:?=\s*((?:.*\\\n)*.*)$", text, re.M)
    if not m:
        sys.exit("check_deps: no DEB_PACKAGES in the Makefile")
    return set(m.group(1).replace("\\\n", " ").split())


def python_files():
    for d in SCAN_DIRS:
        for dirpath, dirnames, files in os.walk(os.path.join(ROOT, d)):
            dirnames[:] = [x for x in dirnames if not x.startswith(".") and x != "__pycache__"]
            for f in files:
                if f.endswith(".py"):
                    yield os.path.join(dirpath, f)


def _const_str(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _which_arg(node):
    """"x" for shutil.which("x") (or which("x")), else None."""
    if isinstance(node, ast.Call):
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "which" and isinstance(f.value, ast.Name)
                and f.value.id == "shutil" and node.args):
            return _const_str(node.args[0])
    return None


def _command_of(node, consts):
    """The command named by an expression: a string, a module constant, or
    shutil.which("x") (possibly `... or "x"`)."""
    s = _const_str(node) or _which_arg(node)
    if s:
        return s
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            s = _command_of(v, consts)
            if s:
                return s
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    return None


def scan(path):
    """(modules, commands) used by one file."""
    tree = ast.parse(open(path).read(), path)
    modules, commands = set(), set()
    consts = {}
    for node in tree.body:  # module-level NAME = "cmd" / shutil.which("cmd")
        if isinstance(node, ast.Assign):
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for t, v in zip(targets, values):
                if isinstance(t, ast.Name):
                    c = _command_of(v, {})
                    if c:
                        consts[t.id] = c
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call):
            # importlib.import_module("x") / pytest.importorskip("x")
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "importorskip") and node.args and _const_str(node.args[0]):
                modules.add(_const_str(node.args[0]).split(".")[0])
            w = _which_arg(node)
            if w:
                commands.add(w)
            if name in RUNNERS:
                for a in node.args[:2]:
                    if isinstance(a, ast.List) and a.elts:
                        c = _command_of(a.elts[0], consts)
                        if c:
                            commands.add(c)
                        # [*prefix, "cmd", ...]: a command run through a
                        # prefix (ip netns exec NS, setpriv ...) is used too
                        elts = a.elts
                        while elts and isinstance(elts[0], ast.Starred):
                            elts = elts[1:]
                        if elts is not a.elts and elts:
                            c = _command_of(elts[0], consts)
                            if c:
                                commands.add(c)
    # A relative path (./x) or a build product is ours, not a package's.
    return modules, {c for c in commands
                     if c not in NOT_COMMANDS and ("/" not in c or c.startswith(("/usr/", "/bin/")))}


def local_modules():
    """The project's own modules: every .py file and package under the scanned dirs."""
    names = set()
    for p in python_files():
        names.add(os.path.splitext(os.path.basename(p))[0])
    return names


def dpkg_owner(path):
    """Packages shipping `path` (trying the /usr-merged twin too), or set()."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib/", "/lib/")):
            if p.startswith(a):
                candidates.append(b + p[len(a):])
            elif p.startswith(b):
                candidates.append(a + p[len(b):])
    for p in candidates:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            pkgs = set()
            for line in r.stdout.splitlines():
                if line.startswith("diversion ") or ": " not in line:
                    continue
                for pk in line.split(": ", 1)[0].split(", "):
                    pkgs.add(pk.split(":")[0])  # drop :amd64
            if pkgs:
                return pkgs
    return set()


def essential(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", pkg], capture_output=True, text=True)
    return r.stdout.strip() == "yes"


def hard_dependencies(pkgs):
    """Packages a listed package Depends or Pre-Depends on: apt installs them
    with it on any machine (python3 brings python3-minimal, which ships
    /usr/bin/python3)."""
    deps = set()
    for p in pkgs:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p],
                           capture_output=True, text=True)
        for alt in r.stdout.split(","):
            for d in alt.split("|"):
                d = d.strip().split(" ")[0].split(":")[0]
                if d:
                    deps.add(d)
    return deps


def module_path(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return spec.origin
    locs = list(spec.submodule_search_locations or [])
    return locs[0] if locs else None


def main():
    verbose = "-v" in sys.argv
    listed = deb_packages()
    allowed = listed | hard_dependencies(listed)
    stdlib = set(sys.stdlib_module_names)
    local = local_modules()
    modules, commands = {}, {}
    for p in python_files():
        mods, cmds = scan(p)
        rel = os.path.relpath(p, ROOT)
        for m in mods - stdlib - local - {"__future__"}:
            modules.setdefault(m, []).append(rel)
        for c in cmds:
            commands.setdefault(c, []).append(rel)
    for c in MAKEFILE_COMMANDS:
        commands.setdefault(c, []).append("Makefile")

    problems = []

    def judge(kind, what, path, users):
        if path is None:
            problems.append(f"{kind} {what} (used by {', '.join(sorted(set(users)))}) is not installed")
            return
        pkgs = dpkg_owner(path)
        ok = {p for p in pkgs if p in allowed or essential(p)}
        if verbose:
            print(f"{kind} {what}: {path} -> {', '.join(sorted(pkgs)) or '?'}"
                  f"{'' if ok else '  MISSING'}")
        if not pkgs:
            problems.append(f"{kind} {what} ({path}) belongs to no Debian package")
        elif not ok:
            problems.append(f"{kind} {what} (used by {', '.join(sorted(set(users)))}) comes from "
                            f"{' or '.join(sorted(pkgs))}, which is not in the Makefile's DEB_PACKAGES")

    for m, users in sorted(modules.items()):
        judge("python module", m, module_path(m), users)
    for c, users in sorted(commands.items()):
        judge("command", c, c if c.startswith("/") and os.path.exists(c) else shutil.which(c), users)
    for p in problems:
        print(f"check_deps: {p}", file=sys.stderr)
    if problems:
        print("check_deps: add the packages to DEB_PACKAGES in the Makefile (make deps installs them)",
              file=sys.stderr)
        return 1
    if verbose:
        print(f"check_deps: {len(modules)} modules and {len(commands)} commands, all from listed packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
