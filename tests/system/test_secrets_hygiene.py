"""Secrets hygiene (issue 13): after a small mesh run through reted — join
tokens issued and used, certificates issued, the admin token used by
retectl — no private key, no join token secret and no admin token appears
in anything the run produced that an operator reads or ships elsewhere:
every process log (reted and both sidecars at debug level), the proxies'
access logs, each proxy's /config on its admin listener, reted's
/api/v1/proxies/NS/NAME/config and /api/v1/proxies, `retectl
proxy-config` and `retectl proxy-status`, and every /metrics. And every
file of the run that holds a private key or a token is mode 0600.

Private keys are looked for both as PEM armour ("-----BEGIN ... PRIVATE
KEY") and as their base64 body lines (a key logged without its armour);
join tokens both whole and as their secret half (the id is public: reted
logs it to say which token was used)."""
import glob
import os
import re
import stat
import subprocess
import urllib.request

from controlplane import curl, echo_service_mesh, start_cp_proxy, start_reted
from helpers import build_path, read_log, run_tool

PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode(errors="replace")


def _key_lines(path):
    """The base64 lines of a PEM private key (the last one may be short:
    only full 64-character lines are distinctive enough to look for)."""
    with open(path) as f:
        return [l.strip() for l in f if len(l.strip()) == 64 and not l.startswith("-----")]


def _retectl(reted, *args):
    p = run_tool([build_path("retectl"), "--server", reted.api, "--token-file",
                  os.path.join(reted.data, "admin.token"), *args],
                 capture_output=True, text=True, timeout=30,
                 env={k: v for k, v in os.environ.items() if not k.startswith("RETE_")})
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p.stdout + p.stderr


def test_no_secret_in_logs_dumps_or_access_logs_and_keys_are_0600(tmp_path):
    reted = start_reted(tmp_path, "--log-level", "debug")
    access = {n: str(tmp_path / f"access-{n}.log") for n in ("client", "echo")}
    mesh = echo_service_mesh(reted, tmp_path,
                             client_extra=("--log-level", "debug", "--access-log", access["client"]),
                             echo_extra=("--log-level", "debug", "--access-log", access["echo"]))
    # one more proxy joins with a token the test keeps (single use), and a
    # token that is issued and never used
    join = reted.token("demo", "batch")
    unused = reted.token("demo", "idle")
    batch = start_cp_proxy(reted, tmp_path, "batch-0", "demo", "batch", token=join,
                           extra=("--log-level", "debug"))
    for i in range(5):
        r = curl(mesh["client"].outbound, "echo", f"/req-{i}")
        assert r.returncode == 0, r.stderr
    ns = mesh["ns"]
    proxies = [mesh["client"], mesh["server"], batch]

    # ---- what was produced ----
    texts = {"reted log": reted.log()}
    for p in proxies:
        texts[f"{p.name} log"] = p.log()
        texts[f"{p.name} /config"] = _get(f"http://{p.host}:15000/config")
        texts[f"{p.name} /metrics"] = _get(f"http://{p.host}:15000/metrics")
        st, cfg = reted.proxy_config(ns, p.name)
        assert st == 200, (st, cfg)
        texts[f"reted config of {p.name}"] = str(cfg)
        texts[f"retectl proxy-config {p.name}"] = _retectl(reted, "proxy-config", p.name, "-n", ns)
    texts["reted /api/v1/proxies"] = str(reted.proxies())
    texts["reted /metrics"] = _get(f"http://{reted.api}/metrics")
    texts["retectl proxy-status"] = _retectl(reted, "proxy-status")
    texts["echo log"] = read_log(mesh["echo"])
    for n, path in access.items():
        with open(path) as f:
            texts[f"{n} access log"] = f.read()
    assert "/req-4" in texts["client access log"], "the access log was written"
    assert "BEGIN CERTIFICATE" in texts["echo-0 /config"] or "spiffe://" in texts["echo-0 /config"]

    # ---- the secrets ----
    secrets = {"admin token": reted.admin_token}
    for label, tok in (("join token", join), ("unused join token", unused)):
        secrets[label] = tok
        secrets[label + " secret"] = tok.split(".", 1)[1]
    for p in proxies:
        with open(p.token_file) as f:
            tok = f.read().strip()
        secrets[f"{p.name}'s join token secret"] = tok.split(".", 1)[1]
    key_files = [p.key_path for p in proxies]
    key_files += [f for f in glob.glob(os.path.join(reted.data, "**", "*"), recursive=True)
                  if os.path.isfile(f) and "PRIVATE KEY" in open(f, errors="replace").read()]
    assert len(key_files) >= 4, key_files  # three proxies, reted's CA (and its own server key)
    for k in key_files:
        for i, line in enumerate(_key_lines(k)):
            secrets[f"line {i} of {k}"] = line

    leaks = []
    for where, text in texts.items():
        if PEM_KEY.search(text):
            leaks.append(f"{where}: PEM private key")
        leaks += [f"{where}: {what}" for what, value in secrets.items() if value and value in text]
    assert not leaks, "secrets found:\n" + "\n".join(leaks)

    # ---- file modes ----
    loose = []
    for f in key_files + [os.path.join(reted.data, "admin.token")]:
        mode = stat.S_IMODE(os.stat(f).st_mode)
        if mode & 0o077:
            loose.append(f"{f}: {oct(mode)}")
    assert not loose, "key or token files readable by others:\n" + "\n".join(loose)
