"""Checks tests/system/certs.py, the certificate factory other system tests
and the demo rely on, against the openssl CLI itself."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import certs  # noqa: E402


def _text(cert):
    return subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout


def test_ca_workload_expired_and_bundle(tmp_path):
    d = str(tmp_path)
    old = certs.make_ca(d, "rete root 1")
    new = certs.make_ca(d, "rete root 2")
    assert "ASN1 OID: prime256v1" in _text(old[0])
    assert "CA:TRUE" in _text(old[0])

    cert, key = certs.make_workload_cert(d, old, "cluster.local", "default", "web")
    text = _text(cert)
    assert "URI:spiffe://cluster.local/ns/default/sa/web" in text
    assert text.count("URI:") == 1
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"

    exp, _ = certs.make_workload_cert(d, old, "cluster.local", "default", "web", expired=True)
    assert "Not After : Jan  2 00:00:00 2020 GMT" in _text(exp)
    with pytest.raises(RuntimeError):
        certs.verify(exp, old[0])

    rotated, _ = certs.make_workload_cert(d, new, "cluster.local", "prod", "db", days=2)
    with pytest.raises(RuntimeError):
        certs.verify(rotated, old[0])
    bundle = certs.make_bundle(os.path.join(d, "bundle.crt"), old[0], new[0])
    certs.verify(cert, bundle)
    certs.verify(rotated, bundle)
