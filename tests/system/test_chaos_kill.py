"""Chaos: a backend app killed hard (SIGKILL) under steady traffic, with
retries on the route and a second endpoint.

The route retries once (`retry: {attempts: 1, codes: [502, 503, 504]}`)
and a retry avoids the endpoint that failed; outlier detection
(`consecutiveGatewayErrors: 2`) ejects the dead one after two failed tries.
echo-1's sidecar answers 503 once its app refuses connections, and a
request in flight in the app when it dies is reset (502): either way the
client's sidecar retries it on echo-0. The bound: a request fails only if
its retry fails too, which takes echo-0 failing as well, or the retry
budget (20% of requests plus 10 per second) running out; at 40 requests
per second at most two tries reach the dead endpoint before it is
ejected, so the budget holds. We allow 2 failed requests (one per try
that can reach the dead endpoint before ejection) and expect 0."""
import signal

from chaos import Traffic, assert_within, report, served_by, two_endpoint_mesh
from controlplane import start_reted
from mesh import backend, http_route

BOUND = 2


def test_backend_killed_with_retries_and_a_second_endpoint_bounded_failures(tmp_path):
    reted = start_reted(tmp_path)
    ns = "demo"
    m = two_endpoint_mesh(reted, tmp_path, ns, docs=[
        http_route("echo", ns, "echo", [{"backendRefs": [backend("echo")],
                                        "retry": {"attempts": 1, "codes": [502, 503, 504]}}])],
        outlierDetection={"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 2,
                          "baseEjectionTime": "5m", "maxEjectionPercent": 50})
    traffic = Traffic(m["client"].outbound, rate=40, duration=30).start()
    traffic.wait_requests(80)
    assert traffic.instances() == set(m["hosts"]), "both endpoints served before the fault"
    t = traffic.mark("SIGKILL echo-1's app")
    app = m["apps"][1]
    app.send_signal(signal.SIGKILL)
    app.wait(timeout=10)
    traffic.wait_requests(160)
    traffic.stop()
    rows = [traffic.figures("hard kill (SIGKILL) of a backend app", t, bound=BOUND)]
    report(tmp_path, "kill", rows)
    assert_within(rows)
    assert served_by(m, 10) == {m["hosts"][0]}
