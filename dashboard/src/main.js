// rete's dashboard (docs/observability.md, "Dashboard"). Reads reted's
// operator API with the admin token kept in this tab's sessionStorage:
// GET /api/v1/stats (services, routes, edges), /api/v1/proxies and
// /api/v1/analyze (the configuration analysers' findings), every POLL_MS,
// and, while the operator taps a Service, the stream of GET /api/v1/tap; and keeps a bounded history per service and route for the
// latency chart. Every text from the API goes into the page as text
// (textContent, canvas labels), never as markup.
import cytoscape from "cytoscape";
import uPlot from "uplot";

const POLL_MS = 3000;            // one round of requests every 3 s
const HISTORY = 200;             // points kept per series: 10 min at 3 s
const TOKEN_KEY = "rete.dashboard.token";
const TAP_ROWS = 100;            // live requests shown, newest first
const TAP_LINE_MAX = 1 << 20;    // a line of the tap stream longer than this ends the tap

const $ = (id) => document.getElementById(id);
const state = { window: "1m", history: new Map(), times: [], timer: null, chart: null, chartKey: "", cy: null,
  tap: null, tapEvents: [] };

class Unauthorized extends Error {}

// A token given in the fragment (/dashboard/#token=...; a fragment is never
// sent to the server) moves to sessionStorage and leaves the address bar.
function takeFragmentToken() {
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Unauthorized();
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (r.status === 401) throw new Unauthorized();
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function showLogin(message) {
  stopTap("stopped: signed out");
  clearTimeout(state.timer);
  state.timer = null;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("window-label").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setStatus("signed out");
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("window-label").hidden = false;
}

function setStatus(text, error) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", !!error);
}

// ---- formatting ----

