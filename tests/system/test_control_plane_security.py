"""Security through the control plane (issue 3, "Done means"): CA rotation
under traffic with no failed request, authorization matrices for HTTP, gRPC
and TCP applied with reted's API and pushed to the proxies, PeerAuthentication
DISABLE. Every test starts its own reted on a temporary data dir; loopback
only, conditions polled with generous bounds."""
import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from controlplane import (TRUST_DOMAIN, apply_and_push, curl, curl_status, echo_service_mesh, finish_traffic,
                          log_has, openssl, proxy_metric, start_cp_proxy, start_reted, start_traffic, wait_for)
from helpers import free_port, read_log, start_process
from mesh import fresh_host, service

PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", re.S)


@pytest.fixture
def reted(tmp_path):
    return start_reted(tmp_path)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _certs(pem):
    """The certificates of a PEM bundle, each normalised to end in a newline."""
    if isinstance(pem, str):
        pem = pem.encode()
    return [c if c.endswith(b"\n") else c + b"\n" for c in PEM_CERT.findall(pem)]


def _verifies(cert_path, root_pem, tmp_path):
    """`openssl verify` of cert_path against exactly the roots in root_pem."""
    fd, ca = tempfile.mkstemp(suffix=".pem", dir=str(tmp_path))
    with os.fdopen(fd, "wb") as f:
        f.write(root_pem)
    r = openssl("verify", "-CAfile", ca, cert_path)
    os.unlink(ca)
    return r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr


def _rotate(reted, phase):
    return reted.request("POST", "/api/v1/ca/rotate", {"phase": phase})


# ---------------------------------------------------------------- CA rotation


def test_ca_rotation_under_traffic_without_a_failed_request(reted, tmp_path):
    m = echo_service_mesh(reted, tmp_path)
    proxies = (m["server"], m["client"])
    old_root = _read(os.path.join(reted.data, "ca", "root.pem"))
    assert _certs(_read(reted.bundle)) == [old_root]
    first = {p.name: _read(p.cert_path) for p in proxies}
    for p in proxies:
        assert _verifies(p.cert_path, old_root, tmp_path)[0]

    traffic = start_traffic(m["client"].outbound, rate=20, duration=45)
    wait_for(lambda: curl_status(m["client"].outbound, "echo") == 200, 20, 0.3, "traffic flowing")

    # begin: a second root joins the bundle; every proxy gets it and renews from the new root
    st, body = _rotate(reted, "begin")
    assert st == 200 and body["phase"] == "begin" and body["rotating"] is True, (st, body)
    bundle = _certs(body["trustBundle"])
    assert len(bundle) == 2 and old_root in bundle, body
    new_root = next(c for c in bundle if c != old_root)
    assert _certs(_read(reted.bundle)) == bundle
    for p in proxies:
        wait_for(lambda: len(_certs(_read(os.path.join(p.data, "bundle.pem")))) == 2, 30, 0.2,
                 f"{p.name} holds the two-root bundle")
        wait_for(lambda: _read(p.cert_path) != first[p.name] and _verifies(p.cert_path, new_root, tmp_path)[0],
                 60, 0.3, f"{p.name} renewed from the new root")
        log_has(p.log, r"the CA asks for new certificates; renewing")

    # finish: reted refuses (409) while a connected proxy still reports an
    # old-root certificate; retry within a bound
    last = {}

    def finished():
        st, body = _rotate(reted, "finish")
        last["r"] = (st, body)
        assert st in (200, 409), (st, body)
        return st == 200 and body
    try:
        body = wait_for(finished, 60, 0.5, "rotation finish accepted")
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer {last.get('r')}; proxies {reted.proxies()}\n"
                             f"reted log:\n{reted.log()[-3000:]}")
    assert body["phase"] == "finish" and body["rotating"] is False, body
    assert _certs(body["trustBundle"]) == [new_root]
    assert _read(os.path.join(reted.data, "ca", "root.pem")) == new_root
    assert _certs(_read(reted.bundle)) == [new_root]
    for p in proxies:
        wait_for(lambda: _certs(_read(os.path.join(p.data, "bundle.pem"))) == [new_root], 30, 0.2,
                 f"{p.name} holds only the new root")

    # traffic still flows after the old root left every bundle (fresh connections too)
    assert curl_status(m["client"].outbound, "echo") == 200
    rc, out = finish_traffic(traffic, timeout=120)
    assert rc == 0, out
    assert " err=0 " in out, out
    after = start_traffic(m["client"].outbound, rate=20, duration=3)
    rc, out = finish_traffic(after, timeout=60)
    assert rc == 0 and " err=0 " in out, out

    for p in proxies:
        ok, why = _verifies(p.cert_path, new_root, tmp_path)
        assert ok, why
        r = openssl("verify", "-CAfile", os.path.join(p.data, "bundle.pem"), p.cert_path)
        assert r.returncode == 0, r.stdout + r.stderr
        ok, why = _verifies(p.cert_path, old_root, tmp_path)
        assert not ok, f"{p.name}'s certificate still verifies against the old root: {why}"
        assert reted.wait_synced(p.name)["error"] == ""
    # reted's own certificate (15012) is from the new root too
    assert _verifies(os.path.join(reted.data, "server.pem"), new_root, tmp_path)[0]


def test_ca_rotation_phases_out_of_order_are_409(reted):
    st, body = _rotate(reted, "finish")
    assert st == 409 and "no CA rotation in progress" in body["error"], (st, body)
    st, body = _rotate(reted, "begin")
    assert st == 200 and body["rotating"] is True, (st, body)
    bundle = _read(reted.bundle)
    st, body = _rotate(reted, "begin")
    assert st == 409 and "already in progress" in body["error"], (st, body)
    assert _read(reted.bundle) == bundle and len(_certs(bundle)) == 2
    st, body = _rotate(reted, "finish")  # no proxies: nothing to wait for
    assert st == 200 and body["rotating"] is False, (st, body)
    assert len(_certs(_read(reted.bundle))) == 1
    st, body = _rotate(reted, "finish")
    assert st == 409, (st, body)
    for bad in ({"phase": "middle"}, {}, "not json"):
        st, body = reted.request("POST", "/api/v1/ca/rotate", bad)
        assert st == 400, (bad, st, body)
