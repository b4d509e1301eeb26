"""Chaos: a backend that stops accepting (its rete-echo process SIGSTOPped:
connections queue in the kernel's accept backlog until it is full, and
nothing answers) under steady traffic, with a per-try timeout and retries.

The route: `timeouts.backendRequest: 1s` and `retry: {attempts: 1, codes:
[504]}` (a per-try timeout is retried when the codes hold 504); outlier
detection (`consecutiveGatewayErrors: 2`) ejects the stalled endpoint.
A request whose first try lands on echo-1 waits one per-try timeout, then
its retry goes to echo-0. The bound: a request fails only if its retry
fails too (echo-0 is healthy) or the retry budget runs out (it does not
at 40 requests per second with at most two tries to the stalled endpoint
before ejection). We allow 2 failures and expect 0."""
import signal

from chaos import Traffic, assert_within, report, served_by, two_endpoint_mesh
from controlplane import start_reted
from mesh import backend, http_route

BOUND = 2


def test_backend_that_stops_accepting_bounded_failures(tmp_path):
    reted = start_reted(tmp_path)
    ns = "demo"
    m = two_endpoint_mesh(reted, tmp_path, ns, docs=[
        http_route("echo", ns, "echo", [{"backendRefs": [backend("echo")],
                                        "timeouts": {"backendRequest": "1s"},
                                        "retry": {"attempts": 1, "codes": [504]}}])],
        outlierDetection={"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2,
                          "baseEjectionTime": "5m", "maxEjectionPercent": 50})
    traffic = Traffic(m["client"].outbound, rate=40, duration=30).start()
    traffic.wait_requests(80)
    app = m["apps"][1]
    assert traffic.instances() == set(m["hosts"]), "both endpoints served before the fault"
    t = traffic.mark("SIGSTOP echo-1's app")
    app.send_signal(signal.SIGSTOP)
    try:
        traffic.wait_requests(160)
        traffic.stop()
        assert served_by(m, 10) == {m["hosts"][0]}
    finally:
        app.send_signal(signal.SIGCONT)
    rows = [traffic.figures("backend stops accepting (SIGSTOP)", t, bound=BOUND)]
    report(tmp_path, "stall", rows)
    assert_within(rows)
