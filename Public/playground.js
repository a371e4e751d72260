// The playground: the catalog as a gallery, each model's inputs as a form, a run followed live over the relay's
// `/ws` watch socket (status, logs and partial outputs: image previews, text as it streams) or, when the socket cannot
// be used, the fal queue's SSE status stream, and the result rendered by kind. `/?model=…&prompt=…&seed=…&run=1`
// fills and runs.
import {
  apiKey, authHeaders, el, errorText, formatBytes, readEventStream, sameOriginMedia, sameOriginPath, setUpKeyForm, toast,
} from "/ui/common.js";

const IMAGE_SIZES = ["square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"];
const INTEGER_FIELD = /^(num_|max_|steps$|seed$|seconds_total$|duration$)/;
const TEXT_AREAS = new Set(["prompt", "text", "negative_prompt", "system_prompt"]);
const KIND_ORDER = ["image", "image-edit", "video", "audio", "text"];
const KIND_LABEL = { image: "Image", "image-edit": "Image editing", video: "Video", audio: "Audio", text: "Text" };
const CACHE_EXPLAINED = {
  hit: "Cache hit: served from the relay's store, no upstream work",
  coalesced: "Coalesced: joined an identical job already running",
  miss: "Cache miss: a new upstream job",
  bypass: "Bypass: not cacheable (no seed, or no-store), a new upstream job",
};
const DEDUP_EXPLAINED = {
  seeded: "Identical requests with an explicit seed share one result",
  always: "Identical requests always share one result",
  never: "Every request runs upstream",
};

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  model: null,
  run: null, // { controller, started, timer, peak }
  recent: [],
};

// MARK: - Gallery

function renderGallery(filter = "") {
  const list = $("model-list");
  const needle = filter.trim().toLowerCase();
  const shown = state.models.filter((m) => !needle || m.title.toLowerCase().includes(needle) || m.id.includes(needle));
  const kinds = [...new Set(shown.map((m) => m.kind))].sort((a, b) => rank(a) - rank(b));
  list.replaceChildren(...kinds.flatMap((kind) => [
    el("li", { class: "group", role: "presentation" }, KIND_LABEL[kind] || kind),
    ...shown.filter((m) => m.kind === kind).map((m) => el("li", {},
      el("button", {
        type: "button",
        "aria-pressed": String(state.model?.id === m.id),
        dataset: { model: m.id },
        onclick: () => selectModel(m.id, {}, true),
      }, el("span", {}, el("span", { class: "title" }, m.title), el("span", { class: "id" }, m.id)),
      m.realtime ? el("span", { class: "badge", title: "Also has a realtime WebSocket endpoint" }, "rt") : null),
    )),
  ]));
  if (!shown.length) list.replaceChildren(el("li", { class: "group" }, "No model matches."));
}

function rank(kind) {
  const index = KIND_ORDER.indexOf(kind);
  return index < 0 ? KIND_ORDER.length : index;
}

// MARK: - The form

/** The form's fields for a model: required inputs, then the seed, then every default (prefilled, typed). */
function fieldsFor(model) {
  const fields = [];
  const required = model.required.length ? model.required : ["prompt"];
  for (const name of required) fields.push({ name, required: true, type: name.endsWith("_url") ? "url" : "text", value: "" });
  fields.push({ name: "seed", type: "integer", value: "" });
  for (const [name, value] of Object.entries(model.defaults)) {
    if (required.includes(name) || name === "seed") continue;
    if (name === "image_size" && typeof value === "string") fields.push({ name, type: "select", options: IMAGE_SIZES, value });
    else if (typeof value === "boolean") fields.push({ name, type: "boolean", value });
    else if (typeof value === "number") fields.push({ name, type: Number.isInteger(value) && INTEGER_FIELD.test(name) ? "integer" : "number", value });
    else if (typeof value === "string") fields.push({ name, type: "text", value });
    else fields.push({ name, type: "json", value });
  }
  return fields;
}

