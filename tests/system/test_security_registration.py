"""Registration on the config stream is bound to identity and to what the
operator allowed (issue 8, item 3: "any workload can hijack or delete
Workload records in its namespace"). Each test forges hellos with a raw
stream client (StreamClient) holding a real workload certificate, as an
attacker holding one workload's key would. Loopback only; every wait is
bounded and polls a condition."""
import json

import pytest

from controlplane import (CPProxy, StreamClient, curl_status, log_has, reted_metric, start_cp_proxy, start_reted,
                          wait_for, workload_group)
from mesh import fresh_host, service, workload

NS = "demo"


def group(name, sa, labels=None, egress=None, ns=NS):
    return workload_group(name, ns, sa, labels, egress)


def refused(client, reason_re):
    """The stream's first message is reted's refusal, matching reason_re."""
    msg = client.message()
    assert msg.get("type") == "error", msg
    import re
    assert re.search(reason_re, msg["error"]), msg["error"]
    return msg["error"]


def accepted(client):
    msg = client.message()
    assert msg.get("type") == "config", msg
    client.ack(msg)
    return msg


def stored(reted, name, ns=NS):
    st, j = reted.request("GET", f"/api/v1/resources/Workload/{ns}/{name}")
    return j if st == 200 else None


def refusals(reted, reason):
    return reted_metric(reted, "rete_reted_registrations_refused_total", f'reason="{reason}"') or 0


@pytest.fixture
def reted(tmp_path):
    r = start_reted(tmp_path, "--grace", "2s")
    yield r
    r.stop()


def test_registration_forged_labels_refused(reted, tmp_path):
    """frontend's certificate cannot register a Workload carrying ratings'
    labels (it would get a share of ratings' traffic)."""
    reted.apply_ok([service("ratings", NS, [(80, "HTTP", 8080)], {"app": "ratings"})])
    evil = StreamClient(reted, tmp_path, "evil-0", NS, "frontend", labels={"app": "ratings"})
    refused(evil, r"labels .*app=ratings.* not admitted")
    assert stored(reted, "evil-0") is None
    assert refusals(reted, "labels") == 1


def test_registration_name_takeover_refused(reted, tmp_path):
    """A live stream's record cannot be taken over by another identity:
    frontend reusing the name ratings-0 is refused, ratings keeps its
    stream and its record."""
    ratings = StreamClient(reted, tmp_path, "ratings-0", NS, "ratings")
    accepted(ratings)
    evil = StreamClient(reted, tmp_path, "ratings-0", NS, "frontend")
    refused(evil, r"ratings-0 .*another identity")
    assert refusals(reted, "owner") == 1
    wl = stored(reted, "ratings-0")
    assert wl["spec"]["serviceAccount"] == "ratings" and wl["spec"]["address"] == ratings.address
    p = reted.proxy("ratings-0", NS)
    assert p and p["connected"], p
    # ratings' own stream is still open: reted answers its health message with nothing,
    # and its next ping arrives (pings come every tick); a closed stream raises EOFError.
    ratings.send({"type": "health", "ready": True})
    reted.apply_ok([service("other", NS, [(80, "HTTP", 8080)])])
    # a new push (the new Service is in ratings' whole-mesh scope) still reaches it
    msg = ratings.message()
    assert msg["type"] in ("delta", "config"), msg


def test_registration_same_identity_restart_takes_over(reted, tmp_path):
    """The same identity reconnecting (a restart) takes over its own record:
    the old stream is closed, the new one is served."""
    first = StreamClient(reted, tmp_path, "ratings-0", NS, "ratings")
    accepted(first)
    again = StreamClient(reted, tmp_path, "ratings-0", NS, "ratings", identity=first.identity,
                         address=first.address)
    accepted(again)
    with pytest.raises((EOFError, ConnectionError, OSError)):
        for _ in range(100):
            first.message()


def test_registration_operator_workload_not_deleted_by_drain(reted, tmp_path):
    """An operator-created Workload is never deleted by a proxy: neither by
    another identity's hello + drain, nor by the drain of the proxy it was
    declared for."""
    addr = fresh_host()
    reted.apply_ok([workload("db-0", NS, addr, "db", {"app": "db"})])
    evil = StreamClient(reted, tmp_path, "db-0", NS, "frontend")
    refused(evil, r"db-0 .*(operator|another identity)")
    evil.send({"type": "drain"})
    assert stored(reted, "db-0") is not None
    own = StreamClient(reted, tmp_path, "db-0", NS, "db", address=addr, labels={"app": "db"})
    accepted(own)
    own.send({"type": "drain"})
    log_has(reted.log, r"demo/db-0 is draining")
    wl = stored(reted, "db-0")
    assert wl is not None and wl["spec"]["labels"] == {"app": "db"}
    assert "annotations" not in wl["metadata"] or "rete.dev/registered-by" not in wl["metadata"]["annotations"]


def test_registration_operator_workload_not_deleted_by_expiry(reted, tmp_path):
    """Nor when the proxy's stream expires from the registry (grace 2 s)."""
    addr = fresh_host()
    reted.apply_ok([workload("db-0", NS, addr, "db", {"app": "db"})])
    own = StreamClient(reted, tmp_path, "db-0", NS, "db", address=addr)
    accepted(own)
    own.close()
    log_has(reted.log, r"demo/db-0 gone for 2 s", timeout=30)
    assert stored(reted, "db-0") is not None


