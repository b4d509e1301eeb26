"""gRPC through two rete-proxy sidecars with mTLS between them, with a
python3-grpcio client and server (peers nobody here wrote). The service is
declared with grpcio's generic handlers and raw-bytes (de)serializers, so no
protoc is needed.

The client reaches the service two ways: through the outbound listener 15001
(routed by :authority) and through an explicit upstream listener bound to the
service. Every test runs on both."""
import queue
import time
from concurrent import futures

import pytest

import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)

from helpers import free_port  # noqa: E402
from mesh import Mesh, fresh_host, service, stop_and_check_proxies, workload  # noqa: E402

SERVICE = "greeter.Greeter"
SVC_PORT = 50051
BIG = 1024 * 1024


def _ident(b):
    return b


def _md(context):
    return dict(context.invocation_metadata())


class Greeter:
    """Handlers in the shape grpcio's generic handlers want; messages are raw bytes."""

    def unary(self, req, context):
        md = _md(context)
        if req.startswith(b"abort:"):
            _, code, msg = req.decode().split(":", 2)
            context.abort(getattr(grpc.StatusCode, code), msg)
        if req.startswith(b"sleep:"):
            time.sleep(float(req[6:]))
            return b"woke"
        if "x-want-metadata" in md:
            context.send_initial_metadata((("x-initial", "hello-" + md["x-want-metadata"]),
                                           ("x-initial-bin", b"\x00\x01\xfe\xff")))
            context.set_trailing_metadata((("x-trailing", "bye-" + md["x-want-metadata"]),
                                           ("x-trailing-bin", b"\xff\x00")))
        if req.startswith(b"size:"):
            return b"z" * int(req[5:])
        return b"hello " + req

    def server_stream(self, req, context):
        n, size = (int(x) for x in req.decode().split(","))
        for i in range(n):
            yield i.to_bytes(4, "big") + bytes([i % 256]) * size

    def client_stream(self, it, context):
        count = total = 0
        for m in it:
            count += 1
            total += len(m)
        return f"{count},{total}".encode()

    def bidi(self, it, context):
        for m in it:
            yield m[::-1]


def _handler():
    g = Greeter()
    kw = dict(request_deserializer=_ident, response_serializer=_ident)
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(g.unary, **kw),
        "ServerStream": grpc.unary_stream_rpc_method_handler(g.server_stream, **kw),
        "ClientStream": grpc.stream_unary_rpc_method_handler(g.client_stream, **kw),
        "Bidi": grpc.stream_stream_rpc_method_handler(g.bidi, **kw),
    })


MSG_OPTS = [("grpc.max_send_message_length", 8 * BIG), ("grpc.max_receive_message_length", 8 * BIG)]


@pytest.fixture
def grpc_mesh(tmp_path):
    """greeter-0 (a grpcio server behind proxy B, inbound port GRPC) and
    client-0 (proxy A, with an explicit upstream listener for greeter)."""
    yield from _grpc_mesh(tmp_path)


def _grpc_mesh(tmp_path, limits=None):
    extra = {"limits": {"drainTimeout": "2s", **(limits or {})}}
    m = Mesh(tmp_path)
    client_host, server_host = fresh_host(), fresh_host()
    app_port = free_port(server_host)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=MSG_OPTS)
    server.add_generic_rpc_handlers((_handler(),))
    assert server.add_insecure_port(f"{server_host}:{app_port}") == app_port
    server.start()
    try:
        m.add(service("greeter", m.ns, [(SVC_PORT, "GRPC", app_port)]),
              workload("greeter-0", m.ns, server_host, "greeter", {"app": "greeter"}),
              workload("client-0", m.ns, client_host, "client", {"app": "client"}))
        upstream = f"{client_host}:{free_port(client_host)}"
        m.start_proxy("greeter-0", "greeter", server_host, inbound=[(app_port, "GRPC")], extra_spec=extra)
        m.start_proxy("client-0", "client", client_host, upstreams=[(upstream, "greeter", SVC_PORT)],
                      extra_spec=extra)
        yield {"mesh": m, "client_host": client_host, "upstream": upstream, "server": server}
        stop_and_check_proxies(m)
    finally:
        server.stop(0)


@pytest.fixture(params=["outbound", "upstream"])
def channel(request, grpc_mesh):
    if request.param == "outbound":
        ch = grpc.insecure_channel(f"{grpc_mesh['client_host']}:15001",
                                   options=[("grpc.default_authority", f"greeter.test:{SVC_PORT}"), *MSG_OPTS])
    else:
        ch = grpc.insecure_channel(grpc_mesh["upstream"], options=MSG_OPTS)
    grpc.channel_ready_future(ch).result(timeout=20)
    yield ch
    ch.close()


def _stubs(ch):
    kw = dict(request_serializer=_ident, response_deserializer=_ident)
    return (ch.unary_unary(f"/{SERVICE}/Unary", **kw),
            ch.unary_stream(f"/{SERVICE}/ServerStream", **kw),
            ch.stream_unary(f"/{SERVICE}/ClientStream", **kw),
            ch.stream_stream(f"/{SERVICE}/Bidi", **kw))


