// The chat page: sessions, messages, streaming answers, tool cards, approvals, stop, resume
// after a reload, attachments, status. It talks only to the public API (`api.js`); everything a
// model or a tool says is rendered as text or through the safe Markdown renderer.

import { ApiError, auth, call, readStream } from "./api.js";
import { renderMarkdown } from "./markdown.js";

const $ = (selector) => document.querySelector(selector);
const PAGE = 20;
const LONG_RESULT = 400;

const state = {
  session: null,
  sessionsPage: 1,
  /** The turn being read: {session, stream, user, events}, mirrored in sessionStorage. */
  live: null,
  abort: null,
  files: [],
};

// ------------------------------------------------------------------------------------------
// Small DOM helpers

function el(name, attrs = {}, ...children) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function notice(message, kind = "error") {
  const box = $("#notice");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = !message;
}

function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    openAuth("The server did not accept who you are. Enter your user id or API key.");
  }
  notice(err.message || String(err));
}

function scrollDown() {
  const log = $("#messages");
  log.scrollTop = log.scrollHeight;
}

// ------------------------------------------------------------------------------------------
// Sessions

async function loadSessions(reset = true) {
  if (reset) state.sessionsPage = 1;
  const page = await call("GET", `/sessions?page=${state.sessionsPage}&limit=${PAGE}`);
  const list = $("#sessions");
  if (reset) list.replaceChildren();
  for (const session of page.sessions) list.append(sessionItem(session));
  const shown = list.children.length;
  $("#more-sessions").hidden = shown >= (page.pagination.total ?? shown);
}

function sessionItem(session) {
  const open = el("button", {
    class: "session-title",
    text: session.title,
    "aria-label": `Open ${session.title}`,
    onclick: () => openSession(session.id).catch(failed),
  });
  const rename = el("button", {
    class: "icon",
    text: "✎",
    title: "Rename",
    "aria-label": `Rename ${session.title}`,
    onclick: () => renameSession(session).catch(failed),
  });
  const remove = el("button", {
    class: "icon",
    text: "✕",
    title: "Delete",
    "aria-label": `Delete ${session.title}`,
    onclick: () => deleteSession(session).catch(failed),
  });
  const item = el("li", { "data-session": session.id }, open, rename, remove);
  if (session.id === state.session) item.classList.add("current");
  return item;
}

async function renameSession(session) {
  const title = prompt("New title", session.title);
  if (title === null || !title.trim()) return;
  await call("PUT", `/sessions/${encodeURIComponent(session.id)}`, { title: title.trim() });
  await loadSessions();
}

async function deleteSession(session) {
  if (!confirm(`Delete “${session.title}” and all its messages?`)) return;
  await call("DELETE", `/sessions/${encodeURIComponent(session.id)}`);
  if (state.session === session.id) newChat();
  await loadSessions();
}

function newChat() {
  stopReading();
  state.session = null;
  setLive(null);
  $("#messages").replaceChildren(el("p", { class: "empty", text: "Ask anything. Enter sends, Shift+Enter starts a new line." }));
  for (const item of document.querySelectorAll("#sessions li")) item.classList.remove("current");
  $("#input").focus();
}

async function openSession(id, live = null) {
  stopReading();
  state.session = id;
  for (const item of document.querySelectorAll("#sessions li")) {
    item.classList.toggle("current", item.dataset.session === id);
  }
  const messages = await loadHistory(id);
  const log = $("#messages");
  log.replaceChildren();
  const shown = live ? messages.slice(0, turnStart(messages, live)) : messages;
  renderHistory(shown);
  annotateDecisions().catch(() => {});
  if (!live) showPendingQuestions(id).catch(() => {});
  if (live) {
    // A turn that was being read when the page reloaded: its events so far, then the rest
    // after the last one (Last-Event-ID).
    if (live.user) log.append(userBubble(live.user.text, live.user.files));
    const turn = new TurnView();
    for (const event of live.events) turn.apply(event);
    setLive(live);
    readLive(turn).catch(failed);
  }
  scrollDown();
  document.body.classList.remove("sidebar-open");
}

