"""Hosts as network namespaces on a bridge: the topology `make demo` (netns
mode), the system tests of transparent interception (tests/system/netns.py)
and the bench's "transparent" scenario build. Standard library only.

A Topology is a set of network namespaces: one "switch" namespace holding a
bridge (br0), and one namespace per host, each joined to the bridge by a
veth pair (eth0 in the host, a port pN of the bridge in the switch). Every
address comes from the topology's subnet (a private /24 routed nowhere
outside it); each host has its loopback up and a route to the subnet only:
no default route, no link to the namespace that built it, so no packet can
leave the topology (Topology.check_isolated says why when one could).

Namespace names are PREFIX-sw and PREFIX-<host>; interface names live
inside the namespaces and need no care. close() deletes every namespace the
topology made (its bridge, veths and nft rules go with them) and the
/etc/netns/<ns> directories it wrote. clean_stale(PREFIX) does the same
for a topology whose builder was killed before it could.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2: have_netns()."""
import os
import shutil
import signal
import subprocess

SUBNET = "10.250.0"  # a /24: private, and nothing adds a route to it outside the topology
SUBNET6 = "fd00:250::"  # a /64 of unique local addresses, likewise


class TopologyError(RuntimeError):
    pass


def ip(*args, check=True):
    """`ip ARGS`; a CompletedProcess with text output (CalledProcessError when `check` and it fails)."""
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def have_netns():
    """Root, and `ip netns` works here (a container without CAP_SYS_ADMIN fails it)."""
    return (os.geteuid() == 0 and shutil.which("ip") is not None
            and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0)


def netns_names():
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class Host:
    """One network namespace on the bridge: `ns` (its name), `addr` (IPv4)
    and `addr6` (IPv6)."""

    def __init__(self, topo, name, index):
        self.topo = topo
        self.name = name
        self.index = index
        self.ns = f"{topo.prefix}-{name}"
        self.addr = f"{topo.subnet}.{index}"
        self.addr6 = f"{topo.subnet6}{index:x}"
        # its veth's end in the switch namespace: where a capture sees all of
        # its traffic (a capture on br0 sees only frames for the bridge itself)
        self.switch_port = f"p{index}"

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


class Topology:
    host_class = Host

    def __init__(self, prefix, subnet=SUBNET, subnet6=SUBNET6):
        self.prefix, self.subnet, self.subnet6 = prefix, subnet, subnet6
        self.switch = f"{prefix}-sw"
        self.hosts = []
        self._made = []
        self._etc = []  # /etc/netns/<ns> directories written (Host.resolv_conf)
        ip("netns", "add", self.switch)
        self._made.append(self.switch)
        try:
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
        except subprocess.CalledProcessError:
            self.delete()  # the caller never sees a half-built topology
            raise

    @property
    def subnet_cidr(self):
        return f"{self.subnet}.0/24"

    def add_host(self, name):
        index = len(self.hosts) + 2  # .1 is left to nobody: no gateway exists
        h = self.host_class(self, name, index)
        ip("netns", "add", h.ns)
        self._made.append(h.ns)
        port = h.switch_port
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", h.ns, "link", "set", "lo", "up")
        ip("-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
        ip("-n", h.ns, "addr", "add", f"{h.addr6}/64", "dev", "eth0", "nodad")
        ip("-n", h.ns, "link", "set", "eth0", "up")
        self.hosts.append(h)
        return h

    def isolation_problems(self):
        """isolation_problems() of this topology's namespaces."""
        return isolation_problems(self.switch, {h.name: h.ns for h in self.hosts})

    def check_isolated(self):
        """TopologyError naming every way out, if there is one."""
        problems = self.isolation_problems()
        if problems:
            raise TopologyError("the topology is not isolated:\n" + "\n".join(problems))

    def delete(self):
        """Delete every namespace the topology made (even when one fails) and
        the /etc/netns directories it wrote; a list of errors, empty when all went."""
        errors = []
        for ns in reversed(self._made):
            r = ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        self._made.clear()
        for d in self._etc:
            shutil.rmtree(d, ignore_errors=True)
        self._etc.clear()
        return errors


def isolation_problems(switch, hosts):
    """Why a packet could leave a topology (`switch`: its bridge's namespace;
    `hosts`: {name: namespace}): a host with a default route, a route to a
    documentation address (192.0.2.1, i.e. anywhere outside), an interface
    other than lo and eth0; a switch link other than br0 and the veth ports.
    Empty when nothing can."""
    problems = []
    for name, ns in hosts.items():
        for fam in ("-4", "-6"):
            routes = ip("-n", ns, fam, "route", "show").stdout
            if "default" in routes:
                problems.append(f"{name} has a default route:\n{routes}")
        out = ip("-n", ns, "route", "get", "192.0.2.1", check=False)
        if out.returncode == 0 or "unreachable" not in out.stderr:
            problems.append(f"{name} can route out of the topology: {out.stdout}{out.stderr}")
        links = ip("-n", ns, "-o", "link", "show").stdout
        names = sorted(l.split(":")[1].strip().split("@")[0] for l in links.splitlines())
        if names != ["eth0", "lo"]:
            problems.append(f"{name} has links {names}, not just eth0 and lo")
    for line in ip("-n", switch, "-o", "link", "show").stdout.splitlines():
        link = line.split(":")[1].strip()
        if link not in ("lo", "br0") and "@" not in link:
            problems.append(f"the switch has an unexpected link {link}")
    return problems


def clean_stale(prefix):
    """What a killed builder of a topology named PREFIX left: the processes
    still running in its namespaces (SIGKILL), the namespaces (their bridge,
    veths and rules with them), /etc/netns/PREFIX-*. Returns the names of
    the namespaces removed."""
    stale = [ns for ns in netns_names() if ns.startswith(prefix + "-")]
    for ns in stale:
        for pid in ip("netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        ip("netns", "del", ns, check=False)
    if os.path.isdir("/etc/netns"):
        for d in os.listdir("/etc/netns"):
            if d.startswith(prefix + "-"):
                shutil.rmtree(os.path.join("/etc/netns", d), ignore_errors=True)
    return stale
