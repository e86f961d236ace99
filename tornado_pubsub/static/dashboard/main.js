// The dashboard page: polls /health and /stats, renders the topic table and
// sparklines, and wires the create, delete, publish and tail controls.

import { Api, AuthCancelled, errorText } from "./api.js";
import { $, el, formatCount, formatRate, formatTime, formatUptime, setText } from "./dom.js";
import { People } from "./people.js";
import { Series, drawSparkline } from "./sparkline.js";
import { Tail } from "./tail.js";

const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000; // a background tab polls gently
const MIN_SAMPLE_MS = 900; // extra polls (after an action) refresh counts but add no sample
const MAX_TAIL_ITEMS = 200;
const MAX_PAYLOAD_CHARS = 4000;
const COMPACT_CHARS = 72;
const TOPIC_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

const api = new Api(askKey);
const people = new People(api);
const rows = new Map(); // topic name -> {row, cells, series, messages}
const totalSeries = new Series();
let lastSampleAt = 0;
let pollTimer = null;
let inflight = null; // the poll under way
let rerun = null; // the poll queued behind it
let locked = false;

// -- API key prompt ---------------------------------------------------------

function askKey(reason) {
  const dialog = $("key-dialog");
  const input = $("key-input");
  $("key-msg").textContent = reason || "This server asks for an API key. It is kept in this tab only (session storage).";
  input.value = "";
  return new Promise((resolve) => {
    const finish = (value) => {
      $("key-form").onsubmit = null;
      $("key-cancel").onclick = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    $("key-form").onsubmit = (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (value) finish(value);
      else input.focus();
    };
    $("key-cancel").onclick = () => finish(null);
    dialog.oncancel = () => finish(null); // Escape
    dialog.showModal();
    input.focus();
  });
}

function updateKeyButton() {
  const button = $("key-button");
  button.hidden = !(api.key || locked);
  button.textContent = locked ? "Enter API key" : "Forget API key";
}

$("key-button").addEventListener("click", () => {
  if (locked) {
    locked = false;
    pollNow();
  } else {
    api.setKey(null);
    tail.stop("Stopped: API key forgotten.");
  }
  updateKeyButton();
});
api.onKeyChange(updateKeyButton);

// -- polling ------------------------------------------------------------------

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = locked ? null : setTimeout(pollNow, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}

/** Poll now; the promise settles once the page shows data fetched after this call. */
function pollNow() {
  if (inflight) {
    // The poll under way may have been answered before the caller's change:
    // queue one more (shared by every caller that arrives meanwhile).
    rerun = rerun || inflight.then(() => {
      rerun = null;
      return pollNow();
    });
    return rerun;
  }
  inflight = pollOnce().finally(() => {
    inflight = null;
  });
  return inflight;
}

async function pollOnce() {
  clearTimeout(pollTimer);
  // /health needs no key, so it renders even while the key prompt is open.
  const health = api.send("GET", "health", undefined, api.key).then(renderHealth, () => {
    setPill($("health-pill"), "down", "unreachable");
  });
  try {
    const stats = await api.request("GET", "stats");
    if (stats.ok && stats.data && stats.data.topics) {
      renderTopics(stats.data.topics);
      await people.refresh(Object.keys(stats.data.topics).sort());
    }
    setText($("updated"), new Date().toLocaleTimeString());
  } catch (err) {
    if (err instanceof AuthCancelled) {
      locked = true;
      say($("topics-empty"), "Enter the API key to see topics.");
    } else if (!(err instanceof TypeError)) {
      console.error("dashboard poll failed", err); // a bug, not the network (fetch's TypeError)
    }
    updateKeyButton();
  } finally {
    await health;
    if (locked) setPill($("health-pill"), "locked", "API key needed");
    schedulePoll();
  }
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !locked) pollNow();
});

function setPill(pill, state, text) {
  pill.dataset.state = state;
  pill.textContent = text;
}

function renderHealth(health) {
  const body = health.data || {};
  if (health.status === 200) setPill($("health-pill"), "ok", "healthy");
  else if (body.status === "draining") setPill($("health-pill"), "warn", "draining");
  else setPill($("health-pill"), "down", `HTTP ${health.status}`);
  if (typeof body.uptime_sec === "number") setText($("stat-uptime"), formatUptime(body.uptime_sec));
  if (typeof body.topics === "number") setText($("stat-topics"), formatCount(body.topics));
  if (typeof body.subscribers === "number") setText($("stat-subscribers"), formatCount(body.subscribers));
}

// -- topic table ----------------------------------------------------------------

