// The dashboard page: a Leaflet map of stations coloured by risk (drawn on one canvas, so
// 50,000 stations stay smooth), uPlot charts of the process's history, the panels, search
// and a station drill-down. It polls /api/state with the version it holds and receives only
// the stations that changed. Every time shown is UTC.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const authHeaders = token ? { Authorization: `Bearer ${token}` } : {};

async function api(path) {
  const r = await fetch(path, { cache: "no-store", headers: authHeaders });
  if (!r.ok) { throw new Error(`${path}: HTTP ${r.status}`); }
  return r.json();
}

// --- formatting: one clock (UTC), dates included ---------------------------------------
const pad = (n) => String(n).padStart(2, "0");
function utc(ms) {
  if (ms === null || ms === undefined) { return "–"; }
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) { return "–"; }
  const a = Math.abs(s);
  if (a < 90) { return `${a.toFixed(0)} s`; }
  if (a < 90 * 60) { return `${(a / 60).toFixed(0)} min`; }
  if (a < 48 * 3600) { return `${(a / 3600).toFixed(1)} h`; }
  if (a < 730 * 86400) { return `${(a / 86400).toFixed(0)} days`; }
  return `${(a / (365.25 * 86400)).toFixed(1)} years`;
}
const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + " %";
const fmt = (x, d) => (x === null || x === undefined) ? "–" : x.toFixed(d);
const ms = (x) => (x === null || x === undefined) ? "–" : (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(1)} ms`);
const us = (x) => (x === null || x === undefined) ? "–" : (x >= 1000 ? `${(x / 1000).toFixed(2)} ms` : `${x.toFixed(1)} µs`);
function setText(id, text, cls) {
  const el = $(id);
  if (!el) { return; }
  el.textContent = text;
  if (cls !== undefined) { el.className = cls; }
}
function row(cells, opts) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
  }
  if (opts && opts.onclick) { tr.className = "pick"; tr.addEventListener("click", opts.onclick); }
  if (opts && opts.cls) { tr.className = (tr.className + " " + opts.cls).trim(); }
  return tr;
}
const MODE_TEXT = { waiting: "waiting for data", real_time: "real time", catching_up: "catching up", behind: "behind (historical or stopped input)" };

// --- stations ------------------------------------------------------------------------
const config = { risk_neutral_below: 0.1, min_positives: 30, tile_url: "", tile_attribution: "", tile_max_zoom: 19 };
const stations = new Map(); // key "system\u0000id" -> station
const newestBySystem = new Map(); // system -> newest prediction as_of (ms)
const newestEventBySystem = new Map();
let staleAfterMs = 30 * 60 * 1000;
let drawOrder = [];
let selected = null;
const keyOf = (system, id) => `${system}\u0000${id}`;

function fromRow(r) {
  const s = {
    system: r[0], id: r[1], name: r[2], lat: r[3], lon: r[4], capacity: r[5], bikes: r[6], docks: r[7],
    lastReported: r[8], pEmpty: r[9], pFull: r[10], trend: r[11], asOf: r[12],
  };
  s.key = keyOf(s.system, s.id);
  s.risk = s.pEmpty === null ? null : Math.max(s.pEmpty, s.pFull);
  return s;
}
function isStale(s) {
  if (s.asOf === null) { return false; }
  const newest = newestBySystem.get(s.system);
  return newest !== undefined && newest - s.asOf > staleAfterMs;
}
const label = (s) => s.name || s.id;

function colour(s) {
  if (s.risk === null) { return "rgba(92,104,115,0.6)"; }
  const n = config.risk_neutral_below;
  if (s.risk < n) { return "rgba(92,104,115,0.75)"; }
  const t = Math.min(1, (s.risk - n) / Math.max(0.6 - n, 0.05));
  const [a, b] = s.pEmpty >= s.pFull ? [[240, 180, 41], [229, 83, 75]] : [[108, 182, 255], [152, 110, 226]];
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// --- the map -------------------------------------------------------------------------
const map = L.map("map", { preferCanvas: true, worldCopyJump: true, minZoom: 2, zoomSnap: 0.5 }).setView([20, 0], 2);
let fitted = false;
// Below this zoom, stations are drawn as clusters (one pie per screen cell of CELL pixels).
const CLUSTER_BELOW_ZOOM = 8;
const CELL = 48;

// All stations on one canvas above the tiles; redrawn on every move and data change.
const StationLayer = L.Layer.extend({
  onAdd(m) {
    this._canvas = L.DomUtil.create("canvas", "station-layer");
    m.getPanes().overlayPane.appendChild(this._canvas);
    this._visible = { xs: new Float32Array(0), ys: new Float32Array(0), rs: new Float32Array(0), keys: [] };
    m.on("moveend zoomend resize viewreset", this.redraw, this);
    m.on("zoomstart", () => { this._canvas.style.visibility = "hidden"; });
    m.on("zoomend", () => { this._canvas.style.visibility = "visible"; });
    this.redraw();
  },
  onRemove(m) {
    m.off("moveend zoomend resize viewreset", this.redraw, this);
    L.DomUtil.remove(this._canvas);
  },
  radius(zoom, s) {
    const base = zoom <= 4 ? 1.5 : zoom <= 8 ? 2.5 : zoom <= 11 ? 3.5 : zoom <= 13 ? 5 : 7;
    if (s.risk === null || s.risk < config.risk_neutral_below) { return base; }
    return base * (1 + 0.8 * Math.min(1, s.risk / 0.6));
  },
  redraw() {
    const m = this._map;
    if (!m) { return; }
    const size = m.getSize();
    const dpr = window.devicePixelRatio || 1;
    const c = this._canvas;
    L.DomUtil.setPosition(c, m.containerPointToLayerPoint([0, 0]));
    if (c.width !== size.x * dpr || c.height !== size.y * dpr) {
      c.width = size.x * dpr; c.height = size.y * dpr;
      c.style.width = `${size.x}px`; c.style.height = `${size.y}px`;
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size.x, size.y);
    const zoom = m.getZoom();
    const n = drawOrder.length;
    const xs = new Float32Array(n), ys = new Float32Array(n), rs = new Float32Array(n), keys = [];
    let k = 0, drawn = 0;
    if (zoom < CLUSTER_BELOW_ZOOM) {
      // Country and world scale: stations binned by screen cell, one pie per cell (grey for
      // low risk, the share at risk of running empty / full in colour) with its count.
      const cells = new Map();
      for (const s of drawOrder) {
        const p = m.latLngToContainerPoint([s.lat, s.lon]);
        if (p.x < -CELL || p.y < -CELL || p.x > size.x + CELL || p.y > size.y + CELL) { continue; }
        const id = `${Math.floor(p.x / CELL)},${Math.floor(p.y / CELL)}`;
        let c = cells.get(id);
        if (!c) { c = { x: 0, y: 0, n: 0, empty: 0, full: 0, stale: 0, lat: 0, lon: 0 }; cells.set(id, c); }
        c.x += p.x; c.y += p.y; c.lat += s.lat; c.lon += s.lon; c.n += 1;
        if (isStale(s)) { c.stale += 1; } else if (s.risk !== null && s.risk >= config.risk_neutral_below) {
          if (s.pEmpty >= s.pFull) { c.empty += 1; } else { c.full += 1; }
        }
      }
      ctx.font = "600 10px system-ui, sans-serif";
      ctx.textAlign = "center"; ctx.textBaseline = "middle";
      this._clusters = [];
      for (const c of cells.values()) {
        const x = c.x / c.n, y = c.y / c.n;
        const r = c.n === 1 ? 3 : 5 + 3 * Math.log10(c.n);
        ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fillStyle = "rgba(92,104,115,0.85)"; ctx.fill();
        let a = -Math.PI / 2;
        for (const [count, col] of [[c.empty, "#e5534b"], [c.full, "#986ee2"]]) {
          if (!count) { continue; }
          const b = a + 2 * Math.PI * count / c.n;
          ctx.beginPath(); ctx.moveTo(x, y); ctx.arc(x, y, r, a, b); ctx.closePath(); ctx.fillStyle = col; ctx.fill();
          a = b;
        }
        if (c.n > 1 && r >= 8) { ctx.fillStyle = "#ffffff"; ctx.fillText(c.n >= 1000 ? `${(c.n / 1000).toFixed(1)}k` : String(c.n), x, y); }
        this._clusters.push({ x, y, r, lat: c.lat / c.n, lon: c.lon / c.n, n: c.n });
        drawn += c.n;
      }
    } else {
      this._clusters = [];
      for (const s of drawOrder) {
        const p = m.latLngToContainerPoint([s.lat, s.lon]);
        if (p.x < -10 || p.y < -10 || p.x > size.x + 10 || p.y > size.y + 10) { continue; }
        const r = this.radius(zoom, s);
        ctx.beginPath();
        ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
        if (isStale(s)) {
          ctx.strokeStyle = "rgba(139,152,165,0.9)"; ctx.lineWidth = 1.5; ctx.stroke();
        } else {
          ctx.fillStyle = colour(s); ctx.fill();
        }
        xs[k] = p.x; ys[k] = p.y; rs[k] = r; keys.push(s.key); k += 1;
      }
      drawn = k;
    }
    if (selected && stations.has(selected)) {
      const s = stations.get(selected);
      if (s.lat !== null) {
        const p = m.latLngToContainerPoint([s.lat, s.lon]);
        ctx.beginPath(); ctx.arc(p.x, p.y, this.radius(zoom, s) + 4, 0, 2 * Math.PI);
        ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2; ctx.stroke();
      }
    }
    this._visible = { xs: xs.subarray(0, k), ys: ys.subarray(0, k), rs: rs.subarray(0, k), keys };
    document.body.setAttribute("data-stations-drawn", String(drawn));
    document.body.setAttribute("data-clusters", String(this._clusters.length));
    if (drawn > 0 && !performance.getEntriesByName("stations-painted").length) {
      performance.mark("stations-painted");
    }
  },
  // The cluster under a container point, at country and world scale.
  hitCluster(point) {
    for (const c of this._clusters || []) {
      const dx = c.x - point.x, dy = c.y - point.y;
      if (dx * dx + dy * dy <= (c.r + 2) * (c.r + 2)) { return c; }
    }
    return null;
  },
  // The station under a container point (the topmost, i.e. the riskiest, drawn last).
  hit(point) {
    const v = this._visible;
    for (let i = v.keys.length - 1; i >= 0; i -= 1) {
      const dx = v.xs[i] - point.x, dy = v.ys[i] - point.y, r = Math.max(v.rs[i] + 2, 6);
      if (dx * dx + dy * dy <= r * r) { return v.keys[i]; }
    }
    return null;
  },
});
const layer = new StationLayer();
layer.addTo(map);

function popupHtml(s) {
  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" })[c]);
  const newestEvent = newestEventBySystem.get(s.system);
  const age = s.lastReported !== null && newestEvent !== undefined ? ` (${duration((newestEvent - s.lastReported) / 1000)} before the system's newest report)` : "";
  const trend = s.trend === null ? "–" : `${s.trend > 0 ? "▲" : s.trend < 0 ? "▼" : ""} ${pct(Math.abs(s.trend))}`;
  // The key holds a NUL (system and id apart), which HTML attributes cannot carry: encoded.
  return `<div class="popup" data-key="${esc(encodeURIComponent(s.key))}"><h4>${esc(label(s))}</h4>
    <table>
    <tr><th>id</th><td>${esc(s.id)} <span class="note">${esc(s.system)}</span></td></tr>
    <tr><th>bikes / docks</th><td>${s.bikes ?? "–"} / ${s.docks ?? "–"} of ${s.capacity ?? "–"}</td></tr>
    <tr><th>p(empty)</th><td class="empty">${pct(s.pEmpty)}</td></tr>
    <tr><th>p(full)</th><td class="full">${pct(s.pFull)}</td></tr>
    <tr><th>trend</th><td>${trend}</td></tr>
    <tr><th>prediction as of</th><td>${utc(s.asOf)} UTC${isStale(s) ? " <b class=\"stale\">stale</b>" : ""}</td></tr>
    <tr><th>last report</th><td>${utc(s.lastReported)} UTC${age}</td></tr>
    </table>
    <button type="button" class="drill-open">details</button></div>`;
}
let popup = null;
function openPopup(key) {
  const s = stations.get(key);
  if (!s || s.lat === null) { return; }
  popup = L.popup({ maxWidth: 360 }).setLatLng([s.lat, s.lon]).setContent(popupHtml(s)).openOn(map);
  const el = popup.getElement();
  const b = el && el.querySelector(".drill-open");
  if (b) { b.addEventListener("click", () => openDrill(key)); }
}
map.on("click", (e) => {
  const key = layer.hit(e.containerPoint);
  if (key) { select(key, false); return; }
  const c = layer.hitCluster(e.containerPoint);
  if (c) { map.setView([c.lat, c.lon], Math.min(map.getZoom() + 3, CLUSTER_BELOW_ZOOM + 2)); }
});
map.on("mousemove", (e) => {
  map.getContainer().style.cursor = layer.hit(e.containerPoint) || layer.hitCluster(e.containerPoint) ? "pointer" : "";
});
$("fit").addEventListener("click", () => fitAll());