function label(name) {
  const text = name.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function renderForm(model) {
  const form = $("inputs");
  const main = [];
  const options = [];
  for (const field of fieldsFor(model)) {
    const id = `field-${field.name}`;
    let control;
    let node;
    switch (field.type) {
      case "boolean":
        control = el("input", { id, name: field.name, type: "checkbox", checked: field.value, dataset: { type: field.type } });
        node = el("div", { class: "field check" }, control, el("label", { for: id }, label(field.name)));
        break;
      case "select":
        control = el("select", { id, name: field.name, dataset: { type: field.type } },
          field.options.map((option) => el("option", { value: option, selected: option === field.value }, option)));
        break;
      case "json":
        control = el("textarea", { id, name: field.name, class: "json", rows: 2, spellcheck: "false", dataset: { type: field.type } });
        control.value = JSON.stringify(field.value);
        break;
      case "integer":
      case "number":
        control = el("input", {
          id, name: field.name, type: "number", step: field.type === "integer" ? "1" : "any", inputmode: "decimal",
          dataset: { type: field.type },
        });
        control.value = field.value === "" ? "" : String(field.value);
        break;
      default:
        control = TEXT_AREAS.has(field.name)
          ? el("textarea", { id, name: field.name, rows: 3, dataset: { type: "text" } })
          : el("input", { id, name: field.name, type: field.type === "url" ? "url" : "text", dataset: { type: "text" } });
        control.value = field.value;
        if (field.name === "prompt") control.placeholder = "Describe what to make…";
        if (field.type === "url") control.placeholder = "https://… or /files/… from an earlier result";
    }
    control.dataset.default = field.type === "json" ? JSON.stringify(field.value) : String(field.value);
    if (field.required) control.required = true;
    if (!node) {
      const caption = el("label", { for: id }, label(field.name), field.required ? el("span", { class: "required-mark", "aria-hidden": "true" }, " *") : null);
      if (field.name === "seed") {
        const dice = el("button", { type: "button", class: "small", onclick: () => { control.value = String(Math.floor(Math.random() * 2 ** 31)); updateShare(); } }, "Random");
        node = el("div", { class: "field" }, caption, el("div", { class: "field-row" }, control, dice),
          el("span", { class: "hint", id: "seed-hint" }, "Set a seed to make the result cacheable and shareable."));
        control.setAttribute("aria-describedby", "seed-hint");
        control.placeholder = "random";
      } else {
        node = el("div", { class: "field" }, caption, control);
      }
    }
    (field.required || field.name === "seed" ? main : options).push(node);
  }
  form.replaceChildren(
    ...main,
    options.length ? el("details", { class: "raw", open: true }, el("summary", {}, "Model options"), el("div", { class: "grid-2 spaced" }, options)) : null,
  );
}

/** The input object from the form; throws with a readable message on a malformed JSON field. */
function readInput() {
  const input = {};
  for (const control of $("inputs").querySelectorAll("[name]")) {
    const { name } = control;
    switch (control.dataset.type) {
      case "boolean":
        input[name] = control.checked;
        break;
      case "integer":
      case "number":
        if (control.value.trim() !== "") {
          const value = Number(control.value);
          if (!Number.isFinite(value)) throw new Error(`${label(name)} must be a number`);
          input[name] = value;
        }
        break;
      case "json":
        try {
          input[name] = JSON.parse(control.value || "null");
        } catch {
          throw new Error(`${label(name)} must be valid JSON`);
        }
        break;
      default:
        if (control.value !== "" || control.required) input[name] = control.value;
    }
  }
  return input;
}

/** The share-URL parameter of an input field: `model` and `run` are the page's own, so such inputs get a prefix. */
function paramName(name) {
  return name === "model" || name === "run" ? `input.${name}` : name;
}

/** Sets fields from URL parameters (only names the form has). */
function applyParams(params) {
  for (const control of $("inputs").querySelectorAll("[name]")) {
    const key = paramName(control.name);
    if (!params.has(key)) continue;
    const value = params.get(key);
    if (control.dataset.type === "boolean") control.checked = value === "true" || value === "1";
    else control.value = value;
  }
}

/** `/?model=…&<required fields>&seed=…&<changed options>`: what the form holds, `run=1` when asked. */
function shareURL(run) {
  const params = new URLSearchParams();
  if (!state.model) return location.origin + "/";
  params.set("model", state.model.id);
  for (const control of $("inputs").querySelectorAll("[name]")) {
    const value = control.dataset.type === "boolean" ? String(control.checked) : control.value;
    if (control.required || control.name === "seed") {
      if (value !== "") params.set(paramName(control.name), value);
    } else if (value !== control.dataset.default) {
      params.set(paramName(control.name), value);
    }
  }
  if (run) params.set("run", "1");
  return `${location.origin}/?${params}`;
}

function updateShare() {
  $("share-url").value = shareURL(true);
  history.replaceState(null, "", shareURL(false).slice(location.origin.length));
}

function selectModel(id, params = new URLSearchParams(), focus = false) {
  const model = state.models.find((m) => m.id === id) || state.models[0];
  if (!model) return;
  const previousPrompt = $("field-prompt")?.value;
  state.model = model;
  $("model-title").textContent = model.title;
  $("model-id").textContent = model.id;
  $("model-kind").textContent = model.kind;
  $("model-dedup").textContent = `dedup: ${model.dedup}`;
  $("model-dedup").title = DEDUP_EXPLAINED[model.dedup] || "";
  $("model-hint").textContent = model.kind === "image-edit" || model.required.includes("image_url")
    ? "Needs a source image URL: run an image model first and use its result."
    : "";
  renderForm(model);
  if (previousPrompt && $("field-prompt") && !params.has("prompt")) $("field-prompt").value = previousPrompt;
  applyParams(params);
  for (const button of $("model-list").querySelectorAll("button[data-model]")) {
    button.setAttribute("aria-pressed", String(button.dataset.model === model.id));
  }
  updateShare();
  if (focus) $("inputs").querySelector("[name]")?.focus();
}

// MARK: - Running

function setStatus(stateName, text) {
  const pill = $("run-status");
  pill.dataset.state = stateName;
  pill.textContent = text;
  $("run-panel").dataset.state = stateName;
}

function setProgress(fraction, text) {
  const bar = $("progress");
  bar.value = Math.max(0, Math.min(1, fraction));
  $("progress-text").textContent = text;
  if (state.run && bar.value < 1) state.run.peak = Math.max(state.run.peak, bar.value);
  bar.dataset.peak = String(state.run ? state.run.peak : 0);
}

function addTimeline(text, status) {
  const list = $("timeline");
  const last = list.lastElementChild;
  if (last && last.textContent === text) return;
  list.append(el("li", { dataset: { status } }, text));
}

function addLog(entry) {
  const time = entry.timestamp ? new Date(entry.timestamp) : new Date();
  const logs = $("logs");
  logs.append(el("li", { dataset: { level: entry.level || "INFO" } },
    el("time", { datetime: time.toISOString() }, time.toLocaleTimeString(undefined, { hour12: false })), entry.message));
  logs.scrollTop = logs.scrollHeight;
  const match = /(\d+)\s*\/\s*(\d+)/.exec(entry.message || "");
  if (match && Number(match[2]) > 0) setProgress(Number(match[1]) / Number(match[2]), `${match[1]} / ${match[2]}`);
}

/** How the run is followed (`ws`, `sse`, `poll`), shown on the run panel. */
function setTransport(run, transport) {
  if (state.run !== run) return;
  $("run-panel").dataset.transport = transport;
  $("run-status").title = { ws: "Followed over the /ws socket", sse: "Followed over the SSE status stream", poll: "Followed by polling the status" }[transport];
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

function finishRun() {
  const run = state.run;
  if (!run) return;
  clearInterval(run.timer);
  $("elapsed").textContent = `${((performance.now() - run.started) / 1000).toFixed(2)} s`;
  $("run").disabled = false;
  $("cancel").hidden = true;
}

async function run() {
  if (!state.model) return;
  state.run?.controller.abort();
  let input;
  try {
    input = readInput();
  } catch (error) {
    showError(error.message);
    return;
  }
  const missing = state.model.required.filter((name) => input[name] === undefined || input[name] === "");
  if (missing.length) {
    showError(`Fill in: ${missing.map(label).join(", ")}`);
    $(`field-${missing[0]}`)?.focus();
    return;
  }
  updateShare();
  const controller = new AbortController();
  const run = { controller, started: performance.now(), timer: 0, peak: 0, model: state.model, input, cancelURL: null };
  state.run = run;
  run.timer = setInterval(() => { $("elapsed").textContent = `${((performance.now() - run.started) / 1000).toFixed(1)} s`; }, 100);
  $("run").disabled = true;
  $("timeline").replaceChildren();
  $("logs").replaceChildren();
  $("cache-outcome").hidden = true;
  showError("");
  setProgress(0, "–");
  setStatus("SUBMITTING", "Submitting…");
  $("result").replaceChildren(el("div", { class: "placeholder" }, "Waiting for the result…"));
  $("result").dataset.partials = "0";
  delete $("run-panel").dataset.transport;
  try {
    const response = await fetch(`/${run.model.id}`, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(input),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    const cache = response.headers.get("x-relay-cache");
    const submitted = await response.json();
    run.cancelURL = submitted.cancel_url;
    if (cache === "hit") {
      $("logs").append(el("li", { class: "note" }, "Served from the relay's store: no upstream work for this run."));
    } else if (submitted.status === "IN_QUEUE") {
      setStatus("IN_QUEUE", `In queue · position ${submitted.queue_position ?? 0}`);
      addTimeline(`IN_QUEUE #${submitted.queue_position ?? 0}`, "IN_QUEUE");
    }
    $("cancel").hidden = false;
    if (cache) {
      const badge = $("cache-outcome");
      badge.hidden = false;
      badge.dataset.cache = cache;
      badge.textContent = cache;
      badge.title = `${CACHE_EXPLAINED[cache] || cache} (${response.headers.get("cache-status") || ""})`;
      addTimeline(`cache ${cache}`, "CACHE");
    }
    const final = await follow(submitted, run);
    if (final.error) throw new Error(`${final.error}${final.error_type ? ` (${final.error_type})` : ""}`);
    const result = await fetch(sameOriginPath(submitted.response_url), { headers: authHeaders(), signal: controller.signal });
    if (!result.ok) throw new Error(await errorText(result));
    const output = await result.json();
    if (state.run !== run) return;
    setProgress(1, "done");
    setStatus("COMPLETED", cache === "hit" ? "Completed · from cache" : "Completed");
    addTimeline("COMPLETED", "COMPLETED");
    renderResult(output, run, final);
  } catch (error) {
    if (state.run !== run) return;
    if (error.name === "AbortError") {
      setStatus("FAILED", "Stopped");
    } else {
      setStatus("FAILED", "Failed");
      showError(error.message);
    }
  } finally {
    if (state.run === run) finishRun();
  }
}

/**
 * Follows the run to COMPLETED: over the `/ws` socket (with partial outputs), else the SSE status stream, else by
 * polling the status. Each step resumes after the last sequence number the previous one delivered.
 */
async function follow(submitted, run) {
  const statusPath = sameOriginPath(submitted.status_url);
  const cursor = { seq: 0 };
  let final = null;
  const onStatus = (status) => {
    if (state.run !== run) return;
    switch (status.status) {
      case "IN_QUEUE":
        setStatus("IN_QUEUE", `In queue · position ${status.queue_position ?? 0}`);
        addTimeline(`IN_QUEUE #${status.queue_position ?? 0}`, "IN_QUEUE");
        break;
      case "IN_PROGRESS":
        setStatus("IN_PROGRESS", "Running");
        addTimeline("IN_PROGRESS", "IN_PROGRESS");
        for (const entry of status.logs || []) addLog(entry);
        break;
      case "COMPLETED":
        for (const entry of status.logs || []) addLog(entry);
        final = status;
        break;
    }
  };
  try {
    await watchOverSocket(submitted.request_id, run, cursor, onStatus, (data) => renderPartial(data, run));
  } catch (error) {
    if (error.name === "AbortError") throw error;
  }
  if (!final) {
    setTransport(run, "sse");
    try {
      const resume = cursor.seq ? `&last_event_id=${cursor.seq}` : "";
      const response = await fetch(`${statusPath}/stream?logs=1${resume}`, {
        headers: authHeaders({ Accept: "text/event-stream" }), signal: run.controller.signal, cache: "no-store",
      });
      if (!response.ok) throw new Error(await errorText(response));
      await readEventStream(response, (status, id) => {
        if (id) cursor.seq = Math.max(cursor.seq, Number(id) || 0);
        onStatus(status);
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
    }
  }
  let seenLogs = $("logs").childElementCount;
  const deadline = performance.now() + 10 * 60 * 1000;
  while (!final && performance.now() < deadline) {
    setTransport(run, "poll");
    const response = await fetch(`${statusPath}?logs=1`, { headers: authHeaders(), signal: run.controller.signal, cache: "no-store" });
    if (!response.ok) throw new Error(await errorText(response));
    const status = await response.json();
    // Polled logs are cumulative: show only the new ones.
    const logs = status.logs || [];
    onStatus({ ...status, logs: logs.slice(seenLogs) });
    seenLogs = Math.max(seenLogs, logs.length);
    if (!final) await new Promise((resolve) => setTimeout(resolve, 500));
  }
  if (!final) throw new Error("Gave up waiting for the result");
  return final;
}

/**
 * The `/ws` URL for this tab: browsers cannot set headers on a WebSocket, so a key is exchanged for a short-lived
 * token (`POST /tokens/`) carried as `fal_jwt_token`; without a key the socket is anonymous, as the relay admits.
 */
async function watchSocketURL(run) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws`;
  if (!apiKey()) return url;
  const response = await fetch("/tokens/", {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify({ allowed_apps: [run.model.id.split("/")[1]], token_expiration: 60 }),
    signal: run.controller.signal,
  });
  if (!response.ok) throw new Error(await errorText(response));
  return `${url}?fal_jwt_token=${encodeURIComponent(await response.json())}`;
}

/**
 * Watches one request over `/ws` until its COMPLETED event, advancing `cursor.seq` with every message taken.
 * Resolves when it completed or the socket could not be used (did not open in time, refused the watch, closed
 * early): the caller then goes on after `cursor.seq` another way.
 */
async function watchOverSocket(requestID, run, cursor, onStatus, onPartial) {
  const url = await watchSocketURL(run);
  setTransport(run, "ws");
  await new Promise((resolve) => {
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      resolve();
      return;
    }
    const openTimer = setTimeout(() => done(), 5000);
    const done = () => {
      clearTimeout(openTimer);
      run.controller.signal.removeEventListener("abort", done);
      socket.onmessage = socket.onclose = socket.onerror = null;
      if (socket.readyState <= WebSocket.OPEN) socket.close();
      resolve();
    };
    run.controller.signal.addEventListener("abort", done);
    socket.onopen = () => {
      clearTimeout(openTimer);
      socket.send(JSON.stringify({ type: "watch", request_id: requestID, after: cursor.seq }));
    };
    socket.onmessage = (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      if (data.request_id !== requestID || state.run !== run) return;
      if (data.type === "error") {
        done();
        return;
      }
      // Sequence numbers are the job's: nothing at or before the cursor is new.
      if (!(data.seq > cursor.seq)) return;
      cursor.seq = data.seq;
      if (data.type === "partial") {
        onPartial(data.data);
      } else if (data.type === "event") {
        onStatus(data.status);
        if (data.status?.status === "COMPLETED") done();
      }
    };
    socket.onerror = done;
    socket.onclose = done;
  });
  run.controller.signal.throwIfAborted();
}

/** Shows a partial output while the run goes on: the latest preview image, or the text streamed so far. */
function renderPartial(data, run) {
  if (state.run !== run || !data) return;
  const result = $("result");
  const image = Array.isArray(data.images) ? data.images[0] : null;
  if (image && typeof image.url === "string") {
    let preview = $("preview-image");
    if (!preview) {
      preview = el("img", { id: "preview-image", alt: `Preview of ${run.input.prompt || run.model.title}`, decoding: "async" });
      result.replaceChildren(el("figure", { class: "preview" }, preview, el("figcaption", { id: "preview-caption" })));
    }
    // Previews are small; CSS stretches them to the panel, and the size attributes keep its aspect ratio.
    if (image.width && image.height) {
      preview.width = image.width;
      preview.height = image.height;
    }
    preview.src = sameOriginMedia(image.url);
    $("preview-caption").textContent = Number.isFinite(data.step) ? `Preview · step ${data.step}` : "Preview";
  } else if (typeof data.output === "string") {
    let text = $("text-output");
    if (!text) {
      text = el("pre", { class: "text-output streaming", id: "text-output", "aria-live": "polite" });
      result.replaceChildren(text);
    }
    text.textContent = data.output;
  } else {
    return;
  }
  result.dataset.partials = String(Number(result.dataset.partials || 0) + 1);
}

async function cancel() {
  const run = state.run;
  if (!run || !run.cancelURL) return;
  try {
    await fetch(sameOriginPath(run.cancelURL), { method: "PUT", headers: authHeaders() });
  } finally {
    run.controller.abort();
  }
}

// MARK: - Results

function mediaFigure(file, kind, alt) {
  const url = sameOriginMedia(file.url);
  const type = file.content_type || "";
  let media;
  if (type.startsWith("audio/") || kind === "audio") {
    media = el("audio", { controls: true, src: url, preload: "auto" });
  } else if (type.startsWith("video/")) {
    media = el("video", { controls: true, src: url, loop: true, muted: true, autoplay: true, playsinline: true });
  } else {
    // Images and animated images (APNG, GIF, WebP) alike.
    media = el("img", { src: url, alt, width: file.width, height: file.height, decoding: "async" });
  }
  const facts = [
    file.width && file.height ? `${file.width}×${file.height}` : null,
    type || null,
    file.file_size ? formatBytes(file.file_size) : null,
  ].filter(Boolean);
  return el("figure", {}, media, el("figcaption", {}, facts.map((f) => el("span", {}, f)),
    el("a", { href: url, target: "_blank", rel: "noopener" }, "Open"),
    el("a", { href: url, download: "" }, "Download")));
}

function renderResult(output, run, final) {
  const nodes = [];
  const alt = run.input.prompt || run.input.text || run.model.title;
  for (const image of output.images || []) nodes.push(mediaFigure(image, "image", alt));
  if (output.video) nodes.push(mediaFigure(output.video, "video", alt));
  if (output.audio) nodes.push(mediaFigure(output.audio, "audio", alt));
  if (output.audio_url) nodes.push(mediaFigure(typeof output.audio_url === "string" ? { url: output.audio_url } : output.audio_url, "audio", alt));
  if (typeof output.output === "string") nodes.push(el("pre", { class: "text-output", id: "text-output" }, output.output));
  const facts = [];
  if (output.seed !== undefined) facts.push(`seed ${output.seed}`);
  if (final?.metrics?.inference_time !== undefined) facts.push(`inference ${Number(final.metrics.inference_time).toFixed(2)} s`);
  if (output.synthetic) facts.push("synthetic upstream");
  if (facts.length) nodes.push(el("p", { class: "hint" }, facts.join(" · ")));
  if (!nodes.length) nodes.push(el("p", { class: "hint" }, "The model returned no media; see the raw result."));
  nodes.push(el("details", { class: "raw" }, el("summary", {}, "Raw result JSON"), el("pre", {}, JSON.stringify(output, null, 2))));
  $("result").replaceChildren(...nodes);
  remember(output, run);
}

function remember(output, run) {
  const share = shareURL(false);
  const thumb = output.images?.[0]?.url || (output.video?.content_type?.startsWith("image/") ? output.video.url : null);
  state.recent = [{ share, thumb: thumb ? sameOriginMedia(thumb) : null, title: run.model.title }, ...state.recent.filter((r) => r.share !== share)].slice(0, 12);
  $("recent-wrap").hidden = false;
  $("recent").replaceChildren(...state.recent.map((item) => el("button", {
    type: "button",
    title: `${item.title}: open this run's inputs`,
    "aria-label": `Load recent run of ${item.title}`,
    onclick: () => {
      const params = new URL(item.share).searchParams;
      selectModel(params.get("model"), params);
    },
  }, item.thumb ? el("img", { src: item.thumb, alt: "" }) : item.title.slice(0, 10))));
}