function renderTopics(topics) {
  const now = performance.now();
  const sample = now - lastSampleAt >= MIN_SAMPLE_MS;
  const seconds = (now - lastSampleAt) / 1000;
  const names = Object.keys(topics).sort();
  let total = 0;

  for (const name of names) {
    const stats = topics[name];
    let entry = rows.get(name);
    if (!entry) {
      entry = makeRow(name, stats.messages);
      rows.set(name, entry);
    }
    if (sample) {
      // A counter that went down means the topic was deleted and created again.
      const delta = stats.messages >= entry.messages ? stats.messages - entry.messages : stats.messages;
      const rate = lastSampleAt ? delta / seconds : 0;
      entry.series.push(rate);
      entry.messages = stats.messages;
      drawSparkline(entry.cells.spark, entry.series.values, peakLabel(entry.series));
      setText(entry.cells.rate, formatRate(rate));
    }
    total += entry.series.last;
    setText(entry.cells.subs, formatCount(stats.subscribers));
    setText(entry.cells.msgs, formatCount(stats.messages));
    setText(entry.cells.dropped, formatCount(stats.dropped ?? 0));
    entry.cells.dropped.classList.toggle("warn", (stats.dropped ?? 0) > 0);
    setText(entry.cells.seq, stats.last_seq ?? "–");
  }
  for (const [name, entry] of rows) {
    if (!(name in topics)) {
      entry.row.remove();
      rows.delete(name);
    }
  }
  // Keep DOM order sorted (appending an existing node moves it).
  const body = $("topics-body");
  names.forEach((name) => body.append(rows.get(name).row));
  say($("topics-empty"), "No topics yet. Create one above.");
  $("topics-empty").hidden = names.length > 0;
  $("topics-table").hidden = names.length === 0;

  if (sample) {
    totalSeries.push(total);
    drawSparkline($("total-spark"), totalSeries.values, peakLabel(totalSeries));
    setText($("stat-rate"), formatRate(total));
    lastSampleAt = now;
  }
  syncSelect($("publish-topic"), names);
  syncSelect($("tail-topic"), names);
  validatePayload();
}

function peakLabel(series) {
  return `now ${formatRate(series.last)} msg/s · peak ${formatRate(series.peak)} msg/s`;
}

function makeRow(name, messages) {
  const cell = (label, className) => el("td", { className, dataset: { label } });
  const cells = {
    subs: cell("Subscribers", "num c-subs"),
    msgs: cell("Messages", "num c-msgs"),
    dropped: cell("Dropped", "num c-dropped"),
    seq: cell("Last seq", "num c-seq"),
    rate: el("span", { className: "rate" }),
    spark: document.createElementNS("http://www.w3.org/2000/svg", "svg"),
  };
  cells.spark.setAttribute("class", "spark");
  cells.spark.setAttribute("viewBox", "0 0 120 28");
  cells.spark.setAttribute("preserveAspectRatio", "none");
  cells.spark.setAttribute("aria-hidden", "true");

  const tailButton = el("button", { type: "button", className: "small", textContent: "Tail" });
  tailButton.addEventListener("click", () => {
    $("tail-topic").value = name;
    startTail();
    $("tail-card").scrollIntoView({ behavior: "smooth", block: "nearest" });
  });
  const deleteButton = el("button", { type: "button", className: "small danger ghost", textContent: "Delete" });
  deleteButton.addEventListener("click", () => deleteTopic(name, deleteButton));

  const row = el(
    "tr",
    { dataset: { topic: name } },
    el("th", { scope: "row", className: "c-name" }, el("span", { className: "topic-name", title: name }, name)),
    cells.subs,
    cells.msgs,
    cells.dropped,
    cells.seq,
    el("td", { className: "c-rate", dataset: { label: "Msg/s" } }, el("div", { className: "rate-cell" }, cells.rate, cells.spark)),
    el("td", { className: "c-actions" }, tailButton, deleteButton),
  );
  return { row, cells, series: new Series(), messages };
}

/** Make ``select``'s options exactly ``names``, keeping the current choice. */
function syncSelect(select, names) {
  const current = [...select.options].map((o) => o.value);
  if (current.length === names.length && current.every((v, i) => v === names[i])) return;
  const chosen = select.value;
  select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  if (names.includes(chosen)) select.value = chosen;
  select.disabled = names.length === 0;
}

// -- create and delete ---------------------------------------------------------

function say(node, text, kind = "") {
  node.textContent = text;
  node.dataset.kind = kind;
}

$("create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("create-name");
  const name = input.value.trim();
  const msg = $("create-msg");
  if (!TOPIC_RE.test(name)) {
    say(msg, "A topic name starts with a letter or digit, then up to 127 of A-Z a-z 0-9 . _ : -", "error");
    input.focus();
    return;
  }
  if (await act($("create-button"), msg, "POST", "topics", { name })) {
    say(msg, `Created ${name}.`, "ok");
    input.value = "";
    await pollNow();
    for (const id of ["publish-topic", "tail-topic"]) $(id).value = name;
    validatePayload();
  }
});

async function deleteTopic(name, button) {
  // Two clicks: the first arms the button for a few seconds.
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Confirm";
    button.classList.remove("ghost");
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = "Delete";
      button.classList.add("ghost");
    }, 4000);
    return;
  }
  people.forget(name); // stop asking for the presence of a topic about to go
  if (await act(button, $("create-msg"), "DELETE", `topics/${encodeURIComponent(name)}`)) {
    say($("create-msg"), `Deleted ${name}.`, "ok");
  }
  await pollNow();
}

