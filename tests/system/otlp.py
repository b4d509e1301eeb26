"""OTLP decoded with the official OpenTelemetry proto definitions
(tests/system/otlp_proto: opentelemetry-proto v1.11.0, trace, common,
resource and the trace collector service).

The .proto files are compiled with protoc into a temporary directory once per
process and imported from there; `parse_json(body)` turns an OTLP/HTTP JSON
body into an ExportTraceServiceRequest with google.protobuf.json_format.Parse,
which refuses unknown fields and values of the wrong type. OTLP's JSON
differs from protobuf's canonical JSON mapping in one point that matters
here (OTLP specification, "JSON Protobuf Encoding"): trace and span ids are
lower-case hex, not base64; they are checked as such and turned into base64
before Parse."""
import base64
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "otlp_proto")
PROTOS = ["opentelemetry/proto/common/v1/common.proto", "opentelemetry/proto/resource/v1/resource.proto",
          "opentelemetry/proto/trace/v1/trace.proto",
          "opentelemetry/proto/collector/trace/v1/trace_service.proto"]
_mods = {}

# Span.flags (trace.proto SpanFlags)
FLAGS_TRACE_FLAGS_MASK = 0xFF
FLAGS_HAS_IS_REMOTE = 0x100
FLAGS_IS_REMOTE = 0x200


def _modules():
    if not _mods:
        out = tempfile.mkdtemp(prefix="otlp-pb2-")
        subprocess.run(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", *PROTOS], check=True, timeout=60)
        sys.path.insert(0, out)
        try:
            # Modules named after their .proto files (generated: in no package)
            pb2 = {p: importlib.import_module(p[:-len(".proto")].replace("/", ".") + "_pb2") for p in PROTOS}
            _mods["svc"] = pb2[PROTOS[3]]
            _mods["trace"] = pb2[PROTOS[2]]
        finally:
            sys.path.remove(out)
    return _mods


def trace_pb2():
    return _modules()["trace"]


_ID_LEN = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


def _hex_ids_to_base64(node):
    """In place: every traceId / spanId / parentSpanId (spans and links),
    checked as lower-case hex of its length, re-encoded as base64."""
    if isinstance(node, list):
        for x in node:
            _hex_ids_to_base64(x)
    elif isinstance(node, dict):
        for k, v in list(node.items()):
            if k in _ID_LEN and isinstance(v, str):
                assert re.fullmatch(f"[0-9a-f]{{{_ID_LEN[k]}}}", v), f"{k}: {v!r} is not {_ID_LEN[k]} hex digits"
                node[k] = base64.b64encode(bytes.fromhex(v)).decode()
            else:
                _hex_ids_to_base64(v)


def parse_json(body):
    """An OTLP/HTTP JSON body (bytes or str) as an ExportTraceServiceRequest;
    json_format.ParseError on an unknown field or a wrong type."""
    from google.protobuf import json_format
    doc = json.loads(body)
    _hex_ids_to_base64(doc)
    return json_format.Parse(json.dumps(doc), _modules()["svc"].ExportTraceServiceRequest())


def parse_proto(body):
    """An OTLP/HTTP protobuf body as an ExportTraceServiceRequest."""
    msg = _modules()["svc"].ExportTraceServiceRequest()
    msg.ParseFromString(body)
    return msg


def any_value(v):
    """An AnyValue as Python (the variant set)."""
    kind = v.WhichOneof("value")
    assert kind is not None, "an AnyValue with no value"
    return getattr(v, kind), kind
