// Shared by the playground and the dashboard: the API key field, authorised fetch, an SSE reader over fetch
// (EventSource cannot send an Authorization header), and small formatting helpers.

const KEY_ITEM = "media-relay.key";

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch {
    return "";
  }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
  } catch {
    // Storage disabled: the key lives only as long as the field's value.
  }
}

/** Headers for the relay's fal API: `Authorization: Key …` when a key is set, none for the anonymous tier. */
export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Key ${key}` } : { ...extra };
}

/** Wires the key form in the top bar: save to sessionStorage, clear, and show which tier requests use. */
export function setUpKeyForm(onChange = () => {}) {
  const form = document.getElementById("key-form");
  if (!form) return;
  const input = document.getElementById("api-key");
  const tier = document.getElementById("tier");
  const clear = document.getElementById("key-clear");
  const render = () => {
    const key = apiKey();
    tier.dataset.tier = key ? "key" : "anonymous";
    tier.textContent = key ? `Key …${key.slice(-4)}` : "Anonymous tier";
    tier.title = key ? "Requests carry Authorization: Key (kept in this tab's sessionStorage)" : "No key: requests use the rate-limited anonymous tier";
    clear.hidden = !key;
    input.value = "";
    input.placeholder = key ? "Key saved for this tab" : "Paste an API key (optional)";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    storeKey(key);
    render();
    onChange();
  });
  clear.addEventListener("click", () => {
    storeKey("");
    render();
    onChange();
  });
  render();
}

/**
 * Reads a `text/event-stream` response body and calls `onEvent(data, id)` with each event's parsed JSON data.
 * Comment lines (`: ping`) are skipped. Resolves when the server closes the stream.
 */
export async function readEventStream(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let id = null;
  const dispatch = () => {
    if (data.length) onEvent(JSON.parse(data.join("\n")), id);
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        dispatch();
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
    }
  }
  dispatch();
}

/** The error text of a failed fal API response: `detail` (a string or a list of validation issues) or the status. */
export async function errorText(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON
  }
  const detail = body && body.detail;
  let text;
  if (Array.isArray(detail)) {
    text = detail.map((issue) => `${(issue.loc || []).filter((p) => p !== "body").join(".") || "input"}: ${issue.msg}`).join("\n");
  } else if (typeof detail === "string") {
    text = detail;
  } else {
    text = `HTTP ${response.status} ${response.statusText}`;
  }
  if (response.status === 401) text += "\nCheck the API key in the top bar, or clear it to use the anonymous tier.";
  if (response.status === 429) {
    const retry = response.headers.get("retry-after");
    text += retry ? `\nRate limited: retry in ${retry} s.` : "\nRate limited.";
    if (!apiKey()) text += " Paste an API key for a higher limit.";
  }
  return text;
}

/** A media URL from a result, as a same-origin path when it points at this relay's `/files/`. */
export function sameOriginMedia(url) {
  if (typeof url !== "string" || url.startsWith("data:") || url.startsWith("blob:")) return url;
  try {
    const parsed = new URL(url, location.href);
    if (parsed.pathname.startsWith("/files/")) return parsed.pathname + parsed.search;
    return parsed.href;
  } catch {
    return url;
  }
}

/** A same-origin path of a fal queue URL (status/response URLs may name the relay's other listener). */
export function sameOriginPath(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search;
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function formatNumber(value, digits = 0) {
  if (!Number.isFinite(value)) return "–";
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}

/** `el("li", {class: "x"}, "text", child)`: a small DOM builder (no innerHTML, so nothing from the server is parsed). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

let toastTimer = null;
export function toast(message) {
  let node = document.getElementById("toast");
  if (!node) {
    node = el("div", { id: "toast", class: "toast", role: "status", "aria-live": "polite" });
    document.body.append(node);
  }
  node.textContent = message;
  node.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => node.classList.remove("show"), 1800);
}
