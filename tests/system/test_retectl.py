"""retectl against the real reted: every verb, the kubectl-style output, the
exit codes (0 ok, 1 failure, 2 usage), the 401 hint, and finding reted with
no flags from a .demo/reted/context.json above the working directory.

The first tests (help, completion, usage errors, unreachable) need no reted."""
import json
import os
import re
import stat
import subprocess
import textwrap

import pytest

from helpers import build_path, free_port, fresh_host, start_process, run_tool


VERBS = ["apply", "get", "delete", "describe", "token", "proxy-status", "proxy-config", "check", "analyze",
         "identity", "version", "completion", "help"]


def ctl(*args, env=None, cwd=None, input=None, home=None, check=None):
    """Run retectl; returns the CompletedProcess. `home` isolates ~/.config."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RETE_")}
    if home is not None:
        full_env["HOME"] = str(home)
    if env:
        full_env.update(env)
    p = run_tool([build_path("retectl"), *args], capture_output=True, text=True,
                       env=full_env, cwd=cwd, input=input, timeout=30)
    if check is not None:
        assert p.returncode == check, f"retectl {' '.join(args)} -> {p.returncode}\n" \
                                      f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


# ---- no reted needed ----

def test_help_on_every_verb(tmp_path):
    out = ctl("help", home=tmp_path, check=0).stdout
    for verb in VERBS:
        assert verb in out
        p = ctl(verb, "--help", home=tmp_path, check=0)
        assert "Usage: retectl " + verb in p.stdout
    ctl("help", "get", home=tmp_path, check=0)
    assert ctl(home=tmp_path).returncode == 2


def test_usage_errors_exit_2(tmp_path):
    assert ctl("frobnicate", home=tmp_path, check=2).stderr.startswith("error: unknown verb")
    assert "which kind" in ctl("get", home=tmp_path, check=2).stderr
    assert "resource type" in ctl("get", "pods", home=tmp_path, check=2).stderr
    ctl("get", "svc", "--bogus", home=tmp_path, check=2)
    ctl("apply", home=tmp_path, check=2)
    ctl("token", "create", "--namespace", "default", home=tmp_path, check=2)
    ctl("token", "create", "--namespace", "d", "--service-account", "s", "--ttl", "soon",
        home=tmp_path, check=2)
    ctl("get", "svc", "-o", "xml", home=tmp_path, check=2)
    ctl("get", "svc", "x", "-A", home=tmp_path, check=2)


def test_completion_bash_is_valid_bash(tmp_path):
    script = ctl("completion", "bash", home=tmp_path, check=0).stdout
    assert "complete -F _retectl retectl" in script
    for word in ["proxy-status", "httproutes", "svc", "--namespace", "--all-namespaces"]:
        assert word in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    # complete "retectl get h" with the function itself
    probe = script + textwrap.dedent("""
        COMP_WORDS=(retectl get ht); COMP_CWORD=2; _retectl; echo "${COMPREPLY[@]}"
        COMP_WORDS=(retectl prox); COMP_CWORD=1; _retectl; echo "${COMPREPLY[@]}"
    """)
    out = subprocess.run(["bash"], input=probe, text=True, capture_output=True, check=True).stdout
    lines = out.splitlines()
    assert "httproutes" in lines[0].split()
    assert sorted(lines[1].split()) == ["proxy-config", "proxy-status"]


def test_unreachable_is_clear(tmp_path):
    host = fresh_host()
    port = free_port(host)
    p = ctl("--server", f"{host}:{port}", "get", "svc", home=tmp_path, check=1)
    assert "cannot reach reted" in p.stderr and "--server" in p.stderr
    v = ctl("--server", f"{host}:{port}", "version", home=tmp_path, check=0)
    assert "retectl version" in v.stdout and "unreachable" in v.stdout
    c = ctl("--server", f"{host}:{port}", "check", home=tmp_path, check=1)
    assert "\u2718 reted is reachable" in c.stdout


# ---- against reted ----

@pytest.fixture
def reted(tmp_path):
    """reted with its data dir at tmp/.demo/reted (where `make demo` keeps it)
    and HOME at tmp/home, so ~/.config/rete/context.json is the test's own."""
    data = tmp_path / ".demo" / "reted"
    data.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    host = fresh_host()
    api = f"{host}:{free_port(host)}"
    xds = f"{host}:{free_port(host)}"
    proc = start_process([build_path("reted"), "--data-dir", str(data), "--api", api, "--xds", xds],
                         r"reted .* ready", env={"HOME": str(home)}, timeout=20)
    proc.api = api
    proc.data = data
    proc.home = home
    proc.root = tmp_path
    proc.flags = ["--server", api, "--token-file", str(data / "admin.token")]
    return proc


