// Tiny DOM helpers. Text always goes in through textContent, never as markup,
// so a topic name or payload can never become HTML or script.

export function $(id) {
  return document.getElementById(id);
}

/** el("td", {className: "num"}, "text", childNode, ...) */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else node[name] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Set a node's text, flashing it when the value changed (not on first fill). */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent === value) return;
  const first = node.textContent === "";
  node.textContent = value;
  if (!first) {
    node.classList.remove("bump");
    void node.offsetWidth; // restart the CSS animation
    node.classList.add("bump");
  }
}

export function formatUptime(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

export function formatRate(rate) {
  if (rate >= 100) return rate.toFixed(0);
  if (rate >= 10) return rate.toFixed(1);
  return rate.toFixed(rate > 0 && rate < 1 ? 2 : 1);
}

export function formatCount(n) {
  return Number(n).toLocaleString("en-US");
}

/** HH:MM:SS.mmm in local time from the protocol's ISO timestamp. */
export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}
