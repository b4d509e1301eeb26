"""Routing and load balancing through two rete-proxy hops (issue 2): Gateway
API HTTPRoute/TCPRoute/GRPCRoute semantics and the per-service balancers of
a DestinationRule, seen from the application's side.

The mesh: rete-echo instances, each behind its own sidecar on its own
127.x address, and one client sidecar per test whose configuration carries
the routes and DestinationRules the test is about. The echo's JSON answer
names the instance ("instance": its ip:port) and version that served it, and
shows the request it got (path, query, headers).

Statistical assertions use loose bounds on purpose: the machine running them
may be small and loaded. Timings are only ever asserted as lower bounds."""
import collections
import concurrent.futures
import http.client
import json
import socket
import subprocess
import time

import pytest

from controlplane import proxy_metric, wait_for
from helpers import free_port, start_echo
from mesh import Mesh, backend, destination_rule, fresh_host, http_route, service, workload

APP_PORT = 18080  # every echo instance listens on its own host at this port
NS = "test"


# ---------------------------------------------------------------- the mesh


class Backends:
    """The module's shared instances: web-v1-0, web-v1-1 (version v1),
    web-v2-0 (version v2) and api-0, each with its sidecar."""

    def __init__(self, tmp_dir):
        self.mesh = Mesh(tmp_dir, ns=NS)
        self.host = {}  # workload name -> its 127.x address
        m = self.mesh
        m.add(service("web", NS, [(80, "HTTP", APP_PORT)], {"app": "web"}),
              service("web-v1", NS, [(80, "HTTP", APP_PORT)], {"app": "web", "version": "v1"}),
              service("web-v2", NS, [(80, "HTTP", APP_PORT)], {"app": "web", "version": "v2"}),
              service("api", NS, [(80, "HTTP", APP_PORT)], {"app": "api"}))
        for wl, app, version in [("web-v1-0", "web", "v1"), ("web-v1-1", "web", "v1"),
                                 ("web-v2-0", "web", "v2"), ("api-0", "api", "v1")]:
            self.add_instance(wl, app, version, persistent=True)

    def add_instance(self, wl, app, version="v1", echo_args=(), persistent=False, in_mesh=True,
                     weight=None):
        """Start an echo (and, in the mesh, its sidecar) for Workload `wl`
        and add the Workload to the shared resources. Returns its host."""
        host = fresh_host()
        start_echo("--version-label", version, "--quiet", *echo_args, name=app, host=host,
                   port=APP_PORT, persistent=persistent)
        spec = {} if in_mesh else {"inMesh": False}
        if weight is not None:
            spec["weight"] = weight
        self.mesh.add(workload(wl, NS, host, app, {"app": app, "version": version}, **spec))
        if in_mesh:
            self.mesh.start_proxy(wl, app, host, inbound=[(APP_PORT, "HTTP")], persistent=persistent)
        self.host[wl] = host
        return host

    def instance(self, wl):
        return f"{self.host[wl]}:{APP_PORT}"

    def client(self, *docs, upstreams=(), name="client-0", persistent=False):
        """A client sidecar whose configuration adds `docs` (routes,
        DestinationRules, extra Services/Workloads). Returns its host."""
        host = fresh_host()
        self.mesh.start_proxy(name, "client", host, extra_docs=docs, persistent=persistent,
                              upstreams=[(f"{host}:{p}", s, sp) for p, s, sp in upstreams])
        return host


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    return Backends(tmp_path_factory.mktemp("routing"))


class Client:
    """An application talking HTTP/1.1 keep-alive to its sidecar's outbound
    listener, optionally from a chosen source address."""

    def __init__(self, host, source=None, port=15001):
        self.host, self.port, self.source = host, port, source
        self.conn = None

    def request(self, path, host="web", method="GET", headers=None, body=None):
        """Returns (status, response headers as a list, body bytes)."""
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=30,
                    source_address=(self.source, 0) if self.source else None)
            try:
                self.conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, r.getheaders(), data
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # A keep-alive connection the proxy closed between requests.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, path, **kw):
        status, _, data = self.request(path, **kw)
        assert status == 200, (status, data[:500])
        return json.loads(data)

    def close(self):
        if self.conn:
            self.conn.close()