// MARK: - Start

async function start() {
  setUpKeyForm();
  $("inputs").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("inputs").addEventListener("input", updateShare);
  $("inputs").addEventListener("change", updateShare);
  $("inputs").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });
  $("cancel").addEventListener("click", cancel);
  $("copy-share").addEventListener("click", async () => {
    const url = $("share-url").value;
    try {
      await navigator.clipboard.writeText(url);
      toast("Share link copied");
    } catch {
      $("share-url").select();
      toast("Select and copy the link");
    }
  });
  $("model-search").addEventListener("input", (event) => renderGallery(event.target.value));

  let catalog;
  try {
    const response = await fetch("/relay/models", { cache: "no-store" });
    if (!response.ok) throw new Error(await errorText(response));
    catalog = await response.json();
  } catch (error) {
    $("model-title").textContent = "The catalog could not be loaded";
    showError(error.message);
    return;
  }
  state.models = catalog.models || [];
  const params = new URLSearchParams(location.search);
  renderGallery();
  selectModel(params.get("model") || state.models.find((m) => m.kind === "image")?.id || state.models[0]?.id, params);
  if (params.get("model") && state.model?.id !== params.get("model")) showError(`Unknown model ${params.get("model")}`);
  else if (params.get("run") === "1") run();
}

start();
