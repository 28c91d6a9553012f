// The operator's page. Reads /status, /api/series and /api/decisions; acts through the POST
// routes with the token. Every text that comes from the agent (and so possibly from a plugin or
// a program's output) goes into the page as text, never as HTML.
"use strict";

const S = {
  status: null,
  view: "groups",
  window: sessionStorage.getItem("window") || "15m",
  down: null,            // when the agent stopped answering
  charts: new Map(),     // key → uPlot
  fetched: new Map(),    // key → when its data was last read
  rows: new Map(),       // process instance key → its table row
  output: null,          // {name, replica} whose output is shown
  rendered: false,
};

// What went wrong in the page itself, for the tests (and the curious, in the console): a
// blocked load or request (Content-Security-Policy) or an uncaught error.
const problems = [];
document.addEventListener("securitypolicyviolation", (e) => problems.push(`CSP ${e.violatedDirective}: ${e.blockedURI}`));
// Where a script failed, not just what: the stack says which code (ours or the chart library's).
addEventListener("error", (e) => problems.push(`error: ${e.message} (${e.filename}:${e.lineno}:${e.colno}) ${(e.error && e.error.stack) || ""}`));
addEventListener("unhandledrejection", (e) => problems.push(`rejection: ${e.reason}`));

// ---- small helpers -------------------------------------------------------------------------

function el(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k != null && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
const $ = (id) => document.getElementById(id);
const badge = (state) => el("span", { class: `badge s-${state}` }, state);
const time = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const dayTime = (ms) => {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? time(ms) : d.toLocaleString([], { hour12: false });
};
function ago(s) {
  if (s == null) return "";
  s = Math.round(s);
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}
const duration = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(1)} ms` : `${(ns / 1e3).toFixed(0)} µs`);
function fmt(v, unit) {
  if (v == null || !isFinite(v)) return "–";
  if (unit === "ratio") return `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`;
  if (unit === "bytes" || unit === "bytes/s") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}${unit === "bytes/s" ? "/s" : ""}`;
  }
  return Math.abs(v) >= 100 ? v.toFixed(0) : +v.toPrecision(3) + "";
}
const unitOf = (name) =>
  /utilization/.test(name) ? "ratio" : /\.io$/.test(name) ? "bytes/s" : /usage|limit/.test(name) && !/^process\.cpu/.test(name) ? "bytes" : "";
const labelText = (labels, skip = []) =>
  Object.entries(labels || {}).filter(([k]) => !skip.includes(k)).map(([k, v]) => `${k}=${v}`).join(" ");
const refreshMs = () => Math.min(10000, Math.max(1000, (S.status && S.status.sample_interval_ms) || 1000));
// The store's bucket for the window (as /api/series computes it): a chart gains at most one
// point per bucket, so it is not read again sooner.
const bucketMs = () => {
  const step = Math.max(1000, windowMs() / 600);
  const unit = step >= 60000 ? 60000 : 1000;
  return Math.ceil(step / unit) * unit;
};
const span = () => [(Date.now() - windowMs()) / 1000, Date.now() / 1000];
const windowMs = () => ({ "15m": 9e5, "1h": 36e5, "6h": 216e5, "24h": 864e5, "7d": 6048e5 })[S.window] || 9e5;

function notice(text, bad) {
  const n = $("notice");
  n.textContent = text;
  n.className = bad ? "bad" : "";
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (n.hidden = true), 8000);
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

// ---- the token and actions -----------------------------------------------------------------

const token = () => sessionStorage.getItem("token") || "";
function showToken() {
  const has = !!token();
  $("token-state").textContent = has ? "actions enabled" : "read-only";
  $("token-forget").hidden = !has;
  $("token").hidden = has;
  $("token-save").hidden = has;
}

