"""The dashboard reted serves on its operator port (issue 12): the page
and its assets load without the admin token, every data request carries
it; driven in headless Chromium (browser.py) against reted, two sidecars
and rete-echo with traffic, as in test_golden.py (reted --stats-bucket 1s,
proxies --stats-interval 1); the analysers' findings (GET /api/v1/analyze)
appear when a resource set has some; a tap of a Service started from the
page shows its live requests and stops at the proxies when the page is
hidden. Screenshots stay in the test's tmp dir;
RETE_DASHBOARD_SCREENSHOT=PATH copies the live one there (docs/dashboard.png
was made so)."""
import http.client
import os
import shutil

import pytest

from browser import CHROMIUM, Browser
from controlplane import apply_and_push, echo_service_mesh, proxy_metric, start_reted
from helpers import wait_for
from mesh import http_route
from test_golden import send_mix

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)")

ECHO = "echo.demo.svc.cluster.local"


def raw_get(api, path, method="GET"):
    host, port = api.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def cell(b, table, key, column):
    """The text of one cell of a dashboard table (row by its data-key)."""
    return b.js(f"""(() => {{
        const t = document.getElementById({table!r});
        const col = [...t.tHead.rows[0].cells].findIndex(c => c.textContent === {column!r});
        const row = [...t.tBodies[0].rows].find(r => r.dataset.key === {key!r});
        return row ? row.cells[col].textContent : null; }})()""")


def test_dashboard_assets_are_open_and_locked_down(tmp_path):
    reted = start_reted(tmp_path)
    try:
        st, h, body = raw_get(reted.api, "/dashboard/")
        assert st == 200 and h["content-type"].startswith("text/html"), (st, h)
        assert b'src="dashboard.js"' in body
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp, csp
        assert h["x-content-type-options"] == "nosniff"
        st, h, body = raw_get(reted.api, "/dashboard/dashboard.js")
        assert st == 200 and h["content-type"].startswith("text/javascript") and len(body) > 100000
        st, h, _ = raw_get(reted.api, "/dashboard/dashboard.css")
        assert st == 200 and h["content-type"].startswith("text/css")
        st, h, _ = raw_get(reted.api, "/dashboard")
        assert st == 308 and h["location"] == "/dashboard/"
        st, _, _ = raw_get(reted.api, "/dashboard/../api/v1/proxies")
        assert st in (400, 404)
        assert raw_get(reted.api, "/dashboard/secret.txt")[0] == 404
        assert raw_get(reted.api, "/dashboard/", "DELETE")[0] == 405
        # no URL in the page's sources points off the origin (no CDN)
        for asset in ("index.html", "dashboard.css"):
            text = raw_get(reted.api, f"/dashboard/{asset}")[2].decode()
            assert "http://" not in text and "https://" not in text.replace("https://github.com", ""), asset
        # the data stays behind the token
        assert raw_get(reted.api, "/api/v1/stats?by=service")[0] == 401
        assert raw_get(reted.api, "/api/v1/proxies")[0] == 401
    finally:
        reted.stop()


def test_dashboard_refuses_without_the_token(tmp_path):
    reted = start_reted(tmp_path)
    try:
        with Browser(tmp_path) as b:
            b.navigate(f"http://{reted.api}/dashboard/")
            b.wait_js("!document.getElementById('login').hidden", 20, "the login prompt")
            assert b.js("document.getElementById('app').hidden") is True
            assert b.js("document.querySelectorAll('#workloads tbody tr[data-key]').length") == 0
            # a wrong token: reted says 401, the page says so and shows nothing
            b.js("document.getElementById('token').value = 'not-the-token';"
                 "document.getElementById('login-form').requestSubmit(); true")
            b.wait_js("document.getElementById('login-error').textContent.includes('refused')", 20,
                      "the refusal shown")
            assert b.js("document.getElementById('app').hidden") is True
            assert b.js("sessionStorage.length") == 0
            statuses = {p["response"]["url"]: p["response"]["status"] for m, p in b.events
                        if m == "Network.responseReceived" and "/api/" in p["response"]["url"]}
            assert statuses and set(statuses.values()) == {401}, statuses
            b.screenshot(tmp_path / "dashboard-login.png")
            # the right one: the page signs in (no proxy yet: an empty workloads table)
            b.js(f"document.getElementById('token').value = {reted.admin_token!r};"
                 "document.getElementById('login-form').requestSubmit(); true")
            b.wait_js("!document.getElementById('app').hidden", 20, "the dashboard after sign-in")
            assert b.js("document.querySelector('#workloads tbody td').textContent") == "no proxy has connected"
            # signing out forgets the token
            b.js("document.getElementById('logout').click(); true")
            b.wait_js("!document.getElementById('login').hidden", 10, "the login prompt again")
            assert b.js("sessionStorage.length") == 0
            # the token never travelled in a URL
            assert not [u for _, u, _ in b.requests() if reted.admin_token in u]
            assert not [p for p in b.problems() if "401" not in p], b.problems()
        assert reted.admin_token not in reted.log()
    finally:
        reted.stop()