SERVICE = textwrap.dedent("""\
    apiVersion: v1
    kind: Service
    metadata:
      name: echo
      labels: {app: echo}
    spec:
      ports:
      - port: 80
        protocol: HTTP
      selector: {app: echo}
    ---
    apiVersion: networking.rete.dev/v1alpha1
    kind: Workload
    metadata:
      name: echo-1
    spec:
      address: 127.0.0.2
      serviceAccount: echo
      labels: {app: echo, version: v1}
    """)

ROUTE = textwrap.dedent("""\
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata:
      name: echo-split
    spec:
      parentRefs:
      - kind: Service
        name: echo
        port: 80
      rules:
      - backendRefs:
        - {name: echo, port: 80, weight: 90}
    """)


def test_401_without_token_names_the_file(reted, tmp_path_factory):
    empty_home = tmp_path_factory.mktemp("home")
    p = ctl("--server", reted.api, "get", "svc", home=empty_home, cwd="/", check=1)
    assert "401" in p.stderr and "admin.token" in p.stderr


def test_discovery_with_no_flags(reted):
    sub = reted.root / "work" / "deeper"
    sub.mkdir(parents=True)
    empty_home = reted.root / "empty-home"
    empty_home.mkdir()
    p = ctl("-v", "get", "svc", cwd=sub, home=empty_home, check=0)
    assert reted.api in p.stderr and "context.json" in p.stderr
    # and from ~/.config/rete/context.json, which reted wrote under its HOME
    assert (reted.home / ".config" / "rete" / "context.json").exists()
    ctl("get", "svc", cwd="/", home=reted.home, check=0)


def test_apply_get_describe_delete(reted, tmp_path):
    d = tmp_path / "res"
    d.mkdir()
    (d / "10-echo.yaml").write_text(SERVICE)
    (d / "20-route.yml").write_text(ROUTE)
    (d / "README.md").write_text("not a resource")
    f = reted.flags
    out = ctl(*f, "apply", "-f", str(d), check=0).stdout
    assert out.splitlines() == ["service/echo created", "workload/echo-1 created",
                                "httproute/echo-split created"]
    out = ctl(*f, "apply", "-f", str(d / "10-echo.yaml"), check=0).stdout
    assert out.splitlines() == ["service/echo unchanged", "workload/echo-1 unchanged"]
    out = ctl(*f, "apply", "-f", "-", input=SERVICE.replace("protocol: HTTP\n", "protocol: HTTP2\n", 1),
              check=0).stdout
    assert "service/echo configured" in out

    table = ctl(*f, "get", "svc", check=0).stdout.splitlines()
    assert re.match(r"NAME\s+PORTS\s+SELECTOR\s+AGE$", table[0])
    assert re.match(r"echo\s+80/HTTP2\s+app=echo\s+\d+s$", table[1])
    wl = ctl(*f, "get", "WL", "-A", check=0).stdout.splitlines()
    assert re.match(r"NAMESPACE\s+NAME\s+ADDRESS\s+SERVICE-ACCOUNT\s+LABELS\s+AGE$", wl[0])
    assert re.match(r"default\s+echo-1\s+127\.0\.0\.2\s+echo\s+app=echo,version=v1\s+\d+s$", wl[1])
    routes = ctl(*f, "get", "httproutes", check=0).stdout
    assert re.search(r"echo-split\s+echo:80\s+1\s+", routes)

    one = json.loads(ctl(*f, "get", "service", "echo", "-o", "json", check=0).stdout)
    assert one["metadata"]["name"] == "echo" and one["metadata"]["resourceVersion"]
    lst = json.loads(ctl(*f, "get", "svc", "-o", "json", check=0).stdout)
    assert [i["metadata"]["name"] for i in lst["items"]] == ["echo"]
    y = ctl(*f, "get", "svc/echo", "-o", "yaml", check=0).stdout
    assert "kind: Service" in y and "  name: echo" in y
    desc = ctl(*f, "describe", "svc", "echo", check=0).stdout
    assert re.search(r"^Name:\s+echo$", desc, re.M) and "Endpoints:" in desc and "127.0.0.2" in desc

    # the route still refers to the Service: reted refuses, retectl says why
    p = ctl(*f, "delete", "svc", "echo", check=1)
    assert "409" in p.stderr, p.stderr
    out = ctl(*f, "delete", "-f", str(d / "20-route.yml"), check=0).stdout
    assert out.strip() == 'httproute "echo-split" deleted'
    assert ctl(*f, "delete", "svc", "echo", check=0).stdout.strip() == 'service "echo" deleted'
    assert "NotFound" in ctl(*f, "get", "svc", "echo", check=1).stderr
    assert "NotFound" in ctl(*f, "delete", "svc", "echo", check=1).stderr
    assert "No resources found" in ctl(*f, "get", "svc", check=0).stderr


