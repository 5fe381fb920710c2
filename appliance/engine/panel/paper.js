// The paper, as the engine's paper model keeps it: a snapshot, then numbered events.
// Shared by the panel and the stream overlay. A view that misses an event (a gap in the
// numbers) or reconnects takes the events since the last it saw, or a new snapshot.
"use strict";

// eslint-disable-next-line no-unused-vars
class PaperView {
  // sheet: the element the lines go in; query: "" or "&token=..." for the overlay.
  constructor(sheet, { query = "", keep = 400, onEvent = null } = {}) {
    this.sheet = sheet;
    this.scroller = sheet.parentElement;  // the sheet sizes its font by it, and it scrolls
    this.query = query;
    this.keep = keep;
    this.onEvent = onEvent;
    this.seq = null;
    this.source = null;
  }

  // early: a fetch of /v1/paper already under way (a page starts it with its sign-in check).
  async load(early = null) {
    let answer = early ? await early : null;
    if (!answer || !answer.ok) {  // none under way, or refused before the sign-in
      answer = await fetch(`/v1/paper?${this.query}`, { credentials: "same-origin" });
    }
    if (!answer.ok) throw new Error(`the engine said ${answer.status}`);
    this.draw((await answer.json()).snapshot);
  }

  // The event stream from where this view is; EventSource resumes by itself (Last-Event-ID).
  listen(extra = []) {
    this.close();
    const source = new EventSource(`/v1/events?since=${this.seq}${this.query}`);
    source.addEventListener("paper", (e) => this.apply(JSON.parse(e.data)));
    source.addEventListener("snapshot", (e) => this.draw(JSON.parse(e.data)));
    for (const [kind, handler] of extra) source.addEventListener(kind, handler);
    this.source = source;
    return source;
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }

  draw(snapshot) {
    this.seq = snapshot.seq;
    this.columns = snapshot.columns;
    this.sheet.style.setProperty("--columns", snapshot.columns);
    this.sheet.replaceChildren(...snapshot.backlog.map((entry) => this.entry(entry)));
    this.current = document.createElement("div");
    this.current.className = "line current";
    this.sheet.append(this.current);
    this.line = snapshot.line;
    this.column = snapshot.column;
    this.bell = snapshot.bell;
    this.paint(true);
    performance.mark("paper-drawn");  // for bench/paper_views.py: reload to backlog on screen
  }

  apply(event) {
    if (this.seq === null || event.seq <= this.seq) return;  // seen already
    if (event.seq !== this.seq + 1) {  // one went missing: start again from the engine's copy
      this.load().catch(() => {});
      return;
    }
    this.seq = event.seq;
    const follow = this.atEnd();
    if (event.text !== undefined) this.type(event.text);
    else this.current.before(this.entry(event));
    this.trim();
    this.paint(follow);
    if (this.onEvent) this.onEvent(event);
  }

  // The codes as the carriage moves: CR to column 0, LF a new line, BEL a mark on the line.
  type(text) {
    for (const ch of text) {
      if (ch === "\r") {
        this.column = 0;
      } else if (ch === "\n") {
        this.current.before(this.entry({ text: this.line.trimEnd(), bell: this.bell }));
        this.line = "";
        this.bell = false;
      } else if (ch === "\x07") {
        this.bell = true;
      } else {
        const at = Math.min(this.column, this.columns - 1);  // past the margin: overprint
        const line = this.line.padEnd(at + 1, " ");
        const keep = ch === " " ? line[at] : ch;  // a space moves the carriage, leaves the ink
        this.line = line.slice(0, at) + keep + line.slice(at + 1);
        this.column = Math.min(this.column + 1, this.columns);
      }
    }
  }

  entry(entry) {
    const div = document.createElement("div");
    if (entry.text !== undefined) {
      div.className = entry.bell ? "line bell" : "line";
      div.textContent = entry.text;
    } else if (entry.start) {
      div.className = "mark start";
      div.dataset.job = entry.start.id;
      div.textContent = `${entry.start.source} · “${entry.start.prompt}”`;
    } else if (entry.end) {
      div.className = `mark end ${entry.end.ended}`;
      div.dataset.job = entry.end.id;
      div.textContent = entry.end.ended;
    }
    return div;
  }

  // The line under the carriage: what is printed, and where the carriage is.
  paint(follow) {
    const text = this.line.padEnd(this.column, " ");
    const caret = document.createElement("span");
    caret.className = "caret";
    caret.textContent = text[this.column] || " ";
    this.current.replaceChildren(text.slice(0, this.column), caret, text.slice(this.column + 1));
    this.current.classList.toggle("bell", this.bell);
    if (follow) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  trim() {
    while (this.sheet.children.length > this.keep + 1) this.sheet.firstElementChild.remove();
  }

  atEnd() {
    const s = this.scroller;
    return s.scrollTop + s.clientHeight >= s.scrollHeight - 4;
  }
}
