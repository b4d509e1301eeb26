"""reted assigns Service clusterIPs from MeshConfig serviceCIDR (issue 10):
an omitted clusterIP gets a free address of the range, stored in the
Service and kept across applies and restarts; a given one must lie inside the
range and be nobody else's; a full range and a change of range that leaves a
Service outside are refused, naming what is wrong."""
import ipaddress

from controlplane import start_reted


def svc(name, ns="ns1", cluster_ip=None):
    spec = {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def mesh(cidr):
    return {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
            "metadata": {"name": "mesh", "namespace": "rete-system"},
            "spec": {"serviceCIDR": cidr} if cidr else {}}


def cluster_ip(r, name, ns="ns1"):
    st, body = r.get("service", ns, name)
    assert st == 200, body
    return body["spec"].get("clusterIP")


def test_assigned_unique_inside_the_range_and_stable(tmp_path):
    r = start_reted(tmp_path)
    # no serviceCIDR: nothing is assigned
    r.apply_ok([svc("plain")])
    assert cluster_ip(r, "plain") is None

    r.apply_ok([mesh("10.96.0.0/28")])
    r.apply_ok([svc(f"s{i}") for i in range(6)] + [svc("v6", ns="ns2")])
    net = ipaddress.ip_network("10.96.0.0/28")
    ips = {cluster_ip(r, f"s{i}") for i in range(6)} | {cluster_ip(r, "v6", "ns2")}
    assert len(ips) == 7, ips
    for ip in ips:
        a = ipaddress.ip_address(ip)
        assert a in net and a not in (net.network_address, net.broadcast_address), ip

    # applied again without one: the same address; after a restart too
    before = cluster_ip(r, "s0")
    body = r.apply_ok([svc("s0")])
    assert body["results"][0]["action"] == "unchanged", body
    r.stop()
    r.start()
    assert cluster_ip(r, "s0") == before
    r.apply_ok([svc("s0")])
    assert cluster_ip(r, "s0") == before

    # a given address: inside the range, and nobody else's
    st, body = r.apply([svc("out", cluster_ip="10.97.0.1")])
    assert st == 422, body
    d = body["details"][0]
    assert d["path"] == "spec.clusterIP" and "outside MeshConfig serviceCIDR 10.96.0.0/28" in d["reason"], d
    st, body = r.apply([svc("dup", cluster_ip=before)])
    assert st == 422, body
    d = body["details"][0]
    assert d["path"] == "spec.clusterIP" and f"already the clusterIP of service ns1/s0" in d["reason"], d
    # ...also written differently (the stored text is canonical)
    st, body = r.apply([svc("dup", ns="ns3", cluster_ip=before)])
    assert st == 422, body

    # the range is full: 14 usable addresses of a /28
    r.apply_ok([svc(f"f{i}") for i in range(14 - 7)])
    st, body = r.apply([svc("one-too-many")])
    assert st == 422, body
    d = body["details"][0]
    assert d["path"] == "spec.clusterIP" and "10.96.0.0/28 is full" in d["reason"], d

    # narrowing the range past a Service's address is refused, naming it;
    # widening is accepted and keeps every address
    st, body = r.apply([mesh("10.96.0.0/30")])
    assert st == 422 and "outside MeshConfig serviceCIDR 10.96.0.0/30" in body["details"][0]["reason"], body
    r.apply_ok([mesh("10.96.0.0/16")])
    assert cluster_ip(r, "s0") == before
    r.apply_ok([svc("one-too-many")])
    assert ipaddress.ip_address(cluster_ip(r, "one-too-many")) in ipaddress.ip_network("10.96.0.0/16")

    # a bad range is refused at the field
    st, body = r.apply([mesh("10.96.0.1/16")])
    assert st == 422 and body["details"][0]["path"] == "spec.serviceCIDR", body
    r.stop()


def test_ipv6_range(tmp_path):
    r = start_reted(tmp_path)
    r.apply_ok([mesh("fd00:10:96::/112"), svc("a"), svc("b")])
    a, b = cluster_ip(r, "a"), cluster_ip(r, "b")
    assert a != b
    for ip in (a, b):
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("fd00:10:96::/112"), ip