/** A paused turn's question (it is not in the history) shown again, so it can be answered. */
async function showPendingQuestions(id) {
  const { elicitations } = await call("GET", "/elicitations");
  for (const q of elicitations.filter((e) => e.session_id === id).reverse()) {
    if (state.session !== id || document.querySelector(`.elicitation[data-request="${CSS.escape(q.request_id)}"]`)) continue;
    $("#messages").append(elicitationCard(q, (reply) => continueAfterDecision(reply).catch(failed)));
  }
  scrollDown();
}

/** Every stored message of a session, oldest first (the API pages them, 100 at a time). */
async function loadHistory(id) {
  const messages = [];
  for (let page = 1; page <= 100; page += 1) {
    const batch = await call("GET", `/sessions/${encodeURIComponent(id)}/messages?page=${page}&limit=100`);
    messages.push(...batch.messages);
    if (batch.messages.length < 100) break;
  }
  return messages;
}

/**
 * Where the live turn begins in the stored history: at its person's message (re-drawn from the
 * live record), or for a decision's continuation just after the approval it continues. What the
 * turn stored after that point comes back from its stream's events instead.
 */
function turnStart(messages, live) {
  const roles = messages.map((m) => m.role);
  if (live.user) {
    const at = roles.lastIndexOf("user");
    return at < 0 ? messages.length : at;
  }
  return roles.lastIndexOf("tool_approval") + 1;
}

// ------------------------------------------------------------------------------------------
// Rendering history

function renderHistory(messages) {
  const log = $("#messages");
  for (const m of messages) {
    if (m.role === "user") {
      log.append(userBubble(m.content, (m.attachments || []).map((a) => a.filename)));
    } else if (m.role === "assistant") {
      if (m.content) log.append(assistantBubble(m.content, m.status));
      if (m.tool_executions?.length) log.append(toolCards(m.tool_executions));
    } else if (m.role === "tool") {
      if (m.tool_executions?.length) log.append(toolCards(m.tool_executions));
    } else if (m.role === "tool_approval" && m.approval_request) {
      const status = m.approval_request.status || "pending";
      const decide = status === "pending" ? (reply) => continueAfterDecision(reply).catch(failed) : null;
      log.append(approvalCard(m.approval_request, status, decide));
    }
  }
}

/** Says on each decided approval card of the history who decided it (from `GET /approvals`). */
async function annotateDecisions() {
  const cards = [...document.querySelectorAll(".approval[data-request]")].filter((c) => c.querySelector(".decided"));
  if (!cards.length) return;
  const { approvals } = await call("GET", "/approvals");
  for (const card of cards) {
    const record = approvals.find((a) => a.request_id === card.dataset.request);
    if (record?.decided_by) {
      const who = record.decided_by.startsWith("user:") ? `user ${record.decided_by.slice(5)}` : record.decided_by;
      card.querySelector(".decided").textContent = `Decision: ${record.status.replace("_", " ")} by ${who}`;
    }
  }
}

function userBubble(text, files = []) {
  const bubble = el("div", { class: "bubble user", role: "article", "aria-label": "You" }, el("p", { text }));
  if (files.length) {
    bubble.append(el("ul", { class: "files", "aria-label": "Attached files" }, ...files.map((f) => el("li", { text: f }))));
  }
  return bubble;
}

function assistantBubble(text, status) {
  const bubble = el("div", { class: "bubble assistant", role: "article", "aria-label": "Assistant" });
  bubble.append(el("div", { class: "markdown" }));
  bubble.firstChild.append(renderMarkdown(text));
  if (status) bubble.append(el("p", { class: "status", text: status === "cancelled" ? "Stopped." : `(${status})` }));
  return bubble;
}

function toolCards(executions) {
  const group = el("div", { class: "tools", "aria-label": "Tool calls" });
  for (const x of executions) group.append(toolCard(x));
  return group;
}

function toolCard(x) {
  const failedCall = Boolean(x.error);
  const card = el("details", { class: `tool ${failedCall ? "failed" : "ok"}`, "data-tool": x.tool_name });
  const summary = el(
    "summary",
    {},
    el("span", { class: "tool-name", text: x.tool_name }),
    el("span", { class: "tool-meta", text: `${failedCall ? "failed" : "done"} · ${x.duration_ms ?? 0} ms` }),
  );
  card.append(summary);
  card.append(el("p", { class: "label", text: "Arguments" }), el("pre", { class: "args", text: x.arguments || "{}" }));
  const result = failedCall ? x.error : x.result;
  card.append(el("p", { class: "label", text: failedCall ? "Error" : "Result" }), el("pre", { class: "result", text: result || "" }));
  // Short results open by themselves; long ones stay folded.
  if ((result || "").length <= LONG_RESULT) card.open = true;
  return card;
}

