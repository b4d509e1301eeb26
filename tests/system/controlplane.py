"""Control-plane system tests' helpers: start reted on its own data directory
and ports, talk to its operator API (bearer token from DATA/admin.token), and
start rete-proxy in control-plane mode (--control-plane) with a join token.

Everything is loopback and bounded; conditions are polled, never timed."""
import http.client
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse

from helpers import (wait_for, build_path, check_sanitizer_output, free_port, read_log, start_echo, start_process,
                     stop_process)
from mesh import fresh_host, service

TRUST_DOMAIN = "cluster.local"
READY_RETED = r"reted .* ready"
READY_PROXY = r"rete-proxy .* ready:"


class Reted:
    """One reted process (restartable on the same data dir and ports) and a
    client for its operator API."""

    def __init__(self, data_dir, *args, api_port=None, xds_port=None, persistent=False):
        self.data = str(data_dir)
        self.persistent = persistent  # outlives the test (module fixtures)
        self.args = list(args)
        self.host = fresh_host()  # reted's own address: no other process of the run binds it
        self.api_port = api_port or free_port(self.host)
        self.xds_port = xds_port or free_port(self.host)
        self.api = f"{self.host}:{self.api_port}"
        self.xds = f"{self.host}:{self.xds_port}"
        self.proc = None
        self.logs = []  # logs of earlier runs (restarts), oldest first

    # ---- process ----

    def start(self, timeout=20):
        if self.proc is not None:
            self.logs.append(read_log(self.proc))
        self.proc = start_process(
            [build_path("reted"), "--data-dir", self.data, "--api", self.api, "--xds", self.xds, *self.args],
            READY_RETED, timeout=timeout, env={"RETED_NO_USER_CONTEXT": "1"},
            persistent=self.persistent)
        with open(os.path.join(self.data, "admin.token")) as f:
            self.admin_token = f.read().strip()
        return self

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)

    def stop(self):
        return stop_process(self.proc)

    def log(self):
        """This run's log (earlier runs are in self.logs)."""
        return read_log(self.proc)

    @property
    def bundle(self):
        return os.path.join(self.data, "ca", "bundle.pem")

    # ---- operator API ----

    def request(self, method, path, body=None, headers=None, auth=True, timeout=20):
        """(status, parsed JSON or text) of one request to the operator API."""
        h = dict(headers or {})
        if auth is True:
            h["Authorization"] = f"Bearer {self.admin_token}"
        elif auth:
            h["Authorization"] = auth
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        c = http.client.HTTPConnection(self.host, self.api_port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read().decode(errors="replace")
        finally:
            c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data

    def apply(self, text, source=None):
        """Apply a document stream (str, or a list of dicts written as JSON
        documents); returns (status, json)."""
        if not isinstance(text, str):
            text = "\n---\n".join(json.dumps(d) for d in text) + "\n"
        q = "?source=" + urllib.parse.quote(source) if source else ""
        return self.request("POST", "/api/v1/apply" + q, text, {"Content-Type": "application/yaml"})

    def apply_ok(self, text, source=None):
        st, body = self.apply(text, source)
        assert st == 200, (st, body)
        return body

    def get(self, kind, ns=None, name=None):
        path = f"/api/v1/resources/{kind}" + (f"/{ns}/{name}" if name else "")
        if ns and not name:
            path += "?namespace=" + urllib.parse.quote(ns)
        return self.request("GET", path)

    def delete(self, kind, ns, name, resource_version=None):
        q = f"?resourceVersion={resource_version}" if resource_version is not None else ""
        return self.request("DELETE", f"/api/v1/resources/{kind}/{ns}/{name}{q}")

    def token(self, ns, sa, ttl=None, uses=None):
        body = {"namespace": ns, "serviceAccount": sa}
        if ttl is not None:
            body["ttlSeconds"] = ttl
        if uses is not None:
            body["uses"] = uses
        st, j = self.request("POST", "/api/v1/tokens", body)
        assert st == 200, (st, j)
        return j["token"]

    def revision(self):
        st, j = self.request("GET", "/api/v1/check")
        assert st == 200, (st, j)
        return j["revision"]

    def proxies(self):
        st, j = self.request("GET", "/api/v1/proxies")
        assert st == 200, (st, j)
        return j["items"]

    def proxy(self, name, ns=None):
        for p in self.proxies():
            if p["name"] == name and (ns is None or p["namespace"] == ns):
                return p
        return None

    def wait_status(self, name, status="SYNCED", ns=None, timeout=30):
        """Poll /api/v1/proxies until proxy `name` has `status`; returns its entry."""
        last = {}

        def cond():
            p = self.proxy(name, ns)
            last["p"] = p
            return p if p and p["status"] == status else None
        try:
            return wait_for(cond, timeout, 0.2, f"proxy {name} {status}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {last.get('p')}\nreted log:\n{self.log()[-3000:]}")

    def wait_synced(self, name, ns=None, timeout=30):
        return self.wait_status(name, "SYNCED", ns, timeout)

    def proxy_config(self, ns, name):
        return self.request("GET", f"/api/v1/proxies/{ns}/{name}/config")


def snapshot_docs(entries):
    """The documents of a snapshot's entries ("resources" of a config
    message, of reted's proxy-config answer or of a proxy's saved file),
    checking that each entry's key and version frame its document."""
    docs = []
    for e in entries:
        d = e["document"]
        assert (e["kind"], e["namespace"], e["name"]) == (
            d["kind"], d["metadata"].get("namespace", "default"), d["metadata"]["name"]), e
        assert isinstance(e["version"], int) and e["version"] > 0, e
        docs.append(d)
    keys = [(e["kind"], e["namespace"], e["name"]) for e in entries]
    assert keys == sorted(keys, key=lambda k: tuple(x.encode() for x in k)), "entries in store order"
    return docs


def workload_group(name, ns, sa, labels=None, egress=None):
    """A WorkloadGroup: what proxies of service account `sa` may register."""
    spec = {"serviceAccount": sa, "labels": labels or {}}
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.rete.dev/v1alpha1", "kind": "WorkloadGroup",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def start_reted(tmp_path, *args, subdir="reted", persistent=False):
    return Reted(os.path.join(str(tmp_path), subdir), *args, persistent=persistent).start()


class CPProxy:
    """A rete-proxy in control-plane mode; restartable with the same arguments."""

    def __init__(self, reted, tmp_path, name, ns, sa, host=None, token=None, token_file=None,
                 inbound=(), labels=None, extra=(), data_dir=None, upstreams=(), grant=True):
        """grant: act as the operator and declare what this proxy may
        register (a WorkloadGroup wg-NAME of its service account with its
        labels and --egress; reted refuses claims no WorkloadGroup admits)."""
        self.reted, self.name, self.ns, self.sa = reted, name, ns, sa
        self.host = host or fresh_host()
        self.data = data_dir or os.path.join(str(tmp_path), f"proxy-{name}.{ns}")
        if upstreams:  # explicit upstream listeners need the proxy's own Proxy document
            extra = ["--config", proxy_doc(tmp_path, name, ns, sa, self.host, self.data, upstreams), *extra]
        if token_file is None:
            token_file = os.path.join(str(tmp_path), f"{name}.{ns}.token")
            with open(token_file, "w") as f:
                f.write((token or reted.token(ns, sa)) + "\n")
        self.token_file = token_file
        self.args = [build_path("rete-proxy"), "--control-plane", reted.xds, "--token-file", token_file,
                     "--ca-file", reted.bundle, "--data-dir", self.data, "--namespace", ns,
                     "--service-account", sa, "--name", name, "--address", self.host]
        for port, proto in inbound:
            self.args += ["--inbound", f"{port}/{proto}"]
        for k, v in (labels or {}).items():
            self.args += ["--label", f"{k}={v}"]
        self.args += list(extra)
        self.proc = None
        self.logs = []
        if grant and (labels or "--egress" in self.args):
            self.grant()

    def grant(self):
        """Apply (again) the WorkloadGroup admitting this proxy's labels and
        egress, as they are in its arguments now."""
        a = self.args
        labels = dict(a[i + 1].split("=", 1) for i in range(len(a) - 1) if a[i] == "--label")
        egress = [a[i + 1] for i in range(len(a) - 1) if a[i] == "--egress"]
        self.reted.apply_ok([workload_group(f"wg-{self.name}", self.ns, self.sa, labels, egress or None)])

    @property
    def outbound(self):
        return f"{self.host}:15001"

    @property
    def cert_path(self):
        return os.path.join(self.data, "cert.pem")

    @property
    def key_path(self):
        return os.path.join(self.data, "key.pem")

    @property
    def spiffe(self):
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.ns}/sa/{self.sa}"

    def start(self, ready=READY_PROXY, timeout=30):
        if self.proc is not None:
            self.logs.append(read_log(self.proc))
        self.proc = start_process(self.args, ready, timeout=timeout)
        return self

    def log(self):
        return read_log(self.proc)

    def stop(self, sig=signal.SIGTERM):
        return stop_process(self.proc, sig)


