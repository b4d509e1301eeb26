"""Issue 8 item 4, AuthorizationPolicy path bypass: the path that is
authorised must be the path that is routed and forwarded.

Two real apps that read paths their own way sit behind sidecars whose
AuthorizationPolicy allows only GET /public/*: nginx (merges slashes,
decodes %2F, resolves dot segments before matching its locations) and
Python's http.server (unquotes, then posixpath.normpath). Every target of
tests/system/path_cases.py is sent as raw bytes (no client normalises first)
on every way in: HTTP/1.1 and h2c to the client's outbound listener (origin
and absolute form), an explicit upstream listener, the app sidecar's
plaintext inbound listener (15006) and HTTP/2 over mTLS straight to its mesh
listener (15008). Each must be refused (400 by the normaliser, 403 by the
policy) or reach the app as exactly the normalised path, under /public; the
app never answers with a private body.
"""
import os
import re
import socket
import ssl
import textwrap
import time
import urllib.request

import pytest

from helpers import free_port, read_log, start_process, wait_for
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload
from path_cases import BAD, PATH_CASES

SECRET = b"PRIVATE-BODY"
ALLOW_PUBLIC = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "public-only", "namespace": "test"},
                "spec": {"selector": {"matchLabels": {"tier": "app"}}, "action": "ALLOW",
                         "rules": [{"to": [{"operation": {"methods": ["GET"], "paths": ["/public/*"]}}]}]}}


def mesh_config(mode):
    spec = {"pathNormalization": {"normalization": mode}} if mode else {}
    return {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
            "metadata": {"name": "mesh", "namespace": "rete-system"}, "spec": spec}


def start_nginx(tmp, host, port):
    """nginx with its own prefix: /public and /private locations answer
    distinct bodies; the access log has the request-target as received."""
    d = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(textwrap.dedent(f"""\
            user root;
            daemon off;
            master_process on;
            worker_processes 1;
            pid {d}/nginx.pid;
            error_log stderr notice;
            events {{ worker_connections 64; }}
            http {{
                log_format target '$request_uri';
                access_log {d}/access.log target;
                client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
                fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
                server {{
                    listen {host}:{port};
                    location /public {{ return 200 "public $uri\\n"; }}
                    location /private {{ return 200 "{SECRET.decode()}\\n"; }}
                    location / {{ return 404 "other\\n"; }}
                }}
            }}
            """))
    proc = start_process(["nginx", "-p", d, "-c", conf], r"start worker process", timeout=10)
    proc.targets = lambda: open(os.path.join(d, "access.log"), "rb").read().splitlines()
    return proc


def last_target_is(app, want):
    """The app logged `want` as its latest request target. nginx writes its
    access log line after the response has gone out, so the client can read
    the answer first: wait for the line (bounded), never read it once."""
    wait_for(lambda: (app.targets() or [None])[-1] == want, 5, 0.02,
             f"the app to log {want[:80]!r} (it logged {app.targets()[-1:]!r})")