def curl(*args, timeout=20):
    return subprocess.run(["curl", "-sS", "-m", str(timeout), *args], capture_output=True,
                          timeout=timeout + 5)


def curl_head(client_host, path, host="web"):
    """Status and lower-cased response headers of a GET, via curl -i."""
    r = curl("-i", "-H", f"Host: {host}", f"http://{client_host}:15001{path}")
    assert r.returncode == 0, r.stderr.decode()
    head = r.stdout.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")
    status = int(head[0].split()[1])
    headers = collections.defaultdict(list)
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()].append(value.strip())
    return status, headers


def rule(matches=None, backends=None, filters=None, **extra):
    r = {}
    if matches is not None:
        r["matches"] = matches
    if backends is not None:
        r["backendRefs"] = backends
    if filters is not None:
        r["filters"] = filters
    r.update(extra)
    return r


def tag(name):
    """A RequestHeaderModifier filter setting x-rule: name, so the echo
    shows which rule a request matched."""
    return {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-rule", "value": name}]}}


def prefix(value):
    return {"path": {"type": "PathPrefix", "value": value}}


def count_by(client, n, key, path="/", **kw):
    c = collections.Counter()
    for _ in range(n):
        c[client.json(path, **kw)[key]] += 1
    return c


# --------------------------------------------------------- weighted split


def test_weighted_split_90_10(mesh):
    route = http_route("split", NS, "web", [rule(backends=[backend("web-v1", weight=90),
                                                           backend("web-v2", weight=10)])])
    c = Client(mesh.client(route))
    versions = count_by(c, 1000, "version")
    assert set(versions) <= {"v1", "v2"}
    share = versions["v2"] / 1000
    assert 0.05 <= share <= 0.15, versions


def test_weight_zero_is_never_chosen(mesh):
    route = http_route("split", NS, "web", [rule(backends=[backend("web-v1", weight=1),
                                                           backend("web-v2", weight=0)])])
    c = Client(mesh.client(route))
    assert count_by(c, 200, "version") == {"v1": 200}


def test_all_weights_zero_is_500(mesh):
    route = http_route("split", NS, "web", [rule(backends=[backend("web-v2", weight=0)])])
    c = Client(mesh.client(route))
    assert c.request("/")[0] == 500


# ---------------------------------------------------------------- matches

MATCH_RULES = [
    rule([{"path": {"type": "Exact", "value": "/exact"}}], [backend("web")], [tag("exact")]),
    rule([prefix("/api")], [backend("web")], [tag("prefix-api")]),
    rule([prefix("/api/v2")], [backend("web")], [tag("prefix-api-v2")]),
    rule([{"path": {"type": "Exact", "value": "/api/exact"}}], [backend("web")], [tag("exact-api")]),
    rule([{**prefix("/h"), "headers": [{"name": "x-env", "value": "canary"}]}], [backend("web")],
         [tag("one-header")]),
    rule([{**prefix("/h"), "headers": [{"name": "x-env", "value": "canary"},
                                       {"name": "x-team", "value": "a"}]}], [backend("web")],
         [tag("two-headers")]),
    rule([{**prefix("/hr"), "headers": [{"type": "RegularExpression", "name": "x-ver",
                                         "value": "v[0-9]+"}]}], [backend("web")], [tag("header-regex")]),
    rule([{**prefix("/q"), "queryParams": [{"name": "mode", "value": "fast"}]}], [backend("web")],
         [tag("query")]),
    rule([{**prefix("/m"), "method": "POST"}], [backend("web")], [tag("method-post")]),
    rule([prefix("/")], [backend("web")], [tag("default")]),
]


@pytest.fixture(scope="module")
def match_client(mesh):
    # The route is split in two documents: precedence runs across routes.
    host = mesh.client(http_route("matches-a", NS, "web", MATCH_RULES[:4]),
                       http_route("matches-b", NS, "web", MATCH_RULES[4:]),
                       name="client-match", persistent=True)
    c = Client(host)
    yield c
    c.close()


@pytest.mark.parametrize("method,path,headers,expected", [
    ("GET", "/exact", {}, "exact"),
    ("GET", "/exact/more", {}, "default"),          # Exact is not a prefix
    ("GET", "/exact?x=1", {}, "exact"),             # the query is not part of the path
    ("GET", "/api", {}, "prefix-api"),
    ("GET", "/api/", {}, "prefix-api"),
    ("GET", "/api/x", {}, "prefix-api"),
    ("GET", "/apix", {}, "default"),                # element-wise prefix
    ("GET", "/api/v2/users", {}, "prefix-api-v2"),  # longer prefix wins
    ("GET", "/api/v2", {}, "prefix-api-v2"),
    ("GET", "/api/v20", {}, "prefix-api"),
    ("GET", "/api/exact", {}, "exact-api"),         # exact beats prefix
    ("GET", "/api/exact/x", {}, "prefix-api"),
    ("GET", "/h", {"x-env": "canary"}, "one-header"),
    ("GET", "/h", {"X-Env": "canary", "x-team": "a"}, "two-headers"),  # more headers win
    ("GET", "/h", {"x-env": "prod"}, "default"),
    ("GET", "/h", {"x-env": "Canary"}, "default"),  # values are case-sensitive
    ("GET", "/hr", {"x-ver": "v12"}, "header-regex"),
    ("GET", "/hr", {"x-ver": "v12x"}, "default"),
    ("GET", "/q?mode=fast", {}, "query"),
    ("GET", "/q?a=1&mode=fast", {}, "query"),
    ("GET", "/q?mode=slow", {}, "default"),
    ("GET", "/q", {}, "default"),
    ("POST", "/m", {}, "method-post"),
    ("GET", "/m", {}, "default"),
])
def test_match(match_client, method, path, headers, expected):
    body = match_client.json(path, method=method, headers=headers, body=b"" if method == "POST" else None)
    assert body["headers"].get("x-rule") == expected, body


def test_regular_expression_path(mesh):
    """PCRE2, anchored at both ends. Regular expressions rank after every
    PathPrefix (implementation-specific in the spec; Istio does the same),
    so this route has no catch-all prefix."""
    rules = [rule([{"path": {"type": "RegularExpression", "value": "/re/[0-9]+"}}], [backend("web")],
                  [tag("regex")]),
             rule([{"path": {"type": "RegularExpression", "value": "/re/.*"}}], [backend("web")],
                  [tag("regex-any")]),
             rule([prefix("/re/x")], [backend("web")], [tag("prefix")])]
    c = Client(mesh.client(http_route("regex", NS, "web", rules)))
    assert c.json("/re/123")["headers"]["x-rule"] == "regex"
    assert c.json("/re/123?q=1")["headers"]["x-rule"] == "regex"
    assert c.json("/re/12a")["headers"]["x-rule"] == "regex-any"    # anchored at the end
    assert c.json("/re/123/x")["headers"]["x-rule"] == "regex-any"
    assert c.json("/re/x/1")["headers"]["x-rule"] == "prefix"       # a prefix beats a regex
    assert c.request("/a/re/123")[0] == 404                         # anchored at the start


def test_precedence_details(mesh):
    """Trailing slashes of a PathPrefix do not count; method beats headers,
    headers beat query parameters; between equal matches the older route
    (earlier in the configuration) wins."""
    route_a = http_route("a-first", NS, "web", [
        rule([prefix("/pre/")], [backend("web")], [tag("pre-slash")]),
        rule([{**prefix("/p"), "headers": [{"name": "x-a", "value": "1"}]}], [backend("web")], [tag("header")]),
        rule([{**prefix("/p"), "method": "GET"}], [backend("web")], [tag("method")]),
        rule([{**prefix("/p"), "queryParams": [{"name": "a", "value": "1"}]}], [backend("web")], [tag("query")]),
        rule([{**prefix("/p"), "queryParams": [{"type": "RegularExpression", "name": "id",
                                                 "value": "[0-9]{3}"}]}], [backend("web")], [tag("query-re")]),
        rule([prefix("/tie")], [backend("web")], [tag("older")]),
    ])
    route_b = http_route("0-second", NS, "web", [rule([prefix("/tie")], [backend("web")], [tag("newer")]),
                                                 rule([prefix("/")], [backend("web")], [tag("default")])])
    c = Client(mesh.client(route_a, route_b))

    def which(path, **kw):
        return c.json(path, **kw)["headers"]["x-rule"]

    assert which("/pre") == "pre-slash"
    assert which("/pre/x") == "pre-slash"
    assert which("/prefix") == "default"
    assert which("/p", headers={"x-a": "1"}) == "method"
    assert which("/p", method="POST", body=b"", headers={"x-a": "1"}) == "header"
    assert which("/p?a=1", method="POST", body=b"", headers={"x-a": "1"}) == "header"
    assert which("/p?a=1", method="POST", body=b"") == "query"
    assert which("/p?id=123", method="POST", body=b"") == "query-re"
    assert which("/p?id=1234", method="POST", body=b"") == "default"
    assert which("/tie/x") == "older"


def test_route_attached_to_one_port_only(mesh):
    svc = service("multi", NS, [(80, "HTTP", APP_PORT), (8080, "HTTP", APP_PORT)], {"app": "web"})
    route = http_route("to-v2", NS, "multi", [rule(backends=[backend("web-v2")])], parent_port=8080)
    c = Client(mesh.client(svc, route))
    assert {c.json("/", host="multi:8080")["version"] for _ in range(10)} == {"v2"}
    assert {c.json("/", host="multi:80")["version"] for _ in range(30)} == {"v1", "v2"}


def test_no_matching_rule_is_404(mesh):
    route = http_route("only-exact", NS, "web",
                       [rule([{"path": {"type": "Exact", "value": "/only"}}], [backend("web")])])
    c = Client(mesh.client(route))
    assert c.request("/only")[0] == 200
    status, _, body = c.request("/other")
    assert status == 404 and b"/other" in body


def test_route_on_one_service_leaves_others_alone(mesh):
    route = http_route("web-to-v2", NS, "web", [rule(backends=[backend("web-v2")])])
    c = Client(mesh.client(route))
    assert c.json("/")["version"] == "v2"
    assert c.json("/", host="api")["service"] == "api"


# ---------------------------------------------------------------- filters


def test_request_header_modifier(mesh):
    f = {"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x-set", "value": "new"}],
        "add": [{"name": "x-add", "value": "b"}],
        "remove": ["x-remove"]}}
    c = Client(mesh.client(http_route("rhm", NS, "web", [rule(backends=[backend("web")], filters=[f])])))
    h = c.json("/", headers={"x-set": "old", "x-add": "a", "x-remove": "gone", "x-keep": "k"})["headers"]
    assert h["x-set"] == "new"
    assert h["x-add"] == "a, b"
    assert "x-remove" not in h
    assert h["x-keep"] == "k"
    # set and add also work when the request lacks the header
    h = c.json("/")["headers"]
    assert h["x-set"] == "new" and h["x-add"] == "b"


