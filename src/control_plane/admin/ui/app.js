"use strict";
// The dashboard: reads /api/v1/state and /api/v1/rollouts, and refreshes them on
// every event of /api/v1/events; polls /api/v1/stats every 2 s for the per-backend
// rates (read with fetch, which, unlike EventSource, can
// send the bearer token as a header). The token lives in sessionStorage only.
const colors = ["#2a6fdb", "#2bb673", "#e08a1e", "#9b59b6", "#d64545", "#16a2b8"];
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("sluicegate-token") || "";

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path) {
  let resp = await fetch(path, { headers: headers(), cache: "no-store" });
  if (resp.status === 401) {
    token = prompt("Admin token for this gateway") || "";
    sessionStorage.setItem("sluicegate-token", token);
    resp = await fetch(path, { headers: headers(), cache: "no-store" });
  }
  if (!resp.ok) throw new Error(path + ": " + resp.status);
  return resp;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  // Styles through the CSSOM: the page's CSP refuses style attributes.
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function renderRoutes(state) {
  const box = $("routes");
  box.replaceChildren();
  for (const r of state.routes) {
    const total = r.split.reduce((s, p) => s + p.weight, 0) || 1;
    const bar = el("div", { class: "bar" });
    r.split.forEach((p, i) => {
      const pct = (100 * p.weight) / total;
      const seg = el("div", { style: `width:${pct}%;background:${colors[i % colors.length]}`, title: `${p.pool} ${p.weight}` }, `${p.pool} ${Math.round(pct)}%`);
      bar.append(seg);
    });
    const text = r.split.map((p) => `${p.pool}=${p.weight}`).join(" ");
    box.append(el("div", { class: "route", "data-route": r.name }, el("b", {}, r.name), " ", text, " ", el("span", { class: "dim" }, "source: " + r.split_source), bar));
  }
}

// Per-backend figures from /api/v1/stats (polled: they change with every request,
// not only with events).
let stats = null;
let lastState = null;

const fmt = {
  rate: (v) => (v == null ? "-" : v < 10 ? v.toFixed(1) : String(Math.round(v))),
  pct: (v) => (v == null ? "-" : (100 * v).toFixed(v > 0 && v < 0.01 ? 2 : 1) + "%"),
  ms: (v) => (v == null ? "-" : v < 10 ? v.toFixed(1) + "ms" : Math.round(v) + "ms"),
};

function renderPools(state) {
  lastState = state;
  const body = $("pools").tBodies[0];
  body.replaceChildren();
  const figures = new Map();
  for (const p of (stats && stats.pools) || []) for (const b of p.backends) figures.set(p.pool + "/" + b.addr, b);
  for (const p of state.pools) {
    for (const b of p.backends) {
      const f = figures.get(p.name + "/" + b.addr) || {};
      const health = b.healthy ? el("span", { class: "ok" }, "healthy") : el("span", { class: "bad" }, "unhealthy");
      const err = el("td", { class: "error-rate" + (f.error_rate > 0 ? " bad" : "") }, fmt.pct(f.error_rate));
      body.append(el("tr", { "data-backend": p.name + "/" + b.addr },
        el("td", {}, p.name), el("td", {}, b.addr), el("td", {}, String(b.source)), el("td", {}, health),
        el("td", {}, b.ejected ? "ejected" : "-"), el("td", {}, b.draining ? "draining" : "-"),
        el("td", { class: "inflight" }, String(f.inflight ?? b.inflight)),
        el("td", { class: "rps" }, fmt.rate(f.rps)), err, el("td", { class: "p99" }, fmt.ms(f.p99_ms))));
    }
  }
  $("gen").textContent = "generation " + state.counters.generation;
  $("window").textContent = stats && stats.window_s != null ? `rates over the last ${stats.window_s.toFixed(1)} s` : "";
}

async function pollStats() {
  try {
    stats = await (await api("/api/v1/stats")).json();
    if (lastState) renderPools(lastState);
  } catch (e) {
    console.warn(e);
  }
}

// "1s 500ms" (a humantime duration, as the rollout spec is written) in ms.
function durationMs(text) {
  if (text == null) return null;
  const unit = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1e3, m: 6e4, min: 6e4, h: 3.6e6, d: 8.64e7 };
  let ms = 0;
  for (const [, n, u] of String(text).matchAll(/(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|min|s|m|h|d)/g)) ms += Number(n) * unit[u];
  return ms;
}

