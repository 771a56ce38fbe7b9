// Bramble dashboard: the master's status topics, live over Server-Sent Events (GET /events).
// Each event is {"topic": "bramble/v1/status/…", "payload": <json or null>}; a "reset" event
// precedes a full snapshot. No library, no polling: the page re-renders when an event arrives.
"use strict";
const PREFIX = "bramble/v1/status/";
const COLORS = ["#7c3aed", "#2563eb", "#0d9488", "#d97706", "#db2777", "#65a30d", "#0891b2", "#9333ea"];
const HISTORY = 120;
let topics = new Map();
const history = new Map(); // framework id -> [[time ms, share]]
const colorOf = new Map();
let renderQueued = false;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function kind(k) {
  const out = [];
  for (const [t, p] of topics) if (t.startsWith(PREFIX + k + "/")) out.push(p);
  return out;
}
const cores = (m) => (m / 1000).toFixed(m % 1000 ? 2 : 0);
const mib = (m) => (m >= 1024 ? (m / 1024).toFixed(1) + " GiB" : m + " MiB");
const ago = (ms) => { const s = Math.max(0, Math.round((Date.now() - ms) / 1000)); return s < 90 ? s + " s" : Math.round(s / 60) + " min"; };
function color(id) {
  if (!colorOf.has(id)) colorOf.set(id, COLORS[colorOf.size % COLORS.length]);
  return colorOf.get(id);
}

function bar(label, cls, used, offered, total, text) {
  const pct = (v) => (total > 0 ? Math.min(100, (100 * v) / total) : 0) + "%";
  return el("div", { class: "bar " + cls }, el("span", {}, label),
    el("div", { class: "track" }, el("div", { class: "used", style: "width:" + pct(used) }),
      el("div", { class: "offered", style: "width:" + pct(offered), title: "offered" })),
    el("span", { class: "num" }, text));
}

// Long lists (a lab of thousands of boards) are shown a page at a time, so a render touches at
// most PAGE cards or rows whatever the cluster's size; a filter narrows them first.
const PAGE = 100;
const pages = { agents: 0, tasks: 0 };
const filters = { agents: "", tasks: "" };
function page(list, name) {
  const f = filters[name].trim().toLowerCase();
  const matching = f ? list.filter((x) => JSON.stringify(x).toLowerCase().includes(f)) : list;
  const last = Math.max(0, Math.ceil(matching.length / PAGE) - 1);
  pages[name] = Math.min(pages[name], last);
  const from = pages[name] * PAGE;
  const nav = document.getElementById(name + "-pager");
  if (nav) {
    const button = (label, to, off) => {
      const b = el("button", { type: "button" }, label);
      b.disabled = off;
      b.onclick = () => { pages[name] = to; render(); };
      return b;
    };
    nav.replaceChildren(...(matching.length > PAGE || f ? [
      button("‹", pages[name] - 1, pages[name] === 0),
      el("span", {}, matching.length ? (from + 1) + "–" + Math.min(from + PAGE, matching.length) + " of " + matching.length
        + (f ? " matching" : "") : "none matching"),
      button("›", pages[name] + 1, pages[name] >= last)] : []));
  }
  return matching.slice(from, from + PAGE);
}
for (const name of ["agents", "tasks"]) {
  const input = document.getElementById(name + "-filter");
  if (input) input.oninput = () => { filters[name] = input.value; pages[name] = 0; queueRender(); };
}

