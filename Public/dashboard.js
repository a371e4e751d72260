// The dashboard: `/relay/stats/stream` sends a snapshot of totals each second; rates and ratios are computed here
// and drawn on canvases (two minutes of history, no library).
import { el, formatBytes, formatDuration, formatNumber, setUpKeyForm } from "/ui/common.js";
import { refreshSpend } from "/ui/spend.js";

const WINDOW = 120;
const $ = (id) => document.getElementById(id);

/** One point per snapshot: rates over the interval since the previous snapshot, gauges as they are. */
const history = [];
let previous = null;

const CHARTS = {
  rate: { canvas: "c-rate", legend: "l-rate", series: [
    { key: "rps", label: "HTTP requests", color: "--accent", swatch: "sw-accent" },
    { key: "sps", label: "Submissions", color: "--warn", swatch: "sw-warn" },
  ], format: (v) => formatNumber(v, v > 0 && v < 1 ? 2 : v < 10 ? 1 : 0) },
  outcomes: { canvas: "c-outcomes", legend: "l-outcomes", stacked: true, series: [
    { key: "hitRate", label: "Hit", color: "--hit", swatch: "sw-hit" },
    { key: "coalescedRate", label: "Coalesced", color: "--coalesced", swatch: "sw-coalesced" },
    { key: "missRate", label: "Miss", color: "--miss", swatch: "sw-miss" },
    { key: "bypassRate", label: "Bypass", color: "--bypass", swatch: "sw-bypass" },
  ], format: (v) => formatNumber(v, v > 0 && v < 1 ? 2 : v < 10 ? 1 : 0) },
  jobs: { canvas: "c-jobs", legend: "l-jobs", series: [
    { key: "inFlight", label: "Jobs in flight", color: "--accent", swatch: "sw-accent" },
    { key: "watchers", label: "Watchers (SSE + WebSocket)", color: "--ok", swatch: "sw-ok" },
  ], minMax: 4, format: (v) => formatNumber(v) },
  conns: { canvas: "c-conns", legend: "l-conns", stacked: true, series: [
    { key: "http1", label: "HTTP/1", color: "--accent", swatch: "sw-accent" },
    { key: "http2", label: "HTTP/2", color: "--coalesced", swatch: "sw-coalesced" },
    { key: "websocket", label: "WebSocket", color: "--ok", swatch: "sw-ok" },
  ], minMax: 4, format: (v) => formatNumber(v) },
  store: { canvas: "c-store", legend: "l-store", series: [
    { key: "storeBytes", label: "Bytes stored", color: "--hit", swatch: "sw-hit" },
  ], format: formatBytes },
};

function number(value) {
  return Number.isFinite(value) ? value : 0;
}

function point(snapshot, now) {
  const subs = snapshot.submissions || {};
  const open = snapshot.connections?.open || {};
  const watchers = snapshot.watchers || {};
  const p = {
    time: now,
    totals: {
      http: number(snapshot.http_requests),
      submissions: number(subs.total),
      hit: number(subs.hit),
      coalesced: number(subs.coalesced),
      miss: number(subs.miss),
      bypass: number(subs.bypass),
    },
    inFlight: number(snapshot.upstream?.jobs_in_flight),
    watchers: number(watchers.sse) + number(watchers.websocket),
    http1: number(open.http1),
    http2: number(open.http2),
    websocket: number(open.websocket),
    storeBytes: number(snapshot.store?.bytes),
    rps: 0, sps: 0, hitRate: 0, coalescedRate: 0, missRate: 0, bypassRate: 0,
  };
  // A counter that went down means the relay restarted: that interval has no rate.
  if (previous && previous.time < now && Object.keys(p.totals).every((k) => p.totals[k] >= previous.totals[k])) {
    const seconds = (now - previous.time) / 1000;
    const rate = (k) => (p.totals[k] - previous.totals[k]) / seconds;
    p.rps = rate("http");
    p.sps = rate("submissions");
    p.hitRate = rate("hit");
    p.coalescedRate = rate("coalesced");
    p.missRate = rate("miss");
    p.bypassRate = rate("bypass");
  }
  return p;
}

function setValue(id, value, text, sub) {
  const node = $(`v-${id}`);
  node.dataset.value = String(value);
  node.textContent = text;
  if (sub !== undefined) $(`s-${id}`).textContent = sub;
}

