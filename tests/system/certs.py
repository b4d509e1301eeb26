"""Test certificates for system tests and the demo, made with the `openssl`
command-line tool (Debian's OpenSSL 3.0; no pip packages).

    ca = make_ca(d, "rete root")                        # (cert, key) paths
    cert, key = make_workload_cert(d, ca, "cluster.local", "default", "web")
    old = make_workload_cert(d, ca, "cluster.local", "default", "web", expired=True)
    bundle = make_bundle(d + "/bundle.crt", ca[0], other_ca[0])

Keys are ECDSA P-256, as issued by reted's CA. Workload certificates carry
the single URI SAN spiffe://<trust-domain>/ns/<ns>/sa/<sa> and are issued with
`openssl ca`, the only OpenSSL 3.0 command that can set an arbitrary validity
window (-startdate/-enddate): that is how expired certificates are made, with
no faketime. Every certificate is checked with `openssl verify -CAfile` before
it is returned (expired ones with -no_check_time, then once more without it to
confirm they really are expired).
"""

import os
import subprocess
import tempfile
import time

OPENSSL = "openssl"

__all__ = ["make_ca", "make_workload_cert", "make_bundle", "spiffe_id", "verify"]


def _run(*args, input=None):
    p = subprocess.run([OPENSSL, *args], input=input, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(
            "openssl %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr.strip())
        )
    return p.stdout


def _genkey(path):
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)


def _asn1_time(t):
    # GeneralizedTime, as `openssl ca -startdate/-enddate` accepts it.
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(t))


def _cn_escape(s):
    return s.replace("\\", "\\\\").replace("/", "\\/")


def spiffe_id(trust_domain, ns, sa):
    return "spiffe://%s/ns/%s/sa/%s" % (trust_domain, ns, sa)


def verify(cert, ca_file, check_time=True):
    """Raises RuntimeError unless cert chains to a root in ca_file."""
    args = ["verify", "-CAfile", ca_file]
    if not check_time:
        args.append("-no_check_time")
    out = _run(*args, cert)
    if not out.strip().endswith("OK"):
        raise RuntimeError("openssl verify %s: %s" % (cert, out.strip()))


def make_ca(dir, name, days=3650):
    """A self-signed ECDSA P-256 root CA in dir/<name>.crt and .key (spaces in
    name become '-' in the file names). Returns (cert_path, key_path)."""
    base = os.path.join(dir, name.replace(" ", "-"))
    cert, key = base + ".crt", base + ".key"
    _genkey(key)
    with tempfile.NamedTemporaryFile("w", suffix=".cnf", dir=dir, delete=False) as cnf:
        cnf.write(
            "[req]\ndistinguished_name = dn\nprompt = no\n"
            "[dn]\nCN = %s\n"
            "[v3_ca]\nbasicConstraints = critical,CA:TRUE\n"
            "keyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n" % name
        )
    try:
        _run("req", "-x509", "-new", "-config", cnf.name, "-extensions", "v3_ca",
             "-key", key, "-sha256", "-days", str(days), "-out", cert)
    finally:
        os.unlink(cnf.name)
    verify(cert, cert)
    return cert, key


def make_workload_cert(dir, ca, trust_domain, ns, sa, days=1, expired=False, name=None,
                       extra_sans=()):
    """A workload certificate for spiffe://<trust_domain>/ns/<ns>/sa/<sa>
    signed by ca = (ca_cert, ca_key), written to dir/<name>.crt and .key
    (name defaults to "<ns>.<sa>", with ".expired" when expired).

    Valid from 5 minutes ago for `days` days; expired=True makes one that
    was valid for a day in January 2020. extra_sans adds SAN entries in
    openssl syntax (e.g. "DNS:web.default.svc"), for tests of unusual
    certificates. Returns (cert_path, key_path)."""
    ca_cert, ca_key = ca
    if name is None:
        name = "%s.%s%s" % (ns, sa, ".expired" if expired else "")
    base = os.path.join(dir, name)
    cert, key = base + ".crt", base + ".key"
    _genkey(key)
    san = ",".join(["URI:" + spiffe_id(trust_domain, ns, sa), *extra_sans])
    if expired:
        start, end = "20200101000000Z", "20200102000000Z"
    else:
        now = time.time()
        start, end = _asn1_time(now - 300), _asn1_time(now + days * 86400)

    with tempfile.TemporaryDirectory(dir=dir) as work:
        csr = os.path.join(work, "req.csr")
        cnf = os.path.join(work, "ca.cnf")
        open(os.path.join(work, "index.txt"), "w").close()
        with open(os.path.join(work, "serial"), "w") as f:
            f.write("01\n")  # required by 3.0 even though -rand_serial wins
        with open(cnf, "w") as f:
            f.write(
                "[req]\ndistinguished_name = dn\nprompt = no\n"
                "[dn]\nO = %(td)s\nCN = %(cn)s\n"
                "[ca]\ndefault_ca = rete_ca\n"
                "[rete_ca]\ndatabase = %(work)s/index.txt\nserial = %(work)s/serial\n"
                "new_certs_dir = %(work)s\n"
                "default_md = sha256\npolicy = policy_any\nunique_subject = no\n"
                "copy_extensions = none\n"
                "[policy_any]\ncommonName = supplied\norganizationName = optional\n"
                "[workload]\nbasicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature\n"
                "extendedKeyUsage = serverAuth,clientAuth\n"
                "authorityKeyIdentifier = keyid:always\n"
                "subjectAltName = %(san)s\n"
                % {"td": trust_domain, "cn": _cn_escape("%s.%s" % (sa, ns)), "work": work,
                   "san": san}
            )
        _run("req", "-new", "-config", cnf, "-key", key, "-out", csr)
        _run("ca", "-batch", "-config", cnf, "-name", "rete_ca", "-cert", ca_cert,
             "-keyfile", ca_key, "-in", csr, "-out", cert, "-extensions", "workload",
             "-startdate", start, "-enddate", end, "-rand_serial", "-notext")

    if expired:
        verify(cert, ca_cert, check_time=False)
        try:
            verify(cert, ca_cert)
        except RuntimeError:
            pass
        else:
            raise RuntimeError("%s was meant to be expired but verifies" % cert)
    else:
        verify(cert, ca_cert)
    return cert, key


def make_bundle(path, *certs):
    """Concatenates PEM certificates (e.g. the old and new roots of a CA
    rotation) into one trust bundle at path; returns path."""
    with open(path, "w") as out:
        for c in certs:
            with open(c) as f:
                pem = f.read()
            out.write(pem if pem.endswith("\n") else pem + "\n")
    return path


if __name__ == "__main__":
    # Smoke run: python3 tests/system/certs.py [dir]
    import sys

    d = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="rete-certs-")
    os.makedirs(d, exist_ok=True)
    ca = make_ca(d, "rete root 1")
    ca2 = make_ca(d, "rete root 2")
    print(make_workload_cert(d, ca, "cluster.local", "default", "web"))
    print(make_workload_cert(d, ca, "cluster.local", "default", "web", expired=True))
    print(make_workload_cert(d, ca2, "cluster.local", "prod", "db", days=2))
    print(make_bundle(os.path.join(d, "bundle.crt"), ca[0], ca2[0]))
    print("ok:", d)
