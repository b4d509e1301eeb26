"""A throwaway CA for TLS servers the tests run (apps that speak TLS
themselves, external services): `openssl` CLI, EC P-256, one day."""
import os
import subprocess


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_ca(directory, name="test-ca"):
    """(ca.pem, ca.key) paths of a new self-signed CA in `directory`."""
    pem, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", f"/CN={name}", "-days", "1", "-keyout", key, "-out", pem,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    return pem, key


def issue(directory, ca, name, dns_names=(), ips=()):
    """(cert.pem, key.pem) of a server certificate for `dns_names` and `ips`
    signed by `ca` (make_ca's pair)."""
    pem, key = os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")
    sans = ",".join([f"DNS:{d}" for d in dns_names] + [f"IP:{i}" for i in ips])
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", f"/CN={name}", "-days", "1", "-keyout", key, "-out", pem, "-CA", ca[0],
             "-CAkey", ca[1], "-addext", f"subjectAltName={sans}",
             "-addext", "extendedKeyUsage=serverAuth", "-addext", "basicConstraints=CA:FALSE")
    return pem, key
