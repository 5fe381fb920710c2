// The operator's panel: the engine's own API, called as any other client calls it.
"use strict";

let csrf = null;
let events = null;
const $ = (id) => document.getElementById(id);

// --- the API ------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf || "" };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
  if (response.status === 401) showLogin();
  return { status: response.status, data };
}

function say(text) { $("message").textContent = text; }

// --- the paper: the codes on the wire, drawn as the Teletype prints them ---------

const paper = { lines: [""], column: 0 };

function feed(text) {
  for (const ch of text) {
    const code = ch.charCodeAt(0);
    if (code === 13) {
      paper.column = 0;
    } else if (code === 10) {
      paper.lines.push("");
      if (paper.lines.length > 400) paper.lines.shift();
    } else if (code >= 32 && code < 127) {
      const last = paper.lines.length - 1;
      const line = paper.lines[last].padEnd(paper.column, " ");
      paper.lines[last] = line.slice(0, paper.column) + ch + line.slice(paper.column + 1);
      paper.column += 1;
    }
    // NUL and DEL (fills), BEL and the rest move nothing on paper.
  }
  const box = $("paper");
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.textContent = paper.lines.join("\n");
  if (atEnd) box.scrollTop = box.scrollHeight;
}

// --- what the engine is doing ----------------------------------------------------

async function refresh() {
  const status = await api("GET", "/v1/status");
  if (status.status !== 200) {
    setState("fault");
    return;
  }
  const s = status.data;
  setState(s.port.state === "offline" ? "offline" : s.printing ? "printing" : "ready");
  $("printer").textContent = `${s.port.name}: ${s.port.state}; ${s.jobs_finished} printed; ` +
    `queue ${s.queue} of ${s.queue_max}, about ${Math.round(s.eta_seconds)} s; ` +
    `model ${s.model.split("/").pop()}` + (s.motor ? `; motor ${s.motor.state}` : "");
  $("twitch").textContent = !s.chat.configured ? "not set up ([chat] in teletype.toml)"
    : s.chat.state || "the chat bridge has not said yet";
  for (const b of document.querySelectorAll(".motor")) b.hidden = !s.motor;

  const queue = await api("GET", "/v1/jobs");
  list("queue", (queue.data && queue.data.jobs) || [], (j) =>
    `#${j.id} ${j.source} ${j.print ? "" : "(not printed) "}` +
    (j.position === 0 ? `printing, ${j.printed} characters` :
      `waiting, ${j.position}. in line, starts in about ${Math.round(j.starts_in_seconds)} s`));
  const history = await api("GET", "/v1/history");
  list("history", (history.data && history.data.lines) || [], (l) => `${l.name}: ${l.text}`);
}

function setState(state) {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent = state;
}

function list(id, items, describe) {
  const ol = $(id);
  ol.replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.textContent = describe(item);
    return li;
  }));
}

function listen() {
  if (events) events.close();
  events = new EventSource("/v1/events");
  events.addEventListener("paper", (e) => feed(JSON.parse(e.data).text));
  for (const kind of ["queued", "started", "finished", "port", "chat"]) {
    events.addEventListener(kind, () => refresh());
  }
  events.onerror = () => setState("fault");
}

// --- the controls --------------------------------------------------------------------

const actions = {
  "press": () => api("POST", "/v1/generate", { wait: false, source: "button" }),
  "cancel": () => api("POST", "/v1/cancel"),
  "clear-queue": () => api("DELETE", "/v1/jobs"),
  "bell": () => api("POST", "/v1/bell"),
  "clear-history": () => api("DELETE", "/v1/history"),
  "motor-on": () => api("PUT", "/v1/motor", { on: true }),
  "motor-off": () => api("PUT", "/v1/motor", { on: false }),
};

async function act(name) {
  const answer = await actions[name]();
  const ok = answer.status < 300;
  say(ok ? `${name}: done` : `${name}: ${(answer.data && answer.data.error) || answer.status}`);
  await refresh();
}

// --- signing in ------------------------------------------------------------------------

function showLogin() {
  $("panel").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  if (events) events.close();
}

function showPanel() {
  $("login").hidden = true;
  $("panel").hidden = false;
  $("logout").hidden = false;
  listen();
  refresh();
}

async function start() {
  const session = await (await fetch("/panel/session", { credentials: "same-origin" })).json();
  if (session.signed_in) {
    csrf = session.csrf;
    showPanel();
  } else {
    showLogin();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-action]")) {
    button.addEventListener("click", () => act(button.dataset.action));
  }
  $("print-line").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("line").value.trim();
    if (!text) return;
    const answer = await api("POST", "/v1/print", { text: text + "\n" });
    say(answer.status < 300 ? "queued to print" : `not printed: ${answer.data.error}`);
    if (answer.status < 300) $("line").value = "";
  });
  $("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    const response = await fetch("/panel/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ password: $("password").value }),
    });
    if (response.ok) {
      csrf = (await response.json()).csrf;
      $("password").value = "";
      $("login-error").textContent = "";
      showPanel();
    } else if (response.status === 429) {
      // A wrong guess from here a moment ago: this one was not even checked.
      const body = await response.json().catch(() => ({}));
      $("login-error").textContent = body.error || "Too soon after a wrong password.";
    } else {
      $("login-error").textContent = "Wrong password.";
    }
  });
  $("logout").addEventListener("click", async () => {
    await fetch("/panel/logout", { method: "POST", credentials: "same-origin" });
    csrf = null;
    showLogin();
  });
  setInterval(() => { if (csrf) refresh(); }, 5000);
  start();
});