def test_registration_operator_workload_claims_checked(reted, tmp_path):
    """A proxy attaching to the Workload the operator declared for it cannot
    change it: another address, or labels the record does not carry, are
    refused."""
    addr = fresh_host()
    reted.apply_ok([workload("db-0", NS, addr, "db", {"app": "db"})])
    moved = StreamClient(reted, tmp_path, "db-0", NS, "db")
    refused(moved, r"address .* operator")
    more = StreamClient(reted, tmp_path, "db-0", NS, "db", address=addr, labels={"app": "ratings"})
    refused(more, r"labels .*app=ratings.* not admitted")
    assert stored(reted, "db-0")["spec"]["address"] == addr


def test_registration_address_must_be_peer_address(reted, tmp_path):
    """A proxy connecting from 127.0.0.5 cannot claim 127.0.0.9."""
    src, claimed = fresh_host(), fresh_host()
    liar = StreamClient(reted, tmp_path, "liar-0", NS, "frontend", address=claimed, source=src)
    refused(liar, rf"address {claimed} .*connection comes from {src}")
    assert stored(reted, "liar-0") is None
    assert refusals(reted, "address") == 1


def test_registration_egress_beyond_allowed_refused(reted, tmp_path):
    """A proxy's egress cannot exceed what the operator allows for its
    identity: its WorkloadGroup's egress, else MeshConfig defaultEgress."""
    reted.apply_ok([{"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
                     "metadata": {"name": "mesh", "namespace": "rete-system"},
                     "spec": {"defaultEgress": ["./backend"]}}])
    wide = StreamClient(reted, tmp_path, "frontend-0", NS, "frontend", egress=["*/*"])
    refused(wide, r"egress \*/\* .*not admitted")
    assert refusals(reted, "egress") == 1
    narrow = StreamClient(reted, tmp_path, "frontend-1", NS, "frontend", egress=["./backend"])
    accepted(narrow)


def test_registration_workload_group_admits(reted, tmp_path):
    """What a WorkloadGroup of the proxy's service account admits is
    registered; a label value outside every group of its account is not."""
    reted.apply_ok([group("ratings-v1", "ratings", {"app": "ratings", "version": "v1"}, ["./*"])])
    ok = StreamClient(reted, tmp_path, "ratings-0", NS, "ratings",
                      labels={"app": "ratings", "version": "v1"}, egress=["./backend"])
    accepted(ok)
    wl = stored(reted, "ratings-0")
    assert wl["spec"]["labels"] == {"app": "ratings", "version": "v1"}
    assert wl["spec"]["egress"] == ["./backend"]
    v2 = StreamClient(reted, tmp_path, "ratings-1", NS, "ratings", labels={"app": "ratings", "version": "v2"})
    refused(v2, r"version=v2.* not admitted")
    outside = StreamClient(reted, tmp_path, "ratings-2", NS, "ratings", labels={"app": "ratings"},
                           egress=["other/*"])
    refused(outside, r"egress other/\* .*not admitted")
    # another account's group admits nothing for frontend
    fe = StreamClient(reted, tmp_path, "frontend-0", NS, "frontend", labels={"app": "ratings"})
    refused(fe, r"not admitted")


def test_registration_one_hello_per_stream(reted, tmp_path):
    """A second hello on a registered stream (to hold two records) is refused."""
    c = StreamClient(reted, tmp_path, "a-0", NS, "frontend")
    accepted(c)
    c.send({"type": "hello", "version": 0,
            "workload": {"name": "b-0", "namespace": NS, "serviceAccount": "frontend", "address": c.address}})
    refused(c, r"one hello per stream")
    assert stored(reted, "b-0") is None


def test_registration_hijack_with_a_real_proxy_refused(reted, tmp_path):
    """The review's attack with rete-proxy itself: a sidecar holding
    client's certificate started as `echo-0` (the echo sidecar's name) or as
    `evil-0` with echo's labels is refused, and every request to echo is
    still answered by echo (a hijacked share would fail: the impostor has no
    app behind it)."""
    from controlplane import echo_service_mesh
    mesh = echo_service_mesh(reted, tmp_path)
    try:
        for name in ("echo-0", "evil-0"):
            evil = CPProxy(reted, tmp_path, name, NS, "client", labels={"app": "echo"}, grant=False,
                           data_dir=str(tmp_path / f"evil-{name}"))
            evil.start(ready=r"control plane")
            log_has(evil.log, r"reted refused the stream: hello: (labels app=echo are not admitted|"
                              r"Workload demo/echo-0 is connected as another identity)")
            evil.stop()
        wl = stored(reted, "echo-0")
        assert wl["spec"]["serviceAccount"] == "echo", wl
        assert stored(reted, "evil-0") is None
        p = reted.proxy("echo-0", NS)
        assert p and p["connected"] and p["spiffeId"].endswith("/sa/echo"), p
        client = mesh["client"]
        codes = [curl_status(client.outbound, "echo") for _ in range(30)]
        assert codes == [200] * 30, codes
    finally:
        mesh["client"].stop()
        mesh["server"].stop()
        mesh["echo"].terminate()
        mesh["echo"].wait()
