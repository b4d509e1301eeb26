"""Chaos: certificate renewal with short-lived certificates (reted
--cert-ttl 10s: every proxy renews several times) and then a CA rotation
(begin, every proxy renews from the new root, finish) under steady traffic
between two proxies on mTLS. Expected: not one failed request through
either fault."""
import os

from chaos import Traffic, assert_within, report, two_endpoint_mesh
from controlplane import start_reted, wait_for


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_short_ttl_renewals_and_ca_rotation_under_traffic_fail_no_request(tmp_path):
    reted = start_reted(tmp_path, "--cert-ttl", "10s")
    m = two_endpoint_mesh(reted, tmp_path)
    proxies = (*m["sidecars"], m["client"])
    traffic = Traffic(m["client"].outbound, rate=40, duration=90).start()
    traffic.wait_requests(40)

    assert traffic.instances() == set(m["hosts"]), "both endpoints served before the fault"
    t1 = traffic.mark("renewals (10 s certificates)")
    first = {p.name: _read(p.cert_path) for p in proxies}
    for p in proxies:  # each renews at least twice
        wait_for(lambda: p.log().count("renewed certificate") >= 2, 40, 0.3, f"{p.name} renewed twice")
    assert all(_read(p.cert_path) != first[p.name] for p in proxies)

    t2 = traffic.mark("CA rotation (begin, finish)")
    st, body = reted.request("POST", "/api/v1/ca/rotate", {"phase": "begin"})
    assert st == 200 and body["rotating"] is True, (st, body)
    old_root = _read(os.path.join(reted.data, "ca", "root.pem"))

    def finished():
        st, body = reted.request("POST", "/api/v1/ca/rotate", {"phase": "finish"})
        assert st in (200, 409), (st, body)
        return st == 200 and body
    wait_for(finished, 60, 0.5, "rotation finish accepted")
    new_root = _read(os.path.join(reted.data, "ca", "root.pem"))
    assert new_root != old_root
    for p in proxies:
        wait_for(lambda: old_root not in _read(os.path.join(p.data, "bundle.pem")), 30, 0.2,
                 f"{p.name} holds only the new root")
    traffic.wait_requests(80)  # fresh connections under the new root alone
    traffic.stop()
    rows = [traffic.figures("renewals (10 s certificates)", t1, t2, bound=0),
            traffic.figures("CA rotation (begin, finish)", t2, bound=0)]
    report(tmp_path, "certs", rows)
    assert_within(rows)