function approvalCard(request, status, onDecided) {
  const card = el("section", { class: "approval", "aria-label": "Tool approval request", "data-request": request.request_id });
  card.append(el("h3", { text: "The assistant wants to run:" }));
  const list = el("ul");
  for (const c of request.tool_calls || []) {
    const box = el("input", { type: "checkbox", value: c.id, "aria-label": `Approve ${c.function?.name}` });
    box.checked = true;
    list.append(
      el("li", {}, el("label", {}, box, el("span", { class: "tool-name", text: ` ${c.function?.name}` })), el("pre", { text: c.function?.arguments || "{}" })),
    );
  }
  card.append(list);
  if (status !== "pending" || !onDecided) {
    card.append(el("p", { class: "decided", text: `Decision: ${status}` }));
    for (const box of card.querySelectorAll("input")) box.disabled = true;
    return card;
  }
  const remember = el(
    "select",
    { "aria-label": "Remember this decision" },
    el("option", { value: "none", text: "Ask every time" }),
    el("option", { value: "session", text: "Always in this chat" }),
    el("option", { value: "user", text: "Always for me" }),
  );
  const decide = async (approved, subset) => {
    const body = { approved, remember: remember.value };
    if (subset) body.approved_ids = [...card.querySelectorAll("input:checked")].map((b) => b.value);
    for (const b of card.querySelectorAll("button, input, select")) b.disabled = true;
    try {
      const reply = await call("POST", `/approvals/${encodeURIComponent(request.request_id)}`, body);
      const how = !approved ? "denied" : subset ? "approved in part" : "approved";
      card.append(el("p", { class: "decided", text: `Decision: ${how} by you` }));
      onDecided(reply);
    } catch (err) {
      for (const b of card.querySelectorAll("button, input, select")) b.disabled = false;
      failed(err);
    }
  };
  card.append(
    el(
      "div",
      { class: "actions" },
      el("button", { class: "approve", text: "Approve all", onclick: () => decide(true, false) }),
      el("button", { class: "approve-some", text: "Approve selected", onclick: () => decide(true, true) }),
      el("button", { class: "deny", text: "Deny", onclick: () => decide(false, false) }),
      remember,
    ),
  );
  return card;
}

/** One form field for a property of a tool's question (the flat, primitive schemas elicitation allows). */
function questionField(name, property, required) {
  const label = `${property.title || name}${required ? " *" : ""}`;
  const options = (property.enum || []).map((value, i) => ({ value, title: property.enumNames?.[i] || value }))
    .concat((property.oneOf || []).map((o) => ({ value: o.const, title: o.title || o.const })));
  const itemOptions = (property.items?.enum || []).map((value) => ({ value, title: value }))
    .concat((property.items?.anyOf || []).map((o) => ({ value: o.const, title: o.title || o.const })));
  let input;
  if (property.type === "boolean") {
    input = el("input", { type: "checkbox", name });
    input.checked = Boolean(property.default);
  } else if (options.length || itemOptions.length) {
    const many = property.type === "array";
    input = el("select", { name }, ...(many ? itemOptions : options).map((o) => el("option", { value: o.value, text: o.title })));
    if (many) input.multiple = true;
    const chosen = [].concat(property.default ?? []);
    for (const option of input.options) option.selected = chosen.includes(option.value);
    if (!many && !required && property.default === undefined) {
      input.prepend(el("option", { value: "", text: "—" }));
      input.value = "";
    }
  } else {
    const kinds = { email: "email", uri: "url", date: "date", "date-time": "datetime-local" };
    const numeric = property.type === "number" || property.type === "integer";
    input = el("input", { name, type: numeric ? "number" : kinds[property.format] || "text" });
    if (property.type === "number") input.step = "any";
    if (property.default !== undefined) input.value = String(property.default);
  }
  input.dataset.type = property.type || "string";
  return el("label", { class: "field" }, el("span", { text: label }), input, property.description ? el("small", { text: property.description }) : "");
}

