"""Config scoping (issue 3: "each proxy ... receives ... only what it needs";
"a change to one service recompiles only the proxies that route to it or
serve it"). A Workload's egress (rete-proxy --egress, Istio Sidecar egress
hosts) or MeshConfig defaultEgress limits what reted sends a sidecar: the
Services it names, the ones it serves, and what their routes name. Real
reted, real proxies, real echo backend; versions and the compile and patch counters
come from reted's API and /metrics."""
import json
import re
import urllib.request

import pytest

from controlplane import (CPProxy, curl_status, log_has, snapshot_docs, start_cp_proxy, start_reted, wait_acked,
                          wait_for)
from helpers import start_echo
from mesh import fresh_host, http_route, service, workload

NS = "shop"


@pytest.fixture
def reted(tmp_path):
    r = start_reted(tmp_path)
    yield r
    r.stop()


def compiles(reted):
    """Snapshots compiled and snapshots patched (a change that kept its
    resource's scope puts the new text into each snapshot holding it)."""
    with urllib.request.urlopen(f"http://{reted.api}/metrics", timeout=10) as r:
        text = r.read().decode()
    return tuple(int(re.search(rf"^rete_reted_config_{k}_total (\d+)$", text, re.M).group(1))
                 for k in ("compiles", "patches"))