function render(snapshot, p) {
  const subs = snapshot.submissions || {};
  const upstream = snapshot.upstream || {};
  const dedup = snapshot.dedup || {};
  const conns = snapshot.connections || {};
  const open = conns.open || {};
  const watchers = snapshot.watchers || {};
  $("uptime").textContent = `up ${formatDuration(number(snapshot.uptime_seconds))}`;
  setValue("rps", p.rps, formatNumber(p.rps, 1), `${formatNumber(number(snapshot.http_requests))} requests in total`);
  setValue("sps", p.sps, formatNumber(p.sps, 1), `${formatNumber(number(subs.total))} submissions in total`);
  $("v-sps").dataset.total = String(number(subs.total));
  setValue("inflight", number(upstream.jobs_in_flight), formatNumber(number(upstream.jobs_in_flight)),
    `${formatNumber(number(upstream.jobs_started))} started · ${formatNumber(number(upstream.errors))} errors`);
  setValue("avoided", number(dedup.upstream_jobs_avoided), `${formatNumber(number(dedup.upstream_jobs_avoided))} jobs`,
    `${formatDuration(number(dedup.gpu_seconds_saved))} of GPU time saved`);
  setValue("store", number(snapshot.store?.bytes), formatBytes(number(snapshot.store?.bytes)), "on disk, as of the last store sweep (every 30 s)");
  const openTotal = number(open.http1) + number(open.http2) + number(open.websocket);
  setValue("conns", openTotal, formatNumber(openTotal),
    `h1 ${number(open.http1)} · h2 ${number(open.http2)} · ws ${number(open.websocket)} · ${formatNumber(number(conns.accepted))} accepted · ${formatNumber(number(conns.refused))} refused`);
  setValue("watchers", number(watchers.sse) + number(watchers.websocket), formatNumber(number(watchers.sse) + number(watchers.websocket)),
    `SSE ${number(watchers.sse)} · WebSocket ${number(watchers.websocket)}`);

  const total = number(subs.total) || ["hit", "coalesced", "miss", "bypass"].reduce((sum, k) => sum + number(subs[k]), 0);
  const bar = $("ratio-bar").children;
  ["hit", "coalesced", "miss", "bypass"].forEach((kind, index) => {
    const share = total ? number(subs[kind]) / total : 0;
    bar[index].style.width = `${(share * 100).toFixed(2)}%`;
    const cell = $(`r-${kind}`);
    cell.dataset.value = String(number(subs[kind]));
    cell.textContent = total ? `${(share * 100).toFixed(1)}% (${formatNumber(number(subs[kind]))})` : "–";
  });
  $("ratio-bar").setAttribute("aria-label", ["hit", "coalesced", "miss", "bypass"].map((k) => `${k} ${$(`r-${k}`).textContent}`).join(", "));
  drawAll();
}

// MARK: - Charts

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function drawChart(chart) {
  const canvas = $(chart.canvas);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 52, right: 8, top: 8, bottom: 18 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const points = history.slice(-WINDOW);
  const stackOf = (p, upTo) => chart.series.slice(0, upTo + 1).reduce((sum, s) => sum + p[s.key], 0);
  let max = 0;
  for (const p of points) {
    max = Math.max(max, chart.stacked ? stackOf(p, chart.series.length - 1) : Math.max(...chart.series.map((s) => p[s.key])));
  }
  max = Math.max(niceMax(max), chart.minMax || 0);

  const muted = cssColor("--muted");
  const border = cssColor("--border");
  ctx.font = `11px ${getComputedStyle(document.body).fontFamily}`;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + plotH - (plotH * i) / 4;
    ctx.strokeStyle = border;
    ctx.beginPath();
    ctx.moveTo(pad.left, Math.round(y) + 0.5);
    ctx.lineTo(width - pad.right, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.fillText(chart.format((max * i) / 4), pad.left - 6, y);
  }
  ctx.textAlign = "left";
  ctx.fillText(`−${WINDOW} s`, pad.left, height - 7);
  ctx.textAlign = "right";
  ctx.fillText("now", width - pad.right, height - 7);
  if (points.length < 2) return;

  const x = (index) => pad.left + plotW - ((points.length - 1 - index) / (WINDOW - 1)) * plotW;
  const y = (value) => pad.top + plotH - (value / max) * plotH;
  chart.series.forEach((series, index) => {
    const color = cssColor(series.color);
    const top = (p) => (chart.stacked ? stackOf(p, index) : p[series.key]);
    const bottom = (p) => (chart.stacked && index > 0 ? stackOf(p, index - 1) : 0);
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(i), y(top(p))) : ctx.moveTo(x(i), y(top(p)))));
    for (let i = points.length - 1; i >= 0; i -= 1) ctx.lineTo(x(i), y(bottom(points[i])));
    ctx.closePath();
    ctx.globalAlpha = chart.stacked ? 0.55 : 0.14;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(x(i), y(top(p))) : ctx.moveTo(x(i), y(top(p)))));
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.8;
    ctx.stroke();
  });
  canvas.dataset.points = String(points.length);
}

function drawAll() {
  const last = history[history.length - 1];
  for (const chart of Object.values(CHARTS)) {
    drawChart(chart);
    if (last) {
      $(chart.legend).replaceChildren(...chart.series.map((s) => el("li", { class: s.swatch }, `${s.label} `, el("strong", {}, chart.format(last[s.key])))));
    }
  }
}

// MARK: - Feed

function connect() {
  const live = $("live");
  const source = new EventSource("/relay/stats/stream");
  source.onopen = () => {
    live.dataset.live = "true";
    live.textContent = "Live";
  };
  source.onmessage = (event) => {
    let snapshot;
    try {
      snapshot = JSON.parse(event.data);
    } catch {
      return;
    }
    const p = point(snapshot, performance.now());
    previous = p;
    history.push(p);
    if (history.length > WINDOW) history.shift();
    live.dataset.live = "true";
    live.textContent = "Live";
    render(snapshot, p);
  };
  source.onerror = () => {
    // EventSource reconnects by itself; say so meanwhile.
    live.dataset.live = "false";
    live.textContent = source.readyState === EventSource.CLOSED ? "Disconnected" : "Reconnecting…";
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  };
}

setUpKeyForm(refreshSpend);
refreshSpend();
new ResizeObserver(drawAll).observe(document.querySelector(".charts"));
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", drawAll);
drawAll();
connect();
