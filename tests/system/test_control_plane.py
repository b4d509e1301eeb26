"""The control plane end to end (issue 3, "Done means"): reted with its
embedded store and CA, rete-proxy in control-plane mode, the operator API.
Every test starts its own reted on a temporary data dir and loopback ports."""
import os
import signal
import stat
import time

import pytest

from controlplane import (READY_PROXY, CPProxy, cert_sans, curl, curl_json, curl_status, echo_service_mesh,
                          finish_traffic, log_has, openssl, start_cp_proxy, start_reted, start_traffic,
                          wait_for)
from helpers import read_log
from mesh import service


@pytest.fixture
def reted(tmp_path):
    return start_reted(tmp_path)


# ---------------------------------------------------------------- bootstrap and mTLS


def test_bootstrap_certificates_verify_and_carry_only_the_spiffe_id(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    for p in (m["server"], m["client"]):
        r = openssl("verify", "-CAfile", reted.bundle, p.cert_path)
        assert r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr
        assert cert_sans(p.cert_path) == [f"URI:{p.spiffe}"]
        assert stat.S_IMODE(os.stat(p.key_path).st_mode) == 0o600
    body = curl_json(m["client"].outbound, "echo", "/hello")
    assert body["service"] == "echo" and body["path"] == "/hello"
    assert body["headers"]["x-forwarded-client-cert"] == (
        f"By={m['server'].spiffe};URI={m['client'].spiffe}")


# ---------------------------------------------------------------- join tokens


def _cert_refused(p, timeout=30):
    """The proxy's certificate request was refused and it did not become ready."""
    m = log_has(p.log, r"certificate request refused \((\d+)\): ([^\n]*)", timeout)
    assert "ready:" not in p.log()
    assert p.proc.poll() is None  # it keeps retrying with backoff, it does not crash
    return m


def test_single_use_token_refused_the_second_time(reted, tmp_path):
    tok = reted.token("demo", "web")  # uses defaults to 1
    first = start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", token=tok)
    assert cert_sans(first.cert_path) == ["URI:spiffe://cluster.local/ns/demo/sa/web"]
    second = CPProxy(reted, tmp_path, "web-1", "demo", "web", token=tok).start(ready=r"control plane")
    m = _cert_refused(second)
    assert m.group(1) == "403" and "used up" in m.group(2), m.group(0)
    assert not os.path.exists(second.cert_path)
    assert "refused a certificate request" in reted.log()
    assert reted.proxy("web-1") is None and reted.proxy("web-0")["status"] == "SYNCED"


def test_token_with_two_uses_serves_two_proxies_then_no_more(reted, tmp_path):
    tok = reted.token("demo", "web", uses=2)
    start_cp_proxy(reted, tmp_path, "web-0", "demo", "web", token=tok)
    start_cp_proxy(reted, tmp_path, "web-1", "demo", "web", token=tok)
    third = CPProxy(reted, tmp_path, "web-2", "demo", "web", token=tok).start(ready=r"control plane")
    _cert_refused(third)


def test_expired_token_refused(reted, tmp_path):
    tok = reted.token("demo", "web", ttl=1)
    time.sleep(2.2)
    p = CPProxy(reted, tmp_path, "web-0", "demo", "web", token=tok).start(ready=r"control plane")
    m = _cert_refused(p)
    assert m.group(1) == "403" and "expired" in m.group(2), m.group(0)
    assert reted.proxy("web-0") is None


def test_unknown_token_refused(reted, tmp_path):
    p = CPProxy(reted, tmp_path, "web-0", "demo", "web", token="not-a-token").start(ready=r"control plane")
    assert _cert_refused(p).group(1) == "403"


def test_token_scope_wins_over_the_claimed_identity_and_the_stream_is_refused(reted, tmp_path):
    """A token for demo/web used by a proxy that claims other/admin: the
    certificate names demo/web whatever the CSR asked; the hello then claims
    other/admin, so reted refuses the stream and sends no configuration."""
    tok = reted.token("demo", "web")
    p = CPProxy(reted, tmp_path, "sneaky-0", "other", "admin", token=tok).start(ready=r"control plane")
    wait_for(lambda: os.path.exists(p.cert_path), 30, 0.1, "the certificate")
    assert cert_sans(p.cert_path) == ["URI:spiffe://cluster.local/ns/demo/sa/web"]
    log_has(p.log, r"reted refused the stream: hello names other/admin but the certificate is "
                   r"spiffe://cluster.local/ns/demo/sa/web")
    log_has(reted.log, r"refusing stream .*hello names other/admin")
    assert "ready:" not in p.log() and "configuration version" not in p.log()
    assert reted.proxies() == []
    assert not os.path.exists(os.path.join(p.data, "config.json"))
    st, _ = reted.get("workload", "other", "sneaky-0")
    assert st == 404
    st, _ = reted.get("workload", "demo", "sneaky-0")
    assert st == 404


# ---------------------------------------------------------------- rotation and outages


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_rotation_with_30_second_certificates_under_traffic(tmp_path):
    reted = start_reted(tmp_path, "--cert-ttl", "30s")
    m = echo_service_mesh(reted, tmp_path)
    proxies = (m["server"], m["client"])
    first = {p.name: _read(p.cert_path) for p in proxies}
    traffic = start_traffic(m["client"].outbound, rate=20, duration=40)
    rc, out = finish_traffic(traffic, timeout=120)
    assert rc == 0, out
    assert " err=0 " in out, out
    for p in proxies:
        assert _read(p.cert_path) != first[p.name], f"{p.name} never renewed:\n{p.log()[-3000:]}"
        assert "renewed certificate" in p.log()
        r = openssl("verify", "-CAfile", reted.bundle, p.cert_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert cert_sans(p.cert_path) == [f"URI:{p.spiffe}"]
        assert stat.S_IMODE(os.stat(p.key_path).st_mode) == 0o600
    # both proxies still in sync, with a certificate valid in the future
    for p in proxies:
        st = reted.wait_synced(p.name)
        assert st["certExpiresAt"] > time.time()


def test_reted_killed_under_traffic_then_proxies_reconnect(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    traffic = start_traffic(m["client"].outbound, rate=20, duration=20)
    time.sleep(3)
    reted.kill(signal.SIGKILL)
    for p in (m["server"], m["client"]):
        log_has(p.log, r"config stream to .* closed; serving version")
    time.sleep(4)
    reted.start()
    for p in (m["server"], m["client"]):
        reted.wait_synced(p.name, timeout=60)
    rc, out = finish_traffic(traffic, timeout=90)
    assert rc == 0, out
    assert curl_status(m["client"].outbound, "echo") == 200


def test_proxy_restarted_while_reted_is_down_serves_its_saved_config(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    client = m["client"]
    reted.kill(signal.SIGKILL)
    assert client.stop() == 0
    client.start()  # no reted: it must come up from its data dir
    assert "serving the saved configuration version" in client.log()
    body = curl_json(client.outbound, "echo", "/after-restart")
    assert body["path"] == "/after-restart"
    assert body["headers"]["x-forwarded-client-cert"].endswith(f"URI={client.spiffe}")
    reted.start()
    reted.wait_synced("client-0", timeout=60)
    reted.wait_synced("echo-0", timeout=60)
    assert curl_status(client.outbound, "echo") == 200


# ---------------------------------------------------------------- NACK


def _local_proxy_doc(tmp_path, p_name, ns, sa, host, data, upstream_service, listen):
    import json
    doc = {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy", "metadata": {"name": p_name, "namespace": ns},
           "spec": {"serviceAccount": sa, "address": host,
                    "tls": {"certFile": f"{data}/cert.pem", "keyFile": f"{data}/key.pem",
                            "caFile": f"{data}/bundle.pem"},
                    "upstreams": [{"listen": listen, "service": upstream_service, "port": 80}]}}
    path = os.path.join(str(tmp_path), f"{p_name}.proxy.yaml")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def test_nacked_config_is_visible_and_the_proxy_keeps_its_last_good_one(reted, tmp_path):
    """A proxy whose own Proxy document has an upstream to Service `extra`:
    fine while reted has `extra`; once `extra` is deleted, the pushed snapshot
    no longer loads, the proxy NACKs it with the loader's error, keeps
    serving the previous one, and reted shows NACK and the error."""
    from mesh import fresh_host
    m = echo_service_mesh(reted, tmp_path)
    reted.apply_ok([service("extra", "demo", [(80, "HTTP", m["echo_port"])], {"app": "echo"})])
    host = fresh_host()
    data = os.path.join(str(tmp_path), "proxy-up-0")
    cfg = _local_proxy_doc(tmp_path, "up-0", "demo", "up", host, data, "extra", f"{host}:9191")
    up = start_cp_proxy(reted, tmp_path, "up-0", "demo", "up", host=host, data_dir=data,
                        extra=["--config", cfg])
    wait_for(lambda: curl_status(f"{host}:9191", "anything") == 200, 30, 0.3, "upstream listener to extra")
    good = reted.proxy("up-0")["ackedVersion"]
    st, body = reted.delete("service", "demo", "extra")
    assert st == 200, body
    entry = reted.wait_status("up-0", "NACK")
    assert "extra" in entry["error"] and "upstreams[0].service" in entry["error"], entry
    assert entry["ackedVersion"] == good and entry["sentVersion"] > good
    log_has(up.log, rf"rejected configuration version {entry['sentVersion']}: .*keeping version {good}")
    log_has(reted.log, r"xds: demo/up-0 rejected version")
    # still serving the last good snapshot, which has `extra`
    assert curl_status(f"{host}:9191", "anything") == 200
    assert curl_status(up.outbound, "echo") == 200
    # other proxies were not affected
    assert reted.proxy("client-0")["status"] == "SYNCED"
    # once the config is acceptable again, the proxy takes it
    reted.apply_ok([service("extra", "demo", [(80, "HTTP", m["echo_port"])], {"app": "echo"})])
    synced = reted.wait_synced("up-0")
    assert synced["error"] == "" and synced["ackedVersion"] > entry["sentVersion"] - 1


def test_first_config_nacked_leaves_the_proxy_unready_and_visible(reted, tmp_path):
    """With no last good configuration there is nothing to serve: the proxy
    stays unready, NACKs, and reted shows the loader's error."""
    from mesh import fresh_host
    host = fresh_host()
    data = os.path.join(str(tmp_path), "proxy-up-0")
    cfg = _local_proxy_doc(tmp_path, "up-0", "demo", "up", host, data, "nosuch", f"{host}:9191")
    up = CPProxy(reted, tmp_path, "up-0", "demo", "up", host=host, data_dir=data,
                 extra=["--config", cfg]).start(ready=r"rejected configuration version")
    entry = reted.wait_status("up-0", "NACK")
    assert "nosuch" in entry["error"], entry
    assert "ready:" not in up.log()
    assert up.proc.poll() is None
    st, _ = reted.get("workload", "demo", "up-0")
    assert st == 200  # registered: it is connected, just not configured