function renderAgents() {
  const box = document.getElementById("agents");
  const agents = page(kind("agent").sort((a, b) => a.agent_id.localeCompare(b.agent_id)), "agents");
  box.replaceChildren(...(agents.length ? agents.map((a) => {
    const attrs = Object.entries(a.attributes || {}).map(([k, v]) => k + "=" + v).join(" ");
    const t = a.soc_temp_c;
    return el("div", { class: "agent " + a.state, "data-agent": a.agent_id },
      el("div", { class: "top" }, el("span", { class: "name" }, a.agent_id),
        el("span", { class: "badge " + a.state }, a.state)),
      el("div", { class: "meta" }, [a.hostname, a.arch, attrs].filter(Boolean).join(" · ")),
      bar("cpu", "cpu", a.cpu_millis_used, a.cpu_millis_offered, a.cpu_millis_total,
        cores(a.cpu_millis_used) + " / " + cores(a.cpu_millis_total)),
      bar("mem", "mem", a.mem_mib_used, a.mem_mib_offered, a.mem_mib_total,
        mib(a.mem_mib_used) + " / " + mib(a.mem_mib_total)),
      el("div", { class: "meta" },
        el("span", { class: "temp" + (t >= 70 ? " hot" : "") }, t == null ? "temp n/a" : "🌡 " + t.toFixed(1) + " °C"),
        " · " + a.running_tasks + " task" + (a.running_tasks === 1 ? "" : "s")));
  }) : [el("p", { class: "empty" }, "No agents yet.")]));
}

