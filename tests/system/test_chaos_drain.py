"""Chaos: graceful drain of a backend's sidecar under steady traffic.

Service echo has two endpoints (echo-0, echo-1, each an app behind its
sidecar, through reted). While a client sends 40 requests per second
through its sidecar, echo-1's sidecar gets SIGTERM: it tells reted it is
going (`drain` on its stream: deregistered, the client learns it), stops
accepting, finishes what is in flight and exits 0. Expected: not one
failed request, and afterwards every request is served by echo-0."""
import signal

from chaos import Traffic, assert_within, report, served_by, two_endpoint_mesh
from controlplane import start_reted


def test_graceful_drain_of_a_backend_sidecar_fails_no_request(tmp_path):
    reted = start_reted(tmp_path)
    m = two_endpoint_mesh(reted, tmp_path)
    traffic = Traffic(m["client"].outbound, rate=40, duration=30).start()
    traffic.wait_requests(80)
    assert traffic.instances() == set(m["hosts"]), "both endpoints served before the fault"
    t = traffic.mark("SIGTERM echo-1's sidecar")
    assert m["sidecars"][1].stop(signal.SIGTERM) == 0  # a drain exits 0
    traffic.wait_requests(120)
    traffic.stop()
    rows = [traffic.figures("drain (SIGTERM) of a backend sidecar", t, bound=0)]
    report(tmp_path, "drain", rows)
    assert_within(rows)
    assert served_by(m, 10) == {m["hosts"][0]}