const pct = (r) => (r == null ? "–" : `${(r * 100).toFixed(r >= 0.9995 || r === 0 ? 0 : 2)}%`);
const ms = (v) => (v == null ? "–" : v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v)} ms`);
const rate = (v) => (v == null ? "–" : v.toFixed(v < 10 ? 2 : 1));
const health = (sr) => (sr == null ? "" : sr >= 0.99 ? "ok" : sr >= 0.95 ? "warn" : "bad");
const colour = { ok: "#2e9d57", warn: "#d99a1e", bad: "#d0433b", "": "#9ca3af" };
const shortService = (fqdn) => fqdn.split(".").slice(0, 2).join(".");

function ago(unix) {
  if (!unix) return "–";
  const s = Math.round(Date.now() / 1000 - unix);
  return s < 90 ? `${s}s ago` : s < 5400 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

// A certificate's expiry; amber in the last fifth of its lifetime (proxies
// renew at about half of it: docs/operations.md), red once expired.
function until(unix, issued) {
  if (!unix) return { text: "–", cls: "" };
  const s = unix - Date.now() / 1000;
  const life = issued && unix > issued ? unix - issued : 86400;
  const when = new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 16) + "Z";
  const rel = s < 0 ? "expired" : s < 5400 ? `in ${Math.round(s / 60)}m` : s < 172800 ? `in ${Math.round(s / 3600)}h` : `in ${Math.round(s / 86400)}d`;
  return { text: `${when} (${rel})`, cls: s < 0 ? "bad" : s < life / 5 ? "warn" : "" };
}

// Replace a table's body: cells are [text, class] pairs or plain text.
function fillTable(id, rows, empty) {
  const tbody = $(id).tBodies[0];
  const cols = $(id).tHead.rows[0].cells.length;
  const fresh = document.createElement("tbody");
  for (const { key, cells } of rows) {
    const tr = fresh.insertRow();
    tr.dataset.key = key;
    for (const c of cells) {
      const td = tr.insertCell();
      const [text, cls] = Array.isArray(c) ? c : [c, ""];
      td.textContent = text;
      if (cls) td.className = cls;
    }
  }
  if (!rows.length) {
    const td = fresh.insertRow().insertCell();
    td.colSpan = cols;
    td.className = "empty";
    td.textContent = empty;
  }
  tbody.replaceWith(fresh);
}

// ---- views ----

function renderServices(items) {
  fillTable("services", items.map((s) => ({
    key: s.service,
    cells: [s.name, s.namespace, [pct(s.successRate), health(s.successRate)], [rate(s.rps), "num"],
      [String(s.requests), "num"], [ms(s.latencyMs.p50), "num"], [ms(s.latencyMs.p95), "num"], [ms(s.latencyMs.p99), "num"]],
  })), "no requests in this window");
}

function renderRoutes(items) {
  fillTable("routes", items.map((r) => ({
    key: `${r.namespace}/${r.name}/${r.service}`,
    cells: [r.name, r.namespace, shortService(r.service), [pct(r.successRate), health(r.successRate)],
      [rate(r.rps), "num"], [ms(r.latencyMs.p50), "num"], [ms(r.latencyMs.p95), "num"], [ms(r.latencyMs.p99), "num"]],
  })), "no routed requests in this window");
}

function renderWorkloads(items) {
  fillTable("workloads", items.map((p) => {
    const cert = until(p.certExpiresAt, p.certIssuedAt);
    const sync = p.status === "SYNCED" ? "ok" : p.status === "STALE" ? "warn" : "bad";
    return {
      key: `${p.namespace}/${p.name}`,
      cells: [p.name, p.namespace, [p.status, sync], p.ready ? "yes" : "no",
        [`${p.sentVersion} / ${p.ackedVersion}`, "num"], [cert.text, cert.cls], ago(p.lastSeen), p.error || ""],
    };
  }), "no proxy has connected");
}

// The analysers' findings (GET /api/v1/analyze): errors first, then by code.
function renderFindings(items) {
  const rank = (f) => (f.level === "Error" ? 0 : 1);
  const sorted = [...items].sort((a, b) => rank(a) - rank(b) || a.code.localeCompare(b.code));
  fillTable("findings", sorted.map((f) => {
    const r = f.resource;
    return {
      key: `${f.code}/${r.kind}/${r.namespace}/${r.name}/${f.message}`,
      cells: [[f.level, f.level === "Error" ? "bad" : "warn"], f.code, `${r.kind} ${r.namespace}/${r.name}`,
        f.message, f.hint],
    };
  }), "no issues found");
}

// ---- tap: live requests of one Service ----
// GET /api/v1/tap streams NDJSON (docs/observability.md, "Tap"): read with
// fetch and a ReadableStream, the token in the header like every request.
// Stopping (the button, the page hidden, signing out) aborts the fetch:
// reted sees its client leave and tells the proxies to stop capturing.

function renderTapChoice(services) {
  const sel = $("tap-service");
  const keys = services.map((s) => `${s.namespace}/${s.name}`);
  if (keys.join("\n") !== [...sel.options].map((o) => o.value).join("\n")) {
    const keep = sel.value;
    sel.replaceChildren(...keys.map((k) => new Option(k, k)));
    if (keys.includes(keep)) sel.value = keep;
  }
  $("tap-toggle").disabled = !state.tap && !keys.length;
}

const who = (p) => (p && p.workload ? `${p.namespace}/${p.workload}` : "–");

function setTapStatus(text) {
  $("tap-status").textContent = text;
}

function renderTap() {
  fillTable("tap", state.tapEvents.map((e, i) => ({
    key: `${e.requestId || i}/${e.proxy}/${e.direction}`,
    cells: [String(e.time || "").slice(11, 23), e.proxy, e.direction === "inbound" ? "in" : "out", e.method,
      `${e.authority || ""}${e.path || ""}`, [String(e.status), e.status === 0 || e.status >= 500 ? "bad" : ""],
      [ms(e.latencyMs), "num"], who(e.source), who(e.destination), e.route || "–", e.responseFlags || "-"],
  })), state.tap ? "waiting for requests…" : "not tapping");
}

function tapEvent(ev, tap) {
  if (ev.type === "tap") setTapStatus(`on: ${ev.proxies.length} proxies asked`);
  else if (ev.type === "started") setTapStatus(`on at ${++tap.started} ${tap.started === 1 ? "proxy" : "proxies"}`);
  else if (ev.type === "dropped") setTapStatus(`on; ${tap.dropped += ev.count} dropped by the proxies' rate limit`);
  else if (ev.type === "error") setTapStatus(`${ev.proxy}: ${ev.error}`);
  else if (ev.type === "request") {
    state.tapEvents.unshift(ev);
    state.tapEvents.length = Math.min(state.tapEvents.length, TAP_ROWS);
    renderTap();
  }
}

async function startTap() {
  const [ns, name] = $("tap-service").value.split("/");
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!name || !token) return;
  const tap = { ctl: new AbortController(), started: 0, dropped: 0 };
  state.tap = tap;
  state.tapEvents = [];
  $("tap-toggle").textContent = "Stop";
  $("tap-service").disabled = true;
  setTapStatus("starting…");
  renderTap();
  let why = "stopped";
  try {
    const q = new URLSearchParams({ kind: "service", name, namespace: ns });
    const r = await fetch(`/api/v1/tap?${q}`, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store",
      signal: tap.ctl.signal });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body.error || `reted answered ${r.status}`);
    }
    const reader = r.body.getReader();
    const text = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += text.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line) tapEvent(JSON.parse(line), tap);
      }
      if (buf.length > TAP_LINE_MAX) throw new Error("a line of the tap stream is too long");
    }
    why = "ended by reted";
  } catch (e) {
    why = tap.ctl.signal.aborted ? tap.why : `stopped: ${e.message}`;
  }
  if (state.tap === tap) stopTap(why);
}