/** The form's values: what was filled in (left-out fields get the schema's defaults on the server). */
function questionContent(form) {
  const content = {};
  for (const input of form.querySelectorAll("[name]")) {
    const type = input.dataset.type;
    if (type === "boolean") content[input.name] = input.checked;
    else if (type === "array") content[input.name] = [...input.selectedOptions].map((o) => o.value);
    else if (input.value === "") continue;
    else if (type === "number" || type === "integer") content[input.name] = Number(input.value);
    else content[input.name] = input.value;
  }
  return content;
}

/** A tool's question for the person: a form (or a page to open) and accept / decline / cancel. */
function elicitationCard(data, onAnswered) {
  const question = data.question || {};
  const card = el("section", { class: "approval elicitation", "aria-label": "A tool asks you", "data-request": data.request_id });
  card.append(el("h3", { text: `${data.tool_name || "A tool"} asks:` }), el("p", { text: question.message || data.content || "" }));
  const schema = question.requested_schema || {};
  const required = schema.required || [];
  const form = el("form", { class: "question" });
  if (question.mode === "url") {
    form.append(el("a", { href: question.url, target: "_blank", rel: "noopener noreferrer", text: question.url }));
  } else {
    for (const [name, property] of Object.entries(schema.properties || {})) form.append(questionField(name, property, required.includes(name)));
  }
  const problem = el("p", { class: "problem", role: "alert" });
  const answer = async (action) => {
    const body = { action };
    if (action === "accept" && question.mode !== "url") body.content = questionContent(form);
    for (const c of card.querySelectorAll("button, input, select")) c.disabled = true;
    problem.textContent = "";
    try {
      const reply = await call("POST", `/elicitations/${encodeURIComponent(data.request_id)}`, body);
      card.append(el("p", { class: "decided", text: `Answered: ${action}` }));
      onAnswered(reply);
    } catch (err) {
      for (const c of card.querySelectorAll("button, input, select")) c.disabled = false;
      if (err.code === "elicitation_answer_invalid") problem.textContent = err.message;
      else failed(err);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    answer("accept");
  });
  card.append(
    form,
    problem,
    el(
      "div",
      { class: "actions" },
      el("button", { class: "approve", text: question.mode === "url" ? "Done" : "Send", onclick: () => answer("accept") }),
      el("button", { class: "deny", text: "Decline", onclick: () => answer("decline") }),
      el("button", { text: "Cancel", onclick: () => answer("cancel") }),
    ),
  );
  return card;
}

// ------------------------------------------------------------------------------------------
// A turn as it streams

class TurnView {
  constructor() {
    this.text = "";
    this.bubble = null;
    this.pending = false;
  }

  apply({ event, data }) {
    if (event !== "message") {
      if (event === "tool_progress") this.progress(data);
      if (event === "elicitation_request") {
        this.closeText();
        // A paused turn continues on a new stream; a call that waits goes on on this one.
        const stream = state.live?.stream;
        $("#messages").append(
          elicitationCard(data, (reply) => {
            if (reply.stream_id !== stream) continueAfterDecision(reply).catch(failed);
          }),
        );
      }
      return;
    }
    switch (data.type) {
      case "message":
        this.appendText(data.content || "");
        break;
      case "tool_execution":
        this.closeText();
        $("#messages").append(toolCards(data.tool_executions || []));
        break;
      case "tool_approval_request":
        this.closeText();
        $("#messages").append(
          approvalCard({ request_id: data.request_id, tool_calls: data.tool_calls }, "pending", (reply) =>
            continueAfterDecision(reply).catch(failed),
          ),
        );
        break;
      case "error":
        this.closeText();
        $("#messages").append(
          el("p", { class: `turn-error ${data.code}`, role: "status", text: data.code === "cancelled" ? "Stopped." : errorInWords(data) }),
        );
        break;
      default:
        break;
    }
    scrollDown();
  }

