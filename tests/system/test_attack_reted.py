"""Attack suite, reted's inputs (issue 13): oversized bodies, documents
nested far past the depth limit, a YAML alias bomb (billion laughs). Each
gets a clear 4xx naming the limit, reted's RSS stays under baseline + a
stated bound, the canary (GET /healthz on the operator API from another
client) is served throughout, and the refusal is counted
(rete_reted_http_refused_total, rete_reted_applies_total{result})."""
import socket

import pytest

from attack import probe_http, read_to_close, small_asan_quarantine, under_attack, value
from controlplane import ca_connection, start_reted


@pytest.fixture(scope="module")
def reted(tmp_path_factory):
    with small_asan_quarantine():
        r = start_reted(tmp_path_factory.mktemp("attack-reted"), persistent=True)
    yield r
    r.stop()


def metric(reted, name, **labels):
    st, text = reted.request("GET", "/metrics", auth=False)
    assert st == 200
    return value(text, name, **labels)


def canary(reted):
    return probe_http(reted.api, "reted", "/healthz")


def test_100_mb_apply_is_refused_413_from_its_head(reted):
    """An authenticated apply announcing 100 MB (over --max-apply-body,
    16 MiB) that then streams its body: 413 from the head, the body never
    buffered (RSS bounded), counted as body_too_large."""
    before = metric(reted, "rete_reted_http_refused_total", listener="api", reason="body_too_large")
    with under_attack(canary(reted), reted.proc.pid, mib=32):
        s = socket.create_connection((reted.host, reted.api_port), timeout=10)
        s.sendall(b"POST /api/v1/apply HTTP/1.1\r\nhost: reted\r\ncontent-type: application/yaml\r\n"
                  b"authorization: Bearer " + reted.admin_token.encode()
                  + b"\r\ncontent-length: 104857600\r\n\r\n")
        try:
            for _ in range(1600):  # up to 100 MB, 64 KB a write, until reted stops taking it
                s.sendall(b"#" * 65536)
        except OSError:
            pass
        s.settimeout(10)
        answer = read_to_close(s)
        s.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert metric(reted, "rete_reted_http_refused_total", listener="api", reason="body_too_large") >= before + 1


@pytest.mark.parametrize("doc", ["yaml", "json"])
def test_document_nested_100k_deep_is_refused(reted, doc):
    """A document nested 100,000 levels deep (YAML flow sequences, or a
    JSON one sent as application/json): 422 naming the 64-level limit,
    counted as a rejected apply; RSS bounded."""
    before = metric(reted, "rete_reted_applies_total", result="rejected")
    body = "[" * 100000 + "]" * 100000 + "\n"
    with under_attack(canary(reted), reted.proc.pid, mib=64):
        for _ in range(3):
            st, answer = reted.apply(body, source=f"deep.{doc}")
            assert st == 422, (st, answer)
            assert "nested deeper than 64 levels" in str(answer), answer
    assert metric(reted, "rete_reted_applies_total", result="rejected") >= before + 3


def test_json_nested_100k_deep_on_the_proxy_api_is_refused(reted):
    """The proxy API's JSON bodies (certificate requests, parsed by
    jansson): 60,000 levels in the 64 KB a request may carry: 400."""
    with under_attack(canary(reted), reted.proc.pid, mib=32):
        for _ in range(3):
            c = ca_connection(reted)
            c.request("POST", "/ca/v1/certificates", "[" * 60000, {"content-type": "application/json"})
            r = c.getresponse()
            assert r.status == 400, r.status
            c.close()


def alias_bomb(levels, name):
    """A Service whose spec holds `levels` levels of nine aliases each."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n"
            + "".join("  " + line + "\n" for line in lines))


@pytest.mark.parametrize("levels,docs", [(9, 1), (6, 10)])
def test_yaml_alias_bomb_is_refused(reted, levels, docs):
    """Billion laughs: nine levels of nine aliases (9^9 = 387 million nodes
    once expanded) in 1 KB, or ten documents of six levels (531,441 nodes
    each, under the 1,000,000 a document may have) in 4 KB. Aliases may add
    at most 100,000 nodes to a stream (YDOC_MAX_ALIAS_NODES): 422 naming the
    limit at once, counted as a rejected apply, RSS under baseline + 32 MiB.
    Before the fix the ten documents took reted past 20 s and ~3 GB, one
    six-level document 350 MB."""
    body = "---\n".join(alias_bomb(levels, f"bomb{i}") for i in range(docs))
    before = metric(reted, "rete_reted_applies_total", result="rejected")
    with under_attack(canary(reted), reted.proc.pid, mib=32):
        for _ in range(2):
            st, answer = reted.apply(body, source="bomb.yaml")
            assert st == 422, (st, answer)
            assert "aliases expand to more than 100000 nodes" in str(answer), answer
    assert metric(reted, "rete_reted_applies_total", result="rejected") >= before + 2