T = 30  # generous per-RPC timeout on a loaded 2-core machine


def test_unary(channel):
    unary, _, _, _ = _stubs(channel)
    assert unary(b"world", timeout=T) == b"hello world"
    assert len(unary(b"size:%d" % BIG, timeout=T)) == BIG


def test_server_streaming(channel):
    _, ss, _, _ = _stubs(channel)
    got = list(ss(b"200,1000", timeout=T))
    assert len(got) == 200
    assert all(int.from_bytes(m[:4], "big") == i and len(m) == 1004 for i, m in enumerate(got))
    big = list(ss(b"4,%d" % BIG, timeout=T))
    assert [len(m) for m in big] == [BIG + 4] * 4


def test_client_streaming(channel):
    _, _, cs, _ = _stubs(channel)
    msgs = [bytes([i % 256]) * (i * 37) for i in range(300)] + [b"y" * BIG]
    assert cs(iter(msgs), timeout=T) == f"{len(msgs)},{sum(map(len, msgs))}".encode()


def test_bidirectional_streaming_many_messages_some_large(channel):
    _, _, _, bidi = _stubs(channel)
    msgs = [f"message {i}".encode() * (1 + i % 7) for i in range(500)]
    for i in (10, 250, 499):
        msgs[i] = bytes(range(256)) * (BIG // 256)
    got = list(bidi(iter(msgs), timeout=T))
    assert len(got) == len(msgs)
    assert got == [m[::-1] for m in msgs]


def test_bidirectional_ping_pong_interleaved(channel):
    """Each request is sent only after the previous response arrived: the
    proxies must forward stream data as it comes, not at end of stream."""
    _, _, _, bidi = _stubs(channel)
    q = queue.Queue()

    def requests():
        while True:
            m = q.get(timeout=T)
            if m is None:
                return
            yield m
    q.put(b"ping 0")
    got = []
    for r in bidi(requests(), timeout=T):
        got.append(r)
        q.put(f"ping {len(got)}".encode() if len(got) < 50 else None)
    assert got == [f"ping {i}".encode()[::-1] for i in range(50)]


def test_deadline_exceeded_and_proxies_keep_working(channel):
    unary, _, _, _ = _stubs(channel)
    with pytest.raises(grpc.RpcError) as e:
        unary(b"sleep:3", timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the same channel, and so the same proxies and mesh connection, still work
    for i in range(5):
        assert unary(b"after %d" % i, timeout=T) == b"hello after %d" % i


@pytest.mark.parametrize("code,msg", [("NOT_FOUND", "no greeter called bob"),
                                      ("PERMISSION_DENIED", "caller may not greet: policy x/y"),
                                      ("INVALID_ARGUMENT", "bad name \u00e9\u00e8 100% sure")])
def test_error_status_and_message_intact(channel, code, msg):
    unary, _, _, _ = _stubs(channel)
    with pytest.raises(grpc.RpcError) as e:
        unary(f"abort:{code}:{msg}".encode(), timeout=T)
    assert e.value.code() == getattr(grpc.StatusCode, code)
    assert e.value.details() == msg


def test_metadata_both_ways(channel):
    unary, _, _, _ = _stubs(channel)
    resp, call = unary.with_call(b"md", timeout=T, metadata=(("x-want-metadata", "abc"),))
    assert resp == b"hello md"
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    assert initial["x-initial"] == "hello-abc"
    assert initial["x-initial-bin"] == b"\x00\x01\xfe\xff"
    assert trailing["x-trailing"] == "bye-abc"
    assert trailing["x-trailing-bin"] == b"\xff\x00"
    assert call.code() == grpc.StatusCode.OK


def test_fifty_concurrent_rpcs(channel):
    unary, ss, _, bidi = _stubs(channel)
    calls = [unary.future(b"c%d" % i, timeout=60) for i in range(50)]
    assert [c.result() for c in calls] == [b"hello c%d" % i for i in range(50)]

    def stream(i):
        return list(bidi(iter([b"%d-%d" % (i, k) for k in range(20)]), timeout=60))
    with futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(stream, range(50)))
    assert results == [[(b"%d-%d" % (i, k))[::-1] for k in range(20)] for i in range(50)]


def test_client_stream_may_pause_longer_than_the_request_body_timeout(tmp_path):
    """limits.requestBodyTimeout bounds a stalled HTTP request body; a gRPC
    client stream that pauses between messages is the application's
    business, bounded only by limits.streamIdleTimeout (Envoy's
    stream_idle_timeout). Both sidecars run with a 1 s body timeout."""
    import time
    gen = _grpc_mesh(tmp_path, limits={"requestBodyTimeout": "1s"})
    env = next(gen)
    try:
        ch = grpc.insecure_channel(env["upstream"], options=MSG_OPTS)
        grpc.channel_ready_future(ch).result(timeout=20)
        _, _, cs, _ = _stubs(ch)

        def paused():
            yield b"first"
            time.sleep(3)  # the pause under test: three body timeouts long
            yield b"second"
        assert cs(paused(), timeout=T) == b"2,11"
        ch.close()
    finally:
        next(gen, None)
