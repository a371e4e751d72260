// The request history: `GET /v1/models/requests/by-endpoint?expand=payloads` with its search, page by page, and the
// last 24 hours' spend and savings from `GET /v1/models/usage?expand=summary`. Each row's payloads can be deleted.
import { authHeaders, el, formatDuration, formatNumber, sameOriginMedia, setUpKeyForm, toast } from "/ui/common.js";

const $ = (id) => document.getElementById(id);
let cursor = null;
// Each new search outdates the pages still on their way: only the latest one's answer is shown.
let generation = 0;

function money(amount, currency = "USD") {
  if (!Number.isFinite(amount)) return "unknown";
  return `${currency === "USD" ? "$" : currency + " "}${formatNumber(amount, amount < 1 ? 3 : 2)}`;
}

function inputText(input) {
  if (!input) return "(not kept)";
  const text = input.prompt ?? input.text ?? JSON.stringify(input);
  return String(text).length > 90 ? String(text).slice(0, 90) + "…" : String(text);
}

/** The first media URL of an output, as a link target: http(s) or a same-origin path only, never `javascript:`. */
function firstMedia(output) {
  const file = output?.images?.[0] ?? output?.image ?? output?.video ?? output?.audio;
  if (typeof file?.url !== "string") return null;
  const url = sameOriginMedia(file.url);
  return (url.startsWith("/") && !url.startsWith("//")) || /^https?:\/\//i.test(url) ? url : null;
}

async function fetchJSON(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers ?? {}) });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body?.error?.message ?? body?.detail ?? `HTTP ${response.status}`);
  return body;
}

function row(item) {
  const charge = item.cost !== undefined ? money(item.cost, item.currency)
    : item.saved !== undefined ? `saved ${money(item.saved, item.currency)}` : "–";
  const media = firstMedia(item.json_output);
  const remove = el("button", { type: "button", class: "small", title: "Delete this request's input, output and media",
    onclick: async () => {
      try {
        await fetchJSON(`/v1/models/requests/${encodeURIComponent(item.request_id)}/payloads`, { method: "DELETE" });
        toast("Payloads deleted");
        search();
      } catch (error) {
        toast(`Not deleted: ${error.message}`);
      }
    } }, "Delete");
  return el("tr", { dataset: { requestId: item.request_id } },
    el("td", {}, item.ended_at ? new Date(item.ended_at).toLocaleString() : "in flight"),
    el("td", {}, item.endpoint_id),
    el("td", { class: "prompt" }, media ? el("a", { href: media, target: "_blank", rel: "noopener" }, inputText(item.json_input)) : inputText(item.json_input)),
    el("td", {}, el("span", { class: `badge sw-${item.cache}` }, item.cache)),
    el("td", {}, item.status_code ?? "–"),
    el("td", {}, Number.isFinite(item.duration) ? formatDuration(item.duration) : "–"),
    el("td", {}, charge),
    el("td", {}, item.payloads_deleted ? "deleted" : remove));
}

async function load(append) {
  const mine = append ? generation : ++generation;
  const form = new FormData($("search"));
  const query = new URLSearchParams({ expand: "payloads", limit: "50", start: new Date(Date.now() - 30 * 86400e3).toISOString() });
  for (const name of ["q", "status"]) if (form.get(name)) query.set(name, form.get(name));
  if (append && cursor) query.set("cursor", cursor);
  try {
    const page = await fetchJSON(`/v1/models/requests/by-endpoint?${query}`);
    if (mine !== generation) return;
    if (!append) $("rows").replaceChildren();
    $("rows").append(...page.items.map(row));
    cursor = page.next_cursor;
    $("more").hidden = !page.has_more;
    $("empty").hidden = $("rows").children.length > 0;
  } catch (error) {
    if (mine !== generation) return;
    toast(`History: ${error.message}`);
  }
}

async function loadUsage() {
  try {
    const usage = await fetchJSON("/v1/models/usage?expand=summary");
    let spent = 0, saved = 0, unknown = 0, runs = 0, reused = 0;
    for (const line of usage.summary ?? []) {
      if (line.unit_price === null) unknown += 1;
      spent += line.cost ?? 0;
      saved += line.saved_cost ?? 0;
      runs += line.requests;
      reused += line.saved_requests;
    }
    $("v-spent").textContent = money(spent);
    $("s-spent").textContent = `${runs} generations` + (unknown ? ` · ${unknown} models without a known price` : "");
    $("v-saved").textContent = money(saved);
    $("s-saved").textContent = `${reused} requests served without a generation`;
  } catch (error) {
    toast(`Usage: ${error.message}`);
  }
}

function search() {
  cursor = null;
  load(false);
  loadUsage();
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
$("more").addEventListener("click", () => load(true));
setUpKeyForm(search);
search();
