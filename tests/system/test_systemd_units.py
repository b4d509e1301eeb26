"""The systemd units shipped in packaging/systemd (docs/install.md,
"systemd") pass `systemd-analyze verify` with no complaint: each is copied
with its /usr/local/bin paths pointing at the build under test (verify
checks that the programs exist), the template instantiated once."""
import os
import shutil
import subprocess

from helpers import build_path

UNITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "packaging", "systemd")


def test_units_verify(tmp_path):
    bindir = os.path.dirname(build_path("rete-proxy"))
    names = []
    for f in sorted(os.listdir(UNITS)):
        if not f.endswith(".service"):
            continue
        text = open(os.path.join(UNITS, f)).read().replace("/usr/local/bin/", bindir + "/")
        name = f.replace("@.", "@demo.")  # a template is verified as an instance
        (tmp_path / name).write_text(text)
        names.append("./" + name)
    assert sorted(names) == ["./rete-proxy@demo.service", "./reted.service"], names
    r = subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", "--man=no",
                        *names], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_a_broken_unit_is_caught(tmp_path):
    """The check can fail: a unit whose program does not exist is refused."""
    (tmp_path / "broken.service").write_text("[Service]\nExecStart=/nonexistent/rete-proxy\n")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", "./broken.service"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 or r.stderr.strip(), r


def test_sysusers_creates_the_proxy_user_and_group(tmp_path):
    """What `make install` runs: systemd-sysusers on rete.sysusers.conf
    creates the system users rete-proxy and reted, each with a group of its
    own name (here under a root of the test's, not the machine's); the
    sidecar's unit runs as that user and group, and init exempts both."""
    conf = os.path.join(UNITS, "rete.sysusers.conf")
    (tmp_path / "etc").mkdir()  # as `make install DESTDIR=...` has it (its units go there)
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", conf], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    users = {l.split(":")[0]: l.split(":") for l in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {l.split(":")[0]: l.split(":") for l in (tmp_path / "etc/group").read_text().splitlines()}
    for name in ("rete-proxy", "reted"):
        uid, gid = int(users[name][2]), int(users[name][3])
        assert 0 < uid < 1000 and groups[name][2] == str(gid), (users[name], groups.get(name))
        assert users[name][6] == "/usr/sbin/nologin", users[name]
    unit = open(os.path.join(UNITS, "rete-proxy@.service")).read()
    assert "User=rete-proxy\nGroup=rete-proxy\n" in unit
    assert "init --proxy-uid rete-proxy --proxy-gid rete-proxy " in unit
