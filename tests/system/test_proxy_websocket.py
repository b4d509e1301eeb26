"""WebSocket through two rete-proxy sidecars with mTLS between them, with a
python3-websockets client and server. The upgrade request is routed like any
HTTP/1.1 request (by Host, or by an explicit upstream listener); between the
proxies the upgraded connection travels as an HTTP/2 CONNECT tunnel.

Debian's websockets may predate the sync API, so both ends use asyncio: the
server runs its own event loop in a thread."""
import asyncio
import hashlib
import os
import threading

import pytest

import websockets  # python3-websockets, in DEB_PACKAGES (tests/check_deps.py)

from helpers import free_port  # noqa: E402
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload  # noqa: E402

BIG = 1024 * 1024
T = 30  # generous on a loaded 2-core machine


async def _handler(ws, path=None):
    path = path if path is not None else getattr(ws, "path", None) or ws.request.path
    if path.startswith("/close"):
        await ws.recv()
        await ws.close(code=4001, reason="server says bye")
        return
    if path.startswith("/hello"):
        await ws.send("path=" + path + " host=" + ws.request_headers.get("Host", ""))
    async for msg in ws:
        await ws.send(msg)


class WsServer:
    """A websockets server on its own event loop thread."""

    def __init__(self, host, port):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def main():
            self.stop = asyncio.Event()
            async with websockets.serve(_handler, host, port, max_size=4 * BIG, compression=None):
                started.set()
                await self.stop.wait()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), daemon=True)
        self.thread.start()
        assert started.wait(10), "websockets server did not start"

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture
def ws_mesh(tmp_path):
    m = Mesh(tmp_path)
    client_host, server_host = fresh_host(), fresh_host()
    app_port = free_port(server_host)
    srv = WsServer(server_host, app_port)
    try:
        m.add(service("ws", m.ns, [(80, "HTTP", app_port)]),
              workload("ws-0", m.ns, server_host, "ws", {"app": "ws"}),
              workload("client-0", m.ns, client_host, "client", {"app": "client"}))
        up_port = free_port(client_host)
        server = m.start_proxy("ws-0", "ws", server_host, inbound=[(app_port, "HTTP")])
        client = m.start_proxy("client-0", "client", client_host,
                               upstreams=[(f"{client_host}:{up_port}", "ws", 80)])
        yield {"client_host": client_host, "up_port": up_port, "client": client, "server": server}
        stop_and_check_proxies(m)
    finally:
        srv.close()


@pytest.fixture(params=["outbound-by-host", "upstream"])
def connect(request, ws_mesh):
    """connect(path) -> websockets client connection through proxy A."""
    h = ws_mesh["client_host"]

    def _connect(path, **kw):
        kw = {"max_size": 4 * BIG, "compression": None, "open_timeout": T, "close_timeout": T, **kw}
        if request.param == "outbound-by-host":
            # the URI gives Host (the service name); host/port give the TCP peer
            return websockets.connect(f"ws://ws.test{path}", host=h, port=15001, **kw)
        return websockets.connect(f"ws://{h}:{ws_mesh['up_port']}{path}", **kw)
    _connect.kind = request.param
    return _connect


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_upgrade_reaches_server_with_path_and_host(connect):
    async def go():
        async with connect("/hello?x=1") as ws:
            return await asyncio.wait_for(ws.recv(), T)
    greeting = run(go())
    assert greeting.startswith("path=/hello?x=1 host=")
    if connect.kind == "outbound-by-host":
        assert greeting.endswith("host=ws.test")


def test_echo_text_and_binary(connect):
    async def go():
        async with connect("/echo") as ws:
            out = []
            for i in range(100):
                await ws.send(f"text {i} \u00e9\u263a")
                out.append(await asyncio.wait_for(ws.recv(), T))
                await ws.send(bytes([i]) * (i * 100 + 1))
                out.append(await asyncio.wait_for(ws.recv(), T))
            return out
    out = run(go())
    for i in range(100):
        assert out[2 * i] == f"text {i} \u00e9\u263a"
        assert out[2 * i + 1] == bytes([i]) * (i * 100 + 1)


def test_one_megabyte_messages(connect):
    data = os.urandom(BIG)
    text = "x\u00e9" * (BIG // 3)

    async def go():
        async with connect("/echo") as ws:
            await ws.send(data)
            got_b = await asyncio.wait_for(ws.recv(), T)
            await ws.send(text)
            got_t = await asyncio.wait_for(ws.recv(), T)
            # several in flight at once, both directions full
            for _ in range(4):
                await ws.send(data)
            more = [await asyncio.wait_for(ws.recv(), T) for _ in range(4)]
            return got_b, got_t, more
    got_b, got_t, more = run(go())
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(data).digest()
    assert got_t == text
    assert all(m == data for m in more)


def test_ping_pong(connect):
    async def go():
        async with connect("/echo", ping_interval=None) as ws:
            for i in range(5):
                pong = await ws.ping(b"ping-%d" % i)
                await asyncio.wait_for(pong, T)
            await ws.send("still here")
            return await asyncio.wait_for(ws.recv(), T)
    assert run(go()) == "still here"


def test_server_initiated_close_code_and_reason(connect):
    async def go():
        async with connect("/close") as ws:
            await ws.send("please close")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as e:
                await asyncio.wait_for(ws.recv(), T)
            await asyncio.wait_for(ws.wait_closed(), T)
            return ws.close_code, ws.close_reason
    assert run(go()) == (4001, "server says bye")


def test_client_close_then_proxies_keep_working(connect):
    async def go():
        for i in range(10):
            async with connect("/echo") as ws:
                await ws.send(f"round {i}")
                assert await asyncio.wait_for(ws.recv(), T) == f"round {i}"
        conns = [await connect("/echo") for _ in range(20)]
        for i, ws in enumerate(conns):
            await ws.send(f"c{i}")
        got = [await asyncio.wait_for(ws.recv(), T) for ws in conns]
        await asyncio.gather(*(ws.close() for ws in conns))
        return got
    assert run(go()) == [f"c{i}" for i in range(20)]


def test_upgrade_answer_is_the_apps_101_not_a_connect_200(ws_mesh):
    """Regression: the client proxy answered an upgrade with its own
    "200 Connection Established" (meant for a client's CONNECT) before the
    app's 101, because the mesh hop turns the upgrade into a CONNECT."""
    import socket
    s = socket.create_connection((ws_mesh["client_host"], 15001), timeout=T)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, head
        head += chunk
    s.close()
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


def test_tunnels_closed_by_the_server_first_release_their_sockets(connect, ws_mesh):
    """The app ends a WebSocket first (a WebSocket server closes the TCP
    connection first), then the client: the client's sidecar closes the
    downstream connection once both directions are done. It used to keep
    each one's socket open forever (one fd per session, found by make soak)."""
    import os
    from helpers import wait_for
    pid = ws_mesh["client"].pid

    def fds():
        return len(os.listdir(f"/proc/{pid}/fd"))
    before = fds()

    async def go():
        for _ in range(30):
            async with connect("/echo") as ws:
                await ws.send("x")
                assert await asyncio.wait_for(ws.recv(), T) == "x"
    run(go())
    wait_for(lambda: fds() <= before + 2, 10, 0.1, f"the sidecar's fds back near {before} (now {fds()})")
