"""Distributed tracing (src/proxy/http/filter_trace.c, docs/observability.md):
traces through three services (client -> a -> b, the echo service of `a`
forwarding the trace headers with `?call=`), received by a test collector
that decodes OTLP/HTTP JSON with the official OpenTelemetry proto definitions
(otlp.py: opentelemetry-proto's ExportTraceServiceRequest, unknown fields and
wrong types refused) and Zipkin v2 JSON; parent/child links, sampling flags and trace
ids across hops; head sampling (0% follows the parent, 100% starts a trace
for every request); W3C and B3 (single and multi) in and out; and the
exporter's bounded queue (a collector that never answers: spans dropped and
counted, requests unaffected)."""
import http.client
import http.server
import json
import re
import socket
import threading
import urllib.request

import otlp

from helpers import start_echo, wait_for
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload

NS = "test"
T = 30
SERVER, CLIENT = 2, 3  # OTLP SpanKind


class Collector:
    """An OTLP/HTTP + Zipkin v2 JSON receiver (http.server in a thread): every
    POST body kept by path, as sent (OTLP is decoded with the official proto
    definitions when read: otlp.py)."""

    def __init__(self, host):
        self.posts = []  # (path, body bytes)
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers["Content-Length"])
                body = self.rfile.read(n)
                assert self.headers["Content-Type"] == "application/json"
                with outer.lock:
                    outer.posts.append((self.path, body))
                self.send_response(200 if self.path == "/v1/traces" else 202)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), H)
        self.addr = f"{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def otlp_requests(self):
        """Every body received on /v1/traces as an ExportTraceServiceRequest
        (opentelemetry-proto's collector/trace/v1), decoded by
        google.protobuf.json_format: an unknown field or a value of the wrong
        type fails the test here."""
        with self.lock:
            bodies = [b for path, b in self.posts if path == "/v1/traces"]
        out = []
        for b in bodies:
            check_otlp_json_mapping(json.loads(b))
            out.append(otlp.parse_json(b))
        return out

    def otlp_spans(self):
        """Every span received on /v1/traces, each with its resource's
        service.name and its attributes as a dict."""
        out = []
        for req in self.otlp_requests():
            for rs in req.resource_spans:
                res = {a.key: otlp.any_value(a.value)[0] for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    assert ss.scope.name == "rete-proxy" and ss.scope.version
                    for s in ss.spans:
                        out.append(decode_otlp_span(s, res))
        return out

    def zipkin_spans(self):
        with self.lock:
            return [s for path, body in self.posts if path == "/api/v2/spans" for s in json.loads(body)]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def check_otlp_json_mapping(doc):
    """What the proto's JSON parser lets through but OTLP/JSON forbids
    (OTLP specification, "JSON Protobuf Encoding"): enums as names (kind,
    status code must be integers)."""
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                assert isinstance(s["kind"], int), s
                assert isinstance(s.get("status", {}).get("code", 0), int), s


def decode_otlp_span(s, res):
    """One decoded Span (trace_pb2.Span), checked and flattened: ids of the
    right length, kind, times, flags (sampled, parent remote or not) and
    the attributes' value types."""
    pb = otlp.trace_pb2()
    assert len(s.trace_id) == 16 and s.trace_id != bytes(16), s
    assert len(s.span_id) == 8 and s.span_id != bytes(8), s
    assert len(s.parent_span_id) in (0, 8), s
    assert s.kind in (pb.Span.SPAN_KIND_SERVER, pb.Span.SPAN_KIND_CLIENT), s
    assert 0 < s.start_time_unix_nano <= s.end_time_unix_nano, s
    # Sampled (every exported span is), and "parent remote" known: set
    # exactly when there is a parent (it came in a header).
    assert s.flags & otlp.FLAGS_TRACE_FLAGS_MASK == 0x01, s.flags
    assert s.flags & otlp.FLAGS_HAS_IS_REMOTE, s.flags
    assert bool(s.flags & otlp.FLAGS_IS_REMOTE) == bool(s.parent_span_id), s.flags
    attrs = {}
    for a in s.attributes:
        v, typ = otlp.any_value(a.value)
        assert typ in ("string_value", "int_value"), a
        attrs[a.key] = v
    status = {"code": s.status.code} if s.status.code else {}
    return {"trace": s.trace_id.hex(), "id": s.span_id.hex(), "parent": s.parent_span_id.hex() or None,
            "kind": s.kind, "name": s.name, "attrs": attrs, "service": res["service.name"], "status": status}


def metric(host, name):
    with urllib.request.urlopen(f"http://{host}:15000/metrics", timeout=T) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def mesh_config(collector, sampling, fmt="otlp"):
    return {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig", "metadata": {"name": "mesh", "namespace": "rete-system"},
            "spec": {"tracing": {"sampling": sampling, "collector": collector, "format": fmt}}}


def three_services(tmp_path, collector, sampling, fmt="otlp", proxy_args=()):
    """client-0 (the test's sidecar) -> a (echo, whose sidecar has an
    upstream listener for b on a_host:9191) -> b (echo)."""
    m = Mesh(tmp_path)
    hosts = {n: fresh_host() for n in ("client", "a", "b")}
    echoes = {}
    for n in ("a", "b"):
        proc, addr = start_echo(name=n, host=hosts[n])
        echoes[n] = int(addr.rsplit(":", 1)[1])
    m.add(service("a", NS, [(80, "HTTP", echoes["a"])]), service("b", NS, [(80, "HTTP", echoes["b"])]),
          *(workload(f"{n}-0", NS, hosts[n], n, {"app": n}) for n in hosts),
          mesh_config(collector, sampling, fmt))
    m.start_proxy("b-0", "b", hosts["b"], *proxy_args, inbound=[(echoes["b"], "HTTP")])
    m.start_proxy("a-0", "a", hosts["a"], *proxy_args, inbound=[(echoes["a"], "HTTP")],
                  upstreams=[(f"{hosts['a']}:9191", "b", 80)])
    m.start_proxy("client-0", "client", hosts["client"], *proxy_args)
    return m, hosts


def get(hosts, path, headers=None):
    c = http.client.HTTPConnection(hosts["client"], 15001, timeout=T)
    try:
        c.request("GET", path, headers={"Host": "a", **(headers or {})})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def call_b(hosts):
    return f"/hop?call={hosts['a']}:9191/leaf"


def trace_of(col, trace_id, n):
    spans = wait_for(lambda: (lambda s: s if len(s) >= n else None)(
        [s for s in col.otlp_spans() if s["trace"] == trace_id]), timeout=T, what=f"{n} spans of {trace_id}")
    assert len(spans) == n, spans
    return spans


def check_chain(spans, trace_id, root_parent=None):
    """client-0 CLIENT -> a-0 SERVER -> a-0 CLIENT -> b-0 SERVER, each the
    parent of the next."""
    by = {(s["service"], s["kind"]): s for s in spans}
    c1, s1, c2, s2 = by[("client", CLIENT)], by[("a", SERVER)], by[("a", CLIENT)], by[("b", SERVER)]
    assert c1["parent"] == root_parent
    assert s1["parent"] == c1["id"] and c2["parent"] == s1["id"] and s2["parent"] == c2["id"]
    assert len({s["id"] for s in spans}) == 4
    assert all(s["trace"] == trace_id for s in spans)
    return c1, s1, c2, s2


def test_whole_trace_through_three_services(tmp_path):
    col = Collector("127.0.0.1")
    m, hosts = three_services(tmp_path, col.addr, 100)
    try:
        st, doc = get(hosts, call_b(hosts), headers={"x-request-id": "req-42"})
        assert st == 200 and doc["call"]["status"] == 200, doc
        # What each app saw: its own sidecar's SERVER span as the parent.
        tp_a = doc["headers"]["traceparent"]
        tp_b = doc["call"]["body"]["headers"]["traceparent"]
        trace_id = tp_a.split("-")[1]
        assert tp_b.split("-")[1] == trace_id and tp_a.endswith("-01") and tp_b.endswith("-01")
        c1, s1, c2, s2 = check_chain(trace_of(col, trace_id, 4), trace_id)
        assert tp_a.split("-")[2] == s1["id"] and tp_b.split("-")[2] == s2["id"]
        # OpenTelemetry HTTP semantic conventions, and the mesh identities.
        for s in (c1, s1, c2, s2):
            a = s["attrs"]
            assert s["name"] == "GET" and a["http.request.method"] == "GET"
            assert a["http.response.status_code"] == 200 and s["status"] == {}
            assert a["network.protocol.name"] == "http" and a["rete.request_id"] == "req-42"
        assert c1["attrs"]["url.path"] == "/hop" and s2["attrs"]["url.path"] == "/leaf"
        assert c1["attrs"]["server.address"] == "a" and c1["attrs"]["network.protocol.version"] == "2"
        assert c1["attrs"]["rete.source.workload"] == "client-0"
        assert c1["attrs"]["rete.destination.workload"] == "a-0"
        assert c1["attrs"]["rete.destination.principal"] == "spiffe://cluster.local/ns/test/sa/a"
        assert c1["attrs"]["rete.destination.service"] == "a.test.svc.cluster.local"
        assert s1["attrs"]["rete.source.workload"] == "client-0"  # the peer metadata
        assert s1["attrs"]["rete.source.principal"] == "spiffe://cluster.local/ns/test/sa/client"
        assert s1["attrs"]["rete.destination.workload"] == "a-0"
        assert s2["attrs"]["rete.source.workload"] == "a-0" and s2["attrs"]["rete.destination.workload"] == "b-0"
        assert s1["attrs"]["network.protocol.version"] == "2" and s1["attrs"]["client.address"]
        # 100%: a request without context starts a trace of its own, every time.
        traces = set()
        for _ in range(5):
            st, doc = get(hosts, "/x")
            assert st == 200
            traces.add(doc["headers"]["traceparent"].split("-")[1])
        assert len(traces) == 5
        for t in traces:
            trace_of(col, t, 2)
        # An error is marked as one (client span: 4xx and 5xx).
        st, doc = get(hosts, "/x?status=503")
        spans = trace_of(col, doc["headers"]["traceparent"].split("-")[1], 2)
        for s in spans:
            assert s["attrs"]["http.response.status_code"] == 503 and s["status"] == {"code": 2}
            assert s["attrs"]["error.type"] == "503"
        assert metric(hosts["client"], "rete_proxy_spans_dropped_total") == 0
        wait_for(lambda: metric(hosts["client"], "rete_proxy_spans_exported_total") == 7, timeout=T)
        stop_and_check_proxies(m)
    finally:
        col.close()


def test_sampling_follows_the_parent(tmp_path):
    """At 0%: no span for a request without context, nor for a parent that
    says "not sampled" (its headers pass through as sent); a parent that
    says "sampled" gets the whole trace, under the parent's trace id."""
    col = Collector("127.0.0.1")
    m, hosts = three_services(tmp_path, col.addr, 0)
    try:
        st, doc = get(hosts, call_b(hosts))
        assert st == 200 and "traceparent" not in doc["headers"]
        assert "traceparent" not in doc["call"]["body"]["headers"]
        unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        st, doc = get(hosts, call_b(hosts), headers={"traceparent": unsampled, "tracestate": "k=v"})
        assert st == 200 and doc["headers"]["traceparent"] == unsampled
        assert doc["call"]["body"]["headers"]["traceparent"] == unsampled
        sampled_tid = "4bf92f3577b34da6a3ce929d0e0e4736"
        st, doc = get(hosts, call_b(hosts), headers={"traceparent": f"00-{sampled_tid}-00f067aa0ba902b7-01",
                                                      "tracestate": "congo=t61rcWkgMzE"})
        assert st == 200
        b_headers = doc["call"]["body"]["headers"]
        assert b_headers["tracestate"] == "congo=t61rcWkgMzE"  # passed through untouched
        check_chain(trace_of(col, sampled_tid, 4), sampled_tid, root_parent="00f067aa0ba902b7")
        # Nothing but that trace was exported (the sampled trace's spans came
        # after the unsampled requests', on the same proxies, in order).
        assert {s["trace"] for s in col.otlp_spans()} == {sampled_tid}
        assert metric(hosts["client"], "rete_proxy_spans_sampled_total") == 1
        stop_and_check_proxies(m)
    finally:
        col.close()


def test_b3_single_and_multi(tmp_path):
    col = Collector("127.0.0.1")
    m, hosts = three_services(tmp_path, col.addr, 0)
    try:
        # b3 single, 64-bit trace id: kept, left-padded to 128 bits.
        st, doc = get(hosts, call_b(hosts), headers={"b3": "80f198ee56343ba8-e457b5a2e4d86bd1-1"})
        assert st == 200
        tid = "0000000000000000" + "80f198ee56343ba8"
        spans = trace_of(col, tid, 4)
        c1, s1, c2, s2 = check_chain(spans, tid, root_parent="e457b5a2e4d86bd1")
        b3_b = doc["call"]["body"]["headers"]["b3"]
        assert b3_b == f"{tid}-{s2['id']}-1-{c2['id']}"
        assert doc["call"]["body"]["headers"]["traceparent"] == f"00-{tid}-{s2['id']}-01"
        # x-b3-* multi headers.
        tid2 = "463ac35c9f6413ad48485a3953bb6124"
        st, doc = get(hosts, call_b(hosts), headers={"x-b3-traceid": tid2, "x-b3-spanid": "a2fb4a1d1a96d312",
                                                      "x-b3-sampled": "1"})
        assert st == 200
        c1, s1, c2, s2 = check_chain(trace_of(col, tid2, 4), tid2, root_parent="a2fb4a1d1a96d312")
        h = doc["call"]["body"]["headers"]
        assert (h["x-b3-traceid"], h["x-b3-spanid"], h["x-b3-parentspanid"], h["x-b3-sampled"]) == (
            tid2, s2["id"], c2["id"], "1")
        # x-b3-flags: 1 (debug) alone is a sampled decision, at 0% too.
        tid3 = "5b8efff798038103d269b633813fc60c"
        st, doc = get(hosts, call_b(hosts), headers={"x-b3-traceid": tid3, "x-b3-spanid": "eee19b7ec3c1b174",
                                                      "x-b3-flags": "1"})
        assert st == 200
        check_chain(trace_of(col, tid3, 4), tid3, root_parent="eee19b7ec3c1b174")
        # A B3 "not sampled" decision is followed; a malformed context is ignored (0%: no trace).
        for hdrs in ({"b3": "0"}, {"x-b3-sampled": "0"}, {"traceparent": "00-zz-bad-01"}):
            st, doc = get(hosts, "/x", headers=hdrs)
            assert st == 200
        assert {s["trace"] for s in col.otlp_spans()} == {tid, tid2, tid3}
        stop_and_check_proxies(m)
    finally:
        col.close()


def test_zipkin_v2_json(tmp_path):
    col = Collector("127.0.0.1")
    m, hosts = three_services(tmp_path, col.addr, 100, fmt="zipkin")
    try:
        st, doc = get(hosts, call_b(hosts))
        assert st == 200
        tid = doc["headers"]["traceparent"].split("-")[1]
        spans = wait_for(lambda: (lambda s: s if len(s) >= 4 else None)(
            [s for s in col.zipkin_spans() if s["traceId"] == tid]), timeout=T, what="zipkin spans")
        by = {(s["localEndpoint"]["serviceName"], s["kind"]): s for s in spans}
        c1, s1, c2, s2 = by[("client", "CLIENT")], by[("a", "SERVER")], by[("a", "CLIENT")], by[("b", "SERVER")]
        assert "parentId" not in c1
        assert s1["parentId"] == c1["id"] and c2["parentId"] == s1["id"] and s2["parentId"] == c2["id"]
        for s in spans:
            assert re.fullmatch(r"[0-9a-f]{16}", s["id"]) and s["name"] == "GET"
            assert isinstance(s["timestamp"], int) and isinstance(s["duration"], int) and s["duration"] > 0
            assert all(isinstance(v, str) for v in s["tags"].values())
            assert s["tags"]["http.response.status_code"] == "200" and "error" not in s["tags"]
        assert s2["tags"]["rete.source.workload"] == "a-0"
        assert not [p for p, _ in col.posts if p != "/api/v2/spans"]
        stop_and_check_proxies(m)
    finally:
        col.close()


def test_queue_bound_with_a_collector_that_never_answers(tmp_path):
    """Accepts connections (the kernel's backlog), never reads nor answers:
    every export waits its timeout, the queue fills, spans are dropped and
    counted; every request still succeeds."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    addr = "127.0.0.1:%d" % hole.getsockname()[1]
    m, hosts = three_services(tmp_path, addr, 100, proxy_args=("--trace-queue-spans", "4",
                                                               "--trace-batch-spans", "2"))
    try:
        for i in range(40):
            st, _ = get(hosts, f"/n{i}")
            assert st == 200
        dropped = metric(hosts["client"], "rete_proxy_spans_dropped_total")
        sampled = metric(hosts["client"], "rete_proxy_spans_sampled_total")
        assert dropped > 0 and sampled <= 40 and dropped + sampled == 40, (dropped, sampled)
        wait_for(lambda: metric(hosts["client"], "rete_proxy_spans_failed_total") >= 2, timeout=T)
        assert metric(hosts["client"], "rete_proxy_spans_exported_total") == 0
        stop_and_check_proxies(m)
    finally:
        hole.close()


def test_tracing_config_refused_naming_the_field(tmp_path):
    from helpers import build_path, run_tool
    m = Mesh(tmp_path)
    host = fresh_host()
    for bad, field in ((mesh_config("127.0.0.1:9", "101"), "sampling"),
                       (mesh_config("nohost", 1), "collector"),
                       (mesh_config("127.0.0.1:9", 1, fmt="jaeger"), "format")):
        path = m.write_config("p", "p", host, extra_docs=[bad])
        r = run_tool([build_path("rete-proxy"), "--check-config", path], capture_output=True, text=True)
        assert r.returncode != 0 and f"tracing.{field}" in (r.stdout + r.stderr), (r.stdout, r.stderr)



def test_the_otlp_decoder_is_strict():
    """The check above is worth something only if the official definitions
    refuse what OTLP does not define: an unknown field, a wrong type, an id
    of the wrong length."""
    from google.protobuf import json_format
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "GET", "kind": 2,
            "startTimeUnixNano": "1", "endTimeUnixNano": "2", "flags": 0x101, "attributes": [], "status": {}}

    def body(**over):
        return json.dumps({"resourceSpans": [{"resource": {"attributes": []},
                                              "scopeSpans": [{"scope": {"name": "rete-proxy"},
                                                              "spans": [{**span, **over}]}]}]})

    req = otlp.parse_json(body())
    assert req.resource_spans[0].scope_spans[0].spans[0].span_id.hex() == span["spanId"]
    for bad in ({"sampled": True}, {"kind": "server"}, {"startTimeUnixNano": "soon"},
                {"attributes": [{"key": "k", "value": {"textValue": "v"}}]}):
        try:
            otlp.parse_json(body(**bad))
        except json_format.ParseError:
            continue
        raise AssertionError(f"accepted {bad}")
    for bad in ({"spanId": "b7ad6b71692033"}, {"traceId": "0AF7651916CD43DD8448EB211C80319C"}):
        try:
            otlp.parse_json(body(**bad))
        except AssertionError:
            continue
        raise AssertionError(f"accepted {bad}")
