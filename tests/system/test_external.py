"""External services by DNS name with TLS origination (issue 10, Istio's
ServiceEntry + DestinationRule tls SIMPLE): a Service with
`spec.externalName` has the host's resolved addresses as endpoints, and a
DestinationRule `trafficPolicy.tls` SIMPLE makes the calling sidecar speak
TLS to it, verifying the server against the given CA and the name, while
the app speaks plain HTTP. The server here is a local TLS-only HTTP server
reached as `localhost` (the system resolver answers it: no /etc/hosts
edit); the netns tests (test_external_netns.py) change the answer."""
import http.client
import http.server
import ssl
import threading

import pytest

import tlsca
from controlplane import proxy_metric
from helpers import free_port
from mesh import Mesh, destination_rule, fresh_host, stop_and_check_proxies, workload

NS = "test"


class TLSServer:
    """An HTTP/1.1 server that speaks only TLS on 127.0.0.1:port; it
    records the Host and path of each request it gets."""

    def __init__(self, cert, port):
        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                seen.append((self.headers.get("Host"), self.path))
                body = b"hello over tls\n"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def external_service(name, host, port, target):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"externalName": host,
                     "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "HTTP"}]}}


@pytest.fixture
def ext(tmp_path):
    ca = tlsca.make_ca(str(tmp_path), "ext-ca")
    other = tlsca.make_ca(str(tmp_path), "other-ca")
    cert = tlsca.issue(str(tmp_path), ca, "ext", dns_names=["localhost"], ips=["127.0.0.1"])
    port = free_port("127.0.0.1")
    srv = TLSServer(cert, port)
    m = Mesh(tmp_path, ns=NS)
    client = fresh_host()
    m.add(external_service("ext", "localhost", 80, port),
          external_service("ext-wrong", "localhost", 80, port),
          external_service("ext-plain", "localhost", 80, port),
          destination_rule("ext", NS, "ext", tls={"mode": "SIMPLE", "caCertificates": ca[0]}),
          destination_rule("ext-wrong", NS, "ext-wrong",
                           tls={"mode": "SIMPLE", "caCertificates": other[0]}),
          workload("client-0", NS, client, "client", {"app": "client"}))
    m.start_proxy("client-0", "client", client, extra_spec={"concurrency": 2})
    yield {"client": client, "server": srv, "mesh": m}
    srv.close()
    stop_and_check_proxies(m)


def get(client, host):
    c = http.client.HTTPConnection(client, 15001, timeout=20)
    try:
        c.request("GET", "/x", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def test_plain_http_from_the_app_goes_out_as_verified_tls(ext):
    from helpers import wait_for
    # the first resolution is asynchronous: until it lands, no endpoint
    wait_for(lambda: get(ext["client"], "ext")[0] == 200, timeout=15, what="ext resolved")
    st, body = get(ext["client"], "ext")
    assert (st, body) == (200, "hello over tls\n")
    # the server only speaks TLS, and it saw the app's request
    assert ("ext", "/x") in ext["server"].seen
    assert proxy_metric(ext["client"], "rete_proxy_external_resolutions_total") >= 1


def test_wrong_ca_is_503_counted(ext):
    from helpers import wait_for
    wait_for(lambda: get(ext["client"], "ext")[0] == 200, timeout=15, what="ext resolved")
    n = len(ext["server"].seen)
    st, body = get(ext["client"], "ext-wrong")
    assert st == 503, body
    assert "UF" in body and "TLS origination failed" in body and "certificate" in body, body
    assert proxy_metric(ext["client"], "rete_proxy_upstream_tls_failures_total") >= 1
    assert len(ext["server"].seen) == n  # nothing reached the server


def test_without_tls_the_request_goes_in_the_clear(ext):
    """No DestinationRule: plaintext to the external host, which (TLS only)
    fails it: origination is what made the first test pass."""
    from helpers import wait_for
    wait_for(lambda: get(ext["client"], "ext")[0] == 200, timeout=15, what="ext resolved")
    st, _ = get(ext["client"], "ext-plain")
    assert st in (502, 503)
