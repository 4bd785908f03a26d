"use strict";
// The dashboard: reads /api/v1/state and /api/v1/rollouts, and refreshes them on
// every event of /api/v1/events (read with fetch, which, unlike EventSource, can
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

function renderPools(state) {
  const body = $("pools").tBodies[0];
  body.replaceChildren();
  for (const p of state.pools) {
    for (const b of p.backends) {
      const health = b.healthy ? el("span", { class: "ok" }, "healthy") : el("span", { class: "bad" }, "unhealthy");
      body.append(el("tr", {}, el("td", {}, p.name), el("td", {}, b.addr), el("td", {}, String(b.source)), el("td", {}, health), el("td", {}, b.ejected ? "ejected" : "-"), el("td", {}, b.draining ? "draining" : "-"), el("td", {}, String(b.inflight))));
    }
  }
  $("gen").textContent = "generation " + state.counters.generation;
}

// One rollout's steps: bars of error rate (left axis, against max_error_rate) and
// dots of p99 (against max_p99).
function chart(r) {
  const w = 420, h = 140, n = Math.max(r.steps.length, 1);
  const maxErr = r.spec.max_error_rate ?? null;
  const errTop = Math.max(maxErr ?? 0, ...r.steps.map((s) => s.error_rate), 0.01) * 1.2;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  const add = (tag, a, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(a)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    svg.append(e);
  };
  r.steps.forEach((s, i) => {
    const x = 30 + (i * (w - 40)) / n, bw = (w - 40) / n - 8;
    const bh = ((h - 30) * s.error_rate) / errTop;
    const fill = s.verdict === "failed" ? "#d64545" : s.verdict === "passed" ? "#2bb673" : "#999";
    add("rect", { x, y: h - 20 - bh, width: bw, height: Math.max(bh, 1), fill });
    const p99 = s.p99_ms != null ? ` p99 ${Math.round(s.p99_ms)}ms` : "";
    add("text", { x, y: h - 6, "font-size": 10 }, `${s.weight}%${p99}`);
  });
  if (maxErr != null) {
    const y = h - 20 - ((h - 30) * maxErr) / errTop;
    add("line", { x1: 25, x2: w, y1: y, y2: y, stroke: "#d64545", "stroke-dasharray": "4 3" });
    add("text", { x: 28, y: y - 3, "font-size": 10, fill: "#d64545" }, `max error rate ${maxErr}`);
  }
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