def proxy_doc(tmp_path, name, ns, sa, host, data, upstreams):
    """A Proxy document (the --config of a control-plane proxy) with explicit
    upstream listeners [(listen, service, port)]; returns its path."""
    doc = {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy", "metadata": {"name": name, "namespace": ns},
           "spec": {"serviceAccount": sa, "address": host,
                    "tls": {"certFile": f"{data}/cert.pem", "keyFile": f"{data}/key.pem",
                            "caFile": f"{data}/bundle.pem"},
                    "upstreams": [{"listen": l, "service": s, "port": p} for l, s, p in upstreams]}}
    path = os.path.join(str(tmp_path), f"{name}.{ns}.proxy.yaml")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def wait_acked(reted, name, version, ns=None, timeout=30):
    """Until proxy `name` is SYNCED on a snapshot at least as new as store
    revision `version` (an apply's resourceVersion)."""
    def cond():
        p = reted.proxy(name, ns)
        return p if p and p["status"] == "SYNCED" and p["ackedVersion"] >= int(version) else None
    return wait_for(cond, timeout, 0.2, f"{name} acked {version}")


def apply_and_push(reted, docs, proxies, source=None):
    """Apply `docs` and wait until every proxy in `proxies` has ACKed a
    snapshot that includes them."""
    res = reted.apply_ok(docs, source)
    v = max(int(r["resourceVersion"]) for r in res["results"])
    for p in proxies:
        wait_acked(reted, p.name, v, p.ns)
    return res


