// Who is connected: the connections table (GET /connections), the presence
// of one topic (GET /topics/{name}/presence) and the disconnect-user action
// (POST /users/{sub}/disconnect). All three need the admin key, which the
// shared Api asks for on a 401. Text goes in as text only (dom.el).

import { errorText } from "./api.js";
import { $, el, formatCount, formatTime, setText } from "./dom.js";

export class People {
  constructor(api) {
    this.api = api;
    this.rows = new Map(); // conn_id -> {row, cells}
    $("presence-topic").addEventListener("change", () => this.refreshPresence());
  }

  /** The topic is being deleted: if it is the one shown, show none. */
  forget(name) {
    if ($("presence-topic").value === name) {
      $("presence-topic").value = "";
      this.refreshPresence();
    }
  }

  /** Refresh both views; ``topics`` are the names the topic table shows. */
  async refresh(topics) {
    syncTopics($("presence-topic"), topics);
    await Promise.all([this.refreshConnections(), this.refreshPresence()]);
  }

  async refreshConnections() {
    const response = await this.api.request("GET", "connections");
    if (!response.ok || !response.data) {
      say($("conn-empty"), errorText(response));
      return;
    }
    const list = response.data.connections || [];
    const seen = new Set();
    const body = $("conn-body");
    for (const conn of list) {
      seen.add(conn.conn_id);
      let entry = this.rows.get(conn.conn_id);
      if (!entry) {
        entry = this.makeRow(conn);
        this.rows.set(conn.conn_id, entry);
      }
      setText(entry.cells.topics, conn.topics.length ? conn.topics.join(", ") : "–");
      setText(entry.cells.queued, formatCount(conn.queued));
      setText(entry.cells.dropped, formatCount(conn.dropped));
      entry.cells.dropped.classList.toggle("warn", conn.dropped > 0);
      body.append(entry.row);
    }
    for (const [id, entry] of this.rows) {
      if (!seen.has(id)) {
        entry.row.remove();
        this.rows.delete(id);
      }
    }
    say($("conn-empty"), response.data.truncated ? "" : "Nobody is connected.");
    $("conn-empty").hidden = list.length > 0;
    $("conn-table").hidden = list.length === 0;
  }

  makeRow(conn) {
    const cell = (label, className, text = "") => el("td", { className, dataset: { label } }, text);
    const cells = {
      topics: cell("Topics", "c-topics"),
      queued: cell("Queued", "num c-queued"),
      dropped: cell("Dropped", "num c-dropped"),
    };
    const actions = el("td", { className: "c-actions" });
    if (conn.user !== null) {
      const button = el("button", { type: "button", className: "small danger ghost", textContent: "Disconnect user" });
      button.addEventListener("click", () => this.disconnect(conn.user, button));
      actions.append(button);
    }
    const row = el(
      "tr",
      { dataset: { conn: conn.conn_id, user: conn.user ?? "" } },
      el("th", { scope: "row", className: "c-user" }, conn.user ?? "(admin or anonymous)"),
      cell("Remote", "c-remote", conn.remote ?? "–"),
      cell("Since", "c-since", formatTime(conn.connected_at)),
      cells.topics,
      cells.queued,
      cells.dropped,
      actions,
    );
    return { row, cells };
  }

  async disconnect(user, button) {
    // Two clicks, like deleting a topic: the first arms the button for a few seconds.
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = "Confirm";
      setTimeout(() => {
        button.dataset.armed = "";
        button.textContent = "Disconnect user";
      }, 4000);
      return;
    }
    button.disabled = true;
    const msg = $("conn-msg");
    try {
      const response = await this.api.request("POST", `users/${encodeURIComponent(user)}/disconnect`);
      if (response.ok) say(msg, `Disconnected ${user}: ${response.data.connections} connection(s).`, "ok");
      else say(msg, errorText(response), "error");
    } catch (err) {
      say(msg, `Request failed: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
    await this.refreshConnections();
  }

  async refreshPresence() {
    const topic = $("presence-topic").value;
    const list = $("presence-list");
    if (!topic) {
      list.replaceChildren();
      say($("presence-msg"), "Pick a topic.");
      return;
    }
    const response = await this.api.request("GET", `topics/${encodeURIComponent(topic)}/presence`);
    if (topic !== $("presence-topic").value) return; // the choice changed meanwhile
    if (!response.ok || !response.data) {
      say($("presence-msg"), errorText(response), "error");
      return;
    }
    const subscribers = response.data.subscribers;
    list.replaceChildren(
      ...subscribers.map((s) =>
        el(
          "li",
          { dataset: { conn: s.conn_id } },
          el("span", { className: "p-user" }, s.user ?? "(admin or anonymous)"),
          el("span", { className: "p-client" }, s.client_id),
          el("span", { className: "p-conn" }, s.conn_id),
        ),
      ),
    );
    const more = response.data.truncated ? " (list cut at the server's limit)" : "";
    say($("presence-msg"), `${formatCount(subscribers.length)} subscriber(s) on ${topic}${more}.`);
  }
}

function say(node, text, kind = "") {
  node.textContent = text;
  node.dataset.kind = kind;
}

/** ``select``'s options: a "pick one" placeholder, then ``names``; the choice is kept
 * while its topic exists. Nothing is chosen by itself, so presence is only
 * polled for a topic someone picked (and a topic being deleted is not polled). */
function syncTopics(select, names) {
  const current = [...select.options].slice(1).map((o) => o.value);
  if (select.options.length && current.length === names.length && current.every((v, i) => v === names[i])) return;
  const chosen = select.value;
  const placeholder = el("option", { value: "" }, "pick a topic");
  select.replaceChildren(placeholder, ...names.map((name) => el("option", { value: name }, name)));
  select.value = names.includes(chosen) ? chosen : "";
  select.disabled = names.length === 0;
}