def test_request_header_modifier_on_repeated_headers(mesh):
    f = {"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "X-Set", "value": "new"}], "remove": ["X-Remove"]}}
    host = mesh.client(http_route("rhm", NS, "web", [rule(backends=[backend("web")], filters=[f])]))
    for extra in ([], ["--http2-prior-knowledge"]):
        r = curl(*extra, "-H", "Host: web", "-H", "x-set: 1", "-H", "x-set: 2", "-H", "x-remove: 1",
                 "-H", "x-remove: 2", f"http://{host}:15001/")
        h = json.loads(r.stdout)["headers"]
        assert h["x-set"] == "new" and "x-remove" not in h, (extra, h)


def test_response_header_modifier(mesh):
    f = {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
        "set": [{"name": "x-echo-version", "value": "overridden"}],
        "add": [{"name": "x-added", "value": "yes"}],
        "remove": ["x-echo-service"]}}
    host = mesh.client(http_route("resp", NS, "web", [rule(backends=[backend("web")], filters=[f])]))
    status, h = curl_head(host, "/")
    assert status == 200
    assert h["x-echo-version"] == ["overridden"]
    assert h["x-added"] == ["yes"]
    assert "x-echo-service" not in h


REDIRECT_RULES = [
    rule([prefix("/old")], filters=[{"type": "RequestRedirect", "requestRedirect": {
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}, "statusCode": 301}}]),
    rule([prefix("/secure")], filters=[{"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "hostname": "example.com"}}]),
    rule([prefix("/moved")], filters=[{"type": "RequestRedirect", "requestRedirect": {
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/elsewhere"}, "port": 8443}}]),
]


@pytest.mark.parametrize("path,status,location", [
    ("/old/page?q=1", 301, "http://web/new/page?q=1"),
    ("/old", 301, "http://web/new"),
    ("/secure/x", 302, "https://example.com/secure/x"),
    ("/moved/a/b", 302, "http://web:8443/elsewhere"),
])
def test_request_redirect_carries_location(mesh, path, status, location):
    host = mesh.client(http_route("redir", NS, "web", REDIRECT_RULES))
    got_status, h = curl_head(host, path)
    assert got_status == status
    assert h["location"] == [location]


def test_redirect_keeps_the_request_host_without_its_port(mesh):
    host = mesh.client(http_route("redir", NS, "web", REDIRECT_RULES))
    _, h = curl_head(host, "/old/a", host="web.test:80")
    assert h["location"] == ["http://web.test/new/a"]
    # as an HTTP proxy: the host comes from the absolute URL
    r = curl("-i", "-x", f"http://{host}:15001", "http://web.test.svc/old/b?c=d")
    assert "\r\nlocation: http://web.test.svc/new/b?c=d\r\n" in r.stdout.decode().lower()


def test_redirect_over_http2(mesh):
    host = mesh.client(http_route("redir", NS, "web", REDIRECT_RULES))
    r = curl("-i", "--http2-prior-knowledge", "-H", "Host: web", f"http://{host}:15001/old/x")
    out = r.stdout.decode()
    assert out.startswith("HTTP/2 301"), out
    assert "location: http://web/new/x\r\n" in out.lower()


def test_url_rewrite(mesh):
    rules = [
        rule([prefix("/rw")], [backend("web")], [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/rewritten"}}}]),
        rule([prefix("/strip")], [backend("web")], [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]),
        rule([prefix("/full")], [backend("web")], [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplaceFullPath", "replaceFullPath": "/replaced"}}}]),
        rule([prefix("/host")], [backend("web")], [{"type": "URLRewrite", "urlRewrite": {
            "hostname": "rewritten.example"}}]),
    ]
    c = Client(mesh.client(http_route("rewrite", NS, "web", rules)))
    b = c.json("/rw/a/b?x=1")
    assert (b["path"], b["query"]) == ("/rewritten/a/b", "x=1")
    assert c.json("/rw")["path"] == "/rewritten"
    assert c.json("/strip/a")["path"] == "/a"
    b = c.json("/full/any/thing?y=2")
    assert (b["path"], b["query"]) == ("/replaced", "y=2")
    b = c.json("/host/h")
    assert b["headers"]["host"] == "rewritten.example" and b["path"] == "/host/h"


# ---------------------------------------------------------------- timeouts


def test_route_request_timeout(mesh):
    route = http_route("timeout", NS, "web", [rule([prefix("/")], [backend("web")],
                                                    timeouts={"request": "500ms"})])
    c = Client(mesh.client(route))
    t0 = time.monotonic()
    status, _, _ = c.request("/slow?delay=3000")
    assert status == 504
    assert time.monotonic() - t0 >= 0.45
    assert c.request("/fast")[0] == 200


@pytest.mark.parametrize("timeouts", [{"backendRequest": "500ms"},
                                      {"request": "10s", "backendRequest": "500ms"}],
                         ids=["backend-only", "both"])
def test_route_backend_request_timeout(mesh, timeouts):
    """Regression: timeouts.backendRequest was parsed and then ignored."""
    route = http_route("timeout", NS, "web", [rule([prefix("/")], [backend("web")], timeouts=timeouts)])
    c = Client(mesh.client(route))
    t0 = time.monotonic()
    assert c.request("/slow?delay=4000")[0] == 504
    assert time.monotonic() - t0 >= 0.45
    assert c.request("/fast")[0] == 200


def test_route_timeout_over_http2(mesh):
    route = http_route("timeout", NS, "web", [rule([prefix("/")], [backend("web")],
                                                    timeouts={"request": "500ms"})])
    host = mesh.client(route)
    r = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: web",
             f"http://{host}:15001/slow?delay=3000")
    assert r.stdout == b"504", r.stderr
    r = curl("--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: web",
             f"http://{host}:15001/fast")
    assert r.stdout == b"200", r.stderr


# ---------------------------------------------------------- load balancing

WEB_INSTANCES = ("web-v1-0", "web-v1-1", "web-v2-0")


def test_round_robin_spreads_evenly(mesh):
    dr = destination_rule("web", NS, "web", loadBalancer={"simple": "ROUND_ROBIN"})
    c = Client(mesh.client(dr))
    counts = count_by(c, 300, "instance")
    assert set(counts) == {mesh.instance(w) for w in WEB_INSTANCES}, counts
    for n in counts.values():
        assert 0.20 * 300 <= n <= 0.46 * 300, counts


def _hash_sticky(mesh, c, keyed_kwargs, n_keys=20, repeats=4):
    """Every key reaches one instance; the keys together reach more than one."""
    chosen = {}
    for k in range(n_keys):
        seen = {c.json("/", **keyed_kwargs(k))["instance"] for _ in range(repeats)}
        assert len(seen) == 1, (k, seen)
        chosen[k] = seen.pop()
    assert len(set(chosen.values())) > 1, chosen
    return chosen


@pytest.mark.parametrize("algo", [{}, {"ringHash": {"minimumRingSize": 1024}}, {"maglev": {}}],
                         ids=["default", "ring", "maglev"])
def test_consistent_hash_on_header(mesh, algo):
    dr = destination_rule("web", NS, "web",
                          loadBalancer={"consistentHash": {"httpHeaderName": "x-user", **algo}})
    c = Client(mesh.client(dr))
    first = _hash_sticky(mesh, c, lambda k: {"headers": {"x-user": f"user-{k}"}})
    # a new connection (and a new client sidecar) keeps the mapping
    c2 = Client(mesh.client(dr))
    for k in range(5):
        assert c2.json("/", headers={"x-user": f"user-{k}"})["instance"] == first[k]


@pytest.mark.parametrize("algo", [{}, {"maglev": {}}], ids=["ring", "maglev"])
def test_consistent_hash_on_cookie(mesh, algo):
    dr = destination_rule("web", NS, "web", loadBalancer={"consistentHash": {
        "httpCookie": {"name": "session", "ttl": "0s"}, **algo}})
    c = Client(mesh.client(dr))
    _hash_sticky(mesh, c, lambda k: {"headers": {"cookie": f"a=1; session=s{k}; b=2"}})


@pytest.mark.xfail(strict=True, reason="httpCookie.ttl is parsed but no cookie is generated yet")
def test_consistent_hash_cookie_with_ttl_is_generated_when_absent(mesh):
    """Istio/Envoy: with httpCookie.ttl set, a request without the cookie
    gets one in Set-Cookie, and sending it back keeps the instance."""
    dr = destination_rule("web", NS, "web", loadBalancer={"consistentHash": {
        "httpCookie": {"name": "session", "ttl": "60s"}}})
    host = mesh.client(dr)
    status, h = curl_head(host, "/")
    assert status == 200
    assert any(v.startswith("session=") for v in h["set-cookie"]), dict(h)


@pytest.mark.parametrize("algo", [{}, {"maglev": {}}], ids=["ring", "maglev"])
def test_consistent_hash_on_source_ip(mesh, algo):
    dr = destination_rule("web", NS, "web", loadBalancer={"consistentHash": {"useSourceIp": True, **algo}})
    host = mesh.client(dr)
    chosen = {}
    for k in range(16):
        src = f"127.0.{200 + k % 50}.{10 + k}"
        c = Client(host, source=src)
        seen = {c.json("/")["instance"] for _ in range(3)}
        c.close()
        # a second connection from the same address lands on the same instance
        c = Client(host, source=src)
        seen.add(c.json("/")["instance"])
        c.close()
        assert len(seen) == 1, (src, seen)
        chosen[src] = seen.pop()
    assert len(set(chosen.values())) > 1, chosen


def _weighted_service(mesh):
    """Service `wt` over two Workloads of weight 3 and 1 that point at the
    sidecars of web-v1-0 and web-v2-0 (their inbound port is the same)."""
    return [service("wt", NS, [(80, "HTTP", APP_PORT)], {"app": "wt"}),
            workload("wt-heavy", NS, mesh.host["web-v1-0"], "web", {"app": "wt"}, weight=3),
            workload("wt-light", NS, mesh.host["web-v2-0"], "web", {"app": "wt"}, weight=1)]


# Not the default peak EWMA: there latency decides, and one slow answer
# (a scheduling hiccup on a loaded machine) outweighs a 3:1 weight for
# seconds; with equal latencies it sends ~95% to the heavier endpoint, since
# candidates are drawn by weight *and* costs are divided by weight.
@pytest.mark.parametrize("lb", ["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"])
def test_endpoint_weights(mesh, lb):
    docs = _weighted_service(mesh) + [destination_rule("wt", NS, "wt", loadBalancer={"simple": lb})]
    c = Client(mesh.client(*docs))
    counts = count_by(c, 400, "version", host="wt")
    heavy = counts["v1"] / 400
    assert 0.6 <= heavy <= 0.9, counts


def test_peak_ewma_avoids_a_slow_instance(mesh):
    mesh.mesh.add(service("ewma", NS, [(80, "HTTP", APP_PORT)], {"app": "ewma"}))
    for i in range(2):
        mesh.add_instance(f"ewma-fast-{i}", "ewma")
    slow = mesh.add_instance("ewma-slow", "ewma", echo_args=("--latency", "200"))
    c = Client(mesh.client())
    counts = count_by(c, 200, "instance", host="ewma")
    assert sum(counts.values()) == 200
    assert counts[f"{slow}:{APP_PORT}"] < 200 / 3, counts
    assert len(counts) >= 2, counts


def test_outlier_detection_ejects_a_failing_instance(mesh):
    mesh.mesh.add(service("flaky", NS, [(80, "HTTP", APP_PORT)], {"app": "flaky"}))
    for i in range(2):
        mesh.add_instance(f"flaky-ok-{i}", "flaky")
    mesh.add_instance("flaky-bad", "flaky", echo_args=("--failure-rate", "1.0"))
    dr = destination_rule("flaky", NS, "flaky", loadBalancer={"simple": "ROUND_ROBIN"},
                          outlierDetection={"consecutive5xxErrors": 3, "interval": "500ms",
                                            "baseEjectionTime": "5m", "maxEjectionPercent": 50})
    client = mesh.client(dr)
    c = Client(client)
    first = collections.Counter(c.request("/", host="flaky")[0] for _ in range(30))
    assert first[503] >= 3, first  # it did fail before being ejected
    wait_for(lambda: proxy_metric(client, "rete_proxy_lb_ejections_total") >= 1, 20, 0.1, "the ejection")
    after = collections.Counter(c.request("/", host="flaky")[0] for _ in range(100))
    assert after[200] >= 95, after


# ---------------------------------------------------------------- outside the mesh


def test_endpoint_outside_the_mesh(mesh):
    mesh.mesh.add(service("plain", NS, [(80, "HTTP", APP_PORT)], {"app": "plain"}))
    host = mesh.add_instance("plain-0", "plain", in_mesh=False)
    c = Client(mesh.client())
    b = c.json("/outside?x=1", host="plain")
    assert b["service"] == "plain" and b["instance"] == f"{host}:{APP_PORT}"
    assert b["path"] == "/outside" and b["query"] == "x=1"
    # plaintext straight from the client sidecar: no server-side proxy added XFCC
    assert "x-forwarded-client-cert" not in b["headers"]
    assert "x-rete-target-port" not in b["headers"]


# ---------------------------------------------------------------- TCPRoute


def _http_over_socket(addr, host="tcp"):
    with socket.create_connection(addr, timeout=20) as s:
        s.sendall(f"GET /tcp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    return json.loads(body)


@pytest.mark.parametrize("weights", [(1, 1), (1, 0)], ids=["split", "weight-zero"])
def test_tcp_route_splits_between_backends(mesh, weights):
    """A TCP Service whose TCPRoute splits connections between two TCP
    Services; the "TCP" payload is HTTP/1.1, so the echo names the instance
    that got each connection. Reached through an explicit upstream listener."""
    docs = [service("tcp", NS, [(9000, "TCP", APP_PORT)], {"app": "tcp-none"}),
            service("tcp-a", NS, [(9000, "TCP", APP_PORT)], {"app": "tcp-a"}),
            service("tcp-b", NS, [(9000, "TCP", APP_PORT)], {"app": "tcp-b"}),
            workload("tcp-a-0", NS, mesh.host["web-v1-0"], "web", {"app": "tcp-a"}),
            workload("tcp-b-0", NS, mesh.host["web-v2-0"], "web", {"app": "tcp-b"}),
            http_route("tcp-split", NS, "tcp", [{"backendRefs": [backend("tcp-a", 9000, weights[0]),
                                                                  backend("tcp-b", 9000, weights[1])]}],
                       kind="TCPRoute")]
    port = free_port()
    host = mesh.client(*docs, upstreams=[(port, "tcp", 9000)])
    seen = collections.Counter(_http_over_socket((host, port))["version"] for _ in range(40))
    if weights[1]:
        assert seen["v1"] >= 5 and seen["v2"] >= 5, seen
    else:
        assert seen == {"v1": 40}, seen


# ---------------------------------------------------------------- GRPCRoute


class GrpcBackend:
    """A python grpcio server answering every unary method with
    "<name> <full method>" (raw bytes, no protobuf), behind its sidecar."""

    def __init__(self, mesh, wl, app, port):
        import grpc
        self.host = fresh_host()
        name = wl

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                method = details.method
                return grpc.unary_unary_rpc_method_handler(
                    lambda req, ctx: f"{name} {method}".encode())

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((Handler(),))
        self.server.add_insecure_port(f"{self.host}:{port}")
        self.server.start()
        mesh.mesh.start_proxy(wl, app, self.host, inbound=[(port, "GRPC")],
                              extra_docs=[workload(wl, NS, self.host, app, {"app": app})])
        self.doc = workload(wl, NS, self.host, app, {"app": app})

    def stop(self):
        self.server.stop(0)


def test_grpc_route_by_service_method_and_header(mesh):
    import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)
    port = 50051
    backends = [GrpcBackend(mesh, "grpc-a-0", "grpc-a", port), GrpcBackend(mesh, "grpc-b-0", "grpc-b", port),
                GrpcBackend(mesh, "grpc-c-0", "grpc-c", port)]
    try:
        docs = [service(n, NS, [(port, "GRPC")], {"app": n}) for n in ("grpc", "grpc-a", "grpc-b", "grpc-c")]
        docs += [b.doc for b in backends]
        route = http_route("grpc-split", NS, "grpc", [
            rule([{"method": {"service": "demo.Echo", "method": "Special"}}], [backend("grpc-a", port)]),
            rule([{"method": {"service": "demo.Echo"}}], [backend("grpc-b", port)]),
            rule([{"method": {"service": "demo.Echo"}, "headers": [{"name": "x-canary", "value": "1"}]}],
                 [backend("grpc-c", port)]),
            rule([{"method": {"type": "RegularExpression", "service": "demo\\.Other.*", "method": "Get.*"}}],
                 [backend("grpc-c", port)]),
        ], kind="GRPCRoute")
        host = mesh.client(*docs, route)
        with grpc.insecure_channel(f"{host}:15001", options=[("grpc.default_authority", f"grpc:{port}")]) as ch:
            def call(method, md=None):
                return ch.unary_unary(method)(b"x", timeout=20, metadata=md).decode()

            assert call("/demo.Echo/Special") == "grpc-a-0 /demo.Echo/Special"
            assert call("/demo.Echo/Plain") == "grpc-b-0 /demo.Echo/Plain"
            assert call("/demo.Echo/Plain", [("x-canary", "1")]) == "grpc-c-0 /demo.Echo/Plain"
            # an exact method beats a service-wide match with headers
            assert call("/demo.Echo/Special", [("x-canary", "1")]).startswith("grpc-a-0 ")
            assert call("/demo.OtherThing/GetIt") == "grpc-c-0 /demo.OtherThing/GetIt"
            with pytest.raises(grpc.RpcError) as e:
                call("/demo.OtherThing/Put")
            assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value  # 404 -> UNIMPLEMENTED
    finally:
        for b in backends:
            b.stop()