def test_dashboard_shows_the_mesh_and_follows_traffic(tmp_path):
    reted = start_reted(tmp_path, "--stats-bucket", "1s")
    try:
        m = echo_service_mesh(reted, tmp_path, client_extra=["--stats-interval", "1"],
                              echo_extra=["--stats-interval", "1"])
        client, server = m["client"], m["server"]
        apply_and_push(reted, [http_route("echo-route", "demo", "echo",
                                          [{"backendRefs": [{"name": "echo", "port": 80}]}])], [client, server])
        send_mix(client.outbound, ok=30, failed=0)
        with Browser(tmp_path) as b:
            b.navigate(f"http://{reted.api}/dashboard/#token={reted.admin_token}")
            b.wait_js(f"!!document.querySelector('#services tr[data-key=\"{ECHO}\"]')", 30,
                      "the echo service in the services table")
            # the fragment left the address bar, the token went only in headers
            assert reted.admin_token not in b.js("location.href")
            api_calls = [(u, h) for _, u, h in b.requests() if "/api/v1/" in u]
            assert api_calls and all(h.get("Authorization") == f"Bearer {reted.admin_token}" for _, h in api_calls)
            assert not [u for _, u, _ in b.requests() if reted.admin_token in u]
            # a 10-minute window (60 s here): counts only grow while the test runs
            b.js("const w = document.getElementById('window'); w.value = '10m';"
                 "w.dispatchEvent(new Event('change')); true")

            # the topology: the client workload calls the echo Service, over mTLS
            def edge():
                return b.js(f"""(() => {{ const e = reteDashboard.cy.getElementById('wl:demo/client-0->svc:{ECHO}');
                    return e.nonempty() ? e.data() : null; }})()""")
            e = b.wait_js(f"reteDashboard.cy.getElementById('wl:demo/client-0->svc:{ECHO}').nonempty()", 30,
                          "the client -> echo edge in the graph") and edge()
            assert e["mtls"] is True and "mTLS" in e["label"] and e["successRate"] == 1, e
            assert b.js(f"reteDashboard.cy.getElementById('svc:{ECHO}').data('label')") == "echo.demo"
            assert b.js("reteDashboard.cy.nodes().length") == 2

            b.wait_js(f"Number(document.querySelector('#services tr[data-key=\"{ECHO}\"] td:nth-child(5)')"
                      f".textContent) >= 30", 30, "the first 30 requests counted")
            assert cell(b, "services", ECHO, "success") == "100%"
            before = int(cell(b, "services", ECHO, "requests"))
            assert cell(b, "routes", f"demo/echo-route/{ECHO}", "success") == "100%"
            # workloads: both proxies in sync, with their certificates' expiry
            for wl in ("demo/echo-0", "demo/client-0"):
                b.wait_js(f"!!document.querySelector('#workloads tr[data-key=\"{wl}\"]')", 20, wl)
                assert cell(b, "workloads", wl, "sync") == "SYNCED"
                assert "(in " in cell(b, "workloads", wl, "certificate expires")

            # analyser findings: none for this mesh (default 24 h
            # certificates, everything in sync)...
            b.wait_js("document.querySelector('#findings td.empty')?.textContent === 'no issues found'", 20,
                      "an empty findings table")
            # ... until a route rule sends nowhere (RT0001, an Error) and a
            # Service selects no workload (RT0003, a Warning)
            reted.apply_ok([http_route("nowhere", "demo", "echo", [{"backendRefs": [{"name": "echo", "port": 80, "weight": 0}]}]),
                            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lonely", "namespace": "demo"},
                             "spec": {"selector": {"app": "nobody"}, "ports": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}])
            b.wait_js("document.querySelectorAll('#findings tbody tr:not(:has(td.empty))').length === 2", 20,
                      "two findings in the dashboard")
            rows = b.js("[...document.querySelectorAll('#findings tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
            assert rows[0][:3] == ["Error", "RT0001", "HTTPRoute demo/nowhere"], rows  # errors first
            assert "weight 0" in rows[0][3] and "backendRef" in rows[0][4], rows
            assert rows[1][:3] == ["Warning", "RT0003", "Service demo/lonely"], rows
            assert "picks no Workload" in rows[1][3] and rows[1][4], rows
            assert b.js("document.querySelector('#findings tbody tr td').className") == "bad"
            b.js("document.getElementById('findings').scrollIntoView(); true")
            b.screenshot(tmp_path / "dashboard-findings.png")
            b.js("window.scrollTo(0, 0); true")

            # live requests: tap the echo Service from the page
            assert proxy_metric(server.host, "rete_proxy_tap_active") == 0
            b.wait_js("[...document.getElementById('tap-service').options].some(o => o.value === 'demo/echo')", 20,
                      "the echo service to tap")
            b.js("document.getElementById('tap-service').value = 'demo/echo';"
                 "document.getElementById('tap-toggle').click(); true")
            b.wait_js("document.getElementById('tap-status').textContent.startsWith('on at 2')", 20,
                      "the tap on at both sidecars")
            assert proxy_metric(server.host, "rete_proxy_tap_active") == 1
            assert proxy_metric(client.host, "rete_proxy_tap_active") == 1  # a Service: both sides
            send_mix(client.outbound, ok=2, failed=1)
            b.wait_js("document.querySelectorAll('#tap tbody tr:not(:has(td.empty))').length >= 6", 30,
                      "three requests from both sidecars in the live table")
            rows = b.js("[...document.querySelectorAll('#tap tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
            assert {r[4] for r in rows} == {"echo/ok", "echo/fail?status=500"}, rows
            assert {r[2] for r in rows} == {"in", "out"} and all(r[7] == "demo/client-0" for r in rows), rows
            assert sorted(r[5] for r in rows) == ["200"] * 4 + ["500"] * 2, rows
            b.js("document.getElementById('tap').scrollIntoView(); true")
            b.screenshot(tmp_path / "dashboard-tap.png")
            b.js("window.scrollTo(0, 0); true")
            # the page hidden: the fetch is aborted, reted's client leaves,
            # the proxies stop capturing
            b.js("Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
                 "document.dispatchEvent(new Event('visibilitychange')); true")
            assert b.js("document.getElementById('tap-status').textContent") == "stopped: the page was hidden"
            for px in (server, client):
                wait_for(lambda: proxy_metric(px.host, "rete_proxy_tap_active") == 0, 15, 0.2,
                         "the tap stopped at the proxy")
            b.js("delete document.hidden; true")

            # traffic changes: failures come, the numbers and colours follow
            send_mix(client.outbound, ok=10, failed=10)
            b.wait_js(f"Number(document.querySelector('#services tr[data-key=\"{ECHO}\"] td:nth-child(5)')"
                      f".textContent) >= {before + 20}", 30, "the new requests counted")
            sr = cell(b, "services", ECHO, "success")
            assert sr != "100%" and float(sr.rstrip("%")) < 100, sr
            e = b.wait_js(f"(() => {{ const e = reteDashboard.cy.getElementById('wl:demo/client-0->svc:{ECHO}');"
                          "return e.data('successRate') < 1 ? e.data() : null; })()", 30, "the edge's success rate")
            assert e["colour"] in ("#d0433b", "#d99a1e"), e
            # the latency chart: a history of several points for the service
            b.wait_js(f"reteDashboard.history.get('service:{ECHO}').p50.filter(v => v != null).length >= 3",
                      30, "three points of latency history")
            assert b.js("document.querySelectorAll('#chart canvas').length") >= 1
            assert b.js("document.getElementById('series').value") == f"service:{ECHO}"
            shot = b.screenshot(tmp_path / "dashboard.png")
            if os.environ.get("RETE_DASHBOARD_SCREENSHOT"):
                shutil.copy(shot, os.environ["RETE_DASHBOARD_SCREENSHOT"])
            assert not b.problems(), b.problems()
        assert reted.admin_token not in reted.log()
    finally:
        reted.stop()