// One rollout's steps as two panels: error rate per step against max_error_rate,
// p99 per step against max_p99 (dashed lines: the gate's bounds). Colour: the
// step's verdict.
function chart(r) {
  const pw = 300, h = 150, gap = 30, w = 2 * pw + gap, n = Math.max(r.steps.length, 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("class", "rollout-chart");
  const add = (tag, a, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(a)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    svg.append(e);
    return e;
  };
  const panel = (x0, title, values, bound, label) => {
    const top = Math.max(bound ?? 0, ...values.map((v) => v ?? 0)) * 1.2 || 1;
    const y = (v) => h - 20 - ((h - 40) * v) / top;
    add("text", { x: x0, y: 12, "font-size": 11 }, title);
    r.steps.forEach((s, i) => {
      const x = x0 + 5 + (i * (pw - 10)) / n, bw = (pw - 10) / n - 6, v = values[i];
      const fill = s.verdict === "failed" ? "#d64545" : s.verdict === "passed" ? "#2bb673" : "#999";
      if (v != null) {
        const bar = add("rect", { x, y: y(v), width: bw, height: Math.max(h - 20 - y(v), 1), fill, class: "step" });
        const tip = document.createElementNS(ns, "title");
        tip.textContent = `step ${i}: ${s.weight}% ${title} ${label(v)} (${s.verdict})`;
        bar.append(tip);
      }
      add("text", { x, y: h - 6, "font-size": 10 }, `${s.weight}%`);
    });
    if (bound != null) {
      add("line", { x1: x0, x2: x0 + pw, y1: y(bound), y2: y(bound), stroke: "#d64545", "stroke-dasharray": "4 3", class: "bound" });
      add("text", { x: x0 + 2, y: y(bound) - 3, "font-size": 10, fill: "#d64545" }, "gate " + label(bound));
    }
  };
  panel(0, "error rate", r.steps.map((s) => s.error_rate), r.spec.max_error_rate ?? null, fmt.pct);
  panel(pw + gap, "p99", r.steps.map((s) => s.p99_ms ?? null), durationMs(r.spec.max_p99), fmt.ms);
  return svg;
}

function renderRollouts(list) {
  const box = $("rollouts");
  box.replaceChildren();
  if (!list.length) box.append(el("p", { class: "dim" }, "none"));
  for (const r of list.slice(-3)) {
    const gate = `max_error_rate ${r.spec.max_error_rate ?? "-"}, max_p99 ${r.spec.max_p99 ?? "-"}`;
    box.append(el("div", {}, el("b", {}, r.id), ` ${r.spec.route} → ${r.spec.to}: ${r.phase} (${gate})`), chart(r));
  }
}

let refreshing = null;
async function refresh() {
  const state = await (await api("/api/v1/state")).json();
  renderRoutes(state);
  renderPools(state);
  try {
    const rollouts = await (await api("/api/v1/rollouts")).json();
    renderRollouts(Array.isArray(rollouts) ? rollouts : rollouts.rollouts || []);
  } catch (e) {
    console.warn(e);
  }
}
function soon() {
  if (!refreshing) refreshing = setTimeout(() => { refreshing = null; refresh().catch(console.warn); }, 50);
}

function logEvent(ev) {
  const list = $("events");
  const t = new Date(ev.at_ms || Date.now()).toISOString().slice(11, 19);
  const rest = Object.entries(ev).filter(([k]) => !["seq", "at_ms", "type"].includes(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  list.prepend(el("li", {}, `${t} #${ev.seq ?? "-"} ${ev.type} ${rest}`));
  while (list.children.length > 50) list.lastChild.remove();
}

let lastId = null;
async function follow() {
  for (;;) {
    try {
      const h = headers();
      if (lastId != null) h["Last-Event-ID"] = String(lastId);
      const resp = await fetch("/api/v1/events", { headers: h, cache: "no-store" });
      if (!resp.ok) throw new Error("events: " + resp.status);
      $("conn").textContent = "live";
      await refresh();
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const msg = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = msg.split("\n").find((l) => l.startsWith("data: "));
          if (!data) continue;
          const ev = JSON.parse(data.slice(6));
          if (ev.seq != null) lastId = ev.seq;
          logEvent(ev);
          soon();
        }
      }
    } catch (e) {
      console.warn(e);
    }
    $("conn").textContent = "reconnecting…";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

follow();
pollStats();
setInterval(pollStats, 2000);
