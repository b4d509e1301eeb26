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
