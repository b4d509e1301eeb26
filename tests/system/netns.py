"""Hosts as network namespaces, for the tests of transparent interception.

A Topology is a set of network namespaces this test creates: one "switch"
namespace holding a bridge, and one namespace per host, each joined to the
bridge by a veth pair (eth0 in the host, a port of the bridge in the switch).
Every address comes from SUBNET (a private range routed nowhere here), each
host has its loopback up and a route to the subnet only: no default route,
no link to the namespace the tests run in, so no packet can leave the
topology (Topology.assert_isolated checks it, and every test calls it).

Names are unique per process (the xdist worker's pid and a counter), so
parallel workers and concurrent runs never share a namespace; interface
names live inside the namespaces and need no such care. The `topology`
fixture tears everything down when the test ends, failed or not: processes
started in the namespaces first, then the namespaces.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), as CI and `make test` have; a
test that uses the fixture fails without it (a skip would pass on every
machine that cannot run it: docs/testing.md)."""
import itertools
import os
import shutil
import subprocess

import pytest

from helpers import start_process, stop_process

SUBNET = "10.250.0"  # 10.250.0.0/24: private, and the tests add no route to it outside the topology
SUBNET6 = "fd00:250::"  # fd00:250::/64: unique local addresses, likewise
_seq = itertools.count()


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Host:
    """One network namespace on the bridge: `ns` (its name), `addr` (IPv4)
    and `addr6` (IPv6)."""

    def __init__(self, topo, name, index):
        self.topo = topo
        self.name = name
        self.ns = f"{topo.prefix}-{name}"
        self.addr = f"{SUBNET}.{index}"
        self.addr6 = f"{SUBNET6}{index:x}"

    def cmd(self, args):
        """`args` as run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *args]

    def run(self, args, check=False, timeout=30, **kw):
        """Run `args` in the namespace to completion; a CompletedProcess with text output."""
        return subprocess.run(self.cmd(args), check=check, timeout=timeout, capture_output=True,
                              text=True, **kw)

    def resolv_conf(self, text):
        """/etc/resolv.conf as the host's processes see it: `ip netns exec`
        bind-mounts /etc/netns/<ns>/resolv.conf over it (ip-netns(8)); the
        file goes with the topology."""
        d = f"/etc/netns/{self.ns}"
        os.makedirs(d, exist_ok=True)
        self.topo._etc.append(d)
        with open(f"{d}/resolv.conf", "w") as f:
            f.write(text)

    def start(self, args, ready_regex, timeout=15, **kw):
        """helpers.start_process for `args` in the namespace; stopped by Topology.close."""
        proc = start_process(self.cmd(args), ready_regex, timeout=timeout, **kw)
        self.topo.procs.append(proc)
        return proc


class Topology:
    def __init__(self):
        self.prefix = f"rete{os.getpid()}x{next(_seq)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts = []
        self.procs = []
        self._made = []
        self._etc = []  # /etc/netns/<ns> directories written (Host.resolv_conf)
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except subprocess.CalledProcessError:
            self.close()  # the fixture never sees a half-built topology
            raise

    def add_host(self, name):
        index = len(self.hosts) + 2  # .1 is left to nobody: no gateway exists
        h = Host(self, name, index)
        _ip("netns", "add", h.ns)
        self._made.append(h.ns)
        port = f"p{index}"
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
        _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        _ip("-n", h.ns, "link", "set", "lo", "up")
        _ip("-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
        _ip("-n", h.ns, "addr", "add", f"{h.addr6}/64", "dev", "eth0", "nodad")
        _ip("-n", h.ns, "link", "set", "eth0", "up")
        self.hosts.append(h)
        return h

    def assert_isolated(self):
        """No host has a route beyond the subnet (no default route, none to
        the outside), and no interface of the topology is in the namespace
        the tests run in: nothing sent can leave."""
        for h in self.hosts:
            for fam in ("-4", "-6"):
                routes = _ip("-n", h.ns, fam, "route", "show").stdout
                assert "default" not in routes, f"{h.name} has a default route:\n{routes}"
            out = _ip("-n", h.ns, "route", "get", "192.0.2.1", check=False)
            assert out.returncode != 0 and "unreachable" in out.stderr, \
                f"{h.name} can route out of the topology: {out.stdout}{out.stderr}"
            links = _ip("-n", h.ns, "-o", "link", "show").stdout
            assert sorted(l.split(":")[1].strip().split("@")[0] for l in links.splitlines()) == ["eth0", "lo"]
        sw = _ip("-n", self.switch, "-o", "link", "show").stdout
        for line in sw.splitlines():
            name = line.split(":")[1].strip()
            assert name in ("lo", "br0") or "@" in name, f"switch has an unexpected link {name}"

    def close(self):
        """Stop the processes started in the topology, then delete its
        namespaces (every one, even when one fails)."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    stop_process(p)
                except RuntimeError:
                    pass  # killed by stop_process; the test's reaper reports the log
        errors = []
        for ns in reversed(self._made):
            r = _ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        self._made.clear()
        for d in self._etc:
            shutil.rmtree(d, ignore_errors=True)
        self._etc.clear()
        assert not errors, "\n".join(errors)


def have_netns():
    return os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0


@pytest.fixture
def topology():
    """A fresh Topology, torn down at the end of the test whatever happened."""
    if not have_netns():
        pytest.fail("network namespace tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN): run make test as root")
    topo = Topology()
    try:
        yield topo
    finally:
        topo.close()