  appendText(delta) {
    if (!this.bubble) {
      this.bubble = assistantBubble("");
      $("#messages").append(this.bubble);
    }
    this.text += delta;
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.paint());
    }
  }

  paint() {
    this.pending = false;
    if (!this.bubble) return;
    const body = this.bubble.querySelector(".markdown");
    body.replaceChildren(renderMarkdown(this.text));
    scrollDown();
  }

  closeText() {
    if (this.bubble) this.paint();
    this.bubble = null;
    this.text = "";
  }

  progress(data) {
    const id = `progress-${data.tool_call_id || data.tool_name || "tool"}`;
    let line = document.getElementById(id);
    if (!line) {
      line = el("p", { class: "progress", id });
      $("#messages").append(line);
    }
    const total = data.total ? ` of ${data.total}` : "";
    line.textContent = `${data.tool_name || "tool"}: ${data.progress ?? ""}${total} ${data.content || ""}`.trim();
  }
}

function errorInWords(data) {
  const words = {
    rate_limited: "The model provider is rate limiting requests. Try again in a moment.",
    interrupted: "The server stopped before this answer was complete.",
    storage_unavailable: "The answer could not be stored (the database is unavailable).",
    timeout: "The model provider did not answer in time.",
  };
  return words[data.code] || data.error || "The answer failed.";
}

function setLive(live) {
  state.live = live;
  if (live) sessionStorage.setItem("aichat.live", JSON.stringify(live));
  else sessionStorage.removeItem("aichat.live");
  $("#stop").hidden = !live;
  $("#send").disabled = Boolean(live);
}

function stopReading() {
  if (state.abort) state.abort.abort();
  state.abort = null;
}

/** Reads the live turn's stream to its end, resuming after the last event it has. */
async function readLive(turn) {
  const live = state.live;
  const controller = new AbortController();
  state.abort = controller;
  let ended = false;
  for (let attempt = 0; !ended && attempt < 5; attempt += 1) {
    const after = live.events.length ? live.events[live.events.length - 1].id || 0 : 0;
    try {
      await readStream(
        live.stream,
        after,
        (event) => {
          live.events.push(event);
          sessionStorage.setItem("aichat.live", JSON.stringify(live));
          turn.apply(event);
          const type = event.event === "message" ? event.data.type : "";
          if (type === "done" || type === "error") {
            ended = true;
            return "end";
          }
          return "";
        },
        controller.signal,
      );
      ended = true;
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && err.status) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
    }
  }
  if (state.live === live) {
    turn.closeText();
    setLive(null);
    // How many turns this page has seen end (for people: nothing; for tests: a thing to wait on).
    document.body.dataset.turnsEnded = String(Number(document.body.dataset.turnsEnded || 0) + 1);
    state.abort = null;
    loadSessions().catch(() => {});
    // A generated title arrives a moment after the first answer.
    setTimeout(() => loadSessions().catch(() => {}), 1500);
  }
}

async function continueAfterDecision(reply) {
  // After a reload: the history up to the approval it continues, then the stream's events.
  setLive({ session: reply.session_id, stream: reply.stream_id, user: null, events: [] });
  await readLive(new TurnView());
}

// ------------------------------------------------------------------------------------------
// Sending

async function send() {
  const input = $("#input");
  const text = input.value.trim();
  if (!text && !state.files.length) return;
  if (state.live) return;
  notice("");
  let reply;
  const provider = $("#provider").value;
  if (state.files.length) {
    const form = new FormData();
    form.append("message", text);
    if (state.session) form.append("session_id", state.session);
    if (provider) form.append("provider", provider);
    state.files.forEach((file, i) => form.append(`file${i}`, file, file.name));
    reply = await call("POST", "/send-with-files?streaming=true", form);
  } else {
    const body = { message: text };
    if (state.session) body.session_id = state.session;
    if (provider) body.provider = provider;
    reply = await call("POST", "/send?streaming=true", body);
  }
  const files = state.files.map((f) => f.name);
  input.value = "";
  state.files = [];
  showFiles();
  if (!state.session) $("#messages").replaceChildren();
  state.session = reply.session_id;
  $("#messages").append(userBubble(text, files));
  setLive({ session: reply.session_id, stream: reply.stream_id, user: { text, files }, events: [] });
  scrollDown();
  loadSessions().catch(() => {});
  await readLive(new TurnView());
}

async function stop() {
  if (!state.live) return;
  try {
    await call("POST", `/stream/${encodeURIComponent(state.live.stream)}/cancel`, {});
  } catch (err) {
    if (!(err instanceof ApiError && err.code === "turn_finished")) failed(err);
  }
}

