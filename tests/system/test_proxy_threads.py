"""Many workers under everything at once: four worker threads per sidecar
carrying keep-alive HTTP/1.1 and multiplexed HTTP/2 traffic while the
configuration is reloaded (SIGHUP) and /metrics is scraped, over and over.
Under `make test` this module runs twice: on the ASan+UBSan build with the
rest of the suite (every request answered, every counter adding up), and on
a ThreadSanitizer build (`make tsan-test`) where a data race or a lock-order
inversion anywhere on these paths fails it (docs/testing.md). Bounded: 1,600
HTTP/1.1 and 400 HTTP/2 requests."""
import http.client
import signal
import subprocess
import threading
import time
import urllib.request

from mesh import echo_mesh, stop_and_check_proxies

WORKERS = 4
H1_THREADS, H1_EACH = 4, 400
H2_ROUNDS, H2_EACH = 8, 50


def scrape(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=30) as r:
        return r.read().decode()


def total(text, name, **labels):
    n = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            n += float(line.rsplit(" ", 1)[1])
    return n


def test_workers_under_traffic_reloads_and_scrapes(tmp_path):
    env = echo_mesh(tmp_path, client_args=("--concurrency", str(WORKERS)))
    host, port = env["outbound"].rsplit(":", 1)
    failures, done = [], threading.Event()

    def h1_client():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for i in range(H1_EACH):
            try:
                conn.request("GET", f"/t?i={i}", headers={"Host": "echo"})
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    failures.append(("h1", r.status))
            except (OSError, http.client.HTTPException) as e:
                failures.append(("h1", repr(e)))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.close()

    def h2_client():
        # nghttp (nghttp2's client) multiplexes the requests on one
        # connection; curl 7.88's --parallel over prior knowledge loses
        # transfers on its own, so it is not the peer here.
        for _ in range(H2_ROUNDS):
            r = subprocess.run(["nghttp", "-ns", "-m", str(H2_EACH), "-H", ":authority: echo",
                                f"http://{env['outbound']}/h2"], capture_output=True, text=True, timeout=120)
            codes = [l.split()[-3] for l in r.stdout.splitlines() if l.strip().split()[-1:] == ["/h2"]]
            if r.returncode != 0 or codes != ["200"] * H2_EACH:
                failures.append(("h2", r.returncode, [c for c in codes if c != "200"][:5], len(codes)))

    def churn():
        # reloads and scrapes until the traffic is done, at most a few hundred
        n = 0
        while not done.is_set() and n < 300:
            env["client"].send_signal(signal.SIGHUP)
            env["server"].send_signal(signal.SIGHUP)
            scrape(env["admin"])
            scrape(env["server_admin"])
            n += 1
            time.sleep(0.01)

    traffic = [threading.Thread(target=h1_client) for _ in range(H1_THREADS)] + [threading.Thread(target=h2_client)]
    side = threading.Thread(target=churn)
    side.start()
    for t in traffic:
        t.start()
    for t in traffic:
        t.join(timeout=600)
    done.set()
    side.join(timeout=120)
    assert not any(t.is_alive() for t in traffic + [side]), "a client thread is stuck"
    assert failures == [], failures[:10]
    sent = H1_THREADS * H1_EACH + H2_ROUNDS * H2_EACH
    text = scrape(env["admin"])
    assert total(text, "istio_requests_total", reporter="source", response_code="200") == sent
    assert f"rete_proxy_workers {WORKERS}" in text
    assert total(text, "rete_proxy_config_reloads_total", result="ok") >= 1
    stop_and_check_proxies(env["mesh"])
