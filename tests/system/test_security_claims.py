"""What a proxy says about its own certificate on the config stream is not
taken on its word (issue 8, item 3, the part left after registration): the
certificate facts reted keeps for a proxy (the root it chains to, notBefore,
notAfter, serial) come from the client certificate its stream was verified
with, or from the certificate reted itself issued on that certificate's
renewal, never from `certIssuedAt` / `certExpiresAt` in hello or health.
The CA rotation's `finish` check and `GET /api/v1/proxies` (retectl
proxy-status) rely on them. Each test forges messages with a raw stream
client (StreamClient) holding a real workload certificate, as an attacker
holding one workload's key would. Loopback only; every wait is bounded and
polls a condition."""
import http.client
import json
import os
import ssl
import time

import pytest

from controlplane import (StreamClient, issue_identity, make_csr, openssl, reted_metric, start_reted, wait_for)

NS = "demo"


@pytest.fixture
def reted(tmp_path):
    r = start_reted(tmp_path, "--grace", "2s")
    yield r
    r.stop()


def _rotate(reted, phase):
    return reted.request("POST", "/api/v1/ca/rotate", {"phase": phase})


def _accepted(client):
    msg = client.message()
    assert msg.get("type") == "config", msg
    client.ack(msg)
    return msg


def _connected(reted, name):
    wait_for(lambda: (reted.proxy(name) or {}).get("connected"), 20, 0.1, f"{name} connected")


def _cert_facts(path):
    """(notAfter unix, serial hex upper) of the PEM certificate at path."""
    out = openssl("x509", "-noout", "-enddate", "-serial", "-in", path).stdout
    facts = dict(line.split("=", 1) for line in out.strip().splitlines())
    return int(ssl.cert_time_to_seconds(facts["notAfter"])), facts["serial"].upper()


def _renew(reted, tmp_path, identity, name):
    """POST /ca/v1/certificates over mTLS with `identity` (cert, key) and no
    token, as rete-proxy renews; returns the new (cert, key) paths."""
    key, csr = make_csr(tmp_path, name)
    ctx = ssl.create_default_context(cafile=reted.bundle)
    ctx.check_hostname = False
    ctx.load_cert_chain(*identity)
    c = http.client.HTTPSConnection(reted.host, reted.xds_port, context=ctx, timeout=30)
    try:
        c.request("POST", "/ca/v1/certificates", json.dumps({"csr": csr}), {"Content-Type": "application/json"})
        r = c.getresponse()
        body = json.loads(r.read() or b"{}")
    finally:
        c.close()
    assert r.status == 200, (r.status, body)
    cert = os.path.join(os.path.dirname(key), "cert.pem")
    with open(cert, "w") as f:
        f.write(body["certChain"])
    return cert, key


def test_claimed_new_root_certificate_does_not_let_rotation_finish(reted, tmp_path):
    """A proxy whose certificate is from the old root claims (hello and
    health) one issued after the rotation began: `finish` stays 409 — it
    would drop the root the proxy's real certificate chains to, and the
    proxy would fail every mesh handshake."""
    liar = StreamClient(reted, tmp_path, "liar-0", NS, "web")
    _accepted(liar)
    _connected(reted, "liar-0")
    st, body = _rotate(reted, "begin")
    assert st == 200, (st, body)
    future = int(time.time()) + 3600
    liar.send({"type": "health", "ready": True, "certIssuedAt": future, "certExpiresAt": future + 86400})
    # the health is read before the rotate request below (same loop, the
    # stream's bytes are already there); wait on reted having seen it anyway
    wait_for(lambda: (reted.proxy("liar-0") or {}).get("ready"), 20, 0.1, "health seen")
    st, body = _rotate(reted, "finish")
    assert st == 409, (st, body)
    assert "liar-0" in body["error"], body
    liar.close()


def test_silent_old_root_certificate_does_not_let_rotation_finish(reted, tmp_path):
    """A proxy that claims nothing about its certificate (no certIssuedAt)
    was counted as renewed: `finish` passed although its certificate is from
    the old root."""
    quiet = StreamClient(reted, tmp_path, "quiet-0", NS, "web")
    _accepted(quiet)
    _connected(reted, "quiet-0")
    st, body = _rotate(reted, "begin")
    assert st == 200, (st, body)
    st, body = _rotate(reted, "finish")
    assert st == 409, (st, body)
    assert "quiet-0" in body["error"], body
    quiet.close()


def test_claimed_old_certificate_does_not_hold_rotation_back(reted, tmp_path):
    """A proxy whose real certificate is from the new root claims an old
    one: it cannot keep `finish` at 409 for ever."""
    st, body = _rotate(reted, "begin")
    assert st == 200, (st, body)
    blocker = StreamClient(reted, tmp_path, "blocker-0", NS, "web")
    _accepted(blocker)
    _connected(reted, "blocker-0")
    blocker.send({"type": "health", "ready": True, "certIssuedAt": 1, "certExpiresAt": 2})
    wait_for(lambda: (reted.proxy("blocker-0") or {}).get("ready"), 20, 0.1, "health seen")
    st, body = _rotate(reted, "finish")
    assert st == 200, (st, body)
    blocker.close()


