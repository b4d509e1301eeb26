"""Hosts as network namespaces, for the tests of transparent interception.

The topology itself is examples/nettopo.py (make demo and the bench build
the same); this module adds the test's side. A Topology is a set of network
namespaces this test creates: one "switch"
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
import sys

import pytest

from helpers import REPO, start_process, stop_process

sys.path.insert(0, str(REPO / "examples"))
import nettopo  # noqa: E402 (the topology itself, shared with make demo and the bench)

SUBNET, SUBNET6 = nettopo.SUBNET, nettopo.SUBNET6  # 10.250.0.0/24, fd00:250::/64
_seq = itertools.count()


class Host(nettopo.Host):
    """One network namespace on the bridge: `ns` (its name), `addr` (IPv4)
    and `addr6` (IPv6); cmd/run/resolv_conf from nettopo.Host."""

    def start(self, args, ready_regex, timeout=15, **kw):
        """helpers.start_process for `args` in the namespace; stopped by Topology.close."""
        proc = start_process(self.cmd(args), ready_regex, timeout=timeout, **kw)
        self.topo.procs.append(proc)
        return proc


class Topology(nettopo.Topology):
    host_class = Host

    def __init__(self):
        self.procs = []
        super().__init__(f"rete{os.getpid()}x{next(_seq)}")

    def assert_isolated(self):
        """No host has a route beyond the subnet (no default route, none to
        the outside), and no interface of the topology is in the namespace
        the tests run in: nothing sent can leave."""
        problems = self.isolation_problems()
        assert not problems, "\n".join(problems)

    def close(self):
        """Stop the processes started in the topology, then delete its
        namespaces (every one, even when one fails)."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    stop_process(p)
                except RuntimeError:
                    pass  # killed by stop_process; the test's reaper reports the log
        errors = self.delete()
        assert not errors, "\n".join(errors)


have_netns = nettopo.have_netns


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