function fitAll() {
  const pts = [];
  for (const s of stations.values()) { if (s.lat !== null) { pts.push([s.lat, s.lon]); } }
  if (pts.length) { map.fitBounds(L.latLngBounds(pts).pad(0.05), { animate: false }); fitted = true; }
}

function select(key, fly) {
  const s = stations.get(key);
  if (!s) { return; }
  selected = key;
  if (fly && s.lat !== null) { map.setView([s.lat, s.lon], Math.max(map.getZoom(), 15), { animate: false }); }
  layer.redraw();
  openPopup(key);
  document.body.setAttribute("data-selected", key.replace("\u0000", "/"));
}

let drillDirty = false;
function applyStations(rows, full) {
  if (full) { stations.clear(); }
  for (const r of rows) {
    const s = fromRow(r);
    stations.set(s.key, s);
    if (s.key === drillKey) { drillDirty = true; }
  }
  // Neutral first, then by risk: the riskiest are drawn on top.
  drawOrder = Array.from(stations.values()).filter((s) => s.lat !== null && s.lon !== null);
  drawOrder.sort((a, b) => (a.risk ?? -1) - (b.risk ?? -1));
  if (!fitted && drawOrder.length) { fitAll(); }
  layer.redraw();
  if (popup && popup.isOpen()) {
    const attr = popup.getElement()?.querySelector(".popup")?.getAttribute("data-key");
    const key = attr ? decodeURIComponent(attr) : null;
    if (key && stations.has(key)) { popup.setContent(popupHtml(stations.get(key))); rebindPopup(key); }
  }
}
function rebindPopup(key) {
  const el = popup.getElement();
  const b = el && el.querySelector(".drill-open");
  if (b) { b.addEventListener("click", () => openDrill(key)); }
}

