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

// The engine stopped or restarting: nothing to click until it answers again.
let engineDown = false;
const RETRY_SECONDS = 5;

function setEngineDown(down) {
  if (down === engineDown) return;
  engineDown = down;
  for (const control of document.querySelectorAll("#controls button, #line")) {
    control.disabled = down;
  }
  if (down) {
    setState("retrying");
    say(`The engine is not answering; trying again every ${RETRY_SECONDS} seconds.`);
  } else {
    say("The engine is back.");
    if (!events || events.readyState === EventSource.CLOSED) listen();
  }
}

async function refresh() {
  let status;
  try {
    status = await api("GET", "/v1/status");
  } catch (e) {  // no answer at all: the engine is stopped or restarting
    setEngineDown(true);
    return;
  }
  if (status.status === 401) return;  // the sign-in form is shown
  if (status.status !== 200) {
    setEngineDown(true);
    return;
  }
  setEngineDown(false);
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
  // The stream broke: the engine may be gone (refresh says so) or back at once.
  events.onerror = () => refresh();
}

// --- the controls --------------------------------------------------------------------

const actions = {
  "press": () => api("POST", "/v1/generate", { wait: false, source: "panel" }),
  "cancel": () => api("POST", "/v1/cancel"),
  "clear-queue": () => api("DELETE", "/v1/jobs"),
  "bell": () => api("POST", "/v1/bell"),
  "clear-history": () => api("DELETE", "/v1/history"),
  "motor-on": () => api("PUT", "/v1/motor", { on: true }),
  "motor-off": () => api("PUT", "/v1/motor", { on: false }),
};

// What each control did, and what it could not do, in the words of its button.
const done = {
  "press": "Asked for a reply: it prints when its turn comes.",
  "cancel": "The print stops at the end of its line.",
  "clear-queue": "The queue is empty.",
  "bell": "The bell rang.",
  "clear-history": "The chat history is cleared.",
  "motor-on": "The motor is on.",
  "motor-off": "The motor is off.",
};
const failed = {
  "press": "Could not ask for a reply",
  "cancel": "Could not cancel the print",
  "clear-queue": "Could not clear the queue",
  "bell": "Could not ring the bell",
  "clear-history": "Could not clear the chat history",
  "motor-on": "Could not switch the motor on",
  "motor-off": "Could not switch the motor off",
};
// The ones that lose something: asked first, with the button's own words.
const questions = {
  "cancel": ["Stop the print at the end of its line?", "Cancel the print"],
  "clear-queue": ["Throw away every job still waiting?", "Clear the queue"],
  "clear-history": ["Forget every chat line the replies are made from?", "Clear the history"],
};

// What happened, where the answer says more than that it worked.
function saidOf(name, data) {
  if (name === "cancel" && data.cancelled === false) return "Nothing was printing.";
  if (name === "clear-queue" && typeof data.cleared === "number") {
    if (data.cleared === 0) return "The queue was already empty.";
    return data.cleared === 1 ? "1 waiting job taken off the queue."
      : `${data.cleared} waiting jobs taken off the queue.`;
  }
  return done[name];
}

function confirmFirst(name) {
  const question = questions[name];
  if (!question) return Promise.resolve(true);
  const dialog = $("confirm");
  $("confirm-text").textContent = question[0];
  $("confirm-yes").textContent = question[1];
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function act(name) {
  if (!(await confirmFirst(name))) {
    say("Nothing was changed.");
    return;
  }
  let answer;
  try {
    answer = await actions[name]();
  } catch (e) {
    await refresh();  // says the engine is down, and disables the controls
    return;
  }
  if (answer.status < 300) {
    say(saidOf(name, answer.data || {}));
  } else {
    say(`${failed[name]}: ${(answer.data && answer.data.error) || `the engine said ${answer.status}`}.`);
  }
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
    let answer;
    try {
      answer = await api("POST", "/v1/print", { text: text + "\n" });
    } catch (err) {
      await refresh();
      return;
    }
    say(answer.status < 300 ? "The line is in the queue to print."
      : `Could not print the line: ${(answer.data && answer.data.error) || answer.status}.`);
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
  setInterval(() => { if (csrf || engineDown) refresh(); }, RETRY_SECONDS * 1000);
  start();
});
