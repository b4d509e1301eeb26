"""valgrind (memcheck) on a sidecar's whole life: start, serve HTTP/1.1 and
HTTP/2 through the mesh, reload (SIGHUP) with traffic before and after,
drain (SIGTERM) and exit. The proxy under valgrind is the plain build
(`build/`: valgrind cannot run a sanitizer build); its peers are whatever
RETE_BUILD is. Any invalid read or write, use of uninitialised memory or
definite leak fails the test (valgrind exits 99 and its summary is read)."""
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from helpers import read_log, start_echo, start_process
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload

PLAIN = Path(__file__).resolve().parents[2] / "build" / "src" / "proxy" / "rete-proxy"


def get(outbound, path):
    req = urllib.request.Request(f"http://{outbound}{path}", headers={"Host": "echo"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_sidecar_life_is_memcheck_clean(tmp_path):
    assert PLAIN.is_file(), f"{PLAIN}: make build first (make test does)"
    m = Mesh(tmp_path)
    client_host, echo_host = fresh_host(), fresh_host()
    _, echo_addr = start_echo(name="echo", host=echo_host)
    echo_port = int(echo_addr.rsplit(":", 1)[1])
    m.add(service("echo", m.ns, [(80, "HTTP", echo_port)]),
          workload("echo-0", m.ns, echo_host, "echo", {"app": "echo"}),
          workload("client-0", m.ns, client_host, "client", {"app": "client"}))
    m.start_proxy("echo-0", "echo", echo_host, inbound=[(echo_port, "HTTP")])
    path = m.write_config("client-0", "client", client_host)
    proc = start_process(["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
                          "--show-leak-kinds=definite", "--track-origins=yes", str(PLAIN), "--config", path,
                          "--concurrency", "2"], r"ready:", timeout=120)
    try:
        outbound = f"{client_host}:15001"
        for i in range(20):
            assert get(outbound, f"/v?i={i}") == 200
        assert get(outbound, "/fail?status=503") == 503
        r = subprocess.run(["nghttp", "-ns", "-m", "10", "-H", ":authority: echo", f"http://{outbound}/h2"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout.count(" 200 ") == 10, r.stdout[-800:]
        proc.send_signal(signal.SIGHUP)
        for i in range(10):
            assert get(outbound, f"/after-reload?i={i}") == 200
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        log = read_log(proc)
        assert code == 0, log[-6000:]
        assert "ERROR SUMMARY: 0 errors" in log, log[-6000:]
        assert "reload: configuration version 2 in use" in log, log[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stop_and_check_proxies(m)  # the echo's sidecar (RETE_BUILD's, a sanitizer build under make test)