// --- search --------------------------------------------------------------------------
const searchBox = $("search");
const results = $("search-results");
function search(q) {
  q = q.trim().toLowerCase();
  if (!q) { return []; }
  const out = [];
  for (const s of stations.values()) {
    const name = (s.name || "").toLowerCase();
    if (s.id.toLowerCase() === q) { out.unshift(s); continue; }
    if (name.includes(q) || s.id.toLowerCase().includes(q)) { out.push(s); }
    if (out.length >= 200) { break; }
  }
  return out.slice(0, 12);
}
function showResults() {
  const found = search(searchBox.value);
  results.replaceChildren(...found.map((s, i) => {
    const li = document.createElement("li");
    li.setAttribute("role", "option");
    li.setAttribute("data-key", s.key);
    if (i === 0) { li.className = "active"; }
    li.textContent = `${label(s)} `;
    const small = document.createElement("small");
    small.textContent = `${s.id} · ${s.system} · ${s.risk === null ? "no prediction" : pct(s.risk)}`;
    li.appendChild(small);
    li.addEventListener("mousedown", (e) => { e.preventDefault(); pick(s.key); });
    return li;
  }));
}
function pick(key) {
  results.replaceChildren();
  searchBox.blur();
  select(key, true);
  openDrill(key);
}
searchBox.addEventListener("input", showResults);
searchBox.addEventListener("keydown", (e) => {
  if (e.key === "Enter") { const first = results.querySelector("li"); if (first) { pick(first.getAttribute("data-key")); } }
  if (e.key === "Escape") { results.replaceChildren(); }
});
searchBox.addEventListener("blur", () => setTimeout(() => results.replaceChildren(), 150));

