"""Chaos: reted restarted (SIGTERM, then started again on the same data
dir and ports) while proxies serve steady traffic. Expected: not one failed
request (the data plane runs on the configuration it holds), both proxies
SYNCED again, and a configuration change applied after the restart reaches
the client's sidecar (a new Service answers through it)."""
import signal

from chaos import Traffic, assert_within, report, two_endpoint_mesh
from controlplane import apply_and_push, curl_status, start_reted, wait_for
from mesh import service


def test_reted_restart_under_traffic_fails_no_request_and_config_still_flows(tmp_path):
    reted = start_reted(tmp_path)
    m = two_endpoint_mesh(reted, tmp_path)
    traffic = Traffic(m["client"].outbound, rate=40, duration=40).start()
    traffic.wait_requests(80)
    assert traffic.instances() == set(m["hosts"]), "both endpoints served before the fault"
    t = traffic.mark("reted SIGTERM")
    reted.kill(signal.SIGTERM)
    assert reted.proc.returncode == 0, reted.log()[-2000:]
    traffic.wait_requests(80)  # two seconds with reted down
    reted.start()
    for p in (*m["sidecars"], m["client"]):
        reted.wait_synced(p.name, timeout=60)
    traffic.wait_requests(80)
    traffic.stop()
    rows = [traffic.figures("reted restart (SIGTERM, start)", t, bound=0)]
    report(tmp_path, "reted-restart", rows)
    assert_within(rows)
    # a change after the restart still arrives
    apply_and_push(reted, [service("echo2", m["ns"], [(80, "HTTP", m["port"])], {"app": "echo"})],
                   [m["client"]])
    wait_for(lambda: curl_status(m["client"].outbound, "echo2") == 200, 20, 0.2, "echo2 through the mesh")