function showFiles() {
  const box = $("#files-chosen");
  box.replaceChildren(
    ...state.files.map((file, i) =>
      el(
        "span",
        { class: "chip" },
        file.name,
        el("button", {
          class: "icon",
          text: "×",
          "aria-label": `Remove ${file.name}`,
          onclick: () => {
            state.files.splice(i, 1);
            showFiles();
          },
        }),
      ),
    ),
  );
}

// ------------------------------------------------------------------------------------------
// Status and sign-in

async function showStatus() {
  const body = $("#status-body");
  body.replaceChildren(el("p", { text: "Loading…" }));
  $("#status-dialog").showModal();
  try {
    const health = await call("GET", "/health");
    const servers = await call("GET", "/mcp/servers");
    const tools = await call("GET", "/mcp/tools");
    const section = (title, rows) => el("section", {}, el("h3", { text: title }), el("ul", {}, ...rows));
    body.replaceChildren(
      el("p", { text: `Server ${health.version}: ${health.status}; storage ${health.storage}${health.node ? `; node ${health.node.id}` : ""}` }),
      section(
        "Providers",
        health.providers.map((p) => el("li", { text: `${p.name}: ${p.status}` })),
      ),
      section(
        "MCP servers",
        servers.servers.map((s) => {
          const names = tools.tools.filter((t) => t.server === s.name).map((t) => t.tool);
          const error = s.last_error && s.state !== "ready" ? ` (${s.last_error})` : "";
          return el("li", { text: `${s.name}: ${s.state}${error} — ${names.join(", ") || "no tools"}` });
        }),
      ),
    );
  } catch (err) {
    body.replaceChildren(el("p", { class: "turn-error", text: err.message }));
  }
}

function openAuth(reason = "") {
  $("#auth-reason").textContent = reason;
  $("#auth-user").value = auth.user;
  $("#auth-key").value = auth.key;
  $("#auth-mode-key").checked = Boolean(auth.key);
  $("#auth-mode-user").checked = !auth.key;
  if (!$("#auth-dialog").open) $("#auth-dialog").showModal();
}

function saveAuth(event) {
  event.preventDefault();
  if ($("#auth-mode-key").checked) auth.set("key", $("#auth-key").value.trim());
  else auth.set("user", $("#auth-user").value.trim() || "1");
  $("#auth-dialog").close();
  notice("");
  start().catch(failed);
}

// ------------------------------------------------------------------------------------------
// Wiring

/** The provider picker: shown when there is more than one; empty value = the default. */
async function loadProviders() {
  const { providers } = await call("GET", "/providers");
  const select = $("#provider");
  select.replaceChildren(
    ...providers.map((p) =>
      el("option", { value: p.default ? "" : p.name, text: `${p.name} (${p.model})${p.status === "ok" ? "" : " — unavailable"}` }),
    ),
  );
  select.hidden = providers.length < 2;
}

async function start() {
  await loadSessions();
  loadProviders().catch(() => {});
  const saved = sessionStorage.getItem("aichat.live");
  const live = saved ? JSON.parse(saved) : null;
  if (live) await openSession(live.session, live);
  else if (!state.session) newChat();
}

function wire() {
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send().catch(failed);
  });
  $("#input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send().catch(failed);
    }
  });
  $("#stop").addEventListener("click", () => stop());
  $("#new-chat").addEventListener("click", () => newChat());
  $("#more-sessions").addEventListener("click", () => {
    state.sessionsPage += 1;
    loadSessions(false).catch(failed);
  });
  $("#file").addEventListener("change", (event) => {
    state.files.push(...event.target.files);
    event.target.value = "";
    showFiles();
  });
  const main = $("main");
  main.addEventListener("dragover", (event) => event.preventDefault());
  main.addEventListener("drop", (event) => {
    event.preventDefault();
    state.files.push(...event.dataTransfer.files);
    showFiles();
  });
  $("#open-status").addEventListener("click", () => showStatus());
  $("#close-status").addEventListener("click", () => $("#status-dialog").close());
  $("#open-auth").addEventListener("click", () => openAuth());
  $("#auth-form").addEventListener("submit", saveAuth);
  $("#menu").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
}

wire();
start().catch(failed);