// --- charts (uPlot) ------------------------------------------------------------------
const PALETTE = ["#6cb6ff", "#f0b429", "#57ab5a", "#e5534b", "#986ee2", "#39c5cf", "#dcbdfb", "#f69d50"];
const charts = {};
// Time axis labels in UTC, 24-hour, with the date where it changes.
function utcTicks(u, splits) {
  let lastDate = null;
  return splits.map((v) => {
    if (v === null) { return null; }
    const d = new Date(v * 1000);
    const date = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    const span = u.scales.x.max - u.scales.x.min;
    const time = span < 600 ? `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}` : `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    const out = date !== lastDate ? `${time}\n${date}` : time;
    lastDate = date;
    return out;
  });
}
function chart(id, names, columns, opts) {
  const el = $(id);
  if (!el) { return; }
  const width = Math.max(200, el.clientWidth || 300);
  const key = names.join("|");
  const c = charts[id];
  if (c && c.key === key && c.width === width) { c.plot.setData(columns); return; }
  if (c) { c.plot.destroy(); }
  const o = opts || {};
  const series = [{}].concat(names.map((n, i) => Object.assign({
    label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false,
  }, (o.series && o.series[i]) || {})));
  const plot = new uPlot({
    width, height: o.height || 150,
    series,
    scales: o.scales || { x: { time: o.time !== false } },
    axes: [
      { stroke: "#8b98a5", grid: { stroke: "#2d3640" }, ticks: { stroke: "#2d3640" }, ...(o.time === false ? {} : { values: utcTicks, size: 40 }) },
      { stroke: "#8b98a5", grid: { stroke: "#2d3640" }, ticks: { stroke: "#2d3640" }, size: 50 },
    ],
    legend: { live: false },
    cursor: { points: { size: 5 } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
  }, columns, el);
  charts[id] = { plot, key, width };
}

let history = [];
let historyAfter = null;
async function refreshHistory() {
  const q = historyAfter === null ? "" : `?after=${historyAfter}`;
  const fresh = await api(`/api/history${q}`);
  if (!fresh.length) { return; }
  history = history.concat(fresh);
  const keepMs = (config.history_hours || 6) * 3600 * 1000;
  const newest = history[history.length - 1].t;
  history = history.filter((s) => s.t >= newest - keepMs);
  historyAfter = newest;
  drawHistory();
}
function drawHistory() {
  const h = history;
  const t = h.map((s) => s.t / 1000);
  setText("history-span", h.length > 1 ? duration((h[h.length - 1].t - h[0].t) / 1000) : "–");
  chart("chart-throughput", ["events", "predictions"], [t, h.map((s) => s.events_per_s), h.map((s) => s.predictions_per_s)]);
  const shards = [...new Set(h.flatMap((s) => Object.keys(s.shard_lag_ms)))].sort();
  const lagNames = shards.length ? shards : ["behind latest"];
  chart("chart-lag", lagNames, [t].concat(shards.length
    ? shards.map((k) => h.map((s) => s.shard_lag_ms[k] ?? null))
    : [h.map((s) => s.millis_behind_latest)]));
  chart("chart-latency", ["p50", "p99"], [t, h.map((s) => s.latency_p50_ms), h.map((s) => s.latency_p99_ms)]);
  const causes = [...new Set(h.flatMap((s) => Object.keys(s.dead_letters)))].sort();
  const perMin = (k) => h.map((s, i) => {
    if (i === 0) { return null; }
    const dt = (s.t - h[i - 1].t) / 60000;
    return dt > 0 ? Math.max(0, ((s.dead_letters[k] || 0) - (h[i - 1].dead_letters[k] || 0)) / dt) : null;
  });
  chart("chart-dead", causes.length ? causes : ["none"], [t].concat(causes.length ? causes.map(perMin) : [h.map(() => 0)]));
  const targets = [...new Set(h.flatMap((s) => Object.keys(s.quality)))].sort();
  const q = (k, f) => h.map((s) => {
    const p = s.quality[k];
    return p && p.positives >= config.min_positives ? p[f] : null;
  });
  chart("chart-prauc", targets.length ? targets : ["none"], [t].concat(targets.length ? targets.map((k) => q(k, "pr_auc")) : [h.map(() => null)]));
  chart("chart-logloss", targets.length ? targets : ["none"], [t].concat(targets.length ? targets.map((k) => q(k, "log_loss")) : [h.map(() => null)]));
}

function drawCalibration(quality) {
  const first = quality[0];
  if (!first) { return; }
  const xs = [], empty = [], full = [], diag = [];
  const bins = (b) => b.count > 0 ? b.observed_rate : null;
  for (let i = 0; i < first.report.empty.reliability.length; i += 1) {
    const b = first.report.empty.reliability[i];
    xs.push((b.lower + b.upper) / 2);
    empty.push(bins(b));
    full.push(bins(first.report.full.reliability[i]));
    diag.push((b.lower + b.upper) / 2);
  }
  chart("chart-calibration", [`${first.system_id} empty`, `${first.system_id} full`, "perfect"], [xs, empty, full, diag], {
    time: false,
    scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
    series: [
      { stroke: "#e5534b", points: { show: true, size: 6 } },
      { stroke: "#986ee2", points: { show: true, size: 6 } },
      { stroke: "#5c6873", dash: [4, 4], points: { show: false } },
    ],
  });
}

// --- drill-down ----------------------------------------------------------------------
let drillKey = null;
async function openDrill(key) {
  drillKey = key;
  $("drill").hidden = false;
  await refreshDrill();
  $("drill").scrollIntoView({ block: "nearest" });
}
$("drill-close").addEventListener("click", () => { drillKey = null; $("drill").hidden = true; });
async function refreshDrill() {
  if (!drillKey) { return; }
  const [system, id] = drillKey.split("\u0000");
  const d = await api(`/api/station?system=${encodeURIComponent(system)}&id=${encodeURIComponent(id)}`);
  const s = fromRow(d.station);
  setText("drill-title", `${label(s)} (${s.id}, ${s.system})`);
  setText("drill-facts", `bikes ${s.bikes ?? "–"} · docks ${s.docks ?? "–"} · capacity ${s.capacity ?? "–"} · p(empty) ${pct(s.pEmpty)} · p(full) ${pct(s.pFull)} · prediction as of ${utc(s.asOf)} UTC${d.stale ? " · STALE" : ""} · last report ${utc(s.lastReported)} UTC · ${d.predictions.filter((p) => p.went_empty !== null).length} of ${d.predictions.length} predictions labelled`);
  // Reports come on change: the last one holds until the system's newest event.
  const reports = d.reports.slice();
  const until = Math.max(newestEventBySystem.get(s.system) || 0, s.asOf || 0);
  if (reports.length && until > reports[reports.length - 1].t) {
    reports.push(Object.assign({}, reports[reports.length - 1], { t: until }));
  }
  chart("drill-bikes", ["bikes", "docks"], [reports.map((r) => r.t / 1000), reports.map((r) => r.bikes), reports.map((r) => r.docks)], {
    series: [{ paths: uPlot.paths.stepped({ align: 1 }) }, { paths: uPlot.paths.stepped({ align: 1 }) }],
  });
  const t = d.predictions.map((p) => p.as_of / 1000);
  chart("drill-risk", ["p(empty)", "p(full)", "went empty", "went full"], [
    t,
    d.predictions.map((p) => p.p_empty),
    d.predictions.map((p) => p.p_full),
    d.predictions.map((p) => p.went_empty === null ? null : (p.went_empty ? 1 : 0)),
    d.predictions.map((p) => p.went_full === null ? null : (p.went_full ? 1 : 0)),
  ], {
    scales: { x: { time: true }, y: { range: [0, 1] } },
    series: [
      { stroke: "#e5534b" }, { stroke: "#986ee2" },
      { stroke: "#e5534b", width: 0, points: { show: true, size: 5, fill: "#e5534b" } },
      { stroke: "#986ee2", width: 0, points: { show: true, size: 5, fill: "#986ee2" } },
    ],
  });
  $("neighbours").tBodies[0].replaceChildren(...d.neighbours.map((n) => {
    const ns = fromRow(n.station);
    return row([[label(ns)], [ns.id], [n.distance_m >= 1000 ? `${(n.distance_m / 1000).toFixed(1)} km` : `${n.distance_m} m`], [pct(ns.risk)], [ns.bikes ?? "–"], [ns.docks ?? "–"]],
      { onclick: () => { select(ns.key, true); openDrill(ns.key); } });
  }));
  document.body.setAttribute("data-drill", drillKey.replace("\u0000", "/"));
}

// --- panels --------------------------------------------------------------------------
function trendCell(t) {
  if (t === null || Math.abs(t) < 0.0005) { return ["–"]; }
  return [(t > 0 ? "▲ " : "▼ ") + pct(Math.abs(t)), t > 0 ? "up" : "down"];
}

function renderModelHealth(m) {
  $("mh-model").textContent = m.model ? `${m.model.name} v${m.model.version}` : "–";
  const by = Object.entries(m.scored_by).map(([k, v]) => `${k} ${v}`).join(", ");
  $("mh-scored-by").textContent = by || "–";
  const rows = [];
  let unreliable = 0;
  for (const q of m.quality) {
    // "new": the rows where the station was not already empty (full) at as_of, which
    // persistence cannot predict; shown when the report has them.
    const targets = [["empty", q.report.empty], ["full", q.report.full]];
    if (q.report.new_empty && q.report.new_empty.labelled) { targets.push(["new empty", q.report.new_empty]); }
    if (q.report.new_full && q.report.new_full.labelled) { targets.push(["new full", q.report.new_full]); }
    for (const [target, t] of targets) {
      const few = t.positives < m.min_positives;
      unreliable += few ? 1 : 0;
      rows.push(row([[q.system_id], [target], [t.labelled], [t.positives], [fmt(t.roc_auc, 3)], [fmt(t.pr_auc, 3)], [fmt(t.log_loss, 4)], [fmt(t.brier, 4)], [fmt(t.ece, 4)]],
        few ? { cls: "unreliable" } : undefined));
    }
  }
  $("quality").tBodies[0].replaceChildren(...rows);
  setText("mh-note", unreliable ? `greyed: fewer than ${m.min_positives} positives in the window, too few for these figures to mean much` : "");
  $("mh-window").textContent = m.quality.length ? `${(m.quality[0].report.window_ms / 3600000).toFixed(1)} h` : "–";
  $("mh-source").textContent = m.quality_source;
  drawCalibration(m.quality);
  const d = m.drift;
  if (d) {
    $("drift-violations").textContent = `${d.violations.length} violation(s) in ${d.rows} rows`;
    $("drift-violations").className = d.violations.length ? "bad" : "";
    $("drift-when").textContent = `window ending ${d.window_end.slice(0, 19).replace("T", " ")} UTC`;
    const violated = new Set(d.violations.map((v) => v.feature_name));
    $("drift").tBodies[0].replaceChildren(...d.top.map(([f, dist]) => row([[f], [dist.toFixed(3), violated.has(f) ? "bad" : ""], [violated.has(f) ? "violation" : ""]])));
  }
}

function renderSystemHealth(h) {
  $("sh-events").textContent = h.events_per_s.toFixed(1);
  $("sh-predictions").textContent = h.predictions_per_s.toFixed(1);
  $("sh-lag").textContent = h.millis_behind_latest === null ? "–" : ms(h.millis_behind_latest);
  $("sh-watermark-time").textContent = h.watermark_ms === null ? "–" : `${utc(h.watermark_ms)} UTC`;
  $("sh-watermark").textContent = duration(h.watermark_lag_s);
  $("sh-proc-p50").textContent = h.processing_latency_ms ? ms(h.processing_latency_ms.p50) : "–";
  $("sh-proc-p99").textContent = h.processing_latency_ms ? ms(h.processing_latency_ms.p99) : "–";
  $("sh-inf-p50").textContent = h.inference_latency_us ? us(h.inference_latency_us.p50) : "–";
  $("sh-inf-p99").textContent = h.inference_latency_us ? us(h.inference_latency_us.p99) : "–";
  $("sh-dead").textContent = h.dead_letters_total;
  $("sh-fallbacks").textContent = h.fallbacks;
  $("sh-unavailable").textContent = h.unavailable;
  $("dead-letters").tBodies[0].replaceChildren(...Object.entries(h.dead_letters).map(([k, v]) => row([[k], [v]])));
  $("pred-age").textContent = h.last_prediction_age_s === null ? "–" : duration(h.last_prediction_age_s);
}

function renderOps(o) {
  const m = o.mode;
  const speed = m.speed !== null && m.mode === "catching_up" && m.speed > 1.5 ? ` at ${m.speed.toFixed(0)}× real time` : "";
  setText("mode", MODE_TEXT[m.mode] + speed, `badge ${m.mode}`);
  setText("ops-mode", MODE_TEXT[m.mode] + speed);
  const p = o.process;
  setText("ops-uptime", duration(p.uptime_s));
  setText("ops-started", `${utc(Date.parse(p.started_at))} UTC`);
  setText("ops-restarts", p.job ? `${p.job.restarts}${p.job.previous_start_ms ? ` (previous start ${utc(p.job.previous_start_ms)} UTC)` : ""}` : "–");
  setText("ops-checkpoint", o.checkpoint_age_s === null ? "– (no processor in this process)" : duration(o.checkpoint_age_s));
  const links = [];
  if (p.metrics_url) { links.push([p.metrics_url, "/metrics"]); }
  links.push([p.grafana_url, "Grafana dashboard JSON"]);
  $("ops-links").replaceChildren(...links.flatMap(([href, text], i) => {
    const a = document.createElement("a");
    a.href = href; a.textContent = text; a.target = "_blank"; a.rel = "noopener";
    return i ? [document.createTextNode(" · "), a] : [a];
  }));
  $("shards").tBodies[0].replaceChildren(...o.shards.map((s) => row([[s.stream], [s.shard], [ms(s.millis_behind_latest)], [duration(s.iterator_age_s)]])));
  const a = o.alerts;
  setText("alerts-note", !o.alert_rules.length && !a.seen ? "(no alert engine in this process)" : `${a.firing.length} firing of ${o.alert_rules.length} rules`);
  $("alerts-firing").tBodies[0].replaceChildren(...a.firing.map((e) => row([[e.severity || "–", `sev-${e.severity}`], [e.rule], [utc(e.started_ms)], [(e.summary || "").replace(/\{(\w+)\}/g, "‹$1›")]])));
  setText("alerts-recent-count", String(a.recent.length));
  $("alerts-recent").tBodies[0].replaceChildren(...a.recent.map((e) => row([[e.rule], [utc(e.started_ms)], [utc(e.resolved_ms)]])));
}

let updates = 0;
function render(st) {
  staleAfterMs = st.stale_after_s * 1000;
  for (const s of st.systems) {
    if (s.newest_prediction_ms !== null) { newestBySystem.set(s.system_id, s.newest_prediction_ms); }
    newestEventBySystem.set(s.system_id, s.newest_report_ms ?? Date.parse(s.newest_event_time));
  }
  applyStations(st.stations, st.full);
  const model = st.model_health.model;
  $("model").textContent = model ? `${model.name} v${model.version}` : "–";
  $("n-stations").textContent = st.stations_total;
  $("pred-rate").textContent = Math.round(st.system_health.predictions_per_s * 60);
  $("event-rate").textContent = Math.round(st.system_health.events_per_s * 60);
  $("updated").textContent = `${utc(Date.parse(st.generated_at))} UTC`;
  const top = st.top.map(fromRow);
  $("top").replaceChildren(...top.map((s) => row([
    [label(s)], [s.id],
    [`${pct(s.risk)} ${s.pEmpty >= s.pFull ? "empty" : "full"}`, s.pEmpty >= s.pFull ? "empty" : "full"],
    trendCell(s.trend),
    [utc(s.asOf)],
  ], { onclick: () => { select(s.key, true); openDrill(s.key); } })));
  setText("stale-count", String(st.stale_total));
  setText("stale-after", duration(st.stale_after_s));
  $("stale").tBodies[0].replaceChildren(...st.stale.map(fromRow).map((s) => row([[label(s)], [s.id], [utc(s.asOf)], [utc(s.lastReported)]],
    { onclick: () => { select(s.key, true); openDrill(s.key); } })));
  renderModelHealth(st.model_health);
  renderSystemHealth(st.system_health);
  renderOps(st.ops);
  $("feeds").tBodies[0].replaceChildren(...st.feeds.map((f) => row([
    [f.system_id], [f.feed], [f.newest_event_time.slice(0, 19).replace("T", " ")],
    [duration(f.age_s), f.stale ? "stale" : ""], [duration(f.period_s)], [f.events],
  ])));
  updates += 1;
  let newest = -Infinity;
  for (const s of stations.values()) { if (s.asOf !== null && s.asOf > newest) { newest = s.asOf; } }
  if (newest > -Infinity) {
    const iso = new Date(newest).toISOString();
    if (!document.body.hasAttribute("data-first-newest")) { document.body.setAttribute("data-first-newest", iso); }
    document.body.setAttribute("data-newest", iso);
  }
  if (updates === 1) { openFromLink(top); }
  document.body.setAttribute("data-version", String(st.version));
  document.body.setAttribute("data-updates", String(updates));
}

// A link can open a station: `#station=<system>/<id>`, or `#station=riskiest`.
function openFromLink(top) {
  const want = new URLSearchParams(location.hash.slice(1)).get("station");
  if (!want) { return; }
  let key = null;
  if (want === "riskiest") {
    key = top.length ? top[0].key : null;
  } else {
    const i = want.indexOf("/");
    key = i > 0 ? keyOf(want.slice(0, i), want.slice(i + 1)) : null;
  }
  if (key && stations.has(key)) { select(key, want !== "riskiest"); openDrill(key); }
}

// --- the loop: long polls with the version held, so only changed stations come back -----
let version = null;
async function refresh() {
  let delay = 1000;
  try {
    const q = version === null ? "" : `?since=${version}&wait_ms=10000`;
    const st = await api(`/api/state${q}`);
    render(st);
    version = st.version;
    await refreshHistory();
    if (drillKey && drillDirty) { drillDirty = false; await refreshDrill(); }
  } catch (e) {
    $("updated").textContent = "offline";
    delay = 3000;
  }
  setTimeout(refresh, delay);
}

async function start() {
  try {
    Object.assign(config, await api("/api/config"));
  } catch (e) {
    // Defaults keep the page usable; the state poll reports "offline" if the server is gone.
  }
  $("legend-neutral").textContent = `${(100 * config.risk_neutral_below).toFixed(0)} %`;
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { maxZoom: config.tile_max_zoom, attribution: config.tile_attribution }).addTo(map);
    map.setMaxZoom(config.tile_max_zoom);
  } else {
    $("map-note").textContent = "No base map: set [dashboard] tile_url to a tile server you may use (see the README).";
  }
  refresh();
}

// For tests and people with a console: the map, the stations, and where one is on screen.
window.dashboard = {
  map, stations, layer, select, openDrill, search,
  stationPoint(key) {
    const s = stations.get(key);
    if (!s || s.lat === null) { return null; }
    const p = map.latLngToContainerPoint([s.lat, s.lon]);
    const r = map.getContainer().getBoundingClientRect();
    return { x: r.left + p.x, y: r.top + p.y };
  },
};
start();