/** One REST action from a button: the 2xx body, or null once the failure is shown in ``msg``. */
async function act(button, msg, method, path, body) {
  button.disabled = true;
  try {
    const response = await api.request(method, path, body);
    if (response.ok) return response.data || {};
    say(msg, errorText(response), "error");
  } catch (err) {
    const text = err instanceof AuthCancelled ? "An API key is needed for this." : `Request failed: ${err.message}`;
    say(msg, text, "error");
  } finally {
    button.disabled = false;
  }
  return null;
}

// -- publish --------------------------------------------------------------------

let payload = { ok: false, value: undefined };

function validatePayload() {
  const text = $("publish-payload").value;
  const msg = $("payload-msg");
  if (!text.trim()) {
    payload = { ok: false };
    say(msg, "Enter a JSON value, e.g. {\"n\": 1}, [1, 2], \"text\" or 42.", "error");
  } else {
    try {
      payload = { ok: true, value: JSON.parse(text) };
      const bytes = new TextEncoder().encode(JSON.stringify(payload.value)).length;
      say(msg, `Valid JSON · ${formatCount(bytes)} bytes`, "ok");
    } catch (err) {
      payload = { ok: false };
      say(msg, `Invalid JSON: ${err.message}`, "error");
    }
  }
  $("publish-payload").setAttribute("aria-invalid", String(!payload.ok));
  $("publish-button").disabled = !payload.ok || !$("publish-topic").value;
}

$("publish-payload").addEventListener("input", validatePayload);
$("publish-topic").addEventListener("change", validatePayload);
$("publish-payload").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
    ev.preventDefault();
    $("publish-form").requestSubmit();
  }
});
$("format-button").addEventListener("click", () => {
  validatePayload();
  if (payload.ok) {
    $("publish-payload").value = JSON.stringify(payload.value, null, 2);
    validatePayload();
  }
});

$("publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  validatePayload();
  const topic = $("publish-topic").value;
  const msg = $("publish-msg");
  if (!payload.ok || !topic) return;
  const r = await act($("publish-button"), msg, "POST", `topics/${encodeURIComponent(topic)}/messages`, { payload: payload.value });
  validatePayload();
  if (r) {
    say(msg, `Published to ${r.topic} · seq ${r.seq}${r.duplicate ? " (duplicate)" : ""} · id ${r.id}`, "ok");
    pollNow();
  }
});

// -- live tail ------------------------------------------------------------------

const tail = new Tail(api, {
  status(state, text) {
    setPill($("tail-pill"), state, state);
    say($("tail-status"), text, state === "error" ? "error" : "");
    $("tail-button").textContent = tail.active ? "Stop" : "Start";
  },
  event(event, isReplay) {
    addTailItem(renderEvent(event, isReplay));
  },
  notice(text, kind) {
    addTailItem(el("li", { className: `notice ${kind}` }, text));
  },
});

function renderEvent(event, isReplay) {
  // Short payloads stay on one line; longer ones are indented to be readable.
  let text = JSON.stringify(event.payload ?? null);
  if (text.length > COMPACT_CHARS) text = JSON.stringify(event.payload, null, 2);
  if (text.length > MAX_PAYLOAD_CHARS) text = `${text.slice(0, MAX_PAYLOAD_CHARS)}\n… (${formatCount(text.length)} characters)`;
  const meta = el(
    "div",
    { className: "meta" },
    el("span", { className: "seq" }, `#${event.seq ?? "?"}`),
    el("time", { dateTime: String(event.ts ?? "") }, formatTime(event.ts)),
  );
  if (isReplay) meta.append(el("span", { className: "badge" }, "replay"));
  meta.append(el("span", { className: "msg-id", title: String(event.id ?? "") }, String(event.id ?? "").slice(0, 8)));
  return el("li", { className: "event", dataset: { seq: String(event.seq ?? "") } }, meta, el("pre", { className: "payload" }, text));
}

function addTailItem(item) {
  const list = $("tail-list");
  list.prepend(item);
  while (list.children.length > MAX_TAIL_ITEMS) list.lastElementChild.remove();
}

function startTail() {
  const topic = $("tail-topic").value;
  if (!topic) {
    say($("tail-status"), "Create a topic first.", "error");
    return;
  }
  const lastN = Math.max(0, Math.floor(Number($("tail-last-n").value) || 0));
  $("tail-list").replaceChildren();
  tail.start(topic, lastN);
}

$("tail-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (tail.active) tail.stop();
  else startTail();
  $("tail-button").textContent = tail.active ? "Stop" : "Start";
});
$("tail-topic").addEventListener("change", () => {
  if (tail.active) startTail(); // follow the new choice
});
$("tail-clear").addEventListener("click", () => $("tail-list").replaceChildren());

// -- start ---------------------------------------------------------------------

updateKeyButton();
validatePayload();
pollNow();