def start_pyhttp(tmp, host, port):
    root = os.path.join(tmp, "www")
    for sub, name, body in (("public", "a.txt", b"public a\n"), ("private", "secret", SECRET + b"\n")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        with open(os.path.join(root, sub, name), "wb") as f:
            f.write(body)
    proc = start_process(["/usr/bin/python3", "-u", "-m", "http.server", "--bind", host,
                          "--directory", root, str(port)], r"Serving HTTP", timeout=10)

    def targets():
        out = []
        for l in read_log(proc).encode().splitlines():
            m = re.search(rb'"[A-Z]+ (\S*) HTTP/1\.[01]"', l)
            if m:
                out.append(m.group(1))
        return out
    proc.targets = targets
    return proc


def path_mesh(tmp_path, mode, extra=()):
    """client sidecar -> {nginx, pyhttp} sidecars, each app behind its own
    sidecar with the public-only policy. Returns a dict of addresses."""
    m = Mesh(tmp_path)
    client_host, ngx_host, py_host = fresh_host(), fresh_host(), fresh_host()
    ngx_port, py_port = free_port(ngx_host), free_port(py_host)
    apps = {"nginx": start_nginx(str(tmp_path), ngx_host, ngx_port),
            "pyhttp": start_pyhttp(str(tmp_path), py_host, py_port)}
    m.add(service("nginx", m.ns, [(80, "HTTP", ngx_port)]),
          service("pyhttp", m.ns, [(80, "HTTP", py_port)]),
          workload("nginx-0", m.ns, ngx_host, "nginx", {"app": "nginx", "tier": "app"}),
          workload("pyhttp-0", m.ns, py_host, "pyhttp", {"app": "pyhttp", "tier": "app"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}),
          ALLOW_PUBLIC, *extra)
    if mode:
        m.add(mesh_config(mode))
    m.start_proxy("nginx-0", "nginx", ngx_host, inbound=[(ngx_port, "HTTP")])
    m.start_proxy("pyhttp-0", "pyhttp", py_host, inbound=[(py_port, "HTTP")])
    up = {"nginx": f"{client_host}:{free_port(client_host)}", "pyhttp": f"{client_host}:{free_port(client_host)}"}
    m.start_proxy("client-0", "client", client_host,
                  upstreams=[(up["nginx"], "nginx", 80), (up["pyhttp"], "pyhttp", 80)])
    return {"mesh": m, "apps": apps, "outbound": f"{client_host}:15001", "upstream": up,
            "inbound": {"nginx": f"{ngx_host}:15006", "pyhttp": f"{py_host}:15006"},
            "meshport": {"nginx": f"{ngx_host}:15008", "pyhttp": f"{py_host}:15008"},
            "admin": {"nginx": f"{ngx_host}:15000", "pyhttp": f"{py_host}:15000",
                      "client": f"{client_host}:15000"}}


# ---- clients that send exactly the bytes they are given ----

def h1(addr, target, host, timeout=10):
    """One HTTP/1.1 request with a raw target; returns (status, body)."""
    h, p = addr.rsplit(":", 1)
    with socket.create_connection((h, int(p)), timeout=timeout) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def h2(addr, target, authority, tls_ctx=None, timeout=10):
    """One HTTP/2 request (prior knowledge, or TLS+ALPN h2) with a raw
    :path and no client-side validation; returns (status, body), status
    None when the stream was reset or the connection closed."""
    import h2.config
    import h2.connection
    import h2.events
    h, p = addr.rsplit(":", 1)
    s = socket.create_connection((h, int(p)), timeout=timeout)
    if tls_ctx:
        s = tls_ctx.wrap_socket(s)
    cfg = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                    normalize_outbound_headers=False, validate_inbound_headers=False)
    c = h2.connection.H2Connection(cfg)
    c.initiate_connection()
    c.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority.encode()),
                       (b":path", target)], end_stream=True)
    s.sendall(c.data_to_send())
    status, body, done = None, b"", False
    try:
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(len(ev.data), ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset,
                                     h2.events.ConnectionTerminated)):
                    done = True
            s.sendall(c.data_to_send())
    finally:
        s.close()
    return status, body


