"""rete-echo's gRPC mode (the backend of rete-loadgen --grpc in the bench),
checked with python3-grpcio as the client: a generic unary call with raw-bytes
messages, so no protoc is needed. Any method echoes its request message with
grpc-status 0; --failure-rate answers grpc-status 14 (UNAVAILABLE)."""
import json
import subprocess

import pytest

import grpc  # python3-grpcio, in DEB_PACKAGES (tests/check_deps.py)

from helpers import start_echo, stop_process  # noqa: E402

T = 30  # per-call timeout, generous on a loaded 2-core machine
OPTS = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]


def unary(addr, method="/rete.echo.Echo/Echo"):
    ch = grpc.insecure_channel(addr, options=OPTS)
    return ch, ch.unary_unary(method, request_serializer=None, response_deserializer=None)


def test_grpc_unary_echo_with_grpcio_client():
    proc, addr = start_echo("--quiet", name="grpc")
    ch, call = unary(addr)
    try:
        msg = b"\x0a\x05hello"  # protobuf: field 1 = "hello"
        resp, c = call.with_call(msg, timeout=T)
        assert resp == msg
        assert c.code() == grpc.StatusCode.OK
        assert dict(c.initial_metadata())["x-echo-service"] == "grpc"
        assert call(b"", timeout=T) == b""
        big = bytes(range(256)) * 4096  # 1 MiB: more than one flow-control window
        assert call(big, timeout=T) == big
        # Any method name, many calls in flight on one connection.
        _, other = unary(addr, "/some.Other/Method")
        futs = [other.future(b"m%d" % i, timeout=T) for i in range(50)]
        assert [f.result() for f in futs] == [b"m%d" % i for i in range(50)]
    finally:
        ch.close()
    assert stop_process(proc) == 0


def test_grpc_failure_rate_answers_unavailable():
    proc, addr = start_echo("--quiet", "--failure-rate", "1")
    ch, call = unary(addr)
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as e:
                call(b"x", timeout=T)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "failure-rate" in e.value.details()
    finally:
        ch.close()
    assert stop_process(proc) == 0


def test_grpc_reply_framing_seen_by_nghttp(tmp_path):
    """On the wire: content-type application/grpc, no content-length, the
    message in DATA, then grpc-status 0 as a trailer."""
    proc, addr = start_echo("--quiet")
    body = tmp_path / "msg"
    body.write_bytes(b"\x00\x00\x00\x00\x07\x0a\x05hello")
    r = subprocess.run(["nghttp", "-v", "-d", str(body), "-H", "content-type: application/grpc",
                        "-H", "te: trailers", f"http://{addr}/rete.echo.Echo/Echo"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode(errors="replace")
    # nghttp prints a frame's fields before the frame line, and the body as it comes.
    head_end = out.index("recv HEADERS frame")
    data_at = out.index("recv DATA frame", head_end)
    head = out[:head_end]
    assert "recv (stream_id=13) :status: 200" in head
    assert "recv (stream_id=13) content-type: application/grpc" in head
    assert "recv (stream_id=13) content-length" not in head
    assert "\x00\x00\x00\x00\x07\n\x05hello" in out[head_end:data_at]
    assert out.index("recv (stream_id=13) grpc-status: 0", data_at) > data_at
    assert stop_process(proc) == 0


def test_http11_post_with_grpc_content_type_is_plain_http():
    """gRPC needs HTTP/2: over HTTP/1.1 the request is an ordinary one."""
    proc, addr = start_echo("--quiet")
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "-H", "content-type: application/grpc",
                          "--data-binary", "x", f"http://{addr}/rete.echo.Echo/Echo"],
                         capture_output=True, timeout=35)
    assert out.returncode == 0, out.stderr.decode()
    doc = json.loads(out.stdout)
    assert doc["protocol"] == "HTTP/1.1" and doc["method"] == "POST" and doc["body_bytes"] == 1
    assert stop_process(proc) == 0