function stopTap(why) {
  const tap = state.tap;
  if (!tap) return;
  state.tap = null;
  tap.why = why;
  tap.ctl.abort();
  $("tap-toggle").textContent = "Start";
  $("tap-service").disabled = false;
  setTapStatus(why);
  renderTap();
}

// The graph: one node per Service, plus a node for each calling workload
// that serves no Service (a client); one edge per (caller, Service) from
// the edge rows. Only a change of the element set runs the layout again.
function renderGraph(services, edges) {
  const svcOf = new Map(); // "ns/workload" -> the Services it answers for
  for (const e of edges)
    for (const fqdn of e.services || []) {
      const k = `${e.destination.namespace}/${e.destination.workload}`;
      if (!svcOf.has(k)) svcOf.set(k, new Set());
      svcOf.get(k).add(fqdn);
    }
  const nodes = new Map();
  for (const s of services)
    nodes.set(`svc:${s.service}`, { label: `${s.name}.${s.namespace}`, kind: "service", health: health(s.successRate), rps: s.rps });
  const links = new Map();
  for (const e of edges) {
    const src = `${e.source.namespace}/${e.source.workload}`;
    const mtls = e.source.workload !== "unknown";
    const from = svcOf.has(src) ? [...svcOf.get(src)].map((f) => `svc:${f}`) : [`wl:${src}`];
    for (const id of from)
      if (!nodes.has(id)) nodes.set(id, { label: id.startsWith("wl:") ? (mtls ? src : "outside the mesh") : shortService(id.slice(4)), kind: "workload", health: "" });
    for (const fqdn of e.services || []) {
      const to = `svc:${fqdn}`;
      if (!nodes.has(to)) nodes.set(to, { label: shortService(fqdn), kind: "service", health: "" });
      for (const f of from) {
        const id = `${f}->${to}`;
        const l = links.get(id) || { source: f, target: to, requests: 0, failures: 0, rps: 0, mtls };
        l.requests += e.requests;
        l.failures += e.failures;
        l.rps += e.rps;
        links.set(id, l);
      }
    }
  }
  // made once the page is shown: a hidden container has no size to lay out in
  if (!state.cy) state.cy = makeGraph();
  const cy = state.cy;
  const want = new Set([...nodes.keys(), ...links.keys()]);
  const have = new Set(cy.elements().map((el) => el.id()));
  const changed = want.size !== have.size || [...want].some((id) => !have.has(id));
  cy.batch(() => {
    cy.elements().filter((el) => !want.has(el.id())).remove();
    for (const [id, n] of nodes) {
      const data = { id, ...n, colour: colour[n.health] };
      if (cy.getElementById(id).nonempty()) cy.getElementById(id).data(data);
      else cy.add({ group: "nodes", data });
    }
    for (const [id, l] of links) {
      const sr = l.requests ? (l.requests - l.failures) / l.requests : null;
      const data = { id, ...l, successRate: sr, colour: colour[health(sr)],
        label: `${rate(l.rps)} rps · ${pct(sr)} · ${l.mtls ? "mTLS" : "plaintext"}` };
      if (cy.getElementById(id).nonempty()) cy.getElementById(id).data(data);
      else cy.add({ group: "edges", data });
    }
  });
  if (changed) cy.resize().layout({ name: "breadthfirst", directed: true, spacingFactor: 1.3, padding: 30, animate: false }).run();
}