def mesh_tls(m):
    crt, key = m.cert("client")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(m.ca[0])
    ctx.load_cert_chain(crt, key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def metric(admin, name):
    """The sum of every series of `name` on a proxy's /metrics."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(int(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\d+)$", text, re.M))


def check(env, app, how, raw, expected, status, body, mode):
    """One verdict: refused as the case says, or forwarded as exactly the
    normalised path, under /public (the policy's prefix)."""
    where = f"{how} {app} {mode} {raw[:80]!r}"
    assert SECRET not in body, f"BYPASS: {where} got the private body (status {status})"
    if expected == BAD:
        assert status in (400, None), f"{where}: want 400, got {status} {body[:200]!r}"
        return
    path = expected.split(b"?", 1)[0]
    if not path.startswith(b"/public/"):
        assert status == 403, f"{where}: normalised to {expected[:80]!r}, want 403, got {status} {body[:200]!r}"
        return
    assert status not in (400, 403, None), f"{where}: want it forwarded, got {status} {body[:200]!r}"
    deadline = time.monotonic() + 5
    while True:
        seen = env["apps"][app].targets()
        if seen and seen[-1] == expected:
            break
        assert time.monotonic() < deadline, f"{where}: app saw {seen[-1:]!r}, want {expected[:80]!r}"
        time.sleep(0.02)


ROUTES = ("outbound-h1", "absolute-form", "upstream-port", "outbound-h2c", "inbound-15006", "mesh-15008")


def send(env, app, how, raw, tls_ctx):
    if how == "outbound-h1":
        return h1(env["outbound"], raw, app)
    if how == "absolute-form":
        return h1(env["outbound"], b"http://" + app.encode() + raw if raw.startswith(b"/") else raw, app)
    if how == "upstream-port":
        return h1(env["upstream"][app], raw, app)
    if how == "outbound-h2c":
        return h2(env["outbound"], raw, app)
    if how == "inbound-15006":
        return h1(env["inbound"][app], raw, app)
    return h2(env["meshport"][app], raw, app, tls_ctx=tls_ctx)


def run_matrix(env, mode, routes=ROUTES, cases=PATH_CASES):
    """Every case on every route to both apps; fails with the list of cases
    that went wrong (bypasses first)."""
    tls_ctx = mesh_tls(env["mesh"])
    failures = []
    for app in ("nginx", "pyhttp"):
        for how in routes:
            for name, raw, exp in cases:
                if how == "absolute-form" and not raw.startswith(b"/"):
                    continue  # "http://nginx*" is another request altogether
                try:
                    status, body = send(env, app, how, raw, tls_ctx)
                    check(env, app, how, raw, exp[mode], status, body, mode)
                except (AssertionError, OSError) as e:
                    failures.append(f"{name}: {str(e).splitlines()[0]}")
    failures.sort(key=lambda f: "BYPASS" not in f)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:60])


@pytest.mark.parametrize("mode", ["BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"])
def test_authz_path_bypass(tmp_path, mode):
    env = path_mesh(tmp_path, mode)
    run_matrix(env, mode)
    # refusals are counted (by the sidecar that refused them)
    refused = sum(metric(a, "rete_proxy_path_rejected_total") for a in env["admin"].values())
    assert refused > 0
    stop_and_check_proxies(env["mesh"])


def test_authz_path_bypass_default_is_base(tmp_path):
    """Without a MeshConfig the proxies normalise as BASE does (Istio's default)."""
    env = path_mesh(tmp_path, None)
    run_matrix(env, "BASE", routes=("outbound-h1", "inbound-15006"))
    stop_and_check_proxies(env["mesh"])


def test_path_normalization_none_forwards_raw(tmp_path):
    """NONE: the raw path is authorised and forwarded (what Istio does, for
    apps that read paths in ways RFC 3986 does not); fragments, NUL and
    control characters are still refused."""
    env = path_mesh(tmp_path, "NONE")
    status, body = h1(env["outbound"], b"/public/a/../b", "nginx")
    assert status == 200
    last_target_is(env["apps"]["nginx"], b"/public/a/../b")
    for name, raw, exp in PATH_CASES:
        if exp["NONE"] == BAD:
            status, body = h1(env["outbound"], raw, "nginx")
            assert status == 400, (name, status, body)
    stop_and_check_proxies(env["mesh"])


def test_path_normalization_config_refuses_unknown_mode(tmp_path):
    m = Mesh(tmp_path)
    host = fresh_host()
    m.add(mesh_config("UNESCAPE_EVERYTHING"))
    with pytest.raises(RuntimeError, match="normalization"):
        m.start_proxy("c-0", "c", host)


def test_url_rewrite_never_skipped_on_long_paths(tmp_path):
    """Same class of defect: a URLRewrite whose result did not fit a 4 KiB
    buffer was skipped and the request forwarded unrewritten, so the path
    the route decided on was not the path forwarded."""
    from mesh import backend, http_route
    route = http_route("old-to-public", "test", "nginx", [{
        "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
        "filters": [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/public"}}}],
        "backendRefs": [backend("nginx")]}])
    env = path_mesh(tmp_path, None, extra=[route])
    for n in (10, 5000, 7000):
        status, body = h1(env["outbound"], b"/old/" + b"a" * n, "nginx")
        assert status == 200 and body.startswith(b"public /public/a"), (n, status, body[:80])
        last_target_is(env["apps"]["nginx"], b"/public/" + b"a" * n)
    stop_and_check_proxies(env["mesh"])