def test_apply_validation_errors(reted, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SERVICE.replace("port: 80", "port: 99999"))
    nope = tmp_path / "nope.yaml"
    nope.write_text("apiVersion: v1\nkind: Nope\nmetadata: {name: x}\n")
    p = ctl(*reted.flags, "apply", "-f", str(bad), check=1)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert lines, p.stderr
    for line in lines:
        assert re.match(rf"{re.escape(str(bad))}: document \d+: ", line), line
    assert "spec.ports[0].port" in p.stderr
    p = ctl(*reted.flags, "apply", "-f", str(nope), check=1)
    assert re.match(rf"{re.escape(str(nope))}: document 0: kind: ", p.stderr), p.stderr
    # all or nothing: nothing was created
    assert "No resources found" in ctl(*reted.flags, "get", "svc", check=0).stderr


def test_apply_stale_resource_version_conflicts(reted, tmp_path):
    f = reted.flags
    ctl(*f, "apply", "-f", "-", input=SERVICE, check=0)
    cur = json.loads(ctl(*f, "get", "svc", "echo", "-o", "json", check=0).stdout)
    stale = cur["metadata"]["resourceVersion"]
    ctl(*f, "apply", "-f", "-", input=SERVICE.replace("port: 80", "port: 81", 1), check=0)
    doc = SERVICE.split("---")[0].replace("  name: echo\n", f"  name: echo\n  resourceVersion: \"{stale}\"\n")
    p = ctl(*f, "apply", "-f", "-", input=doc, check=1)
    assert "conflict" in p.stderr


def test_token_and_identity_issue(reted, tmp_path):
    f = reted.flags
    tok = ctl(*f, "token", "create", "--namespace", "default", "--service-account", "echo",
              "--ttl", "10m", "--uses", "1", check=0).stdout
    assert len(tok.strip().splitlines()) == 1, "token create prints the token only"
    out = tmp_path / "id"
    ctl(*f, "identity", "issue", "--token", tok.strip(), "--out", str(out), check=0)
    for name in ["cert.pem", "key.pem", "bundle.pem"]:
        assert (out / name).exists()
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    subprocess.run(["openssl", "verify", "-CAfile", str(out / "bundle.pem"), str(out / "cert.pem")],
                   check=True, capture_output=True)
    text = subprocess.run(["openssl", "x509", "-in", str(out / "cert.pem"), "-noout", "-text"],
                          check=True, capture_output=True, text=True).stdout
    assert re.search(r"URI:spiffe://[^/]+/ns/default/sa/echo", text)
    # single use
    p = ctl(*f, "identity", "issue", "--token", tok.strip(), "--out", str(tmp_path / "id2"), check=1)
    assert "Error from server" in p.stderr


def test_proxy_status_config_check_version(reted):
    f = reted.flags
    ps = ctl(*f, "proxy-status", check=0)
    assert "NAME" in ps.stdout or "No proxies" in ps.stderr
    json.loads(ctl(*f, "proxy-status", "-o", "json", check=0).stdout)
    assert "NotFound" in ctl(*f, "proxy-config", "nobody", check=1).stderr
    chk = ctl(*f, "check", check=0).stdout
    assert "\u2714 reted is reachable" in chk and "\u2718" not in chk
    assert "CA certificate" in chk and "clocks agree" in chk
    v = ctl(*f, "version", check=0).stdout
    assert "retectl version" in v and "reted" in v and "unreachable" not in v