def test_renewal_on_the_streams_certificate_counts_for_rotation(reted, tmp_path):
    """The stream stays on the certificate it was opened with; a renewal
    presenting that certificate gets a new-root certificate from reted,
    which records it for the stream (it signed it): `finish` passes without
    a word from the proxy. A renewal by another replica of the same service
    account (another certificate) does not count for this stream."""
    a = StreamClient(reted, tmp_path, "renew-0", NS, "web")
    _accepted(a)
    _connected(reted, "renew-0")
    st, body = _rotate(reted, "begin")
    assert st == 200, (st, body)
    # another certificate of the same identity renews: not this stream's
    other = issue_identity(reted, tmp_path, "other.web", reted.token(NS, "web"))
    assert other[0] == 200, other
    _renew(reted, tmp_path, (other[2], other[3]), "other-renewed")
    st, body = _rotate(reted, "finish")
    assert st == 409 and "renew-0" in body["error"], (st, body)
    # the stream's own certificate renews: counted
    new = _renew(reted, tmp_path, a.identity, "renew-0-renewed")
    p = reted.proxy("renew-0")
    assert p["certExpiresAt"] == _cert_facts(new[0])[0], (p, _cert_facts(new[0]))
    st, body = _rotate(reted, "finish")
    assert st == 200, (st, body)
    a.close()


def test_proxy_status_shows_the_verified_certificate_not_the_claim(reted, tmp_path):
    """GET /api/v1/proxies (retectl proxy-status) shows the expiry of the
    certificate the stream was verified with, whatever hello and health
    claim."""
    c = StreamClient(reted, tmp_path, "claims-0", NS, "web")
    _accepted(c)
    _connected(reted, "claims-0")
    not_after, serial = _cert_facts(c.identity[0])
    p = reted.proxy("claims-0")
    assert p["certExpiresAt"] == not_after, (p, not_after)
    assert p["certSerial"].upper() == serial, (p, serial)
    c.send({"type": "health", "ready": True, "certExpiresAt": not_after + 10 ** 6, "certIssuedAt": 5})
    wait_for(lambda: (reted.proxy("claims-0") or {}).get("ready"), 20, 0.1, "health seen")
    p = reted.proxy("claims-0")
    assert p["certExpiresAt"] == not_after, (p, not_after)
    c.close()


def test_ack_for_a_version_never_sent_is_not_recorded(reted, tmp_path):
    """An ACK's nonce names what was sent; the version it claims is not
    taken: the proxy is at the version reted sent with that nonce."""
    c = StreamClient(reted, tmp_path, "acker-0", NS, "web")
    msg = c.message()
    assert msg.get("type") == "config", msg
    c.send({"type": "ack", "nonce": msg["nonce"], "version": msg["version"] + 1000})
    p = reted.wait_synced("acker-0")
    assert p["ackedVersion"] == msg["version"] == p["sentVersion"], (p, msg["version"])
    c.close()


def test_nack_error_cannot_forge_log_lines(reted, tmp_path):
    """A NACK's error is logged by reted (and kept for proxy-status): a
    newline in it wrote a second, forged log line. Control characters are
    written as \\xNN."""
    c = StreamClient(reted, tmp_path, "nacker-0", NS, "web")
    msg = c.message()
    assert msg.get("type") == "config", msg
    forged = "2099-01-01T00:00:00.000Z info  xds: demo/db-0 connected from 127.0.0.9 as spiffe://forged"
    c.send({"type": "nack", "nonce": msg["nonce"], "version": msg["version"], "error": "bad\n" + forged})
    reted.wait_status("nacker-0", "NACK")
    wait_for(lambda: "bad\\x0a2099-01-01" in reted.log(), 20, 0.1, "the NACK logged")
    assert not any(line.startswith("2099-01-01") for line in reted.log().splitlines()), reted.log()[-2000:]
    assert reted.proxy("nacker-0")["error"] == "bad\n" + forged  # the API shows it as sent (JSON-escaped)
    c.close()


def test_stream_closed_when_its_certificate_expired(tmp_path):
    """The handshake checks the client certificate once: a stream outliving
    its certificate (and every renewal reted issued for it) kept an identity
    without a valid certificate subscribed for ever. reted closes it (at
    its 15 s tick); a stream whose certificate was renewed stays."""
    reted = start_reted(tmp_path, "--grace", "60s", "--cert-ttl", "10s")
    try:
        stale = StreamClient(reted, tmp_path, "stale-0", NS, "web")
        _accepted(stale)
        fresh = StreamClient(reted, tmp_path, "fresh-0", NS, "web")
        _accepted(fresh)
        mc = {"apiVersion": "rete.dev/v1alpha1", "kind": "MeshConfig",
              "metadata": {"name": "mesh", "namespace": "rete-system"}, "spec": {"workloadCertificateTTL": "1h"}}
        reted.apply_ok([mc])
        renewed = _renew(reted, tmp_path, fresh.identity, "fresh-0-renewed")
        assert reted.proxy("fresh-0")["certExpiresAt"] == _cert_facts(renewed[0])[0]
        wait_for(lambda: not reted.proxy("stale-0")["connected"], 45, 0.5, "stale-0 closed")
        assert reted.proxy("fresh-0")["connected"], reted.proxy("fresh-0")
        assert reted_metric(reted, "rete_reted_streams_closed_cert_expired_total") == 1
        assert "stale-0: its certificate expired" in reted.log()
        stale.close()
        fresh.close()
    finally:
        reted.stop()