def proxy_metric(host, name, admin_port=15000):
    """The sum of every sample of metric family `name` on the proxy's admin
    listener (0 when absent)."""
    import urllib.request
    with urllib.request.urlopen(f"http://{host}:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def start_cp_proxy(reted, tmp_path, name, ns, sa, ready=READY_PROXY, synced=True, **kw):
    """Start a control-plane proxy; by default wait until it serves and
    reted reports it SYNCED."""
    p = CPProxy(reted, tmp_path, name, ns, sa, **kw).start(ready)
    if synced and ready == READY_PROXY:
        reted.wait_synced(name, ns)
    return p


def echo_service_mesh(reted, tmp_path, ns="demo", client_extra=(), echo_extra=()):
    """The smallest mesh through reted: Service echo (port 80 -> the echo
    app), rete-echo with its sidecar echo-0 (sa echo), and a client sidecar
    client-0 (sa client). Returns a dict of the pieces."""
    echo_host = fresh_host()
    echo_proc, echo_addr = start_echo("--quiet", name="echo", host=echo_host)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    reted.apply_ok([service("echo", ns, [(80, "HTTP", echo_port)])], "echo.yaml")
    server = start_cp_proxy(reted, tmp_path, "echo-0", ns, "echo", host=echo_host,
                            inbound=[(echo_port, "HTTP")], labels={"app": "echo"}, extra=echo_extra)
    client = start_cp_proxy(reted, tmp_path, "client-0", ns, "client", labels={"app": "client"},
                            extra=client_extra)
    # the client learns the echo endpoint once reted has pushed the registered workload
    wait_for(lambda: curl_status(client.outbound, "echo") == 200, 30, 0.3, "echo reachable through the mesh")
    return {"ns": ns, "echo": echo_proc, "echo_port": echo_port, "echo_host": echo_host,
            "server": server, "client": client}


def curl(outbound, host, path="/", *args, timeout=10):
    return subprocess.run(["curl", "-sS", "-m", str(timeout), "-H", f"Host: {host}", *args,
                           f"http://{outbound}{path}"], capture_output=True, timeout=timeout + 5)


def curl_status(outbound, host, path="/", timeout=5):
    r = curl(outbound, host, path, "-o", "/dev/null", "-w", "%{http_code}", timeout=timeout)
    try:
        return int(r.stdout)
    except ValueError:
        return 0


def curl_json(outbound, host, path="/"):
    r = curl(outbound, host, path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start_traffic(outbound, host="echo", rate=20, duration=40):
    """rete-client in the background: --expect-status 200, so exit 0 means
    not one request failed. Output goes to a file (never a pipe)."""
    import tempfile
    fd, path = tempfile.mkstemp(prefix="rete-client-", suffix=".log")
    proc = subprocess.Popen([build_path("rete-client"), "--url", f"http://{host}/", "--proxy", outbound,
                             "--rate", str(rate), "--duration", str(duration), "--expect-status", "200"],
                            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd)
    os.close(fd)
    proc.log_path = path
    return proc


def finish_traffic(proc, timeout=90):
    """Wait for rete-client; returns (exit code, output)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out = read_log(proc)
    os.unlink(proc.log_path)
    check_sanitizer_output(out, "rete-client (start_traffic)")
    return proc.returncode, out


def openssl(*args):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def cert_sans(path):
    r = openssl("x509", "-in", path, "-noout", "-ext", "subjectAltName")
    assert r.returncode == 0, r.stderr
    lines = [l.strip() for l in r.stdout.splitlines()[1:] if l.strip()]
    return [s.strip() for l in lines for s in l.split(",")]


def log_has(getlog, regex, timeout=20):
    """Poll until `regex` appears in getlog(); returns the match."""
    pat = re.compile(regex)
    return wait_for(lambda: pat.search(getlog()), timeout, 0.1, f"log line /{regex}/")


def reted_metric(reted, name, labels=None):
    """One sample of reted's /metrics (labels: the exact label text, e.g.
    'stream="max"'), or None when absent."""
    st, text = reted.request("GET", "/metrics", auth=False)
    assert st == 200, (st, text)
    want = name + (f"{{{labels}}}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[1])
    return None


def make_csr(tmp_path, name):
    """An ECDSA P-256 key and a CSR for it (openssl tool); returns (key path, CSR PEM)."""
    d = os.path.join(str(tmp_path), f"id-{name}")
    os.makedirs(d, exist_ok=True)
    key, csr = os.path.join(d, "key.pem"), os.path.join(d, "csr.pem")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
    with open(csr) as f:
        return key, f.read()


def ca_connection(reted):
    """A TLS connection to reted's proxy API (15012), not yet connected."""
    import ssl
    ctx = ssl.create_default_context(cafile=reted.bundle)
    ctx.check_hostname = False
    return http.client.HTTPSConnection(reted.host, reted.xds_port, context=ctx, timeout=30)


def request_certificate(conn, csr, token):
    """POST /ca/v1/certificates on `conn`; returns (status, parsed answer)."""
    conn.request("POST", "/ca/v1/certificates", json.dumps({"csr": csr, "token": token}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def issue_identity(reted, tmp_path, name, token):
    """A key and certificate from POST /ca/v1/certificates with a join token,
    as a proxy bootstraps. Returns (status, answer, cert path, key path)."""
    key, csr = make_csr(tmp_path, name)
    c = ca_connection(reted)
    try:
        st, body = request_certificate(c, csr, token)
    finally:
        c.close()
    cert = os.path.join(os.path.dirname(key), "cert.pem")
    if st == 200:
        with open(cert, "w") as f:
            f.write(body["certChain"])
    return st, body, cert, key


class StreamClient:
    """A config stream spoken by hand (no rete-proxy), to control how fast
    it reads: a certificate from a join token, GET /xds/v1/stream over mTLS,
    a hello for Workload `name`, then NDJSON lines. rcvbuf shrinks the
    socket's receive buffer (set before connecting, so the window is small
    from the start); recv_size is how much one read asks for."""

    def __init__(self, reted, tmp_path, name, ns, sa, token=None, rcvbuf=None, labels=None,
                 egress=None, address=None, source=None, identity=None, workload=None):
        """labels, egress: what the hello claims; address: the hello's
        workload address (default: a fresh 127.x address), source: the
        address the connection is made from (default: `address`, as
        rete-proxy binds its control-plane connections to its workload
        address); identity: (cert, key) to reuse instead of issuing one;
        workload: extra hello workload fields."""
        import socket
        import ssl
        self.name, self.ns = name, ns
        if identity is None:
            st, body, cert, key = issue_identity(reted, tmp_path, f"{name}.{sa}", token or reted.token(ns, sa))
            assert st == 200, (st, body)
        else:
            cert, key = identity
        self.identity = (cert, key)
        address = address or fresh_host()
        self.address = address
        ctx = ssl.create_default_context(cafile=reted.bundle)
        ctx.check_hostname = False
        ctx.load_cert_chain(cert, key)
        raw = socket.socket()
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(60)
        raw.bind((source or address, 0))
        raw.connect((reted.host, reted.xds_port))
        self.sock = ctx.wrap_socket(raw)
        self.sock.sendall(b"GET /xds/v1/stream HTTP/1.1\r\nhost: reted\r\n\r\n")
        hello = {"type": "hello", "version": 0,
                 "workload": {"name": name, "namespace": ns, "serviceAccount": sa,
                              "address": address}}
        if labels is not None:
            hello["workload"]["labels"] = labels
        if egress is not None:
            hello["workload"]["egress"] = egress
        hello["workload"].update(workload or {})
        self.send(hello)
        self.buf = b""
        self.head = None
        self.recv_size = 1 << 20

    def send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def _line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(self.recv_size)
            if not data:
                raise EOFError("stream closed by reted")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def message(self):
        """The next message (pings skipped), parsed."""
        if self.head is None:
            self.head = b""
            while True:  # the response head
                line = self._line()
                self.head += line + b"\n"
                if line in (b"", b"\r"):
                    break
            assert self.head.startswith(b"HTTP/1.1 200"), self.head
        while True:
            msg = json.loads(self._line())
            if msg.get("type") != "ping":
                return msg

    def ack(self, msg):
        self.send({"type": "ack", "nonce": msg["nonce"], "version": msg["version"]})

    def close(self):
        self.sock.close()