function makeGraph() {
  return cytoscape({
    container: $("graph"),
    wheelSensitivity: 0.3,
    maxZoom: 1.2,
    style: [
      { selector: "node", style: { label: "data(label)", "background-color": "data(colour)", "font-size": 12,
        "text-valign": "bottom", "text-margin-y": 4, width: 34, height: 34 } },
      { selector: 'node[kind = "workload"]', style: { shape: "round-rectangle", "background-color": "#cbd5e1" } },
      { selector: "edge", style: { label: "data(label)", "line-color": "data(colour)", "target-arrow-color": "data(colour)",
        "target-arrow-shape": "triangle", "curve-style": "bezier", width: 3, "font-size": 11,
        "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 2 } },
      { selector: "edge[!mtls]", style: { "line-style": "dashed" } },
    ],
  });
}

// ---- history and chart ----

function record(services, routes) {
  const now = Math.round(Date.now() / 1000);
  state.times.push(now);
  const seen = new Set();
  const put = (key, label, row) => {
    seen.add(key);
    if (!state.history.has(key)) state.history.set(key, { label, p50: [], p95: [], p99: [], rps: [] });
    const h = state.history.get(key);
    while (h.p50.length < state.times.length - 1) for (const s of ["p50", "p95", "p99", "rps"]) h[s].push(null);
    h.p50.push(row.latencyMs.p50); h.p95.push(row.latencyMs.p95); h.p99.push(row.latencyMs.p99); h.rps.push(row.rps);
  };
  for (const s of services) put(`service:${s.service}`, `service ${s.name}.${s.namespace}`, s);
  for (const r of routes) put(`route:${r.namespace}/${r.name}/${r.service}`, `route ${r.namespace}/${r.name} → ${shortService(r.service)}`, r);
  for (const [key, h] of state.history)
    if (!seen.has(key)) for (const s of ["p50", "p95", "p99", "rps"]) h[s].push(null);
  if (state.times.length > HISTORY) {
    const cut = state.times.length - HISTORY;
    state.times.splice(0, cut);
    for (const h of state.history.values()) for (const s of ["p50", "p95", "p99", "rps"]) h[s].splice(0, cut);
  }
}

function renderSeriesChoice() {
  const sel = $("series");
  const keys = [...state.history.keys()];
  if (keys.join("\n") !== [...sel.options].map((o) => o.value).join("\n")) {
    const keep = sel.value;
    sel.replaceChildren(...keys.map((k) => new Option(state.history.get(k).label, k)));
    sel.value = keys.includes(keep) ? keep : keys[0] || "";
  }
}

function renderChart() {
  const key = $("series").value;
  const h = state.history.get(key);
  if (!h) return;
  const data = [state.times, h.p50, h.p95, h.p99, h.rps];
  if (state.chart && state.chartKey === key) {
    state.chart.setData(data);
    return;
  }
  if (state.chart) state.chart.destroy();
  state.chartKey = key;
  state.chart = new uPlot({
    width: Math.max(300, $("chart").clientWidth),
    height: 250,
    scales: { ms: { auto: true }, rps: { auto: true } },
    series: [
      {},
      { label: "p50", scale: "ms", stroke: "#2563eb", value: (u, v) => ms(v), spanGaps: false },
      { label: "p95", scale: "ms", stroke: "#d97706", value: (u, v) => ms(v) },
      { label: "p99", scale: "ms", stroke: "#dc2626", value: (u, v) => ms(v) },
      { label: "req/s", scale: "rps", stroke: "#9ca3af", dash: [4, 4], value: (u, v) => rate(v) },
    ],
    axes: [{}, { scale: "ms", label: "latency (ms)" }, { scale: "rps", side: 1, label: "req/s", grid: { show: false } }],
  }, data, $("chart"));
}

// ---- polling ----

async function poll() {
  state.timer = null;
  const w = state.window;
  try {
    const [services, routes, edges, proxies, analysis] = await Promise.all([
      api(`/api/v1/stats?by=service&window=${w}`),
      api(`/api/v1/stats?by=route&window=${w}`),
      api(`/api/v1/stats?by=edge&window=${w}`),
      api("/api/v1/proxies"),
      api("/api/v1/analyze"),
    ]);
    if (w !== state.window) return; // the window changed meanwhile: that poll is under way
    showApp();
    renderServices(services.items);
    renderRoutes(routes.items);
    renderWorkloads(proxies.items);
    renderFindings(analysis.findings);
    renderTapChoice(services.items);
    renderGraph(services.items, edges.items);
    record(services.items, routes.items);
    renderSeriesChoice();
    renderChart();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    setStatus(`updated ${new Date().toLocaleTimeString()} · ${services.windowSeconds}s window · every ${POLL_MS / 1000}s`);
  } catch (e) {
    if (e instanceof Unauthorized) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(had ? "reted refused this token." : "");
      return;
    }
    setStatus(`reted did not answer: ${e.message}`, true);
  }
  if (!state.timer) state.timer = setTimeout(poll, POLL_MS);
}

function start() {
  takeFragmentToken();
  window.reteDashboard = state; // for the browser tests (tests/system/test_dashboard.py)
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    $("token").value = "";
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("login-error").textContent = "";
    poll();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  $("window").addEventListener("change", () => {
    state.window = $("window").value;
    state.history.clear();
    state.times = [];
    clearTimeout(state.timer);
    poll();
  });
  $("series").addEventListener("change", renderChart);
  $("tap-toggle").addEventListener("click", () => (state.tap ? stopTap("stopped") : startTap()));
  // nobody watching: nothing captured (the proxies stop when reted's client leaves)
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopTap("stopped: the page was hidden");
  });
  if (sessionStorage.getItem(TOKEN_KEY)) poll();
  else showLogin("");
}

start();
