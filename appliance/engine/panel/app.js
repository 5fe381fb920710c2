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

// --- the paper: the engine's paper model, from a snapshot on -------------------------

let paper = null;
// The snapshot asked for at once, beside the sign-in check: a reload draws the paper sooner.
let earlyPaper = fetch("/v1/paper", { credentials: "same-origin" }).catch(() => null);

// --- what the engine is doing ----------------------------------------------------

// The engine stopped or restarting: nothing to click until it answers again.
let engineDown = false;
const RETRY_SECONDS = 5;

function setEngineDown(down) {
  if (down === engineDown) return;
  engineDown = down;
  for (const control of document.querySelectorAll("#controls button, #line, #queue button")) {
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
  progress = s.progress;
  $("printer").textContent = `${s.port.name}: ${s.port.state}; ${s.jobs_finished} printed; ` +
    `queue ${s.queue} of ${s.queue_max}, about ${Math.round(s.eta_seconds)} s; ` +
    `model ${s.model.split("/").pop()}` + (s.motor ? `; motor ${s.motor.state}` : "");
  $("twitch").textContent = !s.chat.configured ? "not set up ([chat] in teletype.toml)"
    : s.chat.state || "the chat bridge has not said yet";
  for (const b of document.querySelectorAll(".motor")) b.hidden = !s.motor;

  const queue = await api("GET", "/v1/jobs");
  jobList((queue.data && queue.data.jobs) || []);
  const history = await api("GET", "/v1/history");
  list("history", (history.data && history.data.lines) || [], (l) => `${l.name}: ${l.text}`);
}

function setState(state) {
  const badge = $("state");
  badge.dataset.state = state;
  badge.textContent = state;
  document.title = `${state.toUpperCase()} · Teletype GPT-2`;
}

// Where each job comes from, in words.
const SOURCES = {
  api: "the API", button: "the button", chat: "a !gpt2 in chat", "chat-line": "a chat line",
  keyboard: "the Teletype's keyboard", system: "the appliance", panel: "this panel",
};
let progress = null;

// The job printing and the waiting ones: from where, what was asked, how far, a cancel each.
function jobList(jobs) {
  const ol = $("queue");
  ol.replaceChildren(...jobs.map((job) => {
    const li = document.createElement("li");
    const what = document.createElement("span");
    what.className = "asked";
    what.textContent = job.asked ? `“${job.asked}”` : "a reply to the chat";
    const where = document.createElement("span");
    where.className = "where";
    const from = `from ${SOURCES[job.source] || job.source}`;
    if (job.position === 0) {
      const done = progress === null ? "" : `, ${Math.round(progress * 100)}%`;
      where.textContent = `Printing${done}, ${from}`;
    } else {
      where.textContent = `${job.position === 1 ? "Next" : `${job.position}.`}, ${from}, ` +
        `starts in about ${Math.round(job.starts_in_seconds)} s`;
    }
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = job.position === 0 && progress !== null ? progress : 0;
    bar.setAttribute("aria-label", "how much is printed");
    const cancel = document.createElement("button");
    cancel.className = "danger small";
    cancel.textContent = "Cancel";
    cancel.setAttribute("aria-label", `Cancel the job ${what.textContent}`);
    cancel.disabled = engineDown;
    cancel.addEventListener("click", () => cancelJob(job));
    li.append(where, what, ...(job.position === 0 ? [bar] : []), cancel);
    return li;
  }));
  $("queue-empty").hidden = jobs.length > 0;
}

async function cancelJob(job) {
  const question = job.position === 0 ? "Stop this print at the end of its line?"
    : "Take this job off the queue?";
  if (!(await ask(question, "Cancel the job"))) {
    say("Nothing was changed.");
    return;
  }
  let answer;
  try {
    answer = await api("DELETE", `/v1/jobs/${job.id}`);
  } catch (e) {
    await refresh();
    return;
  }
  say(answer.status === 200 ? (job.position === 0 ? "The print stops at the end of its line."
    : "The job is off the queue.") : answer.status === 409 ? "That job had already finished."
    : `Could not cancel the job: ${(answer.data && answer.data.error) || answer.status}.`);
  await refresh();
}

function list(id, items, describe) {
  const ol = $(id);
  ol.replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    li.textContent = describe(item);
    return li;
  }));
}

async function listen() {
  if (events) events.close();
  events = null;
  try {
    const early = earlyPaper;
    earlyPaper = null;
    await paper.load(early);  // the backlog and the line under the carriage, where it is
  } catch (e) {
    await refresh();  // says the engine is down; the next refresh that works listens again
    return;
  }
  const kinds = ["queued", "started", "finished", "port", "chat"];
  events = paper.listen(kinds.map((kind) => [kind, () => refresh()]));
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
  return ask(...question);
}

// A question in the page's dialog; true for its yes button, false for "Keep it" or Escape.
function ask(question, yes) {
  const dialog = $("confirm");
  $("confirm-text").textContent = question;
  $("confirm-yes").textContent = yes;
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
  earlyPaper = null;  // not signed in: it was refused
  $("panel").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  if (events) events.close();
}

// Without a password (loopback, no token) there is nothing to sign in to again: no sign-out.
let passwordNeeded = true;

function showPanel() {
  $("login").hidden = true;
  $("panel").hidden = false;
  $("logout").hidden = !passwordNeeded;
  showOverlayAddress();
  listen();
  refresh();
}

// The overlay's address carries its own read-only token: shown to whoever is signed in.
async function showOverlayAddress() {
  const answer = await fetch("/panel/overlay-address", { credentials: "same-origin" });
  if (!answer.ok) return;
  const link = $("overlay-link");
  link.href = (await answer.json()).address;
  link.textContent = link.href;
}

async function start() {
  const session = await (await fetch("/panel/session", { credentials: "same-origin" })).json();
  passwordNeeded = session.password !== false;
  if (session.signed_in) {
    csrf = session.csrf;
    showPanel();
  } else {
    showLogin();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  paper = new PaperView($("paper"));
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
