// The dashboard's spend panel: what generations cost upstream and what the cache saved over the last 24 hours, per
// hour, per model and per key, from `GET /v1/models/usage` (a key's own usage; an admin key's: everyone's).
import { authHeaders, apiKey, el, formatNumber } from "/ui/common.js";

const $ = (id) => document.getElementById(id);
let timer = null;
// Only the latest refresh's answer is shown (a key change starts a new one while another is on its way).
let generation = 0;

function money(amount) {
  return Number.isFinite(amount) ? `$${formatNumber(amount, amount < 10 ? 3 : 2)}` : "–";
}

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Spent and saved per hour as paired bars. */
function drawHours(canvas, hours) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(0.001, ...hours.map((h) => Math.max(h.spent, h.saved)));
  const slot = width / Math.max(1, hours.length);
  hours.forEach((hour, index) => {
    for (const [offset, value, color] of [[0, hour.spent, "--miss"], [0.5, hour.saved, "--hit"]]) {
      const barHeight = (height - 4) * (value / max);
      ctx.fillStyle = cssColor(color);
      ctx.fillRect(index * slot + offset * slot * 0.9, height - barHeight, slot * 0.42, barHeight);
    }
  });
  canvas.dataset.hours = String(hours.length);
}

function table(body, rows) {
  body.replaceChildren(...rows.slice(0, 5).map(([name, spent, saved]) =>
    el("tr", {}, el("td", {}, name), el("td", {}, money(spent)), el("td", {}, money(saved)))));
}

function totals(lines, nameOf) {
  const byName = new Map();
  for (const line of lines) {
    const entry = byName.get(nameOf(line)) ?? [nameOf(line), 0, 0];
    entry[1] += line.cost ?? 0;
    entry[2] += line.saved_cost ?? 0;
    byName.set(entry[0], entry);
  }
  return [...byName.values()].sort((a, b) => b[1] + b[2] - (a[1] + a[2]));
}

export async function refreshSpend() {
  const mine = ++generation;
  clearTimeout(timer);
  timer = setTimeout(refreshSpend, 30000);
  const panel = $("spend");
  if (!panel) return;
  if (!apiKey()) {
    panel.dataset.state = "no-key";
    $("spend-hint").textContent = "Paste an API key above to see its spend (an admin key sees every key's).";
    return;
  }
  const query = new URLSearchParams({ timeframe: "hour", expand: "time_series,summary,auth_method" });
  try {
    const response = await fetch(`/v1/models/usage?${query}`, { headers: authHeaders() });
    const usage = await response.json();
    if (mine !== generation) return;
    if (!response.ok) throw new Error(usage?.error?.message ?? usage?.detail ?? `HTTP ${response.status}`);
    const hours = (usage.time_series ?? []).map((bucket) => ({
      spent: bucket.results.reduce((sum, line) => sum + (line.cost ?? 0), 0),
      saved: bucket.results.reduce((sum, line) => sum + (line.saved_cost ?? 0), 0),
    }));
    const summary = usage.summary ?? [];
    const spent = summary.reduce((sum, line) => sum + (line.cost ?? 0), 0);
    const saved = summary.reduce((sum, line) => sum + (line.saved_cost ?? 0), 0);
    $("v-spent").textContent = money(spent);
    $("v-saved").textContent = money(saved);
    $("v-spent").dataset.value = String(spent);
    $("v-saved").dataset.value = String(saved);
    table($("top-models"), totals(summary, (line) => line.endpoint_id));
    table($("top-keys"), totals(summary, (line) => line.key_id ?? "anonymous"));
    drawHours($("c-spend"), hours);
    panel.dataset.state = "ready";
    $("spend-hint").textContent = "At the catalog's prices; models whose price is unknown count as nothing.";
  } catch (error) {
    if (mine !== generation) return;
    panel.dataset.state = "error";
    $("spend-hint").textContent = `Spend not available: ${error.message}`;
  }
}