// Every change is a POST with the token in a header (a form on another site can set neither).
async function act(path, what) {
  try {
    const r = await fetch(path, { method: "POST", headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
    const text = (await r.text()).trim();
    if (r.status === 401) {
      sessionStorage.removeItem("token");
      showToken();
      notice(`refused: ${text} — enter the token to act`, true);
    } else notice(r.ok ? `${what}: ${text}` : `${what} failed: ${text}`, !r.ok);
  } catch (e) {
    notice(`${what}: the agent did not answer (${e.message})`, true);
  }
  tick(true);
}

// ---- charts (uPlot) ------------------------------------------------------------------------

// The page's colours, each defined once. Actions (scale-up, scale-in, a dry run's would-scale,
// scale-failed, hold, no-recommendation) are coloured by app.css's `act-KIND` classes, which the
// timeline's badges and the chart's markers both carry (`actionKind` says which). A chart's
// lines take SERIES colours: none of them an action's, and no two lines of one chart the same
// (`colours`); past the list, hues spread around the wheel.
const SERIES = ["#58a6ff", "#bc8cff", "#39c5cf", "#e3b341", "#f778ba", "#a5d6ff", "#c9a0ff", "#56d4b0"];
const LINE = { replicas: "#e6edf3", ready: SERIES[2], desired: SERIES[1], target: SERIES[3] };

// What a journal event did, as the palette names it: a scale is a scale-up or a scale-in (by the
// replicas, or by the size tier when only that changed).
function actionKind(e) {
  if (e.action !== "scale") return e.action;
  return (e.target - e.current || e.target_tier - e.tier) < 0 ? "scale-in" : "scale-up";
}
const actionBadge = (e) => el("span", { class: `badge act act-${actionKind(e)}` }, actionKind(e));

// One colour per line, distinct within the chart: a line's own colour (`color`) if no line before
// it took it, else the first SERIES colour no line of the chart has.
function colours(lines) {
  const used = new Set();
  const own = lines.map((l) => (l.color && !used.has(l.color) ? (used.add(l.color), l.color) : null));
  const free = SERIES.filter((c) => !used.has(c));
  let spread = 0;
  return own.map((c) => c || free.shift() || `hsl(${Math.round((spread++ * 137.5 + 20) % 360)} 65% 62%)`);
}

// Puts several {t[], v[]} lines on one x axis (the store buckets them on one grid).
function align(lines) {
  const xs = [...new Set(lines.flatMap((l) => l.t))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = lines.map((l) => {
    const y = new Array(xs.length).fill(null);
    l.t.forEach((t, i) => (y[index.get(t)] = l.v[i]));
    return y;
  });
  return [xs.map((x) => x / 1000), ...ys];
}

async function seriesLines(name, labels, skip, window) {
  const q = new URLSearchParams({ name, window: window || S.window });
  const l = Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(",");
  if (l) q.set("labels", l);
  const body = await getJson(`/api/series?${q}`);
  return body.series.map((s) => ({
    label: labelText(s.labels, skip) || s.name,
    labels: s.labels,
    t: s.timestamps_ms,
    v: s.values,
  }));
}

// Draws (or updates) chart `key` in `box`. `lines`: [{label, t, v, scale?, unit?, stepped?, dash?}].
function plot(key, box, lines, opts = {}) {
  const data = align(lines);
  const width = opts.spark ? 130 : Math.max(200, box.clientWidth || 600);
  const height = opts.height || 200;
  const shape = lines.map((l) => l.label + (l.scale || "")).join("|");
  let u = S.charts.get(key);
  if (u && u.shape === shape && u.root.isConnected) {
    u.marks = opts.marks;
    u.xRange = opts.xRange;
    u.setData(data);
    return;
  }
  if (u) u.destroy();
  const unit = (lines[0] && lines[0].unit) || "";
  // The legend shows the point under the cursor, and the latest point when the cursor is not
  // over the chart (uPlot then asks with no index).
  const at = (u, v, i, idx) => (idx == null ? latest(u.data[i]) : v);
  const series = [{ value: (u, v, i, idx) => { const x = at(u, v, i, idx); return x == null ? "–" : dayTime(x * 1000); } }];
  const stroke = colours(lines);
  lines.forEach((l, i) => {
    series.push({
      label: l.label,
      scale: l.scale || "y",
      stroke: stroke[i],
      width: l.width || 1.5,
      dash: l.dash,
      spanGaps: !!(l.stepped || l.spanGaps),
      paths: l.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
      value: (u, v, si, idx) => fmt(at(u, v, si, idx), l.unit ?? unit),
      points: opts.spark ? { show: false } : undefined,
    });
  });
  const axes = opts.spark ? [{ show: false }, { show: false }] : [
    { stroke: "#8b96a3", grid: { stroke: "#2a323c" } },
    { stroke: "#8b96a3", grid: { stroke: "#2a323c" }, size: unit.startsWith("bytes") ? 84 : 60, values: (_, vs) => vs.map((v) => fmt(v, unit)) },
  ];
  // The x axis ends now (a decision after the last sample still shows) and starts where the
  // window does, or where the data does when there is less of it (a young agent).
  // Never an empty or reversed range: uPlot steps its axis ticks through it, and over an empty
  // one (a single sample, a flat line) its smallest step never gets anywhere — it fills an
  // array until the browser refuses ("Invalid array length").
  const xr = (u, min, max) => {
    if (!u.xRange) return [min, max];
    const lo = min != null ? Math.max(u.xRange[0], min) : u.xRange[0];
    const hi = u.xRange[1];
    return lo < hi ? [lo, hi] : [hi - 60, hi];
  };
  const scales = { x: { time: true, range: xr }, y: { range: opts.yRange || spread } };
  if (lines.some((l) => l.scale === "units")) {
    axes.push({ scale: "units", side: 1, stroke: "#8b96a3", grid: { show: false }, values: (_, vs) => vs.map((v) => (Number.isInteger(v) ? v : "")) });
    scales.units = { range: (_, min, max) => [0, Math.max(1, max) + 1] };
  }
  u = new uPlot({
    width, height, series, axes, scales,
    legend: { show: opts.legend !== false },
    cursor: opts.spark ? { show: false } : undefined,
    padding: opts.spark ? [2, 0, 2, 0] : undefined,
    hooks: {
      draw: [drawMarks],
      // New data while the cursor is elsewhere: the legend's latest values move with it.
      setData: [(u) => { if (u.cursor.idx == null) u.setLegend({ idx: null }); }],
    },
  }, data, box);
  u.shape = shape;
  u.marks = opts.marks;
  u.xRange = opts.xRange;
  if (opts.xRange) u.setData(data); // the range function reads u.xRange, set after creation
  S.charts.set(key, u);
}

// A y range with room around the data, at least a tenth of its size wide: a line at 1 that
// moves by 1e-7 (a CPU at 100 %) gets 0.95–1.05. Narrower, the chart library's smallest tick
// step (1e-16) no longer moves a number near 1, and it steps forever ("Invalid array length").
function spread(_, min, max) {
  if (min == null || max == null) return [0, 1];
  const mid = (min + max) / 2;
  const least = Math.abs(mid) * 0.1 || 1;
  if (max - min >= least) return uPlot.rangeNum(min, max, 0.1, true);
  const lo = min >= 0 ? Math.max(0, mid - least / 2) : mid - least / 2;
  return [lo, lo + least];
}

// The last value of a chart line that has one.
function latest(values) {
  for (let i = (values || []).length - 1; i >= 0; i--) if (values[i] != null) return values[i];
  return null;
}

// Decisions on a group's chart, as elements over the plot: a vertical line per scaling in its
// action's colour (dashed for a dry run), and a label `from→to`. Labels never overlap: one that
// would come closer than MARK_GAP px to the label before it merges with it into one label, the
// net change of the run and how many decisions it holds (`1→4 ×3`), coloured by that net change
// (or by the action, when all are the same); the lines stay one per decision.
const MARK_GAP = 4;
function drawMarks(u) {
  let layer = u.over.querySelector(".marks");
  if (!layer && !u.marks) return;
  if (!layer) {
    layer = el("div", { class: "marks" });
    u.over.append(layer);
  }
  const width = u.over.clientWidth;
  const shown = (u.marks || [])
    .map((m) => ({ m, x: u.valToPos(m.t_ms / 1000, "x") }))
    .filter((p) => p.x >= 0 && p.x <= width)
    .sort((a, b) => a.x - b.x);
  const probe = el("span", { class: "mark", "aria-hidden": "true" });
  layer.replaceChildren(probe);
  const widths = new Map();
  const measure = (text) => {
    if (!widths.has(text)) {
      probe.textContent = text;
      // (Not laid out, in a hidden view: about a character's width each.)
      widths.set(text, probe.getBoundingClientRect().width || text.length * 7);
    }
    return widths.get(text);
  };
  const runs = [];
  for (const p of shown) {
    let run = markRun([p], width, measure);
    while (runs.length && run.left < runs[runs.length - 1].right + MARK_GAP) run = markRun(runs.pop().points.concat(run.points), width, measure);
    runs.push(run);
  }
  const lines = shown.map(({ m, x }) => el("div", {
    class: `mark-line act act-${actionKind(m)}${m.action === "would-scale" ? " dashed" : ""}`,
    "data-action": m.action, "data-from": m.current, "data-to": m.target,
  }));
  shown.forEach((p, i) => (lines[i].style.left = `${p.x - 1}px`));
  const labels = runs.map((r) => {
    const label = el("span", { class: `mark act act-${r.kind}`, "data-count": r.points.length }, r.text);
    label.style.left = `${r.left}px`;
    return label;
  });
  layer.replaceChildren(...lines, ...labels);
}

// A run of decisions close together, as one label: its text, colour and place.
function markRun(points, width, measure) {
  const ms = points.map((p) => p.m);
  const [first, last] = [ms[0], ms[ms.length - 1]];
  const kinds = new Set(ms.map(actionKind));
  let text, kind;
  if (ms.length === 1) {
    text = first.current === first.target && first.tier !== first.target_tier
      ? `tier ${first.tier}→${first.target_tier}` : `${first.current}→${first.target}`;
    kind = actionKind(first);
  } else {
    // A failed call changed nothing: the run ends where its last decision started.
    const end = last.action === "scale-failed" ? last.current : last.target;
    text = `${first.current}→${end} ×${ms.length}`;
    kind = kinds.size === 1 ? actionKind(first) : end > first.current ? "scale-up" : end < first.current ? "scale-in" : "mixed";
  }
  const w = measure(text);
  const left = Math.max(0, Math.min(points[0].x + 3, width - w));
  return { points, text, kind, left, right: left + w };
}

// Whether chart data `key` is due for a re-read (at most once per refresh, or per bucket).
function due(key, stepMs, force) {
  const last = S.fetched.get(key) || 0;
  if (!force && Date.now() - last < Math.max(refreshMs(), stepMs || 0)) return false;
  S.fetched.set(key, Date.now());
  return true;
}

// ---- views ---------------------------------------------------------------------------------

function attention(s) {
  const items = [];
  for (const [g, ps] of Object.entries((s.problems && s.problems.groups) || {})) ps.forEach((p) => items.push(`group ${g}: ${p}`));
  for (const [n, ps] of Object.entries((s.problems && s.problems.plugins) || {})) ps.forEach((p) => items.push(`plugin ${n}: ${p}`));
  for (const p of s.plugins || []) {
    if (p.state === "quarantined") items.push(`plugin ${p.name} is quarantined: ${p.last_fault || "faulted"}`);
    if (p.state === "failed") items.push(`${p.file}: ${p.error || "failed to load"}`);
    const c = p.collection;
    if (c && c.last_error) items.push(`source ${p.name}: ${c.errors} of ${c.collections} collections failed; last: ${c.last_error}`);
  }
  for (const i of s.processes || []) if (i.state === "failed" || i.state === "backoff")
    items.push(`process ${i.name}-${i.replica} is ${i.state}${i.last_error ? `: ${i.last_error}` : i.last_exit ? `: ${i.last_exit}` : ""}`);
  for (const g of s.groups || []) if (g.failures_in_a_row > 0)
    items.push(`group ${g.name}: ${g.failures_in_a_row} evaluation(s) in a row without a usable recommendation`);
  const reload = s.config && s.config.last_reload;
  if (reload && !reload.ok) items.push(`configuration: reload refused: ${reload.error || "no reason given"}`);
  const box = $("attention");
  box.replaceChildren(el("h2", {}, `Needs attention (${items.length})`), el("ul", {}, items.slice(0, 20).map((t) => el("li", {}, t))));
  box.hidden = items.length === 0;
}

function groupCard(g) {
  let card = document.getElementById(`group-${g.name}`);
  if (!card) {
    card = el("div", { class: "card group", id: `group-${g.name}`, "data-group": g.name },
      el("div", { class: "head" }), el("div", { class: "chart" }), el("div", { class: "timeline" }));
    $("view-groups").append(card);
  }
  const tier = g.tier_name ? ` · tier ${g.tier_name}` : "";
  const last = g.last_ms ? [" · last ", badge(g.last_action), ` ${ago((Date.now() - g.last_ms) / 1000)} ago: `, g.last_reason] : [" · not evaluated yet"];
  card.querySelector(".head").replaceChildren(
    el("h2", {}, g.name), " ", g.dry_run ? badge("dry-run") : "",
    el("div", { class: "facts" },
      el("span", {}, "current ", el("b", { class: "current" }, g.current ?? "–")),
      el("span", {}, "ready ", el("b", {}, g.ready ?? "–")),
      el("span", {}, "desired ", el("b", {}, g.desired ?? "–")),
      el("span", {}, `bounds ${g.min}–${g.max}${tier}`),
      g.schedule ? el("span", { class: "schedule" }, `scheduled now ${g.schedule.min}–${g.schedule.max}`,
        g.schedule.open.length ? ` (${g.schedule.open.join(", ")} open)` : "",
        g.schedule.next_change ? ` · next: ${g.schedule.next_change.what} at ${dayTime(g.schedule.next_change.at_ms)}` : "") : "",
      g.cluster ? el("span", { class: "cluster" }, `cluster: ${g.cluster.role} here, leader ${g.cluster.leader ?? "unknown"}`,
        g.cluster.fencing_revision ? ` (fencing revision ${g.cluster.fencing_revision})` : "",
        g.cluster.reason ? ` — ${g.cluster.reason}` : "") : "",
      el("span", { class: "muted" }, `${g.policy} → ${g.backend}, every ${ago(g.interval_ms / 1000)}`)),
    el("div", { class: "muted" }, ...last),
    ...(g.problems || []).map((p) => el("div", { class: "err" }, p)));
  return card;
}

async function groupData(g, card, force) {
  // One chart per group whatever the window; its data is read again per window.
  const key = `group:${g.name}`;
  if (!due(`${key}:${S.window}`, bucketMs(), force)) return;
  const metrics = await Promise.all((g.metrics || []).map((m) => seriesLines(m.name, m.labels, Object.keys(m.labels || {}))
    .then((ls) => ls.map((l) => ({ ...l, label: `${m.name}${l.label !== m.name ? " " + l.label : ""}`, unit: unitOf(m.name) })))));
  const d = await getJson(`/api/decisions?${new URLSearchParams({ group: g.name, window: S.window })}`);
  const cap = d.capacity;
  const lines = metrics.flat().concat([
    // Counts, whatever the metrics' unit.
    { label: "replicas", t: cap.t, v: cap.current, scale: "units", unit: "", stepped: true, color: LINE.replicas, width: 2 },
    { label: "ready", t: cap.t, v: cap.ready, scale: "units", unit: "", stepped: true, color: LINE.ready, dash: [2, 3] },
    { label: "desired", t: cap.t, v: cap.target, scale: "units", unit: "", stepped: true, color: LINE.desired, dash: [5, 4] },
  ]);
  // The policy's target (policy_config's `target`), on the metrics' axis, from where the data
  // starts (or the window, when there is none yet) to now.
  if (g.target != null && isFinite(g.target)) {
    const from = Math.min(...lines.map((l) => (l.t.length ? l.t[0] : Infinity)));
    const t = [isFinite(from) ? from : Date.now() - windowMs(), Date.now()];
    lines.splice(metrics.flat().length, 0, { label: "target", t, v: [g.target, g.target], unit: unitOf(((g.metrics || [])[0] || {}).name || ""), color: LINE.target, dash: [8, 4], spanGaps: true });
  }
  const marks = d.events.filter((e) => e.action !== "hold" && e.action !== "no-recommendation");
  plot(key, card.querySelector(".chart"), lines, { marks, height: 220, xRange: span() });
  timeline(card.querySelector(".timeline"), d);
}

// A guardrail's step, or (a storage group) a step of growing the filesystem: what it ran and saw.
function stepText(s) {
  if (s.grow !== undefined) return `${s.ok ? "" : "failed: "}${s.grow}: ${s.saw}${s.ran ? ` (ran ${s.ran})` : ""}`;
  return `${s.guardrail}: ${fmt(s.before)} → ${fmt(s.after)} (${s.why})`;
}

function timeline(box, d) {
  const rows = d.events.slice().reverse().map((e) => {
    const steps = (e.steps || []).filter((s) => s.guardrail !== "round");
    return el("tr", { class: `ev ev-${e.action}`, "data-kind": actionKind(e) },
      // A run the journal folded starts at its first evaluation (first_ms).
      el("td", {}, dayTime(e.first_ms ?? e.t_ms)),
      el("td", {}, actionBadge(e)),
      el("td", { class: "num" }, e.target_tier !== e.tier ? `${e.current}→${e.target} (tier ${e.tier}→${e.target_tier})` : `${e.current}→${e.target}`),
      el("td", {}, el("div", { class: "reason" }, e.reason),
        steps.length ? el("ul", { class: "steps" }, steps.map((s) => el("li", {}, stepText(s)))) : "",
        e.outcome ? el("div", { class: e.action === "scale-failed" ? "err" : "muted" }, e.outcome) : "",
        e.repeats ? el("div", { class: "muted" }, `and ${e.repeats} more evaluation(s) like it`) : ""));
  });
  const head = el("tr", {}, ["when", "action", "replicas", "why"].map((h) => el("th", {}, h)));
  const summary = el("div", { class: "muted" }, `${d.evaluations} evaluation(s) in the window${d.events_from_ms ? `; events since ${dayTime(d.events_from_ms)}` : ""}${d.omitted ? `; the oldest ${d.omitted} event(s) not shown` : ""}`);
  box.replaceChildren(summary, el("table", {}, head, rows.length ? rows : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no decisions in this window"))));
}

async function viewGroups(s, force) {
  const view = $("view-groups");
  const names = new Set((s.groups || []).map((g) => g.name));
  for (const card of [...view.querySelectorAll(".group")]) if (!names.has(card.dataset.group)) card.remove();
  if (!names.size) view.replaceChildren(el("p", { class: "muted" }, "No scaling group is configured ([[group]] in agent.toml)."));
  view.querySelector("p.muted")?.remove();
  await Promise.all((s.groups || []).map((g) => groupData(g, groupCard(g), force)));
}

function processRow(i) {
  const key = `${i.name}-${i.replica}`;
  let row = S.rows.get(key);
  if (!row || !row.isConnected) {
    row = el("tr", { class: "instance", "data-instance": key });
    row.cells2 = ["name", "state", "pid", "restarts", "uptime", "exit"].map((c) => el("td", { class: c }));
    row.cpu = el("div", { class: "spark" });
    row.mem = el("div", { class: "spark" });
    row.append(...row.cells2, el("td", {}, row.cpu), el("td", {}, row.mem),
      el("td", {}, el("button", { onclick: () => showOutput(i.name, i.replica) }, "output")));
    S.rows.set(key, row);
  }
  const [name, state, pid, restarts, uptime, exit] = row.cells2;
  name.textContent = key;
  state.replaceChildren(badge(i.state));
  pid.textContent = i.pid ?? "–";
  restarts.textContent = i.restarts;
  restarts.className = `restarts num${i.restarts ? " err" : ""}`;
  uptime.textContent = i.uptime_s != null ? ago(i.uptime_s) : "–";
  exit.textContent = i.last_error || i.last_exit || "";
  return row;
}

async function sparklines(program, force) {
  const key = `spark:${program}`;
  if (!due(key, 5000, force)) return;
  // Sparklines: the last quarter of an hour, whatever window the charts show.
  const [cpu, mem] = await Promise.all([
    seriesLines("process.cpu.utilization", { process: program }, [], "15m"),
    seriesLines("process.memory.usage", { process: program }, [], "15m"),
  ]);
  for (const [lines, kind, unit] of [[cpu, "cpu", "ratio"], [mem, "mem", "bytes"]]) {
    for (const l of lines) {
      const row = S.rows.get(`${program}-${l.labels.replica}`);
      if (row) plot(`${kind}:${program}-${l.labels.replica}`, row[kind], [{ ...l, unit }], { height: 34, legend: false, spark: true });
    }
  }
}

async function viewProcesses(s, force) {
  const view = $("view-processes");
  if (!view.querySelector("table.processes")) {
    view.replaceChildren(el("div", { class: "programs" }),
      el("table", { class: "processes" }, el("thead", {}, el("tr", {}, ["instance", "state", "pid", "restarts", "uptime", "last exit", "CPU (15 min)", "RSS (15 min)", ""].map((h) => el("th", {}, h)))), el("tbody")),
      el("div", { id: "output-box" }));
  }
  const programs = [...new Set((s.processes || []).map((i) => i.name))];
  view.querySelector(".programs").replaceChildren(...programs.map((p) => {
    const n = (s.processes || []).filter((i) => i.name === p).length;
    return el("div", { class: "card actions", "data-program": p }, el("h2", {}, p), ` ${n} instance(s) `,
      el("button", { onclick: () => act(`/processes/${encodeURIComponent(p)}/restart`, `restart ${p}`) }, "restart"),
      el("button", { class: "danger", onclick: () => act(`/processes/${encodeURIComponent(p)}/stop`, `stop ${p}`) }, "stop"),
      el("button", { onclick: () => act(`/processes/${encodeURIComponent(p)}/start`, `start ${p}`) }, "start"),
      el("button", { onclick: () => act(`/processes/${encodeURIComponent(p)}/replicas/${Math.max(0, n - 1)}`, `scale ${p} to ${n - 1}`) }, "− replica"),
      el("button", { onclick: () => act(`/processes/${encodeURIComponent(p)}/replicas/${n + 1}`, `scale ${p} to ${n + 1}`) }, "+ replica"));
  }));
  if (!programs.length) view.querySelector(".programs").replaceChildren(el("p", { class: "muted" }, "No supervised process ([[process]] in agent.toml)."));
  view.querySelector("tbody").replaceChildren(...(s.processes || []).map(processRow));
  await Promise.all(programs.map((p) => sparklines(p, force)));
  if (S.output) await refreshOutput();
}

function showOutput(name, replica) {
  S.output = { name, replica };
  refreshOutput();
}

async function refreshOutput() {
  const { name, replica } = S.output;
  const box = $("output-box");
  if (!box) return;
  const title = el("h3", {}, `output of ${name}-${replica} `, el("button", { onclick: () => { S.output = null; box.replaceChildren(); } }, "close"));
  if (!token()) {
    box.replaceChildren(title, el("p", { class: "muted" }, "A program's output may hold what only the operator should read: enter the token to see it."));
    return;
  }
  const r = await fetch(`/processes/${encodeURIComponent(name)}/logs?replica=${replica}&lines=200`, { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" });
  const text = await r.text();
  const pre = el("pre", { class: "output" }, r.ok ? text || "(no output yet)" : `refused: ${text}`);
  box.replaceChildren(title, pre);
  pre.scrollTop = pre.scrollHeight;
}

// A source's collections: why it is not collected, or how many failed and the last error.
function collectionNote(p) {
  const c = p.collection;
  if (p.state === "disabled") return el("div", { class: "muted" }, p.error || "disabled");
  if (!c) return "";
  if (c.not_collected) return el("div", { class: "err collection" }, c.not_collected);
  if (c.last_error) return el("div", { class: "err collection" }, `${c.errors} of ${c.collections} collections failed; last: ${c.last_error}`);
  return "";
}

function viewPlugins(s) {
  const head = el("tr", {}, ["plugin", "kind", "version", "contract", "state", "calls", "faults", "mean call", "last fault", "grants"].map((h) => el("th", {}, h)));
  const rows = (s.plugins || []).filter((p) => p.state !== "failed").map((p) => {
    const g = p.grants || {};
    const grants = !p.grants ? "" : [
      g.allow_http && g.allow_http.length ? `http: ${g.allow_http.join(", ")}` : "no network",
      g.secrets && g.secrets.length ? `secrets: ${g.secrets.join(", ")}` : "",
      g.processes && g.processes.length ? `processes: ${g.processes.join(", ")}` : "",
      g.memory_mib ? `${g.memory_mib} MiB` : "",
    ].filter(Boolean).join(" · ");
    const over = Object.entries(p.over_budget || {}).map(([k, v]) => `${k} ×${v}`).join(", ");
    return el("tr", { class: "plugin", "data-plugin": p.name },
      el("td", {}, el("b", {}, p.name), el("div", { class: "muted" }, p.file)),
      el("td", {}, p.kind || ""), el("td", {}, p.version || ""), el("td", {}, p.contract || ""),
      el("td", { class: "state" }, badge(p.state), p.quarantine_ms ? el("div", { class: "muted" }, `retried in ${ago(p.quarantine_ms / 1000)}`) : ""),
      el("td", { class: "num" }, p.calls ?? ""), el("td", { class: `num${p.faults ? " err" : ""}` }, p.faults),
      el("td", { class: "num" }, p.calls ? duration(p.call_ns_total / p.calls) : "–"),
      el("td", { class: "err" }, p.last_fault || "", over ? el("div", { class: "muted" }, `over budget: ${over}`) : "",
        collectionNote(p)),
      el("td", { class: "muted" }, grants));
  });
  const failed = (s.plugins || []).filter((p) => p.state === "failed").map((p) =>
    el("tr", { class: "plugin-file", "data-file": p.file }, el("td", {}, p.file), el("td", {}, badge(p.state)), el("td", { class: "err" }, p.error || "")));
  const kept = (s.failed_files || []).filter((f) => f.kept_running).map((f) =>
    el("tr", { class: "plugin-file" }, el("td", {}, f.file), el("td", {}, badge("failed")), el("td", { class: "err" }, `${f.error} (the previous version of ${f.kept_running} keeps running)`)));
  $("view-plugins").replaceChildren(
    el("p", { class: "muted" }, `Folder ${s.plugins_dir || "(none)"}${s.plugins_settled ? "" : " — still loading"}`),
    el("table", { class: "plugins" }, head, rows),
    ...(failed.length || kept.length ? [el("h3", {}, "Files that did not load"), el("table", { class: "failed" }, failed, kept)] : []));
}

const MACHINE = [
  { title: "CPU", name: "system.cpu.utilization", pick: (l) => !l.labels.cpu, yRange: [0, 1] },
  { title: "Memory", name: "system.memory.utilization", yRange: [0, 1] },
  { title: "Load average", names: ["system.cpu.load_average.1m", "system.cpu.load_average.5m", "system.cpu.load_average.15m"] },
  { title: "Network", name: "system.network.io", pick: (l) => l.labels.device !== "lo" },
  { title: "Disk", name: "system.disk.io" },
  { title: "Filesystems", name: "system.filesystem.utilization", yRange: [0, 1] },
];

async function viewMachine(force) {
  const view = $("view-machine");
  if (!view.querySelector(".grid")) {
    view.replaceChildren(el("div", { class: "grid" }, MACHINE.map((c) => el("div", { class: "card chart", "data-chart": c.title }, el("h3", {}, c.title), el("div", { class: "plot" })))));
  }
  await Promise.all(MACHINE.map(async (c) => {
    const key = `machine:${c.title}`;
    if (!due(`${key}:${S.window}`, bucketMs(), force)) return;
    const names = c.names || [c.name];
    const lines = (await Promise.all(names.map((n) => seriesLines(n).then((ls) => ls.map((l) => ({ ...l, label: c.names ? n.split(".").pop() : l.label, unit: unitOf(n) }))))))
      .flat().filter(c.pick || (() => true)).slice(0, 12);
    const box = view.querySelector(`[data-chart="${c.title}"] .plot`);
    if (!lines.length) box.replaceChildren(el("p", { class: "muted" }, "no samples in this window"));
    else { box.querySelector("p")?.remove(); plot(key, box, lines, { yRange: c.yRange, xRange: span() }); }
  }));
}

// ---- the loop --------------------------------------------------------------------------------

function header(s) {
  $("version").textContent = `v${s.version}`;
  $("uptime").textContent = `up ${ago(s.uptime_s)} · ${(s.groups || []).length} group(s) · ${(s.processes || []).length} instance(s) · ${(s.plugins || []).length} plugin(s)`;
}

async function render(force) {
  const s = S.status;
  header(s);
  attention(s);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === S.view));
  document.querySelectorAll(".view").forEach((v) => (v.hidden = v.id !== `view-${S.view}`));
  if (S.view === "groups") await viewGroups(s, force);
  else if (S.view === "processes") await viewProcesses(s, force);
  else if (S.view === "plugins") viewPlugins(s);
  else await viewMachine(force);
  if (!S.rendered) {
    S.rendered = true;
    performance.mark("rendered"); // time to first render with data: the bench reads it
  }
  document.body.dataset.renderedAt = Date.now();
}

let timer = null;
async function tick(force) {
  clearTimeout(timer);
  try {
    const s = await getJson("/status");
    // A restarted agent: everything read before it is stale (and its token may be new).
    const restarted = S.status && s.uptime_s < S.status.uptime_s;
    S.status = s;
    if (S.down || restarted) { S.fetched.clear(); force = true; }
    S.down = null;
    $("banner").hidden = true;
  } catch (e) {
    if (!S.down) S.down = Date.now();
    const b = $("banner");
    b.textContent = `The agent is not answering since ${time(S.down)} (${e.message}); retrying every ${refreshMs() / 1000}s. What is shown is as of then.`;
    b.hidden = false;
  }
  // A view that cannot read its data says so, and the next tick tries again.
  if (S.status && !S.down) await render(force).catch((e) => notice(`reading the data failed: ${e.message}`, true));
  timer = setTimeout(() => tick(false), refreshMs());
}

function route() {
  const v = location.hash.slice(1);
  S.view = ["groups", "processes", "plugins", "machine"].includes(v) ? v : "groups";
  if (S.status) render(true).catch((e) => notice(e.message, true));
}

addEventListener("DOMContentLoaded", () => {
  $("window").value = S.window;
  $("window").addEventListener("change", (e) => {
    S.window = e.target.value;
    sessionStorage.setItem("window", S.window);
    tick(true);
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("token").value.trim();
    if (t) sessionStorage.setItem("token", t);
    $("token").value = "";
    showToken();
    if (S.output) refreshOutput();
  });
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem("token"); showToken(); });
  addEventListener("hashchange", route);
  addEventListener("resize", () => S.charts.forEach((u) => {
    const w = u.root.parentElement && u.root.parentElement.clientWidth;
    if (w && !u.root.parentElement.classList.contains("spark")) u.setSize({ width: w, height: u.height });
  }));
  showToken();
  route();
  tick(true);
});