function renderShares() {
  const fws = kind("framework").sort((a, b) => a.framework_id.localeCompare(b.framework_id));
  const chart = document.getElementById("shares");
  const rowH = 20, labelW = 110, w = 400 - labelW - 40;
  chart.setAttribute("viewBox", "0 0 400 " + Math.max(24, fws.length * rowH + 4));
  chart.replaceChildren(...fws.flatMap((f, i) => {
    const y = i * rowH + 4, share = Math.max(0, Math.min(1, f.dominant_share || 0));
    const name = (f.name || f.framework_id) + (f.connected ? "" : " (away)");
    return [svg("text", { x: 0, y: y + 12 }, name.length > 20 ? name.slice(0, 19) + "…" : name),
      svg("rect", { x: labelW, y: y + 2, width: w, height: 12, rx: 3, fill: "#eef0f3" }),
      svg("rect", { x: labelW, y: y + 2, width: Math.max(1, share * w), height: 12, rx: 3, fill: color(f.framework_id) }),
      svg("text", { x: labelW + w + 6, y: y + 12 }, (share * 100).toFixed(1) + "%")];
  }));
  if (!fws.length) chart.append(svg("text", { x: 0, y: 16, fill: "#6b7280" }, "No frameworks yet."));
  // History: one sample per framework event; a line per framework over the last samples.
  const hist = document.getElementById("history");
  const all = [...history.values()].flat();
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const X = (t) => 30 + ((t - t0) / (t1 - t0)) * 365, Y = (s) => 84 - s * 78;
  const parts = [0, 0.5, 1].flatMap((s) => [svg("line", { x1: 30, x2: 395, y1: Y(s), y2: Y(s), class: "axis" }),
    svg("text", { x: 0, y: Y(s) + 4 }, s * 100 + "%")]);
  for (const [id, pts] of history) {
    if (!pts.length) continue;
    const d = pts.map((p, i) => (i ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
    const [tl, sl] = pts[pts.length - 1];
    parts.push(svg("path", { d, fill: "none", stroke: color(id), "stroke-width": 1.5 }),
      svg("circle", { cx: X(tl), cy: Y(sl), r: 2.5, fill: color(id) }));
  }
  hist.replaceChildren(...parts);
  document.getElementById("legend").replaceChildren(...fws.map((f) =>
    el("span", {}, el("i", { style: "background:" + color(f.framework_id) }), f.name || f.framework_id,
      " · " + Object.entries(f.tasks || {}).filter(([, n]) => n).map(([s, n]) => n + " " + s).join(", "))));
}

function renderOffers() {
  const offers = kind("offer").sort((a, b) => a.offer_id - b.offer_id);
  const names = new Map(kind("framework").map((f) => [f.framework_id, f.name || f.framework_id]));
  document.getElementById("offers").replaceChildren(...(offers.length ? offers.map((o) =>
    el("tr", {}, el("td", {}, "#" + o.offer_id), el("td", {}, names.get(o.framework_id) || o.framework_id),
      el("td", {}, o.agent_id), el("td", {}, cores(o.cpu_millis)), el("td", {}, mib(o.mem_mib)),
      el("td", {}, ago(o.since)))) : [el("tr", {}, el("td", { colspan: 6, class: "empty" }, "No outstanding offers."))]));
}

function renderTasks() {
  const order = { running: 0, starting: 1, staging: 2 };
  const tasks = page(kind("task").sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || b.updated - a.updated), "tasks");
  const names = new Map(kind("framework").map((f) => [f.framework_id, f.name || f.framework_id]));
  document.getElementById("tasks").replaceChildren(...(tasks.length ? tasks.map((t) => {
    const detail = t.exit_code != null ? "exit " + t.exit_code : t.signal != null ? "signal " + t.signal
      : t.reason !== "none" ? t.reason : "";
    return el("tr", { "data-task": t.task_id }, el("td", {}, t.task_id), el("td", {}, names.get(t.framework_id) || t.framework_id),
      el("td", {}, t.agent_id), el("td", { class: "state " + t.state }, t.state), el("td", {}, cores(t.cpu_millis)),
      el("td", {}, mib(t.mem_mib)), el("td", { title: t.message }, detail), el("td", {}, ago(t.updated) + " ago"));
  }) : [el("tr", {}, el("td", { colspan: 8, class: "empty" }, "No tasks yet."))]));
}

function renderSummary() {
  const c = topics.get(PREFIX + "cluster");
  const box = document.getElementById("summary");
  if (!c) return box.replaceChildren();
  const item = (v, l) => el("div", {}, el("b", {}, v), el("span", {}, l));
  box.replaceChildren(item(c.agents_online + (c.agents_offline ? " / " + c.agents_offline + " off" : ""), "agents online"),
    item(c.frameworks, "frameworks"), item((c.tasks && c.tasks.running) || 0, "tasks running"),
    item(cores(c.cpu_millis_used) + " / " + cores(c.cpu_millis_total), "cpu cores used"),
    item(mib(c.mem_mib_used) + " / " + mib(c.mem_mib_total), "memory used"),
    item(c.offers_outstanding, "offers out"));
}

function render() {
  renderQueued = false;
  renderSummary(); renderAgents(); renderShares(); renderOffers(); renderTasks();
  document.body.setAttribute("data-ready", "true");
}
function queueRender() {
  // Renders at most 20 times a second, fewer in a large cluster (every change would re-sort).
  if (!renderQueued) { renderQueued = true; setTimeout(render, topics.size > 2000 ? 500 : 50); }
}

function onStatus(msg) {
  if (typeof msg.topic !== "string" || !msg.topic.startsWith(PREFIX)) return;
  if (msg.payload === null) topics.delete(msg.topic); else topics.set(msg.topic, msg.payload);
  if (msg.topic.startsWith(PREFIX + "framework/")) {
    const id = msg.topic.slice((PREFIX + "framework/").length);
    if (msg.payload === null) { history.delete(id); return queueRender(); }
    const pts = history.get(id) || [];
    pts.push([Date.now(), msg.payload.dominant_share || 0]);
    if (pts.length > HISTORY) pts.shift();
    history.set(id, pts);
  }
  queueRender();
}

const conn = document.getElementById("conn");
const source = new EventSource("events");
source.onopen = () => { conn.textContent = "live"; conn.className = "pill on"; };
source.onerror = () => { conn.textContent = "master offline: reconnecting…"; conn.className = "pill off"; };
source.addEventListener("reset", () => { topics = new Map(); queueRender(); });
// `/?once`: render the snapshot, then close the stream (a static page, e.g. for a headless browser).
const once = new URLSearchParams(location.search).has("once");
source.addEventListener("ready", () => {
  if (once) { source.close(); conn.textContent = "snapshot"; conn.className = "pill"; }
});
source.onmessage = (e) => {
  try { onStatus(JSON.parse(e.data)); } catch (err) { console.warn("bad status event", err); }
};
