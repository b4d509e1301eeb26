"""Chaos: the proxy's own fault injection under steady traffic. The
HTTPRoute rule aborts 10% of requests with 503 and has retries on; an
aborted request reaches no backend and is never retried (docs/traffic.md),
so the client sees the abort share itself: over N = 1000 requests the
failures are Binomial(1000, 0.1), mean 100, sd 9.5; we accept 100 +- 40
(over 4 sd: a false failure about once in 30000 runs). Every failure is
the fault's 503, the fault metric counts exactly them, and no retry is
made."""
from chaos import Traffic, report, two_endpoint_mesh
from controlplane import apply_and_push, proxy_metric, start_reted
from mesh import backend, http_route

N = 1000


def test_fault_abort_10_percent_with_retries_the_client_sees_the_share(tmp_path):
    reted = start_reted(tmp_path)
    ns = "demo"
    m = two_endpoint_mesh(reted, tmp_path, ns)
    client = m["client"]
    apply_and_push(reted, [http_route("echo", ns, "echo", [{
        "backendRefs": [backend("echo")], "retry": {"attempts": 2, "codes": [502, 503, 504]},
        "fault": {"abort": {"percentage": {"value": 10}, "httpStatus": 503}}}])], [client])
    injected0 = proxy_metric(client.host, "rete_proxy_faults_injected_total")
    retries0 = proxy_metric(client.host, "rete_proxy_retries_total")
    traffic = Traffic(client.outbound, rate=400, duration=60, max_requests=N)
    t = traffic.mark("fault abort 10% (503)")
    traffic.start()
    traffic.join()
    rows = [traffic.figures("HTTPRoute fault abort 10%", t, bound=140)]
    rows[0]["expected"] = "100 +- 40 of 1000"
    report(tmp_path, "fault", rows)
    assert len(traffic.records) == N
    failed = traffic.failures()
    assert 60 <= len(failed) <= 140, len(failed)
    assert all(r[2] == 503 and b"fault filter abort" in r[4] for r in failed), failed[:3]
    assert proxy_metric(client.host, "rete_proxy_faults_injected_total") - injected0 == len(failed)
    assert proxy_metric(client.host, "rete_proxy_retries_total") == retries0