def held(reted, name, ns=NS):
    """{(kind, ns, name)} of the snapshot reted last sent proxy `name`."""
    st, cfg = reted.proxy_config(ns, name)
    assert st == 200, cfg
    return {(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
            for d in snapshot_docs(cfg["resources"])}


def services(reted, name, ns=NS):
    return {(n, m) for k, n, m in held(reted, name, ns) if k == "Service"}


def sent(reted, name, ns=NS):
    return reted.proxy(name, ns)["sentVersion"]


@pytest.fixture
def shop(reted, tmp_path):
    """Services a, b (with an HTTPRoute splitting to b2), c in `shop`, d in
    `other`; one real echo app behind b (sidecar b-0) and behind c (c-0);
    clients: to-b (egress shop/b), to-c (egress ./c), to-all (no egress:
    the whole mesh)."""
    echo_host = fresh_host()
    echo, addr = start_echo("--quiet", name="b", host=echo_host)
    port = int(addr.rsplit(":", 1)[1])
    c_host = fresh_host()
    echo_c, addr_c = start_echo("--quiet", name="c", host=c_host)
    port_c = int(addr_c.rsplit(":", 1)[1])
    reted.apply_ok([service("a", NS, [(80, "HTTP", port)]), service("b", NS, [(80, "HTTP", port)]),
                    service("b2", NS, [(80, "HTTP", port)], selector={"app": "b"}), service("c", NS, [(80, "HTTP", port_c)]),
                    service("d", "other", [(80, "HTTP", port)]),
                    workload("d-vm", "other", "127.0.0.9", "d", {"app": "d"}, inMesh=False),
                    http_route("b-split", NS, "b", [{"backendRefs": [{"name": "b", "port": 80, "weight": 90},
                                                                      {"name": "b2", "port": 80, "weight": 10}]}])])
    b0 = start_cp_proxy(reted, tmp_path, "b-0", NS, "b", host=echo_host, inbound=[(port, "HTTP")],
                        labels={"app": "b"}, extra=["--egress", "./b2"])
    c0 = start_cp_proxy(reted, tmp_path, "c-0", NS, "c", host=c_host, inbound=[(port_c, "HTTP")],
                        labels={"app": "c"}, extra=["--egress", "other/d"])
    to_b = start_cp_proxy(reted, tmp_path, "to-b", NS, "web", labels={"app": "web"}, extra=["--egress", "shop/b"])
    to_c = start_cp_proxy(reted, tmp_path, "to-c", NS, "web", labels={"app": "web2"}, extra=["--egress", "./c"])
    to_all = start_cp_proxy(reted, tmp_path, "to-all", NS, "web", labels={"app": "web3"})
    wait_for(lambda: curl_status(to_b.outbound, "b") == 200, 30, 0.3, "b reachable from to-b")
    names = ("b-0", "c-0", "to-b", "to-c", "to-all")
    for n in names:
        reted.wait_synced(n, NS)
    yield {"to_b": to_b, "to_c": to_c, "to_all": to_all, "b0": b0, "c0": c0, "names": names, "port_c": port_c}
    for p in (to_b, to_c, to_all, b0, c0):
        p.stop()
    for e in (echo, echo_c):
        e.terminate()
        e.wait()


def settled(reted, names):
    """Wait until pushes stop (every named proxy SYNCED on an unchanging version)."""
    last = {}

    def cond():
        now = {n: reted.proxy(n, NS)["sentVersion"] for n in names}
        ok = now == last.get("v") and all(reted.proxy(n, NS)["status"] == "SYNCED" for n in names)
        last["v"] = now
        return ok
    wait_for(cond, 30, 0.5, "pushes settled")


def test_a_proxy_gets_only_the_services_its_egress_names_serves_or_routes_reach(reted, shop):
    # to-b named b; b's route pulls in b2; b's workload (b-0) is an endpoint
    assert services(reted, "to-b") == {(NS, "b"), (NS, "b2")}
    assert ("Workload", NS, "b-0") in held(reted, "to-b")
    assert ("HTTPRoute", NS, "b-split") in held(reted, "to-b")
    assert ("Workload", NS, "c-0") not in held(reted, "to-b")
    # "./c": its own namespace
    assert services(reted, "to-c") == {(NS, "c")}
    # c-0 serves c and names d in another namespace (with its hand-applied workload)
    assert services(reted, "c-0") == {(NS, "c"), ("other", "d")}
    assert ("Workload", "other", "d-vm") in held(reted, "c-0")
    # b-0 serves b, whose route names b2
    assert services(reted, "b-0") == {(NS, "b"), (NS, "b2")}
    # no egress: the whole mesh
    assert services(reted, "to-all") == {(NS, "a"), (NS, "b"), (NS, "b2"), (NS, "c"), ("other", "d")}
    # proxy-status says what each one got
    to_b = reted.proxy("to-b", NS)["scope"]
    assert to_b["egress"] == ["shop/b"] and not to_b["wholeMesh"] and to_b["services"] == 2, to_b
    every = reted.proxy("to-all", NS)["scope"]
    assert every["wholeMesh"] and every["egress"] == ["*/*"] and every["services"] == 5, every
    assert every["resources"] > to_b["resources"]
    # traffic: in scope works, out of scope is unknown to the sidecar
    assert curl_status(shop["to_b"].outbound, "b") == 200
    assert curl_status(shop["to_b"].outbound, "c") == 404
    assert curl_status(shop["to_c"].outbound, "c") == 200
    assert curl_status(shop["to_all"].outbound, "b") == 200


def change(reted, docs, touched, names):
    """Apply `docs`, wait until the proxies in `touched` ACKed them and pushes
    settle; returns (the proxies whose version moved, snapshots compiled)."""
    before = {n: sent(reted, n) for n in names}
    c0 = compiles(reted)
    res = reted.apply_ok(docs)
    v = max(int(r["resourceVersion"]) for r in res["results"])
    for n in touched:
        wait_acked(reted, n, v, NS)
    settled(reted, names)
    after = {n: sent(reted, n) for n in names}
    c1 = compiles(reted)
    return {n for n in names if after[n] != before[n]}, (c1[0] - c0[0], c1[1] - c0[1])


def test_a_change_recompiles_and_pushes_only_the_proxies_it_touches(reted, shop):
    names = shop["names"]
    settled(reted, names)
    # a change to Service c: served by c-0, routed to by to-c and to-all;
    # three scopes (c-0's, to-c's, the whole mesh's), each patched once (a
    # new port keeps the Service's selector: nothing moves between scopes)
    port_c = shop["port_c"]
    moved, counts = change(reted, [service("c", NS, [(80, "HTTP", port_c), (81, "HTTP", port_c)])],
                           ("c-0", "to-c", "to-all"), names)
    assert moved == {"c-0", "to-c", "to-all"} and counts == (0, 3), (moved, counts)
    # the route of b's weights: b-0 (serves b), to-b and to-all; not c-0
    # nor to-c; patched (its parent and backends are the same)
    split = [{"backendRefs": [{"name": "b", "port": 80, "weight": 50}, {"name": "b2", "port": 80, "weight": 50}]}]
    moved, counts = change(reted, [http_route("b-split", NS, "b", split)], ("b-0", "to-b", "to-all"), names)
    assert moved == {"b-0", "to-b", "to-all"} and counts == (0, 3), (moved, counts)
    # its backends (b2 out, then in again): the same three, compiled
    for backends in ([("b", 100)], [("b", 90), ("b2", 10)]):
        split = [{"backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in backends]}]
        moved, counts = change(reted, [http_route("b-split", NS, "b", split)], ("b-0", "to-b", "to-all"), names)
        assert moved == {"b-0", "to-b", "to-all"} and counts == (3, 0), (backends, moved, counts)
    # a new endpoint of b (a Workload applied by hand): the proxies that reach b
    moved, _ = change(reted, [workload("b-vm", NS, "127.0.0.8", "b", {"app": "b"}, inMesh=False)],
                      ("b-0", "to-b", "to-all"), names)
    assert moved == {"b-0", "to-b", "to-all"}, moved
    assert ("Workload", NS, "b-vm") in held(reted, "to-b")
    # a Service nobody names yet (to-all sees the whole mesh; nobody else)
    moved, _ = change(reted, [service("e", NS, [(80, "HTTP", 9)])], ("to-all",), names)
    assert moved == {"to-all"}, moved


def test_mesh_default_egress_applies_to_workloads_that_set_none(reted, shop, tmp_path):
    settled(reted, shop["names"])
    mc = {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
          "metadata": {"name": "mesh", "namespace": "rete-system"}, "spec": {"defaultEgress": ["./*"]}}
    res = reted.apply_ok([mc])
    wait_acked(reted, "to-all", int(res["results"][0]["resourceVersion"]), NS)
    # its own namespace only: d (namespace other) is gone
    assert services(reted, "to-all") == {(NS, "a"), (NS, "b"), (NS, "b2"), (NS, "c")}
    # a workload's own egress wins over the default
    assert services(reted, "to-b") == {(NS, "b"), (NS, "b2")}
    wait_for(lambda: curl_status(shop["to_all"].outbound, "d.other") == 404, 30, 0.3, "d out of scope")
    assert curl_status(shop["to_all"].outbound, "b") == 200


def test_egress_change_on_restart_moves_the_proxy_to_its_new_scope(reted, shop, tmp_path):
    """The proxy's registration (hello) carries its egress; restarted with
    another one, it gets the other scope."""
    to_c = shop["to_c"]
    to_c.stop()
    to_c.args[to_c.args.index("./c")] = "./b"
    to_c.grant()  # the operator allows the new egress (reted refuses an egress no WorkloadGroup admits)
    to_c.start()
    wait_for(lambda: services(reted, "to-c") == {(NS, "b"), (NS, "b2")}, 30, 0.3, "to-c rescoped")
    wait_for(lambda: curl_status(to_c.outbound, "b") == 200, 30, 0.3, "b reachable from to-c")
    assert curl_status(to_c.outbound, "c") == 404


def test_a_malformed_egress_is_refused_naming_it(reted, tmp_path):
    """In a hello: the stream is refused with the field and the reason, and
    nothing is registered; in an apply: 422 naming the field path."""
    p = CPProxy(reted, tmp_path, "bad-0", NS, "web", extra=["--egress", "no-slash"],
                grant=False).start(ready=r"control plane")
    log_has(p.log, r"reted refused the stream: hello: workload rejected: spec\.egress\[0\]: must be "
                   r"\"NAMESPACE/NAME\"")
    assert reted.get("workload", NS, "bad-0")[0] == 404
    p.stop()
    for bad in ("*/a*", "a*/b", "a/b/c", "/b", "a/"):
        st, body = reted.apply(json.dumps(workload("w", NS, "127.0.0.1", "web", {}, egress=["./ok", bad])))
        assert st == 422 and body["details"][0]["path"] == "spec.egress[1]", (bad, body)
