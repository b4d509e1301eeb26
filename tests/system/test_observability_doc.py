"""docs/observability.md stays true to the code (issue 12: "metric reference
with every family and label ... analysers with their codes").

The metric reference is checked against what the processes expose: reted
and a two-sidecar mesh (rete-echo behind echo-0, a client client-0) carry
real traffic (successes, 500s, a 404 no route), then every family of the
two sidecars' and reted's /metrics (each declared family has its # TYPE
line even before a sample) must have a row in the reference with its type,
and every label on a sample must be named in that row. Families declared
only in some configurations (the DNS one needs spec.dns) are taken from the
source too: every family name a declaration in src/ spells must be
documented, and every family documented must still be declared (no stale
rows). The analysers: every code src/common/analyze.c emits has its row,
with its level."""
import os
import re
import urllib.request

from controlplane import echo_service_mesh, start_reted
from helpers import promtool_findings, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "observability.md")
TYPES = ("counter", "gauge", "histogram")


def section(text, heading):
    """The text of `## heading` up to the next level-2 heading."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"docs/observability.md has no section '## {heading}'"
    return m.group(1)


def table_rows(text, first_header):
    """Rows (lists of cells) of every table whose first header cell is
    `first_header`."""
    rows, inside = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if not inside:
            inside = cells[0] == first_header
            continue
        if set(cells[0]) <= set("- "):
            continue
        rows.append(cells)
    return rows


def outside_parentheses(text):
    """`text` without what is inside (nested) parentheses: a label cell
    names its labels outside them and their values inside."""
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return "".join(out)


def documented_metrics():
    """{family: (type, {labels})} from the reference's `| metric |` tables."""
    ref = section(open(DOC).read(), "Metric reference")
    istio = {n for row in table_rows(ref, "label") for n in re.findall(r"`([a-z0-9_]+)`", row[0])}
    assert "reporter" in istio and "response_code" in istio, "the table of Istio's labels is missing"
    out = {}
    for row in table_rows(ref, "metric"):
        assert len(row) == 5, f"a metric row needs 5 cells (metric, type, unit, labels, meaning): {row}"
        kind = row[1].split()[0]
        assert kind in TYPES, f"{row[0]}: type '{row[1]}' is not one of {TYPES}"
        labels = set(re.findall(r"`([a-z0-9_]+)`", outside_parentheses(row[3])))
        if "Istio's" in row[3]:
            labels |= istio
        for name in re.findall(r"`([a-z0-9_:]+)`", row[0]):
            assert name not in out, f"{name} documented twice"
            out[name] = (kind, labels)
    return out


def declared_in_source():
    """Every family name a declaration in src/ spells: "istio_*",
    "rete_proxy_*", "rete_reted_*" and "rete_metrics_*" string literals."""
    names = set()
    for d, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in files:
            if f.endswith((".c", ".h")):
                text = open(os.path.join(d, f), errors="replace").read()
                names |= set(re.findall(r'"((?:istio|rete_proxy|rete_reted|rete_metrics)_[a-z0-9_]+)"', text))
    return names


def exposed(text):
    """{family: (type, {labels on its samples})} of one /metrics answer."""
    fams = {m.group(1): (m.group(2), set()) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}
    for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$", text, re.M):
        name, labels = m.group(1), m.group(2) or ""
        fam = name if name in fams else re.sub(r"_(bucket|sum|count)$", "", name)
        assert fam in fams, f"sample {name} of no declared family"
        fams[fam][1].update(k for k in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', labels) if k != "le")
    return fams


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def send(outbound, host, path):
    h, port = outbound.rsplit(":", 1)
    req = urllib.request.Request(f"http://{h}:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_every_exposed_family_and_label_is_documented(tmp_path):
    doc = documented_metrics()
    reted = start_reted(tmp_path)
    try:
        m = echo_service_mesh(reted, tmp_path)
        client, server = m["client"], m["server"]
        for i in range(20):
            assert send(client.outbound, "echo", "/ok" if i % 4 else "/fail?status=500") == (200 if i % 4 else 500)
        assert send(client.outbound, "nowhere", "/") == 404
        # the server's sidecar has counted the last request once its series shows it
        wait_for(lambda: 'response_code="500"' in scrape(f"http://{server.host}:15000/metrics"), 10, 0.2,
                 "the server's sidecar counted the 500s")
        texts = {"client-0": scrape(f"http://{client.host}:15000/metrics"),
                 "echo-0": scrape(f"http://{server.host}:15000/metrics"),
                 "reted": scrape(f"http://{reted.api}/metrics")}
    finally:
        reted.stop()

    # as the reference says: promtool's one accepted complaint (helpers.py) and nothing else
    for who, text in texts.items():
        assert promtool_findings(text) == [], who
    scraped = {who: exposed(text) for who, text in texts.items()}
    problems = []
    for who, fams in scraped.items():
        # the traffic fed the families the reference is mostly about
        for must in (("istio_requests_total", "rete_proxy_route_requests_total") if who != "reted"
                     else ("rete_reted_proxies",)):
            assert fams.get(must, (None, set()))[1], f"{who}: no sample of {must}"
        for name, (kind, labels) in sorted(fams.items()):
            if name not in doc:
                problems.append(f"{who}: family {name} ({kind}) is not in docs/observability.md's metric reference")
                continue
            if doc[name][0] != kind:
                problems.append(f"{who}: {name} is a {kind}, the reference says {doc[name][0]}")
            for label in sorted(labels - doc[name][1]):
                problems.append(f"{who}: {name} has label {label}, not in its row of the reference")
    source = declared_in_source()
    for name in sorted(source - set(doc)):
        problems.append(f"src/ declares {name}, not in docs/observability.md's metric reference")
    for name in sorted(set(doc) - source):
        problems.append(f"docs/observability.md documents {name}, which no declaration in src/ spells")
    assert not problems, "\n".join(problems)


def test_every_analyser_code_is_documented():
    code = open(os.path.join(ROOT, "src", "common", "analyze.c")).read()
    # add(f, "RT0001", true|false|expr, kind, ...): the code and its level
    emitted = {}
    for m in re.finditer(r'add\(f, "(RT\d{4})", ([^,]+),', code):
        level = {"true": "Error", "false": "Warning"}.get(m.group(2).strip(), "Warning (Error")
        emitted.setdefault(m.group(1), set()).add(level)
    assert len(emitted) >= 8, emitted
    rows = {r[0]: r for r in table_rows(section(open(DOC).read(), "Analysers (`retectl analyze`)"), "code")}
    problems = []
    for c, levels in sorted(emitted.items()):
        if c not in rows:
            problems.append(f"analyze.c emits {c}, not in docs/observability.md's analyser table")
            continue
        row = rows[c]
        if len(row) != 5 or not all(row):
            problems.append(f"{c}: the row needs code, level, resource, finding and fix hint: {row}")
        for lv in levels:
            if not row[1].startswith(lv):
                problems.append(f"{c}: analyze.c gives level {lv}, the table says {row[1]}")
    for c in sorted(set(rows) - set(emitted)):
        problems.append(f"docs/observability.md lists {c}, which analyze.c never emits")
    assert not problems, "\n".join(problems)
