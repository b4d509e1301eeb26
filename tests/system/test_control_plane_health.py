"""Readiness removes endpoints (issue 11, Health): a sidecar runs its app's
readiness probe (Proxy `readiness`), reports a change to reted, and reted
pushes the Workload with `spec.ready: false`, so the other proxies' balancers
send it nothing until it is ready again (docs/traffic.md, Readiness).

Real reted, real sidecars, rete-echo apps whose /ready is switched with
/ready?set=0|1; every wait bounded."""
import json
import os
import urllib.request

from controlplane import curl, curl_status, snapshot_docs, start_cp_proxy, start_reted
from helpers import free_port, start_echo, wait_for
from mesh import fresh_host, service

NS = "demo"


def readiness_doc(tmp_path, name, host, data, app_port, readiness):
    """A Proxy document for a server sidecar: its inbound app port and `readiness`."""
    doc = {"apiVersion": "rete.dev/v1alpha1", "kind": "Proxy", "metadata": {"name": name, "namespace": NS},
           "spec": {"serviceAccount": "echo", "address": host,
                    "tls": {"certFile": f"{data}/cert.pem", "keyFile": f"{data}/key.pem",
                            "caFile": f"{data}/bundle.pem"},
                    "inbound": [{"port": app_port, "protocol": "HTTP"}],
                    "readiness": readiness}}
    path = os.path.join(str(tmp_path), f"{name}.proxy.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def pushed_workload(reted, proxy, workload):
    """The Workload document reted sends `proxy` for `workload`."""
    st, cfg = reted.proxy_config(NS, proxy)
    assert st == 200, (st, cfg)
    return next(d for d in snapshot_docs(cfg["resources"])
                if d["kind"] == "Workload" and d["metadata"]["name"] == workload)


def instances(client, n):
    """The echo instances that answered n requests through the client sidecar."""
    seen = []
    for _ in range(n):
        r = curl(client.outbound, "echo", timeout=5)
        seen.append(json.loads(r.stdout)["instance"] if r.returncode == 0 and r.stdout else "error")
    return seen


def test_not_ready_workload_gets_no_traffic_then_comes_back(tmp_path):
    reted = start_reted(tmp_path)
    hosts = [fresh_host(), fresh_host()]
    port = free_port(hosts[0])
    apps = [start_echo("--quiet", name=f"echo-{i}", host=h, port=port) for i, h in enumerate(hosts)]
    addrs = [a for _, a in apps]
    reted.apply_ok([service("echo", NS, [(80, "HTTP", port)])], "echo.yaml")
    readiness = {"httpGet": {"path": "/ready", "port": port}, "period": "200ms", "timeout": "150ms",
                 "failureThreshold": 2, "successThreshold": 1}
    servers = []
    for i, h in enumerate(hosts):
        name = f"echo-{i}"
        data = os.path.join(str(tmp_path), f"proxy-{name}.{NS}")
        doc = readiness_doc(tmp_path, name, h, data, port, readiness)
        servers.append(start_cp_proxy(reted, tmp_path, name, NS, "echo", host=h, data_dir=data,
                                      labels={"app": "echo"}, extra=["--config", doc]))
    client = start_cp_proxy(reted, tmp_path, "client-0", NS, "client", labels={"app": "client"})
    # both take traffic while both apps are ready
    wait_for(lambda: set(instances(client, 20)) == set(addrs), 30, 0.3, "both endpoints take traffic")
    assert get(f"http://{hosts[0]}:15000/ready") == 200

    # echo-0's app stops being ready: within a few seconds nothing goes to it
    assert get(f"http://{addrs[0]}/ready?set=0") == 200
    assert get(f"http://{addrs[0]}/ready") == 503
    wait_for(lambda: set(instances(client, 10)) == {addrs[1]}, 10, 0.2, "traffic moved off the not-ready endpoint")
    seen = instances(client, 40)
    assert seen == [addrs[1]] * 40, seen  # every request answered, none by echo-0
    # reted says why, the sidecar's /ready says so, the client's config carries it
    assert reted.proxy("echo-0", NS)["ready"] is False
    assert get(f"http://{hosts[0]}:15000/ready") == 503
    assert pushed_workload(reted, "client-0", "echo-0")["spec"]["ready"] is False
    assert pushed_workload(reted, "echo-0", "echo-0")["spec"]["ready"] is False  # its own too

    # ready again: it takes traffic again
    assert get(f"http://{addrs[0]}/ready?set=1") == 200
    wait_for(lambda: addrs[0] in instances(client, 20), 10, 0.2, "the endpoint takes traffic again")
    assert reted.proxy("echo-0", NS)["ready"] is True
    assert "ready" not in pushed_workload(reted, "client-0", "echo-0")["spec"]
    assert get(f"http://{hosts[0]}:15000/ready") == 200

    for p in [client, *servers]:
        p.stop()
    for proc, _ in apps:
        proc.terminate()
        proc.wait(timeout=10)
    reted.stop()


def test_all_not_ready_is_no_endpoint_and_a_fresh_sidecar_starts_not_ready(tmp_path):
    """A sidecar whose app never answers its probe registers as not ready:
    the client gets 503 (no endpoint), never a connection to it."""
    reted = start_reted(tmp_path)
    host = fresh_host()
    port = free_port(host)
    app, addr = start_echo("--quiet", name="echo-0", host=host, port=port)
    assert get(f"http://{addr}/ready?set=0") == 200
    reted.apply_ok([service("echo", NS, [(80, "HTTP", port)])], "echo.yaml")
    data = os.path.join(str(tmp_path), f"proxy-echo-0.{NS}")
    doc = readiness_doc(tmp_path, "echo-0", host, data, port,
                        {"httpGet": {"path": "/ready", "port": port}, "period": "200ms", "timeout": "150ms"})
    server = start_cp_proxy(reted, tmp_path, "echo-0", NS, "echo", host=host, data_dir=data,
                            labels={"app": "echo"}, extra=["--config", doc])
    client = start_cp_proxy(reted, tmp_path, "client-0", NS, "client", labels={"app": "client"})
    assert reted.proxy("echo-0", NS)["ready"] is False
    statuses = [curl_status(client.outbound, "echo") for _ in range(5)]
    assert statuses == [503] * 5, statuses
    assert get(f"http://{addr}/ready?set=1") == 200
    wait_for(lambda: curl_status(client.outbound, "echo") == 200, 10, 0.2, "served once ready")
    for p in (client, server):
        p.stop()
    app.terminate()
    app.wait(timeout=10)
    reted.stop()
